//! `?dry_run=true` (DESIGN §13): what a change would break, answered before it is made and
//! changing nothing. The org as the change would leave it is built as a publish would build it
//! (`Registry::preview`), and the same verdict that closes sessions after a real change is asked
//! of the live sessions and of the registered devices: a session or device another active CA
//! still vouches for is neither counted nor, after the real change, closed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::ApiError;
use super::{blocking, AdminState};
use crate::identity::{Identity, OrgId};
use crate::registry::OrgEntry;
use crate::revocation::Device;
use crate::store::page::MAX_LIMIT;
use crate::store::{Cursor, DeviceFilter, OrgState, PageRequest};

/// Names listed per kind; the counts are whole.
const LISTED: usize = 100;

/// `?dry_run=true`.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRun {
    /// Answer what the change would close and lock out, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a change would close and lock out.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DryRunView {
    dry_run: bool,
    would_close: WouldClose,
    would_refuse: WouldRefuse,
}

/// Live sessions it would close, on every node.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WouldClose {
    sessions: usize,
    /// The first 100, sorted.
    client_ids: Vec<String>,
}

/// Registered devices (identities of the device registry) that could no longer connect.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WouldRefuse {
    devices: usize,
    /// The first 100, sorted.
    identities: Vec<String>,
}

/// The dry run of a change to `org` that `edit` makes to its state (`None`: the org deleted).
pub async fn answer(
    state: &AdminState,
    org: OrgId,
    edit: impl FnOnce(OrgState) -> Option<OrgState> + Send + 'static,
) -> Result<DryRunView, ApiError> {
    let (store, registry) = (state.store.clone(), state.registry.clone());
    let asked = org.clone();
    let (preview, refuses) = blocking(move || {
        let org = asked;
        let current = store
            .org_state(&org)?
            .ok_or(ApiError::NotFound("no such organisation"))?;
        let preview = registry
            .preview(&org, edit(current))
            .map_err(|e| ApiError::Publish(e.into()))?;
        let now_entry = registry.snapshot().org(org.as_str()).cloned();
        let refuses = locked_out(
            &*store,
            &org,
            now_entry.as_deref(),
            preview.entry.as_deref(),
        )?;
        Ok((preview, refuses))
    })
    .await?;
    let mut closes = preview.closes;
    closes.extend(elsewhere(state, &org, preview.entry.as_deref()).await?);
    Ok(DryRunView {
        dry_run: true,
        would_close: WouldClose {
            sessions: closes.len(),
            client_ids: first(closes),
        },
        would_refuse: WouldRefuse {
            devices: refuses.len(),
            identities: first(refuses),
        },
    })
}

/// The client ids of the other nodes' live sessions of `org` that `after` no longer admits,
/// judged from what their nodes wrote of them (the certificate, its claims, its CAs).
async fn elsewhere(
    state: &AdminState,
    org: &OrgId,
    after: Option<&OrgEntry>,
) -> Result<Vec<String>, ApiError> {
    let this_node = state.cluster.node_id();
    let mut closes = Vec::new();
    let mut page = PageRequest {
        limit: MAX_LIMIT,
        cursor: None,
    };
    loop {
        let rows = state.cluster.sessions(org, &page).await?;
        let more = rows.len() > MAX_LIMIT as usize;
        for row in rows.iter().take(MAX_LIMIT as usize) {
            if row.node_id == this_node {
                continue;
            }
            let device = recorded(
                (&row.identity, &row.claims),
                (&row.ca_id, &row.also_ca_ids),
                (&row.fingerprint_sha256, &row.serial),
            );
            let admitted = match (after, device) {
                (Some(entry), Some(device)) => entry.revocation(&device).is_none(),
                _ => false,
            };
            if !admitted {
                closes.push(row.client_id.clone());
            }
        }
        match rows.get(MAX_LIMIT as usize - 1) {
            Some(last) if more => {
                page.cursor = Some(Cursor::after(
                    crate::store::page::micros(last.connected_at),
                    &last.client_id,
                ));
            }
            _ => return Ok(closes),
        }
    }
}

/// The device a store row (another node's live session, a device of the registry) records, as
/// the node that served it saw it: its bound identity with every identity its certificate
/// claims, the CA that authenticated it with the other active CAs that vouched for it, and its
/// certificate's fingerprint and serial. A row older than the claims (none recorded) claims its
/// bound identity alone.
fn recorded(
    (identity, claims): (&str, &[String]),
    (ca_id, also_ca_ids): (&str, &[String]),
    (fingerprint, serial): (&str, &str),
) -> Option<Device> {
    let identity = Identity::parse(identity)?;
    let mut claims: Vec<Identity> = claims.iter().filter_map(|c| Identity::parse(c)).collect();
    if !claims.contains(&identity) {
        claims.push(identity.clone());
    }
    Some(Device {
        claims,
        identity,
        ca_id: ca_id.to_owned(),
        also_ca_ids: also_ca_ids.to_vec(),
        fingerprint_sha256: fingerprint.to_owned(),
        serial: serial.to_owned(),
    })
}

fn first(mut names: Vec<String>) -> Vec<String> {
    names.sort_unstable();
    names.truncate(LISTED);
    names
}

/// The identities of the device registry with a certificate `now` admits and none `after`
/// admits (`None`: the org gone). Expired certificates admit nobody.
fn locked_out(
    store: &dyn crate::store::Store,
    org: &OrgId,
    now: Option<&OrgEntry>,
    after: Option<&OrgEntry>,
) -> Result<Vec<String>, ApiError> {
    let today = OffsetDateTime::now_utc();
    let admits = |entry: Option<&OrgEntry>, device: &Device| {
        entry.is_some_and(|entry| entry.revocation(device).is_none())
    };
    let (mut before, mut still) = (HashSet::new(), HashSet::new());
    let mut page = PageRequest {
        limit: MAX_LIMIT,
        cursor: None,
    };
    loop {
        let rows = store.list_devices(org, &DeviceFilter::default(), &page)?;
        for row in &rows.items {
            if row.not_after < today {
                continue;
            }
            let Some(device) = recorded(
                (&row.identity, &row.claims),
                (&row.ca_id, &row.also_ca_ids),
                (&row.fingerprint_sha256, &row.serial),
            ) else {
                continue;
            };
            if admits(now, &device) {
                before.insert(row.identity.clone());
                if admits(after, &device) {
                    still.insert(row.identity.clone());
                }
            }
        }
        match rows.next_cursor.as_deref().map(Cursor::parse) {
            Some(Ok(cursor)) => page.cursor = Some(cursor),
            _ => break,
        }
    }
    Ok(before.difference(&still).cloned().collect())
}
