//! The forwarder driven on packets alone: each test feeds packets from the client or the broker
//! and asserts the exact packets written to the client (decoded back from the bytes) and sent to
//! the broker.

use std::collections::HashSet;

use bytes::Bytes;

use super::*;
use crate::codec::{SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck};
use crate::identity::ClientId;
use crate::mqtt::admission::session_expiry;
use crate::mqtt::topics::TopicPolicy;

const ME: &str = "d:acme:sensor:dev1";
const OTHER: &str = "d:acme:sensor:dev2";

/// Filter caps counted here: the session's real ones count in the broker.
struct Cap {
    cap: usize,
    held: HashSet<String>,
}

impl Quota for Cap {
    fn admit(&mut self, filter: &str) -> Result<bool, FilterRefused> {
        if self.held.len() >= self.cap && !self.held.contains(filter) {
            return Err(FilterRefused::Session);
        }
        Ok(self.held.insert(filter.to_owned()))
    }

    fn release(&mut self, filter: &str) -> bool {
        self.held.remove(filter)
    }

    fn all(&self, keep: &mut dyn FnMut(&str) -> bool) -> bool {
        self.held.iter().all(|filter| keep(filter))
    }
}

fn connect(protocol: Protocol, properties: Properties) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 0,
        client_id: ME.into(),
        will: None,
        username: None,
        password: None,
        properties,
    }
}

fn v5() -> Connect {
    connect(Protocol::V5, Properties::default())
}

fn forwarder_with(connect: &Connect, cap: usize) -> Forwarder<Cap> {
    let rules = Rules {
        max_packet_size: 1 << 20,
        acknowledge_refused_v311: false,
    };
    forwarder_ruled(connect, cap, rules)
}

fn forwarder_ruled(connect: &Connect, cap: usize, rules: Rules) -> Forwarder<Cap> {
    let client = ClientId::parse(ME).expect("a client id");
    let quota = Cap {
        cap,
        held: HashSet::new(),
    };
    Forwarder::new(
        connect,
        ME.into(),
        TopicMap::new(client, TopicPolicy::Open),
        quota,
        Subscriptions::default(),
        session_expiry(connect),
        rules,
    )
}

fn forwarder(connect: &Connect) -> Forwarder<Cap> {
    forwarder_with(connect, 10)
}

/// What one step wrote: packets to the client (decoded from the bytes) and to the broker.
#[derive(Debug, PartialEq)]
struct Out {
    client: Vec<Packet>,
    broker: Vec<Packet>,
}

fn decoded(mut bytes: BytesMut, protocol: Protocol) -> Vec<Packet> {
    let mut packets = Vec::new();
    while let Some(packet) = codec::decode(&mut bytes, protocol, 1 << 20).expect("decodes") {
        packets.push(packet);
    }
    assert!(bytes.is_empty(), "a partial packet was written");
    packets
}

fn from_client(fw: &mut Forwarder<Cap>, packet: Packet) -> (Result<Flow, SessionError>, Out) {
    let mut to_client = BytesMut::new();
    let mut to_broker = Vec::new();
    let flow = fw.client_packet(packet, &mut to_client, &mut to_broker);
    let out = Out {
        client: decoded(to_client, fw.protocol),
        broker: to_broker,
    };
    (flow, out)
}

fn from_broker(fw: &mut Forwarder<Cap>, packet: Packet) -> Out {
    let mut to_client = BytesMut::new();
    let mut to_broker = Vec::new();
    let flow = fw.broker_packets(&mut vec![packet], &mut to_client, &mut to_broker);
    assert!(matches!(flow, Ok(Flow::Continue)));
    Out {
        client: decoded(to_client, fw.protocol),
        broker: to_broker,
    }
}

/// A step that must go on.
fn ok_from_client(fw: &mut Forwarder<Cap>, packet: Packet) -> Out {
    let (flow, out) = from_client(fw, packet);
    assert!(matches!(flow, Ok(Flow::Continue)), "{:?}", flow.err());
    out
}

/// Feeds `packet` from the broker and asserts what goes to the client and to the broker.
#[track_caller]
fn broker_step(fw: &mut Forwarder<Cap>, packet: Packet, client: Vec<Packet>, broker: Vec<Packet>) {
    assert_eq!(from_broker(fw, packet), Out { client, broker });
}

