//! Session life: one session per client id (a newer one takes over), fast reconnects with the
//! same client id, will messages on abrupt loss, and 3.1.1 ⇄ 5 translation both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::clients::*;
use common::mqtt::*;
use common::*;
use rumqttc::QoS;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SNI: &str = "acme.messaging.localhost";

#[tokio::test]
async fn a_newer_session_takes_the_client_id_over() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;

    let (_first, mut first_loop, _) = connect_v5(v5_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let first_end = tokio::spawn(async move {
        loop {
            if let Err(error) = first_loop.poll().await {
                return error;
            }
        }
    });
    let (second, second_loop) = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    // The older session ends (rumqttc reads the EOF before the DISCONNECT it sees with it; the
    // reason code is checked byte by byte in the next test).
    step(first_end).await.unwrap();
    // The newer session works.
    let mut second_loop = second_loop;
    let codes = subscribe_v4(
        &second,
        &mut second_loop,
        "iot-2/cmd/+/fmt/+",
        QoS::AtMostOnce,
    )
    .await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
}

#[tokio::test]
async fn taken_over_mqtt5_session_reads_disconnect_0x8e() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let mut first = server.tls(SNI, Some(&cert)).await.unwrap();
    first
        .write_all(&raw::connect(5, "d:acme:sensor:dev1", true, 30))
        .await
        .unwrap();
    let mut head = [0u8; 2];
    step(first.read_exact(&mut head)).await.unwrap();
    let mut rest = vec![0u8; head[1] as usize];
    step(first.read_exact(&mut rest)).await.unwrap();
    let mut second = server.tls(SNI, Some(&cert)).await.unwrap();
    second
        .write_all(&raw::connect(5, "d:acme:sensor:dev1", true, 30))
        .await
        .unwrap();
    let answer = raw::read_to_close(&mut first).await;
    assert_eq!(&answer[..], &[0xE0, 0x01, 0x8E], "{answer:?}");
}

#[tokio::test]
async fn fast_reconnects_with_the_same_client_id_all_connect() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:flappy", &[]);
    // Each connection drops without DISCONNECT right after its CONNACK: what a flapping link does.
    for round in 0..20 {
        let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
        tls.write_all(&raw::connect(4, "d:acme:sensor:flappy", round % 2 == 0, 30))
            .await
            .unwrap();
        let mut connack = [0u8; 4];
        step(tls.read_exact(&mut connack)).await.unwrap();
        assert_eq!(connack[3], 0, "round {round}: refused with {}", connack[3]);
    }
}

#[tokio::test]
async fn disconnect_then_close_churn_never_refuses_later_connections() {
    // rumqttd reports a connection gone twice when a DISCONNECT is followed at once by the end of
    // the stream, and the second report can tear down an unrelated connection that reused its
    // slab index (seen as CONNACK 0x03 for about 1 % of connections under churn). Sixteen workers,
    // each reconnecting with its own client id and with a shared one.
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let server = std::sync::Arc::new(server);
    let mut workers = Vec::new();
    for worker in 0..16 {
        let server = server.clone();
        let cert = ca.client(&format!("d:sensor:w{worker}"), &["d:sensor:shared"]);
        workers.push(tokio::spawn(async move {
            for round in 0..50 {
                let id = if round % 3 == 0 {
                    "d:acme:sensor:shared".to_owned()
                } else {
                    format!("d:acme:sensor:w{worker}")
                };
                let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
                tls.write_all(&raw::connect(4, &id, true, 30))
                    .await
                    .unwrap();
                let mut connack = [0u8; 4];
                step(tls.read_exact(&mut connack)).await.unwrap();
                assert_eq!(connack[3], 0, "worker {worker} round {round}");
                tls.write_all(&[0xE0, 0x00]).await.unwrap();
                drop(tls);
            }
        }));
    }
    for worker in workers {
        step(worker).await.unwrap();
    }
}

