//! Revocation from the CA's own sources (DESIGN §11): a CRL fetched from its `crl_url` (checked like
//! an upload, kept across restarts), and OCSP asked after the handshake and before CONNACK under
//! `soft` and `hard`, one request for a storm of one certificate, and live sessions checked again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mqtt::*;
use common::ocsp::{CertState, OcspResponder};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const SNI: &str = "acme.messaging.localhost";

/// An HTTP server on 127.0.0.1:0 serving whatever CRL (PEM) the test sets, as a CA's CRL
/// distribution point does.
struct CrlServer {
    url: String,
    pem: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl CrlServer {
    async fn start(pem: String) -> CrlServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/acme.crl", listener.local_addr().unwrap());
        let pem = Arc::new(Mutex::new(pem));
        let served = pem.clone();
        let app = axum::Router::new().route(
            "/acme.crl",
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                async move { body }
            }),
        );
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        CrlServer { url, pem, task }
    }

    fn serve(&self, pem: String) {
        *self.pem.lock().unwrap() = pem;
    }

    /// Closes the listener: from now on a fetch cannot connect.
    async fn stop(self) {
        self.task.abort();
        let _ = step(self.task).await;
    }
}

/// `PATCH …/ca-certificates/{ca_id}`: status and body.
async fn patch(
    server: &TestServer,
    ca_id: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}");
    server.api("PATCH", &path, Some(body)).await
}

