//! Three Portcullis nodes on one real PostgreSQL 15 (`common::pg`), forwarding upstream over MQTT
//! 3.1.1 to a real 3-node NATS cluster with JetStream and MQTT (`common::engines`), as DESIGN §12
//! runs them: an event crosses nodes; a kept QoS 1 session resumed on another node gets every
//! message queued meanwhile; a node killed with SIGKILL (the real binary) loses no acknowledged
//! change and its devices reconnect through the others; a NATS node stopped closes the sessions
//! it carried, with a reason, and traffic goes on through the others.
//!
//! Front-end `i` lists the NATS nodes starting at node `i`, so its sessions are on NATS node `i`.
//! Each test starts its own NATS cluster and waits (at most [`ELECTION`] a node) for JetStream to
//! take MQTT sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::engines::{self, Engine};
use common::mqtt::*;
use common::nodes::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode as Reason, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError};

const SNI: &str = "acme.messaging.localhost";
const EVENTS: &str = "iot-2/type/+/id/+/evt/+/fmt/+";
const COMMANDS: &str = "iot-2/cmd/+/fmt/json";
const EVENT: &str = "iot-2/evt/temp/fmt/json";
const APP: &str = "a:dash";
/// What DESIGN §12 promises: a change acknowledged by one node is enforced by every node.
const WITHIN: Duration = Duration::from_secs(1);
/// How long a NATS node may take to elect its JetStream leaders (a new cluster, or one that lost
/// a node): NATS's business, not the front-end's.
const ELECTION: Duration = Duration::from_secs(30);

type Inbox = tokio::sync::mpsc::UnboundedReceiver<Packet>;

/// A 3-node NATS cluster whose every node takes MQTT sessions that keep state.
async fn nats_cluster() -> Vec<Engine> {
    let nats = engines::nats_cluster().await;
    for node in &nats {
        assert!(
            ready(node).await,
            "NATS node {} never took an MQTT session",
            node.addr
        );
    }
    nats
}

async fn ready(node: &Engine) -> bool {
    eventually(ELECTION, || engines::mqtt_ready(node)).await
}

/// The NATS URLs starting at node `first`.
fn urls_from(nats: &[Engine], first: usize) -> Vec<String> {
    let urls: Vec<String> = nats.iter().map(Engine::url).collect();
    urls[first..]
        .iter()
        .chain(&urls[..first])
        .cloned()
        .collect()
}

/// Three front-ends on a new database, front-end `i` upstream to NATS node `i` first.
async fn front_ends(nats: &[Engine]) -> (Vec<TestServer>, Vec<tempfile::TempDir>) {
    nodes_where(&pg::database(), 3, |i, config| {
        config.broker.upstream = Some(engines::upstream_v311(&urls_from(nats, i)))
    })
    .await
}

/// An MQTT 5 client of acme's `identity` (`d:sensor:dev1`, `a:dash`) through `node`, keeping its
/// session (clean start 0, 5 minutes) when `keep`: its client, its inbox and whether its
/// session was present.
async fn client(
    node: &TestServer,
    ca: &TestCa,
    identity: &str,
    keep: bool,
) -> Result<(AsyncClient, Inbox, bool), ConnectionError> {
    let addr = node.bridge(SNI, &ca.client(identity, &[])).await;
    let mut options = v5_options(addr, &clients::client_id("acme", identity));
    if keep {
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(300));
    }
    let (client, eventloop, connack) = connect_v5(options).await?;
    Ok((client, drive_v5(eventloop), connack.session_present))
}

/// [`client`], tried until `node` lets it in (a change still on its way), for at most `within`.
async fn let_in_within(
    within: Duration,
    node: &TestServer,
    ca: &TestCa,
    identity: &str,
    keep: bool,
) -> Option<(AsyncClient, Inbox, bool)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(connected) = client(node, ca, identity, keep).await {
            return Some(connected);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`client`] once `node` lets it in.
async fn let_in(
    node: &TestServer,
    ca: &TestCa,
    identity: &str,
    keep: bool,
) -> (AsyncClient, Inbox, bool) {
    let_in_within(STEP, node, ca, identity, keep)
        .await
        .unwrap_or_else(|| panic!("{identity} never let in through {}", node.mqtts))
}

async fn subscribe(client: &AsyncClient, inbox: &mut Inbox, filter: &str, qos: QoS) {
    client.subscribe(filter, qos).await.unwrap();
    let codes = recv_v5(inbox, |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert!(
        matches!(
            codes[..],
            [rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)]
        ),
        "{filter}: {codes:?}"
    );
}

/// An application of acme through `node`, subscribed to every device's events at `qos`.
async fn watching(node: &TestServer, ca: &TestCa, qos: QoS) -> (AsyncClient, Inbox) {
    let (app, mut inbox, _) = let_in(node, ca, APP, false).await;
    subscribe(&app, &mut inbox, EVENTS, qos).await;
    (app, inbox)
}

