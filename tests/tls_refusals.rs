//! Handshakes the front-end refuses, each with its TLS alert, and the ones it must accept
//! (intermediate CAs as anchors, custom domains, `no_sni_org`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mqtt::*;
use common::*;
use rustls::AlertDescription;
use time::{Duration as TimeDuration, OffsetDateTime};

const SNI: &str = "acme.messaging.localhost";

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let server = TestServer::start().await;
    server.org_with_ca("acme").await;
    let alert = tls_refusal(server.tls(SNI, None).await).await;
    assert_eq!(alert, AlertDescription::CertificateRequired);
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let now = OffsetDateTime::now_utc();
    let expired = ca.client_valid(
        "d:sensor:old",
        &[],
        now - TimeDuration::days(30),
        now - TimeDuration::days(1),
    );
    let alert = tls_refusal(server.tls(SNI, Some(&expired)).await).await;
    assert_eq!(alert, AlertDescription::CertificateExpired);
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let server = TestServer::start().await;
    server.org_with_ca("acme").await;
    let stranger = TestCa::root("nobody's CA").client("d:sensor:dev1", &[]);
    let alert = tls_refusal(server.tls(SNI, Some(&stranger)).await).await;
    assert_eq!(alert, AlertDescription::UnknownCA);
}

#[tokio::test]
async fn another_orgs_ca_is_refused() {
    let server = TestServer::start().await;
    server.org_with_ca("acme").await;
    let (beta_ca, _) = server.org_with_ca("beta").await;
    let beta_device = beta_ca.client("d:sensor:dev1", &[]);
    // Fine at home…
    server
        .tls("beta.messaging.localhost", Some(&beta_device))
        .await
        .unwrap();
    // …refused at acme's door.
    let alert = tls_refusal(server.tls(SNI, Some(&beta_device)).await).await;
    assert_eq!(alert, AlertDescription::UnknownCA);
}

#[tokio::test]
async fn unknown_org_and_missing_sni_are_unrecognized_name() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let device = ca.client("d:sensor:dev1", &[]);
    for sni in ["nope.messaging.localhost", "acme.example.com", "127.0.0.1"] {
        let alert = tls_refusal(server.tls(sni, Some(&device)).await).await;
        assert_eq!(alert, AlertDescription::UnrecognisedName, "{sni}");
    }
}

#[tokio::test]
async fn org_without_active_ca_refuses_handshakes() {
    let server = TestServer::start().await;
    server.create_org("empty").await;
    let device = TestCa::root("x").client("d:sensor:dev1", &[]);
    let alert = tls_refusal(server.tls("empty.messaging.localhost", Some(&device)).await).await;
    assert_eq!(alert, AlertDescription::HandshakeFailure);
}

#[tokio::test]
async fn no_sni_org_takes_connections_without_sni() {
    let server = TestServer::start_with(|config| {
        config.mqtts.no_sni_org = Some(portcullis::identity::OrgId::parse("solo").unwrap());
    })
    .await;
    let (ca, _) = server.org_with_ca("solo").await;
    let device = ca.client("d:sensor:dev1", &[]);
    // The platform default certificate is issued for *.messaging.localhost: a client without
    // SNI checks the name it dialled, so it dials a name the certificate covers but sends no SNI.
    let mut config = (*server.tls_config(Some(&device), &[])).clone();
    config.enable_sni = false;
    let addr = server
        .bridge_with("solo.messaging.localhost", std::sync::Arc::new(config))
        .await;
    connect_v4(v4_options(addr, "d:solo:sensor:dev1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn intermediate_ca_is_a_trust_anchor() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let root = TestCa::root("acme root");
    let intermediate = root.intermediate("acme devices");
    // Only the intermediate is uploaded: a partial chain verifies to it.
    server.upload_ca("acme", &intermediate).await;
    let device = intermediate.client("d:sensor:dev1", &[]);
    let addr = server.bridge(SNI, &device).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    // A device of another intermediate under the same root is not trusted.
    let sibling = root.intermediate("acme other").client("d:sensor:dev2", &[]);
    let alert = tls_refusal(server.tls(SNI, Some(&sibling)).await).await;
    assert_eq!(alert, AlertDescription::UnknownCA);
}

#[tokio::test]
async fn root_ca_verifies_chains_through_intermediates() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let root = TestCa::root("acme root");
    server.upload_ca("acme", &root).await;
    let device = root
        .intermediate("acme line 1")
        .client("d:sensor:dev1", &[]);
    let addr = server.bridge(SNI, &device).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn custom_domain_certificate_is_served_once_active() {
    use tokio_rustls::TlsConnector;
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let device = ca.client("d:sensor:dev1", &[]);
    let web_ca = TestCa::root("example.com CA");
    let pems = web_ca.server(&["acme.messaging.example.com"]);
    let custom = "acme.messaging.example.com";

    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/server-certificates",
            Some(serde_json::json!({"certificate_chain": pems.chain, "private_key": pems.key})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["active"], false);
    let id = body["id"].as_str().unwrap().to_owned();

    let config = server.tls_config(Some(&device), std::slice::from_ref(&web_ca.cert));
    // Not active yet: the custom name is nobody's.
    let alert = tls_refusal(server.tls_with(custom, config.clone()).await).await;
    assert_eq!(alert, AlertDescription::UnrecognisedName);

    let (status, body) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/active-server-certificate",
            Some(serde_json::json!({"id": id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let stream = server.tls_with(custom, config.clone()).await.unwrap();
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served, pems.leaf);
    let addr = server.bridge_with(custom, config.clone()).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();

    // The platform name still gets the platform default certificate.
    let stream = server.tls(SNI, Some(&device)).await.unwrap();
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(served, pems.leaf);

    // Back to the platform default: the custom name is refused again.
    let (status, _) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/active-server-certificate",
            Some(serde_json::json!({"id": null})),
        )
        .await;
    assert_eq!(status, 200);
    let tcp = tokio::net::TcpStream::connect(server.mqtts).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(custom).unwrap();
    let alert = tls_refusal(TlsConnector::from(config).connect(name, tcp).await).await;
    assert_eq!(alert, AlertDescription::UnrecognisedName);
}

/// Presents a certificate chain with a key that is not its own.
#[derive(Debug)]
struct Impostor(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Impostor {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_known_chain_without_its_key_is_refused() {
    // The device's chain is verified once and remembered; a thief replaying that chain with a
    // key of its own must still fail the handshake signature.
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let device = ca.client("d:sensor:dev1", &[]);
    let addr = server.bridge(SNI, &device).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();

    let thief = ca.client("d:sensor:thief", &[]);
    let wrong_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&thief.key).unwrap();
    let stolen = rustls::sign::CertifiedKey::new(device.chain.clone(), wrong_key);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.platform_ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_cert_resolver(std::sync::Arc::new(Impostor(std::sync::Arc::new(stolen))));
    let alert = tls_refusal(server.tls_with(SNI, std::sync::Arc::new(config)).await).await;
    assert_eq!(alert, AlertDescription::DecryptError);
}
