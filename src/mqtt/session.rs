//! One MQTT session: read the CONNECT under a deadline, bind its client id to the identity the
//! TLS handshake proved, answer every refusal with a CONNACK, then forward packets both ways
//! between the client and the embedded broker.
//!
//! The broker leg is an in-process link to rumqttd's router ([`crate::broker`]) carrying MQTT 5
//! packets as values, so 3.1.1 clients are translated. Topics are mapped into the org's namespace
//! on the way in and back on the way out; MQTT 5 topic aliases are resolved here and never reach
//! the broker. Keep-alive is the front-end's alone (the link needs none), and so are wills: a
//! session that ends without DISCONNECT (or with reason 0x04) has its will published by
//! [`Broker::will`], after the MQTT 5 will delay.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metrics::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

use crate::broker::{Broker, BrokerError, BrokerSession, Expiry, Memo};
use crate::codec::{
    self, reason, Ack, CodecError, ConnAck, Connect, Disconnect, Packet, Properties, Protocol,
    Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::events::{Event, Kind};
use crate::identity::ClientId;
use crate::mqtt::delivery::{self, Subscriptions};
use crate::mqtt::filters::{FilterQuota, SessionFilters};
use crate::mqtt::topics::TopicMap;
use crate::notify::Notifier;
use crate::ocsp::{Ocsp, Verdict};
use crate::registry::PeerIdentity;
use crate::registry::{ClientIdGuard, Device, Registry, Revocation, SessionGuard, SessionInfo};

/// How long a finished session waits for its client's TLS close.
const CLIENT_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Topic aliases a client may use (MQTT 5); they are resolved here.
const TOPIC_ALIAS_MAX: u16 = 64;
/// QoS 1/2 PUBLISHes an MQTT 5 client may have unacknowledged (the Receive Maximum announced in
/// CONNACK); one more is answered with DISCONNECT 0x93 (MQTT-3.3.4-8, 4.9).
const RECEIVE_MAXIMUM: u16 = 100;

/// What every session needs, shared.
pub struct Context {
    pub registry: Arc<Registry>,
    pub broker: Arc<Broker>,
    /// Caps on subscription filters per session and per organisation.
    pub filters: Arc<FilterQuota>,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub max_packet_size: usize,
    /// Authentications for the device registry, written behind (see [`crate::devices`]).
    pub devices: crate::devices::DeviceLog,
    /// Asks CAs' OCSP responders, before CONNACK.
    pub ocsp: Arc<Ocsp>,
    /// Told when an OCSP responder does not answer.
    pub notifier: Arc<Notifier>,
}

/// Why a CONNECT was refused; each is answered with a CONNACK (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    UnsupportedProtocol,
    ClientIdInvalid,
    OrgMismatch,
    IdentityMismatch,
    CaInactive,
    DeviceBlocked,
    CertificateRevoked,
    /// The CA's CRL is past its nextUpdate and `revocation.on_stale_crl` is `deny` (a TLS
    /// resumption skipped the handshake's check).
    CrlStale,
    /// The CA's `ocsp_mode` is `hard` and its responder gave no usable answer.
    OcspUnavailable,
    WillTopic,
    AuthMethod,
    BrokerUnavailable,
    BrokerBusy,
}

impl ConnectRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            ConnectRefusal::UnsupportedProtocol => "unsupported_protocol",
            ConnectRefusal::ClientIdInvalid => "client_id_invalid",
            ConnectRefusal::OrgMismatch => "org_mismatch",
            ConnectRefusal::IdentityMismatch => "identity_mismatch",
            ConnectRefusal::CaInactive => "ca_inactive",
            ConnectRefusal::DeviceBlocked => "device_blocked",
            ConnectRefusal::CertificateRevoked => "certificate_revoked",
            ConnectRefusal::CrlStale => "crl_stale",
            ConnectRefusal::OcspUnavailable => "ocsp_unavailable",
            ConnectRefusal::WillTopic => "will_topic_not_allowed",
            ConnectRefusal::AuthMethod => "auth_method_unsupported",
            ConnectRefusal::BrokerUnavailable => "broker_unavailable",
            ConnectRefusal::BrokerBusy => "broker_busy",
        }
    }

    fn code(self, protocol: Protocol) -> u8 {
        match (protocol, self) {
            (Protocol::V311, ConnectRefusal::UnsupportedProtocol) => {
                reason::V311_UNACCEPTABLE_PROTOCOL_VERSION
            }
            (Protocol::V311, ConnectRefusal::ClientIdInvalid) => reason::V311_IDENTIFIER_REJECTED,
            (Protocol::V311, ConnectRefusal::BrokerUnavailable | ConnectRefusal::BrokerBusy) => {
                reason::V311_SERVER_UNAVAILABLE
            }
            (Protocol::V311, _) => reason::V311_NOT_AUTHORIZED,
            (Protocol::V5, ConnectRefusal::UnsupportedProtocol) => {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            }
            (Protocol::V5, ConnectRefusal::ClientIdInvalid) => reason::CLIENT_IDENTIFIER_NOT_VALID,
            (Protocol::V5, ConnectRefusal::WillTopic) => reason::TOPIC_NAME_INVALID,
            (Protocol::V5, ConnectRefusal::AuthMethod) => reason::BAD_AUTHENTICATION_METHOD,
            (Protocol::V5, ConnectRefusal::BrokerUnavailable) => reason::SERVER_UNAVAILABLE,
            (Protocol::V5, ConnectRefusal::BrokerBusy) => reason::SERVER_BUSY,
            (Protocol::V5, _) => reason::NOT_AUTHORIZED,
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            ConnectRefusal::UnsupportedProtocol => "only MQTT 3.1.1 and 5 are supported",
            ConnectRefusal::ClientIdInvalid => {
                "client id must be d:<org>:<type>:<id>, g:<org>:<type>:<id> or a:<org>:<appId>"
            }
            ConnectRefusal::OrgMismatch => "client id names another organisation",
            ConnectRefusal::IdentityMismatch => {
                "client id is not an identity the certificate claims"
            }
            ConnectRefusal::CaInactive => "the certificate's CA is no longer active",
            ConnectRefusal::DeviceBlocked => "this device is blocked",
            ConnectRefusal::CertificateRevoked => "the certificate is revoked",
            ConnectRefusal::CrlStale => "the CA's revocation list is out of date",
            ConnectRefusal::OcspUnavailable => {
                "the certificate's revocation status cannot be checked now"
            }
            ConnectRefusal::WillTopic => "will topic not allowed",
            ConnectRefusal::AuthMethod => "enhanced authentication is not supported",
            ConnectRefusal::BrokerUnavailable => "broker unavailable",
            ConnectRefusal::BrokerBusy => "broker busy",
        }
    }
}

