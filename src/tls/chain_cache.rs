//! A bounded cache of client certificate chains already verified under one org's trust: a device
//! that reconnects skips path building and the chain's signature checks, the costliest part of a
//! mutual-TLS handshake after the key exchange.
//!
//! What keeps it safe:
//! - it lives inside one org's `ServerConfig`, which is rebuilt on every change to the org's CAs,
//!   so a chain verified under the old trust is never found under the new one;
//! - an entry holds only until the earliest notAfter of the chain's certificates, and is used only
//!   from their latest notBefore;
//! - the org's CRLs ([`Revocations`]) are consulted at every handshake, cached chain or not, so a
//!   CRL growing stale under `deny` refuses from the moment it does;
//! - the handshake signature (CertificateVerify) is checked by the inner verifier every time: a
//!   cached chain proves nothing about the key of whoever presents it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::mail_constraints::MailCheck;
use super::revocation::Revocations;

/// Chains remembered per org; when full, the cache starts over (a reconnect storm of more
/// distinct devices than this verifies them all again, never wrongly).
pub const CAPACITY: usize = 4096;

/// When a verified chain may be taken as verified again, in Unix seconds.
#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: u64,
    not_after: u64,
}

#[derive(Debug)]
pub struct CachingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    verified: Mutex<HashMap<[u8; 32], Validity>>,
    capacity: usize,
    /// What the org's CRLs revoke, checked on the leaf of every chain.
    revocations: Revocations,
    /// The CAs' e-mail name constraints, checked on each chain before it is remembered.
    mail: MailCheck,
}

impl CachingVerifier {
    /// Everything a handshake checks of a chain, without the cache and without remembering it
    /// (`POST …/explain`: what anyone may send there must not evict the chains of real devices).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.mail.verify(end_entity, intermediates, now)?;
        self.check_revocation(end_entity, now)
    }

    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        capacity: usize,
        revocations: Revocations,
        mail: MailCheck,
    ) -> CachingVerifier {
        CachingVerifier {
            inner,
            verified: Mutex::new(HashMap::new()),
            capacity,
            revocations,
            mail,
        }
    }

    /// The CRL check of a verified chain's leaf.
    fn check_revocation(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        if self.revocations.is_empty() {
            return Ok(());
        }
        let (_, leaf) = X509Certificate::from_der(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        self.revocations
            .check(&leaf, now)
            .map_err(Error::InvalidCertificate)
    }

    fn cached(&self, key: &[u8; 32], now: UnixTime) -> bool {
        let now = now.as_secs();
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(key)
            .is_some_and(|v| v.not_before <= now && now < v.not_after)
    }

    fn remember(&self, key: [u8; 32], validity: Validity) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= self.capacity {
            verified.clear();
        }
        verified.insert(key, validity);
    }
}

