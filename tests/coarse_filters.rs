//! Coarse filters (issue 11, finding 8): a device's own command filters are handed to the broker
//! as one coarse filter per device, and the link delivers only what the device's real filters
//! match, once, at their QoS. Every server here lets the broker hold one distinct filter
//! (`broker.max_filters = 1`): on a broker handed each real filter, the second one is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::clients::*;
use common::mqtt::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode as Code5, UnsubAckReason};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::QoS;

const SNI: &str = "acme.messaging.localhost";
const DEVICE: &str = "d:acme:sensor:dev1";

fn command(name: &str, format: &str) -> String {
    format!("iot-2/cmd/{name}/fmt/{format}")
}

/// What an application publishes to reach the device's command `name`.
fn to_device(name: &str, format: &str) -> String {
    format!("iot-2/type/sensor/id/dev1/cmd/{name}/fmt/{format}")
}

async fn server() -> (TestServer, TestCa) {
    let server = TestServer::start_with(|c| {
        c.broker.max_filters = 1;
        c.mqtts.max_filters_per_session = 1000;
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    (server, ca)
}

type Inbox = tokio::sync::mpsc::UnboundedReceiver<Packet>;

async fn device(
    server: &TestServer,
    ca: &TestCa,
    adjust: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> (rumqttc::v5::AsyncClient, Inbox) {
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let mut options = v5_options(addr, DEVICE);
    adjust(&mut options);
    let (client, eventloop, _) = connect_v5(options).await.unwrap();
    (client, drive_v5(eventloop))
}

async fn subscribe(
    client: &rumqttc::v5::AsyncClient,
    inbox: &mut Inbox,
    filters: &[(String, QoS5)],
) -> Vec<Code5> {
    let filters = filters.iter().map(|(f, q)| Filter::new(f.clone(), *q));
    client.subscribe_many(filters).await.unwrap();
    recv_v5(inbox, |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
}

async fn unsubscribe(
    client: &rumqttc::v5::AsyncClient,
    inbox: &mut Inbox,
    filter: String,
) -> Vec<UnsubAckReason> {
    client.unsubscribe(filter).await.unwrap();
    recv_v5(inbox, |p| match p {
        Packet::UnsubAck(ack) => Some(ack.reasons.clone()),
        _ => None,
    })
    .await
}

/// The next delivery: (topic, QoS, RETAIN, payload).
async fn delivery(inbox: &mut Inbox) -> (String, QoS5, bool, String) {
    recv_v5(inbox, |p| match p {
        Packet::Publish(p) => Some((
            String::from_utf8(p.topic.to_vec()).unwrap(),
            p.qos,
            p.retain,
            String::from_utf8(p.payload.to_vec()).unwrap(),
        )),
        _ => None,
    })
    .await
}

/// Publishes at QoS 1 and waits for the PUBACK, so the broker has the message (and, retained,
/// keeps it) before the test goes on.
async fn publish(
    app: &rumqttc::AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    topic: &str,
    retain: bool,
    payload: &str,
) {
    app.publish(topic, QoS::AtLeastOnce, retain, payload.to_owned())
        .await
        .unwrap();
    next_v4(eventloop, |p| {
        matches!(p, rumqttc::Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn only_matching_filters_get_a_command_once_at_the_lower_qos() {
    let (server, ca) = server().await;
    let (device, mut inbox) = device(&server, &ca, |_| {}).await;
    let filters = [
        (command("a", "json"), QoS5::AtMostOnce),
        (command("+", "json"), QoS5::AtLeastOnce),
        (command("q", "+"), QoS5::AtMostOnce),
    ];
    let codes = subscribe(&device, &mut inbox, &filters).await;
    assert_eq!(
        codes,
        vec![
            Code5::Success(QoS5::AtMostOnce),
            Code5::Success(QoS5::AtLeastOnce),
            Code5::Success(QoS5::AtMostOnce)
        ],
        "three filters, one in the broker"
    );
    let (app, mut app_loop) = connected_v4(&server, &ca, "acme", "a:ops").await;
    for (name, format) in [("x", "xml"), ("a", "json"), ("q", "xml"), ("end", "json")] {
        publish(&app, &mut app_loop, &to_device(name, format), false, name).await;
    }
    // x/xml matches nothing; a/json matches two filters: one copy, at the higher QoS (1);
    // q/xml matches a QoS 0 filter only: QoS 0 though published at 1.
    let got = [
        delivery(&mut inbox).await,
        delivery(&mut inbox).await,
        delivery(&mut inbox).await,
    ];
    let seen: Vec<(&str, QoS5)> = got.iter().map(|(t, q, _, _)| (t.as_str(), *q)).collect();
    assert_eq!(
        seen,
        vec![
            ("iot-2/cmd/a/fmt/json", QoS5::AtLeastOnce),
            ("iot-2/cmd/q/fmt/xml", QoS5::AtMostOnce),
            ("iot-2/cmd/end/fmt/json", QoS5::AtLeastOnce),
        ]
    );
}

#[tokio::test]
async fn unsubscribing_follows_the_real_filters_and_the_last_ends_the_coarse_one() {
    let (server, ca) = server().await;
    let (device, mut inbox) = device(&server, &ca, |_| {}).await;
    let filters = [
        (command("a", "json"), QoS5::AtLeastOnce),
        (command("b", "json"), QoS5::AtLeastOnce),
    ];
    let granted = Code5::Success(QoS5::AtLeastOnce);
    assert_eq!(
        subscribe(&device, &mut inbox, &filters).await,
        vec![granted, granted]
    );
    let (app, mut app_loop) = connected_v4(&server, &ca, "acme", "a:ops").await;

    let codes = unsubscribe(&device, &mut inbox, command("a", "json")).await;
    assert_eq!(codes, vec![UnsubAckReason::Success]);
    publish(&app, &mut app_loop, &to_device("a", "json"), false, "a").await;
    publish(&app, &mut app_loop, &to_device("b", "json"), false, "b").await;
    assert_eq!(delivery(&mut inbox).await.3, "b", "a was unsubscribed");

    let codes = unsubscribe(&device, &mut inbox, command("b", "json")).await;
    assert_eq!(codes, vec![UnsubAckReason::Success]);
    let codes = unsubscribe(&device, &mut inbox, command("b", "json")).await;
    assert_eq!(codes, vec![UnsubAckReason::NoSubscriptionExisted]);
    publish(
        &app,
        &mut app_loop,
        &to_device("b", "json"),
        false,
        "b again",
    )
    .await;
    let codes = subscribe(
        &device,
        &mut inbox,
        &[(command("c", "json"), QoS5::AtLeastOnce)],
    )
    .await;
    assert_eq!(codes, vec![granted]);
    publish(&app, &mut app_loop, &to_device("c", "json"), false, "c").await;
    assert_eq!(
        delivery(&mut inbox).await.3,
        "c",
        "nothing after the last filter left"
    );
}

#[tokio::test]
async fn a_later_filter_under_a_held_coarse_filter_gets_its_retained_messages() {
    let (server, ca) = server().await;
    let (app, mut app_loop) = connected_v4(&server, &ca, "acme", "a:ops").await;
    publish(&app, &mut app_loop, &to_device("r1", "json"), true, "one").await;
    publish(&app, &mut app_loop, &to_device("r2", "json"), true, "two").await;
    let (device, mut inbox) = device(&server, &ca, |_| {}).await;

    let granted = vec![Code5::Success(QoS5::AtLeastOnce)];
    // Two filters under a coarse filter new to the broker: its own first sweep sends r1's
    // retained message, once.
    let first = [
        (command("c", "xml"), QoS5::AtLeastOnce),
        (command("r1", "json"), QoS5::AtLeastOnce),
    ];
    let codes = subscribe(&device, &mut inbox, &first).await;
    assert_eq!(codes, vec![granted[0], granted[0]]);
    let got = delivery(&mut inbox).await;
    assert_eq!((got.2, got.3.as_str()), (true, "one"));
    publish(
        &app,
        &mut app_loop,
        &to_device("r1", "json"),
        false,
        "marker",
    )
    .await;
    let got = delivery(&mut inbox).await;
    assert_eq!(
        (got.2, got.3.as_str()),
        (false, "marker"),
        "r1's retained message twice"
    );

    // The coarse filter is held already: rumqttd would send nothing for a second SUBSCRIBE.
    let later = [(command("r2", "json"), QoS5::AtLeastOnce)];
    assert_eq!(subscribe(&device, &mut inbox, &later).await, granted);
    let got = delivery(&mut inbox).await;
    assert_eq!(
        (got.0.as_str(), got.2, got.3.as_str()),
        ("iot-2/cmd/r2/fmt/json", true, "two")
    );
    publish(&app, &mut app_loop, &to_device("r1", "json"), false, "live").await;
    let got = delivery(&mut inbox).await;
    assert_eq!(
        (got.2, got.3.as_str()),
        (false, "live"),
        "r1's retained message came again"
    );
}

#[tokio::test]
async fn a_device_that_reconnects_reuses_its_coarse_filter_and_a_resumed_session_its_filters() {
    let (server, ca) = server().await;
    let (app, mut app_loop) = connected_v4(&server, &ca, "acme", "a:ops").await;
    let granted = vec![Code5::Success(QoS5::AtLeastOnce)];
    let keep = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(600));
    };

    let (device1, mut inbox) = device(&server, &ca, |_| {}).await;
    let first = [(command("c1", "json"), QoS5::AtLeastOnce)];
    assert_eq!(subscribe(&device1, &mut inbox, &first).await, granted);
    device1.disconnect().await.unwrap();
    drop(inbox);

    // A new connection: its filters go under the coarse filter the broker holds already.
    let (device2, mut inbox) = device(&server, &ca, keep).await;
    let second = [(command("c2", "json"), QoS5::AtLeastOnce)];
    assert_eq!(subscribe(&device2, &mut inbox, &second).await, granted);
    publish(&app, &mut app_loop, &to_device("c2", "json"), false, "c2").await;
    assert_eq!(delivery(&mut inbox).await.3, "c2");
    device2.disconnect().await.unwrap();
    drop(inbox);

    // Away: one command for a filter it holds, one for a filter it does not.
    publish(
        &app,
        &mut app_loop,
        &to_device("c3", "json"),
        false,
        "not mine",
    )
    .await;
    publish(
        &app,
        &mut app_loop,
        &to_device("c2", "json"),
        false,
        "while away",
    )
    .await;
    let (_device3, mut inbox) = device(&server, &ca, keep).await;
    assert_eq!(delivery(&mut inbox).await.3, "while away");
    publish(
        &app,
        &mut app_loop,
        &to_device("c3", "json"),
        false,
        "still not mine",
    )
    .await;
    publish(&app, &mut app_loop, &to_device("c2", "json"), false, "back").await;
    assert_eq!(delivery(&mut inbox).await.3, "back");
}
