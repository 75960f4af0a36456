//! OCSP (RFC 6960): is a client certificate revoked, by its CA's responder's word? Checked after
//! the TLS handshake and before CONNACK, so a handshake never waits on the network (DESIGN §11).
//! Answers are cached per certificate (issuer key hash, issuer name hash, serial) until their
//! `nextUpdate`, and concurrent checks of one certificate share one request: a storm of devices
//! reconnecting with the same certificate costs the responder one request, not one per device.
//! A failed request (unreachable, timeout, HTTP error, an answer that fails its checks) is cached
//! briefly too, so a storm against a dead responder does not hammer it either.
//!
//! [`Ocsp::status`] only reports; what a [`Verdict`] means for a connection is the CA's
//! [`OcspMode`]'s to say ([`OcspMode::refusal`]).

mod wire;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use crate::fetch::{Fetch, FetchError};
use tokio::sync::OnceCell;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
use x509_parser::prelude::{FromDer, X509Certificate};

use wire::{Query, Status};

/// A larger answer is not an OCSP response for one certificate (they are a few KiB at most).
const MAX_BODY: usize = 64 * 1024;

/// Cached answers at most; past it, expired entries go first, then arbitrary ones.
const CACHE_CAPACITY: usize = 100_000;
/// How long a failed request is remembered: long enough that a reconnect storm against a dead
/// responder costs one request per certificate every few seconds, short enough that a responder
/// back up is noticed quickly.
const FAILURE_TTL: Duration = Duration::from_secs(10);

/// What a CA asks of OCSP: kept with the CA in the store, which knows nothing of what it means;
/// its meaning for a connection is here.
pub use crate::store::OcspMode;

impl OcspMode {
    /// The refusal reason (a bounded label) for a connection whose certificate got `verdict`,
    /// or `None` to let it in.
    pub fn refusal(self, verdict: Verdict) -> Option<&'static str> {
        match (self, verdict) {
            (OcspMode::Off, _) | (_, Verdict::Good) | (OcspMode::Soft, Verdict::Unavailable) => {
                None
            }
            (_, Verdict::Revoked) => Some("certificate_revoked"),
            (OcspMode::Hard, Verdict::Unavailable) => Some("ocsp_unavailable"),
        }
    }
}

impl FromStr for OcspMode {
    type Err = OcspError;

    fn from_str(s: &str) -> Result<OcspMode, OcspError> {
        OcspMode::parse(s).ok_or_else(|| OcspError::UnknownMode(s.to_owned()))
    }
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Revoked,
    /// No usable answer: the responder is unreachable or slow, its answer is invalid, or it
    /// does not know the certificate (`unknown` vouches for nothing).
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    #[error("unknown ocsp_mode {0:?} (expected off, soft or hard)")]
    UnknownMode(String),
    #[error("certificate cannot be parsed")]
    Certificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the issuer certificate did not issue the leaf (names differ)")]
    NotIssuer,
    #[error("malformed DER")]
    Der(#[from] x509_cert::der::Error),
    #[error("the exchange with the OCSP responder failed")]
    Fetch(#[from] FetchError),
    #[error("the OCSP responder refused: {0:?}")]
    ResponderStatus(x509_ocsp::OcspResponseStatus),
    #[error("the OCSP response is not a basic response")]
    NotBasic,
    #[error("the OCSP response's signature algorithm is not supported")]
    UnsupportedAlgorithm,
    #[error("the OCSP response's signature does not verify")]
    BadSignature,
    #[error("the OCSP response's signer was not issued by the certificate's issuer")]
    DelegateNotIssued,
    #[error("the OCSP response's signer lacks extendedKeyUsage OCSPSigning")]
    DelegateNotAuthorized,
    #[error("the OCSP response's signer certificate is not valid now")]
    DelegateExpired,
    #[error("the OCSP response has no answer for this certificate")]
    NoMatchingResponse,
    #[error("the OCSP response's thisUpdate is in the future")]
    NotYetValid,
    #[error("the OCSP response's nextUpdate has passed")]
    Expired,
}

/// A client certificate as OCSP asks about it, kept with its session so that it can be asked
/// about again while the session lives (`registry::ocsp_recheck`).
#[derive(Debug)]
pub struct Subject {
    /// DER of the leaf.
    pub leaf: Vec<u8>,
    /// DER of the certificate that issued the leaf.
    pub issuer: Vec<u8>,
    /// The responder the leaf's Authority Information Access names.
    pub aia_url: Option<String>,
}

/// What an answer is cached under: the certificate as its CertID names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    issuer_key_hash: [u8; 20],
    issuer_name_hash: [u8; 20],
    serial: Box<[u8]>,
}

#[derive(Clone, Copy)]
struct Cached {
    verdict: Verdict,
    until: Instant,
}

/// The OCSP client: a cache of answers and the requests in flight. Cheap to share in an `Arc`.
pub struct Ocsp {
    timeout: Duration,
    capacity: usize,
    cache: DashMap<Key, Cached>,
    /// SHA-256 of (leaf, issuer) → its cache key: a device reconnecting is found without parsing
    /// either certificate again (parsing and the SHA-1s of the key cost more than the rest of a
    /// cache hit). Cleared when it reaches `capacity`.
    known: DashMap<[u8; 32], Key>,
    /// One cell per certificate being asked about; every concurrent check of it waits on the
    /// same cell, and only the check that initialises it sends the request.
    in_flight: DashMap<Key, Arc<OnceCell<Verdict>>>,
}

impl Ocsp {
    /// `timeout` bounds one request, connect to last byte.
    pub fn new(timeout: Duration) -> Ocsp {
        Ocsp::with_capacity(timeout, CACHE_CAPACITY)
    }

