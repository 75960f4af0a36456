//! The alerts a refused client certificate really gets, where they differ from `bad_certificate`
//! (the README's table of TLS refusals says which alert each case sends).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rustls::AlertDescription;
use rustls_pki_types::PrivateKeyDer;
use time::{Duration as TimeDuration, OffsetDateTime};

const SNI: &str = "acme.messaging.localhost";

#[tokio::test]
async fn a_certificate_without_client_auth_gets_unsupported_certificate() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let now = OffsetDateTime::now_utc();
    // extendedKeyUsage serverAuth only.
    let pems = ca.server_valid(
        &["dev1.example.com"],
        now - TimeDuration::days(1),
        now + TimeDuration::days(30),
        true,
    );
    let key = rustls_pki_types::pem::PemObject::from_pem_slice(pems.key.as_bytes()).unwrap();
    let device = ClientCert {
        chain: vec![pems.leaf],
        key,
    };
    let alert = tls_refusal(server.tls(SNI, Some(&device)).await).await;
    assert_eq!(alert, AlertDescription::UnsupportedCertificate);
}

#[tokio::test]
async fn a_ca_certificate_as_the_leaf_gets_certificate_unknown() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let sub = ca.intermediate("d:sensor:dev1");
    let device = ClientCert {
        chain: vec![sub.cert.clone()],
        key: PrivateKeyDer::Pkcs8(sub.key_pkcs8().into()),
    };
    let alert = tls_refusal(server.tls(SNI, Some(&device)).await).await;
    assert_eq!(alert, AlertDescription::CertificateUnknown);
}
