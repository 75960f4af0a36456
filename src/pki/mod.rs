//! Certificate parsing and checks (CA uploads, server certificates and their keys, PKCS#12), and
//! generation of the platform CA and the certificates it issues. Everything an operator uploads is
//! parsed here once, into typed values, before anything is stored or served.
//!
//! Why one module: every refusal an operator can meet on an upload is decided here and reported
//! as one [`PkiError`] variant, so the admin API maps each to a stable error code and nothing
//! half-checked reaches the store or the TLS layer. Parsers of operator input (PEM, DER, PKCS#8,
//! PKCS#12) never panic: errors are values, and key-derivation costs in encrypted keys are capped
//! so an upload cannot pin a core or exhaust memory.

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

mod client_tls;
mod crl;
mod issue;
mod keys;
mod pkcs12_cost;
#[cfg(test)]
mod test_support;

pub use client_tls::client_tls;
pub use crl::{check_crl, crl_der, crl_info, CrlInfo};
pub use issue::{
    csr_pem, generate_key, generate_platform_ca, issue_server_cert, issue_signing_cert,
    sign_server_cert, Issuer, KeyType, ServerNames, SIGNING_CERT_DAYS,
};
pub use keys::{from_pkcs12, private_key_from_pem};
pub use pkcs12_cost::{check_kdf_cost, KdfCost, MAX_PKCS12_ITERATIONS};

/// Why an uploaded certificate or key was refused. Each maps to one stable API error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkiError {
    #[error("not a certificate")]
    NotACertificate,
    #[error("more than one certificate")]
    MoreThanOneCertificate,
    #[error("not a CA certificate (basicConstraints CA is not set)")]
    NotACa,
    #[error("keyUsage is present without keyCertSign")]
    NoKeyCertSign,
    #[error("certificate is not yet valid")]
    NotYetValid,
    #[error("certificate has expired")]
    Expired,
    #[error("not a private key")]
    NotAKey,
    #[error("the private key is encrypted and no passphrase was given")]
    PassphraseRequired,
    #[error("wrong passphrase")]
    PassphraseWrong,
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("certificate names do not fit the organisation: {0}")]
    NamesDoNotFit(String),
    #[error("extendedKeyUsage does not include serverAuth")]
    NoServerAuth,
    #[error("a token signing key must be ECDSA P-256 (tokens are ES256)")]
    NotP256Key,
    #[error("not a certificate revocation list")]
    NotACrl,
    #[error("the CRL is not signed by this CA")]
    CrlSignatureInvalid,
    #[error("not a PKCS#12 file")]
    NotPkcs12,
    #[error("wrong PKCS#12 password")]
    Pkcs12PasswordWrong,
    #[error("the PKCS#12 file holds no private key")]
    Pkcs12NoKey,
    #[error("the PKCS#12 file holds no certificate")]
    Pkcs12NoCertificate,
    #[error(
        "the PKCS#12 file asks for too costly a key derivation (at most 1,000,000 iterations \
         each, 3,000,000 in all; OpenSSL writes 2,048)"
    )]
    Pkcs12KdfTooCostly,
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// What the API shows of any certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514 string of the subject DN.
    pub subject: String,
    pub issuer: String,
    /// Lower-case hex of the serial number's big-endian bytes, no separators.
    pub serial: String,
    /// Lower-case hex SHA-256 of the DER.
    pub fingerprint_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub common_name: Option<String>,
    /// SAN dNSName entries, lower-case.
    pub dns_names: Vec<String>,
}

/// Parses one DER certificate, refusing trailing bytes.
fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(PkiError::NotACertificate),
    }
}

/// Every certificate in a PEM text, in order; `NotACertificate` when there is none or one is broken.
///
/// Sections other than `CERTIFICATE` (a key pasted beside the chain, say) are skipped.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let sections = pem::parse_many(pem).map_err(|_| PkiError::NotACertificate)?;
    let mut certs = Vec::new();
    for section in sections {
        if section.tag() != "CERTIFICATE" {
            continue;
        }
        let der = section.into_contents();
        parse_cert(&der)?;
        certs.push(CertificateDer::from(der));
    }
    if certs.is_empty() {
        return Err(PkiError::NotACertificate);
    }
    Ok(certs)
}

