//! Access grants' policy (DESIGN §11): what a grant allows and when it has run out. Every key the
//! product signs with for an org carries a grant limited in time and in uses; the store keeps the
//! grants' rows and counts their uses atomically, and asks this policy — through
//! [`GrantRules`], which it receives when it is opened — what a new grant is given and what
//! status a grant has, inside the transaction that acts on the answer.
//!
//! `active` → `warning` (from `warn_before` ahead of `expires_at`, or `warn_usage_ratio` of the
//! uses) → `expired` (at either limit): an expired grant signs nothing, and the tokens a signing
//! certificate's grant signed are suspended when it expires.

use time::OffsetDateTime;

use crate::store::{GrantRecord, GrantRules, GrantStatus, GrantTerms};

/// The limits a new or renewed grant gets (`[grants]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct GrantPolicy {
    pub max_age: time::Duration,
    pub max_uses: i64,
    pub warn_before: time::Duration,
    pub warn_usage_ratio: f64,
}

impl Default for GrantPolicy {
    fn default() -> Self {
        GrantPolicy {
            max_age: time::Duration::days(60),
            max_uses: 1_000_000_000,
            warn_before: time::Duration::days(7),
            warn_usage_ratio: 0.9,
        }
    }
}

impl GrantRules for GrantPolicy {
    fn terms(&self, granted_at: OffsetDateTime) -> GrantTerms {
        GrantTerms {
            expires_at: granted_at + self.max_age,
            max_uses: self.max_uses,
        }
    }

    fn status(&self, grant: &GrantRecord, now: OffsetDateTime) -> GrantStatus {
        if now >= grant.expires_at || grant.uses >= grant.max_uses {
            GrantStatus::Expired
        } else if now >= grant.expires_at - self.warn_before
            || grant.uses as f64 >= self.warn_usage_ratio * grant.max_uses as f64
        {
            GrantStatus::Warning
        } else {
            GrantStatus::Active
        }
    }
}

/// The decision on a key's services (tokens it signed, signing with it): suspended once its grant
/// has run out, until an operator renews it. A key without a grant (the platform's own) is never
/// suspended.
pub fn suspended(grant: Option<&GrantRecord>) -> bool {
    grant.is_some_and(|g| g.status == GrantStatus::Expired)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use time::Duration;

    use super::*;
    use crate::identity::OrgId;
    use crate::store::GrantHolder;

    const T0: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

    fn grant(uses: i64, expires_at: OffsetDateTime) -> GrantRecord {
        GrantRecord {
            id: "g".into(),
            org: OrgId::parse("acme").unwrap(),
            holder: GrantHolder::CaCertificate,
            holder_id: "ca".into(),
            status: GrantStatus::Active,
            uses,
            max_uses: 100,
            granted_at: T0,
            expires_at,
            needs_key_passphrase: false,
        }
    }

    #[test]
    fn a_new_grant_gets_the_policy_age_and_uses() {
        let policy = GrantPolicy::default();
        let terms = policy.terms(T0);
        assert_eq!(terms.expires_at, T0 + Duration::days(60));
        assert_eq!(terms.max_uses, 1_000_000_000);
    }

    #[test]
    fn status_warns_then_expires_by_time_or_uses() {
        let policy = GrantPolicy::default();
        let end = T0 + Duration::days(60);
        let at = |uses, now| policy.status(&grant(uses, end), now);
        assert_eq!(at(0, T0), GrantStatus::Active);
        assert_eq!(at(89, T0), GrantStatus::Active);
        assert_eq!(at(90, T0), GrantStatus::Warning, "90 % of the uses");
        let warn_from = end - Duration::days(7);
        assert_eq!(at(0, warn_from - Duration::seconds(1)), GrantStatus::Active);
        assert_eq!(
            at(0, warn_from),
            GrantStatus::Warning,
            "7 days before expiry"
        );
        assert_eq!(at(0, end), GrantStatus::Expired, "at expiry");
        assert_eq!(at(100, T0), GrantStatus::Expired, "every use spent");
    }

    #[test]
    fn only_an_expired_grant_suspends() {
        let mut g = grant(0, T0);
        assert!(!suspended(None), "the platform's own keys");
        for (status, expected) in [
            (GrantStatus::Active, false),
            (GrantStatus::Warning, false),
            (GrantStatus::Expired, true),
        ] {
            g.status = status;
            assert_eq!(suspended(Some(&g)), expected, "{status:?}");
        }
    }
}