/// How a session ended, for the one log event and counter it gets.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no CONNECT before the deadline")]
    ConnectTimeout,
    #[error("connection closed before CONNECT")]
    ClosedBeforeConnect,
    #[error("CONNECT refused: {}", .0.reason())]
    Refused(ConnectRefusal),
    #[error("client sent a bad packet: {0}")]
    ClientCodec(#[source] CodecError),
    #[error("broker link: {0}")]
    Broker(#[source] BrokerError),
    #[error("client protocol violation: {0}")]
    ClientViolation(&'static str),
    #[error("publish refused by the topic policy")]
    TopicRefused,
    #[error("keep-alive expired")]
    KeepAlive,
    #[error("the peer does not read")]
    WriteTimeout,
    #[error("closed by the broker")]
    BrokerClosed,
    #[error("revoked by a registry change")]
    Revoked,
    #[error("taken over by a newer session of the same client id")]
    TakenOver,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// Bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::ConnectTimeout => "connect_timeout",
            SessionError::ClosedBeforeConnect => "closed_before_connect",
            SessionError::Refused(refusal) => refusal.reason(),
            SessionError::ClientCodec(_) => "malformed_packet",
            SessionError::Broker(_) => "broker_link",
            SessionError::ClientViolation(_) => "protocol_violation",
            SessionError::TopicRefused => "topic_refused",
            SessionError::KeepAlive => "keep_alive",
            SessionError::WriteTimeout => "write_timeout",
            SessionError::BrokerClosed => "broker_closed",
            SessionError::Revoked => "revoked",
            SessionError::TakenOver => "taken_over",
            SessionError::Io(_) => "io",
        }
    }

    /// True for a refusal at CONNECT (counted as a refused connection rather than a session end).
    pub fn is_connect_refusal(&self) -> bool {
        matches!(
            self,
            SessionError::ConnectTimeout
                | SessionError::ClosedBeforeConnect
                | SessionError::Refused(_)
        )
    }
}

