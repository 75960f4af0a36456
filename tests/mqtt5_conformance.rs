//! MQTT 5 behaviours through the front-end, written from the MQTT 5.0 specification (OASIS
//! Standard, statement numbers in each test's doc comment), against the real server over TLS with
//! an `open`-policy org. Packets are the project's own codec over tokio-rustls, so that every
//! property and every byte the server sends can be set and checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use portcullis::codec::{
    self, Ack, Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, Subscribe,
    Subscription, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const ORG: &str = "acme";
const SNI: &str = "acme.messaging.localhost";
/// How long a test waits to be sure something does NOT arrive.
const QUIET: Duration = Duration::from_millis(500);

/// One MQTT 5 connection, spoken packet by packet.
struct Client {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
}

fn client_id(name: &str) -> String {
    format!("d:{ORG}:sensor:{name}")
}

fn connect_packet(name: &str, clean_start: bool, properties: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: Protocol::V5,
        clean_start,
        keep_alive: 30,
        client_id: client_id(name),
        will: None,
        username: None,
        password: None,
        properties,
    }))
}

fn expiry(seconds: u32) -> Properties {
    Properties {
        session_expiry_interval: Some(seconds),
        ..Properties::default()
    }
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    }
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

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

impl Client {
    /// Connects device `name` with `packet` (a CONNECT) and returns the client and its CONNACK.
    async fn connect_with(
        server: &TestServer,
        ca: &TestCa,
        name: &str,
        packet: Packet,
    ) -> (Client, codec::ConnAck) {
        let cert = ca.client(&format!("d:sensor:{name}"), &[]);
        let stream = server.tls(SNI, Some(&cert)).await.unwrap();
        let mut client = Client {
            stream,
            buf: BytesMut::new(),
        };
        client.send(packet).await;
        match client.recv().await {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, 0, "{ack:?}");
                (client, ack)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn connect(
        server: &TestServer,
        ca: &TestCa,
        name: &str,
        clean_start: bool,
        properties: Properties,
    ) -> (Client, codec::ConnAck) {
        let packet = connect_packet(name, clean_start, properties);
        Client::connect_with(server, ca, name, packet).await
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        codec::encode(&packet, Protocol::V5, &mut out).unwrap();
        step(self.stream.write_all(&out)).await.unwrap();
        step(self.stream.flush()).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = codec::decode(&mut self.buf, Protocol::V5, 1 << 20).unwrap() {
                return Some(packet);
            }
            match step(self.stream.read_buf(&mut self.buf)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn recv(&mut self) -> Packet {
        self.next().await.expect("the server closed the connection")
    }

    /// Nothing arrives for a while (the one place a test waits for an absence).
    async fn quiet(&mut self) {
        let got = tokio::time::timeout(QUIET, self.next()).await;
        assert!(got.is_err(), "expected nothing, got {got:?}");
    }

    async fn subscribe_with(
        &mut self,
        packet_id: u16,
        subscriptions: Vec<Subscription>,
    ) -> Vec<u8> {
        self.subscribe_props(packet_id, subscriptions, Properties::default())
            .await
    }

    async fn subscribe_props(
        &mut self,
        packet_id: u16,
        subscriptions: Vec<Subscription>,
        properties: Properties,
    ) -> Vec<u8> {
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            subscriptions,
            properties,
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(ack) => ack.codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let subscription = Subscription {
            filter: filter.to_owned(),
            options: options(qos),
        };
        let codes = self.subscribe_with(1, vec![subscription]).await;
        assert_eq!(codes, vec![qos as u8]);
    }

    /// Publishes at QoS 1 and waits for its PUBACK.
    async fn publish_acked(&mut self, topic: &str, packet_id: u16, payload: &'static [u8]) {
        self.send(Packet::Publish(publish(
            topic,
            QoS::AtLeastOnce,
            Some(packet_id),
            payload,
        )))
        .await;
        loop {
            if let Packet::PubAck(ack) = self.recv().await {
                assert_eq!((ack.packet_id, ack.reason), (packet_id, 0));
                return;
            }
        }
    }

    /// The next PUBLISH, acknowledged (PUBACK, or PUBREC then PUBCOMP).
    async fn delivery(&mut self) -> Publish {
        loop {
            if let Packet::Publish(p) = self.recv().await {
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => self.send(Packet::PubAck(ack(id))).await,
                    (QoS::ExactlyOnce, Some(id)) => {
                        self.send(Packet::PubRec(ack(id))).await;
                        match self.recv().await {
                            Packet::PubRel(rel) => assert_eq!(rel.packet_id, id),
                            other => panic!("expected PUBREL, got {other:?}"),
                        }
                        self.send(Packet::PubComp(ack(id))).await;
                    }
                    _ => {}
                }
                return p;
            }
        }
    }

    /// The server's next packet is DISCONNECT with `reason`.
    async fn disconnected_with(&mut self, reason: u8) {
        match self.next().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason),
            other => panic!("expected DISCONNECT {reason:#04x}, got {other:?}"),
        }
    }

