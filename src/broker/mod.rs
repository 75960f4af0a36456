//! The broker behind the sessions, as one seam with two implementations: the embedded rumqttd
//! ([`embedded`], in-process local links, the default) and an upstream MQTT broker cluster
//! ([`upstream`], one MQTT connection per device session, `broker.mode = "upstream"`, DESIGN
//! §12). The session code and the admin API name only [`Broker`] and [`BrokerSession`].
//!
//! Why two enums rather than a trait object: a session calls [`BrokerSession::send`] and
//! [`BrokerSession::recv`] for every packet, and a `dyn` trait with async methods would box a
//! future per call. An enum costs one predictable branch per call and no allocation, and the
//! embedded session stays inline in the session's task as before. The upstream session is boxed
//! once per session (not per packet), so the enum is no larger than the embedded session it
//! wraps: an idle embedded session costs the same memory as before the seam, give or take the
//! few bytes the enum's `send`/`recv` futures add (pinned by a test below).

use std::time::Duration;

use crate::codec::{self, Packet};
use crate::config::BrokerConfig;

pub mod embedded;
mod in_order;
mod on_demand;
pub mod upstream;

pub use in_order::InOrder;
pub use on_demand::{InFlight, OnDemand};

/// QoS 1/2 deliveries the embedded router keeps unacknowledged per connection.
pub use embedded::BROKER_MAX_INFLIGHT;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the broker: {0}")]
    Start(String),
    #[error("the broker holds broker.max_connections sessions")]
    Full,
    #[error("the broker dropped the link: {0}")]
    Link(String),
    #[error("the broker leg does not carry {0}")]
    Unsupported(&'static str),
    #[error("no upstream broker is reachable: {0}")]
    Unavailable(String),
    #[error("the upstream broker refused the session (CONNACK {0:#04x})")]
    Refused(u8),
}

/// What [`Broker::hold_filter`] did with a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The broker holds it already: no new cost.
    Already,
    /// A new distinct filter, held from now on, for good.
    Added,
    /// Not held, and not to be handed to the broker.
    Refused,
}

/// How long the broker keeps a session after its connection ends (MQTT 5 Session Expiry
/// Interval; 3.1.1 clean session 1 is [`Expiry::Now`], clean session 0 [`Expiry::Never`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Now,
    After(Duration),
    Never,
}

impl Expiry {
    /// The MQTT 5 interval in seconds: 0 ends the session with its connection, 0xFFFFFFFF never.
    pub fn from_interval(seconds: u32) -> Expiry {
        match seconds {
            0 => Expiry::Now,
            u32::MAX => Expiry::Never,
            n => Expiry::After(Duration::from_secs(u64::from(n))),
        }
    }

    /// The MQTT 5 interval in seconds (the inverse of [`Expiry::from_interval`]).
    pub fn interval(self) -> u32 {
        match self {
            Expiry::Now => 0,
            Expiry::After(after) => u32::try_from(after.as_secs()).unwrap_or(u32::MAX - 1),
            Expiry::Never => u32::MAX,
        }
    }
}

/// What the front-end keeps with a session the embedded broker keeps, opaque here: the session
/// layer's subscription options and identifiers, which rumqttd does not keep (it downcasts it
/// back).
pub type Memo = Box<dyn std::any::Any + Send + Sync>;

/// What a session opens its broker side with.
pub struct Opening<'a> {
    /// The device's bound client id (it names the org).
    pub client_id: &'a str,
    /// Discards a stored session of this client id (else it is resumed).
    pub clean_start: bool,
    /// How long the session is kept once its connection ends.
    pub expiry: Expiry,
    /// The will, mapped into the org's namespace: an upstream broker gets it in its CONNECT; the
    /// embedded one never sees it (the session publishes it through [`Broker::will`]).
    pub will: Option<&'a codec::Will>,
    /// The keep-alive the device is served with (upstream: the upstream connection's, 0 asks
    /// the front-end's default).
    pub keep_alive: u16,
}

