//! `portcullis-load`: a lean MQTT(S) load generator that aims at any endpoint — Portcullis,
//! mosquitto, or the embedded broker alone — so the same tool measures each of them.
//!
//! Modes: `connect` (handshake rate and latency, server CPU per connection), `hold` (server RSS
//! per idle session), `throughput` (publishers → subscribers, messages/s and latency), and
//! `broker` (the embedded rumqttd standalone: the baseline without the front-end).
//!
//! # Layout
//!
//! - `target`: the endpoint (addresses, TLS trust and SNI) and client certificates minted from a CA
//!   key before any timed phase;
//! - `session`: one connection — TCP, TLS, CONNECT/CONNACK with the project's codec, packets in and
//!   out, every await under a deadline, failures by kind;
//! - `connect`, `hold`, `throughput`, `broker`: the modes;
//! - `stats`: histograms, failure counts, `/proc/<pid>` readings, progress on stderr.
//!
//! It speaks MQTT with `portcullis::codec` over tokio-rustls and nothing heavier, so that the
//! tool is not the bottleneck; it reports its own CPU next to the server's to show it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use portcullis::codec::Protocol;
use serde_json::Value;

#[path = "portcullis-load/broker.rs"]
mod broker;
#[path = "portcullis-load/connect.rs"]
mod connect;
#[path = "portcullis-load/hold.rs"]
mod hold;
#[path = "portcullis-load/session.rs"]
mod session;
#[path = "portcullis-load/stats.rs"]
mod stats;
#[path = "portcullis-load/target.rs"]
mod target;
#[path = "portcullis-load/throughput.rs"]
mod throughput;

// A crate root's `mod` looks beside it, so the module folder is named explicitly.
use target::{Endpoint, EndpointOptions, Minter};

#[derive(Parser)]
#[command(
    version,
    about = "Load generator for MQTT(S) endpoints: Portcullis, mosquitto, or the embedded broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N connections (TCP + TLS + CONNECT/CONNACK) with T workers: rate, latency, server CPU.
    Connect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: connect::ConnectArgs,
    },
    /// N idle sessions: server RSS per session.
    Hold {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: hold::HoldArgs,
    },
    /// P publishers → S subscribers: messages/s, latency, loss.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: throughput::ThroughputArgs,
    },
    /// Run the embedded broker (rumqttd) standalone; prints its addresses and credential as JSON.
    Broker(broker::BrokerArgs),
}

/// Options every load mode shares: where to connect and as whom.
#[derive(Args)]
struct Common {
    /// Host to connect to.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port, or several separated by commas (connections go round robin).
    #[arg(long, value_delimiter = ',', default_value = "8883")]
    port: Vec<u16>,
    /// TLS server name (SNI and the name the certificate must carry); default: --host. An IP
    /// literal sends no SNI.
    #[arg(long)]
    sni: Option<String>,
    /// PEM file of the CA(s) the server certificate must verify to.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// CA certificate (PEM) to mint one client certificate per connection with.
    #[arg(long, requires = "client_ca_key")]
    client_ca_cert: Option<PathBuf>,
    /// That CA's private key (PEM: PKCS#8 or SEC1).
    #[arg(long, requires = "client_ca_cert")]
    client_ca_key: Option<PathBuf>,
    /// Subject CN of minted client certificates; `{i}` is the connection's index.
    #[arg(long, default_value = "d:sensor:dev{i}")]
    identity_template: String,
    /// MQTT client id; `{i}` is the connection's index.
    #[arg(long, default_value = "d:acme:sensor:dev{i}")]
    client_id_template: String,
    /// First `{i}` (to run several tools side by side without sharing client ids).
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// MQTT protocol level: 4 (3.1.1) or 5. The embedded broker speaks 5 only.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    protocol: u8,
    /// Plain TCP, no TLS (for a broker's own listener).
    #[arg(long)]
    plain: bool,
    /// CONNECT username.
    #[arg(long)]
    username: Option<String>,
    /// CONNECT password.
    #[arg(long)]
    password: Option<String>,
    /// CONNECT keep-alive in seconds (idle sessions send PINGREQ at half of it); default 60, and
    /// 300 for `hold`.
    #[arg(long)]
    keep_alive: Option<u16>,
    /// Deadline of every network step (connect, handshake, each awaited packet), in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The server's pid, to report its CPU (and RSS for `hold`) from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON summary object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// What every load mode is handed: the endpoint, the minter, and the shared options.
pub struct Setup {
    pub endpoint: Endpoint,
    pub minter: Option<Minter>,
    pub identity_template: String,
    pub client_id_template: String,
    pub first_index: usize,
    pub server: Option<stats::Process>,
}

impl Setup {
    /// The role of the connections `connect`, `hold` and `throughput`'s publishers make.
    pub fn role(&self) -> target::Role<'_> {
        target::Role {
            minter: self.minter.as_ref(),
            identity_template: &self.identity_template,
            client_id_template: &self.client_id_template,
            first: self.first_index,
        }
    }
}

impl Common {
    fn setup(&self, default_keep_alive: u16) -> anyhow::Result<Setup> {
        if !(self.timeout > 0.0 && self.timeout <= 3600.0) {
            bail!("--timeout must be between 0 and 3600 seconds");
        }
        let protocol = if self.protocol == 5 {
            Protocol::V5
        } else {
            Protocol::V311
        };
        let endpoint = Endpoint::new(EndpointOptions {
            host: &self.host,
            ports: &self.port,
            sni: self.sni.as_deref(),
            ca: self.ca.as_deref(),
            plain: self.plain,
            protocol,
            keep_alive: self.keep_alive.unwrap_or(default_keep_alive),
            username: self.username.clone(),
            password: self.password.clone(),
            step_timeout: Duration::from_secs_f64(self.timeout),
        })?;
        let minter = match (&self.client_ca_cert, &self.client_ca_key) {
            (Some(cert), Some(key)) if !self.plain => Some(Minter::load(cert, key)?),
            _ => None,
        };
        let server = self
            .server_pid
            .map(|pid| stats::Process::new(pid).with_context(|| format!("--server-pid {pid}")))
            .transpose()?;
        Ok(Setup {
            endpoint,
            minter,
            identity_template: self.identity_template.clone(),
            client_id_template: self.client_id_template.clone(),
            first_index: self.first_index,
            server,
        })
    }
}

/// A mode's result: the JSON summary and the same for humans.
pub struct Report {
    pub json: Value,
    pub text: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The broker logs through tracing; the load modes only use stderr for progress.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("portcullis-load: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("portcullis-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (report, json) = match cli.command {
        Command::Connect { common, args } => {
            let setup = common.setup(60)?;
            (connect::run(setup, args).await?, common.json)
        }
        Command::Hold { common, args } => {
            let setup = common.setup(300)?;
            (hold::run(setup, args).await?, common.json)
        }
        Command::Throughput { common, args } => {
            let setup = common.setup(60)?;
            (throughput::run(setup, args).await?, common.json)
        }
        Command::Broker(args) => return broker::run(args).await,
    };
    if json {
        println!("{}", report.json);
    } else {
        print!("{}", report.text);
    }
    Ok(())
}
