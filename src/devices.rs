//! The device registry's writer (DESIGN §11): sessions hand their authentications to a bounded
//! queue without waiting, and one task writes them to the store in batches, at most a second
//! behind. A full queue drops the sighting (counted): the registry is a record, never a brake
//! on the connect path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{DeviceSeen, Store};

/// Sightings waiting to be written.
const QUEUE: usize = 16_384;
/// Most sightings per transaction.
const BATCH: usize = 1024;
/// How long a sighting may wait for others to share its transaction.
const LINGER: Duration = Duration::from_secs(1);

/// Where sessions report authentications.
#[derive(Clone)]
pub struct DeviceLog {
    tx: mpsc::Sender<DeviceSeen>,
}

impl DeviceLog {
    /// The log and the task that writes it into `store` as seen by node `node_id` (run it on
    /// the runtime; it ends when every `DeviceLog` is gone, after writing what is queued).
    pub fn new(
        store: Arc<dyn Store>,
        node_id: String,
    ) -> (DeviceLog, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (DeviceLog { tx }, write_behind(store, node_id, rx))
    }

    /// Never waits.
    pub fn seen(&self, seen: DeviceSeen) {
        if self.tx.try_send(seen).is_err() {
            metrics::counter!(crate::metrics::DEVICES_DROPPED).increment(1);
        }
    }
}

async fn write_behind(store: Arc<dyn Store>, node_id: String, mut rx: mpsc::Receiver<DeviceSeen>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(seen)) => batch.push(seen),
                Ok(None) | Err(_) => break,
            }
        }
        let (store, node_id) = (store.clone(), node_id.clone());
        let written =
            tokio::task::spawn_blocking(move || store.record_devices(&node_id, &batch)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "device registry not written"),
            Err(error) => tracing::warn!(%error, "device registry writer failed"),
        }
    }
}
