//! The key-derivation cost of a PKCS#12 file, read before the file is opened.
//!
//! Why: a PKCS#12 file names its own iteration counts (the MAC's, each encrypted content's, each
//! shrouded key's), and the parser spends them on a blocking thread before it can tell a right
//! password from a wrong one. A count patched to 2^31 pinned a core for minutes per upload. So
//! every count is read here first and capped as PKCS#8 key derivation is (each derivation at most
//! [`MAX_PBKDF2_ITERATIONS`]), with a cap on the whole file too, since a file may hold many
//! encrypted parts. Counts visible in the clear are checked before any derivation runs; the keys
//! inside an encrypted content only show once it is decrypted, which costs at most what was
//! already allowed. An encrypted content is derived twice (here, then by the parser), and is
//! charged twice. The decoders and ciphers are the ones `p12-keystore` uses, so both read the
//! same file the same way.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{ContextSpecific, ObjectIdentifier, OctetString, OctetStringRef};
use der::{Decode, Encode, Reader, SliceReader, TagNumber};
use pkcs12::pbe_params::EncryptedPrivateKeyInfo;
use pkcs12::safe_bag::SafeContents;
use x509_cert::spki::AlgorithmIdentifierOwned;

use super::keys::{kdf_cost_ok, MAX_PBKDF2_ITERATIONS};
use super::PkiError;

/// Iterations a whole file may cost: its MAC, its certificates' encryption (derived twice) and its
/// key's, each at the PKCS#8 cap. OpenSSL writes 2,048 each (Java 10,000).
pub const MAX_PKCS12_ITERATIONS: u64 = 4 * MAX_PBKDF2_ITERATIONS as u64;

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const SECRET_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.5");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");

/// What reading a file's costs found: the iterations its derivations ask for in all, and how
/// many encrypted contents were opened to see the keys inside them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KdfCost {
    pub iterations: u64,
    pub contents_opened: usize,
}

impl KdfCost {
    /// Counts `times` runs of a derivation, refusing the derivation over the per-derivation cap
    /// and the file over its cap.
    pub(super) fn charge(&mut self, derivation: Derivation, times: u64) -> Result<(), PkiError> {
        if derivation.iterations > u64::from(MAX_PBKDF2_ITERATIONS) {
            return Err(PkiError::Pkcs12KdfTooCostly);
        }
        let spent = derivation
            .iterations
            .saturating_mul(derivation.runs)
            .saturating_mul(times);
        self.iterations = self.iterations.saturating_add(spent);
        if self.iterations > MAX_PKCS12_ITERATIONS {
            return Err(PkiError::Pkcs12KdfTooCostly);
        }
        Ok(())
    }
}

/// What one decryption derives: `runs` key derivations of `iterations` each (the legacy PKCS#12
/// scheme derives the key and the IV separately).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Derivation {
    pub iterations: u64,
    pub runs: u64,
}

impl Derivation {
    pub(super) fn once(iterations: u64) -> Self {
        Derivation {
            iterations,
            runs: 1,
        }
    }
}

/// Reads every key-derivation cost of the PKCS#12 file `der` (opening its encrypted contents with
/// `password` to see the keys inside) and refuses the file as `Pkcs12KdfTooCostly` when one is
/// over the cap. A structure that does not decode is `NotPkcs12`; a content that does not open
/// is left for the parser to report (a wrong password), as it cannot derive anything inside it.
pub fn check_kdf_cost(der: &[u8], password: &str) -> Result<KdfCost, PkiError> {
    let pfx = pkcs12::pfx::Pfx::from_der(der).map_err(|_| PkiError::NotPkcs12)?;
    let mut cost = KdfCost::default();
    if let Some(mac) = &pfx.mac_data {
        // The PKCS#12 KDF takes the count as an i32: a negative one derives nothing.
        cost.charge(
            Derivation::once(u64::try_from(mac.iterations).unwrap_or(0)),
            1,
        )?;
    }
    if pfx.auth_safe.content_type != DATA {
        return Err(PkiError::NotPkcs12);
    }
    let safes: Vec<ContentInfo> = pfx
        .auth_safe
        .content
        .to_der()
        .ok()
        .and_then(|der| OctetString::from_der(&der).ok())
        .and_then(|octets| Vec::<ContentInfo>::from_der(octets.as_bytes()).ok())
        .ok_or(PkiError::NotPkcs12)?;
    // First every count in the clear, so that nothing is derived for a file refused here.
    let mut encrypted = Vec::new();
    for safe in &safes {
        let content = safe.content.to_der().map_err(|_| PkiError::NotPkcs12)?;
        if safe.content_type == DATA {
            let bags = OctetString::from_der(&content).map_err(|_| PkiError::NotPkcs12)?;
            charge_bags(&mut cost, bags.as_bytes())?;
        } else if safe.content_type == ENCRYPTED_DATA {
            let data = EncryptedData::from_der(&content).map_err(|_| PkiError::NotPkcs12)?;
            // Opened here to see the keys inside, then again by the parser.
            cost.charge(derivation_cost(&data.enc_content_info.content_enc_alg)?, 2)?;
            encrypted.push(data);
        } else {
            return Err(PkiError::NotPkcs12);
        }
    }
    // Then the keys inside each encrypted content, at a cost already allowed.
    for data in &encrypted {
        let info = &data.enc_content_info;
        let Some(ciphertext) = &info.encrypted_content else {
            continue;
        };
        let Some(plain) = decrypt(&info.content_enc_alg, ciphertext.as_bytes(), password) else {
            return Ok(cost);
        };
        cost.contents_opened += 1;
        match charge_bags(&mut cost, &plain) {
            Err(PkiError::Pkcs12KdfTooCostly) => return Err(PkiError::Pkcs12KdfTooCostly),
            // The parser stops at the same bag, and says why (a wrong password, say).
            Err(_) => return Ok(cost),
            Ok(()) => {}
        }
    }
    Ok(cost)
}

