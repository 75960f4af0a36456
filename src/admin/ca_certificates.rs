//! `/api/v1/orgs/{org}/ca-certificates[/{id}]`: the CAs an org's devices' certificates chain to.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use axum::Json;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::{Caller, Need};
use super::dry_run::{self, DryRun, DryRunView};
use super::error::ApiError;
use super::extract::{ApiBody, ApiJson, ApiQuery};
use super::server_certificates::decode_base64;
use super::views::{CaView, CrlView, ListView};
use super::{
    change, get_one, no_content, org_in_path, page_request, read, require_org, AdminState,
};
use crate::identity::OrgId;
use crate::pki::{self, PkiError};
use crate::revocation::ocsp::OcspMode;
use crate::store::{CaFilter, CaPatch, KeyPassphrase, NewCa, OrgState};

const MAX_DESCRIPTION_LEN: usize = 1000;
const MISSING: &str = "no such CA certificate";

/// `{"certificate": PEM, "description"}`, or `{"pkcs12", "password", "description"}` for a CA
/// imported with its key (which can then issue server certificates).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UploadJson {
    certificate: Option<String>,
    pkcs12: Option<String>,
    password: Option<String>,
    #[serde(default)]
    description: String,
}

/// The certificate as sent, parsed off the async workers.
enum Upload {
    Pem(Vec<u8>),
    Der(Vec<u8>),
    Pkcs12 { der: Vec<u8>, password: String },
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    description: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCa {
    active: Option<bool>,
    #[schema(max_length = 200)]
    alias: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Where the CA's CRL is fetched from (http:// or https://); null stops fetching.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    crl_url: Option<Option<String>>,
    /// `off`, `soft` (a revoked certificate is refused) or `hard` (so is one the responder
    /// does not vouch for).
    ocsp_mode: Option<String>,
    /// The OCSP responder; null: the one each device certificate's AIA names.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    ocsp_url: Option<Option<String>>,
}

/// A field that is present, null or not: `Some(None)` for null, and `None` (by `default`) when
/// absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An http:// or https:// URL, or null; 422 `code` for anything else.
fn valid_url(
    url: Option<Option<String>>,
    code: &'static str,
    field: &str,
) -> Result<Option<Option<String>>, ApiError> {
    match url {
        Some(Some(url)) if !crate::fetch::is_fetchable(url.trim()) => Err(ApiError::invalid(
            code,
            format!("{field} must be an http:// or https:// URL, or null"),
        )),
        other => Ok(other.map(|url| url.map(|u| u.trim().to_owned()))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    q: Option<String>,
    alias: Option<String>,
    active: Option<bool>,
    /// `active` or `inactive` (the same as `active=true|false`).
    status: Option<String>,
    /// `active`, `warning` or `expired`: of the access grant on the CA's key.
    grant_status: Option<String>,
    registered_after: Option<String>,
    registered_before: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

fn valid_description(d: &str) -> Result<String, ApiError> {
    if d.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::invalid(
            "invalid_description",
            format!("description must be at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(d.trim().to_owned())
}

/// The one certificate of a PEM text.
fn single_pem_certificate(pem: &[u8]) -> Result<CertificateDer<'static>, ApiError> {
    let mut certs = pki::certs_from_pem(pem)?;
    match certs.len() {
        0 => Err(PkiError::NotACertificate.into()),
        1 => Ok(certs.remove(0)),
        _ => Err(PkiError::MoreThanOneCertificate.into()),
    }
}

/// `{"certificate": PEM, "description"}` as JSON, or the certificate as the body
/// (`application/x-pem-file` PEM, `application/pkix-cert` DER) with `?description=`.
#[utoipa::path(
    post,
    path = "/orgs/{org}/ca-certificates",
    tag = "ca-certificates",
    params(("org" = String, Path, description = "organisation id"), UploadQuery),
    request_body(content((UploadJson = "application/json"), (String = "application/x-pem-file"), (Vec<u8> = "application/pkix-cert"))),
    responses((status = 201, description = "done", body = CaView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<CaView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let (upload, description) = match super::media_type(&headers).as_deref() {
        Some("application/json") => {
            let upload: UploadJson = serde_json::from_slice(&body)
                .map_err(|e| ApiError::Malformed(format!("invalid JSON body: {e}")))?;
            let sent = match (upload.certificate, upload.pkcs12) {
                (Some(pem), None) if upload.password.is_none() => Upload::Pem(pem.into_bytes()),
                (None, Some(p12)) => Upload::Pkcs12 {
                    der: decode_base64(&p12).ok_or(PkiError::NotPkcs12)?,
                    password: upload.password.unwrap_or_default(),
                },
                _ => {
                    return Err(ApiError::Malformed(
                        "send certificate, or pkcs12 and password".into(),
                    ))
                }
            };
            (sent, upload.description)
        }
        Some("application/x-pem-file") => (
            Upload::Pem(body.to_vec()),
            query.description.unwrap_or_default(),
        ),
        Some("application/pkix-cert") => (
            Upload::Der(body.to_vec()),
            query.description.unwrap_or_default(),
        ),
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json, application/x-pem-file or application/pkix-cert",
            ))
        }
    };
    let description = valid_description(&description)?;
    let record = change(state, org, move |store, org| {
        require_org(store, org)?;
        let (der, key, key_passphrase) = match upload {
            Upload::Pem(pem) => (single_pem_certificate(&pem)?, None, None),
            Upload::Der(der) => (CertificateDer::from(der), None, None),
            Upload::Pkcs12 { der, password } => {
                let (mut chain, key) = pki::from_pkcs12(&der, &password)?;
                let ca = chain.swap_remove(0);
                pki::check_ca_key(&ca, &key)?;
                (ca, Some(key), Some(KeyPassphrase(password)))
            }
        };
        let now = OffsetDateTime::now_utc();
        let info = pki::check_ca(&der, now)?;
        let new = NewCa {
            der,
            info,
            description,
            key,
            key_passphrase,
            registered_at: now,
        };
        let record = store.insert_ca(org, &new, &caller.audit("ca_certificate.create"))?;
        Ok(record)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/ca-certificates",
    tag = "ca-certificates",
    params(("org" = String, Path, description = "organisation id"), ListQuery),
    responses((status = 200, description = "done", body = ListView<CaView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListView<CaView>>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Read)?;
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let status = super::status_param(
        query.status.as_deref(),
        &[("active", true), ("inactive", false)],
    )?;
    let filter = CaFilter {
        q: query.q,
        alias: query.alias,
        active: query.active.or(status),
        grant_status: super::grant_status_param(query.grant_status.as_deref())?,
        registered_after: super::time_param("registered_after", query.registered_after.as_deref())?,
        registered_before: super::time_param(
            "registered_before",
            query.registered_before.as_deref(),
        )?,
    };
    let page = read(state, move |store| store.list_cas(&org, &filter, &page)).await?;
    Ok(Json(ListView::from_page(page, CaView::from)))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/ca-certificates/{id}",
    tag = "ca-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "done", body = CaView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<CaView>, ApiError> {
    get_one(
        state,
        &caller,
        &org,
        Need::Read,
        MISSING,
        move |store, org| store.ca(org, &id),
    )
    .await
}

/// Deactivating a CA closes the sessions it authenticated (the registry does, on publish).
#[utoipa::path(
    patch,
    path = "/orgs/{org}/ca-certificates/{id}",
    tag = "ca-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    params(DryRun),
    request_body = UpdateCa,
    responses((status = 200, description = "done (with `dry_run=true`: what it would close and lock out, nothing changed)", body = CaUpdated), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<DryRun>,
    ApiJson(body): ApiJson<UpdateCa>,
) -> Result<Json<CaUpdated>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let patch = CaPatch {
        active: body.active,
        alias: body
            .alias
            .as_deref()
            .map(|a| super::valid_alias(Some(a), ""))
            .transpose()?,
        description: body
            .description
            .as_deref()
            .map(valid_description)
            .transpose()?,
        crl_url: valid_url(body.crl_url, "invalid_crl_url", "crl_url")?,
        ocsp_mode: body
            .ocsp_mode
            .map(|mode| mode.parse::<OcspMode>())
            .transpose()
            .map_err(|_| {
                ApiError::invalid("invalid_ocsp_mode", "ocsp_mode must be off, soft or hard")
            })?,
        ocsp_url: valid_url(body.ocsp_url, "invalid_ocsp_url", "ocsp_url")?,
    };
    if query.dry_run {
        require_ca(&state, &caller, &org, &id).await?;
        let deactivates = patch.active == Some(false);
        let view = dry_run::answer(&state, org, move |org_state| {
            Some(if deactivates {
                without_ca(org_state, &id)
            } else {
                org_state
            })
        })
        .await?;
        return Ok(Json(CaUpdated::DryRun(view)));
    }
    let fetch_crl = matches!(patch.crl_url, Some(Some(_)));
    let fetcher = state.crl_fetcher.clone();
    let record = change(state, org, move |store, org| {
        let Some(record) =
            store.update_ca(org, &id, &patch, &caller.audit("ca_certificate.update"))?
        else {
            return Err(ApiError::NotFound(MISSING));
        };
        Ok(record)
    })
    .await?;
    if fetch_crl {
        fetcher.fetch_now(&record.org, &record.id);
    }
    Ok(Json(CaUpdated::Ca(Box::new(record.into()))))
}

/// A CA's PATCH answer: the CA, or the dry run.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CaUpdated {
    Ca(Box<CaView>),
    DryRun(DryRunView),
}

/// 404 unless `id` is one of the org's CAs (a dry run answers for a CA that exists).
async fn require_ca(
    state: &AdminState,
    caller: &Caller,
    org: &OrgId,
    id: &str,
) -> Result<(), ApiError> {
    let id = id.to_owned();
    let found = move |store: &dyn crate::store::Store, org: &OrgId| store.ca(org, &id);
    super::find_one(
        state.clone(),
        caller,
        org.as_str(),
        Need::Manage,
        MISSING,
        found,
    )
    .await?;
    Ok(())
}

/// The org without CA `id`: deactivated or deleted, its CRL goes with it.
fn without_ca(mut state: OrgState, id: &str) -> OrgState {
    state.active_cas.retain(|ca| ca.id != id);
    state.crls.retain(|(ca, _)| ca != id);
    state
}

/// The CA certificate as PEM (never its key, when it was imported with one).
#[utoipa::path(
    get,
    path = "/orgs/{org}/ca-certificates/{id}/certificate.pem",
    tag = "ca-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "the certificate", body = String, content_type = "application/x-pem-file"), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn certificate_pem(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let found =
        move |store: &dyn crate::store::Store, org: &crate::identity::OrgId| store.ca(org, &id);
    let record = super::find_one(state, &caller, &org, Need::Read, MISSING, found).await?;
    Ok(super::certificates_pem(std::slice::from_ref(&record.der)))
}

#[utoipa::path(
    delete,
    path = "/orgs/{org}/ca-certificates/{id}",
    tag = "ca-certificates",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id"), DryRun),
    responses((status = 204, description = "done"), (status = 200, description = "with `dry_run=true`: what it would close and lock out, nothing changed", body = DryRunView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<DryRun>,
) -> Result<axum::response::Response, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    if query.dry_run {
        require_ca(&state, &caller, &org, &id).await?;
        let view = dry_run::answer(&state, org, move |org_state| {
            Some(without_ca(org_state, &id))
        })
        .await?;
        return Ok(Json(view).into_response());
    }
    change(state, org, move |store, org| {
        if !store.delete_ca(org, &id, &caller.audit("ca_certificate.delete"))? {
            return Err(ApiError::NotFound(MISSING));
        }
        Ok(())
    })
    .await?;
    Ok(no_content().into_response())
}

/// The CRL of one of the org's CAs: a PEM (`application/x-pem-file`) or DER
/// (`application/pkix-crl`) body. It must be issued and signed by that CA (422
/// `crl_signature_invalid`) and not older than the one held (409 `crl_older`). Certificates it
/// revokes fail their handshakes with `certificate_revoked`, and their live sessions are closed.
#[utoipa::path(
    put,
    path = "/orgs/{org}/ca-certificates/{id}/crl",
    tag = "revocation",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "CA id")),
    request_body(content((String = "application/x-pem-file"), (Vec<u8> = "application/pkix-crl"))),
    responses(
        (status = 200, description = "held and applied", body = CrlView),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn put_crl(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Json<CrlView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    if !matches!(
        super::media_type(&headers).as_deref(),
        Some("application/x-pem-file" | "application/pkix-crl")
    ) {
        return Err(ApiError::UnsupportedMediaType(
            "application/x-pem-file or application/pkix-crl",
        ));
    }
    let view = change(state, org, move |store, org| {
        let now = OffsetDateTime::now_utc();
        let audit = caller.audit("ca_certificate.crl");
        let held = crate::revocation::crl::hold(store, org, &id, &body, now, Some(&audit))?;
        Ok(CrlView::new(held.info, now))
    })
    .await?;
    Ok(Json(view))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/ca-certificates/{id}/crl",
    tag = "revocation",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "CA id")),
    responses(
        (status = 200, description = "the CRL held", body = CrlView),
        (status = "4XX", description = "refused; 404 when none is held", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn get_crl(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<CrlView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Read)?;
    let der = read(state, move |store| store.crl(&org, &id))
        .await?
        .ok_or(ApiError::NotFound("no CRL is held for this CA"))?;
    let info = pki::crl_info(&der)?;
    Ok(Json(CrlView::new(info, OffsetDateTime::now_utc())))
}
