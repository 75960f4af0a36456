//! The MQTTS accept loop: connection limits, admission control for handshakes, backoff on accept
//! errors, one task per connection, and one log event plus one counter per refused connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::events::{Event, Kind};
use crate::metrics::{CONNECTIONS_ACCEPTED, CONNECTIONS_REFUSED};
use crate::mqtt::session::{self, Context};
use crate::tls;

/// Bounds on what the network can make the front-end hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_concurrent_handshakes: usize,
    pub handshake_timeout: Duration,
}

/// Accepts until `shutdown` turns true, then stops accepting and closes every connection.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<Context>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_concurrent_handshakes));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    metrics::counter!(CONNECTIONS_ACCEPTED).increment(1);
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        refused(peer, None, "tcp", "max_connections");
                        continue;
                    };
                    tasks.spawn(connection(
                        stream,
                        peer,
                        ctx.clone(),
                        handshakes.clone(),
                        limits.handshake_timeout,
                        permit,
                    ));
                }
                Err(error) => {
                    // Out of descriptors or memory: wait, then try again, rather than spin.
                    tracing::warn!(%error, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    tasks.shutdown().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    handshakes: Arc<Semaphore>,
    handshake_timeout: Duration,
    _connection: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + handshake_timeout;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set_nodelay failed");
    }
    // Admission control: a storm waits for a handshake slot within its own deadline instead of
    // making every handshake slow.
    let slot = match tokio::time::timeout_at(deadline, handshakes.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            refused(peer, None, "tls", "admission_timeout");
            return;
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (stream, identity) = match tls::accept(stream, &ctx.registry, remaining).await {
        Ok(accepted) => accepted,
        Err(refusal) => {
            let reason = refusal.refusal.reason();
            refused(peer, refusal.sni.as_deref(), "tls", reason);
            // An org's stream sees the refusals of handshakes that named it.
            let snapshot = ctx.registry.snapshot();
            if let Ok(entry) =
                tls::route(&snapshot, ctx.registry.platform(), refusal.sni.as_deref())
            {
                let mut event = Event::new(entry.org.id.as_str(), Kind::Refused, Some(peer));
                event.reason = Some(reason);
                ctx.registry.events().publish(event);
            }
            return;
        }
    };
    drop(slot);
    let sni = identity.sni.clone();
    let org = identity.org.org.id.clone();
    match session::serve(stream, identity, &ctx).await {
        Ok(()) => tracing::debug!(%peer, "session closed"),
        Err(error) if error.is_connect_refusal() => {
            refused(peer, sni.as_deref(), "connect", error.reason());
            let mut event = Event::new(org.as_str(), Kind::Refused, Some(peer));
            event.reason = Some(error.reason());
            ctx.registry.events().publish(event);
        }
        Err(error) => tracing::debug!(%peer, reason = error.reason(), %error, "session ended"),
    }
}

/// The one event and the one counter a refused connection gets.
fn refused(peer: SocketAddr, sni: Option<&str>, stage: &'static str, reason: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED, "stage" => stage, "reason" => reason).increment(1);
    tracing::warn!(%peer, sni = sni.unwrap_or(""), stage, reason, "connection refused");
}
