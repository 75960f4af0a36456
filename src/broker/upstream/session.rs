//! One device session's upstream connection ([`UpstreamSession`]): opened with the device's
//! client id, clean start, session expiry, keep-alive and will; the packets both ways, with
//! what the broker's protocol needs on the way; and its end.
//!
//! What it adds to the packets:
//! - the delivery stamp ([`crate::codec::origin::stamp`], made for the embedded broker, which
//!   lacks No Local, Retain As Published and the lower-of-two QoS) is taken off: a real broker
//!   does those itself from the subscription options, which reach it unchanged;
//! - QoS 2 towards a broker without it (MQTT 3.1.1 upstreams, or an MQTT 5 CONNACK's Maximum
//!   QoS below 2): the PUBLISH goes upstream at QoS 1; the broker's PUBACK becomes the device's
//!   PUBREC and the device's PUBREL is answered here with PUBCOMP: the device keeps its QoS 2
//!   flow, the broker delivers at least once;
//! - an MQTT 5 broker's Receive Maximum: QoS 1/2 PUBLISHes past it wait here for an ack;
//! - the DISCONNECT: a device's is held until [`UpstreamSession::close`], which sends it with the
//!   session expiry the session ended with.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::connection::{self, Account, Ends, Stream, Wire, MAX_PACKET_SIZE};
use super::{Gone, DEFAULT_KEEP_ALIVE};
use crate::broker::{BrokerError, Expiry, Opening};
use crate::codec::{reason, Ack, ConnAck, Connect, Disconnect, Packet, Properties, Protocol, QoS};
use crate::config::Target;

/// Most packets [`UpstreamSession::recv`] hands over at once.
const RECV_BATCH: usize = 256;
/// QoS 1/2 deliveries the broker may have unacknowledged towards the front-end (MQTT 5 Receive
/// Maximum in CONNECT): the session's window queues what its device cannot take yet.
const RECEIVE_MAXIMUM: u16 = 100;
/// How long [`UpstreamSession::close`] waits for the connection to end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A connection opened by [`open`], before its task runs.
pub struct Opened {
    stream: Stream,
    connack: ConnAck,
    buf: bytes::BytesMut,
    keep_alive: u16,
    target: Target,
    account: Arc<Account>,
    client_id: String,
    expiry: Expiry,
    /// The connection was opened with clean session 0 (MQTT 3.1.1 upstream): what a discard needs.
    unclean: bool,
    has_will: bool,
}

/// The CONNECT of a session (`clean` as the broker's protocol can say it) or of a discard.
fn connect(account: &Account, opening: &Opening<'_>, clean: bool, keep_alive: u16) -> Connect {
    let v5 = account.protocol == Protocol::V5;
    let will = opening.will.map(|will| {
        let mut will = will.clone();
        crate::codec::origin::take(&mut will.properties);
        will
    });
    let mut properties = Properties::default();
    if v5 {
        properties.session_expiry_interval = Some(opening.expiry.interval()).filter(|&i| i > 0);
        properties.receive_maximum = Some(RECEIVE_MAXIMUM);
        properties.maximum_packet_size = u32::try_from(MAX_PACKET_SIZE).ok();
    }
    Connect {
        protocol: account.protocol,
        clean_start: clean,
        keep_alive,
        client_id: opening.client_id.to_owned(),
        will,
        username: Some(account.username.clone()).filter(|u| !u.is_empty()),
        password: Some(account.password.clone())
            .filter(|p| !p.is_empty())
            .map(bytes::Bytes::from),
        properties,
    }
}

/// Ends a stored session of `client_id` on an MQTT 3.1.1 broker: a clean connection, then
/// DISCONNECT (3.1.1 has no "discard the old, keep the new", nor a session expiry).
async fn discard(
    account: &Account,
    target: &Target,
    opening: &Opening<'_>,
) -> Result<(), BrokerError> {
    let mut stream = connection::dial(target, account).await?;
    let mut discard = connect(account, opening, true, DEFAULT_KEEP_ALIVE);
    discard.will = None;
    connection::handshake(&mut stream, target, discard).await?;
    connection::hang_up(&mut stream, account.protocol).await;
    Ok(())
}

