//! `POST …/explain` and `GET …/refusals` (DESIGN §13): what the server would do with a device
//! now, asked without a connection, checked against what real connections of the same
//! certificates meet; and the org's refusals, newest first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::mqtt::*;
use common::*;

const SNI: &str = "acme.messaging.localhost";

async fn explain(server: &TestServer, cert: &ClientCert, client_id: Option<&str>) -> Value {
    let mut body = json!({"certificate_chain": cert.chain_pem()});
    if let Some(client_id) = client_id {
        body["client_id"] = json!(client_id);
    }
    let (status, answer) = server
        .api("POST", "/api/v1/orgs/acme/explain", Some(body))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The stage and reason of a refusal, or `None` when accepted (the message is checked to say so).
fn verdict(answer: &Value) -> Option<(String, String)> {
    let message = answer["message"].as_str().unwrap();
    if answer["accepted"] == true {
        assert!(message.starts_with("accepted"), "{answer}");
        assert!(answer["stage"].is_null() && answer["reason"].is_null());
        return None;
    }
    assert!(message.starts_with("refused at"), "{answer}");
    Some((
        answer["stage"].as_str().unwrap().to_owned(),
        answer["reason"].as_str().unwrap().to_owned(),
    ))
}

fn refusal(stage: &str, reason: &str) -> Option<(String, String)> {
    Some((stage.to_owned(), reason.to_owned()))
}

#[tokio::test]
async fn explain_says_what_a_connection_would_meet_and_connections_meet_it() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);

    // A good device: accepted, with what it may connect as.
    let good = ca.client("d:sensor:dev1", &["g:gw:hub1"]);
    let answer = explain(&server, &good, None).await;
    assert_eq!(verdict(&answer), None);
    assert_eq!(answer["ca_id"], ca_id.as_str());
    assert_eq!(answer["identities"], json!(["d:sensor:dev1", "g:gw:hub1"]));
    assert_eq!(
        answer["client_ids"],
        json!(["d:acme:sensor:dev1", "g:acme:gw:hub1"])
    );
    let answer = explain(&server, &good, Some("g:acme:gw:hub1")).await;
    assert_eq!(verdict(&answer), None);
    // An empty client id is one assigned from the certificate.
    assert_eq!(verdict(&explain(&server, &good, Some("")).await), None);
    let addr = server.bridge(SNI, &good).await;
    assert!(connect_v4(v4_options(addr, "g:acme:gw:hub1")).await.is_ok());

    // A client id the certificate does not claim, or of another org, or not one at all.
    for (client_id, reason) in [
        ("d:acme:sensor:dev2", "identity_mismatch"),
        ("d:beta:sensor:dev1", "org_mismatch"),
        ("dev1", "client_id_invalid"),
    ] {
        let answer = explain(&server, &good, Some(client_id)).await;
        assert_eq!(verdict(&answer), refusal("connect", reason), "{client_id}");
        assert_eq!(answer["ca_id"], ca_id.as_str(), "the handshake got through");
    }
    let code = refused_v4(v4_options(addr, "d:acme:sensor:dev2")).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized);

    // A CA the org never uploaded.
    let stranger = TestCa::root("stranger CA").client("d:sensor:dev1", &[]);
    let answer = explain(&server, &stranger, None).await;
    assert_eq!(verdict(&answer), refusal("tls", "unknown_ca"));
    assert!(answer["ca_id"].is_null());
    assert_eq!(
        tls_refusal(server.tls(SNI, Some(&stranger)).await).await,
        rustls::AlertDescription::UnknownCA
    );

    // Expired, and not valid yet.
    let expired = ca.client_valid("d:sensor:old", &[], now - 30 * day, now - day);
    let answer = explain(&server, &expired, None).await;
    assert_eq!(verdict(&answer), refusal("tls", "certificate_expired"));
    let early = ca.client_valid("d:sensor:new", &[], now + day, now + 30 * day);
    let answer = explain(&server, &early, None).await;
    assert_eq!(
        verdict(&answer),
        refusal("tls", "certificate_not_yet_valid")
    );

    // Blocked by one of its identities: refused at CONNECT whichever it binds.
    let blocked = ca.client("d:sensor:blocked", &["g:gw:hub9"]);
    assert_eq!(verdict(&explain(&server, &blocked, None).await), None);
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices",
            Some(json!({"identity": "g:gw:hub9", "reason": "stolen"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for client_id in [None, Some("d:acme:sensor:blocked")] {
        let answer = explain(&server, &blocked, client_id).await;
        assert_eq!(verdict(&answer), refusal("connect", "device_blocked"));
    }
    let addr = server.bridge(SNI, &blocked).await;
    let code = refused_v4(v4_options(addr, "d:acme:sensor:blocked")).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized);

    // Revoked by its CA's CRL: the handshake refuses it.
    let revoked = ca.client("d:sensor:revoked", &[]);
    assert_eq!(verdict(&explain(&server, &revoked, None).await), None);
    let hour = time::Duration::hours(1);
    let (status, _) = server
        .put_crl(&ca_id, &ca.crl(&[&revoked], now - hour, now + day))
        .await;
    assert_eq!(status, 200);
    let answer = explain(&server, &revoked, None).await;
    assert_eq!(verdict(&answer), refusal("tls", "certificate_revoked"));
    assert_eq!(
        tls_refusal(server.tls(SNI, Some(&revoked)).await).await,
        rustls::AlertDescription::CertificateRevoked
    );
    // The good device is still good.
    assert_eq!(verdict(&explain(&server, &good, None).await), None);

    // With its only CA deactivated the org takes no device at all.
    let (status, _) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);
    let answer = explain(&server, &good, None).await;
    assert_eq!(verdict(&answer), refusal("tls", "org_has_no_ca"));
}

