//! The live registry: an immutable snapshot of every org (topic policy, active CAs, the built
//! `ServerConfig`) behind an `ArcSwap` that the hot path reads without locks, and the table of live
//! sessions, so that a change that invalidates a session closes it.
//!
//! Publishing swaps the snapshot first and scans the live sessions second, while a session
//! registers itself first and checks the snapshot second: whichever way they interleave, a session
//! authenticated by a CA that is gone is either refused or closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

use crate::codec::reason;
use crate::identity::OrgId;
use crate::refusal::Refusal;
use crate::revocation::ocsp::{self, OcspMode};
use crate::revocation::OrgRevocations;
use crate::store::{OrgRecord, OrgState, Store, TopicPolicy};
use crate::tls;

mod handshake;
pub mod ocsp_recheck;

/// Named here still for the session, which reads them with the registry's entries.
pub use crate::revocation::{Device, Revocation};
pub use handshake::{accept, examine, PeerIdentity};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot build the TLS configuration of org {org}: {reason}")]
    Tls { org: String, reason: String },
}

/// What the platform serves when an org has no certificate of its own for a name.
pub struct Platform {
    /// The platform messaging domain (`mqtts.domain`), lower case.
    pub domain: String,
    /// Serves `*.<domain>`.
    pub default_cert: Arc<CertifiedKey>,
    pub no_sni_org: Option<OrgId>,
    /// `revocation.on_stale_crl = "deny"`: a CRL past its nextUpdate refuses its CA's devices.
    pub deny_stale_crl: bool,
    /// `mqtts.ticket_rotation_hours`: how long each TLS ticket key seals tickets.
    pub ticket_rotation: std::time::Duration,
}

/// One CA certificate that currently authenticates devices of an org.
pub struct ActiveCa {
    pub id: String,
    /// DER of the subject name, compared with the issuer names of presented chains.
    pub subject_raw: Vec<u8>,
    pub der: rustls_pki_types::CertificateDer<'static>,
    /// What OCSP decides for its devices, asked after the handshake.
    pub ocsp_mode: OcspMode,
    /// Its responder; `None`: the one each leaf's AIA names.
    pub ocsp_url: Option<String>,
}

/// One org as the hot path sees it.
pub struct OrgEntry {
    pub org: OrgRecord,
    pub cas: Vec<ActiveCa>,
    /// `None` while the org has no active CA: no device can be verified, handshakes are refused.
    pub tls: Option<tls::OrgConfig>,
    /// Names of the org's active uploaded server certificate (custom domains).
    pub server_names: Vec<String>,
    /// The blocklist and what the CAs' CRLs revoke, as the verdict on a device reads them.
    revocations: OrgRevocations,
    /// The org's TLS ticket keys, carried from entry to entry while the org lives.
    tickets: Arc<tls::TicketKeys>,
    /// Unix times: the earliest notAfter of the active CAs, and of the active server certificate.
    ca_expiry: Option<i64>,
    server_expiry: Option<i64>,
}

impl OrgEntry {
    /// Why `device` may not be connected to this org now; `None` when it may.
    pub fn revocation(&self, device: &Device) -> Option<Revocation> {
        let ca_active = self.cas.iter().any(|ca| device.cas().any(|id| id == ca.id));
        self.revocations.verdict(ca_active, device)
    }
}

/// Every org, immutable; replaced whole on each change.
#[derive(Default)]
pub struct Snapshot {
    orgs: HashMap<String, Arc<OrgEntry>>,
}

impl Snapshot {
    /// Sets the expiry gauges: the earliest certificate expiry of each kind over every org.
    fn record_expiry(&self) {
        let earliest = |pick: fn(&OrgEntry) -> Option<i64>| {
            self.orgs.values().filter_map(|entry| pick(entry)).min()
        };
        for (kind, at) in [
            ("ca", earliest(|entry| entry.ca_expiry)),
            ("server", earliest(|entry| entry.server_expiry)),
        ] {
            if let Some(at) = at {
                metrics::gauge!(crate::metrics::CERT_EXPIRY, "kind" => kind).set(at as f64);
            }
        }
    }

    pub fn org(&self, id: &str) -> Option<&Arc<OrgEntry>> {
        self.orgs.get(id)
    }

    pub fn len(&self) -> usize {
        self.orgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
    }
}