/// A PUBLISH's topic and payload.
fn publish_of(packet: &Packet) -> Option<(String, String)> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match packet {
        Packet::Publish(p) => Some((text(&p.topic), text(&p.payload))),
        _ => None,
    }
}

async fn next_publish(inbox: &mut Inbox) -> (String, String) {
    recv_v5(inbox, publish_of).await
}

/// Reads a driven event loop's packets until its connection ends (at most a step each).
async fn until_closed(inbox: &mut Inbox) {
    while step(inbox.recv()).await.is_some() {}
}

/// The topic under which an application sees `EVENT` from acme's `d:sensor:<device>`.
fn seen_event(device: &str) -> String {
    format!("iot-2/type/sensor/id/{device}/evt/temp/fmt/json")
}

/// `device` (acme's `d:sensor:<device>`) publishes `EVENT` at `qos` until the application
/// behind `app_inbox` gets one from it (a subscription new to the cluster, or a cluster that
/// just lost a node, may miss the first ones); other devices' events are passed over.
async fn flows(device: &AsyncClient, name: &str, app_inbox: &mut Inbox, qos: QoS) {
    let topic = seen_event(name);
    for attempt in 0..50 {
        let payload = format!("{name}-{attempt}");
        device
            .publish(EVENT, qos, false, payload.clone())
            .await
            .unwrap();
        let arrived = tokio::time::timeout(Duration::from_millis(400), async {
            while next_publish(app_inbox).await != (topic.clone(), payload.clone()) {}
        })
        .await;
        if arrived.is_ok() {
            return;
        }
    }
    panic!("no event of {name} reached the application");
}

#[tokio::test]
async fn an_application_on_node_3_receives_an_event_published_by_a_device_on_node_2() {
    let nats = nats_cluster().await;
    let (nodes, _dirs) = front_ends(&nats).await;
    let (ca, _) = nodes[0].org_with_ca("acme").await;

    let (app, mut app_inbox) = watching(&nodes[2], &ca, QoS::AtLeastOnce).await;
    let (device, mut device_inbox, _) = let_in(&nodes[1], &ca, "d:sensor:dev1", false).await;
    subscribe(&device, &mut device_inbox, COMMANDS, QoS::AtLeastOnce).await;
    // At QoS 1 NATS stores the event for a subscription made before it (a JetStream consumer),
    // whichever NATS nodes the two sessions are on: the first one must arrive.
    device
        .publish(EVENT, QoS::AtLeastOnce, false, "21.5")
        .await
        .unwrap();
    assert_eq!(
        next_publish(&mut app_inbox).await,
        (seen_event("dev1"), "21.5".to_owned())
    );
    // And back: a command from the application on node 3 to the device on node 2.
    app.publish(
        "iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
        QoS::AtLeastOnce,
        false,
        "now",
    )
    .await
    .unwrap();
    assert_eq!(
        next_publish(&mut device_inbox).await,
        ("iot-2/cmd/reboot/fmt/json".to_owned(), "now".to_owned())
    );
}

#[tokio::test]
async fn a_qos_1_persistent_session_resumed_on_another_node_gets_every_message_queued_meanwhile() {
    const QUEUED: usize = 20;
    let nats = nats_cluster().await;
    let (nodes, _dirs) = front_ends(&nats).await;
    let (ca, _) = nodes[0].org_with_ca("acme").await;

    let (device, mut inbox, present) = let_in(&nodes[0], &ca, "d:sensor:dev1", true).await;
    assert!(!present, "a new session was present");
    subscribe(&device, &mut inbox, COMMANDS, QoS::AtLeastOnce).await;
    device.disconnect().await.unwrap();
    until_closed(&mut inbox).await;

    // Node 2's application sends QUEUED commands, every one acknowledged.
    let (app, mut app_inbox, _) = let_in(&nodes[1], &ca, APP, false).await;
    for i in 0..QUEUED {
        app.publish(
            format!("iot-2/type/sensor/id/dev1/cmd/c{i}/fmt/json"),
            QoS::AtLeastOnce,
            false,
            i.to_string(),
        )
        .await
        .unwrap();
    }
    for _ in 0..QUEUED {
        recv_v5(&mut app_inbox, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }

    // The device comes back through node 3: its session is there, with all of them.
    let (_device, mut inbox, present) = let_in(&nodes[2], &ca, "d:sensor:dev1", true).await;
    assert!(present, "the session was not resumed on node 3");
    let mut got = BTreeSet::new();
    let all = tokio::time::timeout(STEP, async {
        while got.len() < QUEUED {
            let packet = inbox.recv().await.expect("the resumed session ended");
            let Some((topic, payload)) = publish_of(&packet) else {
                continue;
            };
            assert_eq!(topic, format!("iot-2/cmd/c{payload}/fmt/json"));
            got.insert(payload.parse::<usize>().unwrap());
        }
    })
    .await;
    assert!(all.is_ok(), "only {got:?} of {QUEUED} arrived");
    assert_eq!(got, (0..QUEUED).collect());
}

/// Whether `node` refuses acme's `identity` at CONNECT as not authorized (a blocked device).
async fn refuses(node: &TestServer, ca: &TestCa, identity: &str) -> bool {
    matches!(
        client(node, ca, identity, false).await,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized
        ))
    )
}

