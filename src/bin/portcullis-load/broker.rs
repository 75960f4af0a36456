//! `broker`: the embedded broker (rumqttd, started exactly as the server starts it) on its own,
//! with no front-end: the baseline that shows what the front-end costs. Prints one JSON line with
//! its listener addresses and credential on stdout, then runs until ctrl-c or SIGTERM.
//!
//! Its listeners speak MQTT 5 only and want the credential and a keep-alive above 0:
//! `portcullis-load connect --plain --protocol 5 --port <p1,p2,…> --username … --password …`.

use clap::Args;
use portcullis::broker::embedded::Broker;
use portcullis::config::BrokerConfig;
use serde_json::json;

#[derive(Args)]
pub struct BrokerArgs {
    /// Loopback listeners (each accepts about 900 connections/s); pass all their ports to the
    /// load modes as --port p1,p2,… to spread connections over them.
    #[arg(long, default_value_t = 4)]
    listeners: usize,
    /// Most sessions.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let config = BrokerConfig {
        max_connections: args.max_connections,
        plain_listeners: args.listeners.max(1),
        // The baseline's plain listeners bypass the front-end and its filter bound.
        max_filters: usize::MAX,
        max_filters_per_org: usize::MAX,
        upstream: None,
    };
    let broker = Broker::start(&config).await?;
    let (username, password) = broker.credentials();
    let ports: Vec<String> = broker
        .addrs()
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    println!(
        "{}",
        json!({
            "addrs": broker.addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ports": ports.join(","),
            "username": username,
            "password": password,
            "protocol": 5,
            "pid": std::process::id(),
        })
    );
    shutdown_signal().await;
    // rumqttd has no shutdown: its threads end with the process.
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
