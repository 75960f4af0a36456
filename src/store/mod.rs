//! The store: what the product keeps, behind a narrow interface ([`Store`], by area:
//! [`OrgStore`], [`CaStore`], …; see `interface` for why it is synchronous and shared as
//! `Arc<dyn Store>`), implemented once ([`SqlStore`]) over two database engines: SQLite (WAL) in
//! `<data_dir>/portcullis.db`, the embedded default, or PostgreSQL (`store.url`), which several
//! nodes share. One transaction per admin change; private keys encrypted at rest with the master
//! key.
//!
//! # Concurrency
//!
//! Every method is short and synchronous and runs one transaction of its backend (writes
//! serialised, see `sql::Backend::write`). The hot path never calls the store (it reads the
//! registry's snapshots); every caller runs it on `tokio::task::spawn_blocking` or a thread of
//! its own — never on a runtime worker, where PostgreSQL's blocking client would panic.
//!
//! # Layout
//!
//! - `interface`: the traits callers name instead of a concrete store.
//! - `sql`: the seam between the queries and an engine: `sql::Sql`, `sql::Backend`.
//! - `sqlite/`, `postgres/`: the two engines, each with its connection handling, schema and
//!   migrations; nothing else of the store is engine-specific.
//! - `crypto`: master key, AES-256-GCM sealing of private keys.
//! - `page`: opaque, stable cursors over `(registered_at, id)`.
//! - `orgs`, `ca_certificates`, `server_certificates`, `signing_certificates`, `tokens`, `audit`,
//!   `platform`, `nodes`, `ticket_keys`, …: the queries, one file per table, each implementing its area's
//!   trait for [`SqlStore`]; `cert_info`: the certificate columns the certificate tables share;
//!   `grant_holds`: each node's share of the grants' uses, and the rule that keeps them exact.
//! - `postgres::listen`: the node's `LISTEN`ing connection, how other nodes' changes reach it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::identity::OrgId;
use crate::pki::CertInfo;

mod audit;
mod blocked;
mod ca_certificates;
mod cert_info;
mod crls;
pub mod crypto;
mod csrs;
mod devices;
mod filter;
mod grant_holds;
mod grants;
mod interface;
mod live_sessions;
mod nodes;
mod notifications;
mod orgs;
pub mod page;
mod platform;
pub mod postgres;
mod server_certificates;
mod signing_certificates;
pub(crate) mod sql;
pub mod sqlite;
mod ticket_keys;
mod tokens;

pub use audit::{Audit, AuditEvent};
pub use blocked::{BlockTarget, BlockedDevice, NewBlock};
pub use crypto::MasterKey;
pub use csrs::{CsrRecord, CsrStatus, CsrTransition, NewCsr, SignatureRequest};
pub use devices::{DeviceFilter, DeviceRecord, DeviceSeen, Expiring};
pub use filter::ListFilter;
pub use grants::{
    GrantHolder, GrantRecord, GrantStatus, GrantTerms, KeyPassphrase, RenewalRefused,
};
pub use interface::{
    AuditStore, BlocklistStore, CaStore, CrlStore, CsrStore, DeviceStore, GrantRules, GrantStore,
    LiveSessionStore, NodeStore, NotificationStore, OrgStore, PlatformStore, ServerCertStore,
    SigningCertStore, Store, TicketKeyStore, TokenStore,
};
pub use live_sessions::NodeSession;
pub use nodes::{NodeMessage, NodeNews, NodeRecord};
pub use notifications::{ExpirySummary, NotificationKey, NotificationSettings};
pub use page::{BadCursor, Cursor, Page, PageRequest};
pub use signing_certificates::{NewSigningCert, SigningCertDeleted, SigningCertRecord};
pub use sql::DbError;
pub use sqlite::DB_FILE;
pub use ticket_keys::TicketKey;
pub use tokens::{NewToken, Role, TokenPatch, TokenRecord, TokenStatus};

use sql::{Backend, OptionalExtension, Sql, SqlExt};

