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

use super::translate::to_router;
use super::{lock, BrokerError, OpenLink};
use crate::codec::{self, Disconnect, Packet, Properties};

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
}

/// What the front-end keeps with a session rumqttd keeps, opaque here: the session layer's
/// subscription options and identifiers, which rumqttd does not keep (it downcasts it back).
pub type Memo = Box<dyn std::any::Any + Send + Sync>;

/// What the front-end holds for a session rumqttd keeps: its expiry timer, if it has one, and
/// its [`Memo`], if it has one.
pub(super) struct KeptSession {
    timer: Option<Timer>,
    memo: Option<Memo>,
}

/// An expiry timer: its id tells it from a later one of the same client id.
struct Timer {
    id: u64,
    task: tokio::task::AbortHandle,
}

impl KeptSession {
    /// The session is resumed (or started anew): its timer stops, its memo is handed back.
    pub(super) fn resume(self) -> Option<Memo> {
        if let Some(timer) = self.timer {
            timer.task.abort();
        }
        self.memo
    }
}

/// What is told the client id of a kept session its expiry discarded.
pub(super) type Expired = Box<dyn Fn(&str) + Send + Sync>;

/// Kept sessions, by client id: each is discarded when its timer ends unless
/// [`Broker::open_session`] took it first. The lock also orders every link opened for a client
/// id, so a discard can never overtake a session that resumed.
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
    /// session, and its DISCONNECT lets it go. The caller holds the `pending` lock.
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

    /// What happens to a session whose connection ended, by its expiry (`memo`: what the
    /// front-end keeps with it, none when there is nothing worth keeping).
    pub(super) fn ended(
        self: &Arc<Keeper>,
        client_id: String,
        kept: bool,
        expiry: Expiry,
        memo: Option<Memo>,
    ) {
        match expiry {
            Expiry::Never if kept && memo.is_some() => {
                let session = KeptSession { timer: None, memo };
                lock(&self.pending).insert(client_id, session);
            }
            Expiry::Never => {}
            Expiry::Now if !kept => {}
            Expiry::Now => {
                let _pending = lock(&self.pending);
                if let Err(error) = self.discard(&client_id) {
                    tracing::warn!(%error, "an ended session could not be discarded");
                }
            }
            Expiry::After(delay) => {
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                let keeper = self.clone();
                let key = client_id.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut pending = lock(&keeper.pending);
                    let ours = pending
                        .get(&client_id)
                        .and_then(|kept| kept.timer.as_ref())
                        .is_some_and(|timer| timer.id == id);
                    if ours {
                        pending.remove(&client_id);
                        if let Err(error) = keeper.discard(&client_id) {
                            tracing::warn!(%error, "an expired session could not be discarded");
                        }
                        if let Some(expired) = keeper.expired.get() {
                            expired(&client_id);
                        }
                    }
                });
                let session = KeptSession {
                    timer: Some(Timer {
                        id,
                        task: task.abort_handle(),
                    }),
                    memo,
                };
                lock(&self.pending).insert(key, session);
            }
        }
    }
}

/// Hands one packet to the router without waiting: rumqttd's `LinkTx::send` has no await point
/// (its channel send is synchronous), so its future completes on the first poll.
fn send_now(tx: &mut LinkTx, packet: rp::Packet) -> Result<(), BrokerError> {
    let mut send = std::pin::pin!(tx.send(packet));
    match send.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.map(|_| ()).map_err(BrokerError::from),
        Poll::Pending => Err(BrokerError::Link("the router did not take a packet".into())),
    }
}
