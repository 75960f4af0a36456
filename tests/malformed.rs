//! Bad input from the network: each case ends with the connection closed cleanly (with a reason
//! where MQTT 5 has one), and the server goes on serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::mqtt::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SNI: &str = "acme.messaging.localhost";

/// A TLS session past a successful CONNECT at `level`.
async fn connected(
    server: &TestServer,
    cert: &ClientCert,
    level: u8,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = server.tls(SNI, Some(cert)).await.unwrap();
    tls.write_all(&raw::connect(level, "d:acme:sensor:dev1", true, 30))
        .await
        .unwrap();
    let mut head = [0u8; 2];
    step(tls.read_exact(&mut head)).await.unwrap();
    assert_eq!(head[0], 0x20, "CONNACK expected");
    let mut rest = vec![0u8; head[1] as usize];
    step(tls.read_exact(&mut rest)).await.unwrap();
    assert_eq!(rest[1], 0, "CONNECT accepted");
    tls
}

fn publish(topic: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.extend_from_slice(b"payload");
    raw::packet(0x30, &body)
}

/// The server still serves a well-behaved device.
async fn still_serving(server: &TestServer, cert: &ClientCert) {
    let addr = server.bridge(SNI, cert).await;
    let (client, mut eventloop) = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let codes = subscribe_v4(
        &client,
        &mut eventloop,
        "iot-2/cmd/+/fmt/+",
        rumqttc::QoS::AtMostOnce,
    )
    .await;
    assert_eq!(codes.len(), 1);
}

#[tokio::test]
async fn malformed_packets_after_connect_close_the_connection() {
    let server = TestServer::start_with(|config| config.mqtts.max_packet_size = 4096).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "remaining length over 4 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        ("oversized packet", {
            let mut bytes = vec![0x30];
            bytes.extend(raw::remaining_length(1_000_000));
            bytes
        }),
        ("invalid UTF-8 topic", publish(&[0xC3, 0x28])),
        ("NUL in topic", publish(b"iot-2/evt/a\0/fmt/json")),
        (
            "wildcard in a publish topic",
            publish(b"iot-2/evt/+/fmt/json"),
        ),
        ("QoS 3 publish", {
            let mut bytes = publish(b"iot-2/evt/a/fmt/json");
            bytes[0] = 0x36;
            bytes
        }),
        ("CONNACK from a client", vec![0x20, 0x02, 0x00, 0x00]),
        ("SUBACK from a client", vec![0x90, 0x03, 0x00, 0x01, 0x00]),
        ("PINGRESP from a client", vec![0xD0, 0x00]),
        (
            "second CONNECT",
            raw::connect(4, "d:acme:sensor:dev1", true, 30),
        ),
        ("reserved packet type 0", vec![0x00, 0x00]),
        ("reserved packet type 15 in 3.1.1", vec![0xF0, 0x00]),
        (
            "SUBSCRIBE with bad flags",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        ),
        ("SUBSCRIBE without filters", vec![0x82, 0x02, 0x00, 0x01]),
        (
            "packet id 0",
            vec![0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        ),
        ("PUBACK with remaining length 1", vec![0x40, 0x01, 0x00]),
    ];
    for (name, bytes) in cases {
        let mut tls = connected(&server, &cert, 4).await;
        let answer = raw::exchange(&mut tls, &bytes).await;
        // 3.1.1 has no DISCONNECT from the server: the connection just closes.
        assert!(answer.is_empty(), "{name}: unexpected answer {answer:?}");
    }
    still_serving(&server, &cert).await;
}

#[tokio::test]
async fn mqtt5_client_is_told_why() {
    let server = TestServer::start_with(|config| config.mqtts.max_packet_size = 4096).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "oversized",
            {
                let mut bytes = vec![0x30];
                bytes.extend(raw::remaining_length(1_000_000));
                bytes
            },
            0x95,
        ),
        ("server-only packet", vec![0xD0, 0x00], 0x82),
    ];
    for (name, bytes, reason) in cases {
        let mut tls = connected(&server, &cert, 5).await;
        let answer = raw::exchange(&mut tls, &bytes).await;
        assert_eq!(
            answer.first(),
            Some(&0xE0),
            "{name}: DISCONNECT expected, got {answer:?}"
        );
        assert_eq!(answer.get(2), Some(&reason), "{name}: {answer:?}");
    }
    still_serving(&server, &cert).await;
}

#[tokio::test]
async fn bad_first_packets_are_closed() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PUBLISH before CONNECT", publish(b"iot-2/evt/a/fmt/json")),
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "truncated CONNECT",
            raw::connect(4, "d:acme:sensor:dev1", true, 30)[..8].to_vec(),
        ),
        ("CONNECT with reserved flag", {
            let mut bytes = raw::connect(4, "d:acme:sensor:dev1", true, 30);
            bytes[9] |= 0x01;
            bytes
        }),
    ];
    for (name, bytes) in cases {
        let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
        tls.write_all(&bytes).await.unwrap();
        if name == "truncated CONNECT" {
            // The rest never comes: the CONNECT deadline closes it.
            tls.shutdown().await.unwrap();
        }
        let answer = raw::read_to_close(&mut tls).await;
        assert!(
            raw::connack_code(&answer).is_none_or(|code| code != 0),
            "{name}: accepted?"
        );
    }
    still_serving(&server, &cert).await;
}

#[tokio::test]
async fn silent_peers_are_cut_by_deadlines() {
    let server = TestServer::start_with(|config| {
        config.mqtts.handshake_timeout = Duration::from_millis(300);
        config.mqtts.connect_timeout = Duration::from_millis(300);
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);

    // TCP only, no ClientHello.
    let mut tcp = tokio::net::TcpStream::connect(server.mqtts).await.unwrap();
    let answer = raw::read_to_close(&mut tcp).await;
    assert!(answer.is_empty());

    // TLS done, no CONNECT.
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    let answer = raw::read_to_close(&mut tls).await;
    assert!(answer.is_empty());

    // A keep-alive of 1 s, then silence: closed after 1.5 s.
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    tls.write_all(&raw::connect(4, "d:acme:sensor:dev1", true, 1))
        .await
        .unwrap();
    let answer = raw::read_to_close(&mut tls).await;
    assert_eq!(raw::connack_code(&answer), Some(0));
    assert_eq!(answer.len(), 4, "only the CONNACK: {answer:?}");

    still_serving(&server, &cert).await;
}
