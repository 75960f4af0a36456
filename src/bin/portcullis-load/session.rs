//! One MQTT connection of the tool: TCP, TLS (tokio-rustls), CONNECT/CONNACK with the project's
//! codec, then packets in and out. Every await that waits on the peer has a deadline, and every
//! failure is a [`Failure`] of a bounded kind, so a run counts failures instead of stopping.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use portcullis::codec::{self, Connect, Disconnect, Packet, Properties, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::target::{ConnectionSpec, Endpoint};

/// Largest packet accepted from the server; only a guard against a broken peer.
const MAX_PACKET: usize = 64 * 1024 * 1024;
/// Bytes reserved before each read.
const READ_CHUNK: usize = 16 * 1024;

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The network step a deadline expired in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Tcp,
    Tls,
    Connack,
    Suback,
    Write,
}

/// Why a connection or a packet exchange failed; [`Failure::kind`] is the bounded label a report
/// counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// TCP connect refused or failed.
    Tcp,
    /// TLS handshake failed, or a TLS alert arrived after it (TLS 1.3 reports a refused client
    /// certificate on the first read).
    Tls,
    /// A deadline expired.
    Timeout(Step),
    /// CONNACK with a non-zero return or reason code.
    Refused(u8),
    /// SUBACK refused a filter with this code.
    SubscribeRefused(u8),
    /// The server closed (or reset) the connection.
    Closed,
    /// The server sent something this tool cannot decode or did not expect.
    Protocol,
}

impl Failure {
    pub fn kind(&self) -> String {
        match self {
            Failure::Tcp => "tcp".into(),
            Failure::Tls => "tls".into(),
            Failure::Timeout(step) => format!("timeout_{}", format!("{step:?}").to_lowercase()),
            Failure::Refused(code) => format!("connack_0x{code:02x}"),
            Failure::SubscribeRefused(code) => format!("suback_0x{code:02x}"),
            Failure::Closed => "closed".into(),
            Failure::Protocol => "protocol".into(),
        }
    }
}

/// A failure with its detail (the first of each kind is kept as a sample in reports).
#[derive(Debug)]
pub struct Error {
    pub failure: Failure,
    pub detail: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.failure.kind(), self.detail)
    }
}

impl Error {
    pub fn new(failure: Failure, detail: impl Into<String>) -> Error {
        Error {
            failure,
            detail: detail.into(),
        }
    }

    /// An I/O error on an established connection: a TLS alert or a closed stream.
    fn io(error: std::io::Error) -> Error {
        let tls = error
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        let failure = if tls { Failure::Tls } else { Failure::Closed };
        Error::new(failure, error.to_string())
    }
}

async fn deadline<T>(
    limit: Duration,
    step: Step,
    future: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| Error::new(Failure::Timeout(step), format!("no progress in {limit:?}")))
}

/// An open MQTT session (CONNACK received with success).
pub struct Session {
    stream: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub protocol: Protocol,
    /// The TLS handshake was a resumption.
    pub resumed: bool,
    timeout: Duration,
}

impl Session {
    /// TCP connect, TLS handshake, CONNECT, CONNACK: the whole of what `connect` times.
    pub async fn open(endpoint: &Endpoint, spec: &ConnectionSpec) -> Result<Session, Error> {
        let limit = endpoint.step_timeout;
        let addr = endpoint.next_addr();
        let tcp = deadline(limit, Step::Tcp, TcpStream::connect(addr))
            .await?
            .map_err(|e| Error::new(Failure::Tcp, e.to_string()))?;
        // Without it, every small packet waits for the previous one's ACK (40 ms on loopback).
        tcp.set_nodelay(true)
            .map_err(|e| Error::new(Failure::Tcp, e.to_string()))?;
        let (stream, resumed): (Box<dyn Io>, bool) = match (&endpoint.tls, &spec.tls) {
            (Some(tls), Some(config)) => {
                let connector = TlsConnector::from(config.clone());
                let stream = deadline(
                    limit,
                    Step::Tls,
                    connector.connect(tls.server_name.clone(), tcp),
                )
                .await?
                .map_err(|e| Error::new(Failure::Tls, e.to_string()))?;
                let resumed =
                    stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                (Box::new(stream), resumed)
            }
            _ => (Box::new(tcp), false),
        };
        let mut session = Session {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
            protocol: endpoint.protocol,
            resumed,
            timeout: limit,
        };
        let connect = Connect {
            protocol: endpoint.protocol,
            clean_start: true,
            keep_alive: endpoint.keep_alive,
            client_id: spec.client_id.clone(),
            will: None,
            username: endpoint.username.clone(),
            password: endpoint.password.clone().map(Bytes::from),
            properties: Properties::default(),
        };
        session.send(&Packet::Connect(Box::new(connect))).await?;
        match session.recv(Step::Connack).await? {
            Packet::ConnAck(ack) if ack.code == 0 => Ok(session),
            Packet::ConnAck(ack) => Err(Error::new(
                Failure::Refused(ack.code),
                ack.properties
                    .reason_string
                    .unwrap_or_else(|| "CONNACK refused".into()),
            )),
            other => Err(Error::new(
                Failure::Protocol,
                format!("expected CONNACK, got {}", packet_name(&other)),
            )),
        }
    }

