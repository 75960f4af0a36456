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
//!
//! The connection is rustls's unbuffered one, carried by [`Stream`]: an idle session holds no TLS
//! buffer (see `stream`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::server::{
    Accepted, Acceptor, ClientHello, ResolvesServerCert, ServerConfig, UnbufferedServerConnection,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

mod chain_cache;
mod mail_constraints;
mod revocation;
mod stream;
mod tickets;

pub use stream::Stream;
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

/// An org's TLS: the `ServerConfig` its handshakes run under, and the client verifier in it,
/// which `POST …/explain` runs on a chain without a connection.
pub struct OrgConfig {
    pub server: Arc<ServerConfig>,
    verifier: Arc<chain_cache::CachingVerifier>,
}

impl OrgConfig {
    /// What this org's handshake would say of `chain` (leaf first) now: everything it checks of
    /// a chain (issuer, validity, name constraints, CRLs), not the client's proof that it holds
    /// the key, which needs a connection.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<(), Refusal> {
        let (leaf, intermediates) = chain.split_first().ok_or(Refusal::NoClientCertificate)?;
        self.verifier
            .check(leaf, intermediates, UnixTime::now())
            .map_err(|error| refusal_of(&error))
    }
}

/// Builds an org's `ServerConfig`: a client verifier over its active CAs, its active certificate
/// (when it has one) or the platform default, and resumption state of its own.
pub fn org_server_config(org: OrgTls<'_>) -> Result<OrgConfig, TlsError> {
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
        .with_client_cert_verifier(verifier.clone())
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
    Ok(OrgConfig {
        server: Arc::new(config),
        verifier,
    })
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
) -> Result<(Stream, P), Refused> {
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
    mut io: TcpStream,
    route: impl FnOnce(Option<&str>) -> Result<(Arc<ServerConfig>, T), Refusal>,
    admit: impl FnOnce(Handshake<'_, T>) -> Result<P, Refusal>,
    sni_out: &mut Option<String>,
) -> Result<(Stream, P, bool), Refusal> {
    let addr = io.peer_addr().ok();
    let (hello, accepted) = client_hello(&mut io).await?;
    let sni = accepted.client_hello().server_name().map(str::to_owned);
    drop(accepted);
    *sni_out = sni.clone();
    let (config, routed) = match route(sni.as_deref()) {
        Ok(routed) => routed,
        Err(refusal) => {
            let alert = match refusal {
                Refusal::OrgHasNoCa => AlertDescription::HandshakeFailure,
                _ => AlertDescription::UnrecognisedName,
            };
            send_plaintext_alert(io, alert).await;
            return Err(refusal);
        }
    };
    let conn = UnbufferedServerConnection::new(config).map_err(|_| Refusal::Handshake)?;
    let stream = Stream::handshake(io, conn, hello).await.map_err(classify)?;
    let conn = stream.connection();
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

/// Reads the ClientHello into a buffer of ours, for a throwaway `Acceptor` to parse: the SNI in
/// it picks the org's config, and the connection made under that config is fed the same bytes.
/// (rustls's `Accepted` turns only into a buffered connection, which would keep a 4 KiB read
/// buffer for the connection's life; see `stream`.)
async fn client_hello(io: &mut TcpStream) -> Result<(Vec<u8>, Accepted), Refusal> {
    let mut acceptor = Acceptor::default();
    let mut read = Vec::new();
    loop {
        let from = read.len();
        read.reserve(4096);
        if io
            .read_buf(&mut read)
            .await
            .map_err(|_| Refusal::Handshake)?
            == 0
        {
            return Err(Refusal::Handshake);
        }
        let mut fresh = &read[from..];
        // The acceptor takes at most 4 KiB per read, and parses between reads (it holds more
        // than a record only while joining a ClientHello split over several).
        while !fresh.is_empty() {
            acceptor
                .read_tls(&mut fresh)
                .map_err(|_| Refusal::Handshake)?;
            match acceptor.accept() {
                Ok(Some(accepted)) => return Ok((read, accepted)),
                Ok(None) => {}
                Err((_, mut alert)) => {
                    let mut record = Vec::new();
                    if alert.write_all(&mut record).is_ok() {
                        let _ = io.try_write(&record);
                    }
                    return Err(Refusal::Handshake);
                }
            }
        }
    }
}

fn classify(error: std::io::Error) -> Refusal {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(error) => refusal_of(error),
        None => Refusal::Io,
    }
}

/// The refusal a rustls error in a handshake is reported as.
fn refusal_of(error: &rustls::Error) -> Refusal {
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
            // Its CA's CRL is past its nextUpdate, under `revocation.on_stale_crl = "deny"`.
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Refusal::CrlStale,
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
