//! The web console (`/console/`, DESIGN §13) in a real browser: Debian's headless chromium driven
//! over WebDriver (chromedriver) against the real server, with real MQTT devices. Signing in keeps
//! the token in the tab's sessionStorage only; an org's sections (overview, CA certificates,
//! devices, live sessions, events, refusals, blocklist and CRLs, audit log) show what the API
//! says; CAs are uploaded through the file input, deactivated and deleted, and devices blocked,
//! only after their dry run was shown, sessions disconnected after a confirmation, and the API
//! checked for what changed; a viewer is offered no change; strings from the server are shown as
//! text.
//!
//! `CONSOLE_SCREENSHOTS=docs` also saves the README's screenshots (`docs/console-*.png`).
//!
//! These tests need `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`); without them they fail, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use time::OffsetDateTime;

use common::*;

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const IMG_PROBE: &str = r#"<img src=x onerror="window.__xss=1">"#;
const BLOCK_PROBE: &str = r#"<img src=x onerror="window.__xss=3">"#;
const SCRIPT_PROBE: &str = "<script>window.__xss=2</script>";
/// The CA certificates section is shown (a list, or the sentence saying there is none).
const CAS_SHOWN: &str =
    "!!document.getElementById('ca-list') || !!document.querySelector('#cas p')";
/// Starting chromium on a busy 2-core machine can take a while.
const BROWSER_START: Duration = Duration::from_secs(60);

/// A chromedriver in a process group of its own; dropping it ends the group (the browsers it
/// started with it).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// One headless chromium session, through its own chromedriver on a free loopback port.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = {
            let free = TcpListener::bind("127.0.0.1:0").unwrap();
            free.local_addr().unwrap().port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not be started ({e}): the console tests need Debian's \
                     chromium and chromium-driver (apt-get install chromium chromium-driver)"
                )
            });
        let driver = Driver(child);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let listening = eventually(Duration::from_secs(20), || async {
            TcpStream::connect(address).is_ok()
        })
        .await;
        assert!(listening, "chromedriver did not listen on {address}");

        let profile = tempfile::tempdir().unwrap();
        let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("no chromium binary: apt-get install chromium chromium-driver");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            BROWSER_START,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://{address}")),
        )
        .await
        .expect("chromium did not start within a minute")
        .expect("chromedriver refused the session");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        step(self.client.goto(url)).await.unwrap();
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&self, expression: &str) -> Value {
        step(
            self.client
                .execute(&format!("return ({expression});"), Vec::new()),
        )
        .await
        .unwrap()
    }

    /// Waits until `expression` is true in the page (one that throws, say on an element not
    /// there yet, is not true yet).
    async fn until(&self, expression: &str) {
        let guarded =
            format!("(() => {{ try {{ return ({expression}); }} catch {{ return false; }} }})()");
        let met = eventually(STEP, || async {
            self.eval(&guarded).await == Value::Bool(true)
        })
        .await;
        if !met {
            let page = self.eval("document.body.innerText").await;
            panic!("in the page, never true: {expression}\nthe page said: {page}");
        }
    }

    /// The text of the first element `css` finds (null when none does).
    async fn text(&self, css: &str) -> Value {
        let css = serde_json::to_string(css).unwrap();
        self.eval(&format!(
            "document.querySelector({css}) && document.querySelector({css}).textContent"
        ))
        .await
    }

    /// The text of every element `css` finds.
    async fn texts(&self, css: &str) -> Value {
        let css = serde_json::to_string(css).unwrap();
        self.eval(&format!(
            "[...document.querySelectorAll({css})].map(e => e.textContent)"
        ))
        .await
    }

    /// Types `text` into the field with id `id`.
    async fn type_into(&self, id: &str, text: &str) {
        let field = step(self.client.find(Locator::Id(id))).await.unwrap();
        step(field.send_keys(text)).await.unwrap();
    }

    /// The labels of the buttons shown in the page's main part.
    async fn buttons(&self) -> Value {
        self.eval(
            "[...document.querySelectorAll('main button:not([hidden])')].map(b => b.textContent)",
        )
        .await
    }

    async fn click(&self, xpath: &str) {
        let element = step(self.client.wait().for_element(Locator::XPath(xpath)))
            .await
            .unwrap_or_else(|e| panic!("nothing to click at {xpath}: {e}"));
        step(element.click()).await.unwrap();
    }

    /// Signs in through the form, as a person does: the field labelled "Token", then "Sign in".
    async fn sign_in(&self, server: &TestServer, token: &str) {
        self.goto(&server.url("/console/")).await;
        self.until("!!document.querySelector('label[for=token]')")
            .await;
        let label = self.text("label[for=token]").await;
        assert_eq!(label, "Token");
        let field = step(self.client.find(Locator::Id("token"))).await.unwrap();
        step(field.send_keys(token)).await.unwrap();
        self.click("//button[normalize-space(.)='Sign in']").await;
        self.until("document.getElementById('who').textContent !== ''")
            .await;
    }

    /// Opens the page of `org` from the org list: its overview.
    async fn open_org(&self, org: &str) {
        self.until("!!document.getElementById('orgs')").await;
        self.click(&format!(
            "//table[@id='orgs']//a[normalize-space(.)='{org}']"
        ))
        .await;
        self.until("!!document.getElementById('overview-grants')")
            .await;
    }

    /// Opens the section titled `title` from the org page's tabs, and waits until `ready` (an
    /// expression) is true in it.
    async fn section(&self, title: &str, ready: &str) {
        self.click(&format!(
            "//nav[@id='sections']//a[normalize-space(.)='{title}']"
        ))
        .await;
        self.until(&format!(
            "document.querySelector('#sections a[aria-current=page]').textContent === '{title}' \
             && ({ready})"
        ))
        .await;
    }

    /// With `CONSOLE_SCREENSHOTS=docs`, saves the page as `docs/console-<name>.png`, in a
    /// window `height` pixels high.
    async fn screenshot(&self, name: &str, height: u32) {
        if std::env::var("CONSOLE_SCREENSHOTS").as_deref() != Ok("docs") {
            return;
        }
        step(self.client.set_window_size(1280, height))
            .await
            .unwrap();
        let png = step(self.client.screenshot()).await.unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/console-{name}.png"));
        std::fs::write(&path, png).unwrap();
    }

    async fn close(self) {
        step(self.client.close()).await.unwrap();
    }
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    step(reqwest::get(server.url(path))).await.unwrap()
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_console_is_served_with_its_security_headers_and_no_inline_script() {
    let server = TestServer::start().await;
    let index = get(&server, "/console/").await;
    assert_eq!(index.status(), 200);
    assert_eq!(header(&index, "content-security-policy"), CSP);
    assert_eq!(header(&index, "x-content-type-options"), "nosniff");
    assert_eq!(header(&index, "referrer-policy"), "no-referrer");
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    let html = step(index.text()).await.unwrap();

    // Every script is a file of the console's, none has a body; no inline style either.
    let mut scripts = 0;
    for (at, _) in html.match_indices("<script") {
        scripts += 1;
        let tag_end = at + html[at..].find('>').unwrap();
        let tag = &html[at..=tag_end];
        assert!(tag.contains(" src=\""), "a script without src: {tag}");
        assert!(
            html[tag_end + 1..].starts_with("</script>"),
            "a script with an inline body: {tag}"
        );
    }
    assert_eq!(scripts, 1, "{html}");
    assert!(!html.contains("<style") && !html.contains(" style="));
    assert!(!html.contains("http://") && !html.contains("https://"));

    for (file, media_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("dom.js", "text/javascript; charset=utf-8"),
        ("ui.js", "text/javascript; charset=utf-8"),
        ("pages/overview.js", "text/javascript; charset=utf-8"),
        ("pages/cas.js", "text/javascript; charset=utf-8"),
        ("pages/devices.js", "text/javascript; charset=utf-8"),
        ("pages/sessions.js", "text/javascript; charset=utf-8"),
        ("pages/events.js", "text/javascript; charset=utf-8"),
        ("pages/refusals.js", "text/javascript; charset=utf-8"),
        ("pages/blocklist.js", "text/javascript; charset=utf-8"),
        ("pages/audit.js", "text/javascript; charset=utf-8"),
        ("pages/server-certs.js", "text/javascript; charset=utf-8"),
        ("pages/approvals.js", "text/javascript; charset=utf-8"),
        ("pages/tokens.js", "text/javascript; charset=utf-8"),
        ("pages/grants.js", "text/javascript; charset=utf-8"),
        ("pages/notifications.js", "text/javascript; charset=utf-8"),
        ("pages/settings.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let response = get(&server, &format!("/console/{file}")).await;
        assert_eq!(response.status(), 200, "{file}");
        assert_eq!(header(&response, "content-type"), media_type, "{file}");
        assert_eq!(header(&response, "content-security-policy"), CSP, "{file}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let text = step(response.text()).await.unwrap();
        // Server strings go in as text: the console never parses markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!text.contains(sink), "{file} uses {sink}");
        }
        assert!(!text.contains("localStorage"), "{file} uses localStorage");
        // The token's one keeper is api.js.
        if file != "api.js" {
            assert!(
                !text.contains("sessionStorage"),
                "{file} uses sessionStorage"
            );
        }
    }

    for unknown in [
        "/console/nosuch.js",
        "/console/a/b",
        "/console/index.html/x",
    ] {
        let response = get(&server, unknown).await;
        assert_eq!(response.status(), 404, "{unknown}");
        assert_eq!(header(&response, "content-security-policy"), CSP);
    }
    // The console is public; the API behind it is not.
    let orgs = get(&server, "/api/v1/orgs").await;
    assert_eq!(orgs.status(), 401);
}

#[tokio::test]
async fn signing_in_keeps_the_token_in_the_tab_and_lists_the_orgs_as_text() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs",
            Some(json!({"id": "probe", "name": SCRIPT_PROBE})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let browser = Browser::start().await;

    browser.goto(&server.url("/console/")).await;
    browser
        .until("!!document.querySelector('label[for=token]')")
        .await;
    browser.screenshot("sign-in", 560).await;
    browser.sign_in(&server, &server.token).await;
    browser.until("!!document.getElementById('orgs')").await;
    browser.screenshot("orgs", 520).await;

    let kept = browser
        .eval("sessionStorage.getItem('portcullis.token')")
        .await;
    assert_eq!(kept, server.token.as_str(), "the token is kept for the tab");
    assert_eq!(browser.eval("localStorage.length").await, 0);
    let url = step(browser.client.current_url()).await.unwrap();
    assert!(!url.as_str().contains(&server.token), "{url}");
    assert_eq!(
        browser.text("#who").await,
        "admin token · admin",
        "whoami's answer is shown"
    );

    let names = browser
        .eval("[...document.querySelectorAll('#orgs tbody tr td:nth-child(2)')].map(td => td.textContent)")
        .await;
    assert_eq!(names, json!(["acme", SCRIPT_PROBE]));
    browser.open_org("probe").await;
    assert_eq!(browser.text("#org-name").await, SCRIPT_PROBE);
    assert_eq!(
        browser
            .eval("document.querySelectorAll('main script').length")
            .await,
        0
    );
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");

    // Signing out forgets the token.
    browser
        .click("//button[normalize-space(.)='Sign out']")
        .await;
    browser
        .until("!!document.querySelector('label[for=token]')")
        .await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('portcullis.token')")
            .await,
        Value::Null
    );
    browser.close().await;
}

