//! The upstream broker (`broker.mode = "upstream"`, DESIGN §12): each device session is one MQTT
//! connection to an existing broker cluster, spoken with the front-end's own codec
//! ([`crate::codec`]) over TCP (`mqtt://`) or TLS (`mqtts://`, the broker verified against
//! `ca_file`, with an optional client certificate).
//!
//! Decisions, and why:
//! - The connection carries the device's own client id (it names the org), clean start, session
//!   expiry, keep-alive and will, and the front-end's credential (`username`/`password`): the
//!   broker holds the session, so CONNACK's session present is the broker's, and the broker
//!   publishes the will.
//! - The device's PINGREQs are answered by the front-end (as with the embedded broker); the
//!   upstream connection has its own keep-alive — the device's, or [`DEFAULT_KEEP_ALIVE`] when
//!   the device asked none — and is pinged by its task ([`connection`]) when idle.
//! - The URLs are tried in turn from the last one that worked; the next on failure. Only when
//!   none answers is a CONNECT refused (server unavailable). A prober ([`Health`]) keeps
//!   `/readyz` true to whether any URL is reachable.
//! - MQTT 3.1.1 upstreams: QoS 2 publishes go upstream at QoS 1 while the device keeps its QoS 2
//!   flow with the front-end ([`session`]); what MQTT 5 has and 3.1.1 cannot carry is dropped by
//!   the codec (README, "Upstream broker").

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{BrokerError, Opening};
use crate::config::{Target, UpstreamConfig};

mod connection;
mod session;

pub use session::UpstreamSession;

/// The upstream connection's keep-alive when the device asked none (keep-alive 0 is legal MQTT,
/// but a broker should still notice a front-end that vanished).
pub const DEFAULT_KEEP_ALIVE: u16 = 60;
/// How long a TCP connect, TLS handshake and CONNACK to one URL may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`Health`] looks whether each URL accepts TCP connections.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether each URL answered lately: the sessions and the prober say so; `/readyz` reads it.
struct Health {
    up: Vec<AtomicBool>,
}

impl Health {
    fn any(&self) -> bool {
        self.up.iter().any(|up| up.load(Ordering::Relaxed))
    }

    fn set(&self, index: usize, up: bool) {
        if let Some(state) = self.up.get(index) {
            if state.swap(up, Ordering::Relaxed) != up {
                tracing::info!(index, up, "upstream broker reachability changed");
            }
        }
    }
}

/// Looks every [`PROBE_EVERY`] whether each URL accepts a TCP connection, until the broker is
/// dropped: a URL comes back when its broker does, and goes when it stops while no session
/// would have noticed.
async fn probe(targets: Arc<[Target]>, health: Weak<Health>) {
    loop {
        for (index, target) in targets.iter().enumerate() {
            let reachable = connection::reachable(target, PROBE_TIMEOUT).await;
            match health.upgrade() {
                Some(health) => health.set(index, reachable),
                None => return,
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The upstream connector (see the module documentation).
pub struct Upstream {
    targets: Arc<[Target]>,
    /// The URL tried first: the last one a session connected to.
    preferred: AtomicUsize,
    health: Arc<Health>,
    account: Arc<connection::Account>,
    /// One permit per session (`broker.max_connections`).
    slots: Arc<Semaphore>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Upstream")
            .field(
                "urls",
                &self.targets.iter().map(|t| &t.url).collect::<Vec<_>>(),
            )
            .field("protocol", &self.account.protocol)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Reads the TLS files and starts the prober; reaches no broker yet (a node may start while
    /// its brokers are down: `/readyz` answers 503 meanwhile).
    pub fn start(config: &UpstreamConfig, max_connections: usize) -> Result<Upstream, BrokerError> {
        let targets = config.urls.clone();
        if targets.is_empty() {
            return Err(BrokerError::Start("broker.upstream.urls is empty".into()));
        }
        let tls = if targets.iter().any(|t| t.tls) {
            Some(connection::tls_connector(config)?)
        } else {
            None
        };
        let targets: Arc<[Target]> = targets.into();
        let health = Arc::new(Health {
            up: targets.iter().map(|_| AtomicBool::new(false)).collect(),
        });
        tokio::spawn(probe(targets.clone(), Arc::downgrade(&health)));
        tracing::info!(urls = ?config.urls.iter().map(|t| &t.url).collect::<Vec<_>>(), protocol = ?config.protocol, "upstream broker mode");
        Ok(Upstream {
            targets,
            preferred: AtomicUsize::new(0),
            health,
            account: Arc::new(connection::Account {
                tls,
                protocol: config.protocol,
                username: config.username.clone(),
                password: config.password.clone(),
            }),
            slots: Arc::new(Semaphore::new(max_connections)),
        })
    }

    /// Whether at least one URL is reachable (what `/readyz` answers).
    pub fn ready(&self) -> bool {
        self.health.any()
    }

    /// Opens the session's upstream connection: each URL in turn from the preferred one, the
    /// next on failure. `Full` without a free session slot; `Unavailable` when no URL answered;
    /// `Refused` when a broker answered with a refusing CONNACK (the next URL is not tried: the
    /// cluster said no).
    pub async fn open_session(&self, opening: Opening<'_>) -> Result<UpstreamSession, BrokerError> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(BrokerError::Full);
        };
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for step in 0..self.targets.len() {
            let index = (first + step) % self.targets.len();
            let target = &self.targets[index];
            let opened = session::open(&self.account, target, &opening);
            match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
                Ok(Ok(opened)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    self.health.set(index, true);
                    let gone = Gone {
                        health: self.health.clone(),
                        index,
                    };
                    return Ok(UpstreamSession::new(opened, slot, gone));
                }
                Ok(Err(BrokerError::Refused(code))) => {
                    self.health.set(index, true);
                    return Err(BrokerError::Refused(code));
                }
                Ok(Err(error)) => last_error = format!("{}: {error}", target.url),
                Err(_) => last_error = format!("{}: no CONNACK in time", target.url),
            }
            tracing::warn!(url = %target.url, error = %last_error, "upstream broker unreachable");
            self.health.set(index, false);
        }
        Err(BrokerError::Unavailable(last_error))
    }
}

/// Tells [`Health`] that a session's URL stopped answering (its connection task found it gone).
pub(super) struct Gone {
    health: Arc<Health>,
    index: usize,
}

impl Gone {
    fn mark(&self) {
        self.health.set(self.index, false);
    }
}
