//! The JSON each resource shows. Built from store records; private keys have no field here.

use serde::Serialize;
use time::OffsetDateTime;

use crate::identity::OrgId;
use crate::mqtt::topics::TopicPolicy;
use crate::pki::CertInfo;
use crate::pki::KeyType;
use crate::store::{
    AuditEvent, BlockTarget, BlockedDevice, CaRecord, CsrRecord, CsrStatus, DeviceRecord,
    GrantRecord, NodeSession, NotificationSettings, OrgRecord, Page, Role, ServerCertRecord,
    SigningCertRecord, TokenRecord, TokenStatus,
};

pub use crate::clock::rfc3339;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListView<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListView<T> {
    pub fn from_page<R>(page: Page<R>, view: impl Fn(R) -> T) -> ListView<T> {
        ListView {
            items: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub topic_policy: TopicPolicy,
    pub approval_required_roles: Vec<Role>,
    pub created_at: String,
}

impl From<OrgRecord> for OrgView {
    fn from(o: OrgRecord) -> OrgView {
        OrgView {
            id: o.id.as_str().to_owned(),
            name: o.name,
            topic_policy: o.topic_policy,
            approval_required_roles: o.approval_required_roles,
            created_at: rfc3339(o.created_at),
        }
    }
}

/// The fields both certificate views show, first and in this order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertView {
    pub id: String,
    pub org: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub fingerprint_sha1: String,
    pub not_before: String,
    pub not_after: String,
    pub key_type: String,
    pub alias: String,
    /// Where the certificate is in use now (empty: nowhere).
    pub used_for: Vec<&'static str>,
}

impl CertView {
    fn new(
        id: String,
        org: &OrgId,
        info: &CertInfo,
        der: &[u8],
        alias: String,
        used_for: Vec<&'static str>,
    ) -> CertView {
        CertView {
            id,
            org: org.as_str().to_owned(),
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            fingerprint_sha256: info.fingerprint_sha256.clone(),
            fingerprint_sha1: crate::pki::fingerprint_sha1(der),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
            key_type: crate::pki::key_type_of(der),
            alias,
            used_for,
        }
    }
}

/// `used_for` entries: only those that hold.
fn uses(candidates: &[(bool, &'static str)]) -> Vec<&'static str> {
    candidates
        .iter()
        .filter(|(holds, _)| *holds)
        .map(|(_, name)| *name)
        .collect()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaView {
    #[serde(flatten)]
    pub cert: CertView,
    pub description: String,
    pub active: bool,
    /// Imported with its key: it can sign CSRs (`issuer` of a signature request).
    pub can_issue: bool,
    pub registered_at: String,
    /// The access grant on its key (when imported with one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantView>,
    /// Where its CRL is fetched from; null: only uploaded.
    pub crl_url: Option<String>,
    /// `off`, `soft` or `hard`.
    pub ocsp_mode: &'static str,
    /// Its OCSP responder; null: the one each device certificate's AIA names.
    pub ocsp_url: Option<String>,
}

impl From<CaRecord> for CaView {
    fn from(c: CaRecord) -> CaView {
        CaView {
            cert: CertView::new(
                c.id,
                &c.org,
                &c.info,
                &c.der,
                c.alias,
                uses(&[(c.active, "device_authentication"), (c.has_key, "issuing")]),
            ),
            description: c.description,
            active: c.active,
            can_issue: c.has_key,
            registered_at: rfc3339(c.registered_at),
            grant: c.grant.map(GrantView::from),
            crl_url: c.crl_url,
            ocsp_mode: c.ocsp_mode.as_str(),
            ocsp_url: c.ocsp_url,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerCertView {
    #[serde(flatten)]
    pub cert: CertView,
    pub dns_names: Vec<String>,
    pub active: bool,
    pub registered_at: String,
}

impl From<ServerCertRecord> for ServerCertView {
    fn from(c: ServerCertRecord) -> ServerCertView {
        ServerCertView {
            cert: CertView::new(
                c.id,
                &c.org,
                &c.info,
                c.chain.first().map(|d| d.as_ref()).unwrap_or_default(),
                c.alias,
                uses(&[(c.active, "mqtts")]),
            ),
            dns_names: c.info.dns_names,
            active: c.active,
            registered_at: rfc3339(c.registered_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SigningCertView {
    #[serde(flatten)]
    pub cert: CertView,
    /// New tokens are signed with the default.
    pub is_default: bool,
    /// Tokens it signed that are not revoked (deleting it revokes them).
    pub tokens: u64,
    pub registered_at: String,
    /// The access grant on its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantView>,
}

impl From<SigningCertRecord> for SigningCertView {
    fn from(c: SigningCertRecord) -> SigningCertView {
        SigningCertView {
            cert: CertView::new(
                c.id,
                &c.org,
                &c.info,
                c.chain.first().map(|d| d.as_ref()).unwrap_or_default(),
                c.alias,
                uses(&[
                    (c.is_default, "token_signing"),
                    (c.tokens > 0, "token_verification"),
                ]),
            ),
            is_default: c.is_default,
            tokens: c.tokens,
            registered_at: rfc3339(c.registered_at),
            grant: c.grant.map(GrantView::from),
        }
    }
}

/// A token resource: never the token itself (that is shown once, at creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub org: String,
    pub name: String,
    pub role: Role,
    pub status: TokenStatus,
    pub signing_certificate: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> TokenView {
        TokenView {
            id: t.id,
            org: t.org.as_str().to_owned(),
            name: t.name,
            role: t.role,
            status: t.status,
            signing_certificate: t.signing_certificate,
            created_by: t.created_by,
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub id: String,
    pub org: String,
    pub at: String,
    pub actor: String,
    pub actor_role: String,
    pub action: String,
    pub target: Option<String>,
    pub reason: Option<String>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> AuditEventView {
        AuditEventView {
            id: e.id,
            org: e.org.as_str().to_owned(),
            at: rfc3339(e.at),
            actor: e.actor,
            actor_role: e.actor_role,
            action: e.action,
            target: e.target,
            reason: e.reason,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignatureRequestView {
    pub requested_by: String,
    pub requested_role: String,
    pub self_signed: bool,
    /// `"platform"` or a CA id; absent when self-signed.
    pub issuer: Option<String>,
    pub reason: String,
}

/// A CSR: never its key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CsrView {
    pub id: String,
    pub org: String,
    pub alias: String,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub key_type: KeyType,
    pub status: CsrStatus,
    pub csr_pem: String,
    pub signature_request: Option<SignatureRequestView>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    /// The server certificate it became.
    pub server_certificate: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<CsrRecord> for CsrView {
    fn from(c: CsrRecord) -> CsrView {
        CsrView {
            id: c.id,
            org: c.org.as_str().to_owned(),
            alias: c.alias,
            common_name: c.common_name,
            dns_names: c.dns_names,
            key_type: c.key_type,
            status: c.status,
            csr_pem: c.csr_pem,
            signature_request: c.request.map(|r| SignatureRequestView {
                requested_by: r.requested_by,
                requested_role: r.requested_role,
                self_signed: r.issuer.is_none(),
                issuer: r.issuer,
                reason: r.reason,
            }),
            decided_by: c.decided_by,
            decision_reason: c.decision_reason,
            server_certificate: c.server_certificate,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// Every refusal: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (README, "Admin API").
    pub code: &'static str,
    /// A sentence for people; never an internal cause.
    pub message: String,
}

/// A blocklist entry: exactly one of `identity`, `fingerprint_sha256`, `ca_id` + `serial`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlockedDeviceView {
    pub id: String,
    pub org: String,
    pub identity: Option<String>,
    pub fingerprint_sha256: Option<String>,
    pub ca_id: Option<String>,
    pub serial: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub created_at: String,
}

impl From<BlockedDevice> for BlockedDeviceView {
    fn from(b: BlockedDevice) -> BlockedDeviceView {
        let (identity, fingerprint_sha256, ca_id, serial) = match b.target {
            BlockTarget::Identity(i) => (Some(i.to_string()), None, None, None),
            BlockTarget::Fingerprint(f) => (None, Some(f), None, None),
            BlockTarget::Serial { ca_id, serial } => (None, None, Some(ca_id), Some(serial)),
        };
        BlockedDeviceView {
            id: b.id,
            org: b.org.as_str().to_owned(),
            identity,
            fingerprint_sha256,
            ca_id,
            serial,
            reason: b.reason,
            created_by: b.created_by,
            created_at: rfc3339(b.created_at),
        }
    }
}

/// A live session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub client_id: String,
    pub identity: String,
    pub ca_id: String,
    pub fingerprint_sha256: String,
    pub serial: String,
    /// 4 (MQTT 3.1.1) or 5.
    pub protocol: u8,
    pub peer: Option<String>,
    pub connected_at: String,
    /// The node that serves it.
    pub node: String,
}

impl From<NodeSession> for SessionView {
    fn from(s: NodeSession) -> SessionView {
        SessionView {
            client_id: s.client_id,
            identity: s.identity,
            ca_id: s.ca_id,
            fingerprint_sha256: s.fingerprint_sha256,
            serial: s.serial,
            protocol: s.protocol,
            peer: s.peer,
            connected_at: rfc3339(s.connected_at),
            node: s.node_id,
        }
    }
}

/// The CRL held for a CA.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CrlView {
    pub issuer: String,
    pub this_update: String,
    pub next_update: Option<String>,
    /// Certificates it revokes.
    pub entries: usize,
    /// Past its `next_update` (see `revocation.on_stale_crl`).
    pub stale: bool,
}

impl CrlView {
    pub fn new(info: crate::pki::CrlInfo, now: OffsetDateTime) -> CrlView {
        CrlView {
            issuer: info.issuer,
            this_update: rfc3339(info.this_update),
            next_update: info.next_update.map(rfc3339),
            entries: info.revoked.len(),
            stale: info.next_update.is_some_and(|next| next < now),
        }
    }
}

/// A device of the registry: one identity with one certificate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub identity: String,
    pub ca_id: String,
    pub fingerprint_sha256: String,
    pub serial: String,
    pub not_after: String,
    pub first_seen: String,
    pub last_seen: String,
    /// The node that saw it last (empty for a sighting older than the cluster-wide registry).
    pub node: String,
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> DeviceView {
        DeviceView {
            identity: d.identity,
            ca_id: d.ca_id,
            fingerprint_sha256: d.fingerprint_sha256,
            serial: d.serial,
            not_after: rfc3339(d.not_after),
            first_seen: rfc3339(d.first_seen),
            last_seen: rfc3339(d.last_seen),
            node: d.node,
        }
    }
}

/// An access grant (DESIGN §11): how long and how often the product may still sign with a key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: String,
    /// `active`, `warning` or `expired`.
    pub status: &'static str,
    /// `ca_certificate` or `signing_certificate`.
    pub holder: &'static str,
    pub holder_id: String,
    /// Signatures made with the key under this grant.
    pub uses: i64,
    pub max_uses: i64,
    pub granted_at: String,
    pub expires_at: String,
    /// Its key was imported from PKCS#12: renewing asks for that file's passphrase.
    pub needs_key_passphrase: bool,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> GrantView {
        GrantView {
            id: g.id,
            status: g.status.as_str(),
            holder: g.holder.as_str(),
            holder_id: g.holder_id,
            uses: g.uses,
            max_uses: g.max_uses,
            granted_at: rfc3339(g.granted_at),
            expires_at: rfc3339(g.expires_at),
            needs_key_passphrase: g.needs_key_passphrase,
        }
    }
}

/// Where an org's notices go; the webhook secret is never shown back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationSettingsView {
    pub emails: Vec<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret_set: bool,
}

impl From<NotificationSettings> for NotificationSettingsView {
    fn from(s: NotificationSettings) -> NotificationSettingsView {
        NotificationSettingsView {
            emails: s.emails,
            webhook_url: s.webhook_url,
            webhook_secret_set: s.webhook_secret.is_some(),
        }
    }
}
