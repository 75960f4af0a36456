//! Certificate parsing and checks (CA uploads, server certificates and their keys, PKCS#12), and
//! generation of the platform CA and the certificates it issues. Everything an operator uploads is
//! parsed here once, into typed values, before anything is stored or served.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

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

/// Every certificate in a PEM text, in order; `NotACertificate` when there is none or one is broken.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let _ = pem;
    todo!()
}

/// Parses any certificate (DER) into what the API shows.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let _ = der;
    todo!()
}

/// Checks an uploaded CA certificate: a CA (basicConstraints), keyCertSign where keyUsage is
/// present, valid at `now`.
pub fn check_ca(der: &[u8], now: OffsetDateTime) -> Result<CertInfo, PkiError> {
    let _ = (der, now);
    todo!()
}

/// A private key from PEM: PKCS#8, PKCS#1 (RSA), SEC1 (EC), or encrypted PKCS#8 with `passphrase`.
pub fn private_key_from_pem(
    pem: &[u8],
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, PkiError> {
    let _ = (pem, passphrase);
    todo!()
}

/// Certificate chain (leaf first) and private key from a PKCS#12 file (modern PBES2/AES and legacy
/// 3DES/RC2), one password for keystore and key.
pub fn from_pkcs12(
    der: &[u8],
    password: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let _ = (der, password);
    todo!()
}

/// Checks a server certificate chain and key for `org`: the key matches the leaf, the leaf is valid
/// at `now`, its EKU (when present) includes serverAuth, and every SAN dNSName is
/// `<org>.messaging.<domain>` or `*.messaging.<domain>` (at least one name).
pub fn check_server_cert(
    org: &str,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    now: OffsetDateTime,
) -> Result<CertInfo, PkiError> {
    let _ = (org, chain, key, now);
    todo!()
}

/// True when certificate name `pattern` (a DNS name or a `*.` wildcard of one label) covers `name`.
pub fn name_covers(pattern: &str, name: &str) -> bool {
    let _ = (pattern, name);
    todo!()
}

/// A CA able to issue certificates: its certificate and its key.
pub struct Issuer {
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

/// Generates the platform CA: ECDSA P-256, CN "Portcullis Platform CA", valid 10 years.
pub fn generate_platform_ca() -> Result<Issuer, PkiError> {
    todo!()
}

/// Issues a server certificate (ECDSA P-256, EKU serverAuth, valid 1 year) for `dns_names` from
/// `issuer`: the chain (leaf, issuer) and the new key.
pub fn issue_server_cert(
    issuer: &Issuer,
    dns_names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let _ = (issuer, dns_names);
    todo!()
}
