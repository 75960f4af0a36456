//! Admin API tests: the router driven with `tower::ServiceExt::oneshot`, no socket.
//!
//! Routing, auth, the error shape, 400/404/405/409/413/415/422 paths, reads over rows put in the
//! store directly, and changes published to a real registry over the same store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;

use super::*;
use crate::identity::OrgId;
use crate::mqtt::topics::TopicPolicy;
use crate::pki::CertInfo;
use crate::store::{Audit, CaPatch, MasterKey, NewCa, NewOrg, NewServerCert, SqliteStore};

const TOKEN: &str = "test-admin-token";
const T0: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    app: Router,
}

/// A real registry over the same store, serving a platform default certificate; the platform CA
/// (which issues signing certificates) is stored as the server stores it.
fn registry(store: &Arc<dyn Store>) -> Arc<Registry> {
    let ca = crate::pki::generate_platform_ca().unwrap();
    store.set_platform_ca(&ca).unwrap();
    let (chain, key) =
        crate::pki::issue_server_cert(&ca, &["*.messaging.localhost".to_owned()]).unwrap();
    let platform = crate::registry::Platform {
        domain: "messaging.localhost".to_owned(),
        default_cert: crate::tls::certified_key(chain, key).unwrap(),
        no_sni_org: None,
        deny_stale_crl: false,
        ticket_rotation: std::time::Duration::from_secs(6 * 3600),
    };
    Arc::new(Registry::load(store.clone(), platform).unwrap())
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with_key(
            dir.path(),
            MasterKey::from_bytes(&[9u8; 32]).unwrap(),
            Arc::new(crate::grants::GrantPolicy::default()),
            crate::clock::Clock::system(),
        )
        .unwrap(),
    );
    let registry = registry(&store);
    let notifier = Arc::new(
        crate::notify::Notifier::new(
            store.clone(),
            &crate::config::Config::defaults().unwrap().notify,
            std::time::Duration::from_secs(1),
        )
        .unwrap(),
    );
    let state = AdminState {
        cluster: Arc::new(
            crate::cluster::Cluster::new(
                "test-node".into(),
                store.clone(),
                false,
                registry.clone(),
                notifier.clone(),
                tokio::sync::watch::channel(true).1,
                std::time::Duration::from_secs(15),
            )
            .0,
        ),
        health: Arc::new(crate::health::Health::new(
            "test-node".into(),
            std::time::Duration::from_secs(15),
        )),
        store: store.clone(),
        crl_fetcher: Arc::new(crate::revocation::crl::CrlFetcher::new(
            store.clone(),
            registry.clone(),
            std::time::Duration::from_secs(1),
        )),
        registry,
        admin_token_sha256: token_sha256(TOKEN),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        max_body_bytes: 4096,
        broker: None,
        notifier,
    };
    Harness {
        _dir: dir,
        store,
        app: router(state),
    }
}

/// The audit event of a change made by a test.
fn test_audit() -> Audit {
    Audit::by("test", "admin", "test.change")
}

fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

impl Harness {
    fn add_org(&self, id: &str, created_at: OffsetDateTime) {
        self.store
            .create_org(
                &NewOrg {
                    id: org(id),
                    name: format!("{id} name"),
                    topic_policy: TopicPolicy::Iot2,
                    created_at,
                },
                None,
                &test_audit(),
            )
            .unwrap();
    }

    fn add_ca(&self, org_id: &str, n: u8, description: &str, at: OffsetDateTime) -> String {
        self.store
            .insert_ca(
                &org(org_id),
                &NewCa {
                    der: CertificateDer::from(vec![0x30, n]),
                    info: info(&format!("CN=Device CA {n}"), n),
                    description: description.to_owned(),
                    registered_at: at,
                    key: None,
                    key_passphrase: None,
                },
                &test_audit(),
            )
            .unwrap()
            .id
    }

