//! An org's blocklist as the hot path checks it (DESIGN §11): the store's entries, by identity,
//! by certificate fingerprint and by (CA, serial), held as hash sets so a check is a few lookups.

use std::collections::HashSet;

use super::Device;
use crate::identity::Identity;
use crate::store::{BlockTarget, BlockedDevice};

#[derive(Debug, Default)]
pub struct Blocklist {
    identities: HashSet<Identity>,
    fingerprints: HashSet<String>,
    /// (CA id, serial).
    serials: HashSet<(String, String)>,
}

impl Blocklist {
    pub fn new(entries: &[BlockedDevice]) -> Blocklist {
        let mut list = Blocklist::default();
        for entry in entries {
            match &entry.target {
                BlockTarget::Identity(identity) => {
                    list.identities.insert(identity.clone());
                }
                BlockTarget::Fingerprint(f) => {
                    list.fingerprints.insert(f.clone());
                }
                BlockTarget::Serial { ca_id, serial } => {
                    list.serials.insert((ca_id.clone(), serial.clone()));
                }
            }
        }
        list
    }

    pub fn blocks(&self, device: &Device) -> bool {
        self.identities.contains(&device.identity)
            || device.claims.iter().any(|c| self.identities.contains(c))
            || self.fingerprints.contains(&device.fingerprint_sha256)
            || device.cas().any(|ca| {
                self.serials
                    .contains(&(ca.to_owned(), device.serial.clone()))
            })
    }
}
