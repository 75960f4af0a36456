//! The OCSP messages: the request we send, and the checks an answer passes before its word is
//! taken. An answer is the responder's signed statement, so everything it says is read from the
//! exact bytes that were signed (tbsResponseData as received, never a re-encoding), and the
//! signer must be the issuer itself or a responder the issuer delegated to (RFC 6960 §4.2.2.2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use x509_cert::der::asn1::{AnyRef, BitStringRef, Null, OctetString};
use x509_cert::der::oid::db::{rfc5912::ID_SHA_1, rfc6960::ID_PKIX_OCSP_BASIC};
use x509_cert::der::{self, Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request, ResponseData,
    TbsRequest, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Key, OcspError};

/// How far ahead of our clock a responder's `thisUpdate` may be: clocks drift.
const MAX_SKEW: Duration = Duration::from_secs(300);
/// How long an answer without `nextUpdate` is taken for: it promises nothing about the future.
const NO_NEXT_UPDATE_TTL: Duration = Duration::from_secs(300);
/// An answer without nextUpdate older than this is refused (a responder that omits nextUpdate
/// signs fresh answers on request).
const MAX_AGE_WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(3600);
/// The longest an answer is cached, whatever its `nextUpdate` says (a far-future `nextUpdate`
/// must not pin a verdict for years).
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// One certificate to ask about, with what its answer is checked against.
pub(super) struct Query {
    cert_id: CertId,
    key: Key,
    /// The issuer's subject (DER), which a delegated responder's certificate names as issuer.
    issuer_name: Vec<u8>,
    /// The issuer's SubjectPublicKeyInfo (DER).
    issuer_spki: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Good,
    Revoked,
    Unknown,
}

/// An answer that passed every check.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: Status,
    /// How long the answer may be cached: until its `nextUpdate`, within bounds.
    pub(super) fresh_for: Duration,
}

