//! The embedded broker (rumqttd 0.20). Nothing outside this module names a rumqttd type.
//!
//! Sessions reach rumqttd's router through in-process local links (`LinkBuilder`): packets go to
//! the router as values on its channel, with no MQTT encoding, no loopback TCP connection and no
//! listener thread in between (a loopback leg cost about as much CPU per connection as the TLS
//! handshake's key exchange, see BENCHMARKS.md). The router runs on its own thread; it stops when
//! the [`Broker`] and every link are gone.
//!
//! What the session in front of it must know (read from rumqttd's source, checked by the tests):
//! - opening a link blocks the calling thread until the router has registered it (microseconds:
//!   the router does nothing slow); a router at its `max_connections`, or a client id with
//!   `+ $ # /`, answers by dropping the link. The front-end hands out `broker.max_connections`
//!   session slots and answers "server busy" itself; the router has headroom above that for links
//!   that are closing and for will publications;
//! - a link ends only when a DISCONNECT goes through it: a dropped link stays in the router for
//!   good. So every [`BrokerSession`] ends with [`BrokerSession::close`] (or a forwarded
//!   DISCONNECT);
//! - a DISCONNECT deletes the will the router would hold, and the router publishes wills only for
//!   its TCP listeners: wills are the front-end's ([`Broker::will`]), with the MQTT 5 will delay;
//! - the router keeps up to [`BROKER_MAX_INFLIGHT`] QoS 1/2 deliveries unacknowledged per link,
//!   whatever Receive Maximum the client asked for; a link whose notification buffer fills is
//!   paused until it says it is ready again ([`BrokerSession::recv`] does);
//! - `Publish` keeps its QoS and packet id in crate-private fields: they are written and read
//!   through rumqttd's own serialised header (`Publish::deserialize`/`serialize`), which the
//!   tests below pin;
//! - each distinct subscription filter costs about 6 KiB of RSS that is never freed (its commit
//!   log, its entry in the filter index and the subscriber map: rumqttd 0.20 has no way to drop
//!   a filter, even when its last subscriber leaves), and each distinct client id with clean
//!   start 0 leaves its session state behind, forever. So the distinct filters handed to the
//!   router are bounded: [`Broker::hold_filter`] admits a new one only below
//!   `broker.max_filters`.
//! - rumqttd knows one flag, "clean", which both discards a stored session at connect and keeps
//!   none at disconnect, and no Session Expiry Interval: the MQTT 5 expiry is the front-end's
//!   ([`Expiry`]): a session to keep is opened unclean (after discarding the stored one when its
//!   CONNECT had clean start 1), and a kept session is discarded by a short clean link of the same
//!   client id once its expiry has passed unless a new session resumed it first.
//!
//! [`Broker::start`] can also bind plain MQTT 5 TCP listeners on loopback to the same router
//! (`plain_listeners`, with a per-process random credential): the load tool's baseline of what
//! the broker costs without the front-end. The server itself binds none.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    self as rp, DisconnectReasonCode, Filter, PubAckReason, PubCompReason, PubRecReason,
    PubRelReason, RetainForwardRule, SubscribeReasonCode, UnsubAckReason,
};
use rumqttd::Notification;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::codec::{self, Ack, Disconnect, Packet, Properties, Publish, QoS, SubAck, UnsubAck};
use crate::config::BrokerConfig;

mod expiry;

pub use expiry::Expiry;
use expiry::Keeper;
pub use expiry::Memo;

/// The one user of the plain listeners.
const USERNAME: &str = "portcullis";
/// How long [`Broker::start`] waits for a plain listener to answer, all attempts together.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports are found by binding `:0` and letting go, so another socket may take one before rumqttd
/// binds it: a listener is retried on a new port this many times.
const START_ATTEMPTS: usize = 3;
/// Deadline of one readiness probe (CONNECT → CONNACK).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between probes of a listener that is not accepting yet.
const PROBE_RETRY: Duration = Duration::from_millis(10);
/// How long rumqttd waits for CONNECT after accepting on a plain listener.
const CONNECT_PACKET_TIMEOUT_MS: u16 = 10_000;
/// Largest remaining length a plain listener reads.
const PLAIN_MAX_PACKET: usize = 268_435_455;
/// QoS 0 deliveries the router hands a connection per sweep of one filter.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;
/// Per-filter commit log: every subscription filter gets its own log of `SEGMENT_COUNT` segments
/// of about `SEGMENT_SIZE` bytes, kept in memory (the default, 1 GiB per filter, is unusable).
/// The size is a soft limit: a message larger than a segment is stored whole and fills it. A
/// subscriber lagging by more than the log loses messages.
const SEGMENT_SIZE: usize = 100 * 1024;
const SEGMENT_COUNT: usize = 10;

/// Packets of one link the router may have yet to take before the session waits.
const MAX_QUEUED: usize = 128;
/// How often a waiting session looks whether the router took its queue.
const QUEUE_POLL: Duration = Duration::from_millis(1);
/// How long a session waits for the router to take its queue before it gives up on the link.
const QUEUE_STALL: Duration = Duration::from_secs(10);
/// Most packets [`BrokerSession::recv`] hands over at once.
const RECV_BATCH: usize = 256;

/// QoS 1/2 deliveries rumqttd keeps unacknowledged per connection, whatever Receive Maximum the
/// CONNECT asked for (its packet ids go `1..=100`). The session queues what its client cannot take.
pub const BROKER_MAX_INFLIGHT: u16 = 100;

/// What [`Broker::hold_filter`] did with a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The router holds it already: no new cost.
    Already,
    /// A new distinct filter, held from now on, for good.
    Added,
    /// Not held, and not to be handed to the router.
    Refused,
}

/// Tells the brokers of one process apart in thread names and rumqttd's router id.
static NEXT_BROKER_ID: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker: {0}")]
    Start(String),
    #[error("the embedded broker holds broker.max_connections sessions")]
    Full,
    #[error("the embedded broker dropped the link: {0}")]
    Link(String),
    #[error("the broker leg does not carry {0}")]
    Unsupported(&'static str),
}

/// rumqttd's `LinkError` carries the router's whole event (hundreds of bytes): only its message
/// crosses this module's boundary.
impl From<LinkError> for BrokerError {
    fn from(error: LinkError) -> BrokerError {
        BrokerError::Link(error.to_string())
    }
}