/// Feeds `packet` from the client (the session goes on) and asserts what goes to the client and
/// to the broker.
#[track_caller]
fn client_step(fw: &mut Forwarder<Cap>, packet: Packet, client: Vec<Packet>, broker: Vec<Packet>) {
    assert_eq!(ok_from_client(fw, packet), Out { client, broker });
}

fn out(client: Vec<Packet>, broker: Vec<Packet>) -> Out {
    Out { client, broker }
}

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, properties: Properties) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties,
        payload: Bytes::from_static(b"hi"),
    }
}

/// Properties stamped with who published (as every message reaches the broker).
fn stamped(qos: QoS, client_id: &str) -> Properties {
    let mut properties = Properties::default();
    origin::stamp(&mut properties, qos, false, Some(client_id));
    properties
}

/// A delivery from the broker on `acme/<topic>`, published by another client at `published`.
fn delivery(topic: &str, qos: QoS, packet_id: Option<u16>, published: QoS) -> Packet {
    let topic = format!("acme/{topic}");
    Packet::Publish(publish(&topic, qos, packet_id, stamped(published, OTHER)))
}

/// What the client gets of a delivery: its own view of the topic, no stamp.
fn seen(topic: &str, qos: QoS, packet_id: Option<u16>) -> Packet {
    Packet::Publish(publish(topic, qos, packet_id, Properties::default()))
}

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

fn subscribe(
    packet_id: u16,
    filter: &str,
    options: SubscriptionOptions,
    id: Option<u32>,
) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        subscriptions: vec![Subscription {
            filter: filter.into(),
            options,
        }],
        properties: Properties {
            subscription_identifiers: id.into_iter().collect(),
            ..Properties::default()
        },
    })
}

fn options(qos: QoS, no_local: bool) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: false,
        retain_handling: 0,
    }
}

#[test]
fn qos1_and_qos2_from_the_client_reach_the_broker_and_their_acks_come_back() {
    let mut fw = forwarder(&v5());
    let sent = ok_from_client(
        &mut fw,
        Packet::Publish(publish(
            "t",
            QoS::AtLeastOnce,
            Some(1),
            Properties::default(),
        )),
    );
    let to_broker = publish(
        "acme/t",
        QoS::AtLeastOnce,
        Some(1),
        stamped(QoS::AtLeastOnce, ME),
    );
    assert_eq!(sent, out(vec![], vec![Packet::Publish(to_broker)]));
    broker_step(
        &mut fw,
        Packet::PubAck(ack(1)),
        vec![Packet::PubAck(ack(1))],
        vec![],
    );

    let sent = ok_from_client(
        &mut fw,
        Packet::Publish(publish(
            "t",
            QoS::ExactlyOnce,
            Some(2),
            Properties::default(),
        )),
    );
    let to_broker = publish(
        "acme/t",
        QoS::ExactlyOnce,
        Some(2),
        stamped(QoS::ExactlyOnce, ME),
    );
    assert_eq!(sent, out(vec![], vec![Packet::Publish(to_broker)]));
    broker_step(
        &mut fw,
        Packet::PubRec(ack(2)),
        vec![Packet::PubRec(ack(2))],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubRel(ack(2)),
        vec![],
        vec![Packet::PubRel(ack(2))],
    );
    broker_step(
        &mut fw,
        Packet::PubComp(ack(2)),
        vec![Packet::PubComp(ack(2))],
        vec![],
    );
    assert!(
        fw.flight.held().is_none_or(|f| f.receiving.is_empty()),
        "both flows finished"
    );
    fw.idle();
    assert!(
        fw.flight.held().is_none(),
        "nothing in flight is held when idle"
    );
}

#[test]
fn qos1_and_qos2_deliveries_reach_the_client_and_its_acks_reach_the_broker() {
    let mut fw = forwarder(&v5());
    broker_step(
        &mut fw,
        delivery("t", QoS::AtLeastOnce, Some(5), QoS::AtLeastOnce),
        vec![seen("t", QoS::AtLeastOnce, Some(5))],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubAck(ack(5)),
        vec![],
        vec![Packet::PubAck(ack(5))],
    );

    broker_step(
        &mut fw,
        delivery("t", QoS::ExactlyOnce, Some(6), QoS::ExactlyOnce),
        vec![seen("t", QoS::ExactlyOnce, Some(6))],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubRec(ack(6)),
        vec![],
        vec![Packet::PubRec(ack(6))],
    );
    broker_step(
        &mut fw,
        Packet::PubRel(ack(6)),
        vec![Packet::PubRel(ack(6))],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubComp(ack(6)),
        vec![],
        vec![Packet::PubComp(ack(6))],
    );
}