/// The broker (see the module documentation).
pub enum Broker {
    Embedded(embedded::Broker),
    Upstream(upstream::Upstream),
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broker::Embedded(broker) => broker.fmt(f),
            Broker::Upstream(broker) => broker.fmt(f),
        }
    }
}

impl Broker {
    /// Starts the broker `config` names: the embedded one, or the upstream connector (which
    /// starts even when no upstream broker is reachable yet: `/readyz` says so meanwhile).
    pub async fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
        match &config.upstream {
            None => Ok(Broker::Embedded(embedded::Broker::start(config).await?)),
            Some(upstream) => Ok(Broker::Upstream(upstream::Upstream::start(
                upstream,
                config.max_connections,
            )?)),
        }
    }

    /// Opens a session's broker side, holding one of the `broker.max_connections` session
    /// slots until it is closed; `Full` when none is free (see the implementations).
    pub async fn open_session(&self, opening: Opening<'_>) -> Result<BrokerSession, BrokerError> {
        match self {
            Broker::Embedded(broker) => broker
                .open_session(opening.client_id, opening.clean_start, opening.expiry)
                .map(BrokerSession::Embedded),
            Broker::Upstream(broker) => broker
                .open_session(opening)
                .await
                .map(|session| BrokerSession::Upstream(Box::new(session))),
        }
    }

    /// Publishes the will of a session that ended without DISCONNECT (embedded: now, or after
    /// `delay`); an upstream broker publishes the will it got in the session's CONNECT itself.
    pub async fn will(&self, client_id: &str, will: codec::Will, delay: Duration) {
        if let Broker::Embedded(broker) = self {
            broker.will(client_id, will, delay).await;
        }
    }

    /// Whether `filter` may be handed to the broker (see [`embedded::Broker::hold_filter`]); an
    /// upstream broker bounds its own state, so every filter costs nothing here.
    pub fn hold_filter(&self, filter: &str, may_add: bool) -> Hold {
        match self {
            Broker::Embedded(broker) => broker.hold_filter(filter, may_add),
            Broker::Upstream(_) => Hold::Already,
        }
    }

    /// Most distinct filters one organisation may hand the broker.
    pub fn max_filters_per_org(&self) -> usize {
        match self {
            Broker::Embedded(broker) => broker.max_filters_per_org(),
            Broker::Upstream(_) => usize::MAX,
        }
    }

    /// Calls `expired` with the client id of every kept session the broker discarded (embedded;
    /// an upstream broker's kept sessions are not counted here, see [`BrokerSession::kept`]).
    pub fn on_expired(&self, expired: impl Fn(&str) + Send + Sync + 'static) {
        if let Broker::Embedded(broker) = self {
            broker.on_expired(expired);
        }
    }

    /// Whether this node can serve devices now: always for the embedded broker; for an upstream
    /// one, while at least one of its URLs is reachable (`/readyz`).
    pub fn ready(&self) -> bool {
        match self {
            Broker::Embedded(_) => true,
            Broker::Upstream(broker) => broker.ready(),
        }
    }

    /// Distinct filters the embedded router holds (tests).
    #[cfg(test)]
    pub fn filters_held(&self) -> usize {
        match self {
            Broker::Embedded(broker) => broker.filters_held(),
            Broker::Upstream(_) => 0,
        }
    }
}

/// One session's side of the broker (see the module documentation).
// The embedded session stays inline on purpose: boxing it would cost every embedded session an
// allocation and a pointer chase per packet; the upstream one is the boxed one.
#[allow(clippy::large_enum_variant)]
pub enum BrokerSession {
    Embedded(embedded::BrokerSession),
    Upstream(Box<upstream::UpstreamSession>),
}

impl BrokerSession {
    /// Whether the broker resumed a stored session (the broker's own answer).
    pub fn session_present(&self) -> bool {
        match self {
            BrokerSession::Embedded(session) => session.session_present(),
            BrokerSession::Upstream(session) => session.session_present(),
        }
    }

