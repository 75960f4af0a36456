//! rfc822Name (e-mail) name constraints of device CAs, written from RFC 5280 §4.2.1.10: a
//! constraint is a mailbox (`dev1@example.com`), a host (`example.com`: every mailbox on it) or a
//! domain (`.example.com`: every mailbox on a host under it, not on the domain itself); local
//! parts compare case-sensitively, hosts not. Each applies to every SAN rfc822Name of the
//! certificates below the CA, or to the subject's emailAddress when a certificate has no SAN.
//! Devices connect through the real server with real TLS; a device outside its CA's constraints
//! gets the alert `certificate_unknown` and the refusal reason `name_constraint_violation`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mqtt::*;
use common::*;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, DnValue, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints, SanType,
};
use rustls::AlertDescription;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

const SNI: &str = "acme.messaging.localhost";
/// id-emailAddress (PKCS #9).
const EMAIL_ADDRESS: [u64; 7] = [1, 2, 840, 113549, 1, 9, 1];

struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn mail(s: &str) -> GeneralSubtree {
    GeneralSubtree::Rfc822Name(s.to_owned())
}

fn ca_params(
    cn: &str,
    permitted: Vec<GeneralSubtree>,
    excluded: Vec<GeneralSubtree>,
) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if !permitted.is_empty() || !excluded.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: excluded,
        });
    }
    params
}

