//! The stream against a real TLS client (tokio-rustls) over loopback TCP: both protocol versions,
//! resumption, key updates, reads of every size, reads dropped half-way, both ways of closing,
//! and input that is not TLS. Client authentication is the listener's business and is tested
//! end to end in `tests/`.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream as ClientStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::crypto::provider;

const WAIT: Duration = Duration::from_secs(10);

/// `future`, which must finish within [`WAIT`].
async fn step<F: std::future::Future>(future: F) -> F::Output {
    timeout(WAIT, future).await.expect("test step timed out")
}

struct Peers {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn peers(version: &'static SupportedProtocolVersion) -> Peers {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = certified.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Peers {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// A client connected to a `Stream` whose handshake is done.
async fn connect(peers: &Peers) -> (Stream, ClientStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connector = TlsConnector::from(peers.client.clone());
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    };
    let server = async {
        let (io, _) = listener.accept().await.unwrap();
        let conn = UnbufferedServerConnection::new(peers.server.clone()).unwrap();
        Stream::handshake(io, conn, Vec::new()).await.unwrap()
    };
    timeout(WAIT, async { tokio::join!(server, client) })
        .await
        .unwrap()
}

fn holds_no_buffer(stream: &Stream) -> bool {
    stream.incoming.capacity() == 0 && stream.plain.capacity() == 0 && stream.out.capacity() == 0
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Reads exactly `len` bytes through reads of at most `step` bytes.
async fn read_in_steps(stream: &mut Stream, len: usize, step: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; step];
    while got.len() < len {
        let n = timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert_ne!(n, 0, "ended after {} of {len} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn data_flows_both_ways_in_tls_1_3_and_1_2_and_an_idle_stream_holds_no_buffer() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let peers = peers(version);
        let (mut server, mut client) = connect(&peers).await;
        assert_eq!(
            server.connection().protocol_version(),
            Some(version.version)
        );
        // Records of 16 KiB and more, read 1, 7 and 64 KiB at a time.
        for (len, size) in [(40_000, 1), (100_000, 7), (300_000, 64 * 1024)] {
            let sent = pattern(len, size as u8);
            let writer = async {
                step(client.write_all(&sent)).await.unwrap();
                step(client.flush()).await.unwrap();
            };
            let (got, ()) = tokio::join!(read_in_steps(&mut server, len, size), writer);
            assert!(got == sent, "{version:?}: {len} bytes in reads of {size}");
        }
        let sent = pattern(200_000, 9);
        let reader = async {
            let mut got = vec![0u8; sent.len()];
            timeout(WAIT, client.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            got
        };
        let writer = async {
            step(server.write_all(&sent)).await.unwrap();
            step(server.flush()).await.unwrap();
        };
        let (got, ()) = tokio::join!(reader, writer);
        assert!(got == sent, "{version:?}: server to client");
        assert!(holds_no_buffer(&server), "{version:?}: idle buffers");
    }
}

#[tokio::test]
async fn a_key_update_from_the_client_is_followed_both_ways() {
    let peers = peers(&rustls::version::TLS13);
    let (mut server, mut client) = connect(&peers).await;
    for round in 0..3u8 {
        step(client.write_all(&[round; 100])).await.unwrap();
        step(client.flush()).await.unwrap();
        assert_eq!(read_in_steps(&mut server, 100, 100).await, [round; 100]);
        // The client asks for new keys both ways; the server's answer goes out with its next
        // write, which the client must then read under the new keys.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        step(server.write_all(&[round + 100; 50])).await.unwrap();
        step(server.flush()).await.unwrap();
        let mut got = [0u8; 50];
        timeout(WAIT, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [round + 100; 50]);
    }
}

#[tokio::test]
async fn a_second_connection_resumes_in_both_versions() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let peers = peers(version);
        for expected in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
            let (mut server, mut client) = connect(&peers).await;
            assert_eq!(server.connection().handshake_kind(), Some(expected));
            // A TLS 1.3 ticket comes after the handshake: an exchange makes the client read it.
            step(server.write_all(b"x")).await.unwrap();
            step(server.flush()).await.unwrap();
            let mut byte = [0u8; 1];
            timeout(WAIT, client.read_exact(&mut byte))
                .await
                .unwrap()
                .unwrap();
        }
    }
}

