//! What the nodes of a cluster tell each other (DESIGN §12), through the store
//! (`NodeStore::tell_nodes`: on PostgreSQL a `NOTIFY portcullis_node` every node listens to):
//!
//! - one session per client id across nodes: a session admitted here ends a session of the same
//!   client id on any other node, as a takeover (MQTT 5: DISCONNECT 0x8E; 3.1.1: closed);
//! - `DELETE …/sessions/{client_id}` on any node ends the session wherever it is: the node that
//!   held it answers, and the asking node waits at most [`REPLY_WAIT`] for that answer;
//! - the notifier runs on the leader only (`crate::leader`): a settings change or an alert from
//!   the data path on another node is passed to it;
//! - every node's event stream carries every node's connects, disconnects and refusals: a node
//!   reading an org's stream says so (now, then every [`WATCH_EVERY`]), and the others tell it
//!   that org's events for [`WATCH_FOR`] after they last heard it, and no others;
//! - the session list of any node shows every node's sessions: each node writes its own to the
//!   store's `live_sessions` (see [`teller`]) and lists the others' from there.
//!
//! Each is applied here through the paths a single node uses (the session table's close, the
//! notifier's wake and alert, the event ring). On SQLite the one node has nobody to tell.
//!
//! A notification reaches the nodes listening when it is sent: a node that is reconnecting its
//! listener misses it. Of two sessions of one client id admitted on two nodes at nearly the same
//! time, the one whose admission PostgreSQL delivers last stays: every node hears admissions in
//! commit order, and a node takes its session over only for an admission heard after its own.

mod teller;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::OrgId;
use crate::notify::{Notifier, ALERT_EVENTS};
use crate::registry::Registry;
use crate::store::{NodeMessage, NodeNews, NodeSession, PageRequest, Store, StoreError};
use teller::Outgoing;

/// How long a `DELETE` of a session no node here holds waits for another node to say it closed
/// it: the contract's second, and as much again for the answer's way back.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);
/// A node reading an org's event stream says so again this often.
pub const WATCH_EVERY: Duration = Duration::from_secs(10);
/// The events of an org are told to the other nodes this long after one last said it reads them.
pub const WATCH_FOR: Duration = Duration::from_secs(30);
/// The same alert is passed to the leader at most this often by one node.
const ALERT_EVERY: Duration = Duration::from_secs(60);
/// Alerts remembered for [`ALERT_EVERY`]; past this many, all are forgotten.
const ALERTS_REMEMBERED: usize = 10_000;

