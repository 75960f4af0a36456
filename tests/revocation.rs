//! Changes that withdraw trust close the live sessions they hit within a second and refuse new
//! ones, TLS-resumed ones included (DESIGN §6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::mqtt::*;
use common::*;

const SNI: &str = "acme.messaging.localhost";

/// Connects a 3.1.1 device and returns a receiver that fires when its connection ends.
async fn live_device(
    server: &TestServer,
    ca: &TestCa,
    id: &str,
) -> tokio::sync::oneshot::Receiver<()> {
    let addr = server
        .bridge(SNI, &ca.client(&format!("d:sensor:{id}"), &[]))
        .await;
    let (client, mut eventloop) = connect_v4(v4_options(addr, &format!("d:acme:sensor:{id}")))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        while eventloop.poll().await.is_ok() {}
        let _ = tx.send(());
    });
    rx
}

async fn closes_within_a_second(closed: tokio::sync::oneshot::Receiver<()>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .is_ok()
}

#[tokio::test]
async fn deactivating_a_ca_closes_its_sessions_and_refuses_new_ones() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let other = TestCa::root("acme second CA");
    server.upload_ca("acme", &other).await;

    let hit = live_device(&server, &ca, "dev1").await;
    let mut spared = live_device(&server, &other, "dev2").await;

    let (status, body) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            Some(serde_json::json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    assert!(
        closes_within_a_second(hit).await,
        "session of the deactivated CA still open"
    );
    // The other CA's device is untouched.
    assert!(spared.try_recv().is_err());

    let alert = tls_refusal(
        server
            .tls(SNI, Some(&ca.client("d:sensor:dev1", &[])))
            .await,
    )
    .await;
    assert_eq!(alert, rustls::AlertDescription::UnknownCA);

    // Reactivated: devices connect again.
    let (status, _) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            Some(serde_json::json!({"active": true})),
        )
        .await;
    assert_eq!(status, 200);
    let _again = live_device(&server, &ca, "dev1").await;
    assert!(spared.try_recv().is_err());
}

#[tokio::test]
async fn deleting_a_ca_or_the_org_closes_sessions() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let closed = live_device(&server, &ca, "dev1").await;
    let (status, _) = server
        .api(
            "DELETE",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(closes_within_a_second(closed).await);

    server.upload_ca("acme", &ca).await;
    let closed = live_device(&server, &ca, "dev1").await;
    let (status, _) = server.api("DELETE", "/api/v1/orgs/acme", None).await;
    assert_eq!(status, 204);
    assert!(closes_within_a_second(closed).await);
    let alert = tls_refusal(
        server
            .tls(SNI, Some(&ca.client("d:sensor:dev1", &[])))
            .await,
    )
    .await;
    assert_eq!(alert, rustls::AlertDescription::UnrecognisedName);
}

#[tokio::test]
async fn resumed_sessions_are_checked_against_the_current_registry() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    // A second CA keeps the org able to verify devices after the first is deactivated.
    server
        .upload_ca("acme", &TestCa::root("acme second CA"))
        .await;
    let device = ca.client("d:sensor:dev1", &[]);
    let config = server.tls_config(Some(&device), &[]);

    // A full handshake, then a resumed one with the same client config.
    use tokio::io::AsyncReadExt;
    let mut first = server.tls_with(SNI, config.clone()).await.unwrap();
    // Read the session ticket the server sends after the handshake.
    let _ = tokio::time::timeout(Duration::from_millis(200), first.read(&mut [0u8; 1])).await;
    drop(first);
    let second = server.tls_with(SNI, config.clone()).await.unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the second handshake should resume"
    );
    drop(second);

    // Another org never resumes acme's session.
    server.org_with_ca("beta").await;
    let cross = server
        .tls_with("beta.messaging.localhost", config.clone())
        .await;
    if let Ok(stream) = &cross {
        assert_ne!(
            stream.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }

    let (status, _) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
            Some(serde_json::json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);
    let alert = tls_refusal(server.tls_with(SNI, config).await).await;
    assert_eq!(alert, rustls::AlertDescription::UnknownCA);
}
