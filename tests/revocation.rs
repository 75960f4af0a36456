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
    server
        .live_device(&ca.client(&format!("d:sensor:{id}"), &[]), id)
        .await
}

#[tokio::test]
async fn a_session_another_active_ca_vouches_for_stays_when_its_ca_is_deactivated() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let root = TestCa::root("acme root");
    let root_id = server.upload_ca("acme", &root).await;
    // An intermediate of that root, uploaded too: its devices send it with their leaf.
    let intermediate = root.intermediate("acme intermediate");
    let intermediate_id = server.upload_ca("acme", &intermediate).await;
    let other = TestCa::root("acme other root");
    let other_id = server.upload_ca("acme", &other).await;

    let mut covered = live_device(&server, &intermediate, "dev1").await;
    let alone = live_device(&server, &other, "dev2").await;
    let (_, sessions) = server.api("GET", "/api/v1/orgs/acme/sessions", None).await;
    let ca_of = |client_id: &str| {
        sessions["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["client_id"] == client_id)
            .map(|s| s["ca_id"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        ca_of("d:acme:sensor:dev1"),
        Some(intermediate_id.clone()),
        "the nearest CA"
    );

    for ca in [&intermediate_id, &other_id] {
        let (status, body) = server
            .api(
                "PATCH",
                &format!("/api/v1/orgs/acme/ca-certificates/{ca}"),
                Some(serde_json::json!({"active": false})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        closes_within_a_second(alone).await,
        "nothing else vouches for dev2"
    );
    let stays = tokio::time::timeout(Duration::from_secs(1), &mut covered).await;
    assert!(stays.is_err(), "the root still vouches for dev1");
    // A new connection of the same device would be taken, under the root.
    let cert = intermediate.client("d:sensor:dev1", &[]);
    let (_, answer) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/explain",
            Some(serde_json::json!({"certificate_chain": cert.chain_pem()})),
        )
        .await;
    assert_eq!(answer["accepted"], true, "{answer}");
    assert_eq!(answer["ca_id"], root_id.as_str());

    let (status, _) = server
        .api(
            "PATCH",
            &format!("/api/v1/orgs/acme/ca-certificates/{root_id}"),
            Some(serde_json::json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        closes_within_a_second(covered).await,
        "nothing vouches for dev1 now"
    );
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

async fn block(server: &TestServer, body: serde_json::Value) -> String {
    let (status, entry) = server
        .api("POST", "/api/v1/orgs/acme/blocked-devices", Some(body))
        .await;
    assert_eq!(status, 201, "{entry}");
    entry["id"].as_str().unwrap().to_owned()
}

async fn refused_with(
    server: &TestServer,
    cert: &ClientCert,
    id: &str,
) -> rumqttc::ConnectReturnCode {
    let addr = server.bridge(SNI, cert).await;
    refused_v4(v4_options(addr, &format!("d:acme:sensor:{id}"))).await
}

#[tokio::test]
async fn blocking_a_device_closes_its_session_and_refuses_it_by_identity_fingerprint_or_serial() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let certs: Vec<ClientCert> = (1..=4)
        .map(|i| ca.client(&format!("d:sensor:dev{i}"), &[]))
        .collect();
    let mut live = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        live.push(server.live_device(cert, &format!("dev{}", i + 1)).await);
    }
    let mut spared = live.pop().unwrap();

    let by_identity = block(
        &server,
        serde_json::json!({"identity": "d:sensor:dev1", "reason": "stolen"}),
    )
    .await;
    let fingerprint = portcullis::pki::fingerprint_sha256(&certs[1].chain[0]);
    block(
        &server,
        serde_json::json!({"fingerprint_sha256": fingerprint.to_uppercase()}),
    )
    .await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[2].chain[0]).unwrap();
    let serial = format!("0x{}", portcullis::pki::serial_hex(leaf.raw_serial()));
    block(
        &server,
        serde_json::json!({"ca_id": ca_id, "serial": serial}),
    )
    .await;
    for (i, closed) in live.into_iter().enumerate() {
        assert!(
            closes_within_a_second(closed).await,
            "dev{} still connected",
            i + 1
        );
    }
    assert!(spared.try_recv().is_err(), "an unblocked device was closed");

    let not_authorized = rumqttc::ConnectReturnCode::NotAuthorized;
    // By identity: any certificate claiming it. By fingerprint or serial: that certificate only.
    assert_eq!(
        refused_with(&server, &ca.client("d:sensor:dev1", &[]), "dev1").await,
        not_authorized
    );
    assert_eq!(
        refused_with(&server, &certs[1], "dev2").await,
        not_authorized
    );
    assert_eq!(
        refused_with(&server, &certs[2], "dev3").await,
        not_authorized
    );
    // A certificate claiming the blocked identity among others is refused under any of them.
    let multi = ca.client("d:sensor:spare", &["d:sensor:dev1"]);
    assert_eq!(refused_with(&server, &multi, "spare").await, not_authorized);
    let renewed = ca.client("d:sensor:dev2", &[]);
    let addr = server.bridge(SNI, &renewed).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev2"))
        .await
        .expect("a new certificate connects");

    let (status, list) = server
        .api("GET", "/api/v1/orgs/acme/blocked-devices", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(list["items"][1]["fingerprint_sha256"], fingerprint.as_str());
    assert_eq!(list["items"][0]["reason"], "stolen");
    let (status, _) = server
        .api(
            "DELETE",
            &format!("/api/v1/orgs/acme/blocked-devices/{by_identity}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let addr = server.bridge(SNI, &certs[0]).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .expect("unblocked");

    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices",
            Some(serde_json::json!({"identity": "d:sensor:x", "serial": "01"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_block"))
    );
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices",
            Some(serde_json::json!({"ca_id": "0000", "serial": "01"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_ca"))
    );
}

#[tokio::test]
async fn live_sessions_are_listed_and_an_operator_disconnects_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let mut tls = server.tls(SNI, Some(&cert)).await.unwrap();
    tls.write_all(&raw::connect(5, "d:acme:sensor:dev1", true, 30))
        .await
        .unwrap();
    let mut header = [0u8; 2];
    step(tls.read_exact(&mut header)).await.unwrap();
    let mut connack = vec![0u8; usize::from(header[1])];
    step(tls.read_exact(&mut connack)).await.unwrap();
    assert_eq!((header[0], connack[1]), (0x20, 0));

    let (status, sessions) = server.api("GET", "/api/v1/orgs/acme/sessions", None).await;
    assert_eq!(status, 200);
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{sessions}");
    let session = &items[0];
    assert_eq!(session["client_id"], "d:acme:sensor:dev1");
    assert_eq!(session["identity"], "d:sensor:dev1");
    assert_eq!(session["ca_id"], ca_id.as_str());
    assert_eq!(session["protocol"], 5);
    assert_eq!(
        session["fingerprint_sha256"],
        portcullis::pki::fingerprint_sha256(&cert.chain[0]).as_str()
    );
    assert!(session["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    let path = "/api/v1/orgs/acme/sessions/d:acme:sensor:dev1";
    let (status, _) = server.api("DELETE", path, None).await;
    assert_eq!(status, 204);
    let rest = raw::read_to_close(&mut tls).await;
    assert_eq!(
        rest.first(),
        Some(&0xE0),
        "DISCONNECT expected: {rest:02x?}"
    );
    assert_eq!(
        rest.get(2),
        Some(&0x98),
        "administrative action: {rest:02x?}"
    );
    let (status, _) = server.api("DELETE", path, None).await;
    assert_eq!(status, 404);
    let (_, sessions) = server.api("GET", "/api/v1/orgs/acme/sessions", None).await;
    assert!(sessions["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_crl_refuses_the_certificates_it_revokes_and_closes_their_sessions() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let revoked = ca.client("d:sensor:dev1", &[]);
    let kept = ca.client("d:sensor:dev2", &[]);
    let hit = server.live_device(&revoked, "dev1").await;
    let mut spared = server.live_device(&kept, "dev2").await;
    let now = time::OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);

    // Signed by another CA: refused, nothing changes.
    let stranger = TestCa::root("acme devices CA");
    let (status, body) = server
        .put_crl(&ca_id, &stranger.crl(&[&revoked], now - hour, now + hour))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("crl_signature_invalid"))
    );

    let (status, body) = server
        .put_crl(&ca_id, &ca.crl(&[&revoked], now - hour, now + hour))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"], 1);
    assert_eq!(body["stale"], false);
    assert!(
        closes_within_a_second(hit).await,
        "the revoked device is still connected"
    );
    assert!(
        spared.try_recv().is_err(),
        "a device the CRL does not list was closed"
    );
    let alert = tls_refusal(server.tls(SNI, Some(&revoked)).await).await;
    assert_eq!(alert, rustls::AlertDescription::CertificateRevoked);

    // An older CRL does not replace it.
    let (status, body) = server
        .put_crl(&ca_id, &ca.crl(&[], now - 2 * hour, now + hour))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("crl_older"))
    );
    let (status, held) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}/crl"),
            None,
        )
        .await;
    assert_eq!((status, held["entries"].as_i64()), (200, Some(1)));

    // A stale CRL, under `allow` (the default): certificates it does not list still connect.
    let (status, body) = server
        .put_crl(
            &ca_id,
            &ca.crl(
                &[&revoked],
                now - hour / 2,
                now - time::Duration::minutes(1),
            ),
        )
        .await;
    assert_eq!((status, body["stale"].as_bool()), (200, Some(true)));
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev3", &[])).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev3"))
        .await
        .expect("allowed under a stale CRL");
}

#[tokio::test]
async fn under_deny_a_stale_crl_refuses_its_ca_s_devices() {
    let server = TestServer::start_with(|config| config.revocation.deny_stale_crl = true).await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let now = time::OffsetDateTime::now_utc();
    let device = ca.client("d:sensor:dev1", &[]);
    let (status, _) = server
        .put_crl(
            &ca_id,
            &ca.crl(
                &[],
                now - time::Duration::hours(2),
                now + time::Duration::hours(1),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let addr = server.bridge(SNI, &device).await;
    connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
        .await
        .expect("a fresh CRL that does not list it");
    let (status, _) = server
        .put_crl(
            &ca_id,
            &ca.crl(
                &[],
                now - time::Duration::hours(1),
                now - time::Duration::minutes(1),
            ),
        )
        .await;
    assert_eq!(status, 200);
    // Every certificate of that CA is refused at the handshake (the test fails on a success).
    let alert = tls_refusal(
        server
            .tls(SNI, Some(&ca.client("d:sensor:dev2", &[])))
            .await,
    )
    .await;
    assert_ne!(
        alert,
        rustls::AlertDescription::CertificateRevoked,
        "not revoked, stale"
    );
    // Refused as `crl_stale`, and so explained.
    let stale = |body: serde_json::Value| {
        body["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|r| r["reason"] == "crl_stale"))
    };
    let refused = eventually(Duration::from_secs(5), || async {
        stale(
            server
                .api("GET", "/api/v1/orgs/acme/refusals", None)
                .await
                .1,
        )
    })
    .await;
    assert!(refused, "the refusal says crl_stale");
    let chain = ca.client("d:sensor:dev3", &[]).chain_pem();
    let (_, answer) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/explain",
            Some(serde_json::json!({"certificate_chain": chain})),
        )
        .await;
    assert_eq!(
        (&answer["stage"], &answer["reason"]),
        (&"tls".into(), &"crl_stale".into())
    );
}

/// A client may send any extra certificate: one that names another of the org's CAs as its
/// issuer must not make the device count as that CA's (and slip past what is set on its own CA).
#[tokio::test]
async fn a_look_alike_certificate_in_the_chain_does_not_change_the_device_s_ca() {
    let server = TestServer::start().await;
    let (root_a, a_id) = server.org_with_ca("acme").await;
    let root_b = TestCa::root("acme other CA");
    server.upload_ca("acme", &root_b).await;
    let issuing = root_a.intermediate("acme issuing CA");
    let mut device = issuing.client("d:sensor:dev1", &[]);
    let (_, leaf) = x509_parser::parse_x509_certificate(&device.chain[0]).unwrap();
    let serial = portcullis::pki::serial_hex(leaf.raw_serial());
    block(
        &server,
        serde_json::json!({"ca_id": a_id, "serial": serial}),
    )
    .await;
    // The path is leaf → issuing → A; a look-alike of B's name goes in front of the real
    // intermediate, and a look-alike of the intermediate itself (another key, issued "by B").
    let fake_b = TestCa::root("acme other CA");
    let fake_issuing = fake_b.intermediate("acme issuing CA");
    device
        .chain
        .insert(1, fake_b.intermediate("decoy").cert.clone());
    device.chain.insert(1, fake_issuing.cert.clone());
    assert_eq!(
        refused_with(&server, &device, "dev1").await,
        rumqttc::ConnectReturnCode::NotAuthorized,
        "the device counted as CA B's"
    );
}

/// Under `deny`, a CRL that goes stale with time (no change published, so TLS tickets stay
/// good) still refuses a resumed session at CONNECT.
#[tokio::test]
async fn under_deny_a_crl_going_stale_refuses_resumed_sessions_too() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|config| config.revocation.deny_stale_crl = true).await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let now = time::OffsetDateTime::now_utc();
    let next_update = now + time::Duration::seconds(2);
    let (status, _) = server
        .put_crl(
            &ca_id,
            &ca.crl(&[], now - time::Duration::hours(1), next_update),
        )
        .await;
    assert_eq!(status, 200);
    let device = ca.client("d:sensor:dev1", &[]);
    let config = server.tls_config(Some(&device), &[]);
    let mut first = server.tls_with(SNI, config.clone()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(200), first.read(&mut [0u8; 1])).await;
    drop(first);
    // Real time must pass the CRL's nextUpdate (whole seconds).
    let stale = eventually(Duration::from_secs(5), || async move {
        time::OffsetDateTime::now_utc() > next_update + time::Duration::seconds(1)
    })
    .await;
    assert!(stale);
    let mut resumed = server.tls_with(SNI, config).await.unwrap();
    assert_eq!(
        resumed.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let answer = raw::exchange(
        &mut resumed,
        &raw::connect(4, "d:acme:sensor:dev1", true, 30),
    )
    .await;
    assert_eq!(raw::connack_code(&answer), Some(0x05), "{answer:?}");
}
