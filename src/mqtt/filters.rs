//! Subscription filter quotas: how many filters one session and one organisation may hold.
//!
//! Why: every subscription filter costs memory in the embedded broker, and a distinct filter's
//! state is never freed there (see [`crate::broker`]). Without caps one device could subscribe
//! to tens of thousands of `iot-2/cmd/<C>/fmt/<F>` filters and grow the process without limit.
//! So a session holds at most `mqtts.max_filters_per_session` filters and an organisation at
//! most `mqtts.max_filters_per_org` (its sessions together, kept persistent sessions included);
//! a filter past either cap is refused in the SUBACK with "quota exceeded" (3.1.1: failure).
//! The broker's own bound on distinct filters it holds ([`Broker::hold_filter`], which counts a
//! filter on one device as that device's coarse filter) is checked last, with each org's share of it (`broker.max_filters_per_org`): the broker frees no filter,
//! so an org's devices that subscribe to ever new filters use up their org's share only.
//!
//! The counts follow the subscriptions that exist now: UNSUBSCRIBE releases a filter, the end
//! of a session the broker does not keep releases all of its filters, and a kept session's
//! filters stay counted (kept here by client id) until its expiry passes (the broker tells,
//! [`Broker::on_expired`]), or a clean start or a start without a stored session ends it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::broker::{Broker, Hold};
use crate::identity::ClientId;
use crate::mqtt::topics::{Form, TopicMap, TopicPolicy};

/// MQTT 5 SUBACK reason for a filter past a cap.
pub use crate::codec::reason::QUOTA_EXCEEDED;

/// Why a filter was refused here; also the `cap` label of the refusal counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilterRefused {
    #[error("the session holds mqtts.max_filters_per_session filters")]
    Session,
    #[error("the organisation holds mqtts.max_filters_per_org filters")]
    Org,
    #[error(
        "the organisation has handed broker.max_filters_per_org distinct filters to the broker"
    )]
    OrgShare,
    #[error("the embedded broker holds broker.max_filters distinct filters")]
    Broker,
}

impl FilterRefused {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            FilterRefused::Session => "session",
            FilterRefused::Org => "org",
            FilterRefused::OrgShare => "org_share",
            FilterRefused::Broker => "broker",
        }
    }
}

/// The caps and the per-organisation counts, shared by every session.
pub struct FilterQuota {
    per_session: usize,
    per_org: usize,
    broker: Arc<Broker>,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// Filters held per organisation: its live sessions' and its kept sessions'.
    orgs: HashMap<String, usize>,
    /// Filters of persistent sessions that ended, by client id: (org, the topic policy they were
    /// made under, filters).
    kept: HashMap<String, (String, TopicPolicy, HashSet<String>)>,
    /// Distinct filters each organisation has handed to the broker, which frees none: an org's
    /// share of `broker.max_filters`, at most `broker.max_filters_per_org`, so that subscribing
    /// to ever new filters (and unsubscribing) cannot use up the broker's bound for other orgs.
    introduced: HashMap<String, usize>,
}

impl Ledger {
    fn release(&mut self, org: &str, n: usize) {
        if n == 0 {
            return;
        }
        metrics::gauge!(crate::metrics::FILTERS_LIVE).decrement(n as f64);
        if let Some(count) = self.orgs.get_mut(org) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.orgs.remove(org);
            }
        }
    }
}

impl FilterQuota {
    /// The quota, told by `broker` when a kept session expires (its filters are released then).
    pub fn new(per_session: usize, per_org: usize, broker: Arc<Broker>) -> Arc<FilterQuota> {
        let quota = Arc::new(FilterQuota {
            per_session,
            per_org,
            broker: broker.clone(),
            ledger: Mutex::default(),
        });
        let weak = Arc::downgrade(&quota);
        broker.on_expired(move |client_id| {
            if let Some(quota) = weak.upgrade() {
                quota.forget(client_id);
            }
        });
        quota
    }

    /// Releases what a kept session of `client_id` held: the broker discarded that session.
    fn forget(&self, client_id: &str) {
        let mut ledger = self.lock();
        if let Some((org, _, filters)) = ledger.kept.remove(client_id) {
            ledger.release(&org, filters.len());
        }
    }

