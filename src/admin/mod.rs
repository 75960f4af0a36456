//! The HTTP admin API (`/api/v1`), the web console (`/console/`), `/healthz`, `/healthz/detail`,
//! `/readyz` and `/metrics`. Every change is validated, persisted in one transaction, then
//! published to the registry.
//!
//! # Layout
//!
//! - `auth`: who calls (the admin token, or an org token with its role) and what each role may
//!   do; `jwt`: org tokens (ES256 JWTs); `error`: [`ApiError`], the one error shape; `extract`:
//!   JSON, query and body extractors that reject with `ApiError`.
//! - `orgs`, `ca_certificates`, `server_certificates`, `signing_certificates`, `tokens`,
//!   `audit_events`: one file per resource; `views`: the JSON each resource shows (never a
//!   private key, never a token after its creation).
//! - `console`: the web console's static files (`/console/`), public, with a strict CSP; the
//!   page calls `/api/v1` with the operator's token like any other client.
//!
//! Every change records an audit event (who, role, what, when, and the reason: the one a
//! signature request, approval or rejection gives in its body, else the `X-Portcullis-Reason`
//! header) in the change's own transaction: each store method that changes an org's data takes
//! the [`Audit`](crate::store::Audit) that [`auth::Caller::audit`] makes.
//!
//! Handlers run their store work, `pki` checks (PKCS#12 key derivation is deliberately slow) and
//! the registry publish inside `tokio::task::spawn_blocking`, so a slow upload never stalls the
//! runtime's workers. The store serialises writers; each change is one transaction, published
//! only after it commits. A change that commits but fails to publish answers 500
//! `publish_failed`: it is saved, and the registry keeps serving the last good state.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Json, Router};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::OrgId;
use crate::registry::Registry;
use crate::store::{Cursor, GrantStatus, Page, PageRequest, Store, StoreError};

mod audit_events;
mod auth;
mod blocked_devices;
mod ca_certificates;
mod cluster;
mod console;
mod csrs;
mod devices;
mod dry_run;
mod error;
mod events;
mod expiring;
mod explain;
mod extract;
mod grants;
mod jwt;
mod notification_settings;
mod openapi;
mod orgs;
mod server_certificates;
mod sessions;
mod signing_certificates;
mod tokens;
mod views;
pub use views::rfc3339;

pub use auth::{token_sha256, REASON_HEADER};
pub use error::ApiError;

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    /// SHA-256 of the bootstrap admin token.
    pub admin_token_sha256: [u8; 32],
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub max_body_bytes: usize,
    /// Sends renewal codes.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Fetches a CA's CRL at once when its `crl_url` is set.
    pub crl_fetcher: Arc<crate::revocation::crl::CrlFetcher>,
    /// The broker `/readyz` asks (none: a router built without one, always ready).
    pub broker: Option<Arc<crate::broker::Broker>>,
    /// This node among several: `/healthz/detail`, the node list.
    pub health: Arc<crate::health::Health>,
    /// Sessions ended wherever they are; the leader's notifier woken from any node.
    pub cluster: Arc<crate::cluster::Cluster>,
}

pub fn router(state: AdminState) -> Router {
    let (api, openapi) = api();
    let api = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes));
    let openapi = Arc::new(openapi);
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/healthz/detail", get(cluster::health_detail))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .merge(console::router())
        .fallback(not_found)
        .with_state(state)
}

