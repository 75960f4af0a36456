//! One MQTT session: read the CONNECT under a deadline, admit it ([`admission`]: its client id
//! bound to the identity the TLS handshake proved) or answer its refusal with a CONNACK, then
//! forward packets both ways between the client and the embedded broker
//! ([`crate::mqtt::forward`]) until it ends. This module is the glue and the only one of the
//! three that touches the socket.
//!
//! The broker leg is an in-process link to rumqttd's router ([`crate::broker`]) carrying MQTT 5
//! packets as values, so 3.1.1 clients are translated. Topics are mapped into the org's namespace
//! on the way in and back on the way out; MQTT 5 topic aliases are resolved by the forwarder and
//! never reach the broker. Keep-alive is the front-end's alone (the link needs none), and so are
//! wills: a session that ends without DISCONNECT (or with reason 0x04) has its will published by
//! [`crate::broker::Broker::will`], after the MQTT 5 will delay.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

use crate::broker::{BrokerSession, Expiry, Memo};
use crate::cluster::Seat;
use crate::codec::{reason, CodecError, Protocol, Will};
use crate::events::{Event, Kind};
use crate::mqtt::admission::{self, Admitted};
use crate::mqtt::delivery::Subscriptions;
use crate::mqtt::forward::{encode_to, Flow, Forwarder, Rules};
use crate::refusal::Refusal;
use crate::registry::{ClientIdGuard, PeerIdentity, SessionGuard, Signal};

pub use crate::mqtt::{Context, SessionError};

/// How long a finished session waits for its client's TLS close.
const CLIENT_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long, after its DISCONNECT, the server waits at most for an MQTT 5 client to stop sending
/// and close, and how long the client may be silent meanwhile (see [`close`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_QUIET: Duration = Duration::from_millis(250);

/// A session that moved nothing for this long gives back the memory of its buffers (they grow
/// again with its next packet): an idle device costs only what its connection must hold.
const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Serves one authenticated connection until it ends. `Ok` is a clean end (DISCONNECT or close).
///
/// Only the loop's state stays in the connection's task while the session is open: the
/// admission before it ([`open`]) and the end after it ([`Open::end`]) run boxed, so their larger
/// futures take memory only while they run, not in every idle session (guarded by
/// `tests/idle_memory.rs`). `serve` and [`forward`] return async blocks rather than being
/// `async fn`s, which would hold their arguments twice for the session's life.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
pub fn serve<'a, S>(
    client: &'a mut S,
    peer: &'a PeerIdentity,
    ctx: &'a Context,
) -> impl Future<Output = Result<(), SessionError>> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let mut client_buf = BytesMut::with_capacity(1024);
        let mut session = Box::pin(open(client, &mut client_buf, peer, ctx)).await?;
        let result = forward(
            &mut session.forwarder,
            client,
            client_buf,
            &mut session.broker,
            session.keep_alive,
            (
                &session.guard,
                &session.held,
                session.will.as_deref().map(|will| will.0.topic.as_str()),
            ),
            ctx,
        )
        .await;
        Box::pin(session.end(client, result, peer, ctx)).await
    }
}

/// A session admitted and told so: what its loop and its end need.
struct Open {
    forwarder: Forwarder,
    broker: BrokerSession,
    protocol: Protocol,
    keep_alive: u16,
    /// The will, with its delay (boxed: most of the time it waits, in every session).
    will: Option<Box<(Will, Duration)>>,
    client_id: String,
    identity: String,
    live: metrics::Gauge,
    guard: SessionGuard,
    held: ClientIdGuard,
    _seat: Seat,
}

