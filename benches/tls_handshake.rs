//! In-memory TLS 1.3 handshakes, no sockets: a rustls `ClientConnection` and `ServerConnection`
//! pump records to each other through a `Vec` (`write_tls` → `read_tls` → `process_new_packets`),
//! so each measurement is the CPU cost of one whole handshake, client and server work together.
//!
//! The device presents an ECDSA P-256 chain made at setup with rcgen (leaf + intermediate; the
//! server trusts the root); the server presents the platform default certificate (leaf + platform
//! CA) made by `pki`, as `Server::bind` makes it. Every case but the `new_device` ones presents
//! the same leaf, so through the org config it is a known device: the verified-chain cache
//! (`tls/chain_cache.rs`) skips the chain's verification (the CRL lookup, `tls/revocation.rs`,
//! runs for every chain, cached or not). Cases:
//!
//! - `bare_no_client_auth`: rustls without a client verifier, for reference (the cost of mTLS);
//! - `bare`: rustls `ServerConfig` with `WebPkiClientVerifier` over the root and a single cert;
//! - `org_config`: the project's `tls::org_server_config` (the per-org `ServerConfig` the
//!   registry builds), same CA, the platform default certificate;
//! - `org_config_new_device`: that, with a device the server has not verified before at every
//!   handshake (the next of [`NEW_DEVICES`] leaves, each its own key): the chain is verified;
//! - `org_config_crl10k`, `org_config_crl10k_new_device`: those two with the CRL of the leaves'
//!   issuer (the intermediate: only the end entity is checked) listing 10,000 revoked serials,
//!   none of a leaf that connects; setup checks that a leaf it lists is refused;
//! - `org_config_ocsp_warm`: `org_config` plus what the session path does after the handshake
//!   when the CA's `ocsp_mode` is soft or hard, `Ocsp::status(leaf, issuer, url)`, answered from a
//!   warm cache: setup serves one answer made by `openssl ocsp` on 127.0.0.1 and warms the cache
//!   with it; each timed check must answer without waiting, and the responder must have been
//!   asked once in all (`post_handshake/ocsp_status_warm` times that check alone);
//! - `org_config_claims`: `org_config`, plus what `registry::accept` does after every handshake that
//!   a bench can reach: `identity::claims(leaf)`. Finding the authenticating CA
//!   (`registry::handshake::authenticating_ca`) is private and not included; `post_handshake/x509_parse_chain`
//!   measures the two certificate parses it costs for this chain;
//! - `org_resumed`, `bare_resumed`: TLS 1.3 resumption (PSK + ECDHE) with a client session
//!   cache, the first handshake outside the timed loop; every timed one is checked to resume.
//!   `bare_ticketer_resumed` is `bare` plus the stateless ticketer the org config uses, which
//!   tells a ticketer cost apart from the rest of the org config.
//!
//! Criterion gives the detailed statistics; it does not compute ratios, so a last step measures
//! the pairs again, interleaved, with `Instant`, and prints `ratio a/b = X.XX` lines to stderr
//! (only under `cargo bench`, not when `cargo test --benches` runs each bench once).

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use portcullis::ocsp::{Ocsp, Verdict};
use portcullis::registry::{ActiveCa, Platform};
use portcullis::{identity, pki, tls};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind};
use rustls::{RootCertStore, SignatureScheme};
use rustls::{ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SNI every handshake sends: org `acme` under the default platform domain.
const SNI: &str = "acme.messaging.localhost";
const DOMAIN: &str = "messaging.localhost";

/// The device side of the PKI: root CA → intermediate CA → leaf, all ECDSA P-256.
struct DevicePki {
    root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    /// The intermediate's name and key: it issues the leaves, their CRL and their OCSP answers.
    intermediate_issuer: Issuer<'static, KeyPair>,
    leaf: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

/// Revoked serials in the CRL of the `crl10k` cases.
const CRL_ENTRIES: usize = 10_000;

/// Distinct devices the `new_device` cases cycle through: one more than the verified-chain cache
/// holds (`chain_cache::CAPACITY`, private to `tls`; it starts over when full). Going round,
/// a chain comes back only after the cache has started over since its last visit, so every
/// handshake verifies its chain.
const NEW_DEVICES: usize = 4097;

/// The common name of the bench device (its identity `d:sensor-type:device-0001`).
const DEVICE_CN: &str = "d:sensor-type:device-0001";

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a P-256 key")
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Bench Devices Inc.");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params
}

/// A 20-octet positive serial, random as a CA's are.
fn random_serial() -> SerialNumber {
    let mut serial: [u8; 20] = rand::random();
    serial[0] &= 0x7f;
    SerialNumber::from_slice(&serial)
}

/// A device certificate for a new key, issued by `issuer`: the bench device's names, client
/// auth, 90 days; `serial` as rcgen derives it (from the key) unless given.
fn device_leaf(
    issuer: &Issuer<'_, KeyPair>,
    serial: Option<SerialNumber>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = p256();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, DEVICE_CN);
    params.subject_alt_names = vec![
        SanType::Rfc822Name("ops@example.com".try_into().expect("ia5")),
        SanType::Rfc822Name("g:gateway-type:gw-0001".try_into().expect("ia5")),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = serial;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(90);
    let leaf = params.signed_by(&key, issuer).expect("sign the leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (leaf.der().clone(), key)
}

fn device_pki() -> DevicePki {
    let root_key = p256();
    let root_params = ca_params("Bench Device Root CA");
    let root = root_params.self_signed(&root_key).expect("sign the root");
    let root_issuer = Issuer::new(root_params, root_key);

    let intermediate_key = p256();
    let mut intermediate_params = ca_params("Bench Device Intermediate CA");
    intermediate_params.use_authority_key_identifier_extension = true;
    let intermediate = intermediate_params
        .signed_by(&intermediate_key, &root_issuer)
        .expect("sign the intermediate");
    let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);

    let (leaf, leaf_key) = device_leaf(&intermediate_issuer, None);
    DevicePki {
        root: root.der().clone(),
        intermediate: intermediate.der().clone(),
        intermediate_issuer,
        leaf,
        leaf_key,
    }
}

impl DevicePki {
    /// `count` devices of their own keys, each presenting leaf + intermediate.
    fn new_devices(&self, count: usize) -> Arc<[Arc<CertifiedKey>]> {
        (0..count)
            .map(|_| {
                let (leaf, key) = device_leaf(&self.intermediate_issuer, None);
                tls::certified_key(vec![leaf, self.intermediate.clone()], key)
                    .expect("certified key")
            })
            .collect()
    }

    /// The intermediate's CRL revoking `serials`, fresh for a week.
    fn crl(&self, serials: Vec<SerialNumber>) -> CertificateRevocationListDer<'static> {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .into_iter()
                .map(|serial_number| RevokedCertParams {
                    serial_number,
                    revocation_time: now - time::Duration::days(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.intermediate_issuer)
            .expect("sign the CRL");
        crl.der().clone()
    }
}

/// Everything the cases share.
struct Setup {
    device: DevicePki,
    platform: Platform,
    /// The platform CA the device trusts, and the server chain and key (as `Server::bind` makes).
    platform_ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

fn setup() -> Setup {
    let platform_ca = pki::generate_platform_ca().expect("platform CA");
    let (server_chain, server_key) =
        pki::issue_server_cert(&platform_ca, &[format!("*.{DOMAIN}")]).expect("server cert");
    let platform = Platform {
        domain: DOMAIN.to_owned(),
        default_cert: tls::certified_key(server_chain.clone(), server_key.clone_key())
            .expect("certified key"),
        no_sni_org: None,
        deny_stale_crl: false,
        ticket_rotation: std::time::Duration::from_secs(6 * 3600),
    };
    Setup {
        device: device_pki(),
        platform,
        platform_ca: platform_ca.cert_der,
        server_chain,
        server_key,
    }
}

impl Setup {
    fn device_roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.device.root.clone()).expect("add the root");
        Arc::new(roots)
    }

    fn bare_builder(&self) -> rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier> {
        ServerConfig::builder_with_provider(portcullis::crypto::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
    }

    /// rustls with no client verifier: the reference without mTLS.
    fn bare_no_client_auth(&self) -> Arc<ServerConfig> {
        let config = self
            .bare_builder()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .expect("single cert");
        Arc::new(config)
    }

    /// rustls with `WebPkiClientVerifier` over the device root and a single certificate; its
    /// resumption state is rustls' default (a 256-entry stateful cache, no ticketer).
    fn bare(&self) -> ServerConfig {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            self.device_roots(),
            portcullis::crypto::provider(),
        )
        .build()
        .expect("client verifier");
        self.bare_builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .expect("single cert")
    }

    fn active_ca(&self) -> ActiveCa {
        ActiveCa {
            id: "bench-ca".to_owned(),
            subject_raw: tls::subject_raw(&self.device.root).expect("subject"),
            der: self.device.root.clone(),
            ocsp_mode: portcullis::ocsp::OcspMode::Off,
            ocsp_url: None,
        }
    }

    /// What the registry builds for an org whose one active CA is the device root, with no
    /// server certificate of its own, and `crls`.
    fn org_config(&self, crls: Vec<CertificateRevocationListDer<'static>>) -> Arc<ServerConfig> {
        // The org's ticket keys as the registry gives them, from memory rather than a store.
        let tickets = tls::TicketKeys::new(self.platform.ticket_rotation, |epoch| {
            Ok(vec![(epoch, [7; 32])])
        });
        tickets.load();
        tls::org_server_config(tls::OrgTls {
            cas: &[&self.active_ca().der],
            crls,
            active: None,
            default_cert: self.platform.default_cert.clone(),
            deny_stale_crl: self.platform.deny_stale_crl,
            tickets: &tickets,
        })
        .expect("org config")
        .server
    }

    fn client_builder(
        &self,
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.platform_ca.clone())
            .expect("add platform CA");
        // The project's provider on the client too: X25519 only, as most devices offer.
        ClientConfig::builder_with_provider(portcullis::crypto::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
    }

    /// A device presenting leaf + intermediate; `resume` keeps rustls' client session cache.
    fn device_client(&self, resume: bool) -> Arc<ClientConfig> {
        let mut config = self
            .client_builder()
            .with_client_auth_cert(
                vec![self.device.leaf.clone(), self.device.intermediate.clone()],
                self.device.leaf_key.clone_key(),
            )
            .expect("client cert");
        if !resume {
            config.resumption = Resumption::disabled();
        }
        Arc::new(config)
    }

    /// A client presenting the next of `devices` at each handshake (see [`NewDevices`]).
    fn new_device_client(&self, devices: Arc<[Arc<CertifiedKey>]>) -> Arc<ClientConfig> {
        let devices = NewDevices {
            devices,
            next: AtomicUsize::new(0),
        };
        let mut config = self
            .client_builder()
            .with_client_cert_resolver(Arc::new(devices));
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    fn anonymous_client(&self) -> Arc<ClientConfig> {
        let mut config = self.client_builder().with_no_client_auth();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }
}

/// Devices, round-robin: each handshake of a client with this resolver presents the next one.
#[derive(Debug)]
struct NewDevices {
    devices: Arc<[Arc<CertifiedKey>]>,
    next: AtomicUsize,
}

impl ResolvesClientCert for NewDevices {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.devices[next % self.devices.len()].clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// An OCSP client whose cache holds a `good` answer for the bench leaf, and the responder on
/// 127.0.0.1 that gave it.
struct OcspWarm {
    ocsp: Ocsp,
    url: String,
    /// Requests the responder has had.
    requests: Arc<AtomicUsize>,
    /// Runs the responder (one worker, idle once the cache is warm).
    runtime: tokio::runtime::Runtime,
}

impl OcspWarm {
    /// Serves `openssl ocsp`'s answer for the bench leaf and warms the cache with one request.
    fn new(device: &DevicePki) -> OcspWarm {
        let answer = axum::body::Bytes::from(openssl_ocsp_answer(device));
        let requests = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let counter = requests.clone();
        let respond = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready((
                [(CONTENT_TYPE, "application/ocsp-response")],
                answer.clone(),
            ))
        };
        let url = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the responder");
            let url = format!("http://{}/ocsp", listener.local_addr().expect("address"));
            let app = axum::Router::new().route("/ocsp", axum::routing::post(respond));
            tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
            url
        });
        let warm = OcspWarm {
            ocsp: Ocsp::new(Duration::from_secs(5)),
            url,
            requests,
            runtime,
        };
        let first = warm.runtime.block_on(warm.ocsp.status(
            &device.leaf,
            &device.intermediate,
            &warm.url,
        ));
        assert_eq!(first, Verdict::Good, "the responder's answer is taken");
        assert_eq!(
            warm.check(&device.leaf, &device.intermediate),
            Verdict::Good
        );
        warm.assert_asked_once();
        warm
    }

    /// The check the session path makes, answered at the first poll: a cache miss would go to
    /// the network, which cannot answer there (and needs a runtime this poll is not in).
    fn check(&self, leaf: &[u8], issuer: &[u8]) -> Verdict {
        self.ocsp
            .status(leaf, issuer, &self.url)
            .now_or_never()
            .expect("a warm cache answers at once")
    }

    /// The cache was warm for every timed check: the responder was asked once in all.
    fn assert_asked_once(&self) {
        assert_eq!(self.requests.load(Ordering::SeqCst), 1, "OCSP requests");
    }
}