impl Query {
    pub(super) fn new(leaf: &[u8], issuer: &[u8]) -> Result<Query, OcspError> {
        let (_, leaf) = X509Certificate::from_der(leaf).map_err(OcspError::Certificate)?;
        let (_, issuer) = X509Certificate::from_der(issuer).map_err(OcspError::Certificate)?;
        let issuer_name = issuer.subject().as_raw();
        if leaf.issuer().as_raw() != issuer_name {
            return Err(OcspError::NotIssuer);
        }
        let issuer_spki = issuer.public_key().raw;
        let issuer_key = Spki::parse(issuer_spki)?;
        // The serial as the certificate encodes it (an INTEGER of up to 21 octets is tolerated
        // when decoding, where `SerialNumber::new` would refuse a 20-octet serial with the high
        // bit set).
        let serial = AnyRef::new(Tag::Integer, leaf.raw_serial())?.to_der()?;
        let serial_number = SerialNumber::from_der(&serial)?;
        let key = Key {
            issuer_key_hash: sha1(issuer_key.key),
            issuer_name_hash: sha1(issuer_name),
            serial: serial_number.as_bytes().into(),
        };
        let cert_id = CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ID_SHA_1,
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new(key.issuer_name_hash)?,
            issuer_key_hash: OctetString::new(key.issuer_key_hash)?,
            serial_number,
        };
        Ok(Query {
            cert_id,
            key,
            issuer_name: issuer_name.to_vec(),
            issuer_spki: issuer_spki.to_vec(),
        })
    }

    /// What the answer is cached under.
    pub(super) fn key(&self) -> &Key {
        &self.key
    }

    /// The DER OCSPRequest: one CertID, unsigned, no nonce (a nonce would defeat responders'
    /// pre-signed answers, and our cache already bounds replay to `nextUpdate`).
    pub(super) fn request_der(&self) -> Result<Vec<u8>, OcspError> {
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: self.cert_id.clone(),
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        };
        Ok(request.to_der()?)
    }

    /// Checks a DER OCSPResponse against this query at `now`.
    pub(super) fn check(&self, response: &[u8], now: SystemTime) -> Result<Answer, OcspError> {
        let response = OcspResponse::from_der(response)?;
        if response.response_status != OcspResponseStatus::Successful {
            return Err(OcspError::ResponderStatus(response.response_status));
        }
        let bytes = response.response_bytes.ok_or(OcspError::NotBasic)?;
        if bytes.response_type != ID_PKIX_OCSP_BASIC {
            return Err(OcspError::NotBasic);
        }
        let basic = Signed::split(bytes.response.as_bytes())?;
        let data = ResponseData::from_der(basic.tbs)?;
        self.check_signer(&basic, now)?;

        let ours = &self.cert_id;
        let single = data
            .responses
            .iter()
            .find(|single| {
                let id = &single.cert_id;
                // Parameters compared loosely: some responders drop SHA-1's NULL.
                id.hash_algorithm.oid == ours.hash_algorithm.oid
                    && id.issuer_name_hash == ours.issuer_name_hash
                    && id.issuer_key_hash == ours.issuer_key_hash
                    && id.serial_number == ours.serial_number
            })
            .ok_or(OcspError::NoMatchingResponse)?;
        let this_update = UNIX_EPOCH + single.this_update.0.to_unix_duration();
        if this_update > now + MAX_SKEW {
            return Err(OcspError::NotYetValid);
        }
        let fresh_for = match single.next_update {
            Some(next_update) => (UNIX_EPOCH + next_update.0.to_unix_duration())
                .duration_since(now)
                .map_err(|_| OcspError::Expired)?,
            // Without a nextUpdate, an answer is only as good as it is recent: an old one (a
            // replay from before a revocation) is refused.
            None => match now.duration_since(this_update) {
                Ok(age) if age > MAX_AGE_WITHOUT_NEXT_UPDATE => return Err(OcspError::Expired),
                _ => NO_NEXT_UPDATE_TTL,
            },
        };
        let status = match single.cert_status {
            CertStatus::Good(_) => Status::Good,
            CertStatus::Revoked(_) => Status::Revoked,
            CertStatus::Unknown(_) => Status::Unknown,
        };
        Ok(Answer {
            status,
            fresh_for: fresh_for.min(MAX_TTL),
        })
    }

    /// The answer is signed by the issuer's key, or by a certificate in it that the issuer
    /// signed for OCSP signing and that is valid now.
    fn check_signer(&self, basic: &Signed<'_>, now: SystemTime) -> Result<(), OcspError> {
        let issuer_key = Spki::parse(&self.issuer_spki)?;
        let mut refusal = match verify(&issuer_key, basic) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        for cert in &basic.certs {
            let (_, parsed) = X509Certificate::from_der(cert).map_err(OcspError::Certificate)?;
            if verify(&Spki::parse(parsed.public_key().raw)?, basic).is_err() {
                continue;
            }
            match self.check_delegate(&issuer_key, cert, &parsed, now) {
                Ok(()) => return Ok(()),
                Err(why) => refusal = why,
            }
        }
        Err(refusal)
    }

    fn check_delegate(
        &self,
        issuer_key: &Spki<'_>,
        der: &[u8],
        cert: &X509Certificate<'_>,
        now: SystemTime,
    ) -> Result<(), OcspError> {
        if cert.issuer().as_raw() != self.issuer_name
            || verify(issuer_key, &Signed::split(der)?).is_err()
        {
            return Err(OcspError::DelegateNotIssued);
        }
        match cert.extended_key_usage() {
            Ok(Some(eku)) if eku.value.ocsp_signing => {}
            _ => return Err(OcspError::DelegateNotAuthorized),
        }
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
        let validity = cert.validity();
        if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
            return Err(OcspError::DelegateExpired);
        }
        Ok(())
    }
}

/// A signed structure as received: Certificate and BasicOCSPResponse alike are
/// `SEQUENCE { tbs, signatureAlgorithm, signature BIT STRING, ... }`.
struct Signed<'a> {
    /// The complete TLV that was signed.
    tbs: &'a [u8],
    /// The signatureAlgorithm's contents (what rustls' `signature_alg_id` holds).
    algorithm: &'a [u8],
    signature: &'a [u8],
    /// BasicOCSPResponse's `certs [0] EXPLICIT SEQUENCE OF Certificate`, each a complete TLV.
    certs: Vec<&'a [u8]>,
}

