//! Issue 11, findings 2 and 3, against the real server: the reasons given with signature
//! requests, approvals and rejections reach the audit log; and certificates (server, whatever
//! made them, and CA) download as PEM, never with a key, and never across orgs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

const NAME: &str = "acme.messaging.localhost";

async fn new_csr(server: &TestServer, token: &str) -> String {
    let (status, csr) = server
        .api_as(
            token,
            "POST",
            "/api/v1/orgs/acme/csrs",
            Some(json!({"common_name": NAME, "dns_names": [NAME], "key_type": "ecdsa-p256"})),
        )
        .await;
    assert_eq!(status, 201, "{csr}");
    csr["id"].as_str().unwrap().to_owned()
}

/// The org's audit events as (action, target, reason).
async fn audit_events(server: &TestServer) -> Vec<(String, String, Option<String>)> {
    let (status, events) = server
        .api("GET", "/api/v1/orgs/acme/audit-events?limit=500", None)
        .await;
    assert_eq!(status, 200, "{events}");
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[track_caller]
fn reason_of(events: &[(String, String, Option<String>)], action: &str, target: &str) -> String {
    events
        .iter()
        .find(|(a, t, _)| a == action && t == target)
        .unwrap_or_else(|| panic!("no {action} event on {target}: {events:?}"))
        .2
        .clone()
        .unwrap_or_else(|| panic!("the {action} event on {target} has no reason"))
}

#[tokio::test]
async fn reasons_of_signature_requests_approvals_and_rejections_are_audited() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, operator) = server.issue_token("acme", "olga", "operator").await;
    let (_, approver) = server.issue_token("acme", "alex", "approver").await;
    let sign = |id: &str| format!("/api/v1/orgs/acme/csrs/{id}/signature-request");

    // Signed at once: the request's reason is the signature's.
    let at_once = new_csr(&server, &operator).await;
    let request = json!({"self_signed": false, "issuer": "platform", "reason": "rollout 7"});
    let (status, signed) = server
        .api_as(&operator, "POST", &sign(&at_once), Some(request))
        .await;
    assert_eq!(status, 201, "{signed}");
    let signed_cert = signed["server_certificate"].as_str().unwrap().to_owned();

    let (status, _) = server
        .api(
            "PATCH",
            "/api/v1/orgs/acme",
            Some(json!({"approval_required_roles": ["operator"]})),
        )
        .await;
    assert_eq!(status, 200);
    let approved = new_csr(&server, &operator).await;
    let request = json!({"self_signed": false, "issuer": "platform", "reason": "ticket CHG-1"});
    let (status, _) = server
        .api_as(&operator, "POST", &sign(&approved), Some(request))
        .await;
    assert_eq!(status, 202);
    let (status, done) = server
        .api_as(
            &approver,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{approved}/approve"),
            Some(json!({"reason": "CHG-1 reviewed"})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let approved_cert = done["server_certificate"].as_str().unwrap().to_owned();

    let rejected = new_csr(&server, &operator).await;
    let request = json!({"self_signed": true, "reason": "lab box"});
    let (status, _) = server
        .api_as(&operator, "POST", &sign(&rejected), Some(request))
        .await;
    assert_eq!(status, 202);
    let (status, _) = server
        .api_as(
            &approver,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{rejected}/reject"),
            Some(json!({"reason": "self-signed is not for production"})),
        )
        .await;
    assert_eq!(status, 200);

    let events = audit_events(&server).await;
    for (action, target, reason) in [
        ("csr.sign", &at_once, "rollout 7"),
        ("server_certificate.create", &signed_cert, "rollout 7"),
        ("csr.signature_request", &approved, "ticket CHG-1"),
        ("csr.approve", &approved, "CHG-1 reviewed"),
        (
            "server_certificate.create",
            &approved_cert,
            "CHG-1 reviewed",
        ),
        ("csr.signature_request", &rejected, "lab box"),
        ("csr.reject", &rejected, "self-signed is not for production"),
    ] {
        assert_eq!(reason_of(&events, action, target), reason, "{action}");
    }
}

/// GET `path` with `token`: (status, content type, body).
async fn download(server: &TestServer, token: &str, path: &str) -> (u16, String, String) {
    let response = step(
        reqwest::Client::new()
            .get(server.url(path))
            .bearer_auth(token)
            .send(),
    )
    .await
    .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, step(response.text()).await.unwrap())
}

