//! `broker.mode = "upstream"` against real brokers started by the tests on loopback
//! (`common::engines`): mosquitto 2 as an MQTT 5 upstream, NATS 2.9 (JetStream + MQTT) as an
//! MQTT 3.1.1 upstream. Devices and applications connect through the real server over TLS; a
//! plain client on the broker itself shows what the broker sees (topics under `<org>/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::engines::{self, Engine, NOTICE, PASSWORD, USER};
use common::mqtt::*;
use common::*;
use portcullis::codec::Protocol;
use portcullis::config::{Target, UpstreamConfig};
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as Code5, DisconnectReasonCode as Reason, LastWill, Packet,
};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::{AsyncClient, EventLoop};

const SNI: &str = "acme.messaging.localhost";
type Inbox = tokio::sync::mpsc::UnboundedReceiver<Packet>;

/// A server whose broker is the upstream at `urls`.
async fn server(urls: Vec<String>, protocol: Protocol) -> TestServer {
    server_with(urls, protocol, |_| {}).await
}

async fn server_with(
    urls: Vec<String>,
    protocol: Protocol,
    adjust: impl FnOnce(&mut UpstreamConfig),
) -> TestServer {
    let mut upstream = UpstreamConfig {
        urls: urls.iter().map(|url| Target::parse(url).unwrap()).collect(),
        protocol,
        username: USER.into(),
        password: PASSWORD.into(),
        ca_file: None,
        cert_file: None,
        key_file: None,
    };
    adjust(&mut upstream);
    TestServer::start_with(|config| config.broker.upstream = Some(upstream)).await
}

