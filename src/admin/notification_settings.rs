//! `/api/v1/orgs/{org}/notification-settings`: where an org's notices go (DESIGN §11): e-mail
//! addresses, and a webhook whose POSTs carry `X-Portcullis-Signature: sha256=<HMAC-SHA256 of the
//! body with webhook_secret>`. A PUT replaces the whole settings; the secret is kept sealed and
//! never shown back. Operators change the webhook; the e-mail addresses, which receive grant
//! renewal codes, only the admin.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::{Caller, Need};
use super::error::ApiError;
use super::extract::ApiJson;
use super::views::NotificationSettingsView;
use super::{change, get_one, org_in_path, AdminState};
use crate::store::NotificationSettings;

const MAX_EMAILS: usize = 20;
const MIN_SECRET_LEN: usize = 16;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NotificationSettingsUpdate)]
pub struct Settings {
    #[schema(max_items = 20)]
    #[serde(default)]
    emails: Vec<String>,
    /// `http://` or `https://`.
    webhook_url: Option<String>,
    /// At least 16 characters; required with `webhook_url`.
    #[schema(min_length = 16)]
    webhook_secret: Option<String>,
}

fn validate(body: Settings) -> Result<NotificationSettings, ApiError> {
    if body.emails.len() > MAX_EMAILS {
        return Err(ApiError::invalid(
            "invalid_emails",
            format!("at most {MAX_EMAILS} addresses"),
        ));
    }
    let mut emails = Vec::new();
    for email in body.emails {
        let email = email.trim().to_owned();
        if email.parse::<lettre::Address>().is_err() {
            return Err(ApiError::invalid(
                "invalid_emails",
                format!("{email:?} is not an e-mail address"),
            ));
        }
        emails.push(email);
    }
    let webhook_url = body.webhook_url.filter(|u| !u.trim().is_empty());
    if let Some(url) = &webhook_url {
        if !crate::fetch::is_fetchable(url) {
            return Err(ApiError::invalid(
                "invalid_webhook_url",
                "webhook_url must be an http:// or https:// URL",
            ));
        }
    }
    let webhook_secret = body.webhook_secret.filter(|s| !s.is_empty());
    match (&webhook_url, &webhook_secret) {
        (Some(_), Some(secret)) if secret.chars().count() >= MIN_SECRET_LEN => {}
        (None, None) => {}
        _ => {
            return Err(ApiError::invalid(
                "invalid_webhook_secret",
                format!(
                    "webhook_url and webhook_secret go together; the secret has at least \
                     {MIN_SECRET_LEN} characters"
                ),
            ))
        }
    }
    Ok(NotificationSettings {
        emails,
        webhook_url,
        webhook_secret,
    })
}

#[utoipa::path(
    put,
    path = "/orgs/{org}/notification-settings",
    tag = "notifications",
    params(("org" = String, Path, description = "organisation id")),
    request_body = Settings,
    responses((status = 200, description = "replaced", body = NotificationSettingsView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<Settings>,
) -> Result<Json<NotificationSettingsView>, ApiError> {
    let org = org_in_path(&org)?;
    caller.require(&org, Need::Manage)?;
    let settings = validate(body)?;
    let cluster = state.cluster.clone();
    let settings = change(state, org, move |store, org| {
        // The addresses receive grant renewal codes: changing them is the admin's, or an
        // operator's stolen token could renew the org's grants at will.
        let held = store.notification_settings(org)?.unwrap_or_default();
        if held.emails != settings.emails {
            caller.require(org, Need::Admin)?;
        }
        let audit = caller.audit("notification_settings.update");
        let now = time::OffsetDateTime::now_utc();
        store.set_notification_settings(org, &settings, now, &audit)?;
        Ok(settings)
    })
    .await?;
    // Notices due go to the new addresses now, not at the next interval (from the leader).
    cluster.wake_notifier();
    Ok(Json(settings.into()))
}

#[utoipa::path(
    get,
    path = "/orgs/{org}/notification-settings",
    tag = "notifications",
    params(("org" = String, Path, description = "organisation id")),
    responses((status = 200, description = "done (empty when never set)", body = NotificationSettingsView), (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Json<NotificationSettingsView>, ApiError> {
    get_one(state, &caller, &org, Need::Read, "", move |store, org| {
        Ok(Some(store.notification_settings(org)?.unwrap_or_default()))
    })
    .await
}