/// Serves one authenticated connection until it ends. `Ok` is a clean end (DISCONNECT or close).
pub async fn serve<S>(mut client: S, peer: PeerIdentity, ctx: &Context) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut client_buf = BytesMut::with_capacity(1024);
    let connect = match tokio::time::timeout(
        ctx.connect_timeout,
        read_connect(&mut client, &mut client_buf, ctx.max_packet_size),
    )
    .await
    {
        Err(_) => return Err(SessionError::ConnectTimeout),
        Ok(Err(SessionError::ClientCodec(CodecError::UnsupportedProtocol(_)))) => {
            let refusal = ConnectRefusal::UnsupportedProtocol;
            refuse(&mut client, Protocol::V311, refusal, ctx).await;
            return Err(SessionError::Refused(refusal));
        }
        Ok(Err(SessionError::ClosedBeforeConnect)) => {
            // A clean close (TLS close_notify) is answered with ours (RFC 8446 §6.1).
            let _ = tokio::time::timeout(ctx.write_timeout, client.shutdown()).await;
            return Err(SessionError::ClosedBeforeConnect);
        }
        Ok(result) => result?,
    };
    let protocol = connect.protocol;

    let (client_id, assigned) = match bind(&connect, &peer) {
        Ok(bound) => bound,
        Err(refusal) => {
            refuse(&mut client, protocol, refusal, ctx).await;
            return Err(SessionError::Refused(refusal));
        }
    };
    let org = peer.org.org.id.clone();
    let topics = TopicMap::new(client_id.clone(), peer.org.org.topic_policy);
    let will = match &connect.will {
        Some(will) => match topics.publish(&will.topic) {
            Ok(topic) => {
                let mut properties = will.properties.clone();
                delivery::stamp(&mut properties, will.qos, will.retain, None);
                Some(codec::Will {
                    topic,
                    properties,
                    ..will.clone()
                })
            }
            Err(_) => {
                refuse(&mut client, protocol, ConnectRefusal::WillTopic, ctx).await;
                return Err(SessionError::Refused(ConnectRefusal::WillTopic));
            }
        },
        None => None,
    };

    // Register first, then check the current snapshot (see `registry`).
    let client_id_text = client_id.to_string();
    let info = SessionInfo {
        client_id: client_id_text.clone(),
        device: Device {
            identity: client_id.identity.clone(),
            claims: peer.claims.clone(),
            ca_id: peer.ca_id.clone(),
            fingerprint_sha256: peer.fingerprint_sha256.clone(),
            serial: peer.serial.clone(),
        },
        protocol: match protocol {
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        },
        peer: peer.addr,
        connected_at: time::OffsetDateTime::now_utc(),
    };
    let device = info.device.clone();
    let guard = ctx
        .registry
        .sessions()
        .register(org.clone(), info, peer.ocsp.clone());
    let revocation = match ctx.registry.snapshot().org(org.as_str()) {
        Some(entry) => entry.revocation(&device),
        None => Some(Revocation::CaInactive),
    };
    if let Some(revocation) = revocation {
        let refusal = match revocation {
            Revocation::CaInactive => ConnectRefusal::CaInactive,
            Revocation::DeviceBlocked => ConnectRefusal::DeviceBlocked,
            Revocation::CertificateRevoked => ConnectRefusal::CertificateRevoked,
            Revocation::CrlStale => ConnectRefusal::CrlStale,
        };
        refuse(&mut client, protocol, refusal, ctx).await;
        return Err(SessionError::Refused(refusal));
    }
    if let Some(refusal) = ocsp_refusal(&peer, ctx).await {
        refuse(&mut client, protocol, refusal, ctx).await;
        return Err(SessionError::Refused(refusal));
    }

    // One session per client id: an older one is told to end, and this waits until its broker
    // connection is gone.
    let Some(held) = ctx
        .registry
        .sessions()
        .claim(&client_id_text, ctx.connect_timeout)
        .await
    else {
        refuse(&mut client, protocol, ConnectRefusal::BrokerBusy, ctx).await;
        return Err(SessionError::Refused(ConnectRefusal::BrokerBusy));
    };
    let expiry = session_expiry(&connect);
    let mut broker = match ctx
        .broker
        .open_session(&client_id_text, connect.clean_start, expiry)
    {
        Ok(broker) => broker,
        Err(error) => {
            let refusal = match error {
                BrokerError::Full => ConnectRefusal::BrokerBusy,
                _ => ConnectRefusal::BrokerUnavailable,
            };
            tracing::warn!(%error, "no broker link");
            refuse(&mut client, protocol, refusal, ctx).await;
            return Err(SessionError::Refused(refusal));
        }
    };

    let mut connack = ConnAck {
        session_present: broker.session_present(),
        code: 0,
        properties: Properties::default(),
    };
    if protocol == Protocol::V5 {
        connack.properties = Properties {
            receive_maximum: Some(RECEIVE_MAXIMUM),
            maximum_packet_size: Some(u32::try_from(ctx.max_packet_size).unwrap_or(u32::MAX)),
            topic_alias_maximum: Some(TOPIC_ALIAS_MAX),
            assigned_client_identifier: assigned,
            ..Properties::default()
        };
    }
    let mut out = BytesMut::new();
    let sent = match encode_to(&Packet::ConnAck(connack), protocol, &mut out) {
        Ok(()) => write_within(&mut client, &out, ctx).await,
        Err(error) => Err(error),
    };
    if let Err(error) = sent {
        broker.close().await;
        return Err(error);
    }

    let live = metrics::gauge!(crate::metrics::SESSIONS_LIVE);
    live.increment(1.0);
    let event = |kind| {
        let mut event = Event::new(org.as_str(), kind, peer.addr);
        event.client_id = Some(client_id_text.clone());
        event.identity = Some(device.identity.to_string());
        event
    };
    ctx.registry.events().publish(event(Kind::Connect));
    ctx.devices.seen(crate::store::DeviceSeen {
        org: org.clone(),
        identity: device.identity.to_string(),
        fingerprint_sha256: device.fingerprint_sha256.clone(),
        ca_id: device.ca_id.clone(),
        serial: device.serial.clone(),
        not_after: peer.not_after,
        at: time::OffsetDateTime::now_utc(),
    });
    tracing::debug!(client_id = %client_id_text, org = %org, resumed = peer.resumed, "session open");
    let mut forwarder = Forwarder {
        protocol,
        topics,
        aliases: HashMap::new(),
        pending_subscribes: HashMap::new(),
        pending_unsubscribes: HashMap::new(),
        filters: ctx.filters.open(
            org.as_str(),
            &client_id_text,
            connect.clean_start,
            broker.session_present(),
            expiry != Expiry::Now,
        ),
        window: delivery::Window::new(&connect),
        will_wanted: true,
        expiry,
        zero_expiry: expiry == Expiry::Now,
        receiving: HashSet::new(),
        client_id: client_id_text.clone(),
        subscriptions: broker
            .take_memo()
            .and_then(|memo| memo.downcast::<Subscriptions>().ok())
            .map(|subscriptions| *subscriptions)
            .unwrap_or_default(),
        maximum_packet_size: match protocol {
            Protocol::V5 => connect
                .properties
                .maximum_packet_size
                .and_then(|max| usize::try_from(max).ok()),
            Protocol::V311 => None,
        },
        downgraded: HashSet::new(),
        broker_acks: delivery::InOrder::default(),
        broker_comps: delivery::InOrder::default(),
        released_here: HashSet::new(),
        counters: Counters::new(),
    };
    let result = forwarder
        .run(
            &mut client,
            client_buf,
            &mut broker,
            connect.keep_alive,
            (&guard, &held),
            ctx,
        )
        .await;
    live.decrement(1.0);
    let mut ended = event(Kind::Disconnect);
    ended.reason = Some(match &result {
        Ok(()) => "normal",
        Err(error) => error.reason(),
    });
    ctx.registry.events().publish(ended);
    // A graceful close (close_notify, FIN) so that a last DISCONNECT is read, not lost to a reset.
    let _ = tokio::time::timeout(CLIENT_CLOSE_WAIT, client.shutdown()).await;
    // A session taken over lives on in its successor (MQTT-3.1.4-3, 3.1.2.4): the newer CONNECT
    // saw it exist, whatever its expiry; the successor decides what becomes of it.
    let expiry = match result {
        Err(SessionError::TakenOver) => Expiry::Never,
        _ => forwarder.expiry,
    };
    broker.set_expiry(expiry);
    // Counted on only where rumqttd really keeps the session (a takeover's `Never` cannot make a
    // session opened to end with its link kept).
    forwarder
        .filters
        .keep(broker.kept() && expiry != Expiry::Now);
    // Only subscriptions that ask more than rumqttd keeps are worth keeping with the session.
    let subscriptions = std::mem::take(&mut forwarder.subscriptions);
    broker.keep_memo(
        subscriptions
            .asks_more()
            .then(|| Box::new(subscriptions) as Memo),
    );
    broker.close().await;
    let will_wanted = forwarder.will_wanted;
    // The session's filters are released (or kept) before its client id is free again.
    drop(forwarder);
    if let (Some(will), true) = (will, will_wanted) {
        ctx.broker
            .will(&client_id_text, will, will_delay(&connect))
            .await;
    }
    drop(held);
    result
}