#[test]
fn a_qos2_delivery_published_at_qos1_goes_at_qos1_and_its_puback_is_the_brokers_pubrec() {
    let mut fw = forwarder(&v5());
    broker_step(
        &mut fw,
        delivery("t", QoS::ExactlyOnce, Some(3), QoS::AtLeastOnce),
        vec![seen("t", QoS::AtLeastOnce, Some(3))],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubAck(ack(3)),
        vec![],
        vec![Packet::PubRec(ack(3))],
    );
    // The broker's PUBREL is completed here: the client never saw a QoS 2 flow.
    broker_step(
        &mut fw,
        Packet::PubRel(ack(3)),
        vec![],
        vec![Packet::PubComp(ack(3))],
    );
}

#[test]
fn one_publish_past_the_receive_maximum_is_disconnect_0x93() {
    let mut fw = forwarder(&v5());
    for id in 1..=RECEIVE_MAXIMUM {
        let message = publish("t", QoS::AtLeastOnce, Some(id), Properties::default());
        let sent = ok_from_client(&mut fw, Packet::Publish(message));
        assert_eq!((sent.client.len(), sent.broker.len()), (0, 1));
    }
    // A retransmission of one in flight is not one more.
    let mut again = publish(
        "t",
        QoS::AtLeastOnce,
        Some(RECEIVE_MAXIMUM),
        Properties::default(),
    );
    again.dup = true;
    let sent = ok_from_client(&mut fw, Packet::Publish(again));
    assert_eq!(sent.broker.len(), 1);
    let over = publish(
        "t",
        QoS::AtLeastOnce,
        Some(RECEIVE_MAXIMUM + 1),
        Properties::default(),
    );
    let (flow, sent) = from_client(&mut fw, Packet::Publish(over));
    assert!(matches!(
        flow,
        Err(SessionError::ClientViolation("receive maximum exceeded"))
    ));
    let disconnect = Disconnect {
        reason: reason::RECEIVE_MAXIMUM_EXCEEDED,
        properties: Properties::default(),
    };
    assert_eq!(sent, out(vec![Packet::Disconnect(disconnect)], vec![]));
}

#[test]
fn a_delivery_waits_while_the_clients_window_is_full_and_goes_on_its_puback() {
    let small = connect(
        Protocol::V5,
        Properties {
            receive_maximum: Some(1),
            ..Properties::default()
        },
    );
    let mut fw = forwarder(&small);
    let first = delivery("t", QoS::AtLeastOnce, Some(1), QoS::AtLeastOnce);
    broker_step(
        &mut fw,
        first,
        vec![seen("t", QoS::AtLeastOnce, Some(1))],
        vec![],
    );
    let second = delivery("u", QoS::AtLeastOnce, Some(2), QoS::AtLeastOnce);
    // The window holds the second.
    broker_step(&mut fw, second, vec![], vec![]);
    let released = ok_from_client(&mut fw, Packet::PubAck(ack(1)));
    let second_out = seen("u", QoS::AtLeastOnce, Some(2));
    assert_eq!(
        released,
        out(vec![second_out], vec![Packet::PubAck(ack(1))])
    );
}

#[test]
fn no_local_keeps_the_clients_own_messages_from_it() {
    let mut fw = forwarder(&v5());
    let sub = ok_from_client(
        &mut fw,
        subscribe(1, "t", options(QoS::AtLeastOnce, true), None),
    );
    let forwarded = subscribe(1, "acme/t", options(QoS::AtLeastOnce, true), None);
    assert_eq!(sub, out(vec![], vec![forwarded]));
    let suback = SubAck {
        packet_id: 1,
        codes: vec![1],
        properties: Properties::default(),
    };
    broker_step(
        &mut fw,
        Packet::SubAck(suback.clone()),
        vec![Packet::SubAck(suback)],
        vec![],
    );

    let own = publish(
        "acme/t",
        QoS::AtLeastOnce,
        Some(4),
        stamped(QoS::AtLeastOnce, ME),
    );
    // Not delivered: settled with the broker here.
    broker_step(
        &mut fw,
        Packet::Publish(own),
        vec![],
        vec![Packet::PubAck(ack(4))],
    );
    let other = delivery("t", QoS::AtLeastOnce, Some(5), QoS::AtLeastOnce);
    broker_step(
        &mut fw,
        other,
        vec![seen("t", QoS::AtLeastOnce, Some(5))],
        vec![],
    );
}