#[tokio::test]
async fn will_message_is_published_when_a_device_vanishes() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (_app, mut inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "a:ops",
        "iot-2/type/+/id/+/evt/+/fmt/+",
    )
    .await;

    // Raw CONNECT with a will (3.1.1), then the connection is dropped without DISCONNECT.
    let cert = ca.client("d:sensor:dev9", &[]);
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    let mut body = raw::string("MQTT");
    body.extend_from_slice(&[4, 0x02 | 0x04 | 0x08, 0, 30]); // clean, will flag, will QoS 1
    body.extend(raw::string("d:acme:sensor:dev9"));
    body.extend(raw::string("iot-2/evt/status/fmt/txt"));
    body.extend(raw::string("offline"));
    tls.write_all(&raw::packet(0x10, &body)).await.unwrap();
    let mut connack = [0u8; 4];
    step(tls.read_exact(&mut connack)).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    drop(tls);

    let will = step(inbox.recv()).await.unwrap();
    assert_eq!(will.topic, "iot-2/type/sensor/id/dev9/evt/status/fmt/txt");
    assert_eq!(&will.payload[..], b"offline");
}

/// An MQTT 5 CONNECT of dev9 with a QoS 1 will on `evt/status` (payload "offline"), the given
/// session expiry and will delay (seconds).
fn connect_v5_with_will(clean: bool, session_expiry: u32, will_delay: u32) -> Vec<u8> {
    let mut body = raw::string("MQTT");
    body.push(5);
    body.push(if clean { 0x02 } else { 0x00 } | 0x04 | 0x08); // will flag, will QoS 1
    body.extend_from_slice(&30u16.to_be_bytes());
    body.extend_from_slice(&[5, 0x11]); // properties: session expiry interval
    body.extend_from_slice(&session_expiry.to_be_bytes());
    body.extend(raw::string("d:acme:sensor:dev9"));
    body.extend_from_slice(&[5, 0x18]); // will properties: will delay interval
    body.extend_from_slice(&will_delay.to_be_bytes());
    body.extend(raw::string("iot-2/evt/status/fmt/txt"));
    body.extend(raw::string("offline"));
    raw::packet(0x10, &body)
}

/// dev9 connected with `connect`; the CONNACK checked.
async fn dev9(
    server: &TestServer,
    ca: &TestCa,
    connect: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cert = ca.client("d:sensor:dev9", &[]);
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    tls.write_all(connect).await.unwrap();
    let mut header = [0u8; 2];
    step(tls.read_exact(&mut header)).await.unwrap();
    assert_eq!(header[0], 0x20, "CONNACK");
    let mut body = vec![0u8; usize::from(header[1])];
    step(tls.read_exact(&mut body)).await.unwrap();
    assert_eq!(body[1], 0, "CONNACK reason code");
    tls
}

/// Publishes a marker and checks it is the next message `inbox` gets: nothing (no will) came
/// before it.
async fn next_is_a_marker(
    server: &TestServer,
    ca: &TestCa,
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    failure: &str,
) {
    let probe = publisher_v4(server, ca, "acme", "d:sensor:probe").await;
    probe
        .publish(
            "iot-2/evt/marker/fmt/txt",
            QoS::AtLeastOnce,
            false,
            "marker",
        )
        .await
        .unwrap();
    let next = step(inbox.recv()).await.unwrap();
    assert_eq!(&next.payload[..], b"marker", "{failure}");
    let _ = probe.disconnect().await;
}

#[tokio::test]
async fn mqtt5_disconnect_with_will_message_publishes_the_will_and_a_normal_one_does_not() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (_app, mut inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "a:ops",
        "iot-2/type/+/id/+/evt/+/fmt/+",
    )
    .await;

    let mut tls = dev9(&server, &ca, &connect_v5_with_will(true, 0, 0)).await;
    tls.write_all(&[0xE0, 0x00]).await.unwrap(); // normal disconnection
    raw::read_to_close(&mut tls).await;
    let mut tls = dev9(&server, &ca, &connect_v5_with_will(true, 0, 0)).await;
    tls.write_all(&[0xE0, 0x01, 0x04]).await.unwrap(); // disconnect with will message
    raw::read_to_close(&mut tls).await;

    let will = step(inbox.recv()).await.unwrap();
    assert_eq!(&will.payload[..], b"offline");
    // The first session's will would have arrived first: only one will was published.
    next_is_a_marker(&server, &ca, &mut inbox, "a second will was published").await;
}