pub struct Registry {
    store: Arc<dyn Store>,
    platform: Platform,
    snapshot: ArcSwap<Snapshot>,
    sessions: Arc<SessionTable>,
    events: crate::events::Events,
    /// Serialises publishers (read, modify, swap); readers never take it.
    publish: Mutex<()>,
}

impl Registry {
    /// Builds the first snapshot from every org in the store.
    pub fn load(store: Arc<dyn Store>, platform: Platform) -> Result<Registry, RegistryError> {
        // Each org's ticket keys load on its first handshake (not here: one store write per org
        // would hold up a start).
        let mut orgs = HashMap::new();
        for id in store.org_ids()? {
            if let Some(state) = store.org_state(&id)? {
                let tickets = ticket_keys(&store, &platform, &id);
                orgs.insert(
                    id.as_str().to_owned(),
                    Arc::new(build_entry(state, &platform, tickets)?),
                );
            }
        }
        let snapshot = Snapshot { orgs };
        snapshot.record_expiry();
        Ok(Registry {
            store,
            platform,
            snapshot: ArcSwap::from_pointee(snapshot),
            sessions: Arc::new(SessionTable::default()),
            events: crate::events::Events::default(),
            publish: Mutex::new(()),
        })
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    pub fn sessions(&self) -> &Arc<SessionTable> {
        &self.sessions
    }

    /// Connects, disconnects and refusals, for the event stream.
    pub fn events(&self) -> &crate::events::Events {
        &self.events
    }

    /// Reloads `org` from the store and publishes it: new handshakes see the change at once, and
    /// live sessions it invalidates (CA deactivated or deleted, org deleted, a topic policy that
    /// refuses what they hold) are closed; the others follow a new topic policy.
    pub fn publish_org(&self, org: &OrgId) -> Result<(), RegistryError> {
        let _publishing = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match self.store.org_state(org)? {
            Some(state) => {
                let tickets = self.tickets_of(&self.snapshot.load(), org);
                Some(Arc::new(build_entry(state, &self.platform, tickets)?))
            }
            None => None,
        };
        let policy_before = self.policy_of(&self.snapshot.load(), org);
        let mut orgs = self.snapshot.load().orgs.clone();
        match &entry {
            Some(entry) => orgs.insert(org.as_str().to_owned(), entry.clone()),
            None => orgs.remove(org.as_str()),
        };
        let snapshot = Arc::new(Snapshot { orgs });
        snapshot.record_expiry();
        self.snapshot.store(snapshot);
        self.sessions.close_invalidated(org, entry.as_deref());
        self.follow_policy(org, policy_before, entry.as_deref());
        if entry.is_none() {
            self.events.forget(org.as_str());
        }
        tracing::info!(org = %org, present = entry.is_some(), "registry published");
        Ok(())
    }
}

/// What a change to an org would do, asked before it is made (`?dry_run=true`).
pub struct Preview {
    /// The org as the change would leave it (`None`: gone), as handshakes would see it.
    pub entry: Option<Arc<OrgEntry>>,
    /// The client ids of this node's live sessions it would close.
    pub closes: Vec<String>,
}

impl Registry {
    /// What publishing `state` for `org` (the org as a change would leave it; `None` when the
    /// change deletes it) would do, without publishing: the same entry and the same sessions as
    /// [`Registry::publish_org`] after the change.
    pub fn preview(&self, org: &OrgId, state: Option<OrgState>) -> Result<Preview, RegistryError> {
        let entry = match state {
            Some(state) => {
                let tickets = self.tickets_of(&self.snapshot.load(), org);
                Some(Arc::new(build_entry(state, &self.platform, tickets)?))
            }
            None => None,
        };
        let closes = self
            .sessions
            .invalidated(org, entry.as_deref())
            .into_iter()
            .map(|(client_id, _, _)| client_id)
            .collect();
        Ok(Preview { entry, closes })
    }

