//! A server-side TLS stream over rustls's unbuffered connection: the session reads and writes
//! plaintext through it as through any `AsyncRead + AsyncWrite`, and an idle connection holds no
//! buffer at all. rustls's buffered connection keeps a 4 KiB read buffer per connection for its
//! whole life, a quarter of an idle session's memory (issue 13); here the bytes read from the
//! socket live in a buffer made when the socket is readable and dropped once rustls has taken every
//! record in it, and the same goes for what waits to be written and for plaintext the reader has
//! not taken yet.
//!
//! The protocol is rustls's own state machine (handshake, alerts, key updates, close_notify);
//! this module only moves bytes between it and the socket. Every bit of progress is kept in the
//! struct, never in a future, so a read or write dropped by a `select!` loses nothing.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::server::ServerConnectionData;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes asked of the socket per read; a record needing more gets more.
const READ_SIZE: usize = 8 * 1024;
/// The largest record a peer may send: a 5-byte header and 2^14 + 2,048 bytes of ciphertext
/// (RFC 5246 §6.2.3; rustls's own limit).
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;
/// Ciphertext held unprocessed at most: a 64 KiB handshake message being joined (a client chain
/// of several certificates; rustls refuses larger ones) and one record beyond it; more is a peer
/// that is not speaking TLS.
const INCOMING_CAP: usize = 64 * 1024 + MAX_RECORD;
/// Plaintext encrypted per write, and ciphertext queued before a write waits for the socket.
const WRITE_CHUNK: usize = 64 * 1024;
/// Room guessed per record for its header, tag and padding (rustls says when it needs more).
const RECORD_OVERHEAD: usize = 64;

/// A server TLS connection on a TCP socket.
pub struct Stream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read from the socket; `incoming[consumed..]` is what rustls has not taken yet.
    incoming: Vec<u8>,
    consumed: usize,
    /// Plaintext decrypted but not read yet: `plain[plain_at..]`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext to send: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// The peer sent close_notify: reads end once `plain` is drained.
    peer_closed: bool,
    /// Our close_notify is queued (or the connection is closed both ways).
    closing: bool,
    /// The connection failed: rustls is not asked again (it does not remember every error, and
    /// the bytes that failed would be read again, and a second alert sent).
    failed: Option<io::ErrorKind>,
}

/// What a turn of rustls's state machine is asked for.
enum Intent<'a, 'b> {
    /// Complete the handshake.
    Handshake,
    /// Plaintext into this buffer (what does not fit waits in `plain`).
    Read(&'a mut ReadBuf<'b>),
    /// Encrypt this plaintext.
    Write(&'a [u8]),
    /// Queue close_notify.
    Close,
}

/// What a turn of rustls's state machine did.
enum Step {
    /// Something moved: turn again.
    Again,
    /// Nothing more without more bytes from the peer; `established` once the handshake is done.
    Input { established: bool },
    /// The plaintext (this many bytes of it) or the close_notify is encrypted into `out`.
    Wrote(usize),
    /// Closed both ways.
    Closed,
}

impl Stream {
    /// Starts a connection under `conn` with the bytes already read from `io` (the ClientHello),
    /// and completes its handshake (under the caller's deadline: a peer that stops sending
    /// leaves it waiting).
    pub async fn handshake(
        io: TcpStream,
        conn: UnbufferedServerConnection,
        read: Vec<u8>,
    ) -> Result<Self, io::Error> {
        let mut stream = Self {
            io,
            conn,
            incoming: read,
            consumed: 0,
            plain: Vec::new(),
            plain_at: 0,
            out: Vec::new(),
            sent: 0,
            peer_closed: false,
            closing: false,
            failed: None,
        };
        poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The connection's TLS state (peer certificates, protocol, handshake kind).
    pub fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.turn(Intent::Handshake)? {
                Step::Again => {}
                Step::Input { established } => {
                    // Our flight goes out before we wait for the peer's.
                    ready!(self.poll_send(cx))?;
                    if established {
                        return Poll::Ready(Ok(()));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                // Both sides closed before the handshake completed.
                Step::Wrote(_) | Step::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
                }
            }
        }
    }