impl<'a> Signed<'a> {
    fn split(der: &'a [u8]) -> der::Result<Signed<'a>> {
        let mut reader = SliceReader::new(der)?;
        let signed = reader.sequence(|r| {
            let tbs = r.tlv_bytes()?;
            let algorithm = sequence_contents(AnyRef::decode(r)?)?;
            let signature = bit_string_octets(BitStringRef::decode(r)?)?;
            let mut certs = Vec::new();
            if !r.is_finished() {
                let explicit = AnyRef::decode(r)?;
                explicit.tag().assert_eq(Tag::ContextSpecific {
                    constructed: true,
                    number: TagNumber::N0,
                })?;
                let list = sequence_contents(AnyRef::from_der(explicit.value())?)?;
                let mut items = SliceReader::new(list)?;
                while !items.is_finished() {
                    certs.push(items.tlv_bytes()?);
                }
            }
            Ok(Signed {
                tbs,
                algorithm,
                signature,
                certs,
            })
        })?;
        reader.finish(signed)
    }
}

/// A SubjectPublicKeyInfo as rustls' verifiers take it.
struct Spki<'a> {
    /// The algorithm's contents (what `public_key_alg_id` holds).
    algorithm: &'a [u8],
    /// The subjectPublicKey BIT STRING's octets.
    key: &'a [u8],
}

impl<'a> Spki<'a> {
    fn parse(der: &'a [u8]) -> der::Result<Spki<'a>> {
        let mut reader = SliceReader::new(der)?;
        let spki = reader.sequence(|r| {
            Ok(Spki {
                algorithm: sequence_contents(AnyRef::decode(r)?)?,
                key: bit_string_octets(BitStringRef::decode(r)?)?,
            })
        })?;
        reader.finish(spki)
    }
}

fn sequence_contents(any: AnyRef<'_>) -> der::Result<&[u8]> {
    any.tag().assert_eq(Tag::Sequence)?;
    Ok(any.value())
}

fn bit_string_octets(bits: BitStringRef<'_>) -> der::Result<&[u8]> {
    bits.as_bytes().ok_or_else(|| Tag::BitString.value_error())
}

/// Verifies `signed` with `key`, by whichever of the TLS provider's algorithms (ECDSA, RSA
/// PKCS#1 and PSS, Ed25519) matches both the key's and the signature's algorithm identifiers.
fn verify(key: &Spki<'_>, signed: &Signed<'_>) -> Result<(), OcspError> {
    let algorithms = crate::crypto::provider()
        .signature_verification_algorithms
        .all;
    let algorithm = algorithms
        .iter()
        .find(|alg| {
            *alg.public_key_alg_id() == *key.algorithm
                && *alg.signature_alg_id() == *signed.algorithm
        })
        .ok_or(OcspError::UnsupportedAlgorithm)?;
    algorithm
        .verify_signature(key.key, signed.tbs, signed.signature)
        .map_err(|_| OcspError::BadSignature)
}

/// CertID's hash: SHA-1, as every responder understands it (RFC 5019 §2.1.1); it names, it
/// does not protect.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut out = [0; 20];
    // A SHA-1 digest is 20 octets, always.
    out.copy_from_slice(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref());
    out
}