/// Reads the CONNECT under its deadline and admits it (OCSP asked, a takeover waited for), or
/// answers its refusal; then tells the client, the event stream and the device registry.
async fn open<S>(
    client: &mut S,
    client_buf: &mut BytesMut,
    peer: &PeerIdentity,
    ctx: &Context,
) -> Result<Open, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connect = match tokio::time::timeout(
        ctx.connect_timeout,
        admission::read_connect(client, client_buf, ctx.max_packet_size),
    )
    .await
    {
        Err(_) => return Err(SessionError::ConnectTimeout),
        Ok(Err(SessionError::ClientCodec(CodecError::UnsupportedProtocol(_)))) => {
            return Err(refuse(client, Protocol::V311, Refusal::UnsupportedProtocol, ctx).await);
        }
        Ok(Err(SessionError::ClosedBeforeConnect)) => {
            // A clean close (TLS close_notify) is answered with ours (RFC 8446 §6.1).
            let _ = tokio::time::timeout(ctx.write_timeout, client.shutdown()).await;
            return Err(SessionError::ClosedBeforeConnect);
        }
        Ok(result) => result?,
    };
    let protocol = connect.protocol;
    let admitted = match admission::admit(connect, peer, ctx).await {
        Ok(admitted) => admitted,
        Err(refusal) => return Err(refuse(client, protocol, refusal, ctx).await),
    };
    let mut out = BytesMut::new();
    let sent = match encode_to(
        &admission::connack(&admitted, ctx.max_packet_size, ctx.max_keep_alive),
        protocol,
        &mut out,
    ) {
        Ok(()) => write_within(client, &out, ctx).await,
        Err(error) => Err(error),
    };
    let Admitted {
        connect,
        client_id,
        device,
        topics,
        will,
        assigned: _,
        expiry,
        guard,
        held,
        seat,
        mut broker,
    } = admitted;
    if let Err(error) = sent {
        broker.close().await;
        return Err(error);
    }

    let org = peer.org.org.id.as_str();
    let live = metrics::gauge!(crate::metrics::SESSIONS_LIVE);
    live.increment(1.0);
    let subscriptions = broker
        .take_memo()
        .and_then(|memo| memo.downcast::<Subscriptions>().ok())
        .map(|subscriptions| *subscriptions)
        .unwrap_or_default();
    let session = Open {
        forwarder: Forwarder::new(
            &connect,
            client_id.clone(),
            topics,
            ctx.filters.open(
                org,
                &client_id,
                connect.clean_start,
                broker.session_present(),
                expiry != Expiry::Now,
            ),
            subscriptions,
            expiry,
            Rules {
                max_packet_size: ctx.max_packet_size,
                acknowledge_refused_v311: ctx.acknowledge_refused_v311,
            },
        ),
        broker,
        protocol,
        keep_alive: admission::keep_alive(&connect, ctx.max_keep_alive).0,
        will: will.map(|will| Box::new((will, admission::will_delay(&connect)))),
        client_id,
        identity: device.identity.to_string(),
        live,
        guard,
        held,
        _seat: seat,
    };
    ctx.registry
        .events()
        .publish(session.event(Kind::Connect, peer));
    ctx.devices.seen(crate::store::DeviceSeen {
        org: peer.org.org.id.clone(),
        identity: session.identity.clone(),
        fingerprint_sha256: device.fingerprint_sha256,
        ca_id: device.ca_id,
        serial: device.serial,
        not_after: peer.not_after,
        at: time::OffsetDateTime::now_utc(),
        claims: device.claims.iter().map(ToString::to_string).collect(),
        also_ca_ids: device.also_ca_ids,
    });
    tracing::debug!(client_id = %session.client_id, org, resumed = peer.resumed, "session open");
    Ok(session)
}

impl Open {
    fn event(&self, kind: Kind, peer: &PeerIdentity) -> Event {
        let mut event = Event::new(peer.org.org.id.as_str(), kind, peer.addr);
        event.client_id = Some(self.client_id.clone());
        event.identity = Some(self.identity.clone());
        event
    }