#[tokio::test]
async fn mqtt5_will_delay_is_cut_short_by_a_clean_start_and_dropped_by_a_resume() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (_app, mut inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "a:ops",
        "iot-2/type/+/id/+/evt/+/fmt/+",
    )
    .await;

    // Lost with a will delayed by a minute: a clean start of the same client id ends the old
    // session, and its will is published at once.
    drop(dev9(&server, &ca, &connect_v5_with_will(true, 600, 60)).await);
    let tls = dev9(
        &server,
        &ca,
        &raw::connect(5, "d:acme:sensor:dev9", true, 30),
    )
    .await;
    let will = step(inbox.recv()).await.unwrap();
    assert_eq!(&will.payload[..], b"offline");
    drop(tls);

    // Lost again with a 3 s delay, then resumed (clean start 0) within it: no will, ever.
    drop(dev9(&server, &ca, &connect_v5_with_will(true, 600, 3)).await);
    let mut tls = dev9(
        &server,
        &ca,
        &raw::connect(5, "d:acme:sensor:dev9", false, 30),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    tls.write_all(&[0xE0, 0x00]).await.unwrap();
    raw::read_to_close(&mut tls).await;
    next_is_a_marker(
        &server,
        &ca,
        &mut inbox,
        "the resumed session's will was published",
    )
    .await;
}

#[tokio::test]
async fn mqtt5_publisher_reaches_mqtt311_subscriber_with_topic_aliases_resolved() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (_app, mut inbox) = subscribed_v4(
        &server,
        &ca,
        "acme",
        "a:ops",
        "iot-2/type/+/id/+/evt/+/fmt/+",
    )
    .await;

    let dev_addr = server.bridge(SNI, &ca.client("d:sensor:dev5", &[])).await;
    let (device, dev_loop, connack) = connect_v5(v5_options(dev_addr, "d:acme:sensor:dev5"))
        .await
        .unwrap();
    let alias_max = connack
        .properties
        .and_then(|p| p.topic_alias_max)
        .unwrap_or(0);
    assert!(alias_max >= 1, "the front-end offers topic aliases");
    let _dev_inbox = drive_v5(dev_loop);

    // First publish sets alias 1 with its topic, the second uses the alias alone.
    let with_alias = PublishProperties {
        topic_alias: Some(1),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    device
        .publish_with_properties(
            "iot-2/evt/temp/fmt/json",
            QoS5::AtLeastOnce,
            false,
            "1",
            with_alias.clone(),
        )
        .await
        .unwrap();
    device
        .publish_with_properties("", QoS5::AtLeastOnce, false, "2", with_alias)
        .await
        .unwrap();
    for expected in [&b"1"[..], &b"2"[..]] {
        let got = step(inbox.recv()).await.unwrap();
        assert_eq!(got.topic, "iot-2/type/sensor/id/dev5/evt/temp/fmt/json");
        assert_eq!(&got.payload[..], expected);
    }
}

/// Reads one whole MQTT packet (fixed header, remaining length, body) from a raw stream.
async fn read_packet<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut packet = vec![0u8; 1];
    step(stream.read_exact(&mut packet)).await.unwrap();
    let mut length = 0usize;
    for shift in 0..4 {
        let mut byte = [0u8; 1];
        step(stream.read_exact(&mut byte)).await.unwrap();
        packet.push(byte[0]);
        length |= usize::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; length];
    step(stream.read_exact(&mut body)).await.unwrap();
    packet.extend(body);
    packet
}

