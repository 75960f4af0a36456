//! `portcullis serve [--config FILE]`: load the configuration, install telemetry, bind, run until
//! ctrl-c or SIGTERM. Invalid configuration, or a master key that does not open the store, exits
//! with 64 (EX_USAGE). Every other verb is the operator CLI ([`portcullis::cli`]), a client of
//! the admin API with its own exit codes (0 done, 1 refused, 2 usage, 3 unreachable).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::cli;
use portcullis::config::Config;
use portcullis::server::Server;

#[derive(Parser)]
#[command(
    version,
    about = "An MQTT front-end that lets only authenticated devices in"
)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MQTTS front-end, the embedded broker and the admin API (with --config FILE).
    Serve,
    #[command(flatten)]
    Operator(cli::Command),
}

const EX_USAGE: u8 = 64;

/// jemalloc, with a background thread that gives freed memory back to the system within about
/// a second (`.cargo/config.toml` sets the decay): an idle session costs less than with glibc's
/// malloc, and the memory of sessions that ended does not stay with the process (issue 13,
/// BENCHMARKS.md "Memory per idle session").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => main_serve(cli.global.config.as_deref()),
        Command::Operator(command) => cli::run(cli.global, command),
    }
}

fn main_serve(config: Option<&std::path::Path>) -> ExitCode {
    // Logs go to stderr; stdout carries only the line with the bound addresses. rumqttd logs
    // every disconnect as an error and rustls warns about each odd ClientHello: the front-end's
    // own events say what matters, once per connection.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,rumqttd=off,rustls=error")
            }),
        )
        .init();
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("portcullis: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("portcullis: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let usage = error
                .downcast_ref::<portcullis::server::ServerError>()
                .is_some_and(|e| e.is_usage());
            if usage {
                // The message says it all; its chain would repeat it.
                eprintln!("portcullis: {error}");
                ExitCode::from(EX_USAGE)
            } else {
                eprintln!("portcullis: {error:#}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // The signal handlers are in place before the server binds: a SIGTERM that arrives once the
    // first request has been answered is always a clean stop, never the default (a kill).
    let shutdown = shutdown_signal()?;
    let server = Server::bind(config).await?;
    println!(
        "MQTTS on {}, admin API on {}",
        server.mqtts_addr(),
        server.admin_addr()
    );
    server.run(shutdown).await?;
    Ok(())
}

/// Registers the ctrl-c and SIGTERM handlers now; the future resolves at the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}
