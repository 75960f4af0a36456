//! TLS termination: ClientHello → SNI → org → that org's `ServerConfig` (server certificate by
//! name, client verifier over the org's active CAs, per-org resumption state), under one deadline.
//! The outcome is a typed [`PeerIdentity`], never a raw connection the caller has to inspect.
//!
//! Each org's `ServerConfig` is built once per registry change, never per connection. Its session
//! cache and ticket keys are its own and are replaced with it, so a session never resumes under
//! another org, nor across a change of the org's trust (DESIGN §6); a resumed session is still
//! checked against the current snapshot after the handshake, like a full one.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

mod chain_cache;
mod mail_constraints;
mod revocation;

use crate::identity::{self, Identity};
use crate::ocsp::{self, OcspMode};
use crate::pki;
use crate::registry::{ActiveCa, OrgEntry, Platform, Registry, Snapshot};

/// Stateful session cache entries per org (clients that cannot take tickets).
const SESSION_CACHE_ENTRIES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate cannot be parsed")]
    BadCertificate,
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("CRL: {0}")]
    Crl(#[from] crate::pki::PkiError),
}

/// Why a TLS connection was refused; `reason()` is a bounded label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No SNI, or an IP literal (rustls drops those from the ClientHello).
    NoSni,
    UnknownOrg,
    UnrecognizedName,
    OrgHasNoCa,
    Timeout,
    NoClientCertificate,
    UnknownCa,
    CertificateExpired,
    CertificateNotYetValid,
    /// Listed in the CRL of the CA that issued it.
    CertificateRevoked,
    /// Outside a CA's name constraints (DNS, IP or e-mail).
    NameConstraintViolation,
    BadCertificate,
    /// The CA that verified the chain is no longer active (a change raced the handshake).
    CaInactive,
    ClientAlert,
    Handshake,
    Io,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoSni => "no_sni",
            Refusal::UnknownOrg => "unknown_org",
            Refusal::UnrecognizedName => "unrecognized_name",
            Refusal::OrgHasNoCa => "org_has_no_ca",
            Refusal::Timeout => "timeout",
            Refusal::NoClientCertificate => "no_client_certificate",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::CertificateExpired => "certificate_expired",
            Refusal::CertificateNotYetValid => "certificate_not_yet_valid",
            Refusal::CertificateRevoked => "certificate_revoked",
            Refusal::NameConstraintViolation => "name_constraint_violation",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::CaInactive => "ca_inactive",
            Refusal::ClientAlert => "client_alert",
            Refusal::Handshake => "handshake",
            Refusal::Io => "io",
        }
    }
}

/// The typed outcome of a successful handshake.
pub struct PeerIdentity {
    pub org: Arc<OrgEntry>,
    /// The active CA the client chain verified to.
    pub ca_id: String,
    /// Identities the leaf certificate claims, sorted, without repeats (may be empty: then no
    /// client id can bind).
    pub claims: Vec<Identity>,
    /// SHA-256 of the leaf's DER and its serial, lower-case hex: what a blocklist names.
    pub fingerprint_sha256: String,
    pub serial: String,
    /// The leaf's notAfter, for the device registry.
    pub not_after: time::OffsetDateTime,
    pub resumed: bool,
    /// SNI as sent, for logs.
    pub sni: Option<String>,
    /// The client's address, for the sessions list.
    pub addr: Option<std::net::SocketAddr>,
    /// The certificate as OCSP asks about it, when its CA's `ocsp_mode` is not `off`: asked
    /// before CONNACK, never during the handshake.
    pub ocsp: Option<Arc<ocsp::Subject>>,
}

/// A refused handshake, with what is known for the one log event it gets.
pub struct Refused {
    pub refusal: Refusal,
    pub sni: Option<String>,
}

