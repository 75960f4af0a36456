//! One leader per cluster (DESIGN §12): what must happen once however many nodes run — the
//! notifier (each notice sent once) and the CRL fetches from `crl_url` — runs on the node that
//! holds the leader lock (`store::postgres::campaign`), and stops there as soon as it loses it.
//! On SQLite the one node always leads.
//!
//! The leader records itself in the store when it takes the lock, so that the node list of any
//! node shows it (`GET /api/v1/cluster/nodes`, `"leader": true`).

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::health::Health;
use crate::store::{self, Store, StoreError};

/// Starts campaigning for the lead on the PostgreSQL database `target` until `stop` turns true;
/// this node's [`Health`] follows whether it leads.
pub fn campaign(
    target: &store::postgres::Target,
    health: Arc<Health>,
    store: Arc<dyn Store>,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StoreError> {
    let node_id = health.node_id.clone();
    store::postgres::campaign(target, &node_id.clone(), stop, move |leading| {
        // On the lock's own thread: the store may block here.
        if leading {
            if let Err(error) = store.lead(&node_id, OffsetDateTime::now_utc()) {
                tracing::warn!(%error, "the lead taken is not recorded in the node list");
            }
        }
        health.set_leading(leading);
    })
}

/// Runs `duty` whenever this node leads, until `stop` turns true: started when the lead is
/// taken, told to stop (its own stop signal turns true) and awaited when the lead is lost.
pub async fn while_leading<F, D>(
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    duty: F,
) where
    F: Fn(watch::Receiver<bool>) -> D,
    D: Future<Output = ()>,
{
    loop {
        tokio::select! {
            led = leading.wait_for(|leads| *leads) => if led.is_err() { return },
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let (end, ending) = watch::channel(false);
        let running = duty(ending);
        tokio::pin!(running);
        let stopping = tokio::select! {
            () = &mut running => false,
            _ = leading.wait_for(|leads| !*leads) => false,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        end.send_replace(true);
        running.await;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_duty_runs_while_the_node_leads_and_stops_when_it_no_longer_does() {
        let (lead, leading) = watch::channel(false);
        let (stop, stopped) = watch::channel(false);
        let (started, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counts = (started.clone(), ended.clone());
        let task = tokio::spawn(while_leading(leading, stopped, move |mut end| {
            let (started, ended) = counts.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = end.wait_for(|end| *end).await;
                ended.fetch_add(1, Ordering::SeqCst);
            }
        }));
        // Polls until `count` reaches `n` (at most 5 s): the task runs on its own.
        let reaches = |count: &Arc<AtomicUsize>, n: usize| {
            let count = count.clone();
            async move {
                for _ in 0..500 {
                    if count.load(Ordering::SeqCst) == n {
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                false
            }
        };
        tokio::task::yield_now().await;
        assert_eq!(started.load(Ordering::SeqCst), 0, "ran before leading");
        lead.send_replace(true);
        assert!(reaches(&started, 1).await, "not started on taking the lead");
        lead.send_replace(false);
        assert!(
            reaches(&ended, 1).await,
            "still ran after the lead was lost"
        );
        lead.send_replace(true);
        assert!(reaches(&started, 2).await, "not started again");
        stop.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the stop was not seen")
            .unwrap();
        assert_eq!(ended.load(Ordering::SeqCst), 2);
    }
}
