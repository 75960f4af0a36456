//! TLS session tickets that open on every node, and only for the org and the trust they were made
//! under (DESIGN §6, §12).
//!
//! Each org has one random key per rotation epoch (`unix time / period`), kept in the store by
//! the layer above (TLS reads no store: the source [`TicketKeys::new`] is given brings the keys
//! down). Every node follows the same schedule without coordination: a node seals tickets with
//! the current epoch's key and opens tickets of the previous, current and next epoch (the next
//! one for a peer whose clock is a little ahead); older keys are forgotten, so a ticket lives one
//! to two periods.
//!
//! A ticket is `epoch (8, big endian) || nonce (12) || AES-256-GCM(session) || tag (16)`; the AAD
//! is the epoch and the *binding* of the `ServerConfig` (a digest of the org's trust: its active
//! CAs, their CRLs, the stale-CRL rule). So a ticket never opens under another org (another key),
//! nor after the org's trust changed (another binding): the device then makes a full handshake
//! and its chain is verified against the current CAs.
//!
//! Keys are held in memory and read from the source on a blocking thread, never in a handshake:
//! once per epoch (when the epoch turns, or when the org is first used), and after a failure at
//! most once per [`RETRY`]. A ticket naming an epoch outside the window is refused without a
//! look-up, so forged tickets cannot make a node query its store. While the store cannot be
//! reached the node goes on with the keys it holds; without a key it issues no ticket and opens
//! none, so devices make full handshakes: never an error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use rustls::server::ProducesTickets;

/// Length of a ticket key.
pub const KEY_LEN: usize = 32;
/// Wait after a failed load before the next one (the store is down, say).
pub const RETRY: Duration = Duration::from_secs(10);

const EPOCH_LEN: usize = 8;
const TAG_LEN: usize = 16;

/// Where an org's ticket keys come from: given an epoch, the org's keys of epochs
/// `epoch - 1 ..= epoch + 1` as `(epoch, key)`, those of `epoch` and `epoch + 1` created when
/// missing, the same on every node. Blocking: called on a blocking thread, never in a handshake.
type Source = Box<dyn Fn(i64) -> Result<Vec<(i64, [u8; KEY_LEN])>, String> + Send + Sync>;

/// One org's ticket keys on this node; outlives the org's `ServerConfig`s, which each seal and
/// open tickets with it under their own binding ([`TicketKeys::ticketer`]).
pub struct TicketKeys {
    /// The rotation period, in seconds.
    period: u64,
    source: Source,
    held: ArcSwap<Vec<(i64, Arc<LessSafeKey>)>>,
    loads: Mutex<Loads>,
}

/// Which epoch the keys were last loaded for, and when a load was last started (unix seconds).
#[derive(Default)]
struct Loads {
    loaded: Option<i64>,
    started: Option<(i64, u64)>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// An org's keyring, empty until its first load. `period` is at least a second.
    pub fn new(
        period: Duration,
        source: impl Fn(i64) -> Result<Vec<(i64, [u8; KEY_LEN])>, String> + Send + Sync + 'static,
    ) -> Arc<TicketKeys> {
        Arc::new(TicketKeys {
            period: period.as_secs().max(1),
            source: Box::new(source),
            held: ArcSwap::from_pointee(Vec::new()),
            loads: Mutex::new(Loads::default()),
        })
    }

    /// Loads the keys of the current epoch now. Blocking: for a caller already off the runtime's
    /// workers (the registry, when it first builds the org).
    pub fn load(&self) {
        let now = unix_now();
        let epoch = self.epoch(now);
        if self.claim(epoch, now) {
            self.load_at(epoch);
        }
    }

    /// The ticket producer of one `ServerConfig`: `binding` names the trust it verifies under.
    pub fn ticketer(self: &Arc<Self>, binding: [u8; 32]) -> Arc<dyn ProducesTickets> {
        Arc::new(Ticketer {
            keys: self.clone(),
            binding,
        })
    }

    fn epoch(&self, unix: u64) -> i64 {
        i64::try_from(unix / self.period).unwrap_or(i64::MAX)
    }

    /// True when a load for `epoch` should start now; records it as started.
    fn claim(&self, epoch: i64, now: u64) -> bool {
        let mut loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        if loads.loaded == Some(epoch) {
            return false;
        }
        if let Some((last, at)) = loads.started {
            if last == epoch && now < at.saturating_add(RETRY.as_secs()) {
                return false;
            }
        }
        loads.started = Some((epoch, now));
        true
    }

