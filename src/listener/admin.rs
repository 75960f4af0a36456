//! The admin listener's accept loop: the axum router served by hyper's HTTP/1 connection, one
//! task per connection, under a connection limit and deadlines of its own, so idle or slow HTTP
//! clients cannot take the descriptors and memory the device listener needs. A connection is in
//! one [`Phase`] at a time, and each phase but answering has a deadline: a new connection and a
//! request being received must complete their headers within `header_timeout`, a request body
//! must arrive within `body_timeout`, a keep-alive connection may wait `idle_timeout` for its next
//! request. While a response is being produced or sent (an event stream for hours) nothing is cut
//! but a client that stops reading it: a write blocked for `write_timeout` closes the connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use super::Backoff;
use crate::metrics::ADMIN_CONNECTIONS_CLOSED;

/// At shutdown, connections get this long to finish what they are answering; then they are cut
/// (an event stream never finishes by itself).
const DRAIN: Duration = Duration::from_secs(5);

/// What the admin listener lets a client hold.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

/// Serves `router` until `shutdown` turns true, then lets connections finish within [`DRAIN`].
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::default();
    let stopping = shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            (stream, peer) = backoff.accept(&listener) => {
                // Over the limit the connection is dropped here, closed before it costs anything.
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    closed(peer, "max_connections");
                    continue;
                };
                let router = router.clone();
                tasks.spawn(connection(stream, peer, router, limits, stopping.clone(), permit));
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::info!(left = tasks.len(), "admin connections cut at shutdown");
    }
    tasks.shutdown().await;
}

/// The one counter (and, for a refusal at accept, the one log event) of a connection the listener
/// closed.
fn closed(peer: SocketAddr, reason: &'static str) {
    metrics::counter!(ADMIN_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
    if reason == "max_connections" {
        tracing::warn!(%peer, reason, "admin connection refused");
    } else {
        tracing::debug!(%peer, reason, "admin connection closed");
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new(limits));
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let activity = requests.clone();
        let router = router.clone();
        async move {
            activity.request();
            let arriving = activity.clone();
            let request =
                request.map(|body| Body::new(Tracked::new(body, arriving, Role::Request)));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // The connection is answering until the response body is sent (and dropped).
            Ok::<_, Infallible>(
                response.map(|body| Body::new(Tracked::new(body, activity, Role::Response))),
            )
        }
    });
    let mut builder = http1::Builder::new();
    // The deadlines are the watch below, phase by phase; hyper's own would also cut idle
    // keep-alive connections at the header deadline.
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let (reason, deadline) = activity.deadline();
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "admin connection ended");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                // A deadline moved later without a wake-up (a write went through) is looked at again.
                if activity.deadline().1.is_some_and(|due| due <= Instant::now()) {
                    // Dropping the connection closes it; whatever it was doing is abandoned.
                    closed(peer, reason);
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection is, for its deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted, nothing received yet: the first request's headers are due.
    New { since: Instant },
    /// A response was sent; keep-alive, waiting for the next request.
    Idle { since: Instant },
    /// Bytes of a request came: its headers are due.
    Header { since: Instant },
    /// The request is being answered while its body still comes.
    Body { until: Instant },
    /// The request is read; its response is being produced or sent.
    Answering,
}

/// A connection's phase, moved by its reads, its requests and its responses, and since when its
/// writes are blocked (a client not reading); `changed` wakes the watch when a deadline comes
/// nearer.
struct Activity {
    state: Mutex<State>,
    changed: Notify,
    limits: AdminLimits,
}

#[derive(Clone, Copy)]
struct State {
    phase: Phase,
    write_blocked: Option<Instant>,
}

