//! The operator CLI (DESIGN §13): the real binary, run as a child process against a real server,
//! for every verb: what it prints (the API's own JSON with `--json`, tables otherwise), the
//! destructive verbs' dry run and question, and its exit codes (0 done, 1 refused, 2 usage,
//! 3 unreachable, 4 cancelled at the prompt).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use common::mqtt::*;
use common::*;

const SNI: &str = "acme.messaging.localhost";

/// What one run of the CLI did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// The binary with nothing of the test's environment that would choose its API or token.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(args)
        .env_remove("PORTCULLIS_URL")
        .env_remove("PORTCULLIS_TOKEN")
        .env_remove("PORTCULLIS__STORE__DATA_DIR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn output(mut command: tokio::process::Command) -> Run {
    let output = step(command.output()).await.unwrap();
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `portcullis LINE` (split at whitespace) against the server, with the admin token in
/// `PORTCULLIS_TOKEN`.
async fn cli(server: &TestServer, line: &str) -> Run {
    let args: Vec<&str> = line.split_whitespace().collect();
    cli_as(server, &server.token, &args).await
}

async fn cli_as(server: &TestServer, token: &str, args: &[&str]) -> Run {
    let mut command = command(args);
    command
        .env("PORTCULLIS_URL", format!("http://{}", server.admin))
        .env("PORTCULLIS_TOKEN", token);
    output(command).await
}

/// `portcullis LINE` as the admin, with `input` on its stdin, then the end of it.
async fn cli_answering(server: &TestServer, line: &str, input: &str) -> Run {
    let args: Vec<&str> = line.split_whitespace().collect();
    let mut command = command(&args);
    command
        .env("PORTCULLIS_URL", format!("http://{}", server.admin))
        .env("PORTCULLIS_TOKEN", &server.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A child that exits before reading (a refusal) may close its end first.
    let _ = step(stdin.write_all(input.as_bytes())).await;
    drop(stdin);
    let output = step(child.wait_with_output()).await.unwrap();
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Waits until the org's device registry holds `count` devices (sightings reach it about a
/// second after the connects).
async fn registered(server: &TestServer, count: usize) {
    let done = eventually(STEP, || async {
        let (_, body) = server.api("GET", "/api/v1/orgs/acme/devices", None).await;
        body["items"].as_array().map_or(0, Vec::len) == count
    })
    .await;
    assert!(done, "{count} devices registered");
}

/// `LINE --json` prints what `GET api_path` answers: that answer.
async fn same_as_api(server: &TestServer, line: &str, api_path: &str) -> Value {
    let printed = cli(server, &format!("{line} --json")).await.json();
    let (status, api) = server.api("GET", &format!("/api/v1{api_path}"), None).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(printed, api, "{line}");
    api
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The table's header line and the line that has `needle`.
fn assert_table(run: &Run, header: &[&str], needle: &str) {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let mut lines = run.stdout.lines();
    let first = lines.next().unwrap_or_default();
    let words: Vec<&str> = first
        .split("  ")
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(words, header, "{}", run.stdout);
    assert!(
        lines.any(|line| line.contains(needle)),
        "no {needle:?} in\n{}",
        run.stdout
    );
}

fn assert_refused(run: &Run, code: &str) {
    assert_eq!(run.code, 1, "stdout: {} stderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(code), "{}", run.stderr);
}

/// Follows `events --org acme EXTRA` while the device behind `addr` connects (again, until the
/// child, which subscribes some time after it starts, prints a line) until a line `is_connect`
/// comes: that line, and the live session.
async fn connect_event(
    server: &TestServer,
    addr: std::net::SocketAddr,
    extra: &[&str],
    is_connect: impl Fn(&str) -> bool,
) -> (String, (rumqttc::AsyncClient, rumqttc::EventLoop)) {
    let args: Vec<&str> = ["events", "--org", "acme"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let mut events = command(&args);
    events
        .env("PORTCULLIS_URL", format!("http://{}", server.admin))
        .env("PORTCULLIS_TOKEN", &server.token)
        .stdout(Stdio::piped());
    let mut child = events.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = tokio::time::Instant::now() + STEP;
    let (session, mut line) = loop {
        assert!(tokio::time::Instant::now() < deadline, "no event");
        let session = connect_v4(v4_options(addr, "d:acme:sensor:dev1"))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await;
        if let Ok(line) = next {
            break (session, line.unwrap().expect("the events child ended"));
        }
    };
    while !is_connect(&line) {
        line = step(lines.next_line())
            .await
            .unwrap()
            .expect("the events child ended");
    }
    child.start_kill().unwrap();
    step(child.wait()).await.unwrap();
    (line, session)
}

const ORGS: &[&str] = &["ID", "NAME", "TOPIC POLICY", "CREATED"];
const CAS: &[&str] = &["ID", "ALIAS", "ACTIVE", "NOT AFTER", "DESCRIPTION"];
const SERVER_CERTS: &[&str] = &["ID", "DNS NAMES", "ACTIVE", "NOT AFTER"];
const TOKENS: &[&str] = &["ID", "NAME", "ROLE", "STATUS", "EXPIRES"];
const SESSIONS: &[&str] = &[
    "CLIENT ID",
    "IDENTITY",
    "PROTOCOL",
    "PEER",
    "CONNECTED",
    "NODE",
];
const DEVICES: &[&str] = &["IDENTITY", "CA", "SERIAL", "NOT AFTER", "LAST SEEN", "NODE"];

#[tokio::test]
async fn org_verbs_tokens_from_everywhere_and_exit_codes() {
    let server = TestServer::start().await;

    let args = ["org", "create", "acme", "--name", "Acme Corp", "--json"];
    let created = cli_as(&server, &server.token, &args).await.json();
    let api = same_as_api(&server, "org list", "/orgs").await;
    assert_eq!(api["items"], json!([created]));
    assert_eq!(created["name"], "Acme Corp");

    // Refused by the API: its code and message, exit 1.
    let again = cli(&server, "org create acme").await;
    assert_refused(&again, "org_exists");
    assert!(again.stdout.is_empty());

    let open = cli(&server, "org create beta --topic-policy open").await;
    assert_table(&open, ORGS, "beta");
    assert!(open.stdout.contains("open"), "{}", open.stdout);

    let updated = cli(&server, "org update acme --name Acme-Inc --json")
        .await
        .json();
    assert_eq!(updated["name"], "Acme-Inc");
    assert_table(&cli(&server, "org list").await, ORGS, "Acme-Inc");
    let page = cli(&server, "org list --limit 1").await;
    assert_eq!(page.stdout.lines().count(), 2, "{}", page.stdout);
    assert!(page.stderr.contains("more: --cursor "), "{}", page.stderr);

    // A topic policy change: the dry run shown (--yes: not asked), then the org.
    let run = cli(&server, "org update beta --topic-policy iot-2 --yes").await;
    assert_done(
        &run,
        "would close no sessions\nwould lock out no registered devices\n",
        "iot-2",
    );
    let line = "org update beta --topic-policy open --yes --json";
    assert_eq!(cli(&server, line).await.json()["topic_policy"], "open");

    // Usage: clap's errors, an update of nothing, a file or URL that will not do: exit 2.
    for line in [
        "org create",
        "org frobnicate",
        "org update acme",
        "org create gamma --topic-policy closed",
        "ca list",
        "ca upload /nonexistent.pem --org acme",
        "server-cert upload --chain x.pem --org acme",
        "--url ftp://nowhere org list",
    ] {
        let run = cli(&server, line).await;
        assert_eq!(run.code, 2, "{line}: {}", run.stderr);
    }

    // Unreachable: a port nobody listens on, exit 3.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let run = output(command(&["--url", &url, "--token", "t", "org", "list"])).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);

    // The token: from the data directory (--data-dir, or store.data_dir of the configuration
    // as `serve` loads it), never printed; none anywhere is a usage error.
    let api_url = format!("http://{}", server.admin);
    let data_dir = server.data_dir.to_str().unwrap();
    let args = ["--url", &api_url, "--data-dir", data_dir, "org", "list"];
    assert_table(&output(command(&args)).await, ORGS, "acme");
    let mut from_config = command(&["org", "list", "--url", &api_url]);
    from_config.env("PORTCULLIS__STORE__DATA_DIR", data_dir);
    let run = output(from_config).await;
    assert_table(&run, ORGS, "acme");
    assert!(!run.stdout.contains(&server.token) && !run.stderr.contains(&server.token));
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    let run = output(command(&[
        "--url",
        &api_url,
        "--data-dir",
        empty,
        "org",
        "list",
    ]))
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no token"), "{}", run.stderr);
    assert_refused(
        &cli_as(&server, "bad", &["org", "list"]).await,
        "unauthorized",
    );
}

#[tokio::test]
async fn ca_and_server_certificate_verbs() {
    let server = TestServer::start().await;
    server.create_org("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::root("acme devices CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);

    let line = format!("ca upload {ca_file} --description demo --org acme --json");
    let uploaded = cli(&server, &line).await.json();
    let id = uploaded["id"].as_str().unwrap();
    assert_eq!(uploaded["description"], "demo");
    let line = format!("ca upload {ca_file} --org acme");
    assert_refused(&cli(&server, &line).await, "duplicate_certificate");

    // DER works as well as PEM.
    let other = TestCa::root("acme second CA");
    let der_file = write(dir.path(), "ca.der", other.cert.as_ref());
    let run = cli(&server, &format!("ca upload {der_file} --org acme")).await;
    assert_table(&run, CAS, "acme second CA");

    assert_table(&cli(&server, "ca list --org acme").await, CAS, id);
    let api = same_as_api(&server, "ca list --org acme", "/orgs/acme/ca-certificates").await;
    assert!(api["items"].as_array().unwrap().contains(&uploaded));

    let path = format!("/api/v1/orgs/acme/ca-certificates/{id}");
    let (status, _) = server
        .api("PATCH", &path, Some(json!({"active": false})))
        .await;
    assert_eq!(status, 200);
    let line = format!("ca activate {id} --org acme --json");
    assert_eq!(cli(&server, &line).await.json()["active"], true);
    assert_refused(
        &cli(&server, "ca activate nope --org acme").await,
        "not_found",
    );
    assert_refused(&cli(&server, "ca list --org nosuch").await, "not_found");

    // Server certificates: a PEM chain and key, a PKCS#12 file, one generated here.
    let web = TestCa::root("web CA");
    let pems = web.server(&[SNI]);
    let chain = write(dir.path(), "chain.pem", &pems.chain);
    let key = write(dir.path(), "key.pem", &pems.key);
    let line = format!("server-cert upload --chain {chain} --key {key} --org acme --json");
    let uploaded = cli(&server, &line).await.json();
    let uploaded_id = uploaded["id"].as_str().unwrap();

    let other = web.server(&[SNI]);
    write(dir.path(), "other-chain.pem", &other.chain);
    write(dir.path(), "other-key.pem", &other.key);
    let export = "pkcs12 -export -in other-chain.pem -inkey other-key.pem -out other.p12";
    let args: Vec<&str> = export
        .split(' ')
        .chain(["-passout", "pass:p12pass"])
        .collect();
    openssl(dir.path(), &args);
    let p12 = dir.path().join("other.p12");
    let p12 = p12.to_str().unwrap();
    let line = format!("server-cert upload --pkcs12 {p12} --password p12pass --org acme");
    assert_table(&cli(&server, &line).await, SERVER_CERTS, SNI);
    let line = format!("server-cert upload --pkcs12 {p12} --password nope --org acme");
    assert_refused(&cli(&server, &line).await, "pkcs12_password_wrong");

    let line = format!("server-cert generate --dns-name {SNI} --org acme --json");
    let generated = cli(&server, &line).await.json();
    assert_eq!(generated["dns_names"], json!([SNI]));
    let generated_id = generated["id"].as_str().unwrap();
    let line = "server-cert generate --dns-name beta.example.com --org acme";
    assert_refused(&cli(&server, line).await, "names_do_not_fit");

    let list = cli(&server, "server-cert list --org acme").await;
    assert_table(&list, SERVER_CERTS, generated_id);
    let line = "server-cert list --org acme";
    let api = same_as_api(&server, line, "/orgs/acme/server-certificates").await;
    assert_eq!(api["items"].as_array().unwrap().len(), 3);
    assert!(api["items"].as_array().unwrap().contains(&uploaded));

    let line = format!("server-cert activate {generated_id} --org acme --json");
    let active = cli(&server, &line).await.json();
    assert_eq!(active, json!({"id": generated_id}));
    let path = "/api/v1/orgs/acme/active-server-certificate";
    assert_eq!(server.api("GET", path, None).await.1, active);
    let line = format!("server-cert activate {uploaded_id} --org acme");
    let run = cli(&server, &line).await;
    assert_table(&run, &["ACTIVE SERVER CERTIFICATE"], uploaded_id);
    assert_eq!(server.api("GET", path, None).await.1["id"], uploaded_id);
}

#[tokio::test]
async fn tokens_devices_sessions_events_and_explain() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let dir = tempfile::tempdir().unwrap();

    // A token, printed once, that works.
    let run = cli(&server, "token create --role operator --name ci --org acme").await;
    assert_table(&run, TOKENS, "operator");
    let token = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("token (shown this once): "))
        .unwrap();
    assert_eq!(run.stdout.matches(token).count(), 1);
    let args = ["ca", "list", "--org", "acme", "--json"];
    let as_operator = cli_as(&server, token, &args).await.json();
    assert_eq!(as_operator["items"][0]["id"], ca_id.as_str());
    let line = "token create --role viewer --name dash --ttl-seconds 600 --org acme --json";
    let created = cli(&server, line).await.json();
    let viewer = created["token"].as_str().unwrap();
    let token_id = created["id"].as_str().unwrap();
    let line = "token create --role viewer --name x --ttl-seconds 1 --org acme";
    assert_eq!(cli(&server, line).await.code, 1);

    assert_table(&cli(&server, "token list --org acme").await, TOKENS, "dash");
    same_as_api(&server, "token list --org acme", "/orgs/acme/tokens").await;
    let line = format!("token suspend {token_id} --org acme --json");
    assert_eq!(cli(&server, &line).await.json()["status"], "suspended");
    let run = cli_as(&server, viewer, &["ca", "list", "--org", "acme"]).await;
    assert_refused(&run, "token_suspended");

    // Events: a line when the device connects, for people and for scripts.
    let device = ca.client("d:sensor:dev1", &[]);
    let addr = server.bridge(SNI, &device).await;
    let (line, _session) = connect_event(&server, addr, &[], |l| l.contains("  connect  ")).await;
    let expected = "  connect  d:acme:sensor:dev1  identity=d:sensor:dev1  peer=127.0.0.1:";
    assert!(line.contains(expected), "{line}");
    let is_connect = |l: &str| l.starts_with(r#"{"event":"connect","data":{"#);
    let (line, _session) = connect_event(&server, addr, &["--json"], is_connect).await;
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["data"]["client_id"], "d:acme:sensor:dev1", "{line}");
    assert_eq!(event["data"]["identity"], "d:sensor:dev1", "{line}");

    // The live session and the device registry.
    let run = cli(&server, "session list --org acme").await;
    assert_table(&run, SESSIONS, "d:acme:sensor:dev1");
    same_as_api(&server, "session list --org acme", "/orgs/acme/sessions").await;
    let registered = eventually(STEP, || async {
        let run = cli(&server, "device list --org acme --json").await;
        run.json()["items"] != json!([])
    })
    .await;
    assert!(registered, "the device was never registered");
    assert_table(
        &cli(&server, "device list --org acme").await,
        DEVICES,
        "d:sensor:dev1",
    );
    same_as_api(&server, "device list --org acme", "/orgs/acme/devices").await;

    // Unblock: the entry is gone; a second time there is none.
    let entry = json!({"identity": "d:sensor:dev9", "reason": "lost"});
    let path = "/api/v1/orgs/acme/blocked-devices";
    let (status, entry) = server.api("POST", path, Some(entry)).await;
    assert_eq!(status, 201, "{entry}");
    let entry_id = entry["id"].as_str().unwrap();
    let line = format!("device unblock {entry_id} --org acme");
    let run = cli(&server, &line).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, format!("blocklist entry {entry_id} removed\n"));
    assert_eq!(server.api("GET", path, None).await.1["items"], json!([]));
    assert_refused(&cli(&server, &line).await, "not_found");

    // Explain: a good chain, a client id it does not claim, a CA the org never uploaded.
    let good = write(dir.path(), "good.pem", device.chain_pem());
    let run = cli(&server, &format!("explain {good} --org acme")).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("accepted"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("\nca_id       {ca_id}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\nclient_ids  d:acme:sensor:dev1\n"),
        "{}",
        run.stdout
    );
    let line = format!("explain {good} --client-id d:acme:sensor:dev2 --org acme --json");
    let answer = cli(&server, &line).await.json();
    let body = json!({"certificate_chain": device.chain_pem(), "client_id": "d:acme:sensor:dev2"});
    let path = "/api/v1/orgs/acme/explain";
    assert_eq!(answer, server.api("POST", path, Some(body)).await.1);
    assert_eq!(answer["reason"], "identity_mismatch");
    let stranger = TestCa::root("stranger CA").client("d:sensor:dev1", &[]);
    let unknown = write(dir.path(), "stranger.pem", stranger.chain_pem());
    let run = cli(&server, &format!("explain {unknown} --org acme")).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("refused at"), "{}", run.stdout);
    assert!(run.stdout.contains("\naccepted    no\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("\nreason      unknown_ca\n"),
        "{}",
        run.stdout
    );
    let junk = write(dir.path(), "junk.pem", "junk");
    let run = cli(&server, &format!("explain {junk} --org acme")).await;
    assert_refused(&run, "invalid_certificate_chain");
}

/// Exit 0, what was printed starting with `first` and holding `then`.
fn assert_done(run: &Run, first: &str, then: &str) {
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with(first), "{}", run.stdout);
    assert!(run.stdout.contains(then), "{}", run.stdout);
}

fn assert_cancelled(run: &Run, line: &str) {
    assert_eq!(run.code, 4, "{line}: {} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.starts_with("Proceed? [y/N] "),
        "{line}: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cancelled: nothing changed"),
        "{line}: {}",
        run.stderr
    );
}

#[tokio::test]
async fn destructive_verbs_show_their_dry_run_and_change_nothing_unless_agreed_to() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let mut live = server
        .live_device(&ca.client("d:sensor:dev1", &[]), "dev1")
        .await;
    registered(&server, 1).await;
    let before = server.looks("acme").await;

    // Declined ("n"), not understood, or nothing to read: exit 4 after the dry run.
    let dry_run = "would close 1 session: d:acme:sensor:dev1\n\
                   would lock out 1 registered device: d:sensor:dev1\n";
    for line in [
        format!("ca deactivate {ca_id} --org acme"),
        format!("ca delete {ca_id} --org acme"),
        "device block --identity d:sensor:dev1 --reason stolen --org acme".into(),
        "org delete acme".into(),
    ] {
        for input in ["n\n", "", "maybe\n"] {
            let run = cli_answering(&server, &line, input).await;
            assert_cancelled(&run, &line);
            assert_eq!(run.stdout, dry_run, "{line}");
        }
    }
    // A topic policy change the device's session survives (it holds no subscription).
    let line = "org update acme --topic-policy open";
    let run = cli_answering(&server, line, "n\n").await;
    assert_cancelled(&run, line);
    assert_eq!(
        run.stdout,
        "would close no sessions\nwould lock out no registered devices\n"
    );
    let line = "session disconnect d:acme:sensor:dev1 --org acme";
    let run = cli_answering(&server, line, "n\n").await;
    assert_cancelled(&run, line);
    assert_eq!(run.stdout, "would close the session d:acme:sensor:dev1\n");
    // With --json the sentence, not JSON, is on stderr with the question.
    let line = "session disconnect d:acme:sensor:dev1 --org acme --json";
    let run = cli_answering(&server, line, "n\n").await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let asked = "would close the session d:acme:sensor:dev1\nProceed? [y/N] ";
    assert!(run.stderr.starts_with(asked), "{}", run.stderr);

    // --json: the dry run as the API answers it, and still the question.
    let line = format!("ca deactivate {ca_id} --org acme --json");
    let run = cli_answering(&server, &line, "N\n").await;
    assert_cancelled(&run, &line);
    let printed: Value = serde_json::from_str(&run.stdout).unwrap();
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}?dry_run=true");
    let deactivate = Some(json!({"active": false}));
    assert_eq!(printed, server.api("PATCH", &path, deactivate).await.1);
    assert_eq!(
        printed["would_close"]["client_ids"],
        json!(["d:acme:sensor:dev1"])
    );

    // A refused dry run is a refusal (exit 1) before any question; usage errors exit 2.
    for (line, code) in [
        ("ca deactivate nosuch --org acme", "not_found"),
        ("ca delete nosuch --org acme", "not_found"),
        ("org delete nosuch", "not_found"),
        (
            "device block --ca nosuch --serial 01 --org acme",
            "unknown_ca",
        ),
        (
            "device block --identity sensor1 --org acme",
            "invalid_block",
        ),
    ] {
        let run = cli_answering(&server, line, "y\n").await;
        assert_refused(&run, code);
        assert!(!run.stderr.contains("Proceed?"), "{line}: {}", run.stderr);
    }
    let (_, viewer) = server.issue_token("acme", "dash", "viewer").await;
    let args = ["ca", "delete", &ca_id, "--org", "acme", "--yes"];
    assert_refused(&cli_as(&server, &viewer, &args).await, "forbidden");
    let line = "session disconnect d:acme:sensor:nosuch --org acme";
    assert_refused(&cli_answering(&server, line, "y\n").await, "not_found");
    for line in [
        "device block --org acme",
        "device block --ca x --org acme",
        "device block --identity d:sensor:dev1 --fingerprint ab --org acme",
        "org delete",
    ] {
        let run = cli_answering(&server, line, "y\n").await;
        assert_eq!(run.code, 2, "{line}: {}", run.stderr);
    }

    // Nothing changed: the CA, the blocklist, the session, the audit log (but the token), the org.
    let mut after = server.looks("acme").await;
    let audit = after["audit"]["items"].as_array_mut().unwrap();
    audit.retain(|event| event["action"] != "token.create");
    assert_eq!(after, before);
    assert!(live.try_recv().is_err(), "the session is still live");
}