    /// Starts a load on a blocking thread when one is due for `epoch` (none without a runtime).
    fn refresh(self: &Arc<Self>, epoch: i64, now: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.claim(epoch, now) {
            let keys = self.clone();
            runtime.spawn_blocking(move || keys.load_at(epoch));
        }
    }

    /// Asks the source for `epoch`'s window; keeps what it gives, or on failure what is held
    /// still within the window.
    fn load_at(&self, epoch: i64) {
        let window = |e: i64| e.abs_diff(epoch) <= 1;
        let (keys, loaded) = match (self.source)(epoch) {
            Ok(keys) => {
                let keys = keys
                    .into_iter()
                    .filter(|(e, _)| window(*e))
                    .filter_map(|(e, secret)| {
                        let key = UnboundKey::new(&AES_256_GCM, &secret).ok()?;
                        Some((e, Arc::new(LessSafeKey::new(key))))
                    })
                    .collect();
                (keys, true)
            }
            Err(error) => {
                tracing::warn!(%error, epoch, "cannot load TLS ticket keys, going on with those held");
                metrics::counter!(crate::metrics::TICKET_KEY_LOAD_FAILURES).increment(1);
                let held = self.held.load();
                let keys = held.iter().filter(|(e, _)| window(*e)).cloned().collect();
                (keys, false)
            }
        };
        self.held.store(Arc::new(keys));
        if loaded {
            self.loads.lock().unwrap_or_else(|e| e.into_inner()).loaded = Some(epoch);
        }
    }

    /// Seals `plain` at unix time `now` with the current epoch's key, bound to `binding`.
    fn seal(self: &Arc<Self>, binding: &[u8; 32], now: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let epoch = self.epoch(now);
        self.refresh(epoch, now);
        let held = self.held.load();
        let (_, key) = held.iter().find(|(e, _)| *e == epoch)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut in_out = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            aad(binding, epoch),
            &mut in_out,
        )
        .ok()?;
        let mut ticket = Vec::with_capacity(EPOCH_LEN + NONCE_LEN + in_out.len());
        ticket.extend_from_slice(&epoch.to_be_bytes());
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&in_out);
        Some(ticket)
    }

    /// Opens a ticket at unix time `now`: `None` unless its epoch is within the window, its key
    /// is held and it was sealed under `binding`.
    fn open(self: &Arc<Self>, binding: &[u8; 32], now: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        let current = self.epoch(now);
        self.refresh(current, now);
        if ticket.len() < EPOCH_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (epoch, rest) = ticket.split_at(EPOCH_LEN);
        let epoch = i64::from_be_bytes(epoch.try_into().ok()?);
        if epoch.abs_diff(current) > 1 {
            return None;
        }
        let held = self.held.load();
        let (_, key) = held.iter().find(|(e, _)| *e == epoch)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, aad(binding, epoch), &mut in_out)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// What a ticket is bound to besides its key: the config's binding and the epoch.
fn aad(binding: &[u8; 32], epoch: i64) -> Aad<[u8; 40]> {
    let mut aad = [0u8; 40];
    aad[..32].copy_from_slice(binding);
    aad[32..].copy_from_slice(&epoch.to_be_bytes());
    Aad::from(aad)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The digest a `ServerConfig`'s tickets are bound to: what its client verifier trusts.
/// Order-free (each part hashed, then sorted), so every node gets the same from the same store.
pub fn binding(cas: &[&[u8]], crls: &[&[u8]], deny_stale_crl: bool) -> [u8; 32] {
    let sorted = |items: &[&[u8]]| {
        let mut digests: Vec<digest::Digest> = items
            .iter()
            .map(|item| digest::digest(&digest::SHA256, item))
            .collect();
        digests.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        digests
    };
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"portcullis ticket binding 1");
    for (label, part) in [(b"ca", sorted(cas)), (b"cr", sorted(crls))] {
        context.update(label);
        context.update(&(part.len() as u64).to_be_bytes());
        for d in part {
            context.update(d.as_ref());
        }
    }
    context.update(&[u8::from(deny_stale_crl)]);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// One `ServerConfig`'s tickets: its org's keys, its binding.
#[derive(Debug)]
struct Ticketer {
    keys: Arc<TicketKeys>,
    binding: [u8; 32],
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    /// A ticket opens until the end of the epoch after the one it was made in: at least a period.
    fn lifetime(&self) -> u32 {
        u32::try_from(self.keys.period).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.keys.seal(&self.binding, unix_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.keys.open(&self.binding, unix_now(), cipher)
    }
}

#[cfg(test)]
mod tests;