    /// Reloads every org from the store and publishes them at once, closing the live sessions
    /// the reload invalidates (an org gone, a CA deactivated, a device blocked): what a node does
    /// when it may have missed other nodes' changes (DESIGN §12). On a store error the snapshot
    /// is left as it was.
    pub fn reload_all(&self) -> Result<(), RegistryError> {
        let _publishing = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot.load_full();
        let mut orgs = HashMap::new();
        for id in self.store.org_ids()? {
            if let Some(state) = self.store.org_state(&id)? {
                let tickets = self.tickets_of(&old, &id);
                orgs.insert(
                    id.as_str().to_owned(),
                    Arc::new(build_entry(state, &self.platform, tickets)?),
                );
            }
        }
        let snapshot = Arc::new(Snapshot { orgs });
        snapshot.record_expiry();
        self.snapshot.store(snapshot.clone());
        let mut touched: Vec<&String> = old.orgs.keys().chain(snapshot.orgs.keys()).collect();
        touched.sort();
        touched.dedup();
        for id in touched {
            if let Ok(org) = OrgId::parse(id) {
                let entry = snapshot.orgs.get(id).map(|e| &**e);
                self.sessions.close_invalidated(&org, entry);
                self.follow_policy(&org, self.policy_of(&old, &org), entry);
            }
        }
        tracing::info!(orgs = snapshot.orgs.len(), "registry reloaded");
        Ok(())
    }
}

impl Registry {
    fn policy_of(&self, snapshot: &Snapshot, org: &OrgId) -> Option<TopicPolicy> {
        snapshot
            .org(org.as_str())
            .map(|entry| entry.org.topic_policy)
    }

    /// After `org` was published as `entry`: when its topic policy changed from `before`, its
    /// live sessions follow the new one (those that hold something it refuses were closed).
    fn follow_policy(&self, org: &OrgId, before: Option<TopicPolicy>, entry: Option<&OrgEntry>) {
        if let (Some(before), Some(entry)) = (before, entry) {
            if before != entry.org.topic_policy {
                self.sessions.follow(org, entry.org.topic_policy);
            }
        }
    }

    /// The ticket keys `org` has in `snapshot`, or new ones loaded now (a new org's first
    /// devices resume at once, on this node and on the others). Off the runtime's workers.
    fn tickets_of(&self, snapshot: &Snapshot, org: &OrgId) -> Arc<tls::TicketKeys> {
        match snapshot.org(org.as_str()) {
            Some(entry) => entry.tickets.clone(),
            None => {
                let tickets = ticket_keys(&self.store, &self.platform, org);
                tickets.load();
                tickets
            }
        }
    }
}

/// An org's ticket keys, read from the store (DESIGN §12), not yet loaded.
fn ticket_keys(store: &Arc<dyn Store>, platform: &Platform, org: &OrgId) -> Arc<tls::TicketKeys> {
    let (store, org) = (store.clone(), org.clone());
    tls::TicketKeys::new(platform.ticket_rotation, move |epoch| {
        let keys = store.ticket_keys(&org, epoch).map_err(|e| e.to_string())?;
        Ok(keys
            .into_iter()
            .map(|key| (key.epoch, key.secret))
            .collect())
    })
}

/// The CRL fetcher publishes what it takes in through this, without naming the registry.
impl crate::revocation::crl::Publish for Registry {
    fn publish_org(&self, org: &OrgId) -> Result<(), crate::revocation::crl::PublishError> {
        Registry::publish_org(self, org).map_err(Into::into)
    }
}

fn build_entry(
    state: OrgState,
    platform: &Platform,
    tickets: Arc<tls::TicketKeys>,
) -> Result<OrgEntry, RegistryError> {
    let org_name = state.org.id.as_str().to_owned();
    let tls_error = |reason: String| RegistryError::Tls {
        org: org_name.clone(),
        reason,
    };
    let mut cas = Vec::with_capacity(state.active_cas.len());
    for ca in &state.active_cas {
        let subject_raw = tls::subject_raw(&ca.der).map_err(|e| tls_error(e.to_string()))?;
        cas.push(ActiveCa {
            id: ca.id.clone(),
            subject_raw,
            der: ca.der.clone(),
            ocsp_mode: ca.ocsp_mode,
            ocsp_url: ca.ocsp_url.clone(),
        });
    }
    let ca_expiry = state
        .active_cas
        .iter()
        .map(|ca| ca.info.not_after.unix_timestamp())
        .min();
    let server_expiry = state
        .active_server_cert
        .as_ref()
        .map(|(record, _)| record.info.not_after.unix_timestamp());
    let active = match state.active_server_cert {
        Some((record, key)) => {
            let certified = tls::certified_key(record.chain.clone(), key)
                .map_err(|e| tls_error(e.to_string()))?;
            Some((certified, record.info.dns_names.clone()))
        }
        None => None,
    };
    let server_names = active
        .as_ref()
        .map(|(_, names)| names.clone())
        .unwrap_or_default();
    let mut crl_infos = Vec::with_capacity(state.crls.len());
    let mut crls = Vec::with_capacity(state.crls.len());
    for (ca_id, der) in state.crls {
        let info = crate::pki::crl_info(&der).map_err(|e| tls_error(e.to_string()))?;
        crl_infos.push((ca_id, info));
        crls.push(rustls_pki_types::CertificateRevocationListDer::from(der));
    }
    let revocations = OrgRevocations::new(&state.blocked, crl_infos, platform.deny_stale_crl);
    let tls = if cas.is_empty() {
        None
    } else {
        Some(
            tls::org_server_config(tls::OrgTls {
                cas: &cas.iter().map(|ca| &ca.der).collect::<Vec<_>>(),
                crls,
                active,
                default_cert: platform.default_cert.clone(),
                deny_stale_crl: platform.deny_stale_crl,
                tickets: &tickets,
            })
            .map_err(|e| tls_error(e.to_string()))?,
        )
    };
    Ok(OrgEntry {
        org: state.org,
        cas,
        tls,
        server_names,
        revocations,
        tickets,
        ca_expiry,
        server_expiry,
    })
}

/// Live sessions, so that a registry change can close the ones it invalidates, and one slot per
/// client id, so that a client id has one session at a time.
#[derive(Default)]
pub struct SessionTable {
    next_id: AtomicU64,
    live: DashMap<u64, LiveSession>,
    clients: DashMap<String, Arc<ClientSlot>>,
}

/// Who holds a client id. A session holds it from CONNECT until its broker link is closed (and
/// its will handed over): rumqttd's router drops an older connection of the same client id on its
/// own, without a word to it, so the front-end ends the older session first and opens the newer
/// link only then.
#[derive(Default)]
struct ClientSlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the holder when a new session takes the client id over.
    holder: Mutex<Option<Arc<Notify>>>,
}

