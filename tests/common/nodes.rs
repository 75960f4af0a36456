//! Nodes of one cluster for the tests (DESIGN §12): real servers on loopback sharing one real
//! PostgreSQL database and one master key, with a short heartbeat (`cluster.heartbeat_seconds =
//! 1`) and a short silence before a node is down (`cluster.down_after_seconds = 3`).

use std::path::Path;
use std::time::Duration;

use portcullis::config::Config;

use super::{step, TestServer};

/// A node on `url` in `dir`, with a short heartbeat; `adjust` changes the rest.
pub async fn node_where(dir: &Path, url: &str, adjust: fn(&mut Config)) -> TestServer {
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

pub async fn two_nodes(
    url: &str,
    url_b: Option<&str>,
) -> (TestServer, TestServer, [tempfile::TempDir; 2]) {
    two_nodes_where(url, url_b, |_| {}).await
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
