//! Plain MQTT 5 TCP listeners on loopback to the same router (`broker.plain_listeners`, with a
//! per-process random credential): the load tool's baseline of what the broker costs without the
//! front-end. The server itself binds none. Each runs on its own thread and is probed with a
//! CONNECT before it counts as started.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::time::{Duration, Instant};

use rumqttd::protocol as rp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BrokerError, BROKER_MAX_INFLIGHT};

/// The one user of the plain listeners.
pub(super) const USERNAME: &str = "portcullis";
/// How long [`Broker::start`] waits for a plain listener to answer, all attempts together.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports are found by binding `:0` and letting go, so another socket may take one before rumqttd
/// binds it: a listener is retried on a new port this many times.
const START_ATTEMPTS: usize = 3;
/// Deadline of one readiness probe (CONNECT → CONNACK).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between probes of a listener that is not accepting yet.
const PROBE_RETRY: Duration = Duration::from_millis(10);
/// How long rumqttd waits for CONNECT after accepting on a plain listener.
const CONNECT_PACKET_TIMEOUT_MS: u16 = 10_000;
/// Largest remaining length a plain listener reads.
const PLAIN_MAX_PACKET: usize = 268_435_455;

/// Runs plain listener `i` on its own thread (with its own current-thread runtime, as rumqttd's
/// `Broker` does) and returns its address once it answers a CONNECT with the credential. A port
/// taken by someone else between finding and binding it is retried on a new one.
pub(super) async fn start_listener(
    id: usize,
    i: usize,
    new_server: &(impl Fn(rumqttd::ServerSettings) -> rumqttd::Server<rp::v5::V5>
          + Clone
          + Send
          + 'static),
    password: &str,
    deadline: Instant,
) -> Result<SocketAddr, BrokerError> {
    let mut last_error = String::from("no attempt was made");
    for _ in 0..START_ATTEMPTS {
        let addr = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| BrokerError::Start(format!("cannot find a loopback port: {e}")))?;
        let name = format!("broker-{id}-{i}");
        let settings = rumqttd::ServerSettings {
            name: name.clone(),
            listen: addr,
            tls: None,
            // The default (1000 ms per connection in its sample config) throttles connections.
            next_connection_delay_ms: 0,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: CONNECT_PACKET_TIMEOUT_MS,
                max_payload_size: PLAIN_MAX_PACKET,
                max_inflight_count: usize::from(BROKER_MAX_INFLIGHT),
                auth: Some(HashMap::from([(USERNAME.to_owned(), password.to_owned())])),
                external_auth: None,
                dynamic_filters: false,
            },
        };
        let new_server = new_server.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let mut server = new_server(settings);
                        if let Err(error) =
                            runtime.block_on(server.start(rumqttd::LinkType::Remote))
                        {
                            tracing::warn!(%error, "plain broker listener stopped");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "no runtime for a plain broker listener"),
                }
            })
            .map_err(|e| BrokerError::Start(format!("cannot spawn a listener thread: {e}")))?;
        let client_id = format!("portcullis-probe-{id}-{i}");
        loop {
            if thread.is_finished() {
                last_error = format!("rumqttd could not listen on {addr}");
                break;
            }
            match probe(addr, &client_id, password).await {
                Ok(()) => return Ok(addr),
                Err(Probe::NotListening(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(PROBE_RETRY).await;
                }
                Err(Probe::NotListening(e)) => {
                    return Err(BrokerError::Start(format!(
                        "rumqttd is not listening on {addr}: {e}"
                    )))
                }
                Err(Probe::Failed(e)) => {
                    last_error = format!("{addr} does not answer as this broker: {e}");
                    break;
                }
            }
        }
    }
    Err(BrokerError::Start(last_error))
}
enum Probe {
    /// Nothing accepts on the port (yet).
    NotListening(std::io::Error),
    /// Something accepted but did not answer our CONNECT with a successful CONNACK.
    Failed(String),
}

/// A CONNECT with the credential, a successful CONNACK, a DISCONNECT: proves the listener is up
/// and is ours (a stranger who took the port does not know the password).
async fn probe(addr: SocketAddr, client_id: &str, password: &str) -> Result<(), Probe> {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Probe::NotListening(e))
        }
        Err(e) => return Err(Probe::Failed(e.to_string())),
    };
    let exchange = async {
        stream.set_nodelay(true)?;
        stream
            .write_all(&connect_packet(client_id, USERNAME, password, 10))
            .await?;
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await?;
        let mut ack = [0u8; 2];
        if header[1] >= 2 {
            stream.read_exact(&mut ack).await?;
        }
        stream.write_all(&[0xE0, 0x00]).await?;
        // Wait for rumqttd to close: its router has then let go of the session, so the probe
        // does not count against `max_connections` when the session right after it connects.
        let mut rest = [0u8; 64];
        while stream.read(&mut rest).await? > 0 {}
        Ok::<_, std::io::Error>((header, ack))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Err(_) => Err(Probe::Failed("no CONNACK in time".into())),
        Ok(Err(e)) => Err(Probe::Failed(e.to_string())),
        Ok(Ok(([0x20, len], [_, 0x00]))) if len >= 2 => Ok(()),
        Ok(Ok((header, ack))) => Err(Probe::Failed(format!(
            "unexpected answer {header:02x?} {ack:02x?}"
        ))),
    }
}

/// An MQTT 5 CONNECT (clean start, username and password, no properties, no will).
fn connect_packet(client_id: &str, username: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + client_id.len() + username.len() + password.len());
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.push(0); // properties
    for field in [client_id, username, password] {
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&field.as_bytes()[..usize::from(len)]);
    }
    let mut packet = vec![0x10];
    push_varint(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// MQTT variable byte integer.
fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::QoS as CQoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    use crate::broker::embedded::testing::*;

    #[tokio::test]
    async fn a_plain_listener_reaches_the_same_router_and_wants_the_credential() {
        let broker = start_with(10, 1).await;
        let addr = broker.addrs()[0];
        let mut sub = subscriber(&broker, "sub", "acme/t").await;

        let mut options = MqttOptions::new("plain", addr.ip().to_string(), addr.port());
        let (user, pass) = broker.credentials();
        options.set_credentials(user, pass);
        let (client, mut events) = AsyncClient::new(options, 10);
        client
            .publish("acme/t", CQoS::AtMostOnce, false, "plain")
            .await
            .unwrap();
        let drive = async { while events.poll().await.is_ok() {} };
        let got = tokio::select! {
            got = delivery(&mut sub) => got,
            () = drive => panic!("plain connection ended"),
        };
        assert_eq!(&got.payload[..], b"plain");

        let mut wrong = MqttOptions::new("intruder", addr.ip().to_string(), addr.port());
        wrong.set_credentials(user, "wrong");
        let (_client, mut events) = AsyncClient::new(wrong, 10);
        let first = tokio::time::timeout(T, events.poll()).await.unwrap();
        assert!(
            !matches!(
                first,
                Ok(Event::Incoming(
                    rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_)
                ))
            ),
            "a wrong password got a CONNACK"
        );
    }
}
