//! The notifier (DESIGN §11): tells an org's addresses (e-mail over SMTP) and webhook (a POST of
//! JSON signed `X-Portcullis-Signature: sha256=<HMAC-SHA256 of the body>`) about certificates
//! expiring 30, 7 and 1 days ahead, grants in `warning` or `expired`, CRLs past their nextUpdate
//! and OCSP responders out of reach.
//!
//! One task runs a pass at start, every `notify.check_interval_seconds`, and at once when a grant
//! changes status or the data path raises an alert. A pass works out the notices due now and sends
//! those not yet sent today: each (event, object, threshold) at most once a UTC day of the
//! injected clock, remembered in the store across restarts. A notice is recorded once every
//! channel the org configured took it; one that failed is tried again at the next pass.
//! Devices' certificates are summed up in one notice per org and threshold, not one per device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use crate::config::NotifyConfig;
use crate::fetch::{Fetch, FetchError};
use crate::identity::OrgId;
use crate::store::{
    GrantRecord, GrantStatus, NotificationKey, NotificationSettings, Store, StoreError,
};

/// Header of the webhook signature.
pub const SIGNATURE_HEADER: &str = "X-Portcullis-Signature";
/// Delays between webhook attempts: four attempts in all.
const WEBHOOK_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// The alert the data path raises when an OCSP responder does not answer.
pub const OCSP_UNAVAILABLE: &str = "ocsp_unavailable";
/// Every alert the data path raises ([`Notifier::alert`]).
pub const ALERT_EVENTS: &[&str] = &[OCSP_UNAVAILABLE];
/// Identities listed in one devices notice; the count covers the rest.
const DEVICES_LISTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.smtp_url: {0}")]
    SmtpUrl(#[source] lettre::transport::smtp::Error),
    #[error("notify.from: {0}")]
    From(#[source] lettre::address::AddressError),
    #[error(
        "the organisation has no notification e-mail addresses, or no SMTP server is configured"
    )]
    NoAddresses,
    #[error("e-mail: {0}")]
    Message(#[source] lettre::error::Error),
    #[error("invalid e-mail address {0:?}")]
    Address(String),
    #[error("SMTP: {0}")]
    Smtp(#[source] lettre::transport::smtp::Error),
    #[error("the SMTP server did not take the message within {0:?}")]
    SmtpTimeout(Duration),
    #[error("webhook: {0}")]
    Webhook(#[source] FetchError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// One notice due.
#[derive(Debug, Clone)]
struct Notice {
    key: NotificationKey,
    subject: String,
    /// What the webhook body and the e-mail carry beyond the key.
    details: serde_json::Value,
}

pub struct Notifier {
    store: Arc<dyn Store>,
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    interval: Duration,
    timeout: Duration,
    /// Alerts raised on the data path since the last pass: (org, event, object).
    alerts: Mutex<Vec<(OrgId, &'static str, String)>>,
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        config: &NotifyConfig,
        timeout: Duration,
    ) -> Result<Notifier, NotifyError> {
        let mailer = config
            .smtp_url
            .as_deref()
            .map(|url| {
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map(|builder| builder.timeout(Some(timeout)).build())
                    .map_err(NotifyError::SmtpUrl)
            })
            .transpose()?;
        let from = config.from.parse().map_err(NotifyError::From)?;
        let wake = store.grant_changed();
        Ok(Notifier {
            store,
            mailer,
            from,
            interval: config.check_interval,
            timeout,
            alerts: Mutex::new(Vec::new()),
            wake,
        })
    }

    /// Raises an alert from the data path (an OCSP responder out of reach): sent at the next pass,
    /// which starts at once.
    pub fn alert(&self, org: &OrgId, event: &'static str, object: String) {
        let mut alerts = self.alerts.lock().unwrap_or_else(PoisonError::into_inner);
        if alerts.len() < 10_000
            && !alerts
                .iter()
                .any(|(o, e, x)| o == org && *e == event && *x == object)
        {
            alerts.push((org.clone(), event, object));
        }
        drop(alerts);
        self.wake.notify_one();
    }

    /// Starts a pass at once (the org's settings changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs passes until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let sent = self.pass(&stop).await;
            if sent > 0 {
                tracing::info!(sent, "notices sent");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One pass: every notice due now and not yet sent today (until `stop` turns true). Returns
    /// how many were sent.
    async fn pass(&self, stop: &watch::Receiver<bool>) -> usize {
        let mut alerts =
            std::mem::take(&mut *self.alerts.lock().unwrap_or_else(PoisonError::into_inner));
        let outcome = self.try_pass(stop, &mut alerts).await;
        // Alerts not told (a channel failed, or the pass did) wait for the next pass.
        if !alerts.is_empty() {
            let mut held = self.alerts.lock().unwrap_or_else(PoisonError::into_inner);
            for alert in alerts {
                if held.len() < 10_000 && !held.contains(&alert) {
                    held.push(alert);
                }
            }
        }
        match outcome {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(error = %e, "notification pass failed");
                0
            }
        }
    }

    /// `alerts`: those raised since the last pass; the ones told (or with nobody to tell) are
    /// taken out.
    async fn try_pass(
        &self,
        stop: &watch::Receiver<bool>,
        alerts: &mut Vec<(OrgId, &'static str, String)>,
    ) -> Result<usize, NotifyError> {
        let store = self.store.clone();
        let (orgs, stale) = blocking(move || {
            store.refresh_grants(None)?;
            let stale = store.stale_crls(None, store.clock().now())?;
            Ok((store.orgs_with_notifications()?, stale))
        })
        .await?;
        // `revocation.on_stale_crl` decides what a stale CRL does; the log says it at every pass.
        for (org, ca, alias) in &stale {
            tracing::warn!(%org, ca, alias, "the CA's CRL is past its nextUpdate and no fresher one is held");
        }
        // Nobody to tell about an org without settings.
        alerts.retain(|(org, _, _)| orgs.contains(org));
        let mut sent = 0;
        for org in orgs {
            if *stop.borrow() {
                break;
            }
            let store = self.store.clone();
            let org_alerts: Vec<_> = alerts
                .iter()
                .filter(|(o, _, _)| *o == org)
                .map(|(_, event, object)| (*event, object.clone()))
                .collect();
            let (settings, notices) = blocking(move || due(&*store, &org, org_alerts)).await?;
            let Some(settings) = settings else { continue };
            for notice in notices {
                let now = self.store.clock().now();
                let store = self.store.clone();
                let key = notice.key.clone();
                let told = |alerts: &mut Vec<(OrgId, &'static str, String)>| {
                    let key = &notice.key;
                    alerts.retain(|(o, e, x)| {
                        !(*o == key.org && *e == key.event && *x == key.object)
                    });
                };
                if blocking(move || store.notification_sent(&key, Some(now))).await? {
                    told(alerts);
                    continue;
                }
                if self.deliver(&settings, &notice, now).await {
                    let store = self.store.clone();
                    let key = notice.key.clone();
                    blocking(move || store.record_notification(&key, now)).await?;
                    told(alerts);
                    sent += 1;
                } else {
                    // The next pass tries again; the rest of this org's notices would likely fail
                    // the same way.
                    break;
                }
            }
        }
        Ok(sent)
    }

    /// Sends `notice` on every channel the org configured; true when all took it.
    async fn deliver(
        &self,
        settings: &NotificationSettings,
        notice: &Notice,
        now: OffsetDateTime,
    ) -> bool {
        let body = json!({
            "event": notice.key.event,
            "org": notice.key.org.as_str(),
            "object": notice.key.object,
            "threshold": notice.key.threshold,
            "subject": notice.subject,
            "at": crate::clock::rfc3339(now),
            "details": notice.details,
        });
        let mut delivered = true;
        if self.mailer.is_some() && !settings.emails.is_empty() {
            let text = format!(
                "{}\n\n{}\n",
                notice.subject,
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            let subject = format!("[Portcullis] {}: {}", notice.key.org, notice.subject);
            let outcome = self.mail(&settings.emails, &subject, text).await;
            delivered &= record("email", &outcome);
        }
        if let (Some(url), Some(secret)) = (&settings.webhook_url, &settings.webhook_secret) {
            let outcome = self.webhook(url, secret, body.to_string()).await;
            delivered &= record("webhook", &outcome);
        }
        delivered
    }

    /// Sends the one-time code of a grant's renewal challenge to the org's e-mail addresses.
    pub async fn send_code(
        &self,
        org: &OrgId,
        grant: &GrantRecord,
        code: &str,
        valid_for: time::Duration,
    ) -> Result<(), NotifyError> {
        let store = self.store.clone();
        let org_id = org.clone();
        let settings = blocking(move || store.notification_settings(&org_id)).await?;
        let emails = settings.map(|s| s.emails).unwrap_or_default();
        if self.mailer.is_none() || emails.is_empty() {
            return Err(NotifyError::NoAddresses);
        }
        let subject = format!(
            "[Portcullis] {org}: renewal code for access grant {}",
            grant.id
        );
        let text = format!(
            "Someone asked to renew the access grant {} on the {} {} of organisation {org}.\n\n\
             Code: {code}\n\nIt is valid for {} minutes and can be used once. If you did not ask \
             for it, tell your Portcullis operators.\n",
            grant.id,
            grant.holder.as_str().replace('_', " "),
            grant.holder_id,
            valid_for.whole_minutes(),
        );
        let outcome = self.mail(&emails, &subject, text).await;
        record("email", &outcome);
        outcome
    }

    async fn mail(&self, to: &[String], subject: &str, text: String) -> Result<(), NotifyError> {
        let mailer = self.mailer.as_ref().ok_or(NotifyError::NoAddresses)?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|_| NotifyError::Address(address.clone()))?;
            message = message.to(mailbox);
        }
        let message = message.body(text).map_err(NotifyError::Message)?;
        // lettre's timeout bounds each step of the exchange; this bounds the whole of it.
        let deadline = self.timeout * 4;
        tokio::time::timeout(deadline, mailer.send(message))
            .await
            .map_err(|_| NotifyError::SmtpTimeout(deadline))?
            .map_err(NotifyError::Smtp)?;
        Ok(())
    }

    async fn webhook(&self, url: &str, secret: &str, body: String) -> Result<(), NotifyError> {
        let signature = format!("sha256={}", sign(secret, body.as_bytes()));
        let body = Bytes::from(body);
        let mut attempt = 0;
        loop {
            let outcome = Fetch {
                method: hyper::Method::POST,
                url,
                headers: &[
                    ("content-type", "application/json"),
                    (SIGNATURE_HEADER, &signature),
                ],
                body: body.clone(),
                timeout: self.timeout,
                max_body: 64 * 1024,
            }
            .send()
            .await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(e) if attempt >= WEBHOOK_BACKOFF.len() => return Err(NotifyError::Webhook(e)),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "webhook failed; retrying");
                    tokio::time::sleep(WEBHOOK_BACKOFF[attempt]).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// HMAC-SHA256 of `body` with `secret`, lower-case hex: what the signature header carries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
}

fn record(channel: &'static str, outcome: &Result<(), NotifyError>) -> bool {
    let label = if outcome.is_ok() { "sent" } else { "failed" };
    metrics::counter!(crate::metrics::NOTIFICATIONS, "channel" => channel, "outcome" => label)
        .increment(1);
    if let Err(e) = outcome {
        tracing::warn!(channel, error = %e, "notice not delivered");
    }
    outcome.is_ok()
}

async fn blocking<T, F>(f: F) -> Result<T, NotifyError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NotifyError::Store(StoreError::Corrupt(format!("store task: {e}"))))?
        .map_err(NotifyError::Store)
}

/// The expiry threshold (days) `not_after` falls under at `now`: the smallest of 1, 7, 30 it is
/// within.
fn threshold(not_after: OffsetDateTime, now: OffsetDateTime) -> &'static str {
    let left = not_after - now;
    if left <= time::Duration::days(1) {
        "1"
    } else if left <= time::Duration::days(7) {
        "7"
    } else {
        "30"
    }
}

/// The org's settings and the notices due for it now (before the once-a-day check).
fn due(
    store: &dyn Store,
    org: &OrgId,
    alerts: Vec<(&'static str, String)>,
) -> Result<(Option<NotificationSettings>, Vec<Notice>), StoreError> {
    let Some(settings) = store.notification_settings(org)? else {
        return Ok((None, Vec::new()));
    };
    let now = store.clock().now();
    let notice = |event, object: String, threshold: &str, subject: String, details| Notice {
        key: NotificationKey {
            org: org.clone(),
            event,
            object,
            threshold: threshold.to_owned(),
        },
        subject,
        details,
    };
    let mut notices = Vec::new();
    let mut devices: BTreeMap<&'static str, Vec<(String, OffsetDateTime)>> = BTreeMap::new();
    for cert in store.expiring(org, now, now + time::Duration::days(30))? {
        let threshold = threshold(cert.not_after, now);
        if cert.kind == "device" {
            devices
                .entry(threshold)
                .or_default()
                .push((cert.name, cert.not_after));
            continue;
        }
        let at = crate::clock::rfc3339(cert.not_after);
        notices.push(notice(
            "certificate_expiring",
            format!("{}:{}", cert.kind, cert.id),
            threshold,
            format!(
                "{} certificate {:?} expires within {threshold} day(s), at {at}",
                cert.kind, cert.name
            ),
            json!({"kind": cert.kind, "id": cert.id, "name": cert.name, "not_after": at}),
        ));
    }
    for (threshold, list) in devices {
        let listed: Vec<_> = list
            .iter()
            .take(DEVICES_LISTED)
            .map(|(identity, at)| json!({"identity": identity, "not_after": crate::clock::rfc3339(*at)}))
            .collect();
        notices.push(notice(
            "devices_expiring",
            "devices".to_owned(),
            threshold,
            format!(
                "{} device certificate(s) expire within {threshold} day(s)",
                list.len()
            ),
            json!({"count": list.len(), "devices": listed}),
        ));
    }
    for grant in store.grants_to_notify(org)? {
        // One grant period (renewal starts another): its notices are told apart by its start.
        let period = crate::clock::rfc3339(grant.granted_at);
        let object = format!("grant:{}", grant.id);
        let mut events = vec![match grant.status {
            GrantStatus::Expired => ("grant_expired", "expired"),
            _ => ("grant_warning", "nearing its limits"),
        }];
        // A grant that went through `warning` faster than a pass still gets its warning.
        let warning = NotificationKey {
            org: org.clone(),
            event: "grant_warning",
            object: object.clone(),
            threshold: period.clone(),
        };
        if grant.status == GrantStatus::Expired && !store.notification_sent(&warning, None)? {
            events.push(("grant_warning", "nearing its limits"));
        }
        for (event, state) in events {
            notices.push(notice(
            event,
            object.clone(),
            &period,
            format!(
                "the access grant on {} {} is {state} ({} of {} uses, until {})",
                grant.holder.as_str().replace('_', " "),
                grant.holder_id,
                grant.uses,
                grant.max_uses,
                crate::clock::rfc3339(grant.expires_at)
            ),
            json!({
                "grant": grant.id, "holder": grant.holder.as_str(), "holder_id": grant.holder_id,
                "status": grant.status.as_str(), "uses": grant.uses, "max_uses": grant.max_uses,
                "expires_at": crate::clock::rfc3339(grant.expires_at),
            }),
        ));
        }
    }
    for (_, ca_id, alias) in store.stale_crls(Some(org), now)? {
        notices.push(notice(
            "crl_stale",
            format!("ca:{ca_id}"),
            "",
            format!("the CRL of CA {alias:?} is past its nextUpdate"),
            json!({"ca_id": ca_id}),
        ));
    }
    for (event, object) in alerts {
        let subject = format!("{} for {object}", event.replace('_', " "));
        notices.push(notice(event, object, "", subject, json!({})));
    }
    Ok((Some(settings), notices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_the_smallest_window_a_certificate_is_in() {
        let now = OffsetDateTime::now_utc();
        let days = time::Duration::days;
        assert_eq!(threshold(now + time::Duration::hours(3), now), "1");
        assert_eq!(threshold(now + days(1), now), "1");
        assert_eq!(threshold(now + days(7), now), "7");
        assert_eq!(
            threshold(now + days(7) + time::Duration::minutes(1), now),
            "30"
        );
        assert_eq!(threshold(now + days(29), now), "30");
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