#[test]
fn a_delivery_carries_the_identifiers_of_the_subscriptions_it_matches() {
    let mut fw = forwarder(&v5());
    let sub = ok_from_client(
        &mut fw,
        subscribe(1, "t/+", options(QoS::AtMostOnce, false), Some(42)),
    );
    // The broker is not told the identifier (rumqttd drops it): the front-end attaches it.
    let forwarded = subscribe(1, "acme/t/+", options(QoS::AtMostOnce, false), None);
    assert_eq!(sub, out(vec![], vec![forwarded]));
    let delivered = from_broker(
        &mut fw,
        delivery("t/a", QoS::AtMostOnce, None, QoS::AtMostOnce),
    );
    let properties = Properties {
        subscription_identifiers: vec![42],
        ..Properties::default()
    };
    let to_client = publish("t/a", QoS::AtMostOnce, None, properties);
    assert_eq!(delivered, out(vec![Packet::Publish(to_client)], vec![]));
}

#[test]
fn a_delivery_larger_than_the_clients_maximum_packet_size_is_dropped_and_settled() {
    let small = connect(
        Protocol::V5,
        Properties {
            maximum_packet_size: Some(64),
            ..Properties::default()
        },
    );
    let mut fw = forwarder(&small);
    let Packet::Publish(mut large) = delivery("t", QoS::AtLeastOnce, Some(8), QoS::AtLeastOnce)
    else {
        unreachable!("a delivery is a PUBLISH")
    };
    large.payload = Bytes::from(vec![b'x'; 200]);
    broker_step(
        &mut fw,
        Packet::Publish(large),
        vec![],
        vec![Packet::PubAck(ack(8))],
    );
    let fits = delivery("t", QoS::AtLeastOnce, Some(9), QoS::AtLeastOnce);
    broker_step(
        &mut fw,
        fits,
        vec![seen("t", QoS::AtLeastOnce, Some(9))],
        vec![],
    );
}

#[test]
fn a_pubrel_for_an_unknown_packet_id_goes_to_the_one_that_knows() {
    let mut fw = forwarder(&v5());
    // From the client: the broker holds the client's QoS 2 state, so it judges it.
    client_step(
        &mut fw,
        Packet::PubRel(ack(77)),
        vec![],
        vec![Packet::PubRel(ack(77))],
    );
    // From the broker: the client holds that state; nothing was settled here for it.
    broker_step(
        &mut fw,
        Packet::PubRel(ack(78)),
        vec![Packet::PubRel(ack(78))],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubComp(ack(78)),
        vec![],
        vec![Packet::PubComp(ack(78))],
    );
}

#[test]
fn a_disconnect_may_change_the_session_expiry_but_not_raise_it_from_zero() {
    let kept = connect(
        Protocol::V5,
        Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    );
    let mut fw = forwarder(&kept);
    let disconnect = Disconnect {
        reason: 0,
        properties: Properties {
            session_expiry_interval: Some(0),
            reason_string: Some("bye".into()),
            ..Properties::default()
        },
    };
    let (flow, sent) = from_client(&mut fw, Packet::Disconnect(disconnect));
    assert!(matches!(flow, Ok(Flow::Done)));
    // The broker gets the DISCONNECT without the expiry (the session's end is decided here).
    let forwarded = Disconnect {
        reason: 0,
        properties: Properties {
            reason_string: Some("bye".into()),
            ..Properties::default()
        },
    };
    assert_eq!(sent, out(vec![], vec![Packet::Disconnect(forwarded)]));
    let ended = fw.end();
    assert_eq!(ended.expiry, Expiry::Now);
    assert!(!ended.will_wanted, "a DISCONNECT (0x00) cancels the will");

    let mut fw = forwarder(&v5());
    let raise = Disconnect {
        reason: reason::DISCONNECT_WITH_WILL,
        properties: Properties {
            session_expiry_interval: Some(30),
            ..Properties::default()
        },
    };
    let (flow, sent) = from_client(&mut fw, Packet::Disconnect(raise));
    assert!(matches!(
        flow,
        Err(SessionError::ClientViolation(
            "session expiry raised from 0"
        ))
    ));
    let protocol_error = Disconnect {
        reason: reason::PROTOCOL_ERROR,
        properties: Properties::default(),
    };
    assert_eq!(sent, out(vec![Packet::Disconnect(protocol_error)], vec![]));
    let ended = fw.end();
    assert_eq!(ended.expiry, Expiry::Now);
    assert!(
        ended.will_wanted,
        "an invalid DISCONNECT leaves the will due"
    );
}

