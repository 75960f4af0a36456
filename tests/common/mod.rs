//! Test harness: a real server on 127.0.0.1:0 with its own data directory, a PKI made at test time
//! with rcgen, real TLS clients (tokio-rustls) and real MQTT clients (rumqttc).
//!
//! rumqttc takes the SNI name from the host it resolves, and `acme.messaging.localhost` does not
//! resolve here; so MQTT clients connect in plain TCP to a per-client bridge that opens the real
//! TLS connection (SNI and client certificate of the test's choosing) to the server.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod engines;
pub mod ocsp;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis::clock::Clock;
use portcullis::config::Config;
use portcullis::server::Server;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use time::{Duration as TimeDuration, OffsetDateTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub mod nodes;
pub mod notices;
pub mod pg;

/// Every await in a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn step<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("test step timed out")
}

/// Polls `check` every 20 ms until it returns true, for at most `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the event stream until `done` says what came is enough; returns all of it.
pub async fn read_events(response: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    while !done(&seen) {
        let chunk = step(response.chunk())
            .await
            .unwrap()
            .expect("the stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// A CA made at test time.
pub struct TestCa {
    pub cert: CertificateDer<'static>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Intermediates above this CA, up to and not including the root.
    pub parents: Vec<CertificateDer<'static>>,
    pub is_root: bool,
}

/// A client certificate chain (leaf first) and its key.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientCert {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        let blocks: Vec<pem::Pem> = self
            .chain
            .iter()
            .map(|der| pem::Pem::new("CERTIFICATE", der.to_vec()))
            .collect();
        pem::encode_many(&blocks)
    }
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        ClientCert {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = OffsetDateTime::now_utc() - TimeDuration::days(1);
    params.not_after = OffsetDateTime::now_utc() + TimeDuration::days(365);
    params
}

impl TestCa {
    pub fn root(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            parents: Vec::new(),
            is_root: true,
        }
    }

    pub fn intermediate(&self, cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut parents = Vec::new();
        if !self.is_root {
            parents.push(self.cert.clone());
            parents.extend(self.parents.iter().cloned());
        }
        TestCa {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            parents,
            is_root: false,
        }
    }

    /// This CA's private key, PKCS#8 PEM (for a load tool that mints client certificates).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// This CA's private key, PKCS#8 DER (for a test OCSP responder).
    pub fn key_pkcs8(&self) -> Vec<u8> {
        self.issuer.key().serialize_der()
    }

    /// A CRL (PEM) of this CA revoking `revoked`, issued at `this_update`, next due at
    /// `next_update`.
    pub fn crl(
        &self,
        revoked: &[&ClientCert],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> String {
        let revoked_certs = revoked
            .iter()
            .map(|cert| {
                let (_, leaf) = x509_parser::parse_x509_certificate(&cert.chain[0]).unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(leaf.raw_serial()),
                    revocation_time: this_update,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(this_update.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    /// Signs a PKCS#10 request (PEM) as an outside CA would: the certificate as PEM.
    pub fn sign_csr(&self, csr_pem: &str) -> String {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.signed_by(&self.issuer).unwrap().pem()
    }

    /// A client certificate with subject `cn` and SAN emails, valid from yesterday for 30 days.
    pub fn client(&self, cn: &str, emails: &[&str]) -> ClientCert {
        let now = OffsetDateTime::now_utc();
        self.client_valid(
            cn,
            emails,
            now - TimeDuration::days(1),
            now + TimeDuration::days(30),
        )
    }

    pub fn client_valid(
        &self,
        cn: &str,
        emails: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = emails
            .iter()
            .map(|e| SanType::Rfc822Name((*e).try_into().unwrap()))
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = vec![cert.der().clone()];
        // Intermediates travel with the leaf.
        if !self.is_root {
            chain.push(self.cert.clone());
            chain.extend(self.parents.iter().cloned());
        }
        ClientCert {
            chain,
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// A server certificate (PEM chain, PEM PKCS#8 key) issued by a test CA.
pub struct ServerPems {
    pub chain: String,
    pub key: String,
    pub leaf: CertificateDer<'static>,
}

impl TestCa {
    pub fn server(&self, names: &[&str]) -> ServerPems {
        let now = OffsetDateTime::now_utc();
        self.server_valid(
            names,
            now - TimeDuration::days(1),
            now + TimeDuration::days(90),
            true,
        )
    }

    pub fn server_valid(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        server_auth: bool,
    ) -> ServerPems {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "server");
        params.extended_key_usages = if server_auth {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = cert.pem();
        if !self.is_root {
            chain.push_str(&self.pem);
        }
        ServerPems {
            chain,
            key: key.serialize_pem(),
            leaf: cert.der().clone(),
        }
    }
}

/// The TLS alert a refused handshake ended with, as the client saw it: from the handshake itself,
/// or (TLS 1.3 client authentication) from the first read after it.
pub async fn tls_refusal(
    result: std::io::Result<TlsStream<TcpStream>>,
) -> rustls::AlertDescription {
    use tokio::io::AsyncReadExt;
    let error = match result {
        Err(error) => error,
        Ok(mut stream) => {
            let mut buf = [0u8; 64];
            match step(stream.read(&mut buf)).await {
                Err(error) => error,
                Ok(n) => panic!("expected a TLS alert, read {n} bytes"),
            }
        }
    };
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => panic!("expected a TLS alert, got {error:?}"),
    }
}

/// The server under test, with its data directory.
pub struct TestServer {
    pub mqtts: SocketAddr,
    pub admin: SocketAddr,
    pub token: String,
    pub data_dir: PathBuf,
    pub platform_ca: CertificateDer<'static>,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    http: reqwest::Client,
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::defaults().unwrap();
    config.mqtts.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.store.data_dir = data_dir.to_path_buf();
    config.store.url = test_store_url(data_dir);
    config.mqtts.connect_timeout = Duration::from_secs(5);
    config.mqtts.handshake_timeout = Duration::from_secs(5);
    config
}

/// `PORTCULLIS_TEST_STORE=postgres` runs every harness server on PostgreSQL instead of SQLite:
/// one fresh database per data directory, its URL kept in the directory so a restart reaches the
/// same one.
fn test_store_url(data_dir: &std::path::Path) -> Option<String> {
    if std::env::var("PORTCULLIS_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    let file = data_dir.join("test-store-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let url = pg::database();
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&file, &url).unwrap();
    Some(url)
}

impl TestServer {
    /// A server on the store at `url` (`None`: SQLite), in `data_dir`.
    pub async fn start_on_store(data_dir: PathBuf, url: Option<String>) -> TestServer {
        Self::start_in(data_dir, |config| config.store.url = url).await
    }

    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut server = Self::start_in(path, adjust).await;
        server._dir = Some(dir);
        server
    }

    /// Starts a server on an existing data directory (a restart).
    pub async fn start_in(data_dir: PathBuf, adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_at(data_dir, Clock::system(), adjust).await
    }

    /// A server whose expiry, notifications and grants read `clock`, in a new data directory.
    pub async fn start_with_clock(clock: Clock, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut server = Self::start_at(path, clock, adjust).await;
        server._dir = Some(dir);
        server
    }

    /// Starts a server on `data_dir` with `clock`.
    pub async fn start_at(
        data_dir: PathBuf,
        clock: Clock,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        // RUST_LOG=portcullis=debug shows the server's events in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = test_config(&data_dir);
        adjust(&mut config);
        let server = step(Server::bind_with_clock(config, clock)).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let mqtts = server.mqtts_addr();
        let admin = server.admin_addr();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        let pem = std::fs::read(data_dir.join("platform-ca.pem")).unwrap();
        let platform_ca = portcullis::pki::certs_from_pem(&pem).unwrap().remove(0);
        TestServer {
            mqtts,
            admin,
            token,
            data_dir,
            platform_ca,
            _dir: None,
            shutdown: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// Stops the server and hands back its data directory for a restart.
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            step(task).await.unwrap();
        }
        (self.data_dir.clone(), self._dir.take())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// An admin API call with the bootstrap token: status and JSON body (Null when empty).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.token, method, path, body).await
    }

    /// An admin API call with `token`: status and JSON body (Null when empty, a string when the
    /// body is not JSON).
    pub async fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = step(request.send()).await.unwrap();
        let status = response.status().as_u16();
        let text = step(response.text()).await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Puts `pem` as the CRL of CA `ca_id` of org acme: status and JSON body (Null when none).
    pub async fn put_crl(&self, ca_id: &str, pem: &str) -> (u16, Value) {
        let request = self
            .http
            .put(self.url(&format!("/api/v1/orgs/acme/ca-certificates/{ca_id}/crl")))
            .bearer_auth(&self.token)
            .header("content-type", "application/x-pem-file")
            .body(pem.to_owned());
        let response = step(request.send()).await.unwrap();
        let status = response.status().as_u16();
        (status, step(response.json()).await.unwrap_or(Value::Null))
    }

    pub async fn create_org(&self, id: &str) {
        let (status, body) = self
            .api(
                "POST",
                "/api/v1/orgs",
                Some(serde_json::json!({"id": id, "name": id})),
            )
            .await;
        assert_eq!(status, 201, "create org {id}: {body}");
    }

    pub async fn create_open_org(&self, id: &str) {
        let (status, body) = self
            .api(
                "POST",
                "/api/v1/orgs",
                Some(serde_json::json!({"id": id, "name": id, "topic_policy": "open"})),
            )
            .await;
        assert_eq!(status, 201, "create org {id}: {body}");
    }

    /// Issues an org token with the admin token: returns its id and the token.
    pub async fn issue_token(&self, org: &str, name: &str, role: &str) -> (String, String) {
        let (status, body) = self
            .api(
                "POST",
                &format!("/api/v1/orgs/{org}/tokens"),
                Some(serde_json::json!({"name": name, "role": role, "ttl_seconds": 3600})),
            )
            .await;
        assert_eq!(status, 201, "issue token: {body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Uploads a CA for `org` and returns its id.
    pub async fn upload_ca(&self, org: &str, ca: &TestCa) -> String {
        let (status, body) = self
            .api(
                "POST",
                &format!("/api/v1/orgs/{org}/ca-certificates"),
                Some(serde_json::json!({"certificate": ca.pem, "description": "test"})),
            )
            .await;
        assert_eq!(status, 201, "upload CA: {body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// An org with one root CA, ready for devices: returns the CA and its id.
    /// A new server with one `open`-policy org and one CA for its devices.
    pub async fn start_open_org(org: &str) -> (TestServer, TestCa) {
        let server = TestServer::start().await;
        server.create_open_org(org).await;
        let ca = TestCa::root(&format!("{org} devices CA"));
        server.upload_ca(org, &ca).await;
        (server, ca)
    }

    pub async fn org_with_ca(&self, org: &str) -> (TestCa, String) {
        self.create_org(org).await;
        let ca = TestCa::root(&format!("{org} devices CA"));
        let id = self.upload_ca(org, &ca).await;
        (ca, id)
    }

    /// What `org` looks like through the API: its CAs' states, its blocklist, its sessions, its
    /// audit log and the org itself (to check that something changed nothing).
    pub async fn looks(&self, org: &str) -> Value {
        let mut seen = serde_json::json!({});
        for (key, rest) in [
            ("cas", "/ca-certificates"),
            ("blocked", "/blocked-devices"),
            ("sessions", "/sessions"),
            ("audit", "/audit-events"),
            ("org", ""),
        ] {
            let path = format!("/api/v1/orgs/{org}{rest}");
            let (status, body) = self.api("GET", &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            seen[key] = body;
        }
        seen
    }

    /// A TLS client configuration that trusts the platform CA (and `extra_roots`) and presents
    /// `cert` when given.
    pub fn tls_config(
        &self,
        cert: Option<&ClientCert>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.platform_ca.clone()).unwrap();
        for root in extra_roots {
            roots.add(root.clone()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match cert {
            Some(cert) => builder
                .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    /// A TLS connection with SNI `sni` (an IP literal sends none).
    pub async fn tls(
        &self,
        sni: &str,
        cert: Option<&ClientCert>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        self.tls_with(sni, self.tls_config(cert, &[])).await
    }

    pub async fn tls_with(
        &self,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = step(TcpStream::connect(self.mqtts)).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut stream = step(TlsConnector::from(config).connect(name, tcp)).await?;
        // TLS 1.3: a refused client certificate shows on the first read after the handshake.
        use tokio::io::AsyncWriteExt;
        stream.flush().await?;
        Ok(stream)
    }

    /// A plain-TCP port that bridges each connection into TLS to the server with `sni` and
    /// `cert`: what MQTT clients connect to.
    pub async fn bridge(&self, sni: &str, cert: &ClientCert) -> SocketAddr {
        self.bridge_with(sni, self.tls_config(Some(cert), &[]))
            .await
    }

    pub async fn bridge_with(&self, sni: &str, config: Arc<rustls::ClientConfig>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = self.mqtts;
        let sni = sni.to_owned();
        tokio::spawn(async move {
            while let Ok((mut plain, _)) = listener.accept().await {
                let config = config.clone();
                let sni = sni.clone();
                tokio::spawn(async move {
                    let Ok(tcp) = TcpStream::connect(server).await else {
                        return;
                    };
                    let _ = tcp.set_nodelay(true);
                    let _ = plain.set_nodelay(true);
                    let name = ServerName::try_from(sni).unwrap();
                    let Ok(mut tls) = TlsConnector::from(config).connect(name, tcp).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                });
            }
        });
        addr
    }
}

impl TestServer {
    /// A 3.1.1 session of org acme's device `d:acme:sensor:<id>` presenting `cert`, driven in
    /// the background: the receiver fires when its connection ends.
    pub async fn live_device(
        &self,
        cert: &ClientCert,
        id: &str,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let addr = self.bridge("acme.messaging.localhost", cert).await;
        let options = mqtt::v4_options(addr, &format!("d:acme:sensor:{id}"));
        let (client, mut eventloop) = mqtt::connect_v4(options).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _client = client;
            while eventloop.poll().await.is_ok() {}
            let _ = tx.send(());
        });
        rx
    }
}

/// Whether the session of `closed` (see [`TestServer::live_device`]) ends within a second (the
/// contract's deadline for a change that closes it).
pub async fn closes_within_a_second(closed: tokio::sync::oneshot::Receiver<()>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .is_ok()
}

/// Whether the connection behind `inbox` (a driven client's publishes, see `mqtt::drive_v4`)
/// ends within `within`.
pub async fn ends_within(
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    within: Duration,
) -> bool {
    tokio::time::timeout(within, async { while inbox.recv().await.is_some() {} })
        .await
        .is_ok()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// MQTT 3.1.1 and 5 clients (rumqttc) through a bridge.
pub mod mqtt {
    use super::*;

    pub fn v4_options(addr: SocketAddr, client_id: &str) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Connects and waits for the CONNACK: the client and its event loop, or the error.
    pub async fn connect_v4(
        options: rumqttc::MqttOptions,
    ) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), rumqttc::ConnectionError> {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
        loop {
            match step(eventloop.poll()).await? {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => {
                    return Ok((client, eventloop))
                }
                _ => continue,
            }
        }
    }

    /// The CONNACK return code of a refused 3.1.1 connect.
    pub async fn refused_v4(options: rumqttc::MqttOptions) -> rumqttc::ConnectReturnCode {
        match connect_v4(options).await {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
            Err(other) => panic!("expected a CONNACK refusal, got {other:?}"),
            Ok(_) => panic!("expected a refusal, the connect was accepted"),
        }
    }

    /// Polls until the next incoming packet that `pick` selects.
    pub async fn next_v4<T>(
        eventloop: &mut rumqttc::EventLoop,
        mut pick: impl FnMut(&rumqttc::Packet) -> Option<T>,
    ) -> Result<T, rumqttc::ConnectionError> {
        loop {
            if let rumqttc::Event::Incoming(packet) = step(eventloop.poll()).await? {
                if let Some(found) = pick(&packet) {
                    return Ok(found);
                }
            }
        }
    }

    pub async fn next_publish_v4(
        eventloop: &mut rumqttc::EventLoop,
    ) -> Result<rumqttc::Publish, rumqttc::ConnectionError> {
        next_v4(eventloop, |p| match p {
            rumqttc::Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes and returns the SUBACK codes.
    pub async fn subscribe_v4(
        client: &rumqttc::AsyncClient,
        eventloop: &mut rumqttc::EventLoop,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        client.subscribe(filter, qos).await.unwrap();
        next_v4(eventloop, |p| match p {
            rumqttc::Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
        .unwrap()
    }

    /// Drives an event loop in the background until the connection ends, forwarding publishes to
    /// a channel.
    pub fn drive_v4(
        mut eventloop: rumqttc::EventLoop,
    ) -> tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
                    // Nobody listening: keep the connection served all the same.
                    let _ = tx.send(p);
                }
            }
        });
        rx
    }

    pub fn v5_options(addr: SocketAddr, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut options =
            rumqttc::v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    pub async fn connect_v5(
        options: rumqttc::v5::MqttOptions,
    ) -> Result<
        (
            rumqttc::v5::AsyncClient,
            rumqttc::v5::EventLoop,
            rumqttc::v5::mqttbytes::v5::ConnAck,
        ),
        rumqttc::v5::ConnectionError,
    > {
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 16);
        loop {
            match step(eventloop.poll()).await? {
                rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(ack)) => {
                    return Ok((client, eventloop, ack))
                }
                _ => continue,
            }
        }
    }

    /// The CONNACK reason of a refused MQTT 5 connect.
    pub async fn refused_v5(
        options: rumqttc::v5::MqttOptions,
    ) -> rumqttc::v5::mqttbytes::v5::ConnectReturnCode {
        match connect_v5(options).await {
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => code,
            Err(other) => panic!("expected a CONNACK refusal, got {other:?}"),
            Ok(_) => panic!("expected a refusal, the connect was accepted"),
        }
    }

    /// Drives an MQTT 5 event loop in the background, forwarding every incoming packet; rumqttc
    /// reports the server's DISCONNECT as an error, which comes through here as the packet it was.
    pub fn drive_v5(
        mut eventloop: rumqttc::v5::EventLoop,
    ) -> tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Packet> {
        use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectProperties, Packet};
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(packet)) => {
                        if tx.send(packet).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::v5::ConnectionError::MqttState(
                        rumqttc::v5::StateError::ServerDisconnect {
                            reason_code,
                            reason_string,
                        },
                    )) => {
                        let _ = tx.send(Packet::Disconnect(Disconnect {
                            reason_code,
                            properties: Some(DisconnectProperties {
                                session_expiry_interval: None,
                                reason_string,
                                user_properties: Vec::new(),
                                server_reference: None,
                            }),
                        }));
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
        rx
    }

    /// The next packet from a driven MQTT 5 event loop that `pick` selects.
    pub async fn recv_v5<T>(
        inbox: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Packet>,
        mut pick: impl FnMut(&rumqttc::v5::mqttbytes::v5::Packet) -> Option<T>,
    ) -> T {
        loop {
            let packet = step(inbox.recv()).await.expect("connection ended");
            if let Some(found) = pick(&packet) {
                return found;
            }
        }
    }

    pub async fn next_v5<T>(
        eventloop: &mut rumqttc::v5::EventLoop,
        mut pick: impl FnMut(&rumqttc::v5::mqttbytes::v5::Packet) -> Option<T>,
    ) -> Result<T, rumqttc::v5::ConnectionError> {
        loop {
            if let rumqttc::v5::Event::Incoming(packet) = step(eventloop.poll()).await? {
                if let Some(found) = pick(&packet) {
                    return Ok(found);
                }
            }
        }
    }
}

/// Hand-made MQTT bytes, for what real clients cannot be made to send.
pub mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub fn remaining_length(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                return out;
            }
        }
    }

    pub fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(remaining_length(body.len()));
        out.extend_from_slice(body);
        out
    }

    /// CONNECT with protocol `level` (4 = 3.1.1, 5 = MQTT 5, an empty property list).
    pub fn connect(level: u8, client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
        let mut body = string("MQTT");
        body.push(level);
        body.push(if clean { 0x02 } else { 0x00 });
        body.extend_from_slice(&keep_alive.to_be_bytes());
        if level == 5 {
            body.push(0);
        }
        body.extend(string(client_id));
        packet(0x10, &body)
    }

    /// Writes `bytes`, then reads what the server answers until it closes (bounded).
    pub async fn exchange<S>(stream: &mut S, bytes: &[u8]) -> Vec<u8>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        read_to_close(stream).await
    }

    /// Everything the server sends until it closes; panics if it does not close in time.
    pub async fn read_to_close<S>(stream: &mut S) -> Vec<u8>
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match super::step(stream.read(&mut buf)).await {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The return code / reason code of a CONNACK at the front of `bytes`.
    pub fn connack_code(bytes: &[u8]) -> Option<u8> {
        (bytes.len() >= 4 && bytes[0] == 0x20).then(|| bytes[3])
    }
}

/// A CA certificate PEM with adjusted parameters (for refusal tests).
pub fn ca_pem_with(adjust: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = ca_params("adjusted CA");
    adjust(&mut params);
    params.self_signed(&key).unwrap().pem()
}

/// Runs the openssl command line in `dir` with `args`; panics with its stderr on failure.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Clients of an org made in one call: a certificate for `identity` (`d:sensor:dev1`) from `ca`,
/// SNI `<org>.messaging.localhost`, client id `d:<org>:sensor:dev1`.
pub mod clients {
    use super::mqtt::*;
    use super::*;

    pub fn client_id(org: &str, identity: &str) -> String {
        let (kind, rest) = identity.split_once(':').unwrap();
        format!("{kind}:{org}:{rest}")
    }

    /// A connected MQTT 3.1.1 client and its event loop.
    pub async fn connected_v4(
        server: &TestServer,
        ca: &TestCa,
        org: &str,
        identity: &str,
    ) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
        let sni = format!("{org}.messaging.localhost");
        let addr = server.bridge(&sni, &ca.client(identity, &[])).await;
        connect_v4(v4_options(addr, &client_id(org, identity)))
            .await
            .unwrap()
    }

    /// A connected client subscribed to `filter` (the SUBACK checked), its publishes in an inbox.
    pub async fn subscribed_v4(
        server: &TestServer,
        ca: &TestCa,
        org: &str,
        identity: &str,
        filter: &str,
    ) -> (
        rumqttc::AsyncClient,
        tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    ) {
        let (client, mut eventloop) = connected_v4(server, ca, org, identity).await;
        let qos = rumqttc::QoS::AtLeastOnce;
        let codes = subscribe_v4(&client, &mut eventloop, filter, qos).await;
        assert_eq!(
            codes,
            vec![rumqttc::SubscribeReasonCode::Success(qos)],
            "{filter}"
        );
        (client, drive_v4(eventloop))
    }

    /// A connected client whose event loop runs in the background.
    pub async fn publisher_v4(
        server: &TestServer,
        ca: &TestCa,
        org: &str,
        identity: &str,
    ) -> rumqttc::AsyncClient {
        let (client, eventloop) = connected_v4(server, ca, org, identity).await;
        let _ = drive_v4(eventloop);
        client
    }
}
