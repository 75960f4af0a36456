//! TLS termination: ClientHello → SNI → that org's `ServerConfig` (server certificate by name,
//! client verifier over the org's active CAs, per-org resumption state), under one deadline. TLS
//! reads nothing above it: the caller routes the SNI and admits the verified chain through
//! [`accept`]'s arguments (the registry turns it into a typed `registry::PeerIdentity`, never a raw
//! connection the caller has to inspect), and an org's config is built from plain inputs
//! ([`OrgTls`]).
//!
//! Each org's `ServerConfig` is built once per registry change, never per connection. Its session
//! cache is its own and is replaced with it; its tickets are sealed with the org's keys, shared by
//! every node and rotated on a schedule (see `tickets`), and bound to the org's trust, so a
//! session resumes on any node but never under another org, nor across a change of the org's
//! trust (DESIGN §6, §12); a resumed session is still checked against the current snapshot after
//! the handshake, like a full one.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
mod tickets;

pub use tickets::TicketKeys;

use crate::crypto::provider;
use crate::pki;

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

/// Why a TLS connection was refused: the one table of refusal reasons (the TLS ones among them).
pub use crate::refusal::Refusal;

/// A refused handshake, with what is known for the one log event it gets.
pub struct Refused {
    pub refusal: Refusal,
    pub sni: Option<String>,
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

/// What an org's `ServerConfig` is built from: plain values, so that TLS reads no registry type.
pub struct OrgTls<'a> {
    /// DER of the org's active CAs (roots or intermediates alike are trust anchors).
    pub cas: &'a [&'a CertificateDer<'static>],
    pub crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    /// The org's active server certificate and the names it covers.
    pub active: Option<(Arc<CertifiedKey>, Vec<String>)>,
    /// Served for a name the active certificate does not cover.
    pub default_cert: Arc<CertifiedKey>,
    /// `revocation.on_stale_crl = "deny"`.
    pub deny_stale_crl: bool,
    /// The org's session ticket keys (they outlive this config).
    pub tickets: &'a Arc<TicketKeys>,
}

/// Builds an org's `ServerConfig`: a client verifier over its active CAs, its active certificate
/// (when it has one) or the platform default, and resumption state of its own.
pub fn org_server_config(org: OrgTls<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let OrgTls {
        cas,
        crls,
        active,
        default_cert,
        deny_stale_crl,
        tickets,
    } = org;
    let binding = tickets::binding(
        &cas.iter().map(|ca| ca.as_ref()).collect::<Vec<_>>(),
        &crls.iter().map(|crl| crl.as_ref()).collect::<Vec<_>>(),
        deny_stale_crl,
    );
    // webpki enforces the CAs' name constraints but e-mail ones, which `mail_constraints` takes
    // out of the trust anchors and enforces itself.
    let mut roots = RootCertStore::empty();
    let mut mail_constrained = Vec::new();
    for ca in cas {
        let (anchor, mail) = mail_constraints::anchor(ca).map_err(|_| TlsError::BadCertificate)?;
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
    let revocations = revocation::Revocations::new(&crls, deny_stale_crl)?;
    // Chains verified under this config's trust are remembered (see `chain_cache`).
    let verifier = Arc::new(chain_cache::CachingVerifier::new(
        verifier,
        chain_cache::CAPACITY,
        revocations,
        mail_constraints::MailCheck::new(anchors, mail_constrained),
    ));
    let resolver = OrgCertResolver {
        active,
        default: default_cert,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    // Resumption goes by tickets (stateless, keyed per org, open on every node); the stateful
    // cache serves only clients without ticket support, so it stays small: at 4,096 entries it
    // was most of an org's memory (16 KiB resident each, ~160 MiB for 10,000 orgs).
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer = tickets.ticketer(binding);
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

/// What a completed handshake hands to the layer that admits the client: the value `route` gave
/// for the ClientHello, and what the client showed.
pub struct Handshake<'a, T> {
    pub routed: T,
    /// The client's chain, leaf first, never empty.
    pub chain: &'a [CertificateDer<'static>],
    pub resumed: bool,
    /// SNI as sent, for logs.
    pub sni: Option<String>,
    /// The client's address.
    pub addr: Option<std::net::SocketAddr>,
}

/// Accepts one TLS connection under `deadline`: `route` picks the `ServerConfig` for the
/// ClientHello's SNI (with a value of its own, say the org), the handshake completes under it, and
/// `admit` turns the verified chain into the caller's peer, or refuses it. TLS reads nothing above
/// it: what it needs of the orgs comes through these two arguments.
pub async fn accept<T, P>(
    stream: TcpStream,
    deadline: Duration,
    route: impl FnOnce(Option<&str>) -> Result<(Arc<ServerConfig>, T), Refusal>,
    admit: impl FnOnce(Handshake<'_, T>) -> Result<P, Refusal>,
) -> Result<(TlsStream<TcpStream>, P), Refused> {
    let started = Instant::now();
    let mut sni = None;
    let outcome = tokio::time::timeout(deadline, handshake(stream, route, admit, &mut sni)).await;
    let (stream, peer, resumed) = match outcome {
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
    metrics::counter!(crate::metrics::HANDSHAKES, "resumed" => if resumed { "true" } else { "false" })
        .increment(1);
    Ok((stream, peer))
}

async fn handshake<T, P>(
    stream: TcpStream,
    route: impl FnOnce(Option<&str>) -> Result<(Arc<ServerConfig>, T), Refusal>,
    admit: impl FnOnce(Handshake<'_, T>) -> Result<P, Refusal>,
    sni_out: &mut Option<String>,
) -> Result<(TlsStream<TcpStream>, P, bool), Refusal> {
    let addr = stream.peer_addr().ok();
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|_| Refusal::Handshake)?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    *sni_out = sni.clone();
    let (config, routed) = match route(sni.as_deref()) {
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
    let peer = admit(Handshake {
        routed,
        chain,
        resumed,
        sni,
        addr,
    })?;
    Ok((stream, peer, resumed))
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
