//! `?dry_run=true` (DESIGN §13): what a change would close and lock out, with live sessions
//! under several CAs, one of them vouched for by two; nothing changes, and the real change then
//! closes exactly what its dry run listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// Org acme with a root, an intermediate of that root and another root, all uploaded; a live
/// device under each (the intermediate's device sends it, so the root vouches for it too), each
/// in the device registry.
struct Fleet {
    server: TestServer,
    root: String,
    intermediate: String,
    other: String,
    /// dev1 (intermediate, root), dev2 (other), dev3 (root).
    live: Vec<tokio::sync::oneshot::Receiver<()>>,
}

async fn fleet() -> Fleet {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let root_ca = TestCa::root("acme root");
    let intermediate_ca = root_ca.intermediate("acme intermediate");
    let other_ca = TestCa::root("acme other");
    let root = server.upload_ca("acme", &root_ca).await;
    let intermediate = server.upload_ca("acme", &intermediate_ca).await;
    let other = server.upload_ca("acme", &other_ca).await;
    let mut live = Vec::new();
    for (ca, id) in [
        (&intermediate_ca, "dev1"),
        (&other_ca, "dev2"),
        (&root_ca, "dev3"),
    ] {
        let cert = ca.client(&format!("d:sensor:{id}"), &[]);
        live.push(server.live_device(&cert, id).await);
    }
    // Sightings reach the device registry about a second after the connects.
    let registered = eventually(Duration::from_secs(10), || async {
        let (_, body) = server.api("GET", "/api/v1/orgs/acme/devices", None).await;
        body["items"].as_array().map_or(0, Vec::len) == 3
    })
    .await;
    assert!(registered, "the three devices are registered");
    Fleet {
        server,
        root,
        intermediate,
        other,
        live,
    }
}

fn would(answer: &Value) -> (Vec<String>, Vec<String>) {
    assert_eq!(answer["dry_run"], true, "{answer}");
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let close = names(&answer["would_close"]["client_ids"]);
    let refuse = names(&answer["would_refuse"]["identities"]);
    assert_eq!(answer["would_close"]["sessions"], close.len());
    assert_eq!(answer["would_refuse"]["devices"], refuse.len());
    (close, refuse)
}

#[tokio::test]
async fn dry_runs_change_nothing_and_the_real_change_closes_what_they_listed() {
    let Fleet {
        server,
        root,
        intermediate,
        other,
        mut live,
    } = fleet().await;
    let before = server.looks("acme").await;
    let ca = |id: &str| format!("/api/v1/orgs/acme/ca-certificates/{id}?dry_run=true");
    let deactivate = Some(json!({"active": false}));

    let (status, answer) = server.api("PATCH", &ca(&other), deactivate.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let other_gone = would(&answer);
    assert_eq!(
        other_gone,
        (
            vec!["d:acme:sensor:dev2".into()],
            vec!["d:sensor:dev2".into()]
        )
    );
    let (status, answer) = server.api("DELETE", &ca(&other), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        would(&answer),
        other_gone,
        "deleting is deactivating, for devices"
    );

    // The root vouches for dev1 when its intermediate goes: its session stays.
    let (_, answer) = server
        .api("PATCH", &ca(&intermediate), deactivate.clone())
        .await;
    assert!(would(&answer).0.is_empty(), "{answer}");
    // Without the root, the intermediate's device and the root's own go.
    let (_, answer) = server.api("PATCH", &ca(&root), deactivate.clone()).await;
    assert_eq!(would(&answer).0, vec!["d:acme:sensor:dev3".to_owned()]);

    let (status, answer) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices?dry_run=true",
            Some(json!({"identity": "d:sensor:dev3", "reason": "stolen"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        would(&answer),
        (
            vec!["d:acme:sensor:dev3".into()],
            vec!["d:sensor:dev3".into()]
        )
    );
    // Bad input is refused as the real change refuses it.
    let (status, answer) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices?dry_run=true",
            Some(json!({"ca_id": "nosuch", "serial": "01"})),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (422, &json!("unknown_ca"))
    );

    let (status, answer) = server
        .api("DELETE", "/api/v1/orgs/acme?dry_run=true", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let (close, refuse) = would(&answer);
    assert_eq!(close.len(), 3);
    assert_eq!(
        refuse,
        vec!["d:sensor:dev1", "d:sensor:dev2", "d:sensor:dev3"]
    );

    // Nothing changed: CAs, blocklist, sessions, audit log, the org.
    assert_eq!(server.looks("acme").await, before);
    assert!(live.iter_mut().all(|closed| closed.try_recv().is_err()));

    // The real changes close exactly what their dry runs listed.
    let dev3 = live.pop().unwrap();
    let dev2 = live.pop().unwrap();
    let mut dev1 = live.pop().unwrap();
    let real = |id: &str| format!("/api/v1/orgs/acme/ca-certificates/{id}");
    let (status, _) = server.api("PATCH", &real(&other), deactivate.clone()).await;
    assert_eq!(status, 200);
    assert!(closes_within_a_second(dev2).await);
    let (status, _) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices",
            Some(json!({"identity": "d:sensor:dev3", "reason": "stolen"})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(closes_within_a_second(dev3).await);
    let (status, _) = server
        .api("PATCH", &real(&intermediate), deactivate.clone())
        .await;
    assert_eq!(status, 200);
    let stays = tokio::time::timeout(Duration::from_secs(1), &mut dev1).await;
    assert!(stays.is_err(), "as its dry run said");
    let (_, sessions) = server.api("GET", "/api/v1/orgs/acme/sessions", None).await;
    assert_eq!(sessions["items"][0]["client_id"], "d:acme:sensor:dev1");
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_dry_run_needs_the_role_of_the_change_and_a_ca_that_exists() {
    let Fleet { server, other, .. } = fleet().await;
    let (_, viewer) = server.issue_token("acme", "viewer", "viewer").await;
    let path = format!("/api/v1/orgs/acme/ca-certificates/{other}?dry_run=true");
    for (method, body) in [("PATCH", Some(json!({"active": false}))), ("DELETE", None)] {
        let (status, _) = server.api_as(&viewer, method, &path, body).await;
        assert_eq!(status, 403, "{method}");
    }
    let (status, _) = server
        .api(
            "DELETE",
            "/api/v1/orgs/acme/ca-certificates/nosuch?dry_run=true",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, operator) = server.issue_token("acme", "op", "operator").await;
    let (status, _) = server
        .api_as(&operator, "DELETE", "/api/v1/orgs/acme?dry_run=true", None)
        .await;
    assert_eq!(status, 403, "deleting an org is the admin's");
}