/// Opens a session's connection to `target` (see the module documentation).
pub async fn open(
    account: &Arc<Account>,
    target: &Target,
    opening: &Opening<'_>,
) -> Result<Opened, BrokerError> {
    let keep_alive = match opening.keep_alive {
        0 => DEFAULT_KEEP_ALIVE,
        n => n,
    };
    let keep = opening.expiry != Expiry::Now;
    let clean = match account.protocol {
        Protocol::V5 => opening.clean_start,
        // Clean session 1 would also end the new session with its connection.
        Protocol::V311 => opening.clean_start && !keep,
    };
    if account.protocol == Protocol::V311 && opening.clean_start && keep {
        discard(account, target, opening).await?;
    }
    let mut stream = connection::dial(target, account).await?;
    let (connack, buf) = connection::handshake(
        &mut stream,
        target,
        connect(account, opening, clean, keep_alive),
    )
    .await?;
    let keep_alive = connack
        .properties
        .server_keep_alive
        .unwrap_or(keep_alive)
        .max(1);
    Ok(Opened {
        stream,
        connack,
        buf,
        keep_alive,
        target: target.clone(),
        account: account.clone(),
        client_id: opening.client_id.to_owned(),
        expiry: opening.expiry,
        unclean: account.protocol == Protocol::V311 && !clean,
        has_will: opening.will.is_some(),
    })
}

/// One session's upstream connection (see the module documentation).
pub struct UpstreamSession {
    to_broker: mpsc::Sender<Box<Packet>>,
    from_broker: mpsc::Receiver<Box<Packet>>,
    task: tokio::task::JoinHandle<()>,
    _slot: OwnedSemaphorePermit,
    session_present: bool,
    protocol: Protocol,
    /// QoS 2 PUBLISHes go upstream at QoS 1.
    downgrade: bool,
    /// Packet ids of the device's QoS 2 PUBLISHes sent at QoS 1, until the device's PUBREL.
    downgraded: HashSet<u16>,
    /// The broker's Receive Maximum, and the QoS 1/2 PUBLISHes it has unacknowledged.
    max_inflight: usize,
    inflight: usize,
    /// QoS 1/2 PUBLISHes waiting for room under the broker's Receive Maximum.
    waiting: VecDeque<Packet>,
    /// Answered here for the session: taken by the next [`UpstreamSession::recv`].
    local: VecDeque<Packet>,
    /// The device's DISCONNECT, sent at [`UpstreamSession::close`].
    disconnect: Option<Disconnect>,
    opened_with: Expiry,
    expiry: Expiry,
    unclean: bool,
    has_will: bool,
    client_id: String,
    target: Target,
    account: Arc<Account>,
}

impl UpstreamSession {
    pub(super) fn new(opened: Opened, slot: OwnedSemaphorePermit, gone: Gone) -> UpstreamSession {
        let Opened {
            stream,
            connack,
            buf,
            keep_alive,
            target,
            account,
            client_id,
            expiry,
            unclean,
            has_will,
        } = opened;
        let protocol = account.protocol;
        let wire = Wire {
            stream,
            buf,
            protocol,
            keep_alive: Duration::from_secs(u64::from(keep_alive)),
            target: target.clone(),
        };
        let Ends {
            to_broker,
            from_broker,
            task,
        } = connection::spawn(wire, gone);
        let qos2 =
            protocol == Protocol::V5 && connack.properties.maximum_qos.is_none_or(|q| q >= 2);
        UpstreamSession {
            to_broker,
            from_broker,
            task,
            _slot: slot,
            session_present: connack.session_present,
            protocol,
            downgrade: !qos2,
            downgraded: HashSet::new(),
            max_inflight: usize::from(connack.properties.receive_maximum.unwrap_or(u16::MAX)),
            inflight: 0,
            waiting: VecDeque::new(),
            local: VecDeque::new(),
            disconnect: None,
            opened_with: expiry,
            expiry,
            unclean,
            has_will,
            client_id,
            target,
            account,
        }
    }

    /// Gives back the memory of the session's own queues (see
    /// [`crate::broker::BrokerSession::idle`]).
    pub fn idle(&mut self) {
        self.waiting.shrink_to_fit();
        self.local.shrink_to_fit();
    }

