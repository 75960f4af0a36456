//! `/api/v1/orgs/{org}/signing-certificates[/{id}[/chain.pem]]` and
//! `…/default-signing-certificate`: the keys org tokens are signed with. Reading is open to every
//! role of the org (clients verify tokens with the served chain); changes are the admin's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::server_certificates::decode_base64;
use super::views::{ListView, SigningCertView};
use super::{
    change, get_one, list_page, no_content, org_in_path, require_org, AdminState, CertListQuery,
};
use crate::identity::OrgId;
use crate::pki::{self, PkiError};
use crate::store::{KeyPassphrase, NewSigningCert, SigningCertDeleted, Store};

const MISSING: &str = "no such signing certificate";

/// `{}` or `{"alias", "default"}` generates one from the platform CA; with `"pkcs12"` and
/// `"password"` it imports one. `default` (false unless the org has none) makes it the default.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SigningCertificateCreate)]
pub struct Create {
    alias: Option<String>,
    #[serde(default)]
    default: bool,
    pkcs12: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DefaultSigningCertificate)]
pub struct Default {
    id: String,
}

/// A new signing certificate for `org` from the platform CA (alias: its CN unless given).
pub(super) fn generate(
    store: &dyn Store,
    org: &OrgId,
    alias: Option<&str>,
) -> Result<NewSigningCert, ApiError> {
    let platform = store
        .platform_ca()?
        .ok_or_else(|| ApiError::internal("the platform CA is missing"))?;
    let (chain, key) = pki::issue_signing_cert(&platform, org.as_str())?;
    let info = pki::cert_info(&chain[0])?;
    let alias = super::valid_alias(alias, info.common_name.as_deref().unwrap_or_default())?;
    Ok(NewSigningCert {
        chain,
        key,
        info,
        alias,
        key_passphrase: None,
        registered_at: OffsetDateTime::now_utc(),
    })
}

#[utoipa::path(
    post,
    path = "/orgs/{org}/signing-certificates",
    tag = "signing-certificates",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Create,
    responses((status = 201, description = "done", body = SigningCertView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<SigningCertView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Admin)?;
    let record = change(state, org, move |store, org| {
        require_org(store, org)?;
        let new = match (body.pkcs12, body.password) {
            (None, None) => generate(store, org, body.alias.as_deref())?,
            (Some(p12), password) => {
                let der = decode_base64(&p12).ok_or(PkiError::NotPkcs12)?;
                let password = password.unwrap_or_default();
                let (chain, key) = pki::from_pkcs12(&der, &password)?;
                let now = OffsetDateTime::now_utc();
                let info = pki::check_signing_cert(&chain, &key, now)?;
                let alias = super::valid_alias(
                    body.alias.as_deref(),
                    info.common_name.as_deref().unwrap_or_default(),
                )?;
                NewSigningCert {
                    chain,
                    key,
                    info,
                    alias,
                    key_passphrase: Some(KeyPassphrase(password)),
                    registered_at: now,
                }
            }
            (None, Some(_)) => {
                return Err(ApiError::Malformed("password without pkcs12".into()));
            }
        };
        let record = store.insert_signing_cert(
            org,
            &new,
            body.default,
            &caller.audit("signing_certificate.create"),
        )?;
        Ok(record)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/signing-certificates",
    tag = "signing-certificates",
    params(
        ("org" = String, Path, description = "organisation id"),
        CertListQuery,
        ("grant_status" = Option<String>, Query, description = "`active`, `warning` or `expired`: of the access grant on the certificate's key")
    ),
    responses((status = 200, description = "done", body = ListView<SigningCertView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<CertListQuery>,
) -> Result<Json<ListView<SigningCertView>>, ApiError> {
    let (filter, paging) = query.split_granted(&[("default", true), ("standby", false)])?;
    list_page(
        state,
        &caller,
        &org,
        Need::Read,
        paging,
        move |store, org, page| store.list_signing_certs(org, &filter, page),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/signing-certificates/{id}",
    tag = "signing-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "done", body = SigningCertView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<SigningCertView>, ApiError> {
    get_one(
        state,
        &caller,
        &org,
        Need::Read,
        MISSING,
        move |store, org| store.signing_cert(org, &id),
    )
    .await
}

/// The chain as PEM, leaf first: what verifies the org's tokens.
#[utoipa::path(
    get,
    path = "/orgs/{org}/signing-certificates/{id}/chain.pem",
    tag = "signing-certificates",
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
        store.signing_cert(org, &id)
    };
    let record = super::find_one(state, &caller, &org, Need::Read, MISSING, found).await?;
    Ok(super::certificates_pem(&record.chain))
}

#[utoipa::path(
    put,
    path = "/orgs/{org}/default-signing-certificate",
    tag = "signing-certificates",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Default,
    responses((status = 200, description = "done", body = SigningCertView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn set_default(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Default>,
) -> Result<Json<SigningCertView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Admin)?;
    let record = change(state, org, move |store, org| {
        let Some(record) = store.set_default_signing_cert(
            org,
            &body.id,
            &caller.audit("signing_certificate.set_default"),
        )?
        else {
            return Err(ApiError::NotFound(MISSING));
        };
        Ok(record)
    })
    .await?;
    Ok(Json(record.into()))
}

/// Deletes it and revokes every token it signed; 409 for the default.
#[utoipa::path(
    delete,
    path = "/orgs/{org}/signing-certificates/{id}",
    tag = "signing-certificates",
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
    caller.require(&org, Need::Admin)?;
    change(state, org, move |store, org| {
        match store.delete_signing_cert(org, &id, &caller.audit("signing_certificate.delete"))? {
            SigningCertDeleted::NotFound => Err(ApiError::NotFound(MISSING)),
            SigningCertDeleted::Deleted { tokens_revoked } => {
                tracing::info!(org = %org, id = %id, tokens_revoked, "signing certificate deleted");
                Ok(())
            }
        }
    })
    .await?;
    Ok(no_content())
}