    /// Ends the session the loop ended with `result`: the broker side kept or closed as its
    /// expiry says, the will published, the client id freed, then the client closed.
    async fn end<S>(
        self,
        client: &mut S,
        result: Result<(), SessionError>,
        peer: &PeerIdentity,
        ctx: &Context,
    ) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.live.decrement(1.0);
        let mut ended = self.event(Kind::Disconnect, peer);
        ended.reason = Some(
            match &result {
                Ok(()) => "normal",
                Err(error) => error.reason(),
            }
            .into(),
        );
        ctx.registry.events().publish(ended);
        let Open {
            forwarder,
            mut broker,
            protocol,
            will,
            client_id,
            guard,
            held,
            ..
        } = self;
        let mut ended = forwarder.end();
        // A session taken over lives on in its successor (MQTT-3.1.4-3, 3.1.2.4): the newer
        // CONNECT saw it exist, whatever its expiry; the successor decides what becomes of it.
        // Taken over on another node, it lives on there only in a broker the nodes share
        // (upstream: ending it here as its expiry says would discard what the successor resumed).
        let expiry = match result {
            Err(SessionError::TakenOver) => Expiry::Never,
            Err(SessionError::TakenOverElsewhere) if broker.shared() => Expiry::Never,
            _ => ended.expiry,
        };
        broker.set_expiry(expiry);
        // Counted on only where rumqttd really keeps the session (a takeover's `Never` cannot
        // make a session opened to end with its link kept).
        ended
            .filters
            .keep(broker.kept() && expiry != Expiry::Now, ended.policy);
        // Only subscriptions that ask more than rumqttd keeps are worth keeping with the session.
        let subscriptions = ended.subscriptions;
        broker.keep_memo(
            subscriptions
                .asks_more()
                .then(|| Box::new(subscriptions) as Memo),
        );
        broker.close().await;
        // The session's filters are released (or kept) before its client id is free again.
        drop(ended.filters);
        if let (Some(will), true) = (will, ended.will_wanted) {
            let (will, delay) = *will;
            ctx.broker.will(&client_id, will, delay).await;
        }
        drop(held);
        drop(guard);
        // Last, so that a successor, a will and the broker never wait for the client.
        // An MQTT 5 session the server ended was told why (DISCONNECT); a 3.1.1 one cannot be.
        let told = protocol == Protocol::V5 && result.is_err();
        close(client, told).await;
        result
    }
}