#[tokio::test]
async fn explain_refuses_what_is_not_a_chain_and_answers_only_for_the_callers_org() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    server.org_with_ca("beta").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    for chain in [
        "not pem".to_owned(),
        String::new(),
        // A key is not a certificate.
        ca.key_pem(),
    ] {
        let (status, body) = server
            .api(
                "POST",
                "/api/v1/orgs/acme/explain",
                Some(json!({"certificate_chain": chain})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_certificate_chain");
    }
    let garbage = pem::encode(&pem::Pem::new("CERTIFICATE", b"garbage".to_vec()));
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/explain",
            Some(json!({"certificate_chain": garbage})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stage"], "tls");
    assert_eq!(body["reason"], "bad_certificate");

    // A viewer of beta learns nothing of acme, and the answer for beta's chain is beta's.
    let (_, viewer) = server.issue_token("beta", "viewer", "viewer").await;
    let body = json!({"certificate_chain": cert.chain_pem()});
    let (status, _) = server
        .api_as(
            &viewer,
            "POST",
            "/api/v1/orgs/acme/explain",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, answer) = server
        .api_as(&viewer, "POST", "/api/v1/orgs/beta/explain", Some(body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["reason"], "unknown_ca",
        "acme's CA means nothing to beta"
    );
    let (status, _) = server
        .api(
            "POST",
            "/api/v1/orgs/nosuch/explain",
            Some(json!({"certificate_chain": cert.chain_pem()})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refusals_list_the_orgs_refused_connections_newest_first() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    server.org_with_ca("beta").await;

    // 1: a handshake with a certificate of another CA.
    let stranger = TestCa::root("stranger CA").client("d:sensor:dev1", &[]);
    tls_refusal(server.tls(SNI, Some(&stranger)).await).await;
    // 2: a CONNECT with a client id the certificate does not claim.
    let cert = ca.client("d:sensor:dev1", &[]);
    let addr = server.bridge(SNI, &cert).await;
    refused_v4(v4_options(addr, "d:acme:sensor:dev2")).await;
    // Another org's refusal is not acme's.
    let beta = TestCa::root("beta stranger").client("d:sensor:x", &[]);
    tls_refusal(server.tls("beta.messaging.localhost", Some(&beta)).await).await;

    let refusals = || async {
        let (status, body) = server.api("GET", "/api/v1/orgs/acme/refusals", None).await;
        assert_eq!(status, 200);
        body["items"].as_array().unwrap().clone()
    };
    let listed = eventually(Duration::from_secs(5), || async {
        refusals().await.len() == 2
    })
    .await;
    let items = refusals().await;
    assert!(listed, "{items:?}");
    let newest = &items[0];
    assert_eq!(newest["stage"], "connect");
    assert_eq!(newest["reason"], "identity_mismatch");
    assert_eq!(
        newest["message"],
        "client id is not an identity the certificate claims"
    );
    assert_eq!(newest["identity"], "d:sensor:dev1");
    assert_eq!(newest["sni"], SNI);
    assert_eq!(newest["fingerprint_sha256"].as_str().unwrap().len(), 64);
    assert!(newest["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(newest["node"].as_str().is_some_and(|node| !node.is_empty()));
    let oldest = &items[1];
    assert_eq!(oldest["stage"], "tls");
    assert_eq!(oldest["reason"], "unknown_ca");
    assert!(oldest["message"]
        .as_str()
        .is_some_and(|m| m.contains("none of the organisation's active CA")));
    assert_eq!(oldest["sni"], SNI);
    assert!(oldest["at"].as_str().unwrap() <= newest["at"].as_str().unwrap());

    let (_, body) = server.api("GET", "/api/v1/orgs/beta/refusals", None).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["reason"], "unknown_ca");
    let (_, viewer) = server.issue_token("beta", "viewer", "viewer").await;
    let (status, _) = server
        .api_as(&viewer, "GET", "/api/v1/orgs/acme/refusals", None)
        .await;
    assert_eq!(status, 403);
}
