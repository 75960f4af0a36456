//! The store: SQLite (WAL) in `<data_dir>/portcullis.db`, schema migrations, one transaction per
//! admin change, private keys encrypted at rest with the master key.

use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::identity::OrgId;
use crate::mqtt::topics::TopicPolicy;
use crate::pki::{CertInfo, Issuer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: OrgId,
    pub name: String,
    pub topic_policy: TopicPolicy,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct CaRecord {
    pub id: String,
    pub org: OrgId,
    pub info: CertInfo,
    pub der: CertificateDer<'static>,
    pub description: String,
    pub active: bool,
    pub registered_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct ServerCertRecord {
    pub id: String,
    pub org: OrgId,
    /// Of the leaf.
    pub info: CertInfo,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub active: bool,
    pub registered_at: OffsetDateTime,
}

/// What the registry serves for one org.
pub struct OrgState {
    pub org: OrgRecord,
    pub active_cas: Vec<CaRecord>,
    pub active_server_cert: Option<(ServerCertRecord, PrivateKeyDer<'static>)>,
}

pub struct Store {}

impl Store {
    /// Opens (creating when needed) `<data_dir>/portcullis.db`, runs the migrations, and loads the
    /// master key from `PORTCULLIS_MASTER_KEY` or `<data_dir>/master.key` (generated, mode 0600).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let _ = data_dir;
        todo!()
    }

    pub fn org_ids(&self) -> Result<Vec<OrgId>, StoreError> {
        todo!()
    }

    /// `None` when the org does not exist.
    pub fn org_state(&self, org: &OrgId) -> Result<Option<OrgState>, StoreError> {
        let _ = org;
        todo!()
    }

    /// The platform CA, created on first start.
    pub fn platform_ca(&self) -> Result<Option<Issuer>, StoreError> {
        todo!()
    }

    pub fn set_platform_ca(&self, issuer: &Issuer) -> Result<(), StoreError> {
        let _ = issuer;
        todo!()
    }
}

/// The admin token: `PORTCULLIS_ADMIN_TOKEN` when set, else `<data_dir>/admin-token`, generated
/// (mode 0600) when missing.
pub fn bootstrap_admin_token(data_dir: &Path) -> Result<String, StoreError> {
    let _ = data_dir;
    todo!()
}