/// Exactly one certificate, given as PEM or as DER (the two forms a CA upload may take):
/// `MoreThanOneCertificate` when the PEM holds several, `NotACertificate` when it holds none or
/// the bytes are neither.
pub fn single_cert(input: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let mut certs = certs_from_pem(input)?;
        return match certs.pop() {
            Some(cert) if certs.is_empty() => Ok(cert),
            _ => Err(PkiError::MoreThanOneCertificate),
        };
    }
    parse_cert(input)?;
    Ok(CertificateDer::from(input.to_vec()))
}

/// Lower-case hex of a serial number's big-endian bytes without the DER sign-padding zeros (the
/// form `openssl x509 -serial` prints, lower-cased). Use it wherever a serial is compared, e.g. the
/// blocklist's `serial` (DESIGN §11).
pub fn serial_hex(raw_serial: &[u8]) -> String {
    let first = raw_serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw_serial.len().saturating_sub(1));
    hex::encode(raw_serial.get(first..).unwrap_or_default())
}

/// Lower-case hex SHA-256 of `der`: the `fingerprint_sha256` of every resource.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, der).as_ref())
}

fn info_of(cert: &X509Certificate<'_>, der: &[u8]) -> Result<CertInfo, PkiError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PkiError::NotACertificate)?;
    let dns_names = san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: serial_hex(cert.raw_serial()),
        fingerprint_sha256: fingerprint_sha256(der),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        dns_names,
    })
}

/// Parses any certificate (DER) into what the API shows.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let cert = parse_cert(der)?;
    info_of(&cert, der)
}

fn check_validity(info: &CertInfo, now: OffsetDateTime) -> Result<(), PkiError> {
    if now < info.not_before {
        return Err(PkiError::NotYetValid);
    }
    if now > info.not_after {
        return Err(PkiError::Expired);
    }
    Ok(())
}

/// Checks an uploaded CA certificate: a CA (basicConstraints), keyCertSign where keyUsage is
/// present, valid at `now`.
///
/// Checked in this order, the first failure reported: parse, basicConstraints, keyUsage,
/// notBefore, notAfter. A duplicated or unparsable extension makes it `NotACertificate`.
pub fn check_ca(der: &[u8], now: OffsetDateTime) -> Result<CertInfo, PkiError> {
    let cert = parse_cert(der)?;
    let info = info_of(&cert, der)?;
    let bc = cert
        .basic_constraints()
        .map_err(|_| PkiError::NotACertificate)?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        return Err(PkiError::NotACa);
    }
    let ku = cert.key_usage().map_err(|_| PkiError::NotACertificate)?;
    if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
        return Err(PkiError::NoKeyCertSign);
    }
    check_validity(&info, now)?;
    Ok(info)
}

/// Checks a server certificate chain and key for `org`: the key matches the leaf, the leaf is valid
/// at `now`, its EKU (when present) includes serverAuth, and every SAN dNSName is
/// `<org>.messaging.<domain>` or `*.messaging.<domain>` (at least one name).
///
/// Checked in that order, the first failure reported. The chain's other certificates must parse
/// but are not verified: the devices that trust the issuer do that.
pub fn check_server_cert(
    org: &str,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    now: OffsetDateTime,
) -> Result<CertInfo, PkiError> {
    let leaf_der = chain.first().ok_or(PkiError::NotACertificate)?;
    let leaf = parse_cert(leaf_der)?;
    for other in chain.iter().skip(1) {
        parse_cert(other)?;
    }
    let info = info_of(&leaf, leaf_der)?;
    check_key_matches(chain, key)?;
    check_validity(&info, now)?;

    let eku = leaf
        .extended_key_usage()
        .map_err(|_| PkiError::NotACertificate)?;
    if eku.is_some_and(|eku| !eku.value.server_auth) {
        return Err(PkiError::NoServerAuth);
    }

    if info.dns_names.is_empty() {
        return Err(PkiError::NamesDoNotFit(
            "the certificate has no DNS name (subjectAltName dNSName)".to_owned(),
        ));
    }
    if let Some(bad) = info
        .dns_names
        .iter()
        .find(|n| !server_name_fits_org(org, n))
    {
        return Err(PkiError::NamesDoNotFit(format!(
            "{bad} is neither {org}.messaging.<domain> nor *.messaging.<domain>"
        )));
    }
    Ok(info)
}

