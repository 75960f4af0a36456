//! `/api/v1/orgs/{org}/events`: the org's connects, disconnects and refusals as Server-Sent
//! Events (`event: connect | disconnect | refused`, `data:` JSON `{"at", "client_id",
//! "identity", "peer", "reason", "node", "stage", "sni", "fingerprint_sha256"}`), of every node of
//! the cluster. A reader that falls behind the broadcast ring is dropped (its stream ends); it
//! never slows the data path.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::Extension;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::AdminState;

#[utoipa::path(
    get,
    path = "/orgs/{org}/events",
    tag = "sessions",
    params(("org" = String, Path, description = "organisation id")),
    responses(
        (status = 200, description = "a stream of connect, disconnect and refused events",
         body = String, content_type = "text/event-stream"),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let org = super::existing_org(&state, &caller, &org, Need::Read).await?;
    let receiver = state.registry.events().subscribe();
    // The other nodes tell this one the org's events while the stream is read.
    let watch = state.cluster.watch(&org);
    let org = org.as_str().to_owned();
    let node = state.cluster.node_id().to_owned();
    let events = futures_util::stream::unfold((receiver, watch), move |(mut receiver, watch)| {
        let (org, node) = (org.clone(), node.clone());
        async move {
            loop {
                match receiver.recv().await {
                    Ok(event) if event.org == org => {
                        let data = event.data(&node);
                        let sse = sse::Event::default().event(event.kind.as_str()).data(data);
                        return Some((Ok(sse), (receiver, watch)));
                    }
                    Ok(_) => continue,
                    // Behind by more than the ring holds: dropped, never waited for.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