/// Closes the client's connection gracefully (close_notify, FIN) so that a last DISCONNECT is
/// read, not lost to a reset. When the client was sent a DISCONNECT (`told`), what it still sends
/// (packets in flight when it was told, acks for what it reads before the DISCONNECT) is read and
/// discarded first, until the client closes, is silent for [`LINGER_QUIET`] or [`LINGER`] has
/// passed: a socket closed under a client still writing answers it with resets, and its writes
/// fail before it reads why.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(client: &mut S, told: bool) {
    if told {
        let drain = async {
            let mut sink = [0u8; 2048];
            while let Ok(Ok(n)) = tokio::time::timeout(LINGER_QUIET, client.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
    let _ = tokio::time::timeout(CLIENT_CLOSE_WAIT, client.shutdown()).await;
}

/// Answers a refused CONNECT with its CONNACK, best effort, then the caller drops the
/// connection; the error the session ends with.
async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    protocol: Protocol,
    refusal: Refusal,
    ctx: &Context,
) -> SessionError {
    let mut out = BytesMut::new();
    if encode_to(
        &admission::refusal_connack(refusal, protocol),
        protocol,
        &mut out,
    )
    .is_ok()
    {
        let _ = write_within(client, &out, ctx).await;
        let _ = tokio::time::timeout(ctx.write_timeout, client.shutdown()).await;
    }
    SessionError::Refused(refusal)
}

/// Moves bytes and packets between the client, the forwarder and the broker until the session
/// ends: the client's keep-alive, a registry change, an operator and a takeover end it here.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
fn forward<'a, S>(
    forwarder: &'a mut Forwarder,
    client: &'a mut S,
    mut client_buf: BytesMut,
    broker: &'a mut BrokerSession,
    keep_alive: u16,
    (guard, held, will): (&'a SessionGuard, &'a ClientIdGuard, Option<&'a str>),
    ctx: &'a Context,
) -> impl Future<Output = Result<(), SessionError>> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        // MQTT: a client silent for 1.5 × its keep-alive is gone; 0 disables the check.
        let client_grace =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let far_future = Duration::from_secs(86_400 * 365);
        let mut client_deadline = Instant::now() + client_grace.unwrap_or(far_future);
        let mut to_client = BytesMut::new();
        let mut to_broker = Vec::new();
        let mut from_broker = Vec::new();
        // When the buffers are given back, unless something moves before (`None`: given back,
        // until something moves).
        let mut idle_at = Some(Instant::now() + IDLE_AFTER);

        // Packets that arrived with the CONNECT (pipelined) are served first.
        let mut flow = forwarder.client_packets(&mut client_buf, &mut to_client, &mut to_broker);
        loop {
            let done = match flow {
                Ok(Flow::Done) => true,
                Ok(Flow::Continue) => false,
                Err(error) => {
                    let _ = flush(forwarder, client, &mut to_client, ctx).await;
                    let _ = broker.send(&mut to_broker).await;
                    return Err(error);
                }
            };
            broker
                .send(&mut to_broker)
                .await
                .map_err(SessionError::Broker)?;
            flush(forwarder, client, &mut to_client, ctx).await?;
            if done {
                return Ok(());
            }
            if forwarder.holds_changed() {
                guard.refused_by(|policy| !forwarder.keeps_under(policy, will));
            }
            let wake_at = idle_at.map_or(client_deadline, |idle| idle.min(client_deadline));
            flow = tokio::select! {
                read = client.read_buf(&mut client_buf) => match read? {
                    0 => return Ok(()),
                    n => {
                        idle_at = Some(Instant::now() + IDLE_AFTER);
                        forwarder.counters().bytes_in.increment(n as u64);
                        if let Some(grace) = client_grace {
                            client_deadline = Instant::now() + grace;
                        }
                        forwarder.client_packets(&mut client_buf, &mut to_client, &mut to_broker)
                    }
                },
                received = broker.recv(&mut from_broker) => match received {
                    Err(error) => {
                        tracing::debug!(%error, "broker link ended");
                        // 0x88 is a CONNACK code only (MQTT 5 §3.14.2.1): a DISCONNECT says 0x89.
                        forwarder.disconnect(reason::SERVER_BUSY, &mut to_client);
                        let _ = flush(forwarder, client, &mut to_client, ctx).await;
                        return Err(SessionError::BrokerClosed);
                    }
                    Ok(()) => {
                        idle_at = Some(Instant::now() + IDLE_AFTER);
                        forwarder.broker_packets(&mut from_broker, &mut to_client, &mut to_broker)
                    }
                },
                _ = sleep_until(wake_at) => {
                    if Instant::now() >= client_deadline {
                        forwarder.disconnect(reason::KEEP_ALIVE_TIMEOUT, &mut to_client);
                        Err(SessionError::KeepAlive)
                    } else {
                        idle_at = None;
                        // A partial packet waiting for the rest keeps its buffer.
                        if client_buf.is_empty() {
                            client_buf = BytesMut::new();
                        }
                        to_client = BytesMut::new();
                        to_broker = Vec::new();
                        from_broker = Vec::new();
                        forwarder.idle();
                        broker.idle();
                        Ok(Flow::Continue)
                    }
                }
                signal = guard.signalled() => match signal {
                    // Taken over on another node (see `crate::cluster`); the device is told where
                    // its session went.
                    Signal::Close(code @ reason::SESSION_TAKEN_OVER) => {
                        let why = "session taken over by a connection on another node";
                        forwarder.disconnect_saying(code, Some(why), &mut to_client);
                        Err(SessionError::TakenOverElsewhere)
                    }
                    Signal::Close(code) => {
                        forwarder.disconnect(code, &mut to_client);
                        Err(SessionError::Revoked)
                    }
                    // The org's topic policy changed: the session goes on under it, or ends if it
                    // holds a filter or a will the policy refuses or would route elsewhere.
                    Signal::Follow(policy) if forwarder.keeps_under(policy, will) => {
                        forwarder.set_policy(policy);
                        guard.refused_by(|policy| !forwarder.keeps_under(policy, will));
                        Ok(Flow::Continue)
                    }
                    Signal::Follow(policy) => {
                        // Its will is not published either where the policy refuses it.
                        if will.is_some_and(|topic| !forwarder.keeps_topic(policy, topic)) {
                            forwarder.cancel_will();
                        }
                        metrics::counter!(
                            crate::metrics::SESSIONS_REVOKED,
                            "reason" => Refusal::TopicPolicy.as_str()
                        )
                        .increment(1);
                        let why = Refusal::TopicPolicy.sentence();
                        forwarder.disconnect_saying(reason::NOT_AUTHORIZED, Some(why), &mut to_client);
                        Err(SessionError::Revoked)
                    }
                },
                _ = held.taken_over() => {
                    forwarder.disconnect(reason::SESSION_TAKEN_OVER, &mut to_client);
                    Err(SessionError::TakenOver)
                }
            };
        }
    }
}

/// Writes what is due to the client, counted, within the write deadline.
async fn flush<S: AsyncWrite + Unpin>(
    forwarder: &Forwarder,
    client: &mut S,
    to_client: &mut BytesMut,
    ctx: &Context,
) -> Result<(), SessionError> {
    if to_client.is_empty() {
        return Ok(());
    }
    forwarder
        .counters()
        .bytes_out
        .increment(to_client.len() as u64);
    let result = write_within(client, to_client, ctx).await;
    to_client.clear();
    result
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
