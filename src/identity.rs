//! The identity grammar: organisation ids, the identities a client certificate claims (`d:<type>:<id>`,
//! `g:<type>:<id>`, `a:<appId>` in the subject CN or a SAN email), and MQTT client ids
//! (`d:<org>:<type>:<id>`, `g:<org>:<type>:<id>`, `a:<org>:<appId>`). Parsed once, at the edge.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("organisation id must be a DNS label of 1-32 characters [a-z0-9-]")]
    InvalidOrgId,
    #[error("client id must be d:<org>:<type>:<id>, g:<org>:<type>:<id> or a:<org>:<appId>")]
    InvalidClientId,
    #[error("certificate cannot be parsed")]
    BadCertificate,
}

/// An organisation id: `^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(s: &str) -> Result<OrgId, IdentityError> {
        let _ = s;
        todo!()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a certificate may claim, without an organisation. `type`, `id`, `app`: 1–36 of
/// `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Device {
        device_type: String,
        device_id: String,
    },
    Gateway {
        gateway_type: String,
        gateway_id: String,
    },
    App {
        app_id: String,
    },
}

impl Identity {
    /// Parses `d:<type>:<id>`, `g:<type>:<id>` or `a:<appId>`; anything else claims nothing.
    pub fn parse(s: &str) -> Option<Identity> {
        let _ = s;
        todo!()
    }
}

/// `d:<type>:<id>`, `g:<type>:<id>` or `a:<appId>`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

/// The identities a client certificate claims: its subject CN and each SAN rfc822Name that parse
/// as an [`Identity`], without duplicates, CN first.
pub fn claims(leaf_der: &[u8]) -> Result<Vec<Identity>, IdentityError> {
    let _ = leaf_der;
    todo!()
}

/// An MQTT client id bound to an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub org: OrgId,
    pub identity: Identity,
}

impl ClientId {
    pub fn parse(s: &str) -> Result<ClientId, IdentityError> {
        let _ = s;
        todo!()
    }
}

/// `d:<org>:<type>:<id>`, `g:<org>:<type>:<id>` or `a:<org>:<appId>`.
impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}
