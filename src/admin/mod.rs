//! The HTTP admin API (`/api/v1`), `/healthz`, `/readyz` and `/metrics`. Every change is validated,
//! persisted in one transaction, then published to the registry.

use std::sync::Arc;

use axum::Router;

use crate::registry::Registry;
use crate::store::Store;

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    /// SHA-256 of the bootstrap admin token.
    pub admin_token_sha256: [u8; 32],
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub max_body_bytes: usize,
}

pub fn router(state: AdminState) -> Router {
    let _ = state;
    todo!()
}