/// SHA-256 over the chain, each certificate length-prefixed so that no two chains collide by
/// moving bytes across a boundary.
fn chain_key(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for der in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
        context.update(&(der.len() as u64).to_be_bytes());
        context.update(der);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// The window in which every certificate of the chain is valid; `None` if one cannot be read.
fn chain_validity(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> Option<Validity> {
    let mut window = Validity {
        not_before: 0,
        not_after: u64::MAX,
    };
    for der in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let validity = cert.validity();
        let not_before = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
        let not_after = u64::try_from(validity.not_after.timestamp()).ok()?;
        window.not_before = window.not_before.max(not_before);
        window.not_after = window.not_after.min(not_after);
    }
    Some(window)
}

impl ClientCertVerifier for CachingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = chain_key(end_entity, intermediates);
        if self.cached(&key, now) {
            self.check_revocation(end_entity, now)?;
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.mail.verify(end_entity, intermediates, now)?;
        // The chain is valid whatever the CRLs say, so it is remembered either way.
        if let Some(validity) = chain_validity(end_entity, intermediates) {
            self.remember(key, validity);
        }
        self.check_revocation(end_entity, now)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::server::WebPkiClientVerifier;
    use time::{Duration, OffsetDateTime};

    use super::*;

    /// Counts the chains the real verifier is asked to verify.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn ClientCertVerifier>,
        calls: AtomicUsize,
    }

    impl ClientCertVerifier for Counting {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.inner.root_hint_subjects()
        }
        fn verify_client_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            now: UnixTime,
        ) -> Result<ClientCertVerified, Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    struct Pki {
        root: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn pki() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "cache test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).unwrap().der().clone();
        Pki {
            root,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf valid from `from` to `to` days relative to now.
    fn leaf(pki: &Pki, cn: &str, from: i64, to: i64) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(from);
        params.not_after = now + Duration::days(to);
        params.signed_by(&key, &pki.issuer).unwrap().der().clone()
    }

    fn verifier(pki: &Pki, capacity: usize) -> (CachingVerifier, Arc<Counting>) {
        verifier_revoking(pki, capacity, Revocations::default())
    }

    fn verifier_revoking(
        pki: &Pki,
        capacity: usize,
        revocations: Revocations,
    ) -> (CachingVerifier, Arc<Counting>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.root.clone()).unwrap();
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::crypto::provider())
                .build()
                .unwrap();
        let counting = Arc::new(Counting {
            inner,
            calls: AtomicUsize::new(0),
        });
        (
            CachingVerifier::new(
                counting.clone(),
                capacity,
                revocations,
                MailCheck::default(),
            ),
            counting,
        )
    }

    fn at(days: i64) -> UnixTime {
        let t = OffsetDateTime::now_utc() + Duration::days(days);
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
    }

    #[test]
    fn a_verified_chain_is_verified_once_while_valid() {
        let pki = pki();
        let (cache, counting) = verifier(&pki, 16);
        let cert = leaf(&pki, "d:sensor:dev1", -1, 10);
        cache.verify_client_cert(&cert, &[], at(0)).unwrap();
        cache.verify_client_cert(&cert, &[], at(0)).unwrap();
        cache.verify_client_cert(&cert, &[], at(9)).unwrap();
        assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
        // Another chain is verified on its own.
        let other = leaf(&pki, "d:sensor:dev2", -1, 10);
        cache.verify_client_cert(&other, &[], at(0)).unwrap();
        assert_eq!(counting.calls.load(Ordering::SeqCst), 2);
    }

    /// A CRL of the test CA revoking `revoked`, next due `next_update_days` from now.
    fn crl(pki: &Pki, revoked: &[&CertificateDer<'_>], next_update_days: i64) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::days(1),
            next_update: now + Duration::days(next_update_days),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|der| {
                    let (_, cert) = X509Certificate::from_der(der).unwrap();
                    rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                        revocation_time: now - Duration::days(1),
                        reason_code: None,
                        invalidity_date: None,
                    }
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&pki.issuer).unwrap().der().to_vec()
    }

    fn revocations(crl: Vec<u8>, deny_stale: bool) -> Revocations {
        Revocations::new(&[crl.into()], deny_stale).unwrap()
    }

    #[test]
    fn the_crl_is_checked_on_every_chain_cached_or_not() {
        let pki = pki();
        let revoked = leaf(&pki, "d:sensor:stolen", -1, 10);
        let kept = leaf(&pki, "d:sensor:dev1", -1, 10);
        let (cache, counting) =
            verifier_revoking(&pki, 16, revocations(crl(&pki, &[&revoked], 7), true));
        for _ in 0..2 {
            let refused = cache.verify_client_cert(&revoked, &[], at(0));
            assert!(
                matches!(
                    refused,
                    Err(Error::InvalidCertificate(CertificateError::Revoked))
                ),
                "{refused:?}"
            );
            cache.verify_client_cert(&kept, &[], at(0)).unwrap();
        }
        // The revoked chain verifies (it is only revoked) and is remembered; the CRL still
        // refuses it from the cache.
        assert_eq!(counting.calls.load(Ordering::SeqCst), 2);
        // Stale under `deny`: every certificate of that CA, the cached one included.
        let stale = cache.verify_client_cert(&kept, &[], at(8));
        assert!(
            matches!(
                stale,
                Err(Error::InvalidCertificate(
                    CertificateError::ExpiredRevocationList
                ))
            ),
            "{stale:?}"
        );
        // Stale under `allow`: what the CRL does not list connects.
        let (allow, _) = verifier_revoking(&pki, 16, revocations(crl(&pki, &[&revoked], 7), false));
        allow.verify_client_cert(&kept, &[], at(8)).unwrap();
    }

    #[test]
    fn never_past_not_after_nor_before_not_before() {
        let pki = pki();
        let (cache, counting) = verifier(&pki, 16);
        let cert = leaf(&pki, "d:sensor:dev1", -1, 10);
        cache.verify_client_cert(&cert, &[], at(0)).unwrap();
        // After notAfter the real verifier decides, and refuses.
        let late = cache.verify_client_cert(&cert, &[], at(11));
        assert!(late.is_err(), "{late:?}");
        let early = cache.verify_client_cert(&cert, &[], at(-2));
        assert!(early.is_err(), "{early:?}");
        assert_eq!(counting.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_refused_chain_is_not_remembered_and_the_cache_stays_bounded() {
        let pki = pki();
        let stranger = pki_leaf_of_other_ca();
        let (cache, counting) = verifier(&pki, 2);
        assert!(cache.verify_client_cert(&stranger, &[], at(0)).is_err());
        assert!(cache.verify_client_cert(&stranger, &[], at(0)).is_err());
        assert_eq!(counting.calls.load(Ordering::SeqCst), 2);
        for n in 0..5 {
            let cert = leaf(&pki, &format!("d:sensor:dev{n}"), -1, 10);
            cache.verify_client_cert(&cert, &[], at(0)).unwrap();
        }
        let held = cache.verified.lock().unwrap().len();
        assert!(held <= 2, "{held} entries in a cache of 2");
    }

    fn pki_leaf_of_other_ca() -> CertificateDer<'static> {
        let other = pki();
        leaf(&other, "d:sensor:stranger", -1, 10)
    }
}