/// A client id held by one session; dropping it lets the next session of that client id in.
pub struct ClientIdGuard {
    table: Arc<SessionTable>,
    client_id: String,
    slot: Option<Arc<ClientSlot>>,
    taken_over: Arc<Notify>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl ClientIdGuard {
    /// Resolves once a newer session of the same client id wants it.
    pub async fn taken_over(&self) {
        self.taken_over.notified().await
    }
}

impl Drop for ClientIdGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut holder = slot.holder.lock().unwrap_or_else(|e| e.into_inner());
            if holder
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, &self.taken_over))
            {
                *holder = None;
            }
            drop(holder);
            drop(slot);
            // Only the map still refers to an idle slot: forget it.
            self.table
                .clients
                .remove_if(&self.client_id, |_, slot| Arc::strong_count(slot) == 1);
        }
    }
}

/// What the sessions list shows of a live session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub client_id: String,
    pub device: Device,
    /// 4 (3.1.1) or 5.
    pub protocol: u8,
    pub peer: Option<SocketAddr>,
    pub connected_at: time::OffsetDateTime,
}

struct LiveSession {
    org: OrgId,
    info: SessionInfo,
    closer: Arc<Closer>,
    /// Its admission, told to the other nodes, came back to this node (see `crate::cluster`):
    /// an admission of its client id heard after that is newer, and takes it over.
    heard: AtomicBool,
    /// Its certificate, when its CA asked for OCSP at connect time.
    ocsp: Option<Arc<ocsp::Subject>>,
}

/// A live session whose certificate OCSP is asked about again ([`ocsp_recheck`]).
pub struct OcspChecked {
    pub org: OrgId,
    pub ca_id: String,
    pub subject: Arc<ocsp::Subject>,
    closer: Arc<Closer>,
}

impl OcspChecked {
    /// Ends the session: its certificate is revoked (DISCONNECT 0x87, not authorized).
    pub fn revoke(&self) {
        self.closer.close(reason::NOT_AUTHORIZED);
    }
}

