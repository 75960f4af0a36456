//! The org event stream (DESIGN §11): connects, disconnects and refusals as they happen, for
//! `GET /api/v1/orgs/{org}/events` (Server-Sent Events). Publishing never waits: events go into
//! a bounded broadcast ring, and a reader that falls behind by more than [`CAPACITY`] events is
//! dropped rather than slowing the data path. On several nodes the ring also carries the other
//! nodes' events, each with its `node` (DESIGN §12; see `crate::cluster`).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for readers that are behind.
pub const CAPACITY: usize = 1024;

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
        })
        .to_string()
    }
}

pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// Never waits; an event nobody listens to is dropped.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