/// A DER OCSP response, `good` for the bench leaf, signed by its issuer (the intermediate),
/// fresh for a day: what `openssl ocsp` answers from a CA's index file.
fn openssl_ocsp_answer(device: &DevicePki) -> Vec<u8> {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_, leaf) = X509Certificate::from_der(&device.leaf).expect("leaf parses");
    let expiry = leaf
        .validity()
        .not_after
        .to_datetime()
        .format(time::macros::format_description!(
            "[year repr:last_two][month][day][hour][minute][second]Z"
        ))
        .expect("expiry");
    // openssl's index: status, expiry, revocation (none), serial in upper-case hex, file, DN.
    let serial = pki::serial_hex(leaf.raw_serial()).to_ascii_uppercase();
    let index = format!("V\t{expiry}\t\t{serial}\tunknown\t/CN={DEVICE_CN}\n");
    let certificate_pem = |der: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    for (name, contents) in [
        ("index.txt", index),
        ("ca.pem", certificate_pem(&device.intermediate)),
        ("ca.key", device.intermediate_issuer.key().serialize_pem()),
        ("leaf.pem", certificate_pem(&device.leaf)),
    ] {
        std::fs::write(dir.path().join(name), contents).expect("write an openssl input");
    }
    let output = Command::new("openssl")
        .current_dir(dir.path())
        .args(["ocsp", "-index", "index.txt", "-CA", "ca.pem"])
        .args(["-rsigner", "ca.pem", "-rkey", "ca.key", "-rmd", "sha256"])
        .args(["-issuer", "ca.pem", "-cert", "leaf.pem", "-no_nonce"])
        .args(["-ndays", "1", "-respout", "resp.der"])
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "openssl ocsp: {output:?}");
    std::fs::read(dir.path().join("resp.der")).expect("the OCSP response")
}