    fn with_capacity(timeout: Duration, capacity: usize) -> Ocsp {
        Ocsp {
            timeout,
            capacity,
            cache: DashMap::new(),
            known: DashMap::new(),
            in_flight: DashMap::new(),
        }
    }

    /// The OCSP status of `leaf` issued by `issuer` (both DER), asking `url` when the cache has
    /// no fresh answer (over `http://`, or `https://` verified against the system's roots).
    /// Waits at most about the timeout given to [`Ocsp::new`], whoever sends the request.
    pub async fn status(&self, leaf: &[u8], issuer: &[u8], url: &str) -> Verdict {
        let pair = pair_hash(leaf, issuer);
        let known = self.known.get(&pair).map(|key| key.clone());
        if let Some(verdict) = known.and_then(|key| self.fresh(&key)) {
            return verdict;
        }
        let query = match Query::new(leaf, issuer) {
            Ok(query) => query,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "OCSP check impossible");
                return Verdict::Unavailable;
            }
        };
        let key = query.key().clone();
        if self.known.len() >= self.capacity {
            self.known.clear();
        }
        self.known.insert(pair, key.clone());
        if let Some(verdict) = self.fresh(&key) {
            return verdict;
        }
        let cell = self.in_flight.entry(key.clone()).or_default().clone();
        let verdict = cell
            .get_or_init(|| async {
                // A check that finished between our cache miss and our joining this cell has
                // cached its answer and left the map: its answer is ours.
                if let Some(verdict) = self.fresh(&key) {
                    return verdict;
                }
                let (verdict, ttl) = self.ask(&query, url).await;
                // Cache first, then leave the map (no await between): a later check finds
                // one or the other, never neither.
                self.remember(key.clone(), verdict, ttl);
                self.in_flight
                    .remove_if(&key, |_, current| Arc::ptr_eq(current, &cell));
                verdict
            })
            .await;
        *verdict
    }

    /// The status of `subject` by the responder at `ca_url`, else the one its AIA names;
    /// `Unavailable` when neither names one.
    pub async fn verdict(&self, subject: &Subject, ca_url: Option<&str>) -> Verdict {
        match ca_url.or(subject.aia_url.as_deref()) {
            Some(url) => self.status(&subject.leaf, &subject.issuer, url).await,
            None => Verdict::Unavailable,
        }
    }

    /// A cached verdict still fresh, counted as a hit.
    fn fresh(&self, key: &Key) -> Option<Verdict> {
        let cached = *self.cache.get(key)?;
        if cached.until <= Instant::now() {
            return None;
        }
        metrics::counter!(crate::metrics::OCSP_CACHE_HITS).increment(1);
        Some(cached.verdict)
    }

    /// Sends the request and judges the answer: the verdict and how long it holds.
    async fn ask(&self, query: &Query, url: &str) -> (Verdict, Duration) {
        let answer = async {
            let request = query.request_der()?;
            let body = Fetch {
                method: hyper::Method::POST,
                url,
                headers: &[("content-type", "application/ocsp-request")],
                body: request.into(),
                timeout: self.timeout,
                max_body: MAX_BODY,
            }
            .send()
            .await?;
            query.check(&body, SystemTime::now())
        };
        let (verdict, ttl, outcome) = match answer.await {
            Ok(answer) => match answer.status {
                Status::Good => (Verdict::Good, answer.fresh_for, "good"),
                Status::Revoked => (Verdict::Revoked, answer.fresh_for, "revoked"),
                Status::Unknown => (Verdict::Unavailable, answer.fresh_for, "unknown"),
            },
            Err(error) => {
                tracing::warn!(
                    url,
                    serial = %hex::encode(&query.key().serial),
                    error = %error_chain(&error),
                    "OCSP request failed"
                );
                (Verdict::Unavailable, FAILURE_TTL, "error")
            }
        };
        metrics::counter!(crate::metrics::OCSP_REQUESTS, "outcome" => outcome).increment(1);
        (verdict, ttl)
    }

    fn remember(&self, key: Key, verdict: Verdict, ttl: Duration) {
        let now = Instant::now();
        if self.cache.len() >= self.capacity && !self.cache.contains_key(&key) {
            self.cache.retain(|_, cached| cached.until > now);
            // Make room for a tenth more, so a full cache of fresh answers is not scanned on
            // every insert.
            let target = (self.capacity - self.capacity / 10).saturating_sub(1);
            let excess = self.cache.len().saturating_sub(target);
            let victims: Vec<Key> = self
                .cache
                .iter()
                .take(excess)
                .map(|entry| entry.key().clone())
                .collect();
            for victim in victims {
                self.cache.remove(&victim);
            }
        }
        self.cache.insert(
            key,
            Cached {
                verdict,
                until: now + ttl,
            },
        );
    }
}

