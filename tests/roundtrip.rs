//! Messages flow device → application and application → device through the real server, for
//! MQTT 3.1.1 and 5, and a gateway publishes for a device behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::clients::*;
use common::mqtt::*;
use common::*;
use rumqttc::QoS;

const SNI: &str = "acme.messaging.localhost";

#[tokio::test]
async fn device_to_application_and_back_mqtt311() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (app_client, mut app_inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "a:dashboard",
        "iot-2/type/+/id/+/evt/+/fmt/+",
    )
    .await;
    let (dev_client, mut dev_inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "d:sensor:dev1",
        "iot-2/cmd/+/fmt/json",
    )
    .await;

    dev_client
        .publish("iot-2/evt/temp/fmt/json", QoS::AtLeastOnce, false, "21.5")
        .await
        .unwrap();
    let event = step(app_inbox.recv()).await.unwrap();
    assert_eq!(event.topic, "iot-2/type/sensor/id/dev1/evt/temp/fmt/json");
    assert_eq!(&event.payload[..], b"21.5");

    app_client
        .publish(
            "iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    let command = step(dev_inbox.recv()).await.unwrap();
    assert_eq!(command.topic, "iot-2/cmd/reboot/fmt/json");
    assert_eq!(&command.payload[..], b"{}");
}

#[tokio::test]
async fn device_to_application_and_back_mqtt5() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS as QoS5;

    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let device = ca.client("d:sensor:dev1", &[]);
    let app = ca.client("other", &["a:dashboard"]);

    let app_addr = server.bridge(SNI, &app).await;
    let (app_client, mut app_loop, _) = connect_v5(v5_options(app_addr, "a:acme:dashboard"))
        .await
        .unwrap();
    app_client
        .subscribe("iot-2/type/sensor/id/+/evt/+/fmt/+", QoS5::AtLeastOnce)
        .await
        .unwrap();
    let codes = next_v5(&mut app_loop, |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(
        codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            QoS5::AtLeastOnce
        )]
    );

    // Empty client id: derived from the certificate and returned as Assigned Client Identifier.
    let dev_addr = server.bridge(SNI, &device).await;
    let (dev_client, mut dev_loop, connack) = connect_v5(v5_options(dev_addr, "")).await.unwrap();
    let assigned = connack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .unwrap();
    assert_eq!(assigned, "d:acme:sensor:dev1");
    dev_client
        .subscribe("iot-2/cmd/+/fmt/+", QoS5::AtMostOnce)
        .await
        .unwrap();
    next_v5(&mut dev_loop, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await
    .unwrap();
    let mut app_inbox = drive_v5(app_loop);
    let mut dev_inbox = drive_v5(dev_loop);

    dev_client
        .publish("iot-2/evt/temp/fmt/json", QoS5::AtLeastOnce, false, "22")
        .await
        .unwrap();
    let event = recv_v5(&mut app_inbox, |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        &event.topic[..],
        b"iot-2/type/sensor/id/dev1/evt/temp/fmt/json"
    );
    assert_eq!(&event.payload[..], b"22");

    app_client
        .publish(
            "iot-2/type/sensor/id/dev1/cmd/reboot/fmt/txt",
            QoS5::AtMostOnce,
            false,
            "now",
        )
        .await
        .unwrap();
    let command = recv_v5(&mut dev_inbox, |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&command.topic[..], b"iot-2/cmd/reboot/fmt/txt");
    assert_eq!(&command.payload[..], b"now");
}

#[tokio::test]
async fn gateway_publishes_for_a_device_behind_it() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (app_client, mut app_inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "a:backend",
        "iot-2/type/+/id/+/evt/+/fmt/+",
    )
    .await;
    let (gw_client, mut gw_inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "g:edge:gw1",
        "iot-2/type/thermo/id/+/cmd/+/fmt/+",
    )
    .await;

    gw_client
        .publish(
            "iot-2/type/thermo/id/child7/evt/temp/fmt/json",
            QoS::AtLeastOnce,
            false,
            "5",
        )
        .await
        .unwrap();
    let event = step(app_inbox.recv()).await.unwrap();
    assert_eq!(event.topic, "iot-2/type/thermo/id/child7/evt/temp/fmt/json");

    app_client
        .publish(
            "iot-2/type/thermo/id/child7/cmd/set/fmt/json",
            QoS::AtLeastOnce,
            false,
            "6",
        )
        .await
        .unwrap();
    let command = step(gw_inbox.recv()).await.unwrap();
    assert_eq!(
        command.topic,
        "iot-2/type/thermo/id/child7/cmd/set/fmt/json"
    );
}

#[tokio::test]
async fn open_policy_allows_any_topic_inside_the_org() {
    let server = TestServer::start().await;
    server.create_open_org("fleet").await;
    let ca = TestCa::root("fleet CA");
    server.upload_ca("fleet", &ca).await;
    let sni = "fleet.messaging.localhost";
    let a = ca.client("d:car:a", &[]);
    let b = ca.client("d:car:b", &[]);

    let b_addr = server.bridge(sni, &b).await;
    let (b_client, mut b_loop) = connect_v4(v4_options(b_addr, "d:fleet:car:b"))
        .await
        .unwrap();
    let codes = subscribe_v4(&b_client, &mut b_loop, "cars/#", QoS::AtMostOnce).await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    // `$` topics stay refused under `open`.
    let codes = subscribe_v4(&b_client, &mut b_loop, "$SYS/#", QoS::AtMostOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    let mut b_inbox = drive_v4(b_loop);

    let a_addr = server.bridge(sni, &a).await;
    let (a_client, a_loop) = connect_v4(v4_options(a_addr, "d:fleet:car:a"))
        .await
        .unwrap();
    let _a_inbox = drive_v4(a_loop);
    a_client
        .publish("cars/a/position", QoS::AtLeastOnce, false, "1,2")
        .await
        .unwrap();
    let got = step(b_inbox.recv()).await.unwrap();
    assert_eq!(got.topic, "cars/a/position");
}

#[tokio::test]
async fn keep_alive_zero_is_accepted_and_the_session_lives() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let device = ca.client("d:sensor:idle", &[]);
    let app = ca.client("a:watch", &[]);

    let addr = server.bridge(SNI, &device).await;
    let mut options = v4_options(addr, "d:acme:sensor:idle");
    options.set_keep_alive(std::time::Duration::ZERO);
    let (dev_client, mut dev_loop) = connect_v4(options).await.unwrap();
    subscribe_v4(
        &dev_client,
        &mut dev_loop,
        "iot-2/cmd/+/fmt/+",
        QoS::AtMostOnce,
    )
    .await;
    let mut dev_inbox = drive_v4(dev_loop);

    let app_addr = server.bridge(SNI, &app).await;
    let (app_client, app_loop) = connect_v4(v4_options(app_addr, "a:acme:watch"))
        .await
        .unwrap();
    let _app_inbox = drive_v4(app_loop);
    app_client
        .publish(
            "iot-2/type/sensor/id/idle/cmd/ping/fmt/txt",
            QoS::AtLeastOnce,
            false,
            "x",
        )
        .await
        .unwrap();
    let got = step(dev_inbox.recv()).await.unwrap();
    assert_eq!(got.topic, "iot-2/cmd/ping/fmt/txt");
}
