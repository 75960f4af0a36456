//! Secrets at rest: the 32-byte master key and the AES-256-GCM envelope of every private key the
//! store holds.
//!
//! The master key comes from `PORTCULLIS_MASTER_KEY` (64 hex digits, or base64 of 32 bytes in the
//! standard or URL-safe alphabet, padded or not) or else from `<data_dir>/master.key`, which holds
//! 64 hex digits and is generated from the system CSPRNG with mode 0600 when missing.
//!
//! A sealed value is `version (1) || nonce (12) || ciphertext || tag (16)`. The nonce is random
//! for every seal; the AAD names what the value is (`<table>/<row id>/<purpose>`), so a ciphertext
//! copied into another row or column does not open.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use super::StoreError;

/// Name of the environment variable that sets the master key.
pub const MASTER_KEY_ENV: &str = "PORTCULLIS_MASTER_KEY";
/// File name of the generated master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// The key that encrypts private keys at rest. Its `Debug` never shows the key.
pub struct MasterKey {
    key: LessSafeKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<MasterKey, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| StoreError::MasterKey("cannot use the master key".into()))?;
        Ok(MasterKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Parses 64 hex digits, or base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, StoreError> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            let unpadded = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
                .ok()
        };
        let bytes: [u8; KEY_LEN] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            StoreError::MasterKey(
                "the master key must be 32 bytes, as 64 hex digits or base64".into(),
            )
        })?;
        MasterKey::from_bytes(&bytes)
    }

    /// The master key: `env_value` (the value of `PORTCULLIS_MASTER_KEY`) when set and not empty,
    /// else `<data_dir>/master.key`, generated (mode 0600) when missing.
    pub fn load(data_dir: &Path, env_value: Option<&str>) -> Result<MasterKey, StoreError> {
        if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
            return MasterKey::parse(value)
                .map_err(|e| StoreError::MasterKey(format!("{MASTER_KEY_ENV}: {e}")));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let text = read_or_create_secret_file(&path, || {
            let mut bytes = [0u8; KEY_LEN];
            random_bytes(&mut bytes)?;
            Ok(hex::encode(bytes))
        })?;
        MasterKey::parse(&text)
            .map_err(|e| StoreError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// Encrypts `plaintext` for the place named by `aad`.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| StoreError::MasterKey("encryption failed".into()))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Decrypts what [`MasterKey::seal`] made for the same `aad`.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let undecryptable = || {
            StoreError::Corrupt(format!(
                "{aad}: cannot decrypt (wrong master key or damaged data)"
            ))
        };
        let (version, rest) = sealed.split_first().ok_or_else(undecryptable)?;
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| undecryptable())?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .map_err(|_| undecryptable())?;
        Ok(plaintext.to_vec())
    }

    /// Encrypts a private key; its format (PKCS#1, SEC1, PKCS#8) is sealed with it.
    pub fn seal_private_key(
        &self,
        aad: &str,
        key: &PrivateKeyDer<'_>,
    ) -> Result<Vec<u8>, StoreError> {
        let format = match key {
            PrivateKeyDer::Pkcs1(_) => KeyFormat::Pkcs1,
            PrivateKeyDer::Sec1(_) => KeyFormat::Sec1,
            PrivateKeyDer::Pkcs8(_) => KeyFormat::Pkcs8,
            _ => return Err(StoreError::Corrupt("unknown private key format".into())),
        };
        let mut plaintext = Vec::with_capacity(1 + key.secret_der().len());
        plaintext.push(format as u8);
        plaintext.extend_from_slice(key.secret_der());
        self.seal(aad, &plaintext)
    }

    /// Decrypts what [`MasterKey::seal_private_key`] made for the same `aad`.
    pub fn open_private_key(
        &self,
        aad: &str,
        sealed: &[u8],
    ) -> Result<PrivateKeyDer<'static>, StoreError> {
        let plaintext = self.open(aad, sealed)?;
        let (format, der) = plaintext
            .split_first()
            .ok_or_else(|| StoreError::Corrupt(format!("{aad}: empty private key")))?;
        let der = der.to_vec();
        match *format {
            f if f == KeyFormat::Pkcs1 as u8 => Ok(PrivatePkcs1KeyDer::from(der).into()),
            f if f == KeyFormat::Sec1 as u8 => Ok(PrivateSec1KeyDer::from(der).into()),
            f if f == KeyFormat::Pkcs8 as u8 => Ok(PrivatePkcs8KeyDer::from(der).into()),
            _ => Err(StoreError::Corrupt(format!(
                "{aad}: unknown private key format"
            ))),
        }
    }
}