    /// Whether the front-end counts this session's filters as kept once it ends: the embedded
    /// broker's kept sessions, never an upstream broker's (it holds them itself).
    pub fn kept(&self) -> bool {
        match self {
            BrokerSession::Embedded(session) => session.kept(),
            BrokerSession::Upstream(_) => false,
        }
    }

    /// Whether the session lives in a broker every node shares (upstream): taken over on another
    /// node, it carries on there; the embedded broker is each node's own.
    pub fn shared(&self) -> bool {
        matches!(self, BrokerSession::Upstream(_))
    }

    /// What the front-end kept with a resumed session (embedded only), taken once.
    pub fn take_memo(&mut self) -> Option<Memo> {
        match self {
            BrokerSession::Embedded(session) => session.take_memo(),
            BrokerSession::Upstream(_) => None,
        }
    }

    /// What the front-end keeps with the session when it ends (embedded only).
    pub fn keep_memo(&mut self, memo: Option<Memo>) {
        if let BrokerSession::Embedded(session) = self {
            session.keep_memo(memo);
        }
    }

    /// A new expiry for when the session's connection ends (MQTT 5 DISCONNECT, or a takeover's
    /// `Never`).
    pub fn set_expiry(&mut self, expiry: Expiry) {
        match self {
            BrokerSession::Embedded(session) => session.set_expiry(expiry),
            BrokerSession::Upstream(session) => session.set_expiry(expiry),
        }
    }

    /// Hands `packets` to the broker in order and empties the vector; waits while the broker
    /// does not take them (the publisher's backpressure).
    pub async fn send(&mut self, packets: &mut Vec<Packet>) -> Result<(), BrokerError> {
        match self {
            BrokerSession::Embedded(session) => session.send(packets).await,
            // Boxed: inline, the upstream future (three 408-byte packets by value and a channel
            // send) would size every session's task, embedded ones too, past its 4 KiB class
            // (`listener::tests::a_connection_task_fits_in_4_kib`); one allocation per send is
            // small beside the network hop it feeds.
            BrokerSession::Upstream(session) => Box::pin(session.send(packets)).await,
        }
    }

    /// Waits for packets from the broker and appends them to `out`. Cancel safe. An error means
    /// the broker let go of the session.
    pub async fn recv(&mut self, out: &mut Vec<Packet>) -> Result<(), BrokerError> {
        match self {
            BrokerSession::Embedded(session) => session.recv(out).await,
            BrokerSession::Upstream(session) => session.recv(out).await,
        }
    }

    /// Gives back the memory of the session's own queues while it is idle (they are empty then;
    /// they grow again with the next packet).
    pub fn idle(&mut self) {
        match self {
            BrokerSession::Embedded(session) => session.idle(),
            BrokerSession::Upstream(session) => session.idle(),
        }
    }

    /// Ends the session's broker side (see the implementations).
    pub async fn close(self) {
        match self {
            BrokerSession::Embedded(session) => session.close().await,
            BrokerSession::Upstream(session) => session.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seam's promise to the embedded path: an idle session is no larger, and the futures a
    /// session's task holds while it waits on the broker grow by at most the enum future's own
    /// state and reference (24 bytes measured, against about 55 KiB per idle session; they live
    /// in every session's task for its whole life).
    #[tokio::test]
    async fn the_seam_costs_an_embedded_session_no_memory() {
        assert_eq!(
            std::mem::size_of::<BrokerSession>(),
            std::mem::size_of::<embedded::BrokerSession>()
        );
        let broker = embedded::testing::start_with(1, 0).await;
        let mut inner = broker.open("size", true).unwrap();
        let mut packets = Vec::new();
        let inner_send = std::mem::size_of_val(&inner.send(&mut packets));
        let inner_recv = std::mem::size_of_val(&inner.recv(&mut packets));
        let mut session = BrokerSession::Embedded(inner);
        let send = std::mem::size_of_val(&session.send(&mut packets));
        let recv = std::mem::size_of_val(&session.recv(&mut packets));
        assert!(send <= inner_send + 32, "send {inner_send} → {send}");
        assert!(recv <= inner_recv + 32, "recv {inner_recv} → {recv}");
        session.close().await;
    }
}
