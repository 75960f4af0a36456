//! The MQTTS accept loop: connection limits (in all and per source address), a deadline for the
//! first bytes before a handshake slot is taken, admission control for handshakes, backoff on
//! accept errors, one task per connection, and one log event plus one counter per refused
//! connection. [`admin`] is the admin listener's loop, under deadlines and a limit of its own.

pub mod admin;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::events::{Event, Kind};
use crate::metrics::{CONNECTIONS_ACCEPTED, CONNECTIONS_REFUSED};
use crate::mqtt::session::{self, Context};
use crate::registry;

/// Bounds on what the network can make the front-end hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// One host (or one NAT address) cannot take every connection.
    pub max_connections_per_source: usize,
    pub max_concurrent_handshakes: usize,
    /// A silent socket is closed after this, before it could hold a handshake slot.
    pub first_byte_timeout: Duration,
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
    let sources = Arc::new(Sources::new(limits.max_connections_per_source));
    let handshakes = Arc::new(Semaphore::new(limits.max_concurrent_handshakes));
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            (stream, peer) = backoff.accept(&listener) => {
                metrics::counter!(CONNECTIONS_ACCEPTED).increment(1);
                let Some(source) = sources.enter(peer.ip()) else {
                    refused(peer, None, "tcp", "max_connections_per_source");
                    continue;
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    refused(peer, None, "tcp", "max_connections");
                    continue;
                };
                tasks.spawn(connection(
                    stream,
                    peer,
                    ctx.clone(),
                    handshakes.clone(),
                    limits.clone(),
                    (permit, source),
                ));
            }
        }
    }
    tasks.shutdown().await;
}

/// Accepts with a growing pause after failures: out of descriptors or memory, the loop waits and
/// tries again rather than spin. Shared by the MQTTS and the admin listeners.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(5))
    }
}

