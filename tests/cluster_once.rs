//! What happens once per cluster (DESIGN §12), on real nodes sharing a real PostgreSQL 15: one
//! node leads (the notifier, the CRL fetches) and another takes the lead when it goes; each
//! notice is sent once however many nodes run; one session per client id across nodes (a
//! connection on another node takes over, MQTT 5 DISCONNECT 0x8E); an operator's
//! `DELETE …/sessions/{client_id}` on any node closes the session wherever it is; the session
//! list, the event stream and the device registry of any node show every node's, each with its
//! `node`; and tokens minted at once on three nodes are counted exactly in their key's grant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt::*;
use common::nodes::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

const SNI: &str = "acme.messaging.localhost";
const SECRET: &str = "a webhook secret of some length";
/// What DESIGN §12 promises of a takeover, or a disconnect, across nodes.
const WITHIN: Duration = Duration::from_secs(1);
/// How long DESIGN §12 gives another node to take over from a lost leader.
const TAKEOVER: Duration = Duration::from_secs(30);

/// The node ids `server`'s node list shows as leading.
async fn leaders(server: &TestServer) -> Vec<String> {
    listed_nodes(server)
        .await
        .iter()
        .filter(|n| n["leader"] == true)
        .map(|n| n["node_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `-<mqtts port>`: how a node's default id ends.
fn port_suffix(server: &TestServer) -> String {
    format!("-{}", server.mqtts.port())
}

#[tokio::test]
async fn one_node_leads_and_the_other_takes_the_lead_when_it_stops() {
    let url = pg::database();
    let (a, b, _dirs) = two_nodes(&url, None).await;
    let (leader, other) = by_lead(a, b).await;
    let leader_port = port_suffix(&leader);
    let listed = eventually(STEP, || async {
        let names = leaders(&other).await;
        names.len() == 1 && names[0].ends_with(&leader_port)
    })
    .await;
    assert!(listed, "the node list never named the leader alone");

    leader.stop().await;
    let took = eventually(TAKEOVER, || async {
        health(&other).await["leader"] == true
    })
    .await;
    assert!(took, "the other node did not take the lead within 30 s");
    let names = leaders(&other).await;
    assert!(
        names.len() == 1 && names[0].ends_with(&port_suffix(&other)),
        "the node list does not name the new leader alone: {names:?}"
    );
    other.stop().await;
}

/// Uploads through `server` a CA of acme expiring in five days; the object its notice names.
async fn expiring_ca(server: &TestServer, cn: &str) -> String {
    let pem = ca_pem_with(|params| {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(5);
    });
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(serde_json::json!({"certificate": pem})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    format!("ca:{}", body["id"].as_str().unwrap())
}

/// Sets through `server` a new webhook, whose first `fail_first` POSTs fail, and waits for the
/// notice about `object` to reach it once.
async fn notified_once(
    server: &TestServer,
    object: &str,
    fail_first: usize,
) -> notices::WebhookReceiver {
    let webhook = notices::WebhookReceiver::start(SECRET, fail_first).await;
    let (status, body) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/notification-settings",
            Some(serde_json::json!({"webhook_url": webhook.url, "webhook_secret": SECRET})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let told = eventually(STEP, || async {
        webhook.count("certificate_expiring", object) == 1
    })
    .await;
    assert!(told, "the notice was not sent");
    webhook
}

#[tokio::test]
async fn a_settings_change_on_a_node_that_does_not_lead_wakes_the_leaders_notifier() {
    let url = pg::database();
    let (a, b, _dirs) = two_nodes(&url, None).await;
    let (leader, other) = by_lead(a, b).await;
    other.create_org("acme").await;
    let object = expiring_ca(&other, "expiring CA").await;
    // The passes are an hour apart: only the wake passed on to the leader makes this one.
    notified_once(&other, &object, 0).await;
    leader.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn three_nodes_passing_every_second_send_a_notice_once() {
    let url = pg::database();
    let (nodes, _dirs) = nodes_where(&url, 3, |_, config| {
        config.notify.check_interval = Duration::from_secs(1);
    })
    .await;
    nodes[0].create_org("acme").await;
    let object = expiring_ca(&nodes[0], "expiring CA").await;
    // The first POST fails and is retried a second later: a node passing meanwhile that did not
    // lead would send the notice a second time.
    let webhook = notified_once(&nodes[2], &object, 1).await;
    // Stopped (a stop waits for a pass under way, retries included): none has one left.
    for node in nodes {
        node.stop().await;
    }
    assert_eq!(webhook.count("certificate_expiring", &object), 1);
}

/// The reason of the DISCONNECT `inbox` reads within `within`; `None` when none came.
async fn disconnected_within(
    inbox: &mut UnboundedReceiver<Packet>,
    within: Duration,
) -> Option<DisconnectReasonCode> {
    let wait = async {
        while let Some(packet) = inbox.recv().await {
            if let Packet::Disconnect(disconnect) = packet {
                return Some(disconnect.reason_code);
            }
        }
        None
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}

#[tokio::test]
async fn a_client_id_connecting_on_another_node_takes_the_session_over_within_a_second() {
    let url = pg::database();
    let (a, b, _dirs) = two_nodes(&url, None).await;
    let (ca, _) = a.org_with_ca("acme").await;
    let (_first, mut on_a) = device_v5(&a, &ca, "dev1").await;
    let (second, mut on_b) = device_v5(&b, &ca, "dev1").await;
    assert_eq!(
        disconnected_within(&mut on_a, WITHIN).await,
        Some(DisconnectReasonCode::SessionTakenOver),
        "the session on A was not taken over within 1 s"
    );
    // B's session stays: it answers a ping, and no DISCONNECT came.
    second
        .publish(
            "iot-2/evt/status/fmt/json",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "here",
        )
        .await
        .unwrap();
    let acked = recv_v5(&mut on_b, |p| match p {
        Packet::PubAck(_) => Some(true),
        Packet::Disconnect(_) => Some(false),
        _ => None,
    })
    .await;
    assert!(acked, "the session on B was closed");
    a.stop().await;
    b.stop().await;
}

/// An MQTT 5 device of acme connected through `server` with client id `d:acme:sensor:<id>`, its
/// packets read in the background; polled until `server` lets it in (a change made through
/// another node takes up to a second to reach it).
async fn device_v5(
    server: &TestServer,
    ca: &TestCa,
    id: &str,
) -> (rumqttc::v5::AsyncClient, UnboundedReceiver<Packet>) {
    let addr: SocketAddr = server
        .bridge(SNI, &ca.client(&format!("d:sensor:{id}"), &[]))
        .await;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match connect_v5(v5_options(addr, &format!("d:acme:sensor:{id}"))).await {
            Ok((client, eventloop, _)) => return (client, drive_v5(eventloop)),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("the node never let {id} in: {error:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_delete_on_any_node_closes_the_session_wherever_it_is() {
    let url = pg::database();
    let (a, b, _dirs) = two_nodes(&url, None).await;
    let (ca, _) = a.org_with_ca("acme").await;
    // A 3.1.1 device: the close is all it is told.
    let addr = a.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let (_device, mut eventloop) = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let (ended, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        while eventloop.poll().await.is_ok() {}
        let _ = ended.send(());
    });

    let path = "/api/v1/orgs/acme/sessions/d:acme:sensor:dev1";
    let (status, body) = b.api("DELETE", path, None).await;
    assert_eq!(status, 204, "{body}");
    assert!(
        tokio::time::timeout(WITHIN, closed).await.is_ok(),
        "the session on A was not closed within 1 s"
    );

    // No node holds it now: 404, as on a single node.
    let (status, body) = b.api("DELETE", path, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    a.stop().await;
    b.stop().await;
}

/// `(client_id, node)` of each session `server` lists for acme, in list order.
async fn sessions_listed(server: &TestServer, query: &str) -> (Vec<(String, String)>, Value) {
    let (status, body) = server
        .api("GET", &format!("/api/v1/orgs/acme/sessions{query}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |name: &str| s[name].as_str().unwrap().to_owned();
            (field("client_id"), field("node"))
        })
        .collect();
    (rows, body["next_cursor"].clone())
}

#[tokio::test]
async fn sessions_events_and_devices_of_every_node_are_listed_on_any_node_with_their_node() {
    let url = pg::database();
    let (a, b, _dirs) = two_nodes(&url, None).await;
    let (ca, _) = a.org_with_ca("acme").await;
    let mut events = reqwest::Client::new()
        .get(a.url("/api/v1/orgs/acme/events"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    // B hears that A reads acme's stream, and tells A acme's events from then on: within the
    // second DESIGN §12 gives a change to reach every node.
    tokio::time::sleep(WITHIN).await;

    let (_one, _one_inbox) = device_v5(&a, &ca, "dev1").await;
    let (two, _two_inbox) = device_v5(&b, &ca, "dev2").await;
    let (dev1, dev2) = ("d:acme:sensor:dev1", "d:acme:sensor:dev2");
    let on = |node: &TestServer| {
        let suffix = port_suffix(node);
        move |id: &str| id.ends_with(&suffix)
    };
    // Both nodes list both sessions, oldest first, each with the node that serves it.
    for server in [&a, &b] {
        let both = eventually(WITHIN, || async {
            sessions_listed(server, "").await.0.len() == 2
        })
        .await;
        assert!(both, "a node did not list the other's session within 1 s");
        let (rows, _) = sessions_listed(server, "").await;
        assert_eq!((rows[0].0.as_str(), rows[1].0.as_str()), (dev1, dev2));
        assert!(on(&a)(&rows[0].1), "{rows:?}");
        assert!(on(&b)(&rows[1].1), "{rows:?}");
    }
    // Paged across nodes: one row a page, each once.
    let (first, next) = sessions_listed(&b, "?limit=1").await;
    assert_eq!(first[0].0, dev1);
    let (second, last) =
        sessions_listed(&b, &format!("?limit=1&cursor={}", next.as_str().unwrap())).await;
    assert_eq!(second[0].0, dev2);
    assert!(last.is_null(), "{last}");

    // A's event stream carries B's connect, with B's node id.
    let seen = read_events(&mut events, |s| s.contains(dev2)).await;
    let connect: Value = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|data| serde_json::from_str::<Value>(data).unwrap())
        .find(|data| data["client_id"] == dev2)
        .unwrap();
    assert!(on(&b)(connect["node"].as_str().unwrap()), "{connect}");

    // A's device registry shows dev2 as last seen on B (written up to a second behind).
    let registered =
        eventually(STEP, || async {
            let (_, body) = a.api("GET", "/api/v1/orgs/acme/devices", None).await;
            body["items"].as_array().unwrap().iter().any(|d| {
                d["identity"] == "d:sensor:dev2" && on(&b)(d["node"].as_str().unwrap_or(""))
            })
        })
        .await;
    assert!(registered, "the registry never showed dev2 on node B");

    // dev2 leaves: A's list drops it, and A's stream tells its disconnect.
    two.disconnect().await.unwrap();
    let gone = eventually(WITHIN, || async {
        sessions_listed(&a, "")
            .await
            .0
            .iter()
            .all(|(id, _)| id != dev2)
    })
    .await;
    assert!(gone, "A still listed dev2 a second after it left B");
    read_events(&mut events, |s| s.contains("event: disconnect")).await;
    a.stop().await;
    b.stop().await;
}

/// The signing key's grant uses of acme, as `server` reads them.
async fn signing_uses(server: &TestServer) -> i64 {
    let (status, body) = server.api("GET", "/api/v1/orgs/acme/grants", None).await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["holder"] == "signing_certificate")
        .and_then(|g| g["uses"].as_i64())
        .unwrap_or_else(|| panic!("no signing certificate grant: {body}"))
}

#[tokio::test]
async fn tokens_minted_at_once_on_three_nodes_are_counted_exactly() {
    let url = pg::database();
    let (a, b, dirs) = two_nodes(&url, None).await;
    let dir_c = holding_the_key_of(dirs[0].path());
    let c = node(dir_c.path(), &url).await;
    a.create_org("acme").await;
    // Ten mints on each node, all at once, each node spending from a block of uses it reserved.
    let mints = (0..30).map(|n| mint([&a, &b, &c][n % 3], n));
    let minted = futures_util::future::join_all(mints).await;
    assert!(minted.iter().all(|minted| *minted), "{minted:?}");

    // Stopped cleanly, every node writes what it spent: a node started afterwards reads 30.
    for node in [a, b, c] {
        node.stop().await;
    }
    let dir_d = holding_the_key_of(dirs[0].path());
    let d = node(dir_d.path(), &url).await;
    assert_eq!(signing_uses(&d).await, 30);
    d.stop().await;
}

/// A new node's data directory, holding the master key of the node whose directory is `dir`.
fn holding_the_key_of(dir: &std::path::Path) -> tempfile::TempDir {
    let new = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("master.key"), new.path().join("master.key")).unwrap();
    new
}

/// Mints token `t<n>` of acme on `server`: true when signed, false when the grant ran out
/// (409 `grant_expired`); anything else fails the test.
async fn mint(server: &TestServer, n: usize) -> bool {
    let body = serde_json::json!({"name": format!("t{n}"), "role": "viewer", "ttl_seconds": 3600});
    let (status, body) = server
        .api("POST", "/api/v1/orgs/acme/tokens", Some(body))
        .await;
    match status {
        201 => true,
        409 => {
            assert_eq!(body["error"]["code"], "grant_expired", "{body}");
            false
        }
        _ => panic!("a mint answered {status}: {body}"),
    }
}
