//! `/api/v1/orgs/{org}/csrs[/{id}[/csr.pem|/certificate|/signature-request|/approve|/reject]]`:
//! certificate signing requests whose key is generated and kept (encrypted) here, signed
//! elsewhere and uploaded back, or signed here — self-signed, by the platform CA or by one of the
//! org's CAs imported with its key — at once or after an approver agrees (DESIGN §7b).
//!
//! Whose requests wait is the org's `approval_required_roles`; an approver other than the
//! requester approves (which signs) or rejects. Every outcome is a server certificate, not
//! active, with the CSR's key.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::{ApiBody, ApiJson, ApiQuery};
use super::views::{CsrView, ListView};
use super::{
    change, get_one, list_page, no_content, org_in_path, require_org, AdminState, CertListQuery,
};
use crate::identity::OrgId;
use crate::pki::{self, KeyType, PkiError, ServerNames};
use crate::store::{
    Audit, CsrRecord, CsrStatus, CsrTransition, NewCsr, NewServerCert, SignatureRequest, Store,
};

const MISSING: &str = "no such CSR";
const MAX_CN_LEN: usize = 64;
const MAX_NAMES: usize = 100;
const MAX_REASON_LEN: usize = 1000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CsrCreate)]
pub struct Create {
    #[schema(min_length = 1, max_length = 64)]
    common_name: String,
    #[schema(min_items = 1, max_items = 100)]
    dns_names: Vec<String>,
    key_type: KeyType,
    #[schema(max_length = 200)]
    alias: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CsrSignatureRequest)]
pub struct Request {
    self_signed: bool,
    /// `"platform"` or the id of one of the org's CAs imported with its key.
    issuer: Option<String>,
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

/// `{"certificate_chain": PEM}`: the chain an outside CA signed, leaf first.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CsrCertificateChain)]
pub struct ChainJson {
    certificate_chain: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CsrDecision)]
pub struct Decision {
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

fn valid_reason(reason: &str) -> Result<String, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_LEN {
        return Err(ApiError::invalid(
            "invalid_reason",
            format!("reason must be 1-{MAX_REASON_LEN} characters"),
        ));
    }
    Ok(reason.to_owned())
}

/// Checks the names a CSR asks for: a CN, and 1–100 DNS names that each fit the org (§2).
fn valid_names(org: &OrgId, body: &Create) -> Result<(String, Vec<String>), ApiError> {
    let cn = body.common_name.trim();
    if cn.is_empty() || cn.chars().count() > MAX_CN_LEN || cn.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_common_name",
            format!("common_name must be 1-{MAX_CN_LEN} characters"),
        ));
    }
    let names: Vec<String> = body
        .dns_names
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if names.is_empty() || names.len() > MAX_NAMES {
        return Err(ApiError::invalid(
            "invalid_dns_names",
            format!("dns_names must hold 1-{MAX_NAMES} names"),
        ));
    }
    if let Some(bad) = names
        .iter()
        .find(|n| !pki::server_name_fits_org(org.as_str(), n))
    {
        return Err(PkiError::NamesDoNotFit(format!(
            "{bad} is neither {org}.messaging.<domain> nor *.messaging.<domain>"
        ))
        .into());
    }
    Ok((cn.to_owned(), names))
}