/// The crypto provider every config uses: aws-lc-rs, X25519 first (the cheapest key exchange;
/// the default order costs ~15 % more CPU when a client offers ML-KEM), AES-128 first.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::aws_lc_rs::cipher_suite;
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            // AES-128 first: its SHA-256 key schedule runs on the CPU's SHA extensions, while
            // SHA-384 (AES-256's) has none and cost ~5 % of a full handshake. The server picks
            // (`ignore_client_order`), as clients list AES-256 first.
            provider.cipher_suites = vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ];
            provider.kx_groups = vec![
                rustls::crypto::aws_lc_rs::kx_group::X25519,
                rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
                rustls::crypto::aws_lc_rs::kx_group::SECP384R1,
            ];
            Arc::new(provider)
        })
        .clone()
}

/// DER of a certificate's subject name.
pub fn subject_raw(der: &[u8]) -> Result<Vec<u8>, TlsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| TlsError::BadCertificate)?;
    Ok(cert.subject().as_raw().to_vec())
}

/// A signing key with its chain, checked to match.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider())?))
}

/// Builds an org's `ServerConfig`: a client verifier over its active CAs (roots or intermediates
/// alike are trust anchors), its active certificate (when it has one) or the platform default,
/// and resumption state of its own.
pub fn org_server_config(
    cas: &[ActiveCa],
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    active: Option<(Arc<CertifiedKey>, Vec<String>)>,
    platform: &Platform,
) -> Result<Arc<ServerConfig>, TlsError> {
    // webpki enforces the CAs' name constraints but e-mail ones, which `mail_constraints` takes
    // out of the trust anchors and enforces itself.
    let mut roots = RootCertStore::empty();
    let mut mail_constrained = Vec::new();
    for ca in cas {
        let (anchor, mail) =
            mail_constraints::anchor(&ca.der).map_err(|_| TlsError::BadCertificate)?;
        if let Some(mail) = mail {
            mail_constrained.push((anchor.clone(), mail));
        }
        roots.roots.push(anchor);
    }
    let anchors = roots.roots.clone();
    // The CAs' CRLs are checked on the leaf by the caching verifier (see `revocation` for why not
    // by webpki): a revoked leaf fails the handshake with `certificate_revoked`.
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    let revocations = revocation::Revocations::new(&crls, platform.deny_stale_crl)?;
    // Chains verified under this config's trust are remembered (see `chain_cache`).
    let verifier = Arc::new(chain_cache::CachingVerifier::new(
        verifier,
        chain_cache::CAPACITY,
        revocations,
        mail_constraints::MailCheck::new(anchors, mail_constrained),
    ));
    let resolver = OrgCertResolver {
        active,
        default: platform.default_cert.clone(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    // Resumption goes by tickets (stateless, keyed per org); the stateful cache serves only
    // clients without ticket support, so it stays small: at 4,096 entries it was most of an
    // org's memory (16 KiB resident each, ~160 MiB for 10,000 orgs).
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    // One ticket per full handshake: a device resumes one connection at a time, and each ticket
    // costs an encryption of the session (client chain included).
    config.send_tls13_tickets = 1;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The org's active certificate for the names it covers, else the platform default.
#[derive(Debug)]
struct OrgCertResolver {
    active: Option<(Arc<CertifiedKey>, Vec<String>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for OrgCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some((key, names)) = &self.active {
            let covered = match hello.server_name() {
                Some(sni) => names.iter().any(|pattern| pki::name_covers(pattern, sni)),
                // Taken as `no_sni_org`: the org's own certificate is what it chose to serve.
                None => true,
            };
            if covered {
                return Some(key.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// Which org a ClientHello's SNI names (DESIGN §2), or why none.
pub fn route(
    snapshot: &Snapshot,
    platform: &Platform,
    sni: Option<&str>,
) -> Result<Arc<OrgEntry>, Refusal> {
    let routed = match sni {
        None => Err(Refusal::NoSni),
        Some(name) => route_name(snapshot, platform, &name.to_ascii_lowercase()),
    };
    routed.or_else(|refusal| {
        platform
            .no_sni_org
            .as_ref()
            .and_then(|org| snapshot.org(org.as_str()))
            .cloned()
            .ok_or(refusal)
    })
}

fn route_name(
    snapshot: &Snapshot,
    platform: &Platform,
    name: &str,
) -> Result<Arc<OrgEntry>, Refusal> {
    let (label, rest) = name.split_once('.').ok_or(Refusal::UnrecognizedName)?;
    if rest == platform.domain {
        return snapshot.org(label).cloned().ok_or(Refusal::UnknownOrg);
    }
    // A custom domain `<org>.messaging.<custom>` is the org's when its active certificate covers it.
    if rest.starts_with("messaging.") {
        if let Some(entry) = snapshot.org(label) {
            if entry
                .server_names
                .iter()
                .any(|pattern| pki::name_covers(pattern, name))
            {
                return Ok(entry.clone());
            }
        }
    }
    Err(Refusal::UnrecognizedName)
}

/// Accepts one TLS connection under `deadline`: routes the ClientHello to its org, completes the
/// handshake with that org's config, and finds which of the org's currently active CAs the client
/// chain verified to.
pub async fn accept(
    stream: TcpStream,
    registry: &Registry,
    deadline: Duration,
) -> Result<(TlsStream<TcpStream>, PeerIdentity), Refused> {
    let started = Instant::now();
    let mut sni = None;
    let outcome = tokio::time::timeout(deadline, handshake(stream, registry, &mut sni)).await;
    let (stream, peer) = match outcome {
        Err(_) => {
            return Err(Refused {
                refusal: Refusal::Timeout,
                sni,
            })
        }
        Ok(Err(refusal)) => return Err(Refused { refusal, sni }),
        Ok(Ok(done)) => done,
    };
    metrics::histogram!(crate::metrics::HANDSHAKE_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::HANDSHAKES, "resumed" => if peer.resumed { "true" } else { "false" })
        .increment(1);
    Ok((stream, peer))
}

async fn handshake(
    stream: TcpStream,
    registry: &Registry,
    sni_out: &mut Option<String>,
) -> Result<(TlsStream<TcpStream>, PeerIdentity), Refusal> {
    let addr = stream.peer_addr().ok();
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|_| Refusal::Handshake)?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    *sni_out = sni.clone();
    let routed =
        route(&registry.snapshot(), registry.platform(), sni.as_deref()).and_then(|entry| {
            match &entry.tls {
                Some(config) => Ok((config.clone(), entry.org.id.clone())),
                None => Err(Refusal::OrgHasNoCa),
            }
        });
    let (config, org_id) = match routed {
        Ok(routed) => routed,
        Err(refusal) => {
            let alert = match refusal {
                Refusal::OrgHasNoCa => AlertDescription::HandshakeFailure,
                _ => AlertDescription::UnrecognisedName,
            };
            send_plaintext_alert(start.io, alert).await;
            return Err(refusal);
        }
    };
    let stream = start.into_stream(config).await.map_err(classify)?;
    let (_, conn) = stream.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let chain = conn
        .peer_certificates()
        .filter(|chain| !chain.is_empty())
        .ok_or(Refusal::NoClientCertificate)?;
    // The current snapshot, not the one the handshake started under.
    let entry = registry
        .snapshot()
        .org(org_id.as_str())
        .cloned()
        .ok_or(Refusal::UnknownOrg)?;
    // The leaf is parsed once, for its CA and its claims.
    let leaf = match X509Certificate::from_der(&chain[0]) {
        Ok(([], leaf)) => leaf,
        _ => return Err(Refusal::BadCertificate),
    };
    let (ca, leaf_issuer) =
        authenticating_ca(&entry.cas, &leaf, &chain[1..]).ok_or(Refusal::CaInactive)?;
    let ca_id = ca.id.clone();
    let ocsp = (ca.ocsp_mode != OcspMode::Off).then(|| {
        // What OCSP asks about is the leaf's issuer: the CA, or the intermediate on the path.
        let issuer = match leaf_issuer {
            Some(i) => &chain[1 + i],
            None => &ca.der,
        };
        Arc::new(ocsp::Subject {
            leaf: chain[0].to_vec(),
            issuer: issuer.to_vec(),
            aia_url: ocsp::aia_url(&chain[0]),
        })
    });
    let claims = identity::claims_of(&leaf).map_err(|_| Refusal::BadCertificate)?;
    let serial = crate::pki::serial_hex(leaf.raw_serial());
    let not_after = leaf.validity().not_after.to_datetime();
    let fingerprint_sha256 = crate::pki::fingerprint_sha256(&chain[0]);
    Ok((
        stream,
        PeerIdentity {
            org: entry,
            ca_id,
            claims,
            fingerprint_sha256,
            serial,
            not_after,
            resumed,
            sni,
            addr,
            ocsp,
        },
    ))
}

/// The active CA the (already verified) chain leads to, and which certificate issued the leaf:
/// `None` the CA itself, `Some(i)` the `i`-th of `intermediates`. The walk follows names from the
/// leaf: at each step an active CA whose subject is the current certificate's issuer, else the
/// intermediate of that subject. Certificates off that path are never looked at (a client may
/// send any extra certificate it likes), and where several share the subject (a key rollover, or
/// a look-alike slipped into the chain), the one whose key verifies the signature is taken.
fn authenticating_ca<'a>(
    cas: &'a [ActiveCa],
    leaf: &X509Certificate<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(&'a ActiveCa, Option<usize>)> {
    let parsed = intermediates
        .iter()
        .map(|der| X509Certificate::from_der(der).ok().map(|(_, cert)| cert))
        .collect::<Option<Vec<_>>>()?;
    let mut current = leaf;
    let mut leaf_issuer = None;
    for depth in 0..=parsed.len() {
        let issuer = current.issuer().as_raw();
        let named = || cas.iter().filter(|ca| ca.subject_raw == issuer);
        let ca = match named().count() {
            0 => None,
            1 => named().next(),
            _ => named().find(|ca| signed_by(current, &ca.der)),
        };
        if let Some(ca) = ca {
            return Some((ca, leaf_issuer));
        }
        let named = || {
            parsed
                .iter()
                .enumerate()
                .filter(|(_, cert)| cert.subject().as_raw() == issuer)
        };
        let (next, _) = match named().count() {
            0 => return None,
            1 => named().next()?,
            _ => named()
                .find(|(_, cert)| current.verify_signature(Some(cert.public_key())).is_ok())?,
        };
        if depth == 0 {
            leaf_issuer = Some(next);
        }
        current = &parsed[next];
    }
    None
}

fn signed_by(cert: &X509Certificate<'_>, issuer_der: &[u8]) -> bool {
    X509Certificate::from_der(issuer_der)
        .map(|(_, issuer)| cert.verify_signature(Some(issuer.public_key())).is_ok())
        .unwrap_or(false)
}

fn classify(error: std::io::Error) -> Refusal {
    let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return Refusal::Io;
    };
    match error {
        rustls::Error::NoCertificatesPresented => Refusal::NoClientCertificate,
        rustls::Error::InvalidCertificate(cert_error) => match cert_error {
            CertificateError::UnknownIssuer => Refusal::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Refusal::CertificateExpired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Refusal::CertificateNotYetValid
            }
            CertificateError::Revoked => Refusal::CertificateRevoked,
            CertificateError::Other(other)
                if other.0.downcast_ref::<webpki::Error>()
                    == Some(&webpki::Error::NameConstraintViolation) =>
            {
                Refusal::NameConstraintViolation
            }
            _ => Refusal::BadCertificate,
        },
        rustls::Error::AlertReceived(_) => Refusal::ClientAlert,
        _ => Refusal::Handshake,
    }
}

/// A fatal alert as a plaintext TLS record: before a `ServerConfig` is chosen there is no rustls
/// connection to send it, and before the ServerHello an alert travels in the clear.
async fn send_plaintext_alert(mut io: TcpStream, alert: AlertDescription) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, u8::from(alert)];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(&record).await;
        let _ = io.shutdown().await;
    })
    .await;
}