/// Moves everything `from` has to send into `to`; true when anything moved; the first error
/// `to` reports.
fn transfer<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    buf: &mut Vec<u8>,
) -> Result<bool, rustls::Error> {
    drain(from, buf);
    feed(to, buf)?;
    Ok(!buf.is_empty())
}

/// Everything `from` has to send, into `buf` (cleared first).
fn drain<A>(from: &mut ConnectionCommon<A>, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls to a Vec");
    }
}

/// `buf` read and processed by `to`; the first error it reports.
fn feed<B>(to: &mut ConnectionCommon<B>, buf: &[u8]) -> Result<(), rustls::Error> {
    let mut rest = buf;
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls from a slice");
        to.process_new_packets()?;
    }
    Ok(())
}

/// One whole handshake like [`handshake`], returning only the time spent in the server's calls
/// (creating the connection, reading and processing the client's flights, writing its own): the
/// server-side floor an end-to-end server cannot go below.
fn server_side(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> Duration {
    let name = ServerName::try_from(SNI).expect("server name");
    let mut client = ClientConnection::new(client.clone(), name).expect("client connection");
    let start = Instant::now();
    let mut server = ServerConnection::new(server.clone()).expect("server connection");
    let mut spent = start.elapsed();
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        drain(&mut client, &mut buf);
        let sent = !buf.is_empty();
        let start = Instant::now();
        feed(&mut server, &buf).expect("handshake succeeds");
        drain(&mut server, &mut buf);
        spent += start.elapsed();
        let answered = !buf.is_empty();
        feed(&mut client, &buf).expect("handshake succeeds");
        if !sent && !answered {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    spent
}

/// One whole handshake, including the server's session tickets reaching the client.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> ServerConnection {
    try_handshake(server, client).expect("handshake succeeds")
}

/// [`handshake`], or the first error either side reports.
fn try_handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Result<ServerConnection, rustls::Error> {
    let name = ServerName::try_from(SNI).expect("server name");
    let mut client = ClientConnection::new(client.clone(), name).expect("client connection");
    let mut server = ServerConnection::new(server.clone()).expect("server connection");
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let sent = transfer(&mut client, &mut server, &mut buf)?;
        let answered = transfer(&mut server, &mut client, &mut buf)?;
        if !sent && !answered {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    Ok(server)
}

/// A handshake that must have resumed.
fn resumed(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> ServerConnection {
    let conn = handshake(server, client);
    assert_eq!(
        conn.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "resumed"
    );
    conn
}

/// A full handshake plus the per-connection parsing `registry::accept` does that is public.
fn handshake_with_claims(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Vec<identity::Identity> {
    let conn = handshake(server, client);
    let chain = conn.peer_certificates().expect("client chain");
    identity::claims(&chain[0]).expect("claims")
}

/// A full handshake plus the session path's OCSP check of the leaf (issuer: the next
/// certificate of the chain), from a warm cache.
fn handshake_with_ocsp(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, ocsp: &OcspWarm) {
    let conn = handshake(server, client);
    let chain = conn.peer_certificates().expect("client chain");
    assert_eq!(ocsp.check(&chain[0], &chain[1]), Verdict::Good);
}

/// The configs every case uses, built once.
struct Cases {
    bare_no_client_auth: Arc<ServerConfig>,
    bare: Arc<ServerConfig>,
    bare_ticketer: Arc<ServerConfig>,
    org: Arc<ServerConfig>,
    /// `org` with the intermediate's CRL of [`CRL_ENTRIES`] serials.
    org_crl10k: Arc<ServerConfig>,
    /// The `new_device` cases have servers of their own, so that going through the devices
    /// never evicts the known device from the verified-chain cache of `org` or `org_crl10k`.
    org_new: Arc<ServerConfig>,
    org_crl10k_new: Arc<ServerConfig>,
    /// The size of that CRL, for the report.
    crl_bytes: usize,
    ocsp: OcspWarm,
    /// Resumption cases have servers of their own: full handshakes against `bare` fill its
    /// 256-entry stateful cache and evict the tickets a resuming client holds.
    bare_resume: Arc<ServerConfig>,
    org_resume: Arc<ServerConfig>,
    anonymous: Arc<ClientConfig>,
    device: Arc<ClientConfig>,
    /// Clients going through the same [`NEW_DEVICES`] devices, one per case so that each server
    /// sees all of them in turn.
    new_device: Arc<ClientConfig>,
    new_device_crl10k: Arc<ClientConfig>,
    /// One client session cache per resumption case, so no case resumes another's session.
    device_resume_bare: Arc<ClientConfig>,
    device_resume_bare_ticketer: Arc<ClientConfig>,
    device_resume_org: Arc<ClientConfig>,
}

fn cases(setup: &Setup) -> Cases {
    let mut bare_ticketer = setup.bare();
    bare_ticketer.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer");
    // One device of the intermediate is revoked, to check the CRL is consulted.
    let revoked_serial = random_serial();
    let (revoked_leaf, revoked_key) = device_leaf(
        &setup.device.intermediate_issuer,
        Some(revoked_serial.clone()),
    );
    let mut serials: Vec<SerialNumber> = (1..CRL_ENTRIES).map(|_| random_serial()).collect();
    serials.insert(serials.len() / 2, revoked_serial);
    let crl = setup.device.crl(serials);
    let devices = setup.device.new_devices(NEW_DEVICES);
    let cases = Cases {
        bare_no_client_auth: setup.bare_no_client_auth(),
        bare: Arc::new(setup.bare()),
        bare_ticketer: Arc::new(bare_ticketer),
        org: setup.org_config(Vec::new()),
        org_crl10k: setup.org_config(vec![crl.clone()]),
        org_new: setup.org_config(Vec::new()),
        org_crl10k_new: setup.org_config(vec![crl.clone()]),
        crl_bytes: crl.len(),
        ocsp: OcspWarm::new(&setup.device),
        bare_resume: Arc::new(setup.bare()),
        org_resume: setup.org_config(Vec::new()),
        anonymous: setup.anonymous_client(),
        device: setup.device_client(false),
        new_device: setup.new_device_client(devices.clone()),
        new_device_crl10k: setup.new_device_client(devices),
        device_resume_bare: setup.device_client(true),
        device_resume_bare_ticketer: setup.device_client(true),
        device_resume_org: setup.device_client(true),
    };
    // Prime each session cache outside any timed loop, and check the setup does what it says.
    for (server, client) in [
        (&cases.bare_resume, &cases.device_resume_bare),
        (&cases.bare_ticketer, &cases.device_resume_bare_ticketer),
        (&cases.org_resume, &cases.device_resume_org),
    ] {
        let first = handshake(server, client);
        assert_eq!(first.handshake_kind(), Some(HandshakeKind::Full));
        resumed(server, client);
    }
    let full = handshake(&cases.org, &cases.device);
    assert_eq!(full.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(full.peer_certificates().map(<[_]>::len), Some(2));
    assert_eq!(handshake_with_claims(&cases.org, &cases.device).len(), 2);
    let revoked = tls::certified_key(
        vec![revoked_leaf, setup.device.intermediate.clone()],
        revoked_key,
    )
    .expect("certified key");
    let revoked = setup.new_device_client(Arc::new([revoked]));
    for server in [&cases.org_crl10k, &cases.org_crl10k_new] {
        let refused = try_handshake(server, &revoked).err();
        assert!(
            matches!(
                refused,
                Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            ),
            "a device on the CRL is refused: {refused:?}"
        );
    }
    cases
}

impl Cases {
    /// One handshake of the named case, as the criterion group runs it.
    fn run(&self, case: &str) {
        match case {
            "bare_no_client_auth" => drop(handshake(&self.bare_no_client_auth, &self.anonymous)),
            "bare" => drop(handshake(&self.bare, &self.device)),
            "org_config" => drop(handshake(&self.org, &self.device)),
            "org_config_new_device" => drop(handshake(&self.org_new, &self.new_device)),
            "org_config_crl10k" => drop(handshake(&self.org_crl10k, &self.device)),
            "org_config_crl10k_new_device" => {
                drop(handshake(&self.org_crl10k_new, &self.new_device_crl10k))
            }
            "org_config_ocsp_warm" => handshake_with_ocsp(&self.org, &self.device, &self.ocsp),
            "org_config_claims" => drop(handshake_with_claims(&self.org, &self.device)),
            "bare_resumed" => drop(resumed(&self.bare_resume, &self.device_resume_bare)),
            "bare_ticketer_resumed" => drop(resumed(
                &self.bare_ticketer,
                &self.device_resume_bare_ticketer,
            )),
            "org_resumed" => drop(resumed(&self.org_resume, &self.device_resume_org)),
            other => unreachable!("no case {other}"),
        }
    }
}

/// The handshake cases, in the order they are measured (see the module doc).
const CASES: [&str; 11] = [
    "bare_no_client_auth",
    "bare",
    "org_config",
    "org_config_new_device",
    "org_config_crl10k",
    "org_config_crl10k_new_device",
    "org_config_ocsp_warm",
    "org_config_claims",
    "bare_resumed",
    "bare_ticketer_resumed",
    "org_resumed",
];

fn handshakes(c: &mut Criterion) {
    let setup = setup();
    let cases = cases(&setup);
    let mut group = c.benchmark_group("tls13_handshake");
    for case in CASES {
        group.bench_function(case, |b| b.iter(|| cases.run(case)));
    }
    group.finish();
    cases.ocsp.assert_asked_once();
}

/// Per-connection and per-registry-change costs around the handshake.
fn around_handshake(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("post_handshake");
    group.bench_function("claims", |b| {
        b.iter(|| identity::claims(black_box(&setup.device.leaf)).expect("claims"))
    });
    // What `registry::handshake::authenticating_ca` parses for this chain (leaf, then intermediate, whose
    // issuer is the active CA); its byte comparisons are negligible beside the parses.
    group.bench_function("x509_parse_chain", |b| {
        b.iter(|| {
            for der in [&setup.device.leaf, &setup.device.intermediate] {
                let (_, cert) = X509Certificate::from_der(black_box(der)).expect("parses");
                black_box(cert.issuer().as_raw().len());
            }
        })
    });
    // The session path's OCSP check answered from a warm cache, alone.
    let ocsp = OcspWarm::new(&setup.device);
    group.bench_function("ocsp_status_warm", |b| {
        b.iter(|| ocsp.check(black_box(&setup.device.leaf), &setup.device.intermediate))
    });
    group.finish();
    ocsp.assert_asked_once();
    // What the registry pays per org at load and on each change of that org.
    c.bench_function("org_server_config_build", |b| {
        b.iter(|| setup.org_config(Vec::new()))
    });
}

/// Median over `rounds` of the mean time of `per_round` calls, for each of two closures run in
/// alternating order, after a warm-up: interleaving keeps a noisy neighbour from biasing one side.
fn interleaved(
    a: &mut dyn FnMut(),
    b: &mut dyn FnMut(),
    rounds: usize,
    per_round: u32,
) -> (Duration, Duration) {
    for _ in 0..per_round * 2 {
        a();
        b();
    }
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..per_round {
            f();
        }
        start.elapsed() / per_round
    };
    let (mut times_a, mut times_b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            times_a.push(time(a));
            times_b.push(time(b));
        } else {
            times_b.push(time(b));
            times_a.push(time(a));
        }
    }
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    (median(times_a), median(times_b))
}

fn ratios(_: &mut Criterion) {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each bench once without it.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let setup = setup();
    let cases = cases(&setup);
    eprintln!(
        "\nthe crl10k cases' CRL: {CRL_ENTRIES} entries, {} KiB",
        cases.crl_bytes / 1024
    );
    const ROUNDS: usize = 15;
    const PER_ROUND: u32 = 40;
    // The server's share alone: median over many handshakes (the BENCHMARKS.md floor).
    let median_server_side = |server: &Arc<ServerConfig>, client: &Arc<ClientConfig>| {
        let mut times: Vec<Duration> = (0..ROUNDS * PER_ROUND as usize)
            .map(|_| server_side(server, client))
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    eprintln!(
        "\nserver side only (median of {} handshakes):",
        ROUNDS * PER_ROUND as usize
    );
    for (label, server, client) in [
        ("bare, full mTLS", &cases.bare, &cases.device),
        (
            "org_config, full mTLS (known chain)",
            &cases.org,
            &cases.device,
        ),
        (
            "org_config, full mTLS (new device)",
            &cases.org_new,
            &cases.new_device,
        ),
        (
            "org_config_crl10k, full mTLS (new device)",
            &cases.org_crl10k_new,
            &cases.new_device_crl10k,
        ),
        (
            "bare, no client auth",
            &cases.bare_no_client_auth,
            &cases.anonymous,
        ),
        (
            "bare, resumed",
            &cases.bare_resume,
            &cases.device_resume_bare,
        ),
        (
            "org_config, resumed",
            &cases.org_resume,
            &cases.device_resume_org,
        ),
    ] {
        let time = median_server_side(server, client);
        eprintln!("server side {label}: {:.1} µs", time.as_secs_f64() * 1e6);
    }
    eprintln!(
        "\nratios (median of {ROUNDS} interleaved rounds of {PER_ROUND} handshakes per case):"
    );
    for (a, b) in [
        ("org_config", "bare"),
        ("org_resumed", "bare_resumed"),
        ("org_resumed", "bare_ticketer_resumed"),
        ("org_config_claims", "org_config"),
        ("bare", "bare_no_client_auth"),
        ("org_resumed", "org_config"),
        ("org_config_new_device", "org_config"),
        ("org_config_crl10k", "org_config"),
        ("org_config_crl10k_new_device", "org_config_new_device"),
        ("org_config_ocsp_warm", "org_config"),
    ] {
        let (time_a, time_b) = interleaved(
            &mut || cases.run(a),
            &mut || cases.run(b),
            ROUNDS,
            PER_ROUND,
        );
        eprintln!(
            "ratio {a}/{b} = {:.2}   ({a} {:.1} µs, {b} {:.1} µs)",
            time_a.as_secs_f64() / time_b.as_secs_f64(),
            time_a.as_secs_f64() * 1e6,
            time_b.as_secs_f64() * 1e6,
        );
    }
    cases.ocsp.assert_asked_once();
}

criterion_group!(benches, handshakes, around_handshake, ratios);
criterion_main!(benches);