#[test]
fn filters_refused_here_keep_their_place_in_the_suback() {
    let mut fw = forwarder_with(&v5(), 1);
    let two = Packet::Subscribe(Subscribe {
        packet_id: 3,
        subscriptions: ["$SYS/x", "a", "b"]
            .into_iter()
            .map(|filter| Subscription {
                filter: filter.into(),
                options: options(QoS::AtLeastOnce, false),
            })
            .collect(),
        properties: Properties::default(),
    });
    let sub = ok_from_client(&mut fw, two);
    let forwarded = subscribe(3, "acme/a", options(QoS::AtLeastOnce, false), None);
    assert_eq!(sub, out(vec![], vec![forwarded]));
    let suback = SubAck {
        packet_id: 3,
        codes: vec![1],
        properties: Properties::default(),
    };
    let merged = from_broker(&mut fw, Packet::SubAck(suback));
    let codes = vec![reason::NOT_AUTHORIZED, 1, reason::QUOTA_EXCEEDED];
    let to_client = SubAck {
        packet_id: 3,
        codes,
        properties: Properties::default(),
    };
    assert_eq!(merged, out(vec![Packet::SubAck(to_client)], vec![]));
    // Nothing forwarded: answered here.
    let unsub = ok_from_client(
        &mut fw,
        Packet::Unsubscribe(codec::Unsubscribe {
            packet_id: 4,
            filters: vec!["$SYS/x".into()],
            properties: Properties::default(),
        }),
    );
    let unsuback = UnsubAck {
        packet_id: 4,
        codes: vec![reason::NOT_AUTHORIZED],
        properties: Properties::default(),
    };
    assert_eq!(unsub, out(vec![Packet::UnsubAck(unsuback)], vec![]));
}

/// MQTT 5 §3.3.2.3.4: a client that allows topic aliases gets each delivery topic once, with
/// its alias, and the alias alone afterwards — in the order the packets are written, so one the
/// Receive Maximum window held back uses the alias a later QoS 0 delivery already introduced.
#[test]
fn deliveries_carry_server_topic_aliases_in_write_order() {
    let properties = Properties {
        topic_alias_maximum: Some(2),
        receive_maximum: Some(1),
        ..Properties::default()
    };
    let mut fw = forwarder(&connect(Protocol::V5, properties));
    let aliased = |topic: &str, qos, packet_id, alias| {
        let properties = Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        };
        Packet::Publish(publish(topic, qos, packet_id, properties))
    };
    let q1 = QoS::AtLeastOnce;
    broker_step(
        &mut fw,
        delivery("t", q1, Some(1), q1),
        vec![aliased("t", q1, Some(1), 1)],
        vec![],
    );
    // Held back: the client's window of 1 is full.
    broker_step(&mut fw, delivery("u", q1, Some(2), q1), vec![], vec![]);
    let q0 = QoS::AtMostOnce;
    broker_step(
        &mut fw,
        delivery("u", q0, None, q0),
        vec![aliased("u", q0, None, 2)],
        vec![],
    );
    client_step(
        &mut fw,
        Packet::PubAck(ack(1)),
        vec![aliased("", q1, Some(2), 2)],
        vec![Packet::PubAck(ack(1))],
    );
    // No alias left for a third topic; the first keeps its own.
    broker_step(
        &mut fw,
        delivery("v", q0, None, q0),
        vec![seen("v", q0, None)],
        vec![],
    );
    broker_step(
        &mut fw,
        delivery("t", q0, None, q0),
        vec![aliased("", q0, None, 1)],
        vec![],
    );
}

