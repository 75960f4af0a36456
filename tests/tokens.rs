//! Roles and org tokens over HTTP against the real server: signing certificates from the platform
//! CA, tokens verified by an independent JWT library with the served chain, every endpoint's
//! allowed and forbidden roles, revocation by deleting the signing certificate, suspension, and
//! audit events that name who did what (never a token).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

const BOGUS: &str = "00000000000000000000000000000000";
/// A client id with no live session.
const GHOST: &str = "d:acme:sensor:ghost";

/// The org's default signing certificate resource.
async fn default_signing(server: &TestServer, org: &str) -> Value {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/{org}/signing-certificates"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let defaults: Vec<&Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["is_default"] == true)
        .collect();
    assert_eq!(defaults.len(), 1, "exactly one default: {body}");
    defaults[0].clone()
}

/// A signing certificate's chain as served (PEM), parsed into DER certificates.
async fn served_chain(server: &TestServer, org: &str, id: &str) -> Vec<Vec<u8>> {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/{org}/signing-certificates/{id}/chain.pem"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let pem = body.as_str().expect("PEM text");
    pem::parse_many(pem)
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

#[tokio::test]
async fn a_new_org_signs_with_a_chain_from_the_platform_ca() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let signing = default_signing(&server, "acme").await;
    assert_eq!(signing["alias"], "acme token signing");
    let chain = served_chain(&server, "acme", signing["id"].as_str().unwrap()).await;
    assert_eq!(chain.len(), 2, "leaf and platform CA");
    assert_eq!(
        chain[1],
        server.platform_ca.as_ref(),
        "issued by the platform CA"
    );
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, platform) = X509Certificate::from_der(server.platform_ca.as_ref()).unwrap();
    leaf.verify_signature(Some(platform.public_key()))
        .expect("the leaf verifies against platform-ca.pem");
}

#[tokio::test]
async fn tokens_verify_with_the_served_chain_in_an_independent_jwt_library() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (id, token) = server.issue_token("acme", "ci pipeline", "viewer").await;
    let signing = default_signing(&server, "acme").await;
    let chain = served_chain(&server, "acme", signing["id"].as_str().unwrap()).await;
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_ec_der(leaf.public_key().subject_public_key.data.as_ref());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["portcullis-admin"]);
    validation.set_issuer(&["portcullis"]);
    let decoded = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("verifies");
    assert_eq!(decoded.claims["jti"], id.as_str());
    assert_eq!(decoded.claims["org"], "acme");
    assert_eq!(decoded.claims["role"], "viewer");
    assert_eq!(decoded.claims["sub"], "ci pipeline");
    let x5c = decoded.header.x5c.expect("x5c header");
    assert_eq!(x5c.len(), 2);

    // Another org's chain does not verify it.
    server.create_org("other").await;
    let other = default_signing(&server, "other").await;
    let other_chain = served_chain(&server, "other", other["id"].as_str().unwrap()).await;
    let (_, other_leaf) = X509Certificate::from_der(&other_chain[0]).unwrap();
    let other_key = jsonwebtoken::DecodingKey::from_ec_der(
        other_leaf.public_key().subject_public_key.data.as_ref(),
    );
    assert!(jsonwebtoken::decode::<Value>(&token, &other_key, &validation).is_err());

    // The token works, and is never shown again.
    let (status, _) = server
        .api_as(&token, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/orgs/acme/tokens".to_owned(),
        format!("/api/v1/orgs/acme/tokens/{id}"),
    ] {
        let (status, body) = server.api("GET", &path, None).await;
        assert_eq!(status, 200);
        assert!(!body.to_string().contains(&token), "{path} shows the token");
        assert!(
            !body.to_string().contains("\"token\""),
            "{path} has a token field"
        );
    }
}

/// The status of a GET, without reading the body (for streams).
async fn status_of(server: &TestServer, token: &str, path: &str) -> u16 {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// What an endpoint needs (DESIGN §7b, README "Roles").
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    /// Any valid token, of any org.
    Any,
    Read,
    Manage,
    Approve,
    Admin,
}