/// Opens a local link: (client id, clean session) → the link and the router's CONNACK.
type OpenLink =
    dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), BrokerError> + Send + Sync;

/// A will waiting out its delay; `fate` settles it early: `true` publishes now (the session
/// ended), `false` drops it (the session was resumed).
struct PendingWill {
    id: u64,
    fate: oneshot::Sender<bool>,
}

type PendingWills = Arc<Mutex<HashMap<String, PendingWill>>>;

/// rumqttd's own connection limit, above the front-end's session slots: will publications use
/// short-lived links of their own, and the probes of plain listeners count too.
fn router_connections(sessions: usize) -> usize {
    sessions.saturating_add((sessions / 10).max(64))
}

pub struct Broker {
    open: Arc<OpenLink>,
    keeper: Arc<Keeper>,
    /// One permit per session: the front-end refuses a session (CONNACK server busy) before the
    /// router could ever be full.
    slots: Arc<Semaphore>,
    wills: PendingWills,
    next_will: Arc<AtomicU64>,
    addrs: Vec<SocketAddr>,
    password: String,
    /// Every distinct filter the router was handed (it keeps each for good), up to `max_filters`.
    held: Mutex<HashSet<String>>,
    max_filters: usize,
    /// How many of them one organisation may hand it (see [`Broker::max_filters_per_org`]).
    max_filters_per_org: usize,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// One session's link to the router, holding its session slot.
pub struct BrokerSession {
    tx: LinkTx,
    rx: LinkRx,
    _slot: OwnedSemaphorePermit,
    session_present: bool,
    /// The router paused this link (its notification buffer was full): say ready before reading.
    paused: bool,
    /// A DISCONNECT went through: the router has let go of the link.
    ended: bool,
    client_id: String,
    /// rumqttd keeps this session when the link ends (it was opened unclean).
    kept: bool,
    expiry: Expiry,
    /// What the front-end kept with a resumed session, then what to keep with it.
    memo: Option<Memo>,
    keeper: Arc<Keeper>,
}

impl Broker {
    /// Starts rumqttd's router on its own thread and, when `config.plain_listeners` > 0, that many
    /// plain MQTT 5 listeners on 127.0.0.1, returning once each answers a CONNECT.
    pub async fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
        if config.max_connections == 0 {
            return Err(BrokerError::Start(
                "max_connections must be greater than 0".into(),
            ));
        }
        let id = NEXT_BROKER_ID.fetch_add(1, Ordering::Relaxed);
        let password = hex::encode(rand::random::<[u8; 32]>());
        let router = rumqttd::Router::new(id, router_config(config));
        // The router's channel type is private to rumqttd: it lives on in these two closures.
        let router_tx = router.spawn();
        let listener_tx = router_tx.clone();
        let new_server =
            move |settings| rumqttd::Server::new(settings, listener_tx.clone(), rp::v5::V5);
        let open: Arc<OpenLink> = Arc::new(move |client_id: &str, clean: bool| {
            LinkBuilder::new(client_id, router_tx.clone())
                .clean_session(clean)
                .build()
                .map_err(BrokerError::from)
        });
        let mut addrs = Vec::with_capacity(config.plain_listeners);
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..config.plain_listeners {
            addrs.push(start_listener(id, i, &new_server, &password, deadline).await?);
        }
        tracing::info!(broker = id, ?addrs, "embedded broker started");
        Ok(Broker {
            keeper: Arc::new(Keeper::new(open.clone())),
            open,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            wills: Arc::default(),
            next_will: Arc::default(),
            addrs,
            password,
            held: Mutex::default(),
            max_filters: config.max_filters,
            max_filters_per_org: config.max_filters_per_org,
        })
    }

    /// Opens a 3.1.1-style session's link: clean start 1 keeps nothing after it ends, 0 keeps
    /// the session for good (see [`Broker::open_session`]).
    pub fn open(&self, client_id: &str, clean_start: bool) -> Result<BrokerSession, BrokerError> {
        let expiry = if clean_start {
            Expiry::Now
        } else {
            Expiry::Never
        };
        self.open_session(client_id, clean_start, expiry)
    }

    /// Whether `filter` may be handed to the router: yes when it holds it already (no new cost),
    /// or when `may_add` and it holds fewer than `broker.max_filters` distinct filters (then it
    /// counts from now on, for good, as the router's state for it does).
    pub fn hold_filter(&self, filter: &str, may_add: bool) -> Hold {
        let mut held = lock(&self.held);
        if held.contains(filter) {
            return Hold::Already;
        }
        if !may_add || held.len() >= self.max_filters {
            return Hold::Refused;
        }
        held.insert(filter.to_owned());
        metrics::gauge!(crate::metrics::BROKER_FILTERS).set(held.len() as f64);
        Hold::Added
    }

    /// Most distinct filters one organisation may hand the router (`broker.max_filters_per_org`):
    /// the router frees none, so each org gets a share of its bound (the front-end counts).
    pub fn max_filters_per_org(&self) -> usize {
        self.max_filters_per_org
    }

    /// Calls `expired` with the client id of every kept session discarded because its expiry
    /// passed, so that what the front-end counts for it is let go. Set once; later calls do
    /// nothing.
    pub fn on_expired(&self, expired: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.keeper.expired.set(Box::new(expired));
    }

    /// Distinct filters the router holds (see [`Broker::hold_filter`]).
    pub fn filters_held(&self) -> usize {
        lock(&self.held).len()
    }

