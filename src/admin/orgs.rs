//! `/api/v1/orgs[/{org}]`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::{Caller, Need};
use super::dry_run::{self, DryRun, DryRunView};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::signing_certificates::generate;
use super::views::{ListView, OrgView};
use super::{change, no_content, org_in_path, page_request, read, AdminState};
use crate::identity::OrgId;
use crate::mqtt::topics::TopicPolicy;
use crate::store::{NewOrg, OrgPatch, Role};

const MAX_NAME_LEN: usize = 200;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Lower-case letters, digits and inner hyphens, at most 32: a DNS label of the org's names.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$", max_length = 32)]
    id: String,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[serde(default)]
    topic_policy: TopicPolicy,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    topic_policy: Option<TopicPolicy>,
    approval_required_roles: Option<Vec<Role>>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
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

/// Creates the org with its first token signing certificate (issued by the platform CA, its
/// default), in one transaction.
#[utoipa::path(
    post,
    path = "/orgs",
    tag = "orgs",
    request_body = CreateOrg,
    responses((status = 201, description = "done", body = OrgView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateOrg>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    caller.require_admin()?;
    let id =
        OrgId::parse(&body.id).map_err(|e| ApiError::invalid("invalid_org_id", e.to_string()))?;
    let name = valid_name(&body.name)?;
    let new = NewOrg {
        id,
        name,
        topic_policy: body.topic_policy,
        created_at: OffsetDateTime::now_utc(),
    };
    let org = change(state, new.id.clone(), move |store, org| {
        let signing = generate(store, org, None)?;
        let record = store.create_org(&new, Some(&signing), &caller.audit("org.create"))?;
        Ok(record)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(org.into())))
}

#[utoipa::path(
    get,
    path = "/orgs",
    tag = "orgs",
    params(ListQuery),
    responses((status = 200, description = "done", body = ListView<OrgView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListView<OrgView>>, ApiError> {
    caller.require_admin()?;
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let page = read(state, move |store| store.list_orgs(&page)).await?;
    Ok(Json(ListView::from_page(page, OrgView::from)))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}",
    tag = "orgs",
    params(("org" = String, Path, description = "organisation id")),
    responses((status = 200, description = "done", body = OrgView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Json<OrgView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Read)?;
    let record = read(state, move |store| store.org(&org)).await?;
    record
        .map(|o| Json(o.into()))
        .ok_or(ApiError::NotFound("no such organisation"))
}

/// Admin only: `approval_required_roles` decides whose signature requests wait for approval.
/// A `topic_policy` change closes the live sessions holding a subscription or a will the new
/// policy refuses or would route elsewhere (DESIGN §13); the others follow the new policy.
#[utoipa::path(
    patch,
    path = "/orgs/{org}",
    tag = "orgs",
    params(("org" = String, Path, description = "organisation id"), DryRun),
    request_body = UpdateOrg,
    responses((status = 200, description = "done (with `dry_run=true`: the live sessions a topic policy change would close, nothing changed)", body = OrgUpdated), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<DryRun>,
    ApiJson(body): ApiJson<UpdateOrg>,
) -> Result<Json<OrgUpdated>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Admin)?;
    let patch = OrgPatch {
        name: body.name.as_deref().map(valid_name).transpose()?,
        topic_policy: body.topic_policy,
        approval_required_roles: body.approval_required_roles,
    };
    if query.dry_run {
        let policy = patch.topic_policy;
        let view = dry_run::answer(&state, org, move |mut org_state| {
            if let Some(policy) = policy {
                org_state.org.topic_policy = policy;
            }
            Some(org_state)
        })
        .await?;
        return Ok(Json(OrgUpdated::DryRun(view)));
    }
    let record = change(state, org, move |store, org| {
        let Some(record) = store.update_org(org, &patch, &caller.audit("org.update"))? else {
            return Err(ApiError::NotFound("no such organisation"));
        };
        Ok(record)
    })
    .await?;
    Ok(Json(OrgUpdated::Org(Box::new(record.into()))))
}

/// An org's PATCH answer: the org, or the dry run.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OrgUpdated {
    Org(Box<OrgView>),
    DryRun(DryRunView),
}

/// Deletes the org with its certificates; publishing it closes its live sessions.
#[utoipa::path(
    delete,
    path = "/orgs/{org}",
    tag = "orgs",
    params(("org" = String, Path, description = "organisation id"), DryRun),
    responses((status = 204, description = "done"), (status = 200, description = "with `dry_run=true`: what it would close and lock out (every session and device of the org), nothing changed", body = DryRunView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<DryRun>,
) -> Result<axum::response::Response, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Admin)?;
    if query.dry_run {
        let view = dry_run::answer(&state, org, |_| None).await?;
        return Ok(Json(view).into_response());
    }
    change(state, org, move |store, org| {
        if !store.delete_org(org, &caller.audit("org.delete"))? {
            return Err(ApiError::NotFound("no such organisation"));
        }
        Ok(())
    })
    .await?;
    Ok(no_content().into_response())
}