    /// Whether the persistent session `client` kept (if any) may resume under its org's topic
    /// policy `policy`: each of its filters, made under the policy the session followed then,
    /// means the same under `policy` ([`TopicMap::keeps`]). One that does not is started clean
    /// (the broker discards it, and what its filters held): a policy change does not leave an
    /// offline device holding what the new policy refuses.
    pub fn resumes_under(&self, client: &ClientId, policy: TopicPolicy) -> bool {
        let ledger = self.lock();
        let Some((_, then, filters)) = ledger.kept.get(&client.to_string()) else {
            return true;
        };
        let made = TopicMap::new(client.clone(), *then);
        filters
            .iter()
            .all(|filter| made.keeps(policy, filter, Form::Filter))
    }

    /// The filters of a session that starts now. `clean_start` and `session_present` are what the
    /// broker link was opened with and answered ([`Broker::open_session`]): a resumed session gets the
    /// filters its client id kept; any other start releases them (the broker dropped them).
    /// `keep`: whether the broker keeps the session after its connection (its expiry is not
    /// zero); [`SessionFilters::keep`] may change it before the end.
    pub fn open(
        self: &Arc<Self>,
        org: &str,
        client_id: &str,
        clean_start: bool,
        session_present: bool,
        keep: bool,
    ) -> SessionFilters {
        let mut ledger = self.lock();
        let mut live = HashSet::new();
        if let Some((kept_org, _, filters)) = ledger.kept.remove(client_id) {
            if clean_start || !session_present || kept_org != org {
                ledger.release(&kept_org, filters.len());
            } else {
                live = filters;
            }
        }
        SessionFilters {
            quota: self.clone(),
            org: org.to_owned(),
            client_id: client_id.to_owned(),
            live,
            keep,
            policy: TopicPolicy::default(),
        }
    }

