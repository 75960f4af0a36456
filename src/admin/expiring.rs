//! `/api/v1/orgs/{org}/expiring?within_days=30`: every certificate of the org that expires in
//! the window — CA, server, signing, and devices' certificates from the registry — soonest first.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::Duration;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::views::rfc3339;
use super::{org_in_path, read, AdminState};

const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 3650;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// Days from now (1–3650, default 30).
    #[param(minimum = 1, maximum = 3650)]
    within_days: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExpiringView {
    /// `ca`, `server`, `signing` or `device`.
    kind: String,
    /// The resource id; for a device, its certificate's fingerprint.
    id: String,
    /// The alias; for a device, its identity.
    name: String,
    not_after: String,
    days_left: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExpiringList {
    items: Vec<ExpiringView>,
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/expiring",
    tag = "revocation",
    params(("org" = String, Path, description = "organisation id"), Window),
    responses(
        (status = 200, description = "certificates expiring in the window, soonest first", body = ExpiringList),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(window): ApiQuery<Window>,
) -> Result<Json<ExpiringList>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Read)?;
    let days = window.within_days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_parameter(
            "invalid_within_days",
            format!("within_days must be between 1 and {MAX_DAYS}"),
        ));
    }
    let (now, rows) = read(state, move |store| {
        let now = store.clock().now();
        Ok((now, store.expiring(&org, now, now + Duration::days(days))?))
    })
    .await?;
    let items = rows
        .into_iter()
        .map(|e| ExpiringView {
            days_left: (e.not_after - now).whole_days(),
            not_after: rfc3339(e.not_after),
            kind: e.kind,
            id: e.id,
            name: e.name,
        })
        .collect();
    Ok(Json(ExpiringList { items }))
}
