//! The admin API over HTTP against the real server: every CA and server-certificate upload
//! refusal, raw uploads, lists, and a restart that keeps everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mqtt::*;
use common::*;
use rcgen::KeyUsagePurpose;
use serde_json::json;
use time::{Duration as TimeDuration, OffsetDateTime};

async fn upload_ca_pem(server: &TestServer, pem: &str) -> (u16, serde_json::Value) {
    server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(json!({"certificate": pem, "description": "x"})),
        )
        .await
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn api_needs_the_admin_token() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let response = http.get(server.url("/api/v1/orgs")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "unauthorized");
    let response = http
        .get(server.url("/api/v1/orgs"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        let response = http.get(server.url(open)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn every_ca_upload_refusal_has_its_code_and_changes_nothing() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let now = OffsetDateTime::now_utc();
    let good = TestCa::root("good");
    let two = format!("{}{}", good.pem, TestCa::root("other").pem);
    let leaf = {
        let pems = good.server(&["acme.messaging.localhost"]);
        pems.chain
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "garbage",
            "not a certificate".into(),
            422,
            "not_a_certificate",
        ),
        ("two certificates", two, 422, "more_than_one_certificate"),
        ("leaf", leaf, 422, "not_a_ca"),
        (
            "no keyCertSign",
            ca_pem_with(|p| p.key_usages = vec![KeyUsagePurpose::DigitalSignature]),
            422,
            "no_key_cert_sign",
        ),
        (
            "not yet valid",
            ca_pem_with(|p| {
                p.not_before = now + TimeDuration::days(2);
                p.not_after = now + TimeDuration::days(20);
            }),
            422,
            "not_yet_valid",
        ),
        (
            "expired",
            ca_pem_with(|p| {
                p.not_before = now - TimeDuration::days(20);
                p.not_after = now - TimeDuration::days(2);
            }),
            422,
            "expired",
        ),
    ];
    for (name, pem, status, expected) in cases {
        let (got, body) = upload_ca_pem(&server, &pem).await;
        assert_eq!((got, code(&body)), (status, expected), "{name}: {body}");
    }
    let (status, body) = server
        .api("GET", "/api/v1/orgs/acme/ca-certificates", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        0,
        "refusals stored something"
    );

    let (status, created) = upload_ca_pem(&server, &good.pem).await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = upload_ca_pem(&server, &good.pem).await;
    assert_eq!((status, code(&body)), (409, "duplicate_certificate"));
    for field in [
        "id",
        "org",
        "subject",
        "issuer",
        "serial",
        "fingerprint_sha256",
        "not_before",
        "not_after",
        "description",
        "active",
        "registered_at",
    ] {
        assert!(
            !created[field].is_null(),
            "CA resource lacks {field}: {created}"
        );
    }
    assert_eq!(created["active"], true);

    // Unknown org: 404.
    let (status, _) = server
        .api(
            "POST",
            "/api/v1/orgs/nope/ca-certificates",
            Some(json!({"certificate": good.pem})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn raw_pem_and_der_uploads_and_list_filters() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let http = reqwest::Client::new();
    let pem_ca = TestCa::root("pem upload");
    let response = http
        .post(server.url("/api/v1/orgs/acme/ca-certificates?description=line%201"))
        .bearer_auth(&server.token)
        .header("content-type", "application/x-pem-file")
        .body(pem_ca.pem.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let der_ca = TestCa::root("der upload");
    let response = http
        .post(server.url("/api/v1/orgs/acme/ca-certificates?description=line%202"))
        .bearer_auth(&server.token)
        .header("content-type", "application/pkix-cert")
        .body(der_ca.cert.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let der: serde_json::Value = response.json().await.unwrap();
    let id = der["id"].as_str().unwrap();
    let (status, _) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{id}"),
            Some(json!({"active": false, "description": "retired"})),
        )
        .await;
    assert_eq!(status, 200);

    let (_, body) = server
        .api(
            "GET",
            "/api/v1/orgs/acme/ca-certificates?active=false",
            None,
        )
        .await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["description"], "retired");
    let (_, body) = server
        .api(
            "GET",
            "/api/v1/orgs/acme/ca-certificates?q=PEM%20UPLOAD",
            None,
        )
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);

    // Paging: one per page, two pages, then none.
    let (_, page1) = server
        .api("GET", "/api/v1/orgs/acme/ca-certificates?limit=1", None)
        .await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 1);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
    if let Some(cursor) = page2["next_cursor"].as_str() {
        let (_, page3) = server
            .api(
                "GET",
                &format!("/api/v1/orgs/acme/ca-certificates?limit=1&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(page3["items"].as_array().unwrap().len(), 0);
    }
}

#[tokio::test]
async fn every_server_certificate_refusal_has_its_code() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let ca = TestCa::root("web CA");
    let now = OffsetDateTime::now_utc();
    let good = ca.server(&["acme.messaging.example.com"]);
    let other = ca.server(&["acme.messaging.example.com"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), &good.key).unwrap();
    std::fs::write(dir.path().join("chain.pem"), &good.chain).unwrap();
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "key.pem",
            "-out",
            "enc.pem",
            "-passout",
            "pass:s3cret",
        ],
    );
    let encrypted = std::fs::read_to_string(dir.path().join("enc.pem")).unwrap();
    // The PKCS#12 file holds another certificate: the same one twice would be a duplicate.
    std::fs::write(dir.path().join("other-key.pem"), &other.key).unwrap();
    std::fs::write(dir.path().join("other-chain.pem"), &other.chain).unwrap();
    openssl(
        dir.path(),
        &[
            "pkcs12",
            "-export",
            "-in",
            "other-chain.pem",
            "-inkey",
            "other-key.pem",
            "-out",
            "modern.p12",
            "-passout",
            "pass:p12pass",
        ],
    );
    openssl(
        dir.path(),
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "chain.pem",
            "-out",
            "nokey.p12",
            "-passout",
            "pass:p12pass",
        ],
    );
    use base64::Engine;
    let b64 = |name: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.path().join(name)).unwrap())
    };

    let expired = ca.server_valid(
        &["acme.messaging.example.com"],
        now - TimeDuration::days(30),
        now - TimeDuration::days(1),
        true,
    );
    let client_only = ca.server_valid(
        &["acme.messaging.example.com"],
        now - TimeDuration::days(1),
        now + TimeDuration::days(30),
        false,
    );
    let wrong_names = ca.server(&["www.example.com"]);
    let other_org = ca.server(&["beta.messaging.example.com"]);

    let pem_body = |chain: &str, key: &str| json!({"certificate_chain": chain, "private_key": key});
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "not a certificate",
            pem_body("nope", &good.key),
            "not_a_certificate",
        ),
        ("not a key", pem_body(&good.chain, "nope"), "not_a_key"),
        (
            "key mismatch",
            pem_body(&good.chain, &other.key),
            "key_mismatch",
        ),
        (
            "encrypted, no passphrase",
            pem_body(&good.chain, &encrypted),
            "passphrase_required",
        ),
        (
            "wrong passphrase",
            json!({"certificate_chain": good.chain, "private_key": encrypted, "passphrase": "nope"}),
            "passphrase_wrong",
        ),
        (
            "names of no org",
            pem_body(&wrong_names.chain, &wrong_names.key),
            "names_do_not_fit",
        ),
        (
            "names of another org",
            pem_body(&other_org.chain, &other_org.key),
            "names_do_not_fit",
        ),
        ("expired", pem_body(&expired.chain, &expired.key), "expired"),
        (
            "EKU without serverAuth",
            pem_body(&client_only.chain, &client_only.key),
            "no_server_auth",
        ),
        (
            "not PKCS#12",
            json!({"pkcs12": "bm9wZQ==", "password": "x"}),
            "not_pkcs12",
        ),
        (
            "PKCS#12 wrong password",
            json!({"pkcs12": b64("modern.p12"), "password": "wrong"}),
            "pkcs12_password_wrong",
        ),
        (
            "PKCS#12 without key",
            json!({"pkcs12": b64("nokey.p12"), "password": "p12pass"}),
            "pkcs12_no_key",
        ),
    ];
    for (name, body, expected) in cases {
        let (status, answer) = server
            .api("POST", "/api/v1/orgs/acme/server-certificates", Some(body))
            .await;
        assert_eq!((status, code(&answer)), (422, expected), "{name}: {answer}");
    }
    let (_, list) = server
        .api("GET", "/api/v1/orgs/acme/server-certificates", None)
        .await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "refusals stored something"
    );

    for body in [
        json!({"certificate_chain": good.chain, "private_key": encrypted, "passphrase": "s3cret"}),
        json!({"pkcs12": b64("modern.p12"), "password": "p12pass"}),
    ] {
        let (status, created) = server
            .api("POST", "/api/v1/orgs/acme/server-certificates", Some(body))
            .await;
        assert_eq!(status, 201, "{created}");
        assert!(created.get("private_key").is_none());
        let text = created.to_string();
        assert!(!text.contains("PRIVATE KEY"), "a key leaked: {text}");
    }
    let (_, list) = server
        .api("GET", "/api/v1/orgs/acme/server-certificates", None)
        .await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/active-server-certificate",
            Some(json!({"id": id})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .api(
            "DELETE",
            &format!("/api/v1/orgs/acme/server-certificates/{id}"),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (409, "certificate_active"));
}

