//! One upstream MQTT connection on the wire: dialling a URL (TCP, or TLS verified against
//! `ca_file` with an optional client certificate), the CONNECT/CONNACK exchange, and the task
//! that owns the socket afterwards ([`run`]): it encodes what the session sends, decodes what the
//! broker sends, keeps the connection alive, and when the connection ends says why, as a
//! DISCONNECT the session forwards to its device.
//!
//! A task rather than reads and writes in the session's own loop: the connection needs pings on
//! its own schedule and must keep taking the session's packets while it waits for the session to
//! take the broker's (neither side can then wait for the other for good).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::Gone;
use crate::broker::BrokerError;
use crate::codec::{self, reason, ConnAck, Connect, Disconnect, Packet, Properties, Protocol};
use crate::config::Target;
use crate::config::UpstreamConfig;

/// The largest packet taken from the broker (announced to an MQTT 5 broker in CONNECT).
pub const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// Decoded packets the task holds while the session does not take them, before it stops reading
/// the socket (the broker then sees TCP backpressure).
const INBOUND_LIMIT: usize = 256;
/// How long a connection that ended waits for its broker to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every upstream connection logs in with.
pub struct Account {
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub protocol: Protocol,
    pub username: String,
    pub password: String,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An upstream socket, plain or TLS (boxed once per connection).
pub struct Stream(Box<dyn Io>);

fn io_error(target: &Target, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Link(format!("{}: {error}", target.url))
}

/// The TLS client configuration of `mqtts://` URLs: the broker verified against `ca_file`, and
/// `cert_file`/`key_file` as the client certificate when both are set.
pub fn tls_connector(config: &UpstreamConfig) -> Result<tokio_rustls::TlsConnector, BrokerError> {
    let start = |what: String| BrokerError::Start(format!("broker.upstream: {what}"));
    let ca_file = config
        .ca_file
        .as_deref()
        .ok_or_else(|| start("mqtts:// URLs need ca_file".into()))?;
    let client = config.cert_file.as_deref().zip(config.key_file.as_deref());
    let tls = crate::pki::client_tls(ca_file, client).map_err(start)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// Opens a TCP connection to `target`, and TLS over it for `mqtts://`.
pub async fn dial(target: &Target, account: &Account) -> Result<Stream, BrokerError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| io_error(target, e))?;
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return Ok(Stream(Box::new(tcp)));
    }
    let connector = account
        .tls
        .as_ref()
        .ok_or_else(|| io_error(target, "no TLS configuration"))?;
    let name = ServerName::try_from(target.host.clone()).map_err(|e| io_error(target, e))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| io_error(target, e))?;
    Ok(Stream(Box::new(tls)))
}

/// Whether `target` accepts a TCP connection within `timeout` (closed again at once).
pub async fn reachable(target: &Target, timeout: Duration) -> bool {
    let connect = TcpStream::connect((target.host.as_str(), target.port));
    matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
}

/// Sends `connect` and reads the broker's CONNACK; what the broker sent after it stays in the
/// returned buffer. A refusing CONNACK is `Refused`.
pub async fn handshake(
    stream: &mut Stream,
    target: &Target,
    connect: Connect,
) -> Result<(ConnAck, BytesMut), BrokerError> {
    let protocol = connect.protocol;
    let mut out = BytesMut::new();
    codec::encode(&Packet::Connect(Box::new(connect)), protocol, &mut out)
        .map_err(|e| io_error(target, e))?;
    stream
        .0
        .write_all(&out)
        .await
        .map_err(|e| io_error(target, e))?;
    stream.0.flush().await.map_err(|e| io_error(target, e))?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match codec::decode(&mut buf, protocol, MAX_PACKET_SIZE) {
            Ok(Some(Packet::ConnAck(connack))) if connack.code == 0 => return Ok((connack, buf)),
            Ok(Some(Packet::ConnAck(connack))) => return Err(BrokerError::Refused(connack.code)),
            Ok(Some(other)) => {
                return Err(io_error(target, format!("{other:?} before CONNACK")));
            }
            Ok(None) => {}
            Err(error) => return Err(io_error(target, error)),
        }
        if stream
            .0
            .read_buf(&mut buf)
            .await
            .map_err(|e| io_error(target, e))?
            == 0
        {
            return Err(io_error(target, "closed before CONNACK"));
        }
    }
}

/// Sends a DISCONNECT and closes: the end of a short connection (a discard).
pub async fn hang_up(stream: &mut Stream, protocol: Protocol) {
    let mut out = BytesMut::new();
    let _ = codec::encode(&success_disconnect(), protocol, &mut out);
    let _ = stream.0.write_all(&out).await;
    let _ = stream.0.shutdown().await;
}

fn success_disconnect() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: reason::SUCCESS,
        properties: Properties::default(),
    })
}

/// What the connection task works with.
pub struct Wire {
    pub stream: Stream,
    /// Bytes read after the CONNACK.
    pub buf: BytesMut,
    pub protocol: Protocol,
    /// The upstream connection's keep-alive (never 0).
    pub keep_alive: Duration,
    pub target: Target,
}

