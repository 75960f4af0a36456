//! `?dry_run=true` (DESIGN §13): what a change would close and lock out, with live sessions
//! under several CAs, one of them vouched for by two; nothing changes, and the real change then
//! closes exactly what its dry run listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// Org acme with a root, an intermediate of that root and another root, all uploaded; a live
/// device under each (the intermediate's device sends it, so the root vouches for it too; the
/// root's device's certificate claims a second identity, `d:sensor:spare3`), each in the device
/// registry.
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
    for (ca, id, also) in [
        (&intermediate_ca, "dev1", &[][..]),
        (&other_ca, "dev2", &[]),
        (&root_ca, "dev3", &["d:sensor:spare3"]),
    ] {
        let cert = ca.client(&format!("d:sensor:{id}"), also);
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

    // The root vouches for dev1 when its intermediate goes: its session stays, and the device
    // registry remembers the root vouching too.
    let (_, answer) = server
        .api("PATCH", &ca(&intermediate), deactivate.clone())
        .await;
    assert_eq!(would(&answer), (Vec::new(), Vec::new()), "{answer}");
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
    // Blocking the other identity dev3's certificate claims: the registry remembers the claim.
    let (_, answer) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices?dry_run=true",
            Some(json!({"identity": "d:sensor:spare3"})),
        )
        .await;
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

/// A 3.1.1 client of org acme through a bridge, subscribed to `filter` when given, driven in the
/// background: its publishes come through the receiver, which ends with the connection.
async fn policy_client(
    server: &TestServer,
    ca: &TestCa,
    cn: &str,
    will: Option<&str>,
    filter: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let cert = ca.client(cn, &[]);
    let addr = server.bridge("acme.messaging.localhost", &cert).await;
    let client_id = cn.replacen(':', ":acme:", 1);
    let mut options = mqtt::v4_options(addr, &client_id);
    if let Some(topic) = will {
        options.set_last_will(rumqttc::LastWill::new(
            topic,
            "gone",
            rumqttc::QoS::AtMostOnce,
            false,
        ));
    }
    let (client, mut eventloop) = mqtt::connect_v4(options).await.unwrap();
    if let Some(filter) = filter {
        let codes =
            mqtt::subscribe_v4(&client, &mut eventloop, filter, rumqttc::QoS::AtMostOnce).await;
        assert_eq!(
            codes,
            vec![rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::AtMostOnce
            )],
            "{cn} {filter}"
        );
    }
    (client, mqtt::drive_v4(eventloop))
}

#[tokio::test]
async fn a_topic_policy_change_closes_what_its_dry_run_listed_and_the_rest_follow_it() {
    let (server, ca) = TestServer::start_open_org("acme").await;
    // Under `open`: a filter iot-2 refuses, a device's short form (its own commands under
    // iot-2, a topic of that name under open), an app's typed filter (the same under both), no
    // subscription, and a will iot-2 refuses.
    let (_a, mut a) = policy_client(&server, &ca, "d:sensor:a", None, Some("foo/#")).await;
    let (_b, mut b) =
        policy_client(&server, &ca, "d:sensor:b", None, Some("iot-2/cmd/+/fmt/+")).await;
    let typed = "iot-2/type/+/id/+/evt/+/fmt/+";
    let (_app, mut app) = policy_client(&server, &ca, "a:dash", None, Some(typed)).await;
    let (d_client, mut d) = policy_client(&server, &ca, "d:sensor:d", None, None).await;
    let (_e, mut e) = policy_client(&server, &ca, "d:sensor:e", Some("foo/will"), None).await;
    let before = server.looks("acme").await;
    assert_eq!(before["sessions"]["items"].as_array().unwrap().len(), 5);

    let change = Some(json!({"topic_policy": "iot-2"}));
    let (status, answer) = server
        .api("PATCH", "/api/v1/orgs/acme?dry_run=true", change.clone())
        .await;
    assert_eq!(status, 200, "{answer}");
    let listed = vec![
        "d:acme:sensor:a".to_owned(),
        "d:acme:sensor:b".into(),
        "d:acme:sensor:e".into(),
    ];
    assert_eq!(would(&answer), (listed, Vec::new()));
    // The policy the org has already closes nothing.
    let (_, answer) = server
        .api(
            "PATCH",
            "/api/v1/orgs/acme?dry_run=true",
            Some(json!({"topic_policy": "open"})),
        )
        .await;
    assert!(would(&answer).0.is_empty(), "no change: {answer}");
    assert_eq!(server.looks("acme").await, before, "nothing changed");
    for inbox in [&mut a, &mut b, &mut app, &mut d, &mut e] {
        assert!(!ends_within(inbox, Duration::from_millis(100)).await);
    }

    let (status, org) = server.api("PATCH", "/api/v1/orgs/acme", change).await;
    assert_eq!((status, &org["topic_policy"]), (200, &json!("iot-2")));
    for (name, inbox) in [("a", &mut a), ("b", &mut b), ("e", &mut e)] {
        assert!(
            ends_within(inbox, Duration::from_secs(1)).await,
            "{name} closed"
        );
    }
    assert!(!ends_within(&mut app, Duration::from_secs(1)).await);
    let (_, sessions) = server.api("GET", "/api/v1/orgs/acme/sessions", None).await;
    let mut left: Vec<&str> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap())
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["a:acme:dash", "d:acme:sensor:d"]);

    // The sessions left follow iot-2: the device's short form is its own event now, which the
    // app receives typed; a topic outside iot-2 closes the 3.1.1 device.
    d_client
        .publish(
            "iot-2/evt/x/fmt/json",
            rumqttc::QoS::AtMostOnce,
            false,
            "hi",
        )
        .await
        .unwrap();
    let got = step(app.recv()).await.expect("the app receives the event");
    assert_eq!(got.topic, "iot-2/type/sensor/id/d/evt/x/fmt/json");
    d_client
        .publish("foo/bar", rumqttc::QoS::AtMostOnce, false, "no")
        .await
        .unwrap();
    assert!(ends_within(&mut d, Duration::from_secs(5)).await);
}