/// The key of a certificate as the API names key types (`ecdsa-p256`, `rsa-2048`, `ed25519`, …);
/// `unknown` for a key it cannot read.
pub fn key_type_of(der: &[u8]) -> String {
    use x509_parser::public_key::PublicKey;
    let Ok(cert) = parse_cert(der) else {
        return "unknown".to_owned();
    };
    match cert.public_key().parsed() {
        // An uncompressed point: 1 + 2 × the field size.
        Ok(PublicKey::EC(point)) => match point.data().len() {
            65 => "ecdsa-p256".to_owned(),
            97 => "ecdsa-p384".to_owned(),
            133 => "ecdsa-p521".to_owned(),
            _ => "ecdsa".to_owned(),
        },
        Ok(PublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
        _ if cert.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            "ed25519".to_owned()
        }
        _ => "unknown".to_owned(),
    }
}

/// Lower-case hex SHA-1 of the DER: the fingerprint many tools still show.
pub fn fingerprint_sha1(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

/// Checks an imported token signing certificate and key: the chain parses, the key matches the
/// leaf and is ECDSA P-256 (tokens are ES256), and the leaf is valid at `now`.
pub fn check_signing_cert(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    now: OffsetDateTime,
) -> Result<CertInfo, PkiError> {
    let leaf_der = chain.first().ok_or(PkiError::NotACertificate)?;
    let leaf = parse_cert(leaf_der)?;
    for other in chain.iter().skip(1) {
        parse_cert(other)?;
    }
    let info = info_of(&leaf, leaf_der)?;
    check_key_matches(chain, key)?;
    aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.secret_der(),
    )
    .map_err(|_| PkiError::NotP256Key)?;
    check_validity(&info, now)?;
    Ok(info)
}

/// Checks a CA imported with its key (PKCS#12): `key` is a usable private key and the CA's.
pub fn check_ca_key(
    ca: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> Result<(), PkiError> {
    check_key_matches(std::slice::from_ref(ca), key)
}

/// `NotAKey` unless `key` is a usable private key, `KeyMismatch` unless it is the leaf's.
fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), PkiError> {
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| PkiError::NotAKey)?;
    rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key)
        .keys_match()
        .map_err(|_| PkiError::KeyMismatch)
}

/// True when `label` is a DNS label: 1–63 of `[a-z0-9-]` (lower-case), not starting or ending
/// with `-`.
fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= 63 && edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
        }
        _ => false,
    }
}

/// True when a server certificate name may be served for `org` (DESIGN §2):
/// `<org>.messaging.<domain>` or `*.messaging.<domain>`, `<domain>` one or more DNS labels,
/// lower-case. Only the shape is checked; it proves no ownership of `<domain>`.
pub fn server_name_fits_org(org: &str, name: &str) -> bool {
    if name.len() > 253 {
        return false;
    }
    let mut labels = name.split('.');
    let first_ok = labels
        .next()
        .is_some_and(|first| first == "*" || (first == org && !org.is_empty()));
    let messaging_ok = labels.next() == Some("messaging");
    let mut domain_labels = 0usize;
    let domain_ok = labels.all(|l| {
        domain_labels += 1;
        is_dns_label(l)
    });
    first_ok && messaging_ok && domain_ok && domain_labels >= 1
}

