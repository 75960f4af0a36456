//! One session's link to rumqttd's router ([`BrokerSession`]): packets handed over as values in
//! order with backpressure, deliveries taken in batches, and the DISCONNECT every link must end
//! with (a dropped link stays in the router for good, see [`super`]).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol as rp;
use rumqttd::Notification;
use tokio::sync::OwnedSemaphorePermit;

use super::coarse::{coarse, Table};
use super::expiry::{send_now, Keeper, KeptSession};
use super::narrow::{Fetch, Narrow};
use super::translate::{from_router, publish_from_router, to_router};
use super::{BrokerError, OpenLink};
use super::{Expiry, Memo};
use crate::codec::{
    self, Disconnect, Packet, Properties, Publish, QoS, Subscribe, Subscription,
    SubscriptionOptions,
};

/// Packets of one link the router may have yet to take before the session waits.
const MAX_QUEUED: usize = 128;
/// How often a waiting session looks whether the router took its queue.
const QUEUE_POLL: Duration = Duration::from_millis(1);
/// How long a session waits for the router to take its queue before it gives up on the link.
const QUEUE_STALL: Duration = Duration::from_secs(10);
/// Most packets [`BrokerSession::recv`] hands over at once.
const RECV_BATCH: usize = 256;
/// How long the link waits for the retained messages of a new filter under a coarse one.
const RETAINED_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells apart the short links that fetch retained messages.
static NEXT_FETCH: AtomicU64 = AtomicU64::new(0);

/// What [`super::Broker::open_session`] opened.
pub(super) struct Opened {
    pub tx: LinkTx,
    pub rx: LinkRx,
    pub slot: OwnedSemaphorePermit,
    pub session_present: bool,
    pub client_id: String,
    pub kept: bool,
    pub expiry: Expiry,
    pub memo: Option<Memo>,
    pub table: Table,
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
    /// The expiry the link was opened with (see [`KeptSession`]'s fallback).
    opened_with: Expiry,
    /// What the front-end kept with a resumed session, then what to keep with it.
    memo: Option<Memo>,
    keeper: Arc<Keeper>,
    open: Arc<OpenLink>,
    /// Coarse filters ([`super::coarse`]): the session's real filters and the rewriting.
    narrow: Narrow,
    /// Answered here, for the session: taken by the next [`BrokerSession::recv`].
    local: VecDeque<Packet>,
    /// Answered here, for the router: sent with the next packets or at the end of a `recv`.
    later: Vec<Packet>,
}

impl BrokerSession {
    pub(super) fn new(opened: Opened, open: Arc<OpenLink>, keeper: Arc<Keeper>) -> BrokerSession {
        BrokerSession {
            tx: opened.tx,
            rx: opened.rx,
            _slot: opened.slot,
            session_present: opened.session_present,
            paused: false,
            ended: false,
            client_id: opened.client_id,
            kept: opened.kept,
            expiry: opened.expiry,
            opened_with: opened.expiry,
            memo: opened.memo,
            keeper,
            open,
            narrow: Narrow::new(opened.table),
            local: VecDeque::new(),
            later: Vec::new(),
        }
    }

    /// Gives back the memory of the link's own queues (see [`crate::broker::BrokerSession::idle`]).
    pub fn idle(&mut self) {
        self.narrow.idle();
        self.local.shrink_to_fit();
        self.later.shrink_to_fit();
        self.rx.shrink();
        let mut queue = self.tx.buffer();
        if queue.is_empty() {
            *queue = VecDeque::new();
        }
    }

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
    ///
    /// Filters under coarse ones are answered here ([`super::narrow`]); the retained messages of
    /// a new one under a coarse filter the router held already are fetched before this returns.
    pub async fn send(&mut self, packets: &mut Vec<Packet>) -> Result<(), BrokerError> {
        let mut router = std::mem::take(&mut self.later);
        let mut fetches = Vec::new();
        for packet in packets.drain(..) {
            fetches.extend(self.narrow.outgoing(packet, &mut router, &mut self.local));
        }
        // Boxed: a fetch is rare (a first SUBSCRIBE), and its state inline would sit in every
        // session's task for good.
        for fetch in fetches {
            Box::pin(self.fetch_retained(fetch)).await;
        }
        self.hand_over(router).await
    }