/// The session's ends of a connection task's channels.
pub struct Ends {
    pub to_broker: mpsc::Sender<Box<Packet>>,
    pub from_broker: mpsc::Receiver<Box<Packet>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the task that owns `wire` (see [`run`]).
pub fn spawn(wire: Wire, gone: Gone) -> Ends {
    let (to_broker, from_session) = mpsc::channel(64);
    let (to_session, from_broker) = mpsc::channel(64);
    let task = tokio::spawn(run(wire, from_session, to_session, gone));
    Ends {
        to_broker,
        from_broker,
        task,
    }
}

/// How a connection ended, as the session's device is told.
fn ending(target: &Target, taken_over: bool) -> Packet {
    let (code, why) = if taken_over {
        (
            reason::SESSION_TAKEN_OVER,
            "the client id connected elsewhere".to_owned(),
        )
    } else {
        (
            // 0x88 is a CONNACK code only (MQTT 5 §3.14.2.1): a DISCONNECT says 0x89.
            reason::SERVER_BUSY,
            format!("the upstream broker {} went away", target.url),
        )
    };
    Packet::Disconnect(Disconnect {
        reason: code,
        properties: Properties {
            reason_string: Some(why),
            ..Properties::default()
        },
    })
}

/// Moves packets between the session's channels and the socket until either ends.
///
/// - The session's packets are encoded and written as they come; a DISCONNECT among them is the
///   end. The session dropping its sender ends the connection without a DISCONNECT (the broker
///   then publishes the will, as for any lost connection).
/// - The broker's packets are decoded and handed to the session (PINGRESP stays here).
/// - With nothing written for half the keep-alive, a PINGREQ goes out; with nothing read for
///   1.5 × the keep-alive, the broker is gone.
/// - When the socket ends without the broker's DISCONNECT, the broker is asked (a TCP probe):
///   one that still answers ended this connection on purpose, which brokers do when the client
///   id connected elsewhere (an MQTT 3.1.1 broker says nothing more): the device is told
///   "session taken over"; one that does not answer went away: the device is told so and the
///   URL is marked down.
async fn run(
    wire: Wire,
    mut from_session: mpsc::Receiver<Box<Packet>>,
    to_session: mpsc::Sender<Box<Packet>>,
    gone: Gone,
) {
    let Wire {
        mut stream,
        mut buf,
        protocol,
        keep_alive,
        target,
    } = wire;
    let mut inbound: VecDeque<Packet> = VecDeque::new();
    let mut out = BytesMut::new();
    let mut ping_at = Instant::now() + keep_alive / 2;
    let mut silent_until = Instant::now() + keep_alive * 3 / 2;
    let mut told = false;
    // Packets that came with the CONNACK.
    let mut broken = decode_all(&mut buf, protocol, &mut inbound, &mut told).is_err();
    let mut ended = broken;
    while !ended {
        tokio::select! {
            read = stream.0.read_buf(&mut buf), if inbound.len() < INBOUND_LIMIT => {
                match read {
                    Ok(n) if n > 0 => {
                        silent_until = Instant::now() + keep_alive * 3 / 2;
                        broken = decode_all(&mut buf, protocol, &mut inbound, &mut told).is_err();
                        ended = broken;
                    }
                    _ => ended = true,
                }
            }
            permit = to_session.reserve(), if !inbound.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(packet) = inbound.pop_front() {
                        permit.send(Box::new(packet));
                    }
                    // Emptied: its memory goes back rather than waiting in an idle session.
                    if inbound.is_empty() {
                        inbound = VecDeque::new();
                    }
                }
                // The session is gone without closing: nothing more to do.
                Err(_) => return,
            },
            packet = from_session.recv() => {
                let Some(packet) = packet else {
                    // Dropped: the end without a DISCONNECT.
                    let _ = stream.0.shutdown().await;
                    return;
                };
                let mut last = matches!(*packet, Packet::Disconnect(_));
                out.clear();
                let _ = codec::encode(&packet, protocol, &mut out);
                while !last {
                    match from_session.try_recv() {
                        Ok(packet) => {
                            last = matches!(*packet, Packet::Disconnect(_));
                            let _ = codec::encode(&packet, protocol, &mut out);
                        }
                        Err(_) => break,
                    }
                }
                if stream.0.write_all(&out).await.is_err() || stream.0.flush().await.is_err() {
                    ended = true;
                } else if last {
                    let _ = stream.0.shutdown().await;
                    return;
                }
                ping_at = Instant::now() + keep_alive / 2;
            }
            () = sleep_until(ping_at) => {
                out.clear();
                let _ = codec::encode(&Packet::PingReq, protocol, &mut out);
                if stream.0.write_all(&out).await.is_err() || stream.0.flush().await.is_err() {
                    ended = true;
                }
                ping_at = Instant::now() + keep_alive / 2;
            }
            () = sleep_until(silent_until) => ended = true,
        }
    }
    drop(stream);
    if !told {
        // A broker that sent garbage is not asked: it did not end the connection on purpose.
        let taken_over = !broken && reachable(&target, PROBE_TIMEOUT).await;
        if !taken_over && !broken {
            gone.mark();
        }
        tracing::debug!(url = %target.url, taken_over, "upstream connection ended");
        inbound.push_back(ending(&target, taken_over));
    }
    // What the broker sent last reaches the session; its own packets are dropped meanwhile.
    while !inbound.is_empty() {
        tokio::select! {
            permit = to_session.reserve() => match permit {
                Ok(permit) => {
                    if let Some(packet) = inbound.pop_front() {
                        permit.send(Box::new(packet));
                    }
                }
                Err(_) => return,
            },
            packet = from_session.recv() => if packet.is_none() { return },
        }
    }
}

/// Decodes every whole packet in `buf` into `inbound` (PINGRESP dropped); `told` when the
/// broker sent DISCONNECT. An error means the stream is unusable.
fn decode_all(
    buf: &mut BytesMut,
    protocol: Protocol,
    inbound: &mut VecDeque<Packet>,
    told: &mut bool,
) -> Result<(), codec::CodecError> {
    while let Some(packet) = codec::decode(buf, protocol, MAX_PACKET_SIZE)? {
        match packet {
            Packet::PingResp => {}
            packet => {
                *told |= matches!(packet, Packet::Disconnect(_));
                inbound.push_back(packet);
            }
        }
    }
    Ok(())
}
