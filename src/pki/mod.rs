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

mod pkcs12_cost;
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

/// Key-derivation costs an encrypted upload may ask for. OpenSSL's defaults are far below
/// (PBKDF2: 2,048 iterations; scrypt: N = 16,384, r = 8, i.e. 16 MiB); above these an upload is
/// refused as `NotAKey` rather than pinning a core or allocating gigabytes. The same caps bound each
/// derivation of a PKCS#12 file (see `pkcs12_cost`).
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
/// takes PBES2 with PBKDF2 (HMAC-SHA-1 or SHA-2) or scrypt and AES-CBC or 3DES-CBC, as
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc` (and older OpenSSL and Java tools) write; PBES1 and OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` PEM headers are refused as
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
        // Bad padding, or plaintext that is not DER: what a wrong passphrase produces. (pkcs5
        // 0.7 reports bad padding as `EncryptFailed`.)
        Err(pkcs8::Error::EncryptedPrivateKey(
            pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed,
        ))
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
/// A file asking for more key derivation than [`check_kdf_cost`] allows is `Pkcs12KdfTooCostly`,
/// refused before any is done.
pub fn from_pkcs12(
    der: &[u8],
    password: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    use p12_keystore::error::Error as P12Error;
    // Every iteration count is read and capped before the parser derives anything (a panic in
    // the decoders it uses would be a refusal too).
    std::panic::catch_unwind(|| check_kdf_cost(der, password))
        .map_err(|_| PkiError::NotPkcs12)??;
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

/// A CRL as the API shows it, and the serials it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    pub issuer: String,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    /// Lower-case hex, as certificate resources show serials.
    pub revoked: Vec<String>,
}

/// The DER of a CRL sent as PEM (`X509 CRL`) or DER.
pub fn crl_der(input: &[u8]) -> Result<Vec<u8>, PkiError> {
    if input.starts_with(b"-----") || input.iter().take(64).any(|b| *b == b'-') {
        let block = pem::parse(input).map_err(|_| PkiError::NotACrl)?;
        if block.tag() != "X509 CRL" {
            return Err(PkiError::NotACrl);
        }
        return Ok(block.into_contents());
    }
    Ok(input.to_vec())
}

/// Parses a CRL (DER); `NotACrl` for anything else.
pub fn crl_info(der: &[u8]) -> Result<CrlInfo, PkiError> {
    let (rest, crl) = x509_parser::parse_x509_crl(der).map_err(|_| PkiError::NotACrl)?;
    if !rest.is_empty() {
        return Err(PkiError::NotACrl);
    }
    let time = |t: x509_parser::time::ASN1Time| t.to_datetime();
    Ok(CrlInfo {
        issuer: crl.issuer().to_string(),
        this_update: time(crl.last_update()),
        next_update: crl.next_update().map(time),
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| serial_hex(r.raw_serial()))
            .collect(),
    })
}

/// Checks that `crl` (DER) was issued and signed by the CA `ca` (DER).
pub fn check_crl(crl: &[u8], ca: &[u8]) -> Result<CrlInfo, PkiError> {
    let info = crl_info(crl)?;
    let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|_| PkiError::NotACrl)?;
    let ca = parse_cert(ca)?;
    if parsed.issuer().as_raw() != ca.subject().as_raw()
        || parsed.verify_signature(ca.public_key()).is_err()
    {
        return Err(PkiError::CrlSignatureInvalid);
    }
    Ok(info)
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

/// Key types the platform generates (CSRs, generated server certificates).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum KeyType {
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa2048,
            KeyType::Rsa3072,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A new private key of `key_type` (PKCS#8).
pub fn generate_key(key_type: KeyType) -> Result<PrivateKeyDer<'static>, PkiError> {
    use rcgen::{KeyPair, RsaKeySize};
    let key = match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyType::Rsa3072 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072),
    }
    .map_err(generate_err)?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    )))
}

/// What a server certificate is for: its subject CN and its DNS names.
pub struct ServerNames<'a> {
    pub common_name: &'a str,
    pub dns_names: &'a [String],
}

