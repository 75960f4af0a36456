//! What the network can make the listeners hold: silent MQTTS sockets and the per-source cap
//! (issue 11, finding 10); the admin listener's connection limit and deadlines, with its event
//! stream still streaming (finding 9). Real server, real sockets; waits poll, never sleep.

mod common;

use std::time::Duration;

use common::clients::connected_v4;
use common::{eventually, step, TestServer, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of one counter series (`name{labels}`) on `/metrics`; 0 when absent.
async fn counter(server: &TestServer, series: &str) -> f64 {
    let (status, body) = server.api("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    body.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Reads until the server closes the connection (a reset counts); what came before.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match step(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server still holds `stream` open (nothing to read, no end of stream).
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

const REFUSED: &str = "portcullis_connections_refused_total";
const ADMIN_CLOSED: &str = "portcullis_admin_connections_closed_total";

#[tokio::test]
async fn silent_sockets_do_not_hold_handshake_slots() {
    // Two handshake slots, and deadlines far beyond the test: a silent socket that took a slot
    // would hold it for the whole test.
    let server = TestServer::start_with(|config| {
        config.mqtts.max_concurrent_handshakes = 2;
        config.mqtts.handshake_timeout = Duration::from_secs(60);
        config.mqtts.first_byte_timeout = Duration::from_secs(60);
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(step(TcpStream::connect(server.mqtts)).await.unwrap());
    }
    // A device handshakes and gets its CONNACK while all six are still open and silent.
    let (_client, _eventloop) = connected_v4(&server, &ca, "acme", "d:sensor:dev1").await;
    assert!(silent.iter().all(still_open), "the silent sockets are open");
}

#[tokio::test]
async fn a_socket_silent_past_the_first_byte_deadline_is_closed() {
    let server = TestServer::start_with(|config| {
        config.mqtts.handshake_timeout = Duration::from_secs(60);
        config.mqtts.first_byte_timeout = Duration::from_millis(200);
    })
    .await;
    let series = format!(r#"{REFUSED}{{stage="tcp",reason="first_byte_timeout"}}"#);
    let before = counter(&server, &series).await;
    let mut silent = step(TcpStream::connect(server.mqtts)).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    assert!(counter(&server, &series).await > before);
}

#[tokio::test]
async fn connections_beyond_the_per_source_cap_are_closed_at_accept() {
    let server = TestServer::start_with(|config| {
        config.mqtts.max_connections_per_source = 3;
        config.mqtts.first_byte_timeout = Duration::from_secs(60);
        config.mqtts.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let series = format!(r#"{REFUSED}{{stage="tcp",reason="max_connections_per_source"}}"#);
    let before = counter(&server, &series).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(step(TcpStream::connect(server.mqtts)).await.unwrap());
    }
    let mut beyond = step(TcpStream::connect(server.mqtts)).await.unwrap();
    assert!(until_closed(&mut beyond).await.is_empty());
    assert!(counter(&server, &series).await > before);
    assert!(held.iter().all(still_open), "the three within the cap stay");
    // Once they close, the source has room again: a device connects.
    drop(held);
    let cert = ca.client("d:sensor:dev1", &[]);
    let connected = eventually(STEP, || async {
        server
            .tls("acme.messaging.localhost", Some(&cert))
            .await
            .is_ok()
    })
    .await;
    assert!(
        connected,
        "a connection from the same source after the others closed"
    );
}

#[tokio::test]
async fn admin_connections_beyond_the_limit_are_closed_at_accept_while_devices_connect() {
    let server = TestServer::start_with(|config| {
        config.admin.max_connections = 4;
        config.admin.header_timeout = Duration::from_secs(60);
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let series = format!(r#"{ADMIN_CLOSED}{{reason="max_connections"}}"#);
    let before = counter(&server, &series).await;
    // Four slots, some perhaps held by the harness's pooled client: by the fifth raw connection
    // every slot is taken, so the last three are closed at accept.
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(step(TcpStream::connect(server.admin)).await.unwrap());
    }
    for beyond in &mut idle[4..] {
        assert!(until_closed(beyond).await.is_empty());
    }
    assert!(idle[..4].iter().any(still_open));
    // The device listener is not affected.
    let (_client, _eventloop) = connected_v4(&server, &ca, "acme", "d:sensor:dev1").await;
    drop(idle);
    let counted = eventually(STEP, || async {
        let response = reqwest::get(server.url("/healthz")).await;
        response.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        counted,
        "the admin API answers once the idle connections are gone"
    );
    assert!(counter(&server, &series).await >= before + 3.0);
}

#[tokio::test]
async fn a_half_sent_request_header_is_closed_after_the_header_deadline() {
    let server = TestServer::start_with(|config| {
        config.admin.header_timeout = Duration::from_millis(300);
    })
    .await;
    let series = format!(r#"{ADMIN_CLOSED}{{reason="header_timeout"}}"#);
    let before = counter(&server, &series).await;
    let mut stream = step(TcpStream::connect(server.admin)).await.unwrap();
    step(stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n"))
        .await
        .unwrap();
    assert!(until_closed(&mut stream).await.is_empty());
    assert!(counter(&server, &series).await > before);
}

#[tokio::test]
async fn a_request_body_not_sent_within_the_body_deadline_is_closed() {
    let server = TestServer::start_with(|config| {
        config.admin.body_timeout = Duration::from_millis(300);
    })
    .await;
    let series = format!(r#"{ADMIN_CLOSED}{{reason="body_timeout"}}"#);
    let before = counter(&server, &series).await;
    let mut stream = step(TcpStream::connect(server.admin)).await.unwrap();
    let head = format!(
        "POST /api/v1/orgs HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":",
        server.token
    );
    step(stream.write_all(head.as_bytes())).await.unwrap();
    assert!(until_closed(&mut stream).await.is_empty());
    assert!(counter(&server, &series).await > before);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_deadline() {
    let server = TestServer::start_with(|config| {
        config.admin.idle_timeout = Duration::from_millis(300);
        config.admin.header_timeout = Duration::from_secs(60);
    })
    .await;
    let series = format!(r#"{ADMIN_CLOSED}{{reason="idle_timeout"}}"#);
    let before = counter(&server, &series).await;
    let mut stream = step(TcpStream::connect(server.admin)).await.unwrap();
    step(stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"))
        .await
        .unwrap();
    let answered = until_closed(&mut stream).await;
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // Served as before: a sized answer keeps its length (not chunked).
    assert!(
        answered.to_ascii_lowercase().contains("content-length:"),
        "{answered}"
    );
    assert!(counter(&server, &series).await > before);
}

#[tokio::test]
async fn the_event_stream_outlives_every_admin_deadline() {
    // Short, yet long enough for the harness's own requests on a loaded host.
    let short = Duration::from_secs(1);
    let server = TestServer::start_with(|config| {
        config.admin.header_timeout = short;
        config.admin.body_timeout = short;
        config.admin.idle_timeout = short;
    })
    .await;
    server.org_with_ca("acme").await;
    let mut events = step(
        reqwest::Client::new()
            .get(server.url("/api/v1/orgs/acme/events"))
            .bearer_auth(&server.token)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(events.status(), 200);
    // A handshake without a client certificate is refused, and the org's stream shows it.
    let refusal = || async {
        let _ = server.tls("acme.messaging.localhost", None).await;
    };
    refusal().await;
    common::read_events(&mut events, |seen| seen.contains("event: refused")).await;
    // A connection opened after the stream is closed by its deadline: the stream's own deadlines,
    // had they applied, have passed too.
    let mut later = step(TcpStream::connect(server.admin)).await.unwrap();
    assert!(until_closed(&mut later).await.is_empty());
    refusal().await;
    let seen = common::read_events(&mut events, |seen| seen.contains("event: refused")).await;
    assert!(seen.contains("no_client_certificate"), "{seen}");
}

#[tokio::test]
async fn a_client_that_does_not_read_its_responses_is_closed_after_the_write_deadline() {
    let server = TestServer::start_with(|config| {
        config.admin.write_timeout = Duration::from_millis(300);
    })
    .await;
    let series = format!(r#"{ADMIN_CLOSED}{{reason="write_timeout"}}"#);
    let before = counter(&server, &series).await;
    // A small receive window and many pipelined requests: the answers fill every buffer between
    // the two ends, and the server's writes block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = step(socket.connect(server.admin)).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    let requests = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n".repeat(20_000);
    // The writer blocks too once the server stops reading; it ends with the connection.
    let writer = tokio::spawn(async move {
        let _ = writing.write_all(&requests).await;
    });
    let closed = eventually(STEP, || async { counter(&server, &series).await > before }).await;
    assert!(closed, "the connection was closed for not reading");
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = step(reading.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
    writer.abort();
}
