//! The server on PostgreSQL (`store.url`, DESIGN §12), end to end on a real PostgreSQL 15 on
//! loopback: the admin API and a device over mTLS through a server whose store is PostgreSQL
//! (every store call must run off the runtime's workers, or the blocking client panics); two
//! nodes on one database sharing the platform CA, the default server certificate, the admin
//! token and each other's orgs; the real binary refusing to start, exit 64, with a master key
//! that does not open the database; and TLS to a database that takes nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::*;
use common::*;

const SNI: &str = "acme.messaging.localhost";

#[tokio::test]
async fn a_device_connects_through_a_server_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on_store(dir.path().into(), Some(pg::database())).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (device, _eventloop) = connected_v4(&server, &ca, "acme", "d:sensor:dev1").await;
    // The device writer recorded the device in PostgreSQL (off the runtime's workers).
    let listed = eventually(STEP, || async {
        let (status, body) = server.api("GET", "/api/v1/orgs/acme/devices", None).await;
        status == 200
            && body["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
    })
    .await;
    assert!(listed, "the device was never listed");
    drop(device);
    server.stop().await;
}

#[tokio::test]
async fn two_nodes_on_one_database_share_what_is_stored_once() {
    let url = pg::database();
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = TestServer::start_on_store(dir1.path().into(), Some(url.clone())).await;
    // Every node holds the same master key: the operator copies it (or sets
    // PORTCULLIS_MASTER_KEY).
    std::fs::copy(
        dir1.path().join("master.key"),
        dir2.path().join("master.key"),
    )
    .unwrap();
    let node2 = TestServer::start_on_store(dir2.path().into(), Some(url.clone())).await;
    assert_eq!(node1.platform_ca, node2.platform_ca, "one platform CA");
    assert_eq!(node1.token, node2.token, "one bootstrap admin token");

    let (ca, _) = node1.org_with_ca("acme").await;
    // The admin API of node 2 reads the shared store.
    let (status, _) = node2.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(status, 200);

    // Node 2 serves devices from its snapshot, loaded at start: restarted, it has acme.
    let (dir2_path, _) = node2.stop().await;
    let node2 = TestServer::start_on_store(dir2_path, Some(url)).await;
    let (_client, _eventloop) = connected_v4(&node2, &ca, "acme", "d:sensor:dev2").await;

    // Both nodes present the one default server certificate.
    assert_eq!(
        default_cert(&node1, &ca).await,
        default_cert(&node2, &ca).await
    );
    node1.stop().await;
    node2.stop().await;
}

/// The certificate a node presents for acme, which has none of its own: the platform default.
async fn default_cert(server: &TestServer, ca: &TestCa) -> Vec<u8> {
    let device = ca.client("d:sensor:tls", &[]);
    let tls = server.tls(SNI, Some(&device)).await.unwrap();
    let (_, connection) = tls.get_ref();
    connection.peer_certificates().unwrap()[0].to_vec()
}

/// The real binary on PostgreSQL with `master_key`, in `dir`.
fn portcullis(dir: &std::path::Path, url: &str, master_key: &str) -> std::process::Child {
    portcullis_command(dir, url, master_key).spawn().unwrap()
}

/// [`portcullis`], before it is spawned.
fn portcullis_command(dir: &std::path::Path, url: &str, master_key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .current_dir(dir)
        .arg("serve")
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .env("PORTCULLIS_MASTER_KEY", master_key)
        .env("PORTCULLIS__STORE__URL", url)
        .env("PORTCULLIS__MQTTS__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn,rumqttd=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for the binary's first line: it is serving.
fn serving(child: &mut std::process::Child) {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("MQTTS on 127.0.0.1:"), "{line}");
}

#[test]
fn a_node_whose_master_key_does_not_open_the_database_exits_64() {
    let url = pg::database();
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = portcullis(dir1.path(), &url, &"11".repeat(32));
    serving(&mut first);

    let second = portcullis(dir2.path(), &url, &"22".repeat(32));
    let (status, stderr) = exited(second);
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("master key"), "{stderr}");

    // The same key as the first node's starts.
    let mut third = portcullis(dir2.path(), &url, &"11".repeat(32));
    serving(&mut third);
    for mut child in [first, third] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_store_url_that_is_not_postgres_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .arg("serve")
        .env("PORTCULLIS__STORE__URL", "mysql://db.internal/portcullis")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("store.url"));
}

/// How a node that cannot start exits, and what it said on stderr.
fn exited(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the node did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[tokio::test]
async fn nodes_reach_postgres_over_tls_verified_against_the_store_ca_file_and_only_so() {
    let database_ca = TestCa::root("database CA");
    let certificate = database_ca.server(&["127.0.0.1"]);
    // This server rejects every TCP connection that is not TLS.
    let postgres = pg::own_server_tls(&certificate.chain, &certificate.key);
    let url = postgres.database();
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let ca_file = write("database-ca.pem", &database_ca.pem);
    let wrong_ca = write("wrong-ca.pem", &TestCa::root("someone else").pem);

    // Refused, each with a message that says why: no TLS (the database rejects it); a CA that does
    // not vouch for the database's certificate; a URL asking for TLS without a CA to verify it.
    let key = "33".repeat(32);
    let attempts = [
        (url.clone(), None, "pg_hba.conf"),
        (url.clone(), Some(&wrong_ca), "certificate"),
        (format!("{url}?sslmode=require"), None, "store.ca_file"),
    ];
    for (url, ca, why) in attempts {
        let dir = tempfile::tempdir().unwrap();
        let mut node = portcullis_command(dir.path(), &url, &key);
        if let Some(ca) = ca {
            node.env("PORTCULLIS__STORE__CA_FILE", ca);
        }
        let (status, stderr) = exited(node.spawn().unwrap());
        assert!(!status.success(), "{url} {ca:?}: {stderr}");
        assert!(stderr.contains(why), "{url} {ca:?}: {stderr}");
    }

    // With the CA: two nodes start (pool, listener, leader and holder locks all over TLS, or the
    // database would reject them); an org made through one is served by the other within a
    // second (its listening connection follows the change).
    let tls = |config: &mut portcullis::config::Config| {
        config.store.ca_file = Some(ca_file.clone());
    };
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = TestServer::start_in(dir1.path().into(), |config| {
        config.store.url = Some(url.clone());
        tls(config);
    })
    .await;
    std::fs::copy(
        dir1.path().join("master.key"),
        dir2.path().join("master.key"),
    )
    .unwrap();
    let node2 = TestServer::start_in(dir2.path().into(), |config| {
        config.store.url = Some(url.clone());
        tls(config);
    })
    .await;
    let (ca, _) = node1.org_with_ca("acme").await;
    let addr = node2.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let connected = eventually(Duration::from_secs(1), || async {
        let options = common::mqtt::v4_options(addr, "d:acme:sensor:dev1");
        common::mqtt::connect_v4(options).await.is_ok()
    })
    .await;
    assert!(
        connected,
        "node 2 did not let acme's device in within a second"
    );
    node1.stop().await;
    node2.stop().await;
}
