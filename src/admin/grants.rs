//! `/api/v1/orgs/{org}/grants[/{id}[/renewal-challenge|/renew]]`: the access grants on the keys
//! the product signs with for an org (DESIGN §11). A grant is renewed with a one-time code sent to
//! the org's notification addresses, valid two minutes; five wrong codes void it. Renewal does not
//! reactivate the tokens the expiry suspended: an operator does (`PATCH …/tokens/{id}`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::views::{rfc3339, GrantView, ListView};
use super::{get_one, grant_status_param, list_page, org_in_path, read, AdminState, Paging};
use crate::notify::NotifyError;
use crate::store::RenewalRefused;

const MISSING: &str = "no such grant";
/// How long a renewal code is good for.
pub const CODE_VALIDITY: time::Duration = time::Duration::minutes(2);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `active`, `warning` or `expired`.
    status: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GrantRenewal)]
pub struct Renew {
    /// The code the renewal challenge sent.
    code: String,
    /// For a key imported from PKCS#12: that file's passphrase.
    key_passphrase: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChallengeView {
    /// How many addresses the code was sent to.
    pub sent_to: usize,
    pub expires_at: String,
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/grants",
    tag = "grants",
    params(("org" = String, Path, description = "organisation id"), ListQuery),
    responses((status = 200, description = "done", body = ListView<GrantView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListView<GrantView>>, ApiError> {
    let status = grant_status_param(query.status.as_deref())?;
    let paging = Paging {
        limit: query.limit,
        cursor: query.cursor,
    };
    list_page(
        state,
        &caller,
        &org,
        Need::Read,
        paging,
        move |store, org, page| store.list_grants(org, status, page),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/grants/{id}",
    tag = "grants",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "done", body = GrantView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<GrantView>, ApiError> {
    get_one(
        state,
        &caller,
        &org,
        Need::Read,
        MISSING,
        move |store, org| store.grant(org, &id),
    )
    .await
}

/// Sends a one-time renewal code to the org's notification e-mail addresses (replacing one
/// pending); 409 `no_notification_addresses` when there are none.
#[utoipa::path(
    post,
    path = "/orgs/{org}/grants/{id}/renewal-challenge",
    tag = "grants",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 201, description = "code sent", body = ChallengeView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn challenge(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<ChallengeView>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let code = new_code()?;
    let hash = sha256(&code);
    let (org_id, grant_id) = (org.clone(), id.clone());
    let audit = caller.audit("grant.renewal_challenge");
    let (grant, settings, expires_at) = read(state.clone(), move |store| {
        let grant = store.grant(&org_id, &grant_id)?;
        let expires_at = store.clock().now() + CODE_VALIDITY;
        let settings = store.notification_settings(&org_id)?;
        if grant.is_some() && settings.as_ref().is_some_and(|s| !s.emails.is_empty()) {
            store.open_challenge(&org_id, &grant_id, &hash, expires_at, &audit)?;
        }
        Ok((grant, settings, expires_at))
    })
    .await?;
    let grant = grant.ok_or(ApiError::NotFound(MISSING))?;
    let sent_to = settings.map_or(0, |s| s.emails.len());
    match state
        .notifier
        .send_code(&org, &grant, &code, CODE_VALIDITY)
        .await
    {
        Ok(()) => {}
        Err(NotifyError::NoAddresses) => {
            return Err(ApiError::Conflict {
                code: "no_notification_addresses",
                message: "the organisation has no notification e-mail addresses (or no SMTP \
                          server is configured) to send the code to",
            })
        }
        Err(e) => return Err(ApiError::internal(e)),
    }
    Ok((
        StatusCode::CREATED,
        Json(ChallengeView {
            sent_to,
            expires_at: rfc3339(expires_at),
        }),
    ))
}

/// Renews the grant with the code of its challenge: 60 days (`grants.max_age_days`) from now,
/// uses back to 0. 422 `challenge_invalid` (wrong code, none pending, or voided after five wrong
/// codes) or `challenge_expired`.
#[utoipa::path(
    post,
    path = "/orgs/{org}/grants/{id}/renew",
    tag = "grants",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    request_body = Renew,
    responses((status = 200, description = "renewed", body = GrantView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn renew(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Renew>,
) -> Result<Json<GrantView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let hash = sha256(body.code.trim());
    let audit = caller.audit("grant.renew");
    let renewed = super::blocking(move || {
        let outcome = state
            .store
            .renew_grant(&org, &id, &hash, body.key_passphrase.as_deref(), &audit)?
            .ok_or(ApiError::NotFound(MISSING))?;
        match outcome {
            Ok(grant) => Ok(grant),
            Err(RenewalRefused::Invalid) => Err(ApiError::invalid(
                "challenge_invalid",
                "the code is wrong, or no renewal challenge is pending (five wrong codes void \
                 one); ask for a new code",
            )),
            Err(RenewalRefused::Passphrase) => Err(ApiError::invalid(
                "key_passphrase_invalid",
                "the key was imported from PKCS#12: give that file's passphrase as \
                 key_passphrase (a wrong one counts as a wrong code)",
            )),
            Err(RenewalRefused::Expired) => Err(ApiError::invalid(
                "challenge_expired",
                "the code is older than two minutes; ask for a new one",
            )),
        }
    })
    .await?;
    Ok(Json(renewed.into()))
}

/// Eight random decimal digits.
fn new_code() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    crate::store::crypto::random_bytes(&mut bytes).map_err(ApiError::internal)?;
    Ok(format!("{:08}", u64::from_le_bytes(bytes) % 100_000_000))
}

fn sha256(code: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, code.as_bytes())
        .as_ref()
        .to_vec()
}
