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

/// The binary serving on loopback ports with the data directory under `dir`; returns it with the
/// admin API's address, read from its first line of output.
fn serve(dir: &std::path::Path, env: &[(&str, &str)], stderr: Stdio) -> (Running, String) {
    let child = portcullis()
        .current_dir(dir)
        .args(["serve"])
        .env("PORTCULLIS__MQTTS__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS__ADMIN__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut line = String::new();
    BufReader::new(running.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "MQTTS on 127.0.0.1:P, admin API on 127.0.0.1:Q"
    assert!(line.starts_with("MQTTS on 127.0.0.1:"), "{line}");
    let admin = line.trim().rsplit(' ').next().unwrap().to_owned();
    (running, admin)
}

/// SIGTERM, then waits (10 s at most) for a successful exit.
fn stop(mut running: Running) {
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
            return;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let (running, admin) = serve(dir.path(), &[], Stdio::null());
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
    stop(running);
}

/// Grant uses are reserved in the store in blocks before they are spent (DESIGN §11): a process
/// killed with SIGKILL may have counted more uses than it made, never fewer; a clean stop writes
/// the exact count.
#[tokio::test]
async fn grant_uses_are_never_under_counted_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = ::reqwest::Client::new();
    let token = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("data/admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let call =
        |admin: &str, method: ::reqwest::Method, path: &str, body: Option<serde_json::Value>| {
            let mut request = http
                .request(method, format!("http://{admin}/api/v1{path}"))
                .bearer_auth(token(dir.path()));
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let response = step(request.send()).await.unwrap();
                let status = response.status().as_u16();
                (
                    status,
                    step(response.json::<serde_json::Value>()).await.unwrap(),
                )
            }
        };
    let issue = |admin: String, n: usize| {
        let call = &call;
        async move {
            for i in 0..n {
                let body = serde_json::json!({"name": format!("t{i}"), "role": "viewer", "ttl_seconds": 600});
                let (status, answer) = call(
                    &admin,
                    ::reqwest::Method::POST,
                    "/orgs/acme/tokens",
                    Some(body),
                )
                .await;
                assert_eq!(status, 201, "{answer}");
            }
        }
    };
    let uses = |admin: String| {
        let call = &call;
        async move {
            let (status, list) =
                call(&admin, ::reqwest::Method::GET, "/orgs/acme/grants", None).await;
            assert_eq!(status, 200, "{list}");
            list["items"][0]["uses"].as_i64().unwrap()
        }
    };

    let (mut running, admin) = serve(dir.path(), &[], Stdio::null());
    let body = serde_json::json!({"id": "acme", "name": "Acme"});
    assert_eq!(
        call(&admin, ::reqwest::Method::POST, "/orgs", Some(body))
            .await
            .0,
        201
    );
    issue(admin.clone(), 5).await;
    assert_eq!(uses(admin.clone()).await, 5);
    running.0.kill().unwrap();
    running.0.wait().unwrap();

    let (running, admin) = serve(dir.path(), &[], Stdio::null());
    let after_crash = uses(admin.clone()).await;
    assert!(
        after_crash >= 5,
        "under-counted after kill -9: {after_crash} < 5"
    );
    issue(admin.clone(), 3).await;
    assert_eq!(uses(admin.clone()).await, after_crash + 3);
    stop(running);

    let (running, admin) = serve(dir.path(), &[], Stdio::null());
    assert_eq!(
        uses(admin).await,
        after_crash + 3,
        "a clean stop counts exactly"
    );
    stop(running);
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

/// Tokens and private keys pass through the API (issued, presented, uploaded, generated) while
/// the server logs at its most verbose: none of them reaches the log.
#[tokio::test]
async fn no_log_line_holds_a_token_or_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let (running, admin) = serve(
        dir.path(),
        &[(
            "RUST_LOG",
            "trace,rumqttd=off,hyper=off,hyper_util=off,h2=off",
        )],
        std::fs::File::create(&log).unwrap().into(),
    );
    let admin_token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let admin_token = admin_token.trim();
    let http = ::reqwest::Client::new();
    let call = |token: &str, method: ::reqwest::Method, path: &str, body: serde_json::Value| {
        http.request(method, format!("http://{admin}/api/v1{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    use ::reqwest::Method;
    let created = call(
        admin_token,
        Method::POST,
        "/orgs",
        serde_json::json!({"id": "acme", "name": "Acme"}),
    );
    assert_eq!(step(created).await.unwrap().status().as_u16(), 201);
    let issued = call(
        admin_token,
        Method::POST,
        "/orgs/acme/tokens",
        serde_json::json!({"name": "ops", "role": "operator", "ttl_seconds": 600}),
    );
    let issued: serde_json::Value = step(issued).await.unwrap().json().await.unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let ca = TestCa::root("Log Test CA");
    let server_cert = ca.server(&["acme.messaging.localhost"]);
    let upload = call(
        &token,
        Method::POST,
        "/orgs/acme/server-certificates",
        serde_json::json!({"certificate_chain": server_cert.chain, "private_key": server_cert.key}),
    );
    assert_eq!(step(upload).await.unwrap().status().as_u16(), 201);
    let csr = call(
        &token,
        Method::POST,
        "/orgs/acme/csrs",
        serde_json::json!({"common_name": "acme.messaging.localhost",
                           "dns_names": ["acme.messaging.localhost"], "key_type": "ecdsa-p256"}),
    );
    assert_eq!(step(csr).await.unwrap().status().as_u16(), 201);
    let forged = call(
        &format!("{token}x"),
        Method::GET,
        "/orgs/acme",
        serde_json::json!({}),
    );
    assert_eq!(step(forged).await.unwrap().status().as_u16(), 401);

    stop(running);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("admin change"),
        "the log was not written: {text}"
    );
    let key_body: String = server_cert
        .key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let (_, signature) = token.rsplit_once('.').unwrap();
    for (what, secret) in [
        ("admin token", admin_token),
        ("org token", token.as_str()),
        ("org token signature", signature),
        ("PEM private key", "PRIVATE KEY"),
        ("uploaded key", &key_body[..40]),
    ] {
        assert!(!text.contains(secret), "the log holds the {what}");
    }
}
