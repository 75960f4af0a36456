//! Expiry notices and access grants (DESIGN §11), driven by an injected clock against the real
//! server: notices land on a real SMTP server on loopback (python3-aiosmtpd) and on a webhook
//! receiver that checks each HMAC; grants warn, expire, refuse to sign, suspend their tokens and
//! are renewed with a one-time code read from the e-mail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::notices::{unfold, SmtpSink, WebhookReceiver};
use common::*;
use portcullis::clock::Clock;
use serde_json::{json, Value};
use time::{Duration as Days, OffsetDateTime};

const SECRET: &str = "a webhook secret of some length";
const SOON: Duration = Duration::from_secs(10);

async fn settings(server: &TestServer, webhook: &WebhookReceiver) {
    let (status, body) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/notification-settings",
            Some(json!({
                "emails": ["ops@acme.test", "security@acme.test"],
                "webhook_url": webhook.url,
                "webhook_secret": SECRET,
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["webhook_secret_set"], true);
    assert!(
        body.get("webhook_secret").is_none(),
        "the secret is never shown: {body}"
    );
}

/// Uploads a CA certificate expiring at `not_after` (real time); returns its id.
async fn upload_ca_expiring(server: &TestServer, cn: &str, not_after: OffsetDateTime) -> String {
    let pem = ca_pem_with(|params| {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_after = not_after;
    });
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(json!({"certificate": pem})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn arrives(what: &str, check: impl Fn() -> bool) {
    let ok = eventually(SOON, || {
        let ok = check();
        async move { ok }
    })
    .await;
    assert!(ok, "{what} did not arrive");
}

#[tokio::test]
async fn a_certificate_seven_days_from_expiry_is_listed_and_notified_once_a_day() {
    let smtp = SmtpSink::start().await;
    // The first POST fails: the notice is retried, and still sent once.
    let webhook = WebhookReceiver::start(SECRET, 1).await;
    let start = OffsetDateTime::now_utc();
    let clock = Clock::manual(start);
    let smtp_url = smtp.url();
    let server = TestServer::start_with_clock(clock.clone(), |config| {
        config.notify.smtp_url = Some(smtp_url.clone());
    })
    .await;
    server.create_org("acme").await;
    // 37 days ahead of real time: 7 days from expiry once the clock is 30 days on.
    let first = upload_ca_expiring(&server, "Expiring CA", start + Days::days(37)).await;
    clock.advance(Days::days(30));

    let (_, listed) = server
        .api("GET", "/api/v1/orgs/acme/expiring?within_days=7", None)
        .await;
    let item = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == first.as_str())
        .unwrap_or_else(|| panic!("not listed: {listed}"));
    assert_eq!(
        (item["kind"].as_str(), item["days_left"].as_i64()),
        (Some("ca"), Some(6))
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_certificates_expiring{")
                && l.contains("kind=\"ca\"")
                && l.contains("within_days=\"7\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_certificate_next_expiry_seconds"));

    // Setting the addresses starts a pass: one e-mail (to both addresses) and one webhook.
    settings(&server, &webhook).await;
    let object = format!("ca:{first}");
    arrives("the webhook", || {
        webhook.count("certificate_expiring", &object) == 1
    })
    .await;
    arrives("the e-mail", || smtp.matching(&object).len() == 1).await;
    let notice = webhook
        .received()
        .into_iter()
        .find(|n| n["object"] == object.as_str())
        .unwrap();
    assert_eq!(
        (notice["org"].as_str(), notice["threshold"].as_str()),
        (Some("acme"), Some("7"))
    );
    let mail = unfold(&smtp.matching(&object)[0]);
    assert!(
        mail.contains(
            "Subject: [Portcullis] acme: ca certificate \"Expiring CA\" expires within 7 day"
        ),
        "{mail}"
    );
    assert!(
        mail.contains("ops@acme.test") && mail.contains("security@acme.test"),
        "{mail}"
    );
    assert_eq!(webhook.bad_signatures(), 0);

    // A second pass the same day sends nothing again; a second CA due now shows the pass ran.
    let second = upload_ca_expiring(&server, "Second CA", start + Days::days(35)).await;
    settings(&server, &webhook).await;
    arrives("the second CA's notice", || {
        webhook.count("certificate_expiring", &format!("ca:{second}")) == 1
    })
    .await;
    assert_eq!(webhook.count("certificate_expiring", &object), 1);
    assert_eq!(smtp.matching(&object).len(), 1);

    // A restart does not resend (the start pass runs; a third CA shows a pass ran after it).
    let (dir, _keep) = server.stop().await;
    let smtp_url = smtp.url();
    let server = TestServer::start_at(dir, clock.clone(), |config| {
        config.notify.smtp_url = Some(smtp_url);
    })
    .await;
    let third = upload_ca_expiring(&server, "Third CA", start + Days::days(36)).await;
    settings(&server, &webhook).await;
    arrives("the third CA's notice", || {
        webhook.count("certificate_expiring", &format!("ca:{third}")) == 1
    })
    .await;
    assert_eq!(webhook.count("certificate_expiring", &object), 1);
    assert_eq!(smtp.matching(&object).len(), 1);

    // Once a day, not once ever: the next day it goes again.
    clock.advance(Days::days(1));
    settings(&server, &webhook).await;
    arrives("the next day's notice", || {
        webhook.count("certificate_expiring", &object) == 2
    })
    .await;
    assert_eq!(webhook.bad_signatures(), 0);
    server.stop().await;
}

/// The org's one grant: on its default signing certificate.
async fn grant(server: &TestServer) -> Value {
    let (status, list) = server.api("GET", "/api/v1/orgs/acme/grants", None).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    items[0].clone()
}

async fn new_token(server: &TestServer, name: &str) -> (u16, Value) {
    server
        .api(
            "POST",
            "/api/v1/orgs/acme/tokens",
            Some(json!({"name": name, "role": "operator", "ttl_seconds": 3600})),
        )
        .await
}

/// The one-time code of the latest renewal e-mail, once `count` of them arrived.
async fn code(smtp: &SmtpSink, count: usize) -> String {
    arrives("the renewal code", || {
        smtp.matching("renewal code").len() == count
    })
    .await;
    let mail = smtp.matching("renewal code").pop().unwrap();
    let at = mail.find("Code: ").unwrap() + "Code: ".len();
    mail[at..at + 8].to_owned()
}

async fn renew(server: &TestServer, grant_id: &str, code: &str) -> (u16, Value) {
    server
        .api(
            "POST",
            &format!("/api/v1/orgs/acme/grants/{grant_id}/renew"),
            Some(json!({ "code": code })),
        )
        .await
}

async fn challenge(server: &TestServer, grant_id: &str) {
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/v1/orgs/acme/grants/{grant_id}/renewal-challenge"),
            None,
        )
        .await;
    assert_eq!((status, body["sent_to"].as_u64()), (201, Some(2)), "{body}");
}

fn wrong(code: &str) -> String {
    let last = code.as_bytes()[7];
    format!("{}{}", &code[..7], if last == b'0' { '1' } else { '0' })
}

#[tokio::test]
async fn a_grant_warns_expires_suspends_its_tokens_and_is_renewed_with_its_code() {
    let smtp = SmtpSink::start().await;
    let webhook = WebhookReceiver::start(SECRET, 0).await;
    let clock = Clock::manual(OffsetDateTime::now_utc());
    let smtp_url = smtp.url();
    let server = TestServer::start_with_clock(clock.clone(), |config| {
        config.notify.smtp_url = Some(smtp_url);
        config.grants.max_uses = 10;
    })
    .await;
    server.create_org("acme").await;
    settings(&server, &webhook).await;
    let first = grant(&server).await;
    assert_eq!(
        (
            first["status"].as_str(),
            first["uses"].as_i64(),
            first["max_uses"].as_i64()
        ),
        (Some("active"), Some(0), Some(10))
    );
    assert_eq!(first["holder"], "signing_certificate");
    let grant_id = first["id"].as_str().unwrap().to_owned();
    let object = format!("grant:{grant_id}");

    // Each token signed is one use; the ninth (90 %) turns the grant to warning.
    let (status, operator) = new_token(&server, "operator").await;
    assert_eq!(status, 201, "{operator}");
    let (operator_id, operator) = (
        operator["id"].as_str().unwrap().to_owned(),
        operator["token"].as_str().unwrap().to_owned(),
    );
    for n in 2..=8 {
        assert_eq!(new_token(&server, &format!("t{n}")).await.0, 201);
    }
    assert_eq!(grant(&server).await["status"], "active");
    assert_eq!(new_token(&server, "t9").await.0, 201);
    let warned = grant(&server).await;
    assert_eq!(
        (warned["status"].as_str(), warned["uses"].as_i64()),
        (Some("warning"), Some(9))
    );
    let (_, warning) = server
        .api("GET", "/api/v1/orgs/acme/grants?status=warning", None)
        .await;
    assert_eq!(warning["items"].as_array().unwrap().len(), 1, "{warning}");
    let holder = warned["holder_id"].as_str().unwrap().to_owned();
    let (_, signing) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/signing-certificates/{holder}"),
            None,
        )
        .await;
    assert_eq!(signing["grant"]["status"], "warning", "{signing}");
    let (_, filtered) = server
        .api(
            "GET",
            "/api/v1/orgs/acme/signing-certificates?grant_status=warning",
            None,
        )
        .await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1, "{filtered}");
    arrives("the warning", || {
        webhook.count("grant_warning", &object) == 1
    })
    .await;

    // The tenth use is the last: expired; the next signature is refused; the tokens it signed
    // are suspended.
    assert_eq!(new_token(&server, "t10").await.0, 201);
    let expired = grant(&server).await;
    assert_eq!(
        (expired["status"].as_str(), expired["uses"].as_i64()),
        (Some("expired"), Some(10))
    );
    let (status, refused) = new_token(&server, "t11").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("grant_expired")),
        "{refused}"
    );
    let (status, body) = server
        .api_as(&operator, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_suspended")),
        "{body}"
    );
    let (_, record) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/tokens/{operator_id}"),
            None,
        )
        .await;
    assert_eq!(record["status"], "suspended");
    arrives("the expiry notice", || {
        webhook.count("grant_expired", &object) == 1
    })
    .await;
    arrives("the expiry e-mail", || smtp.matching(&object).len() == 2).await;
    // Reactivating a token while its key's grant is expired is refused.
    let reactivate = json!({"status": "active"});
    let token_path = format!("/api/v1/orgs/acme/tokens/{operator_id}");
    let (status, body) = server
        .api("PATCH", &token_path, Some(reactivate.clone()))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("grant_expired"))
    );

    // Renewal: a wrong code, then an expired one, then the right one.
    challenge(&server, &grant_id).await;
    let code1 = code(&smtp, 1).await;
    let (status, body) = renew(&server, &grant_id, &wrong(&code1)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("challenge_invalid"))
    );
    clock.advance(Days::minutes(3));
    let (status, body) = renew(&server, &grant_id, &code1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("challenge_expired"))
    );
    challenge(&server, &grant_id).await;
    let code2 = code(&smtp, 2).await;
    let (status, renewed) = renew(&server, &grant_id, &code2).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(
        (renewed["status"].as_str(), renewed["uses"].as_i64()),
        (Some("active"), Some(0))
    );
    let expires_at = OffsetDateTime::parse(
        renewed["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((expires_at - (clock.now() + Days::days(60))).abs() < Days::seconds(2));
    // A code is good once.
    let (status, _) = renew(&server, &grant_id, &code2).await;
    assert_eq!(status, 422);

    // The tokens stay suspended until an operator reactivates them.
    let (status, _) = server
        .api_as(&operator, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 401);
    let (status, body) = server.api("PATCH", &token_path, Some(reactivate)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .api_as(&operator, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(new_token(&server, "after renewal").await.0, 201);

    // Five wrong codes void a challenge: the right code is then refused too.
    challenge(&server, &grant_id).await;
    let code3 = code(&smtp, 3).await;
    for _ in 0..5 {
        let (status, body) = renew(&server, &grant_id, &wrong(&code3)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("challenge_invalid"))
        );
    }
    let (status, body) = renew(&server, &grant_id, &code3).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("challenge_invalid"))
    );

    // Time runs out too: a warning from 7 days before the end, expired at 60 days.
    clock.advance(Days::days(54));
    assert_eq!(grant(&server).await["status"], "warning");
    clock.advance(Days::days(7));
    let (status, body) = server
        .api_as(&operator, "GET", "/api/v1/orgs/acme", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_suspended"))
    );
    let (status, body) = new_token(&server, "too late").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("grant_expired"))
    );
    assert_eq!(webhook.bad_signatures(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_grant_on_a_key_imported_from_pkcs12_renews_only_with_that_file_s_passphrase() {
    let smtp = SmtpSink::start().await;
    let webhook = WebhookReceiver::start(SECRET, 0).await;
    let smtp_url = smtp.url();
    let server = TestServer::start_with(|config| config.notify.smtp_url = Some(smtp_url)).await;
    server.create_org("acme").await;
    settings(&server, &webhook).await;
    let ca = TestCa::root("Acme Issuing CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", ca.key_pkcs8()));
    std::fs::write(dir.path().join("ca.key"), key).unwrap();
    openssl(
        dir.path(),
        &[
            "pkcs12",
            "-export",
            "-in",
            "ca.pem",
            "-inkey",
            "ca.key",
            "-passout",
            "pass:p12 pass",
            "-out",
            "ca.p12",
        ],
    );
    use base64::Engine;
    let p12 = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(dir.path().join("ca.p12")).unwrap());
    let (status, imported) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/ca-certificates",
            Some(json!({"pkcs12": p12, "password": "p12 pass"})),
        )
        .await;
    assert_eq!(status, 201, "{imported}");
    let grant = &imported["grant"];
    assert_eq!(grant["needs_key_passphrase"], true, "{imported}");
    let grant_id = grant["id"].as_str().unwrap();

    challenge(&server, grant_id).await;
    let code = code(&smtp, 1).await;
    let path = format!("/api/v1/orgs/acme/grants/{grant_id}/renew");
    let renew_with = |passphrase: Option<&str>| {
        let mut body = json!({ "code": code });
        if let Some(p) = passphrase {
            body["key_passphrase"] = json!(p);
        }
        server.api("POST", &path, Some(body))
    };
    for passphrase in [None, Some("wrong")] {
        let (status, body) = renew_with(passphrase).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("key_passphrase_invalid")),
            "{passphrase:?}: {body}"
        );
    }
    let (status, renewed) = renew_with(Some("p12 pass")).await;
    assert_eq!(
        (status, renewed["status"].as_str()),
        (200, Some("active")),
        "{renewed}"
    );
    // The passphrase is never shown back, nor logged.
    assert!(!renewed.to_string().contains("p12 pass"));
    server.stop().await;
}

#[tokio::test]
async fn a_grant_that_runs_out_before_a_pass_still_sends_its_warning() {
    let webhook = WebhookReceiver::start(SECRET, 0).await;
    let server = TestServer::start_with(|config| config.grants.max_uses = 2).await;
    server.create_org("acme").await;
    settings(&server, &webhook).await;
    let object = format!("grant:{}", grant(&server).await["id"].as_str().unwrap());
    // Two uses of two: active to expired in one signature, never seen in `warning`.
    for name in ["one", "two"] {
        assert_eq!(new_token(&server, name).await.0, 201);
    }
    assert_eq!(grant(&server).await["status"], "expired");
    arrives("the expiry", || {
        webhook.count("grant_expired", &object) == 1
    })
    .await;
    arrives("the warning", || {
        webhook.count("grant_warning", &object) == 1
    })
    .await;
    server.stop().await;
}
