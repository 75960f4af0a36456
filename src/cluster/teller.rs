//! The one task per node that writes what this node tells the cluster: news for the other nodes
//! (one `NOTIFY` round trip per batch), this node's connects, disconnects and refusals for their
//! event streams, and this node's rows of the cluster-wide session list (`live_sessions`).
//!
//! The data path never waits for it: what it is given goes into one bounded queue, and the events
//! come from the node's event ring (only those of orgs another node reads the stream of: see
//! [`Watched`]). What does not fit is dropped and counted; a lost session row
//! makes the next batch write every row of this node again (from the session table, which is
//! the truth), as does a write the store refused. Every `down_after` it also forgets the rows of
//! nodes that are down, so that a node that never comes back leaves nothing behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::events::Event;
use crate::identity::OrgId;
use crate::registry::{Registry, SessionInfo};
use crate::store::{NodeMessage, NodeNews, NodeSession, Store};

/// What waits to be written (one admission and one end per session, in a connect storm); past
/// it, what comes is dropped and counted, never waited for: the data path does not wait on the
/// store.
pub const OUTBOX: usize = 16_384;
/// Most news and session rows written in one round of the teller (news packed several to a
/// notification, rows a few hundred to a statement).
const BATCH: usize = 1024;
/// How long the first of a round waits for others to share its round trips: well inside the
/// second a takeover across nodes may take.
const LINGER: Duration = Duration::from_millis(50);

/// What the data path and the admin API give the teller.
pub enum Outgoing {
    /// News for the other nodes.
    News(NodeMessage),
    /// A session was admitted here: the other nodes are told (they end theirs of its client id)
    /// and it is listed.
    Opened(NodeSession),
    /// The session of this number ended here.
    Closed(u64),
}

/// Queues `outgoing` without waiting; dropped and counted when the queue is full (the store slow
/// or unreachable); a lost session row makes the teller write them all again.
pub fn send(outbox: &mpsc::Sender<Outgoing>, resync: &AtomicBool, outgoing: Outgoing) {
    if let Err(error) = outbox.try_send(outgoing) {
        if !matches!(error.into_inner(), Outgoing::News(_)) {
            resync.store(true, Ordering::Relaxed);
        }
        metrics::counter!(crate::metrics::CLUSTER_NEWS_DROPPED).increment(1);
    }
}

/// Session `session` of `org` on node `node_id`, as the cluster lists it.
pub fn node_session(node_id: &str, session: u64, org: OrgId, info: SessionInfo) -> NodeSession {
    NodeSession {
        node_id: node_id.to_owned(),
        session,
        org,
        client_id: info.client_id,
        identity: info.device.identity.to_string(),
        claims: info.device.claims.iter().map(ToString::to_string).collect(),
        also_ca_ids: info.device.also_ca_ids,
        ca_id: info.device.ca_id,
        fingerprint_sha256: info.device.fingerprint_sha256,
        serial: info.device.serial,
        protocol: info.protocol,
        peer: info.peer.map(|p| p.to_string()),
        connected_at: info.connected_at,
    }
}

/// The orgs whose event streams other nodes read, and when they last said so.
#[derive(Default)]
pub struct Watched(Mutex<HashMap<String, Instant>>);

impl Watched {
    pub fn mark(&self, org: String) {
        let mut watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        watched.retain(|_, at| at.elapsed() < super::WATCH_FOR);
        watched.insert(org, Instant::now());
    }

    fn contains(&self, org: &str) -> bool {
        let watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        watched
            .get(org)
            .is_some_and(|at| at.elapsed() < super::WATCH_FOR)
    }
}

pub struct Teller {
    pub store: Arc<dyn Store>,
    pub node_id: String,
    pub registry: Arc<Registry>,
    /// This node's rows are to be written again, all of them (true at the start: a node that
    /// was killed left its rows behind).
    pub resync: Arc<AtomicBool>,
    pub watched: Arc<Watched>,
    pub down_after: Duration,
}

/// What one round of the teller writes.
#[derive(Default)]
struct Batch {
    news: Vec<NodeMessage>,
    opened: Vec<NodeSession>,
    closed: Vec<u64>,
    /// Forget the rows of the nodes that are down.
    sweep: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.news.len() + self.opened.len() + self.closed.len()
    }
}