#[tokio::test]
async fn destructive_verbs_act_when_agreed_to() {
    let server = TestServer::start().await;
    let (ca, ca_id) = server.org_with_ca("acme").await;
    let dev1 = ca.client("d:sensor:dev1", &[]);

    let live = server.live_device(&dev1, "dev1").await;
    let line = "session disconnect d:acme:sensor:dev1 --org acme";
    let run = cli_answering(&server, line, "y\n").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "would close the session d:acme:sensor:dev1\nsession d:acme:sensor:dev1 disconnected\n"
    );
    assert!(closes_within_a_second(live).await);

    // --yes: the dry run shown, not asked; with --json, the API's answer alone.
    let live = server.live_device(&dev1, "dev1").await;
    registered(&server, 1).await;
    let line = "device block --identity d:sensor:dev1 --reason stolen --org acme --yes";
    let run = cli_answering(&server, line, "").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("Proceed?"), "{}", run.stderr);
    let shown = "would close 1 session: d:acme:sensor:dev1\n\
                 would lock out 1 registered device: d:sensor:dev1\n\
                 ID ";
    assert!(run.stdout.starts_with(shown), "{}", run.stdout);
    assert!(run.stdout.contains("stolen"), "{}", run.stdout);
    assert!(closes_within_a_second(live).await);
    let line = "device block --identity d:sensor:dev9 --org acme --json --yes";
    let entry = cli(&server, line).await.json();
    assert_eq!(entry["identity"], "d:sensor:dev9");
    let fingerprint = "ab".repeat(32);
    let line = format!("device block --fingerprint {fingerprint} --org acme --json --yes");
    let entry = cli(&server, &line).await.json();
    assert_eq!(entry["fingerprint_sha256"], fingerprint.as_str());
    let line = format!("device block --ca {ca_id} --serial 0x0A --org acme --json --yes");
    let entry = cli(&server, &line).await.json();
    assert_eq!(
        (&entry["ca_id"], &entry["serial"]),
        (&json!(ca_id), &json!("0a"))
    );
    let (_, blocked) = server
        .api("GET", "/api/v1/orgs/acme/blocked-devices", None)
        .await;
    assert_eq!(blocked["items"].as_array().unwrap().len(), 4, "{blocked}");

    // "yes": the CA deactivated, the session it vouched for closed.
    let live = server
        .live_device(&ca.client("d:sensor:dev2", &[]), "dev2")
        .await;
    let line = format!("ca deactivate {ca_id} --org acme");
    let run = cli_answering(&server, &line, "yes\n").await;
    assert_done(&run, "would close 1 session: d:acme:sensor:dev2\n", &ca_id);
    assert!(closes_within_a_second(live).await);
    let path = format!("/api/v1/orgs/acme/ca-certificates/{ca_id}");
    assert_eq!(server.api("GET", &path, None).await.1["active"], false);

    let line = format!("ca delete {ca_id} --org acme -y");
    let run = cli(&server, &line).await;
    assert_done(
        &run,
        "would close ",
        &format!("CA certificate {ca_id} deleted\n"),
    );
    assert_eq!(server.api("GET", &path, None).await.0, 404);

    let other = TestCa::root("acme other CA");
    server.upload_ca("acme", &other).await;
    let live = server
        .live_device(&other.client("d:sensor:dev3", &[]), "dev3")
        .await;
    let run = cli_answering(&server, "org delete acme", "y\n").await;
    let first = "would close 1 session: d:acme:sensor:dev3\n";
    assert_done(&run, first, "organisation acme deleted\n");
    assert!(closes_within_a_second(live).await);
    assert_eq!(server.api("GET", "/api/v1/orgs/acme", None).await.0, 404);
}