/// An MQTT 5 client of `identity` in org acme through the server, its options adjusted.
async fn client(
    server: &TestServer,
    ca: &TestCa,
    identity: &str,
    client_id: &str,
    adjust: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> (AsyncClient, Inbox, bool) {
    let addr = server.bridge(SNI, &ca.client(identity, &[])).await;
    let mut options = v5_options(addr, client_id);
    adjust(&mut options);
    let (client, eventloop, connack) = connect_v5(options).await.unwrap();
    (client, drive_v5(eventloop), connack.session_present)
}

async fn subscribe(client: &AsyncClient, inbox: &mut Inbox, filter: &str, qos: QoS5) {
    client.subscribe(filter, qos).await.unwrap();
    recv_v5(inbox, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
}

/// The next PUBLISH: topic, payload, QoS.
async fn next_publish(inbox: &mut Inbox) -> (String, String, QoS5) {
    recv_v5(inbox, |p| match p {
        Packet::Publish(p) => Some((
            String::from_utf8_lossy(&p.topic).into_owned(),
            String::from_utf8_lossy(&p.payload).into_owned(),
            p.qos,
        )),
        _ => None,
    })
    .await
}

/// The DISCONNECT the server sent: reason and reason string.
async fn disconnect_of(inbox: &mut Inbox) -> (Reason, Option<String>) {
    recv_v5(inbox, |p| match p {
        Packet::Disconnect(d) => Some((
            d.reason_code,
            d.properties.as_ref().and_then(|p| p.reason_string.clone()),
        )),
        _ => None,
    })
    .await
}

/// A plain MQTT 5 client on the broker itself (no front-end), subscribed to `filter`.
async fn on_broker_v5(engine: &Engine, filter: &str) -> (AsyncClient, EventLoop) {
    let mut options = v5_options(engine.addr, "plain-watcher");
    options.set_credentials(USER, PASSWORD);
    let (client, mut eventloop, _) = connect_v5(options).await.unwrap();
    client.subscribe(filter, QoS5::AtLeastOnce).await.unwrap();
    next_v5(&mut eventloop, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await
    .unwrap();
    (client, eventloop)
}

/// `app` sends dev1 the QoS 1 command `reboot`; the device's `inbox` gets it, under its own
/// topic.
async fn reboot_reaches(app: &AsyncClient, inbox: &mut Inbox) {
    app.publish(
        "iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
        QoS5::AtLeastOnce,
        false,
        "now",
    )
    .await
    .unwrap();
    let (topic, payload, _) = next_publish(inbox).await;
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("iot-2/cmd/reboot/fmt/json", "now")
    );
}

const EVENTS: &str = "iot-2/type/+/id/+/evt/+/fmt/+";
const COMMANDS: &str = "iot-2/cmd/+/fmt/json";
const EVENT: &str = "iot-2/evt/temp/fmt/json";
const SEEN_EVENT: &str = "iot-2/type/sensor/id/dev1/evt/temp/fmt/json";

#[tokio::test]
async fn mosquitto_carries_qos_0_1_2_both_ways_under_the_org_prefix_and_isolates_orgs() {
    let engine = engines::mosquitto().await;
    let server = server(vec![engine.url()], Protocol::V5).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (other_ca, _) = server.org_with_ca("other").await;
    let (_watcher, mut broker_side) = on_broker_v5(&engine, "#").await;

    let (app, mut app_inbox, _) = client(&server, &ca, "a:dash", "a:acme:dash", |_| {}).await;
    subscribe(&app, &mut app_inbox, EVENTS, QoS5::ExactlyOnce).await;
    let other_addr = server
        .bridge(
            "other.messaging.localhost",
            &other_ca.client("x", &["a:dash"]),
        )
        .await;
    let (other_app, other_loop, _) = connect_v5(v5_options(other_addr, "a:other:dash"))
        .await
        .unwrap();
    let mut other_inbox = drive_v5(other_loop);
    subscribe(&other_app, &mut other_inbox, EVENTS, QoS5::AtLeastOnce).await;

    let (device, mut device_inbox, _) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", |_| {}).await;
    subscribe(&device, &mut device_inbox, COMMANDS, QoS5::AtLeastOnce).await;
    for (qos, payload) in [
        (QoS5::AtMostOnce, "q0"),
        (QoS5::AtLeastOnce, "q1"),
        (QoS5::ExactlyOnce, "q2"),
    ] {
        device.publish(EVENT, qos, false, payload).await.unwrap();
        assert_eq!(
            next_publish(&mut app_inbox).await,
            (SEEN_EVENT.to_owned(), payload.to_owned(), qos)
        );
    }
    // The broker sees the org's namespace, never the client's view.
    let seen = next_v5(&mut broker_side, |p| match p {
        Packet::Publish(p) => Some(String::from_utf8_lossy(&p.topic).into_owned()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(seen, format!("acme/{SEEN_EVENT}"));

    // Application → device.
    reboot_reaches(&app, &mut device_inbox).await;

    // The other org saw none of acme's events: its first delivery is its own marker.
    let other_device = other_ca.client("d:sensor:dev1", &[]);
    let addr = server
        .bridge("other.messaging.localhost", &other_device)
        .await;
    let (marker, marker_loop, _) = connect_v5(v5_options(addr, "d:other:sensor:dev1"))
        .await
        .unwrap();
    let _marker_inbox = drive_v5(marker_loop);
    marker
        .publish(EVENT, QoS5::AtLeastOnce, false, "marker")
        .await
        .unwrap();
    assert_eq!(next_publish(&mut other_inbox).await.1, "marker");
}

#[tokio::test]
async fn mosquitto_resumes_a_kept_session_with_what_it_missed_and_publishes_a_lost_devices_will() {
    let engine = engines::mosquitto().await;
    let server = server(vec![engine.url()], Protocol::V5).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let keep = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    };
    let (device, inbox, present) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", keep).await;
    assert!(!present, "a new session was present");

    let app_addr = server.bridge(SNI, &ca.client("x", &["a:ops"])).await;
    let (app, app_loop, _) = connect_v5(v5_options(app_addr, "a:acme:ops"))
        .await
        .unwrap();
    let mut app_inbox = drive_v5(app_loop);
    subscribe(
        &app,
        &mut app_inbox,
        "iot-2/type/+/id/+/evt/status/fmt/txt",
        QoS5::AtLeastOnce,
    )
    .await;
    resumes_with_what_it_missed(&server, &ca, (device, inbox), &app, &mut app_inbox, keep).await;

    // A device lost without DISCONNECT: the broker publishes the will it got in the CONNECT.
    let will = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_last_will(LastWill::new(
            "iot-2/evt/status/fmt/txt",
            "lost",
            QoS5::AtLeastOnce,
            false,
            None,
        ));
    };
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev2", &[])).await;
    let mut options = v5_options(addr, "d:acme:sensor:dev2");
    will(&mut options);
    let (lost, eventloop, _) = connect_v5(options).await.unwrap();
    drop(eventloop);
    drop(lost);
    let (topic, payload, _) = next_publish(&mut app_inbox).await;
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("iot-2/type/sensor/id/dev2/evt/status/fmt/txt", "lost")
    );
}

/// d:sensor:dev1 (`device`, connected with a kept session) subscribes to its commands and
/// leaves; the application sends it a QoS 1 command; the device comes back with `keep`, finds
/// its session present and gets the command.
async fn resumes_with_what_it_missed(
    server: &TestServer,
    ca: &TestCa,
    (device, mut inbox): (AsyncClient, Inbox),
    app: &AsyncClient,
    app_inbox: &mut Inbox,
    keep: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> (AsyncClient, Inbox) {
    subscribe(&device, &mut inbox, COMMANDS, QoS5::AtLeastOnce).await;
    device.disconnect().await.unwrap();
    recv_until_closed(&mut inbox).await;
    let command = "iot-2/type/sensor/id/dev1/cmd/c/fmt/json";
    app.publish(command, QoS5::AtLeastOnce, false, "queued")
        .await
        .unwrap();
    recv_v5(app_inbox, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
    let (device, mut inbox, present) =
        client(server, ca, "d:sensor:dev1", "d:acme:sensor:dev1", keep).await;
    assert!(present, "the broker's session was not resumed");
    assert_eq!(next_publish(&mut inbox).await.1, "queued");
    (device, inbox)
}

/// Reads a driven event loop's packets until its connection ends.
async fn recv_until_closed(inbox: &mut Inbox) {
    while step(inbox.recv()).await.is_some() {}
}

#[tokio::test]
async fn the_broker_ending_a_client_id_that_connected_elsewhere_is_a_takeover_for_the_device() {
    let engine = engines::mosquitto().await;
    let server = server(vec![engine.url()], Protocol::V5).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (_device, mut inbox, _) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", |_| {}).await;
    // The same client id connects to the broker directly (another node, in a cluster).
    let mut options = v5_options(engine.addr, "d:acme:sensor:dev1");
    options.set_credentials(USER, PASSWORD);
    let (_elsewhere, _loop, _) = connect_v5(options).await.unwrap();
    assert_eq!(disconnect_of(&mut inbox).await.0, Reason::SessionTakenOver);
}

#[tokio::test]
async fn the_next_url_is_tried_and_a_dead_broker_closes_its_sessions_and_refuses_new_ones() {
    let mut engine = engines::mosquitto().await;
    let dead = format!("mqtt://127.0.0.1:{}", engines::free_port());
    let server = server(vec![dead, engine.url()], Protocol::V5).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let http = reqwest::Client::new();
    let ready = || async {
        step(http.get(server.url("/readyz")).send())
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert!(
        eventually(NOTICE, || async { ready().await == 200 }).await,
        "never ready"
    );

    // The first URL is dead: the session goes through the second.
    let (_device, mut inbox, _) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", |_| {}).await;

    engine.kill();
    let (code, why) = disconnect_of(&mut inbox).await;
    assert_eq!(code, Reason::ServerBusy);
    let why = why.expect("no reason string");
    assert!(why.contains("went away"), "{why}");

    // No URL answers: CONNECTs are refused "server unavailable", and /readyz says so.
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev2", &[])).await;
    assert_eq!(
        refused_v5(v5_options(addr, "d:acme:sensor:dev2")).await,
        Code5::ServerUnavailable
    );
    assert_eq!(
        refused_v4(v4_options(addr, "d:acme:sensor:dev2")).await,
        rumqttc::ConnectReturnCode::ServiceUnavailable
    );
    assert!(
        eventually(NOTICE, || async { ready().await == 503 }).await,
        "still ready"
    );

    // The broker comes back on its port: ready again, and sessions open.
    let _back = engines::mosquitto_on(engine.addr.port()).await;
    assert!(
        eventually(NOTICE, || async { ready().await == 200 }).await,
        "never ready again"
    );
    client(&server, &ca, "d:sensor:dev2", "d:acme:sensor:dev2", |_| {}).await;
}

#[tokio::test]
async fn nats_as_a_3_1_1_upstream_carries_qos_0_1_and_2_downgraded_and_resumes_sessions() {
    let engine = engines::nats().await;
    let server = server(vec![engine.url()], Protocol::V311).await;
    let (ca, _) = server.org_with_ca("acme").await;

    // What NATS sees: a plain 3.1.1 client on its MQTT listener.
    let mut options = v4_options(engine.addr, "plain-watcher");
    options.set_credentials(USER, PASSWORD);
    let (watcher, mut watcher_loop) = connect_v4(options).await.unwrap();
    subscribe_v4(
        &watcher,
        &mut watcher_loop,
        "acme/#",
        rumqttc::QoS::AtLeastOnce,
    )
    .await;

    let app_addr = server.bridge(SNI, &ca.client("x", &["a:dash"])).await;
    let (app, app_loop, _) = connect_v5(v5_options(app_addr, "a:acme:dash"))
        .await
        .unwrap();
    let mut app_inbox = drive_v5(app_loop);
    subscribe(&app, &mut app_inbox, EVENTS, QoS5::ExactlyOnce).await;

    let keep = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    };
    let (device, mut device_inbox, present) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", keep).await;
    assert!(!present);
    // QoS 2 goes upstream at QoS 1 (NATS closes on a QoS 2 PUBLISH); the device still gets its
    // PUBREC and PUBCOMP.
    for (qos, payload) in [
        (QoS5::AtMostOnce, "q0"),
        (QoS5::AtLeastOnce, "q1"),
        (QoS5::ExactlyOnce, "q2"),
    ] {
        device.publish(EVENT, qos, false, payload).await.unwrap();
        let (topic, got, _) = next_publish(&mut app_inbox).await;
        assert_eq!((topic.as_str(), got.as_str()), (SEEN_EVENT, payload));
    }
    recv_v5(&mut device_inbox, |p| {
        matches!(p, Packet::PubComp(_)).then_some(())
    })
    .await;
    let seen = next_publish_v4(&mut watcher_loop).await.unwrap();
    assert_eq!(seen.topic, format!("acme/{SEEN_EVENT}"));

    // A kept session on NATS: resumed, with what it missed.
    let away = (device, device_inbox);
    let (_device, mut device_inbox) =
        resumes_with_what_it_missed(&server, &ca, away, &app, &mut app_inbox, keep).await;

    // NATS ends the older connection of a client id that connects again elsewhere, without a
    // word (3.1.1): the device is told "session taken over", not "server unavailable".
    let mut options = v4_options(engine.addr, "d:acme:sensor:dev1");
    options.set_credentials(USER, PASSWORD);
    options.set_clean_session(false);
    let (_elsewhere, _loop) = connect_v4(options).await.unwrap();
    assert_eq!(
        disconnect_of(&mut device_inbox).await.0,
        Reason::SessionTakenOver
    );
}

#[tokio::test]
async fn mqtts_verifies_the_broker_against_ca_file_and_presents_the_client_certificate() {
    let broker_ca = TestCa::root("broker CA");
    let front_ends_ca = TestCa::root("front-ends CA");
    let server_cert = broker_ca.server(&["localhost"]);
    let engine =
        engines::mosquitto_tls(&server_cert.chain, &server_cert.key, &front_ends_ca.pem).await;
    let url = format!("mqtts://localhost:{}", engine.addr.port());
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let now = time::OffsetDateTime::now_utc();
    let front_end = front_ends_ca.server_valid(
        &["portcullis"],
        now - time::Duration::days(1),
        now + time::Duration::days(1),
        false,
    );
    let (ca_file, cert_file, key_file) = (
        write("broker-ca.pem", &broker_ca.pem),
        write("client.pem", &front_end.chain),
        write("client.key", &front_end.key),
    );
    let wrong_ca = write("wrong-ca.pem", &TestCa::root("someone else").pem);

    // The broker's certificate verified, the front-end's certificate accepted: sessions open.
    let server = server_with(vec![url.clone()], Protocol::V5, |u| {
        u.ca_file = Some(ca_file.clone());
        u.cert_file = Some(cert_file.clone());
        u.key_file = Some(key_file.clone());
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (device, mut inbox, _) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", |_| {}).await;
    subscribe(&device, &mut inbox, COMMANDS, QoS5::AtLeastOnce).await;

    // A broker certificate the CA file does not vouch for, or no client certificate: no session.
    for adjust in [
        Box::new(|u: &mut UpstreamConfig| {
            u.ca_file = Some(wrong_ca.clone());
            u.cert_file = Some(cert_file.clone());
            u.key_file = Some(key_file.clone());
        }) as Box<dyn FnOnce(&mut UpstreamConfig)>,
        Box::new(|u: &mut UpstreamConfig| u.ca_file = Some(ca_file.clone())),
    ] {
        let server = server_with(vec![url.clone()], Protocol::V5, adjust).await;
        let (ca, _) = server.org_with_ca("acme").await;
        let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
        assert_eq!(
            refused_v5(v5_options(addr, "d:acme:sensor:dev1")).await,
            Code5::ServerUnavailable
        );
    }
}

#[tokio::test]
async fn a_3_node_nats_cluster_survives_the_loss_of_the_node_its_sessions_were_on() {
    let mut nodes = engines::nats_cluster().await;
    for node in &nodes {
        let ready = eventually(std::time::Duration::from_secs(30), || {
            engines::mqtt_ready(node)
        })
        .await;
        assert!(ready, "NATS node {} never took an MQTT session", node.addr);
    }
    let urls = nodes.iter().map(Engine::url).collect();
    let server = server(urls, Protocol::V311).await;
    let (ca, _) = server.org_with_ca("acme").await;

    let (server, ca) = (&server, &ca);
    let connect = |qos| async move {
        let (app, mut app_inbox, _) = client(server, ca, "a:dash", "a:acme:dash", |_| {}).await;
        subscribe(&app, &mut app_inbox, EVENTS, qos).await;
        let (device, device_inbox, _) =
            client(server, ca, "d:sensor:dev1", "d:acme:sensor:dev1", |_| {}).await;
        (app, app_inbox, device, device_inbox)
    };
    // Publishes until the application gets one (a new subscription on a cluster that just lost
    // a node may miss the first messages): traffic flows.
    let flows = |device: AsyncClient, mut app_inbox: Inbox, qos| async move {
        for attempt in 0..100 {
            let payload = format!("m{attempt}");
            device
                .publish(EVENT, qos, false, payload.clone())
                .await
                .unwrap();
            let got = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                next_publish(&mut app_inbox),
            )
            .await;
            if let Ok((topic, _, _)) = got {
                assert_eq!(topic, SEEN_EVENT);
                return (device, app_inbox);
            }
        }
        panic!("no message went through the cluster");
    };
    let (_app, app_inbox, device, mut device_inbox) = connect(QoS5::AtLeastOnce).await;
    let (_device, mut app_inbox) = flows(device, app_inbox, QoS5::AtLeastOnce).await;

    // The first URL's node (where both sessions are) stops: both are told, with a reason.
    nodes[0].kill();
    for inbox in [&mut app_inbox, &mut device_inbox] {
        let (code, why) = disconnect_of(inbox).await;
        assert_eq!(code, Reason::ServerBusy);
        assert!(why.unwrap_or_default().contains(&nodes[0].url()));
    }
    // Once the others have their JetStream leaders again (NATS closes MQTT CONNECTs meanwhile),
    // they reconnect through the next node, and traffic goes on: at QoS 0, which does not wait
    // for the cluster's streams to elect new leaders (NATS's business, not the front-end's).
    for node in &nodes[1..] {
        let ready = eventually(std::time::Duration::from_secs(30), || {
            engines::mqtt_ready(node)
        })
        .await;
        assert!(ready, "NATS node {} never recovered", node.addr);
    }
    let (_app, app_inbox, device, _device_inbox) = connect(QoS5::AtMostOnce).await;
    flows(device, app_inbox, QoS5::AtMostOnce).await;
}

#[tokio::test]
async fn a_burst_of_qos_1_publishes_stays_within_the_brokers_receive_maximum() {
    // mosquitto announces max_inflight_messages as its Receive Maximum.
    let engine = engines::mosquitto_with(engines::free_port(), "max_inflight_messages 5").await;
    let server = server(vec![engine.url()], Protocol::V5).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (app, mut app_inbox, _) = client(&server, &ca, "a:dash", "a:acme:dash", |_| {}).await;
    subscribe(&app, &mut app_inbox, EVENTS, QoS5::AtLeastOnce).await;
    // More unacknowledged QoS 1 PUBLISHes than the broker's Receive Maximum: the front-end lets
    // 100 in (its own) and holds back the rest until acks come; all arrive, in order. (mosquitto
    // 2.0 announces its maximum but tolerates more, so the holding back itself is pinned by the
    // upstream session's unit tests.)
    let (device, _device_inbox, _) =
        client(&server, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", |o| {
            o.set_outgoing_inflight_upper_limit(100);
        })
        .await;
    for i in 0..80 {
        device
            .publish(EVENT, QoS5::AtLeastOnce, false, format!("m{i}"))
            .await
            .unwrap();
    }
    for i in 0..80 {
        assert_eq!(next_publish(&mut app_inbox).await.1, format!("m{i}"));
    }
}

/// Node `dir` of a cluster on the PostgreSQL database `url`, its broker the upstream `engine`
/// (MQTT 5).
async fn node_on(dir: &std::path::Path, url: &str, engine: &Engine) -> TestServer {
    let (url, broker) = (url.to_owned(), engine.url());
    TestServer::start_in(dir.into(), move |config| {
        config.store.url = Some(url);
        config.broker.upstream = Some(UpstreamConfig {
            urls: vec![Target::parse(&broker).unwrap()],
            protocol: Protocol::V5,
            username: USER.into(),
            password: PASSWORD.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        });
    })
    .await
}

#[tokio::test]
async fn a_session_taken_over_through_another_node_lives_on_there_in_the_shared_broker() {
    let engine = engines::mosquitto().await;
    let url = pg::database();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = node_on(dirs[0].path(), &url, &engine).await;
    std::fs::copy(
        dirs[0].path().join("master.key"),
        dirs[1].path().join("master.key"),
    )
    .unwrap();
    let b = node_on(dirs[1].path(), &url, &engine).await;
    let (ca, _) = a.org_with_ca("acme").await;

    // A kept session (Clean Start 0, an expiry), taken over by a newer connection of its client
    // id through another node: it lives on in that one, with its subscription.
    let resume = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    };
    let (first, mut on_a, _) = client(&a, &ca, "d:sensor:dev1", "d:acme:sensor:dev1", resume).await;
    subscribe(&first, &mut on_a, COMMANDS, QoS5::AtLeastOnce).await;
    // B lets the device in once the CA uploaded through A reaches it (within a second).
    let addr = b.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let mut options = v5_options(addr, "d:acme:sensor:dev1");
    resume(&mut options);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let (second, mut on_b, present) = loop {
        match connect_v5(options.clone()).await {
            Ok((client, eventloop, connack)) => {
                break (client, drive_v5(eventloop), connack.session_present)
            }
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("node B never let the device in: {error:?}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    assert!(present, "the session taken over was not present on node B");
    assert_eq!(disconnect_of(&mut on_a).await.0, Reason::SessionTakenOver);

    // Its subscription came with it: a command sent through node A reaches the device on B.
    let (app, _app_inbox, _) = client(&a, &ca, "a:ops", "a:acme:ops", |_| {}).await;
    reboot_reaches(&app, &mut on_b).await;
    drop((first, second));
    a.stop().await;
    b.stop().await;
}
