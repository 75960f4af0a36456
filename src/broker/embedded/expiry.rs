//! Session expiry, which rumqttd 0.20 does not have (see the notes of [`super`]): what the
//! front-end holds for each session rumqttd keeps after its link ended — an expiry timer and the
//! session's subscriptions — and how a kept session is discarded (a short clean link of its
//! client id, then DISCONNECT). Kept in memory: a restart forgets every session anyway.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rumqttd::local::LinkTx;
use rumqttd::protocol as rp;

use super::coarse::Table;
use super::translate::to_router;
use super::{lock, BrokerError, Expiry, Memo, OpenLink};
use crate::codec::{self, Disconnect, Packet, Properties};

/// What the front-end holds for a session rumqttd keeps: its expiry timer, if it has one, its
/// [`Memo`], if it has one, and the link's real filters under coarse ones ([`Table`]).
pub(super) struct KeptSession {
    timer: Option<Timer>,
    memo: Option<Memo>,
    table: Table,
    /// The expiry the session had before a takeover handed it to its successor (`Never` until
    /// then): it gets it back if the successor fails to open.
    fallback: Option<Expiry>,
}

/// An expiry timer: its id tells it from a later one of the same client id.
struct Timer {
    id: u64,
    task: tokio::task::AbortHandle,
}

impl KeptSession {
    /// What a link leaves when it ends (no timer yet).
    pub(super) fn new(memo: Option<Memo>, table: Table, fallback: Option<Expiry>) -> KeptSession {
        KeptSession {
            timer: None,
            memo,
            table,
            fallback,
        }
    }

    /// The session is resumed (or started anew): its timer stops, its memo and table are handed
    /// back.
    pub(super) fn resume(self) -> (Option<Memo>, Table) {
        if let Some(timer) = self.timer {
            timer.task.abort();
        }
        (self.memo, self.table)
    }

    fn worth_keeping(&self) -> bool {
        self.memo.is_some() || !self.table.is_empty() || self.fallback.is_some()
    }
}

/// What is told the client id of a kept session its expiry discarded.
pub(super) type Expired = Box<dyn Fn(&str) + Send + Sync>;

/// Kept sessions, by client id: each is discarded when its timer ends unless
/// [`super::Broker::open_session`] took it first. Discards of one client id never overlap: a
/// timer's runs under the lock and only for a session still in the map (so it never overtakes a
/// session taken out to resume), and `open_session`'s runs after it took the session out under
/// the lock, while its connection holds the client id's claim. The lock is held for a map
/// operation and, at most, a timer's discard (the opening of one link: the router registers it
/// in microseconds); timers' discards run on the blocking pool, off the async workers.
pub(super) struct Keeper {
    open: Arc<OpenLink>,
    pub(super) pending: Mutex<HashMap<String, KeptSession>>,
    next: AtomicU64,
    /// Told the client id of each kept session its expiry discarded
    /// ([`super::Broker::on_expired`]).
    pub(super) expired: OnceLock<Expired>,
}

impl Keeper {
    pub(super) fn new(open: Arc<OpenLink>) -> Keeper {
        Keeper {
            open,
            pending: Mutex::default(),
            next: AtomicU64::default(),
            expired: OnceLock::new(),
        }
    }

    /// Drops what rumqttd stores for `client_id`: a clean link of that client id takes the stored
    /// session, and its DISCONNECT lets it go. The caller makes sure no other discard or link of
    /// this client id runs meanwhile (see [`Keeper`]).
    pub(super) fn discard(&self, client_id: &str) -> Result<(), BrokerError> {
        let (mut tx, _rx, _) = (self.open)(client_id, true)?;
        send_now(
            &mut tx,
            to_router(Packet::Disconnect(Disconnect {
                reason: codec::reason::SUCCESS,
                properties: Properties::default(),
            }))?,
        )
    }