/// Answers made by an independent implementation: the `openssl ocsp` responder, fed the
/// requests this module builds.
#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SignatureAlgorithm,
    };
    use tempfile::TempDir;
    use time::OffsetDateTime;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A certificate with its key, written to `<name>.pem` and `<name>.key`.
    struct Party {
        der: Vec<u8>,
        name: &'static str,
    }

    struct Ca {
        party: Party,
        issuer: Issuer<'static, KeyPair>,
    }

    fn params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
        params
    }

    fn write(dir: &Path, name: &'static str, cert: &rcgen::Certificate, key: &KeyPair) -> Party {
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        Party {
            der: cert.der().to_vec(),
            name,
        }
    }

    fn ca(dir: &Path, name: &'static str, alg: &'static SignatureAlgorithm) -> Ca {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = params(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            party: write(dir, name, &cert, &key),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(dir: &Path, ca: &Ca, name: &'static str, eku: &[ExtendedKeyUsagePurpose]) -> Party {
        let key = KeyPair::generate().unwrap();
        let mut params = params(name);
        params.extended_key_usages = eku.to_vec();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        write(dir, name, &cert, &key)
    }

    fn serial_upper_hex(der: &[u8]) -> String {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        let serial = cert.raw_serial();
        let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        hex::encode_upper(&serial[first..])
    }

    /// openssl's answer to `query`, from `ca`'s index (`V` or `R` per party), signed by `signer`.
    fn respond(
        dir: &Path,
        query: &Query,
        ca: &Party,
        signer: &Party,
        index: &[(char, &Party)],
        extra: &[&str],
    ) -> Vec<u8> {
        let mut lines = String::new();
        for (state, party) in index {
            let revoked = if *state == 'R' { "240101000000Z" } else { "" };
            lines.push_str(&format!(
                "{state}\t491231235959Z\t{revoked}\t{}\tunknown\t/CN={}\n",
                serial_upper_hex(&party.der),
                party.name
            ));
        }
        std::fs::write(dir.join("index.txt"), lines).unwrap();
        std::fs::write(dir.join("req.der"), query.request_der().unwrap()).unwrap();
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(["ocsp", "-index", "index.txt", "-reqin", "req.der"])
            .args(["-respout", "resp.der", "-ndays", "1"])
            .arg("-CA")
            .arg(format!("{}.pem", ca.name))
            .arg("-rsigner")
            .arg(format!("{}.pem", signer.name))
            .arg("-rkey")
            .arg(format!("{}.key", signer.name))
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        std::fs::read(dir.join("resp.der")).unwrap()
    }

    #[test]
    fn good_revoked_and_unknown_signed_by_the_ca() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let dir = TempDir::new().unwrap();
            let ca = ca(dir.path(), "ca", alg);
            let good = issue(dir.path(), &ca, "good", &[]);
            let revoked = issue(dir.path(), &ca, "revoked", &[]);
            let stranger = issue(dir.path(), &ca, "stranger", &[]);
            let index = [('V', &good), ('R', &revoked)];
            let now = SystemTime::now();
            for (leaf, status) in [
                (&good, Status::Good),
                (&revoked, Status::Revoked),
                (&stranger, Status::Unknown),
            ] {
                let query = Query::new(&leaf.der, &ca.party.der).unwrap();
                let answer = respond(dir.path(), &query, &ca.party, &ca.party, &index, &[]);
                let answer = query.check(&answer, now).unwrap();
                assert_eq!(answer.status, status, "{alg:?} {}", leaf.name);
                // -ndays 1: cached until about a day from now (openssl's now is a little
                // later than `now`).
                let minute = Duration::from_secs(60);
                assert!(answer.fresh_for > DAY - minute, "{answer:?}");
                assert!(answer.fresh_for < DAY + minute, "{answer:?}");
            }
        }
    }

    #[test]
    fn a_delegated_responder_needs_the_issuers_signature_and_ocsp_signing() {
        let dir = TempDir::new().unwrap();
        let ca = ca(dir.path(), "ca", &rcgen::PKCS_ECDSA_P256_SHA256);
        let leaf = issue(dir.path(), &ca, "leaf", &[]);
        let index = [('R', &leaf)];
        let query = Query::new(&leaf.der, &ca.party.der).unwrap();
        let now = SystemTime::now();

        let delegate = issue(
            dir.path(),
            &ca,
            "delegate",
            &[ExtendedKeyUsagePurpose::OcspSigning],
        );
        let answer = respond(dir.path(), &query, &ca.party, &delegate, &index, &[]);
        assert_eq!(query.check(&answer, now).unwrap().status, Status::Revoked);
        // The delegate's own certificate is valid for 30 days from yesterday.
        assert!(matches!(
            query.check(&answer, now + 40 * DAY),
            Err(OcspError::DelegateExpired)
        ));

        let no_eku = issue(
            dir.path(),
            &ca,
            "no_eku",
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        let answer = respond(dir.path(), &query, &ca.party, &no_eku, &index, &[]);
        assert!(matches!(
            query.check(&answer, now),
            Err(OcspError::DelegateNotAuthorized)
        ));

        // A responder certificate for OCSP signing, from another CA.
        let other = self::ca(dir.path(), "other", &rcgen::PKCS_ECDSA_P256_SHA256);
        let foreign = issue(
            dir.path(),
            &other,
            "foreign",
            &[ExtendedKeyUsagePurpose::OcspSigning],
        );
        let answer = respond(dir.path(), &query, &ca.party, &foreign, &index, &[]);
        assert!(matches!(
            query.check(&answer, now),
            Err(OcspError::DelegateNotIssued)
        ));
    }

    #[test]
    fn an_answer_signed_by_another_key_is_refused() {
        let dir = TempDir::new().unwrap();
        let ca = ca(dir.path(), "ca", &rcgen::PKCS_ECDSA_P256_SHA256);
        let leaf = issue(dir.path(), &ca, "leaf", &[]);
        let other = self::ca(dir.path(), "other", &rcgen::PKCS_ECDSA_P256_SHA256);
        let query = Query::new(&leaf.der, &ca.party.der).unwrap();
        let index = [('V', &leaf)];
        let answer = respond(
            dir.path(),
            &query,
            &ca.party,
            &other.party,
            &index,
            &["-resp_no_certs"],
        );
        assert!(matches!(
            query.check(&answer, SystemTime::now()),
            Err(OcspError::BadSignature)
        ));
        // The same answer, signed by the CA, passes: only the signer differs.
        let answer = respond(
            dir.path(),
            &query,
            &ca.party,
            &ca.party,
            &index,
            &["-resp_no_certs"],
        );
        assert_eq!(
            query.check(&answer, SystemTime::now()).unwrap().status,
            Status::Good
        );
    }

    #[test]
    fn an_answer_about_another_certificate_or_out_of_date_is_refused() {
        let dir = TempDir::new().unwrap();
        let ca = ca(dir.path(), "ca", &rcgen::PKCS_ECDSA_P256_SHA256);
        let leaf = issue(dir.path(), &ca, "leaf", &[]);
        let neighbour = issue(dir.path(), &ca, "neighbour", &[]);
        let index = [('V', &leaf), ('V', &neighbour)];
        let query = Query::new(&leaf.der, &ca.party.der).unwrap();
        let theirs = Query::new(&neighbour.der, &ca.party.der).unwrap();
        let answer = respond(dir.path(), &theirs, &ca.party, &ca.party, &index, &[]);
        let now = SystemTime::now();
        assert_eq!(theirs.check(&answer, now).unwrap().status, Status::Good);
        assert!(matches!(
            query.check(&answer, now),
            Err(OcspError::NoMatchingResponse)
        ));
        // nextUpdate (a day ahead) passed; thisUpdate (now) beyond the 5 minutes of skew.
        assert!(matches!(
            theirs.check(&answer, now + 2 * DAY),
            Err(OcspError::Expired)
        ));
        assert!(matches!(
            theirs.check(&answer, now - Duration::from_secs(600)),
            Err(OcspError::NotYetValid)
        ));
        assert!(theirs
            .check(&answer, now - Duration::from_secs(120))
            .is_ok());
    }

    #[test]
    fn garbage_and_non_answers_are_refused() {
        let dir = TempDir::new().unwrap();
        let ca = ca(dir.path(), "ca", &rcgen::PKCS_ECDSA_P256_SHA256);
        let leaf = issue(dir.path(), &ca, "leaf", &[]);
        let query = Query::new(&leaf.der, &ca.party.der).unwrap();
        let now = SystemTime::now();
        for garbage in [&b""[..], b"garbage", &[0x30, 0x03, 0x0a, 0x01, 0x07]] {
            assert!(
                matches!(query.check(garbage, now), Err(OcspError::Der(_))),
                "{garbage:?}"
            );
        }
        // "successful", with no responseBytes.
        assert!(matches!(
            query.check(&[0x30, 0x03, 0x0a, 0x01, 0x00], now),
            Err(OcspError::NotBasic)
        ));
        // A well-formed "tryLater" carries no answer.
        assert!(matches!(
            query.check(&[0x30, 0x03, 0x0a, 0x01, 0x03], now),
            Err(OcspError::ResponderStatus(OcspResponseStatus::TryLater))
        ));
        // A leaf checked against a CA that did not issue it.
        assert!(matches!(
            Query::new(&leaf.der, &leaf.der),
            Err(OcspError::NotIssuer)
        ));
    }
}
