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
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

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
    #[error("not a PKCS#12 file")]
    NotPkcs12,
    #[error("wrong PKCS#12 password")]
    Pkcs12PasswordWrong,
    #[error("the PKCS#12 file holds no private key")]
    Pkcs12NoKey,
    #[error("the PKCS#12 file holds no certificate")]
    Pkcs12NoCertificate,
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
        Ok((rest, cert)) if rest.is_empty() => Ok(cert),
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

/// Key-derivation costs an encrypted upload may ask for. OpenSSL's defaults are far below
/// (PBKDF2: 2,048 iterations; scrypt: N = 16,384, r = 8, i.e. 16 MiB); above these an upload is
/// refused as `NotAKey` rather than pinning a core or allocating gigabytes.
const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
const MAX_SCRYPT_PARALLELISM: u16 = 16;

fn kdf_cost_ok(scheme: &pkcs8::pkcs5::EncryptionScheme<'_>) -> bool {
    use pkcs8::pkcs5::pbes2::Kdf;
    use pkcs8::pkcs5::EncryptionScheme;
    match scheme {
        EncryptionScheme::Pbes2(params) => match &params.kdf {
            Kdf::Pbkdf2(p) => p.iteration_count <= MAX_PBKDF2_ITERATIONS,
            Kdf::Scrypt(p) => {
                let memory = 128u64
                    .saturating_mul(p.cost_parameter)
                    .saturating_mul(u64::from(p.block_size));
                memory <= MAX_SCRYPT_MEMORY && p.parallelization <= MAX_SCRYPT_PARALLELISM
            }
            // A KDF this crate version does not know cannot be decrypted anyway.
            #[allow(unreachable_patterns)]
            _ => false,
        },
        // PBES1 (PKCS#5 v1.5) is refused by the decrypter, and so is any scheme this crate
        // version does not know: nothing to cap.
        _ => true,
    }
}

/// True when our TLS stack can sign with `key`: the test that a decoded key really is one.
fn key_usable(key: &PrivateKeyDer<'static>) -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .is_ok()
}

/// A private key from PEM: PKCS#8, PKCS#1 (RSA), SEC1 (EC), or encrypted PKCS#8 with `passphrase`.
///
/// The first key section found is used. The key must be one the TLS stack can sign with (RSA,
/// ECDSA P-256/P-384/P-521, Ed25519), else `NotAKey`. Encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`)
/// takes PBES2 with PBKDF2 or scrypt and AES-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc`
/// writes; PBES1 and OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` PEM headers are refused as
/// `NotAKey` (convert with `openssl pkcs8 -topk8`). A passphrase given with a plain key is ignored.
pub fn private_key_from_pem(
    pem: &[u8],
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, PkiError> {
    let sections = pem::parse_many(pem).map_err(|_| PkiError::NotAKey)?;
    for section in sections {
        let legacy_encrypted = section
            .headers()
            .get("Proc-Type")
            .is_some_and(|v| v.contains("ENCRYPTED"));
        let key = match section.tag() {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" if legacy_encrypted => {
                return Err(PkiError::NotAKey)
            }
            "PRIVATE KEY" => PrivateKeyDer::Pkcs8(section.into_contents().into()),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(section.into_contents().into()),
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(section.into_contents().into()),
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.ok_or(PkiError::PassphraseRequired)?;
                return decrypt_pkcs8(section.contents(), passphrase);
            }
            _ => continue,
        };
        return if key_usable(&key) {
            Ok(key)
        } else {
            Err(PkiError::NotAKey)
        };
    }
    Err(PkiError::NotAKey)
}

fn decrypt_pkcs8(der: &[u8], passphrase: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    use pkcs8::pkcs5;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der).map_err(|_| PkiError::NotAKey)?;
    if !kdf_cost_ok(&info.encryption_algorithm) {
        return Err(PkiError::NotAKey);
    }
    let plain = match info.decrypt(passphrase) {
        Ok(plain) => plain,
        // Bad padding, or plaintext that is not DER: what a wrong passphrase produces.
        Err(pkcs8::Error::EncryptedPrivateKey(pkcs5::Error::DecryptFailed))
        | Err(pkcs8::Error::Asn1(_)) => return Err(PkiError::PassphraseWrong),
        Err(_) => return Err(PkiError::NotAKey),
    };
    // A wrong passphrase yields valid padding about once in 256 tries; the plaintext is then
    // noise, not a PrivateKeyInfo.
    if pkcs8::PrivateKeyInfo::try_from(plain.as_bytes()).is_err() {
        return Err(PkiError::PassphraseWrong);
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec()));
    if key_usable(&key) {
        Ok(key)
    } else {
        Err(PkiError::NotAKey)
    }
}