    /// Discards `client_id`'s stored session on the blocking pool (opening a link blocks until
    /// the router registers it), under the `pending` lock, when `still` says so then; `expired`:
    /// tell [`Keeper::expired`].
    async fn discard_off_workers(
        self: &Arc<Keeper>,
        client_id: String,
        expired: bool,
        still: impl FnOnce(&mut HashMap<String, KeptSession>) -> bool + Send + 'static,
    ) {
        let keeper = self.clone();
        let discarded = tokio::task::spawn_blocking(move || {
            let mut pending = lock(&keeper.pending);
            if !still(&mut pending) {
                return;
            }
            if let Err(error) = keeper.discard(&client_id) {
                tracing::warn!(%error, "an ended session could not be discarded");
            }
            drop(pending);
            if let (true, Some(expired)) = (expired, keeper.expired.get()) {
                expired(&client_id);
            }
        });
        if let Err(error) = discarded.await {
            tracing::warn!(%error, "a session discard did not finish");
        }
    }

    /// What happens to a session whose connection ended, by its expiry (`session`: what the
    /// front-end keeps with it).
    pub(super) async fn ended(
        self: &Arc<Keeper>,
        client_id: String,
        kept: bool,
        expiry: Expiry,
        session: KeptSession,
    ) {
        match expiry {
            Expiry::Never if kept && session.worth_keeping() => {
                lock(&self.pending).insert(client_id, session);
            }
            Expiry::Never => {}
            Expiry::Now if !kept => {}
            // Awaited: the session's client id is free again only once it is discarded.
            Expiry::Now => self.discard_off_workers(client_id, false, |_| true).await,
            Expiry::After(delay) => {
                let mut pending = lock(&self.pending);
                self.arm(&mut pending, client_id, delay, session);
            }
        }
    }

    /// Puts back a kept session [`super::Broker::open_session`] took but could not resume (its
    /// link did not open): with its timer, or a new one for the expiry it had before a takeover.
    /// A timer that fired while the session was taken found nothing: the session has expired,
    /// and is discarded now.
    pub(super) fn restore(
        self: &Arc<Keeper>,
        pending: &mut HashMap<String, KeptSession>,
        client_id: &str,
        mut session: KeptSession,
    ) {
        if session
            .timer
            .as_ref()
            .is_some_and(|timer| timer.task.is_finished())
        {
            if let Err(error) = self.discard(client_id) {
                tracing::warn!(%error, "an expired session could not be discarded");
            }
            if let Some(expired) = self.expired.get() {
                expired(client_id);
            }
            return;
        }
        match (session.timer.is_some(), session.fallback.take()) {
            (false, Some(Expiry::After(delay))) => {
                self.arm(pending, client_id.to_owned(), delay, session);
            }
            (false, Some(Expiry::Now)) => {
                // The caller holds the lock, as every discard does.
                if let Err(error) = self.discard(client_id) {
                    tracing::warn!(%error, "a session taken over could not be discarded");
                }
            }
            _ => {
                pending.insert(client_id.to_owned(), session);
            }
        }
    }

    /// Keeps `session` until `delay` has passed, then discards it unless a new session took it.
    fn arm(
        self: &Arc<Keeper>,
        pending: &mut HashMap<String, KeptSession>,
        client_id: String,
        delay: Duration,
        mut session: KeptSession,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let keeper = self.clone();
        let key = client_id.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let owned = client_id.clone();
            let still = move |pending: &mut HashMap<String, KeptSession>| {
                let ours = pending
                    .get(&owned)
                    .and_then(|kept| kept.timer.as_ref())
                    .is_some_and(|timer| timer.id == id);
                ours && pending.remove(&owned).is_some()
            };
            keeper.discard_off_workers(client_id, true, still).await;
        });
        session.timer = Some(Timer {
            id,
            task: task.abort_handle(),
        });
        pending.insert(key, session);
    }
}

/// Hands one packet to the router without waiting: rumqttd's `LinkTx::send` has no await point
/// (its channel send is synchronous), so its future completes on the first poll.
pub(super) fn send_now(tx: &mut LinkTx, packet: rp::Packet) -> Result<(), BrokerError> {
    let mut send = std::pin::pin!(tx.send(packet));
    match send.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.map(|_| ()).map_err(BrokerError::from),
        Poll::Pending => Err(BrokerError::Link("the router did not take a packet".into())),
    }
}