    async fn disconnect(mut self, properties: Properties) {
        self.send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties,
        }))
        .await;
        // The server closes after a DISCONNECT.
        while self.next().await.is_some() {}
    }
}

/// A device that publishes at QoS 1 on `topic` once: `name` must differ from the subscriber's.
async fn publish_once(
    server: &TestServer,
    ca: &TestCa,
    name: &str,
    topic: &str,
    payload: &'static [u8],
) {
    let (mut publisher, _) = Client::connect(server, ca, name, true, Properties::default()).await;
    publisher.publish_acked(topic, 1, payload).await;
    publisher.disconnect(Properties::default()).await;
}

/// 3.1.2.11.2, MQTT-3.1.2-23, 3.1.2.4: clean start 1 with a Session Expiry Interval keeps the
/// session after the connection ends; the messages for its subscriptions wait for it and a
/// CONNECT with clean start 0 resumes it (Session Present 1).
#[tokio::test]
async fn mqtt_3_1_2_23_clean_start_with_expiry_keeps_the_session() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, ack) = Client::connect(&server, &ca, "keeper", true, expiry(300)).await;
    assert!(!ack.session_present);
    sub.subscribe("queue/t", QoS::AtLeastOnce).await;
    sub.disconnect(Properties::default()).await;

    publish_once(&server, &ca, "pub", "queue/t", b"while away").await;

    let (mut resumed, ack) = Client::connect(&server, &ca, "keeper", false, expiry(300)).await;
    assert!(ack.session_present, "the session was not kept");
    let got = resumed.delivery().await;
    assert_eq!(&got.payload[..], b"while away");
}

/// 3.1.2.11.2: with no Session Expiry Interval (0) the session ends with the connection, even
/// with clean start 0: the next CONNECT finds no session (Session Present 0) and nothing queued.
#[tokio::test]
async fn mqtt_3_1_2_11_expiry_zero_ends_the_session_with_the_connection() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "brief", false, Properties::default()).await;
    sub.subscribe("queue/t", QoS::AtLeastOnce).await;
    sub.disconnect(Properties::default()).await;

    publish_once(&server, &ca, "pub", "queue/t", b"nobody home").await;

    let (mut again, ack) =
        Client::connect(&server, &ca, "brief", false, Properties::default()).await;
    assert!(!ack.session_present, "an expiry-0 session was kept");
    again.quiet().await;
}

/// 3.1.2.11.2, 4.1: a kept session is discarded once its expiry interval has passed.
#[tokio::test]
async fn mqtt_4_1_a_session_is_discarded_after_its_expiry() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "short", true, expiry(1)).await;
    sub.subscribe("queue/t", QoS::AtLeastOnce).await;
    sub.disconnect(Properties::default()).await;
    // Kept within the interval (this resume starts the interval again at its disconnect).
    let (kept, ack) = Client::connect(&server, &ca, "short", false, expiry(1)).await;
    assert!(ack.session_present, "the session was not kept at all");
    kept.disconnect(Properties::default()).await;

    // Poll until the session is gone: a resume within the interval would keep it, so each probe
    // asks for expiry 0 after the interval (which then also ends the probe's own session).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let expired = eventually(STEP, || async {
        let (probe, ack) = Client::connect(&server, &ca, "short", false, expiry(1)).await;
        probe.disconnect(Properties::default()).await;
        !ack.session_present
    })
    .await;
    assert!(expired, "the session outlived its expiry interval");
}

