//! The web console (`/console/`, DESIGN §13) in a real browser: Debian's headless chromium driven
//! over WebDriver (chromedriver) against the real server, with real MQTT devices. Signing in keeps
//! the token in the tab's sessionStorage only; CAs are uploaded through the file input and
//! deactivated only after their dry run was shown; a viewer is offered no change; strings from the
//! server are shown as text.
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

use common::*;

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const IMG_PROBE: &str = r#"<img src=x onerror="window.__xss=1">"#;
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

    /// Waits until `expression` is true in the page.
    async fn until(&self, expression: &str) {
        let met = eventually(STEP, || async {
            self.eval(expression).await == Value::Bool(true)
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
        ("pages/sessions.js", "text/javascript; charset=utf-8"),
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
    browser.screenshot("org", 1400).await;

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
        .section("Live sessions", "!document.getElementById('session-list')")
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
    let (_, _) = server.org_with_ca("acme").await;
    let (viewer_id, viewer) = server.issue_token("acme", "watcher", "viewer").await;
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