/// The store on SQLite in the data directory: [`SqlStore::open`].
pub type SqliteStore = SqlStore;
/// The store on PostgreSQL: [`SqlStore::connect`].
pub type PgStore = SqlStore;
/// Name of the environment variable that sets the admin token.
pub const ADMIN_TOKEN_ENV: &str = "PORTCULLIS_ADMIN_TOKEN";
/// File name of the generated admin token inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] DbError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The org named by an org-scoped call does not exist.
    #[error("no such organisation")]
    UnknownOrg,
    #[error("an organisation with this id already exists")]
    OrgExists,
    /// The same certificate (by SHA-256 fingerprint) is already registered for the org.
    #[error("this certificate is already registered for the organisation")]
    DuplicateCertificate,
    /// The server certificate is the org's active one and cannot be deleted.
    #[error("the certificate is the organisation's active server certificate")]
    CertificateActive,
    /// The signing certificate is the org's default and cannot be deleted.
    #[error("the certificate is the organisation's default signing certificate")]
    SigningCertificateDefault,
    /// The org has no default signing certificate: no token can be issued.
    #[error("the organisation has no signing certificate")]
    NoSigningCertificate,
    /// The CRL held for the CA was issued after the one offered.
    #[error("a newer CRL is held for this CA")]
    CrlOlder,
    /// A revoked token changes no more.
    #[error("the token is revoked")]
    TokenRevoked,
    /// The CSR is not in the status the change needs (it holds the current one).
    #[error("the CSR is {}", .0.as_str())]
    CsrStatus(CsrStatus),
    /// The access grant on the key is expired (by time or uses): nothing is signed with it.
    #[error("the access grant on this key is expired")]
    GrantExpired,
}

