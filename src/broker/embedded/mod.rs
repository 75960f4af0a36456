//! The embedded broker (rumqttd 0.20), one of the two behind [`crate::broker`]'s seam. Nothing
//! outside this module names a rumqttd type.
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
//!   start 0 leaves its session state behind, forever. So a session's filters on one device
//!   reach the router as one coarse filter per device and kind ([`coarse`], [`narrow`]: the
//!   link keeps the real ones and filters deliveries), and the distinct filters handed to the
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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol as rp;
use rumqttd::Notification;
use tokio::sync::{oneshot, Semaphore};

pub use super::{BrokerError, Expiry, Hold, Memo};
use crate::codec::{self, Ack, Disconnect, Packet, Properties, Publish, QoS};
use crate::config::BrokerConfig;

mod coarse;
mod expiry;
mod link;
mod listener;
mod narrow;
#[cfg(test)]
pub(crate) mod testing;
mod translate;

use expiry::Keeper;
pub use link::BrokerSession;
use listener::{start_listener, START_TIMEOUT, USERNAME};
use translate::to_router;

/// QoS 0 deliveries the router hands a connection per sweep of one filter.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;
/// Per-filter commit log: every subscription filter gets its own log of `SEGMENT_COUNT` segments
/// of about `SEGMENT_SIZE` bytes, kept in memory (the default, 1 GiB per filter, is unusable).
/// The size is a soft limit: a message larger than a segment is stored whole and fills it. A
/// subscriber lagging by more than the log loses messages.
const SEGMENT_SIZE: usize = 100 * 1024;
const SEGMENT_COUNT: usize = 10;

/// QoS 1/2 deliveries rumqttd keeps unacknowledged per connection, whatever Receive Maximum the
/// CONNECT asked for (its packet ids go `1..=100`). The session queues what its client cannot take.
pub const BROKER_MAX_INFLIGHT: u16 = 100;