    /// Encodes `packet` and writes it, under the deadline.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), Error> {
        self.wbuf.clear();
        codec::encode(packet, self.protocol, &mut self.wbuf)
            .map_err(|e| Error::new(Failure::Protocol, format!("cannot encode: {e}")))?;
        let limit = self.timeout;
        let Session { stream, wbuf, .. } = self;
        deadline(limit, Step::Write, async {
            stream.write_all(wbuf).await?;
            stream.flush().await
        })
        .await?
        .map_err(Error::io)
    }

    /// Writes already encoded packets, under the deadline.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let limit = self.timeout;
        let stream = &mut self.stream;
        deadline(limit, Step::Write, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await?
        .map_err(Error::io)
    }

    /// The next packet from the server, waiting at most the step deadline.
    pub async fn recv(&mut self, step: Step) -> Result<Packet, Error> {
        let limit = self.timeout;
        deadline(limit, step, self.next_packet()).await?
    }

    /// The next packet from the server, with no deadline (for callers that select on it).
    /// Cancel-safe: bytes already read stay buffered.
    pub async fn next_packet(&mut self) -> Result<Packet, Error> {
        loop {
            if let Some(packet) = self.try_decode()? {
                return Ok(packet);
            }
            self.read_more().await?;
        }
    }

    /// The next packet if it is already buffered; never waits.
    pub fn try_decode(&mut self) -> Result<Option<Packet>, Error> {
        codec::decode(&mut self.rbuf, self.protocol, MAX_PACKET)
            .map_err(|e| Error::new(Failure::Protocol, e.to_string()))
    }

    async fn read_more(&mut self) -> Result<(), Error> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(Error::new(
                Failure::Closed,
                "connection closed by the server",
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::io(e)),
        }
    }

    /// DISCONNECT, then close (TLS close_notify and FIN); best effort, under the deadline.
    pub async fn close(mut self) {
        let _ = self.send(&disconnect()).await;
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }

    /// Read and write halves, for a reader and a writer task; bytes already read come along.
    pub fn split(self) -> (Reader, Writer) {
        let (read, write) = tokio::io::split(self.stream);
        (
            Reader {
                stream: read,
                rbuf: self.rbuf,
                protocol: self.protocol,
            },
            Writer {
                stream: write,
                timeout: self.timeout,
                protocol: self.protocol,
            },
        )
    }
}

/// The read half of a split session.
pub struct Reader {
    stream: ReadHalf<Box<dyn Io>>,
    rbuf: BytesMut,
    protocol: Protocol,
}

impl Reader {
    /// The next packet; no deadline (the caller selects on it), cancel-safe.
    pub async fn next_packet(&mut self) -> Result<Packet, Error> {
        loop {
            if let Some(packet) = codec::decode(&mut self.rbuf, self.protocol, MAX_PACKET)
                .map_err(|e| Error::new(Failure::Protocol, e.to_string()))?
            {
                return Ok(packet);
            }
            self.rbuf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    return Err(Error::new(
                        Failure::Closed,
                        "connection closed by the server",
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(Error::io(e)),
            }
        }
    }
}

/// The write half of a split session.
pub struct Writer {
    stream: WriteHalf<Box<dyn Io>>,
    timeout: Duration,
    pub protocol: Protocol,
}

impl Writer {
    /// Writes already encoded packets, under the deadline.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let Writer {
            stream, timeout, ..
        } = self;
        deadline(*timeout, Step::Write, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await?
        .map_err(Error::io)
    }

    /// DISCONNECT, then close; best effort, under the deadline.
    pub async fn close(mut self) {
        let mut buf = BytesMut::new();
        if codec::encode(&disconnect(), self.protocol, &mut buf).is_ok() {
            let _ = self.write(&buf).await;
        }
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Properties::default(),
    })
}

/// The packet type's name, for error details.
pub fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

/// Encodes `packet` at the end of `out`.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), Error> {
    codec::encode(packet, protocol, out)
        .map_err(|e| Error::new(Failure::Protocol, format!("cannot encode: {e}")))
}