impl ServerNames<'_> {
    /// End-entity parameters: CN, SANs, digitalSignature, serverAuth, `valid_for` from now.
    fn params(&self, valid_for: Duration) -> Result<rcgen::CertificateParams, PkiError> {
        let mut params =
            rcgen::CertificateParams::new(self.dns_names.to_vec()).map_err(generate_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params(&mut params, valid_for);
        Ok(params)
    }
}

/// A PKCS#10 certificate signing request (PEM) for `names`, signed with `key`.
pub fn csr_pem(names: &ServerNames<'_>, key: &PrivateKeyDer<'_>) -> Result<String, PkiError> {
    let key = rcgen::KeyPair::try_from(key).map_err(generate_err)?;
    let mut params = names.params(Duration::days(365))?;
    // What a CSR cannot carry: the signer chooses serial and key identifiers.
    params.serial_number = None;
    params.use_authority_key_identifier_extension = false;
    params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(generate_err)
}

/// A server certificate for `names` over `key`, valid a year: signed by `issuer`, or by `key`
/// itself when `None` (self-signed). The chain is the leaf, then the issuer's certificate.
pub fn sign_server_cert(
    issuer: Option<&Issuer>,
    names: &ServerNames<'_>,
    key: &PrivateKeyDer<'_>,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let key = rcgen::KeyPair::try_from(key).map_err(generate_err)?;
    let params = names.params(Duration::days(365))?;
    match issuer {
        Some(issuer) => {
            let ca_key = rcgen::KeyPair::try_from(&issuer.key_der).map_err(generate_err)?;
            let ca =
                rcgen::Issuer::from_ca_cert_der(&issuer.cert_der, ca_key).map_err(generate_err)?;
            let cert = params.signed_by(&key, &ca).map_err(generate_err)?;
            Ok(vec![cert.der().clone(), issuer.cert_der.clone()])
        }
        None => {
            let cert = params.self_signed(&key).map_err(generate_err)?;
            Ok(vec![cert.der().clone()])
        }
    }
}

/// A server certificate for `dns_names` (CN: the first) issued by `issuer` over a new P-256 key.
/// Whether the names may be served for an org is the caller's check ([`server_name_fits_org`]).
pub fn issue_server_cert(
    issuer: &Issuer,
    dns_names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let first = dns_names
        .first()
        .ok_or_else(|| PkiError::Generate("no DNS name to issue for".to_owned()))?;
    let key = generate_key(KeyType::EcdsaP256)?;
    let names = ServerNames {
        common_name: first,
        dns_names,
    };
    let chain = sign_server_cert(Some(issuer), &names, &key)?;
    Ok((chain, key))
}

/// How long a generated token signing certificate is valid.
pub const SIGNING_CERT_DAYS: i64 = 730;

/// A token signing certificate for `org`, issued by the platform CA: a new ECDSA P-256 key (org
/// tokens are ES256), digitalSignature only, valid for [`SIGNING_CERT_DAYS`]; the chain is the
/// leaf and the issuer.
pub fn issue_signing_cert(
    issuer: &Issuer,
    org: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let key_der = generate_key(KeyType::EcdsaP256)?;
    let key = rcgen::KeyPair::try_from(&key_der).map_err(generate_err)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{org} token signing"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    leaf_params(&mut params, Duration::days(SIGNING_CERT_DAYS));
    let ca_key = rcgen::KeyPair::try_from(&issuer.key_der).map_err(generate_err)?;
    let ca = rcgen::Issuer::from_ca_cert_der(&issuer.cert_der, ca_key).map_err(generate_err)?;
    let cert = params.signed_by(&key, &ca).map_err(generate_err)?;
    Ok((vec![cert.der().clone(), issuer.cert_der.clone()], key_der))
}

