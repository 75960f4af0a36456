//! The ticketer on its own: what opens, what does not, and when keys are asked for. The keys
//! come from an in-memory source that behaves as the store's insert-if-absent (the store's own
//! behaviour is tested in `store::tests`, across nodes in `tests/cluster.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

const PERIOD: u64 = 3600;
/// Unix time in the middle of epoch 1,000.
const T: u64 = 1_000 * PERIOD + PERIOD / 2;
const BINDING: [u8; 32] = [7; 32];
const PLAIN: &[u8] = b"a session, client chain included";

/// One org's keys as the store keeps them, and every epoch it was asked for.
#[derive(Default)]
struct Store {
    keys: Mutex<HashMap<i64, [u8; KEY_LEN]>>,
    asked: Mutex<Vec<i64>>,
}

impl Store {
    fn keyring(self: &Arc<Self>) -> Arc<TicketKeys> {
        let store = self.clone();
        TicketKeys::new(Duration::from_secs(PERIOD), move |epoch: i64| {
            store.asked.lock().unwrap().push(epoch);
            let mut keys = store.keys.lock().unwrap();
            for e in [epoch, epoch + 1] {
                keys.entry(e).or_insert_with(|| {
                    let mut key = [0u8; KEY_LEN];
                    aws_lc_rs::rand::fill(&mut key).unwrap();
                    key
                });
            }
            Ok(keys
                .iter()
                .filter(|(e, _)| e.abs_diff(epoch) <= 1)
                .map(|(e, k)| (*e, *k))
                .collect())
        })
    }

    fn asked(&self) -> Vec<i64> {
        self.asked.lock().unwrap().clone()
    }
}

/// A keyring of a fresh org, loaded at `T`.
fn loaded(store: &Arc<Store>) -> Arc<TicketKeys> {
    let keys = store.keyring();
    assert!(keys.claim(1_000, T));
    keys.load_at(1_000);
    keys
}

#[test]
fn a_ticket_opens_on_another_node_of_the_same_org_and_nowhere_else() {
    let acme = Arc::new(Store::default());
    let (node_a, node_b) = (loaded(&acme), loaded(&acme));
    let ticket = node_a.seal(&BINDING, T, PLAIN).unwrap();
    assert_ne!(&ticket[EPOCH_LEN + NONCE_LEN..], PLAIN);
    assert_eq!(node_b.open(&BINDING, T, &ticket).as_deref(), Some(PLAIN));

    // Another org's keys, or the same org's under another trust, open nothing.
    let beta = loaded(&Arc::new(Store::default()));
    assert_eq!(beta.open(&BINDING, T, &ticket), None);
    assert_eq!(node_b.open(&[8; 32], T, &ticket), None);
}

#[test]
fn truncated_garbled_or_relabelled_tickets_open_nothing() {
    let keys = loaded(&Arc::new(Store::default()));
    let ticket = keys.seal(&BINDING, T, PLAIN).unwrap();
    for len in 0..ticket.len() {
        assert_eq!(keys.open(&BINDING, T, &ticket[..len]), None, "{len} bytes");
    }
    for at in 0..ticket.len() {
        let mut garbled = ticket.clone();
        garbled[at] ^= 0x01;
        assert_eq!(keys.open(&BINDING, T, &garbled), None, "byte {at}");
    }
    // The next epoch's key is held too: a ticket relabelled to it (wrong key id) does not open.
    let mut relabelled = ticket.clone();
    relabelled[..EPOCH_LEN].copy_from_slice(&1_001i64.to_be_bytes());
    assert_eq!(keys.open(&BINDING, T, &relabelled), None);
}

#[test]
fn a_ticket_opens_through_the_next_epoch_and_not_after() {
    let keys = loaded(&Arc::new(Store::default()));
    let ticket = keys.seal(&BINDING, T, PLAIN).unwrap();
    assert!(keys.open(&BINDING, T + PERIOD, &ticket).is_some());
    assert_eq!(keys.open(&BINDING, T + 2 * PERIOD, &ticket), None);
    // Without its epoch's key a node seals nothing: no ticket rather than an error.
    assert_eq!(keys.seal(&BINDING, T + 2 * PERIOD, PLAIN), None);
    assert_eq!(u64::from(keys.ticketer(BINDING).lifetime()), PERIOD);
}

/// Loads happen on the runtime's blocking threads, in order on one: the source is asked once for
/// the epoch a node is in and once when it turns, never for the epoch a ticket names.
#[test]
fn keys_are_asked_for_once_per_epoch_never_for_a_tickets_epoch() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(Store::default());
    let keys = store.keyring();
    runtime.block_on(async {
        // A fresh node holds no key: no ticket, one load started.
        assert_eq!(keys.seal(&BINDING, T, PLAIN), None);
        assert!(eventually(|| keys.seal(&BINDING, T, PLAIN).is_some()).await);
        let ticket = keys.seal(&BINDING, T, PLAIN).unwrap();
        for forged in [i64::MIN, -1, 0, 999, 1_001, 1_002, 77_777, i64::MAX] {
            let mut forged_ticket = ticket.clone();
            forged_ticket[..EPOCH_LEN].copy_from_slice(&forged.to_be_bytes());
            assert_eq!(keys.open(&BINDING, T, &forged_ticket), None);
        }
        assert!(keys.open(&BINDING, T, &ticket).is_some());
        // The epoch turns: one load for it, whatever the handshakes meanwhile.
        for _ in 0..100 {
            assert!(keys.open(&BINDING, T + PERIOD, &ticket).is_some());
        }
        assert!(eventually(|| store.asked().len() == 2).await);
    });
    assert_eq!(store.asked(), [1_000, 1_001]);
}

#[test]
fn a_failed_load_keeps_the_keys_held_and_is_retried_no_sooner_than_retry() {
    let keys = loaded(&Arc::new(Store::default()));
    let ticket = keys.seal(&BINDING, T, PLAIN).unwrap();
    let failing = TicketKeys::new(Duration::from_secs(PERIOD), |_| Err("down".to_owned()));
    failing.held.store(keys.held.load_full());
    assert!(failing.claim(1_001, T + PERIOD));
    failing.load_at(1_001);
    assert!(failing.open(&BINDING, T + PERIOD, &ticket).is_some());
    assert!(!failing.claim(1_001, T + PERIOD + 1));
    assert!(failing.claim(1_001, T + PERIOD + RETRY.as_secs()));
}

/// Polls `done` for up to ten seconds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1_000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
