//! MQTT: the delivery rules, the topic policy, and the session that binds a verified TLS identity
//! to a CONNECT and forwards it to the embedded broker. The packet codec ([`crate::codec`]) sits
//! below both this module and the broker, which speak it alike.
//!
//! A session, top-down: [`session::serve`] glues [`admission`] (the CONNECT read, bound to the
//! identity, checked against the registry and OCSP, the broker session opened, or a CONNACK
//! refusal) to [`forward`] (the packets both ways, as a state machine on packets), and this
//! module holds what all three share: the [`Context`] and how a session ends ([`SessionError`]).

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, BrokerError};
use crate::cluster::Cluster;
use crate::codec::CodecError;
use crate::mqtt::filters::FilterQuota;
use crate::ocsp::Ocsp;
use crate::refusal::Refusal;
use crate::registry::Registry;

pub mod admission;
pub mod delivery;
pub mod filters;
pub mod forward;
pub mod session;
pub mod topics;

/// What every session needs, shared.
pub struct Context {
    pub registry: Arc<Registry>,
    pub broker: Arc<Broker>,
    /// Caps on subscription filters per session and per organisation.
    pub filters: Arc<FilterQuota>,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub max_packet_size: usize,
    /// Longest keep-alive an MQTT 5 client may use (0: no cap); see [`admission::keep_alive`].
    pub max_keep_alive: u16,
    /// An MQTT 3.1.1 PUBLISH the topic rules refuse is acknowledged and dropped, not closed on
    /// (`mqtts.refused_publish_v311 = "acknowledge"`).
    pub acknowledge_refused_v311: bool,
    /// Authentications for the device registry, written behind (see [`crate::devices`]).
    pub devices: crate::devices::DeviceLog,
    /// Asks CAs' OCSP responders, before CONNACK.
    pub ocsp: Arc<Ocsp>,
    /// Told of each session admitted (another node's of the same client id is taken over), and
    /// when an OCSP responder does not answer (for the leader's notifier).
    pub cluster: Arc<Cluster>,
}

/// How a session ended, for the one log event and counter it gets.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no CONNECT before the deadline")]
    ConnectTimeout,
    #[error("connection closed before CONNECT")]
    ClosedBeforeConnect,
    #[error("CONNECT refused: {}", .0.as_str())]
    Refused(Refusal),
    #[error("client sent a bad packet: {0}")]
    ClientCodec(#[source] CodecError),
    #[error("broker link: {0}")]
    Broker(#[source] BrokerError),
    #[error("client protocol violation: {0}")]
    ClientViolation(&'static str),
    #[error("publish refused by the topic policy")]
    TopicRefused,
    #[error("keep-alive expired")]
    KeepAlive,
    #[error("the peer does not read")]
    WriteTimeout,
    #[error("closed by the broker")]
    BrokerClosed,
    #[error("revoked by a registry change")]
    Revoked,
    #[error("taken over by a newer session of the same client id")]
    TakenOver,
    #[error("taken over by a newer session of the same client id on another node")]
    TakenOverElsewhere,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// Bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::ConnectTimeout => Refusal::ConnectTimeout.as_str(),
            SessionError::ClosedBeforeConnect => Refusal::ClosedBeforeConnect.as_str(),
            SessionError::Refused(refusal) => refusal.as_str(),
            SessionError::ClientCodec(_) => "malformed_packet",
            SessionError::Broker(_) => "broker_link",
            SessionError::ClientViolation(_) => "protocol_violation",
            SessionError::TopicRefused => "topic_refused",
            SessionError::KeepAlive => "keep_alive",
            SessionError::WriteTimeout => "write_timeout",
            SessionError::BrokerClosed => "broker_closed",
            SessionError::Revoked => "revoked",
            SessionError::TakenOver | SessionError::TakenOverElsewhere => "taken_over",
            SessionError::Io(_) => "io",
        }
    }

    /// True for a refusal at CONNECT (counted as a refused connection rather than a session end).
    pub fn is_connect_refusal(&self) -> bool {
        matches!(
            self,
            SessionError::ConnectTimeout
                | SessionError::ClosedBeforeConnect
                | SessionError::Refused(_)
        )
    }
}
