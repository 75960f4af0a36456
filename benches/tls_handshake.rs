//! In-memory TLS 1.3 handshakes, no sockets: a rustls `ClientConnection` and `ServerConnection`
//! pump records to each other through a `Vec` (`write_tls` → `read_tls` → `process_new_packets`),
//! so each measurement is the CPU cost of one whole handshake, client and server work together.
//!
//! The device presents an ECDSA P-256 chain made at setup with rcgen (leaf + intermediate; the
//! server trusts the root); the server presents the platform default certificate (leaf + platform
//! CA) made by `pki`, as `Server::bind` makes it. Cases:
//!
//! - `bare_no_client_auth`: rustls without a client verifier, for reference (the cost of mTLS);
//! - `bare`: rustls `ServerConfig` with `WebPkiClientVerifier` over the root and a single cert;
//! - `org_config`: the project's `tls::org_server_config` (the per-org `ServerConfig` the
//!   registry builds), same CA, the platform default certificate;
//! - `org_config_claims`: that, plus what `tls::accept` does after every handshake that a bench
//!   can reach: `identity::claims(leaf)`. Finding the authenticating CA (`tls::authenticating_ca`)
//!   is private and not included; `post_handshake/x509_parse_chain` measures the two certificate
//!   parses it costs for this chain;
//! - `org_resumed`, `bare_resumed`: TLS 1.3 resumption (PSK + ECDHE) with a client session
//!   cache, the first handshake outside the timed loop; every timed one is checked to resume.
//!   `bare_ticketer_resumed` is `bare` plus the stateless ticketer the org config uses, which
//!   tells a ticketer cost apart from the rest of the org config.
//!
//! Criterion gives the detailed statistics; it does not compute ratios, so a last step measures
//! the pairs again, interleaved, with `Instant`, and prints `ratio a/b = X.XX` lines to stderr
//! (only under `cargo bench`, not when `cargo test --benches` runs each bench once).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::registry::{ActiveCa, Platform};
use portcullis::{identity, pki, tls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, RootCertStore};
use rustls::{ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SNI every handshake sends: org `acme` under the default platform domain.
const SNI: &str = "acme.messaging.localhost";
const DOMAIN: &str = "messaging.localhost";

/// The device side of the PKI: root CA → intermediate CA → leaf, all ECDSA P-256.
struct DevicePki {
    root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

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

    let leaf_key = p256();
    let mut leaf_params = CertificateParams::default();
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "d:sensor-type:device-0001");
    leaf_params.subject_alt_names = vec![
        SanType::Rfc822Name("ops@example.com".try_into().expect("ia5")),
        SanType::Rfc822Name("g:gateway-type:gw-0001".try_into().expect("ia5")),
    ];
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    leaf_params.not_before = now - time::Duration::days(1);
    leaf_params.not_after = now + time::Duration::days(90);
    let leaf = leaf_params
        .signed_by(&leaf_key, &intermediate_issuer)
        .expect("sign the leaf");

    DevicePki {
        root: root.der().clone(),
        intermediate: intermediate.der().clone(),
        leaf: leaf.der().clone(),
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
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
        ServerConfig::builder_with_provider(tls::provider())
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
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.device_roots(), tls::provider())
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
    /// server certificate of its own.
    fn org_config(&self) -> Arc<ServerConfig> {
        tls::org_server_config(&[self.active_ca()], Vec::new(), None, &self.platform)
            .expect("org config")
    }

    fn client_builder(
        &self,
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.platform_ca.clone())
            .expect("add platform CA");
        // The project's provider on the client too: X25519 only, as most devices offer.
        ClientConfig::builder_with_provider(tls::provider())
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

    fn anonymous_client(&self) -> Arc<ClientConfig> {
        let mut config = self.client_builder().with_no_client_auth();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }
}

/// Moves everything `from` has to send into `to`; true when anything moved.
fn transfer<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    buf: &mut Vec<u8>,
) -> bool {
    drain(from, buf);
    feed(to, buf);
    !buf.is_empty()
}

/// Everything `from` has to send, into `buf` (cleared first).
fn drain<A>(from: &mut ConnectionCommon<A>, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls to a Vec");
    }
}