#[tokio::test]
async fn close_notify_ends_reads_and_a_bare_close_is_a_truncation() {
    let peers = peers(&rustls::version::TLS13);
    let (mut server, mut client) = connect(&peers).await;
    step(client.write_all(b"last words")).await.unwrap();
    step(client.shutdown()).await.unwrap();
    assert_eq!(read_in_steps(&mut server, 10, 64).await, b"last words");
    let mut buf = [0u8; 16];
    assert_eq!(
        step(server.read(&mut buf)).await.unwrap(),
        0,
        "close_notify: end"
    );
    // The server can still answer a peer that closed its side, and close its own.
    step(server.write_all(b"bye")).await.unwrap();
    step(server.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"bye", "then the client sees our close_notify");

    let (mut server, mut client) = connect(&peers).await;
    // The client reads what the server sent (its ticket) first: a socket closed with unread data
    // is reset, not closed.
    step(server.write_all(b"x")).await.unwrap();
    step(server.flush()).await.unwrap();
    timeout(WAIT, client.read_exact(&mut buf[..1]))
        .await
        .unwrap()
        .unwrap();
    drop(client.into_inner().0);
    let error = timeout(WAIT, server.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_read_dropped_half_way_loses_nothing() {
    let peers = peers(&rustls::version::TLS13);
    let (mut server, mut client) = connect(&peers).await;
    let sent = pattern(50_000, 3);
    let writer = async {
        for chunk in sent.chunks(997) {
            step(client.write_all(chunk)).await.unwrap();
            step(client.flush()).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 13];
        let mut dropped = 0;
        while got.len() < sent.len() {
            // A read raced against a timer that often wins, as the session's select! does.
            tokio::select! {
                n = server.read(&mut buf) => got.extend_from_slice(&buf[..n.unwrap()]),
                () = tokio::task::yield_now() => dropped += 1,
            }
        }
        (got, dropped)
    };
    let ((got, dropped), ()) = timeout(WAIT, async { tokio::join!(reader, writer) })
        .await
        .unwrap();
    assert!(dropped > 0, "no read was dropped");
    assert!(got == sent);
}

#[tokio::test]
async fn input_that_is_not_tls_is_an_error_and_the_peer_is_told() {
    let peers = peers(&rustls::version::TLS13);
    for (junk, alerted) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], true),
        // A handshake record longer than any record may be.
        (&[0x16, 0x03, 0x03, 0xff, 0xff, 0x01, 0x00, 0x00][..], true),
        // A ClientHello that claims 16 MiB: rustls refuses it before reading more (64 KiB is
        // its limit), and closes without an alert.
        (
            &[0x16, 0x03, 0x03, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff][..],
            false,
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let (io, _) = listener.accept().await.unwrap();
        raw.write_all(junk).await.unwrap();
        let conn = UnbufferedServerConnection::new(peers.server.clone()).unwrap();
        let error = timeout(WAIT, Stream::handshake(io, conn, Vec::new()))
            .await
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{junk:?}");
        assert!(
            error
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()),
            "{error}"
        );
        // A fatal alert (content type 21) went back, and the connection is closed.
        let mut reply = Vec::new();
        timeout(WAIT, raw.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let expected = alerted.then_some(&0x15);
        assert_eq!(reply.first(), expected, "{junk:?}: {reply:?}");
    }
}

#[tokio::test]
async fn a_stream_that_failed_sends_its_alert_once_and_closes_without_asking_rustls_again() {
    let peers = peers(&rustls::version::TLS13);
    let (mut server, mut client) = connect(&peers).await;
    // The client's rustls reads the server's ticket first, so that what comes next on the
    // socket is only what the failure sends.
    step(server.write_all(b"x")).await.unwrap();
    step(server.flush()).await.unwrap();
    let mut byte = [0u8; 1];
    step(client.read_exact(&mut byte)).await.unwrap();
    let mut raw = client.into_inner().0;
    // An application-data record that does not decrypt.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0u8; 32]);
    step(raw.write_all(&record)).await.unwrap();
    let mut buf = [0u8; 16];
    let error = step(server.read(&mut buf)).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(
        step(server.read(&mut buf)).await.is_err(),
        "failed for good"
    );
    assert!(step(server.write_all(b"late")).await.is_err());
    step(server.flush()).await.unwrap();
    let _ = step(server.shutdown()).await;
    drop(server);
    let mut reply = Vec::new();
    step(raw.read_to_end(&mut reply)).await.unwrap();
    // One encrypted record (content type 23 in TLS 1.3): the alert, two bytes, its inner type
    // and the AEAD tag.
    assert_eq!(reply.len(), 5 + 2 + 1 + 16, "{reply:?}");
    assert_eq!(&reply[..5], &[0x17, 0x03, 0x03, 0x00, 0x13]);
}

#[tokio::test]
async fn a_write_dropped_half_way_leaves_a_whole_prefix_for_the_peer() {
    let peers = peers(&rustls::version::TLS13);
    let (mut server, mut client) = connect(&peers).await;
    let sent = pattern(16 * 1024 * 1024, 5);
    // The client does not read: the socket fills and the write is dropped by its timer.
    let dropped = timeout(Duration::from_millis(200), server.write_all(&sent)).await;
    assert!(dropped.is_err(), "16 MiB fit in the socket's buffers");
    let reader = async {
        let mut got = Vec::new();
        step(client.read_to_end(&mut got)).await.unwrap();
        got
    };
    let closer = async { step(server.shutdown()).await.unwrap() };
    let (got, ()) = tokio::join!(reader, closer);
    assert!(!got.is_empty());
    assert!(
        got[..] == sent[..got.len()],
        "not a prefix of what was written"
    );
}