/// 3.14.2.2.2: the client's DISCONNECT may change the Session Expiry Interval: from 300 to 0
/// ends the session with the connection.
#[tokio::test]
async fn mqtt_3_14_2_2_disconnect_may_lower_the_expiry_to_zero() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "lower", false, expiry(300)).await;
    sub.subscribe("queue/t", QoS::AtLeastOnce).await;
    sub.disconnect(expiry(0)).await;
    let (_again, ack) = Client::connect(&server, &ca, "lower", false, expiry(300)).await;
    assert!(!ack.session_present, "DISCONNECT's expiry 0 was ignored");
}

/// 3.14.2.2.2: a DISCONNECT that sets a non-zero Session Expiry Interval when the CONNECT's was 0
/// is a protocol error: the server answers DISCONNECT 0x82 and does not keep the session.
#[tokio::test]
async fn mqtt_3_14_2_2_raising_the_expiry_from_zero_is_a_protocol_error() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "raise", true, Properties::default()).await;
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: expiry(300),
    }))
    .await;
    sub.disconnected_with(0x82).await;
    let (_again, ack) = Client::connect(&server, &ca, "raise", false, expiry(300)).await;
    assert!(!ack.session_present);
}

/// 3.3.4, 4.9 (MQTT-3.3.4-9): a client that sends more unacknowledged QoS 1 PUBLISHes than the
/// Receive Maximum the server announced in CONNACK gets DISCONNECT 0x93 and is closed.
#[tokio::test]
async fn mqtt_3_3_4_9_exceeding_the_servers_receive_maximum_is_disconnected() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut client, ack) =
        Client::connect(&server, &ca, "flood", true, Properties::default()).await;
    let maximum = ack
        .properties
        .receive_maximum
        .expect("CONNACK announces a Receive Maximum");
    // QoS 2 PUBLISHes stay unacknowledged until their PUBREL: send the maximum, never release.
    for id in 1..=maximum {
        let p = publish("flow/t", QoS::ExactlyOnce, Some(id), b"x");
        client.send(Packet::Publish(p)).await;
    }
    for _ in 1..=maximum {
        match client.recv().await {
            Packet::PubRec(rec) => assert_eq!(rec.reason, 0),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    let one_more = publish("flow/t", QoS::ExactlyOnce, Some(maximum + 1), b"x");
    client.send(Packet::Publish(one_more)).await;
    client.disconnected_with(0x93).await;
    assert!(client.next().await.is_none(), "the connection stayed open");
}

/// 3.2.2.3.14: a server with a keep-alive cap (`mqtts.max_keep_alive_secs`) tells a client that
/// asks more, or none, its Server Keep Alive in CONNACK, and holds it to that; one that asks
/// less is served as it asked.
#[tokio::test]
async fn mqtt_3_2_2_3_14_server_keep_alive_caps_the_clients() {
    let server = TestServer::start_with(|c| c.mqtts.max_keep_alive = 1).await;
    server.create_open_org(ORG).await;
    let ca = TestCa::root("acme devices CA");
    server.upload_ca(ORG, &ca).await;
    for (asked, announced) in [(120, Some(1)), (0, Some(1)), (1, None)] {
        let name = format!("keepalive{asked}");
        let packet = match connect_packet(&name, true, Properties::default()) {
            Packet::Connect(mut c) => {
                c.keep_alive = asked;
                Packet::Connect(c)
            }
            _ => unreachable!(),
        };
        let (mut client, connack) = Client::connect_with(&server, &ca, &name, packet).await;
        assert_eq!(
            connack.properties.server_keep_alive, announced,
            "asked {asked}"
        );
        // Silent past 1.5 × the keep-alive served: closed for it.
        client.disconnected_with(0x8D).await;
    }
}

/// 3.14.4 (MQTT-3.14.4-2) with TCP's rules: a client still sending when the server ends its
/// session (here PUBRELs for the PUBRECs it reads before the DISCONNECT, as a client that
/// floods and then catches up does) can write them and read that DISCONNECT: the server reads
/// and discards until the client closes (bounded), instead of closing at once, which makes the
/// client's next writes meet a reset connection, before it may have read why it was closed.
#[tokio::test]
async fn mqtt_3_14_4_a_client_still_sending_reads_the_servers_disconnect() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut client, connack) =
        Client::connect(&server, &ca, "catchup", true, Properties::default()).await;
    let maximum = connack.properties.receive_maximum.unwrap();
    for id in 1..=maximum {
        let p = publish("flow/t", QoS::ExactlyOnce, Some(id), b"x");
        client.send(Packet::Publish(p)).await;
    }
    // The first PUBREC shows the server at work; it is released only after the one too many.
    let first = match client.recv().await {
        Packet::PubRec(rec) => rec.packet_id,
        other => panic!("expected PUBREC, got {other:?}"),
    };
    let one_more = publish("flow/t", QoS::ExactlyOnce, Some(maximum + 1), b"x");
    client.send(Packet::Publish(one_more)).await;
    let mut released = Vec::new();
    let mut pending = Some(first);
    loop {
        if let Some(id) = pending.take() {
            let mut out = BytesMut::new();
            codec::encode(&Packet::PubRel(ack(id)), Protocol::V5, &mut out).unwrap();
            let written = async {
                client.stream.write_all(&out).await?;
                client.stream.flush().await
            };
            step(written)
                .await
                .unwrap_or_else(|e| panic!("PUBREL {id} not written: {e}"));
            released.push(id);
        }
        match client.next().await {
            Some(Packet::PubRec(rec)) => pending = Some(rec.packet_id),
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, 0x93);
                break;
            }
            other => panic!("expected PUBREC or DISCONNECT 0x93, got {other:?}"),
        }
    }
    assert!(!released.is_empty());
    // A PUBREL the client had in flight when the DISCONNECT arrived (written a little later, as
    // from a slower client, yet within the server's 250 ms of patience), then its close: the
    // server, still reading, answers with a clean close of its own, where a server already gone
    // resets the connection.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut late = BytesMut::new();
    codec::encode(&Packet::PubRel(ack(maximum)), Protocol::V5, &mut late).unwrap();
    step(client.stream.write_all(&late)).await.unwrap();
    step(client.stream.flush()).await.unwrap();
    let _ = step(client.stream.shutdown()).await;
    let mut rest = Vec::new();
    let end = step(client.stream.read_to_end(&mut rest)).await;
    assert!(
        end.is_ok(),
        "the connection ended with {end:?}, not a clean close"
    );
}

