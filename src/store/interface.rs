//! The store's interface: what the rest of the product asks of its storage, by area, and nothing
//! of how it is kept. [`SqlStore`](super::SqlStore) implements it once, over SQLite or PostgreSQL
//! (DESIGN §12); `store::tests` run every behaviour test on both.
//!
//! # Why synchronous, and why `Arc<dyn Store>`
//!
//! Every method is one short transaction that blocks its thread; callers on the runtime already
//! run it on `tokio::task::spawn_blocking` (the admin API, the device writer, the notifier) and
//! the registry calls it when it rebuilds an org, outside any connection's path. A PostgreSQL
//! implementation keeps that contract with a blocking client over a connection pool on the same
//! blocking threads, so no caller changes; making the traits `async` would change every call
//! site for no gain while the callers already leave the runtime.
//!
//! Callers hold an `Arc<dyn Store>` rather than a generic `S: Store`: the store is chosen at
//! start from the configuration (`store.url`), one per process, and a trait object keeps that
//! choice in `server.rs` instead of threading a type parameter through the admin router, the
//! registry, the notifier and every handler. A dynamic call costs nothing next to a transaction.
//!
//! [`Store`] is every area at once (`OrgStore`, `CaStore`, …): on a `dyn Store` their methods
//! need no import; a second implementation can be written and tested area by area.
//! The records, filters and errors the traits speak are plain data from `store`, `pki` and
//! `identity`: nothing here names SQLite, OCSP, MQTT or a runtime type.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{
    Audit, AuditEvent, BlockedDevice, CaFilter, CaPatch, CaRecord, CsrRecord, CsrStatus,
    CsrTransition, DeviceFilter, DeviceRecord, DeviceSeen, Expiring, ExpirySummary, GrantRecord,
    GrantStatus, GrantTerms, ListFilter, NewBlock, NewCa, NewCsr, NewOrg, NewServerCert,
    NewSigningCert, NewToken, NodeMessage, NodeRecord, NodeSession, NotificationKey,
    NotificationSettings, OrgPatch, OrgRecord, OrgState, Page, PageRequest, RenewalRefused,
    ServerCertRecord, SigningCertDeleted, SigningCertRecord, StoreError, TicketKey, TokenPatch,
    TokenRecord,
};
use crate::clock::Clock;
use crate::identity::OrgId;
use crate::pki::{CrlInfo, Issuer};

/// Everything the product keeps: one store per process, shared as `Arc<dyn Store>`.
pub trait Store:
    OrgStore
    + CaStore
    + CrlStore
    + ServerCertStore
    + SigningCertStore
    + CsrStore
    + TokenStore
    + DeviceStore
    + BlocklistStore
    + GrantStore
    + AuditStore
    + NotificationStore
    + PlatformStore
    + NodeStore
    + LiveSessionStore
    + TicketKeyStore
    + Send
    + Sync
{
}

impl<T> Store for T where
    T: OrgStore
        + CaStore
        + CrlStore
        + ServerCertStore
        + SigningCertStore
        + CsrStore
        + TokenStore
        + DeviceStore
        + BlocklistStore
        + GrantStore
        + AuditStore
        + NotificationStore
        + PlatformStore
        + NodeStore
        + LiveSessionStore
        + TicketKeyStore
        + Send
        + Sync
{
}

/// Organisations.
pub trait OrgStore {
    /// Every org id, in id order.
    fn org_ids(&self) -> Result<Vec<OrgId>, StoreError>;

    /// Creates an org, with `signing` as its default signing certificate when given, in one
    /// transaction; `OrgExists` when the id is taken.
    fn create_org(
        &self,
        new: &NewOrg,
        signing: Option<&NewSigningCert>,
        audit: &Audit,
    ) -> Result<OrgRecord, StoreError>;

    /// `None` when the org does not exist.
    fn org(&self, id: &OrgId) -> Result<Option<OrgRecord>, StoreError>;

