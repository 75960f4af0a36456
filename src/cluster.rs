//! What the nodes of a cluster tell each other (DESIGN §12), through the store
//! (`NodeStore::tell_nodes`: on PostgreSQL a `NOTIFY portcullis_node` every node listens to):
//!
//! - one session per client id across nodes: a session admitted here ends a session of the same
//!   client id on any other node, as a takeover (MQTT 5: DISCONNECT 0x8E; 3.1.1: closed);
//! - `DELETE …/sessions/{client_id}` on any node ends the session wherever it is: the node that
//!   held it answers, and the asking node waits at most [`REPLY_WAIT`] for that answer;
//! - the notifier runs on the leader only (`crate::leader`): a settings change or an alert from
//!   the data path on another node is passed to it.
//!
//! Each is applied here through the paths a single node uses (the session table's close, the
//! notifier's wake and alert). On SQLite the one node has nobody to tell.
//!
//! A notification reaches the nodes listening when it is sent: a node that is reconnecting its
//! listener misses it. Of two sessions of one client id admitted on two nodes at nearly the same
//! time, the one whose admission PostgreSQL delivers last stays: every node hears admissions in
//! commit order, and a node takes its session over only for an admission heard after its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::OrgId;
use crate::notify::{Notifier, ALERT_EVENTS};
use crate::registry::Registry;
use crate::store::{NodeMessage, NodeNews, Store, StoreError};

/// How long a `DELETE` of a session no node here holds waits for another node to say it closed
/// it: the contract's second, and as much again for the answer's way back.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);
/// The same alert is passed to the leader at most this often by one node.
const ALERT_EVERY: Duration = Duration::from_secs(60);
/// Alerts remembered for [`ALERT_EVERY`]; past this many, all are forgotten.
const ALERTS_REMEMBERED: usize = 10_000;
/// News waiting to be told (one admission each, in a connect storm); past it, news is dropped
/// and counted, never waited for: the data path does not wait on the store.
const OUTBOX: usize = 4096;
/// Most news told in one round trip.
const BATCH: usize = 256;

type Alert = (OrgId, &'static str, String);

/// This node's side of the conversation.
pub struct Cluster {
    node_id: String,
    /// `None` on SQLite: nobody else to tell.
    store: Option<Arc<dyn Store>>,
    /// News for [`tell_from`], which tells it in the order given (`None` on SQLite).
    outbox: Option<mpsc::Sender<NodeMessage>>,
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
    /// the `Cluster` is gone, after telling what is queued).
    pub fn new(
        node_id: String,
        store: Arc<dyn Store>,
        shared: bool,
        registry: Arc<Registry>,
        notifier: Arc<Notifier>,
        leading: watch::Receiver<bool>,
    ) -> (Cluster, Option<impl std::future::Future<Output = ()>>) {
        let store = shared.then_some(store);
        let (outbox, teller) = match &store {
            Some(store) => {
                let (outbox, news) = mpsc::channel(OUTBOX);
                (Some(outbox), Some(tell_from(store.clone(), news)))
            }
            None => (None, None),
        };
        let cluster = Cluster {
            node_id,
            store,
            outbox,
            registry,
            notifier,
            leading,
            waiting: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            alerts_passed: Mutex::new(HashMap::new()),
        };
        (cluster, teller)
    }

    /// Session `session` of `client_id` was admitted here: the other nodes end theirs. Does not
    /// wait.
    pub fn admitted(&self, org: &OrgId, client_id: &str, session: u64) {
        self.tell_later(NodeNews::Admitted {
            org: org.to_string(),
            client_id: client_id.to_owned(),
            session,
        });
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

    /// Queues `news` for the other nodes without waiting; dropped and counted when the queue is
    /// full (the store slow or unreachable).
    fn tell_later(&self, news: NodeNews) {
        let Some(outbox) = &self.outbox else { return };
        if outbox.try_send(self.message(news)).is_err() {
            metrics::counter!(crate::metrics::CLUSTER_NEWS_DROPPED).increment(1);
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tells the other nodes the news queued in `news`, in batches of up to [`BATCH`] in one round
/// trip each, one batch at a time: a store that is slow or down holds one blocking thread, never
/// one per session. A failure is logged; that batch is lost (notifications are not kept).
async fn tell_from(store: Arc<dyn Store>, mut news: mpsc::Receiver<NodeMessage>) {
    while let Some(first) = news.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match news.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.tell_nodes(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "other nodes not told"),
            Err(error) => tracing::warn!(%error, "the teller of other nodes failed"),
        }
    }
}