/// The DER of each certificate of a PEM body; fails on any other block (a key above all).
#[track_caller]
fn certificates(body: &str) -> Vec<Vec<u8>> {
    assert!(!body.contains("PRIVATE KEY"), "a key was downloaded");
    let blocks = pem::parse_many(body).unwrap();
    assert!(!blocks.is_empty(), "no certificate in {body}");
    blocks
        .into_iter()
        .map(|b| {
            assert_eq!(b.tag(), "CERTIFICATE");
            b.into_contents()
        })
        .collect()
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// The leaf of a downloaded chain is the certificate the API describes.
async fn leaf_matches_view(server: &TestServer, token: &str, id: &str) -> Vec<Vec<u8>> {
    let base = format!("/api/v1/orgs/acme/server-certificates/{id}");
    let (status, content_type, body) = download(server, token, &format!("{base}/chain.pem")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-pem-file")
    );
    let chain = certificates(&body);
    let (_, view) = server.api_as(token, "GET", &base, None).await;
    assert_eq!(view["fingerprint_sha256"], sha256_hex(&chain[0]).as_str());
    chain
}

#[tokio::test]
async fn server_and_ca_certificates_download_as_pem_without_keys() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let (_, reader) = server.issue_token("acme", "vera", "viewer").await;

    // Uploaded: the chain comes back as it went in.
    let pems = ca.server(&[NAME]);
    let (status, uploaded) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates",
            Some(json!({"certificate_chain": pems.chain, "private_key": pems.key})),
        )
        .await;
    assert_eq!(status, 201, "{uploaded}");
    let chain = leaf_matches_view(&server, &reader, uploaded["id"].as_str().unwrap()).await;
    assert_eq!(chain, certificates(&pems.chain));

    // Generated by the platform CA.
    let (status, generated) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(json!({"dns_name": NAME, "key_type": "ecdsa-p256"})),
        )
        .await;
    assert_eq!(status, 201, "{generated}");
    leaf_matches_view(&server, &reader, generated["id"].as_str().unwrap()).await;

    // Signed for a CSR.
    let (_, operator) = server.issue_token("acme", "olga", "operator").await;
    let csr = new_csr(&server, &operator).await;
    let (status, signed) = server
        .api_as(
            &operator,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{csr}/signature-request"),
            Some(json!({"self_signed": true, "reason": "download test"})),
        )
        .await;
    assert_eq!(status, 201, "{signed}");
    leaf_matches_view(
        &server,
        &reader,
        signed["server_certificate"].as_str().unwrap(),
    )
    .await;

    // The CA certificate.
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}/certificate.pem");
    let (status, content_type, body) = download(&server, &reader, &path).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-pem-file")
    );
    assert_eq!(certificates(&body), vec![ca.cert.as_ref().to_vec()]);
}

#[tokio::test]
async fn another_org_cannot_download_what_is_not_its_own() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let pems = ca.server(&[NAME]);
    let (status, uploaded) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates",
            Some(json!({"certificate_chain": pems.chain, "private_key": pems.key})),
        )
        .await;
    assert_eq!(status, 201);
    let cert_id = uploaded["id"].as_str().unwrap();
    server.create_org("evil").await;
    let (_, mallory) = server.issue_token("evil", "mallory", "operator").await;

    for (org, id, what) in [
        ("evil", cert_id, "server-certificates/{}/chain.pem"),
        ("evil", ca_id.as_str(), "ca-certificates/{}/certificate.pem"),
    ] {
        let path = format!("/api/v1/orgs/{org}/{}", what.replace("{}", id));
        // Its own org's path with acme's ids: not found, for its token and the admin's.
        for token in [mallory.as_str(), server.token.as_str()] {
            let (status, _, body) = download(&server, token, &path).await;
            assert_eq!(status, 404, "{path}: {body}");
            assert!(!body.contains("CERTIFICATE"));
        }
        // Acme's path with its token: refused.
        let acme_path = path.replace("/orgs/evil/", "/orgs/acme/");
        let (status, _, body) = download(&server, &mallory, &acme_path).await;
        assert_eq!(status, 403, "{acme_path}: {body}");
        assert!(!body.contains("CERTIFICATE"));
    }
    for path in [
        "/api/v1/orgs/acme/server-certificates/0000/chain.pem",
        "/api/v1/orgs/acme/ca-certificates/0000/certificate.pem",
        "/api/v1/orgs/nobody/ca-certificates/0000/certificate.pem",
    ] {
        let (status, _, _) = download(&server, server.token.as_str(), path).await;
        assert_eq!(status, 404, "{path}");
    }
}
