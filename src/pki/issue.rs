//! What the platform issues itself: the platform CA, new private keys, CSRs, and the server and
//! token signing certificates it signs. Apart from the checks of uploads because nothing here reads
//! operator bytes: inputs are names and keys already checked, outputs are fresh certificates that
//! pass the same checks an upload would.

use super::PkiError;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

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
/// Whether the names may be served for an org is the caller's check
/// ([`super::server_name_fits_org`]).
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
    use crate::pki::keys::key_usable;
    use crate::pki::test_support::*;
    use crate::pki::*;

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