    /// Filters the organisation holds now (live and kept sessions).
    #[cfg(test)]
    pub fn org_count(&self, org: &str) -> usize {
        self.lock().orgs.get(org).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One session's filters (broker form, `<org>/…`). Dropping it ends the session's claim: a
/// persistent session's filters are kept for its client id, a clean one's are released.
pub struct SessionFilters {
    quota: Arc<FilterQuota>,
    org: String,
    client_id: String,
    live: HashSet<String>,
    keep: bool,
    /// The topic policy its filters were made under (see [`SessionFilters::keep`]).
    policy: TopicPolicy,
}

impl SessionFilters {
    /// Takes `filter` for this session (`true`: newly held), or says which cap refuses it. A
    /// filter the session holds already is granted again at no cost (a SUBSCRIBE replaces the
    /// subscription).
    pub fn admit(&mut self, filter: &str) -> Result<bool, FilterRefused> {
        if self.live.contains(filter) {
            return Ok(false);
        }
        let refused = |cap: FilterRefused| {
            metrics::counter!(crate::metrics::FILTERS_REFUSED, "cap" => cap.label()).increment(1);
            Err(cap)
        };
        if self.live.len() >= self.quota.per_session {
            return refused(FilterRefused::Session);
        }
        let mut ledger = self.quota.lock();
        let count = ledger.orgs.get(&self.org).copied().unwrap_or(0);
        if count >= self.quota.per_org {
            return refused(FilterRefused::Org);
        }
        let introduced = ledger.introduced.get(&self.org).copied().unwrap_or(0);
        let may_add = introduced < self.quota.broker.max_filters_per_org();
        match self.quota.broker.hold_filter(filter, may_add) {
            Hold::Already => {}
            Hold::Added => {
                ledger.introduced.insert(self.org.clone(), introduced + 1);
            }
            Hold::Refused if !may_add => return refused(FilterRefused::OrgShare),
            Hold::Refused => return refused(FilterRefused::Broker),
        }
        ledger.orgs.insert(self.org.clone(), count + 1);
        drop(ledger);
        metrics::gauge!(crate::metrics::FILTERS_LIVE).increment(1.0);
        self.live.insert(filter.to_owned());
        Ok(true)
    }

    /// Lets go of `filter` (UNSUBSCRIBE; `true`: it was held); nothing when the session does not
    /// hold it.
    pub fn release(&mut self, filter: &str) -> bool {
        let held = self.live.remove(filter);
        if held {
            self.quota.lock().release(&self.org, 1);
        }
        held
    }

    /// Whether `keep` holds for every filter the session holds (a resumed session's included).
    pub fn all(&self, keep: &mut dyn FnMut(&str) -> bool) -> bool {
        self.live.iter().all(|filter| keep(filter))
    }

    /// Whether the session's filters stay counted for its client id once it ends (the broker
    /// keeps the session), or are released then; `policy`: the topic policy the session followed
    /// last, which made them.
    pub fn keep(&mut self, keep: bool, policy: TopicPolicy) {
        self.keep = keep;
        self.policy = policy;
    }

    /// Filters this session holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

impl Drop for SessionFilters {
    fn drop(&mut self) {
        let live = std::mem::take(&mut self.live);
        let mut ledger = self.quota.lock();
        if self.keep && !live.is_empty() {
            let kept = (self.org.clone(), self.policy, live);
            let previous = ledger.kept.insert(self.client_id.clone(), kept);
            if let Some((org, _, filters)) = previous {
                ledger.release(&org, filters.len());
            }
        } else {
            ledger.release(&self.org, live.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    async fn quota(per_session: usize, per_org: usize, max_filters: usize) -> Arc<FilterQuota> {
        let config = BrokerConfig {
            max_connections: 10,
            plain_listeners: 0,
            max_filters,
            max_filters_per_org: usize::MAX,
            upstream: None,
        };
        let broker = Arc::new(Broker::start(&config).await.unwrap());
        FilterQuota::new(per_session, per_org, broker)
    }

    #[tokio::test]
    async fn session_and_org_caps_refuse_past_them_and_count_what_is_live() {
        let quota = quota(2, 3, 100).await;
        let mut one = quota.open("acme", "c1", true, false, false);
        assert_eq!(one.admit("acme/a"), Ok(true));
        assert_eq!(
            one.admit("acme/a"),
            Ok(false),
            "the same filter again is free"
        );
        assert_eq!(one.admit("acme/b"), Ok(true));
        assert_eq!(one.admit("acme/c"), Err(FilterRefused::Session));
        assert!(one.release("acme/a"));
        assert!(!one.release("acme/a"), "let go already");
        assert_eq!(one.admit("acme/c"), Ok(true));
        let mut two = quota.open("acme", "c2", true, false, false);
        assert_eq!(two.admit("acme/d"), Ok(true));
        assert_eq!(two.admit("acme/e"), Err(FilterRefused::Org));
        let mut other = quota.open("other", "c3", true, false, false);
        assert_eq!(other.admit("other/a"), Ok(true), "orgs are counted apart");
        assert_eq!(quota.org_count("acme"), 3);
        drop(one);
        assert_eq!(quota.org_count("acme"), 1);
        drop(two);
        assert_eq!(quota.org_count("acme"), 0);
    }

    #[tokio::test]
    async fn a_persistent_session_keeps_its_filters_until_a_clean_start() {
        let quota = quota(5, 5, 100).await;
        let mut first = quota.open("acme", "keeper", false, false, true);
        first.admit("acme/a").unwrap();
        first.admit("acme/b").unwrap();
        drop(first);
        assert_eq!(
            quota.org_count("acme"),
            2,
            "kept while the broker keeps them"
        );
        let resumed = quota.open("acme", "keeper", false, true, true);
        assert_eq!(resumed.len(), 2);
        drop(resumed);
        assert_eq!(quota.org_count("acme"), 2);
        let clean = quota.open("acme", "keeper", true, false, false);
        assert!(clean.is_empty());
        assert_eq!(quota.org_count("acme"), 0);
        drop(clean);
        let mut lost = quota.open("acme", "keeper", false, false, true);
        lost.admit("acme/c").unwrap();
        drop(lost);
        let fresh = quota.open("acme", "keeper", false, false, true);
        assert!(fresh.is_empty(), "no stored session: nothing resumed");
        assert_eq!(quota.org_count("acme"), 0);
    }

    #[tokio::test]
    async fn the_broker_bound_refuses_new_distinct_filters_but_not_held_ones() {
        let quota = quota(10, 10, 2).await;
        let mut one = quota.open("acme", "c1", true, false, false);
        one.admit("acme/a").unwrap();
        one.admit("acme/b").unwrap();
        drop(one);
        let mut two = quota.open("acme", "c2", true, false, false);
        assert_eq!(two.admit("acme/a"), Ok(true), "held already: no new cost");
        assert_eq!(two.admit("acme/c"), Err(FilterRefused::Broker));
    }
}