    /// Opens a session's link, holding one of the `broker.max_connections` session slots until
    /// it is dropped; `Full` when none is free. `clean_start` discards a stored session of this
    /// client id (else it is resumed, unless its expiry passed); `expiry` says how long the
    /// session is kept once its link ends ([`BrokerSession::set_expiry`] may change it). A will
    /// of an earlier session with this client id still waiting out its delay is published now
    /// when `clean_start` ends that session, and dropped when this one resumes it.
    ///
    /// Blocks the calling thread until the router has registered the link (see the module notes).
    pub fn open_session(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry: Expiry,
    ) -> Result<BrokerSession, BrokerError> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| BrokerError::Full)?;
        // rumqttd keeps what an unclean link leaves, and resumes only on an unclean link.
        let keep = expiry != Expiry::Now;
        let kept = keep || !clean_start;
        // The pending entry is taken under the lock, and the link opened without it: opening waits
        // for the router thread, and every session open would wait behind it (a global lock held
        // across a thread hand-off). Once the entry is gone its expiry timer finds nothing to do,
        // and no other entry for this client id can appear while it holds its claim.
        let held = lock(&self.keeper.pending).remove(client_id);
        if clean_start && keep {
            // An unclean link would resume the stored session: drop it first.
            self.keeper.discard(client_id)?;
        }
        let (tx, rx, connack) = (self.open)(client_id, !kept)?;
        // Only a session that exists settles the will of the one before it.
        let pending = lock(&self.wills).remove(client_id);
        if let Some(pending) = pending {
            let _ = pending.fate.send(clean_start);
        }
        let session_present = matches!(
            Option::<rp::Packet>::from(connack),
            Some(rp::Packet::ConnAck(ack, _)) if ack.session_present
        );
        let memo = match held.and_then(expiry::KeptSession::resume) {
            Some(memo) if session_present => Some(memo),
            _ => None,
        };
        Ok(BrokerSession {
            tx,
            rx,
            _slot: slot,
            session_present,
            paused: false,
            ended: false,
            client_id: client_id.to_owned(),
            kept,
            expiry,
            memo,
            keeper: self.keeper.clone(),
        })
    }

    /// Publishes the will of a session that ended without DISCONNECT: now, or after `delay`
    /// unless a session with the same client id starts first (MQTT 5 will delay; a clean start
    /// publishes it at once, a resumed session drops it).
    pub async fn will(&self, client_id: &str, will: codec::Will, delay: Duration) {
        if delay.is_zero() {
            publish_will(&*self.open, &self.next_will, will).await;
            return;
        }
        let id = self.next_will.fetch_add(1, Ordering::Relaxed);
        let (fate, settled) = oneshot::channel();
        lock(&self.wills).insert(client_id.to_owned(), PendingWill { id, fate });
        let (open, wills, next_will) = (
            self.open.clone(),
            self.wills.clone(),
            self.next_will.clone(),
        );
        let client_id = client_id.to_owned();
        tokio::spawn(async move {
            let mut settled = settled;
            let publish = tokio::select! {
                biased;
                fate = &mut settled => fate.unwrap_or(false),
                () = tokio::time::sleep(delay) => {
                    let ours = {
                        let mut wills = lock(&wills);
                        match wills.get(&client_id) {
                            Some(pending) if pending.id == id => wills.remove(&client_id).is_some(),
                            _ => false,
                        }
                    };
                    // Not ours any more: a new session took it and is settling it now.
                    ours || settled.await.unwrap_or(false)
                }
            };
            if publish {
                publish_will(&*open, &next_will, will).await;
            }
        });
    }

    /// Username and password of the plain listeners.
    pub fn credentials(&self) -> (&str, &str) {
        (USERNAME, &self.password)
    }

    /// The plain listeners' addresses (none unless `plain_listeners` asked for some).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes a will through a short-lived link of its own.
async fn publish_will(open: &OpenLink, next: &AtomicU64, will: codec::Will) {
    let client_id = format!("portcullis-will-{}", next.fetch_add(1, Ordering::Relaxed));
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: (will.qos != QoS::AtMostOnce).then_some(1),
        properties: will.properties,
        payload: will.payload,
    };
    let exactly_once = publish.qos == QoS::ExactlyOnce;
    let sent = async {
        let (mut tx, _rx, _) = open(&client_id, true)?;
        tx.buffer().push_back(to_router(Packet::Publish(publish))?);
        if exactly_once {
            // rumqttd holds a QoS 2 publish until its PUBREL.
            let release = Ack {
                packet_id: 1,
                reason: codec::reason::SUCCESS,
                properties: Properties::default(),
            };
            tx.buffer().push_back(to_router(Packet::PubRel(release))?);
        }
        tx.send(to_router(Packet::Disconnect(Disconnect {
            reason: codec::reason::SUCCESS,
            properties: Properties::default(),
        }))?)
        .await?;
        Ok::<_, BrokerError>(())
    };
    if let Err(error) = sent.await {
        tracing::warn!(%error, "a will could not be published");
    }
}

impl BrokerSession {
    /// Whether the router resumed a stored session (clean start 0).
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// Whether rumqttd keeps this session when its link ends (it was opened unclean); a new
    /// expiry cannot change that ([`BrokerSession::set_expiry`]).
    pub fn kept(&self) -> bool {
        self.kept
    }

    /// What the front-end kept with a resumed session (none for a new one), taken once.
    pub fn take_memo(&mut self) -> Option<Memo> {
        self.memo.take()
    }

    /// What the front-end keeps with the session when its link ends, if it is kept (none: nothing
    /// worth keeping).
    pub fn keep_memo(&mut self, memo: Option<Memo>) {
        self.memo = memo;
    }

    /// A new expiry for when the link ends (MQTT 5 DISCONNECT). A session opened to end with its
    /// link cannot be kept: the session refuses that change (a protocol error) before this.
    pub fn set_expiry(&mut self, expiry: Expiry) {
        if self.kept {
            self.expiry = expiry;
        }
    }

    /// Hands `packets` to the router in order and empties the vector. A DISCONNECT among them
    /// ends the link.
    ///
    /// The router is told only when the link's queue was empty: a queue with packets in it has a
    /// notification on its way already (the router takes the whole queue each time). And while
    /// the router has not yet taken more than [`MAX_QUEUED`] packets of this link, this waits
    /// (the session stops reading its client meanwhile): that is the publisher's backpressure,
    /// which a TCP leg would have had from its socket buffers.
    pub async fn send(&mut self, packets: &mut Vec<Packet>) -> Result<(), BrokerError> {
        if packets.is_empty() {
            return Ok(());
        }
        let disconnects = packets.iter().any(|p| matches!(p, Packet::Disconnect(_)));
        let mut converted = packets
            .drain(..)
            .map(to_router)
            .collect::<Result<Vec<_>, _>>()?;
        let stalled = Instant::now() + QUEUE_STALL;
        while self.tx.buffer().len() > MAX_QUEUED {
            if Instant::now() > stalled {
                return Err(BrokerError::Link(
                    "the router stopped taking packets".into(),
                ));
            }
            tokio::time::sleep(QUEUE_POLL).await;
        }
        let mut last = converted.pop();
        {
            let mut queue = self.tx.buffer();
            let notified = !queue.is_empty();
            queue.extend(converted);
            if notified {
                queue.extend(last.take());
            }
        }
        // `LinkTx::send` queues the last packet and notifies the router.
        if let Some(last) = last {
            self.tx.send(last).await?;
        }
        self.ended |= disconnects;
        Ok(())
    }

