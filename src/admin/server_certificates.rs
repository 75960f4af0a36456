//! `/api/v1/orgs/{org}/server-certificates[/{id}]` and `…/active-server-certificate`: the
//! certificate an org's devices see, uploaded inactive and switched on explicitly.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::views::{ListView, ServerCertView};
use super::{
    change, get_one, list_page, no_content, org_in_path, read, require_org, AdminState,
    CertListQuery,
};
use crate::pki::{self, PkiError};
use crate::store::NewServerCert;

const MISSING: &str = "no such server certificate";

/// `{"certificate_chain", "private_key", "passphrase"?}` or `{"pkcs12", "password"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServerCertificateUpload)]
pub struct Upload {
    certificate_chain: Option<String>,
    private_key: Option<String>,
    passphrase: Option<String>,
    pkcs12: Option<String>,
    password: Option<String>,
}

/// `{"id": "<id>"}` or `{"id": null}` (the platform default); `id` must be present.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ActiveServerCertificate)]
pub struct Active {
    #[schema(required = true)]
    #[serde(deserialize_with = "Option::deserialize")]
    id: Option<String>,
}

/// Base64 as operators paste it: standard or URL-safe, padded or not, with line breaks.
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let unpadded = compact.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(unpadded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
        .ok()
}

#[utoipa::path(
    post,
    path = "/orgs/{org}/server-certificates",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Upload,
    responses((status = 201, description = "done", body = ServerCertView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Upload>,
) -> Result<(StatusCode, Json<ServerCertView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let record = change(state, org, move |store, org| {
        require_org(store, org)?;
        let now = OffsetDateTime::now_utc();
        let (chain, key) = match body {
            Upload {
                certificate_chain: Some(chain),
                private_key: Some(key),
                passphrase,
                pkcs12: None,
                password: None,
            } => {
                let chain = pki::certs_from_pem(chain.as_bytes())?;
                let key = pki::private_key_from_pem(key.as_bytes(), passphrase.as_deref())?;
                (chain, key)
            }
            Upload {
                certificate_chain: None,
                private_key: None,
                passphrase: None,
                pkcs12: Some(p12),
                password,
            } => {
                let der = decode_base64(&p12).ok_or(PkiError::NotPkcs12)?;
                pki::from_pkcs12(&der, password.as_deref().unwrap_or_default())?
            }
            _ => {
                return Err(ApiError::Malformed(
                    "send certificate_chain and private_key (and passphrase if the key is \
                     encrypted), or pkcs12 and password"
                        .into(),
                ))
            }
        };
        if chain.is_empty() {
            return Err(PkiError::NotACertificate.into());
        }
        let info = pki::check_server_cert(org.as_str(), &chain, &key, now)?;
        let new = NewServerCert {
            chain,
            key,
            info,
            registered_at: now,
        };
        let record =
            store.insert_server_cert(org, &new, &caller.audit("server_certificate.create"))?;
        Ok(record)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// `{"dns_name", "key_type"}`: a server certificate for one of the org's names issued by the
/// platform CA over a new key, so clients that trust `platform-ca.pem` connect without warnings.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServerCertificateGenerate)]
pub struct Generate {
    dns_name: String,
    key_type: pki::KeyType,
}

#[utoipa::path(
    post,
    path = "/orgs/{org}/server-certificates/generate",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Generate,
    responses((status = 201, description = "done", body = ServerCertView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn generate(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Generate>,
) -> Result<(StatusCode, Json<ServerCertView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let name = body.dns_name.trim().to_ascii_lowercase();
    if !pki::server_name_fits_org(org.as_str(), &name) {
        return Err(PkiError::NamesDoNotFit(format!(
            "{name} is neither {org}.messaging.<domain> nor *.messaging.<domain>"
        ))
        .into());
    }
    let record = change(state, org, move |store, org| {
        let settings = store
            .org(org)?
            .ok_or(ApiError::NotFound("no such organisation"))?;
        // A signature the org wants approved goes through a CSR and its signature request.
        if caller
            .role()
            .is_some_and(|role| settings.approval_required_roles.contains(&role))
        {
            return Err(ApiError::Conflict {
                code: "approval_required",
                message: "this role's signatures need approval: create a CSR and request a \
                          signature instead",
            });
        }
        let platform = store
            .platform_ca()?
            .ok_or_else(|| ApiError::internal("the platform CA is missing"))?;
        let key = pki::generate_key(body.key_type)?;
        let dns_names = [name.clone()];
        let names = pki::ServerNames {
            common_name: &name,
            dns_names: &dns_names,
        };
        let chain = pki::sign_server_cert(Some(&platform), &names, &key)?;
        let id = super::csrs::register(
            store,
            org,
            chain,
            key,
            &caller.audit("server_certificate.generate"),
        )?;
        store
            .server_cert(org, &id)?
            .ok_or_else(|| ApiError::internal("a generated server certificate vanished"))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/server-certificates",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id"), CertListQuery),
    responses((status = 200, description = "done", body = ListView<ServerCertView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<CertListQuery>,
) -> Result<Json<ListView<ServerCertView>>, ApiError> {
    let (filter, paging) = query.split(&[("active", true), ("inactive", false)])?;
    list_page(
        state,
        &caller,
        &org,
        Need::Read,
        paging,
        move |store, org, page| store.list_server_certs(org, &filter, page),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/server-certificates/{id}",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "done", body = ServerCertView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<ServerCertView>, ApiError> {
    get_one(
        state,
        &caller,
        &org,
        Need::Read,
        MISSING,
        move |store, org| store.server_cert(org, &id),
    )
    .await
}

/// The chain as PEM, leaf first, as it is served in handshakes (never its key): uploaded,
/// generated or signed for a CSR alike.
#[utoipa::path(
    get,
    path = "/orgs/{org}/server-certificates/{id}/chain.pem",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "the chain, leaf first", body = String, content_type = "application/x-pem-file"), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn chain_pem(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let found = move |store: &dyn crate::store::Store, org: &crate::identity::OrgId| {
        store.server_cert(org, &id)
    };
    let record = super::find_one(state, &caller, &org, Need::Read, MISSING, found).await?;
    Ok(super::certificates_pem(&record.chain))
}

/// 409 `certificate_active` for the active one: activate another (or null) first.
#[utoipa::path(
    delete,
    path = "/orgs/{org}/server-certificates/{id}",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 204, description = "done"), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    change(state, org, move |store, org| {
        if !store.delete_server_cert(org, &id, &caller.audit("server_certificate.delete"))? {
            return Err(ApiError::NotFound(MISSING));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/active-server-certificate",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id")),
    responses((status = 200, description = "done", body = Active), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get_active(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Json<Active>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Read)?;
    let id = read(state, move |store| store.active_server_cert_id(&org)).await?;
    Ok(Json(Active { id }))
}

#[utoipa::path(
    put,
    path = "/orgs/{org}/active-server-certificate",
    tag = "server-certificates",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Active,
    responses((status = 200, description = "done", body = Active), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn set_active(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Active>,
) -> Result<Json<Active>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let id = body.id;
    let id = change(state, org, move |store, org| {
        if !store.set_active_server_cert(
            org,
            id.as_deref(),
            &caller.audit("server_certificate.activate"),
        )? {
            return Err(ApiError::NotFound(MISSING));
        }
        Ok(id)
    })
    .await?;
    Ok(Json(Active { id }))
}
