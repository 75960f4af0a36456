//! The OpenAPI document of the admin API, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and view types, served at `/api/v1/openapi.json` (no token: it
//! describes the API, it holds no data).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    audit_events, blocked_devices, ca_certificates, csrs, devices, events, expiring, grants,
    notification_settings, orgs, server_certificates, sessions, signing_certificates, tokens,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        description = "Organisations, CA, server and signing certificates, CSRs and signature \
                       requests, org tokens and audit events. Every call needs \
                       `Authorization: Bearer <token>`: the admin token or an org token."
    ),
    paths(
        orgs::create, orgs::list, orgs::get, orgs::update, orgs::delete,
        ca_certificates::create, ca_certificates::list, ca_certificates::get, ca_certificates::certificate_pem,
        ca_certificates::update, ca_certificates::delete,
        server_certificates::create, server_certificates::generate, server_certificates::list,
        server_certificates::get, server_certificates::chain_pem, server_certificates::delete, server_certificates::get_active,
        server_certificates::set_active,
        signing_certificates::create, signing_certificates::list, signing_certificates::get,
        signing_certificates::chain_pem, signing_certificates::set_default,
        signing_certificates::delete,
        tokens::create, tokens::list, tokens::get, tokens::update, tokens::delete,
        audit_events::list,
        csrs::create, csrs::list, csrs::get, csrs::csr_pem, csrs::delete,
        csrs::upload_certificate, csrs::request_signature, csrs::approve, csrs::reject,
        blocked_devices::create, blocked_devices::list, blocked_devices::delete,
        sessions::list, sessions::disconnect, events::stream, devices::list, expiring::list, ca_certificates::put_crl, ca_certificates::get_crl,
        grants::list, grants::get, grants::challenge, grants::renew,
        notification_settings::put, notification_settings::get,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

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
