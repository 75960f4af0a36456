//! Tenant isolation from the attacker's side: nothing crosses from one org to another, and inside
//! an org a device reaches only its own topics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::clients::*;
use common::mqtt::*;
use common::*;
use rumqttc::{QoS, SubscribeReasonCode};

/// After `control` arrives, waits a little longer and returns every topic received.
async fn topics_until_control(
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    control: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let publish = step(inbox.recv()).await.unwrap();
        let done = publish.topic == control;
        seen.push(publish.topic);
        if done {
            break;
        }
    }
    while let Ok(Some(publish)) =
        tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await
    {
        seen.push(publish.topic);
    }
    seen
}

#[tokio::test]
async fn events_never_cross_orgs_either_way() {
    let server = TestServer::start().await;
    let (acme_ca, _) = server.org_with_ca("acme").await;
    let (beta_ca, _) = server.org_with_ca("beta").await;
    let all_events = "iot-2/type/+/id/+/evt/+/fmt/+";
    let (_acme_app, mut acme_inbox) =
        subscribed_v4(&server, &acme_ca, "acme", "a:watch", all_events).await;
    let (_beta_app, mut beta_inbox) =
        subscribed_v4(&server, &beta_ca, "beta", "a:watch", all_events).await;
    // The same device type and id in both orgs.
    let acme_dev = publisher_v4(&server, &acme_ca, "acme", "d:sensor:dev1").await;
    let beta_dev = publisher_v4(&server, &beta_ca, "beta", "d:sensor:dev1").await;

    beta_dev
        .publish("iot-2/evt/secret/fmt/json", QoS::AtLeastOnce, false, "beta")
        .await
        .unwrap();
    acme_dev
        .publish("iot-2/evt/secret/fmt/json", QoS::AtLeastOnce, false, "acme")
        .await
        .unwrap();
    acme_dev
        .publish("iot-2/evt/control/fmt/json", QoS::AtLeastOnce, false, "")
        .await
        .unwrap();
    beta_dev
        .publish("iot-2/evt/control/fmt/json", QoS::AtLeastOnce, false, "")
        .await
        .unwrap();

    let control = "iot-2/type/sensor/id/dev1/evt/control/fmt/json";
    let secret = "iot-2/type/sensor/id/dev1/evt/secret/fmt/json";
    let acme_seen = topics_until_control(&mut acme_inbox, control).await;
    let beta_seen = topics_until_control(&mut beta_inbox, control).await;
    assert_eq!(
        acme_seen.iter().filter(|t| *t == secret).count(),
        1,
        "{acme_seen:?}"
    );
    assert_eq!(
        beta_seen.iter().filter(|t| *t == secret).count(),
        1,
        "{beta_seen:?}"
    );
}

#[tokio::test]
async fn open_org_cannot_reach_into_another_orgs_namespace() {
    let server = TestServer::start().await;
    let (acme_ca, _) = server.org_with_ca("acme").await;
    server.create_open_org("evil").await;
    let evil_ca = TestCa::root("evil CA");
    server.upload_ca("evil", &evil_ca).await;

    let (_victim, mut victim_inbox) = subscribed_v4(
        &server,
        &acme_ca,
        "acme",
        "d:sensor:dev1",
        "iot-2/cmd/+/fmt/+",
    )
    .await;
    let (evil, mut evil_loop) = connected_v4(&server, &evil_ca, "evil", "d:x:mallory").await;
    // Everything the open policy lets it see is its own org's.
    let codes = subscribe_v4(&evil, &mut evil_loop, "#", QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let mut evil_inbox = drive_v4(evil_loop);

    // Topics spelled like the broker's internal names land under evil's own prefix.
    evil.publish(
        "acme/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
        QoS::AtLeastOnce,
        false,
        "pwned",
    )
    .await
    .unwrap();

    // acme traffic: the victim gets its command, evil sees none of it.
    let app = publisher_v4(&server, &acme_ca, "acme", "a:ops").await;
    app.publish(
        "iot-2/type/sensor/id/dev1/cmd/control/fmt/json",
        QoS::AtLeastOnce,
        false,
        "",
    )
    .await
    .unwrap();

    let seen = topics_until_control(&mut victim_inbox, "iot-2/cmd/control/fmt/json").await;
    assert!(
        !seen.iter().any(|t| t.contains("reboot")),
        "victim received an injected command: {seen:?}"
    );
    // evil receives its own publish (under its namespace, shown without prefix) and nothing of acme's.
    let own = step(evil_inbox.recv()).await.unwrap();
    assert_eq!(
        own.topic,
        "acme/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json"
    );
    while let Ok(Some(p)) =
        tokio::time::timeout(Duration::from_millis(300), evil_inbox.recv()).await
    {
        assert!(
            !p.topic.contains("control"),
            "evil saw acme traffic: {}",
            p.topic
        );
    }
}

#[tokio::test]
async fn device_reaches_only_its_own_topics() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let sni = "acme.messaging.localhost";
    let addr = server.bridge(sni, &ca.client("d:sensor:dev1", &[])).await;
    let (device, mut device_loop) = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    for filter in [
        "#",
        "+/#",
        "$SYS/#",
        "iot-2/type/sensor/id/dev2/cmd/+/fmt/+",
        "iot-2/type/+/id/+/evt/+/fmt/+",
        "$share/g/iot-2/cmd/+/fmt/+",
        "acme/iot-2/type/sensor/id/dev2/cmd/+/fmt/+",
        "iot-2/cmd/#",
    ] {
        let codes = subscribe_v4(&device, &mut device_loop, filter, QoS::AtMostOnce).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Failure], "{filter}");
    }
    // Mixed: the allowed filter is granted, the other refused, in place.
    device
        .subscribe_many([
            rumqttc::SubscribeFilter::new(
                "iot-2/type/sensor/id/dev2/cmd/+/fmt/+".into(),
                QoS::AtMostOnce,
            ),
            rumqttc::SubscribeFilter::new("iot-2/cmd/+/fmt/+".into(), QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    let codes = next_v4(&mut device_loop, |p| match p {
        rumqttc::Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );

    // Publishing as another device: MQTT 3.1.1 closes the connection.
    device
        .publish(
            "iot-2/type/sensor/id/dev2/evt/x/fmt/json",
            QoS::AtLeastOnce,
            false,
            "",
        )
        .await
        .unwrap();
    let closed = next_v4(&mut device_loop, |_| None::<()>).await;
    assert!(
        closed.is_err(),
        "connection must close after a refused publish"
    );
}

#[tokio::test]
async fn refused_publish_mqtt5_gets_puback_0x87_and_the_session_goes_on() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server
        .bridge("acme.messaging.localhost", &ca.client("d:sensor:dev1", &[]))
        .await;
    let (device, mut device_loop, _) = connect_v5(v5_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    // Refused, then a permitted publish on the same connection: it goes on.
    for (topic, expected) in [
        (
            "iot-2/type/sensor/id/dev2/evt/x/fmt/json",
            PubAckReason::NotAuthorized,
        ),
        ("iot-2/evt/ok/fmt/json", PubAckReason::Success),
    ] {
        device
            .publish(topic, QoS5::AtLeastOnce, false, "")
            .await
            .unwrap();
        let reason = next_v5(&mut device_loop, |p| match p {
            Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await
        .unwrap();
        assert_eq!(reason, expected, "{topic}");
    }
}