    /// The broker's session present.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// The expiry the session ends with (sent with the device's DISCONNECT, MQTT 5). A session
    /// that ends without one (lost, revoked, taken over) keeps what its CONNECT asked.
    pub fn set_expiry(&mut self, expiry: Expiry) {
        self.expiry = expiry;
    }

    /// Hands `packets` to the connection in order and empties the vector (see the module
    /// documentation for what changes on the way); waits while the connection's queue is full.
    pub async fn send(&mut self, packets: &mut Vec<Packet>) -> Result<(), BrokerError> {
        while self.inflight < self.max_inflight {
            let Some(packet) = self.waiting.pop_front() else {
                break;
            };
            self.inflight += 1;
            self.forward(packet).await?;
        }
        for packet in packets.drain(..) {
            match packet {
                Packet::Publish(mut publish) => {
                    crate::codec::origin::take(&mut publish.properties);
                    if publish.qos == QoS::ExactlyOnce && self.downgrade {
                        publish.qos = QoS::AtLeastOnce;
                        self.downgraded.extend(publish.packet_id);
                    }
                    if publish.qos == QoS::AtMostOnce {
                        self.forward(Packet::Publish(publish)).await?;
                    } else if self.inflight < self.max_inflight && self.waiting.is_empty() {
                        self.inflight += 1;
                        self.forward(Packet::Publish(publish)).await?;
                    } else {
                        self.waiting.push_back(Packet::Publish(publish));
                    }
                }
                Packet::PubRel(ack) if self.downgraded.remove(&ack.packet_id) => {
                    self.local.push_back(Packet::PubComp(Ack {
                        packet_id: ack.packet_id,
                        reason: reason::SUCCESS,
                        properties: Properties::default(),
                    }));
                }
                Packet::Disconnect(disconnect) => self.disconnect = Some(disconnect),
                packet => self.forward(packet).await?,
            }
        }
        Ok(())
    }

    async fn forward(&mut self, packet: Packet) -> Result<(), BrokerError> {
        self.to_broker
            .send(Box::new(packet))
            .await
            .map_err(|_| BrokerError::Link(format!("{}: the connection ended", self.target.url)))
    }

