//! The `LISTEN`ing connection of a node (DESIGN §12): one blocking `postgres::Client` on a thread
//! of its own, waiting for `portcullis_org` notifications (sent by the triggers of migration 2 when
//! a change to an org commits, on any node) and handing each org named to the caller, which
//! rebuilds that org's snapshot; and for `portcullis_node`, what nodes tell each other
//! (`NodeStore::tell_nodes`). A thread rather than a runtime task: the blocking client drives
//! its own runtime and would panic on a worker, and the caller's rebuild reads the (blocking) store.
//!
//! Notifications sent while no connection listens are lost, so every time the connection is
//! (re)established the caller is told to reload everything ([`Change::Everything`]), and told
//! [`Change::Lost`] when it breaks; the thread keeps reconnecting until the node stops.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use tokio::sync::watch;

use super::{pause, Target};
use crate::identity::OrgId;
use crate::store::{NodeMessage, StoreError};

/// The channel the triggers notify.
const CHANNEL: &str = "portcullis_org";
/// The channel nodes tell each other on (`NodeStore::tell_nodes`).
pub(super) const NODE_CHANNEL: &str = "portcullis_node";
/// How long one wait for notifications lasts: the most a stop waits for the thread.
const WAIT: Duration = Duration::from_millis(250);
/// A connection silent this long is asked whether it still lives (a lost network sends nothing).
const PING_AFTER: Duration = Duration::from_secs(2);
/// Pause between attempts to reconnect.
const RETRY: Duration = Duration::from_millis(500);

/// What the listening connection tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A change to this org committed (on any node, this one included).
    Org(OrgId),
    /// What a node told the others (this one included).
    Told(NodeMessage),
    /// The connection is (again) listening: notifications may have been missed, reload all.
    Everything,
    /// The connection is lost; [`Change::Everything`] follows once it is back.
    Lost,
}

/// Starts the listening thread on the database at `url`; it calls `apply` for each change and
/// ends once `stop` turns true. An `Err` from `apply` (the store failed under the rebuild) drops
/// the connection: the reconnection reloads everything.
pub fn listen<F>(
    target: &Target,
    stop: watch::Receiver<bool>,
    apply: F,
) -> Result<JoinHandle<()>, StoreError>
where
    F: FnMut(Change) -> Result<(), String> + Send + 'static,
{
    let target = target.with(|config| {
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
    });
    std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || run(&target, &stop, apply))
        .map_err(StoreError::Io)
}

fn run<F>(target: &Target, stop: &watch::Receiver<bool>, mut apply: F)
where
    F: FnMut(Change) -> Result<(), String>,
{
    // Assume connected at start: the registry was just loaded from the store.
    let mut listening = true;
    while !*stop.borrow() {
        let outcome = target
            .connect()
            .and_then(|mut client| {
                client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {NODE_CHANNEL}"))?;
                Ok(client)
            })
            .map_err(|e| e.to_string())
            .and_then(|client| {
                apply(Change::Everything)?;
                if !listening {
                    tracing::info!("store listener connected again; everything reloaded");
                }
                listening = true;
                serve(client, stop, &mut apply)
            });
        if let Err(error) = outcome {
            if listening {
                tracing::warn!(%error, "store listener lost; reconnecting");
                let _ = apply(Change::Lost);
                listening = false;
            }
            pause(stop, RETRY);
        }
    }
}

/// Hands over notifications until the connection breaks (`Err`) or the node stops (`Ok`).
fn serve<F>(mut client: Client, stop: &watch::Receiver<bool>, apply: &mut F) -> Result<(), String>
where
    F: FnMut(Change) -> Result<(), String>,
{
    let mut heard = Instant::now();
    while !*stop.borrow() {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(WAIT);
            while let Some(notification) = waiting.next().map_err(|e| e.to_string())? {
                heard = Instant::now();
                let changes = match notification.channel() {
                    // Messages packed in a JSON array (`NodeStore::tell_nodes`), or one alone.
                    NODE_CHANNEL => {
                        serde_json::from_str::<Vec<NodeMessage>>(notification.payload())
                            .or_else(|_| {
                                serde_json::from_str(notification.payload()).map(|m| vec![m])
                            })
                            .ok()
                            .map(|told| told.into_iter().map(Change::Told).collect())
                    }
                    _ => OrgId::parse(notification.payload())
                        .ok()
                        .map(|org| vec![Change::Org(org)]),
                };
                match changes {
                    Some(changes) => {
                        for change in changes {
                            apply(change)?;
                        }
                    }
                    None => tracing::warn!(
                        channel = notification.channel(),
                        payload = notification.payload(),
                        "notification not understood; ignored"
                    ),
                }
            }
        }
        if client.is_closed() {
            return Err("the connection closed".into());
        }
        if heard.elapsed() >= PING_AFTER {
            client.batch_execute("").map_err(|e| e.to_string())?;
            heard = Instant::now();
        }
    }
    Ok(())
}
