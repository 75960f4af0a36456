//! `/api/v1/orgs/{org}/sessions[/{client_id}]`: the org's live sessions on every node that is up
//! (each with its `node`), and disconnecting one
//! (an MQTT 5 client is told DISCONNECT 0x98, administrative action) on whichever node holds it
//! (see `crate::cluster`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::views::{ListView, SessionView};
use super::{blocking, no_content, org_in_path, page_request, AdminState, Paging};
use crate::store::Page;

#[utoipa::path(
    get,
    path = "/orgs/{org}/sessions",
    tag = "sessions",
    params(("org" = String, Path, description = "organisation id"), Paging),
    responses(
        (status = 200, description = "live sessions of every node that is up, oldest first", body = ListView<SessionView>),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<ListView<SessionView>>, ApiError> {
    let org = super::existing_org(&state, &caller, &org, Need::Read).await?;
    let page = page_request(paging.limit, paging.cursor.as_deref())?;
    let rows = state.cluster.sessions(&org, &page).await?;
    let page = Page::from_rows(rows, page.limit, |s| (s.connected_at, s.client_id.as_str()));
    Ok(Json(ListView::from_page(page, SessionView::from)))
}

#[utoipa::path(
    delete,
    path = "/orgs/{org}/sessions/{client_id}",
    tag = "sessions",
    params(
        ("org" = String, Path, description = "organisation id"),
        ("client_id" = String, Path, description = "the session's MQTT client id")
    ),
    responses(
        (status = 204, description = "told to end (on this node, or another node said it held it)"),
        (status = 404, description = "no node holds a live session with this client id (other nodes are given 2 s to answer)", body = super::views::ErrorView),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn disconnect(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, client_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    if !state.cluster.disconnect(&org, &client_id).await? {
        return Err(ApiError::NotFound("no live session with this client id"));
    }
    blocking(move || {
        // A disconnect changes nothing stored: its event has a transaction of its own, and a
        // failure to record it is logged (the session is gone either way).
        let audit = caller.audit("session.disconnect");
        if let Err(error) = state.store.record_action(&org, &audit, Some(&client_id)) {
            tracing::error!(%error, org = %org, "audit event of a disconnect not recorded");
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}