    /// Waits for packets from the broker and appends them to `out`, with whatever else is ready
    /// (up to a batch). The broker's DISCONNECT, or the one the connection made up when it ended
    /// (see [`connection`]), comes through as a packet; an error means the connection is gone.
    ///
    /// Cancel safe: a packet taken from the channel is appended before the next await.
    pub async fn recv(&mut self, out: &mut Vec<Packet>) -> Result<(), BrokerError> {
        out.extend(self.local.drain(..));
        while out.is_empty() {
            let Some(packet) = self.from_broker.recv().await else {
                return Err(BrokerError::Link(format!(
                    "{}: the connection ended",
                    self.target.url
                )));
            };
            self.incoming(*packet, out);
            while out.len() < RECV_BATCH {
                match self.from_broker.try_recv() {
                    Ok(packet) => self.incoming(*packet, out),
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    fn incoming(&mut self, packet: Packet, out: &mut Vec<Packet>) {
        let completed = match &packet {
            Packet::PubAck(_) | Packet::PubComp(_) => true,
            Packet::PubRec(ack) => ack.reason >= reason::UNSPECIFIED_ERROR,
            _ => false,
        };
        if completed {
            self.inflight = self.inflight.saturating_sub(1);
        }
        match packet {
            Packet::PubAck(ack) if self.downgraded.contains(&ack.packet_id) => {
                out.push(Packet::PubRec(ack));
            }
            packet => out.push(packet),
        }
    }

    /// Ends the connection: with the device's DISCONNECT when it sent one (MQTT 5: with the
    /// session expiry the session ended with, when that changed), else as a lost connection
    /// would (MQTT 5: DISCONNECT 0x04 when there is a will, so the broker publishes it; 3.1.1:
    /// no DISCONNECT when there is a will). A 3.1.1 session opened to be kept whose expiry is
    /// now zero is then discarded with a short clean connection.
    pub async fn close(self) {
        let UpstreamSession {
            to_broker,
            task,
            disconnect,
            opened_with,
            expiry,
            unclean,
            has_will,
            protocol,
            client_id,
            target,
            account,
            ..
        } = self;
        let with_will = match &disconnect {
            Some(disconnect) => disconnect.reason == reason::DISCONNECT_WITH_WILL,
            None => has_will,
        };
        let final_expiry = if disconnect.is_some() {
            expiry
        } else {
            opened_with
        };
        let last = match protocol {
            Protocol::V311 if with_will => None,
            Protocol::V311 => Some(Disconnect {
                reason: reason::SUCCESS,
                properties: Properties::default(),
            }),
            Protocol::V5 => {
                let mut last = disconnect.unwrap_or(Disconnect {
                    reason: if with_will {
                        reason::DISCONNECT_WITH_WILL
                    } else {
                        reason::SUCCESS
                    },
                    properties: Properties::default(),
                });
                if final_expiry != opened_with && opened_with != Expiry::Now {
                    last.properties.session_expiry_interval = Some(final_expiry.interval());
                }
                Some(last)
            }
        };
        if let Some(last) = last {
            let _ = to_broker.send(Box::new(Packet::Disconnect(last))).await;
        }
        drop(to_broker);
        let _ = tokio::time::timeout(CLOSE_WAIT, task).await;
        if unclean && final_expiry == Expiry::Now {
            let opening = Opening {
                client_id: &client_id,
                clean_start: true,
                expiry: Expiry::Now,
                will: None,
                keep_alive: DEFAULT_KEEP_ALIVE,
            };
            let discarded =
                tokio::time::timeout(CLOSE_WAIT, discard(&account, &target, &opening)).await;
            if !matches!(discarded, Ok(Ok(()))) {
                tracing::warn!(url = %target.url, "an ended session could not be discarded upstream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The session's packet rules, on its channels alone (the connection task and a real broker
    //! are `tests/upstream.rs`'s).

    use super::*;
    use crate::codec::Publish;

    /// A session on bare channels: what it sends the broker comes out of the receiver, what the
    /// broker sends goes into the sender.
    fn bare_session(
        protocol: Protocol,
        max_inflight: usize,
        has_will: bool,
        expiry: Expiry,
    ) -> (
        UpstreamSession,
        mpsc::Receiver<Box<Packet>>,
        mpsc::Sender<Box<Packet>>,
    ) {
        let (to_broker, sent) = mpsc::channel(64);
        let (from_broker_tx, from_broker) = mpsc::channel(64);
        let slot = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let session = UpstreamSession {
            to_broker,
            from_broker,
            task: tokio::spawn(async {}),
            _slot: slot,
            session_present: false,
            protocol,
            downgrade: protocol == Protocol::V311,
            downgraded: HashSet::new(),
            max_inflight,
            inflight: 0,
            waiting: VecDeque::new(),
            local: VecDeque::new(),
            disconnect: None,
            opened_with: expiry,
            expiry,
            unclean: false,
            has_will,
            client_id: "d:acme:t:1".into(),
            target: Target::parse("mqtt://127.0.0.1:1").unwrap(),
            account: Arc::new(Account {
                tls: None,
                protocol,
                username: String::new(),
                password: String::new(),
            }),
        };
        (session, sent, from_broker_tx)
    }

    fn publish(qos: QoS, id: u16) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: "acme/t".into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(id),
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"x"),
        })
    }

    fn ack(id: u16) -> Ack {
        Ack {
            packet_id: id,
            reason: reason::SUCCESS,
            properties: Properties::default(),
        }
    }

    fn drained(sent: &mut mpsc::Receiver<Box<Packet>>) -> Vec<Packet> {
        std::iter::from_fn(|| sent.try_recv().ok().map(|packet| *packet)).collect()
    }

    #[tokio::test]
    async fn qos_1_publishes_past_the_brokers_receive_maximum_wait_for_an_ack() {
        let (mut session, mut sent, broker) = bare_session(Protocol::V5, 2, false, Expiry::Now);
        let mut packets: Vec<Packet> = (1..=4).map(|id| publish(QoS::AtLeastOnce, id)).collect();
        packets.push(publish(QoS::AtMostOnce, 0));
        session.send(&mut packets).await.unwrap();
        let ids = |packets: Vec<Packet>| {
            packets
                .into_iter()
                .map(|p| match p {
                    Packet::Publish(p) => p.packet_id.unwrap_or(0),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        // QoS 0 is never held back.
        assert_eq!(ids(drained(&mut sent)), vec![1, 2, 0]);
        broker.send(Box::new(Packet::PubAck(ack(1)))).await.unwrap();
        let mut out = Vec::new();
        session.recv(&mut out).await.unwrap();
        session.send(&mut Vec::new()).await.unwrap();
        assert_eq!(ids(drained(&mut sent)), vec![3]);
    }

    #[tokio::test]
    async fn qos_2_goes_to_a_3_1_1_broker_at_qos_1_and_the_device_keeps_its_flow() {
        let (mut session, mut sent, broker) =
            bare_session(Protocol::V311, usize::MAX, false, Expiry::Now);
        session
            .send(&mut vec![publish(QoS::ExactlyOnce, 7)])
            .await
            .unwrap();
        match drained(&mut sent).as_slice() {
            [Packet::Publish(p)] => assert_eq!((p.qos, p.packet_id), (QoS::AtLeastOnce, Some(7))),
            other => panic!("{other:?}"),
        }
        broker.send(Box::new(Packet::PubAck(ack(7)))).await.unwrap();
        let mut out = Vec::new();
        session.recv(&mut out).await.unwrap();
        assert!(
            matches!(out.as_slice(), [Packet::PubRec(a)] if a.packet_id == 7),
            "{out:?}"
        );
        session
            .send(&mut vec![Packet::PubRel(ack(7))])
            .await
            .unwrap();
        assert!(
            drained(&mut sent).is_empty(),
            "the PUBREL reached the broker"
        );
        out.clear();
        session.recv(&mut out).await.unwrap();
        assert!(
            matches!(out.as_slice(), [Packet::PubComp(a)] if a.packet_id == 7),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn the_delivery_stamp_never_reaches_the_broker() {
        let (mut session, mut sent, _broker) =
            bare_session(Protocol::V5, usize::MAX, false, Expiry::Now);
        let Packet::Publish(mut stamped) = publish(QoS::AtLeastOnce, 1) else {
            unreachable!()
        };
        stamped.properties.payload_format_indicator = Some(1);
        crate::codec::origin::stamp(&mut stamped.properties, QoS::AtLeastOnce, true, Some("me"));
        session
            .send(&mut vec![Packet::Publish(stamped)])
            .await
            .unwrap();
        match drained(&mut sent).as_slice() {
            [Packet::Publish(p)] => {
                assert_eq!(p.properties.payload_format_indicator, Some(1));
                assert!(
                    p.properties.user_properties.is_empty(),
                    "{:?}",
                    p.properties
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_end_carries_the_devices_disconnect_with_its_new_expiry_or_publishes_the_will() {
        // The device's DISCONNECT is held until the end, then sent with the expiry it set.
        let opened = Expiry::After(Duration::from_secs(300));
        let (mut session, mut sent, _broker) = bare_session(Protocol::V5, usize::MAX, true, opened);
        let disconnect = Disconnect {
            reason: reason::SUCCESS,
            properties: Properties::default(),
        };
        session
            .send(&mut vec![Packet::Disconnect(disconnect)])
            .await
            .unwrap();
        assert!(drained(&mut sent).is_empty(), "sent before the end");
        session.set_expiry(Expiry::After(Duration::from_secs(60)));
        session.close().await;
        match drained(&mut sent).as_slice() {
            [Packet::Disconnect(d)] => {
                assert_eq!(d.reason, reason::SUCCESS);
                assert_eq!(d.properties.session_expiry_interval, Some(60));
            }
            other => panic!("{other:?}"),
        }

        // Lost, or taken over (`Never`): the broker is asked to publish the will, and the expiry
        // stays the CONNECT's.
        let (mut session, mut sent, _broker) = bare_session(Protocol::V5, usize::MAX, true, opened);
        session.set_expiry(Expiry::Never);
        session.close().await;
        match drained(&mut sent).as_slice() {
            [Packet::Disconnect(d)] => {
                assert_eq!(d.reason, reason::DISCONNECT_WITH_WILL);
                assert_eq!(d.properties.session_expiry_interval, None);
            }
            other => panic!("{other:?}"),
        }

        // MQTT 3.1.1 has no "with will": the connection ends without a DISCONNECT.
        let (session, mut sent, _broker) = bare_session(Protocol::V311, usize::MAX, true, opened);
        session.close().await;
        assert!(drained(&mut sent).is_empty());
    }
}
