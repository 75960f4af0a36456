//! The TLS client side of the connections a node opens to services it depends on (an upstream
//! broker, PostgreSQL): the server verified against the CA certificates of one PEM file, and a
//! client certificate from a PEM certificate chain and key when given.

use std::path::Path;
use std::sync::Arc;

/// A rustls client configuration that trusts the certificates of `ca_file` only, presenting the
/// chain of `client.0` with the key of `client.1` when given. The error names the file at fault,
/// never a key's content.
pub fn client_tls(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let cas = super::certs_from_pem(&read(ca_file)?)
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        Some((cert, key)) => {
            let chain = super::certs_from_pem(&read(cert)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = super::private_key_from_pem(&read(key)?, None)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}
