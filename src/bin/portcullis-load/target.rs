//! The endpoint under test and the identities the tool presents to it: addresses, the TLS client
//! configuration (server trust, SNI), and client certificates minted from a CA key.
//!
//! Everything here runs before a timed phase: certificates are minted and every `ClientConfig`
//! is built up front, so a measurement times handshakes, not key generation.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use portcullis::codec::Protocol;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Where and how to connect; shared by every connection of a run.
pub struct Endpoint {
    /// One address per `--port`; connections go round robin (the embedded broker has several
    /// listeners, each with its own accept loop).
    addrs: Vec<SocketAddr>,
    next_addr: AtomicUsize,
    pub tls: Option<Tls>,
    pub protocol: Protocol,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Deadline of every network step (TCP connect, handshake, each awaited packet, each write).
    pub step_timeout: Duration,
}

/// What the endpoint needs to be told to build this.
pub struct EndpointOptions<'a> {
    pub host: &'a str,
    pub ports: &'a [u16],
    pub sni: Option<&'a str>,
    pub ca: Option<&'a Path>,
    pub plain: bool,
    pub protocol: Protocol,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub step_timeout: Duration,
}

impl Endpoint {
    pub fn new(options: EndpointOptions<'_>) -> anyhow::Result<Endpoint> {
        if options.ports.is_empty() {
            bail!("--port needs at least one port");
        }
        let mut addrs = Vec::new();
        for &port in options.ports {
            let addr = (options.host, port)
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {}:{port}", options.host))?
                .next()
                .ok_or_else(|| anyhow!("{}:{port} resolves to no address", options.host))?;
            addrs.push(addr);
        }
        let tls = if options.plain {
            None
        } else {
            let ca = options
                .ca
                .ok_or_else(|| anyhow!("--ca FILE is required for TLS (or give --plain)"))?;
            let name = options.sni.unwrap_or(options.host).to_owned();
            let server_name = ServerName::try_from(name.clone())
                .map_err(|_| anyhow!("{name:?} is not a valid server name"))?;
            Some(Tls::new(ca, server_name)?)
        };
        Ok(Endpoint {
            addrs,
            next_addr: AtomicUsize::new(0),
            tls,
            protocol: options.protocol,
            keep_alive: options.keep_alive,
            username: options.username,
            password: options.password,
            step_timeout: options.step_timeout,
        })
    }

    /// The next address, round robin.
    pub fn next_addr(&self) -> SocketAddr {
        let i = self.next_addr.fetch_add(1, Ordering::Relaxed);
        // `addrs` is never empty (checked in `new`).
        self.addrs[i % self.addrs.len()]
    }

    /// For reports: `host:port[,port…]` as connected to.
    pub fn describe(&self) -> String {
        self.addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Server trust and name; builds one `ClientConfig` per client identity.
pub struct Tls {
    pub server_name: ServerName<'static>,
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl Tls {
    fn new(ca: &Path, server_name: ServerName<'static>) -> anyhow::Result<Tls> {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let certs = portcullis::pki::certs_from_pem(&pem)
            .with_context(|| format!("{} holds no usable certificate", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("{} is not a usable trust anchor", ca.display()))?;
        }
        let provider = portcullis::crypto::provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("cannot build the server certificate verifier")?;
        Ok(Tls {
            server_name,
            verifier,
            provider,
        })
    }

    /// A client configuration presenting `identity` (if any). `resume`: keep a session cache, so
    /// connections made with this same configuration after the first resume; otherwise resumption
    /// is off and every handshake is a full one.
    pub fn client_config(
        &self,
        identity: Option<&ClientIdentity>,
        resume: bool,
    ) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("the crypto provider supports no TLS version")?
            .with_webpki_verifier(self.verifier.clone());
        let mut config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .context("the minted client certificate is not usable")?,
            None => builder.with_no_client_auth(),
        };
        config.resumption = if resume {
            Resumption::in_memory_sessions(8)
        } else {
            Resumption::disabled()
        };
        Ok(Arc::new(config))
    }
}

/// A client certificate (leaf only: the server holds the CA) and its key.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Issues client certificates from `--client-ca-cert` and `--client-ca-key`.
pub struct Minter {
    issuer: Issuer<'static, KeyPair>,
}

impl Minter {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Minter> {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("cannot read {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("cannot read {}", key.display()))?;
        // PKCS#8 or SEC1 ("EC PRIVATE KEY", what `openssl ecparam -genkey` writes).
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| anyhow!("{}: not a usable private key: {e}", key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| anyhow!("{}: not a usable CA certificate: {e}", cert.display()))?;
        Ok(Minter { issuer })
    }

