//! Revocation, in one place (DESIGN §11): what can keep a device out or end its session, and the
//! verdict that combines them.
//!
//! - [`crl`]: CAs' CRLs on their way in (uploaded or fetched from `crl_url`), checked and held;
//!   [`crl_set`]: the CRLs an org holds as its TLS client verifier consults them at a handshake.
//! - [`ocsp`]: a client certificate's OCSP status, cached, one request per certificate at once;
//!   what a CA's `ocsp_mode` makes of it.
//! - [`blocklist`]: the org's blocked devices as the hot path checks them.
//! - Here: the [`Device`] a session was authenticated with and the verdict on it
//!   ([`OrgRevocations::verdict`]), which the registry asks at CONNECT, on resumed handshakes and
//!   for every live session whenever an org changes.
//!
//! Revocation sits below the registry, which holds each org's [`OrgRevocations`] in its snapshot;
//! the CRL fetcher publishes through the [`crl::Publish`] it is handed, never naming the registry.

pub mod blocklist;
pub mod crl;
pub mod crl_set;
pub mod ocsp;

use std::collections::{HashMap, HashSet};

use crate::identity::Identity;
use crate::pki::CrlInfo;
use crate::refusal::Refusal;
use crate::store::BlockedDevice;

pub use blocklist::Blocklist;

/// The certificate a session was authenticated with, as revocations name it.
#[derive(Debug, Clone)]
pub struct Device {
    /// The identity its client id bound.
    pub identity: Identity,
    /// Every identity its certificate claims (the bound one among them).
    pub claims: Vec<Identity>,
    /// The active CA its chain verified to.
    pub ca_id: String,
    /// Other active CAs its chain led to when it connected (an uploaded intermediate's root, a
    /// renewed CA): it stays while any of them, or `ca_id`, is active. Mostly empty.
    pub also_ca_ids: Vec<String>,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// The leaf's serial, lower-case hex.
    pub serial: String,
}

impl Device {
    /// The CA that authenticated it, then the others that vouch for it.
    pub fn cas(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.ca_id.as_str()).chain(self.also_ca_ids.iter().map(String::as_str))
    }
}

/// Why a device may not stay connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    CaInactive,
    DeviceBlocked,
    CertificateRevoked,
    CrlStale,
}

impl Revocation {
    /// The refusal it is reported as, at CONNECT or when it closes a live session.
    pub fn refusal(self) -> Refusal {
        match self {
            Revocation::CaInactive => Refusal::CaInactive,
            Revocation::DeviceBlocked => Refusal::DeviceBlocked,
            Revocation::CertificateRevoked => Refusal::CertificateRevoked,
            Revocation::CrlStale => Refusal::CrlStale,
        }
    }

    pub fn reason(self) -> &'static str {
        self.refusal().as_str()
    }
}

/// What an org's revocation sources say, as the registry holds them for the hot path.
#[derive(Debug, Default)]
pub struct OrgRevocations {
    blocklist: Blocklist,
    /// (CA id, serial) of every certificate the CAs' CRLs revoke.
    revoked: HashSet<(String, String)>,
    /// Under `revocation.on_stale_crl = "deny"`: each CA's CRL nextUpdate (Unix seconds), after
    /// which its devices are refused. The handshake checks it; this catches TLS resumptions.
    crl_deadlines: HashMap<String, i64>,
}

impl OrgRevocations {
    /// From the org's blocklist entries and its active CAs' CRLs, (CA id, CRL) each, already
    /// checked when they were taken in.
    pub fn new(
        blocked: &[BlockedDevice],
        crls: Vec<(String, CrlInfo)>,
        deny_stale_crl: bool,
    ) -> OrgRevocations {
        let mut revoked = HashSet::new();
        let mut crl_deadlines = HashMap::new();
        for (ca_id, info) in crls {
            if let (true, Some(next_update)) = (deny_stale_crl, info.next_update) {
                crl_deadlines.insert(ca_id.clone(), next_update.unix_timestamp());
            }
            revoked.extend(
                info.revoked
                    .into_iter()
                    .map(|serial| (ca_id.clone(), serial)),
            );
        }
        OrgRevocations {
            blocklist: Blocklist::new(blocked),
            revoked,
            crl_deadlines,
        }
    }

    /// Why `device` may not be connected now; `None` when it may. `ca_active`: the CA its chain
    /// verified to is still one of the org's active CAs.
    pub fn verdict(&self, ca_active: bool, device: &Device) -> Option<Revocation> {
        if !ca_active {
            return Some(Revocation::CaInactive);
        }
        if self.blocklist.blocks(device) {
            return Some(Revocation::DeviceBlocked);
        }
        // Handshakes check CRLs themselves; this catches resumed ones and live sessions. The CRL
        // of every CA that vouches for the device counts: a session that outlived its own CA
        // stays under the others.
        if device.cas().any(|ca| {
            self.revoked
                .contains(&(ca.to_owned(), device.serial.clone()))
        }) {
            return Some(Revocation::CertificateRevoked);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if device.cas().any(|ca| {
            self.crl_deadlines
                .get(ca)
                .is_some_and(|next_update| *next_update < now)
        }) {
            return Some(Revocation::CrlStale);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::identity::OrgId;
    use crate::store::BlockTarget;

    fn device(identity: &str, serial: &str) -> Device {
        let identity = Identity::parse(identity).unwrap();
        Device {
            claims: vec![identity.clone()],
            identity,
            ca_id: "ca1".into(),
            also_ca_ids: Vec::new(),
            fingerprint_sha256: "ff".into(),
            serial: serial.into(),
        }
    }

    fn block(target: BlockTarget) -> BlockedDevice {
        BlockedDevice {
            id: "b".into(),
            org: OrgId::parse("acme").unwrap(),
            target,
            reason: String::new(),
            created_by: "test".into(),
            created_at: datetime!(2025-01-01 00:00:00 UTC),
        }
    }

    fn crl(revoked: &[&str], next_update: Option<time::OffsetDateTime>) -> CrlInfo {
        CrlInfo {
            issuer: "CN=ca".into(),
            this_update: datetime!(2025-01-01 00:00:00 UTC),
            next_update,
            revoked: revoked.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn the_verdict_combines_ca_blocklist_and_crl_in_that_order() {
        let blocked = [block(BlockTarget::Identity(
            Identity::parse("d:sensor:dev1").unwrap(),
        ))];
        let crls = vec![("ca1".to_owned(), crl(&["0a"], None))];
        let org = OrgRevocations::new(&blocked, crls, false);
        let verdict = |ca_active, d: &Device| org.verdict(ca_active, d);
        let blocked_and_revoked = device("d:sensor:dev1", "0a");
        assert_eq!(
            verdict(false, &blocked_and_revoked),
            Some(Revocation::CaInactive)
        );
        assert_eq!(
            verdict(true, &blocked_and_revoked),
            Some(Revocation::DeviceBlocked)
        );
        assert_eq!(
            verdict(true, &device("d:sensor:dev2", "0a")),
            Some(Revocation::CertificateRevoked)
        );
        assert_eq!(verdict(true, &device("d:sensor:dev2", "0b")), None);
    }

    #[test]
    fn a_stale_crl_refuses_only_when_stale_crls_are_denied() {
        let past = Some(datetime!(2020-01-01 00:00:00 UTC));
        let stale = |deny| {
            let crls = vec![("ca1".to_owned(), crl(&[], past))];
            OrgRevocations::new(&[], crls, deny).verdict(true, &device("d:sensor:dev1", "01"))
        };
        assert_eq!(stale(true), Some(Revocation::CrlStale));
        assert_eq!(stale(false), None);
    }
}