/// `buf` read and processed by `to`.
fn feed<B>(to: &mut ConnectionCommon<B>, buf: &[u8]) {
    let mut rest = buf;
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls from a slice");
        to.process_new_packets().expect("handshake succeeds");
    }
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
        feed(&mut server, &buf);
        drain(&mut server, &mut buf);
        spent += start.elapsed();
        let answered = !buf.is_empty();
        feed(&mut client, &buf);
        if !sent && !answered {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    spent
}

/// One whole handshake, including the server's session tickets reaching the client.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> ServerConnection {
    let name = ServerName::try_from(SNI).expect("server name");
    let mut client = ClientConnection::new(client.clone(), name).expect("client connection");
    let mut server = ServerConnection::new(server.clone()).expect("server connection");
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let sent = transfer(&mut client, &mut server, &mut buf);
        let answered = transfer(&mut server, &mut client, &mut buf);
        if !sent && !answered {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    server
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

/// A full handshake plus the per-connection parsing `tls::accept` does that is public.
fn handshake_with_claims(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Vec<identity::Identity> {
    let conn = handshake(server, client);
    let chain = conn.peer_certificates().expect("client chain");
    identity::claims(&chain[0]).expect("claims")
}

/// The configs every case uses, built once.
struct Cases {
    bare_no_client_auth: Arc<ServerConfig>,
    bare: Arc<ServerConfig>,
    bare_ticketer: Arc<ServerConfig>,
    org: Arc<ServerConfig>,
    /// Resumption cases have servers of their own: full handshakes against `bare` fill its
    /// 256-entry stateful cache and evict the tickets a resuming client holds.
    bare_resume: Arc<ServerConfig>,
    org_resume: Arc<ServerConfig>,
    anonymous: Arc<ClientConfig>,
    device: Arc<ClientConfig>,
    /// One client session cache per resumption case, so no case resumes another's session.
    device_resume_bare: Arc<ClientConfig>,
    device_resume_bare_ticketer: Arc<ClientConfig>,
    device_resume_org: Arc<ClientConfig>,
}

fn cases(setup: &Setup) -> Cases {
    let mut bare_ticketer = setup.bare();
    bare_ticketer.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer");
    let cases = Cases {
        bare_no_client_auth: setup.bare_no_client_auth(),
        bare: Arc::new(setup.bare()),
        bare_ticketer: Arc::new(bare_ticketer),
        org: setup.org_config(),
        bare_resume: Arc::new(setup.bare()),
        org_resume: setup.org_config(),
        anonymous: setup.anonymous_client(),
        device: setup.device_client(false),
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
    cases
}

impl Cases {
    /// One handshake of the named case, as the criterion group runs it.
    fn run(&self, case: &str) {
        match case {
            "bare_no_client_auth" => drop(handshake(&self.bare_no_client_auth, &self.anonymous)),
            "bare" => drop(handshake(&self.bare, &self.device)),
            "org_config" => drop(handshake(&self.org, &self.device)),
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
const CASES: [&str; 7] = [
    "bare_no_client_auth",
    "bare",
    "org_config",
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
}

/// Per-connection and per-registry-change costs around the handshake.
fn around_handshake(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("post_handshake");
    group.bench_function("claims", |b| {
        b.iter(|| identity::claims(black_box(&setup.device.leaf)).expect("claims"))
    });
    // What `tls::authenticating_ca` parses for this chain (leaf, then intermediate, whose
    // issuer is the active CA); its byte comparisons are negligible beside the parses.
    group.bench_function("x509_parse_chain", |b| {
        b.iter(|| {
            for der in [&setup.device.leaf, &setup.device.intermediate] {
                let (_, cert) = X509Certificate::from_der(black_box(der)).expect("parses");
                black_box(cert.issuer().as_raw().len());
            }
        })
    });
    group.finish();
    // What the registry pays per org at load and on each change of that org.
    c.bench_function("org_server_config_build", |b| b.iter(|| setup.org_config()));
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
}

criterion_group!(benches, handshakes, around_handshake, ratios);
criterion_main!(benches);
