//! MQTT 3.1.1 behaviours through the front-end, written from the MQTT 3.1.1 specification (OASIS
//! Standard, statement numbers in each test's doc comment), with rumqttc 3.1.1 clients over TLS
//! to an `open`-policy org: the clean session flag mapped onto the broker's sessions, and
//! delivery at the lower QoS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mqtt::*;
use common::*;
use rumqttc::QoS;

const ORG: &str = "acme";
const SNI: &str = "acme.messaging.localhost";

/// A device `name` connected with `clean_session`: its client, event loop and Session Present.
async fn device(
    server: &TestServer,
    ca: &TestCa,
    name: &str,
    clean_session: bool,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop, bool) {
    let addr = server
        .bridge(SNI, &ca.client(&format!("d:sensor:{name}"), &[]))
        .await;
    let mut options = v4_options(addr, &format!("d:{ORG}:sensor:{name}"));
    options.set_clean_session(clean_session);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)) =
            step(eventloop.poll()).await.unwrap()
        {
            assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
            return (client, eventloop, ack.session_present);
        }
    }
}

/// Disconnects and drives the event loop until the connection is gone.
async fn leave(client: rumqttc::AsyncClient, mut eventloop: rumqttc::EventLoop) {
    client.disconnect().await.unwrap();
    while step(eventloop.poll()).await.is_ok() {}
}

/// Publishes one QoS 1 message from device `name` and waits for its PUBACK.
async fn publish_once(server: &TestServer, ca: &TestCa, name: &str, topic: &str, qos: QoS) {
    let (client, mut eventloop, _) = device(server, ca, name, true).await;
    client.publish(topic, qos, false, "m").await.unwrap();
    if qos == QoS::AtMostOnce {
        // Nothing acknowledges QoS 0: wait until the PUBLISH has left (the client's own event).
        loop {
            if let rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)) =
                step(eventloop.poll()).await.unwrap()
            {
                break;
            }
        }
    } else {
        next_v4(&mut eventloop, |p| {
            matches!(p, rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_)).then_some(())
        })
        .await
        .unwrap();
    }
    leave(client, eventloop).await;
}

/// MQTT-3.1.2-4, -5, 3.2.2.2: clean session 0 keeps the session after the connection: QoS 1
/// messages for its subscriptions are queued and delivered when it comes back (Session Present).
#[tokio::test]
async fn mqtt_3_1_2_5_clean_session_0_queues_messages_while_offline() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (client, mut eventloop, _) = device(&server, &ca, "keeper", false).await;
    subscribe_v4(&client, &mut eventloop, "queue/t", QoS::AtLeastOnce).await;
    leave(client, eventloop).await;

    publish_once(&server, &ca, "pub", "queue/t", QoS::AtLeastOnce).await;

    let (_client, mut eventloop, present) = device(&server, &ca, "keeper", false).await;
    assert!(present, "the session was not kept");
    let got = next_publish_v4(&mut eventloop).await.unwrap();
    assert_eq!(got.topic, "queue/t");
}

/// MQTT-3.1.2-6: clean session 1 discards a stored session and keeps none afterwards.
#[tokio::test]
async fn mqtt_3_1_2_6_clean_session_1_discards_the_session() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (client, mut eventloop, _) = device(&server, &ca, "fresh", false).await;
    subscribe_v4(&client, &mut eventloop, "queue/t", QoS::AtLeastOnce).await;
    leave(client, eventloop).await;
    let (client, eventloop, present) = device(&server, &ca, "fresh", true).await;
    assert!(!present);
    leave(client, eventloop).await;
    let (_client, _eventloop, present) = device(&server, &ca, "fresh", false).await;
    assert!(!present, "a clean session left its state behind");
}

/// MQTT-3.8.4-6, 3.3.5: a message is delivered at the lower of its publish QoS and the QoS
/// granted to the subscription.
#[tokio::test]
async fn mqtt_3_8_4_6_delivery_at_the_lower_qos() {
    let (server, ca) = TestServer::start_open_org(ORG).await;
    let (client, mut eventloop, _) = device(&server, &ca, "sub", true).await;
    subscribe_v4(&client, &mut eventloop, "qos/t", QoS::ExactlyOnce).await;
    let mut inbox = drive_v4(eventloop);
    publish_once(&server, &ca, "pub0", "qos/t", QoS::AtMostOnce).await;
    assert_eq!(step(inbox.recv()).await.unwrap().qos, QoS::AtMostOnce);
    publish_once(&server, &ca, "pub1", "qos/t", QoS::AtLeastOnce).await;
    assert_eq!(step(inbox.recv()).await.unwrap().qos, QoS::AtLeastOnce);
    publish_once(&server, &ca, "pub2", "qos/t", QoS::ExactlyOnce).await;
    assert_eq!(step(inbox.recv()).await.unwrap().qos, QoS::ExactlyOnce);
}

/// MQTT-3.3.5-2: a PUBLISH the server does not authorize is either acknowledged or the
/// connection closed. With `mqtts.refused_publish_v311 = "acknowledge"` it is acknowledged at its
/// QoS (PUBACK, the whole QoS 2 flow), reaches no subscriber, and the connection goes on.
#[tokio::test]
async fn mqtt_3_3_5_2_a_refused_publish_may_be_acknowledged() {
    let server = TestServer::start_with(|c| c.mqtts.acknowledge_refused_v311 = true).await;
    server.create_open_org(ORG).await;
    let ca = TestCa::root("acme devices CA");
    server.upload_ca(ORG, &ca).await;
    let (sub, mut sub_loop, _) = device(&server, &ca, "sub", true).await;
    subscribe_v4(&sub, &mut sub_loop, "#", QoS::AtLeastOnce).await;
    let mut inbox = drive_v4(sub_loop);

    let (publisher, mut eventloop, _) = device(&server, &ca, "pub", true).await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher.publish("$SYS/x", qos, false, "no").await.unwrap();
        next_v4(&mut eventloop, |p| {
            matches!(p, rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_)).then_some(())
        })
        .await
        .expect("acknowledged, and the connection goes on");
    }
    publisher
        .publish("ok/t", QoS::AtLeastOnce, false, "yes")
        .await
        .unwrap();
    next_v4(&mut eventloop, |p| {
        matches!(p, rumqttc::Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap();
    let got = step(inbox.recv()).await.unwrap();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("ok/t", &b"yes"[..])
    );
}
