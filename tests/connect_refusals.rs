//! Every CONNECT refusal of DESIGN §3 is answered with its CONNACK code, never a silent close.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mqtt::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code5;
use rumqttc::ConnectReturnCode as Code4;

const SNI: &str = "acme.messaging.localhost";

#[tokio::test]
async fn malformed_client_id_is_identifier_rejected() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    for bad in [
        "sensor-1",
        "d:acme:sensor",
        "x:acme:sensor:dev1",
        "d:ACME:sensor:dev1",
    ] {
        assert_eq!(
            refused_v4(v4_options(addr, bad)).await,
            Code4::BadClientId,
            "{bad}"
        );
        assert_eq!(
            refused_v5(v5_options(addr, bad)).await,
            Code5::ClientIdentifierNotValid,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn other_org_in_client_id_is_not_authorized() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    server.create_org("other").await;
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    assert_eq!(
        refused_v4(v4_options(addr, "d:other:sensor:dev1")).await,
        Code4::NotAuthorized
    );
    assert_eq!(
        refused_v5(v5_options(addr, "d:other:sensor:dev1")).await,
        Code5::NotAuthorized
    );
}

#[tokio::test]
async fn identity_not_in_certificate_is_not_authorized() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &["g:edge:gw1"]);
    let addr = server.bridge(SNI, &cert).await;
    for impostor in ["d:acme:sensor:dev2", "a:acme:dev1", "g:acme:edge:gw2"] {
        assert_eq!(
            refused_v4(v4_options(addr, impostor)).await,
            Code4::NotAuthorized
        );
        assert_eq!(
            refused_v5(v5_options(addr, impostor)).await,
            Code5::NotAuthorized
        );
    }
    // Both identities the certificate claims (CN and SAN email) bind.
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    connect_v4(v4_options(addr, "g:acme:edge:gw1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn certificate_with_org_in_cn_claims_nothing() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server
        .bridge(SNI, &ca.client("d:acme:sensor:dev1", &[]))
        .await;
    assert_eq!(
        refused_v4(v4_options(addr, "d:acme:sensor:dev1")).await,
        Code4::NotAuthorized
    );
}

#[tokio::test]
async fn empty_client_id_rules() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let one = ca.client("d:sensor:dev1", &[]);
    let two = ca.client("d:sensor:dev1", &["a:app1"]);

    // 3.1.1, clean session 0, empty id: 0x02 as the spec says.
    let mut tls = server.tls(SNI, Some(&one)).await.unwrap();
    let answer = raw::exchange(&mut tls, &raw::connect(4, "", false, 30)).await;
    assert_eq!(raw::connack_code(&answer), Some(0x02));

    // 3.1.1, clean session 1, one identity: accepted.
    let mut tls = server.tls(SNI, Some(&one)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(&raw::connect(4, "", true, 30)).await.unwrap();
    let mut connack = [0u8; 4];
    step(tls.read_exact(&mut connack)).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);

    // MQTT 5, two identities: ambiguous, 0x85.
    let mut tls = server.tls(SNI, Some(&two)).await.unwrap();
    let answer = raw::exchange(&mut tls, &raw::connect(5, "", true, 30)).await;
    assert_eq!(raw::connack_code(&answer), Some(0x85));
}

#[tokio::test]
async fn will_topic_outside_the_policy_is_refused() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;

    let mut options = v4_options(addr, "d:acme:sensor:dev1");
    options.set_last_will(rumqttc::LastWill::new(
        "iot-2/type/sensor/id/dev2/evt/x/fmt/json",
        "gone",
        rumqttc::QoS::AtMostOnce,
        false,
    ));
    assert_eq!(refused_v4(options).await, Code4::NotAuthorized);

    let mut options = v5_options(addr, "d:acme:sensor:dev1");
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "$SYS/x",
        "gone",
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        false,
        None,
    ));
    assert_eq!(refused_v5(options).await, Code5::TopicNameInvalid);

    // An allowed will topic connects.
    let mut options = v4_options(addr, "d:acme:sensor:dev1");
    options.set_last_will(rumqttc::LastWill::new(
        "iot-2/evt/status/fmt/txt",
        "gone",
        rumqttc::QoS::AtMostOnce,
        false,
    ));
    connect_v4(options).await.unwrap();
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    let answer = raw::exchange(&mut tls, &raw::connect(3, "d:acme:sensor:dev1", true, 30)).await;
    assert_eq!(raw::connack_code(&answer), Some(0x01));
}

#[tokio::test]
async fn full_broker_is_server_unavailable() {
    let server = TestServer::start_with(|config| config.broker.max_connections = 1).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr1 = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let addr2 = server.bridge(SNI, &ca.client("d:sensor:dev2", &[])).await;
    let (_first, first_loop) = connect_v4(v4_options(addr1, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let _inbox = drive_v4(first_loop);
    assert_eq!(
        refused_v4(v4_options(addr2, "d:acme:sensor:dev2")).await,
        Code4::ServiceUnavailable
    );
    let code = refused_v5(v5_options(addr2, "d:acme:sensor:dev2")).await;
    assert!(
        matches!(code, Code5::ServerUnavailable | Code5::ServerBusy),
        "{code:?}"
    );
}