/// Every endpoint, with a request that passes extraction but changes nothing (unknown ids,
/// bodies that fail their checks): an allowed caller gets 2xx/404/422, a forbidden one 403.
fn endpoints(ca: &str) -> Vec<(&'static str, String, Option<Value>, Need)> {
    let o = "/api/v1/orgs/acme";
    vec![
        ("GET", "/api/v1/whoami".into(), None, Need::Any),
        ("GET", "/api/v1/cluster/nodes".into(), None, Need::Admin),
        ("GET", "/api/v1/orgs".into(), None, Need::Admin),
        (
            "POST",
            "/api/v1/orgs".into(),
            Some(json!({"id": "Bad Id!", "name": "x"})),
            Need::Admin,
        ),
        ("GET", o.into(), None, Need::Read),
        ("PATCH", o.into(), Some(json!({"name": ""})), Need::Admin),
        ("DELETE", o.into(), None, Need::Admin),
        ("GET", format!("{o}/ca-certificates"), None, Need::Read),
        (
            "POST",
            format!("{o}/ca-certificates"),
            Some(json!({"certificate": "nope"})),
            Need::Manage,
        ),
        ("GET", format!("{o}/ca-certificates/{ca}"), None, Need::Read),
        (
            "PATCH",
            format!("{o}/ca-certificates/{BOGUS}"),
            Some(json!({"description": "x"})),
            Need::Manage,
        ),
        (
            "DELETE",
            format!("{o}/ca-certificates/{BOGUS}"),
            None,
            Need::Manage,
        ),
        ("GET", format!("{o}/server-certificates"), None, Need::Read),
        (
            "POST",
            format!("{o}/server-certificates"),
            Some(json!({"certificate_chain": "x", "private_key": "y"})),
            Need::Manage,
        ),
        (
            "GET",
            format!("{o}/server-certificates/{BOGUS}"),
            None,
            Need::Read,
        ),
        (
            "DELETE",
            format!("{o}/server-certificates/{BOGUS}"),
            None,
            Need::Manage,
        ),
        (
            "GET",
            format!("{o}/active-server-certificate"),
            None,
            Need::Read,
        ),
        (
            "PUT",
            format!("{o}/active-server-certificate"),
            Some(json!({"id": BOGUS})),
            Need::Manage,
        ),
        ("GET", format!("{o}/signing-certificates"), None, Need::Read),
        (
            "POST",
            format!("{o}/signing-certificates"),
            Some(json!({"pkcs12": "!!!", "password": "x"})),
            Need::Admin,
        ),
        (
            "GET",
            format!("{o}/signing-certificates/{BOGUS}"),
            None,
            Need::Read,
        ),
        (
            "GET",
            format!("{o}/signing-certificates/{BOGUS}/chain.pem"),
            None,
            Need::Read,
        ),
        (
            "GET",
            format!("{o}/server-certificates/{BOGUS}/chain.pem"),
            None,
            Need::Read,
        ),
        (
            "GET",
            format!("{o}/ca-certificates/{BOGUS}/certificate.pem"),
            None,
            Need::Read,
        ),
        (
            "DELETE",
            format!("{o}/signing-certificates/{BOGUS}"),
            None,
            Need::Admin,
        ),
        (
            "PUT",
            format!("{o}/default-signing-certificate"),
            Some(json!({"id": BOGUS})),
            Need::Admin,
        ),
        ("GET", format!("{o}/tokens"), None, Need::Manage),
        (
            "POST",
            format!("{o}/tokens"),
            Some(json!({"name": "", "role": "viewer", "ttl_seconds": 3600})),
            Need::Admin,
        ),
        ("GET", format!("{o}/tokens/{BOGUS}"), None, Need::Manage),
        (
            "PATCH",
            format!("{o}/tokens/{BOGUS}"),
            Some(json!({"name": "x"})),
            Need::Manage,
        ),
        ("DELETE", format!("{o}/tokens/{BOGUS}"), None, Need::Admin),
        ("GET", format!("{o}/audit-events"), None, Need::Read),
        (
            "POST",
            format!("{o}/server-certificates/generate"),
            Some(json!({"dns_name": "x", "key_type": "ecdsa-p256"})),
            Need::Manage,
        ),
        ("GET", format!("{o}/csrs"), None, Need::Read),
        (
            "POST",
            format!("{o}/csrs"),
            Some(json!({"common_name": "", "dns_names": [], "key_type": "ecdsa-p256"})),
            Need::Manage,
        ),
        ("GET", format!("{o}/csrs/{BOGUS}"), None, Need::Read),
        ("GET", format!("{o}/csrs/{BOGUS}/csr.pem"), None, Need::Read),
        ("DELETE", format!("{o}/csrs/{BOGUS}"), None, Need::Manage),
        (
            "POST",
            format!("{o}/csrs/{BOGUS}/certificate"),
            Some(json!({"certificate_chain": "x"})),
            Need::Manage,
        ),
        (
            "POST",
            format!("{o}/csrs/{BOGUS}/signature-request"),
            Some(json!({"self_signed": true, "reason": "r"})),
            Need::Manage,
        ),
        (
            "POST",
            format!("{o}/csrs/{BOGUS}/approve"),
            Some(json!({"reason": "r"})),
            Need::Approve,
        ),
        (
            "POST",
            format!("{o}/csrs/{BOGUS}/reject"),
            Some(json!({"reason": "r"})),
            Need::Approve,
        ),
        ("GET", format!("{o}/blocked-devices"), None, Need::Read),
        (
            "POST",
            format!("{o}/blocked-devices"),
            Some(json!({"identity": "bad"})),
            Need::Manage,
        ),
        (
            "DELETE",
            format!("{o}/blocked-devices/{BOGUS}"),
            None,
            Need::Manage,
        ),
        ("GET", format!("{o}/sessions"), None, Need::Read),
        ("GET", format!("{o}/events"), None, Need::Read),
        (
            "POST",
            format!("{o}/explain"),
            Some(json!({"certificate_chain": "not pem"})),
            Need::Read,
        ),
        ("GET", format!("{o}/refusals"), None, Need::Read),
        ("GET", format!("{o}/devices"), None, Need::Read),
        ("GET", format!("{o}/expiring"), None, Need::Read),
        (
            "GET",
            format!("{o}/ca-certificates/{ca}/crl"),
            None,
            Need::Read,
        ),
        (
            "PUT",
            format!("{o}/ca-certificates/{ca}/crl"),
            Some(json!({})),
            Need::Manage,
        ),
        (
            "DELETE",
            format!("{o}/sessions/{GHOST}"),
            None,
            Need::Manage,
        ),
        ("GET", format!("{o}/grants"), None, Need::Read),
        ("GET", format!("{o}/grants/{BOGUS}"), None, Need::Read),
        (
            "POST",
            format!("{o}/grants/{BOGUS}/renewal-challenge"),
            None,
            Need::Manage,
        ),
        (
            "POST",
            format!("{o}/grants/{BOGUS}/renew"),
            Some(json!({"code": "00000000"})),
            Need::Manage,
        ),
        (
            "GET",
            format!("{o}/notification-settings"),
            None,
            Need::Read,
        ),
        (
            "PUT",
            format!("{o}/notification-settings"),
            Some(json!({"emails": ["not an address"]})),
            Need::Manage,
        ),
    ]
}

