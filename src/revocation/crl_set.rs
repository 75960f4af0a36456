//! The CRLs an org holds, as its client verifier consults them: per issuer name, the serials
//! revoked and the nextUpdate. Only the leaf is checked (a CA's CRL lists what it issued).
//!
//! Why not rustls-webpki's CRL support: it checks a CRL's signature at every chain it verifies
//! (rustls/webpki#81), which is SHA-256 over the whole CRL each time — with a 10,000-entry CRL
//! that doubled the server's cost of a new device's handshake (BENCHMARKS.md, "Revocation
//! cost"). Here a CRL's signature is checked once, when it is taken in (`crls::hold` verifies it
//! against the CA it is held for; nothing else reaches an org's configuration), and a handshake
//! costs one hash-set lookup.

use std::collections::{HashMap, HashSet};

use rustls::CertificateError;
use rustls_pki_types::{CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::X509Certificate;

use crate::pki::{self, PkiError};

#[derive(Debug, Default)]
pub struct Revocations {
    /// Issuer name (DER) → its CRL.
    by_issuer: HashMap<Vec<u8>, Crl>,
    /// A CRL past its nextUpdate refuses every certificate of its issuer
    /// (`revocation.on_stale_crl = "deny"`).
    deny_stale: bool,
}

#[derive(Debug)]
struct Crl {
    /// Lower-case hex, as `pki::serial_hex` writes them.
    serials: HashSet<String>,
    /// Unix seconds; `None`: the CRL names none.
    next_update: Option<u64>,
}

impl Revocations {
    /// From CRLs already verified against their CAs.
    pub fn new(
        crls: &[CertificateRevocationListDer<'_>],
        deny_stale: bool,
    ) -> Result<Revocations, PkiError> {
        let mut by_issuer: HashMap<Vec<u8>, Crl> = HashMap::new();
        for der in crls {
            let (rest, crl) =
                x509_parser::parse_x509_crl(der.as_ref()).map_err(|_| PkiError::NotACrl)?;
            if !rest.is_empty() {
                return Err(PkiError::NotACrl);
            }
            let next_update = crl
                .next_update()
                .map(|t| u64::try_from(t.timestamp()).unwrap_or(0));
            let serials = crl
                .iter_revoked_certificates()
                .map(|r| pki::serial_hex(r.raw_serial()));
            // Two CAs of one name (a key rollover) each hold a CRL: both count.
            let entry = by_issuer
                .entry(crl.issuer().as_raw().to_vec())
                .or_insert_with(|| Crl {
                    serials: HashSet::new(),
                    next_update,
                });
            entry.serials.extend(serials);
            entry.next_update = match (entry.next_update, next_update) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Revocations {
            by_issuer,
            deny_stale,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// Whether `leaf` (already verified) may connect at `now`: `Revoked` when its issuer's CRL
    /// lists it; `ExpiredRevocationList` when that CRL is stale and stale CRLs are refused.
    pub fn check(&self, leaf: &X509Certificate<'_>, now: UnixTime) -> Result<(), CertificateError> {
        let Some(crl) = self.by_issuer.get(leaf.issuer().as_raw()) else {
            return Ok(());
        };
        if crl.serials.contains(&pki::serial_hex(leaf.raw_serial())) {
            return Err(CertificateError::Revoked);
        }
        if self.deny_stale && crl.next_update.is_some_and(|next| next < now.as_secs()) {
            return Err(CertificateError::ExpiredRevocationList);
        }
        Ok(())
    }
}
