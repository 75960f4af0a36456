//! Running it as an operator does: the real binary with embedded defaults, invalid configuration,
//! graceful shutdown on SIGTERM, and what /metrics shows about refused connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mqtt::*;
use common::*;

/// Kills the child if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn portcullis() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .env_remove("PORTCULLIS_MASTER_KEY")
        .env("RUST_LOG", "warn,rumqttd=off");
    command
}

#[test]
fn invalid_configuration_exits_64_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("PORTCULLIS__MQTTS__DOMAIN", "not a domain!", "mqtts.domain"),
        ("PORTCULLIS__MQTTS__LISTEN", "nowhere", "listen"),
        (
            "PORTCULLIS__MQTTS__NO_SNI_ORG",
            "Not_An_Org",
            "mqtts.no_sni_org",
        ),
        (
            "PORTCULLIS__BROKER__MAX_CONNECTIONS",
            "0",
            "broker.max_connections",
        ),
    ];
    for (key, value, mentions) in cases {
        let output = portcullis()
            .current_dir(dir.path())
            .args(["serve"])
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(mentions), "{key}={value}: {stderr}");
    }
    let missing = portcullis()
        .current_dir(dir.path())
        .args(["serve", "--config", "/nonexistent/portcullis.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    // Nothing was created by a refused start.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn serve_with_embedded_defaults_bootstraps_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = portcullis()
        .current_dir(dir.path())
        .args(["serve"])
        .env("PORTCULLIS__MQTTS__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS__ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut running = Running(child);
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    stdout.read_line(&mut line).unwrap();
    // "MQTTS on 127.0.0.1:P, admin API on 127.0.0.1:Q"
    let admin = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(line.starts_with("MQTTS on 127.0.0.1:"), "{line}");

    let health = reqwest::blocking_get(&format!("http://{admin}/healthz"));
    assert_eq!(health, 200);

    let data = dir.path().join("data");
    for file in [
        "portcullis.db",
        "master.key",
        "admin-token",
        "platform-ca.pem",
    ] {
        assert!(data.join(file).exists(), "{file} missing");
    }
    for secret in ["master.key", "admin-token"] {
        let mode = std::fs::metadata(data.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is readable by others: {mode:o}");
    }

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny blocking GET, so the process test needs no runtime.
mod reqwest {
    pub fn blocking_get(url: &str) -> u16 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = super::step(::reqwest::get(url)).await.unwrap();
            response.status().as_u16()
        })
    }
}

#[tokio::test]
async fn refusals_are_counted_by_stage_and_reason() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let stranger = TestCa::root("stranger").client("d:sensor:dev1", &[]);
    let _ = tls_refusal(
        server
            .tls("acme.messaging.localhost", Some(&stranger))
            .await,
    )
    .await;
    let addr = server
        .bridge("acme.messaging.localhost", &ca.client("d:sensor:dev1", &[]))
        .await;
    refused_v4(v4_options(addr, "d:acme:sensor:dev2")).await;

    let metrics = reqwest_text(&server.url("/metrics")).await;
    for expected in [
        r#"portcullis_connections_refused_total{stage="tls",reason="unknown_ca"}"#,
        r#"portcullis_connections_refused_total{stage="connect",reason="identity_mismatch"}"#,
        r#"portcullis_certificate_earliest_expiry_timestamp_seconds{kind="ca"}"#,
        r#"portcullis_certificate_earliest_expiry_timestamp_seconds{kind="platform_ca"}"#,
        "portcullis_tls_handshake_seconds_bucket",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(expected)),
            "{expected} missing from /metrics"
        );
    }
    // Labels are bounded: no client id or address ever appears.
    assert!(!metrics.contains("d:acme"));
    assert!(!metrics.contains("127.0.0.1"));
}

async fn reqwest_text(url: &str) -> String {
    step(step(::reqwest::get(url)).await.unwrap().text())
        .await
        .unwrap()
}
