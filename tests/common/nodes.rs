//! Nodes of one cluster for the tests (DESIGN §12): real servers on loopback sharing one real
//! PostgreSQL database and one master key, with a short heartbeat (`cluster.heartbeat_seconds =
//! 1`) and a short silence before a node is down (`cluster.down_after_seconds = 3`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis::config::Config;

use super::{step, TestServer};

/// A node on `url` in `dir`, with a short heartbeat; `adjust` changes the rest.
pub async fn node_where(dir: &Path, url: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let url = url.to_owned();
    TestServer::start_in(dir.into(), move |config| {
        config.store.url = Some(url);
        config.cluster.heartbeat_interval = Duration::from_secs(1);
        config.cluster.down_after = Duration::from_secs(3);
        adjust(config);
    })
    .await
}

pub async fn node(dir: &Path, url: &str) -> TestServer {
    node_where(dir, url, |_| {}).await
}

/// Two nodes on `url` (node B on `url_b` when given: a proxy in front of the same database),
/// sharing the master key as every node must, each configured by `adjust`; their data
/// directories live as long as the pair.
pub async fn two_nodes_where(
    url: &str,
    url_b: Option<&str>,
    adjust: fn(&mut Config),
) -> (TestServer, TestServer, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = node_where(dirs[0].path(), url, adjust).await;
    std::fs::copy(
        dirs[0].path().join("master.key"),
        dirs[1].path().join("master.key"),
    )
    .unwrap();
    let b = node_where(dirs[1].path(), url_b.unwrap_or(url), adjust).await;
    (a, b, dirs)
}

/// `count` nodes on `url` sharing the master key, node `i` configured by `adjust(i, …)`; their
/// data directories live as long as the nodes.
pub async fn nodes_where(
    url: &str,
    count: usize,
    adjust: impl Fn(usize, &mut Config),
) -> (Vec<TestServer>, Vec<tempfile::TempDir>) {
    let dirs: Vec<_> = (0..count).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::with_capacity(count);
    for (i, dir) in dirs.iter().enumerate() {
        if i > 0 {
            std::fs::copy(
                dirs[0].path().join("master.key"),
                dir.path().join("master.key"),
            )
            .unwrap();
        }
        nodes.push(node_where(dir.path(), url, |config| adjust(i, config)).await);
    }
    (nodes, dirs)
}

/// Three nodes on `url`, sharing the master key.
pub async fn three_nodes(url: &str) -> ([TestServer; 3], Vec<tempfile::TempDir>) {
    let (nodes, dirs) = nodes_where(url, 3, |_, _| {}).await;
    let Ok(nodes) = <[TestServer; 3]>::try_from(nodes) else {
        unreachable!("three nodes asked for")
    };
    (nodes, dirs)
}

pub async fn two_nodes(
    url: &str,
    url_b: Option<&str>,
) -> (TestServer, TestServer, [tempfile::TempDir; 2]) {
    two_nodes_where(url, url_b, |_| {}).await
}

impl TestServer {
    /// Blocks `org`'s device `identity` (`d:sensor:dev1`) through this node.
    pub async fn block(&self, org: &str, identity: &str) {
        let (status, body) = self
            .api(
                "POST",
                &format!("/api/v1/orgs/{org}/blocked-devices"),
                Some(serde_json::json!({"identity": identity, "reason": "stolen"})),
            )
            .await;
        assert_eq!(status, 201, "block {identity}: {body}");
    }
}

/// The node's `/healthz/detail` (no token).
pub async fn health(server: &TestServer) -> serde_json::Value {
    let response = step(reqwest::get(server.url("/healthz/detail")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    step(response.json()).await.unwrap()
}

/// Which of `a` and `b` leads, as their `/healthz/detail` say once one does: (leader, other).
pub async fn by_lead(a: TestServer, b: TestServer) -> (TestServer, TestServer) {
    let led = super::eventually(super::STEP, || async {
        health(&a).await["leader"] == true || health(&b).await["leader"] == true
    })
    .await;
    assert!(led, "no node took the lead");
    let a_leads = health(&a).await["leader"] == true;
    let b_leads = health(&b).await["leader"] == true;
    assert_ne!(a_leads, b_leads, "both nodes lead");
    if a_leads {
        (a, b)
    } else {
        (b, a)
    }
}

/// The items of `server`'s node list (`GET /api/v1/cluster/nodes`).
pub async fn listed_nodes(server: &TestServer) -> Vec<serde_json::Value> {
    let (status, body) = server.api("GET", "/api/v1/cluster/nodes", None).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// The real binary as a child process; killed (SIGKILL) when dropped.
pub struct Process(Child);

impl Process {
    /// SIGKILL, and waits for it to be gone: no shutdown of any kind.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real binary on `url`, in `dir` (holding `data/master.key`), named `node_id`, with `env`
/// added to its environment: the process, and the node as the tests reach it (its admin API with
/// the admin token, its MQTTS listener with the platform CA).
pub fn portcullis(
    dir: &Path,
    url: &str,
    node_id: &str,
    env: &[(String, String)],
) -> (Process, TestServer) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir)
        .arg("serve")
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .env_remove("PORTCULLIS_MASTER_KEY")
        .env("PORTCULLIS__STORE__URL", url)
        .env("PORTCULLIS__MQTTS__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS__ADMIN__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS__CLUSTER__NODE_ID", node_id)
        .env("PORTCULLIS__CLUSTER__HEARTBEAT_SECONDS", "1")
        .env("PORTCULLIS__CLUSTER__DOWN_AFTER_SECONDS", "3")
        .env("RUST_LOG", "warn,rumqttd=off")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let process = Process(child);
    // "MQTTS on <addr>, admin API on <addr>"
    let addrs: Option<(SocketAddr, SocketAddr)> = line
        .trim()
        .strip_prefix("MQTTS on ")
        .and_then(|rest| rest.split_once(", admin API on "))
        .and_then(|(mqtts, admin)| Some((mqtts.parse().ok()?, admin.parse().ok()?)));
    let (mqtts, admin) = addrs.unwrap_or_else(|| panic!("no addresses in {line:?}"));
    let data_dir = dir.join("data");
    let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let pem = std::fs::read(data_dir.join("platform-ca.pem")).unwrap();
    let node = TestServer {
        mqtts,
        admin,
        token: token.trim().to_owned(),
        platform_ca: portcullis::pki::certs_from_pem(&pem).unwrap().remove(0),
        data_dir,
        _dir: None,
        shutdown: None,
        task: None,
        http: reqwest::Client::new(),
    };
    (process, node)
}

/// A node in `dir` beside the one whose data directory is `dir_a`, sharing its master key.
pub fn beside(dir_a: &Path, dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(dir_a.join("master.key"), dir.join("data/master.key")).unwrap();
}