/// How long the session is kept after its connection ends (MQTT 5: the CONNECT's Session Expiry
/// Interval, absent = 0; 3.1.1: clean session 1 ends it with the connection, 0 keeps it).
fn session_expiry(connect: &Connect) -> Expiry {
    match connect.protocol {
        Protocol::V5 => {
            Expiry::from_interval(connect.properties.session_expiry_interval.unwrap_or(0))
        }
        Protocol::V311 if connect.clean_start => Expiry::Now,
        Protocol::V311 => Expiry::Never,
    }
}

/// How long a will waits after the connection is lost (MQTT 5: the will delay, or the session's
/// expiry when that comes first; 3.1.1 has neither).
fn will_delay(connect: &Connect) -> Duration {
    let will_delay = connect
        .will
        .as_ref()
        .and_then(|will| will.properties.will_delay_interval)
        .unwrap_or(0);
    let session_expiry = connect.properties.session_expiry_interval.unwrap_or(0);
    match connect.protocol {
        Protocol::V5 => Duration::from_secs(u64::from(will_delay.min(session_expiry))),
        Protocol::V311 => Duration::ZERO,
    }
}

async fn read_connect<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Connect, SessionError> {
    loop {
        if let Some(connect) =
            codec::decode_connect(buf, max_packet_size).map_err(SessionError::ClientCodec)?
        {
            return Ok(connect);
        }
        if client.read_buf(buf).await? == 0 {
            return Err(SessionError::ClosedBeforeConnect);
        }
    }
}

/// What the authenticating CA's OCSP policy says of the peer's certificate (DESIGN §11). An
/// unanswered check is told to the org's notification channels, whatever the mode.
async fn ocsp_refusal(peer: &PeerIdentity, ctx: &Context) -> Option<ConnectRefusal> {
    let subject = peer.ocsp.as_ref()?;
    let ca = peer.org.cas.iter().find(|ca| ca.id == peer.ca_id)?;
    let verdict = ctx.ocsp.verdict(subject, ca.ocsp_url.as_deref()).await;
    if verdict == Verdict::Unavailable {
        ctx.notifier.alert(
            &peer.org.org.id,
            "ocsp_unavailable",
            format!("ca:{}", ca.id),
        );
    }
    ca.ocsp_mode.refusal(verdict).map(|_| match verdict {
        Verdict::Revoked => ConnectRefusal::CertificateRevoked,
        _ => ConnectRefusal::OcspUnavailable,
    })
}

/// Binds the CONNECT's client id to the identities the certificate claims (DESIGN §3).
fn bind(
    connect: &Connect,
    peer: &PeerIdentity,
) -> Result<(ClientId, Option<String>), ConnectRefusal> {
    if connect.protocol == Protocol::V5 && connect.properties.authentication_method.is_some() {
        return Err(ConnectRefusal::AuthMethod);
    }
    let org = &peer.org.org.id;
    if connect.client_id.is_empty() {
        if connect.protocol == Protocol::V311 && !connect.clean_start {
            return Err(ConnectRefusal::ClientIdInvalid);
        }
        return match peer.claims.as_slice() {
            [] => Err(ConnectRefusal::IdentityMismatch),
            [identity] => {
                let id = ClientId {
                    org: org.clone(),
                    identity: identity.clone(),
                };
                let assigned = (connect.protocol == Protocol::V5).then(|| id.to_string());
                Ok((id, assigned))
            }
            _ => Err(ConnectRefusal::ClientIdInvalid),
        };
    }
    let id = ClientId::parse(&connect.client_id).map_err(|_| ConnectRefusal::ClientIdInvalid)?;
    if &id.org != org {
        return Err(ConnectRefusal::OrgMismatch);
    }
    if peer.claims.binary_search(&id.identity).is_err() {
        return Err(ConnectRefusal::IdentityMismatch);
    }
    Ok((id, None))
}

/// Answers a refused CONNECT with its CONNACK, best effort, then the caller drops the connection.
async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    protocol: Protocol,
    refusal: ConnectRefusal,
    ctx: &Context,
) {
    let mut properties = Properties::default();
    if protocol == Protocol::V5 {
        properties.reason_string = Some(refusal.sentence().to_owned());
    }
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: refusal.code(protocol),
        properties,
    });
    let mut out = BytesMut::new();
    if encode_to(&connack, protocol, &mut out).is_ok() {
        let _ = write_within(client, &out, ctx).await;
        let _ = tokio::time::timeout(ctx.write_timeout, client.shutdown()).await;
    }
}

fn encode_to(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), SessionError> {
    codec::encode(packet, protocol, out).map_err(SessionError::ClientCodec)
}

/// Writes and flushes `bytes` within the write deadline: a peer that does not read is dropped.
async fn write_within<S: AsyncWrite + Unpin>(
    peer: &mut S,
    bytes: &[u8],
    ctx: &Context,
) -> Result<(), SessionError> {
    let write = async {
        peer.write_all(bytes).await?;
        peer.flush().await
    };
    match tokio::time::timeout(ctx.write_timeout, write).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::WriteTimeout),
    }
}

// Only the properties MQTT 5 allows in each packet reach the broker: rumqttd closes the
// connection, without a word, on any other.

fn publish_only(properties: Properties) -> Properties {
    Properties {
        payload_format_indicator: properties.payload_format_indicator,
        message_expiry_interval: properties.message_expiry_interval,
        content_type: properties.content_type,
        response_topic: properties.response_topic,
        correlation_data: properties.correlation_data,
        user_properties: properties.user_properties,
        ..Properties::default()
    }
}