impl Backoff {
    /// The next accepted connection; cancel-safe (a `select!` branch).
    async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    *self = Backoff::default();
                    return accepted;
                }
                Err(error) => {
                    tracing::warn!(%error, backoff = ?self.0, "accept failed");
                    tokio::time::sleep(self.0).await;
                    self.0 = (self.0 * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Connections open per source: an IPv4 address, or an IPv6 /64 (the smallest prefix a host is
/// given, so one host cannot take a cap per address of its /64). IPv4-mapped IPv6 addresses count
/// as their IPv4 address.
struct Sources {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its source until dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    fn new(max: usize) -> Sources {
        Sources {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when that source is at its cap.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = source(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&source(ip)).copied().unwrap_or(0)
    }
}

/// The source `ip` is counted under: itself for IPv4 (mapped or not), its /64 for IPv6.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Sources with nothing open are forgotten, so the table follows the connections.
        if let Entry::Occupied(mut entry) = open.entry(self.ip) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// One connection's task, from its first byte to its end. A function returning an async block,
/// not an `async fn`: an `async fn` would keep its arguments twice in the task (as they came and
/// as locals), and this task lives as long as the session (issue 13).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    handshakes: Arc<Semaphore>,
    limits: Limits,
    held: (OwnedSemaphorePermit, SourceSlot),
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        // Held until the connection ends.
        let _held = &held;
        let accepted = Instant::now();
        let deadline = accepted + limits.handshake_timeout;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "set_nodelay failed");
        }
        // A socket that never sends its ClientHello must not hold a handshake slot: wait for its
        // first byte without one. A closed or failing socket goes on, and fails the handshake as
        // it would.
        let first_bytes = deadline.min(accepted + limits.first_byte_timeout);
        if tokio::time::timeout_at(first_bytes, stream.peek(&mut [0u8; 1]))
            .await
            .is_err()
        {
            refused(peer, None, "tcp", "first_byte_timeout");
            return;
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
        let (mut stream, identity) =
            match Box::pin(registry::accept(stream, &ctx.registry, remaining)).await {
                Ok(accepted) => accepted,
                Err(refusal) => {
                    let reason = refusal.refusal.as_str();
                    refused(peer, refusal.sni.as_deref(), "tls", reason);
                    // An org's stream sees the refusals of handshakes that named it.
                    let snapshot = ctx.registry.snapshot();
                    if let Ok(entry) =
                        snapshot.route(ctx.registry.platform(), refusal.sni.as_deref())
                    {
                        let mut event =
                            Event::new(entry.org.id.as_str(), Kind::Refused, Some(peer));
                        event.reason = Some(reason.into());
                        event.stage = Some("tls".into());
                        event.sni = refusal.sni;
                        ctx.registry.events().publish(event);
                    }
                    return;
                }
            };
        drop(slot);
        match session::serve(&mut stream, &identity, &ctx).await {
            Ok(()) => tracing::debug!(%peer, "session closed"),
            Err(error) if error.is_connect_refusal() => {
                refused(peer, identity.sni.as_deref(), "connect", error.reason());
                let mut event = Event::new(identity.org.org.id.as_str(), Kind::Refused, Some(peer));
                event.reason = Some(error.reason().into());
                event.stage = Some("connect".into());
                event.sni = identity.sni.clone();
                // The identity the certificate names (the first, when it names several).
                event.identity = identity.claims.first().map(ToString::to_string);
                event.fingerprint_sha256 = Some(identity.fingerprint_sha256.clone());
                ctx.registry.events().publish(event);
            }
            Err(error) => tracing::debug!(%peer, reason = error.reason(), %error, "session ended"),
        }
    }
}

/// The one event and the one counter a refused connection gets.
fn refused(peer: SocketAddr, sni: Option<&str>, stage: &'static str, reason: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED, "stage" => stage, "reason" => reason).increment(1);
    tracing::warn!(%peer, sni = sni.unwrap_or(""), stage, reason, "connection refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns.
    fn returned<A, B, C, D, E, G, F>(_: fn(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection's task lives as long as its session, in one allocation: this future, inside
    /// tokio's task cell (its header and trailer, 128-byte aligned). Up to 3,968 bytes the cell
    /// is 4,096, jemalloc's 4 KiB size class; past it every session costs 5 KiB (issue 13: the
    /// future was 17,040 bytes). Measured 3,888 in a release build, 3,904 in a debug one.
    #[test]
    fn a_connection_task_fits_in_4_kib() {
        let size = returned(connection);
        assert!(size <= 3968, "the connection future is {size} bytes");
    }

    #[test]
    fn a_source_at_its_cap_is_refused_until_one_of_its_connections_ends() {
        let sources = Arc::new(Sources::new(2));
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let first = sources.enter(a);
        let second = sources.enter(a);
        assert!(first.is_some() && second.is_some());
        assert!(sources.enter(a).is_none(), "a third from the same source");
        assert!(sources.enter(b).is_some(), "another source is not affected");
        drop(first);
        assert!(sources.enter(a).is_some(), "a slot freed is taken again");
    }

    #[test]
    fn mapped_ipv6_counts_as_its_ipv4_source_and_empty_sources_are_forgotten() {
        let sources = Arc::new(Sources::new(1));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let mapped = IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let slot = sources.enter(v4);
        assert!(slot.is_some());
        assert!(sources.enter(mapped).is_none());
        drop(slot);
        assert_eq!(sources.open_from(v4), 0);
        assert!(sources
            .open
            .lock()
            .map(|open| open.is_empty())
            .unwrap_or(false));
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_ipv4_per_address() {
        let sources = Arc::new(Sources::new(1));
        let host: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let slot = sources.enter(host);
        assert!(slot.is_some());
        assert!(
            sources.enter(same_64).is_none(),
            "another address of the same /64 is the same source"
        );
        assert!(sources.enter(next_64).is_some(), "the next /64 is another");
        assert_eq!(sources.open_from(same_64), 1);
        let neighbour = IpAddr::from([192, 0, 2, 8]);
        assert!(sources.enter(IpAddr::from([192, 0, 2, 7])).is_some());
        assert!(sources.enter(neighbour).is_some(), "IPv4: per address");
        drop(slot);
        assert!(
            sources.enter(same_64).is_some(),
            "a slot freed is taken again"
        );
    }
}
