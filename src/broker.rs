//! The embedded broker (rumqttd 0.20). Nothing outside this module names a rumqttd type.
//!
//! rumqttd takes no accepted stream (its only entry points are TCP listeners it binds itself and
//! in-process "local links" that bypass MQTT), so sessions reach it over loopback TCP: several
//! MQTT 5 listeners on 127.0.0.1 (its accept loop handles one connection at a time on one thread
//! per listener and tops out near 900 connections/s each), protected by a per-process random
//! credential, TCP_NODELAY on every connection.
//!
//! rumqttd has no shutdown: once started, its router thread and one thread per listener run until
//! the process exits. It keeps no process-global state (no statics, no metrics recorder unless
//! Prometheus is configured, which it is not here), so several brokers may run in one process —
//! integration tests start one per server.
//!
//! What the session in front of it must know (measured, see the tests):
//! - it speaks MQTT 5 only here; CONNECT needs the [`Broker::credentials`], a keep-alive > 0 and a
//!   client id without `+ $ # /`. A refused CONNECT (bad credential, keep-alive 0, bad client id,
//!   broker full) is answered by closing the TCP connection, never by a CONNACK;
//! - its CONNACK carries exactly one property, Topic Alias Maximum 4096 (plus Assigned Client
//!   Identifier when the client id was empty): no Receive Maximum, no Maximum Packet Size;
//! - a packet whose remaining length exceeds [`Broker::max_remaining_length`], or any property it
//!   does not expect in that packet, closes the connection without a DISCONNECT;
//! - it ignores the session's Receive Maximum and keeps up to [`BROKER_MAX_INFLIGHT`] QoS 1/2
//!   deliveries unacknowledged, with packet ids `1..=100`;
//! - a second CONNECT with a live client id closes the older connection (TCP close, no DISCONNECT);
//! - a CONNECT refused *after* authentication (client id with `+ $ # /`, broker at
//!   `max_connections`) leaves a stale entry behind, and the next CONNECT with that client id on
//!   that listener panics rumqttd's task while it holds a lock: the listener then closes every
//!   connection without a CONNACK, for good. So the session never sends such a client id, and the
//!   front-end keeps its sessions below rumqttd's limit: [`Broker::connect`] hands out
//!   `broker.max_connections` session slots, and rumqttd is configured with headroom above that;
//! - each distinct subscription filter costs about 8 KiB that is never freed, and each distinct
//!   client id leaves a small record behind (its session state, when clean start is 0), forever.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::BrokerConfig;

/// The one user of the broker's listeners.
const USERNAME: &str = "portcullis";
/// How long [`Broker::start`] waits, all attempts together, for every listener to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports are found by binding `:0` and letting go, so another socket may take one before rumqttd
/// binds it; a whole new broker on new ports is the way out (rumqttd cannot add a listener later).
const START_ATTEMPTS: usize = 3;
/// How long one attempt waits for a listener that refuses connections before giving up on it:
/// rumqttd binds within milliseconds of its thread starting, so a port still closed after this
/// was taken by someone else.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Deadline of one readiness probe (CONNECT → CONNACK).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between probes of a listener that is not accepting yet.
const PROBE_RETRY: Duration = Duration::from_millis(10);
/// Deadline of a loopback connect: only a listener whose backlog overflows makes it wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long rumqttd waits for CONNECT after accepting. The session sends CONNECT at once.
const CONNECT_PACKET_TIMEOUT_MS: u16 = 10_000;
/// QoS 0 deliveries the router hands a connection per sweep of one filter.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;
/// Per-filter commit log: every subscription filter gets its own log of `SEGMENT_COUNT` segments
/// of about `SEGMENT_SIZE` bytes, kept in memory (the default, 1 GiB per filter, is unusable).
/// The size is a soft limit: a message larger than a segment is stored whole and fills it. A
/// subscriber lagging by more than the log loses messages.
const SEGMENT_SIZE: usize = 100 * 1024;
const SEGMENT_COUNT: usize = 10;
/// rumqttd's limit applies to a packet's remaining length (topic, properties and payload), not to
/// the payload: leave room for a maximum-length topic and properties above the payload limit.
const PACKET_HEADROOM: usize = 64 * 1024;