/// What every generated end-entity certificate has: not a CA, digitalSignature, a random
/// serial, the issuer's key identifier, valid from now (backdated a little) for `valid_for`.
fn leaf_params(params: &mut rcgen::CertificateParams, valid_for: Duration) {
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
    params.serial_number = Some(random_serial());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::path::Path;
    use std::process::Command;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// A self-signed certificate with `edit` applied to default parameters (CN "test", valid
    /// from a day ago for a year, no extensions), and its key.
    fn cert_with(edit: impl FnOnce(&mut CertificateParams)) -> (CertificateDer<'static>, KeyPair) {
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

    fn ca_params(p: &mut CertificateParams) {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }

    fn server_params<'a>(names: &'a [&'a str]) -> impl FnOnce(&mut CertificateParams) + 'a {
        move |p| {
            p.subject_alt_names = names
                .iter()
                .map(|n| rcgen::SanType::DnsName((*n).try_into().unwrap()))
                .collect();
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
    }

    fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(key.serialize_der().into())
    }

    fn pem_of(der: &[u8]) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
    }

    fn openssl(dir: &Path, args: &[&str]) {
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

    // ---- private keys ----

    #[test]
    fn plain_keys_pkcs8_pkcs1_sec1() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = KeyPair::generate().unwrap();
        let got = private_key_from_pem(key.serialize_pem().as_bytes(), None).unwrap();
        assert_eq!(got, pkcs8(&key));
        // A passphrase given with a plain key is ignored.
        assert!(private_key_from_pem(key.serialize_pem().as_bytes(), Some("x")).is_ok());

        std::fs::write(d.join("ec8.pem"), key.serialize_pem()).unwrap();
        openssl(d, &["ec", "-in", "ec8.pem", "-out", "sec1.pem"]);
        let sec1 = std::fs::read(d.join("sec1.pem")).unwrap();
        assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
        assert!(matches!(
            private_key_from_pem(&sec1, None),
            Ok(PrivateKeyDer::Sec1(_))
        ));

        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa8.pem",
            ],
        );
        openssl(
            d,
            &["rsa", "-in", "rsa8.pem", "-traditional", "-out", "rsa1.pem"],
        );
        let rsa1 = std::fs::read(d.join("rsa1.pem")).unwrap();
        assert!(String::from_utf8_lossy(&rsa1).contains("BEGIN RSA PRIVATE KEY"));
        assert!(matches!(
            private_key_from_pem(&rsa1, None),
            Ok(PrivateKeyDer::Pkcs1(_))
        ));
        let rsa8 = std::fs::read(d.join("rsa8.pem")).unwrap();
        assert!(matches!(
            private_key_from_pem(&rsa8, None),
            Ok(PrivateKeyDer::Pkcs8(_))
        ));
    }

    #[test]
    fn not_a_key() {
        let (cert, _) = cert_with(|_| {});
        for input in [
            b"".to_vec(),
            b"junk".to_vec(),
            pem_of(&cert).into_bytes(),
            pem::encode(&pem::Pem::new("PRIVATE KEY", b"\x30\x00".to_vec())).into_bytes(),
            pem::encode(&pem::Pem::new("EC PRIVATE KEY", b"garbage".to_vec())).into_bytes(),
            pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", b"garbage".to_vec())).into_bytes(),
        ] {
            let passphrase = Some("x");
            assert_eq!(
                private_key_from_pem(&input, passphrase),
                Err(PkiError::NotAKey),
                "{}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    /// An EC key encrypted by `openssl pkcs8 -topk8` with `extra` options, passphrase "s3cret".
    fn encrypted_key(extra: &[&str]) -> (Vec<u8>, KeyPair) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = KeyPair::generate().unwrap();
        std::fs::write(d.join("k.pem"), key.serialize_pem()).unwrap();
        let mut args = vec!["pkcs8", "-topk8", "-in", "k.pem", "-out", "e.pem"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-passout", "pass:s3cret"]);
        openssl(d, &args);
        let pem = std::fs::read(d.join("e.pem")).unwrap();
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN ENCRYPTED PRIVATE KEY"));
        (pem, key)
    }

    #[test]
    fn encrypted_pkcs8_aes256_pbkdf2() {
        let (pem, key) = encrypted_key(&["-v2", "aes-256-cbc"]);
        assert_eq!(
            private_key_from_pem(&pem, Some("s3cret")).unwrap(),
            pkcs8(&key)
        );
        assert_eq!(
            private_key_from_pem(&pem, Some("wrong")),
            Err(PkiError::PassphraseWrong)
        );
        assert_eq!(
            private_key_from_pem(&pem, Some("")),
            Err(PkiError::PassphraseWrong)
        );
        assert_eq!(
            private_key_from_pem(&pem, None),
            Err(PkiError::PassphraseRequired)
        );
    }

    #[test]
    fn encrypted_pkcs8_other_openssl_forms() {
        for extra in [
            // What OpenSSL 1.0 and Java tools wrote: PBKDF2 with HMAC-SHA1.
            &["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"][..],
            &["-v2", "des3"][..],
            // scrypt, with a small N: the debug-built KDF is slow at OpenSSL's default.
            &["-v2", "aes-256-cbc", "-scrypt", "-scrypt_N", "1024"][..],
            &[][..], // OpenSSL 3's default
        ] {
            let (pem, key) = encrypted_key(extra);
            assert_eq!(
                private_key_from_pem(&pem, Some("s3cret")).unwrap(),
                pkcs8(&key),
                "{extra:?}"
            );
            assert_eq!(
                private_key_from_pem(&pem, Some("nope")),
                Err(PkiError::PassphraseWrong),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn legacy_pem_encryption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = KeyPair::generate().unwrap();
        std::fs::write(d.join("k.pem"), key.serialize_pem()).unwrap();
        openssl(
            d,
            &[
                "ec",
                "-in",
                "k.pem",
                "-aes256",
                "-passout",
                "pass:s3cret",
                "-out",
                "l.pem",
            ],
        );
        let pem = std::fs::read(d.join("l.pem")).unwrap();
        assert!(String::from_utf8_lossy(&pem).contains("Proc-Type: 4,ENCRYPTED"));
        assert_eq!(
            private_key_from_pem(&pem, Some("s3cret")),
            Err(PkiError::NotAKey)
        );
    }

    #[test]
    fn kdf_costs_are_capped() {
        use pkcs8::pkcs5::pbes2::{self, Kdf, Pbkdf2Params, ScryptParams};
        use pkcs8::pkcs5::EncryptionScheme;
        let iv = [0u8; 16];
        let scheme = |kdf| {
            EncryptionScheme::Pbes2(pbes2::Parameters {
                kdf,
                encryption: pbes2::EncryptionScheme::Aes256Cbc { iv: &iv },
            })
        };
        let pbkdf2 = |n| {
            Kdf::Pbkdf2(Pbkdf2Params {
                salt: b"salt",
                iteration_count: n,
                key_length: None,
                prf: Default::default(),
            })
        };
        let scrypt = |n: u64, r: u16, p: u16| {
            Kdf::Scrypt(ScryptParams {
                salt: b"salt",
                cost_parameter: n,
                block_size: r,
                parallelization: p,
                key_length: None,
            })
        };
        assert!(kdf_cost_ok(&scheme(pbkdf2(2048))));
        assert!(kdf_cost_ok(&scheme(pbkdf2(MAX_PBKDF2_ITERATIONS))));
        assert!(!kdf_cost_ok(&scheme(pbkdf2(MAX_PBKDF2_ITERATIONS + 1))));
        assert!(!kdf_cost_ok(&scheme(pbkdf2(u32::MAX))));
        assert!(kdf_cost_ok(&scheme(scrypt(16384, 8, 1))));
        assert!(!kdf_cost_ok(&scheme(scrypt(1 << 20, 8, 1))));
        assert!(!kdf_cost_ok(&scheme(scrypt(u64::MAX, u16::MAX, 1))));
        assert!(!kdf_cost_ok(&scheme(scrypt(16384, 8, 64))));
    }

    // ---- PKCS#12 ----

    /// Leaf key and certificate signed by a CA, written to `dir` as key.pem, leaf.pem, ca.pem.
    fn write_chain(dir: &Path) -> (Vec<CertificateDer<'static>>, KeyPair) {
        let mut ca = CertificateParams::default();
        ca_params(&mut ca);
        ca.distinguished_name.push(DnType::CommonName, "Acme CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["acme.messaging.localhost".into()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "acme");
        let leaf = leaf.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        (vec![leaf.der().clone(), ca.der().clone()], key)
    }

    fn p12(dir: &Path, extra: &[&str]) -> Vec<u8> {
        let mut args = vec!["pkcs12", "-export", "-in", "leaf.pem", "-out", "out.p12"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-passout", "pass:pa55"]);
        openssl(dir, &args);
        std::fs::read(dir.join("out.p12")).unwrap()
    }

    #[test]
    fn pkcs12_costs_are_read_opened_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chain(d);
        // OpenSSL's 2,048 iterations for the MAC, the certificates and the key; the legacy PBES1
        // derives twice (key and IV). The certificates' content is opened to see inside.
        for (extra, iterations) in [
            (&["-inkey", "key.pem"][..], 3 * 2048),
            (&["-inkey", "key.pem", "-legacy"][..], 5 * 2048),
            (&["-inkey", "key.pem", "-descert"][..], 4 * 2048),
        ] {
            let file = p12(d, extra);
            let cost = check_kdf_cost(&file, "pa55").unwrap();
            let want = KdfCost {
                iterations,
                contents_opened: 1,
            };
            assert_eq!(cost, want, "{extra:?}");
            // A wrong password is for the parser to report.
            assert!(check_kdf_cost(&file, "wrong").is_ok(), "{extra:?}");
        }
        // One derivation over the cap: refused before the parser runs.
        let file = p12(d, &["-inkey", "key.pem", "-iter", "1000001", "-nomac"]);
        assert_eq!(
            from_pkcs12(&file, "pa55"),
            Err(PkiError::Pkcs12KdfTooCostly)
        );
        assert_eq!(check_kdf_cost(b"junk", "pa55"), Err(PkiError::NotPkcs12));
    }

    #[test]
    fn pkcs12_caps_each_derivation_and_the_file() {
        let mut cost = KdfCost::default();
        for _ in 0..3 {
            cost.charge(u64::from(MAX_PBKDF2_ITERATIONS)).unwrap();
        }
        assert_eq!(cost.iterations, MAX_PKCS12_ITERATIONS);
        assert_eq!(cost.charge(1), Err(PkiError::Pkcs12KdfTooCostly));
        let mut one = KdfCost::default();
        assert_eq!(
            one.charge(u64::from(MAX_PBKDF2_ITERATIONS) + 1),
            Err(PkiError::Pkcs12KdfTooCostly)
        );
        assert_eq!(
            KdfCost::default().charge(u64::MAX),
            Err(PkiError::Pkcs12KdfTooCostly)
        );
    }

    #[test]
    fn pkcs12_modern_and_legacy() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (chain, key) = write_chain(d);
        for extra in [
            &["-inkey", "key.pem", "-certfile", "ca.pem"][..],
            &["-inkey", "key.pem", "-certfile", "ca.pem", "-legacy"][..],
            &["-inkey", "key.pem", "-certfile", "ca.pem", "-descert"][..],
        ] {
            let file = p12(d, extra);
            let (got_chain, got_key) = from_pkcs12(&file, "pa55").unwrap();
            assert_eq!(got_chain, chain, "{extra:?}");
            assert_eq!(got_key, pkcs8(&key), "{extra:?}");
            assert_eq!(
                from_pkcs12(&file, "wrong"),
                Err(PkiError::Pkcs12PasswordWrong),
                "{extra:?}"
            );
            assert_eq!(
                from_pkcs12(&file, ""),
                Err(PkiError::Pkcs12PasswordWrong),
                "{extra:?}"
            );
        }
        // Leaf only, no chain.
        let file = p12(d, &["-inkey", "key.pem"]);
        let (got_chain, _) = from_pkcs12(&file, "pa55").unwrap();
        assert_eq!(got_chain, chain[..1].to_vec());
    }

    #[test]
    fn key_types_generate_and_name_themselves_the_same_everywhere() {
        for key_type in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let json = serde_json::to_string(&key_type).unwrap();
            assert_eq!(json, format!("\"{}\"", key_type.as_str()));
            assert_eq!(KeyType::parse(key_type.as_str()), Some(key_type));
            let key = generate_key(key_type).unwrap();
            let names = ServerNames {
                common_name: "acme.messaging.example",
                dns_names: &["acme.messaging.example".to_owned()],
            };
            let chain = sign_server_cert(None, &names, &key).unwrap();
            check_server_cert("acme", &chain, &key, now()).unwrap();
            let csr = csr_pem(&names, &key).unwrap();
            assert!(
                csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
                "{csr}"
            );
        }
        assert_eq!(KeyType::parse("rsa-3072"), Some(KeyType::Rsa3072));
        assert_eq!(KeyType::parse("dsa"), None);
    }

    #[test]
    fn pkcs12_without_key_or_not_pkcs12() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chain(d);
        let file = p12(d, &["-nokeys", "-certfile", "ca.pem"]);
        assert_eq!(from_pkcs12(&file, "pa55"), Err(PkiError::Pkcs12NoKey));
        assert_eq!(from_pkcs12(b"", "pa55"), Err(PkiError::NotPkcs12));
        assert_eq!(from_pkcs12(b"junk", "pa55"), Err(PkiError::NotPkcs12));
        let (cert, _) = cert_with(|_| {});
        assert_eq!(from_pkcs12(&cert, "pa55"), Err(PkiError::NotPkcs12));
    }

    /// Truncated and bit-flipped uploads are refused, never a panic.
    #[test]
    fn mangled_uploads_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chain(d);
        let file = p12(d, &["-inkey", "key.pem", "-certfile", "ca.pem", "-legacy"]);
        let (enc, _) = encrypted_key(&["-v2", "aes-256-cbc"]);
        let enc_der = pem::parse(&enc).unwrap().into_contents();
        let (cert, _) = cert_with(ca_params);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..120 {
            for original in [&file, &enc_der, &cert.to_vec()] {
                let mut bytes = original.clone();
                if round % 3 == 0 {
                    bytes.truncate((next() as usize) % bytes.len());
                } else {
                    for _ in 0..1 + round % 4 {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] ^= 1 << (next() % 8);
                    }
                }
                let _ = from_pkcs12(&bytes, "pa55");
                let _ = check_ca(&bytes, now());
                let _ = cert_info(&bytes);
                let _ = single_cert(&bytes);
                let pem = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", bytes));
                let _ = private_key_from_pem(pem.as_bytes(), Some("s3cret"));
            }
        }
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

    // ---- generation ----

    #[test]
    fn platform_ca_is_a_p256_ca_for_ten_years() {
        let ca = generate_platform_ca().unwrap();
        let info = check_ca(&ca.cert_der, now()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("Portcullis Platform CA"));
        assert_eq!(info.serial.len(), 32);
        let years = (info.not_after - info.not_before).whole_days() / 365;
        assert_eq!(years, 10);
        let (_, cert) = x509_parser::parse_x509_certificate(&ca.cert_der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        assert!(key_usable(&ca.key_der));
        let again = generate_platform_ca().unwrap();
        assert_ne!(cert_info(&again.cert_der).unwrap().serial, info.serial);
    }

    #[test]
    fn issued_server_cert_passes_our_checks_and_webpki() {
        let ca = generate_platform_ca().unwrap();
        let names = vec!["*.messaging.localhost".to_owned()];
        let (chain, key) = issue_server_cert(&ca, &names).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca.cert_der);
        let info = check_server_cert("acme", &chain, &key, now()).unwrap();
        assert_eq!(info.dns_names, names);
        assert_eq!(info.common_name.as_deref(), Some("*.messaging.localhost"));
        let days = (info.not_after - info.not_before).whole_days();
        assert!((365..=366).contains(&days), "{days}");
        assert_eq!(
            info.issuer,
            cert_info(&ca.cert_der).unwrap().subject,
            "issued by the platform CA"
        );

        // What a device does: verify the chain to the platform CA for its SNI name.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let sni = rustls_pki_types::ServerName::try_from("acme.messaging.localhost").unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &sni,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
        let wrong = rustls_pki_types::ServerName::try_from("acme.example.com").unwrap();
        assert!(verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &wrong,
                &[],
                rustls_pki_types::UnixTime::now()
            )
            .is_err());
    }

    #[test]
    fn issue_server_cert_refusals() {
        let ca = generate_platform_ca().unwrap();
        assert!(matches!(
            issue_server_cert(&ca, &[]),
            Err(PkiError::Generate(_))
        ));
        let broken = Issuer {
            cert_der: ca.cert_der.clone(),
            key_der: PrivateKeyDer::Pkcs8(b"\x30\x00".to_vec().into()),
        };
        assert!(matches!(
            issue_server_cert(&broken, &["acme.messaging.localhost".into()]),
            Err(PkiError::Generate(_))
        ));
        let broken = Issuer {
            cert_der: CertificateDer::from(b"junk".to_vec()),
            key_der: ca.key_der.clone_key(),
        };
        assert!(matches!(
            issue_server_cert(&broken, &["acme.messaging.localhost".into()]),
            Err(PkiError::Generate(_))
        ));
    }
}