impl Teller {
    /// Writes what comes from `outgoing` and from the node's event ring until every sender of
    /// `outgoing` is gone (after writing what is queued).
    pub async fn run(self, mut outgoing: mpsc::Receiver<Outgoing>) {
        let mut events = self.registry.events().subscribe();
        let mut sweep = tokio::time::interval(self.down_after);
        loop {
            let mut batch = Batch::default();
            tokio::select! {
                next = outgoing.recv() => match next {
                    Some(next) => self.add(&mut batch, next),
                    None => return,
                },
                event = events.recv() => self.heard(&mut batch, event),
                _ = sweep.tick() => batch.sweep = true,
            }
            let until = tokio::time::Instant::now() + LINGER;
            let mut open = true;
            while open && !batch.sweep && batch.len() < BATCH {
                tokio::select! {
                    next = outgoing.recv() => match next {
                        Some(next) => self.add(&mut batch, next),
                        None => open = false,
                    },
                    event = events.recv() => self.heard(&mut batch, event),
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            self.write(batch).await;
        }
    }

    fn add(&self, batch: &mut Batch, outgoing: Outgoing) {
        match outgoing {
            Outgoing::News(message) => batch.news.push(message),
            Outgoing::Opened(session) => {
                batch.news.push(NodeMessage {
                    from: self.node_id.clone(),
                    news: NodeNews::Admitted {
                        org: session.org.to_string(),
                        client_id: session.client_id.clone(),
                        session: session.session,
                    },
                });
                batch.opened.push(session);
            }
            Outgoing::Closed(session) => batch.closed.push(session),
        }
    }

    /// An event of the node's ring: this node's own are told when another node reads its org's
    /// stream (those from other nodes came from them).
    fn heard(&self, batch: &mut Batch, event: Result<Arc<Event>, RecvError>) {
        match event {
            Ok(event) if event.node.is_none() && self.watched.contains(&event.org) => {
                batch.news.push(NodeMessage {
                    from: self.node_id.clone(),
                    news: NodeNews::Event {
                        event: Box::new((*event).clone()),
                    },
                })
            }
            Ok(_) | Err(RecvError::Closed) => {}
            Err(RecvError::Lagged(missed)) => {
                metrics::counter!(crate::metrics::CLUSTER_NEWS_DROPPED).increment(missed);
            }
        }
    }

    async fn write(&self, batch: Batch) {
        // A round woken by events no other node reads: nothing to write.
        if batch.len() == 0 && !batch.sweep && !self.resync.load(Ordering::Relaxed) {
            return;
        }
        // After a loss, every row again, from the session table as it is now (it holds every
        // session this batch opened or closed, and is newer than any of them).
        let rows = self.resync.swap(false, Ordering::Relaxed).then(|| {
            let sessions = self.registry.sessions().list(None).into_iter();
            sessions
                .map(|(session, org, info)| node_session(&self.node_id, session, org, info))
                .collect::<Vec<_>>()
        });
        let (store, node_id) = (self.store.clone(), self.node_id.clone());
        let (resync, down_after) = (self.resync.clone(), self.down_after);
        let written = tokio::task::spawn_blocking(move || {
            if !batch.news.is_empty() {
                if let Err(error) = store.tell_nodes(&batch.news) {
                    tracing::warn!(%error, "other nodes not told");
                }
            }
            let listed = match &rows {
                Some(rows) => store.replace_sessions(&node_id, rows),
                None if batch.opened.is_empty() && batch.closed.is_empty() => Ok(()),
                None => store.sessions_changed(&node_id, &batch.opened, &batch.closed),
            };
            if let Err(error) = listed {
                tracing::debug!(%error, "this node's sessions not listed in the store");
                resync.store(true, Ordering::Relaxed);
            }
            if batch.sweep {
                let seen_before = time::OffsetDateTime::now_utc() - down_after;
                if let Err(error) = store.forget_sessions_of_nodes_down(seen_before) {
                    tracing::debug!(%error, "sessions of nodes down not forgotten");
                }
            }
        })
        .await;
        if let Err(error) = written {
            tracing::warn!(%error, "the teller of other nodes failed");
        }
    }
}
