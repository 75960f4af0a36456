//! `/api/v1/orgs/{org}/devices`: the device registry — every identity authenticated, with the
//! certificate it presented, first and last seen (written behind, a second or so late).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::views::{DeviceView, ListView};
use super::{list_page, time_param, AdminState, Paging};
use crate::store::DeviceFilter;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// The identity's type (`sensor` of `d:sensor:dev1`; devices and gateways).
    r#type: Option<String>,
    /// A prefix of the identity's id (`dev` matches `d:sensor:dev1`).
    id_prefix: Option<String>,
    /// RFC 3339: certificates expiring before.
    expires_before: Option<String>,
    /// RFC 3339: seen after.
    seen_after: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/devices",
    tag = "sessions",
    params(("org" = String, Path, description = "organisation id"), DeviceQuery),
    responses(
        (status = 200, description = "devices by first sighting", body = ListView<DeviceView>),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<DeviceQuery>,
) -> Result<Json<ListView<DeviceView>>, ApiError> {
    let filter = DeviceFilter {
        device_type: query.r#type,
        id_prefix: query.id_prefix,
        expires_before: time_param("expires_before", query.expires_before.as_deref())?,
        seen_after: time_param("seen_after", query.seen_after.as_deref())?,
    };
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
        move |store, org, page| store.list_devices(org, &filter, page),
    )
    .await
}
