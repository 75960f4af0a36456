//! The certificate lifecycle over HTTP against the real server (DESIGN §7b): CSRs with keys made
//! here, signed by an outside CA (rcgen) and uploaded back, then served on a TLS handshake;
//! signature requests with and without approval; generated chains from the platform CA; CAs
//! imported as PKCS#12 with their key, then issuing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use x509_parser::prelude::{FromDer, X509Certificate};

const NAME: &str = "acme.messaging.localhost";

async fn new_csr(server: &TestServer, token: &str, key_type: &str) -> Value {
    let (status, csr) = server
        .api_as(
            token,
            "POST",
            "/api/v1/orgs/acme/csrs",
            Some(json!({"common_name": NAME, "dns_names": [NAME], "key_type": key_type})),
        )
        .await;
    assert_eq!(status, 201, "{csr}");
    assert_eq!(csr["status"], "generated");
    csr
}

/// The leaf certificate (DER) of one of acme's server certificates, as the API stores it: read
/// back through a TLS handshake once it is active.
async fn served_leaf(
    server: &TestServer,
    extra_root: Option<rustls::pki_types::CertificateDer<'static>>,
    device: &ClientCert,
) -> Vec<u8> {
    let roots: Vec<_> = extra_root.into_iter().collect();
    let config = server.tls_config(Some(device), &roots);
    let mut tls = server.tls_with(NAME, config).await.expect("handshake");
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    let _ = tls.shutdown().await;
    leaf
}