/// MQTT 3.1.1 §3.3.5: with `refused_publish_v311 = "acknowledge"` a refused PUBLISH is answered
/// as accepted at its QoS (the QoS 2 flow completed here) and never reaches the broker; the
/// session goes on.
#[test]
fn a_refused_v311_publish_may_be_acknowledged_and_dropped() {
    let rules = Rules {
        max_packet_size: 1 << 20,
        acknowledge_refused_v311: true,
    };
    let mut fw = forwarder_ruled(&connect(Protocol::V311, Properties::default()), 10, rules);
    let refused = |qos, id| Packet::Publish(publish("$SYS/x", qos, id, Properties::default()));
    client_step(&mut fw, refused(QoS::AtMostOnce, None), vec![], vec![]);
    let acked = vec![Packet::PubAck(ack(1))];
    client_step(&mut fw, refused(QoS::AtLeastOnce, Some(1)), acked, vec![]);
    let received = vec![Packet::PubRec(ack(2))];
    client_step(
        &mut fw,
        refused(QoS::ExactlyOnce, Some(2)),
        received,
        vec![],
    );
    let completed = vec![Packet::PubComp(ack(2))];
    client_step(&mut fw, Packet::PubRel(ack(2)), completed, vec![]);
    // A PUBREL of a flow that went to the broker still goes there.
    client_step(
        &mut fw,
        Packet::PubRel(ack(3)),
        vec![],
        vec![Packet::PubRel(ack(3))],
    );

    let mut closing = forwarder(&connect(Protocol::V311, Properties::default()));
    let (flow, out) = from_client(&mut closing, refused(QoS::AtLeastOnce, Some(1)));
    assert!(
        matches!(flow, Err(SessionError::TopicRefused)),
        "the default closes"
    );
    assert_eq!(
        out,
        Out {
            client: vec![],
            broker: vec![]
        }
    );
}

/// What a session holds is counted per topic policy as filters come and go, and again when it
/// follows a new policy: asking whether it may go on under one costs nothing.
#[test]
fn the_filters_a_policy_would_not_keep_are_counted_as_they_come_and_go() {
    let mut fw = forwarder(&v5());
    let (iot2, open) = (TopicPolicy::Iot2, TopicPolicy::Open);
    assert!(fw.holds_changed(), "a new session is judged once");
    assert!(!fw.holds_changed());
    assert!(fw.keeps_under(iot2, None) && fw.keeps_under(open, None));
    assert!(
        !fw.keeps_under(iot2, Some("acme/foo")),
        "a will iot-2 refuses"
    );
    let sub = |fw: &mut Forwarder<Cap>, id, filter| {
        ok_from_client(
            fw,
            subscribe(id, filter, options(QoS::AtMostOnce, false), None),
        );
    };
    let unsub = |fw: &mut Forwarder<Cap>, id, filter: &str| {
        let packet = Packet::Unsubscribe(codec::Unsubscribe {
            packet_id: id,
            filters: vec![filter.into()],
            properties: Properties::default(),
        });
        ok_from_client(fw, packet);
    };
    sub(&mut fw, 1, "foo/#");
    sub(&mut fw, 2, "foo/#");
    assert!(fw.holds_changed());
    assert!(!fw.keeps_under(iot2, None) && fw.keeps_under(open, None));
    sub(&mut fw, 3, "iot-2/cmd/+/fmt/+");
    unsub(&mut fw, 4, "foo/#");
    assert!(
        !fw.keeps_under(iot2, None),
        "the short form routes elsewhere"
    );
    unsub(&mut fw, 5, "iot-2/cmd/+/fmt/+");
    unsub(&mut fw, 6, "iot-2/cmd/+/fmt/+");
    assert!(
        fw.keeps_under(iot2, None),
        "the same filter let go twice counts once"
    );

    // Following iot-2 (it holds nothing now), what it holds is counted against open.
    sub(&mut fw, 7, "bar");
    assert!(!fw.keeps_under(iot2, None));
    unsub(&mut fw, 8, "bar");
    fw.set_policy(iot2);
    assert!(fw.keeps_under(open, None));
    sub(&mut fw, 9, "iot-2/cmd/+/fmt/+");
    assert!(fw.keeps_under(iot2, None) && !fw.keeps_under(open, None));
    let will = "acme/iot-2/type/sensor/id/dev1/evt/e/fmt/f";
    assert!(fw.keeps_under(iot2, Some(will)));
}