    /// Waits for packets from the router (deliveries, acknowledgements, the router's DISCONNECT)
    /// and appends them to `out`, with whatever else is ready at once (up to [`RECV_BATCH`]), so
    /// the session writes them to its client together. An error means the router let go of the
    /// link.
    ///
    /// Cancel safe: nothing is taken from the link unless it is appended to `out` before the
    /// next await.
    pub async fn recv(&mut self, out: &mut Vec<Packet>) -> Result<(), BrokerError> {
        while out.is_empty() {
            if self.paused {
                self.rx.wake().await?;
                self.paused = false;
            }
            let notification = self.rx.next().await?;
            self.take(notification, out);
            while out.len() < RECV_BATCH {
                let ready = {
                    let mut next = std::pin::pin!(self.rx.next());
                    next.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                };
                match ready {
                    Poll::Ready(Ok(Some(notification))) => self.take(Some(notification), out),
                    Poll::Ready(Err(error)) if out.is_empty() => return Err(error.into()),
                    Poll::Ready(_) | Poll::Pending => break,
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, notification: Option<Notification>, out: &mut Vec<Packet>) {
        match notification {
            Some(Notification::Unschedule) => self.paused = true,
            Some(notification) => {
                if let Some(packet) = Option::<rp::Packet>::from(notification).and_then(from_router)
                {
                    out.push(packet);
                }
            }
            None => {}
        }
    }

    /// Ends the link (unless a DISCONNECT already did): the router drops the connection, and
    /// the session is kept until its expiry (see [`Expiry`]).
    pub async fn close(mut self) {
        if !self.ended {
            let mut disconnect = vec![Packet::Disconnect(Disconnect {
                reason: codec::reason::SUCCESS,
                properties: Properties::default(),
            })];
            if let Err(error) = self.send(&mut disconnect).await {
                tracing::warn!(%error, "the broker link did not take its DISCONNECT");
            }
        }
        let client_id = std::mem::take(&mut self.client_id);
        let memo = self.memo.take();
        self.keeper.ended(client_id, self.kept, self.expiry, memo);
    }
}

/// Reason codes both ways for one of rumqttd's reason enums; unknown codes become `$fallback`.
macro_rules! reason_codes {
    ($ty:ident, $to_code:ident, $from_code:ident, $fallback:ident, { $($variant:ident = $code:literal),+ $(,)? }) => {
        fn $to_code(reason: $ty) -> u8 {
            match reason {
                $($ty::$variant => $code,)+
            }
        }

        fn $from_code(code: u8) -> $ty {
            match code {
                $($code => $ty::$variant,)+
                _ => $ty::$fallback,
            }
        }
    };
}

reason_codes!(PubAckReason, puback_code, puback_reason, UnspecifiedError, {
    Success = 0x00, NoMatchingSubscribers = 0x10, UnspecifiedError = 0x80,
    ImplementationSpecificError = 0x83, NotAuthorized = 0x87, TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91, QuotaExceeded = 0x97, PayloadFormatInvalid = 0x99,
});
reason_codes!(PubRecReason, pubrec_code, pubrec_reason, UnspecifiedError, {
    Success = 0x00, NoMatchingSubscribers = 0x10, UnspecifiedError = 0x80,
    ImplementationSpecificError = 0x83, NotAuthorized = 0x87, TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91, QuotaExceeded = 0x97, PayloadFormatInvalid = 0x99,
});
reason_codes!(PubRelReason, pubrel_code, pubrel_reason, PacketIdentifierNotFound, {
    Success = 0x00, PacketIdentifierNotFound = 0x92,
});
reason_codes!(PubCompReason, pubcomp_code, pubcomp_reason, PacketIdentifierNotFound, {
    Success = 0x00, PacketIdentifierNotFound = 0x92,
});
reason_codes!(DisconnectReasonCode, disconnect_code, disconnect_reason, UnspecifiedError, {
    NormalDisconnection = 0x00, DisconnectWithWillMessage = 0x04, UnspecifiedError = 0x80,
    MalformedPacket = 0x81, ProtocolError = 0x82, ImplementationSpecificError = 0x83,
    NotAuthorized = 0x87, ServerBusy = 0x89, ServerShuttingDown = 0x8B,
    KeepAliveTimeout = 0x8D, SessionTakenOver = 0x8E, TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90, ReceiveMaximumExceeded = 0x93, TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95, MessageRateTooHigh = 0x96, QuotaExceeded = 0x97,
    AdministrativeAction = 0x98, PayloadFormatInvalid = 0x99, RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B, UseAnotherServer = 0x9C, ServerMoved = 0x9D,
    SharedSubscriptionNotSupported = 0x9E, ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0, SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
});

fn suback_code(code: SubscribeReasonCode) -> u8 {
    use SubscribeReasonCode as C;
    match code {
        C::QoS0 | C::Success(rp::QoS::AtMostOnce) => 0x00,
        C::QoS1 | C::Success(rp::QoS::AtLeastOnce) => 0x01,
        C::QoS2 | C::Success(rp::QoS::ExactlyOnce) => 0x02,
        C::Failure | C::Unspecified => 0x80,
        C::ImplementationSpecific => 0x83,
        C::NotAuthorized => 0x87,
        C::TopicFilterInvalid => 0x8F,
        C::PkidInUse => 0x91,
        C::QuotaExceeded => 0x97,
        C::SharedSubscriptionsNotSupported => 0x9E,
        C::SubscriptionIdNotSupported => 0xA1,
        C::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn unsuback_code(reason: UnsubAckReason) -> u8 {
    use UnsubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoSubscriptionExisted => 0x11,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicFilterInvalid => 0x8F,
        R::PacketIdentifierInUse => 0x91,
    }
}

fn router_qos(qos: QoS) -> rp::QoS {
    match qos {
        QoS::AtMostOnce => rp::QoS::AtMostOnce,
        QoS::AtLeastOnce => rp::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rp::QoS::ExactlyOnce,
    }
}

/// One of PUBACK, PUBREC, PUBREL, PUBCOMP for the router (the four have the same shape there);
/// properties are left out when there are none.
macro_rules! router_ack {
    ($ack:expr, $packet:ident, $properties:ident, $reason:ident) => {{
        let ack: Ack = $ack;
        let p = ack.properties;
        let properties = (p.reason_string.is_some() || !p.user_properties.is_empty()).then_some(
            rp::$properties {
                reason_string: p.reason_string,
                user_properties: p.user_properties,
            },
        );
        let packet = rp::$packet {
            pkid: ack.packet_id,
            reason: $reason(ack.reason),
        };
        rp::Packet::$packet(packet, properties)
    }};
}

/// The reason string and user properties of an acknowledgement from the router (the property
/// types differ per packet, the fields do not).
macro_rules! ack_properties {
    ($properties:expr) => {{
        let (reason_string, user_properties) = $properties
            .map(|p| (p.reason_string, p.user_properties))
            .unwrap_or_default();
        Properties {
            reason_string,
            user_properties,
            ..Properties::default()
        }
    }};
}

/// One of PUBACK, PUBREC, PUBREL, PUBCOMP from the router.
macro_rules! ack_from_router {
    ($ack:expr, $properties:expr, $code:ident) => {
        Ack {
            packet_id: $ack.pkid,
            reason: $code($ack.reason),
            properties: ack_properties!($properties),
        }
    };
}

/// rumqttd's `Publish` hides QoS, DUP and packet id from other crates; they are set through its
/// own serialised header: first byte, packet id, topic length 0.
fn router_publish(publish: Publish) -> (rp::Publish, Option<rp::PublishProperties>) {
    let first = 0x30
        | (u8::from(publish.dup) << 3)
        | ((router_qos(publish.qos) as u8) << 1)
        | u8::from(publish.retain);
    let [hi, lo] = publish.packet_id.unwrap_or(0).to_be_bytes();
    let mut out = rp::Publish::deserialize(Bytes::copy_from_slice(&[first, hi, lo, 0, 0]));
    out.topic = Bytes::from(publish.topic.into_bytes());
    out.payload = publish.payload;
    let p = publish.properties;
    let properties = (p.payload_format_indicator.is_some()
        || p.message_expiry_interval.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty())
    .then(|| rp::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    });
    (out, properties)
}

/// The inverse of [`router_publish`]; `None` for a topic that is not UTF-8 (never stored: every
/// topic reached the router through the front-end).
fn publish_from_router(
    publish: rp::Publish,
    properties: Option<rp::PublishProperties>,
) -> Option<Publish> {
    let mut head = publish.clone();
    head.topic = Bytes::new();
    head.payload = Bytes::new();
    let header = head.serialize();
    let (first, packet_id) = match header.as_ref() {
        [first, hi, lo, ..] => (*first, u16::from_be_bytes([*hi, *lo])),
        _ => return None,
    };
    let qos = match (first >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let topic = String::from_utf8(publish.topic.to_vec()).ok()?;
    let p = properties.unwrap_or_default();
    Some(Publish {
        dup: first & 0b1000 != 0,
        qos,
        retain: publish.retain,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
        properties: Properties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..Properties::default()
        },
        payload: publish.payload,
    })
}

/// A packet of the session, as the router takes it.
fn to_router(packet: Packet) -> Result<rp::Packet, BrokerError> {
    Ok(match packet {
        Packet::Publish(publish) => {
            let (publish, properties) = router_publish(publish);
            rp::Packet::Publish(publish, properties)
        }
        Packet::PubAck(ack) => router_ack!(ack, PubAck, PubAckProperties, puback_reason),
        Packet::PubRec(ack) => router_ack!(ack, PubRec, PubRecProperties, pubrec_reason),
        // rumqttd takes a PUBREL only without properties (it ignores any other).
        Packet::PubRel(ack) => rp::Packet::PubRel(
            rp::PubRel {
                pkid: ack.packet_id,
                reason: pubrel_reason(ack.reason),
            },
            None,
        ),
        Packet::PubComp(ack) => router_ack!(ack, PubComp, PubCompProperties, pubcomp_reason),
        Packet::Subscribe(subscribe) => rp::Packet::Subscribe(
            rp::Subscribe {
                pkid: subscribe.packet_id,
                filters: subscribe
                    .subscriptions
                    .into_iter()
                    .map(|s| Filter {
                        path: s.filter,
                        qos: router_qos(s.options.qos),
                        nolocal: s.options.no_local,
                        preserve_retain: s.options.retain_as_published,
                        retain_forward_rule: match s.options.retain_handling {
                            0 => RetainForwardRule::OnEverySubscribe,
                            1 => RetainForwardRule::OnNewSubscribe,
                            _ => RetainForwardRule::Never,
                        },
                    })
                    .collect(),
            },
            (!subscribe.properties.user_properties.is_empty()).then_some(rp::SubscribeProperties {
                id: None,
                user_properties: subscribe.properties.user_properties,
            }),
        ),
        Packet::Unsubscribe(unsubscribe) => rp::Packet::Unsubscribe(
            rp::Unsubscribe {
                pkid: unsubscribe.packet_id,
                filters: unsubscribe.filters,
            },
            (!unsubscribe.properties.user_properties.is_empty()).then_some({
                rp::UnsubscribeProperties {
                    user_properties: unsubscribe.properties.user_properties,
                }
            }),
        ),
        Packet::Disconnect(disconnect) => {
            let p = disconnect.properties;
            let properties = (p.session_expiry_interval.is_some()
                || p.reason_string.is_some()
                || !p.user_properties.is_empty())
            .then_some(rp::DisconnectProperties {
                session_expiry_interval: p.session_expiry_interval,
                reason_string: p.reason_string,
                user_properties: p.user_properties,
                server_reference: None,
            });
            rp::Packet::Disconnect(
                rp::Disconnect {
                    reason_code: disconnect_reason(disconnect.reason),
                },
                properties,
            )
        }
        Packet::Connect(_) => return Err(BrokerError::Unsupported("CONNECT")),
        Packet::ConnAck(_) => return Err(BrokerError::Unsupported("CONNACK")),
        Packet::SubAck(_) => return Err(BrokerError::Unsupported("SUBACK")),
        Packet::UnsubAck(_) => return Err(BrokerError::Unsupported("UNSUBACK")),
        Packet::PingReq => return Err(BrokerError::Unsupported("PINGREQ")),
        Packet::PingResp => return Err(BrokerError::Unsupported("PINGRESP")),
        Packet::Auth(_) => return Err(BrokerError::Unsupported("AUTH")),
    })
}

/// A packet from the router, as the session handles it; `None` for what concerns no client
/// (PINGRESP, CONNACK).
fn from_router(packet: rp::Packet) -> Option<Packet> {
    Some(match packet {
        rp::Packet::Publish(publish, properties) => {
            Packet::Publish(publish_from_router(publish, properties)?)
        }
        rp::Packet::PubAck(ack, p) => Packet::PubAck(ack_from_router!(ack, p, puback_code)),
        rp::Packet::PubRec(ack, p) => Packet::PubRec(ack_from_router!(ack, p, pubrec_code)),
        rp::Packet::PubRel(ack, p) => Packet::PubRel(ack_from_router!(ack, p, pubrel_code)),
        rp::Packet::PubComp(ack, p) => Packet::PubComp(ack_from_router!(ack, p, pubcomp_code)),
        rp::Packet::SubAck(ack, p) => Packet::SubAck(SubAck {
            packet_id: ack.pkid,
            codes: ack.return_codes.into_iter().map(suback_code).collect(),
            properties: ack_properties!(p),
        }),
        rp::Packet::UnsubAck(ack, p) => Packet::UnsubAck(UnsubAck {
            packet_id: ack.pkid,
            codes: ack.reasons.into_iter().map(unsuback_code).collect(),
            properties: ack_properties!(p),
        }),
        rp::Packet::Disconnect(disconnect, p) => Packet::Disconnect(Disconnect {
            reason: disconnect_code(disconnect.reason_code),
            properties: Properties {
                reason_string: p.and_then(|p| p.reason_string),
                ..Properties::default()
            },
        }),
        rp::Packet::Connect(..)
        | rp::Packet::ConnAck(..)
        | rp::Packet::Subscribe(..)
        | rp::Packet::Unsubscribe(..)
        | rp::Packet::PingReq(_)
        | rp::Packet::PingResp(_) => return None,
    })
}

/// Every field set explicitly: `RouterConfig::default()` admits no connection and its zero
/// segment size panics the router.
fn router_config(config: &BrokerConfig) -> rumqttd::RouterConfig {
    rumqttd::RouterConfig {
        max_connections: router_connections(config.max_connections),
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: SEGMENT_SIZE,
        max_segment_count: SEGMENT_COUNT,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::default(),
    }
}

/// Runs plain listener `i` on its own thread (with its own current-thread runtime, as rumqttd's
/// `Broker` does) and returns its address once it answers a CONNECT with the credential. A port
/// taken by someone else between finding and binding it is retried on a new one.
async fn start_listener(
    id: usize,
    i: usize,
    new_server: &(impl Fn(rumqttd::ServerSettings) -> rumqttd::Server<rp::v5::V5>
          + Clone
          + Send
          + 'static),
    password: &str,
    deadline: Instant,
) -> Result<SocketAddr, BrokerError> {
    let mut last_error = String::from("no attempt was made");
    for _ in 0..START_ATTEMPTS {
        let addr = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| BrokerError::Start(format!("cannot find a loopback port: {e}")))?;
        let name = format!("broker-{id}-{i}");
        let settings = rumqttd::ServerSettings {
            name: name.clone(),
            listen: addr,
            tls: None,
            // The default (1000 ms per connection in its sample config) throttles connections.
            next_connection_delay_ms: 0,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: CONNECT_PACKET_TIMEOUT_MS,
                max_payload_size: PLAIN_MAX_PACKET,
                max_inflight_count: usize::from(BROKER_MAX_INFLIGHT),
                auth: Some(HashMap::from([(USERNAME.to_owned(), password.to_owned())])),
                external_auth: None,
                dynamic_filters: false,
            },
        };
        let new_server = new_server.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let mut server = new_server(settings);
                        if let Err(error) =
                            runtime.block_on(server.start(rumqttd::LinkType::Remote))
                        {
                            tracing::warn!(%error, "plain broker listener stopped");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "no runtime for a plain broker listener"),
                }
            })
            .map_err(|e| BrokerError::Start(format!("cannot spawn a listener thread: {e}")))?;
        let client_id = format!("portcullis-probe-{id}-{i}");
        loop {
            if thread.is_finished() {
                last_error = format!("rumqttd could not listen on {addr}");
                break;
            }
            match probe(addr, &client_id, password).await {
                Ok(()) => return Ok(addr),
                Err(Probe::NotListening(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(PROBE_RETRY).await;
                }
                Err(Probe::NotListening(e)) => {
                    return Err(BrokerError::Start(format!(
                        "rumqttd is not listening on {addr}: {e}"
                    )))
                }
                Err(Probe::Failed(e)) => {
                    last_error = format!("{addr} does not answer as this broker: {e}");
                    break;
                }
            }
        }
    }
    Err(BrokerError::Start(last_error))
}
enum Probe {
    /// Nothing accepts on the port (yet).
    NotListening(std::io::Error),
    /// Something accepted but did not answer our CONNECT with a successful CONNACK.
    Failed(String),
}

