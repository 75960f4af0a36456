//! The org event stream (DESIGN §11): connects, disconnects and refusals as they happen, for
//! `GET /api/v1/orgs/{org}/events` (Server-Sent Events). Publishing never waits: events go into
//! a bounded broadcast ring, and a reader that falls behind by more than [`CAPACITY`] events is
//! dropped rather than slowing the data path. On several nodes the ring also carries the other
//! nodes' events, each with its `node` (DESIGN §12; see `crate::cluster`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for readers that are behind.
pub const CAPACITY: usize = 1024;
/// Refusals listed per org (`GET …/refusals`).
pub const REFUSALS_PER_ORG: usize = 1000;
/// Refusals this node keeps, of every org: the list's memory is bounded however many orgs see
/// refusals (up to about 0.7 KiB each with long names, 70 MB at most), at the price that an org
/// refused far more often than the others pushes their oldest refusals out first.
pub const REFUSALS_KEPT: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Connect,
    Disconnect,
    Refused,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Disconnect => "disconnect",
            Kind::Refused => "refused",
        }
    }
}

/// One event; `org` and `kind` route it, the rest is its `data:` ([`Event::data`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub org: String,
    pub kind: Kind,
    /// RFC 3339.
    pub at: String,
    pub client_id: Option<String>,
    pub identity: Option<String>,
    pub peer: Option<String>,
    /// Why a connection was refused or ended.
    pub reason: Option<Cow<'static, str>>,
    /// The node it happened on; `None`: this one.
    pub node: Option<String>,
    /// Where a connection was refused: `tls` or `connect`.
    #[serde(default)]
    pub stage: Option<Cow<'static, str>>,
    /// The server name a refused client asked for.
    #[serde(default)]
    pub sni: Option<String>,
    /// SHA-256 of a refused client's leaf certificate, when it showed one that parsed.
    #[serde(default)]
    pub fingerprint_sha256: Option<String>,
}

impl Event {
    pub fn new(org: &str, kind: Kind, peer: Option<SocketAddr>) -> Event {
        Event {
            org: org.to_owned(),
            kind,
            at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            client_id: None,
            identity: None,
            peer: peer.map(|p| p.to_string()),
            reason: None,
            node: None,
            stage: None,
            sni: None,
            fingerprint_sha256: None,
        }
    }

    /// Its `data:` JSON, `node` named (`this_node` when it happened here).
    pub fn data(&self, this_node: &str) -> String {
        serde_json::json!({
            "at": self.at,
            "client_id": self.client_id,
            "identity": self.identity,
            "peer": self.peer,
            "reason": self.reason,
            "node": self.node.as_deref().unwrap_or(this_node),
            "stage": self.stage,
            "sni": self.sni,
            "fingerprint_sha256": self.fingerprint_sha256,
        })
        .to_string()
    }
}

pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    /// This node's last refusals, oldest first, at most [`REFUSALS_KEPT`].
    refusals: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: broadcast::channel(CAPACITY).0,
            refusals: Mutex::default(),
        }
    }
}

impl Events {
    /// Never waits (but for a short lock to keep a refusal); an event nobody listens to is
    /// dropped.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        if event.kind == Kind::Refused && event.node.is_none() {
            let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            if refusals.len() == REFUSALS_KEPT {
                refusals.pop_front();
            }
            refusals.push_back(event.clone());
        }
        let _ = self.tx.send(event);
    }

    /// Forgets the refusals of `org`, deleted: an org created later under the same id is
    /// another tenant.
    pub fn forget(&self, org: &str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.retain(|event| event.org != org);
    }

    /// The last refusals of `org` on this node, newest first, at most [`REFUSALS_PER_ORG`].
    pub fn refusals(&self, org: &str) -> Vec<Arc<Event>> {
        let refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals
            .iter()
            .rev()
            .filter(|event| event.org == org)
            .take(REFUSALS_PER_ORG)
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