#[tokio::test]
async fn an_operator_uploads_cas_and_changes_them_only_after_their_dry_run() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let ca = TestCa::root("acme fleet CA");
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("fleet-ca.pem");
    std::fs::write(&file, &ca.pem).unwrap();
    let browser = Browser::start().await;

    browser.sign_in(&server, &operator).await;
    assert_eq!(browser.text("#who").await, "ops · operator of acme");
    // An org token sees its own org only.
    browser.until("!!document.getElementById('orgs')").await;
    let rows = browser
        .eval("document.querySelectorAll('#orgs tbody tr').length")
        .await;
    assert_eq!(rows, 1);
    browser.open_org("acme").await;
    browser.section("CA certificates", CAS_SHOWN).await;

    // Upload through the file input, with a description that is markup.
    let description = step(browser.client.find(Locator::Id("ca-description")))
        .await
        .unwrap();
    step(description.send_keys(IMG_PROBE)).await.unwrap();
    let input = step(browser.client.find(Locator::Css("input[type=file]")))
        .await
        .unwrap();
    step(input.send_keys(file.to_str().unwrap())).await.unwrap();
    browser.click("//button[normalize-space(.)='Upload']").await;
    browser
        .until("!!document.querySelector('#ca-list tbody tr')")
        .await;
    let (_, listed) = server
        .api("GET", "/api/v1/orgs/acme/ca-certificates", None)
        .await;
    let listed = listed["items"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "the API lists the uploaded CA");
    assert_eq!(listed[0]["subject"], "CN=acme fleet CA");
    assert_eq!(listed[0]["description"], IMG_PROBE);
    let ca_id = listed[0]["id"].as_str().unwrap().to_owned();
    let cells = browser
        .eval("[...document.querySelectorAll('#ca-list tbody td')].map(td => td.textContent)")
        .await;
    assert_eq!(cells[0], "CN=acme fleet CA");
    assert_eq!(cells[1], IMG_PROBE, "the description is shown as text");
    assert_eq!(cells[2], "active");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('main img').length")
            .await,
        0
    );

    // A device connects under it: the live list shows it (the event stream refreshes it).
    browser
        .section("Live sessions", "!!document.querySelector('#sessions p')")
        .await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let closed = server.live_device(&cert, "dev1").await;
    let registered = eventually(Duration::from_secs(10), || async {
        let (_, body) = server.api("GET", "/api/v1/orgs/acme/devices", None).await;
        body["items"].as_array().map_or(0, Vec::len) == 1
    })
    .await;
    assert!(registered, "the device is registered");
    browser
        .until("(document.querySelector('#session-list') || {}).textContent?.includes('d:acme:sensor:dev1')")
        .await;

    // Deactivating shows its dry run first, and changes nothing until confirmed.
    browser.section("CA certificates", CAS_SHOWN).await;
    browser
        .click("//table[@id='ca-list']//button[normalize-space(.)='Deactivate']")
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(browser.text("#would-close").await, "Would close 1 session.");
    assert_eq!(
        browser.text("#would-refuse").await,
        "Would lock out 1 device."
    );
    let named = browser
        .eval("[...document.querySelectorAll('#ca-confirm .ids li')].map(li => li.textContent)")
        .await;
    assert_eq!(named, json!(["d:acme:sensor:dev1", "d:sensor:dev1"]));
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}");
    let (_, still) = server.api("GET", &path, None).await;
    assert_eq!(still["active"], true, "the dry run changed nothing");
    browser.screenshot("org", 900).await;

    browser
        .click("//button[normalize-space(.)='Confirm deactivation']")
        .await;
    assert!(step(closed).await.is_ok(), "the device's session is closed");
    let (_, after) = server.api("GET", &path, None).await;
    assert_eq!(after["active"], false);
    browser
        .until(
            "document.querySelector('#ca-list tbody td:nth-child(3)').textContent === 'inactive'",
        )
        .await;
    browser
        .section(
            "Live sessions",
            "!!document.querySelector('#sessions p') && !document.getElementById('session-list')",
        )
        .await;
    browser.section("CA certificates", CAS_SHOWN).await;

    // Activating breaks nothing: no dry run.
    browser
        .click("//table[@id='ca-list']//button[normalize-space(.)='Activate']")
        .await;
    browser
        .until("document.querySelector('#ca-list tbody td:nth-child(3)').textContent === 'active'")
        .await;
    let (_, after) = server.api("GET", &path, None).await;
    assert_eq!(after["active"], true);

    // A CA dropped on the upload area is uploaded too; deleting it shows its dry run first.
    let spare = TestCa::root("acme spare CA");
    let dropped = browser
        .client
        .execute(
            "const [pem] = arguments;
             const files = new DataTransfer();
             files.items.add(new File([pem], 'spare-ca.pem', {type: 'application/x-pem-file'}));
             const zone = document.getElementById('ca-drop');
             for (const kind of ['dragover', 'drop']) {
               zone.dispatchEvent(new DragEvent(kind, {dataTransfer: files, bubbles: true, cancelable: true}));
             }
             return document.getElementById('ca-chosen').textContent;",
            vec![json!(spare.pem)],
        )
        .await
        .unwrap();
    assert_eq!(dropped, "Chosen: spare-ca.pem");
    browser.click("//button[normalize-space(.)='Upload']").await;
    let spare_row = "//table[@id='ca-list']//tr[td[normalize-space(.)='CN=acme spare CA']]";
    step(browser.client.wait().for_element(Locator::XPath(spare_row)))
        .await
        .unwrap();
    let (_, listed) = server
        .api("GET", "/api/v1/orgs/acme/ca-certificates?q=spare", None)
        .await;
    let spare_id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    browser
        .click(&format!("{spare_row}//button[normalize-space(.)='Delete']"))
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(
        browser.text("#would-close").await,
        "Would close 0 sessions."
    );
    assert_eq!(
        browser.text("#would-refuse").await,
        "Would lock out 0 devices."
    );
    let spare_path = format!("/api/v1/orgs/acme/ca-certificates/{spare_id}");
    let (status, _) = server.api("GET", &spare_path, None).await;
    assert_eq!(status, 200, "the dry run deleted nothing");
    browser
        .click("//button[normalize-space(.)='Confirm deletion']")
        .await;
    browser
        .until("document.querySelectorAll('#ca-list tbody tr').length === 1")
        .await;
    let (status, _) = server.api("GET", &spare_path, None).await;
    assert_eq!(status, 404, "deleted once confirmed");
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
    browser.close().await;
}