fn subscription(
    filter: &str,
    qos: QoS,
    adjust: impl FnOnce(&mut SubscriptionOptions),
) -> Subscription {
    let mut options = options(qos);
    adjust(&mut options);
    Subscription {
        filter: filter.to_owned(),
        options,
    }
}

/// 3.8.4 (MQTT-3.8.4-8), 3.3.4: a message is delivered at the lower of its publish QoS and the
/// subscription's maximum QoS: a QoS 0 publication reaches a QoS 2 subscription at QoS 0, a QoS 1
/// one at QoS 1.
#[tokio::test]
async fn mqtt_3_8_4_8_delivery_at_the_lower_of_publish_and_subscription_qos() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "sub", true, Properties::default()).await;
    sub.subscribe("qos/t", QoS::ExactlyOnce).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    publisher
        .send(Packet::Publish(publish(
            "qos/t",
            QoS::AtMostOnce,
            None,
            b"zero",
        )))
        .await;
    let got = sub.delivery().await;
    assert_eq!((&got.payload[..], got.qos), (&b"zero"[..], QoS::AtMostOnce));
    publisher.publish_acked("qos/t", 2, b"one").await;
    let got = sub.delivery().await;
    assert_eq!((&got.payload[..], got.qos), (&b"one"[..], QoS::AtLeastOnce));
    // The broker's QoS 2 exchange was completed here: the next message still flows.
    publisher.publish_acked("qos/t", 3, b"again").await;
    assert_eq!(&sub.delivery().await.payload[..], b"again");
}