impl Activity {
    fn new(limits: AdminLimits) -> Activity {
        Activity {
            state: Mutex::new(State {
                phase: Phase::New {
                    since: Instant::now(),
                },
                write_blocked: None,
            }),
            changed: Notify::new(),
            limits,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn moved(&self, change: impl FnOnce(Phase) -> Option<Phase>) {
        let mut state = self.state();
        if let Some(next) = change(state.phase) {
            state.phase = next;
            // One stored permit if the watch is not waiting yet: no change is missed.
            self.changed.notify_one();
        }
    }

    /// The next deadline and the reason it closes for (`None`: none, while answering freely).
    fn deadline(&self) -> (&'static str, Option<Instant>) {
        let state = *self.state();
        let limits = &self.limits;
        let (reason, phase_due) = match state.phase {
            Phase::New { since } | Phase::Header { since } => {
                ("header_timeout", Some(since + limits.header_timeout))
            }
            Phase::Idle { since } => ("idle_timeout", Some(since + limits.idle_timeout)),
            Phase::Body { until } => ("body_timeout", Some(until)),
            Phase::Answering => ("", None),
        };
        let write_due = state
            .write_blocked
            .map(|since| since + limits.write_timeout);
        match (phase_due, write_due) {
            (Some(phase), Some(write)) if write < phase => ("write_timeout", Some(write)),
            (None, Some(write)) => ("write_timeout", Some(write)),
            _ => (reason, phase_due),
        }
    }

    /// A write could not go through (`blocked`) or went through.
    fn wrote(&self, blocked: bool) {
        let mut state = self.state();
        match (blocked, state.write_blocked) {
            (true, None) => {
                state.write_blocked = Some(Instant::now());
                self.changed.notify_one();
            }
            (false, Some(_)) => state.write_blocked = None,
            _ => {}
        }
    }

    /// Bytes came: a request has begun, if none had.
    fn received(&self) {
        self.moved(|phase| match phase {
            Phase::Idle { .. } => Some(Phase::Header {
                since: Instant::now(),
            }),
            _ => None,
        });
    }

    /// hyper has read a request's headers; its body is due within the body deadline.
    fn request(&self) {
        let until = Instant::now() + self.limits.body_timeout;
        self.moved(|_| Some(Phase::Body { until }));
    }

    /// The response is sent: keep-alive, the next request may come.
    fn responded(&self) {
        self.moved(|_| {
            Some(Phase::Idle {
                since: Instant::now(),
            })
        });
    }

    /// The request body is in (or no longer wanted).
    fn body_done(&self) {
        self.moved(|phase| match phase {
            Phase::Body { .. } => Some(Phase::Answering),
            _ => None,
        });
    }
}

/// Which body a [`Tracked`] is.
enum Role {
    /// The request body: when it has all come (or is no longer wanted), its deadline ends.
    Request,
    /// The response body: when it is sent (dropped by hyper), the connection is idle.
    Response,
}

/// A request or response body that tells the connection where it is; otherwise the body itself.
struct Tracked<B> {
    body: B,
    activity: Arc<Activity>,
    role: Role,
}

impl<B: hyper::body::Body> Tracked<B> {
    fn new(body: B, activity: Arc<Activity>, role: Role) -> Tracked<B> {
        if matches!(role, Role::Request) && body.is_end_stream() {
            activity.body_done();
        }
        Tracked {
            body,
            activity,
            role,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) && matches!(self.role, Role::Request) {
            self.activity.body_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        match self.role {
            Role::Request => self.activity.body_done(),
            Role::Response => self.activity.responded(),
        }
    }
}

/// The connection's socket, telling the connection when bytes come.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdminLimits {
        AdminLimits {
            max_connections: 1,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(4),
        }
    }

    fn reason(activity: &Activity) -> &'static str {
        activity.deadline().0
    }

    #[test]
    fn each_phase_has_its_deadline_and_answering_has_none_until_a_write_blocks() {
        let activity = Arc::new(Activity::new(limits()));
        assert_eq!(reason(&activity), "header_timeout");
        // Bytes of the first request keep the deadline counted from accept.
        activity.received();
        assert_eq!(reason(&activity), "header_timeout");
        activity.request();
        assert_eq!(reason(&activity), "body_timeout");
        activity.body_done();
        assert_eq!(
            activity.deadline().1,
            None,
            "a response being sent is not cut"
        );
        activity.wrote(true);
        assert_eq!(reason(&activity), "write_timeout");
        activity.wrote(false);
        assert_eq!(activity.deadline().1, None);
        activity.responded();
        assert_eq!(reason(&activity), "idle_timeout");
        activity.received();
        assert_eq!(reason(&activity), "header_timeout");
    }

    #[test]
    fn the_nearer_of_a_phase_and_a_blocked_write_wins() {
        let activity = Arc::new(Activity::new(limits()));
        activity.request();
        // Body due in 2 s, a blocked write in 4 s: the body's deadline comes first.
        activity.wrote(true);
        assert_eq!(reason(&activity), "body_timeout");
    }
}