/// The `/api/v1` routes and their OpenAPI document, from one declaration each: a handler's
/// `#[utoipa::path]` gives both its route and its operation, so neither can miss the other.
fn api() -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    let (router, mut document) =
        OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
            .routes(routes!(orgs::list, orgs::create))
            .routes(routes!(orgs::get, orgs::update, orgs::delete))
            .routes(routes!(ca_certificates::list, ca_certificates::create))
            .routes(routes!(
                ca_certificates::get,
                ca_certificates::update,
                ca_certificates::delete
            ))
            .routes(routes!(ca_certificates::certificate_pem))
            .routes(routes!(ca_certificates::get_crl, ca_certificates::put_crl))
            .routes(routes!(
                server_certificates::list,
                server_certificates::create
            ))
            .routes(routes!(server_certificates::generate))
            .routes(routes!(
                server_certificates::get,
                server_certificates::delete
            ))
            .routes(routes!(server_certificates::chain_pem))
            .routes(routes!(
                server_certificates::get_active,
                server_certificates::set_active
            ))
            .routes(routes!(
                signing_certificates::list,
                signing_certificates::create
            ))
            .routes(routes!(
                signing_certificates::get,
                signing_certificates::delete
            ))
            .routes(routes!(signing_certificates::chain_pem))
            .routes(routes!(signing_certificates::set_default))
            .routes(routes!(tokens::list, tokens::create))
            .routes(routes!(tokens::get, tokens::update, tokens::delete))
            .routes(routes!(audit_events::list))
            .routes(routes!(csrs::list, csrs::create))
            .routes(routes!(csrs::get, csrs::delete))
            .routes(routes!(csrs::csr_pem))
            .routes(routes!(csrs::upload_certificate))
            .routes(routes!(csrs::request_signature))
            .routes(routes!(csrs::approve))
            .routes(routes!(csrs::reject))
            .routes(routes!(blocked_devices::list, blocked_devices::create))
            .routes(routes!(blocked_devices::delete))
            .routes(routes!(events::stream))
            .routes(routes!(explain::explain))
            .routes(routes!(explain::refusals))
            .routes(routes!(auth::whoami))
            .routes(routes!(devices::list))
            .routes(routes!(expiring::list))
            .routes(routes!(sessions::list))
            .routes(routes!(sessions::disconnect))
            .routes(routes!(grants::list))
            .routes(routes!(grants::get))
            .routes(routes!(grants::challenge))
            .routes(routes!(grants::renew))
            .routes(routes!(
                notification_settings::get,
                notification_settings::put
            ))
            .routes(routes!(cluster::nodes))
            .split_for_parts();
    openapi::finish(&mut document);
    (router, document)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the router serves (the server builds it after the store opened and the registry
/// loaded) while the broker can take sessions: an upstream broker mode with no reachable URL
/// answers 503, so that a load balancer sends devices elsewhere. It stays ready while the store is
/// unreachable: the node still serves devices from its snapshots (`/healthz/detail` tells the
/// store's state).
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    match &state.broker {
        Some(broker) if !broker.ready() => (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable"),
        _ => (StatusCode::OK, "ready"),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // The expiry gauges are read from the store when scraped, so they are never staler than the
    // scrape.
    let store = state.store.clone();
    let summary = blocking(move || {
        let now = store.clock().now();
        Ok::<_, ApiError>((store.expiry_summary(now)?, now))
    })
    .await;
    match summary {
        Ok((summary, now)) => crate::metrics::record_expiry(&summary, now),
        Err(e) => tracing::warn!(error = %e, "expiry gauges not updated"),
    }
    crate::metrics::record_allocator();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Runs store, `pki` and registry work off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Runs a store read off the async workers.
async fn read<T, F>(state: AdminState, read: F) -> Result<T, ApiError>
where
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    blocking(move || Ok(read(&*state.store)?)).await
}

/// Runs one change to `org` off the async workers (its checks, its store transaction, its log
/// event), then publishes `org`: only a change that committed is published, and a failed publish
/// still answers `publish_failed` over a saved change.
async fn change<T, F>(state: AdminState, org: OrgId, change: F) -> Result<T, ApiError>
where
    F: FnOnce(&dyn Store, &OrgId) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    blocking(move || {
        let changed = change(&*state.store, &org)?;
        publish(&state, &org)?;
        Ok(changed)
    })
    .await
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                ApiError::bad_parameter(
                    "invalid_time",
                    format!("{name} must be an RFC 3339 time such as 2025-01-31T12:00:00Z"),
                )
            })
        })
        .transpose()
}

/// `?status=` as one of `statuses` (name, value); 400 `invalid_status` for another.
fn status_param<S: Copy>(
    value: Option<&str>,
    statuses: &[(&str, S)],
) -> Result<Option<S>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    statuses
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, s)| Some(*s))
        .ok_or_else(|| {
            let names: Vec<&str> = statuses.iter().map(|(name, _)| *name).collect();
            ApiError::bad_parameter(
                "invalid_status",
                format!("status must be one of {}", names.join(", ")),
            )
        })
}

/// `?grant_status=`: `active`, `warning` or `expired`.
fn grant_status_param(value: Option<&str>) -> Result<Option<GrantStatus>, ApiError> {
    status_param(
        value,
        &[
            ("active", GrantStatus::Active),
            ("warning", GrantStatus::Warning),
            ("expired", GrantStatus::Expired),
        ],
    )
}

/// `?alias=&registered_after=&registered_before=&status=&limit=&cursor=` of a certificate
/// collection (DESIGN §7b).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CertListQuery {
    alias: Option<String>,
    /// `active`, `warning` or `expired`: of the access grant on the certificate's key. Signing
    /// certificates only (their operation documents it); the others refuse it.
    #[param(ignore)]
    grant_status: Option<String>,
    registered_after: Option<String>,
    registered_before: Option<String>,
    status: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

impl CertListQuery {
    /// [`CertListQuery::split`] for a collection whose keys carry access grants.
    fn split_granted<S: Copy>(
        mut self,
        statuses: &[(&str, S)],
    ) -> Result<(crate::store::ListFilter<S>, Paging), ApiError> {
        let grant_status = grant_status_param(self.grant_status.take().as_deref())?;
        let (mut filter, paging) = self.split(statuses)?;
        filter.grant_status = grant_status;
        Ok((filter, paging))
    }

    /// The filter, with `status` one of `statuses`; and the paging.
    fn split<S: Copy>(
        self,
        statuses: &[(&str, S)],
    ) -> Result<(crate::store::ListFilter<S>, Paging), ApiError> {
        let filter = crate::store::ListFilter {
            alias: self.alias,
            registered_after: time_param("registered_after", self.registered_after.as_deref())?,
            registered_before: time_param("registered_before", self.registered_before.as_deref())?,
            status: status_param(self.status.as_deref(), statuses)?,
            grant_status: None,
        };
        if self.grant_status.is_some() {
            return Err(ApiError::bad_parameter(
                "invalid_grant_status",
                "grant_status filters CA and signing certificates only",
            ));
        }
        let paging = Paging {
            limit: self.limit,
            cursor: self.cursor,
        };
        Ok((filter, paging))
    }
}

