//! Queries on `notification_settings` (where an org's notices go; the webhook secret sealed like
//! a private key) and `notifications_sent` (what was sent, so that each notice goes at most once a
//! day, across restarts); and the platform-wide expiry summary the metrics show.

use super::sql::{params, OptionalExtension, SqlExt};
use super::NotificationStore;
use time::OffsetDateTime;

use super::Audit;
use super::{records, require_org, to_micros, SqlStore, StoreError};
use crate::identity::OrgId;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotificationSettings {
    pub emails: Vec<String>,
    pub webhook_url: Option<String>,
    /// The HMAC key of webhook signatures; never shown back.
    pub webhook_secret: Option<String>,
}

/// One notice: at most one a day per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationKey {
    pub org: OrgId,
    /// `certificate_expiring`, `devices_expiring`, `grant_warning`, `grant_expired`,
    /// `crl_stale`, `ocsp_unavailable`.
    pub event: &'static str,
    /// What it is about: `<kind>:<id>`.
    pub object: String,
    /// `30`, `7`, `1` (days) for expiry; empty otherwise.
    pub threshold: String,
}

/// The AAD of an org's sealed webhook secret.
fn secret_aad(org: &OrgId) -> String {
    format!("notification_settings/{org}/webhook_secret")
}

/// The UTC day of `at`, as the dedup key holds it.
fn day(at: OffsetDateTime) -> String {
    let date = at.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Certificates of every org expiring within 1, 7 and 30 days, by kind; and the soonest notAfter
/// still ahead.
#[derive(Debug, Clone, Default)]
pub struct ExpirySummary {
    /// `(kind, [within 1 day, within 7, within 30])`, for each of ca, server, signing, device.
    pub counts: Vec<(&'static str, [u64; 3])>,
    pub next: Option<OffsetDateTime>,
    /// Active CAs whose CRL is past its nextUpdate.
    pub stale_crls: u64,
}

impl NotificationStore for SqlStore {
    fn notification_settings(
        &self,
        org: &OrgId,
    ) -> Result<Option<NotificationSettings>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let row: Option<(String, Option<String>, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT emails, webhook_url, webhook_secret_sealed FROM notification_settings
                 WHERE org = ?1",
                [org.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((emails, webhook_url, sealed)) = row else {
            return Ok(None);
        };
        let emails = serde_json::from_str(&emails)
            .map_err(|e| StoreError::Corrupt(format!("notification e-mails: {e}")))?;
        let webhook_secret = sealed
            .map(|sealed| {
                let plain = self.master_key.open(&secret_aad(org), &sealed)?;
                String::from_utf8(plain)
                    .map_err(|_| StoreError::Corrupt("webhook secret is not UTF-8".into()))
            })
            .transpose()?;
        Ok(Some(NotificationSettings {
            emails,
            webhook_url,
            webhook_secret,
        }))
    }

    fn set_notification_settings(
        &self,
        org: &OrgId,
        settings: &NotificationSettings,
        now: OffsetDateTime,
        audit: &Audit,
    ) -> Result<(), StoreError> {
        let emails = serde_json::to_string(&settings.emails)
            .map_err(|e| StoreError::Corrupt(format!("notification e-mails: {e}")))?;
        let sealed = settings
            .webhook_secret
            .as_deref()
            .map(|secret| self.master_key.seal(&secret_aad(org), secret.as_bytes()))
            .transpose()?;
        let tx = self.begin()?;
        require_org(&tx, org)?;
        tx.execute(
            "INSERT INTO notification_settings
                 (org, emails, webhook_url, webhook_secret_sealed, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (org) DO UPDATE SET emails = excluded.emails,
                 webhook_url = excluded.webhook_url,
                 webhook_secret_sealed = excluded.webhook_secret_sealed,
                 updated_at = excluded.updated_at",
            params![
                org.as_str(),
                emails,
                settings.webhook_url,
                sealed,
                to_micros(now)
            ],
        )?;
        audit.record(&tx, org, None)?;
        tx.commit()?;
        Ok(())
    }

    fn orgs_with_notifications(&self) -> Result<Vec<OrgId>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT org FROM notification_settings ORDER BY org")?;
        let orgs = records(
            stmt.query_map(params![], |row| row.get::<_, String>(0))?,
            |org| super::parse_org_id(&org),
        )?;
        Ok(orgs)
    }

    fn notification_sent(
        &self,
        key: &NotificationKey,
        on: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM notifications_sent
                 WHERE org = ?1 AND event = ?2 AND object = ?3 AND threshold = ?4
                     AND (CAST(?5 AS TEXT) IS NULL OR day = ?5))",
            params![
                key.org.as_str(),
                key.event,
                key.object,
                key.threshold,
                on.map(day)
            ],
            |row| row.get(0),
        )?)
    }

    fn record_notification(
        &self,
        key: &NotificationKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tx = self.begin()?;
        tx.execute(
            "INSERT INTO notifications_sent (org, event, object, threshold, day, sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![
                key.org.as_str(),
                key.event,
                key.object,
                key.threshold,
                day(at),
                to_micros(at)
            ],
        )?;
        // Kept 90 days: long enough to know a grant period's warning went out.
        tx.execute(
            "DELETE FROM notifications_sent WHERE sent_at < ?1",
            [to_micros(at - time::Duration::days(90))],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn stale_crls(
        &self,
        org: Option<&OrgId>,
        now: OffsetDateTime,
    ) -> Result<Vec<(OrgId, String, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT c.org, c.ca_id, a.alias FROM crls c JOIN ca_certificates a ON a.id = c.ca_id
             WHERE (CAST(?1 AS TEXT) IS NULL OR c.org = ?1) AND a.active = 1 AND c.next_update IS NOT NULL
                 AND c.next_update < ?2
             ORDER BY c.org, c.ca_id",
        )?;
        let rows = records(
            stmt.query_map(params![org.map(OrgId::as_str), to_micros(now)], |row| {
                Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?))
            })?,
            |(org, ca, alias)| Ok((super::parse_org_id(&org)?, ca, alias)),
        )?;
        Ok(rows)
    }

    fn expiry_summary(&self, now: OffsetDateTime) -> Result<ExpirySummary, StoreError> {
        let conn = self.conn()?;
        let [now_us, d1, d7, d30] =
            [0, 1, 7, 30].map(|days| to_micros(now + time::Duration::days(days)));
        let mut summary = ExpirySummary::default();
        for (kind, table) in [
            ("ca", "ca_certificates"),
            ("server", "server_certificates"),
            ("signing", "signing_certificates"),
            ("device", "devices"),
        ] {
            let (c1, c7, c30, next): (i64, i64, i64, Option<i64>) = conn.query_row(
                &format!(
                    "SELECT COALESCE(SUM(CASE WHEN not_after < ?2 THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN not_after < ?3 THEN 1 ELSE 0 END), 0),
                         COALESCE(SUM(CASE WHEN not_after < ?4 THEN 1 ELSE 0 END), 0), MIN(not_after)
                     FROM {table} WHERE not_after >= ?1"
                ),
                params![now_us, d1, d7, d30],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            summary
                .counts
                .push((kind, [count(c1), count(c7), count(c30)]));
            if let Some(next) = next {
                let next = super::from_micros(next)?;
                summary.next = Some(summary.next.map_or(next, |held| held.min(next)));
            }
        }
        summary.stale_crls = conn.query_row(
            "SELECT COUNT(*) FROM crls c JOIN ca_certificates a ON a.id = c.ca_id
             WHERE a.active = 1 AND c.next_update IS NOT NULL AND c.next_update < ?1",
            [now_us],
            |row| row.get(0),
        )?;
        Ok(summary)
    }
}