    /// One certificate per subject (ECDSA P-256, EKU clientAuth, valid from an hour ago for a
    /// day), minted on every core.
    pub fn mint(&self, subjects: &[Subject]) -> anyhow::Result<Vec<ClientIdentity>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(subjects.len().max(1));
        let chunk = subjects.len().div_ceil(threads).max(1);
        let results: Vec<anyhow::Result<Vec<ClientIdentity>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = subjects
                .chunks(chunk)
                .map(|chunk| scope.spawn(move || chunk.iter().map(|s| self.mint_one(s)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a minting thread panicked")))
                })
                .collect()
        });
        let mut identities = Vec::with_capacity(subjects.len());
        for result in results {
            identities.extend(result?);
        }
        Ok(identities)
    }

    fn mint_one(&self, subject: &Subject) -> anyhow::Result<ClientIdentity> {
        let common_name = subject.common_name.as_str();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| anyhow!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        for email in &subject.emails {
            let email = email
                .as_str()
                .try_into()
                .map_err(|_| anyhow!("{email:?} cannot be a SAN email (IA5String)"))?;
            params.subject_alt_names.push(SanType::Rfc822Name(email));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| anyhow!("cannot sign a client certificate for {common_name:?}: {e}"))?;
        Ok(ClientIdentity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// The names a minted certificate carries: the subject CN and SAN emails (Portcullis takes both as
/// identities the certificate claims).
pub struct Subject {
    pub common_name: String,
    pub emails: Vec<String>,
}

/// `template` with every `{i}` replaced by `n`.
pub fn expand(template: &str, n: usize) -> String {
    template.replace("{i}", &n.to_string())
}

/// What one connection presents: its TLS configuration (certificate included) and client id.
pub struct ConnectionSpec {
    pub tls: Option<Arc<ClientConfig>>,
    pub client_id: String,
}

/// How long preparing a role's connections took, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrepareTimes {
    pub mint: Duration,
    pub configs: Duration,
    pub minted: usize,
}

impl PrepareTimes {
    pub fn add(&mut self, other: PrepareTimes) {
        self.mint += other.mint;
        self.configs += other.configs;
        self.minted += other.minted;
    }
}

/// Who a group of connections is: certificates from `minter` (none: TLS without a client
/// certificate) with CN `identity_template`, client ids `client_id_template`; `{i}` counts from
/// `first`.
pub struct Role<'a> {
    pub minter: Option<&'a Minter>,
    pub identity_template: &'a str,
    pub client_id_template: &'a str,
    pub first: usize,
}

/// Specs for `count` connections, each with its own certificate and client id, resumption off.
/// Without a minter, TLS connections share one configuration.
pub fn prepare(
    endpoint: &Endpoint,
    role: &Role<'_>,
    count: usize,
) -> anyhow::Result<(Vec<ConnectionSpec>, PrepareTimes)> {
    let Role {
        minter,
        identity_template,
        client_id_template,
        first,
    } = *role;
    let indices = first..first + count;
    let mut times = PrepareTimes::default();
    let client_ids: Vec<String> = indices
        .clone()
        .map(|n| expand(client_id_template, n))
        .collect();
    let Some(tls) = &endpoint.tls else {
        let specs = client_ids
            .into_iter()
            .map(|client_id| ConnectionSpec {
                tls: None,
                client_id,
            })
            .collect();
        return Ok((specs, times));
    };
    let configs = match minter {
        Some(minter) => {
            let subjects: Vec<Subject> = indices
                .map(|n| Subject {
                    common_name: expand(identity_template, n),
                    emails: Vec::new(),
                })
                .collect();
            let started = Instant::now();
            let identities = minter.mint(&subjects)?;
            times.mint = started.elapsed();
            times.minted = identities.len();
            let started = Instant::now();
            let configs = identities
                .iter()
                .map(|identity| tls.client_config(Some(identity), false))
                .collect::<anyhow::Result<Vec<_>>>()?;
            times.configs = started.elapsed();
            configs
        }
        None => {
            let shared = tls.client_config(None, false)?;
            vec![shared; client_ids.len()]
        }
    };
    let specs = configs
        .into_iter()
        .zip(client_ids)
        .map(|(config, client_id)| ConnectionSpec {
            tls: Some(config),
            client_id,
        })
        .collect();
    Ok((specs, times))
}

/// Most identities one resumption certificate claims (its SAN emails travel in each full
/// handshake, so the certificate must stay small).
pub const MAX_CLAIMS_PER_CERTIFICATE: usize = 256;

/// Specs for `n` connections made by `workers` workers, each presenting one certificate: worker
/// `w` makes connections `w, w + workers, …` with one configuration (one certificate, and with
/// `resume` one session cache, so its connections after the first resume; without, every
/// handshake is a full one by a known device).
/// Unless `reuse_client_id`, its certificate claims the identity of every connection it makes (CN
/// the first, SAN emails the rest), so each connection keeps its own client id; with it, all of a
/// worker's connections use the worker's client id (a device reconnecting).
pub fn prepare_per_worker(
    endpoint: &Endpoint,
    role: &Role<'_>,
    n: usize,
    workers: usize,
    reuse_client_id: bool,
    resume: bool,
) -> anyhow::Result<(Vec<ConnectionSpec>, PrepareTimes)> {
    let Role {
        minter,
        identity_template,
        client_id_template,
        first,
    } = *role;
    let stripe = |w: usize| (w..n).step_by(workers.max(1));
    let mut times = PrepareTimes::default();
    let client_id = |i: usize| {
        let owner = if reuse_client_id { i % workers } else { i };
        expand(client_id_template, first + owner)
    };
    let configs: Vec<Option<Arc<ClientConfig>>> = match (&endpoint.tls, minter) {
        (None, _) => vec![None; workers],
        (Some(tls), None) => (0..workers)
            .map(|_| tls.client_config(None, resume).map(Some))
            .collect::<anyhow::Result<_>>()?,
        (Some(tls), Some(minter)) => {
            if !reuse_client_id && n.div_ceil(workers) > MAX_CLAIMS_PER_CERTIFICATE {
                bail!(
                    "{} connections per worker is more than one certificate can claim \
                     ({MAX_CLAIMS_PER_CERTIFICATE}); raise -t or give --reuse-client-id",
                    n.div_ceil(workers)
                );
            }
            let subjects: Vec<Subject> = (0..workers)
                .map(|w| Subject {
                    common_name: expand(identity_template, first + w),
                    emails: if reuse_client_id {
                        Vec::new()
                    } else {
                        stripe(w)
                            .skip(1)
                            .map(|i| expand(identity_template, first + i))
                            .collect()
                    },
                })
                .collect();
            let started = Instant::now();
            let identities = minter.mint(&subjects)?;
            times.mint = started.elapsed();
            times.minted = identities.len();
            let started = Instant::now();
            let configs = identities
                .iter()
                .map(|identity| tls.client_config(Some(identity), resume).map(Some))
                .collect::<anyhow::Result<_>>()?;
            times.configs = started.elapsed();
            configs
        }
    };
    let specs = (0..n)
        .map(|i| ConnectionSpec {
            tls: configs.get(i % workers).cloned().flatten(),
            client_id: client_id(i),
        })
        .collect();
    Ok((specs, times))
}