#[tokio::test]
async fn every_endpoint_allows_and_forbids_each_role_as_the_table_says() {
    let server = TestServer::start().await;
    let (_ca, ca_id) = server.org_with_ca("acme").await;
    server.create_org("other").await;
    let mut callers = Vec::new();
    for role in ["viewer", "approver", "operator"] {
        let (_, token) = server.issue_token("acme", role, role).await;
        callers.push((role, token));
    }
    let (_, stranger) = server.issue_token("other", "stranger", "operator").await;

    for (method, path, body, need) in endpoints(&ca_id) {
        for (role, token) in &callers {
            let allowed = match need {
                Need::Any | Need::Read => true,
                Need::Manage => *role == "operator",
                Need::Approve => *role == "approver",
                Need::Admin => false,
            };
            let (status, answer) = if path.ends_with("/events") {
                // A stream never ends: its status is the answer.
                (status_of(&server, token, &path).await, Value::Null)
            } else {
                server.api_as(token, method, &path, body.clone()).await
            };
            if allowed {
                assert!(
                    ![401, 403].contains(&status),
                    "{role} {method} {path}: {status} {answer}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: {answer}");
                assert_eq!(answer["error"]["code"], "forbidden");
            }
        }
        if path.ends_with("/events") {
            assert_eq!(status_of(&server, &stranger, &path).await, 403);
            assert_eq!(status_of(&server, "not-a-token", &path).await, 401);
            assert_eq!(status_of(&server, &server.token, &path).await, 200);
            continue;
        }
        let (status, _) = server.api_as(&stranger, method, &path, body.clone()).await;
        let expected = if need == Need::Any { 200 } else { 403 };
        assert_eq!(status, expected, "another org's operator: {method} {path}");
        let (status, _) = server
            .api_as("not-a-token", method, &path, body.clone())
            .await;
        assert_eq!(status, 401, "no valid token: {method} {path}");
        if !(method == "DELETE" && path == "/api/v1/orgs/acme") {
            let (status, answer) = server.api(method, &path, body.clone()).await;
            assert!(
                ![401, 403].contains(&status),
                "admin {method} {path}: {status} {answer}"
            );
        }
    }
    // The CA survived every allowed call above.
    let (status, _) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn deleting_a_signing_certificate_revokes_the_tokens_it_signed() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let first = default_signing(&server, "acme").await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (old_id, old_token) = server.issue_token("acme", "old", "operator").await;

    // The default cannot be deleted.
    let path = format!("/api/v1/orgs/acme/signing-certificates/{first_id}");
    let (status, body) = server.api("DELETE", &path, None).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "signing_certificate_default");

    // Regenerate: a new default; new tokens are signed with it.
    let (status, second) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/signing-certificates",
            Some(json!({"alias": "2027", "default": true})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["is_default"], true);
    let (_, new_token) = server.issue_token("acme", "new", "operator").await;
    let (_, first_now) = server.api("GET", &path, None).await;
    assert_eq!(first_now["tokens"], 1, "one live token signed by the first");

    let (status, _) = server.api("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_as(&old_token, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(
        status, 401,
        "a token of the deleted signing certificate still works"
    );
    let (_, old) = server
        .api("GET", &format!("/api/v1/orgs/acme/tokens/{old_id}"), None)
        .await;
    assert_eq!(old["status"], "revoked");
    assert!(old["signing_certificate"].is_null());
    let (status, _) = server
        .api_as(&new_token, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn suspended_revoked_and_forged_tokens_are_refused() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (id, token) = server.issue_token("acme", "ops", "viewer").await;
    let path = format!("/api/v1/orgs/acme/tokens/{id}");
    let works = |status: u16| status == 200;

    let (status, body) = server
        .api("PATCH", &path, Some(json!({"status": "suspended"})))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("suspended")));
    let (status, _) = server
        .api_as(&token, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 401, "suspended");
    server
        .api("PATCH", &path, Some(json!({"status": "active"})))
        .await;
    let (status, _) = server
        .api_as(&token, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert!(works(status), "reactivated");

    // A forged role: the payload says operator, the signature was made over viewer.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = json!("operator");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    let (status, _) = server
        .api_as(&forged, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 401, "forged claims accepted");

    let (status, _) = server.api("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_as(&token, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 401, "revoked");
    let (status, body) = server
        .api("PATCH", &path, Some(json!({"status": "active"})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("token_revoked"))
    );
    let (status, _) = server.api("DELETE", &path, None).await;
    assert_eq!(status, 204, "revoking again changes nothing");
}

#[tokio::test]
async fn audit_events_name_the_token_its_role_and_the_reason_but_never_the_token() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, token) = server.issue_token("acme", "alice", "operator").await;
    let ca = TestCa::root("acme devices CA");
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/orgs/acme/ca-certificates"))
        .bearer_auth(&token)
        .header("x-portcullis-reason", "ticket OPS-42")
        .json(&json!({"certificate": ca.pem}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let ca_id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, events) = server
        .api_as(&token, "GET", "/api/v1/orgs/acme/audit-events", None)
        .await;
    assert_eq!(status, 200);
    let items = events["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["org.create", "token.create", "ca_certificate.create"]
    );
    let upload = &items[2];
    assert_eq!(upload["actor"], "alice");
    assert_eq!(upload["actor_role"], "operator");
    assert_eq!(upload["target"], ca_id.as_str());
    assert_eq!(upload["reason"], "ticket OPS-42");
    assert_eq!(items[0]["actor"], "admin");
    assert!(!events.to_string().contains(&token));
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint_without_a_token() {
    let server = TestServer::start().await;
    let (_, ca_id) = server.org_with_ca("acme").await;
    let response = reqwest::get(server.url("/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (method, path, _, _) in endpoints(&ca_id) {
        let template = path
            .replace("/orgs/acme", "/orgs/{org}")
            .replace(BOGUS, "{id}")
            .replace(GHOST, "{client_id}")
            .replace(&ca_id, "{id}");
        let operation = &paths
            .get(&template)
            .unwrap_or_else(|| panic!("{template} is not documented"))[method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        assert!(
            operation["responses"]["4XX"].is_object(),
            "{method} {template}: no refusals"
        );
        documented += 1;
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        operations, documented,
        "the document has operations the API does not"
    );
}

#[tokio::test]
async fn whoami_says_who_the_caller_is_and_what_it_may_do() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, admin) = server.api("GET", "/api/v1/whoami", None).await;
    assert_eq!(
        admin,
        json!({"principal": "admin", "org": null, "token_id": null, "name": null,
               "role": "admin", "may": ["read", "manage", "approve", "admin"]})
    );
    for (role, may) in [
        ("viewer", json!(["read"])),
        ("operator", json!(["read", "manage"])),
        ("approver", json!(["read", "approve"])),
    ] {
        let (id, token) = server.issue_token("acme", role, role).await;
        let (status, me) = server.api_as(&token, "GET", "/api/v1/whoami", None).await;
        assert_eq!(status, 200);
        assert_eq!(me["principal"], "token");
        assert_eq!(me["org"], "acme");
        assert_eq!(me["token_id"], id.as_str());
        assert_eq!(me["name"], role);
        assert_eq!(me["role"], role);
        assert_eq!(me["may"], may, "{role}");
        assert!(
            !me.to_string().contains(&token),
            "the token is never echoed"
        );
    }
    let (status, _) = server.api_as("nope", "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 401);
}