fn ack_only(ack: Ack) -> Ack {
    Ack {
        packet_id: ack.packet_id,
        reason: ack.reason,
        properties: Properties {
            reason_string: ack.properties.reason_string,
            user_properties: ack.properties.user_properties,
            ..Properties::default()
        },
    }
}

fn user_properties_only(properties: Properties) -> Properties {
    Properties {
        user_properties: properties.user_properties,
        ..Properties::default()
    }
}

/// Per-session handles on the traffic counters, resolved once.
struct Counters {
    packets_in: Counter,
    packets_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl Counters {
    fn new() -> Counters {
        use crate::metrics::{BYTES, PACKETS};
        Counters {
            packets_in: metrics::counter!(PACKETS, "direction" => "in"),
            packets_out: metrics::counter!(PACKETS, "direction" => "out"),
            bytes_in: metrics::counter!(BYTES, "direction" => "in"),
            bytes_out: metrics::counter!(BYTES, "direction" => "out"),
        }
    }
}

/// Where each filter of a forwarded SUBSCRIBE or UNSUBSCRIBE went: `Ok(i)` is its index in the
/// forwarded packet, `Err(code)` was refused here with that code.
type Slots = Vec<Result<usize, u8>>;

/// What the session does after a packet.
enum Flow {
    Continue,
    /// A clean end (DISCONNECT).
    Done,
}

struct Forwarder {
    protocol: Protocol,
    topics: TopicMap,
    aliases: HashMap<u16, String>,
    pending_subscribes: HashMap<u16, Slots>,
    pending_unsubscribes: HashMap<u16, Slots>,
    /// The filters this session holds, under the session and organisation caps.
    filters: SessionFilters,
    window: delivery::Window,
    /// The session's will (if it has one) is due when it ends: false after a DISCONNECT, unless
    /// its reason was "disconnect with will message".
    will_wanted: bool,
    /// How long the session is kept after the connection ends (a DISCONNECT may change it).
    expiry: Expiry,
    /// The CONNECT's Session Expiry Interval was 0: a DISCONNECT may not raise it (3.14.2.2.2).
    zero_expiry: bool,
    /// Packet ids of the client's QoS 1/2 PUBLISHes not yet acknowledged (its Receive Maximum
    /// quota, MQTT 5 only).
    receiving: HashSet<u16>,
    client_id: String,
    /// What the client subscribed to in this connection (see [`delivery`]).
    subscriptions: delivery::Subscriptions,
    /// The client's Maximum Packet Size (MQTT 5): nothing larger is sent to it (MQTT-3.1.2-24).
    maximum_packet_size: Option<usize>,
    /// Broker packet ids of QoS 2 deliveries sent to the client at QoS 1: its PUBACK becomes the
    /// broker's PUBREC.
    downgraded: HashSet<u16>,
    /// The broker's deliveries to acknowledge (PUBACK/PUBREC), in its order.
    broker_acks: delivery::InOrder,
    /// The broker's PUBRELs to complete (PUBCOMP), in its order.
    broker_comps: delivery::InOrder,
    /// Broker packet ids of QoS 2 deliveries the front-end answered with PUBREC itself (dropped
    /// or downgraded): the broker's PUBREL for them is answered here with PUBCOMP.
    released_here: HashSet<u16>,
    counters: Counters,
}

impl Forwarder {
    #[allow(clippy::too_many_arguments)]
    async fn run<S>(
        &mut self,
        client: &mut S,
        mut client_buf: BytesMut,
        broker: &mut BrokerSession,
        keep_alive: u16,
        (guard, held): (&SessionGuard, &ClientIdGuard),
        ctx: &Context,
    ) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // MQTT: a client silent for 1.5 × its keep-alive is gone; 0 disables the check.
        let client_grace =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let far_future = Duration::from_secs(86_400 * 365);
        let mut client_deadline = Instant::now() + client_grace.unwrap_or(far_future);
        let mut to_client = BytesMut::new();
        let mut to_broker = Vec::new();
        let mut from_broker = Vec::new();

        // Packets that arrived with the CONNECT (pipelined) are served first.
        let mut flow = self.client_packets(&mut client_buf, &mut to_client, &mut to_broker, ctx);
        loop {
            let done = match flow {
                Ok(Flow::Done) => true,
                Ok(Flow::Continue) => false,
                Err(error) => {
                    let _ = self.flush(client, &mut to_client, ctx).await;
                    let _ = broker.send(&mut to_broker).await;
                    return Err(error);
                }
            };
            broker
                .send(&mut to_broker)
                .await
                .map_err(SessionError::Broker)?;
            self.flush(client, &mut to_client, ctx).await?;
            if done {
                return Ok(());
            }
            flow = tokio::select! {
                read = client.read_buf(&mut client_buf) => match read? {
                    0 => return Ok(()),
                    n => {
                        self.counters.bytes_in.increment(n as u64);
                        if let Some(grace) = client_grace {
                            client_deadline = Instant::now() + grace;
                        }
                        self.client_packets(&mut client_buf, &mut to_client, &mut to_broker, ctx)
                    }
                },
                received = broker.recv(&mut from_broker) => match received {
                    Err(error) => {
                        tracing::debug!(%error, "broker link ended");
                        // 0x88 is a CONNACK code only (MQTT 5 §3.14.2.1): a DISCONNECT says 0x89.
                        self.disconnect(reason::SERVER_BUSY, &mut to_client);
                        let _ = self.flush(client, &mut to_client, ctx).await;
                        return Err(SessionError::BrokerClosed);
                    }
                    Ok(()) => self.broker_packets(&mut from_broker, &mut to_client, &mut to_broker),
                },
                _ = sleep_until(client_deadline) => {
                    self.disconnect(reason::KEEP_ALIVE_TIMEOUT, &mut to_client);
                    Err(SessionError::KeepAlive)
                }
                code = guard.revoked() => {
                    self.disconnect(code, &mut to_client);
                    Err(SessionError::Revoked)
                }
                _ = held.taken_over() => {
                    self.disconnect(reason::SESSION_TAKEN_OVER, &mut to_client);
                    Err(SessionError::TakenOver)
                }
            };
        }
    }