#[tokio::test]
async fn mqtt5_receive_maximum_is_honoured_although_the_broker_ignores_it() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let app = publisher_v4(&server, &ca, "acme", "a:ops").await;

    // CONNECT v5 with Receive Maximum 1, then SUBSCRIBE QoS 1 to its commands.
    let cert = ca.client("d:sensor:slow", &[]);
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    let mut body = raw::string("MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60]);
    body.extend_from_slice(&[3, 0x21, 0, 1]); // properties: Receive Maximum = 1
    body.extend(raw::string("d:acme:sensor:slow"));
    tls.write_all(&raw::packet(0x10, &body)).await.unwrap();
    let connack = read_packet(&mut tls).await;
    assert_eq!((connack[0], connack[3]), (0x20, 0), "{connack:?}");
    let mut body = vec![0, 1, 0]; // packet id 1, no properties
    body.extend(raw::string("iot-2/cmd/+/fmt/+"));
    body.push(1); // QoS 1
    tls.write_all(&raw::packet(0x82, &body)).await.unwrap();
    let suback = read_packet(&mut tls).await;
    assert_eq!(suback[0], 0x90);

    for n in 0..3u8 {
        app.publish(
            "iot-2/type/sensor/id/slow/cmd/go/fmt/txt",
            QoS::AtLeastOnce,
            false,
            vec![n],
        )
        .await
        .unwrap();
    }
    for n in 0..3u8 {
        let publish = read_packet(&mut tls).await;
        assert_eq!(publish[0] & 0xf0, 0x30, "PUBLISH expected: {publish:?}");
        assert_eq!(publish.last(), Some(&n), "in order");
        // Nothing more may arrive before this one is acknowledged.
        let mut extra = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(300), tls.read(&mut extra)).await;
        assert!(
            early.is_err(),
            "a second delivery exceeded Receive Maximum 1"
        );
        // PUBACK the delivery's packet id (after topic: 2 + len bytes).
        let topic_len = usize::from(u16::from_be_bytes([publish[2], publish[3]]));
        let id = &publish[4 + topic_len..6 + topic_len];
        tls.write_all(&[0x40, 0x02, id[0], id[1]]).await.unwrap();
    }
}