/// Tells the brokers of one process apart in thread names and rumqttd's router id.
static NEXT_BROKER_ID: AtomicUsize = AtomicUsize::new(0);

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

    /// Opens a 3.1.1-style session's link (tests; sessions use [`Broker::open_session`]): clean start 1 keeps nothing after it ends, 0 keeps
    /// the session for good (see [`Broker::open_session`]).
    #[cfg(test)]
    pub fn open(&self, client_id: &str, clean_start: bool) -> Result<BrokerSession, BrokerError> {
        let expiry = if clean_start {
            Expiry::Now
        } else {
            Expiry::Never
        };
        self.open_session(client_id, clean_start, expiry)
    }

    /// Whether `filter` may be handed to the router (as its coarse filter, when it has one): yes
    /// when it holds it already (no new cost),
    /// or when `may_add` and it holds fewer than `broker.max_filters` distinct filters (then it
    /// counts from now on, for good, as the router's state for it does).
    pub fn hold_filter(&self, filter: &str, may_add: bool) -> Hold {
        // What the router holds for a filter under a coarse one is the coarse filter.
        let coarse = coarse::coarse(filter);
        let filter = coarse.as_deref().unwrap_or(filter);
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

    /// Distinct filters the router holds (see [`Broker::hold_filter`]; the metric
    /// `portcullis_broker_filters` says the same outside tests).
    #[cfg(test)]
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
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // A session taken over for this one gets its expiry back (see below).
            let mut pending = lock(&self.keeper.pending);
            if let Some(held) = pending.remove(client_id) {
                self.keeper.restore(&mut pending, client_id, held);
            }
            return Err(BrokerError::Full);
        };
        // rumqttd keeps what an unclean link leaves, and resumes only on an unclean link.
        let keep = expiry != Expiry::Now;
        let kept = keep || !clean_start;
        // The kept session is taken under the lock, and the link opened without it: opening waits
        // for the router thread, and every session open would wait behind the one before. Taken,
        // its timer finds nothing to discard; no other entry for this client id can appear while
        // its claim is held.
        let held = lock(&self.keeper.pending).remove(client_id);
        // A kept session taken here is put back when no link opens: with its timer (one that
        // fired meanwhile found it gone, and it is discarded as expired), or its expiry from
        // before a takeover.
        let restore = |held: Option<expiry::KeptSession>| {
            if let Some(held) = held {
                self.keeper
                    .restore(&mut lock(&self.keeper.pending), client_id, held);
            }
        };
        if clean_start && keep {
            // An unclean link would resume the stored session: drop it first.
            if let Err(error) = self.keeper.discard(client_id) {
                restore(held);
                return Err(error);
            }
        }
        let (tx, rx, connack) = match (self.open)(client_id, !kept) {
            Ok(opened) => opened,
            Err(error) => {
                // After a discard there is nothing left to keep.
                if !(clean_start && keep) {
                    restore(held);
                }
                return Err(error);
            }
        };
        // Only a session that exists settles the will of the one before it.
        let pending = lock(&self.wills).remove(client_id);
        if let Some(pending) = pending {
            let _ = pending.fate.send(clean_start);
        }
        let session_present = matches!(
            Option::<rp::Packet>::from(connack),
            Some(rp::Packet::ConnAck(ack, _)) if ack.session_present
        );
        let (memo, table) = match held.map(expiry::KeptSession::resume) {
            Some((memo, table)) if session_present => (memo, table),
            _ => (None, coarse::Table::default()),
        };
        Ok(BrokerSession::new(
            link::Opened {
                tx,
                rx,
                slot,
                session_present,
                client_id: client_id.to_owned(),
                kept,
                expiry,
                memo,
                table,
            },
            self.open.clone(),
            self.keeper.clone(),
        ))
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use testing::*;

    /// Opens every connection the router has room for: links that end (DISCONNECT) when the
    /// returned closure runs.
    fn fill_router(broker: &Broker) -> impl FnOnce() {
        let mut links = Vec::new();
        for i in 0.. {
            match (broker.open)(&format!("filler-{i}"), true) {
                Ok((tx, _rx, _)) => links.push(tx),
                Err(_) => break,
            }
        }
        move || {
            for mut tx in links {
                let disconnect = Packet::Disconnect(Disconnect {
                    reason: codec::reason::SUCCESS,
                    properties: Properties::default(),
                });
                expiry::send_now(&mut tx, translate::to_router(disconnect).unwrap()).unwrap();
            }
        }
    }

    /// A broker that tells the client ids its expiry discarded on the returned channel.
    async fn expiring_broker() -> (Broker, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let broker = start_with(1, 0).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        broker.on_expired(move |client_id| {
            let _ = tx.send(client_id.to_owned());
        });
        (broker, rx)
    }

    #[tokio::test]
    async fn a_kept_session_whose_next_link_fails_to_open_keeps_its_expiry() {
        let (broker, mut expired) = expiring_broker().await;
        let expiry = Expiry::After(Duration::from_millis(300));
        broker
            .open_session("kept", false, expiry)
            .unwrap()
            .close()
            .await;
        let release = fill_router(&broker);
        assert!(broker.open_session("kept", false, expiry).is_err());
        release();
        let gone = tokio::time::timeout(T, expired.recv()).await;
        assert_eq!(
            gone.ok().flatten().as_deref(),
            Some("kept"),
            "never expired"
        );
    }

    #[tokio::test]
    async fn a_session_taken_over_by_a_link_that_fails_to_open_gets_its_expiry_back() {
        let (broker, mut expired) = expiring_broker().await;
        let expiry = Expiry::After(Duration::from_millis(300));
        let mut taken = broker.open_session("taken", false, expiry).unwrap();
        // What a session does when a newer CONNECT takes it over: its successor decides.
        taken.set_expiry(Expiry::Never);
        taken.close().await;
        let release = fill_router(&broker);
        assert!(broker.open_session("taken", false, expiry).is_err());
        release();
        let gone = tokio::time::timeout(T, expired.recv()).await;
        assert_eq!(
            gone.ok().flatten().as_deref(),
            Some("taken"),
            "kept for good"
        );

        // The same when the successor finds no free session slot.
        let mut taken = broker.open_session("taken", false, expiry).unwrap();
        taken.set_expiry(Expiry::Never);
        taken.close().await;
        let other = broker.open_session("other", true, Expiry::Now).unwrap();
        assert!(matches!(
            broker.open_session("taken", false, expiry),
            Err(BrokerError::Full)
        ));
        let gone = tokio::time::timeout(T, expired.recv()).await;
        assert_eq!(
            gone.ok().flatten().as_deref(),
            Some("taken"),
            "no slot: kept for good"
        );
        other.close().await;
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
}
