//! CAs' revocation lists on their way in (what a handshake checks them against is
//! [`crl_set`](super::crl_set)). [`hold`] is the one path a CRL takes into the store,
//! whether an operator uploaded it (`PUT …/crl`) or it was fetched: signed by that CA, not older
//! than the one held, then stored, so a restart serves the last good CRL without the network.
//!
//! [`CrlFetcher`] is one task that fetches each active CA's `crl_url` (DESIGN §11): at start, at
//! once when an operator sets the URL, and again when 80 % of the CRL's thisUpdate → nextUpdate
//! has passed (never sooner than 30 s; hourly without nextUpdate). A failed fetch is logged once,
//! counted, and tried again with backoff (30 s doubling to 1 h) while the last good CRL serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::fetch::{Fetch, FetchError};
use crate::identity::OrgId;
use crate::pki::{self, CrlInfo, PkiError};
use crate::store::{Store, StoreError};

/// A larger body is not a CRL this server holds.
const MAX_CRL_BYTES: usize = 32 * 1024 * 1024;
/// The soonest a CRL is fetched again, and the first retry after a failure.
const MIN_DELAY: Duration = Duration::from_secs(30);
/// The longest wait between retries, and between fetches of a CRL without nextUpdate.
const MAX_DELAY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("no such CA certificate")]
    UnknownCa,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("download: {0}")]
    Fetch(#[from] FetchError),
    #[error("publish: {0}")]
    Publish(#[source] PublishError),
    #[error("the CRL task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl CrlError {
    /// Bounded label of a failed fetch.
    fn outcome(&self) -> &'static str {
        match self {
            CrlError::Fetch(_) => "unreachable",
            CrlError::Pki(_) | CrlError::Store(StoreError::CrlOlder) => "rejected",
            _ => "error",
        }
    }
}

/// Where a CRL that changed is published, so that new handshakes and live sessions see it: the
/// registry, which sits above revocation and is handed to the fetcher as this (STYLE rule 11).
pub trait Publish: Send + Sync {
    /// Rebuilds what is served for `org` from the store.
    fn publish_org(&self, org: &OrgId) -> Result<(), PublishError>;
}

/// Why a publish failed (the publisher's own error, kept as the cause).
pub type PublishError = Box<dyn std::error::Error + Send + Sync>;

/// A CRL that passed its checks.
pub struct Held {
    pub info: CrlInfo,
    /// False when the very same CRL was held already (nothing was written).
    pub changed: bool,
}

/// Checks `body` (PEM or DER) as a CRL of the org's CA `ca_id` and holds it: it must be issued and
/// signed by that CA (`CrlSignatureInvalid`) and not older than the one held (`CrlOlder`; one of
/// the same thisUpdate replaces it). `audit`: the operator's upload, recorded with the CRL
/// (`None` for a fetched CRL).
pub fn hold(
    store: &dyn Store,
    org: &OrgId,
    ca_id: &str,
    body: &[u8],
    now: OffsetDateTime,
    audit: Option<&crate::store::Audit>,
) -> Result<Held, CrlError> {
    let ca = store.ca(org, ca_id)?.ok_or(CrlError::UnknownCa)?;
    let der = pki::crl_der(body)?;
    let info = pki::check_crl(&der, &ca.der)?;
    let changed = store.crl(org, ca_id)?.as_deref() != Some(der.as_slice());
    if changed {
        store.set_crl(org, ca_id, &der, &info, now, audit)?;
    } else if let Some(audit) = audit {
        store.record_action(org, audit, Some(ca_id))?;
    }
    Ok(Held { info, changed })
}

/// One CA's `crl_url` and when it is fetched next.
struct Source {
    url: String,
    due: Instant,
    failures: u32,
}

/// The task that keeps CAs' CRLs fresh from their `crl_url`. Cheap to share in an `Arc`.
pub struct CrlFetcher {
    store: Arc<dyn Store>,
    registry: Arc<dyn Publish>,
    timeout: Duration,
    /// CAs whose URL an operator just set: fetched at the next turn, whatever their schedule.
    asked: Mutex<Vec<(OrgId, String)>>,
    wake: Notify,
}

