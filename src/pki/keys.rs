//! Private keys as operators upload them: PEM (PKCS#8, PKCS#1, SEC1, encrypted PKCS#8) and
//! PKCS#12 files. Apart from certificate parsing because this is where an upload can ask for work:
//! every key-derivation cost is capped here (and in `pkcs12_cost` for PKCS#12) before any is done,
//! so a hostile file is refused at once instead of pinning a core.

use super::pkcs12_cost::check_kdf_cost;
use super::{parse_cert, PkiError};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Key-derivation costs an encrypted upload may ask for. OpenSSL's defaults are far below
/// (PBKDF2: 2,048 iterations; scrypt: N = 16,384, r = 8, p = 1, i.e. 16 MiB and 2^17 block
/// mixes); above these an upload is refused as `NotAKey` rather than pinning a core or allocating
/// gigabytes. scrypt's time grows with N·r·p and its memory with N·r, so both are capped: a small
/// N with a large p is as slow as a large N. The same caps bound each derivation of a PKCS#12 file
/// (see `pkcs12_cost`).
pub(super) const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// N·r·p: 8 times OpenSSL's default, about as long as [`MAX_PBKDF2_ITERATIONS`] of PBKDF2.
const MAX_SCRYPT_WORK: u64 = 1 << 20;
/// 128·N·r bytes: 64 MiB, 4 times OpenSSL's default.
const MAX_SCRYPT_MEMORY: u64 = 64 << 20;

pub(super) fn kdf_cost_ok(scheme: &pkcs8::pkcs5::EncryptionScheme<'_>) -> bool {
    use pkcs8::pkcs5::pbes2::Kdf;
    use pkcs8::pkcs5::EncryptionScheme;
    match scheme {
        EncryptionScheme::Pbes2(params) => match &params.kdf {
            Kdf::Pbkdf2(p) => p.iteration_count <= MAX_PBKDF2_ITERATIONS,
            Kdf::Scrypt(p) => {
                let blocks = p.cost_parameter.saturating_mul(u64::from(p.block_size));
                blocks.saturating_mul(128) <= MAX_SCRYPT_MEMORY
                    && blocks.saturating_mul(u64::from(p.parallelization)) <= MAX_SCRYPT_WORK
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
pub(super) fn key_usable(key: &PrivateKeyDer<'static>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::test_support::*;
    use crate::pki::*;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use std::path::Path;

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
        assert!(kdf_cost_ok(&scheme(scrypt(16384, 8, 8))));
        assert!(kdf_cost_ok(&scheme(scrypt(1 << 16, 8, 2))));
        assert!(!kdf_cost_ok(&scheme(scrypt(1 << 17, 8, 1))));
        assert!(!kdf_cost_ok(&scheme(scrypt(1 << 20, 8, 1))));
        assert!(!kdf_cost_ok(&scheme(scrypt(u64::MAX, u16::MAX, 1))));
        assert!(!kdf_cost_ok(&scheme(scrypt(16384, 8, 64))));
        // Little memory, much time: N·r·p is what a core pays.
        assert!(!kdf_cost_ok(&scheme(scrypt(16384, 8, 9))));
        assert!(!kdf_cost_ok(&scheme(scrypt(1 << 18, 1, 16))));
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
        // derives twice (key and IV). The certificates' content is opened to see inside, then
        // opened again by the parser: charged twice.
        for (extra, iterations) in [
            (&["-inkey", "key.pem"][..], 4 * 2048),
            (&["-inkey", "key.pem", "-legacy"][..], 7 * 2048),
            (&["-inkey", "key.pem", "-descert"][..], 6 * 2048),
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
        use crate::pki::pkcs12_cost::Derivation;
        let max = Derivation::once(u64::from(MAX_PBKDF2_ITERATIONS));
        let mut cost = KdfCost::default();
        cost.charge(max, 2).unwrap();
        cost.charge(max, 1).unwrap();
        cost.charge(max, 1).unwrap();
        assert_eq!(cost.iterations, MAX_PKCS12_ITERATIONS);
        assert_eq!(
            cost.charge(Derivation::once(1), 1),
            Err(PkiError::Pkcs12KdfTooCostly)
        );
        let over = Derivation::once(u64::from(MAX_PBKDF2_ITERATIONS) + 1);
        assert_eq!(
            KdfCost::default().charge(over, 1),
            Err(PkiError::Pkcs12KdfTooCostly)
        );
        // The legacy scheme's two runs are each within the per-derivation cap.
        let legacy = Derivation {
            iterations: 600_000,
            runs: 2,
        };
        let mut cost = KdfCost::default();
        assert_eq!(cost.charge(legacy, 2), Ok(()));
        assert_eq!(cost.iterations, 2_400_000);
        assert_eq!(
            KdfCost::default().charge(Derivation::once(u64::MAX), 1),
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
}
