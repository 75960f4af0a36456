//! The one crypto provider every TLS configuration, client verifier and OCSP signature check uses.
//! A module of its own, below `tls` and `ocsp`, so both read it from below instead of one reaching
//! into the other.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider every config uses: aws-lc-rs, X25519 first (the cheapest key exchange;
/// the default order costs ~15 % more CPU when a client offers ML-KEM), AES-128 first.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::aws_lc_rs::cipher_suite;
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            // AES-128 first: its SHA-256 key schedule runs on the CPU's SHA extensions, while
            // SHA-384 (AES-256's) has none and cost ~5 % of a full handshake. The server picks
            // (`ignore_client_order`), as clients list AES-256 first.
            provider.cipher_suites = vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ];
            provider.kx_groups = vec![
                rustls::crypto::aws_lc_rs::kx_group::X25519,
                rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
                rustls::crypto::aws_lc_rs::kx_group::SECP384R1,
            ];
            Arc::new(provider)
        })
        .clone()
}