/// A CONNECT with the credential, a successful CONNACK, a DISCONNECT: proves the listener is up
/// and is ours (a stranger who took the port does not know the password).
async fn probe(addr: SocketAddr, client_id: &str, password: &str) -> Result<(), Probe> {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Probe::NotListening(e))
        }
        Err(e) => return Err(Probe::Failed(e.to_string())),
    };
    let exchange = async {
        stream.set_nodelay(true)?;
        stream
            .write_all(&connect_packet(client_id, USERNAME, password, 10))
            .await?;
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await?;
        let mut ack = [0u8; 2];
        if header[1] >= 2 {
            stream.read_exact(&mut ack).await?;
        }
        stream.write_all(&[0xE0, 0x00]).await?;
        // Wait for rumqttd to close: its router has then let go of the session, so the probe
        // does not count against `max_connections` when the session right after it connects.
        let mut rest = [0u8; 64];
        while stream.read(&mut rest).await? > 0 {}
        Ok::<_, std::io::Error>((header, ack))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Err(_) => Err(Probe::Failed("no CONNACK in time".into())),
        Ok(Err(e)) => Err(Probe::Failed(e.to_string())),
        Ok(Ok(([0x20, len], [_, 0x00]))) if len >= 2 => Ok(()),
        Ok(Ok((header, ack))) => Err(Probe::Failed(format!(
            "unexpected answer {header:02x?} {ack:02x?}"
        ))),
    }
}