/// Certificate chain (leaf first) and private key from a PKCS#12 file (modern PBES2/AES and legacy
/// 3DES/RC2), one password for keystore and key.
///
/// The first key entry (with the certificates the file links to it: its leaf by localKeyId, then
/// issuers by name) is used. A file without a key paired with a certificate — `openssl pkcs12
/// -export -nokeys`, but also `-nocerts` — is `Pkcs12NoKey`: the parser cannot tell the two apart.
pub fn from_pkcs12(
    der: &[u8],
    password: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    use p12_keystore::error::Error as P12Error;
    // The PKCS#12 parser is a third-party decoder fed operator bytes: a panic in it must become
    // a refusal, not a dead admin task.
    let parsed = std::panic::catch_unwind(|| p12_keystore::KeyStore::from_pkcs12(der, password))
        .map_err(|_| PkiError::NotPkcs12)?;
    let store = parsed.map_err(|e| match e {
        P12Error::MacError(_) | P12Error::Pkcs5Error(_) | P12Error::UnpadError => {
            PkiError::Pkcs12PasswordWrong
        }
        _ => PkiError::NotPkcs12,
    })?;
    let (_alias, entry) = store.private_key_chain().ok_or(PkiError::Pkcs12NoKey)?;
    let mut chain = Vec::with_capacity(entry.chain().len());
    for cert in entry.chain() {
        parse_cert(cert.as_der())?;
        chain.push(CertificateDer::from(cert.as_der().to_vec()));
    }
    if chain.is_empty() {
        return Err(PkiError::Pkcs12NoCertificate);
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(entry.key().to_vec()));
    if !key_usable(&key) {
        return Err(PkiError::NotAKey);
    }
    Ok((chain, key))
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

    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| PkiError::NotAKey)?;
    rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key)
        .keys_match()
        .map_err(|_| PkiError::KeyMismatch)?;

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

/// True when `label` is a DNS label: 1–63 of `[a-z0-9-]` (lower-case), not starting or ending
/// with `-`.
fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= 63
                && edge(first)
                && edge(last)
                && b.iter().all(|c| edge(c) || *c == b'-')
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

/// A CA able to issue certificates: its certificate and its key.
pub struct Issuer {
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

/// Clock-skew allowance: generated certificates start this long before now.
const BACKDATE: Duration = Duration::minutes(5);

fn generate_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// 16 random bytes, positive and without a leading zero byte, so the serial is always 16 bytes.
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Generates the platform CA: ECDSA P-256, CN "Portcullis Platform CA", valid 10 years.
pub fn generate_platform_ca() -> Result<Issuer, PkiError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis Platform CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(3653);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).map_err(generate_err)?;
    Ok(Issuer {
        cert_der: cert.der().clone(),
        key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// Issues a server certificate (ECDSA P-256, EKU serverAuth, valid 1 year) for `dns_names` from
/// `issuer`: the chain (leaf, issuer) and the new key.
///
/// The subject CN is the first name. `dns_names` must not be empty; whether the names fit an org
/// is the caller's check ([`server_name_fits_org`]).
pub fn issue_server_cert(
    issuer: &Issuer,
    dns_names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use rcgen::KeyUsagePurpose;
    let first = dns_names
        .first()
        .ok_or_else(|| PkiError::Generate("no DNS name to issue for".to_owned()))?;
    let ca_key = KeyPair::try_from(&issuer.key_der).map_err(generate_err)?;
    let ca = rcgen::Issuer::from_ca_cert_der(&issuer.cert_der, ca_key).map_err(generate_err)?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_err)?;
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(generate_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, first.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(365);
    params.serial_number = Some(random_serial());
    let cert = params.signed_by(&key, &ca).map_err(generate_err)?;
    Ok((
        vec![cert.der().clone(), issuer.cert_der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}