    async fn hand_over(&mut self, packets: Vec<Packet>) -> Result<(), BrokerError> {
        if packets.is_empty() {
            return Ok(());
        }
        let disconnects = packets.iter().any(|p| matches!(p, Packet::Disconnect(_)));
        let mut converted = packets
            .into_iter()
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
        // `LinkTx::send` queues the last packet and notifies the router (never waiting: taken
        // at once, so its future, the size of a packet, is not held in every session's task).
        if let Some(last) = last {
            send_now(&mut self.tx, last)?;
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
        out.extend(self.local.drain(..));
        while out.is_empty() {
            if self.paused {
                // Boxed: rare (the router paused the link), and the future is 0.8 KB.
                Box::pin(self.rx.wake()).await?;
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
            self.flush_later()?;
        }
        Ok(())
    }

    /// Hands the acks the link made itself to the router at once, without an await (so `recv`
    /// stays cancel safe): the router may be waiting for them before it sends more.
    fn flush_later(&mut self) -> Result<(), BrokerError> {
        if self.later.is_empty() {
            return Ok(());
        }
        let mut converted = self
            .later
            .drain(..)
            .map(to_router)
            .collect::<Result<Vec<_>, _>>()?;
        let last = converted.pop();
        let notified = {
            let mut queue = self.tx.buffer();
            let notified = !queue.is_empty();
            queue.extend(converted);
            if notified {
                queue.extend(last.clone());
            }
            notified
        };
        match last {
            Some(last) if !notified => send_now(&mut self.tx, last),
            _ => Ok(()),
        }
    }

    /// Fetches the retained messages of `filters` (ones the router holds for this session
    /// already, or under a coarse filter it holds: it sends retained messages only on a filter's
    /// first SUBSCRIBE) through a short link of its own subscribed to the same filters, or to
    /// their coarse ones (no new filter for the router), and queues those that match for the
    /// session, each at the lower of its own QoS and the highest matching filter's. A fetch that
    /// fails or takes too long is logged and skipped: the subscription stands without them.
    async fn fetch_retained(&mut self, Fetch { packet_id, filters }: Fetch) {
        let held: HashSet<String> = filters
            .iter()
            .map(|(f, _)| coarse(f).unwrap_or_else(|| f.clone()))
            .collect();
        let client_id = format!(
            "portcullis-retained-{}",
            NEXT_FETCH.fetch_add(1, Ordering::Relaxed)
        );
        match fetch_retained(&*self.open, &client_id, held.into_iter().collect()).await {
            Ok(publishes) => {
                let mut deliveries = Vec::new();
                for publish in publishes {
                    if let Some(qos) = Table::wanted_by(&filters, &publish.topic) {
                        let qos = qos.min(publish.qos);
                        deliveries.push(self.narrow.own_delivery(publish, qos));
                    }
                }
                self.narrow.fetched(packet_id, deliveries, &mut self.local);
            }
            Err(error) => tracing::warn!(%error, "retained messages not fetched"),
        }
    }

    fn take(&mut self, notification: Option<Notification>, out: &mut Vec<Packet>) {
        match notification {
            Some(Notification::Unschedule) => self.paused = true,
            Some(notification) => {
                if let Some(packet) = Option::<rp::Packet>::from(notification).and_then(from_router)
                {
                    self.narrow.incoming(packet, out, &mut self.later);
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
        let table = std::mem::take(&mut self.narrow.table);
        // Kept with no end (a takeover hands the session to its successor): the expiry it had
        // comes back if the successor fails to open.
        let fallback = (self.expiry == Expiry::Never && self.opened_with != Expiry::Never)
            .then_some(self.opened_with);
        let session = KeptSession::new(memo, table, fallback);
        self.keeper
            .ended(client_id, self.kept, self.expiry, session)
            .await;
    }
}

/// The retained messages under `filters`, each at its own QoS, read through a short clean link:
/// SUBSCRIBE at QoS 2, then, once the SUBACK is in, a PINGREQ whose PINGRESP comes after
/// everything the subscription's first sweep sent (the router handles a link's packets in order,
/// and sends retained messages in that first sweep). Each QoS 1 or 2 delivery is acknowledged at
/// once, so the router's in-flight window never cuts the sweep short; the QoS 2 flow is left
/// unfinished, the link is clean and ends. The link always ends with its DISCONNECT, in time or
/// not.
async fn fetch_retained(
    open: &OpenLink,
    client_id: &str,
    filters: Vec<String>,
) -> Result<Vec<Publish>, BrokerError> {
    let (mut tx, mut rx, _) = open(client_id, true)?;
    let options = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    };
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        subscriptions: filters
            .into_iter()
            .map(|filter| Subscription { filter, options })
            .collect(),
        properties: Properties::default(),
    });
    let exchange = async {
        send_now(&mut tx, to_router(subscribe)?)?;
        let mut retained = Vec::new();
        loop {
            match rx.next().await? {
                Some(Notification::Unschedule) => rx.wake().await?,
                Some(notification) => match Option::<rp::Packet>::from(notification) {
                    Some(rp::Packet::SubAck(..)) => {
                        send_now(&mut tx, rp::Packet::PingReq(rp::PingReq))?;
                    }
                    Some(rp::Packet::PingResp(_)) => return Ok(retained),
                    Some(rp::Packet::Publish(publish, properties)) => {
                        let Some(publish) = publish_from_router(publish, properties) else {
                            continue;
                        };
                        if let Some(packet_id) = publish.packet_id {
                            let ack = codec::Ack {
                                packet_id,
                                reason: codec::reason::SUCCESS,
                                properties: Properties::default(),
                            };
                            let ack = match publish.qos {
                                QoS::ExactlyOnce => Packet::PubRec(ack),
                                _ => Packet::PubAck(ack),
                            };
                            send_now(&mut tx, to_router(ack)?)?;
                        }
                        if publish.retain {
                            retained.push(publish);
                        }
                    }
                    _ => {}
                },
                None => {}
            }
        }
    };
    let result = tokio::time::timeout(RETAINED_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(BrokerError::Link("no retained messages in time".into())));
    let disconnect = Packet::Disconnect(Disconnect {
        reason: codec::reason::SUCCESS,
        properties: Properties::default(),
    });
    send_now(&mut tx, to_router(disconnect)?)?;
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::broker::embedded::testing::*;
    use crate::codec::{Packet, QoS};

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
}
