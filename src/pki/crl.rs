//! Certificate revocation lists as operators upload them: decoded from PEM or DER, summarised for
//! the API, and checked against the CA that must have signed them. Only parsing and signature
//! checks live here; which serials a connection refuses is the TLS layer's business.

use super::{parse_cert, serial_hex, PkiError};
use time::OffsetDateTime;

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
