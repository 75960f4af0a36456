//! Several nodes on one PostgreSQL database (DESIGN §12), each a real server on loopback with a
//! real PostgreSQL 15: a change acknowledged by one node is enforced by the other within a
//! second (new devices let in, sessions closed); a node that lost its listening connection
//! reloads everything when it is back; while PostgreSQL is stopped the data path goes on from
//! the snapshots, admin writes answer 503 `store_unavailable`, `/readyz` stays 200 and
//! `/healthz/detail` says so, and everything resumes when it is started again; the node list
//! shows each node's heartbeat, and a killed node as down; a device's TLS session made on one
//! node resumes on the other, never under another org.
//!
//! The tests shorten the heartbeat (`cluster.heartbeat_seconds = 1`) and the silence after which
//! a node is down (`cluster.down_after_seconds = 3`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::*;
use common::mqtt::*;
use common::nodes::*;
use common::*;
use rumqttc::QoS;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore};
use rustls::client::{Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::{HandshakeKind, NamedGroup};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SNI: &str = "acme.messaging.localhost";
/// What DESIGN §12 promises: a change acknowledged by one node is enforced by every node.
const WITHIN: Duration = Duration::from_secs(1);

/// Connects a 3.1.1 device of acme through `server`; a receiver that fires when the session
/// ends. `None` when the node refuses it.
async fn try_live(
    server: &TestServer,
    ca: &TestCa,
    id: &str,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let addr = server
        .bridge(SNI, &ca.client(&format!("d:sensor:{id}"), &[]))
        .await;
    let (client, mut eventloop) = connect_v4(v4_options(addr, &format!("d:acme:sensor:{id}")))
        .await
        .ok()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        while eventloop.poll().await.is_ok() {}
        let _ = tx.send(());
    });
    Some(rx)
}