    fn add_server_cert(&self, org_id: &str, n: u8) -> String {
        let mut info = info(&format!("CN={org_id}.messaging.example"), 100 + n);
        info.dns_names = vec![format!("{org_id}.messaging.example")];
        // A real chain and key: activating it publishes a TLS configuration built from them.
        let issuer = crate::pki::generate_platform_ca().unwrap();
        let (chain, key) = crate::pki::issue_server_cert(&issuer, &info.dns_names).unwrap();
        self.store
            .insert_server_cert(
                &org(org_id),
                &NewServerCert {
                    chain,
                    key,
                    info,
                    registered_at: T0 + Duration::seconds(i64::from(n)),
                },
                &test_audit(),
            )
            .unwrap()
            .id
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.app.clone().oneshot(request),
        )
        .await
        .expect("request timed out")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec(), headers)
    }

    /// An authenticated JSON request; `body` `None` sends none.
    async fn json(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let (status, bytes, _) = self.call(builder.body(body).unwrap()).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.json(Method::GET, uri, None).await
    }

    /// An authenticated request with a raw body.
    async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap();
        let (status, bytes, _) = self.call(request).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn info(subject: &str, n: u8) -> CertInfo {
    CertInfo {
        subject: subject.to_owned(),
        issuer: "CN=Root".to_owned(),
        serial: format!("{n:02x}"),
        fingerprint_sha256: format!("{n:064x}"),
        not_before: datetime!(2024-01-01 00:00:00 UTC),
        not_after: datetime!(2034-01-01 00:00:00 UTC),
        common_name: None,
        dns_names: vec![],
    }
}