/// A PATCH that succeeds: the CA's view.
async fn patch_ca(server: &TestServer, ca_id: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = patch(server, ca_id, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The CRL the server holds for the CA (its `GET …/crl` view).
async fn held_crl(server: &TestServer, ca_id: &str) -> serde_json::Value {
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}/crl");
    let (status, held) = server.api("GET", &path, None).await;
    assert_eq!(status, 200, "{held}");
    held
}

/// The value of counter `series` (name and labels, as Prometheus renders them), 0 when absent.
async fn counter(server: &TestServer, series: &str) -> u64 {
    let (_, metrics) = server.api("GET", "/metrics", None).await;
    metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A TLS connection presenting `cert` that sends CONNECT (`level` 4 or 5) for `client_id`:
/// the stream and the CONNACK's return or reason code.
async fn mqtt_connect(
    server: &TestServer,
    cert: &ClientCert,
    client_id: &str,
    level: u8,
) -> (TlsStream<TcpStream>, u8) {
    let mut tls = server.tls(SNI, Some(cert)).await.unwrap();
    step(tls.write_all(&raw::connect(level, client_id, true, 30)))
        .await
        .unwrap();
    // Fixed header, then the rest (flags, code, MQTT 5 properties): under 128 bytes.
    let mut header = [0u8; 2];
    step(tls.read_exact(&mut header)).await.unwrap();
    assert_eq!(header[0], 0x20, "CONNACK expected: {header:02x?}");
    let mut connack = vec![0u8; usize::from(header[1])];
    step(tls.read_exact(&mut connack)).await.unwrap();
    (tls, connack[1])
}

#[tokio::test]
async fn a_crl_from_crl_url_is_fetched_checked_held_and_kept_across_a_restart() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let revoked = ca.client("d:sensor:dev1", &[]);
    let kept = ca.client("d:sensor:dev2", &[]);
    let (mut live, code) = mqtt_connect(&server, &revoked, "d:acme:sensor:dev1", 5).await;
    assert_eq!(code, 0);
    let now = time::OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    let good = ca.crl(&[&revoked], now - hour, now + hour);
    let crls = CrlServer::start(good.clone()).await;

    for (body, code) in [
        (
            serde_json::json!({"crl_url": "ftp://x/ca.crl"}),
            "invalid_crl_url",
        ),
        (
            serde_json::json!({"ocsp_mode": "strict"}),
            "invalid_ocsp_mode",
        ),
        (
            serde_json::json!({"ocsp_url": "not a url"}),
            "invalid_ocsp_url",
        ),
    ] {
        let (status, answer) = patch(&server, &ca_id, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some(code))
        );
    }

    // Set: fetched at once, the revoked device's session closed within a second.
    let view = patch_ca(&server, &ca_id, serde_json::json!({"crl_url": crls.url})).await;
    assert_eq!(view["crl_url"], crls.url.as_str());
    assert_eq!(
        (view["ocsp_mode"].as_str(), &view["ocsp_url"]),
        (Some("off"), &serde_json::Value::Null)
    );
    let rest = step(tokio::time::timeout(
        Duration::from_secs(1),
        raw::read_to_close(&mut live),
    ))
    .await
    .expect("the revoked device's session is still open a second after the URL was set");
    assert_eq!(
        rest.first(),
        Some(&0xE0),
        "DISCONNECT expected: {rest:02x?}"
    );
    let alert = tls_refusal(server.tls(SNI, Some(&revoked)).await).await;
    assert_eq!(alert, rustls::AlertDescription::CertificateRevoked);
    let (_, code) = mqtt_connect(&server, &kept, "d:acme:sensor:dev2", 4).await;
    assert_eq!(code, 0, "a certificate the CRL does not list");
    assert_eq!(held_crl(&server, &ca_id).await["entries"], 1);
    let (_, shown) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            None,
        )
        .await;
    assert_eq!(shown["crl_url"], crls.url.as_str());

    // The same CRL again: unchanged. One signed by another key: refused, the good one serves.
    let unchanged = r#"portcullis_crl_fetches_total{outcome="unchanged"}"#;
    let before = counter(&server, unchanged).await;
    patch_ca(&server, &ca_id, serde_json::json!({"crl_url": crls.url})).await;
    assert!(
        eventually(STEP, || async {
            counter(&server, unchanged).await > before
        })
        .await
    );
    let stranger = TestCa::root("acme devices CA");
    crls.serve(stranger.crl(&[], now, now + hour));
    let rejected = r#"portcullis_crl_fetches_total{outcome="rejected"}"#;
    let before = counter(&server, rejected).await;
    patch_ca(&server, &ca_id, serde_json::json!({"crl_url": crls.url})).await;
    assert!(eventually(STEP, || async { counter(&server, rejected).await > before }).await);
    let held = held_crl(&server, &ca_id).await;
    assert_eq!(held["entries"], 1, "{held}");
    let alert = tls_refusal(server.tls(SNI, Some(&revoked)).await).await;
    assert_eq!(alert, rustls::AlertDescription::CertificateRevoked);

    // The CRL server gone, a restart: the last good CRL serves from the store.
    crls.stop().await;
    let (data_dir, _dir) = server.stop().await;
    let server = TestServer::start_in(data_dir, |_| {}).await;
    let alert = tls_refusal(server.tls(SNI, Some(&revoked)).await).await;
    assert_eq!(alert, rustls::AlertDescription::CertificateRevoked);
    let unreachable = r#"portcullis_crl_fetches_total{outcome="unreachable"}"#;
    assert!(eventually(STEP, || async { counter(&server, unreachable).await > 0 }).await);
    assert_eq!(held_crl(&server, &ca_id).await["entries"], 1);

    // Cleared: no more fetching.
    let view = patch_ca(&server, &ca_id, serde_json::json!({"crl_url": null})).await;
    assert_eq!(view["crl_url"], serde_json::Value::Null);
}