impl CrlFetcher {
    /// `timeout` bounds one download.
    pub fn new(store: Arc<dyn Store>, registry: Arc<dyn Publish>, timeout: Duration) -> CrlFetcher {
        CrlFetcher {
            store,
            registry,
            timeout,
            asked: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Fetches the CRL of the org's CA `ca_id` at once (its `crl_url` was just set).
    pub fn fetch_now(&self, org: &OrgId, ca_id: &str) {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((org.clone(), ca_id.to_owned()));
        self.wake.notify_one();
    }

    /// Reads the CRL sources again at once (a CA changed on another node): a new or changed
    /// `crl_url` is fetched.
    pub fn sources_changed(&self) {
        self.wake.notify_one();
    }

    /// Fetches every CRL as it falls due until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut sources = HashMap::new();
        loop {
            tokio::select! {
                _ = self.turn(&mut sources) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let next = sources.values().map(|source: &Source| source.due).min();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = due => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Brings the sources in line with the store, then fetches those due.
    async fn turn(&self, sources: &mut HashMap<(OrgId, String), Source>) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.crl_sources()).await {
            Ok(Ok(current)) => {
                let now = Instant::now();
                let mut kept = HashMap::with_capacity(current.len());
                for (org, ca_id, url) in current {
                    let key = (org, ca_id);
                    let source = match sources.remove(&key) {
                        Some(source) if source.url == url => source,
                        _ => Source {
                            url,
                            due: now,
                            failures: 0,
                        },
                    };
                    kept.insert(key, source);
                }
                *sources = kept;
            }
            Ok(Err(error)) => tracing::warn!(%error, "CRL sources not read"),
            Err(error) => tracing::warn!(%error, "CRL sources not read"),
        }
        let asked = std::mem::take(&mut *self.asked.lock().unwrap_or_else(PoisonError::into_inner));
        for key in asked {
            if let Some(source) = sources.get_mut(&key) {
                source.due = Instant::now();
                source.failures = 0;
            }
        }
        for ((org, ca_id), source) in sources.iter_mut() {
            if source.due > Instant::now() {
                continue;
            }
            let fetched = self.fetch(org, ca_id, &source.url).await;
            let outcome = match &fetched {
                Ok(held) => {
                    source.failures = 0;
                    source.due =
                        Instant::now() + refresh_delay(&held.info, OffsetDateTime::now_utc());
                    if held.changed {
                        "updated"
                    } else {
                        "unchanged"
                    }
                }
                Err(error) => {
                    source.failures = source.failures.saturating_add(1);
                    source.due = Instant::now() + retry_delay(source.failures);
                    tracing::warn!(org = %org, ca_id = %ca_id, url = %source.url, %error,
                        failures = source.failures, "CRL fetch failed; the last good CRL serves");
                    error.outcome()
                }
            };
            metrics::counter!(crate::metrics::CRL_FETCHES, "outcome" => outcome).increment(1);
        }
    }

    /// Downloads one CRL, holds it and publishes the org when it changed.
    async fn fetch(&self, org: &OrgId, ca_id: &str, url: &str) -> Result<Held, CrlError> {
        let body = Fetch {
            method: hyper::Method::GET,
            url,
            headers: &[],
            body: Bytes::new(),
            timeout: self.timeout,
            max_body: MAX_CRL_BYTES,
        }
        .send()
        .await?;
        let (store, registry) = (self.store.clone(), self.registry.clone());
        let (org, ca_id) = (org.clone(), ca_id.to_owned());
        tokio::task::spawn_blocking(move || {
            let held = hold(
                &*store,
                &org,
                &ca_id,
                &body,
                OffsetDateTime::now_utc(),
                None,
            )?;
            if held.changed {
                registry.publish_org(&org).map_err(CrlError::Publish)?;
                tracing::info!(org = %org, ca_id = %ca_id, entries = held.info.revoked.len(),
                    "CRL fetched and applied");
            }
            Ok(held)
        })
        .await
        .map_err(CrlError::Task)?
    }
}

/// How long until a CRL is fetched again: when 80 % of its thisUpdate → nextUpdate has passed,
/// hourly without nextUpdate, never sooner than [`MIN_DELAY`].
fn refresh_delay(info: &CrlInfo, now: OffsetDateTime) -> Duration {
    let delay = match info.next_update {
        Some(next) => {
            let refresh_at = info.this_update + (next - info.this_update) * 0.8;
            Duration::try_from(refresh_at - now).unwrap_or(Duration::ZERO)
        }
        None => MAX_DELAY,
    };
    delay.max(MIN_DELAY)
}

/// The wait after `failures` failed fetches in a row: 30 s doubling, at most an hour.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    MIN_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(this_update: OffsetDateTime, next_update: Option<OffsetDateTime>) -> CrlInfo {
        CrlInfo {
            issuer: "CN=ca".to_owned(),
            this_update,
            next_update,
            revoked: Vec::new(),
        }
    }

    #[test]
    fn a_crl_is_fetched_again_at_80_percent_of_its_validity_never_sooner_than_30_s() {
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        // Issued now, due in 10 h: again in 8 h.
        let delay = refresh_delay(&info(now, Some(now + 10 * hour)), now);
        assert_eq!(delay, Duration::from_secs(8 * 3600));
        // Issued 9 h ago, due in 1 h: 80 % passed an hour ago; the floor holds.
        let delay = refresh_delay(&info(now - 9 * hour, Some(now + hour)), now);
        assert_eq!(delay, MIN_DELAY);
        // Stale already.
        let delay = refresh_delay(&info(now - 2 * hour, Some(now - hour)), now);
        assert_eq!(delay, MIN_DELAY);
        assert_eq!(refresh_delay(&info(now, None), now), MAX_DELAY);
    }

    #[test]
    fn failures_back_off_from_30_s_doubling_to_an_hour() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(retry_delay(u32::MAX), MAX_DELAY);
    }
}