/// Tells a session to end, and with which DISCONNECT reason code, or to follow its org's new
/// topic policy; and holds what the session told of the policies it could not go on under.
#[derive(Default)]
struct Closer {
    notify: Notify,
    /// The DISCONNECT reason code once told to end (0: not told).
    code: AtomicU8,
    /// The [`policy_bit`] of a topic policy to follow (0: none).
    policy: AtomicU8,
    /// The [`policy_bit`]s of the topic policies under which the session could not go on (a
    /// filter or its will refused or routed elsewhere), as it last said.
    refused_by: AtomicU8,
}

impl Closer {
    fn close(&self, code: u8) {
        self.code.store(code, Ordering::Relaxed);
        // notify_one stores a permit, so a session not yet waiting still sees it.
        self.notify.notify_one();
    }

    fn follow(&self, policy: TopicPolicy) {
        self.policy.store(policy_bit(policy), Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn refuses(&self, policy: TopicPolicy) -> bool {
        self.refused_by.load(Ordering::Relaxed) & policy_bit(policy) != 0
    }
}

/// A topic policy's bit in [`Closer`].
fn policy_bit(policy: TopicPolicy) -> u8 {
    1 << policy.index()
}

/// What a live session is told by a change or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// End, telling an MQTT 5 client this DISCONNECT reason code.
    Close(u8),
    /// Follow the org's new topic policy, or end if it holds something the policy refuses.
    Follow(TopicPolicy),
}

/// Held by a session while it lives; dropping it unregisters the session.
pub struct SessionGuard {
    table: Arc<SessionTable>,
    id: u64,
    closer: Arc<Closer>,
}

impl SessionGuard {
    /// The session's number in this node's table.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves once a change (or an operator) ends this session or changes its org's topic
    /// policy. An end outranks a policy.
    pub async fn signalled(&self) -> Signal {
        loop {
            self.closer.notify.notified().await;
            let code = self.closer.code.load(Ordering::Relaxed);
            if code != 0 {
                return Signal::Close(code);
            }
            let bit = self.closer.policy.swap(0, Ordering::Relaxed);
            if let Some(policy) = TopicPolicy::ALL.into_iter().find(|p| policy_bit(*p) == bit) {
                return Signal::Follow(policy);
            }
        }
    }

    /// Says under which topic policies the session could not go on (`refuses`), for the dry run
    /// of a policy change and for the change itself, which closes those sessions first.
    pub fn refused_by(&self, refuses: impl Fn(TopicPolicy) -> bool) {
        let bits = TopicPolicy::ALL
            .into_iter()
            .filter(|policy| refuses(*policy))
            .fold(0, |bits, policy| bits | policy_bit(policy));
        self.closer.refused_by.store(bits, Ordering::Relaxed);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.table.live.remove(&self.id);
    }
}

impl SessionTable {
    /// Registers a session of `org`, with its certificate when OCSP is to be asked about it again.
    /// Register first, then check the snapshot (see the module doc).
    pub fn register(
        self: &Arc<Self>,
        org: OrgId,
        info: SessionInfo,
        ocsp: Option<Arc<ocsp::Subject>>,
    ) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let closer = Arc::new(Closer::default());
        self.live.insert(
            id,
            LiveSession {
                org,
                info,
                closer: closer.clone(),
                ocsp,
                heard: AtomicBool::new(false),
            },
        );
        SessionGuard {
            table: self.clone(),
            id,
            closer,
        }
    }

    /// Takes `client_id` for a new session: a live session holding it is told to end, and this
    /// waits until it has (at most `wait`). `None` when it did not end in time.
    pub async fn claim(
        self: &Arc<Self>,
        client_id: &str,
        wait: std::time::Duration,
    ) -> Option<ClientIdGuard> {
        let slot = self
            .clients
            .entry(client_id.to_owned())
            .or_default()
            .clone();
        if let Some(holder) = slot
            .holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            holder.notify_one();
        }
        let lock = tokio::time::timeout(wait, slot.lock.clone().lock_owned())
            .await
            .ok()?;
        let taken_over = Arc::new(Notify::new());
        *slot.holder.lock().unwrap_or_else(|e| e.into_inner()) = Some(taken_over.clone());
        Some(ClientIdGuard {
            table: self.clone(),
            client_id: client_id.to_owned(),
            slot: Some(slot),
            taken_over,
            _lock: lock,
        })
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Live session `id`: its org and what it is.
    pub fn get(&self, id: u64) -> Option<(OrgId, SessionInfo)> {
        self.live.get(&id).map(|s| (s.org.clone(), s.info.clone()))
    }