/// True when certificate name `pattern` (a DNS name or a `*.` wildcard of one label) covers `name`.
///
/// Case-insensitive. A wildcard covers exactly one whole, non-empty leftmost label: `*.a.b`
/// covers `x.a.b`, not `a.b` nor `y.x.a.b`. A `*` anywhere else in the pattern matches only
/// itself literally, and a `name` holding `*` is covered by nothing.
pub fn name_covers(pattern: &str, name: &str) -> bool {
    if name.is_empty() || name.contains('*') {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => match name.split_once('.') {
            Some((label, rest)) => {
                !label.is_empty() && !suffix.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }
            None => false,
        },
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::test_support::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::process::Command;
    use time::Duration;

    // ---- PEM and certificate parsing ----

    #[test]
    fn certs_from_pem_in_order_skipping_other_sections() {
        let (a, key) = cert_with(|_| {});
        let (b, _) = cert_with(|_| {});
        let text = format!(
            "leading text\n{}{}{}",
            pem_of(&a),
            key.serialize_pem(),
            pem_of(&b)
        );
        assert_eq!(certs_from_pem(text.as_bytes()).unwrap(), vec![a, b]);
    }

    #[test]
    fn certs_from_pem_refusals() {
        assert_eq!(certs_from_pem(b""), Err(PkiError::NotACertificate));
        assert_eq!(certs_from_pem(b"hello"), Err(PkiError::NotACertificate));
        let key = KeyPair::generate().unwrap();
        assert_eq!(
            certs_from_pem(key.serialize_pem().as_bytes()),
            Err(PkiError::NotACertificate)
        );
        let junk = pem::encode(&pem::Pem::new("CERTIFICATE", b"\x30\x03abc".to_vec()));
        let (good, _) = cert_with(|_| {});
        let text = format!("{}{junk}", pem_of(&good));
        assert_eq!(
            certs_from_pem(text.as_bytes()),
            Err(PkiError::NotACertificate)
        );
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certs_from_pem(broken.as_bytes()),
            Err(PkiError::NotACertificate)
        );
    }

    #[test]
    fn single_cert_pem_or_der() {
        let (a, _) = cert_with(|_| {});
        let (b, _) = cert_with(|_| {});
        assert_eq!(single_cert(pem_of(&a).as_bytes()).unwrap(), a);
        assert_eq!(
            single_cert(format!("\n  {}", pem_of(&a)).as_bytes()).unwrap(),
            a
        );
        assert_eq!(single_cert(&a).unwrap(), a);
        let two = format!("{}{}", pem_of(&a), pem_of(&b));
        assert_eq!(
            single_cert(two.as_bytes()),
            Err(PkiError::MoreThanOneCertificate)
        );
        assert_eq!(single_cert(b"junk"), Err(PkiError::NotACertificate));
        let mut trailing = a.to_vec();
        trailing.push(0);
        assert_eq!(single_cert(&trailing), Err(PkiError::NotACertificate));
    }

    #[test]
    fn cert_info_fields() {
        let (der, _) = cert_with(|p| {
            p.distinguished_name.push(DnType::OrganizationName, "Acme");
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0xab, 0x01]));
            p.subject_alt_names = vec![
                rcgen::SanType::DnsName("Acme.Messaging.Example.COM".try_into().unwrap()),
                rcgen::SanType::Rfc822Name("ops@acme.example".try_into().unwrap()),
            ];
        });
        let info = cert_info(&der).unwrap();
        assert!(info.subject.contains("CN=test"), "{}", info.subject);
        assert!(info.subject.contains("O=Acme"), "{}", info.subject);
        assert_eq!(info.subject, info.issuer);
        assert_eq!(info.serial, "ab01");
        assert_eq!(info.common_name.as_deref(), Some("test"));
        assert_eq!(info.dns_names, vec!["acme.messaging.example.com"]);
        assert_eq!(info.fingerprint_sha256.len(), 64);
        assert!(info.not_before < now() && now() < info.not_after);
        assert_eq!(cert_info(b"nope"), Err(PkiError::NotACertificate));
    }

    #[test]
    fn cert_info_agrees_with_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let (der, _) = cert_with(|p| {
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x8f, 0, 1, 2]));
        });
        std::fs::write(dir.path().join("c.pem"), pem_of(&der)).unwrap();
        let out = Command::new("openssl")
            .args([
                "x509",
                "-in",
                "c.pem",
                "-noout",
                "-serial",
                "-fingerprint",
                "-sha256",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap().to_ascii_lowercase();
        let info = cert_info(&der).unwrap();
        assert!(text.contains(&format!("serial={}", info.serial)), "{text}");
        let fp = text
            .lines()
            .find_map(|l| {
                l.split_once("fingerprint=")
                    .map(|(_, f)| f.replace(':', ""))
            })
            .unwrap();
        assert_eq!(fp, info.fingerprint_sha256);
        assert_eq!(info.serial, "008f000102".trim_start_matches("00"));
    }

    #[test]
    fn serial_hex_forms() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x01]), "01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x00, 0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    // ---- check_ca ----

    #[test]
    fn check_ca_accepts_roots_and_cas_without_key_usage() {
        let (der, _) = cert_with(ca_params);
        let info = check_ca(&der, now()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("test"));
        let (der, _) = cert_with(|p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0)));
        assert!(check_ca(&der, now()).is_ok());
    }

    #[test]
    fn check_ca_accepts_an_intermediate() {
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::default();
        ca_params(&mut root);
        let root = rcgen::CertifiedIssuer::self_signed(root, root_key).unwrap();
        let mut inter = CertificateParams::default();
        ca_params(&mut inter);
        inter
            .distinguished_name
            .push(DnType::CommonName, "Intermediate");
        let inter = inter
            .signed_by(&KeyPair::generate().unwrap(), &root)
            .unwrap();
        let info = check_ca(inter.der(), now()).unwrap();
        assert_ne!(info.subject, info.issuer);
    }

    #[test]
    fn check_ca_refusals_in_order() {
        let t = now();
        assert_eq!(check_ca(b"", t), Err(PkiError::NotACertificate));
        assert_eq!(check_ca(b"\x30\x82", t), Err(PkiError::NotACertificate));

        let (leaf, _) = cert_with(|_| {});
        assert_eq!(check_ca(&leaf, t), Err(PkiError::NotACa));
        let (no_ca, _) = cert_with(|p| p.is_ca = IsCa::ExplicitNoCa);
        assert_eq!(check_ca(&no_ca, t), Err(PkiError::NotACa));

        let (no_sign, _) = cert_with(|p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        });
        assert_eq!(check_ca(&no_sign, t), Err(PkiError::NoKeyCertSign));

        let (future, _) = cert_with(|p| {
            ca_params(p);
            p.not_before = t + Duration::days(1);
            p.not_after = t + Duration::days(2);
        });
        assert_eq!(check_ca(&future, t), Err(PkiError::NotYetValid));
        assert!(check_ca(&future, t + Duration::hours(36)).is_ok());

        let (expired, _) = cert_with(|p| {
            ca_params(p);
            p.not_before = t - Duration::days(2);
            p.not_after = t - Duration::days(1);
        });
        assert_eq!(check_ca(&expired, t), Err(PkiError::Expired));

        // The first failure in the documented order wins.
        let (expired_leaf, _) = cert_with(|p| {
            p.not_before = t - Duration::days(2);
            p.not_after = t - Duration::days(1);
        });
        assert_eq!(check_ca(&expired_leaf, t), Err(PkiError::NotACa));
        let (expired_no_sign, _) = cert_with(|p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.not_before = t - Duration::days(2);
            p.not_after = t - Duration::days(1);
        });
        assert_eq!(check_ca(&expired_no_sign, t), Err(PkiError::NoKeyCertSign));
    }

    // ---- server certificates ----

    #[test]
    fn server_cert_accepted() {
        for names in [
            &["acme.messaging.localhost"][..],
            &["*.messaging.example.com", "acme.messaging.example.com"][..],
            &["acme.messaging.iot.example.co.uk"][..],
            &["ACME.Messaging.Example.com"][..],
        ] {
            let (der, key) = cert_with(server_params(names));
            let info = check_server_cert("acme", &[der], &pkcs8(&key), now()).unwrap();
            assert_eq!(info.dns_names.len(), names.len());
        }
        // No EKU at all is fine.
        let (der, key) = cert_with(|p| {
            server_params(&["acme.messaging.localhost"])(p);
            p.extended_key_usages.clear();
        });
        assert!(check_server_cert("acme", &[der], &pkcs8(&key), now()).is_ok());
        // EKU with serverAuth among others is fine.
        let (der, key) = cert_with(|p| {
            server_params(&["acme.messaging.localhost"])(p);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
        });
        assert!(check_server_cert("acme", &[der], &pkcs8(&key), now()).is_ok());
    }

    #[test]
    fn server_cert_refusals() {
        let t = now();
        let names = ["acme.messaging.localhost"];
        let (der, key) = cert_with(server_params(&names));
        let other = KeyPair::generate().unwrap();

        assert_eq!(
            check_server_cert("acme", &[], &pkcs8(&key), t),
            Err(PkiError::NotACertificate)
        );
        assert_eq!(
            check_server_cert(
                "acme",
                &[CertificateDer::from(b"junk".to_vec())],
                &pkcs8(&key),
                t
            ),
            Err(PkiError::NotACertificate)
        );
        assert_eq!(
            check_server_cert(
                "acme",
                &[der.clone(), CertificateDer::from(b"junk".to_vec())],
                &pkcs8(&key),
                t
            ),
            Err(PkiError::NotACertificate)
        );
        assert_eq!(
            check_server_cert(
                "acme",
                std::slice::from_ref(&der),
                &PrivateKeyDer::Pkcs8(b"\x30\x00".to_vec().into()),
                t
            ),
            Err(PkiError::NotAKey)
        );
        assert_eq!(
            check_server_cert("acme", std::slice::from_ref(&der), &pkcs8(&other), t),
            Err(PkiError::KeyMismatch)
        );
        // Mismatch is reported before expiry.
        let (expired, expired_key) = cert_with(|p| {
            server_params(&names)(p);
            p.not_before = t - Duration::days(2);
            p.not_after = t - Duration::days(1);
        });
        assert_eq!(
            check_server_cert("acme", std::slice::from_ref(&expired), &pkcs8(&other), t),
            Err(PkiError::KeyMismatch)
        );
        assert_eq!(
            check_server_cert("acme", &[expired], &pkcs8(&expired_key), t),
            Err(PkiError::Expired)
        );
        let (future, future_key) = cert_with(|p| {
            server_params(&names)(p);
            p.not_before = t + Duration::days(1);
        });
        assert_eq!(
            check_server_cert("acme", &[future], &pkcs8(&future_key), t),
            Err(PkiError::NotYetValid)
        );
        let (client_only, ck) = cert_with(|p| {
            server_params(&names)(p);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        });
        assert_eq!(
            check_server_cert("acme", &[client_only], &pkcs8(&ck), t),
            Err(PkiError::NoServerAuth)
        );
    }

    #[test]
    fn server_cert_names_must_fit_the_org() {
        let t = now();
        for names in [
            &[][..],
            &["beta.messaging.localhost"][..],
            &["acme.messaging.localhost", "beta.messaging.localhost"][..],
            &["acme.example.com"][..],
            &["*.example.com"][..],
            &["*.acme.messaging.localhost"][..],
            &["acme.messaging"][..],
            &["messaging.localhost"][..],
            &["acme.messaging.-bad.com"][..],
            &["acme.messaging.localhost."][..],
            &["acme.messaging..com"][..],
            &["x.acme.messaging.localhost"][..],
            &["acme-2.messaging.localhost"][..],
        ] {
            let (der, key) = cert_with(|p| {
                server_params(names)(p);
                // CN is not a name that counts.
                p.distinguished_name
                    .push(DnType::CommonName, "acme.messaging.localhost");
            });
            let got = check_server_cert("acme", &[der], &pkcs8(&key), t);
            assert!(
                matches!(got, Err(PkiError::NamesDoNotFit(_))),
                "{names:?}: {got:?}"
            );
        }
    }

    #[test]
    fn server_name_shapes() {
        assert!(server_name_fits_org("acme", "acme.messaging.localhost"));
        assert!(server_name_fits_org("acme", "*.messaging.localhost"));
        assert!(server_name_fits_org("a-1", "a-1.messaging.x.y.z"));
        assert!(!server_name_fits_org("acme", "Acme.messaging.localhost"));
        assert!(!server_name_fits_org("", ".messaging.localhost"));
        assert!(!server_name_fits_org("acme", "acme.messaging."));
        assert!(!server_name_fits_org("acme", "acme.messaging.a_b"));
        assert!(!server_name_fits_org(
            "acme",
            &format!("acme.messaging.{}", "a".repeat(64))
        ));
        let long = format!("acme.messaging.{}", vec!["a".repeat(60); 4].join("."));
        assert!(!server_name_fits_org("acme", &long));
    }

    #[test]
    fn name_covers_rules() {
        for (pattern, name, want) in [
            ("acme.messaging.localhost", "acme.messaging.localhost", true),
            ("ACME.messaging.localhost", "acme.Messaging.localhost", true),
            (
                "acme.messaging.localhost",
                "beta.messaging.localhost",
                false,
            ),
            ("*.messaging.localhost", "acme.messaging.localhost", true),
            ("*.messaging.localhost", "ACME.MESSAGING.LOCALHOST", true),
            ("*.messaging.localhost", "messaging.localhost", false),
            ("*.messaging.localhost", "a.b.messaging.localhost", false),
            ("*.messaging.localhost", ".messaging.localhost", false),
            ("*.messaging.localhost", "*.messaging.localhost", false),
            ("*.", "a.", false),
            ("*", "a", false),
            ("a*.messaging.localhost", "ab.messaging.localhost", false),
            ("", "", false),
            ("acme", "", false),
        ] {
            assert_eq!(name_covers(pattern, name), want, "{pattern} / {name}");
        }
    }
}