/// `?limit=&cursor=` of a plain org collection.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Paging {
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A page of one of `org`'s collections, for a caller allowed `need` there.
async fn list_page<R, V>(
    state: AdminState,
    caller: &auth::Caller,
    org: &str,
    need: auth::Need,
    paging: Paging,
    list: impl FnOnce(&dyn Store, &OrgId, &PageRequest) -> Result<Page<R>, StoreError> + Send + 'static,
) -> Result<Json<views::ListView<V>>, ApiError>
where
    R: Send + 'static,
    V: From<R>,
{
    let org = org_in_path(org)?;
    caller.require(&org, need)?;
    let page = page_request(paging.limit, paging.cursor.as_deref())?;
    let page = read(state, move |store| list(store, &org, &page)).await?;
    Ok(Json(views::ListView::from_page(page, V::from)))
}

/// One of `org`'s resources, for a caller allowed `need` there; 404 `missing` when absent.
async fn get_one<R, V>(
    state: AdminState,
    caller: &auth::Caller,
    org: &str,
    need: auth::Need,
    missing: &'static str,
    get: impl FnOnce(&dyn Store, &OrgId) -> Result<Option<R>, StoreError> + Send + 'static,
) -> Result<Json<V>, ApiError>
where
    R: Send + 'static,
    V: From<R>,
{
    let record = find_one(state, caller, org, need, missing, get).await?;
    Ok(Json(V::from(record)))
}

/// [`get_one`]'s record itself, for an answer other than its JSON view.
async fn find_one<R>(
    state: AdminState,
    caller: &auth::Caller,
    org: &str,
    need: auth::Need,
    missing: &'static str,
    get: impl FnOnce(&dyn Store, &OrgId) -> Result<Option<R>, StoreError> + Send + 'static,
) -> Result<R, ApiError>
where
    R: Send + 'static,
{
    let org = org_in_path(org)?;
    caller.require(&org, need)?;
    let record = read(state, move |store| get(store, &org)).await?;
    record.ok_or(ApiError::NotFound(missing))
}

const MAX_ALIAS_LEN: usize = 200;

/// An alias as given, or `fallback` (a certificate's CN) when none is: at most 200 characters,
/// no control characters.
fn valid_alias(alias: Option<&str>, fallback: &str) -> Result<String, ApiError> {
    let alias = alias
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(fallback);
    if alias.chars().count() > MAX_ALIAS_LEN || alias.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_alias",
            format!("alias must be at most {MAX_ALIAS_LEN} characters without control characters"),
        ));
    }
    Ok(alias.to_owned())
}

/// The media type of the request, lower-case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// Fails with 404 unless `org` exists: an upload to an unknown org is refused before any
/// certificate check.
fn require_org(store: &dyn Store, org: &OrgId) -> Result<(), ApiError> {
    match store.org(org)? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound("no such organisation")),
    }
}

/// The org of a path, for a caller allowed `need` there; 404 when it does not exist, as every
/// org-scoped endpoint answers (those that read no table of the store check it here).
async fn existing_org(
    state: &AdminState,
    caller: &auth::Caller,
    org: &str,
    need: auth::Need,
) -> Result<OrgId, ApiError> {
    let org = org_in_path(org)?;
    caller.require(&org, need)?;
    let found = org.clone();
    let store = state.store.clone();
    blocking(move || require_org(&*store, &found)).await?;
    Ok(org)
}

/// An org id from a path: one that cannot exist is simply not found.
fn org_in_path(s: &str) -> Result<OrgId, ApiError> {
    OrgId::parse(s).map_err(|_| ApiError::NotFound("no such organisation"))
}

/// Publishes `org` after a committed change.
fn publish(state: &AdminState, org: &OrgId) -> Result<(), ApiError> {
    state
        .registry
        .publish_org(org)
        .map_err(|e| ApiError::Publish(e.into()))
}

/// `?limit=&cursor=`: limit 1–500 (default 50); the cursor must be one this API returned.
fn page_request(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(crate::store::page::DEFAULT_LIMIT);
    if !(1..=crate::store::page::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "invalid_limit",
            format!(
                "limit must be between 1 and {}",
                crate::store::page::MAX_LIMIT
            ),
        ));
    }
    let cursor = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(Cursor::parse(c).map_err(|_| {
            ApiError::bad_parameter("invalid_cursor", "cursor is not one this API returned")
        })?),
    };
    Ok(PageRequest { limit, cursor })
}

/// Certificates as an `application/x-pem-file` body, in order: what the download endpoints
/// answer (certificates only, never a key).
fn certificates_pem(certs: &[rustls_pki_types::CertificateDer<'_>]) -> impl IntoResponse {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pem::encode_many(&blocks),
    )
}

/// 204 No Content.
fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests;
