//! The embedded broker (rumqttd 0.20). Nothing outside this module names a rumqttd type.
//!
//! rumqttd takes no accepted stream, so sessions reach it over loopback TCP: several MQTT 5
//! listeners on 127.0.0.1 (its accept loop tops out near 900 connections/s each), protected by a
//! per-process random credential, TCP_NODELAY on every connection.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::config::BrokerConfig;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker: {0}")]
    Start(String),
    #[error("cannot reach the embedded broker: {0}")]
    Connect(#[from] std::io::Error),
}

pub struct Broker {}

impl Broker {
    /// Starts rumqttd on its own threads with `config.listeners` MQTT 5 listeners on 127.0.0.1 and
    /// returns once every listener accepts connections.
    pub async fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
        let _ = config;
        todo!()
    }

    /// A new TCP connection (TCP_NODELAY) to the next listener, round robin.
    pub async fn connect(&self) -> Result<TcpStream, BrokerError> {
        todo!()
    }

    /// Username and password every session must send in its CONNECT to the broker.
    pub fn credentials(&self) -> (&str, &str) {
        todo!()
    }

    /// The listener addresses (for the load tool's plain-TCP baseline and tests).
    pub fn addrs(&self) -> &[SocketAddr] {
        todo!()
    }
}
