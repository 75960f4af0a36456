//! Org tokens as JWTs: compact JWS (RFC 7515) signed ES256 (ECDSA P-256, SHA-256, the 64-byte
//! `r || s` signature of RFC 7518 §3.4) with the org's signing certificate, whose chain travels
//! in the `x5c` header so that anyone holding the platform CA can verify a token offline.
//!
//! The server trusts no claim of a presented token by itself: it finds the token by `jti`, checks
//! the signature with the public key of the signing certificate the store says signed it, and
//! takes role, org, status and expiry from the store.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The `iss` and `aud` of every org token.
pub const ISSUER: &str = "portcullis";
pub const AUDIENCE: &str = "portcullis-admin";
/// A token longer than this is not one of ours (ours are about 1.5 KB with two certificates).
const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("algorithm is not ES256")]
    Algorithm,
    #[error("the signing key is not an ECDSA P-256 key")]
    Key,
    #[error("signing failed")]
    Sign,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    /// The signing certificate's id.
    kid: String,
    /// Standard base64 DER, leaf first.
    x5c: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The token's name.
    pub sub: String,
    /// The token's id.
    pub jti: String,
    pub org: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

/// The token for `claims`, signed with `key` (PKCS#8 or SEC1, P-256); `chain` goes into `x5c`.
pub fn sign(
    claims: &Claims,
    kid: &str,
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
) -> Result<String, JwtError> {
    let pair = EcdsaKeyPair::from_private_key_der(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.secret_der(),
    )
    .map_err(|_| JwtError::Key)?;
    let header = Header {
        alg: "ES256".into(),
        typ: "JWT".into(),
        kid: kid.to_owned(),
        x5c: chain.iter().map(|c| STANDARD.encode(c)).collect(),
    };
    let signing_input = format!("{}.{}", encode_part(&header)?, encode_part(claims)?);
    let sig = pair
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| JwtError::Sign)?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    ))
}

/// A presented token, parsed but not yet verified.
pub struct Unverified<'a> {
    pub claims: Claims,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Parses a compact JWS whose header says ES256. Nothing in it is trusted until [`verify`].
pub fn parse(token: &str) -> Result<Unverified<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, claims) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::Malformed)?;
    if header.alg != "ES256" {
        return Err(JwtError::Algorithm);
    }
    let claims: Claims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| JwtError::Malformed)?;
    Ok(Unverified {
        claims,
        signing_input,
        signature: decode(signature)?,
    })
}

/// True when `token`'s signature verifies with the public key of `signing_cert` (DER).
pub fn verify(token: &Unverified<'_>, signing_cert: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(signing_cert) else {
        return false;
    };
    let point = cert.public_key().subject_public_key.data.as_ref();
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(token.signing_input.as_bytes(), &token.signature)
        .is_ok()
}

/// A token part: JSON, base64url without padding.
fn encode_part<T: Serialize>(value: &T) -> Result<String, JwtError> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    fn claims() -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "ci".into(),
            jti: "0123".into(),
            org: "acme".into(),
            role: "viewer".into(),
            iat: 1_700_000_000,
            exp: 1_700_003_600,
        }
    }

    fn signing() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let platform = pki::generate_platform_ca().unwrap();
        pki::issue_signing_cert(&platform, "acme").unwrap()
    }

    #[test]
    fn signed_tokens_verify_with_their_certificate_only() {
        let (chain, key) = signing();
        let token = sign(&claims(), "kid", &chain, &key).unwrap();
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.claims, claims());
        assert!(verify(&parsed, &chain[0]));
        let (other, _) = signing();
        assert!(!verify(&parsed, &other[0]), "another key verified it");
    }

    #[test]
    fn tampered_tokens_do_not_verify() {
        let (chain, key) = signing();
        let token = sign(&claims(), "kid", &chain, &key).unwrap();
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut forged = claims();
        forged.role = "operator".into();
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let forged = format!("{header}.{forged_claims}.{signature}");
        assert!(!verify(&parse(&forged).unwrap(), &chain[0]));
    }

    #[test]
    fn other_algorithms_and_garbage_are_refused() {
        let none_header =
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k","x5c":[]}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        assert_eq!(
            parse(&format!("{none_header}.{body}.")).err(),
            Some(JwtError::Algorithm)
        );
        for garbage in ["", "a", "a.b", "a.b.c", "..", "x.y.z.w"] {
            assert!(parse(garbage).is_err(), "{garbage:?}");
        }
        assert_eq!(
            parse(&"a".repeat(MAX_TOKEN_LEN + 1)).err(),
            Some(JwtError::Malformed)
        );
    }
}