/// A root CA with these subtrees.
fn root(cn: &str, permitted: Vec<GeneralSubtree>, excluded: Vec<GeneralSubtree>) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn, permitted, excluded);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// An intermediate of `parent` with these subtrees.
fn intermediate(parent: &Ca, cn: &str, permitted: Vec<GeneralSubtree>) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn, permitted, vec![]);
    let cert = params.signed_by(&key, &parent.issuer).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A device `d:sensor:dev1` (its identity in the CN) of `ca`, with SAN e-mails `emails` (no SAN
/// extension when there are none and no `dns`), a subject emailAddress, and SAN DNS names.
fn device(
    ca: &Ca,
    above: &[&Ca],
    emails: &[&str],
    subject_email: Option<&str>,
    dns: &[&str],
) -> ClientCert {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "d:sensor:dev1");
    if let Some(email) = subject_email {
        params.distinguished_name.push(
            DnType::CustomDnType(EMAIL_ADDRESS.to_vec()),
            DnValue::Ia5String(Ia5String::try_from(email).unwrap()),
        );
    }
    for email in emails {
        params
            .subject_alt_names
            .push(SanType::Rfc822Name(Ia5String::try_from(*email).unwrap()));
    }
    for name in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(Ia5String::try_from(*name).unwrap()));
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let mut chain = vec![cert.der().clone()];
    chain.extend(above.iter().map(|c| c.der.clone()));
    ClientCert {
        chain,
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

async fn upload(server: &TestServer, ca: &Ca) {
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(json!({"certificate": ca.pem, "description": "constrained"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The device completes TLS and MQTT CONNECT.
async fn admitted(server: &TestServer, device: &ClientCert, what: &str) {
    let addr = server.bridge(SNI, device).await;
    let connected = connect_v4(v4_options(addr, "d:acme:sensor:dev1")).await;
    if let Err(error) = connected {
        panic!("{what}: {error:?}");
    }
}

/// The device is refused in the handshake, for its names.
async fn refused(server: &TestServer, device: &ClientCert, what: &str) {
    let alert = tls_refusal(server.tls(SNI, Some(device)).await).await;
    assert_eq!(alert, AlertDescription::CertificateUnknown, "{what}");
}

/// Devices of `ca` with one SAN e-mail each: those `inside` its constraints are admitted, those
/// `outside` refused.
async fn judge(server: &TestServer, ca: &Ca, inside: &[&str], outside: &[&str]) {
    for email in inside {
        admitted(server, &device(ca, &[], &[email], None, &[]), email).await;
    }
    for email in outside {
        refused(server, &device(ca, &[], &[email], None, &[]), email).await;
    }
}

async fn server_with(cas: &[&Ca]) -> TestServer {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    for ca in cas {
        upload(&server, ca).await;
    }
    server
}

#[tokio::test]
async fn permitted_host_admits_mailboxes_on_that_host_only() {
    let ca = root("host CA", vec![mail("example.com")], vec![]);
    let server = server_with(&[&ca]).await;
    judge(
        &server,
        &ca,
        &[
            "dev1@example.com",
            "dev1@EXAMPLE.com",
            "Any.One@example.com",
        ],
        &[
            "dev1@sensors.example.com",
            "dev1@example.org",
            "dev1@notexample.com",
        ],
    )
    .await;
    // Every SAN e-mail must fit, not just one.
    let mixed = device(
        &ca,
        &[],
        &["dev1@example.com", "dev1@example.org"],
        None,
        &[],
    );
    refused(&server, &mixed, "one of two outside").await;
}

#[tokio::test]
async fn permitted_domain_admits_hosts_under_it_not_the_domain_itself() {
    let ca = root("domain CA", vec![mail(".example.com")], vec![]);
    let server = server_with(&[&ca]).await;
    judge(
        &server,
        &ca,
        &["dev1@sensors.example.com", "dev1@a.b.EXAMPLE.COM"],
        &[
            "dev1@example.com",
            "dev1@sensorsexample.com",
            "dev1@example.com.evil",
        ],
    )
    .await;
}

#[tokio::test]
async fn permitted_mailbox_admits_that_mailbox_with_a_case_sensitive_local_part() {
    let ca = root("mailbox CA", vec![mail("dev1@example.com")], vec![]);
    let server = server_with(&[&ca]).await;
    judge(
        &server,
        &ca,
        &["dev1@example.com", "dev1@Example.COM"],
        &[
            "Dev1@example.com",
            "dev2@example.com",
            "dev1@sub.example.com",
        ],
    )
    .await;
}

#[tokio::test]
async fn excluded_subtrees_refuse_what_they_cover_even_when_permitted() {
    let ca = root(
        "excluding CA",
        vec![mail(".example.com")],
        vec![
            mail("lab.example.com"),
            mail(".lab.example.com"),
            mail("root@ops.example.com"),
        ],
    );
    let server = server_with(&[&ca]).await;
    judge(
        &server,
        &ca,
        &["dev1@ops.example.com", "ROOT@ops.example.com"],
        &[
            "dev1@lab.example.com",
            "dev1@x.LAB.example.com",
            "root@OPS.example.com",
        ],
    )
    .await;
    // Only excluded subtrees: anything else is fine.
    let only_excluded = root("excluded-only CA", vec![], vec![mail(".evil.example")]);
    upload(&server, &only_excluded).await;
    let fine = device(&only_excluded, &[], &["dev1@example.org"], None, &[]);
    admitted(&server, &fine, "outside the exclusion").await;
    let evil = device(&only_excluded, &[], &["dev1@x.evil.example"], None, &[]);
    refused(&server, &evil, "inside the exclusion").await;
}

#[tokio::test]
async fn the_subject_email_address_is_checked_when_there_is_no_san() {
    let ca = root("subject CA", vec![mail("example.com")], vec![]);
    let server = server_with(&[&ca]).await;
    let inside = device(&ca, &[], &[], Some("dev1@example.com"), &[]);
    admitted(&server, &inside, "emailAddress inside").await;
    let outside = device(&ca, &[], &[], Some("dev1@example.org"), &[]);
    refused(&server, &outside, "emailAddress outside").await;
    // No e-mail at all: nothing for the constraint to judge.
    admitted(&server, &device(&ca, &[], &[], None, &[]), "no e-mail").await;
    // A certificate with a SAN extension is judged by its SAN only (RFC 5280).
    let with_san = device(
        &ca,
        &[],
        &[],
        Some("dev1@example.org"),
        &["acme.example.com"],
    );
    admitted(&server, &with_san, "SAN present, no SAN e-mail").await;
}

#[tokio::test]
async fn a_name_that_is_not_a_mailbox_cannot_pass_an_email_constraint() {
    // `d:sensor:dev1` as a SAN e-mail has no `@`: RFC 5280 asks to refuse a name a constraint
    // cannot be applied to (OpenSSL does the same).
    let ca = root("strict CA", vec![], vec![mail(".evil.example")]);
    let server = server_with(&[&ca]).await;
    let bare = device(&ca, &[], &["d:sensor:dev1"], None, &[]);
    refused(&server, &bare, "bare identity").await;
}

#[tokio::test]
async fn other_name_constraints_are_still_enforced_beside_email_ones() {
    let key = KeyPair::generate().unwrap();
    let mut params = ca_params("mixed CA", vec![mail("example.com")], vec![]);
    if let Some(nc) = params.name_constraints.as_mut() {
        nc.permitted_subtrees
            .push(GeneralSubtree::DnsName("devices.example.com".into()));
    }
    let cert = params.self_signed(&key).unwrap();
    let ca = Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    };
    let server = server_with(&[&ca]).await;
    let both_inside = device(
        &ca,
        &[],
        &["dev1@example.com"],
        None,
        &["a.devices.example.com"],
    );
    admitted(&server, &both_inside, "e-mail and DNS inside").await;
    let dns_outside = device(&ca, &[], &["dev1@example.com"], None, &["a.example.org"]);
    refused(&server, &dns_outside, "DNS outside").await;
    let mail_outside = device(
        &ca,
        &[],
        &["dev1@example.org"],
        None,
        &["a.devices.example.com"],
    );
    refused(&server, &mail_outside, "e-mail outside").await;
}

#[tokio::test]
async fn an_intermediate_below_the_org_ca_constrains_the_devices_it_issues() {
    let top = root("unconstrained root", vec![], vec![]);
    let sub = intermediate(&top, "constrained intermediate", vec![mail("example.com")]);
    let server = server_with(&[&top]).await;
    // Sent by the device: its constraint applies to the subject e-mail of a SAN-less device.
    let inside = device(&sub, &[&sub], &[], Some("dev1@example.com"), &[]);
    admitted(&server, &inside, "below the intermediate, inside").await;
    let outside = device(&sub, &[&sub], &[], Some("dev1@example.org"), &[]);
    refused(&server, &outside, "below the intermediate, outside").await;
    // The intermediate uploaded as the org's CA: SAN e-mails are judged by its constraints.
    upload(&server, &sub).await;
    let san_inside = device(&sub, &[], &["dev1@example.com"], None, &[]);
    admitted(&server, &san_inside, "SAN inside, intermediate as CA").await;
    let san_outside = device(&sub, &[], &["dev1@example.org"], None, &[]);
    refused(&server, &san_outside, "SAN outside, intermediate as CA").await;
}

#[tokio::test]
async fn refusals_are_counted_as_name_constraint_violations() {
    let ca = root("counted CA", vec![mail("example.com")], vec![]);
    let server = server_with(&[&ca]).await;
    refused(
        &server,
        &device(&ca, &[], &["x@example.org"], None, &[]),
        "outside",
    )
    .await;
    let expected =
        r#"portcullis_connections_refused_total{stage="tls",reason="name_constraint_violation"}"#;
    let url = server.url("/metrics");
    let counted = eventually(STEP, || async {
        let text = step(async { reqwest::get(&url).await?.text().await })
            .await
            .unwrap();
        text.lines().any(|line| line.starts_with(expected))
    })
    .await;
    assert!(counted, "{expected} missing from /metrics");
}
