//! The live registry: an immutable snapshot of every org (topic policy, active CAs, the built
//! `ServerConfig`) behind an `ArcSwap` that the hot path reads without locks, and the table of live
//! sessions, so that a change that invalidates a session closes it.

use crate::identity::OrgId;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot build the TLS configuration of org {org}: {reason}")]
    Tls { org: String, reason: String },
}

pub struct Registry {}

impl Registry {
    /// Reloads `org` from the store and publishes it: new handshakes see the change at once, and
    /// live sessions it invalidates (CA deactivated or deleted, org deleted) are closed.
    pub fn publish_org(&self, org: &OrgId) -> Result<(), RegistryError> {
        let _ = org;
        todo!()
    }
}