/// `{"error": {"code", "message"}}` with exactly these keys and a sentence.
#[track_caller]
fn assert_error(body: &Value, code: &str) {
    let error = body
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert_eq!(error.len(), 2, "{body}");
    assert_eq!(error["code"], code, "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(!message.is_empty() && message.ends_with('.'), "{body}");
}

/// `(status, body)` is a refusal: this status and an error body with this code.
#[track_caller]
fn assert_refused((status, body): (StatusCode, Value), want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_error(&body, code);
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_token() {
    let h = harness();
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let (status, bytes, _) = h
            .call(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(bytes, body.as_bytes());
    }
    let (status, _, headers) = h
        .call(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain; version=0.0.4");
}

#[tokio::test]
async fn api_needs_the_admin_token() {
    let h = harness();
    let cases = [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
    ];
    for auth in cases {
        for uri in ["/api/v1/orgs", "/api/v1/no-such-route"] {
            let mut request = Request::get(uri);
            if let Some(auth) = &auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let (status, bytes, headers) = h.call(request.body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?} {uri}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_error(&serde_json::from_slice(&bytes).unwrap(), "unauthorized");
        }
    }
    // Scheme is case-insensitive.
    let (status, _, _) = h
        .call(
            Request::get("/api/v1/orgs")
                .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let h = harness();
    assert_refused(
        h.get("/api/v1/nothing/here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_refused(
        h.json(Method::PUT, "/api/v1/orgs", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, _, _) = h
        .call(Request::get("/elsewhere").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn create_org_refusals() {
    let h = harness();
    h.add_org("acme", T0);
    let post = |body: Value| h.json(Method::POST, "/api/v1/orgs", Some(body));

    assert_refused(
        post(json!({"id": "Not_A_Label", "name": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_org_id",
    );
    assert_refused(
        post(json!({"id": "a".repeat(33), "name": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_org_id",
    );
    assert_refused(
        post(json!({"id": "new", "name": "  "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_name",
    );

    assert_refused(
        post(json!({"id": "acme", "name": "Again"})).await,
        StatusCode::CONFLICT,
        "org_exists",
    );

    for bad in [
        json!({"name": "no id"}),
        json!({"id": "x", "name": "y", "colour": "red"}),
        json!({"id": "x", "name": "y", "topic_policy": "closed"}),
        json!(["not", "an", "object"]),
    ] {
        let (status, body) = post(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_error(&body, "malformed_request");
    }
    assert_refused(
        h.raw(
            Method::POST,
            "/api/v1/orgs",
            "application/json",
            "{not json",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_refused(
        h.raw(
            Method::POST,
            "/api/v1/orgs",
            "text/plain",
            r#"{"id":"x","name":"y"}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let h = harness();
    let big = json!({"id": "big", "name": "x".repeat(5000)}).to_string();
    assert_refused(
        h.raw(
            Method::POST,
            "/api/v1/orgs",
            "application/json",
            big.clone(),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert_refused(
        h.raw(
            Method::POST,
            "/api/v1/orgs/acme/ca-certificates",
            "application/x-pem-file",
            big,
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
}

#[tokio::test]
async fn get_and_page_orgs() {
    let h = harness();
    for (i, id) in ["c", "a", "b", "d", "e"].iter().enumerate() {
        h.add_org(id, T0 + Duration::seconds(i as i64));
    }
    let (status, body) = h.get("/api/v1/orgs/a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": "a", "name": "a name", "topic_policy": "iot-2",
               "approval_required_roles": [], "created_at": "2025-01-01T00:00:01Z"})
    );
    let mut seen = vec![];
    let mut uri = "/api/v1/orgs?limit=2".to_owned();
    loop {
        let (status, body) = h.get(&uri).await;
        assert_eq!(status, StatusCode::OK);
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/orgs?limit=2&cursor={c}"),
            None => {
                assert!(body["next_cursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(seen, ["c", "a", "b", "d", "e"]);

    let (status, body) = h.get("/api/v1/orgs").await;
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        5,
        "default limit 50"
    );
    assert_eq!(status, StatusCode::OK);
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=501", "invalid_limit"),
        ("limit=ten", "malformed_request"),
        ("cursor=garbage!", "invalid_cursor"),
    ] {
        let (status, body) = h.get(&format!("/api/v1/orgs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_error(&body, code);
    }
}

#[tokio::test]
async fn unknown_org_is_404_everywhere() {
    let h = harness();
    let uris = [
        (Method::GET, "/api/v1/orgs/ghost", None),
        (Method::GET, "/api/v1/orgs/NOT-VALID", None),
        (
            Method::PATCH,
            "/api/v1/orgs/ghost",
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/api/v1/orgs/ghost", None),
        (Method::GET, "/api/v1/orgs/ghost/ca-certificates", None),
        (Method::GET, "/api/v1/orgs/ghost/ca-certificates/00ff", None),
        (
            Method::PATCH,
            "/api/v1/orgs/ghost/ca-certificates/00ff",
            Some(json!({"active": false})),
        ),
        (
            Method::DELETE,
            "/api/v1/orgs/ghost/ca-certificates/00ff",
            None,
        ),
        (
            Method::POST,
            "/api/v1/orgs/ghost/ca-certificates",
            Some(json!({"certificate": "x", "description": "d"})),
        ),
        (Method::GET, "/api/v1/orgs/ghost/server-certificates", None),
        (
            Method::GET,
            "/api/v1/orgs/ghost/server-certificates/00ff",
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/orgs/ghost/server-certificates/00ff",
            None,
        ),
        (
            Method::POST,
            "/api/v1/orgs/ghost/server-certificates",
            Some(json!({"certificate_chain": "x", "private_key": "y"})),
        ),
        (
            Method::GET,
            "/api/v1/orgs/ghost/active-server-certificate",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/orgs/ghost/active-server-certificate",
            Some(json!({"id": null})),
        ),
    ];
    for (method, uri, body) in uris {
        let (status, response) = h.json(method.clone(), uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {response}");
        assert_error(&response, "not_found");
    }
}

#[tokio::test]
async fn ca_list_get_and_filters() {
    let h = harness();
    h.add_org("acme", T0);
    let north = h.add_ca("acme", 1, "Fleet North", T0);
    let south = h.add_ca("acme", 2, "fleet south", T0 + Duration::hours(1));
    let lab = h.add_ca("acme", 3, "lab", T0 + Duration::hours(2));
    h.store
        .update_ca(
            &org("acme"),
            &lab,
            &CaPatch {
                active: Some(false),
                ..CaPatch::default()
            },
            &test_audit(),
        )
        .unwrap();

    let (status, body) = h
        .get(&format!("/api/v1/orgs/acme/ca-certificates/{north}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "id": north, "org": "acme", "subject": "CN=Device CA 1", "issuer": "CN=Root",
            "serial": "01", "fingerprint_sha256": format!("{:064x}", 1),
            "not_before": "2024-01-01T00:00:00Z", "not_after": "2034-01-01T00:00:00Z",
            "description": "Fleet North", "active": true, "can_issue": false,
            "registered_at": "2025-01-01T00:00:00Z", "alias": "CN=Device CA 1",
            "fingerprint_sha1": "18c42203590f36ef6f08a9585fa415d7b0240b02",
            "key_type": "unknown", "used_for": ["device_authentication"],
            "crl_url": null, "ocsp_mode": "off", "ocsp_url": null
        })
    );
    assert_refused(
        h.get("/api/v1/orgs/acme/ca-certificates/0000").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let h = &h;
    let list = |query: &str| {
        let uri = format!("/api/v1/orgs/acme/ca-certificates?{query}");
        async move {
            let (status, body) = h.get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            body
        }
    };
    assert_eq!(ids(&list("").await), [north.as_str(), &south, &lab]);
    assert_eq!(ids(&list("q=FLEET").await), [north.as_str(), &south]);
    assert_eq!(ids(&list("q=device%20ca%203").await), [lab.as_str()]);
    assert_eq!(ids(&list("active=false").await), [lab.as_str()]);
    assert_eq!(ids(&list("active=true&q=south").await), [south.as_str()]);
    assert_eq!(
        ids(&list("registered_after=2025-01-01T00:00:00Z").await),
        [south.as_str(), &lab]
    );
    assert_eq!(
        ids(&list("registered_before=2025-01-01T01:30:00%2B00:00").await),
        [north.as_str(), &south]
    );
    let first = list("limit=2").await;
    assert_eq!(ids(&first), [north.as_str(), &south]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(&format!("limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), [lab.as_str()]);
    assert!(second["next_cursor"].is_null());

    for (query, code) in [
        ("registered_after=yesterday", "invalid_time"),
        ("active=maybe", "malformed_request"),
        ("limit=1000", "invalid_limit"),
    ] {
        let (status, body) = h
            .get(&format!("/api/v1/orgs/acme/ca-certificates?{query}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_error(&body, code);
    }
}

#[tokio::test]
async fn ca_upload_refusals_before_pki() {
    let h = harness();
    h.add_org("acme", T0);
    let uri = "/api/v1/orgs/acme/ca-certificates";
    assert_refused(
        h.raw(Method::POST, uri, "text/plain", "x").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_refused(
        h.raw(
            Method::POST,
            uri,
            "application/json",
            "{\"certificate\": 1}",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_refused(
        h.json(
            Method::PATCH,
            &format!("{uri}/00ff"),
            Some(json!({"active": "no"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_refused(
        h.json(
            Method::PATCH,
            &format!("{uri}/00ff"),
            Some(json!({"active": false})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_refused(
        h.json(Method::DELETE, &format!("{uri}/00ff"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn server_certificates_read_and_refusals() {
    let h = harness();
    h.add_org("acme", T0);
    let c1 = h.add_server_cert("acme", 1);
    let c2 = h.add_server_cert("acme", 2);
    let base = "/api/v1/orgs/acme/server-certificates";

    let (status, body) = h.get(&format!("{base}/{c1}")).await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "active",
        "dns_names",
        "fingerprint_sha256",
        "id",
        "issuer",
        "not_after",
        "not_before",
        "org",
        "registered_at",
        "serial",
        "subject",
        "alias",
        "fingerprint_sha1",
        "key_type",
        "used_for",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected, "never the key");
    assert_eq!(body["dns_names"], json!(["acme.messaging.example"]));
    assert_eq!(body["active"], false);
    let key = h.store.server_cert_key(&org("acme"), &c1).unwrap().unwrap();
    let text = body.to_string();
    assert!(!text.contains(&hex::encode(key.secret_der())));
    assert!(!text.contains("PRIVATE KEY"));

    let (status, body) = h.get(&format!("{base}?limit=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["id"], c1.as_str());
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, body) = h.get(&format!("{base}?limit=1&cursor={cursor}")).await;
    assert_eq!(body["items"][0]["id"], c2.as_str());
    assert!(body["next_cursor"].is_null());

    let active_uri = "/api/v1/orgs/acme/active-server-certificate";
    let (status, body) = h.get(active_uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": null}));
    assert_refused(
        h.json(Method::PUT, active_uri, Some(json!({"id": "00ff"})))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (status, body) = h.json(Method::PUT, active_uri, Some(json!({}))).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "id is required, null or not"
    );
    assert_error(&body, "malformed_request");

    // The active one cannot be deleted.
    h.store
        .set_active_server_cert(&org("acme"), Some(&c2), &test_audit())
        .unwrap();
    let (_, body) = h.get(active_uri).await;
    assert_eq!(body, json!({"id": c2}));
    assert_refused(
        h.json(Method::DELETE, &format!("{base}/{c2}"), None).await,
        StatusCode::CONFLICT,
        "certificate_active",
    );
    assert_refused(
        h.json(Method::DELETE, &format!("{base}/00ff"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Upload bodies that name neither form, or both.
    for bad in [
        json!({}),
        json!({"certificate_chain": "x"}),
        json!({"certificate_chain": "x", "private_key": "y", "pkcs12": "z"}),
        json!({"pkcs12": "z", "passphrase": "p"}),
        json!({"certificate_chain": "x", "private_key": "y", "extra": 1}),
    ] {
        let (status, body) = h.json(Method::POST, base, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_error(&body, "malformed_request");
    }
}

// ---- Changes that succeed: they publish to the registry. ----

#[tokio::test]
async fn org_create_patch_delete() {
    let h = harness();
    let (status, body) = h
        .json(
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "acme");
    assert_eq!(body["topic_policy"], "iot-2");
    let created_at = body["created_at"].as_str().unwrap().to_owned();
    OffsetDateTime::parse(&created_at, &time::format_description::well_known::Rfc3339).unwrap();

    let (status, body) = h
        .json(
            Method::PATCH,
            "/api/v1/orgs/acme",
            Some(json!({"topic_policy": "open", "approval_required_roles": ["operator"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": "acme", "name": "Acme", "topic_policy": "open",
               "approval_required_roles": ["operator"], "created_at": created_at})
    );
    let (status, body) = h.json(Method::DELETE, "/api/v1/orgs/acme", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_null());
    let (status, _) = h.get("/api/v1/orgs/acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ca_patch_and_delete() {
    let h = harness();
    h.add_org("acme", T0);
    let id = h.add_ca("acme", 1, "old", T0);
    let uri = format!("/api/v1/orgs/acme/ca-certificates/{id}");
    let (status, body) = h
        .json(
            Method::PATCH,
            &uri,
            Some(json!({"active": false, "description": "retired"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["active"], false);
    assert_eq!(body["description"], "retired");
    let (status, _) = h.json(Method::DELETE, &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h.get(&uri).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn activate_then_delete_server_certificate() {
    let h = harness();
    h.add_org("acme", T0);
    let id = h.add_server_cert("acme", 1);
    let active_uri = "/api/v1/orgs/acme/active-server-certificate";
    let (status, body) = h
        .json(Method::PUT, active_uri, Some(json!({"id": id})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": id}));
    let cert_uri = format!("/api/v1/orgs/acme/server-certificates/{id}");
    let (_, body) = h.get(&cert_uri).await;
    assert_eq!(body["active"], true);
    let (status, body) = h
        .json(Method::PUT, active_uri, Some(json!({"id": null})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": null}));
    let (status, _) = h.json(Method::DELETE, &cert_uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

// ---- Uploads: they need `pki` (and `publish_org` once accepted). ----

/// A CA (self-signed, keyCertSign) and a server chain for `acme.messaging.example` it issued.
struct TestPki {
    ca_pem: String,
    ca_der: Vec<u8>,
    server_chain_pem: String,
    server_key_pem: String,
}

fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Test Device CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["acme.messaging.example".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "acme.messaging.example");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        server_chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        server_key_pem: leaf_key.serialize_pem(),
    }
}

#[tokio::test]
async fn ca_upload_json_pem_der_and_duplicate() {
    let h = harness();
    h.add_org("acme", T0);
    h.add_org("other", T0);
    let pki = test_pki();
    let (status, body) = h
        .json(
            Method::POST,
            "/api/v1/orgs/acme/ca-certificates",
            Some(json!({"certificate": pki.ca_pem, "description": "fleet"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["description"], "fleet");
    assert_eq!(body["org"], "acme");
    assert!(body["subject"].as_str().unwrap().contains("Test Device CA"));

    assert_refused(
        h.raw(
            Method::POST,
            "/api/v1/orgs/acme/ca-certificates?description=again",
            "application/x-pem-file",
            pki.ca_pem.clone(),
        )
        .await,
        StatusCode::CONFLICT,
        "duplicate_certificate",
    );

    let (status, body) = h
        .raw(
            Method::POST,
            "/api/v1/orgs/other/ca-certificates?description=der",
            "application/pkix-cert",
            pki.ca_der.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["description"], "der");
}

#[tokio::test]
async fn ca_upload_refusals() {
    let h = harness();
    h.add_org("acme", T0);
    let pki = test_pki();
    let uri = "/api/v1/orgs/acme/ca-certificates";
    let two = format!("{}{}", pki.ca_pem, pki.server_chain_pem);
    let leaf_only = pki
        .server_chain_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap()
        .to_owned();
    for (body, code) in [
        ("not a pem".to_owned(), "not_a_certificate"),
        (two, "more_than_one_certificate"),
        (leaf_only, "not_a_ca"),
    ] {
        let (status, response) = h
            .raw(Method::POST, uri, "application/x-pem-file", body)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        assert_error(&response, code);
    }
    assert_refused(
        h.raw(Method::POST, uri, "application/pkix-cert", vec![1u8, 2, 3])
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_a_certificate",
    );
    let (_, list) = h.get(uri).await;
    assert_eq!(list["items"], json!([]), "a refused upload stores nothing");
}

#[tokio::test]
async fn server_certificate_upload() {
    let h = harness();
    h.add_org("acme", T0);
    let pki = test_pki();
    let uri = "/api/v1/orgs/acme/server-certificates";
    let (status, body) = h
        .json(
            Method::POST,
            uri,
            Some(json!({
                "certificate_chain": pki.server_chain_pem,
                "private_key": pki.server_key_pem,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["active"], false);
    assert_eq!(body["dns_names"], json!(["acme.messaging.example"]));
    assert!(body.get("private_key").is_none());
    let id = body["id"].as_str().unwrap();
    let key = h.store.server_cert_key(&org("acme"), id).unwrap().unwrap();
    assert!(!key.secret_der().is_empty());

    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    assert_refused(
        h.json(
            Method::POST,
            uri,
            Some(json!({"certificate_chain": pki.server_chain_pem, "private_key": other_key})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "key_mismatch",
    );
    assert_refused(
        h.json(
            Method::POST,
            uri,
            Some(json!({"certificate_chain": pki.server_chain_pem, "private_key": "nope"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_a_key",
    );
    let (status, body) = h
        .json(
            Method::POST,
            uri,
            Some(json!({"pkcs12": "@@@not base64@@@", "password": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "not_pkcs12");
}
