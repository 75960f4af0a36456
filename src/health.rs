//! This node as one of several (DESIGN §12): what `/healthz/detail` reports (is the store
//! reachable, how old may the registry's snapshots be), the heartbeat each node writes to the
//! `nodes` table, and how a node follows the changes other nodes commit (the store's listening
//! connection, turned into registry publishes); and whether it leads (see `crate::leader`).
//!
//! The data path never waits on any of this: while the store is unreachable the node serves
//! from the snapshots it holds, and this module only records that they may be stale.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::registry::{Registry, RegistryError};
use crate::store::postgres::Change;
use crate::store::{NodeRecord, Store};

/// The node's own view of its place in the cluster; shared by the heartbeat, the store listener
/// and the admin API.
pub struct Health {
    pub node_id: String,
    /// A node whose heartbeat is older than this is listed `down`.
    pub down_after: Duration,
    pub started_at: OffsetDateTime,
    /// The last heartbeat was written.
    heartbeat_ok: AtomicBool,
    /// The store's listening connection is up (always, on SQLite: there is none to lose).
    listening: AtomicBool,
    /// Since when the snapshots may have missed a change (`None`: they are current).
    stale_since: Mutex<Option<Instant>>,
    /// This node leads the cluster (see `crate::leader`).
    leading: watch::Sender<bool>,
}

impl Health {
    pub fn new(node_id: String, down_after: Duration) -> Health {
        Health {
            node_id,
            down_after,
            started_at: OffsetDateTime::now_utc(),
            heartbeat_ok: AtomicBool::new(true),
            listening: AtomicBool::new(true),
            stale_since: Mutex::new(None),
            leading: watch::Sender::new(false),
        }
    }

    /// True while this node leads the cluster.
    pub fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows whether this node leads.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.send_replace(leading);
    }

    /// True while the store answers: the last heartbeat was written and, on PostgreSQL, the
    /// listening connection is up.
    pub fn store_ok(&self) -> bool {
        self.heartbeat_ok.load(Ordering::Relaxed) && self.listening.load(Ordering::Relaxed)
    }

    /// Seconds since the snapshots were last known to hold every committed change: 0 while the
    /// node follows the store, growing while it cannot.
    pub fn snapshot_age(&self) -> u64 {
        self.stale_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0, |since| since.elapsed().as_secs())
    }

    fn heartbeat_written(&self, ok: bool) {
        let was = self.heartbeat_ok.swap(ok, Ordering::Relaxed);
        if was != ok {
            match ok {
                true => tracing::info!("store reachable again"),
                false => tracing::warn!("store unreachable; serving from the snapshots held"),
            }
        }
    }

    fn listener_lost(&self) {
        self.listening.store(false, Ordering::Relaxed);
        self.stale_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Instant::now);
    }

    fn reloaded(&self) {
        *self
            .stale_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.listening.store(true, Ordering::Relaxed);
    }

    /// What the store listener calls for each [`Change`]: an org rebuilt as a local admin change
    /// rebuilds it, everything reloaded after a (re)connection. An `Err` (the store failed under
    /// the rebuild) makes the listener reconnect, and so reload everything; an org that the store
    /// gives but cannot be built (logged) is left as it was, as a failed local publish leaves it.
    pub fn follow(
        self: Arc<Self>,
        registry: Arc<Registry>,
    ) -> impl FnMut(Change) -> Result<(), String> + Send + 'static {
        move |change| {
            let applied = match change {
                Change::Org(org) => registry.publish_org(&org),
                Change::Everything => registry.reload_all().map(|()| self.reloaded()),
                Change::Lost => {
                    self.listener_lost();
                    Ok(())
                }
                // What nodes tell each other is `crate::cluster`'s.
                Change::Told(_) => Ok(()),
            };
            match applied {
                Err(RegistryError::Store(e)) => Err(e.to_string()),
                Err(e) => {
                    tracing::error!(error = %e, "a change from another node could not be applied");
                    Ok(())
                }
                Ok(()) => Ok(()),
            }
        }
    }
}

/// Writes this node's heartbeat every `interval` until `stop` turns true.
pub async fn heartbeat(
    health: Arc<Health>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    loop {
        let beat = NodeRecord {
            node_id: health.node_id.clone(),
            started_at: health.started_at,
            last_seen: OffsetDateTime::now_utc(),
            sessions: registry.sessions().len() as u64,
            version: version.clone(),
        };
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || store.heartbeat(&beat)).await;
        let ok = match written {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::debug!(%error, "heartbeat not written");
                false
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat task failed");
                false
            }
        };
        health.heartbeat_written(ok);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_unavailable_while_the_listener_is_lost_and_the_age_grows_until_reloaded() {
        let health = Health::new("n1".into(), Duration::from_secs(15));
        assert!(health.store_ok());
        assert_eq!(health.snapshot_age(), 0);
        health.listener_lost();
        assert!(!health.store_ok());
        *health.stale_since.lock().unwrap() = Some(Instant::now() - Duration::from_secs(7));
        assert!(health.snapshot_age() >= 7);
        health.reloaded();
        assert!(health.store_ok());
        assert_eq!(health.snapshot_age(), 0);
        health.heartbeat_written(false);
        assert!(!health.store_ok());
    }
}