#[tokio::test]
async fn a_node_killed_with_sigkill_loses_no_acknowledged_change_and_its_devices_reconnect_elsewhere(
) {
    let nats = nats_cluster().await;
    let url = pg::database();
    let (nodes, _dirs) = nodes_where(&url, 2, |i, config| {
        config.broker.upstream = Some(engines::upstream_v311(&urls_from(&nats, i)))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    beside(&nodes[0].data_dir, dir.path());
    let env = engines::upstream_v311_env(&urls_from(&nats, 2));
    let (mut process, killed) = portcullis(dir.path(), &url, "node-3", &env);

    // acme made through the process; a device on it, an application on node 1 gets its events.
    let (ca, _) = killed.org_with_ca("acme").await;
    let (_app, mut app_inbox) = watching(&nodes[0], &ca, QoS::AtLeastOnce).await;
    let (device, mut device_inbox, _) = let_in(&killed, &ca, "d:sensor:dev1", false).await;
    flows(&device, "dev1", &mut app_inbox, QoS::AtLeastOnce).await;

    // Two changes acknowledged through it, then SIGKILL.
    let second_ca = TestCa::root("acme second CA");
    killed.upload_ca("acme", &second_ca).await;
    killed.block("acme", "d:sensor:dev2").await;
    process.kill();

    // Both are in force on the other nodes within the contract's second.
    let (blocked_1, blocked_2, new_ca_1, new_ca_2) = tokio::join!(
        eventually(WITHIN, || refuses(&nodes[0], &ca, "d:sensor:dev2")),
        eventually(WITHIN, || refuses(&nodes[1], &ca, "d:sensor:dev2")),
        let_in_within(WITHIN, &nodes[0], &second_ca, "d:sensor:dev3", false),
        let_in_within(WITHIN, &nodes[1], &second_ca, "d:sensor:dev4", false),
    );
    assert!(blocked_1 && blocked_2, "the block was lost");
    assert!(
        new_ca_1.is_some() && new_ca_2.is_some(),
        "the second CA was lost"
    );

    // The device's connection dropped with its node; it connects through node 2, and its events
    // reach the application on node 1.
    until_closed(&mut device_inbox).await;
    let (device, _device_inbox, _) = let_in(&nodes[1], &ca, "d:sensor:dev1", false).await;
    flows(&device, "dev1", &mut app_inbox, QoS::AtLeastOnce).await;
}

#[tokio::test]
async fn a_nats_node_stopped_under_three_front_ends_closes_its_sessions_and_traffic_goes_on_through_the_others(
) {
    let mut nats = nats_cluster().await;
    let (nodes, _dirs) = front_ends(&nats).await;
    let (ca, _) = nodes[0].org_with_ca("acme").await;

    // The application through `nodes[0]`, on `nats[0]`; `dev<i>` through `nodes[i]`, on
    // `nats[i]`. QoS 0 does not wait for JetStream, which elects new leaders once a node is gone.
    let (_app, mut app_inbox) = watching(&nodes[0], &ca, QoS::AtMostOnce).await;
    let mut devices = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("dev{i}");
        let (device, inbox, _) = let_in(node, &ca, &format!("d:sensor:{name}"), false).await;
        flows(&device, &name, &mut app_inbox, QoS::AtMostOnce).await;
        devices.push((name, device, inbox));
    }

    // `nats[1]` stops: dev1's session is closed, with a reason naming it.
    nats[1].kill();
    let closed = recv_v5(&mut devices[1].2, |p| match p {
        Packet::Disconnect(d) => Some(d.clone()),
        _ => None,
    })
    .await;
    assert_eq!(closed.reason_code, Reason::ServerBusy);
    let why = closed.properties.and_then(|p| p.reason_string);
    let why = why.expect("no reason string");
    assert!(why.contains(&nats[1].url()), "{why}");

    // The others go on, their sessions untouched.
    for (name, device, inbox) in devices.iter_mut().filter(|(name, ..)| name != "dev1") {
        flows(device, name, &mut app_inbox, QoS::AtMostOnce).await;
        while let Ok(packet) = inbox.try_recv() {
            assert!(
                !matches!(packet, Packet::Disconnect(_)),
                "{name} was closed: {packet:?}"
            );
        }
    }

    // Once the remaining NATS nodes take sessions again, dev1 connects through `nodes[1]` again
    // (on its next URL, `nats[2]`), and its events flow.
    for node in [&nats[0], &nats[2]] {
        assert!(ready(node).await, "NATS node {} never recovered", node.addr);
    }
    let (device, _inbox, _) = let_in(&nodes[1], &ca, "d:sensor:dev1", false).await;
    flows(&device, "dev1", &mut app_inbox, QoS::AtMostOnce).await;
}
