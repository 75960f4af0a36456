//! `GET /api/v1/cluster/nodes` (admin token): the nodes serving from this store, from their
//! heartbeats; and `GET /healthz/detail` (no token): what this node can tell of its own state —
//! is the store reachable, how stale may its snapshots be (DESIGN §12).

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use time::OffsetDateTime;

use super::auth::Caller;
use super::error::ApiError;
use super::views::rfc3339;
use super::{read, AdminState};
use crate::store::NodeRecord;

/// The nodes, by node id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodesView {
    pub items: Vec<NodeView>,
}

/// One node, as its last heartbeat tells it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub node_id: String,
    pub started_at: String,
    pub last_seen: String,
    /// Live device sessions at its last heartbeat.
    pub sessions: u64,
    /// The Portcullis version it runs.
    pub version: String,
    /// `up`, or `down` when its last heartbeat is older than `cluster.down_after_seconds`.
    #[schema(pattern = "^(up|down)$")]
    pub status: &'static str,
    /// It leads the cluster (runs the notifier and the CRL fetches): it took the leader lock
    /// last, and is up.
    pub leader: bool,
}

impl NodeView {
    fn new(
        node: NodeRecord,
        leader: Option<&str>,
        now: OffsetDateTime,
        down_after: std::time::Duration,
    ) -> NodeView {
        let silent = now - node.last_seen;
        let status = if silent > down_after { "down" } else { "up" };
        NodeView {
            leader: status == "up" && leader == Some(node.node_id.as_str()),
            node_id: node.node_id,
            started_at: rfc3339(node.started_at),
            last_seen: rfc3339(node.last_seen),
            sessions: node.sessions,
            version: node.version,
            status,
        }
    }
}

#[utoipa::path(
    get,
    path = "/cluster/nodes",
    tag = "cluster",
    responses(
        (status = 200, description = "every node that wrote a heartbeat, by node id", body = NodesView),
        (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn nodes(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<NodesView>, ApiError> {
    caller.require_admin()?;
    let down_after = state.health.down_after;
    let (nodes, leader) = read(state, |store| Ok((store.nodes()?, store.leader()?))).await?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(NodesView {
        items: nodes
            .into_iter()
            .map(|node| NodeView::new(node, leader.as_deref(), now, down_after))
            .collect(),
    }))
}

/// `/healthz/detail`: answered from memory, never waiting on the store.
#[derive(Debug, Serialize)]
pub struct HealthView {
    /// `ok`, or `unavailable` while the store cannot be reached (the node serves from its
    /// snapshots; admin writes answer 503).
    store: &'static str,
    broker: &'static str,
    /// The upstream brokers and their state (none with the embedded broker).
    upstreams: Vec<serde_json::Value>,
    /// Seconds since the snapshots were last known to hold every committed change.
    snapshot_age_seconds: u64,
    /// This node leads the cluster (holds the leader lock; always, on SQLite).
    leader: bool,
}

pub async fn health_detail(State(state): State<AdminState>) -> Json<HealthView> {
    Json(HealthView {
        store: if state.health.store_ok() {
            "ok"
        } else {
            "unavailable"
        },
        broker: "ok",
        upstreams: Vec::new(),
        snapshot_age_seconds: state.health.snapshot_age(),
        leader: state.health.leads(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_node_silent_longer_than_down_after_is_down_and_leads_no_more() {
        let now = OffsetDateTime::now_utc();
        let node = |seen: i64| NodeRecord {
            node_id: "n".into(),
            started_at: now - time::Duration::seconds(100),
            last_seen: now - time::Duration::seconds(seen),
            sessions: 3,
            version: "1".into(),
        };
        let down_after = Duration::from_secs(15);
        let up = NodeView::new(node(14), Some("n"), now, down_after);
        assert_eq!((up.status, up.leader), ("up", true));
        let down = NodeView::new(node(16), Some("n"), now, down_after);
        assert_eq!((down.status, down.leader), ("down", false));
        assert!(!NodeView::new(node(14), Some("m"), now, down_after).leader);
    }
}