impl StoreError {
    /// True when the database could not be reached (PostgreSQL down or unreachable): the change
    /// was not made, and asking again later may succeed (the admin API answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(DbError::Unavailable(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: OrgId,
    pub name: String,
    pub topic_policy: TopicPolicy,
    /// Roles whose signature requests wait for an approver.
    pub approval_required_roles: Vec<Role>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct CaRecord {
    pub id: String,
    pub org: OrgId,
    pub info: CertInfo,
    pub der: CertificateDer<'static>,
    pub alias: String,
    pub description: String,
    pub active: bool,
    /// Imported with its private key: it can issue server certificates.
    pub has_key: bool,
    pub registered_at: OffsetDateTime,
    /// The access grant on its key, when it has one.
    pub grant: Option<GrantRecord>,
    /// Where its CRL is fetched from (`None`: only uploaded).
    pub crl_url: Option<String>,
    pub ocsp_mode: OcspMode,
    /// The OCSP responder asked (`None`: the one each leaf's AIA names).
    pub ocsp_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerCertRecord {
    pub id: String,
    pub org: OrgId,
    /// Of the leaf.
    pub info: CertInfo,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub alias: String,
    pub active: bool,
    pub registered_at: OffsetDateTime,
}

/// What the registry serves for one org.
pub struct OrgState {
    pub org: OrgRecord,
    pub active_cas: Vec<CaRecord>,
    pub active_server_cert: Option<(ServerCertRecord, PrivateKeyDer<'static>)>,
    pub blocked: Vec<BlockedDevice>,
    /// The CRLs of the active CAs: (CA id, DER).
    pub crls: Vec<(String, Vec<u8>)>,
}

/// A new organisation.
#[derive(Debug, Clone)]
pub struct NewOrg {
    pub id: OrgId,
    pub name: String,
    pub topic_policy: TopicPolicy,
    pub created_at: OffsetDateTime,
}

/// A change to an organisation; `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct OrgPatch {
    pub name: Option<String>,
    pub topic_policy: Option<TopicPolicy>,
    pub approval_required_roles: Option<Vec<Role>>,
}

/// A CA certificate that passed `pki::check_ca`, with its key when it was imported with one.
#[derive(Debug)]
pub struct NewCa {
    pub der: CertificateDer<'static>,
    pub info: CertInfo,
    pub description: String,
    pub key: Option<PrivateKeyDer<'static>>,
    /// The passphrase of the PKCS#12 file the key came from (renewing its grant asks for it).
    pub key_passphrase: Option<KeyPassphrase>,
    pub registered_at: OffsetDateTime,
}

/// A change to a CA certificate; `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct CaPatch {
    pub active: Option<bool>,
    pub alias: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` clears the URL.
    pub crl_url: Option<Option<String>>,
    pub ocsp_mode: Option<OcspMode>,
    /// `Some(None)` clears the URL.
    pub ocsp_url: Option<Option<String>>,
}

/// Filters of the CA list; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct CaFilter {
    pub grant_status: Option<GrantStatus>,
    /// Case-insensitive substring of the subject or the description.
    pub q: Option<String>,
    /// Case-insensitive substring of the alias.
    pub alias: Option<String>,
    pub active: Option<bool>,
    /// Strictly after.
    pub registered_after: Option<OffsetDateTime>,
    /// Strictly before.
    pub registered_before: Option<OffsetDateTime>,
}

/// A server certificate chain and key that passed `pki::check_server_cert`.
pub struct NewServerCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Of the leaf.
    pub info: CertInfo,
    pub registered_at: OffsetDateTime,
}

/// The one implementation of [`Store`], over a database engine ([`sqlite`] or [`postgres`]).
pub struct SqlStore {
    db: Box<dyn Backend>,
    master_key: MasterKey,
    /// What grants are given and when they run out (decided above the store); the clock they
    /// are judged by.
    grant_rules: Arc<dyn GrantRules>,
    clock: Clock,
    /// This node's shares of grants, by grant id: uses reserved in the store and spent from
    /// memory (see `grant_holds`).
    grant_shares: Mutex<HashMap<String, grants::Share>>,
    /// Woken when a grant changes status, so the notifier tells at once.
    grant_changed: Arc<Notify>,
}

impl SqlStore {
    /// The store over a migrated database: refuses a master key that does not open it, and counts
    /// the grant uses held by nodes that are gone as spent.
    fn new(
        db: Box<dyn Backend>,
        master_key: MasterKey,
        grant_rules: Arc<dyn GrantRules>,
        clock: Clock,
    ) -> Result<SqlStore, StoreError> {
        {
            let tx = db.write()?;
            check_master_key(&*tx, &master_key)?;
            grant_holds::write_off_dead(&*tx, &db.live_holders())?;
            tx.commit()?;
        }
        Ok(SqlStore {
            db,
            master_key,
            grant_rules,
            clock,
            grant_shares: Mutex::new(HashMap::new()),
            grant_changed: Arc::new(Notify::new()),
        })
    }

    /// A read.
    fn conn(&self) -> Result<Box<dyn Sql + '_>, StoreError> {
        Ok(self.db.read()?)
    }

    /// A write transaction.
    fn begin(&self) -> Result<Box<dyn Sql + '_>, StoreError> {
        Ok(self.db.write()?)
    }

    /// A write transaction on rows only this node writes (see [`sql::Backend::write_own`]).
    fn begin_own(&self) -> Result<Box<dyn Sql + '_>, StoreError> {
        Ok(self.db.write_own()?)
    }
}

/// The store the configuration names: SQLite in `data_dir` when `postgres` is `None`, else that
/// PostgreSQL database. The master key comes from `PORTCULLIS_MASTER_KEY` or
/// `<data_dir>/master.key` either way. Blocks: call it off the runtime's workers.
pub fn open_configured(
    data_dir: &Path,
    postgres: Option<&postgres::Target>,
    grant_rules: Arc<dyn GrantRules>,
    clock: Clock,
) -> Result<SqlStore, StoreError> {
    match postgres {
        None => SqlStore::open(data_dir, grant_rules, clock),
        Some(target) => SqlStore::connect(target, load_master_key(data_dir)?, grant_rules, clock),
    }
}

/// The master key from `PORTCULLIS_MASTER_KEY`, else `<data_dir>/master.key` (generated, mode
/// 0600, when missing).
fn load_master_key(data_dir: &Path) -> Result<MasterKey, StoreError> {
    let env = std::env::var(crypto::MASTER_KEY_ENV).ok();
    create_data_dir(data_dir)?;
    MasterKey::load(data_dir, env.as_deref())
}

const KEY_CHECK_NAME: &str = "master_key_check";
const KEY_CHECK_AAD: &str = "store_meta/master_key_check/check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"portcullis master key check";

/// A store created with one master key refuses to open with another, rather than failing later
/// on the first private key it decrypts.
fn check_master_key(conn: &dyn Sql, key: &MasterKey) -> Result<(), StoreError> {
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE name = ?1",
            [KEY_CHECK_NAME],
            |row| row.get(0),
        )
        .optional()?;
    match stored {
        Some(sealed) => match key.open(KEY_CHECK_AAD, &sealed) {
            Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(StoreError::MasterKey(
                "this master key does not open the store (was PORTCULLIS_MASTER_KEY or master.key \
                 changed? every node sharing one PostgreSQL store needs the same key)"
                    .into(),
            )),
        },
        None => {
            let sealed = key.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
            conn.execute(
                "INSERT INTO store_meta (name, value) VALUES (?1, ?2)",
                sql::params![KEY_CHECK_NAME, sealed],
            )?;
            Ok(())
        }
    }
}

/// The admin token: `PORTCULLIS_ADMIN_TOKEN` when set, else `<data_dir>/admin-token`, generated
/// (mode 0600) when missing.
pub fn bootstrap_admin_token(data_dir: &Path) -> Result<String, StoreError> {
    let env = std::env::var(ADMIN_TOKEN_ENV).ok();
    admin_token(data_dir, env.as_deref())
}

/// The admin token of a node sharing its store: `PORTCULLIS_ADMIN_TOKEN` when set, else the
/// token the first node generated and stored (sealed); written to `<data_dir>/admin-token`
/// (mode 0600) as well, for the operator of this node.
pub fn shared_admin_token(store: &dyn Store, data_dir: &Path) -> Result<String, StoreError> {
    if let Some(token) = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    {
        return Ok(token);
    }
    let token = store.shared_admin_token(&generate_admin_token()?)?;
    crypto::write_secret_file(&data_dir.join(ADMIN_TOKEN_FILE), &token)?;
    Ok(token)
}

/// 32 random bytes, base64url without padding (43 characters).
fn generate_admin_token() -> Result<String, StoreError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    crypto::random_bytes(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// [`bootstrap_admin_token`] with the environment value given: 32 random bytes, base64url without
/// padding (43 characters), when it generates one.
pub fn admin_token(data_dir: &Path, env_value: Option<&str>) -> Result<String, StoreError> {
    if let Some(token) = env_value.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    create_data_dir(data_dir)?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let token = crypto::read_or_create_secret_file(&path, generate_admin_token)?;
    if token.is_empty() {
        return Err(StoreError::Corrupt(format!("{} is empty", path.display())));
    }
    Ok(token)
}

/// Creates the data directory (mode 0700) when missing.
fn create_data_dir(data_dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(data_dir)?;
    Ok(())
}

/// A new id: 48 bits of milliseconds since the epoch, then 80 random bits, as 32 hex digits, so
/// ids sort by creation time and never collide in practice.
fn new_id(now: OffsetDateTime) -> Result<String, StoreError> {
    let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    crypto::random_bytes(&mut bytes[6..])?;
    Ok(hex::encode(bytes))
}

/// Stored times are unix microseconds.
fn to_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn from_micros(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|_| StoreError::Corrupt(format!("time out of range: {micros}")))
}

/// `t` as the store keeps it (microsecond precision), so what an insert returns equals what a
/// later read returns.
fn truncate_to_micros(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    from_micros(to_micros(t))
}

/// An organisation's topic policy.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub enum TopicPolicy {
    /// The Watson IoT topic space of DESIGN §4 (the default).
    #[default]
    #[serde(rename = "iot-2")]
    Iot2,
    /// Any topic or filter not starting with `$` (and `$share/<group>/<filter>`), under `<org>/`.
    #[serde(rename = "open")]
    Open,
}

/// What a CA asks of OCSP (`ocsp_mode`): a setting the store keeps with the CA. What a mode
/// means for a connection is `ocsp`'s to say (`OcspMode::refusal` there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OcspMode {
    /// No check.
    #[default]
    Off,
    /// A revoked certificate is refused; an unanswered check lets the device in.
    Soft,
    /// Only a certificate the responder vouches for gets in.
    Hard,
}

impl OcspMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OcspMode::Off => "off",
            OcspMode::Soft => "soft",
            OcspMode::Hard => "hard",
        }
    }

    /// The mode `s` names (`off`, `soft`, `hard`).
    pub fn parse(s: &str) -> Option<OcspMode> {
        [OcspMode::Off, OcspMode::Soft, OcspMode::Hard]
            .into_iter()
            .find(|mode| mode.as_str() == s)
    }
}

fn topic_policy_to_sql(p: TopicPolicy) -> &'static str {
    match p {
        TopicPolicy::Iot2 => "iot-2",
        TopicPolicy::Open => "open",
    }
}

fn topic_policy_from_sql(s: &str) -> Result<TopicPolicy, StoreError> {
    match s {
        "iot-2" => Ok(TopicPolicy::Iot2),
        "open" => Ok(TopicPolicy::Open),
        other => Err(StoreError::Corrupt(format!(
            "unknown topic policy {other:?}"
        ))),
    }
}

/// A space-separated list column (identities, CA ids) as its words.
fn words(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_owned).collect()
}

fn parse_org_id(s: &str) -> Result<OrgId, StoreError> {
    OrgId::parse(s).map_err(|_| StoreError::Corrupt(format!("invalid org id {s:?}")))
}

/// The result of an `INSERT`, with a UNIQUE or PRIMARY KEY violation reported as `conflict`.
fn unique_or(inserted: Result<usize, DbError>, conflict: StoreError) -> Result<usize, StoreError> {
    match inserted {
        Err(DbError::Unique(_)) => Err(conflict),
        other => Ok(other?),
    }
}

/// Reads every row of a query, then converts each one. All rows are read before the first
/// conversion, so a database error is reported before a row that does not convert.
fn records<R, T>(
    rows: impl Iterator<Item = Result<R, DbError>>,
    into_record: impl FnMut(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = rows.collect::<Result<Vec<_>, DbError>>()?;
    rows.into_iter().map(into_record).collect()
}

/// True when `e` is a FOREIGN KEY violation.
fn is_foreign_key_violation(e: &DbError) -> bool {
    matches!(e, DbError::ForeignKey(_))
}

/// Fails with `UnknownOrg` unless `org` exists.
fn require_org(conn: &dyn Sql, org: &OrgId) -> Result<(), StoreError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)",
        [org.as_str()],
        |row| row.get(0),
    )?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::UnknownOrg)
    }
}

#[cfg(test)]
mod tests;
