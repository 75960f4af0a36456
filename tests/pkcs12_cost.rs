//! PKCS#12 imports whose key derivation is too costly are refused before any derivation, with
//! `pkcs12_kdf_too_costly`, on every import route: server certificates, signing certificates and
//! CAs with their key. Files are made by openssl at 65,536 iterations, then one iteration count
//! (the MAC's, the certificates' encryption, the key's encryption) is patched in place to 8,388,607.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

/// `INTEGER 65536`, as openssl writes each iteration count of a file made with `-iter 65536`.
const ITER_65536: [u8; 5] = [0x02, 0x03, 0x01, 0x00, 0x00];
/// `INTEGER 8388607`: the same length, so no enclosing length changes.
const ITER_HUGE: [u8; 5] = [0x02, 0x03, 0x7f, 0xff, 0xff];

/// A PKCS#12 file of `cert.pem` and `key.pem` in `dir`, password `p12pass`.
fn export(dir: &std::path::Path, legacy: bool) -> Vec<u8> {
    let mut args = vec![
        "pkcs12",
        "-export",
        "-in",
        "cert.pem",
        "-inkey",
        "key.pem",
        "-out",
        "out.p12",
        "-passout",
        "pass:p12pass",
        "-iter",
        "65536",
    ];
    if legacy {
        args.push("-legacy");
    }
    openssl(dir, &args);
    std::fs::read(dir.join("out.p12")).unwrap()
}

/// Each variant of `file` with one of its iteration counts made huge.
fn patched(file: &[u8]) -> Vec<Vec<u8>> {
    let at: Vec<usize> = file
        .windows(ITER_65536.len())
        .enumerate()
        .filter(|(_, w)| *w == ITER_65536)
        .map(|(i, _)| i)
        .collect();
    // The MAC, the certificates' encrypted content and the shrouded key.
    assert_eq!(at.len(), 3, "iteration counts found at {at:?}");
    at.into_iter()
        .map(|i| {
            let mut copy = file.to_vec();
            copy[i..i + ITER_HUGE.len()].copy_from_slice(&ITER_HUGE);
            copy
        })
        .collect()
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

async fn post(server: &TestServer, path: &str, der: &[u8]) -> (u16, serde_json::Value) {
    let mut body = json!({"pkcs12": b64(der), "password": "p12pass"});
    if path.ends_with("ca-certificates") {
        body["description"] = json!("imported with its key");
    }
    server.api("POST", path, Some(body)).await
}

#[tokio::test]
async fn too_costly_pkcs12_files_are_refused_on_every_import_route() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let ca = TestCa::root("Acme Issuing CA");
    let served = ca.server(&["acme.messaging.localhost"]);
    let ca_key = pem::encode(&pem::Pem::new("PRIVATE KEY", ca.key_pkcs8()));

    let routes = [
        ("/api/v1/orgs/acme/ca-certificates", ca.pem.clone(), ca_key),
        (
            "/api/v1/orgs/acme/server-certificates",
            served.chain.clone(),
            served.key.clone(),
        ),
        (
            "/api/v1/orgs/acme/signing-certificates",
            served.chain,
            served.key,
        ),
    ];
    for (path, cert, key) in routes {
        for legacy in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
            std::fs::write(dir.path().join("key.pem"), &key).unwrap();
            let file = export(dir.path(), legacy);
            for (n, bad) in patched(&file).iter().enumerate() {
                let (status, answer) = step(post(&server, path, bad)).await;
                assert_eq!(
                    (status, answer["error"]["code"].as_str()),
                    (422, Some("pkcs12_kdf_too_costly")),
                    "{path} legacy={legacy} count #{n}: {answer}"
                );
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("1,000,000"), "{message}");
            }
            // The same file unpatched is imported: only the cap refused the others.
            if !legacy {
                let (status, answer) = step(post(&server, path, &file)).await;
                assert_eq!(status, 201, "{path}: {answer}");
            }
        }
    }
}
