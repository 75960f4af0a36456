//! The OpenAPI document of the admin API, generated from the handlers' `#[utoipa::path]`
//! attributes (which also declare their routes: see `admin::api`) and the request and view
//! types, served at `/api/v1/openapi.json` (no token: it describes the API, it holds no data).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        description = "Organisations, CA, server and signing certificates, CSRs and signature \
                       requests, org tokens and audit events. Every call needs \
                       `Authorization: Bearer <token>`: the admin token or an org token."
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Completes the document of the routes (declared with their handlers, relative to `/api/v1`):
/// their paths as clients call them, and the 5XX answer every operation can give.
pub(super) fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    let paths = std::mem::take(&mut openapi.paths.paths);
    openapi.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (format!("/api/v1{path}"), item))
        .collect();
    ServerErrors.modify(openapi);
}

/// Every operation can answer 500 (`internal`; `publish_failed` for a change saved but not yet
/// served) and 503 (`store_unavailable`: the store cannot be reached), in the one error shape: documented once here rather than on each handler.
struct ServerErrors;

impl Modify for ServerErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = ResponseBuilder::new()
            .description("failed: `{\"error\": {\"code\", \"message\"}}`")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorView")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .entry("5XX".to_owned())
                    .or_insert_with(|| error.clone().into());
            }
        }
    }
}

/// The `bearer` security scheme the paths name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or the admin token")
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    //! The document checked against itself: a client generated from it must find every schema
    //! it names, and never send one resource's body to another.

    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;
    fn document() -> Value {
        serde_json::to_value(super::super::api().1).expect("the document serialises")
    }

    /// Every `$ref` in `value`, with where it is.
    fn refs(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "$ref" {
                        found.push((at.to_owned(), v.as_str().unwrap_or_default().to_owned()));
                    } else {
                        refs(v, &format!("{at}/{key}"), found);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, "", &mut found);
        assert!(!found.is_empty());
        for (at, target) in found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: {target} is not local"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: {target} resolves to nothing"
            );
        }
    }

    #[test]
    fn every_operation_documents_refusals_and_failures() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = &operation["responses"];
                for class in ["4XX", "5XX"] {
                    assert!(
                        responses[class].is_object(),
                        "{method} {path} documents no {class}"
                    );
                }
                let success = responses
                    .as_object()
                    .expect("responses")
                    .keys()
                    .any(|code| code.starts_with('2'));
                assert!(success, "{method} {path} documents no success");
            }
        }
    }

    /// The collection an operation acts on: `csrs` for `/api/v1/orgs/{org}/csrs/{id}/approve`.
    fn resource(path: &str) -> &str {
        let rest = path.trim_start_matches("/api/v1/orgs");
        let rest = rest.strip_prefix("/{org}").unwrap_or(rest);
        rest.trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
    }

    #[test]
    fn no_two_resources_share_a_request_body_schema() {
        let doc = document();
        let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let Some(content) = operation["requestBody"]["content"].as_object() else {
                    continue;
                };
                for media in content.values() {
                    if let Some(name) = media["schema"]["$ref"].as_str() {
                        users
                            .entry(name.to_owned())
                            .or_default()
                            .insert(format!("{} {method} {path}", resource(path)));
                    }
                }
            }
        }
        assert!(!users.is_empty());
        for (schema, operations) in users {
            let resources: BTreeSet<&str> = operations
                .iter()
                .map(|o| o.split(' ').next().unwrap_or_default())
                .collect();
            assert_eq!(
                resources.len(),
                1,
                "{schema} is the body of operations on different resources: {operations:?}"
            );
        }
    }

    #[test]
    fn request_body_types_have_names_of_their_own() {
        use utoipa::ToSchema;
        let names = [
            super::super::blocked_devices::Create::name(),
            super::super::csrs::Create::name(),
            super::super::csrs::Request::name(),
            super::super::csrs::ChainJson::name(),
            super::super::csrs::Decision::name(),
            super::super::grants::Renew::name(),
            super::super::notification_settings::Settings::name(),
            super::super::server_certificates::Upload::name(),
            super::super::server_certificates::Active::name(),
            super::super::server_certificates::Generate::name(),
            super::super::signing_certificates::Create::name(),
            super::super::signing_certificates::Default::name(),
            super::super::tokens::Create::name(),
            super::super::tokens::Update::name(),
        ];
        let unique: BTreeSet<&str> = names.iter().map(|n| n.as_ref()).collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let doc = document();
        for name in &names {
            assert!(
                doc["components"]["schemas"].get(name.as_ref()).is_some(),
                "{name} is not in the document"
            );
        }
    }
}