/// Polls until `server` lets device `id` in, for at most `within`; its session's end receiver.
async fn lets_in(
    server: &TestServer,
    ca: &TestCa,
    id: &str,
    within: Duration,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(live) = try_live(server, ca, id).await {
            return Some(live);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn closes_within(closed: tokio::sync::oneshot::Receiver<()>, within: Duration) -> bool {
    tokio::time::timeout(within, closed).await.is_ok()
}

async fn patch_ca(server: &TestServer, ca_id: &str, active: bool) {
    let (status, body) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            Some(serde_json::json!({ "active": active })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_change_through_one_node_is_enforced_by_the_others_within_a_second() {
    let url = pg::database();
    // Changes through node 1 (A), checked on node 3 (B); node 2 hears them too.
    let ([a, second, b], _dirs) = three_nodes(&url).await;

    // An org and its CA made through A: B lets the device in within a second.
    let (ca, ca_id) = a.org_with_ca("acme").await;
    let dev1 = lets_in(&b, &ca, "dev1", WITHIN).await;
    assert!(
        dev1.is_some(),
        "node B did not let the device in within 1 s"
    );

    // The CA deactivated through A: the session on B is closed within a second.
    patch_ca(&a, &ca_id, false).await;
    assert!(
        closes_within(dev1.unwrap(), WITHIN).await,
        "the session on B outlived the CA's deactivation on A"
    );
    assert!(
        try_live(&b, &ca, "dev1").await.is_none(),
        "B still lets it in"
    );

    // Reactivated through A, a device on B; blocked through A: closed on B.
    patch_ca(&a, &ca_id, true).await;
    let dev2 = lets_in(&b, &ca, "dev2", WITHIN)
        .await
        .expect("reactivated on B");
    a.block("acme", "d:sensor:dev2").await;
    assert!(
        closes_within(dev2, WITHIN).await,
        "the blocked device's session on B outlived its block on A"
    );

    // The org deleted through A: B's sessions of it are closed.
    let dev3 = try_live(&b, &ca, "dev3").await.expect("dev3 on B");
    let (status, _) = a.api("DELETE", "/api/v1/orgs/acme", None).await;
    assert_eq!(status, 204);
    assert!(
        closes_within(dev3, WITHIN).await,
        "the org's session on B outlived it"
    );
    for node in [a, second, b] {
        node.stop().await;
    }
}

/// A TCP proxy to `upstream` that the test can cut (every connection dropped, new ones refused)
/// and restore: one node losing its database while the others keep it.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue;
                }
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test]
async fn a_node_that_lost_its_listener_reloads_everything_when_it_is_back() {
    let url = pg::database();
    let upstream: SocketAddr = url
        .trim_start_matches("postgres://postgres@")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let url_b = url.replace(&upstream.to_string(), &proxy.addr.to_string());
    let (a, b, _dirs) = two_nodes(&url, Some(&url_b)).await;
    let (ca, ca_id) = a.org_with_ca("acme").await;
    let dev1 = lets_in(&b, &ca, "dev1", WITHIN).await.expect("dev1 on B");

    // B loses the database; A deactivates the CA meanwhile: B hears nothing of it.
    proxy.set_cut(true);
    let lost = eventually(STEP, || async {
        health(&b).await["store"] == "unavailable"
    })
    .await;
    assert!(lost, "B never noticed it lost the database");
    patch_ca(&a, &ca_id, false).await;

    // Back: B reloads everything, and the session the change invalidated is closed.
    proxy.set_cut(false);
    assert!(
        closes_within(dev1, STEP).await,
        "B never applied the change it missed"
    );
    let back = eventually(STEP, || async {
        let h = health(&b).await;
        h["store"] == "ok" && h["snapshot_age_seconds"] == 0
    })
    .await;
    assert!(back, "B never reported the store back");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn while_postgres_is_stopped_devices_go_on_and_admin_writes_answer_503() {
    let db = Arc::new(pg::own_server());
    let url = db.database();
    let (a, b, _dirs) = two_nodes(&url, None).await;
    let (ca, _) = a.org_with_ca("acme").await;
    lets_in(&b, &ca, "probe", WITHIN).await.expect("acme on B");
    let all_events = "iot-2/type/+/id/+/evt/+/fmt/+";
    let (_app, mut inbox) = subscribed_v4(&b, &ca, "acme", "a:watch", all_events).await;
    let device = publisher_v4(&b, &ca, "acme", "d:sensor:dev1").await;

    let stopping = db.clone();
    step(tokio::task::spawn_blocking(move || stopping.stop()))
        .await
        .unwrap();
    let unavailable = eventually(STEP, || async {
        health(&b).await["store"] == "unavailable"
    })
    .await;
    assert!(
        unavailable,
        "/healthz/detail never said the store is unavailable"
    );
    let detail = health(&b).await;
    assert_eq!(detail["broker"], "ok");
    assert_eq!(detail["upstreams"], serde_json::json!([]));
    assert!(detail["snapshot_age_seconds"].is_u64(), "{detail}");

    // The node still serves devices: ready, the live session goes on, a known device connects.
    let ready = step(reqwest::get(b.url("/readyz"))).await.unwrap();
    assert_eq!(ready.status(), 200);
    step(device.publish(
        "iot-2/evt/status/fmt/json",
        QoS::AtLeastOnce,
        false,
        "during",
    ))
    .await
    .unwrap();
    let got = step(inbox.recv())
        .await
        .expect("the application's session ended");
    assert_eq!(&got.payload[..], b"during");
    assert!(
        try_live(&b, &ca, "dev2").await.is_some(),
        "a known device was refused"
    );

    // Admin writes answer 503 store_unavailable (within the step's 10 s), on either node.
    for node in [&a, &b] {
        let (status, body) = node
            .api(
                "POST",
                "/api/v1/orgs",
                Some(serde_json::json!({"id": "beta", "name": "b"})),
            )
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable");
    }

    // Started again: admin works without a restart, and changes propagate again.
    let starting = db.clone();
    step(tokio::task::spawn_blocking(move || starting.start()))
        .await
        .unwrap();
    let created = eventually(STEP, || async {
        let (status, _) = a
            .api(
                "POST",
                "/api/v1/orgs",
                Some(serde_json::json!({"id": "beta", "name": "b"})),
            )
            .await;
        status == 201
    })
    .await;
    assert!(created, "admin writes never came back");
    let beta_ca = TestCa::root("beta devices CA");
    a.upload_ca("beta", &beta_ca).await;
    let beta_device = beta_ca.client("d:sensor:dev1", &[]);
    let addr = b.bridge("beta.messaging.localhost", &beta_device).await;
    let connected = eventually(STEP, || async {
        connect_v4(v4_options(addr, "d:beta:sensor:dev1"))
            .await
            .is_ok()
    })
    .await;
    assert!(connected, "a change after the outage never reached B");
    let healthy = eventually(STEP, || async { health(&b).await["store"] == "ok" }).await;
    assert!(healthy, "B never reported the store back");
    a.stop().await;
    b.stop().await;
}

/// `node_id`'s status in `server`'s node list (`None`: not listed).
async fn status_of(server: &TestServer, node_id: &str) -> Option<String> {
    listed_nodes(server)
        .await
        .iter()
        .find(|n| n["node_id"] == node_id)
        .map(|n| n["status"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_node_list_shows_both_nodes_and_a_killed_one_as_down() {
    let url = pg::database();
    let dir_a = tempfile::tempdir().unwrap();
    let a = node(dir_a.path(), &url).await;
    let dir_b = tempfile::tempdir().unwrap();
    beside(dir_a.path(), dir_b.path());
    let (mut b, b_node) = portcullis(dir_b.path(), &url, "node-b", &[]);

    // Node A's id is `<hostname>-<mqtts port>`.
    let suffix = format!("-{}", a.mqtts.port());
    let own_id = || async {
        let (_, body) = a.api("GET", "/api/v1/cluster/nodes", None).await;
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node_id"].as_str())
            .find(|id| id.ends_with(&suffix) && id.len() > suffix.len())
            .map(str::to_owned)
    };
    let listed = eventually(STEP, || async { own_id().await.is_some() }).await;
    assert!(
        listed,
        "node A never listed itself as <hostname>-<mqtts port>"
    );
    let a_id = own_id().await.unwrap();
    let both_up = eventually(STEP, || async {
        status_of(&a, &a_id).await.as_deref() == Some("up")
            && status_of(&a, "node-b").await.as_deref() == Some("up")
    })
    .await;
    assert!(both_up, "both nodes were never listed up");
    let (_, body) = a.api("GET", "/api/v1/cluster/nodes", None).await;
    let listed = &body["items"][0];
    for field in ["started_at", "last_seen", "version"] {
        assert!(listed[field].is_string(), "{listed}");
    }
    assert!(listed["sessions"].is_u64(), "{listed}");

    // An org token may not list nodes.
    let (ca, _) = a.org_with_ca("acme").await;
    let (_, token) = a.issue_token("acme", "ops", "operator").await;
    let (status, _) = a.api_as(&token, "GET", "/api/v1/cluster/nodes", None).await;
    assert_eq!(status, 403);

    // A device on B is in A's session list, with B's node id.
    let addr = b_node.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let deadline = tokio::time::Instant::now() + STEP;
    let (_device, _eventloop) = loop {
        match connect_v4(v4_options(addr, "d:acme:sensor:dev1")).await {
            Ok(connected) => break connected,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("node B never let the device in: {error:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let sessions_on_a = || async {
        let (status, body) = a.api("GET", "/api/v1/orgs/acme/sessions", None).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        items
            .iter()
            .map(|s| s["node"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let listed = eventually(STEP, || async { sessions_on_a().await == ["node-b"] }).await;
    assert!(
        listed,
        "A never listed B's session: {:?}",
        sessions_on_a().await
    );

    // Killed, B is down once its heartbeat is `down_after` old, and its session leaves A's list
    // by then (DESIGN §12).
    b.kill();
    let down = eventually(STEP, || async {
        status_of(&a, "node-b").await.as_deref() == Some("down")
    })
    .await;
    assert!(down, "the killed node was never listed down");
    assert_eq!(sessions_on_a().await, Vec::<String>::new());
    assert_eq!(status_of(&a, &a_id).await.as_deref(), Some("up"));
    a.stop().await;
}

#[tokio::test]
async fn on_sqlite_the_node_list_is_the_one_node() {
    let server = TestServer::start_with(|config| {
        config.store.url = None;
        config.cluster.node_id = Some("solo".into());
    })
    .await;
    let listed = eventually(STEP, || async {
        status_of(&server, "solo").await.is_some()
    })
    .await;
    assert!(listed, "the node never listed itself");
    let (status, body) = server.api("GET", "/api/v1/cluster/nodes", None).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["node_id"], "solo");
    assert_eq!(items[0]["status"], "up");
    assert_eq!(items[0]["leader"], true, "the one node leads");
    let detail = health(&server).await;
    assert_eq!(
        (&detail["store"], &detail["leader"]),
        (&"ok".into(), &true.into())
    );
    server.stop().await;
}

/// A device's session store: rustls' own, counting the TLS 1.3 tickets it is given and, while
/// `offer_as` is set, offering under any name the tickets kept for that one (a device presenting
/// acme's ticket under beta's SNI), counting those it offers.
#[derive(Debug)]
struct Tickets {
    inner: ClientSessionMemoryCache,
    received: AtomicUsize,
    offered: AtomicUsize,
    offer_as: Mutex<Option<ServerName<'static>>>,
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.received.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let offer_as = self.offer_as.lock().unwrap().clone();
        let taken = self
            .inner
            .take_tls13_ticket(offer_as.as_ref().unwrap_or(name));
        if taken.is_some() {
            self.offered.fetch_add(1, Ordering::SeqCst);
        }
        taken
    }
}

/// A TLS connection through `server` with `sni`, kept until the server's ticket reached
/// `tickets`: how it was made, full or resumed.
async fn handshake(
    server: &TestServer,
    sni: &str,
    config: &Arc<rustls::ClientConfig>,
    tickets: &Tickets,
) -> HandshakeKind {
    let before = tickets.received.load(Ordering::SeqCst);
    let mut stream = server.tls_with(sni, config.clone()).await.unwrap();
    let kind = stream.get_ref().1.handshake_kind().unwrap();
    let deadline = tokio::time::Instant::now() + STEP;
    while tickets.received.load(Ordering::SeqCst) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ticket from {sni}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut [0u8; 1])).await;
    }
    kind
}

#[tokio::test]
async fn a_tls_session_made_on_one_node_resumes_on_another_never_under_another_org() {
    let url = pg::database();
    // Tickets made on node 1 (A), offered to node 3 (B).
    let ([a, second, b], _dirs) = three_nodes(&url).await;
    // acme and beta trust the same CA, so only resumption tells them apart.
    let (ca, _) = a.org_with_ca("acme").await;
    a.create_org("beta").await;
    a.upload_ca("beta", &ca).await;
    const BETA: &str = "beta.messaging.localhost";
    let device = ca.client("d:sensor:dev1", &[]);
    lets_in(&b, &ca, "probe", WITHIN).await.expect("acme on B");
    let beta_on_b = b.bridge(BETA, &device).await;
    let known = eventually(STEP, || async {
        connect_v4(v4_options(beta_on_b, "d:beta:sensor:dev1"))
            .await
            .is_ok()
    })
    .await;
    assert!(known, "beta never reached B");

    // One device, one session store across its connections to either node.
    let tickets = Arc::new(Tickets {
        inner: ClientSessionMemoryCache::new(8),
        received: AtomicUsize::new(0),
        offered: AtomicUsize::new(0),
        offer_as: Mutex::new(None),
    });
    let mut config = (*a.tls_config(Some(&device), &[])).clone();
    config.resumption = rustls::client::Resumption::store(tickets.clone());
    let config = Arc::new(config);

    // acme's ticket from A, offered under beta's SNI on B: a full handshake, which beta's trust
    // lets in.
    assert_eq!(
        handshake(&a, SNI, &config, &tickets).await,
        HandshakeKind::Full
    );
    *tickets.offer_as.lock().unwrap() = Some(ServerName::try_from(SNI).unwrap());
    assert_eq!(
        handshake(&b, BETA, &config, &tickets).await,
        HandshakeKind::Full,
        "acme's ticket resumed under beta"
    );
    *tickets.offer_as.lock().unwrap() = None;
    assert_eq!(
        tickets.offered.load(Ordering::SeqCst),
        1,
        "no ticket offered"
    );

    // acme's ticket from A, on B under acme: resumed.
    assert_eq!(
        handshake(&a, SNI, &config, &tickets).await,
        HandshakeKind::Full
    );
    assert_eq!(
        handshake(&b, SNI, &config, &tickets).await,
        HandshakeKind::Resumed,
        "A's ticket did not resume on B"
    );
    assert_eq!(tickets.offered.load(Ordering::SeqCst), 2);
    for node in [a, second, b] {
        node.stop().await;
    }
}

/// `uses` of the grant on acme's default signing certificate, as `server` shows it.
async fn signing_uses(server: &TestServer) -> i64 {
    let (status, body) = server.api("GET", "/api/v1/orgs/acme/grants", None).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    let grant = items
        .iter()
        .find(|g| g["holder"] == "signing_certificate")
        .unwrap_or_else(|| panic!("no signing certificate grant: {body}"));
    grant["uses"].as_i64().unwrap()
}

/// Grant uses are never under-counted after a node's kill -9 (DESIGN §12): the tokens a killed
/// node signed stay counted, its whole block of reserved uses with them, on the node that lives.
#[tokio::test]
async fn a_killed_node_s_signatures_stay_counted_in_its_grant() {
    let url = pg::database();
    let dir_a = tempfile::tempdir().unwrap();
    let a = node(dir_a.path(), &url).await;
    a.create_org("acme").await;
    let dir_b = tempfile::tempdir().unwrap();
    beside(dir_a.path(), dir_b.path());
    let (mut b, b_node) = portcullis(dir_b.path(), &url, "node-b", &[]);
    for n in 0..3 {
        let (status, body) = b_node
            .api(
                "POST",
                "/api/v1/orgs/acme/tokens",
                Some(serde_json::json!({"name": format!("t{n}"), "role": "viewer", "ttl_seconds": 3600})),
            )
            .await;
        assert_eq!(status, 201, "a token signed on node B: {body}");
    }

    b.kill();
    let counted = eventually(STEP, || async { signing_uses(&a).await >= 3 }).await;
    assert!(counted, "the killed node's signatures were never counted");
    assert_eq!(
        signing_uses(&a).await,
        100,
        "its whole block counts as spent"
    );
    a.issue_token("acme", "ops", "operator").await;
    assert_eq!(signing_uses(&a).await, 101);
    a.stop().await;
}