    /// The live sessions of `org` (of every org with `None`), each with its number and org, in
    /// no particular order.
    pub fn list(&self, org: Option<&OrgId>) -> Vec<(u64, OrgId, SessionInfo)> {
        self.live
            .iter()
            .filter(|s| org.is_none_or(|org| &s.org == org))
            .map(|s| (*s.key(), s.org.clone(), s.info.clone()))
            .collect()
    }

    /// The live sessions whose certificate OCSP was asked about at connect time.
    pub fn ocsp_checked(&self) -> Vec<OcspChecked> {
        self.live
            .iter()
            .filter_map(|s| {
                Some(OcspChecked {
                    org: s.org.clone(),
                    ca_id: s.info.device.ca_id.clone(),
                    subject: s.ocsp.clone()?,
                    closer: s.closer.clone(),
                })
            })
            .collect()
    }

    /// Ends the live session of `org` holding `client_id` (DISCONNECT 0x98, administrative
    /// action); `false` when there is none.
    pub fn disconnect(&self, org: &OrgId, client_id: &str) -> bool {
        let mut found = false;
        for session in self.live.iter() {
            if &session.org == org && session.info.client_id == client_id {
                session.closer.close(reason::ADMINISTRATIVE_ACTION);
                found = true;
            }
        }
        found
    }

    /// The admission of session `id` came back to this node (or, with `None`, every live
    /// session's may have been missed: they are all older than what comes next).
    pub fn heard(&self, id: Option<u64>) {
        for session in self.live.iter() {
            if id.is_none_or(|id| *session.key() == id) {
                session.heard.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Ends, as taken over (DISCONNECT 0x8E), the session of `org` holding `client_id` whose own
    /// admission was heard before this newer one from another node; `false` when there is none.
    pub fn take_over(&self, org: &OrgId, client_id: &str) -> bool {
        let mut found = false;
        for session in self.live.iter() {
            if &session.org == org
                && session.info.client_id == client_id
                && session.heard.load(Ordering::Relaxed)
            {
                session.closer.close(reason::SESSION_TAKEN_OVER);
                found = true;
            }
        }
        found
    }

    /// This node's live sessions of `org` that `entry` (`None`: the org gone) no longer admits:
    /// their client ids, closers and reasons. What a change closes, and what its dry run lists.
    fn invalidated(
        &self,
        org: &OrgId,
        entry: Option<&OrgEntry>,
    ) -> Vec<(String, Arc<Closer>, &'static str)> {
        self.live
            .iter()
            .filter(|session| &session.org == org)
            .filter_map(|session| {
                let why = match entry {
                    None => Some(Refusal::OrgDeleted.as_str()),
                    Some(entry) => entry
                        .revocation(&session.info.device)
                        .map(Revocation::reason)
                        .or_else(|| {
                            let policy = entry.org.topic_policy;
                            session
                                .closer
                                .refuses(policy)
                                .then_some(Refusal::TopicPolicy.as_str())
                        }),
                }?;
                Some((session.info.client_id.clone(), session.closer.clone(), why))
            })
            .collect()
    }

    /// Tells this node's live sessions of `org` to follow its topic policy `policy`.
    fn follow(&self, org: &OrgId, policy: TopicPolicy) {
        for session in self.live.iter().filter(|session| &session.org == org) {
            session.closer.follow(policy);
        }
    }

    /// Closes what [`SessionTable::invalidated`] lists, but for what a topic policy change
    /// closes: those sessions end themselves when told of the policy ([`Signal::Follow`]), which
    /// judges them again and keeps a will the policy refuses from being published.
    fn close_invalidated(&self, org: &OrgId, entry: Option<&OrgEntry>) {
        let mut closed: HashMap<&'static str, u64> = HashMap::new();
        for (_, closer, why) in self.invalidated(org, entry) {
            if why == Refusal::TopicPolicy.as_str() {
                continue;
            }
            closer.close(reason::NOT_AUTHORIZED);
            *closed.entry(why).or_default() += 1;
        }
        for (why, count) in closed {
            metrics::counter!(crate::metrics::SESSIONS_REVOKED, "reason" => why).increment(count);
            tracing::info!(org = %org, closed = count, reason = why, "live sessions closed");
        }
    }
}