/// Another node's sessions are judged as that node judges them: by every CA that vouched for the
/// chain and every identity the certificate claims, as it recorded them in the store.
#[tokio::test]
async fn a_dry_run_judges_another_node_s_sessions_as_that_node_would() {
    let url = pg::database();
    let (a, b, _dirs) = nodes::two_nodes_where(&url, None, |_| {}).await;
    a.create_org("acme").await;
    let root_ca = TestCa::root("acme root");
    let intermediate_ca = root_ca.intermediate("acme intermediate");
    a.upload_ca("acme", &root_ca).await;
    let intermediate = a.upload_ca("acme", &intermediate_ca).await;
    // Once node B's registry has heard of the CAs (its `explain` accepts), devices connect there.
    let cert = intermediate_ca.client("d:sensor:dev1", &[]);
    let chain = json!({"certificate_chain": cert.chain_pem()});
    let heard = eventually(Duration::from_secs(10), || async {
        let (_, answer) = b
            .api("POST", "/api/v1/orgs/acme/explain", Some(chain.clone()))
            .await;
        answer["accepted"] == true
    })
    .await;
    assert!(heard, "node B admits the intermediate's devices");
    let mut dev1 = b.live_device(&cert, "dev1").await;
    let dev3 = b
        .live_device(
            &root_ca.client("d:sensor:dev3", &["d:sensor:spare3"]),
            "dev3",
        )
        .await;
    let listed = eventually(Duration::from_secs(10), || async {
        let (_, body) = a.api("GET", "/api/v1/orgs/acme/sessions", None).await;
        body["items"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    assert!(listed, "node A lists node B's two sessions");

    let path = format!("/api/v1/orgs/acme/ca-certificates/{intermediate}");
    let deactivate = Some(json!({"active": false}));
    let (_, answer) = a
        .api("PATCH", &format!("{path}?dry_run=true"), deactivate.clone())
        .await;
    assert!(would(&answer).0.is_empty(), "the root vouches: {answer}");
    let block = Some(json!({"identity": "d:sensor:spare3"}));
    let blocked = "/api/v1/orgs/acme/blocked-devices";
    let (_, answer) = a
        .api("POST", &format!("{blocked}?dry_run=true"), block.clone())
        .await;
    assert_eq!(would(&answer).0, vec!["d:acme:sensor:dev3".to_owned()]);

    // The real changes through A: node B closes what the dry runs listed, and only that.
    let (status, _) = a.api("PATCH", &path, deactivate).await;
    assert_eq!(status, 200);
    let (status, _) = a.api("POST", blocked, block).await;
    assert_eq!(status, 201);
    assert!(closes_within_a_second(dev3).await, "dev3 closed on B");
    let stays = tokio::time::timeout(Duration::from_secs(1), &mut dev1).await;
    assert!(stays.is_err(), "dev1 stays on B, as the dry run said");
    a.stop().await;
    b.stop().await;
}

/// A persistent 3.1.1 session of `cn` through a bridge: whether the server had its session, and
/// the client, subscribed to `filter` when given, after which it disconnects cleanly.
async fn persistent(server: &TestServer, ca: &TestCa, cn: &str, filter: Option<&str>) -> bool {
    let cert = ca.client(cn, &[]);
    let addr = server.bridge("acme.messaging.localhost", &cert).await;
    let mut options = mqtt::v4_options(addr, &cn.replacen(':', ":acme:", 1));
    options.set_clean_session(false);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    let present = mqtt::next_v4(&mut eventloop, |packet| match packet {
        rumqttc::Packet::ConnAck(ack) => Some(ack.session_present),
        _ => None,
    })
    .await
    .unwrap();
    if let Some(filter) = filter {
        mqtt::subscribe_v4(&client, &mut eventloop, filter, rumqttc::QoS::AtLeastOnce).await;
    }
    client.disconnect().await.unwrap();
    while step(eventloop.poll()).await.is_ok() {}
    present
}

/// A persistent session kept for a device that is offline when the policy changes is resumed only
/// if what it holds means the same under the new policy; otherwise it starts clean.
#[tokio::test]
async fn a_kept_session_holding_what_the_new_policy_refuses_starts_clean() {
    let (server, ca) = TestServer::start_open_org("acme").await;
    let typed = "iot-2/type/+/id/+/evt/+/fmt/+";
    assert!(!persistent(&server, &ca, "d:sensor:p", Some("foo/#")).await);
    assert!(!persistent(&server, &ca, "a:dash", Some(typed)).await);
    assert!(persistent(&server, &ca, "d:sensor:p", None).await, "kept");

    let change = Some(json!({"topic_policy": "iot-2"}));
    let (status, _) = server.api("PATCH", "/api/v1/orgs/acme", change).await;
    assert_eq!(status, 200);
    assert!(
        !persistent(&server, &ca, "d:sensor:p", None).await,
        "`foo/#` is refused under iot-2: the session starts clean"
    );
    assert!(
        persistent(&server, &ca, "a:dash", None).await,
        "the app's filter means the same: resumed"
    );
}
