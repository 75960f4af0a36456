//! `/api/v1/orgs/{org}/blocked-devices[/{id}]`: the device blocklist (DESIGN §11). Blocking
//! closes the live sessions it hits (the registry does, on publish); a blocked device's CONNECT
//! is answered "not authorized", reason `device_blocked`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::{Caller, Need};
use super::dry_run::{self, DryRun, DryRunView};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::views::{BlockedDeviceView, ListView};
use super::{blocking, change, list_page, no_content, org_in_path, AdminState, Paging};
use crate::identity::Identity;
use crate::store::{BlockTarget, BlockedDevice, NewBlock};

const MAX_REASON_LEN: usize = 1000;

/// Exactly one of `identity`, `fingerprint_sha256`, or `ca_id` with `serial`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BlockedDeviceCreate)]
pub struct Create {
    identity: Option<String>,
    fingerprint_sha256: Option<String>,
    ca_id: Option<String>,
    serial: Option<String>,
    #[schema(max_length = 1000)]
    #[serde(default)]
    reason: String,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A serial as the CA resource shows it: lower-case hex without leading zero bytes.
fn normal_serial(serial: &str) -> Option<String> {
    let hex = serial.trim().trim_start_matches("0x").to_ascii_lowercase();
    if !is_hex(&hex) || hex.len() > 64 {
        return None;
    }
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let bytes = hex::decode(padded).ok()?;
    Some(crate::pki::serial_hex(&bytes))
}

fn target(body: &Create) -> Result<BlockTarget, ApiError> {
    let invalid = |message: &str| ApiError::invalid("invalid_block", message.to_owned());
    match (
        body.identity.as_deref(),
        body.fingerprint_sha256.as_deref(),
        body.ca_id.as_deref(),
        body.serial.as_deref(),
    ) {
        (Some(identity), None, None, None) => Identity::parse(identity)
            .map(BlockTarget::Identity)
            .ok_or_else(|| invalid("identity must be d:<type>:<id>, g:<type>:<id> or a:<app>")),
        (None, Some(fingerprint), None, None) => {
            let fingerprint = fingerprint.trim().to_ascii_lowercase();
            if fingerprint.len() == 64 && is_hex(&fingerprint) {
                Ok(BlockTarget::Fingerprint(fingerprint))
            } else {
                Err(invalid("fingerprint_sha256 must be 64 hex digits"))
            }
        }
        (None, None, Some(ca_id), Some(serial)) => Ok(BlockTarget::Serial {
            ca_id: ca_id.to_owned(),
            serial: normal_serial(serial).ok_or_else(|| invalid("serial must be hex"))?,
        }),
        _ => Err(invalid(
            "give exactly one of identity, fingerprint_sha256, or ca_id with serial",
        )),
    }
}

#[utoipa::path(
    post,
    path = "/orgs/{org}/blocked-devices",
    tag = "revocation",
    params(("org" = String, Path, description = "organisation id")),
    params(DryRun),
    request_body = Create,
    responses(
        (status = 201, description = "blocked; its live sessions are closed", body = BlockedDeviceView),
        (status = 200, description = "with `dry_run=true`: what it would close and lock out, nothing changed", body = DryRunView),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(query): ApiQuery<DryRun>,
    ApiJson(body): ApiJson<Create>,
) -> Result<axum::response::Response, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let target = target(&body)?;
    let reason = body.reason.trim().to_owned();
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(ApiError::invalid(
            "invalid_reason",
            format!("reason must be at most {MAX_REASON_LEN} characters"),
        ));
    }
    if let BlockTarget::Serial { ca_id, .. } = &target {
        let (store, org, ca_id) = (state.store.clone(), org.clone(), ca_id.clone());
        blocking(move || match store.ca(&org, &ca_id)? {
            Some(_) => Ok(()),
            None => Err(ApiError::invalid(
                "unknown_ca",
                "ca_id is not one of the organisation's CA certificates",
            )),
        })
        .await?;
    }
    if query.dry_run {
        let blocked = BlockedDevice {
            id: String::new(),
            org: org.clone(),
            target,
            reason,
            created_by: caller.actor().0.to_owned(),
            created_at: OffsetDateTime::now_utc(),
        };
        let view = dry_run::answer(&state, org, move |mut org_state| {
            org_state.blocked.push(blocked);
            Some(org_state)
        })
        .await?;
        return Ok(Json(view).into_response());
    }
    let record = change(state, org, move |store, org| {
        let given = (!reason.is_empty()).then_some(reason.as_str());
        let audit = caller.audit_because("blocked_device.create", given);
        let new = NewBlock {
            target,
            reason,
            created_by: caller.actor().0.to_owned(),
            created_at: OffsetDateTime::now_utc(),
        };
        let record = store.insert_blocked(org, &new, &audit)?;
        Ok(record)
    })
    .await?;
    let view: BlockedDeviceView = record.into();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/blocked-devices",
    tag = "revocation",
    params(("org" = String, Path, description = "organisation id"), Paging),
    responses(
        (status = 200, description = "a page", body = ListView<BlockedDeviceView>),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<ListView<BlockedDeviceView>>, ApiError> {
    list_page(
        state,
        &caller,
        &org,
        Need::Read,
        paging,
        |store, org, page| store.list_blocked(org, page),
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/orgs/{org}/blocked-devices/{id}",
    tag = "revocation",
    params(("org" = String, Path, description = "organisation id"), ("id" = String, Path, description = "entry id")),
    responses(
        (status = 204, description = "unblocked"),
        (status = "4XX", description = "refused", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((org, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    change(state, org, move |store, org| {
        if !store.delete_blocked(org, &id, &caller.audit("blocked_device.delete"))? {
            return Err(ApiError::NotFound("no such blocklist entry"));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::normal_serial;

    #[test]
    fn serials_take_the_form_the_ca_resource_shows() {
        assert_eq!(normal_serial("0x00AB").as_deref(), Some("ab"));
        assert_eq!(normal_serial("abc").as_deref(), Some("0abc"));
        assert_eq!(normal_serial("00"), Some("00".to_owned()));
        assert_eq!(normal_serial("xyz"), None);
        assert_eq!(normal_serial(""), None);
    }
}