/// An MQTT 5 CONNECT (clean start, username and password, no properties, no will).
fn connect_packet(client_id: &str, username: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + client_id.len() + username.len() + password.len());
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.push(0); // properties
    for field in [client_id, username, password] {
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&field.as_bytes()[..usize::from(len)]);
    }
    let mut packet = vec![0x10];
    push_varint(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// MQTT variable byte integer.
fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Subscribe, Subscription, SubscriptionOptions};

    use rumqttc::v5::mqttbytes::QoS as CQoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    const T: Duration = Duration::from_secs(10);

    async fn start_with(max_connections: usize, plain_listeners: usize) -> Broker {
        let config = BrokerConfig {
            max_connections,
            plain_listeners,
            max_filters: 1000,
            max_filters_per_org: 1000,
        };
        tokio::time::timeout(T, Broker::start(&config))
            .await
            .unwrap()
            .unwrap()
    }

    /// A session with the packets `recv` handed over but the test has not looked at yet.
    struct Link {
        session: BrokerSession,
        received: std::collections::VecDeque<Packet>,
    }

    impl Link {
        fn open(broker: &Broker, client_id: &str, clean_start: bool) -> Link {
            Link {
                session: broker.open(client_id, clean_start).unwrap(),
                received: Default::default(),
            }
        }

        async fn next(&mut self) -> Result<Packet, BrokerError> {
            if self.received.is_empty() {
                let mut out = Vec::new();
                self.session.recv(&mut out).await?;
                self.received.extend(out);
            }
            Ok(self
                .received
                .pop_front()
                .expect("recv returns at least one packet"))
        }

        async fn close(self) {
            self.session.close().await;
        }
    }

    async fn send(link: &mut Link, packet: Packet) {
        link.session.send(&mut vec![packet]).await.unwrap();
    }

    async fn recv(link: &mut Link) -> Packet {
        tokio::time::timeout(T, link.next()).await.unwrap().unwrap()
    }

    fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, payload: &'static [u8]) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_owned(),
            packet_id,
            properties: Properties::default(),
            payload: Bytes::from_static(payload),
        }
    }

    fn will(topic: &str) -> codec::Will {
        codec::Will {
            topic: topic.to_owned(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }
    }

    /// A session subscribed to `filter` at QoS 1.
    async fn subscriber(broker: &Broker, client_id: &str, filter: &str) -> Link {
        let mut link = Link::open(broker, client_id, true);
        subscribe(&mut link, filter).await;
        link
    }

    async fn subscribe(session: &mut Link, filter: &str) {
        subscribe_at(session, filter, QoS::AtLeastOnce).await;
    }

    async fn subscribe_at(session: &mut Link, filter: &str, qos: QoS) {
        let options = SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        let packet = Packet::Subscribe(Subscribe {
            packet_id: 1,
            subscriptions: vec![Subscription {
                filter: filter.to_owned(),
                options,
            }],
            properties: Properties::default(),
        });
        send(session, packet).await;
        match recv(session).await {
            Packet::SubAck(ack) => assert_eq!(ack.codes, vec![qos as u8]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next PUBLISH, acknowledged when it is QoS 1.
    async fn delivery(session: &mut Link) -> Publish {
        loop {
            if let Packet::Publish(p) = recv(session).await {
                if let Some(packet_id) = p.packet_id {
                    let ack = Ack {
                        packet_id,
                        reason: 0,
                        properties: Properties::default(),
                    };
                    send(session, Packet::PubAck(ack)).await;
                }
                return p;
            }
        }
    }

    #[test]
    fn publish_header_fields_survive_the_router_types() {
        for (qos, packet_id) in [
            (QoS::AtMostOnce, None),
            (QoS::AtLeastOnce, Some(1)),
            (QoS::ExactlyOnce, Some(65_535)),
        ] {
            for (dup, retain) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut original = publish("a/b", qos, packet_id, b"payload");
                original.dup = dup;
                original.retain = retain;
                original.properties.user_properties = vec![("k".into(), "v".into())];
                original.properties.content_type = Some("text/plain".into());
                let (p, props) = router_publish(original.clone());
                assert_eq!(publish_from_router(p, props), Some(original));
            }
        }
    }

    #[test]
    fn reason_codes_map_both_ways() {
        for code in [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
            assert_eq!(puback_code(puback_reason(code)), code);
            assert_eq!(pubrec_code(pubrec_reason(code)), code);
        }
        assert_eq!(pubcomp_code(pubcomp_reason(0x92)), 0x92);
        assert_eq!(pubrel_code(pubrel_reason(0x00)), 0x00);
        for code in [0x00, 0x04, 0x8E, 0xA2] {
            assert_eq!(disconnect_code(disconnect_reason(code)), code);
        }
        assert_eq!(
            puback_code(puback_reason(0x42)),
            0x80,
            "unknown codes are errors"
        );
    }

    #[tokio::test]
    async fn qos1_publish_reaches_a_subscriber_and_is_acknowledged() {
        let broker = start_with(100, 0).await;
        let mut sub = subscriber(&broker, "sub", "acme/t").await;
        let mut publisher = Link::open(&broker, "pub", true);
        let mut message = publish("acme/t", QoS::AtLeastOnce, Some(7), b"hello");
        message.properties.user_properties = vec![("k".into(), "v".into())];
        send(&mut publisher, Packet::Publish(message)).await;
        match recv(&mut publisher).await {
            Packet::PubAck(ack) => assert_eq!((ack.packet_id, ack.reason), (7, 0)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        let got = delivery(&mut sub).await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("acme/t", &b"hello"[..])
        );
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert!(got.packet_id.is_some());
        assert_eq!(
            got.properties.user_properties,
            vec![("k".into(), "v".into())]
        );
        sub.close().await;
        publisher.close().await;
    }

    #[tokio::test]
    async fn sessions_beyond_max_connections_are_refused_until_one_closes() {
        let broker = start_with(1, 0).await;
        let first = Link::open(&broker, "one", true);
        assert!(matches!(broker.open("two", true), Err(BrokerError::Full)));
        first.close().await;
        Link::open(&broker, "two", true).close().await;
    }

    #[tokio::test]
    async fn a_closed_client_id_reconnects_at_once_many_times() {
        let broker = start_with(10, 0).await;
        for _ in 0..200 {
            let mut session = Link::open(&broker, "same", true);
            send(
                &mut session,
                Packet::Publish(publish("x", QoS::AtMostOnce, None, b"")),
            )
            .await;
            session.close().await;
        }
        let mut sub = subscriber(&broker, "same", "acme/#").await;
        let mut publisher = Link::open(&broker, "pub", true);
        send(
            &mut publisher,
            Packet::Publish(publish("acme/ok", QoS::AtMostOnce, None, b"1")),
        )
        .await;
        assert_eq!(delivery(&mut sub).await.topic, "acme/ok");
    }

    #[tokio::test]
    async fn a_persistent_session_is_resumed_with_what_it_missed() {
        let broker = start_with(10, 0).await;
        let mut session = Link::open(&broker, "keeper", false);
        assert!(!session.session.session_present());
        subscribe(&mut session, "acme/t").await;
        session.close().await;
        let mut publisher = Link::open(&broker, "pub", true);
        send(
            &mut publisher,
            Packet::Publish(publish("acme/t", QoS::AtLeastOnce, Some(1), b"while away")),
        )
        .await;
        assert!(matches!(recv(&mut publisher).await, Packet::PubAck(_)));
        let mut resumed = Link::open(&broker, "keeper", false);
        assert!(resumed.session.session_present());
        assert_eq!(&delivery(&mut resumed).await.payload[..], b"while away");
    }

    #[tokio::test]
    async fn a_paused_link_gets_every_delivery_once_it_reads_again() {
        // More QoS 0 messages than the router's notification buffer (200) holds: it pauses the
        // subscriber, which must say it is ready again to get the rest.
        let broker = start_with(10, 0).await;
        let mut sub = Link::open(&broker, "slow", true);
        subscribe_at(&mut sub, "acme/t", QoS::AtMostOnce).await;
        let mut publisher = Link::open(&broker, "pub", true);
        let mut batch: Vec<Packet> = (0..150)
            .map(|_| Packet::Publish(publish("acme/t", QoS::AtMostOnce, None, b"m")))
            .collect();
        for _ in 0..4 {
            publisher.session.send(&mut batch.clone()).await.unwrap();
        }
        batch.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut got = 0;
        while got < 600 {
            match tokio::time::timeout(T, sub.next()).await {
                Ok(Ok(Packet::Publish(_))) => got += 1,
                Ok(other) => panic!("after {got}: {other:?}"),
                Err(_) => panic!("only {got} arrived"),
            }
        }
        assert_eq!(got, 600);
    }

    #[tokio::test]
    async fn a_will_is_published_now_or_after_its_delay() {
        let broker = start_with(10, 0).await;
        let mut sub = subscriber(&broker, "watcher", "wills/#").await;
        broker.will("d1", will("wills/now"), Duration::ZERO).await;
        assert_eq!(delivery(&mut sub).await.topic, "wills/now");
        // QoS 2 wills need their PUBREL, or rumqttd never delivers them.
        let mut exactly_once = will("wills/exactly");
        exactly_once.qos = QoS::ExactlyOnce;
        broker.will("d3", exactly_once, Duration::ZERO).await;
        assert_eq!(delivery(&mut sub).await.topic, "wills/exactly");
        broker
            .will("d2", will("wills/later"), Duration::from_millis(300))
            .await;
        let early = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
        assert!(early.is_err(), "published before its delay: {early:?}");
        assert_eq!(delivery(&mut sub).await.topic, "wills/later");
    }

    #[tokio::test]
    async fn a_delayed_will_is_dropped_on_resume_and_published_on_clean_start() {
        let broker = start_with(10, 0).await;
        let mut sub = subscriber(&broker, "watcher", "wills/#").await;
        broker
            .will("d1", will("wills/resumed"), Duration::from_secs(2))
            .await;
        Link::open(&broker, "d1", false).close().await;
        broker
            .will("d2", will("wills/ended"), Duration::from_secs(60))
            .await;
        Link::open(&broker, "d2", true).close().await;
        assert_eq!(delivery(&mut sub).await.topic, "wills/ended");
        let resumed = tokio::time::timeout(Duration::from_millis(2500), sub.next()).await;
        assert!(
            resumed.is_err(),
            "the resumed session's will was published: {resumed:?}"
        );
    }

    #[tokio::test]
    async fn a_plain_listener_reaches_the_same_router_and_wants_the_credential() {
        let broker = start_with(10, 1).await;
        let addr = broker.addrs()[0];
        let mut sub = subscriber(&broker, "sub", "acme/t").await;

        let mut options = MqttOptions::new("plain", addr.ip().to_string(), addr.port());
        let (user, pass) = broker.credentials();
        options.set_credentials(user, pass);
        let (client, mut events) = AsyncClient::new(options, 10);
        client
            .publish("acme/t", CQoS::AtMostOnce, false, "plain")
            .await
            .unwrap();
        let drive = async { while events.poll().await.is_ok() {} };
        let got = tokio::select! {
            got = delivery(&mut sub) => got,
            () = drive => panic!("plain connection ended"),
        };
        assert_eq!(&got.payload[..], b"plain");

        let mut wrong = MqttOptions::new("intruder", addr.ip().to_string(), addr.port());
        wrong.set_credentials(user, "wrong");
        let (_client, mut events) = AsyncClient::new(wrong, 10);
        let first = tokio::time::timeout(T, events.poll()).await.unwrap();
        assert!(
            !matches!(
                first,
                Ok(Event::Incoming(
                    rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_)
                ))
            ),
            "a wrong password got a CONNACK"
        );
    }
}