/// SHA-256 over both certificates, each length-prefixed.
fn pair_hash(leaf: &[u8], issuer: &[u8]) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for der in [leaf, issuer] {
        context.update(&(der.len() as u64).to_be_bytes());
        context.update(der);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The OCSP responder URL from the leaf's Authority Information Access, if any (the first
/// id-ad-ocsp URI; its scheme is not checked here).
pub fn aia_url(leaf: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    cert.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => aia.iter().find_map(|access| {
                match (&access.access_method, &access.access_location) {
                    (method, GeneralName::URI(uri))
                        if *method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP =>
                    {
                        Some((*uri).to_owned())
                    }
                    _ => None,
                }
            }),
            _ => None,
        })
}

/// `error: its source: …`, for one log field.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_print_and_decide() {
        for mode in [OcspMode::Off, OcspMode::Soft, OcspMode::Hard] {
            assert_eq!(mode.as_str().parse::<OcspMode>().unwrap(), mode);
            assert_eq!(
                serde_json::to_string(&mode).unwrap(),
                format!("\"{}\"", mode.as_str())
            );
        }
        assert!(matches!(
            "HARD".parse::<OcspMode>(),
            Err(OcspError::UnknownMode(_))
        ));
        assert_eq!(OcspMode::default(), OcspMode::Off);
        use Verdict::*;
        let table = [
            (OcspMode::Off, Revoked, None),
            (OcspMode::Off, Unavailable, None),
            (OcspMode::Soft, Good, None),
            (OcspMode::Soft, Revoked, Some("certificate_revoked")),
            (OcspMode::Soft, Unavailable, None),
            (OcspMode::Hard, Good, None),
            (OcspMode::Hard, Revoked, Some("certificate_revoked")),
            (OcspMode::Hard, Unavailable, Some("ocsp_unavailable")),
        ];
        for (mode, verdict, refusal) in table {
            assert_eq!(mode.refusal(verdict), refusal, "{mode:?} {verdict:?}");
        }
    }

    fn key(n: u8) -> Key {
        Key {
            issuer_key_hash: [1; 20],
            issuer_name_hash: [2; 20],
            serial: Box::new([n]),
        }
    }

    #[test]
    fn the_cache_is_bounded_and_drops_expired_answers_first() {
        let ocsp = Ocsp::with_capacity(Duration::from_secs(1), 10);
        ocsp.remember(key(0), Verdict::Revoked, Duration::ZERO);
        for n in 1..10 {
            ocsp.remember(key(n), Verdict::Good, Duration::from_secs(60));
        }
        assert_eq!(ocsp.cache.len(), 10);
        // Full: the expired answer goes, and as many more as make room for a tenth.
        ocsp.remember(key(10), Verdict::Good, Duration::from_secs(60));
        assert_eq!(ocsp.cache.len(), 9);
        assert!(!ocsp.cache.contains_key(&key(0)));
        assert_eq!(ocsp.fresh(&key(10)), Some(Verdict::Good));
        for n in 11..100 {
            ocsp.remember(key(n), Verdict::Good, Duration::from_secs(60));
            assert!(ocsp.cache.len() <= 10);
        }
    }

    #[test]
    fn aia_url_reads_the_ocsp_access_description() {
        let dir = tempfile::TempDir::new().unwrap();
        let out = dir.path().join("leaf.der");
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=dev1"])
            .args(["-days", "1", "-outform", "DER", "-keyout"])
            .arg(dir.path().join("leaf.key"))
            .arg("-out")
            .arg(&out)
            .args(["-addext", "authorityInfoAccess=caIssuers;URI:http://ca.example/ca.der,OCSP;URI:http://ocsp.example:8080/acme"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        let leaf = std::fs::read(out).unwrap();
        assert_eq!(
            aia_url(&leaf).as_deref(),
            Some("http://ocsp.example:8080/acme")
        );
        let without = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        assert_eq!(aia_url(without.der()), None);
        assert_eq!(aia_url(b"garbage"), None);
    }
}