    /// One turn of rustls's state machine over what has been read, without I/O: handshake records
    /// and alerts it queues go to `out`, plaintext to the reader. After an error the stream is
    /// failed for good: its alert gets one attempt to go out, and every later turn fails.
    fn turn(&mut self, intent: Intent<'_, '_>) -> io::Result<Step> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "the TLS connection failed"));
        }
        let turned = self.process(intent);
        if let Err(error) = &turned {
            self.failed = Some(error.kind());
            self.incoming = Vec::new();
            self.consumed = 0;
            if let Ok(n) = self.io.try_write(&self.out[self.sent..]) {
                self.sent += n;
            }
        }
        turned
    }

    fn process(&mut self, intent: Intent<'_, '_>) -> io::Result<Step> {
        let UnbufferedStatus { mut discard, state } = self
            .conn
            .process_tls_records(&mut self.incoming[self.consumed..]);
        let step = match state {
            Err(error) => {
                self.consumed += discard;
                self.queue_alert();
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                let mut into = match intent {
                    Intent::Read(buf) => Some(buf),
                    _ => None,
                };
                while let Some(record) = records.next_record() {
                    let record =
                        record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    discard += record.discard;
                    let direct = into.as_mut().map_or(0, |buf| {
                        let n = buf.remaining().min(record.payload.len());
                        buf.put_slice(&record.payload[..n]);
                        n
                    });
                    self.plain.extend_from_slice(&record.payload[direct..]);
                }
                Step::Again
            }
            Ok(ConnectionState::EncodeTlsData(mut record)) => {
                encode(&mut self.out, &mut record)?;
                Step::Again
            }
            // What was encoded is in `out`, which is sent before anything waits for the peer.
            Ok(ConnectionState::TransmitTlsData(sent)) => {
                sent.done();
                Step::Again
            }
            Ok(ConnectionState::BlockedHandshake) => Step::Input { established: false },
            // The server may write before the client's Finished (half-RTT data, off here): the
            // handshake is done only once rustls says so.
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match intent {
                Intent::Write(data) => {
                    let data = &data[..data.len().min(WRITE_CHUNK)];
                    let records = data.len() / (16 * 1024) + 1;
                    append(
                        &mut self.out,
                        data.len() + records * RECORD_OVERHEAD,
                        |buf| traffic.encrypt(data, buf).map_err(insufficient),
                    )?;
                    Step::Wrote(data.len())
                }
                Intent::Close => {
                    append(&mut self.out, RECORD_OVERHEAD, |buf| {
                        traffic.queue_close_notify(buf).map_err(insufficient)
                    })?;
                    self.closing = true;
                    Step::Wrote(0)
                }
                Intent::Handshake | Intent::Read(_) => Step::Input {
                    established: !self.conn.is_handshaking(),
                },
            },
            Ok(ConnectionState::PeerClosed) => {
                self.peer_closed = true;
                Step::Again
            }
            Ok(ConnectionState::Closed) => {
                self.closing = true;
                Step::Closed
            }
            // Early data is off (`max_early_data_size` 0), and there is no other state.
            Ok(_) => return Err(io::Error::other("unexpected TLS state")),
        };
        self.consumed += discard;
        if self.consumed == self.incoming.len() {
            // Every record is taken: no read buffer until the socket is readable again.
            self.incoming = Vec::new();
            self.consumed = 0;
        }
        Ok(step)
    }

    /// After an error, the records rustls queued (the alert that tells the peer why, and a key
    /// update's answer that may come before it) go to `out`; rustls is asked only while it has
    /// some, since a turn past them would read the bytes that failed again.
    fn queue_alert(&mut self) {
        while self.conn.wants_write() {
            let UnbufferedStatus { state, .. } = self
                .conn
                .process_tls_records(&mut self.incoming[self.consumed..]);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    if encode(&mut self.out, &mut record).is_err() {
                        return;
                    }
                }
                // Plaintext decrypted before the error is still the reader's.
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(Ok(record)) = records.next_record() {
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                _ => return,
            }
        }
    }

    /// Reads what the socket has into `incoming`, allocating it only now that there is something
    /// to read. `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() - self.consumed >= INCOMING_CAP {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record or handshake message too large",
            )));
        }
        if self.consumed > 0 {
            self.incoming.drain(..self.consumed);
            self.consumed = 0;
        }
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            self.incoming.reserve(READ_SIZE);
            match self.io.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends `out` to the socket; once all of it is sent its buffer is dropped.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.sent += n,
            }
        }
        self.out = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends what is queued if the socket takes it now; a socket that does not is waited for by
    /// the next write or flush.
    fn send_now(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Serves plaintext already decrypted, dropping its buffer once it is all read.
    fn read_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain_at == self.plain.len() {
            return false;
        }
        let n = buf.remaining().min(self.plain.len() - self.plain_at);
        buf.put_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        true
    }
}

/// Appends what `write` puts into a buffer of `guess` bytes to `out`, retrying with the size it
/// asks for (`Err(Some(size))`) when that was too small.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let at = out.len();
    let mut room = guess;
    loop {
        out.resize(at + room, 0);
        match write(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => {
                out.truncate(at);
                return Err(io::Error::other("TLS record could not be encoded"));
            }
        }
    }
}

/// Appends a record rustls queued itself (a handshake message, an alert) to `out`.
fn encode(
    out: &mut Vec<u8>,
    record: &mut EncodeTlsData<'_, ServerConnectionData>,
) -> io::Result<()> {
    append(out, RECORD_OVERHEAD, |buf| {
        record.encode(buf).map_err(|e| match e {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(required_size)
            }
            _ => None,
        })
    })
}

fn insufficient(error: EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        _ => None,
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_plain(buf) || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // Records rustls queued while reading (a key update's answer, an alert) go out.
            this.send_now(cx)?;
            let before = buf.filled().len();
            match this.turn(Intent::Read(buf))? {
                Step::Again if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Step::Again => {}
                Step::Input { .. } => {
                    if ready!(this.poll_fill(cx))? == 0 {
                        // The socket closed without close_notify: a truncation, as the buffered
                        // connection reports it.
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Step::Closed | Step::Wrote(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() - this.sent >= WRITE_CHUNK {
            ready!(this.poll_send(cx))?;
        }
        loop {
            match this.turn(Intent::Write(data))? {
                Step::Again => {}
                Step::Wrote(n) => {
                    this.send_now(cx)?;
                    return Poll::Ready(Ok(n));
                }
                Step::Input { .. } | Step::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.closing {
            match this.turn(Intent::Close) {
                Ok(Step::Again) => {}
                // Not established, or broken: nothing to tell the peer, the socket still closes.
                _ => this.closing = true,
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