/// 3.8.3.1 (MQTT-3.8.3-3): with No Local, the client's own publications are not delivered to it
/// on that subscription; another client's are.
#[tokio::test]
async fn mqtt_3_8_3_3_no_local_skips_the_clients_own_messages() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut me, _) = Client::connect(&server, &ca, "me", true, Properties::default()).await;
    let sub = subscription("local/t", QoS::AtLeastOnce, |o| o.no_local = true);
    assert_eq!(me.subscribe_with(1, vec![sub]).await, vec![1]);
    me.publish_acked("local/t", 2, b"mine").await;
    me.quiet().await;
    publish_once(&server, &ca, "other", "local/t", b"theirs").await;
    assert_eq!(&me.delivery().await.payload[..], b"theirs");
}

/// 3.8.3.1 (MQTT-3.8.3-3): No Local holds for a retained message too: the client's own retained
/// message is not sent to it when it subscribes with No Local later (the front-end's stamp
/// carries the publisher of every retained message, whatever subscriptions existed then).
#[tokio::test]
async fn mqtt_3_8_3_3_no_local_skips_the_clients_own_retained_message() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut me, _) = Client::connect(&server, &ca, "me", true, Properties::default()).await;
    let mut retained = publish("nlr/t", QoS::AtLeastOnce, Some(1), b"mine");
    retained.retain = true;
    me.send(Packet::Publish(retained)).await;
    match me.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id, 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let sub = subscription("nlr/t", QoS::AtLeastOnce, |o| o.no_local = true);
    assert_eq!(me.subscribe_with(2, vec![sub]).await, vec![1]);
    me.quiet().await;
    let (mut other, _) = Client::connect(&server, &ca, "other", true, Properties::default()).await;
    other.subscribe("nlr/t", QoS::AtLeastOnce).await;
    let delivered = other.delivery().await;
    assert_eq!(
        (&delivered.payload[..], delivered.retain),
        (&b"mine"[..], true)
    );
}

/// 3.3.2.3.2, 3.3.2.3.7: the Payload Format Indicator and the user properties reach the
/// subscriber as published, whatever the front-end carries through the broker beside them.
#[tokio::test]
async fn mqtt_3_3_2_3_2_payload_format_and_user_properties_pass_through() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "sub", true, Properties::default()).await;
    sub.subscribe("pfi/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    let sent = [
        (Some(1), vec![("k".to_owned(), "v".to_owned())]),
        (Some(0), Vec::new()),
        (
            None,
            vec![("portcullis-origin".to_owned(), "forged".to_owned())],
        ),
    ];
    for (i, (format, user_properties)) in sent.iter().enumerate() {
        let mut message = publish("pfi/t", QoS::AtLeastOnce, Some(i as u16 + 1), b"x");
        message.properties.payload_format_indicator = *format;
        message.properties.user_properties = user_properties.clone();
        publisher.send(Packet::Publish(message)).await;
        let got = sub.delivery().await;
        assert_eq!(got.properties.payload_format_indicator, *format);
        // A client's property of the stamp's name is dropped on the way in.
        let expected: Vec<_> = user_properties
            .iter()
            .filter(|(name, _)| name != "portcullis-origin")
            .cloned()
            .collect();
        assert_eq!(got.properties.user_properties, expected);
    }
}

/// 3.8.3.1 (MQTT-3.3.1-12, -13): Retain As Published keeps the publisher's RETAIN flag on a
/// live delivery; without it the flag is 0.
#[tokio::test]
async fn mqtt_3_3_1_12_retain_as_published() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut keep, _) = Client::connect(&server, &ca, "keep", true, Properties::default()).await;
    let sub = subscription("rap/t", QoS::AtLeastOnce, |o| o.retain_as_published = true);
    assert_eq!(keep.subscribe_with(1, vec![sub]).await, vec![1]);
    let (mut plain, _) = Client::connect(&server, &ca, "plain", true, Properties::default()).await;
    plain.subscribe("rap/t", QoS::AtLeastOnce).await;

    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    let mut retained = publish("rap/t", QoS::AtLeastOnce, Some(1), b"kept");
    retained.retain = true;
    publisher.send(Packet::Publish(retained)).await;
    assert!(
        keep.delivery().await.retain,
        "Retain As Published lost RETAIN"
    );
    assert!(
        !plain.delivery().await.retain,
        "RETAIN kept without Retain As Published"
    );
}