#[tokio::test]
async fn a_viewer_is_offered_no_change_and_a_revoked_token_signs_out() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (viewer_id, viewer) = server.issue_token("acme", "watcher", "viewer").await;
    let _dev1 = server
        .live_device(&ca.client("d:sensor:dev1", &[]), "dev1")
        .await;
    registered(&server, 1).await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/orgs/acme/blocked-devices",
            Some(json!({"identity": "d:sensor:lost", "reason": "stolen"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let browser = Browser::start().await;

    browser.sign_in(&server, &viewer).await;
    browser.open_org("acme").await;
    browser
        .section(
            "CA certificates",
            "!!document.querySelector('#ca-list tbody tr')",
        )
        .await;
    let offered = browser
        .eval(
            "[!!document.getElementById('upload'), \
              document.querySelectorAll('input[type=file]').length, \
              [...document.querySelectorAll('main button')].map(b => b.textContent)]",
        )
        .await;
    assert_eq!(
        offered,
        json!([false, 0, []]),
        "a viewer is offered nothing"
    );
    // Nor a disconnect, a block or an unblock: what it sees has no button.
    for (title, ready) in [
        (
            "Devices",
            "!!document.querySelector('#device-list tbody tr')",
        ),
        (
            "Live sessions",
            "!!document.querySelector('#session-list tbody tr')",
        ),
        (
            "Blocklist and CRLs",
            "!!document.querySelector('#block-list tbody tr')",
        ),
    ] {
        browser.section(title, ready).await;
        assert_eq!(browser.buttons().await, json!([]), "{title}");
    }
    // A section that does not exist is said so.
    browser
        .eval("(location.hash = '#/orgs/acme/nosuch', true)")
        .await;
    browser
        .until("document.getElementById('status').textContent === 'No section \"nosuch\" here.'")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sections a[aria-current]').length")
            .await,
        0
    );

    // Its token revoked, the next call is refused: back to signing in, the token forgotten.
    let (status, _) = server
        .api(
            "DELETE",
            &format!("/api/v1/orgs/acme/tokens/{viewer_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    browser
        .click("//nav//a[normalize-space(.)='Organisations']")
        .await;
    browser
        .until("!!document.querySelector('label[for=token]')")
        .await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('portcullis.token')")
            .await,
        Value::Null
    );
    assert!(browser
        .text("#status")
        .await
        .as_str()
        .unwrap()
        .contains("refused"));
    browser.close().await;
}

/// The SNI of org acme's devices.
const ACME: &str = "acme.messaging.localhost";

/// The items of an API list (one page).
async fn items(server: &TestServer, path: &str) -> Vec<Value> {
    let (status, body) = server.api("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["items"].as_array().unwrap().clone()
}

/// Waits until the device registry (written behind) holds `n` devices of acme.
async fn registered(server: &TestServer, n: usize) {
    let done = eventually(Duration::from_secs(10), || async {
        items(server, "/api/v1/orgs/acme/devices").await.len() == n
    })
    .await;
    assert!(done, "the registry never held {n} devices");
}

#[tokio::test]
async fn the_overview_counts_sessions_refusals_expiring_certificates_and_grant_warnings() {
    let server = TestServer::start_with(|config| config.grants.max_uses = 10).await;
    let (ca, _) = server.org_with_ca("acme").await;
    // Nine tokens signed: the signing key's grant turns to warning (90 % of its uses).
    let (_, viewer) = server.issue_token("acme", "watcher", "viewer").await;
    for n in 2..=9 {
        server.issue_token("acme", &format!("t{n}"), "viewer").await;
    }
    let warned = items(&server, "/api/v1/orgs/acme/grants?status=warning").await;
    assert_eq!(warned.len(), 1);

    // Two devices live, one of them with a certificate that expires in 10 days; one refused.
    let now = OffsetDateTime::now_utc();
    let lasting = ca.client("d:sensor:dev1", &[]);
    let _dev1 = server.live_device(&lasting, "dev1").await;
    let soon = ca.client_valid(
        "d:sensor:dev2",
        &[],
        now - time::Duration::days(1),
        now + time::Duration::days(10),
    );
    let _dev2 = server.live_device(&soon, "dev2").await;
    let bridge = server.bridge(ACME, &lasting).await;
    mqtt::refused_v4(mqtt::v4_options(bridge, "d:acme:sensor:dev3")).await;
    registered(&server, 2).await;
    let refusals = items(&server, "/api/v1/orgs/acme/refusals").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let (_, expiring) = server
        .api("GET", "/api/v1/orgs/acme/expiring?within_days=30", None)
        .await;
    let expiring: Vec<_> = expiring["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["kind"], e["name"]]))
        .collect();
    assert!(
        expiring.contains(&json!(["device", "d:sensor:dev2"])),
        "{expiring:?}"
    );

    let browser = Browser::start().await;
    browser.sign_in(&server, &viewer).await;
    browser.open_org("acme").await;
    assert_eq!(browser.text("#overview-sessions .figure").await, "2");
    assert_eq!(browser.text("#overview-refusals .figure").await, "1");
    assert_eq!(
        browser.texts("#refusal-reasons tbody td").await,
        json!([refusals[0]["reason"], "1"])
    );
    let shown = browser
        .eval(
            "[...document.querySelectorAll('#expiring-list tbody tr')]\
             .map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])",
        )
        .await;
    assert_eq!(shown, json!(expiring), "the API's expiring certificates");
    let expires = warned[0]["expires_at"].as_str().unwrap();
    assert_eq!(
        browser.texts("#grant-warnings tbody td").await,
        json!([
            "warning",
            format!(
                "signing_certificate {}",
                warned[0]["holder_id"].as_str().unwrap()
            ),
            "9 of 10",
            format!("{} UTC", expires[..16].replace('T', " ")),
        ])
    );
    browser.screenshot("overview", 1000).await;
    browser.close().await;
}

#[tokio::test]
async fn an_operator_disconnects_a_session_after_confirming_and_the_device_is_gone() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let closed = server
        .live_device(&ca.client("d:sensor:dev1", &[]), "dev1")
        .await;
    let browser = Browser::start().await;
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section("Live sessions", "!!document.getElementById('session-list')")
        .await;

    browser
        .click("//table[@id='session-list']//button[normalize-space(.)='Disconnect']")
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(
        browser.text("#confirm-title").await,
        "Disconnect d:acme:sensor:dev1?"
    );
    assert_eq!(
        browser.text("#would-close").await,
        "Would close the session d:acme:sensor:dev1 (the device may connect again)."
    );
    let live = items(&server, "/api/v1/orgs/acme/sessions").await;
    assert_eq!(live.len(), 1, "asking changed nothing");

    browser
        .click("//button[normalize-space(.)='Confirm disconnect']")
        .await;
    assert!(
        closes_within_a_second(closed).await,
        "the device's connection is closed"
    );
    browser
        .until("!document.getElementById('session-list')")
        .await;
    assert_eq!(
        browser.text("#status").await,
        "Disconnected d:acme:sensor:dev1."
    );
    assert!(items(&server, "/api/v1/orgs/acme/sessions")
        .await
        .is_empty());
    let audit = items(&server, "/api/v1/orgs/acme/audit-events").await;
    let last = audit.last().unwrap();
    assert_eq!(
        (&last["action"], &last["actor"], &last["target"]),
        (
            &json!("session.disconnect"),
            &json!("ops"),
            &json!("d:acme:sensor:dev1")
        )
    );
    browser.close().await;
}

#[tokio::test]
async fn the_event_stream_is_listed_newest_first() {
    let server = TestServer::start().await;
    let (ca, _) = server.org_with_ca("acme").await;
    let browser = Browser::start().await;
    browser.sign_in(&server, &server.token).await;
    browser.open_org("acme").await;
    browser
        .section(
            "Events",
            "document.getElementById('events-state').textContent === 'Live.'",
        )
        .await;

    let cert = ca.client("d:sensor:dev1", &[]);
    let closed = server.live_device(&cert, "dev1").await;
    let bridge = server.bridge(ACME, &cert).await;
    mqtt::refused_v4(mqtt::v4_options(bridge, "d:acme:sensor:dev9")).await;
    let (status, _) = server
        .api(
            "DELETE",
            "/api/v1/orgs/acme/sessions/d:acme:sensor:dev1",
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(step(closed).await.is_ok());

    browser
        .until("document.querySelectorAll('#event-list tbody tr').length === 3")
        .await;
    let rows = browser
        .eval(
            "[...document.querySelectorAll('#event-list tbody tr')]\
             .map(tr => [...tr.cells].slice(1, 5).map(td => td.textContent))",
        )
        .await;
    let refusal = &items(&server, "/api/v1/orgs/acme/refusals").await[0];
    let column = |n: usize| json!([rows[0][n], rows[1][n], rows[2][n]]);
    assert_eq!(
        column(0),
        json!(["disconnect", "refused", "connect"]),
        "newest first"
    );
    assert_eq!(rows[0][1], "d:acme:sensor:dev1");
    assert_eq!(rows[2][1], "d:acme:sensor:dev1");
    assert_eq!(rows[2][2], "d:sensor:dev1");
    assert_eq!(rows[1][3], refusal["reason"], "the refusal's reason");
    assert_eq!(
        browser
            .eval("document.getElementById('events-waiting').hidden")
            .await,
        true
    );
    browser.close().await;
}

#[tokio::test]
async fn refusals_are_listed_and_a_chain_is_explained() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let bridge = server.bridge(ACME, &cert).await;
    mqtt::refused_v4(mqtt::v4_options(bridge, "d:acme:sensor:other")).await;
    let refusals = items(&server, "/api/v1/orgs/acme/refusals").await;
    assert_eq!(refusals.len(), 1);
    let refusal = &refusals[0];

    let browser = Browser::start().await;
    browser.sign_in(&server, &server.token).await;
    browser.open_org("acme").await;
    browser
        .section("Refusals", "!!document.getElementById('refusal-list')")
        .await;
    let cells = browser.texts("#refusal-list tbody td").await;
    let text = |key: &str| refusal[key].as_str().unwrap_or("").to_owned();
    assert_eq!(
        cells.as_array().unwrap()[1..7],
        [
            json!(text("reason")),
            json!(text("stage")),
            json!(text("identity")),
            json!(text("fingerprint_sha256")),
            json!(text("sni")),
            json!(text("peer")),
        ]
    );
    assert_eq!(text("stage"), "connect");
    assert_eq!(text("sni"), ACME);

    // Its chain, explained: accepted as itself, refused under another client id.
    browser.type_into("explain-chain", &cert.chain_pem()).await;
    browser
        .click("//button[normalize-space(.)='Explain']")
        .await;
    browser
        .until("!!document.querySelector('#explanation dl')")
        .await;
    let verdict = browser.texts("#explanation dd").await;
    assert_eq!(verdict[0], "accepted");
    assert_eq!(
        verdict[1],
        format!("accepted: the chain verifies to CA {ca_id}; the device may connect as d:acme:sensor:dev1")
    );
    browser
        .type_into("explain-client-id", "d:acme:sensor:other")
        .await;
    browser
        .click("//button[normalize-space(.)='Explain']")
        .await;
    browser
        .until("document.querySelector('#explanation dd').textContent === 'refused'")
        .await;
    let verdict = browser.texts("#explanation dd").await;
    assert_eq!(verdict[1], "connect");
    assert_eq!(verdict[2], refusal["reason"], "the refusal's reason");
    assert!(verdict[3]
        .as_str()
        .unwrap()
        .starts_with("refused at CONNECT: "));
    browser.screenshot("refusals", 1150).await;
    browser.close().await;
}

#[tokio::test]
async fn an_operator_blocks_a_device_after_its_dry_run_unblocks_it_and_reads_the_audit_log() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let cert = ca.client("d:sensor:dev1", &[]);
    let closed = server.live_device(&cert, "dev1").await;
    registered(&server, 1).await;
    let now = OffsetDateTime::now_utc();
    let crl = ca.crl(
        &[],
        now - time::Duration::hours(1),
        now + time::Duration::days(7),
    );
    assert_eq!(server.put_crl(&ca_id, &crl).await.0, 200);

    let browser = Browser::start().await;
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section("Devices", "!!document.getElementById('device-list')")
        .await;
    assert_eq!(
        browser.texts("#device-list tbody td:first-child").await,
        json!(["d:sensor:dev1"])
    );

    // Blocking shows its dry run first, and blocks nothing until confirmed.
    browser
        .click("//table[@id='device-list']//button[normalize-space(.)='Block']")
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(browser.text("#confirm-title").await, "Block d:sensor:dev1?");
    assert_eq!(browser.text("#would-close").await, "Would close 1 session.");
    assert_eq!(
        browser.text("#would-refuse").await,
        "Would lock out 1 device."
    );
    assert!(items(&server, "/api/v1/orgs/acme/blocked-devices")
        .await
        .is_empty());
    browser.type_into("block-reason", BLOCK_PROBE).await;
    browser.screenshot("devices", 900).await;
    browser
        .click("//button[normalize-space(.)='Confirm block']")
        .await;
    assert!(
        closes_within_a_second(closed).await,
        "the device's session is closed"
    );
    let blocked = items(&server, "/api/v1/orgs/acme/blocked-devices").await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(
        (&blocked[0]["identity"], &blocked[0]["reason"]),
        (&json!("d:sensor:dev1"), &json!(BLOCK_PROBE))
    );

    // The blocklist shows it, its reason as text; the CA's CRL is listed.
    browser
        .section(
            "Blocklist and CRLs",
            "!!document.getElementById('block-list') && !!document.getElementById('crl-list')",
        )
        .await;
    let cells = browser.texts("#block-list tbody td").await;
    assert_eq!(cells[0], "d:sensor:dev1");
    assert_eq!(cells[1], BLOCK_PROBE, "the reason is shown as text");
    assert_eq!(cells[2], "ops");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('main img').length")
            .await,
        0
    );
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
    let crls = browser.texts("#crl-list tbody td").await;
    assert_eq!(crls[0], "CN=acme devices CA");
    assert_eq!(crls[1], "CN=acme devices CA", "the CRL's issuer");
    assert_eq!(crls[4], "0");
    browser.screenshot("blocklist", 800).await;

    browser
        .click("//table[@id='block-list']//button[normalize-space(.)='Unblock']")
        .await;
    browser
        .until("!document.getElementById('block-list')")
        .await;
    assert!(items(&server, "/api/v1/orgs/acme/blocked-devices")
        .await
        .is_empty());

    // The audit log, a page of 25 at a time: thirty more changes make two pages.
    for n in 0..30 {
        let (status, _) = server
            .api(
                "PATCH",
                &format!("/api/v1/orgs/acme/ca-certificates/{ca_id}"),
                Some(json!({"description": format!("change {n}")})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut actions = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orgs/acme/audit-events?limit=500&cursor={c}"),
            None => "/api/v1/orgs/acme/audit-events?limit=500".to_owned(),
        };
        let (_, page) = server.api("GET", &path, None).await;
        for event in page["items"].as_array().unwrap() {
            actions.push(event["action"].clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(actions.len() > 25, "{actions:?}");
    assert!(actions.contains(&json!("blocked_device.create")));
    assert!(actions.contains(&json!("blocked_device.delete")));
    browser
        .section("Audit log", "!!document.getElementById('audit-list')")
        .await;
    let rows = "document.querySelectorAll('#audit-list tbody tr').length";
    assert_eq!(browser.eval(rows).await, 25);
    browser
        .click("//button[normalize-space(.)='Show more']")
        .await;
    browser
        .until(&format!("{rows} === {}", actions.len()))
        .await;
    assert_eq!(
        browser.texts("#audit-list tbody td:nth-child(4)").await,
        json!(actions)
    );
    assert_eq!(browser.buttons().await, json!([]), "no more pages");
    browser.close().await;
}

// Server certificates and CSRs, the approval queue, signing certificates and tokens.

const TOKEN_PROBE: &str = r#"<img src=x onerror="window.__xss=4">"#;
/// The server certificates section is shown (both its lists, or the sentences saying there is
/// none).
const SERVER_CERTS_SHOWN: &str =
    "!!document.getElementById('server-cert-serving') && !!document.getElementById('csr-detail')";
/// The signing certificates and tokens section is shown (what the caller may read of it).
const TOKENS_SHOWN: &str = "!!document.getElementById('signing-confirm') \
     && (!document.getElementById('tokens') || !!document.getElementById('token-confirm'))";

impl Browser {
    /// Chooses the file at `path` in the file input with id `id`.
    async fn choose_file(&self, id: &str, path: &Path) {
        let input = step(self.client.find(Locator::Id(id))).await.unwrap();
        step(input.send_keys(path.to_str().unwrap())).await.unwrap();
    }

    /// Empties the field with id `id`.
    async fn clear(&self, id: &str) {
        let field = step(self.client.find(Locator::Id(id))).await.unwrap();
        step(field.clear()).await.unwrap();
    }

    /// Picks `value` in the select with id `id`.
    async fn pick(&self, id: &str, value: &str) {
        self.click(&format!("//select[@id='{id}']/option[@value='{value}']"))
            .await;
    }

    async fn sign_out(&self) {
        self.click("//button[normalize-space(.)='Sign out']").await;
        self.until("!!document.querySelector('label[for=token]')")
            .await;
    }

    /// Waits until the status line says `message`.
    async fn says(&self, message: &str) {
        let message = serde_json::to_string(message).unwrap();
        self.until(&format!(
            "document.getElementById('status').textContent === {message}"
        ))
        .await;
    }

    /// The number of rows of the table with id `id`.
    async fn rows(&self, id: &str) -> Value {
        self.eval(&format!(
            "document.querySelectorAll('#{id} tbody tr').length"
        ))
        .await
    }
}

/// The XPath of the row of table `table` whose first cell is `first`.
fn row_of(table: &str, first: &str) -> String {
    format!("//table[@id='{table}']//tr[td[1][normalize-space(.)='{first}']]")
}

/// Creates a CSR for acme's name as `token`: its id.
async fn csr_as(server: &TestServer, token: &str, alias: &str) -> String {
    let (status, body) = server
        .api_as(
            token,
            "POST",
            "/api/v1/orgs/acme/csrs",
            Some(json!({"common_name": alias, "dns_names": [ACME], "key_type": "ecdsa-p256", "alias": alias})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn csr(server: &TestServer, id: &str) -> Value {
    let (status, body) = server
        .api("GET", &format!("/api/v1/orgs/acme/csrs/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_operator_uploads_generates_and_activates_server_certificates_and_completes_csrs() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let web = TestCa::root("acme web CA");
    let pems = web.server(&[ACME]);
    let other = web.server(&[ACME]);
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    for (name, text) in [
        ("chain.pem", &pems.chain),
        ("key.pem", &pems.key),
        ("other-chain.pem", &other.chain),
        ("other-key.pem", &other.key),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "other-chain.pem",
            "-inkey",
            "other-key.pem",
            "-out",
            "other.p12",
            "-passout",
            "pass:p12pass",
        ],
    );
    let certs = "/api/v1/orgs/acme/server-certificates";
    let browser = Browser::start().await;
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section("Server certificates", SERVER_CERTS_SHOWN)
        .await;
    assert_eq!(
        browser.text("#server-cert-serving").await,
        "Devices are served the platform's default certificate."
    );

    // A malformed chain: the API's refusal is shown, nothing is added.
    std::fs::write(
        dir.join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n",
    )
    .unwrap();
    browser
        .choose_file("server-chain-file", &dir.join("broken.pem"))
        .await;
    browser
        .choose_file("server-key-file", &dir.join("key.pem"))
        .await;
    browser
        .click("//button[normalize-space(.)='Upload PEM']")
        .await;
    browser.says("Not a certificate.").await;
    assert!(items(&server, certs).await.is_empty());
    browser.clear("server-chain-file").await;
    browser.clear("server-key-file").await;

    // A chain and its key, each chosen in its file input.
    browser
        .choose_file("server-chain-file", &dir.join("chain.pem"))
        .await;
    browser
        .choose_file("server-key-file", &dir.join("key.pem"))
        .await;
    browser
        .click("//button[normalize-space(.)='Upload PEM']")
        .await;
    browser.says("Uploaded server (not active yet).").await;
    let listed = items(&server, certs).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            &listed[0]["subject"],
            &listed[0]["issuer"],
            &listed[0]["active"]
        ),
        (&json!("CN=server"), &json!("CN=acme web CA"), &json!(false))
    );
    assert_eq!(browser.rows("server-cert-list").await, 1);

    // A PKCS#12 file with the wrong password: the API's refusal is shown and the page goes on.
    browser
        .choose_file("server-p12-file", &dir.join("other.p12"))
        .await;
    browser.type_into("server-p12-password", "wrong").await;
    browser
        .click("//button[normalize-space(.)='Upload PKCS#12']")
        .await;
    browser.says("Wrong PKCS#12 password.").await;
    assert_eq!(items(&server, certs).await.len(), 1, "nothing was added");
    browser.clear("server-p12-password").await;
    browser.type_into("server-p12-password", "p12pass").await;
    browser
        .click("//button[normalize-space(.)='Upload PKCS#12']")
        .await;
    browser.says("Uploaded server (not active yet).").await;
    assert_eq!(items(&server, certs).await.len(), 2);
    browser
        .until("document.querySelectorAll('#server-cert-list tbody tr').length === 2")
        .await;

    // One generated from the platform CA for the org's name, then activated.
    browser.type_into("generate-dns-name", ACME).await;
    browser
        .click("//button[normalize-space(.)='Generate']")
        .await;
    browser
        .says(&format!("Generated {ACME} (not active yet)."))
        .await;
    let listed = items(&server, certs).await;
    let generated = listed.iter().find(|c| c["alias"] == ACME).unwrap();
    assert_ne!(generated["issuer"], "CN=acme web CA", "{generated}");
    assert_eq!(generated["dns_names"], json!([ACME]));
    let generated_id = generated["id"].as_str().unwrap().to_owned();
    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Activate']",
            row_of("server-cert-list", ACME)
        ))
        .await;
    browser
        .until(&format!(
            "document.getElementById('server-cert-serving').firstChild.textContent \
             === 'Devices are served {ACME}.'"
        ))
        .await;
    let (_, active) = server
        .api("GET", "/api/v1/orgs/acme/active-server-certificate", None)
        .await;
    assert_eq!(active["id"], generated_id.as_str());

    // A CSR: its PEM shown (and offered as a file), the certificate signed elsewhere uploaded.
    browser.type_into("csr-common-name", "acme broker").await;
    browser.type_into("csr-dns-names", ACME).await;
    browser.type_into("csr-alias", "outside").await;
    browser
        .click("//button[normalize-space(.)='Create CSR']")
        .await;
    browser.until("!!document.getElementById('csr-pem')").await;
    let (_, csrs) = server.api("GET", "/api/v1/orgs/acme/csrs", None).await;
    let outside = csrs["items"][0].clone();
    assert_eq!(
        (&outside["status"], &outside["common_name"]),
        (&json!("generated"), &json!("acme broker"))
    );
    assert_eq!(
        browser
            .eval("document.getElementById('csr-pem').value")
            .await,
        outside["csr_pem"]
    );
    assert_eq!(
        browser
            .eval(
                "[document.getElementById('csr-download').getAttribute('download'), \
                  document.getElementById('csr-download').href.startsWith('blob:')]"
            )
            .await,
        json!(["outside.csr.pem", true])
    );
    let signed = web.sign_csr(outside["csr_pem"].as_str().unwrap());
    std::fs::write(dir.join("signed.pem"), signed).unwrap();
    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Upload signed certificate']",
            row_of("csr-list", "outside")
        ))
        .await;
    browser
        .choose_file("csr-cert-file", &dir.join("signed.pem"))
        .await;
    browser
        .click("//button[normalize-space(.)='Upload certificate']")
        .await;
    browser
        .says("The certificate for outside is a server certificate now (not active yet).")
        .await;
    let outside = csr(&server, outside["id"].as_str().unwrap()).await;
    assert_eq!(outside["status"], "completed");
    let (status, cert) = server
        .api(
            "GET",
            &format!(
                "{certs}/{}",
                outside["server_certificate"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(cert["issuer"], "CN=acme web CA");

    // Another, signed by the platform CA on request (an operator's needs no approval here).
    browser.type_into("csr-common-name", "acme edge").await;
    browser.type_into("csr-dns-names", ACME).await;
    browser.type_into("csr-alias", "edge").await;
    browser
        .click("//button[normalize-space(.)='Create CSR']")
        .await;
    let request = format!(
        "{}//button[normalize-space(.)='Request signature']",
        row_of("csr-list", "edge")
    );
    step(browser.client.wait().for_element(Locator::XPath(&request)))
        .await
        .unwrap();
    browser.click(&request).await;
    browser
        .until("document.getElementById('signature-issuer').value === 'platform'")
        .await;
    browser.type_into("signature-reason", "edge rollout").await;
    browser
        .click("//button[normalize-space(.)='Send request']")
        .await;
    browser
        .says("Signed edge: it is a server certificate now (not active yet).")
        .await;
    let (_, edge) = server
        .api("GET", "/api/v1/orgs/acme/csrs?alias=edge", None)
        .await;
    let edge = &edge["items"][0];
    assert_eq!(edge["status"], "completed");
    assert_eq!(
        (
            &edge["signature_request"]["issuer"],
            &edge["signature_request"]["reason"]
        ),
        (&json!("platform"), &json!("edge rollout"))
    );
    assert_eq!(items(&server, certs).await.len(), 5);
    browser
        .until("document.querySelectorAll('#server-cert-list tbody tr').length === 5")
        .await;
    browser.eval("(window.scrollTo(0, 0), true)").await;
    browser.screenshot("server-certificates", 1250).await;

    // Back to the platform default; an inactive one deleted after confirming.
    browser
        .click("//button[normalize-space(.)='Use the platform default']")
        .await;
    browser
        .says("Devices are served the platform's default certificate again.")
        .await;
    let (_, active) = server
        .api("GET", "/api/v1/orgs/acme/active-server-certificate", None)
        .await;
    assert_eq!(active["id"], Value::Null);
    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Delete']",
            row_of("server-cert-list", "acme edge")
        ))
        .await;
    assert_eq!(browser.text("#confirm-title").await, "Delete acme edge?");
    assert_eq!(
        items(&server, certs).await.len(),
        5,
        "asking deleted nothing"
    );
    browser
        .click("//button[normalize-space(.)='Confirm deletion']")
        .await;
    browser.says("Deleted acme edge.").await;
    let left = items(&server, certs).await;
    assert_eq!(left.len(), 4);
    assert!(left.iter().all(|c| c["alias"] != "acme edge"));
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
    browser.close().await;
}

#[tokio::test]
async fn a_signature_request_waits_for_an_approver_who_approves_or_rejects_it_with_a_reason() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (status, body) = server
        .api(
            "PATCH",
            "/api/v1/orgs/acme",
            Some(json!({"approval_required_roles": ["operator"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let (_, approver) = server.issue_token("acme", "checker", "approver").await;
    let browser = Browser::start().await;

    // The operator: generating is refused (the API says why), a CSR's signature request waits.
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section("Server certificates", SERVER_CERTS_SHOWN)
        .await;
    browser.type_into("generate-dns-name", ACME).await;
    browser
        .click("//button[normalize-space(.)='Generate']")
        .await;
    browser
        .says("This role's signatures need approval: create a CSR and request a signature instead.")
        .await;
    assert!(items(&server, "/api/v1/orgs/acme/server-certificates")
        .await
        .is_empty());
    browser.type_into("csr-common-name", "acme broker").await;
    browser.type_into("csr-dns-names", ACME).await;
    browser.type_into("csr-alias", "broker").await;
    browser
        .click("//button[normalize-space(.)='Create CSR']")
        .await;
    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Request signature']",
            row_of("csr-list", "broker")
        ))
        .await;
    browser
        .until("!!document.getElementById('signature-reason')")
        .await;
    browser.type_into("signature-reason", "new broker").await;
    browser
        .click("//button[normalize-space(.)='Send request']")
        .await;
    browser
        .says("The signature of broker waits for an approver (the approval queue).")
        .await;
    let (_, listed) = server
        .api("GET", "/api/v1/orgs/acme/csrs?alias=broker", None)
        .await;
    let broker = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(csr(&server, &broker).await["status"], "pending_approval");
    // Two more, through the API.
    let mut waiting = Vec::new();
    for alias in ["spare", "withdrawn"] {
        let id = csr_as(&server, &operator, alias).await;
        let (status, body) = server
            .api_as(
                &operator,
                "POST",
                &format!("/api/v1/orgs/acme/csrs/{id}/signature-request"),
                Some(json!({"self_signed": false, "issuer": "platform", "reason": format!("{alias} rollout")})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        waiting.push(id);
    }
    // The operator sees the queue, and is offered no decision.
    browser
        .section(
            "Approval queue",
            "!!document.getElementById('approval-list')",
        )
        .await;
    assert_eq!(browser.rows("approval-list").await, 3);
    assert_eq!(browser.buttons().await, json!([]));
    browser.sign_out().await;

    // The approver approves one and rejects another, each with a reason.
    browser.sign_in(&server, &approver).await;
    browser.open_org("acme").await;
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('#sections a')].some(a => a.textContent === 'Approval queue')")
            .await,
        true
    );
    browser
        .section(
            "Approval queue",
            "!!document.getElementById('approval-list')",
        )
        .await;
    assert_eq!(browser.rows("approval-list").await, 3);
    let broker_row = serde_json::to_string(&row_of("approval-list", "broker")).unwrap();
    let cells = browser
        .eval(&format!(
            "[...document.evaluate({broker_row}, document, null, 9, null).singleNodeValue.cells]\
             .map(td => td.textContent)"
        ))
        .await;
    assert_eq!(
        cells,
        json!([
            "broker",
            ACME,
            "the platform CA",
            "ops (operator)",
            "new broker",
            cells[5].clone(),
            "ApproveReject"
        ])
    );
    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Approve']",
            row_of("approval-list", "broker")
        ))
        .await;
    browser
        .until("!!document.getElementById('decision-reason')")
        .await;
    browser.type_into("decision-reason", "names checked").await;
    browser.screenshot("approvals", 800).await;
    browser
        .click("//button[normalize-space(.)='Confirm approval']")
        .await;
    browser.says("Approved: broker is signed.").await;
    let approved = csr(&server, &broker).await;
    assert_eq!(
        (
            &approved["status"],
            &approved["decided_by"],
            &approved["decision_reason"]
        ),
        (
            &json!("completed"),
            &json!("checker"),
            &json!("names checked")
        )
    );
    let (status, _) = server
        .api(
            "GET",
            &format!(
                "/api/v1/orgs/acme/server-certificates/{}",
                approved["server_certificate"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "the approved CSR is a server certificate");
    browser
        .until("document.querySelectorAll('#approval-list tbody tr').length === 2")
        .await;

    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Reject']",
            row_of("approval-list", "spare")
        ))
        .await;
    browser.type_into("decision-reason", "not needed").await;
    browser
        .click("//button[normalize-space(.)='Confirm rejection']")
        .await;
    browser.says("Rejected spare.").await;
    browser
        .until("document.querySelectorAll('#approval-list tbody tr').length === 1")
        .await;
    let rejected = csr(&server, &waiting[0]).await;
    assert_eq!(
        (
            &rejected["status"],
            &rejected["decided_by"],
            &rejected["decision_reason"]
        ),
        (&json!("rejected"), &json!("checker"), &json!("not needed"))
    );

    // Decided elsewhere meanwhile: the API's refusal is shown, and the queue follows.
    let (status, _) = server
        .api(
            "POST",
            &format!("/api/v1/orgs/acme/csrs/{}/reject", waiting[1]),
            Some(json!({"reason": "withdrawn"})),
        )
        .await;
    assert_eq!(status, 200);
    browser
        .click(&format!(
            "{}//button[normalize-space(.)='Approve']",
            row_of("approval-list", "withdrawn")
        ))
        .await;
    browser.type_into("decision-reason", "late").await;
    browser
        .click("//button[normalize-space(.)='Confirm approval']")
        .await;
    browser
        .says(
            "The CSR's status does not allow this (its code names the status). It is rejected now.",
        )
        .await;
    browser
        .until("!document.getElementById('approval-list')")
        .await;
    assert_eq!(
        browser.text("#approvals p:last-child").await,
        "Nothing waits for approval."
    );
    assert_eq!(csr(&server, &waiting[1]).await["decided_by"], "admin");
    let audit = items(&server, "/api/v1/orgs/acme/audit-events?limit=500").await;
    let decisions: Vec<_> = audit
        .iter()
        .filter(|e| e["action"] == "csr.approve" || e["action"] == "csr.reject")
        .map(|e| json!([e["action"], e["actor"], e["reason"]]))
        .collect();
    assert_eq!(
        decisions,
        json!([
            ["csr.approve", "checker", "names checked"],
            ["csr.reject", "checker", "not needed"],
            ["csr.reject", "admin", "withdrawn"]
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    browser.close().await;
}

#[tokio::test]
async fn a_new_token_is_shown_once_then_suspended_reactivated_and_revoked() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let signing = items(&server, "/api/v1/orgs/acme/signing-certificates").await;
    assert_eq!(signing.len(), 1);
    let browser = Browser::start().await;
    browser.sign_in(&server, &server.token).await;
    browser.open_org("acme").await;
    browser
        .section("Signing certificates and tokens", TOKENS_SHOWN)
        .await;
    let cells = browser.texts("#signing-list tbody td").await;
    assert_eq!(cells[0], signing[0]["alias"]);
    assert_eq!(cells[3], "default");
    assert_eq!(cells[4], "1", "the tokens it signed");
    assert_eq!(
        browser.texts("#token-list tbody td:first-child").await,
        json!(["ops"])
    );

    // A token named with markup: shown once, as text, and kept nowhere.
    browser.type_into("token-name", TOKEN_PROBE).await;
    browser.pick("token-role", "viewer").await;
    browser.pick("token-ttl", "86400").await;
    browser
        .click("//button[normalize-space(.)='Create token']")
        .await;
    browser
        .until("!!document.getElementById('token-once')")
        .await;
    let token = browser
        .eval("document.getElementById('token-once').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let (status, me) = server.api_as(&token, "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 200, "the token shown works");
    assert_eq!(
        (&me["name"], &me["role"]),
        (&json!(TOKEN_PROBE), &json!("viewer"))
    );
    let tokens = items(&server, "/api/v1/orgs/acme/tokens").await;
    let created = tokens.iter().find(|t| t["name"] == TOKEN_PROBE).unwrap();
    let token_id = created["id"].as_str().unwrap().to_owned();
    let expires = OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = expires - OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::hours(23) && lifetime <= time::Duration::days(1),
        "{lifetime}"
    );
    assert_eq!(
        browser
            .eval("[sessionStorage.length, sessionStorage.getItem('portcullis.token'), localStorage.length]")
            .await,
        json!([1, server.token, 0]),
        "only the signed-in token is kept"
    );
    let url = step(browser.client.current_url()).await.unwrap();
    assert!(!url.as_str().contains(&token), "{url}");
    let row = row_of("token-list", TOKEN_PROBE);
    step(browser.client.wait().for_element(Locator::XPath(&row)))
        .await
        .unwrap();
    assert_eq!(
        browser
            .eval("document.querySelectorAll('main img').length")
            .await,
        0
    );
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
    browser.screenshot("tokens", 1100).await;
    // Gone once the page is left.
    browser
        .section("Audit log", "!!document.getElementById('audit-list')")
        .await;
    browser
        .section("Signing certificates and tokens", TOKENS_SHOWN)
        .await;
    let shown = serde_json::to_string(&token).unwrap();
    assert_eq!(
        browser
            .eval(&format!(
                "!document.getElementById('token-once') && !document.body.innerText.includes({shown})"
            ))
            .await,
        true
    );

    // The admin generates a second signing certificate and makes it the default.
    browser
        .click("//button[normalize-space(.)='Generate a signing certificate']")
        .await;
    browser
        .says("Generated a signing certificate from the platform CA.")
        .await;
    let signing = items(&server, "/api/v1/orgs/acme/signing-certificates").await;
    assert_eq!(signing.len(), 2);
    let new = signing.iter().find(|s| s["is_default"] == false).unwrap();
    browser
        .click("//table[@id='signing-list']//button[normalize-space(.)='Make default']")
        .await;
    browser
        .says(&format!(
            "New tokens are signed with {}.",
            new["alias"].as_str().unwrap()
        ))
        .await;
    let (_, now_default) = server
        .api(
            "GET",
            &format!(
                "/api/v1/orgs/acme/signing-certificates/{}",
                new["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(now_default["is_default"], true);
    browser.sign_out().await;

    // The new token signs in: a viewer reads the signing certificates, and no token.
    browser.sign_in(&server, &token).await;
    assert_eq!(
        browser.text("#who").await,
        format!("{TOKEN_PROBE} · viewer of acme")
    );
    browser.open_org("acme").await;
    browser
        .section("Signing certificates and tokens", TOKENS_SHOWN)
        .await;
    assert_eq!(
        browser
            .eval(
                "[!!document.getElementById('tokens'), !!document.getElementById('token-create')]"
            )
            .await,
        json!([false, false])
    );
    assert_eq!(browser.buttons().await, json!([]));
    browser.sign_out().await;

    // An operator suspends and reactivates it, and may neither create nor revoke.
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section("Signing certificates and tokens", TOKENS_SHOWN)
        .await;
    assert_eq!(browser.buttons().await, json!(["Suspend", "Suspend"]));
    browser
        .click(&format!("{row}//button[normalize-space(.)='Suspend']"))
        .await;
    browser.says(&format!("Suspended {TOKEN_PROBE}.")).await;
    let path = format!("/api/v1/orgs/acme/tokens/{token_id}");
    assert_eq!(
        server.api("GET", &path, None).await.1["status"],
        "suspended"
    );
    let (status, _) = server.api_as(&token, "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 401, "a suspended token is refused");
    browser
        .click(&format!("{row}//button[normalize-space(.)='Reactivate']"))
        .await;
    browser.says(&format!("Reactivated {TOKEN_PROBE}.")).await;
    assert_eq!(server.api("GET", &path, None).await.1["status"], "active");
    let (status, _) = server.api_as(&token, "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 200);
    browser.sign_out().await;

    // The admin revokes it, after confirming.
    browser.sign_in(&server, &server.token).await;
    browser.open_org("acme").await;
    browser
        .section("Signing certificates and tokens", TOKENS_SHOWN)
        .await;
    browser
        .click(&format!("{row}//button[normalize-space(.)='Revoke']"))
        .await;
    browser
        .until("!!document.querySelector('#token-confirm #would-close')")
        .await;
    assert_eq!(
        browser.text("#confirm-title").await,
        format!("Revoke {TOKEN_PROBE}?")
    );
    assert_eq!(server.api("GET", &path, None).await.1["status"], "active");
    browser
        .click("//button[normalize-space(.)='Confirm revocation']")
        .await;
    browser.says(&format!("Revoked {TOKEN_PROBE}.")).await;
    assert_eq!(server.api("GET", &path, None).await.1["status"], "revoked");
    let (status, _) = server.api_as(&token, "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 401, "a revoked token is refused");
    let status_cell = serde_json::to_string(&format!("{row}/td[3]")).unwrap();
    browser
        .until(&format!(
            "document.evaluate({status_cell}, document, null, 9, null).singleNodeValue.textContent \
             === 'revoked'"
        ))
        .await;

    // Deleting the former default signing certificate revokes the tokens it signed.
    let old = signing.iter().find(|s| s["is_default"] == true).unwrap();
    browser
        .click(
            "//table[@id='signing-list']//tr[td[4][normalize-space(.)='standby']]\
             //button[normalize-space(.)='Delete']",
        )
        .await;
    assert_eq!(
        browser.text("#signing-confirm #would-close").await,
        "Would revoke 1 token it signed."
    );
    browser
        .click("//button[normalize-space(.)='Confirm deletion']")
        .await;
    browser
        .says(&format!("Deleted {}.", old["alias"].as_str().unwrap()))
        .await;
    let signing = items(&server, "/api/v1/orgs/acme/signing-certificates").await;
    assert_eq!(signing.len(), 1);
    assert_ne!(signing[0]["id"], old["id"]);
    let (status, _) = server
        .api_as(&operator, "GET", "/api/v1/whoami", None)
        .await;
    assert_eq!(
        status, 401,
        "the operator's token was signed by the deleted one"
    );
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
    browser.close().await;
}

const ALIAS_PROBE: &str = r#"<img src=x onerror="window.__xss=5">"#;

impl Browser {
    /// Replaces what the field with id `id` holds by `text`.
    async fn fill(&self, id: &str, text: &str) {
        let field = step(self.client.find(Locator::Id(id))).await.unwrap();
        step(field.clear()).await.unwrap();
        if !text.is_empty() {
            step(field.send_keys(text)).await.unwrap();
        }
    }

    /// Chooses the option of value `value` in the select with id `id`.
    async fn choose(&self, id: &str, value: &str) {
        let select = step(self.client.find(Locator::Id(id))).await.unwrap();
        step(select.select_by_value(value)).await.unwrap();
    }

    /// The definition list `css` as an object: each term's text → its definition's text.
    async fn facts(&self, css: &str) -> Value {
        let css = serde_json::to_string(css).unwrap();
        self.eval(&format!(
            "Object.fromEntries([...document.querySelectorAll({css} + ' dt')]\
             .map(dt => [dt.textContent, dt.nextElementSibling.textContent]))"
        ))
        .await
    }

    /// Sets the date or time field `id` to `value` (the form the field's `value` takes, which
    /// typing into it would depend on the browser's locale for), as a person's input.
    async fn set_time(&self, id: &str, value: &str) {
        let (id, value) = (json!(id), json!(value));
        self.eval(&format!(
            "(() => {{ const field = document.getElementById({id}); field.value = {value}; \
             field.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()"
        ))
        .await;
    }
}

#[tokio::test]
async fn the_admin_creates_an_org_sets_it_up_and_changes_its_topic_policy_and_deletes_it_after_their_dry_runs(
) {
    let server = TestServer::start().await;
    let browser = Browser::start().await;
    browser.sign_in(&server, &server.token).await;

    // A new org, with the open topic policy.
    browser.until("!!document.getElementById('new-org')").await;
    browser.type_into("new-org-id", "acme").await;
    browser.type_into("new-org-name", "Acme Corp").await;
    browser.choose("new-org-policy", "open").await;
    browser.click("//button[normalize-space(.)='Create']").await;
    browser
        .until("!!document.querySelector('#orgs a[href=\"#/orgs/acme\"]')")
        .await;
    let (status, org) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(
        (&org["name"], &org["topic_policy"]),
        (&json!("Acme Corp"), &json!("open"))
    );

    // A device subscribed to a filter iot-2 refuses.
    let ca = TestCa::root("acme devices CA");
    server.upload_ca("acme", &ca).await;
    let (_device, mut inbox) =
        clients::subscribed_v4(&server, &ca, "acme", "d:sensor:a", "foo/#").await;

    browser.open_org("acme").await;
    browser
        .section("Organisation", "!!document.getElementById('org-settings')")
        .await;
    browser.fill("org-rename", "Acme Corporation").await;
    browser.click("//input[@id='approval-operator']").await;
    browser.click("//button[normalize-space(.)='Save']").await;
    browser
        .until("document.getElementById('org-name').textContent === 'Acme Corporation'")
        .await;
    let (_, org) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(org["name"], "Acme Corporation");
    assert_eq!(org["approval_required_roles"], json!(["operator"]));

    // The notification addresses (the admin's to change) and a webhook.
    browser
        .section(
            "Notification settings",
            "!!document.getElementById('notify-form')",
        )
        .await;
    browser
        .type_into("notify-emails", "ops@acme.example\nsecurity@acme.example")
        .await;
    browser
        .type_into("notify-webhook-url", "http://127.0.0.1:9/hook")
        .await;
    browser
        .type_into("notify-webhook-secret", "a secret of twenty chars")
        .await;
    browser.click("//button[normalize-space(.)='Save']").await;
    browser
        .until("document.getElementById('status').textContent === 'Notification settings saved.'")
        .await;
    let (_, settings) = server
        .api("GET", "/api/v1/orgs/acme/notification-settings", None)
        .await;
    assert_eq!(
        settings,
        json!({
            "emails": ["ops@acme.example", "security@acme.example"],
            "webhook_url": "http://127.0.0.1:9/hook",
            "webhook_secret_set": true,
        })
    );
    let shown = browser.facts("#notification-settings").await;
    assert_eq!(
        shown["E-mail addresses"],
        "ops@acme.example, security@acme.example"
    );
    assert_eq!(shown["Webhook secret"], "set (never shown)");

    // The topic policy: its dry run lists the device; cancelled, nothing changes.
    browser
        .section("Organisation", "!!document.getElementById('org-settings')")
        .await;
    browser.choose("org-policy", "iot-2").await;
    browser
        .click("//button[normalize-space(.)='Change topic policy']")
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(
        browser.text("#confirm-title").await,
        "Change acme's topic policy to iot-2?"
    );
    assert_eq!(browser.text("#would-close").await, "Would close 1 session.");
    assert_eq!(
        browser.texts("#settings-confirm .ids li").await,
        json!(["d:acme:sensor:a"])
    );
    browser.screenshot("settings", 1150).await;
    browser
        .click("//div[@id='settings-confirm']//button[normalize-space(.)='Cancel']")
        .await;
    browser
        .until("!document.getElementById('would-close')")
        .await;
    let (_, org) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(org["topic_policy"], "open", "cancelled: nothing changed");
    assert!(
        !ends_within(&mut inbox, Duration::from_millis(300)).await,
        "the device is still connected"
    );

    // Confirmed, the policy changes and the device's session is closed.
    browser
        .click("//button[normalize-space(.)='Change topic policy']")
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    browser
        .click("//button[normalize-space(.)='Confirm topic policy']")
        .await;
    assert!(
        ends_within(&mut inbox, Duration::from_secs(5)).await,
        "the device's session is closed"
    );
    browser
        .until("document.getElementById('org-policy-now').textContent === 'Now: iot-2'")
        .await;
    let (_, org) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(org["topic_policy"], "iot-2");
    assert!(items(&server, "/api/v1/orgs/acme/sessions")
        .await
        .is_empty());

    // Deleting it shows its dry run first.
    browser
        .click("//button[normalize-space(.)='Delete organisation']")
        .await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(
        browser.text("#confirm-title").await,
        "Delete acme (Acme Corporation)?"
    );
    let (status, _) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(status, 200, "the dry run deleted nothing");
    browser
        .click("//button[normalize-space(.)='Confirm deletion']")
        .await;
    browser
        .until("!!document.getElementById('new-org') && !document.getElementById('orgs')")
        .await;
    let (status, _) = server.api("GET", "/api/v1/orgs/acme", None).await;
    assert_eq!(status, 404, "deleted once confirmed");
    browser.close().await;
}

#[tokio::test]
async fn an_operator_reads_a_cas_details_changes_its_settings_and_uploads_its_crl() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let revoked = ca.client("d:sensor:lost", &[]);
    let now = OffsetDateTime::now_utc();
    let crl = ca.crl(
        &[&revoked],
        now - time::Duration::hours(1),
        now + time::Duration::days(7),
    );
    let files = tempfile::tempdir().unwrap();
    let crl_file = files.path().join("acme.crl.pem");
    std::fs::write(&crl_file, crl).unwrap();
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}");
    let (_, held) = server.api("GET", &path, None).await;

    let browser = Browser::start().await;
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section(
            "CA certificates",
            "!!document.querySelector('#ca-list tbody tr')",
        )
        .await;
    browser
        .click("//table[@id='ca-list']//a[normalize-space(.)='CN=acme devices CA']")
        .await;
    browser
        .until("!!document.getElementById('ca-details')")
        .await;
    let facts = browser.facts("#ca-details").await;
    let at = |key: &str| {
        let time = held[key].as_str().unwrap();
        format!("{} UTC", time[..16].replace('T', " "))
    };
    for (shown, api) in [
        ("Subject", &held["subject"]),
        ("Alias", &held["alias"]),
        ("Description", &held["description"]),
        ("Issuer", &held["issuer"]),
        ("Serial", &held["serial"]),
        ("SHA-256 fingerprint", &held["fingerprint_sha256"]),
        ("Not before", &json!(at("not_before"))),
        ("Not after", &json!(at("not_after"))),
        ("OCSP", &held["ocsp_mode"]),
    ] {
        assert_eq!(&facts[shown], api, "{shown}");
    }
    assert_eq!(facts["Can issue"], "no");
    assert_eq!(facts["CRL URL"], "none (uploaded only)");
    assert_eq!(facts["CRL held"], "none");
    browser.screenshot("ca-details", 1250).await;

    // Its settings: an alias that is markup, a CRL URL, OCSP.
    browser.fill("ca-alias", ALIAS_PROBE).await;
    browser.fill("ca-set-description", "fleet roots").await;
    browser
        .fill("ca-crl-url", "http://127.0.0.1:9/acme.crl")
        .await;
    browser.choose("ca-ocsp-mode", "soft").await;
    browser.fill("ca-ocsp-url", "http://127.0.0.1:9/ocsp").await;
    browser
        .click("//button[normalize-space(.)='Save settings']")
        .await;
    browser
        .until(&format!(
            "document.querySelector('#ca-details h3').textContent === {}",
            json!(ALIAS_PROBE)
        ))
        .await;
    let (_, changed) = server.api("GET", &path, None).await;
    assert_eq!(
        [
            &changed["alias"],
            &changed["description"],
            &changed["crl_url"],
            &changed["ocsp_mode"],
            &changed["ocsp_url"]
        ],
        [
            &json!(ALIAS_PROBE),
            &json!("fleet roots"),
            &json!("http://127.0.0.1:9/acme.crl"),
            &json!("soft"),
            &json!("http://127.0.0.1:9/ocsp")
        ]
    );
    let facts = browser.facts("#ca-details").await;
    assert_eq!(facts["Alias"], ALIAS_PROBE, "the alias is shown as text");
    assert_eq!(facts["OCSP"], "soft");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('main img').length")
            .await,
        0
    );

    // A CRL uploaded through the file input.
    let input = step(browser.client.find(Locator::Id("crl-file")))
        .await
        .unwrap();
    step(input.send_keys(crl_file.to_str().unwrap()))
        .await
        .unwrap();
    browser
        .click("//button[normalize-space(.)='Upload CRL']")
        .await;
    browser
        .until("document.getElementById('ca-crl').textContent.includes('revokes 1 certificate')")
        .await;
    let (status, crl) = server.api("GET", &format!("{path}/crl"), None).await;
    assert_eq!(status, 200, "{crl}");
    assert_eq!(
        (&crl["entries"], &crl["issuer"]),
        (&json!(1), &json!("CN=acme devices CA"))
    );
    assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
    browser.close().await;
}

#[tokio::test]
async fn an_operator_renews_a_grant_with_the_emailed_code_and_sets_the_webhook() {
    let smtp = common::notices::SmtpSink::start().await;
    let smtp_url = smtp.url();
    let server = TestServer::start_with(|config| config.notify.smtp_url = Some(smtp_url)).await;
    server.create_org("acme").await;
    let (status, body) = server
        .api(
            "PUT",
            "/api/v1/orgs/acme/notification-settings",
            Some(json!({"emails": ["ops@acme.example"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let before = items(&server, "/api/v1/orgs/acme/grants").await;
    assert_eq!(before.len(), 1);
    let grant = &before[0];
    assert_eq!(grant["uses"], 1, "the operator's token was signed");

    let browser = Browser::start().await;
    browser.sign_in(&server, &operator).await;
    browser.until("!!document.getElementById('orgs')").await;
    assert_eq!(
        browser.eval("!!document.getElementById('new-org')").await,
        false,
        "only the admin creates orgs"
    );
    browser.open_org("acme").await;
    let tabs = browser.texts("#sections a").await;
    assert!(
        !tabs.as_array().unwrap().contains(&json!("Organisation")),
        "the org's settings are the admin's: {tabs}"
    );
    browser
        .section("Access grants", "!!document.getElementById('grant-list')")
        .await;
    let cells = browser.texts("#grant-list tbody td").await;
    assert_eq!(cells[0], "active");
    assert_eq!(
        cells[1],
        format!(
            "signing_certificate {}",
            grant["holder_id"].as_str().unwrap()
        )
    );
    assert_eq!(cells[2], format!("1 of {}", grant["max_uses"]));

    // The code is e-mailed; a wrong one is refused, the right one renews.
    browser
        .click("//table[@id='grant-list']//button[normalize-space(.)='Renew']")
        .await;
    browser
        .until("!!document.getElementById('renewal-form')")
        .await;
    assert!(browser
        .text("#renewal-sent")
        .await
        .as_str()
        .unwrap()
        .starts_with("A code was sent to 1 address; it is good until "));
    let mailed = eventually(Duration::from_secs(10), || async {
        smtp.matching("renewal code").len() == 1
    })
    .await;
    assert!(mailed, "the renewal code was e-mailed");
    let mail = smtp.matching("renewal code").pop().unwrap();
    let at = mail.find("Code: ").unwrap() + "Code: ".len();
    let code = mail[at..at + 8].to_owned();
    let wrong = format!(
        "{}{}",
        &code[..7],
        if code.ends_with('0') { '1' } else { '0' }
    );
    browser.type_into("renewal-code", &wrong).await;
    browser
        .click("//button[normalize-space(.)='Renew with the code']")
        .await;
    browser
        .until("document.getElementById('status').textContent.startsWith('The code is wrong')")
        .await;
    let (_, still) = server
        .api(
            "GET",
            &format!("/api/v1/orgs/acme/grants/{}", grant["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(still["uses"], 1, "a wrong code renews nothing");
    browser.fill("renewal-code", &code).await;
    browser
        .click("//button[normalize-space(.)='Renew with the code']")
        .await;
    browser
        .until("document.getElementById('status').textContent.startsWith('Renewed: good until ')")
        .await;
    let renewed = items(&server, "/api/v1/orgs/acme/grants").await;
    assert_eq!(renewed[0]["uses"], 0, "{renewed:?}");
    assert!(
        renewed[0]["expires_at"].as_str() > grant["expires_at"].as_str(),
        "{renewed:?}"
    );
    browser
        .until("document.querySelector('#grant-list tbody td:nth-child(3)').textContent.startsWith('0 of ')")
        .await;

    // Notification settings: the addresses are the admin's; the webhook an operator sets.
    browser
        .section(
            "Notification settings",
            "!!document.getElementById('notify-form')",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('notify-emails').disabled")
            .await,
        true
    );
    browser
        .type_into(
            "notify-webhook-url",
            "https://hooks.acme.example/portcullis",
        )
        .await;
    browser
        .type_into("notify-webhook-secret", "sixteen or more chars")
        .await;
    browser.click("//button[normalize-space(.)='Save']").await;
    browser
        .until("document.getElementById('status').textContent === 'Notification settings saved.'")
        .await;
    let (_, settings) = server
        .api("GET", "/api/v1/orgs/acme/notification-settings", None)
        .await;
    assert_eq!(
        settings,
        json!({
            "emails": ["ops@acme.example"],
            "webhook_url": "https://hooks.acme.example/portcullis",
            "webhook_secret_set": true,
        })
    );
    browser.close().await;
}

/// The identities the device list shows, sorted.
async fn listed_devices(browser: &Browser) -> Value {
    browser
        .eval(
            "document.getElementById('device-list') \
             ? [...document.querySelectorAll('#device-list tbody td:first-child')].map(td => td.textContent).sort() \
             : []",
        )
        .await
}

/// The identities of the devices the API lists for `query`, sorted.
async fn devices_for(server: &TestServer, query: &str) -> Value {
    let mut found: Vec<String> = items(server, &format!("/api/v1/orgs/acme/devices{query}"))
        .await
        .iter()
        .map(|d| d["identity"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    json!(found)
}

#[tokio::test]
async fn devices_are_filtered_and_a_certificate_is_blocked_by_fingerprint_or_serial_after_its_dry_run(
) {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let (_, operator) = server.issue_token("acme", "ops", "operator").await;
    let now = OffsetDateTime::now_utc();
    let dev1 = server
        .live_device(&ca.client("d:sensor:dev1", &[]), "dev1")
        .await;
    let soon = ca.client_valid(
        "d:sensor:dev2",
        &[],
        now - time::Duration::days(1),
        now + time::Duration::days(10),
    );
    let mut dev2 = server.live_device(&soon, "dev2").await;
    let _pump = clients::publisher_v4(&server, &ca, "acme", "d:pump:p7").await;
    registered(&server, 3).await;
    let registry = items(&server, "/api/v1/orgs/acme/devices").await;
    let device = |identity: &str| {
        registry
            .iter()
            .find(|d| d["identity"] == identity)
            .unwrap()
            .clone()
    };

    let browser = Browser::start().await;
    browser.sign_in(&server, &operator).await;
    browser.open_org("acme").await;
    browser
        .section("Devices", "!!document.getElementById('device-list')")
        .await;
    assert_eq!(
        listed_devices(&browser).await,
        devices_for(&server, "").await
    );

    // Each filter, as the API's query takes it.
    let wait_for = |expected: Value| {
        format!(
            "JSON.stringify(document.getElementById('device-list') \
             ? [...document.querySelectorAll('#device-list tbody td:first-child')].map(td => td.textContent).sort() \
             : []) === {}",
            json!(expected.to_string())
        )
    };
    browser.type_into("filter-type", "pump").await;
    let pumps = devices_for(&server, "?type=pump").await;
    assert_eq!(pumps, json!(["d:pump:p7"]));
    browser.until(&wait_for(pumps)).await;
    browser.fill("filter-type", "").await;
    browser.type_into("filter-id-prefix", "dev").await;
    let devs = devices_for(&server, "?id_prefix=dev").await;
    assert_eq!(devs, json!(["d:sensor:dev1", "d:sensor:dev2"]));
    browser.until(&wait_for(devs)).await;
    let in_20_days = (now + time::Duration::days(20)).date().to_string();
    browser.set_time("filter-expires-before", &in_20_days).await;
    let expiring = devices_for(
        &server,
        &format!("?id_prefix=dev&expires_before={in_20_days}T00:00:00Z"),
    )
    .await;
    assert_eq!(expiring, json!(["d:sensor:dev2"]));
    browser.until(&wait_for(expiring)).await;
    browser.set_time("filter-expires-before", "").await;
    browser.fill("filter-id-prefix", "").await;
    browser
        .set_time("filter-seen-after", "2099-01-01T00:00")
        .await;
    browser
        .until("document.getElementById('devices').textContent.includes('No device matches.')")
        .await;
    assert_eq!(
        devices_for(&server, "?seen_after=2099-01-01T00:00:00Z").await,
        json!([])
    );
    browser
        .set_time("filter-seen-after", "2000-01-01T00:00")
        .await;
    browser
        .until(&wait_for(devices_for(&server, "").await))
        .await;

    // By fingerprint: the dry run names the device; cancelled, nothing is blocked.
    let fingerprint = device("d:sensor:dev2")["fingerprint_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.fill("block-fingerprint", &fingerprint).await;
    browser.click("//button[normalize-space(.)='Block…']").await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(
        browser.text("#confirm-title").await,
        format!("Block the certificate {fingerprint}?")
    );
    assert_eq!(browser.text("#would-close").await, "Would close 1 session.");
    assert_eq!(
        browser.texts("#device-confirm .ids li").await,
        json!(["d:acme:sensor:dev2", "d:sensor:dev2"])
    );
    browser
        .click("//div[@id='device-confirm']//button[normalize-space(.)='Cancel']")
        .await;
    browser
        .until("!document.getElementById('would-close')")
        .await;
    assert!(items(&server, "/api/v1/orgs/acme/blocked-devices")
        .await
        .is_empty());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut dev2)
            .await
            .is_err(),
        "cancelled: dev2 is still connected"
    );

    // By CA and serial: confirmed, the entry is made and the device's session closed.
    let serial = device("d:sensor:dev1")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.choose("block-kind", "serial").await;
    browser.choose("block-ca", &ca_id).await;
    browser.fill("block-serial", &serial).await;
    browser.click("//button[normalize-space(.)='Block…']").await;
    browser
        .until("!!document.getElementById('would-close')")
        .await;
    assert_eq!(
        browser.text("#confirm-title").await,
        format!("Block serial {serial} of CN=acme devices CA?")
    );
    assert_eq!(browser.text("#would-close").await, "Would close 1 session.");
    browser.type_into("block-reason", "lost in transit").await;
    browser
        .click("//button[normalize-space(.)='Confirm block']")
        .await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), dev1)
            .await
            .is_ok(),
        "dev1's session is closed"
    );
    let blocked = items(&server, "/api/v1/orgs/acme/blocked-devices").await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (
            &blocked[0]["ca_id"],
            &blocked[0]["serial"],
            &blocked[0]["reason"]
        ),
        (&json!(ca_id), &json!(serial), &json!("lost in transit"))
    );
    browser
        .until(&format!(
            "document.getElementById('status').textContent === {}",
            json!(format!("Blocked serial {serial} of CN=acme devices CA."))
        ))
        .await;
    browser.close().await;
}

#[tokio::test]
async fn a_viewer_reads_the_new_sections_and_is_offered_no_change_in_them() {
    let server = TestServer::start().await;
    server.org_with_ca("acme").await;
    let (_, viewer) = server.issue_token("acme", "watcher", "viewer").await;
    let browser = Browser::start().await;
    browser.sign_in(&server, &viewer).await;
    browser.until("!!document.getElementById('orgs')").await;
    assert_eq!(
        browser.eval("!!document.getElementById('new-org')").await,
        false
    );
    browser.open_org("acme").await;
    let tabs = browser.texts("#sections a").await;
    assert!(
        !tabs.as_array().unwrap().contains(&json!("Organisation")),
        "{tabs}"
    );

    browser
        .section(
            "Access grants",
            "!!document.querySelector('#grant-list tbody tr')",
        )
        .await;
    assert_eq!(browser.buttons().await, json!([]), "no renewal");
    browser
        .section(
            "Notification settings",
            "!!document.getElementById('notification-settings')",
        )
        .await;
    assert_eq!(
        browser
            .eval("!!document.getElementById('notify-form')")
            .await,
        false,
        "no change of the settings"
    );
    browser
        .section("Devices", "!!document.getElementById('device-filters')")
        .await;
    assert_eq!(
        browser
            .eval("!!document.getElementById('block-certificate')")
            .await,
        false,
        "no block"
    );
    browser
        .section(
            "CA certificates",
            "!!document.querySelector('#ca-list tbody tr')",
        )
        .await;
    browser
        .click("//table[@id='ca-list']//a[normalize-space(.)='CN=acme devices CA']")
        .await;
    browser
        .until("!!document.getElementById('ca-details')")
        .await;
    assert_eq!(
        browser.facts("#ca-details").await["Subject"],
        "CN=acme devices CA"
    );
    assert_eq!(
        browser
            .eval("[!!document.getElementById('ca-settings'), !!document.getElementById('crl-upload')]")
            .await,
        json!([false, false]),
        "the details, and no settings or CRL upload"
    );
    browser.close().await;
}
