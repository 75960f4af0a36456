//! `/api/v1/orgs/{org}/audit-events`: every change made to the org through this API, oldest
//! first, readable by every role of the org.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::views::{AuditEventView, ListView};
use super::{list_page, AdminState, Paging};

#[utoipa::path(
    get,
    path = "/orgs/{org}/audit-events",
    tag = "audit-events",
    params(("org" = String, Path, description = "organisation id"), Paging),
    responses((status = 200, description = "done", body = ListView<AuditEventView>), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<ListView<AuditEventView>>, ApiError> {
    list_page(
        state,
        &caller,
        &org,
        Need::Read,
        paging,
        |store, org, page| store.list_audit_events(org, page),
    )
    .await
}
