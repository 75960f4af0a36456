//! Helpers shared by the unit tests of `pki` and its submodules: throw-away certificates made
//! with rcgen, and a way to run `openssl` where a test checks our parsers against its output.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::process::Command;
use time::{Duration, OffsetDateTime};

pub(super) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A self-signed certificate with `edit` applied to default parameters (CN "test", valid
/// from a day ago for a year, no extensions), and its key.
pub(super) fn cert_with(
    edit: impl FnOnce(&mut CertificateParams),
) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "test");
    params.not_before = now() - Duration::days(1);
    params.not_after = now() + Duration::days(365);
    edit(&mut params);
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), key)
}

pub(super) fn ca_params(p: &mut CertificateParams) {
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
}

pub(super) fn server_params<'a>(names: &'a [&'a str]) -> impl FnOnce(&mut CertificateParams) + 'a {
    move |p| {
        p.subject_alt_names = names
            .iter()
            .map(|n| rcgen::SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }
}

pub(super) fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(key.serialize_der().into())
}

pub(super) fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

pub(super) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
