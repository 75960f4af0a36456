//! "Why can't my device connect?" answered without logs (DESIGN §13):
//! `POST /api/v1/orgs/{org}/explain` runs a certificate chain (and a client id, when given)
//! through what a connection would meet now — the org's TLS verifier, the admission after the
//! handshake, the client id's binding, the blocklist and CRLs — and says where it would stop and
//! why, in the reason codes of refusals and metrics; `GET /api/v1/orgs/{org}/refusals` lists the
//! org's last refusals on this node, newest first.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::ApiJson;
use super::views::ListView;
use super::AdminState;
use crate::identity::{ClientId, OrgId};
use crate::mqtt::admission;
use crate::refusal::Refusal;
use crate::registry::{self, PeerIdentity};
use crate::revocation::Device;
use crate::store::OcspMode;

/// Certificates a chain may have: a leaf and intermediates, as a handshake would carry them.
const MAX_CHAIN: usize = 10;

/// A device's certificate chain, leaf first, and optionally the client id it would send.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Explain {
    /// PEM, leaf first, then any intermediates the device sends.
    certificate_chain: String,
    client_id: Option<String>,
}

/// What the server would do with the device now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExplanationView {
    accepted: bool,
    /// Where it would be refused: `tls` or `connect`; `null` when accepted.
    stage: Option<&'static str>,
    /// The refusal's reason code (as in metrics, events and `refusals`); `null` when accepted.
    reason: Option<&'static str>,
    /// The answer in a sentence.
    message: String,
    /// The active CA the chain verifies to.
    ca_id: Option<String>,
    /// The identities the certificate claims.
    identities: Vec<String>,
    /// The client ids it may connect with.
    client_ids: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/orgs/{org}/explain",
    tag = "explain",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Explain,
    responses(
        (status = 200, description = "what a connection would meet now", body = ExplanationView),
        (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn explain(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Explain>,
) -> Result<Json<ExplanationView>, ApiError> {
    let org = super::existing_org(&state, &caller, &org, Need::Read).await?;
    let chain = chain(&body.certificate_chain)?;
    let examined = registry::examine(&state.registry, &org, &chain);
    Ok(Json(match examined {
        Err(refusal) => refused(Stage::Tls, refusal, None),
        // An empty client id is none: a real CONNECT gets one assigned from the certificate.
        Ok(peer) => connect(
            &org,
            &peer,
            body.client_id.as_deref().filter(|id| !id.is_empty()),
        ),
    }))
}

fn chain(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let invalid = |message: &str| ApiError::invalid("invalid_certificate_chain", message);
    let blocks = pem::parse_many(pem_text).map_err(|_| invalid("not PEM"))?;
    if blocks.is_empty() || blocks.iter().any(|block| block.tag() != "CERTIFICATE") {
        return Err(invalid(
            "certificate_chain must be PEM CERTIFICATE blocks, leaf first",
        ));
    }
    if blocks.len() > MAX_CHAIN {
        return Err(invalid("certificate_chain has more than 10 certificates"));
    }
    Ok(blocks
        .into_iter()
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect())
}

#[derive(Clone, Copy)]
enum Stage {
    Tls,
    Connect,
}

fn refused(stage: Stage, refusal: Refusal, peer: Option<&PeerIdentity>) -> ExplanationView {
    let (code, at) = match stage {
        Stage::Tls => ("tls", "the TLS handshake"),
        Stage::Connect => ("connect", "CONNECT"),
    };
    let (ca_id, identities, client_ids) = described(peer);
    ExplanationView {
        accepted: false,
        stage: Some(code),
        reason: Some(refusal.as_str()),
        message: format!("refused at {at}: {}", refusal.sentence()),
        ca_id,
        identities,
        client_ids,
    }
}

/// The CA, the identities and the client ids of a chain the handshake took.
fn described(peer: Option<&PeerIdentity>) -> (Option<String>, Vec<String>, Vec<String>) {
    let Some(peer) = peer else {
        return (None, Vec::new(), Vec::new());
    };
    let identities = peer.claims.iter().map(ToString::to_string).collect();
    let client_ids = peer
        .claims
        .iter()
        .map(|identity| {
            ClientId {
                org: peer.org.org.id.clone(),
                identity: identity.clone(),
            }
            .to_string()
        })
        .collect();
    (Some(peer.ca_id.clone()), identities, client_ids)
}

/// After the handshake: the client id's binding, then what the registry says of the device.
fn connect(org: &OrgId, peer: &PeerIdentity, client_id: Option<&str>) -> ExplanationView {
    let identity = match client_id {
        Some(client_id) => match admission::bind_id(client_id, peer) {
            Ok(bound) => bound.identity,
            Err(refusal) => return refused(Stage::Connect, refusal, Some(peer)),
        },
        // Any of its identities would be checked the same way: a blocked claim blocks them all.
        None => match peer.claims.first() {
            Some(identity) => identity.clone(),
            None => return refused(Stage::Connect, Refusal::IdentityMismatch, Some(peer)),
        },
    };
    let device = Device {
        identity,
        claims: peer.claims.clone(),
        ca_id: peer.ca_id.clone(),
        also_ca_ids: peer.also_ca_ids.clone(),
        fingerprint_sha256: peer.fingerprint_sha256.clone(),
        serial: peer.serial.clone(),
    };
    if let Some(revocation) = peer.org.revocation(&device) {
        return refused(Stage::Connect, revocation.refusal(), Some(peer));
    }
    let (ca_id, identities, client_ids) = described(Some(peer));
    let mut message = match client_id {
        Some(client_id) => format!(
            "accepted: the chain verifies to CA {}, and {client_id} is an identity the \
             certificate claims",
            peer.ca_id
        ),
        None => format!(
            "accepted: the chain verifies to CA {}; the device may connect as {}",
            peer.ca_id,
            client_ids.join(" or ")
        ),
    };
    let ocsp = peer
        .org
        .cas
        .iter()
        .find(|ca| ca.id == peer.ca_id)
        .map_or(OcspMode::Off, |ca| ca.ocsp_mode);
    if ocsp != OcspMode::Off {
        message.push_str(&format!(
            " (its CA asks OCSP when a device connects, mode {}: not asked here)",
            ocsp.as_str()
        ));
    }
    tracing::debug!(org = %org, ca = %peer.ca_id, "explained");
    ExplanationView {
        accepted: true,
        stage: None,
        reason: None,
        message,
        ca_id,
        identities,
        client_ids,
    }
}

/// One refused connection.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RefusalView {
    /// RFC 3339.
    at: String,
    /// The node that refused it.
    node: String,
    peer: Option<String>,
    sni: Option<String>,
    /// `tls` or `connect`.
    stage: Option<String>,
    reason: Option<String>,
    /// What the reason means, as `explain` says it.
    message: Option<String>,
    /// The identity the certificate names (known at `connect`).
    identity: Option<String>,
    fingerprint_sha256: Option<String>,
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/refusals",
    tag = "explain",
    params(("org" = String, Path, description = "organisation id")),
    responses(
        (status = 200, description = "the org's last 1,000 refusals on this node, newest first", body = ListView<RefusalView>),
        (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn refusals(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Json<ListView<RefusalView>>, ApiError> {
    let org = super::existing_org(&state, &caller, &org, Need::Read).await?;
    let node = state.cluster.node_id();
    let items = state
        .registry
        .events()
        .refusals(org.as_str())
        .into_iter()
        .map(|event| RefusalView {
            at: event.at.clone(),
            node: event.node.clone().unwrap_or_else(|| node.to_owned()),
            peer: event.peer.clone(),
            sni: event.sni.clone(),
            stage: event.stage.as_deref().map(str::to_owned),
            reason: event.reason.as_deref().map(str::to_owned),
            message: event
                .reason
                .as_deref()
                .and_then(Refusal::from_label)
                .map(|refusal| refusal.sentence().to_owned()),
            identity: event.identity.clone(),
            fingerprint_sha256: event.fingerprint_sha256.clone(),
        })
        .collect();
    Ok(Json(ListView {
        items,
        next_cursor: None,
    }))
}
