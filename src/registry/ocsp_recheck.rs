//! OCSP for live sessions: a certificate checked at CONNECT may be revoked while its session lives,
//! and every revocation source closes the live sessions it hits (DESIGN §11). A sweep every
//! `revocation.ocsp_recheck_seconds` asks again about each live session of a CA with OCSP on;
//! answers come from the cache until their nextUpdate, so a sweep costs a request only for an
//! answer that has expired. A session now `revoked` is closed like any revoked one; an unanswered
//! check leaves live sessions alone (only new connections are refused under `hard`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::Registry;
use crate::ocsp::{Ocsp, OcspMode, Verdict};

/// Checks of one sweep in flight at once: enough to overlap responders' latency, few enough not
/// to storm them when many answers expire together.
const CONCURRENT_CHECKS: usize = 16;

/// Sweeps every `period` until `stop` turns true.
pub async fn run(
    registry: Arc<Registry>,
    ocsp: Arc<Ocsp>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        tokio::select! {
            _ = sweep(&registry, &ocsp) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// One sweep: closes the live sessions whose certificate the responder now says is revoked, under
/// the CA's current mode and URL. Returns how many were closed.
pub async fn sweep(registry: &Registry, ocsp: &Ocsp) -> usize {
    let snapshot = registry.snapshot();
    let checks = registry.sessions().ocsp_checked().into_iter().filter_map(|live| {
        // A CA gone or deactivated has had its sessions closed by the publish that removed it.
        let ca = snapshot
            .org(live.org.as_str())?
            .cas
            .iter()
            .find(|ca| ca.id == live.ca_id && ca.ocsp_mode != OcspMode::Off)?;
        let url = ca.ocsp_url.clone();
        Some(async move {
            let revoked = ocsp.verdict(&live.subject, url.as_deref()).await == Verdict::Revoked;
            if revoked {
                live.revoke();
                tracing::info!(org = %live.org, ca_id = %live.ca_id, "live session closed: OCSP says revoked");
            }
            usize::from(revoked)
        })
    });
    let closed: usize = futures_util::stream::iter(checks)
        .buffer_unordered(CONCURRENT_CHECKS)
        .fold(0, |sum, closed| async move { sum + closed })
        .await;
    if closed > 0 {
        metrics::counter!(crate::metrics::SESSIONS_REVOKED, "reason" => "certificate_revoked")
            .increment(closed as u64);
    }
    closed
}