#[tokio::test]
async fn the_event_stream_shows_connects_disconnects_and_refusals_with_their_reason() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let mut response = reqwest::Client::new()
        .get(server.url("/api/v1/orgs/acme/events"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    // Refused at CONNECT: a client id the certificate does not claim.
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    refused_v4(v4_options(addr, "d:acme:sensor:someone-else")).await;
    // Refused at the handshake: a certificate of another CA, naming acme.
    let stranger = TestCa::root("stranger");
    let _ = server
        .tls(SNI, Some(&stranger.client("d:sensor:dev9", &[])))
        .await;
    // A session that connects and ends.
    let (client, _eventloop) = connected_v4(&server, &ca, "acme", "d:sensor:dev2").await;
    client.disconnect().await.unwrap();
    drop(_eventloop);

    let seen = read_events(&mut response, |s| {
        s.contains("identity_mismatch")
            && s.contains("unknown_ca")
            && s.contains("event: disconnect")
    })
    .await;
    assert!(seen.contains("event: refused"), "{seen}");
    assert!(seen.contains("event: connect\ndata:"), "{seen}");
    let connect = seen
        .lines()
        .skip_while(|l| *l != "event: connect")
        .nth(1)
        .unwrap()
        .trim_start_matches("data: ")
        .to_owned();
    let connect: serde_json::Value = serde_json::from_str(&connect).unwrap();
    assert_eq!(connect["client_id"], "d:acme:sensor:dev2");
    assert_eq!(connect["identity"], "d:sensor:dev2");
    assert!(connect["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    // A refusal says where, and at CONNECT which certificate.
    let refusals: Vec<serde_json::Value> = seen
        .split("event: refused\ndata: ")
        .skip(1)
        .map(|rest| serde_json::from_str(rest.lines().next().unwrap()).unwrap())
        .collect();
    let at_connect = refusals
        .iter()
        .find(|r| r["reason"] == "identity_mismatch")
        .unwrap();
    assert_eq!(at_connect["stage"], "connect");
    assert_eq!(at_connect["sni"], SNI);
    assert_eq!(at_connect["identity"], "d:sensor:dev1");
    assert_eq!(at_connect["fingerprint_sha256"].as_str().unwrap().len(), 64);
    let at_handshake = refusals
        .iter()
        .find(|r| r["reason"] == "unknown_ca")
        .unwrap();
    assert_eq!(at_handshake["stage"], "tls");
    assert!(at_handshake["fingerprint_sha256"].is_null());
}

#[tokio::test]
async fn the_device_registry_records_each_identity_with_its_certificate() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let addr = server.bridge(SNI, &cert).await;
    let (first, _first_loop) = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let (_gateway, _gateway_loop) = connected_v4(&server, &ca, "acme", "g:gw:gate1").await;
    let (_app, _app_loop) = connected_v4(&server, &ca, "acme", "a:ops").await;

    let list = |query: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server
                .api("GET", &format!("/api/v1/orgs/acme/devices{query}"), None)
                .await;
            assert_eq!(status, 200, "{body}");
            body["items"].as_array().unwrap().clone()
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            list("").await.len() == 3
        })
        .await,
        "the registry was not written behind within seconds"
    );
    let sensors = list("?type=sensor").await;
    assert_eq!(sensors.len(), 1);
    let dev1 = &sensors[0];
    assert_eq!(dev1["identity"], "d:sensor:dev1");
    assert_eq!(dev1["ca_id"], ca_id.as_str());
    assert_eq!(
        dev1["fingerprint_sha256"],
        portcullis::pki::fingerprint_sha256(&cert.chain[0]).as_str()
    );
    assert_eq!(list("?type=gw").await[0]["identity"], "g:gw:gate1");
    assert_eq!(list("?id_prefix=dev").await.len(), 1);
    assert_eq!(list("?id_prefix=gate&type=gw").await.len(), 1);
    // Issued for 30 days: none expires within a day, all within a year.
    assert!(list("?expires_before=2000-01-01T00:00:00Z")
        .await
        .is_empty());
    assert_eq!(list("?expires_before=2999-01-01T00:00:00Z").await.len(), 3);
    assert!(list("?seen_after=2999-01-01T00:00:00Z").await.is_empty());

    // The same certificate again is the same device, seen later.
    first.disconnect().await.unwrap();
    let addr = server.bridge(SNI, &cert).await;
    let _again = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let first_seen = dev1["first_seen"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let now = list("?type=sensor").await;
            let rfc3339 = |s: &str| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .unwrap()
            };
            now.len() == 1 && rfc3339(now[0]["last_seen"].as_str().unwrap()) > rfc3339(&first_seen)
        })
        .await,
        "the second sighting did not update last_seen"
    );
}

#[tokio::test]
async fn the_expiring_view_lists_every_kind_of_certificate_in_its_window() {
    let server = TestServer::start().await;
    // The device CA is valid a year, device certificates 30 days, generated server
    // certificates a year, signing certificates two years.
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let (_device, _device_loop) = connected_v4(&server, &ca, "acme", "d:sensor:dev1").await;
    let (status, server_cert) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(serde_json::json!({"dns_name": SNI, "key_type": "ecdsa-p256"})),
        )
        .await;
    assert_eq!(status, 201);
    let expiring = |days: u32| {
        let server = &server;
        async move {
            let (status, body) = server
                .api(
                    "GET",
                    &format!("/api/v1/orgs/acme/expiring?within_days={days}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap().to_owned(),
                        e["id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            expiring(31).await.len() == 1
        })
        .await,
        "the device's certificate (30 days) is not listed"
    );
    assert_eq!(expiring(31).await[0].0, "device");
    assert!(expiring(20).await.is_empty());
    let year = expiring(400).await;
    let kinds: Vec<&str> = year.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["device", "ca", "server"],
        "soonest first, signing (2 years) left out"
    );
    assert!(year.contains(&("ca".to_owned(), ca_id)));
    assert!(year.contains(&(
        "server".to_owned(),
        server_cert["id"].as_str().unwrap().to_owned()
    )));
    assert_eq!(expiring(800).await.len(), 4);
    let (status, body) = server
        .api("GET", "/api/v1/orgs/acme/expiring?within_days=0", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_within_days"))
    );
}