/// 3.8.3.1 (MQTT-3.3.1-11): Retain Handling 2 sends no retained message at subscribe; 0 does.
#[tokio::test]
async fn mqtt_3_3_1_11_retain_handling_2_sends_no_retained_message() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    let mut retained = publish("rh/t", QoS::AtLeastOnce, Some(1), b"stored");
    retained.retain = true;
    publisher.send(Packet::Publish(retained)).await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));

    let (mut with, _) = Client::connect(&server, &ca, "with", true, Properties::default()).await;
    with.subscribe("rh/t", QoS::AtLeastOnce).await;
    let got = with.delivery().await;
    assert!(got.retain && &got.payload[..] == b"stored", "{got:?}");

    let (mut without, _) =
        Client::connect(&server, &ca, "without", true, Properties::default()).await;
    let sub = subscription("rh/t", QoS::AtLeastOnce, |o| o.retain_handling = 2);
    assert_eq!(without.subscribe_with(1, vec![sub]).await, vec![1]);
    without.quiet().await;
    // Live messages still arrive.
    publisher.publish_acked("rh/t", 2, b"live").await;
    assert_eq!(&without.delivery().await.payload[..], b"live");
}

/// 3.8.3.1: Retain Handling 0 sends the retained messages at every SUBSCRIBE, also of a filter
/// the session holds already (the broker alone sends them on the first only); 1 only for a new
/// subscription. Each arrives at the lower of its own QoS and the subscription's (3.8.4).
#[tokio::test]
async fn mqtt_3_8_3_1_retain_handling_0_resends_on_every_subscribe() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    let mut zero = publish("again/zero", QoS::AtMostOnce, None, b"zero");
    zero.retain = true;
    publisher.send(Packet::Publish(zero)).await;
    let mut one = publish("again/one", QoS::AtLeastOnce, Some(1), b"one");
    one.retain = true;
    publisher.send(Packet::Publish(one)).await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));

    let (mut sub, _) = Client::connect(&server, &ca, "sub", true, Properties::default()).await;
    let retained = async |sub: &mut Client| {
        let mut got = [sub.delivery().await, sub.delivery().await];
        got.sort_by(|a, b| a.topic.cmp(&b.topic));
        got.iter()
            .map(|p| (p.topic.clone(), p.qos, p.retain))
            .collect::<Vec<_>>()
    };
    let expected = vec![
        ("again/one".to_owned(), QoS::AtLeastOnce, true),
        ("again/zero".to_owned(), QoS::AtMostOnce, true),
    ];
    for _ in 0..2 {
        let sub_0 = subscription("again/+", QoS::ExactlyOnce, |o| o.retain_handling = 0);
        assert_eq!(sub.subscribe_with(1, vec![sub_0]).await, vec![2]);
        assert_eq!(retained(&mut sub).await, expected);
    }
    let sub_1 = subscription("again/+", QoS::ExactlyOnce, |o| o.retain_handling = 1);
    assert_eq!(sub.subscribe_with(2, vec![sub_1]).await, vec![2]);
    sub.quiet().await;
}

/// 3.3.2.3.4, 3.1.2.11.5: a client that allows topic aliases (Topic Alias Maximum in CONNECT)
/// gets a delivery topic once with an alias, then the alias alone; one that allows none gets
/// every topic in full (MQTT-3.3.2-9).
#[tokio::test]
async fn mqtt_3_3_2_3_4_deliveries_use_server_topic_aliases() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let allows = Properties {
        topic_alias_maximum: Some(4),
        ..Properties::default()
    };
    let (mut with, _) = Client::connect(&server, &ca, "with", true, allows).await;
    with.subscribe("alias/+", QoS::AtLeastOnce).await;
    let (mut without, _) =
        Client::connect(&server, &ca, "without", true, Properties::default()).await;
    without.subscribe("alias/+", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    for n in 1..=2 {
        publisher.publish_acked("alias/t", n, b"x").await;
    }
    let first = with.delivery().await;
    assert_eq!(first.topic, "alias/t");
    let alias = first
        .properties
        .topic_alias
        .expect("an alias with the topic");
    assert!((1..=4).contains(&alias), "{alias}");
    let second = with.delivery().await;
    assert_eq!(
        (second.topic.as_str(), second.properties.topic_alias),
        ("", Some(alias))
    );
    for _ in 1..=2 {
        let plain = without.delivery().await;
        assert_eq!(
            (plain.topic.as_str(), plain.properties.topic_alias),
            ("alias/t", None)
        );
    }
}