#[repr(u8)]
#[derive(Clone, Copy)]
enum KeyFormat {
    Pkcs1 = 1,
    Sec1 = 2,
    Pkcs8 = 8,
}

/// Fills `dest` from the system CSPRNG.
pub(crate) fn random_bytes(dest: &mut [u8]) -> Result<(), StoreError> {
    aws_lc_rs::rand::fill(dest)
        .map_err(|_| StoreError::MasterKey("the system random generator failed".into()))
}

/// Reads a secret text file, or creates it (mode 0600, never replacing one that appears
/// concurrently) with what `generate` returns. Warns when an existing file is readable by others.
pub(crate) fn read_or_create_secret_file(
    path: &Path,
    generate: impl FnOnce() -> Result<String, StoreError>,
) -> Result<String, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_not_private(path);
            return Ok(text.trim().to_owned());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let text = generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated secret file");
            Ok(text)
        }
        // Another process created it between our read and our create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_owned())
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `text` to `path` (mode 0600), replacing what it held: a local copy of a secret whose
/// source of truth is elsewhere (the shared store).
pub(crate) fn write_secret_file(path: &Path, text: &str) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}

fn warn_if_not_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "secret file is readable by group or others; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = key();
        let sealed = k.seal("t/1/key", b"secret bytes").unwrap();
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 12 + 16);
        assert_eq!(k.open("t/1/key", &sealed).unwrap(), b"secret bytes");
        assert!(k.open("t/2/key", &sealed).is_err(), "AAD binds the row");
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("t/1/key", &sealed).is_err());
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(k.open("t/1/key", &damaged).is_err());
        assert!(k.open("t/1/key", &[]).is_err());
        assert_ne!(
            sealed,
            k.seal("t/1/key", b"secret bytes").unwrap(),
            "fresh nonce"
        );
    }

    #[test]
    fn private_key_format_survives() {
        let k = key();
        for key_der in [
            PrivateKeyDer::from(PrivatePkcs8KeyDer::from(vec![1, 2, 3])),
            PrivateKeyDer::from(PrivateSec1KeyDer::from(vec![4, 5])),
            PrivateKeyDer::from(PrivatePkcs1KeyDer::from(vec![6])),
        ] {
            let sealed = k.seal_private_key("x", &key_der).unwrap();
            let back = k.open_private_key("x", &sealed).unwrap();
            assert_eq!(back, key_der);
        }
    }

    #[test]
    fn parse_hex_and_base64() {
        let bytes = [0xabu8; 32];
        let hex_text = hex::encode(bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let reference = MasterKey::from_bytes(&bytes).unwrap();
        let sealed = reference.seal("a", b"x").unwrap();
        for text in [hex_text.as_str(), &hex_text.to_uppercase(), &b64, &b64url] {
            let k = MasterKey::parse(text).unwrap();
            assert_eq!(k.open("a", &sealed).unwrap(), b"x", "{text}");
        }
        assert!(MasterKey::parse("abcd").is_err());
        assert!(MasterKey::parse(&hex::encode([1u8; 31])).is_err());
        assert!(MasterKey::parse("not a key at all!").is_err());
    }

    #[test]
    fn env_wins_over_file_and_file_is_generated_0600() {
        let dir = tempfile::tempdir().unwrap();
        let env = hex::encode([3u8; 32]);
        let from_env = MasterKey::load(dir.path(), Some(&env)).unwrap();
        assert!(
            !dir.path().join(MASTER_KEY_FILE).exists(),
            "no file when the env sets it"
        );
        let sealed = from_env.seal("a", b"x").unwrap();

        let generated = MasterKey::load(dir.path(), None).unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(generated.open("a", &sealed).is_err(), "a different key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Reloading reads the same key back; an empty env value means unset.
        let sealed = generated.seal("a", b"y").unwrap();
        let again = MasterKey::load(dir.path(), Some("")).unwrap();
        assert_eq!(again.open("a", &sealed).unwrap(), b"y");
        // The env still wins once the file exists.
        let env_again = MasterKey::load(dir.path(), Some(&env)).unwrap();
        assert!(env_again.open("a", &sealed).is_err());
        assert!(MasterKey::load(dir.path(), Some("garbage")).is_err());
    }
}