#[tokio::test]
async fn restart_keeps_orgs_cas_active_flags_and_server_certificates() {
    let server = TestServer::start().await;
    server.create_open_org("acme").await;
    let ca = TestCa::root("acme CA");
    server.upload_ca("acme", &ca).await;
    let retired = TestCa::root("acme retired CA");
    let retired_id = server.upload_ca("acme", &retired).await;
    server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{retired_id}"),
            Some(json!({"active": false})),
        )
        .await;
    let web_ca = TestCa::root("web CA");
    let pems = web_ca.server(&["acme.messaging.example.com"]);
    let (_, created) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates",
            Some(json!({"certificate_chain": pems.chain, "private_key": pems.key})),
        )
        .await;
    let cert_id = created["id"].as_str().unwrap().to_owned();
    server
        .api(
            "PUT",
            "/api/v1/orgs/acme/active-server-certificate",
            Some(json!({"id": cert_id})),
        )
        .await;
    let token = server.token.clone();
    let platform_ca = server.platform_ca.clone();

    let (dir, keep) = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(server.token, token, "admin token kept");
    assert_eq!(server.platform_ca, platform_ca, "platform CA kept");

    let (_, org) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(org["topic_policy"], "open");
    let (_, retired_after) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates/{retired_id}"),
            None,
        )
        .await;
    assert_eq!(retired_after["active"], false);

    // The custom-domain certificate is served and the active CA verifies devices.
    let device = ca.client("d:sensor:dev1", &[]);
    let config = server.tls_config(Some(&device), std::slice::from_ref(&web_ca.cert));
    let stream = server
        .tls_with("acme.messaging.example.com", config.clone())
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        pems.leaf
    );
    let addr = server
        .bridge_with("acme.messaging.example.com", config)
        .await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    // The retired CA stays retired.
    let alert = tls_refusal(
        server
            .tls(
                "acme.messaging.localhost",
                Some(&retired.client("d:sensor:x", &[])),
            )
            .await,
    )
    .await;
    assert_eq!(alert, rustls::AlertDescription::UnknownCA);
    drop(keep);
}