    /// Orgs in creation order.
    fn list_orgs(&self, page: &PageRequest) -> Result<Page<OrgRecord>, StoreError>;

    /// Applies `patch`; `None` when the org does not exist.
    fn update_org(
        &self,
        id: &OrgId,
        patch: &OrgPatch,
        audit: &Audit,
    ) -> Result<Option<OrgRecord>, StoreError>;

    /// Deletes the org with its CA and server certificates; `false` when it did not exist.
    fn delete_org(&self, id: &OrgId, audit: &Audit) -> Result<bool, StoreError>;
}

/// CA certificates and their revocation sources.
pub trait CaStore {
    /// Registers a CA certificate, active. `UnknownOrg`, or `DuplicateCertificate` when the org
    /// already has one with the same fingerprint.
    fn insert_ca(&self, org: &OrgId, new: &NewCa, audit: &Audit) -> Result<CaRecord, StoreError>;

    /// One of the org's CAs as an issuer: `None` when there is no such CA, `Some(None)` when it
    /// was registered without its key.
    fn ca_issuer(&self, org: &OrgId, id: &str) -> Result<Option<Option<Issuer>>, StoreError>;

    /// `UnknownOrg`, or `None` when the org has no such CA.
    fn ca(&self, org: &OrgId, id: &str) -> Result<Option<CaRecord>, StoreError>;

    /// The org's CAs that pass `filter`, in registration order.
    fn list_cas(
        &self,
        org: &OrgId,
        filter: &CaFilter,
        page: &PageRequest,
    ) -> Result<Page<CaRecord>, StoreError>;

    /// Applies `patch`; `UnknownOrg`, or `None` when the org has no such CA.
    fn update_ca(
        &self,
        org: &OrgId,
        id: &str,
        patch: &CaPatch,
        audit: &Audit,
    ) -> Result<Option<CaRecord>, StoreError>;

    /// Every active CA with a `crl_url`, of every org: (org, CA id, URL).
    fn crl_sources(&self) -> Result<Vec<(OrgId, String, String)>, StoreError>;

    /// `UnknownOrg`, or `false` when the org has no such CA.
    fn delete_ca(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError>;
}

/// CRLs held per CA.
pub trait CrlStore {
    /// Holds `der` as the CRL of the org's CA `ca_id`; `CrlOlder` when the CRL held was issued
    /// later (a CRL of the same `thisUpdate` replaces it). `audit` is the operator's upload, in
    /// the same transaction; a CRL fetched from the CA's `crl_url` (`None`) changes nothing an
    /// operator did, and has no audit event.
    fn set_crl(
        &self,
        org: &OrgId,
        ca_id: &str,
        der: &[u8],
        info: &CrlInfo,
        now: OffsetDateTime,
        audit: Option<&Audit>,
    ) -> Result<(), StoreError>;