/// 3.8.2.1.2, 3.3.2.3.8 (MQTT-3.3.4-3): a delivery carries the Subscription Identifier of the
/// subscription it matches; CONNACK does not say identifiers are unavailable.
#[tokio::test]
async fn mqtt_3_3_4_3_deliveries_carry_subscription_identifiers() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, ack) = Client::connect(&server, &ca, "sub", true, Properties::default()).await;
    assert_ne!(ack.properties.subscription_identifier_available, Some(0));
    let properties = Properties {
        subscription_identifiers: vec![42],
        ..Properties::default()
    };
    let filters = vec![subscription("ids/+", QoS::AtLeastOnce, |_| {})];
    assert_eq!(sub.subscribe_props(1, filters, properties).await, vec![1]);
    publish_once(&server, &ca, "pub", "ids/t", b"tagged").await;
    let got = sub.delivery().await;
    assert_eq!(got.properties.subscription_identifiers, vec![42]);
}

/// 3.8.2.1.2: a Subscription Identifier of 0 is a protocol error (DISCONNECT 0x82).
#[tokio::test]
async fn mqtt_3_8_2_1_2_subscription_identifier_zero_is_a_protocol_error() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "sub", true, Properties::default()).await;
    // The codec will not encode identifier 0: the bytes are written by hand.
    let mut body = vec![0x00, 0x01, 0x02, 0x0B, 0x00];
    body.extend(raw::string("ids/+"));
    body.push(0x01);
    step(sub.stream.write_all(&raw::packet(0x82, &body)))
        .await
        .unwrap();
    sub.disconnected_with(0x82).await;
}

/// 3.1.2.11.4 (MQTT-3.1.2-24, -25): the server sends no packet larger than the client's Maximum
/// Packet Size; a PUBLISH that would be larger is discarded as if delivered (the next one that
/// fits still arrives, and a QoS 1 one does not hold the session's window).
#[tokio::test]
async fn mqtt_3_1_2_24_no_packet_beyond_the_clients_maximum_packet_size() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let small = Properties {
        maximum_packet_size: Some(256),
        ..Properties::default()
    };
    let (mut sub, _) = Client::connect(&server, &ca, "small", true, small).await;
    sub.subscribe("size/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    static BIG: [u8; 1024] = [b'x'; 1024];
    publisher
        .send(Packet::Publish(Publish {
            payload: Bytes::from_static(&BIG),
            ..publish("size/t", QoS::AtLeastOnce, Some(1), b"")
        }))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    publisher.publish_acked("size/t", 2, b"fits").await;
    let got = sub.delivery().await;
    assert_eq!(&got.payload[..], b"fits", "the oversized message was sent");
}

/// RFC 8446 §6.1: a client that closes its TLS connection (close_notify) before any CONNECT gets
/// a close_notify back, so its read ends cleanly instead of with an unexpected EOF.
#[tokio::test]
async fn rfc8446_6_1_close_notify_before_connect_is_answered() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let cert = ca.client("d:sensor:quiet", &[]);
    let mut stream = server.tls(SNI, Some(&cert)).await.unwrap();
    step(stream.shutdown()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = step(stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0)),
        "expected a clean close (close_notify), got {read:?}"
    );
}

/// MQTT-3.1.2-4 (the session state includes the subscriptions), 3.3.4: a resumed session's
/// subscriptions keep their identifiers and options.
#[tokio::test]
async fn mqtt_3_1_2_4_a_resumed_session_keeps_its_subscription_options() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "resumer", true, expiry(300)).await;
    let properties = Properties {
        subscription_identifiers: vec![9],
        ..Properties::default()
    };
    let filters = vec![subscription("resume/t", QoS::AtLeastOnce, |o| {
        o.no_local = true
    })];
    assert_eq!(sub.subscribe_props(1, filters, properties).await, vec![1]);
    sub.disconnect(Properties::default()).await;

    let (mut resumed, ack) = Client::connect(&server, &ca, "resumer", false, expiry(300)).await;
    assert!(ack.session_present);
    resumed.publish_acked("resume/t", 1, b"mine").await;
    publish_once(&server, &ca, "pub", "resume/t", b"theirs").await;
    let got = resumed.delivery().await;
    assert_eq!(&got.payload[..], b"theirs", "No Local was forgotten");
    assert_eq!(got.properties.subscription_identifiers, vec![9]);
}

