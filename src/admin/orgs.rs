//! `/api/v1/orgs[/{org}]`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use time::OffsetDateTime;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::views::{ListView, OrgView};
use super::{change, no_content, org_in_path, page_request, read, AdminState};
use crate::identity::OrgId;
use crate::mqtt::topics::TopicPolicy;
use crate::store::{NewOrg, OrgPatch};

const MAX_NAME_LEN: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    id: String,
    name: String,
    #[serde(default)]
    topic_policy: TopicPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    name: Option<String>,
    topic_policy: Option<TopicPolicy>,
}

#[derive(Deserialize)]
pub struct ListQuery {
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

pub async fn create(
    State(state): State<AdminState>,
    ApiJson(body): ApiJson<CreateOrg>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    let id =
        OrgId::parse(&body.id).map_err(|e| ApiError::invalid("invalid_org_id", e.to_string()))?;
    let name = valid_name(&body.name)?;
    let new = NewOrg {
        id,
        name,
        topic_policy: body.topic_policy,
        created_at: OffsetDateTime::now_utc(),
    };
    let org = change(state, new.id.clone(), move |store, _| {
        let org = store.create_org(&new)?;
        tracing::info!(who = "admin", what = "org.create", org = %org.id, "organisation created");
        Ok(org)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(org.into())))
}

pub async fn list(
    State(state): State<AdminState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListView<OrgView>>, ApiError> {
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let page = read(state, move |store| store.list_orgs(&page)).await?;
    Ok(Json(ListView::from_page(page, OrgView::from)))
}

pub async fn get(
    State(state): State<AdminState>,
    Path(org): Path<String>,
) -> Result<Json<OrgView>, ApiError> {
    let org = org_in_path(&org)?;
    let record = read(state, move |store| store.org(&org)).await?;
    record
        .map(|o| Json(o.into()))
        .ok_or(ApiError::NotFound("no such organisation"))
}

pub async fn update(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<UpdateOrg>,
) -> Result<Json<OrgView>, ApiError> {
    let org = org_in_path(&org)?;
    let patch = OrgPatch {
        name: body.name.as_deref().map(valid_name).transpose()?,
        topic_policy: body.topic_policy,
    };
    let record = change(state, org, move |store, org| {
        let Some(record) = store.update_org(org, &patch)? else {
            return Err(ApiError::NotFound("no such organisation"));
        };
        tracing::info!(who = "admin", what = "org.update", org = %org, "organisation updated");
        Ok(record)
    })
    .await?;
    Ok(Json(record.into()))
}

/// Deletes the org with its certificates; publishing it closes its live sessions.
pub async fn delete(
    State(state): State<AdminState>,
    Path(org): Path<String>,
) -> Result<StatusCode, ApiError> {
    let org = org_in_path(&org)?;
    change(state, org, move |store, org| {
        if !store.delete_org(org)? {
            return Err(ApiError::NotFound("no such organisation"));
        }
        tracing::info!(who = "admin", what = "org.delete", org = %org, "organisation deleted");
        Ok(())
    })
    .await?;
    Ok(no_content())
}