    async fn flush<S: AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        to_client: &mut BytesMut,
        ctx: &Context,
    ) -> Result<(), SessionError> {
        if to_client.is_empty() {
            return Ok(());
        }
        self.counters.bytes_out.increment(to_client.len() as u64);
        let result = write_within(client, to_client, ctx).await;
        to_client.clear();
        result
    }

    /// An MQTT 5 client is told why it is disconnected; a 3.1.1 client just sees the close.
    fn disconnect(&self, code: u8, to_client: &mut BytesMut) {
        if self.protocol == Protocol::V5 {
            let packet = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::default(),
            });
            let _ = codec::encode(&packet, Protocol::V5, to_client);
        }
    }

    fn client_packets(
        &mut self,
        buf: &mut BytesMut,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
        ctx: &Context,
    ) -> Result<Flow, SessionError> {
        loop {
            let packet = match codec::decode(buf, self.protocol, ctx.max_packet_size) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(Flow::Continue),
                Err(error) => {
                    self.disconnect(error.reason_code(), to_client);
                    return Err(SessionError::ClientCodec(error));
                }
            };
            self.counters.packets_in.increment(1);
            if let Flow::Done = self.client_packet(packet, to_client, to_broker)? {
                return Ok(Flow::Done);
            }
        }
    }

    fn client_packet(
        &mut self,
        packet: Packet,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        let forward = match packet {
            Packet::Publish(publish) => return self.client_publish(publish, to_client, to_broker),
            Packet::Subscribe(subscribe) => {
                return self.client_subscribe(subscribe, to_client, to_broker)
            }
            Packet::Unsubscribe(unsubscribe) => {
                return self.client_unsubscribe(unsubscribe, to_client, to_broker)
            }
            Packet::PingReq => {
                self.counters.packets_out.increment(1);
                encode_to(&Packet::PingResp, self.protocol, to_client)?;
                return Ok(Flow::Continue);
            }
            Packet::Disconnect(disconnect) => {
                if let Some(interval) = disconnect.properties.session_expiry_interval {
                    if self.zero_expiry && interval != 0 {
                        // Not a valid DISCONNECT: the will stays due.
                        return self.violation("session expiry raised from 0", to_client);
                    }
                    self.expiry = Expiry::from_interval(interval);
                }
                let disconnect = Disconnect {
                    reason: disconnect.reason,
                    properties: Properties {
                        reason_string: disconnect.properties.reason_string,
                        user_properties: disconnect.properties.user_properties,
                        ..Properties::default()
                    },
                };
                self.will_wanted = disconnect.reason == reason::DISCONNECT_WITH_WILL;
                to_broker.push(Packet::Disconnect(disconnect));
                return Ok(Flow::Done);
            }
            Packet::PubAck(ack) => {
                self.delivery_completed(to_client)?;
                let id = ack.packet_id;
                let ack = if self.downgraded.remove(&id) {
                    self.released_here.insert(id);
                    Packet::PubRec(ack_only(ack))
                } else {
                    Packet::PubAck(ack_only(ack))
                };
                self.broker_acks.ready(id, ack, to_broker);
                return Ok(Flow::Continue);
            }
            Packet::PubRec(ack) => {
                if ack.reason >= reason::UNSPECIFIED_ERROR {
                    self.delivery_completed(to_client)?;
                }
                let id = ack.packet_id;
                self.broker_acks
                    .ready(id, Packet::PubRec(ack_only(ack)), to_broker);
                return Ok(Flow::Continue);
            }
            Packet::PubRel(ack) => Packet::PubRel(ack_only(ack)),
            Packet::PubComp(ack) => {
                self.delivery_completed(to_client)?;
                let id = ack.packet_id;
                self.broker_comps
                    .ready(id, Packet::PubComp(ack_only(ack)), to_broker);
                return Ok(Flow::Continue);
            }
            Packet::Auth(_) => return self.violation("AUTH is not supported", to_client),
            Packet::Connect(_) => return self.violation("second CONNECT", to_client),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return self.violation("server-only packet from a client", to_client)
            }
        };
        to_broker.push(forward);
        Ok(Flow::Continue)
    }

    /// The client finished a QoS 1/2 delivery: send the next one the window held back.
    fn delivery_completed(&mut self, to_client: &mut BytesMut) -> Result<(), SessionError> {
        if let Some(next) = self.window.complete() {
            self.counters.packets_out.increment(1);
            encode_to(&Packet::Publish(next), self.protocol, to_client)?;
        }
        Ok(())
    }

    fn violation(
        &self,
        what: &'static str,
        to_client: &mut BytesMut,
    ) -> Result<Flow, SessionError> {
        self.disconnect(reason::PROTOCOL_ERROR, to_client);
        Err(SessionError::ClientViolation(what))
    }

    fn client_publish(
        &mut self,
        mut publish: Publish,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        if let Some(alias) = publish.properties.topic_alias.take() {
            if alias == 0 || alias > TOPIC_ALIAS_MAX {
                self.disconnect(reason::TOPIC_ALIAS_INVALID, to_client);
                return Err(SessionError::ClientViolation("topic alias out of range"));
            }
            if publish.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(topic) => publish.topic.clone_from(topic),
                    None => return self.violation("unknown topic alias", to_client),
                }
            } else {
                self.aliases.insert(alias, publish.topic.clone());
            }
        }
        match self.topics.publish(&publish.topic) {
            Ok(topic) => {
                if let Some(id) = publish.packet_id {
                    let over = self.receiving.len() >= usize::from(RECEIVE_MAXIMUM);
                    if self.protocol == Protocol::V5 && over && !self.receiving.contains(&id) {
                        self.disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED, to_client);
                        return Err(SessionError::ClientViolation("receive maximum exceeded"));
                    }
                    self.receiving.insert(id);
                }
                publish.topic = topic;
                publish.properties = publish_only(publish.properties);
                let (qos, retain) = (publish.qos, publish.retain);
                delivery::stamp(&mut publish.properties, qos, retain, Some(&self.client_id));
                to_broker.push(Packet::Publish(publish));
                Ok(Flow::Continue)
            }
            Err(_) => {
                metrics::counter!(crate::metrics::TOPICS_REFUSED, "kind" => "publish").increment(1);
                let refused_ack = |packet_id| Ack {
                    packet_id,
                    reason: reason::NOT_AUTHORIZED,
                    properties: Properties::default(),
                };
                match (self.protocol, publish.qos, publish.packet_id) {
                    (Protocol::V5, QoS::AtLeastOnce, Some(id)) => {
                        encode_to(&Packet::PubAck(refused_ack(id)), Protocol::V5, to_client)?;
                        Ok(Flow::Continue)
                    }
                    (Protocol::V5, QoS::ExactlyOnce, Some(id)) => {
                        encode_to(&Packet::PubRec(refused_ack(id)), Protocol::V5, to_client)?;
                        Ok(Flow::Continue)
                    }
                    _ => {
                        self.disconnect(reason::NOT_AUTHORIZED, to_client);
                        Err(SessionError::TopicRefused)
                    }
                }
            }
        }
    }

    /// The code for a filter refused here.
    fn refused_filter_code(&self) -> u8 {
        match self.protocol {
            Protocol::V311 => reason::V311_SUBACK_FAILURE,
            Protocol::V5 => reason::NOT_AUTHORIZED,
        }
    }

    /// The code for a filter past a cap (see [`crate::mqtt::filters`]).
    fn quota_filter_code(&self) -> u8 {
        match self.protocol {
            Protocol::V311 => reason::V311_SUBACK_FAILURE,
            Protocol::V5 => crate::mqtt::filters::QUOTA_EXCEEDED,
        }
    }

    fn client_subscribe(
        &mut self,
        subscribe: Subscribe,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        // The codec refused identifier 0 (a protocol error) already.
        let identifier = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut slots = Vec::with_capacity(subscribe.subscriptions.len());
        let mut forwarded = Vec::with_capacity(subscribe.subscriptions.len());
        for mut subscription in subscribe.subscriptions {
            match self.topics.filter(&subscription.filter) {
                Ok(filter) => match self.filters.admit(&filter) {
                    Ok(()) => {
                        subscription.filter = filter;
                        slots.push(Ok(forwarded.len()));
                        forwarded.push(subscription);
                    }
                    Err(_) => slots.push(Err(self.quota_filter_code())),
                },
                Err(_) => {
                    metrics::counter!(crate::metrics::TOPICS_REFUSED, "kind" => "filter")
                        .increment(1);
                    slots.push(Err(self.refused_filter_code()));
                }
            }
        }
        if forwarded.is_empty() {
            let suback = SubAck {
                packet_id: subscribe.packet_id,
                codes: slots.iter().map(|slot| slot.err().unwrap_or(0)).collect(),
                properties: Properties::default(),
            };
            encode_to(&Packet::SubAck(suback), self.protocol, to_client)?;
            return Ok(Flow::Continue);
        }
        for subscription in &forwarded {
            let filter = subscription.filter.clone();
            self.subscriptions
                .insert(filter, subscription.options, identifier);
        }
        self.pending_subscribes.insert(subscribe.packet_id, slots);
        let packet = Packet::Subscribe(Subscribe {
            packet_id: subscribe.packet_id,
            subscriptions: forwarded,
            properties: user_properties_only(subscribe.properties),
        });
        to_broker.push(packet);
        Ok(Flow::Continue)
    }

    fn client_unsubscribe(
        &mut self,
        unsubscribe: Unsubscribe,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        let mut slots = Vec::with_capacity(unsubscribe.filters.len());
        let mut forwarded = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            match self.topics.filter(filter) {
                Ok(filter) => {
                    self.filters.release(&filter);
                    slots.push(Ok(forwarded.len()));
                    forwarded.push(filter);
                }
                Err(_) => slots.push(Err(reason::NOT_AUTHORIZED)),
            }
        }
        if forwarded.is_empty() {
            let codes = match self.protocol {
                Protocol::V311 => Vec::new(),
                Protocol::V5 => vec![reason::NOT_AUTHORIZED; slots.len()],
            };
            let unsuback = UnsubAck {
                packet_id: unsubscribe.packet_id,
                codes,
                properties: Properties::default(),
            };
            encode_to(&Packet::UnsubAck(unsuback), self.protocol, to_client)?;
            return Ok(Flow::Continue);
        }
        for filter in &forwarded {
            self.subscriptions.remove(filter);
        }
        self.pending_unsubscribes
            .insert(unsubscribe.packet_id, slots);
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: unsubscribe.packet_id,
            filters: forwarded,
            properties: user_properties_only(unsubscribe.properties),
        });
        to_broker.push(packet);
        Ok(Flow::Continue)
    }

    fn broker_packets(
        &mut self,
        packets: &mut Vec<Packet>,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        for packet in packets.drain(..) {
            let to_send = match packet {
                Packet::Publish(publish) => self.delivery(publish, to_broker),
                Packet::SubAck(suback) => Some(self.merge_suback(suback)),
                Packet::UnsubAck(unsuback) => Some(self.merge_unsuback(unsuback)),
                Packet::Disconnect(disconnect) => {
                    if self.protocol == Protocol::V5 {
                        encode_to(&Packet::Disconnect(disconnect), Protocol::V5, to_client)?;
                    }
                    return Err(SessionError::BrokerClosed);
                }
                Packet::PubAck(ack) => {
                    self.receiving.remove(&ack.packet_id);
                    Some(Packet::PubAck(ack))
                }
                Packet::PubRec(ack) => {
                    if ack.reason >= reason::UNSPECIFIED_ERROR {
                        self.receiving.remove(&ack.packet_id);
                    }
                    Some(Packet::PubRec(ack))
                }
                Packet::PubComp(ack) => {
                    self.receiving.remove(&ack.packet_id);
                    Some(Packet::PubComp(ack))
                }
                Packet::PubRel(ack) => {
                    self.broker_comps.expect(ack.packet_id);
                    if self.released_here.remove(&ack.packet_id) {
                        let id = ack.packet_id;
                        self.broker_comps
                            .ready(id, Packet::PubComp(ack_only(ack)), to_broker);
                        None
                    } else {
                        Some(Packet::PubRel(ack))
                    }
                }
                // The link hands over nothing else (see `broker::from_router`).
                _ => None,
            };
            let to_send = to_send
                .and_then(|packet| delivery::fit(packet, self.protocol, self.maximum_packet_size));
            if let Some(packet) = to_send {
                self.counters.packets_out.increment(1);
                encode_to(&packet, self.protocol, to_client)?;
            }
        }
        Ok(Flow::Continue)
    }

    /// A broker delivery, mapped back into the client's view and judged against the session's
    /// subscriptions ([`delivery`]). One the client does not get — outside its view (impossible
    /// by construction of the filters), unwanted by its subscription options, or larger than its
    /// Maximum Packet Size (3.1.2.25: discarded as if delivered) — is settled with the broker
    /// here.
    fn delivery(&mut self, mut publish: Publish, to_broker: &mut Vec<Packet>) -> Option<Packet> {
        let origin = delivery::take(&mut publish.properties);
        let sent_qos = publish.qos;
        if let (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) = (sent_qos, publish.packet_id) {
            self.broker_acks.expect(id);
        }
        let Some(topic) = self.topics.deliver(&publish.topic) else {
            tracing::warn!(topic = %publish.topic, "delivery outside the client's view dropped");
            self.settle(sent_qos, publish.packet_id, to_broker);
            return None;
        };
        let plan = self.subscriptions.plan(
            &publish.topic,
            sent_qos,
            publish.retain,
            origin.as_ref(),
            &self.client_id,
        );
        let Some(plan) = plan else {
            self.settle(sent_qos, publish.packet_id, to_broker);
            return None;
        };
        publish.topic = topic;
        publish.properties.topic_alias = None;
        publish.retain = plan.retain;
        publish.properties.subscription_identifiers = plan.identifiers;
        if let Some(maximum) = self.maximum_packet_size {
            let fits = codec::publish_len(&publish, self.protocol).is_ok_and(|len| len <= maximum);
            if !fits {
                self.settle(sent_qos, publish.packet_id, to_broker);
                return None;
            }
        }
        match (sent_qos, plan.qos, publish.packet_id) {
            (QoS::ExactlyOnce, QoS::AtLeastOnce, Some(id)) => {
                self.downgraded.insert(id);
            }
            (_, QoS::AtMostOnce, id @ Some(_)) => {
                self.settle(sent_qos, id, to_broker);
                publish.packet_id = None;
            }
            _ => {}
        }
        publish.qos = plan.qos;
        self.window.admit(publish).map(Packet::Publish)
    }

    /// Acknowledges a delivery to the broker as if the client had received it (after every
    /// earlier one: [`delivery::InOrder`]).
    fn settle(&mut self, qos: QoS, packet_id: Option<u16>, to_broker: &mut Vec<Packet>) {
        let ack = |packet_id| Ack {
            packet_id,
            reason: 0,
            properties: Properties::default(),
        };
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.broker_acks
                    .ready(id, Packet::PubAck(ack(id)), to_broker)
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.released_here.insert(id);
                self.broker_acks
                    .ready(id, Packet::PubRec(ack(id)), to_broker);
            }
            _ => {}
        }
    }

    /// The broker's SUBACK covers the forwarded filters only: put the refused ones back in place,
    /// and translate codes for 3.1.1 (any failure is 0x80 there).
    fn merge_suback(&mut self, suback: SubAck) -> Packet {
        // rumqttd grants every filter it is handed (an invalid one ends the link instead).
        let refused = self.refused_filter_code();
        let translate = |code: u8| match self.protocol {
            Protocol::V311 if code >= reason::V311_SUBACK_FAILURE => reason::V311_SUBACK_FAILURE,
            _ => code,
        };
        let codes = match self.pending_subscribes.remove(&suback.packet_id) {
            Some(slots) => slots
                .iter()
                .map(|slot| match slot {
                    Ok(i) => suback.codes.get(*i).copied().map_or(refused, translate),
                    Err(code) => *code,
                })
                .collect(),
            None => suback.codes.iter().copied().map(translate).collect(),
        };
        Packet::SubAck(SubAck {
            packet_id: suback.packet_id,
            codes,
            properties: suback.properties,
        })
    }

    fn merge_unsuback(&mut self, unsuback: UnsubAck) -> Packet {
        let slots = self.pending_unsubscribes.remove(&unsuback.packet_id);
        let codes = match (self.protocol, slots) {
            (Protocol::V311, _) => Vec::new(),
            (Protocol::V5, Some(slots)) => slots
                .iter()
                .map(|slot| match slot {
                    Ok(i) => unsuback.codes.get(*i).copied().unwrap_or(0),
                    Err(code) => *code,
                })
                .collect(),
            (Protocol::V5, None) => unsuback.codes,
        };
        Packet::UnsubAck(UnsubAck {
            packet_id: unsuback.packet_id,
            codes,
            properties: unsuback.properties,
        })
    }
}