#[utoipa::path(
    post,
    path = "/orgs/{org}/csrs",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Create,
    responses((status = 201, description = "done", body = CsrView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<CsrView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let (common_name, dns_names) = valid_names(&org, &body)?;
    let alias = super::valid_alias(body.alias.as_deref(), &common_name)?;
    let record = change(state, org, move |store, org| {
        require_org(store, org)?;
        let key = pki::generate_key(body.key_type)?;
        let names = ServerNames {
            common_name: &common_name,
            dns_names: &dns_names,
        };
        let csr_pem = pki::csr_pem(&names, &key)?;
        let new = NewCsr {
            alias,
            common_name: common_name.clone(),
            dns_names: dns_names.clone(),
            key_type: body.key_type,
            csr_pem,
            key,
            created_at: OffsetDateTime::now_utc(),
        };
        let record = store.insert_csr(org, &new, &caller.audit("csr.create"))?;
        Ok(record)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/csrs",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), CertListQuery),
    responses((status = 200, description = "done", body = ListView<CsrView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<CertListQuery>,
) -> Result<Json<ListView<CsrView>>, ApiError> {
    let (filter, paging) = query.split(&[
        ("generated", CsrStatus::Generated),
        ("pending_approval", CsrStatus::PendingApproval),
        ("completed", CsrStatus::Completed),
        ("rejected", CsrStatus::Rejected),
    ])?;
    list_page(
        state,
        &caller,
        &org,
        Need::Read,
        paging,
        move |store, org, page| store.list_csrs(org, &filter, page),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/csrs/{id}",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "done", body = CsrView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<CsrView>, ApiError> {
    get_one(
        state,
        &caller,
        &org,
        Need::Read,
        MISSING,
        move |store, org| store.csr(org, &id),
    )
    .await
}

/// The CSR itself (PKCS#10 PEM), to send to an outside CA.
#[utoipa::path(
    get,
    path = "/orgs/{org}/csrs/{id}/csr.pem",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "the PKCS#10 request", body = String, content_type = "application/pkcs10"), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn csr_pem(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(view) = get(State(state), Extension(caller), Path((org, id))).await?;
    Ok(([(header::CONTENT_TYPE, "application/pkcs10")], view.csr_pem))
}

#[utoipa::path(
    delete,
    path = "/orgs/{org}/csrs/{id}",
    tag = "csrs",
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
        if !store.delete_csr(org, &id, &caller.audit("csr.delete"))? {
            return Err(ApiError::NotFound(MISSING));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

/// The certificate an outside CA signed for a `generated` CSR: a PEM chain (leaf first) as
/// `application/x-pem-file`, or `{"certificate_chain": PEM}`. It must match the CSR's key and
/// pass the server certificate checks; it becomes a server certificate with that key.
#[utoipa::path(
    post,
    path = "/orgs/{org}/csrs/{id}/certificate",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    request_body(content((String = "application/x-pem-file"), (ChainJson = "application/json"))),
    responses((status = 201, description = "done", body = CsrView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn upload_certificate(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<CsrView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let pem = match super::media_type(&headers).as_deref() {
        Some("application/x-pem-file") => body.to_vec(),
        Some("application/json") => {
            let chain: ChainJson = serde_json::from_slice(&body)
                .map_err(|e| ApiError::Malformed(format!("invalid JSON body: {e}")))?;
            chain.certificate_chain.into_bytes()
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/x-pem-file or application/json",
            ))
        }
    };
    let record = change(state, org, move |store, org| {
        let (csr, key) = store
            .csr_with_key(org, &id)?
            .ok_or(ApiError::NotFound(MISSING))?;
        if csr.status != CsrStatus::Generated {
            return Err(status_conflict(csr.status));
        }
        let chain = pki::certs_from_pem(&pem)?;
        let created = caller.audit("server_certificate.create");
        let server_certificate = register(store, org, chain, key, &created)?;
        let transition = CsrTransition::Completed {
            request: None,
            server_certificate,
            decision: None,
        };
        let audit = caller.audit("csr.certificate_upload");
        transition_csr(store, org, &csr, CsrStatus::Generated, &transition, &audit)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// Asks for a signature: 201 `completed` at once, or 202 `pending_approval` when the
/// requester's role is one of the org's `approval_required_roles`.
#[utoipa::path(
    post,
    path = "/orgs/{org}/csrs/{id}/signature-request",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    request_body = Request,
    responses((status = 201, description = "signed", body = CsrView), (status = 202, description = "waiting for an approver", body = CsrView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn request_signature(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Request>,
) -> Result<(StatusCode, Json<CsrView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let issuer = match (body.self_signed, body.issuer) {
        (true, None) => None,
        (false, Some(issuer)) => Some(issuer),
        _ => {
            return Err(ApiError::invalid(
                "invalid_issuer",
                "give self_signed true without issuer, or self_signed false with issuer \
                 (\"platform\" or a CA id)",
            ))
        }
    };
    let (actor, role) = caller.actor();
    let request = SignatureRequest {
        requested_by_id: caller.id().to_owned(),
        requested_by: actor.to_owned(),
        requested_role: role.to_owned(),
        issuer,
        reason: valid_reason(&body.reason)?,
    };
    let (status, record) = change(state, org, move |store, org| {
        let settings = store
            .org(org)?
            .ok_or(ApiError::NotFound("no such organisation"))?;
        let (csr, key) = store
            .csr_with_key(org, &id)?
            .ok_or(ApiError::NotFound(MISSING))?;
        if csr.status != CsrStatus::Generated {
            return Err(status_conflict(csr.status));
        }
        let needs_approval = caller
            .role()
            .is_some_and(|role| settings.approval_required_roles.contains(&role));
        if needs_approval {
            // The issuer must exist now, not only when an approver signs.
            issuer_of(store, org, request.issuer.as_deref())?;
            let audit = caller.audit_because("csr.signature_request", Some(&request.reason));
            let transition = CsrTransition::Requested(request);
            let record =
                transition_csr(store, org, &csr, CsrStatus::Generated, &transition, &audit)?;
            return Ok((StatusCode::ACCEPTED, record));
        }
        let created = caller.audit_because("server_certificate.create", Some(&request.reason));
        let audit = caller.audit_because("csr.sign", Some(&request.reason));
        let issuer = request.issuer.as_deref();
        let server_certificate = sign(store, org, &csr, key, issuer, &created)?;
        let transition = CsrTransition::Completed {
            request: Some(request),
            server_certificate,
            decision: None,
        };
        let record = transition_csr(store, org, &csr, CsrStatus::Generated, &transition, &audit)?;
        Ok((StatusCode::CREATED, record))
    })
    .await?;
    Ok((status, Json(record.into())))
}

/// An approver other than the requester signs a pending request.
#[utoipa::path(
    post,
    path = "/orgs/{org}/csrs/{id}/approve",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    request_body = Decision,
    responses((status = 200, description = "done", body = CsrView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn approve(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<CsrView>, ApiError> {
    decide(state, caller, org, id, body, true).await
}

/// An approver other than the requester ends a pending request.
#[utoipa::path(
    post,
    path = "/orgs/{org}/csrs/{id}/reject",
    tag = "csrs",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    request_body = Decision,
    responses((status = 200, description = "done", body = CsrView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn reject(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<CsrView>, ApiError> {
    decide(state, caller, org, id, body, false).await
}

async fn decide(
    state: AdminState,
    caller: Caller,
    org: String,
    id: String,
    body: Decision,
    approve: bool,
) -> Result<Json<CsrView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Approve)?;
    let reason = valid_reason(&body.reason)?;
    let record = change(state, org, move |store, org| {
        let (csr, key) = store
            .csr_with_key(org, &id)?
            .ok_or(ApiError::NotFound(MISSING))?;
        if csr.status != CsrStatus::PendingApproval {
            return Err(status_conflict(csr.status));
        }
        let request = csr
            .request
            .clone()
            .ok_or_else(|| ApiError::internal("a pending CSR without its request"))?;
        if request.requested_by_id == caller.id() {
            return Err(ApiError::Conflict {
                code: "requester_cannot_approve",
                message: "the requester of a signature cannot approve or reject it",
            });
        }
        let decided_by = caller.actor().0.to_owned();
        let created = caller.audit_because("server_certificate.create", Some(&reason));
        let action = if approve { "csr.approve" } else { "csr.reject" };
        let audit = caller.audit_because(action, Some(&reason));
        let transition = if approve {
            let issuer = request.issuer.as_deref();
            let server_certificate = sign(store, org, &csr, key, issuer, &created)?;
            CsrTransition::Completed {
                request: None,
                server_certificate,
                decision: Some((decided_by, reason)),
            }
        } else {
            CsrTransition::Rejected { decided_by, reason }
        };
        let record = transition_csr(
            store,
            org,
            &csr,
            CsrStatus::PendingApproval,
            &transition,
            &audit,
        )?;
        Ok(record)
    })
    .await?;
    Ok(Json(record.into()))
}

fn status_conflict(status: CsrStatus) -> ApiError {
    ApiError::from(crate::store::StoreError::CsrStatus(status))
}

fn transition_csr(
    store: &dyn Store,
    org: &OrgId,
    csr: &CsrRecord,
    from: CsrStatus,
    transition: &CsrTransition,
    audit: &Audit,
) -> Result<CsrRecord, ApiError> {
    store
        .transition_csr(
            org,
            &csr.id,
            from,
            transition,
            OffsetDateTime::now_utc(),
            audit,
        )?
        .ok_or(ApiError::NotFound(MISSING))
}

/// The issuer a request names: `None` for self-signed, the platform CA, or one of the org's CAs
/// imported with its key (422 `unknown_issuer`, `issuer_without_key` otherwise).
fn issuer_of(
    store: &dyn Store,
    org: &OrgId,
    issuer: Option<&str>,
) -> Result<Option<pki::Issuer>, ApiError> {
    match issuer {
        None => Ok(None),
        Some("platform") => {
            Ok(Some(store.platform_ca()?.ok_or_else(|| {
                ApiError::internal("the platform CA is missing")
            })?))
        }
        Some(ca) => match store.ca_issuer(org, ca)? {
            None => Err(ApiError::invalid(
                "unknown_issuer",
                "issuer must be \"platform\" or the id of one of the organisation's CAs",
            )),
            Some(None) => Err(ApiError::invalid(
                "issuer_without_key",
                "that CA was registered without its key; import it as PKCS#12 to sign with it",
            )),
            Some(Some(issuer)) => Ok(Some(issuer)),
        },
    }
}

/// Signs the CSR's names over its key and registers the result; returns the new server
/// certificate's id.
fn sign(
    store: &dyn Store,
    org: &OrgId,
    csr: &CsrRecord,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    issuer: Option<&str>,
    audit: &Audit,
) -> Result<String, ApiError> {
    let signer = issuer_of(store, org, issuer)?;
    // A CA of the org signs under its grant: one use, spent before the signature. The platform
    // CA and self-signed certificates use no org key.
    if let Some(ca) = issuer.filter(|i| *i != "platform") {
        store.spend_use(org, ca)?;
    }
    let issuer = signer;
    let names = ServerNames {
        common_name: &csr.common_name,
        dns_names: &csr.dns_names,
    };
    let chain = pki::sign_server_cert(issuer.as_ref(), &names, &key)?;
    register(store, org, chain, key, audit)
}

/// Checks a chain and key as a server certificate of `org` and registers it (not active).
pub(super) fn register(
    store: &dyn Store,
    org: &OrgId,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    audit: &Audit,
) -> Result<String, ApiError> {
    let now = OffsetDateTime::now_utc();
    let info = pki::check_server_cert(org.as_str(), &chain, &key, now)?;
    let record = store.insert_server_cert(
        org,
        &NewServerCert {
            chain,
            key,
            info,
            registered_at: now,
        },
        audit,
    )?;
    Ok(record.id)
}