/// Charges the encrypted bags of one SafeContents: shrouded keys, and secret bags (whose key the
/// parser tries to decrypt too).
fn charge_bags(cost: &mut KdfCost, safe_contents: &[u8]) -> Result<(), PkiError> {
    let bags = SafeContents::from_der(safe_contents).map_err(|_| PkiError::NotPkcs12)?;
    for bag in &bags {
        if bag.bag_id == SHROUDED_KEY_BAG {
            let key = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                .map_err(|_| PkiError::NotPkcs12)?;
            cost.charge(derivation_cost(&key.value.encryption_algorithm)?, 1)?;
        } else if bag.bag_id == SECRET_BAG {
            if let Some(alg) = secret_bag_algorithm(&bag.bag_value)? {
                cost.charge(derivation_cost(&alg)?, 1)?;
            }
        }
    }
    Ok(())
}

/// The encryption algorithm of a secret bag's key, as `p12-keystore` reads it: `[0] SEQUENCE {
/// type OID, [0] OCTET STRING (an EncryptedPrivateKeyInfo), attributes? }`. `None` when the inner
/// key does not decode (the parser then derives nothing); an envelope that does not decode is
/// `NotPkcs12` (the parser refuses the file).
fn secret_bag_algorithm(bag_value: &[u8]) -> Result<Option<AlgorithmIdentifierOwned>, PkiError> {
    let envelope = der::Any::from_der(bag_value).map_err(|_| PkiError::NotPkcs12)?;
    let inner = SliceReader::new(envelope.value())
        .and_then(|mut reader| {
            reader.sequence(|seq| {
                let _type: ObjectIdentifier = seq.decode()?;
                let key = ContextSpecific::<OctetString>::decode_explicit(seq, TagNumber::N0)?;
                while !seq.is_finished() {
                    let _attributes: der::Any = seq.decode()?;
                }
                Ok(key)
            })
        })
        .map_err(|_| PkiError::NotPkcs12)?;
    Ok(inner.and_then(|key| {
        EncryptedPrivateKeyInfo::from_der(key.value.as_bytes())
            .ok()
            .map(|info| info.encryption_algorithm)
    }))
}

/// What decrypting with `alg` derives, refused over the PKCS#8 caps. Schemes the parser cannot use
/// (it then derives nothing) cost nothing.
fn derivation_cost(alg: &AlgorithmIdentifierOwned) -> Result<Derivation, PkiError> {
    use pkcs8::pkcs5::pbes2::Kdf;
    let Some(params) = alg.parameters.as_ref().and_then(|p| p.to_der().ok()) else {
        return Ok(Derivation::default());
    };
    if alg.oid == PBES2 {
        let Ok(params) = pkcs8::pkcs5::pbes2::Parameters::from_der(&params) else {
            return Ok(Derivation::default());
        };
        if !kdf_cost_ok(&pkcs8::pkcs5::EncryptionScheme::Pbes2(params.clone())) {
            return Err(PkiError::Pkcs12KdfTooCostly);
        }
        return Ok(Derivation::once(match &params.kdf {
            Kdf::Pbkdf2(p) => u64::from(p.iteration_count),
            // Within the scrypt caps: counted as one full derivation.
            _ => u64::from(MAX_PBKDF2_ITERATIONS),
        }));
    }
    if alg.oid == PBE_SHA1_3DES || alg.oid == PBE_SHA1_RC2_40 {
        let Some((_, iterations)) = pbes1_params(&params) else {
            return Ok(Derivation::default());
        };
        // The PKCS#12 KDF runs twice: the key, then the IV.
        return Ok(Derivation {
            iterations,
            runs: 2,
        });
    }
    Ok(Derivation::default())
}

/// `pkcs-12PbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER }`.
fn pbes1_params(params: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut reader = SliceReader::new(params).ok()?;
    reader
        .sequence(|seq| {
            let salt = OctetStringRef::decode(seq)?.as_bytes().to_vec();
            let iterations: u64 = seq.decode()?;
            Ok((salt, iterations))
        })
        .ok()
}

/// Decrypts an encrypted content as the parser will (PBES2, or PKCS#12 PBES1 with 3DES or
/// 40-bit RC2); `None` when it does not open (a wrong password, or a scheme the parser refuses).
/// Called only once `alg`'s cost has been allowed.
fn decrypt(alg: &AlgorithmIdentifierOwned, data: &[u8], password: &str) -> Option<Vec<u8>> {
    let params = alg.parameters.as_ref()?.to_der().ok()?;
    if alg.oid == PBES2 {
        let params = pkcs8::pkcs5::pbes2::Parameters::from_der(&params).ok()?;
        return params.decrypt(password.as_bytes(), data).ok();
    }
    let (salt, iterations) = pbes1_params(&params)?;
    let rounds = i32::try_from(iterations).ok()?;
    let derive =
        |id, len| pkcs12::kdf::derive_key_utf8::<sha1::Sha1>(password, &salt, id, rounds, len).ok();
    let key_len = match alg.oid {
        PBE_SHA1_3DES => 24,
        PBE_SHA1_RC2_40 => 5,
        _ => return None,
    };
    let key = derive(pkcs12::kdf::Pkcs12KeyType::EncryptionKey, key_len)?;
    let iv = derive(pkcs12::kdf::Pkcs12KeyType::Iv, 8)?;
    if alg.oid == PBE_SHA1_3DES {
        cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .ok()
    } else {
        cbc::Decryptor::<rc2::Rc2>::new_from_slices(&key, &iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .ok()
    }
}
