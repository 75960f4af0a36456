//! Issue 11, finding 5, against the real server: the OpenAPI document states the limits the
//! server enforces and no parameter it refuses, and every org-scoped endpoint answers 404 for an
//! org that does not exist. (`src/admin/openapi.rs` checks the document against itself;
//! `scripts/api-fuzz.sh` runs a schema-driven fuzzer against it.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

async fn document(server: &TestServer) -> Value {
    let response = step(reqwest::get(server.url("/api/v1/openapi.json")))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    step(response.json()).await.unwrap()
}

/// The query parameter `name` of `method path`, when documented.
fn query_param<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> Option<&'a Value> {
    doc["paths"][path][method]["parameters"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name && p["in"] == "query")
}

#[tokio::test]
async fn the_document_states_the_limits_the_server_enforces() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let mut limits = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if let Some(limit) = query_param(&doc, method, path, "limit") {
                let schema = &limit["schema"];
                assert_eq!(
                    (schema["minimum"].as_u64(), schema["maximum"].as_u64()),
                    (Some(1), Some(500)),
                    "{method} {path}: {limit}"
                );
                limits += 1;
            }
        }
    }
    assert!(limits >= 10, "only {limits} operations page");
    let within = query_param(&doc, "get", "/api/v1/orgs/{org}/expiring", "within_days").unwrap();
    assert_eq!(within["schema"]["minimum"], 1);
    assert_eq!(within["schema"]["maximum"], 3650);

    // grant_status only where the server accepts it.
    for (path, accepted) in [
        ("/api/v1/orgs/{org}/server-certificates", false),
        ("/api/v1/orgs/{org}/csrs", false),
        ("/api/v1/orgs/{org}/signing-certificates", true),
        ("/api/v1/orgs/{org}/ca-certificates", true),
    ] {
        let documented = query_param(&doc, "get", path, "grant_status").is_some();
        assert_eq!(documented, accepted, "{path}");
    }

    let schemas = &doc["components"]["schemas"];
    let active = &schemas["ActiveServerCertificate"];
    assert!(
        active["required"]
            .as_array()
            .is_some_and(|r| r.contains(&"id".into())),
        "{active}"
    );
    let decision = &schemas["CsrDecision"]["properties"]["reason"];
    assert_eq!(decision["minLength"], 1, "{decision}");
    assert_eq!(decision["maxLength"], 1000, "{decision}");
    let name = &schemas["TokenCreate"]["properties"]["name"];
    assert_eq!(name["minLength"], 1, "{name}");
}

#[tokio::test]
async fn every_org_endpoint_answers_404_for_an_unknown_org() {
    let server = TestServer::start().await;
    for path in [
        "/api/v1/orgs/nobody/events",
        "/api/v1/orgs/nobody/sessions",
        "/api/v1/orgs/nobody/audit-events",
        "/api/v1/orgs/nobody/tokens",
        "/api/v1/orgs/nobody/devices",
    ] {
        let response = step(
            reqwest::Client::new()
                .get(server.url(path))
                .bearer_auth(&server.token)
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
    }
}