async fn activate(server: &TestServer, id: &str) {
    let (status, body) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/active-server-certificate",
            Some(json!({"id": id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn csr_signed_elsewhere_is_uploaded_and_served() {
    let server = TestServer::start().await;
    let (devices, _) = server.org_with_ca("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let csr = new_csr(&server, &operator, "ecdsa-p384").await;
    let id = csr["id"].as_str().unwrap();
    assert!(!csr.to_string().contains("PRIVATE KEY"));

    // The CSR as an outside CA downloads it.
    let (status, pem) = server
        .api_as(
            &operator,
            "GET",
            &format!("/api/v1/orgs/acme/csrs/{id}/csr.pem"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let outside = TestCa::root("Outside CA");
    let signed = outside.sign_csr(pem.as_str().unwrap());

    // A certificate for another key is refused and changes nothing.
    let stranger = outside.server(&[NAME]);
    let (status, body) = server
        .api_as(
            &operator,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{id}/certificate"),
            Some(json!({"certificate_chain": stranger.chain})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("key_mismatch")),
        "{body}"
    );

    let (status, done) = server
        .api_as(
            &operator,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{id}/certificate"),
            Some(json!({"certificate_chain": format!("{signed}{}", outside.pem)})),
        )
        .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "completed");
    let cert_id = done["server_certificate"].as_str().unwrap().to_owned();
    let (status, body) = server
        .api_as(
            &operator,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{id}/certificate"),
            Some(json!({"certificate_chain": signed})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("csr_completed"))
    );

    activate(&server, &cert_id).await;
    let device = devices.client("d:sensor:dev1", &[]);
    let leaf = served_leaf(&server, Some(outside.cert.clone()), &device).await;
    let signed_der = pem::parse(&signed).unwrap().into_contents();
    assert_eq!(
        leaf, signed_der,
        "the handshake serves the uploaded certificate"
    );
}

#[tokio::test]
async fn signature_requests_with_and_without_approval() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, operator) = server.issue_token("acme", "olga", "operator").await;
    let (_, approver) = server.issue_token("acme", "alex", "approver").await;
    let sign = |id: &str| format!("/api/v1/orgs/acme/csrs/{id}/signature-request");

    // Without approval: signed at once by the platform CA.
    let csr = new_csr(&server, &operator, "ecdsa-p256").await;
    let body = json!({"self_signed": false, "issuer": "platform", "reason": "rollout"});
    let (status, done) = server
        .api_as(
            &operator,
            "POST",
            &sign(csr["id"].as_str().unwrap()),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["signature_request"]["requested_by"], "olga");
    let cert_id = done["server_certificate"].as_str().unwrap();
    let (_, cert) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/server-certificates/{cert_id}"),
            None,
        )
        .await;
    assert_eq!(cert["issuer"], server_platform_subject(&server));

    // With approval for operators: pending, the requester cannot approve, an approver signs.
    let (status, _) = server
        .api(
            "PATCH",
            "/api/v1/orgs/acme",
            Some(json!({"approval_required_roles": ["operator"]})),
        )
        .await;
    assert_eq!(status, 200);
    // Nor can the operator get a certificate without approval another way.
    let (status, refusal) = server
        .api_as(
            &operator,
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(json!({"dns_name": NAME, "key_type": "ecdsa-p256"})),
        )
        .await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (409, Some("approval_required"))
    );
    let csr = new_csr(&server, &operator, "rsa-2048").await;
    let id = csr["id"].as_str().unwrap();
    let (status, pending) = server
        .api_as(&operator, "POST", &sign(id), Some(body.clone()))
        .await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["status"], "pending_approval");
    assert!(pending["server_certificate"].is_null());
    let approve = format!("/api/v1/orgs/acme/csrs/{id}/approve");
    let decision = json!({"reason": "checked the change ticket"});
    let (status, _) = server
        .api_as(&operator, "POST", &approve, Some(decision.clone()))
        .await;
    assert_eq!(status, 403, "the requester approved its own request");
    let (status, approved) = server
        .api_as(&approver, "POST", &approve, Some(decision.clone()))
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "completed");
    assert_eq!(approved["decided_by"], "alex");
    assert!(approved["server_certificate"].is_string());
    let (status, again) = server
        .api_as(&approver, "POST", &approve, Some(decision.clone()))
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("csr_completed"))
    );

    // Rejected: nothing is signed, and the CSR cannot be requested again.
    let csr = new_csr(&server, &operator, "ecdsa-p256").await;
    let id = csr["id"].as_str().unwrap();
    let self_signed = json!({"self_signed": true, "reason": "lab"});
    let (status, _) = server
        .api_as(&operator, "POST", &sign(id), Some(self_signed.clone()))
        .await;
    assert_eq!(status, 202);
    let (status, rejected) = server
        .api_as(
            &approver,
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{id}/reject"),
            Some(json!({"reason": "self-signed is not for production"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rejected["status"], "rejected");
    assert!(rejected["server_certificate"].is_null());
    let (status, body) = server
        .api_as(&operator, "POST", &sign(id), Some(self_signed))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("csr_rejected"))
    );

    let (_, listed) = server
        .api_as(
            &approver,
            "GET",
            "/api/v1/orgs/acme/csrs?status=completed",
            None,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let (_, events) = server
        .api("GET", "/api/v1/orgs/acme/audit-events", None)
        .await;
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "csr.sign",
        "csr.signature_request",
        "csr.approve",
        "csr.reject",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

/// The platform CA's subject, as the API shows issuers.
fn server_platform_subject(server: &TestServer) -> String {
    let (_, ca) = X509Certificate::from_der(server.platform_ca.as_ref()).unwrap();
    ca.subject().to_string()
}

#[tokio::test]
async fn a_generated_chain_verifies_against_platform_ca_pem_and_is_served() {
    let server = TestServer::start().await;
    let (devices, _) = server.org_with_ca("acme").await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(json!({"dns_name": "other.messaging.localhost", "key_type": "ecdsa-p256"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("names_do_not_fit"))
    );
    let (status, cert) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(json!({"dns_name": NAME, "key_type": "ecdsa-p384"})),
        )
        .await;
    assert_eq!(status, 201, "{cert}");
    activate(&server, cert["id"].as_str().unwrap()).await;
    // The test client trusts platform-ca.pem only; the handshake proves the chain.
    let device = devices.client("d:sensor:dev1", &[]);
    let leaf = served_leaf(&server, None, &device).await;
    let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
    let (_, platform) = X509Certificate::from_der(server.platform_ca.as_ref()).unwrap();
    leaf.verify_signature(Some(platform.public_key())).unwrap();
    assert_eq!(
        leaf.serial.to_str_radix(16),
        cert["serial"].as_str().unwrap().trim_start_matches('0')
    );
}

#[tokio::test]
async fn a_ca_imported_as_pkcs12_with_its_key_issues_server_certificates() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "30",
            "-subj",
            "/CN=Acme Issuing CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "ca.pem",
        ],
    );
    for (file, extra) in [("modern.p12", None), ("legacy.p12", Some("-legacy"))] {
        let mut args = vec![
            "pkcs12",
            "-export",
            "-in",
            "ca.pem",
            "-inkey",
            "ca.key",
            "-out",
            file,
            "-passout",
            "pass:p12pass",
        ];
        args.extend(extra);
        openssl(d, &args);
    }
    openssl(
        d,
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "ca.pem",
            "-out",
            "nokey.p12",
            "-passout",
            "pass:p12pass",
        ],
    );
    use base64::Engine;
    let b64 = |name: &str| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join(name)).unwrap())
    };
    let upload = |file: &str, password: &str| json!({"pkcs12": b64(file), "password": password, "description": file});

    for (body, code) in [
        (upload("modern.p12", "wrong"), "pkcs12_password_wrong"),
        (upload("nokey.p12", "p12pass"), "pkcs12_no_key"),
    ] {
        let (status, answer) = server
            .api("POST", "/api/v1/orgs/acme/ca-certificates", Some(body))
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some(code)),
            "{answer}"
        );
    }
    let (status, legacy) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(upload("legacy.p12", "p12pass")),
        )
        .await;
    assert_eq!(status, 201, "{legacy}");
    assert_eq!(legacy["can_issue"], true);
    // The key the product now holds carries an access grant (DESIGN §11); a keyless CA none.
    assert_eq!(legacy["grant"]["status"], "active", "{legacy}");
    assert_eq!(legacy["grant"]["uses"], 0);
    // The same CA again, modern encoding: a duplicate (it parsed, with its key).
    let (status, dup) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(upload("modern.p12", "p12pass")),
        )
        .await;
    assert_eq!(
        (status, dup["error"]["code"].as_str()),
        (409, Some("duplicate_certificate"))
    );
    let keyless = TestCa::root("Keyless CA");
    let keyless_id = server.upload_ca("acme", &keyless).await;

    let csr = new_csr(&server, &server.token.clone(), "ecdsa-p256").await;
    let path = format!(
        "/api/v1/orgs/acme/csrs/{}/signature-request",
        csr["id"].as_str().unwrap()
    );
    let request = |issuer: &str| json!({"self_signed": false, "issuer": issuer, "reason": "r"});
    let (status, body) = server.api("POST", &path, Some(request(&keyless_id))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("issuer_without_key"))
    );
    let (status, done) = server
        .api("POST", &path, Some(request(legacy["id"].as_str().unwrap())))
        .await;
    assert_eq!(status, 201, "{done}");
    let (_, cert) = server
        .api(
            "GET",
            &format!(
                "/api/v1/orgs/acme/server-certificates/{}",
                done["server_certificate"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(cert["issuer"], "CN=Acme Issuing CA");
    // The signature was one use of the CA's grant; the keyless CA has no grant to show.
    let (_, issuer) = server
        .api(
            "GET",
            &format!(
                "/api/v1/orgs/acme/ca-certificates/{}",
                legacy["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(issuer["grant"]["uses"], 1, "{issuer}");
    let (_, keyless) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates/{keyless_id}"),
            None,
        )
        .await;
    assert!(keyless.get("grant").is_none(), "{keyless}");
}

#[tokio::test]
async fn lists_filter_by_alias_window_and_status_and_details_say_where_used() {
    let server = TestServer::start().await;
    let (_, ca_id) = server.org_with_ca("acme").await;
    let generate = |key_type: &'static str| json!({"dns_name": NAME, "key_type": key_type});
    let (_, first) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(generate("ecdsa-p384")),
        )
        .await;
    let (_, second) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates/generate",
            Some(generate("rsa-2048")),
        )
        .await;
    activate(&server, first["id"].as_str().unwrap()).await;

    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |query: &str| format!("/api/v1/orgs/acme/server-certificates?{query}");
    let (_, active) = server.api("GET", &list("status=active"), None).await;
    assert_eq!(ids(&active), [first["id"].as_str().unwrap()]);
    let (_, inactive) = server
        .api("GET", &list("status=inactive&alias=ACME.messaging"), None)
        .await;
    assert_eq!(ids(&inactive), [second["id"].as_str().unwrap()]);
    let (_, none) = server
        .api("GET", &list("alias=nothing-like-it"), None)
        .await;
    assert!(ids(&none).is_empty());
    let after = second["registered_at"].as_str().unwrap();
    let (_, later) = server
        .api(
            "GET",
            &list(&format!("registered_after={}", after.replace('+', "%2B"))),
            None,
        )
        .await;
    assert!(
        ids(&later).is_empty(),
        "nothing registered after the last one"
    );
    let (status, body) = server.api("GET", &list("status=sideways"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_status"))
    );

    // Details: key type, both fingerprints, where it is used.
    let (_, detail) = server
        .api(
            "GET",
            &format!(
                "/api/v1/orgs/acme/server-certificates/{}",
                first["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(detail["key_type"], "ecdsa-p384");
    assert_eq!(detail["used_for"], json!(["mqtts"]));
    assert_eq!(detail["alias"], NAME);
    assert_eq!(detail["fingerprint_sha1"].as_str().unwrap().len(), 40);
    let (_, other) = server
        .api(
            "GET",
            &format!(
                "/api/v1/orgs/acme/server-certificates/{}",
                second["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(other["key_type"], "rsa-2048");
    assert_eq!(other["used_for"], json!([]));

    let (_, ca) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            None,
        )
        .await;
    assert_eq!(ca["used_for"], json!(["device_authentication"]));
    assert_eq!(ca["alias"], "acme devices CA");
    let (status, renamed) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            Some(json!({"alias": "Fleet 2026"})),
        )
        .await;
    assert_eq!(
        (status, renamed["alias"].as_str()),
        (200, Some("Fleet 2026"))
    );
    let (_, found) = server
        .api("GET", "/api/v1/orgs/acme/ca-certificates?alias=fleet", None)
        .await;
    assert_eq!(ids(&found), [ca_id.as_str()]);

    let (_, signing) = server
        .api(
            "GET",
            "/api/v1/orgs/acme/signing-certificates?status=default",
            None,
        )
        .await;
    assert_eq!(signing["items"][0]["used_for"], json!(["token_signing"]));
    let (_, standby) = server
        .api(
            "GET",
            "/api/v1/orgs/acme/signing-certificates?status=standby",
            None,
        )
        .await;
    assert!(ids(&standby).is_empty());

    let csr = new_csr(&server, &server.token.clone(), "ecdsa-p256").await;
    let (_, csrs) = server
        .api(
            "GET",
            "/api/v1/orgs/acme/csrs?status=generated&alias=acme",
            None,
        )
        .await;
    assert_eq!(ids(&csrs), [csr["id"].as_str().unwrap()]);
    let (_, csrs) = server
        .api("GET", "/api/v1/orgs/acme/csrs?status=completed", None)
        .await;
    assert!(ids(&csrs).is_empty());
}