type Alert = (OrgId, &'static str, String);

/// This node's side of the conversation.
pub struct Cluster {
    node_id: String,
    /// `None` on SQLite: nobody else to tell.
    store: Option<Arc<dyn Store>>,
    /// News and session rows for the [`teller`], which writes them in the order given (`None`
    /// on SQLite).
    outbox: Option<mpsc::Sender<Outgoing>>,
    /// Some news of this node's sessions was lost: the teller writes them all again.
    resync: Arc<AtomicBool>,
    /// The orgs whose events other nodes read, when they last said so.
    watched: Arc<teller::Watched>,
    /// A node whose heartbeat is older is down: its sessions are not listed.
    down_after: Duration,
    registry: Arc<Registry>,
    notifier: Arc<Notifier>,
    /// This node leads (its notifier runs).
    leading: watch::Receiver<bool>,
    /// `DELETE`s waiting for another node's answer, by request number.
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_request: AtomicU64,
    /// When each alert was last passed to the leader.
    alerts_passed: Mutex<HashMap<Alert, Instant>>,
}

impl Cluster {
    /// `shared`: the store is shared with other nodes (PostgreSQL). With the task that tells
    /// the other nodes this node's news when there are any (run it on the runtime; it ends when
    /// the `Cluster` and every [`Seat`] are gone, after telling what is queued).
    pub fn new(
        node_id: String,
        store: Arc<dyn Store>,
        shared: bool,
        registry: Arc<Registry>,
        notifier: Arc<Notifier>,
        leading: watch::Receiver<bool>,
        down_after: Duration,
    ) -> (Cluster, Option<impl std::future::Future<Output = ()>>) {
        let store = shared.then_some(store);
        // The rows a node left behind at its last start (killed, or stopped while the store
        // was down) are replaced first.
        let resync = Arc::new(AtomicBool::new(true));
        let watched = Arc::new(teller::Watched::default());
        let (outbox, teller) = match &store {
            Some(store) => {
                let (outbox, outgoing) = mpsc::channel(teller::OUTBOX);
                let teller = teller::Teller {
                    store: store.clone(),
                    node_id: node_id.clone(),
                    registry: registry.clone(),
                    resync: resync.clone(),
                    watched: watched.clone(),
                    down_after,
                };
                (Some(outbox), Some(teller.run(outgoing)))
            }
            None => (None, None),
        };
        let cluster = Cluster {
            node_id,
            store,
            outbox,
            resync,
            watched,
            down_after,
            registry,
            notifier,
            leading,
            waiting: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            alerts_passed: Mutex::new(HashMap::new()),
        };
        (cluster, teller)
    }

    /// This node's id, as its sessions and events name it.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Live session `session` was admitted here: the other nodes end theirs of its client id,
    /// and list it until the [`Seat`] is dropped. Does not wait.
    pub fn admitted(&self, session: u64) -> Seat {
        let Some(outbox) = &self.outbox else {
            return Seat(None);
        };
        let Some((org, info)) = self.registry.sessions().get(session) else {
            return Seat(None);
        };
        let row = teller::node_session(&self.node_id, session, org, info);
        self.send(Outgoing::Opened(row));
        Seat(Some((outbox.clone(), self.resync.clone(), session)))
    }

    /// The org's sessions on every node that is up (this one's from memory), those after the
    /// page's cursor in `(connected_at, client_id)` order: one page and one more row.
    pub async fn sessions(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Vec<NodeSession>, StoreError> {
        let (after_micros, after_id) = page.after();
        let mut rows: Vec<NodeSession> = self
            .registry
            .sessions()
            .list(Some(org))
            .into_iter()
            .map(|(session, org, info)| teller::node_session(&self.node_id, session, org, info))
            .filter(|s| {
                let micros = crate::store::page::micros(s.connected_at);
                (micros, s.client_id.as_str()) > (after_micros, after_id)
            })
            .collect();
        if let Some(store) = self.store.clone() {
            let (org, node_id, page) = (org.clone(), self.node_id.clone(), page.clone());
            let seen_since = time::OffsetDateTime::now_utc() - self.down_after;
            let others = tokio::task::spawn_blocking(move || {
                store.other_nodes_sessions(&org, &node_id, seen_since, &page)
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("listing sessions: {e}")))??;
            rows.extend(others);
        }
        rows.sort_by(|a, b| (a.connected_at, &a.client_id).cmp(&(b.connected_at, &b.client_id)));
        rows.truncate(usize::try_from(page.rows_to_fetch()).unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// The store listener (re)connected: what it missed is lost, and every live session is
    /// older than any admission heard from now on.
    pub fn followed(&self) {
        self.registry.sessions().heard(None);
    }

    /// Ends the session of `org` holding `client_id` wherever it is (DISCONNECT 0x98): true when
    /// this node held it, or another node said within [`REPLY_WAIT`] that it did.
    pub async fn disconnect(&self, org: &OrgId, client_id: &str) -> Result<bool, StoreError> {
        let here = self.registry.sessions().disconnect(org, client_id);
        let Some(store) = self.store.clone() else {
            return Ok(here);
        };
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        if !here {
            self.waiting().insert(request, answered);
        }
        let message = self.message(NodeNews::Disconnect {
            org: org.to_string(),
            client_id: client_id.to_owned(),
            request,
        });
        let told = tokio::task::spawn_blocking(move || store.tell_nodes(&[message]))
            .await
            .map_err(|e| StoreError::Corrupt(format!("telling the nodes: {e}")))?;
        let closed = match told {
            Err(error) if !here => Err(error),
            Err(error) => {
                tracing::warn!(%error, "other nodes not told of a disconnect");
                Ok(true)
            }
            Ok(()) if here => Ok(true),
            Ok(()) => Ok(tokio::time::timeout(REPLY_WAIT, answer)
                .await
                .is_ok_and(|answer| answer.is_ok())),
        };
        self.waiting().remove(&request);
        closed
    }

    /// An event stream of `org` is read here: the other nodes are told now and every
    /// [`WATCH_EVERY`] until the returned [`Watch`] is dropped, and tell this node that org's
    /// events meanwhile.
    pub fn watch(self: &Arc<Self>, org: &OrgId) -> Watch {
        if self.outbox.is_none() {
            return Watch(None);
        }
        let (cluster, org) = (self.clone(), org.to_string());
        Watch(Some(tokio::spawn(async move {
            loop {
                cluster.tell_later(NodeNews::Watching { org: org.clone() });
                tokio::time::sleep(WATCH_EVERY).await;
            }
        })))
    }

    /// The org's notification settings changed: the leader's notifier makes a pass now.
    pub fn wake_notifier(&self) {
        if *self.leading.borrow() {
            self.notifier.wake();
        } else {
            self.tell_later(NodeNews::Notify { alert: None });
        }
    }

    /// An alert from the data path (an OCSP responder out of reach), for the leader's notifier.
    pub fn alert(&self, org: &OrgId, event: &'static str, object: String) {
        if *self.leading.borrow() || self.store.is_none() {
            self.notifier.alert(org, event, object);
            return;
        }
        let alert = (org.clone(), event, object);
        let now = Instant::now();
        {
            let mut passed = self
                .alerts_passed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if passed
                .get(&alert)
                .is_some_and(|at| now.duration_since(*at) < ALERT_EVERY)
            {
                return;
            }
            if passed.len() >= ALERTS_REMEMBERED {
                passed.clear();
            }
            passed.insert(alert.clone(), now);
        }
        let (org, event, object) = alert;
        self.tell_later(NodeNews::Notify {
            alert: Some((org.to_string(), event.to_owned(), object)),
        });
    }

    /// Applies what a node told (this one's own news is ignored). Runs on the store listener's
    /// thread, where the store may block.
    pub fn apply(&self, message: NodeMessage) {
        if message.from == self.node_id {
            // Every node hears the admissions in one order (PostgreSQL delivers notifications
            // in commit order): a session whose own comes back is older than those heard next.
            if let NodeNews::Admitted { session, .. } = message.news {
                self.registry.sessions().heard(Some(session));
            }
            return;
        }
        match message.news {
            NodeNews::Admitted { org, client_id, .. } => {
                if let Ok(org) = OrgId::parse(&org) {
                    if self.registry.sessions().take_over(&org, &client_id) {
                        tracing::info!(org = %org, client_id, node = message.from,
                            "session taken over on another node");
                    }
                }
            }
            NodeNews::Disconnect {
                org,
                client_id,
                request,
            } => {
                let Ok(org) = OrgId::parse(&org) else { return };
                if !self.registry.sessions().disconnect(&org, &client_id) {
                    return;
                }
                let Some(store) = &self.store else { return };
                let answer = self.message(NodeNews::Closed {
                    to: message.from,
                    request,
                });
                if let Err(error) = store.tell_nodes(&[answer]) {
                    tracing::warn!(%error, "the node that asked was not told of the disconnect");
                }
            }
            NodeNews::Closed { to, request } => {
                if to == self.node_id {
                    if let Some(waiting) = self.waiting().remove(&request) {
                        let _ = waiting.send(());
                    }
                }
            }
            NodeNews::Watching { org } => self.watched.mark(org),
            NodeNews::Event { mut event } => {
                event.node = Some(message.from);
                self.registry.events().publish(*event);
            }
            // Only the leader's notifier runs: the others keep no alerts they would never send.
            NodeNews::Notify { .. } if !*self.leading.borrow() => {}
            NodeNews::Notify { alert: None } => self.notifier.wake(),
            NodeNews::Notify {
                alert: Some((org, event, object)),
            } => {
                let event = ALERT_EVENTS.iter().find(|known| **known == event);
                if let (Ok(org), Some(event)) = (OrgId::parse(&org), event) {
                    self.notifier.alert(&org, event, object);
                }
            }
        }
    }

    fn message(&self, news: NodeNews) -> NodeMessage {
        NodeMessage {
            from: self.node_id.clone(),
            news,
        }
    }

    /// Queues `news` for the other nodes without waiting.
    fn tell_later(&self, news: NodeNews) {
        self.send(Outgoing::News(self.message(news)));
    }

    fn send(&self, outgoing: Outgoing) {
        if let Some(outbox) = &self.outbox {
            teller::send(outbox, &self.resync, outgoing);
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An event stream read here (see [`Cluster::watch`]): while held, the other nodes are told so.
pub struct Watch(Option<tokio::task::JoinHandle<()>>);

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// A session of this node as the cluster lists it: while it is held, the others list the session
/// (see [`Cluster::admitted`]).
pub struct Seat(Option<(mpsc::Sender<Outgoing>, Arc<AtomicBool>, u64)>);

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some((outbox, resync, session)) = &self.0 {
            teller::send(outbox, resync, Outgoing::Closed(*session));
        }
    }
}