#[tokio::test]
async fn ocsp_refuses_revoked_certificates_and_an_unreachable_responder_only_under_hard() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let mut responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    let view = patch_ca(
        &server,
        &ca_id,
        serde_json::json!({"ocsp_mode": "hard", "ocsp_url": responder.url()}),
    )
    .await;
    assert_eq!(view["ocsp_mode"], "hard");
    assert_eq!(view["ocsp_url"], responder.url());
    let mut events = reqwest::Client::new()
        .get(server.url("/api/v1/orgs/acme/events"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();

    let good = ca.client("d:sensor:good", &[]);
    let revoked = ca.client("d:sensor:bad", &[]);
    responder.set_status(&revoked.chain[0], CertState::Revoked);
    let addr = server.bridge(SNI, &good).await;
    connect_v4(v4_options(addr, "d:acme:sensor:good"))
        .await
        .expect("a good certificate connects");
    let addr = server.bridge(SNI, &revoked).await;
    assert_eq!(
        refused_v4(v4_options(addr, "d:acme:sensor:bad")).await,
        rumqttc::ConnectReturnCode::NotAuthorized
    );
    let (_, code) = mqtt_connect(&server, &revoked, "d:acme:sensor:bad", 5).await;
    assert_eq!(code, 0x87, "MQTT 5: not authorized");
    let seen = read_events(&mut events, |s| s.contains("certificate_revoked")).await;
    assert!(seen.contains("event: refused\ndata:"), "{seen}");

    // The responder gone: `hard` refuses, `soft` lets in.
    responder.stop().await;
    let unanswered = ca.client("d:sensor:new", &[]);
    let (_, code) = mqtt_connect(&server, &unanswered, "d:acme:sensor:new", 4).await;
    assert_eq!(code, 0x05, "hard: refused without an answer");
    read_events(&mut events, |s| s.contains("ocsp_unavailable")).await;
    patch_ca(&server, &ca_id, serde_json::json!({"ocsp_mode": "soft"})).await;
    let (_, code) = mqtt_connect(&server, &unanswered, "d:acme:sensor:new", 4).await;
    assert_eq!(code, 0, "soft: allowed without an answer");
    let (_, code) = mqtt_connect(&server, &revoked, "d:acme:sensor:bad", 4).await;
    assert_eq!(code, 0x05, "soft still refuses a revoked certificate");
    // No URL of the CA's and none in the leaf: unavailable.
    patch_ca(
        &server,
        &ca_id,
        serde_json::json!({"ocsp_mode": "hard", "ocsp_url": null}),
    )
    .await;
    let no_url = ca.client("d:sensor:nourl", &[]);
    let (_, code) = mqtt_connect(&server, &no_url, "d:acme:sensor:nourl", 4).await;
    assert_eq!(code, 0x05);
    // Off: nobody is asked.
    patch_ca(&server, &ca_id, serde_json::json!({"ocsp_mode": "off"})).await;
    let (_, code) = mqtt_connect(&server, &revoked, "d:acme:sensor:bad", 4).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_of_one_certificate_costs_the_responder_one_request() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    patch_ca(
        &server,
        &ca_id,
        serde_json::json!({"ocsp_mode": "hard", "ocsp_url": responder.url()}),
    )
    .await;
    let device = ca.client("d:sensor:dev1", &[]);
    responder.set_status(&device.chain[0], CertState::Revoked);
    // 200 handshakes first, then 200 CONNECTs at once.
    let config = server.tls_config(Some(&device), &[]);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let (server, config) = (&server, config.clone());
                async move { server.tls_with(SNI, config).await.unwrap() }
            })
            .collect();
        streams.extend(futures_util::future::join_all(batch).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(streams.len()));
    let connects: Vec<_> = streams
        .into_iter()
        .map(|mut tls| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                step(barrier.wait()).await;
                let connect = raw::connect(4, "d:acme:sensor:dev1", true, 30);
                raw::connack_code(&raw::exchange(&mut tls, &connect).await)
            })
        })
        .collect();
    for connect in connects {
        assert_eq!(step(connect).await.unwrap(), Some(0x05));
    }
    assert_eq!(responder.requests(), 1);
}

#[tokio::test]
async fn a_live_session_is_closed_when_ocsp_says_revoked_once_its_answer_expires() {
    let server =
        TestServer::start_with(|config| config.revocation.ocsp_recheck = Duration::from_secs(1))
            .await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    responder.set_next_update(Duration::from_secs(2));
    patch_ca(
        &server,
        &ca_id,
        serde_json::json!({"ocsp_mode": "soft", "ocsp_url": responder.url()}),
    )
    .await;
    let device = ca.client("d:sensor:dev1", &[]);
    let bystander = ca.client("d:sensor:dev2", &[]);
    let (mut live, code) = mqtt_connect(&server, &device, "d:acme:sensor:dev1", 5).await;
    assert_eq!(code, 0);
    let (mut spared, code) = mqtt_connect(&server, &bystander, "d:acme:sensor:dev2", 5).await;
    assert_eq!(code, 0);
    responder.set_status(&device.chain[0], CertState::Revoked);
    // The good answer expires within 2 s; the next sweep (every second) asks again.
    let rest = step(raw::read_to_close(&mut live)).await;
    assert_eq!(
        rest.first(),
        Some(&0xE0),
        "DISCONNECT expected: {rest:02x?}"
    );
    assert_eq!(rest.get(2), Some(&0x87), "not authorized: {rest:02x?}");
    let mut byte = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_secs(3), spared.read(&mut byte)).await;
    assert!(
        still_open.is_err(),
        "a good certificate's session was closed"
    );
}
