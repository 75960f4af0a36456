//! `/api/v1/orgs/{org}/tokens[/{id}]`: org tokens. The admin issues, renames, suspends and
//! revokes them; operators may list them. A token is shown once, in the answer that creates it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::views::{ListView, TokenView};
use super::{blocking, get_one, jwt, list_page, no_content, org_in_path, AdminState, Paging};
use crate::store::{NewToken, Role, StoreError, TokenPatch, TokenStatus};

const MAX_NAME_LEN: usize = 200;
const MISSING: &str = "no such token";
/// Shortest and longest token lifetimes.
const MIN_TTL_SECONDS: i64 = 60;
const MAX_TTL_SECONDS: i64 = 366 * 24 * 3600;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenCreate)]
pub struct Create {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    role: Role,
    #[schema(minimum = 60, maximum = 31622400)]
    ttl_seconds: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenUpdate)]
pub struct Update {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// `active` or `suspended`; revoking is `DELETE`.
    status: Option<TokenStatus>,
}

/// The answer to a creation: the token, this once, with its resource.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    token: String,
    #[serde(flatten)]
    resource: TokenView,
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "invalid_name",
            format!("name must be 1-{MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Signs a new token with the org's default signing certificate; 409 `no_signing_certificate`
/// when it has none, 422 `ttl_exceeds_signing_certificate` when the token would outlive it.
#[utoipa::path(
    post,
    path = "/orgs/{org}/tokens",
    tag = "tokens",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Create,
    responses((status = 201, description = "done", body = Created), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Admin)?;
    let name = valid_name(&body.name)?;
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&body.ttl_seconds) {
        return Err(ApiError::invalid(
            "invalid_ttl",
            format!("ttl_seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}"),
        ));
    }
    let created = blocking(move || {
        let store = &state.store;
        let Some((signing, key)) = store.default_signing_key(&org)? else {
            return Err(StoreError::NoSigningCertificate.into());
        };
        let now = OffsetDateTime::now_utc();
        let expires_at = now + Duration::seconds(body.ttl_seconds);
        if expires_at > signing.info.not_after {
            return Err(ApiError::invalid(
                "ttl_exceeds_signing_certificate",
                "the token would outlive the signing certificate; shorten ttl_seconds or \
                 generate a new signing certificate",
            ));
        }
        // One use of the grant on the signing key, spent before the signature.
        store.spend_use(&org, &signing.id)?;
        let (actor, _) = caller.actor();
        let record = store.insert_token(
            &org,
            &NewToken {
                signing_certificate: signing.id.clone(),
                name,
                role: body.role,
                created_by: actor.to_owned(),
                created_at: now,
                expires_at,
            },
            &caller.audit("token.create"),
        )?;
        let claims = jwt::Claims {
            iss: jwt::ISSUER.into(),
            aud: jwt::AUDIENCE.into(),
            sub: record.name.clone(),
            jti: record.id.clone(),
            org: org.as_str().to_owned(),
            role: record.role.as_str().to_owned(),
            iat: record.created_at.unix_timestamp(),
            exp: record.expires_at.unix_timestamp(),
        };
        let token =
            jwt::sign(&claims, &signing.id, &signing.chain, &key).map_err(ApiError::internal)?;
        Ok(Created {
            token,
            resource: record.into(),
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/tokens",
    tag = "tokens",
    params(("org" = String, Path, description = "organisation id"), Paging),
    responses((status = 200, description = "done", body = ListView<TokenView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<ListView<TokenView>>, ApiError> {
    list_page(
        state,
        &caller,
        &org,
        Need::Manage,
        paging,
        |store, org, page| store.list_tokens(org, page),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/tokens/{id}",
    tag = "tokens",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "done", body = TokenView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<TokenView>, ApiError> {
    get_one(
        state,
        &caller,
        &org,
        Need::Manage,
        MISSING,
        move |store, org| store.org_token(org, &id),
    )
    .await
}

/// Renames, suspends or reactivates a token; 409 `token_revoked` for a revoked one.
#[utoipa::path(
    patch,
    path = "/orgs/{org}/tokens/{id}",
    tag = "tokens",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "resource id")),
    request_body = Update,
    responses((status = 200, description = "done", body = TokenView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Update>,
) -> Result<Json<TokenView>, ApiError> {
    let org = org_in_path(&org)?;
    // Operators reactivate the tokens a grant's expiry suspended (DESIGN §11).
    caller.require(&org, Need::Manage)?;
    if body.status == Some(TokenStatus::Revoked) {
        return Err(ApiError::invalid(
            "invalid_status",
            "status must be active or suspended; revoke a token with DELETE",
        ));
    }
    let patch = TokenPatch {
        name: body.name.as_deref().map(valid_name).transpose()?,
        status: body.status,
    };
    let record = blocking(move || {
        if patch.status == Some(TokenStatus::Active) {
            let signing = state
                .store
                .org_token(&org, &id)?
                .and_then(|token| token.signing_certificate);
            if let Some(signing) = signing {
                let grant = state.store.grant_of(&org, &signing)?;
                if crate::grants::suspended(grant.as_ref()) {
                    return Err(StoreError::GrantExpired.into());
                }
            }
        }
        let Some(record) =
            state
                .store
                .update_token(&org, &id, &patch, &caller.audit("token.update"))?
        else {
            return Err(ApiError::NotFound(MISSING));
        };
        Ok(record)
    })
    .await?;
    Ok(Json(record.into()))
}

/// Revokes a token for good (it stays listed as `revoked`); revoking it again changes nothing.
#[utoipa::path(
    delete,
    path = "/orgs/{org}/tokens/{id}",
    tag = "tokens",
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
    blocking(move || {
        let patch = TokenPatch {
            name: None,
            status: Some(TokenStatus::Revoked),
        };
        match state
            .store
            .update_token(&org, &id, &patch, &caller.audit("token.revoke"))
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ApiError::NotFound(MISSING)),
            Err(StoreError::TokenRevoked) => Ok(()),
            Err(other) => Err(other.into()),
        }
    })
    .await?;
    Ok(no_content())
}