/// QoS 1/2 deliveries rumqttd keeps unacknowledged per connection, whatever Receive Maximum the
/// CONNECT asked for (its packet ids go `1..=100`). The session queues what its client cannot take.
pub const BROKER_MAX_INFLIGHT: u16 = 100;

/// Tells the brokers of one process apart in thread names and rumqttd's router id.
static NEXT_BROKER_ID: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker: {0}")]
    Start(String),
    #[error("cannot reach the embedded broker: {0}")]
    Connect(#[from] std::io::Error),
    #[error("the embedded broker holds broker.max_connections sessions")]
    Full,
}

/// A session's connection to the broker, with its slot.
pub struct BrokerLink {
    pub stream: TcpStream,
    pub slot: OwnedSemaphorePermit,
}

/// rumqttd's own connection limit, above the front-end's session slots: a closed session frees
/// its slot at once, while the router counts it until it has processed the disconnect, and the
/// readiness probes count too.
fn router_connections(sessions: usize) -> usize {
    sessions.saturating_add((sessions / 10).max(64))
}

pub struct Broker {
    addrs: Vec<SocketAddr>,
    /// One permit per session: the front-end refuses a session (CONNACK server busy) before the
    /// broker could ever be full, because a refusal at rumqttd's limit can break a listener.
    slots: Arc<Semaphore>,
    next: AtomicUsize,
    password: String,
    max_remaining_length: usize,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addrs", &self.addrs)
            .field("max_remaining_length", &self.max_remaining_length)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Starts rumqttd on its own threads with `config.listeners` MQTT 5 listeners on 127.0.0.1 and
    /// returns once every listener accepts connections.
    ///
    /// "Accepts" means a CONNECT with this broker's credential got a successful CONNACK, so a port
    /// taken by another socket in the meantime is noticed, and start is retried on new ports (the
    /// abandoned rumqttd keeps its threads: it cannot be stopped).
    pub async fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
        if config.listeners == 0 || config.max_connections == 0 || config.max_payload_size == 0 {
            return Err(BrokerError::Start(
                "listeners, max_connections and max_payload_size must be greater than 0".into(),
            ));
        }
        let max_remaining_length = config
            .max_payload_size
            .checked_add(PACKET_HEADROOM)
            .ok_or_else(|| BrokerError::Start("max_payload_size is too large".into()))?;
        let password = hex::encode(rand::random::<[u8; 32]>());
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("no attempt was made");
        for attempt in 1..=START_ATTEMPTS {
            if Instant::now() >= deadline {
                break;
            }
            let id = NEXT_BROKER_ID.fetch_add(1, Ordering::Relaxed);
            match start_once(id, config, max_remaining_length, &password, deadline).await {
                Ok(addrs) => {
                    tracing::info!(broker = id, ?addrs, "embedded broker started");
                    return Ok(Broker {
                        addrs,
                        slots: Arc::new(Semaphore::new(config.max_connections)),
                        next: AtomicUsize::new(0),
                        password,
                        max_remaining_length,
                    });
                }
                Err(error) => {
                    tracing::warn!(broker = id, attempt, %error, "embedded broker did not come up");
                    last_error = error;
                }
            }
        }
        Err(BrokerError::Start(last_error))
    }

    /// A new TCP connection (TCP_NODELAY) to the next listener, round robin, holding one of the
    /// `broker.max_connections` session slots until it is dropped; `Full` when none is free.
    pub async fn connect(&self) -> Result<BrokerLink, BrokerError> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| BrokerError::Full)?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len().max(1);
        let addr = self.addrs.get(i).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the broker has no listener",
            )
        })?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )
            })??;
        stream.set_nodelay(true)?;
        Ok(BrokerLink { stream, slot })
    }

    /// Username and password every session must send in its CONNECT to the broker.
    pub fn credentials(&self) -> (&str, &str) {
        (USERNAME, &self.password)
    }

    /// The listener addresses (for the load tool's plain-TCP baseline and tests).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The largest remaining length (fixed header excluded) of a packet the broker reads:
    /// `broker.max_payload_size` plus room for topic and properties. Anything larger makes it
    /// close the connection without a DISCONNECT, so the session refuses it first.
    pub fn max_remaining_length(&self) -> usize {
        self.max_remaining_length
    }
}