    /// The CRL held for the org's CA `ca_id`, DER; `None` when there is none.
    fn crl(&self, org: &OrgId, ca_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Server certificates, the active one, and what the registry serves.
pub trait ServerCertStore {
    /// Registers a server certificate and its key (sealed), not active. `UnknownOrg`, or
    /// `DuplicateCertificate` when the org already has this leaf.
    fn insert_server_cert(
        &self,
        org: &OrgId,
        new: &NewServerCert,
        audit: &Audit,
    ) -> Result<ServerCertRecord, StoreError>;

    /// `UnknownOrg`, or `None` when the org has no such certificate.
    fn server_cert(&self, org: &OrgId, id: &str) -> Result<Option<ServerCertRecord>, StoreError>;

    /// The org's server certificates in registration order.
    fn list_server_certs(
        &self,
        org: &OrgId,
        filter: &ListFilter<bool>,
        page: &PageRequest,
    ) -> Result<Page<ServerCertRecord>, StoreError>;

    /// The decrypted key of one of the org's server certificates; `None` when there is no such
    /// certificate.
    fn server_cert_key(
        &self,
        org: &OrgId,
        id: &str,
    ) -> Result<Option<PrivateKeyDer<'static>>, StoreError>;

    /// `UnknownOrg`; `CertificateActive` when it is the org's active one; `false` when the org
    /// has no such certificate.
    fn delete_server_cert(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError>;

    /// The id of the org's active server certificate (`None`: the platform default);
    /// `UnknownOrg`.
    fn active_server_cert_id(&self, org: &OrgId) -> Result<Option<String>, StoreError>;

    /// Makes `id` the org's active server certificate, or the platform default when `None`.
    /// `UnknownOrg`; `false` when the org has no such certificate (nothing changes).
    fn set_active_server_cert(
        &self,
        org: &OrgId,
        id: Option<&str>,
        audit: &Audit,
    ) -> Result<bool, StoreError>;

    /// `None` when the org does not exist.
    fn org_state(&self, org: &OrgId) -> Result<Option<OrgState>, StoreError>;
}

/// Signing certificates (the keys tokens are signed with).
pub trait SigningCertStore {
    /// Registers a signing certificate and its key (sealed); see [`insert_signing_cert`].
    /// `UnknownOrg`, or `DuplicateCertificate`.
    fn insert_signing_cert(
        &self,
        org: &OrgId,
        new: &NewSigningCert,
        make_default: bool,
        audit: &Audit,
    ) -> Result<SigningCertRecord, StoreError>;

    /// One of the org's signing certificates; `None` when there is no such certificate.
    fn signing_cert(&self, org: &OrgId, id: &str) -> Result<Option<SigningCertRecord>, StoreError>;

    /// The org's signing certificates in registration order; `status` filters on being the
    /// default.
    fn list_signing_certs(
        &self,
        org: &OrgId,
        filter: &ListFilter<bool>,
        page: &PageRequest,
    ) -> Result<Page<SigningCertRecord>, StoreError>;

    /// The org's default signing certificate with its decrypted key; `None` when it has none.
    fn default_signing_key(
        &self,
        org: &OrgId,
    ) -> Result<Option<(SigningCertRecord, PrivateKeyDer<'static>)>, StoreError>;

    /// Makes `id` the org's default; `None` when the org has no such certificate.
    fn set_default_signing_cert(
        &self,
        org: &OrgId,
        id: &str,
        audit: &Audit,
    ) -> Result<Option<SigningCertRecord>, StoreError>;

    /// Deletes a signing certificate and revokes every token it signed, in one transaction;
    /// `SigningCertificateDefault` when it is the org's default.
    fn delete_signing_cert(
        &self,
        org: &OrgId,
        id: &str,
        audit: &Audit,
    ) -> Result<SigningCertDeleted, StoreError>;
}

/// Certificate signing requests and their approval.
pub trait CsrStore {
    fn insert_csr(&self, org: &OrgId, new: &NewCsr, audit: &Audit)
        -> Result<CsrRecord, StoreError>;

    /// One of the org's CSRs; `None` when there is no such CSR.
    fn csr(&self, org: &OrgId, id: &str) -> Result<Option<CsrRecord>, StoreError>;

    /// A CSR with its decrypted key; `None` when there is no such CSR.
    fn csr_with_key(
        &self,
        org: &OrgId,
        id: &str,
    ) -> Result<Option<(CsrRecord, PrivateKeyDer<'static>)>, StoreError>;

    /// The org's CSRs in creation order (the registration window applies to creation).
    fn list_csrs(
        &self,
        org: &OrgId,
        filter: &ListFilter<CsrStatus>,
        page: &PageRequest,
    ) -> Result<Page<CsrRecord>, StoreError>;

    /// Applies `transition` when the CSR's status is still `from`; `Ok(None)` when there is no
    /// such CSR, `CsrStatus` when its status moved on meanwhile.
    fn transition_csr(
        &self,
        org: &OrgId,
        id: &str,
        from: CsrStatus,
        transition: &CsrTransition,
        at: OffsetDateTime,
        audit: &Audit,
    ) -> Result<Option<CsrRecord>, StoreError>;

    /// `false` when the org has no such CSR. Its key goes with it; a server certificate it
    /// became stays.
    fn delete_csr(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError>;
}

/// Admin API tokens.
pub trait TokenStore {
    /// Records a token; `UnknownOrg`, or `NoSigningCertificate` when its signing certificate is
    /// not (or no longer) one of the org's.
    fn insert_token(
        &self,
        org: &OrgId,
        new: &NewToken,
        audit: &Audit,
    ) -> Result<TokenRecord, StoreError>;

    /// Any org's token by id (the bearer check: the JWT names it).
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// One of the org's tokens; `None` when it has no such token.
    fn org_token(&self, org: &OrgId, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// The org's tokens in creation order.
    fn list_tokens(&self, org: &OrgId, page: &PageRequest)
        -> Result<Page<TokenRecord>, StoreError>;

    /// Applies `patch`; `None` when the org has no such token, `TokenRevoked` when it is revoked.
    fn update_token(
        &self,
        org: &OrgId,
        id: &str,
        patch: &TokenPatch,
        audit: &Audit,
    ) -> Result<Option<TokenRecord>, StoreError>;
}

/// The device registry and what expires.
pub trait DeviceStore {
    /// Records a batch of authentications in one transaction: new (identity, certificate) pairs
    /// are added, known ones get their `last_seen`. Entries of orgs deleted meanwhile are
    /// skipped.
    fn record_devices(&self, node_id: &str, seen: &[DeviceSeen]) -> Result<(), StoreError>;

    /// The org's devices, by first sighting.
    fn list_devices(
        &self,
        org: &OrgId,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<DeviceRecord>, StoreError>;

    /// Every certificate of the org — CA, server, signing, and devices' from the registry —
    /// whose notAfter falls in `[from, until)`, soonest first.
    fn expiring(
        &self,
        org: &OrgId,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<Expiring>, StoreError>;
}

/// The blocklist.
pub trait BlocklistStore {
    fn insert_blocked(
        &self,
        org: &OrgId,
        new: &NewBlock,
        audit: &Audit,
    ) -> Result<BlockedDevice, StoreError>;

    fn list_blocked(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<BlockedDevice>, StoreError>;

    /// `false` when the org has no such entry.
    fn delete_blocked(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError>;
}

/// What the store asks of the grant policy above it (the `grants` module), inside its transactions:
/// it is given one when it is opened, so the policy is decided in one place and the store only
/// keeps rows and counts uses.
pub trait GrantRules: Send + Sync {
    /// The terms of a grant given (or renewed) at `granted_at`.
    fn terms(&self, granted_at: OffsetDateTime) -> GrantTerms;

    /// The status `grant` has at `now`, from its expiry and its uses.
    fn status(&self, grant: &GrantRecord, now: OffsetDateTime) -> GrantStatus;
}

/// Access grants: rows and atomic use counting, judged by the store's [`GrantRules`].
pub trait GrantStore {
    /// The clock grants are judged by (tests move a manual one).
    fn clock(&self) -> &Clock;

    /// Notified whenever a grant changes status.
    fn grant_changed(&self) -> Arc<Notify>;

    /// Every key the product holds for an org without a grant (a store written before grants)
    /// gets one, starting now.
    fn ensure_grants(&self) -> Result<usize, StoreError>;

    /// Evaluates the status of the grants of `org` (every org when `None`) and writes those that
    /// changed, suspending tokens on expiry. Returns the grants that changed, with their new
    /// status.
    fn refresh_grants(&self, org: Option<&OrgId>) -> Result<Vec<GrantRecord>, StoreError>;

    /// One of the org's grants.
    fn grant(&self, org: &OrgId, id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// The grant of the key `holder_id` names (a CA or signing certificate of the org).
    fn grant_of(&self, org: &OrgId, holder_id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// The org's grants in `warning` or `expired`: what the notifier tells about.
    fn grants_to_notify(&self, org: &OrgId) -> Result<Vec<GrantRecord>, StoreError>;

    /// The org's grants in grant order, optionally of one status.
    fn list_grants(
        &self,
        org: &OrgId,
        status: Option<GrantStatus>,
        page: &PageRequest,
    ) -> Result<Page<GrantRecord>, StoreError>;

    /// Spends one use of the grant on `holder_id`'s key, before the signature is made.
    /// `Ok(None)` when the key has no grant (the platform's own keys); `GrantExpired` when the
    /// grant is expired (by time or uses) or every use left is held by other nodes, and nothing
    /// is spent. Reaches the store's write path once per block of uses (see `grant_holds`).
    fn spend_use(&self, org: &OrgId, holder_id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// Writes the uses spent in this process, and gives back the reservations left: what a clean
    /// shutdown does, so they are not counted as spent once this node is gone.
    fn flush_grants(&self) -> Result<(), StoreError>;

    /// Opens a renewal challenge on the grant: `code_sha256` is the hash of the code sent, valid
    /// until `expires_at`. Replaces a pending one. `None` when the org has no such grant.
    fn open_challenge(
        &self,
        org: &OrgId,
        id: &str,
        code_sha256: &[u8],
        expires_at: OffsetDateTime,
        audit: &Audit,
    ) -> Result<Option<()>, StoreError>;

    /// Renews the grant when `code_sha256` answers its pending challenge (and `passphrase` is the
    /// imported key's, when it was imported): granted now, for the policy's age and uses, `uses`
    /// 0, status active (its suspended tokens stay suspended). `Ok(None)` when the org has no
    /// such grant.
    fn renew_grant(
        &self,
        org: &OrgId,
        id: &str,
        code_sha256: &[u8],
        passphrase: Option<&str>,
        audit: &Audit,
    ) -> Result<Option<Result<GrantRecord, RenewalRefused>>, StoreError>;
}

/// Audit events.
pub trait AuditStore {
    /// Records an action on `org` that changes nothing in the store (a device disconnected, a
    /// renewal code sent), in a transaction of its own. A change to stored data records its event
    /// through the method that makes it instead.
    fn record_action(
        &self,
        org: &OrgId,
        audit: &Audit,
        target: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The org's events, oldest first.
    fn list_audit_events(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError>;
}

/// Notification settings and what was sent.
pub trait NotificationStore {
    /// The org's settings; `None` when none were set.
    fn notification_settings(
        &self,
        org: &OrgId,
    ) -> Result<Option<NotificationSettings>, StoreError>;

    /// Replaces the org's settings.
    fn set_notification_settings(
        &self,
        org: &OrgId,
        settings: &NotificationSettings,
        now: OffsetDateTime,
        audit: &Audit,
    ) -> Result<(), StoreError>;

    /// The orgs that set where their notices go.
    fn orgs_with_notifications(&self) -> Result<Vec<OrgId>, StoreError>;

    /// True when `key` was sent on the UTC day of `on`; with `on` `None`, ever (within the 90
    /// days kept).
    fn notification_sent(
        &self,
        key: &NotificationKey,
        on: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError>;

    /// Records `key` as sent at `at`.
    fn record_notification(
        &self,
        key: &NotificationKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The active CAs whose CRL is past its nextUpdate at `now`, of `org` or of every org:
    /// (org, CA id, alias).
    fn stale_crls(
        &self,
        org: Option<&OrgId>,
        now: OffsetDateTime,
    ) -> Result<Vec<(OrgId, String, String)>, StoreError>;

    /// Certificates of every org expiring within 1, 7, 30 days of `now`, by kind.
    fn expiry_summary(&self, now: OffsetDateTime) -> Result<ExpirySummary, StoreError>;
}

/// The platform CA.
pub trait PlatformStore {
    /// The platform CA, created on first start.
    fn platform_ca(&self) -> Result<Option<Issuer>, StoreError>;

    /// Stores (or replaces) the platform CA; its key is sealed with the master key.
    fn set_platform_ca(&self, issuer: &Issuer) -> Result<(), StoreError>;

    /// Stores `issuer` as the platform CA unless one is stored already, and returns the one
    /// stored: of several nodes starting at once, the first creates it and the others load it.
    fn create_platform_ca(&self, issuer: &Issuer) -> Result<Issuer, StoreError>;

    /// The platform's default server certificate (chain, leaf first) and its decrypted key, when
    /// one was stored: every node serves the same one.
    fn default_server_cert(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, StoreError>;

    /// Stores (or replaces) the platform's default server certificate; its key sealed.
    fn set_default_server_cert(
        &self,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
    ) -> Result<(), StoreError>;

    /// The bootstrap admin token shared by every node: `candidate` is stored (sealed) unless a
    /// token is stored already; returns the one stored.
    fn shared_admin_token(&self, candidate: &str) -> Result<String, StoreError>;
}

/// The nodes serving from this store and their heartbeats (DESIGN §12).
pub trait NodeStore {
    /// Writes `node`'s heartbeat (inserted, or replacing its last one).
    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError>;

    /// Every node that ever wrote a heartbeat, by node id.
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Forgets every node but `node_id`: on SQLite, where one process is the one node, a node id
    /// of an earlier start (another host name or port) is not listed as a node that is down.
    fn forget_other_nodes(&self, node_id: &str) -> Result<(), StoreError>;

    /// Records `node_id` as the cluster's leader since `since` (it just took the leader lock).
    fn lead(&self, node_id: &str, since: OffsetDateTime) -> Result<(), StoreError>;

    /// The node that last took the lead, if any did.
    fn leader(&self) -> Result<Option<String>, StoreError>;

    /// Tells every other node `messages`, in order, in one round trip (PostgreSQL: sent at once,
    /// to the nodes listening then; SQLite: nobody else to tell).
    fn tell_nodes(&self, messages: &[NodeMessage]) -> Result<(), StoreError>;
}

/// Every node's live sessions, for the cluster-wide session list (DESIGN §12). A node writes its
/// own rows only; on SQLite the one node lists its sessions from memory and writes none.
pub trait LiveSessionStore {
    /// Node `node_id`'s sessions `opened` since its last write are added (one already there is
    /// left as it is), then those `closed` are removed, in one transaction.
    fn sessions_changed(
        &self,
        node_id: &str,
        opened: &[NodeSession],
        closed: &[u64],
    ) -> Result<(), StoreError>;

    /// Node `node_id`'s rows become `sessions` exactly (at its start: none; after news of its
    /// own sessions was dropped: all it holds).
    fn replace_sessions(&self, node_id: &str, sessions: &[NodeSession]) -> Result<(), StoreError>;

    /// The org's sessions on nodes other than `node_id` whose heartbeat is not older than
    /// `seen_since`, one page and one more row in `(connected_at, client_id)` order. `UnknownOrg`.
    fn other_nodes_sessions(
        &self,
        org: &OrgId,
        node_id: &str,
        seen_since: OffsetDateTime,
        page: &PageRequest,
    ) -> Result<Vec<NodeSession>, StoreError>;

    /// Forgets the rows of every node whose heartbeat is older than `seen_before`.
    fn forget_sessions_of_nodes_down(&self, seen_before: OffsetDateTime) -> Result<(), StoreError>;
}

/// TLS session ticket keys, shared by every node (DESIGN §12).
pub trait TicketKeyStore {
    /// The org's ticket keys of epochs `epoch - 1 ..= epoch + 1`, by epoch: those of `epoch` and
    /// `epoch + 1` created when missing (insert-if-absent: a key another node stored first is
    /// the one kept and returned), and every org's keys before `epoch - 1` forgotten. Reads only
    /// when both are already there. `UnknownOrg`.
    fn ticket_keys(&self, org: &OrgId, epoch: i64) -> Result<Vec<TicketKey>, StoreError>;
}
