//! Each verb as one admin API call and the way its answer is shown. Every call goes through
//! [`execute`], the one place where a destructive verb (DESIGN §13) shows what it would break —
//! the server's answer to the same call with `?dry_run=true`, or a sentence where the server has
//! no dry run — and asks before the real call (`--yes`: without asking).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use super::client::{encode, Call, Client};
use super::table::{self, columns, Column};
use super::{CliError, Command};

#[derive(Args)]
pub struct Org {
    /// The organisation.
    #[arg(long)]
    org: String,
}

/// A destructive verb's question.
#[derive(Args)]
pub struct Confirm {
    /// Do it without asking (the dry run is still shown, but not with --json).
    #[arg(long, short = 'y')]
    yes: bool,
}

/// One resource of an org, by id, changed in a way that may close sessions: asked first.
#[derive(Args)]
pub struct Destroy {
    id: String,
    #[command(flatten)]
    org: Org,
    #[command(flatten)]
    confirm: Confirm,
}

/// A page of a list: the API's `limit` and `cursor`.
#[derive(Args)]
pub struct Page {
    /// At most this many items (the API's default: 50, at most 500).
    #[arg(long)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

/// A page of one org's resources.
#[derive(Args)]
pub struct OrgPage {
    #[command(flatten)]
    org: Org,
    #[command(flatten)]
    page: Page,
}

/// One resource of an org, by id.
#[derive(Args)]
pub struct OrgItem {
    id: String,
    #[command(flatten)]
    org: Org,
}

#[derive(Subcommand)]
pub enum OrgVerb {
    /// Create an organisation.
    Create {
        id: String,
        /// Its display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = ["iot-2", "open"])]
        topic_policy: Option<String>,
    },
    /// Rename an organisation or change its topic policy: a policy change closes the sessions
    /// holding what the new policy refuses (shown, then asked).
    Update {
        id: String,
        #[arg(long, required_unless_present = "topic_policy")]
        name: Option<String>,
        #[arg(long, value_parser = ["iot-2", "open"])]
        topic_policy: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// List the organisations.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Delete an organisation: its sessions close, its devices are refused (shown, then asked).
    Delete {
        id: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

#[derive(Subcommand)]
pub enum CaVerb {
    /// Upload a device CA certificate (PEM or DER); it is active at once.
    Upload {
        file: PathBuf,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        org: Org,
    },
    /// List the org's CA certificates.
    List(OrgPage),
    /// Activate a CA certificate: devices it issued may connect again.
    Activate(OrgItem),
    /// Deactivate a CA certificate: what it alone vouches for is closed (shown, then asked).
    Deactivate(Destroy),
    /// Delete a CA certificate: what it alone vouches for is closed (shown, then asked).
    Delete(Destroy),
}

#[derive(Subcommand)]
pub enum ServerCertVerb {
    /// Upload a server certificate: a PEM chain and key, or a PKCS#12 file (not activated).
    Upload {
        /// The chain, leaf first (PEM).
        #[arg(long, requires = "key", required_unless_present = "pkcs12")]
        chain: Option<PathBuf>,
        /// Its private key (PEM, PKCS#8 or encrypted PKCS#8).
        #[arg(long, requires = "chain")]
        key: Option<PathBuf>,
        /// The key's passphrase, when it is encrypted.
        #[arg(long, requires = "key")]
        passphrase: Option<String>,
        /// A PKCS#12 file with the chain and key.
        #[arg(long, conflicts_with_all = ["chain", "key"], requires = "password")]
        pkcs12: Option<PathBuf>,
        /// The PKCS#12 file's password.
        #[arg(long, requires = "pkcs12")]
        password: Option<String>,
        #[command(flatten)]
        org: Org,
    },
    /// Generate a server certificate from the platform CA for one of the org's names.
    Generate {
        #[arg(long)]
        dns_name: String,
        #[arg(long, default_value = "ecdsa-p256",
              value_parser = ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"])]
        key_type: String,
        #[command(flatten)]
        org: Org,
    },
    /// List the org's server certificates.
    List(OrgPage),
    /// Serve this certificate to the org's devices from now on.
    Activate(OrgItem),
}

#[derive(Subcommand)]
pub enum DeviceVerb {
    /// List the devices seen (identity and certificate), by first sighting.
    List(OrgPage),
    /// Block a device by identity, certificate fingerprint, or CA and serial: its sessions
    /// close (shown, then asked).
    #[command(group(clap::ArgGroup::new("target").required(true)))]
    Block {
        #[arg(long, group = "target")]
        identity: Option<String>,
        /// The certificate's SHA-256 fingerprint (64 hex digits).
        #[arg(long, group = "target")]
        fingerprint: Option<String>,
        /// The issuing CA certificate's id (with --serial).
        #[arg(
            long = "ca",
            value_name = "CA_ID",
            group = "target",
            requires = "serial"
        )]
        ca_id: Option<String>,
        /// The certificate's serial (hex, with --ca).
        #[arg(long, requires = "ca_id")]
        serial: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        org: Org,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Remove an entry from the blocklist.
    Unblock {
        entry_id: String,
        #[command(flatten)]
        org: Org,
    },
}

#[derive(Subcommand)]
pub enum SessionVerb {
    /// List the live sessions of every node, oldest first.
    List(OrgPage),
    /// Close a live session, on whichever node holds it (asked first).
    Disconnect {
        client_id: String,
        #[command(flatten)]
        org: Org,
        #[command(flatten)]
        confirm: Confirm,
    },
}

#[derive(Subcommand)]
pub enum TokenVerb {
    /// Issue an org token; it is printed this once.
    Create {
        #[arg(long, value_parser = ["operator", "approver", "viewer"])]
        role: String,
        #[arg(long)]
        name: String,
        /// Lifetime in seconds (60 to 31622400).
        #[arg(long, default_value_t = 86400)]
        ttl_seconds: i64,
        #[command(flatten)]
        org: Org,
    },
    /// List the org's tokens.
    List(OrgPage),
    /// Suspend a token until reactivated.
    Suspend(OrgItem),
}

const ORG: &[Column] = columns![
    ("ID", "id"),
    ("NAME", "name"),
    ("TOPIC POLICY", "topic_policy"),
    ("CREATED", "created_at"),
];
const CA: &[Column] = columns![
    ("ID", "id"),
    ("ALIAS", "alias"),
    ("ACTIVE", "active"),
    ("NOT AFTER", "not_after"),
    ("DESCRIPTION", "description"),
];
const SERVER_CERT: &[Column] = columns![
    ("ID", "id"),
    ("DNS NAMES", "dns_names"),
    ("ACTIVE", "active"),
    ("NOT AFTER", "not_after"),
];
const ACTIVE_SERVER_CERT: &[Column] = columns![("ACTIVE SERVER CERTIFICATE", "id")];
const DEVICE: &[Column] = columns![
    ("IDENTITY", "identity"),
    ("CA", "ca_id"),
    ("SERIAL", "serial"),
    ("NOT AFTER", "not_after"),
    ("LAST SEEN", "last_seen"),
    ("NODE", "node"),
];
const BLOCKED: &[Column] = columns![
    ("ID", "id"),
    ("IDENTITY", "identity"),
    ("FINGERPRINT", "fingerprint_sha256"),
    ("CA", "ca_id"),
    ("SERIAL", "serial"),
    ("REASON", "reason"),
];
const SESSION: &[Column] = columns![
    ("CLIENT ID", "client_id"),
    ("IDENTITY", "identity"),
    ("PROTOCOL", "protocol"),
    ("PEER", "peer"),
    ("CONNECTED", "connected_at"),
    ("NODE", "node"),
];
const TOKEN: &[Column] = columns![
    ("ID", "id"),
    ("NAME", "name"),
    ("ROLE", "role"),
    ("STATUS", "status"),
    ("EXPIRES", "expires_at"),
];
const EXPLANATION: &[&str] = &[
    "accepted",
    "stage",
    "reason",
    "ca_id",
    "identities",
    "client_ids",
];

/// How an answer is shown to people (`--json` prints it as it came).
enum Show {
    /// One resource, as a one-row table.
    One(&'static [Column]),
    /// A page `{items, next_cursor}`.
    Page(&'static [Column]),
    /// A created token: its row, then the token.
    Token,
    /// An explanation: its message, then its fields.
    Explanation,
    /// No body (204): this sentence.
    Done(String),
}

fn org_path(org: &Org, rest: &str) -> String {
    format!("/orgs/{}{rest}", encode(&org.org))
}

fn list(path: String, page: Page) -> Call {
    Call::new(Method::GET, path)
        .query("limit", page.limit.map(|l| l.to_string()))
        .query("cursor", page.cursor)
}

/// `GET /orgs/{org}{rest}`, a page of it.
fn org_list(list_of: OrgPage, rest: &str) -> Call {
    list(org_path(&list_of.org, rest), list_of.page)
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::File {
        path: path.display().to_string(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, CliError> {
    String::from_utf8(read(path)?)
        .map_err(|_| CliError::Usage(format!("{} is not text (PEM expected)", path.display())))
}

/// A certificate file as PEM: as it is when it is PEM, else taken as DER.
fn certificate_pem(path: &Path) -> Result<String, CliError> {
    match String::from_utf8(read(path)?) {
        Ok(text) if text.contains("-----BEGIN") => Ok(text),
        other => {
            let der = other.map_or_else(|e| e.into_bytes(), String::into_bytes);
            Ok(pem::encode(&pem::Pem::new("CERTIFICATE", der)))
        }
    }
}

/// What a verb does: one call whose answer is shown (asked first when it is destructive), or a
/// stream followed.
enum Action {
    Call(Call, Show, Option<Ask>),
    Stream(Call),
}

/// How a destructive verb asks before its call.
struct Ask {
    preview: Preview,
    /// `--yes`: the preview is shown (but with `--json`), the question is not asked.
    yes: bool,
}

/// What a destructive verb shows before asking.
enum Preview {
    /// The server's answer to the same call with `?dry_run=true`.
    DryRun,
    /// This sentence, where the server has no dry run.
    Sentence(String),
}

impl Ask {
    fn dry_run(confirm: Confirm) -> Option<Ask> {
        Some(Ask {
            preview: Preview::DryRun,
            yes: confirm.yes,
        })
    }
}

fn ca_path(org: &Org, id: &str) -> String {
    org_path(org, &format!("/ca-certificates/{}", encode(id)))
}

/// The call a verb makes, how its answer is shown and whether it asks first.
fn action(command: Command) -> Result<Action, CliError> {
    use base64::Engine as _;
    let (call, show, ask) = match command {
        Command::Org(OrgVerb::Delete { id, confirm }) => (
            Call::new(Method::DELETE, format!("/orgs/{}", encode(&id))),
            Show::Done(format!("organisation {id} deleted")),
            Ask::dry_run(confirm),
        ),
        Command::Ca(CaVerb::Deactivate(Destroy { id, org, confirm })) => (
            Call::new(Method::PATCH, ca_path(&org, &id)).body(json!({"active": false})),
            Show::One(CA),
            Ask::dry_run(confirm),
        ),
        Command::Ca(CaVerb::Delete(Destroy { id, org, confirm })) => (
            Call::new(Method::DELETE, ca_path(&org, &id)),
            Show::Done(format!("CA certificate {id} deleted")),
            Ask::dry_run(confirm),
        ),
        Command::Device(DeviceVerb::Block {
            identity,
            fingerprint,
            ca_id,
            serial,
            reason,
            org,
            confirm,
        }) => {
            let mut body = match (identity, fingerprint, ca_id, serial) {
                (Some(identity), None, None, None) => json!({"identity": identity}),
                (None, Some(fingerprint), None, None) => {
                    json!({"fingerprint_sha256": fingerprint})
                }
                (None, None, Some(ca_id), Some(serial)) => {
                    json!({"ca_id": ca_id, "serial": serial})
                }
                _ => {
                    return Err(CliError::Usage(
                        "give --identity, --fingerprint, or --ca with --serial".into(),
                    ))
                }
            };
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            (
                Call::new(Method::POST, org_path(&org, "/blocked-devices")).body(body),
                Show::One(BLOCKED),
                Ask::dry_run(confirm),
            )
        }
        Command::Session(SessionVerb::Disconnect {
            client_id,
            org,
            confirm,
        }) => (
            Call::new(
                Method::DELETE,
                org_path(&org, &format!("/sessions/{}", encode(&client_id))),
            ),
            Show::Done(format!("session {client_id} disconnected")),
            Some(Ask {
                preview: Preview::Sentence(format!("would close the session {client_id}")),
                yes: confirm.yes,
            }),
        ),
        Command::Org(OrgVerb::Create {
            id,
            name,
            topic_policy,
        }) => {
            let mut body = json!({"id": id, "name": name.unwrap_or_else(|| id.clone())});
            if let Some(policy) = topic_policy {
                body["topic_policy"] = json!(policy);
            }
            (
                Call::new(Method::POST, "/orgs".into()).body(body),
                Show::One(ORG),
                None,
            )
        }
        Command::Org(OrgVerb::Update {
            id,
            name,
            topic_policy,
            confirm,
        }) => {
            let mut body = json!({});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let ask = topic_policy
                .is_some()
                .then_some(confirm)
                .and_then(Ask::dry_run);
            if let Some(policy) = topic_policy {
                body["topic_policy"] = json!(policy);
            }
            (
                Call::new(Method::PATCH, format!("/orgs/{}", encode(&id))).body(body),
                Show::One(ORG),
                ask,
            )
        }
        Command::Org(OrgVerb::List { page }) => (list("/orgs".into(), page), Show::Page(ORG), None),
        Command::Ca(CaVerb::Upload {
            file,
            description,
            org,
        }) => (
            Call::new(Method::POST, org_path(&org, "/ca-certificates")).body(json!({
                "certificate": certificate_pem(&file)?,
                "description": description.unwrap_or_default(),
            })),
            Show::One(CA),
            None,
        ),
        Command::Ca(CaVerb::List(page)) => {
            (org_list(page, "/ca-certificates"), Show::Page(CA), None)
        }
        Command::Ca(CaVerb::Activate(OrgItem { id, org })) => (
            Call::new(Method::PATCH, ca_path(&org, &id)).body(json!({"active": true})),
            Show::One(CA),
            None,
        ),
        Command::ServerCert(ServerCertVerb::Upload {
            chain,
            key,
            passphrase,
            pkcs12,
            password,
            org,
        }) => {
            let body = match (chain, key, pkcs12) {
                (Some(chain), Some(key), None) => {
                    let mut body = json!({
                        "certificate_chain": read_text(&chain)?,
                        "private_key": read_text(&key)?,
                    });
                    if let Some(passphrase) = passphrase {
                        body["passphrase"] = json!(passphrase);
                    }
                    body
                }
                (None, None, Some(pkcs12)) => json!({
                    "pkcs12": base64::engine::general_purpose::STANDARD.encode(read(&pkcs12)?),
                    "password": password.unwrap_or_default(),
                }),
                _ => {
                    return Err(CliError::Usage(
                        "give --chain and --key, or --pkcs12 and --password".into(),
                    ))
                }
            };
            (
                Call::new(Method::POST, org_path(&org, "/server-certificates")).body(body),
                Show::One(SERVER_CERT),
                None,
            )
        }
        Command::ServerCert(ServerCertVerb::Generate {
            dns_name,
            key_type,
            org,
        }) => (
            Call::new(
                Method::POST,
                org_path(&org, "/server-certificates/generate"),
            )
            .body(json!({"dns_name": dns_name, "key_type": key_type})),
            Show::One(SERVER_CERT),
            None,
        ),
        Command::ServerCert(ServerCertVerb::List(page)) => (
            org_list(page, "/server-certificates"),
            Show::Page(SERVER_CERT),
            None,
        ),
        Command::ServerCert(ServerCertVerb::Activate(OrgItem { id, org })) => (
            Call::new(Method::PUT, org_path(&org, "/active-server-certificate"))
                .body(json!({"id": id})),
            Show::One(ACTIVE_SERVER_CERT),
            None,
        ),
        Command::Device(DeviceVerb::List(page)) => {
            (org_list(page, "/devices"), Show::Page(DEVICE), None)
        }
        Command::Device(DeviceVerb::Unblock { entry_id, org }) => (
            Call::new(
                Method::DELETE,
                org_path(&org, &format!("/blocked-devices/{}", encode(&entry_id))),
            ),
            Show::Done(format!("blocklist entry {entry_id} removed")),
            None,
        ),
        Command::Session(SessionVerb::List(page)) => {
            (org_list(page, "/sessions"), Show::Page(SESSION), None)
        }
        Command::Token(TokenVerb::Create {
            role,
            name,
            ttl_seconds,
            org,
        }) => (
            Call::new(Method::POST, org_path(&org, "/tokens"))
                .body(json!({"role": role, "name": name, "ttl_seconds": ttl_seconds})),
            Show::Token,
            None,
        ),
        Command::Token(TokenVerb::List(page)) => {
            (org_list(page, "/tokens"), Show::Page(TOKEN), None)
        }
        Command::Token(TokenVerb::Suspend(OrgItem { id, org })) => (
            Call::new(
                Method::PATCH,
                org_path(&org, &format!("/tokens/{}", encode(&id))),
            )
            .body(json!({"status": "suspended"})),
            Show::One(TOKEN),
            None,
        ),
        Command::Explain {
            chain_file,
            client_id,
            org,
        } => {
            let mut body = json!({"certificate_chain": read_text(&chain_file)?});
            if let Some(client_id) = client_id {
                body["client_id"] = json!(client_id);
            }
            (
                Call::new(Method::POST, org_path(&Org { org }, "/explain")).body(body),
                Show::Explanation,
                None,
            )
        }
        Command::Events { org } => {
            return Ok(Action::Stream(Call::new(
                Method::GET,
                org_path(&Org { org }, "/events"),
            )))
        }
    };
    Ok(Action::Call(call, show, ask))
}

/// Runs one verb.
pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), CliError> {
    let (call, show, ask) = match action(command)? {
        Action::Call(call, show, ask) => (call, show, ask),
        Action::Stream(call) => return events(client, &call, json).await,
    };
    let body = execute(client, &call, ask.as_ref(), json).await?;
    if json {
        if !body.is_empty() {
            println!("{}", String::from_utf8_lossy(&body).trim_end());
        }
        return Ok(());
    }
    let answer: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| CliError::Answer(format!("not JSON: {e}")))?
    };
    print!("{}", people(&show, &answer));
    if let Some(cursor) = answer.get("next_cursor").and_then(Value::as_str) {
        eprintln!("more: --cursor {cursor}");
    }
    Ok(())
}

/// Sends the call of a verb; a destructive one first shows what it would break and asks. A
/// refused dry run is a refusal before the question; a question not answered `y` or `yes`
/// (end of input included) is [`CliError::Cancelled`], the call not sent.
async fn execute(
    client: &Client,
    call: &Call,
    ask: Option<&Ask>,
    json: bool,
) -> Result<bytes::Bytes, CliError> {
    if let Some(ask) = ask {
        match &ask.preview {
            Preview::DryRun => {
                let dry_run = client
                    .send(&call.clone().query("dry_run", Some("true".into())))
                    .await?;
                if !json {
                    let answer: Value = serde_json::from_slice(&dry_run)
                        .map_err(|e| CliError::Answer(format!("not JSON: {e}")))?;
                    print!("{}", would(&answer)?);
                } else if !ask.yes {
                    println!("{}", String::from_utf8_lossy(&dry_run).trim_end());
                }
            }
            // The sentence is not JSON: on stderr for scripts, next to the question.
            Preview::Sentence(sentence) if json => {
                if !ask.yes {
                    eprintln!("{sentence}");
                }
            }
            Preview::Sentence(sentence) => println!("{sentence}"),
        }
        if !ask.yes && !confirmed() {
            return Err(CliError::Cancelled);
        }
    }
    client.send(call).await
}

/// `Proceed? [y/N] ` on stderr, one line read from stdin: `y` or `yes` (any case) agree; anything
/// else, the end of input or a read error does not.
fn confirmed() -> bool {
    // What it asks about first, whatever buffering stdout has.
    let _ = std::io::stdout().flush();
    eprint!("Proceed? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => {
            eprintln!();
            false
        }
        Ok(_) => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
    }
}

/// A dry run's answer for people: `would close 2 sessions: a, b` and `would lock out 1
/// registered device: c`, the names the server listed (the first 100) and how many more.
fn would(answer: &Value) -> Result<String, CliError> {
    let part = |kind: &str, count: &str, names: &str, one: &str, many: &str| {
        let count = answer[kind][count].as_u64();
        let names: Option<Vec<&str>> = answer[kind][names]
            .as_array()
            .and_then(|names| names.iter().map(Value::as_str).collect());
        match (count, names) {
            (Some(0), _) => Ok(format!("no {many}")),
            (Some(count), Some(names)) => {
                let noun = if count == 1 { one } else { many };
                let mut line = format!("{count} {noun}: {}", names.join(", "));
                let more = count.saturating_sub(names.len() as u64);
                if more > 0 {
                    line.push_str(&format!(" and {more} more"));
                }
                Ok(line)
            }
            _ => Err(CliError::Answer(format!(
                "a dry run without {kind}: {answer}"
            ))),
        }
    };
    Ok(format!(
        "would close {}\nwould lock out {}\n",
        part(
            "would_close",
            "sessions",
            "client_ids",
            "session",
            "sessions"
        )?,
        part(
            "would_refuse",
            "devices",
            "identities",
            "registered device",
            "registered devices"
        )?,
    ))
}

/// An answer as people read it.
fn people(show: &Show, answer: &Value) -> String {
    match show {
        Show::One(columns) => table::render(columns, std::slice::from_ref(answer)),
        Show::Page(columns) => {
            let items = answer["items"].as_array().map_or(&[][..], Vec::as_slice);
            table::render(columns, items)
        }
        Show::Token => format!(
            "{}token (shown this once): {}\n",
            table::render(TOKEN, std::slice::from_ref(answer)),
            table::cell(answer.get("token"))
        ),
        Show::Explanation => format!(
            "{}\n{}",
            table::cell(answer.get("message")),
            table::fields(EXPLANATION, answer)
        ),
        Show::Done(sentence) => format!("{sentence}\n"),
    }
}

/// Follows the event stream: one line per event, as it comes, until the stream ends.
async fn events(client: &Client, call: &Call, json: bool) -> Result<(), CliError> {
    let mut stream = Sse::default();
    client
        .stream_lines(call, |line| {
            if let Some((kind, data)) = stream.line(line) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", event_text(&kind, &data, json));
                let _ = out.flush();
            }
        })
        .await
}

/// Server-Sent Events read line by line: `event:` and `data:` fields gathered until the blank
/// line that ends an event; comments (the keep-alives) and other fields skipped.
#[derive(Default)]
struct Sse {
    kind: Option<String>,
    data: Option<String>,
}

impl Sse {
    /// The event (its name, `message` when unnamed, and its data) a blank line completes.
    fn line(&mut self, line: &str) -> Option<(String, String)> {
        if line.is_empty() {
            let kind = self.kind.take();
            return self
                .data
                .take()
                .map(|data| (kind.unwrap_or_else(|| "message".into()), data));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// An event as printed: `{"event", "data"}` with the API's data as it came (`--json`), or a line
/// for people.
fn event_text(kind: &str, data: &str, json: bool) -> String {
    match (serde_json::from_str::<Value>(data), json) {
        (Ok(_), true) => format!("{{\"event\":{},\"data\":{data}}}", json!(kind)),
        (Err(_), true) => json!({"event": kind, "data": data}).to_string(),
        (Ok(event), false) => event_line(kind, &event),
        (Err(_), false) => format!("{kind}  {data}"),
    }
}

/// `AT  KIND  CLIENT-ID  key=value…` for the fields the event has.
fn event_line(kind: &str, event: &Value) -> String {
    let mut line = format!(
        "{}  {kind}  {}",
        table::cell(event.get("at")),
        table::cell(event.get("client_id"))
    );
    for field in ["identity", "peer", "reason", "stage", "sni", "node"] {
        if let Some(value) = event.get(field).filter(|v| !v.is_null()) {
            line.push_str(&format!("  {field}={}", table::cell(Some(value))));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_runs_read_as_counts_and_names() {
        let answer = json!({
            "dry_run": true,
            "would_close": {"sessions": 2, "client_ids": ["d:acme:s:1", "d:acme:s:2"]},
            "would_refuse": {"devices": 1, "identities": ["d:s:2"]},
        });
        assert_eq!(
            would(&answer).unwrap(),
            "would close 2 sessions: d:acme:s:1, d:acme:s:2\n\
             would lock out 1 registered device: d:s:2\n"
        );
        let answer = json!({
            "dry_run": true,
            "would_close": {"sessions": 0, "client_ids": []},
            "would_refuse": {"devices": 102, "identities": ["d:s:1", "d:s:2"]},
        });
        assert_eq!(
            would(&answer).unwrap(),
            "would close no sessions\nwould lock out 102 registered devices: d:s:1, d:s:2 and 100 more\n"
        );
        assert!(would(&json!({"dry_run": true})).is_err());
    }

    #[test]
    fn server_sent_events_are_read_line_by_line() {
        let mut sse = Sse::default();
        let mut events = Vec::new();
        for line in [
            ":keep-alive",
            "",
            "event: connect",
            r#"data: {"at":"t","client_id":"d:acme:s:1","identity":"d:s:1","peer":null}"#,
            "",
            "data:one",
            "data: two",
            "retry: 5",
            "",
        ] {
            events.extend(sse.line(line));
        }
        assert_eq!(events.len(), 2, "{events:?}");
        let (kind, data) = &events[0];
        assert_eq!(kind, "connect");
        assert_eq!(
            event_text(kind, data, false),
            "t  connect  d:acme:s:1  identity=d:s:1"
        );
        assert_eq!(
            event_text(kind, data, true),
            format!(r#"{{"event":"connect","data":{data}}}"#)
        );
        assert_eq!(events[1], ("message".to_owned(), "one\ntwo".to_owned()));
        assert_eq!(
            event_text("message", "one\ntwo", true),
            r#"{"data":"one\ntwo","event":"message"}"#
        );
    }
}