/// One attempt: pick ports, run rumqttd on them, wait until each listener answers a CONNECT.
async fn start_once(
    id: usize,
    config: &BrokerConfig,
    max_remaining_length: usize,
    password: &str,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, String> {
    let addrs = free_ports(config.listeners)?;
    let rumqttd_config = rumqttd_config(id, config, max_remaining_length, password, &addrs);
    let thread = std::thread::Builder::new()
        .name(format!("broker-{id}"))
        .spawn(move || {
            // `new` spawns the router thread, `start` one thread (with its own current-thread
            // runtime) per listener, then blocks joining them: it returns only if all stopped.
            let mut broker = rumqttd::Broker::new(rumqttd_config);
            match broker.start() {
                Ok(()) => tracing::error!(broker = id, "embedded broker stopped: no listener left"),
                Err(error) => tracing::error!(broker = id, %error, "embedded broker failed"),
            }
        })
        .map_err(|e| format!("cannot spawn the broker thread: {e}"))?;

    let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
    for (i, addr) in addrs.iter().enumerate() {
        let client_id = format!("portcullis-probe-{id}-{i}");
        loop {
            if thread.is_finished() {
                return Err(format!("rumqttd stopped before listening on {addr}"));
            }
            match probe(*addr, &client_id, password).await {
                Ok(()) => break,
                Err(Probe::NotListening(e)) => {
                    if Instant::now() >= attempt_deadline {
                        return Err(format!("rumqttd is not listening on {addr}: {e}"));
                    }
                    tokio::time::sleep(PROBE_RETRY).await;
                }
                Err(Probe::Failed(e)) => {
                    return Err(format!("{addr} does not answer as this broker: {e}"));
                }
            }
        }
    }
    Ok(addrs)
}

/// `n` distinct free loopback ports. All stay bound until the last one is found so none repeats;
/// they are released before rumqttd binds them, which leaves the race [`START_ATTEMPTS`] covers.
fn free_ports(n: usize) -> Result<Vec<SocketAddr>, String> {
    let listeners = (0..n)
        .map(|_| StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read a loopback port: {e}"))
}

/// Every field set explicitly: `RouterConfig::default()` admits no connection and its zero
/// segment size panics the router.
fn rumqttd_config(
    id: usize,
    config: &BrokerConfig,
    max_remaining_length: usize,
    password: &str,
    addrs: &[SocketAddr],
) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: CONNECT_PACKET_TIMEOUT_MS,
        max_payload_size: max_remaining_length,
        // rumqttd uses this as the most packets it reads from a connection in one batch; the
        // QoS 1/2 window towards the session is fixed (BROKER_MAX_INFLIGHT).
        max_inflight_count: config.max_inflight,
        auth: Some(HashMap::from([(USERNAME.to_owned(), password.to_owned())])),
        external_auth: None,
        // Subscribing creates a filter's log whatever this says; it would only matter for
        // publishes matching no filter, and those are dropped in 0.20 either way.
        dynamic_filters: false,
    };
    let listeners = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let name = format!("broker-{id}-{i}");
            let settings = rumqttd::ServerSettings {
                name: name.clone(),
                listen: *addr,
                tls: None,
                // The default (1000 ms per connection in its sample config) throttles sessions.
                next_connection_delay_ms: 0,
                connections: connections.clone(),
            };
            (name, settings)
        })
        .collect();
    rumqttd::Config {
        id,
        router: rumqttd::RouterConfig {
            max_connections: router_connections(config.max_connections),
            max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
            max_segment_size: SEGMENT_SIZE,
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::default(),
        },
        v4: None,
        v5: Some(listeners),
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
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
    use super::*;

    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    const T: Duration = Duration::from_secs(10);

    fn config(listeners: usize) -> BrokerConfig {
        BrokerConfig {
            listeners,
            max_connections: 1000,
            max_payload_size: 64 * 1024,
            max_inflight: 100,
        }
    }

    async fn start(listeners: usize) -> Broker {
        tokio::time::timeout(Duration::from_secs(15), Broker::start(&config(listeners)))
            .await
            .unwrap()
            .unwrap()
    }

    /// A rumqttc v5 client on listener `i`, polled until its CONNACK.
    async fn client(broker: &Broker, i: usize, id: &str) -> (AsyncClient, EventLoop) {
        let addr = broker.addrs()[i];
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        let (user, pass) = broker.credentials();
        options.set_credentials(user, pass);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        loop {
            match tokio::time::timeout(T, events.poll())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Incoming(Packet::ConnAck(_)) => return (client, events),
                _ => continue,
            }
        }
    }

    /// Polls until a PUBLISH arrives; returns its topic and payload.
    async fn next_publish(events: &mut EventLoop) -> (String, Vec<u8>) {
        loop {
            match tokio::time::timeout(T, events.poll())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Incoming(Packet::Publish(p)) => {
                    return (
                        String::from_utf8(p.topic.to_vec()).unwrap(),
                        p.payload.to_vec(),
                    )
                }
                _ => continue,
            }
        }
    }

    async fn subscribe(client: &AsyncClient, events: &mut EventLoop, filter: &str) {
        tokio::time::timeout(T, client.subscribe(filter, QoS::AtLeastOnce))
            .await
            .unwrap()
            .unwrap();
        loop {
            match tokio::time::timeout(T, events.poll())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Incoming(Packet::SubAck(_)) => return,
                _ => continue,
            }
        }
    }

    /// Publishes on `client` and keeps its event loop turning until `sub` gets the message.
    async fn publish_and_receive(
        publisher: &AsyncClient,
        pub_events: &mut EventLoop,
        sub_events: &mut EventLoop,
        topic: &str,
        payload: &[u8],
    ) -> (String, Vec<u8>) {
        tokio::time::timeout(
            T,
            publisher.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()),
        )
        .await
        .unwrap()
        .unwrap();
        let drive = async {
            loop {
                if pub_events.poll().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            got = next_publish(sub_events) => got,
            () = drive => panic!("publisher connection ended"),
        }
    }

    /// Raw MQTT 5 over TCP, for what rumqttc hides (CONNACK bytes, silent closes).
    struct Raw(TcpStream);

    impl Raw {
        async fn connect(addr: SocketAddr) -> Raw {
            let stream = tokio::time::timeout(T, TcpStream::connect(addr))
                .await
                .unwrap()
                .unwrap();
            stream.set_nodelay(true).unwrap();
            Raw(stream)
        }

        async fn send(&mut self, bytes: &[u8]) {
            tokio::time::timeout(T, self.0.write_all(bytes))
                .await
                .unwrap()
                .unwrap();
        }

        /// The next packet as (first byte, body), or `None` when the broker closed the connection.
        async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
            tokio::time::timeout(T, async {
                let first = self.0.read_u8().await.ok()?;
                let (mut len, mut shift) = (0usize, 0);
                loop {
                    let b = self.0.read_u8().await.ok()?;
                    len |= usize::from(b & 0x7f) << shift;
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                let mut body = vec![0; len];
                self.0.read_exact(&mut body).await.ok()?;
                Some((first, body))
            })
            .await
            .unwrap()
        }
    }

    /// CONNECT with properties `props` (already encoded, without their length).
    fn connect_with(
        client_id: &str,
        user: &str,
        pass: &str,
        keep_alive: u16,
        props: &[u8],
    ) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2];
        body.extend_from_slice(&keep_alive.to_be_bytes());
        push_varint(&mut body, props.len());
        body.extend_from_slice(props);
        for field in [client_id, user, pass] {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        frame(0x10, &body)
    }

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut packet = vec![first];
        push_varint(&mut packet, body.len());
        packet.extend_from_slice(body);
        packet
    }

    fn subscribe_packet(pkid: u16, filters: &[&str]) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        body.push(0);
        for f in filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(0); // QoS 0
        }
        frame(0x82, &body)
    }

    /// QoS 0 PUBLISH with properties `props`.
    fn publish_packet(topic: &str, props: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        push_varint(&mut body, props.len());
        body.extend_from_slice(props);
        body.extend_from_slice(payload);
        frame(0x30, &body)
    }

    /// A raw session on listener `i` past its CONNACK; returns the CONNACK body too.
    async fn raw_session(broker: &Broker, i: usize, id: &str) -> (Raw, Vec<u8>) {
        let mut raw = Raw::connect(broker.addrs()[i]).await;
        let (user, pass) = broker.credentials();
        raw.send(&connect_with(id, user, pass, 30, &[])).await;
        let (first, body) = raw.read().await.expect("CONNACK");
        assert_eq!(first, 0x20);
        assert_eq!(body[1], 0x00, "CONNACK reason code");
        (raw, body)
    }

    #[tokio::test]
    async fn publish_reaches_a_subscriber_on_another_listener() {
        let broker = start(2).await;
        assert_eq!(broker.addrs().len(), 2);
        let (sub, mut sub_events) = client(&broker, 0, "sub").await;
        subscribe(&sub, &mut sub_events, "acme/t").await;
        let (publisher, mut pub_events) = client(&broker, 1, "pub").await;
        let got = publish_and_receive(
            &publisher,
            &mut pub_events,
            &mut sub_events,
            "acme/t",
            b"hello",
        )
        .await;
        assert_eq!(got, ("acme/t".to_owned(), b"hello".to_vec()));
    }

    #[tokio::test]
    async fn zero_listeners_is_a_start_error() {
        let err = Broker::start(&config(0)).await.unwrap_err();
        assert!(matches!(err, BrokerError::Start(_)), "{err}");
    }

    #[tokio::test]
    async fn connect_goes_round_robin_with_nodelay() {
        let broker = start(3).await;
        let mut ports = Vec::new();
        for _ in 0..6 {
            let link = tokio::time::timeout(T, broker.connect())
                .await
                .unwrap()
                .unwrap();
            assert!(link.stream.nodelay().unwrap());
            ports.push(link.stream.peer_addr().unwrap());
        }
        assert_eq!(&ports[..3], broker.addrs());
        assert_eq!(&ports[3..], broker.addrs());
    }

    #[tokio::test]
    async fn credential_is_random_per_broker() {
        let a = start(1).await;
        let b = start(1).await;
        assert_eq!(a.credentials().0, "portcullis");
        assert_eq!(a.credentials().1.len(), 64);
        assert_ne!(a.credentials().1, b.credentials().1);
    }

    #[tokio::test]
    async fn wrong_password_is_closed_without_connack() {
        let broker = start(1).await;
        let mut raw = Raw::connect(broker.addrs()[0]).await;
        raw.send(&connect_with("intruder", "portcullis", "wrong", 30, &[]))
            .await;
        assert_eq!(raw.read().await, None);
        // rumqttc sees the silent close as a dropped connection, not a refusal code.
        let addr = broker.addrs()[0];
        let mut options = MqttOptions::new("intruder", addr.ip().to_string(), addr.port());
        options.set_credentials("portcullis", "wrong");
        let (_client, mut events) = AsyncClient::new(options, 10);
        let err = tokio::time::timeout(T, events.poll())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            !matches!(err, rumqttc::v5::ConnectionError::ConnectionRefused(_)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn two_brokers_in_one_process_are_independent() {
        let (a, b) = tokio::join!(start(2), start(2));
        for broker in [&a, &b] {
            let (sub, mut sub_events) = client(broker, 1, "same-id").await;
            subscribe(&sub, &mut sub_events, "acme/t").await;
            let (publisher, mut pub_events) = client(broker, 0, "pub").await;
            let got = publish_and_receive(
                &publisher,
                &mut pub_events,
                &mut sub_events,
                "acme/t",
                broker.addrs()[0].to_string().as_bytes(),
            )
            .await;
            assert_eq!(got.1, broker.addrs()[0].to_string().into_bytes());
        }
        // One broker's credential opens nothing in the other.
        let mut raw = Raw::connect(b.addrs()[0]).await;
        let (user, pass) = a.credentials();
        raw.send(&connect_with("x", user, pass, 30, &[])).await;
        assert_eq!(raw.read().await, None);
    }

    #[tokio::test]
    async fn keep_alive_zero_is_closed_without_connack() {
        let broker = start(1).await;
        let mut raw = Raw::connect(broker.addrs()[0]).await;
        let (user, pass) = broker.credentials();
        raw.send(&connect_with("ka0", user, pass, 0, &[])).await;
        assert_eq!(raw.read().await, None);
    }

    #[tokio::test]
    async fn connack_carries_only_topic_alias_maximum() {
        let broker = start(1).await;
        let (_raw, body) = raw_session(&broker, 0, "props").await;
        // session present 0, success, properties: length 3, Topic Alias Maximum (0x22) = 4096.
        assert_eq!(body, vec![0x00, 0x00, 0x03, 0x22, 0x10, 0x00]);
    }

    #[tokio::test]
    async fn duplicate_client_id_closes_the_older_connection() {
        let broker = start(2).await;
        // Across listeners.
        let (mut old, _) = raw_session(&broker, 0, "twin").await;
        let (mut new, _) = raw_session(&broker, 1, "twin").await;
        assert_eq!(
            old.read().await,
            None,
            "old connection: closed, no DISCONNECT"
        );
        new.send(&[0xC0, 0x00]).await; // PINGREQ
        assert_eq!(new.read().await, Some((0xD0, vec![])));
        // On the same listener, again and again (sessions reconnect with the same id).
        let (mut older, _) = raw_session(&broker, 1, "twin").await;
        assert_eq!(new.read().await, None);
        older.send(&[0xE0, 0x00]).await; // DISCONNECT
        assert_eq!(older.read().await, None);
        let (mut newest, _) = raw_session(&broker, 1, "twin").await;
        newest.send(&[0xC0, 0x00]).await;
        assert_eq!(newest.read().await, Some((0xD0, vec![])));
    }

    #[tokio::test]
    async fn publish_with_topic_alias_is_accepted() {
        let broker = start(1).await;
        let (mut sub, _) = raw_session(&broker, 0, "alias-sub").await;
        sub.send(&subscribe_packet(1, &["acme/alias"])).await;
        assert_eq!(sub.read().await.map(|p| p.0), Some(0x90));
        let (mut publisher, _) = raw_session(&broker, 0, "alias-pub").await;
        // Topic Alias (0x23) = 7 with the topic, then alias 7 alone with an empty topic.
        publisher
            .send(&publish_packet("acme/alias", &[0x23, 0, 7], b"one"))
            .await;
        publisher
            .send(&publish_packet("", &[0x23, 0, 7], b"two"))
            .await;
        for payload in [&b"one"[..], b"two"] {
            let (first, body) = sub.read().await.expect("PUBLISH");
            assert_eq!(first & 0xF0, 0x30);
            assert_eq!(&body[..12], b"\x00\x0aacme/alias");
            assert!(body.ends_with(payload), "{body:02x?}");
        }
    }

    #[tokio::test]
    async fn unexpected_property_closes_the_connection() {
        let broker = start(1).await;
        let (mut raw, _) = raw_session(&broker, 0, "badprop").await;
        // Session Expiry Interval (0x11) is not a PUBLISH property: closed, no DISCONNECT.
        raw.send(&publish_packet("acme/t", &[0x11, 0, 0, 0, 1], b"x"))
            .await;
        assert_eq!(raw.read().await, None);
        // Payload Format Indicator (0x01) is not a CONNECT property: closed, no CONNACK.
        let mut raw = Raw::connect(broker.addrs()[0]).await;
        let (user, pass) = broker.credentials();
        raw.send(&connect_with("badconnect", user, pass, 30, &[0x01, 1]))
            .await;
        assert_eq!(raw.read().await, None);
        // A Subscription Identifier (0x0B) in a client's PUBLISH parses, and the router answers
        // DISCONNECT 0x81 (malformed packet) before closing.
        let (mut raw, _) = raw_session(&broker, 0, "subid").await;
        raw.send(&publish_packet("acme/t", &[0x0B, 1], b"x")).await;
        assert_eq!(raw.read().await, Some((0xE0, vec![0x81])));
        assert_eq!(raw.read().await, None);
    }

    /// rumqttd 0.20 bug the session must design around: once a CONNECT that passed
    /// authentication is refused (here: `/` in the client id; also when the broker is full), the
    /// next CONNECT with that client id on that listener panics rumqttd's accept task while it
    /// holds a lock, and every later connection on that listener is closed without a CONNACK.
    #[tokio::test]
    async fn refused_client_id_reused_kills_the_listener() {
        let broker = start(2).await;
        let (user, pass) = broker.credentials();
        for _ in 0..2 {
            let mut raw = Raw::connect(broker.addrs()[0]).await;
            raw.send(&connect_with("acme/bad", user, pass, 30, &[]))
                .await;
            assert_eq!(raw.read().await, None);
        }
        let mut raw = Raw::connect(broker.addrs()[0]).await;
        raw.send(&connect_with("good", user, pass, 30, &[])).await;
        assert_eq!(raw.read().await, None, "listener 0 is dead");
        raw_session(&broker, 1, "good").await; // the other listener still works
    }

    #[tokio::test]
    async fn oversized_packet_closes_the_connection() {
        let broker = start(1).await;
        let limit = broker.max_remaining_length();
        let (mut raw, _) = raw_session(&broker, 0, "big").await;
        let topic = "acme/t";
        // Largest accepted: remaining length == limit.
        let fits = vec![0u8; limit - 2 - topic.len() - 1];
        raw.send(&publish_packet(topic, &[], &fits)).await;
        raw.send(&[0xC0, 0x00]).await;
        assert_eq!(raw.read().await, Some((0xD0, vec![])));
        let too_big = vec![0u8; fits.len() + 1];
        raw.send(&publish_packet(topic, &[], &too_big)).await;
        assert_eq!(raw.read().await, None);
    }

    #[tokio::test]
    async fn many_subscriptions_on_one_connection() {
        let broker = start(1).await;
        let (mut raw, _) = raw_session(&broker, 0, "many").await;
        let filters: Vec<String> = (0..5000).map(|i| format!("acme/f/{i}")).collect();
        for (n, chunk) in filters.chunks(500).enumerate() {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            raw.send(&subscribe_packet(n as u16 + 1, &chunk)).await;
            let (first, body) = raw.read().await.expect("SUBACK");
            assert_eq!(first, 0x90);
            assert_eq!(body.len(), 2 + 1 + 500);
            assert!(body[3..].iter().all(|&c| c == 0));
        }
        let (mut publisher, _) = raw_session(&broker, 0, "many-pub").await;
        publisher
            .send(&publish_packet("acme/f/4999", &[], b"last"))
            .await;
        let (_, body) = raw.read().await.expect("PUBLISH");
        assert!(body.ends_with(b"last"));
    }
}