/// 3.3.2.3.3 (MQTT-3.3.2-5, -6): a message queued for an offline session is not delivered once
/// its Message Expiry Interval has passed; one still valid is delivered with the interval less
/// the time it waited.
#[tokio::test]
async fn mqtt_3_3_2_5_queued_messages_expire() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "away", true, expiry(300)).await;
    sub.subscribe("expiry/t", QoS::AtLeastOnce).await;
    sub.disconnect(Properties::default()).await;

    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    for (id, seconds, payload) in [(1, 1, &b"short"[..]), (2, 300, &b"long"[..])] {
        let mut p = publish("expiry/t", QoS::AtLeastOnce, Some(id), b"");
        p.payload = Bytes::copy_from_slice(payload);
        p.properties.message_expiry_interval = Some(seconds);
        publisher.send(Packet::Publish(p)).await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    // The expiry is in whole seconds: wait out the short one's.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut resumed, ack) = Client::connect(&server, &ca, "away", false, expiry(300)).await;
    assert!(ack.session_present);
    let got = resumed.delivery().await;
    assert_eq!(
        &got.payload[..],
        b"long",
        "an expired message was delivered"
    );
    let left = got.properties.message_expiry_interval.unwrap();
    assert!(left < 300, "the interval was not lowered: {left}");
}

/// MQTT-3.1.4-3, 3.1.2.4: a CONNECT with clean start 0 that takes over a live connection of its
/// client id resumes that session (Session Present 1), even when its expiry was 0: the session
/// existed when the CONNECT arrived.
#[tokio::test]
async fn mqtt_3_1_4_3_a_takeover_with_clean_start_0_resumes_the_session() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut first, _) = Client::connect(&server, &ca, "twice", false, Properties::default()).await;
    first.subscribe("takeover/t", QoS::AtLeastOnce).await;
    let (mut second, ack) =
        Client::connect(&server, &ca, "twice", false, Properties::default()).await;
    assert!(
        ack.session_present,
        "the taken-over session was not resumed"
    );
    first.disconnected_with(0x8E).await;
    publish_once(&server, &ca, "pub", "takeover/t", b"still subscribed").await;
    assert_eq!(&second.delivery().await.payload[..], b"still subscribed");
}

/// 4.6, 4.3.2: a client may hold its acknowledgements while more deliveries arrive. A delivery
/// the front-end settles itself — here a QoS 0 message on a QoS 2 subscription, sent on at QoS 0
/// (3.8.4) — while an earlier one still waits for the client's PUBACK must not end the session:
/// every message arrives, and the session goes on.
#[tokio::test]
async fn mqtt_4_6_a_delivery_settled_here_waits_for_the_earlier_ones() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (mut sub, _) = Client::connect(&server, &ca, "sub", true, Properties::default()).await;
    sub.subscribe("order/t", QoS::ExactlyOnce).await;
    let (mut publisher, _) =
        Client::connect(&server, &ca, "pub", true, Properties::default()).await;
    publisher.publish_acked("order/t", 1, b"first").await;
    publisher
        .send(Packet::Publish(publish(
            "order/t",
            QoS::AtMostOnce,
            None,
            b"second",
        )))
        .await;

    // Both arrive before the subscriber acknowledges anything.
    let first = match sub.recv().await {
        Packet::Publish(p) => p,
        other => panic!("expected the first PUBLISH, got {other:?}"),
    };
    assert_eq!(
        (&first.payload[..], first.qos),
        (&b"first"[..], QoS::AtLeastOnce)
    );
    let second = match sub.recv().await {
        Packet::Publish(p) => p,
        other => panic!("expected the second PUBLISH, got {other:?}"),
    };
    assert_eq!(
        (&second.payload[..], second.qos),
        (&b"second"[..], QoS::AtMostOnce)
    );
    sub.send(Packet::PubAck(ack(first.packet_id.unwrap())))
        .await;

    publisher.publish_acked("order/t", 2, b"third").await;
    assert_eq!(&sub.delivery().await.payload[..], b"third");
}
