//! The operator CLI (DESIGN §13): `portcullis <verb> …` in the server's binary, a client of the
//! admin API. Global flags say where the API is and which token to send; each verb is one call
//! (`verbs`), sent by `client`, its answer printed as the API's JSON (`--json`) or as a table for
//! people (`table`). The destructive verbs show the server's dry run and ask first (`verbs`,
//! `--yes` not to ask). Exit codes: 0 done, 1 the API refused, 2 usage, 3 unreachable, 4 cancelled
//! at the prompt (nothing changed).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

mod client;
mod table;
mod verbs;

pub use verbs::{CaVerb, DeviceVerb, OrgVerb, ServerCertVerb, SessionVerb, TokenVerb};

/// Where the admin API listens unless told otherwise: `admin.listen`'s default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Flags of every verb, before or after it. No `Debug`: the token is never printed.
#[derive(Args)]
pub struct Global {
    /// The admin API's base URL.
    #[arg(long, global = true, env = "PORTCULLIS_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// The bearer token; default: the admin token in <store.data_dir>/admin-token, when readable.
    #[arg(long, global = true, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON as it answered, for scripts (events: one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// The data directory holding admin-token (default: store.data_dir of the configuration).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file overriding config/default.toml; PORTCULLIS__<SECTION>__<KEY> overrides both.
    /// `serve` runs with it; the other verbs read store.data_dir from it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The verbs that talk to the admin API.
#[derive(Subcommand)]
pub enum Command {
    /// Organisations: create, update, list, delete.
    #[command(subcommand)]
    Org(OrgVerb),
    /// An org's device CA certificates: upload, list, activate, deactivate, delete.
    #[command(subcommand)]
    Ca(CaVerb),
    /// An org's server certificates: upload, generate, list, activate.
    #[command(subcommand)]
    ServerCert(ServerCertVerb),
    /// An org's device registry and blocklist: list, block, unblock.
    #[command(subcommand)]
    Device(DeviceVerb),
    /// An org's live sessions: list, disconnect.
    #[command(subcommand)]
    Session(SessionVerb),
    /// An org's tokens: create, list, suspend.
    #[command(subcommand)]
    Token(TokenVerb),
    /// Follow an org's connects, disconnects and refusals, one line per event, until interrupted.
    Events {
        #[arg(long)]
        org: String,
    },
    /// What a device with this certificate chain (PEM, leaf first) would meet if it connected now.
    Explain {
        chain_file: PathBuf,
        /// The client id it would send (default: any its certificate claims).
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        org: String,
    },
}

/// Why a verb did not finish, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error.
    #[error("refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No answer: connection refused, name unknown, TLS failed, deadline passed.
    #[error("the admin API is unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not what the API sends.
    #[error("unexpected answer: {0}")]
    Answer(String),
    /// Not confirmed at the prompt (or nothing to read there): the change was not asked for.
    #[error("cancelled: nothing changed")]
    Cancelled,
}

impl CliError {
    /// The API's `{"error": {"code", "message"}}`, or the start of whatever else it sent.
    fn refused(status: u16, body: &[u8]) -> CliError {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().map(|v| &v["error"]);
        let text = |field: &str| error.and_then(|e| e[field].as_str()).map(str::to_owned);
        match (text("code"), text("message")) {
            (Some(code), Some(message)) => CliError::Refused {
                status,
                code,
                message,
            },
            _ => CliError::Refused {
                status,
                code: "http_error".into(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            },
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } | CliError::Answer(_) => 1,
            CliError::Usage(_) | CliError::File { .. } => 2,
            CliError::Unreachable(_) => 3,
            CliError::Cancelled => 4,
        }
    }
}

/// Runs one verb to its end: the process's exit code.
pub fn run(global: Global, command: Command) -> ExitCode {
    let outcome = token(&global).and_then(|token| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Unreachable(format!("cannot start the runtime: {e}")))?;
        let client = client::Client::new(global.url.clone(), token);
        runtime.block_on(verbs::run(&client, command, global.json))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("portcullis: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// `--token` / `PORTCULLIS_TOKEN`, else the admin token in the data directory (`--data-dir`, or
/// `store.data_dir` of the configuration `serve` would load).
fn token(global: &Global) -> Result<String, CliError> {
    if let Some(token) = &global.token {
        return Ok(token.trim().to_owned());
    }
    let data_dir = match &global.data_dir {
        Some(dir) => dir.clone(),
        None => {
            crate::config::Config::load(global.config.as_deref())
                .map_err(|e| CliError::Usage(e.to_string()))?
                .store
                .data_dir
        }
    };
    let file = data_dir.join(crate::store::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&file) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => Err(CliError::Usage(format!(
            "no token: give --token or PORTCULLIS_TOKEN, or run where {} is readable",
            file.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_apis_code_and_message_and_exit_1() {
        let body = br#"{"error": {"code": "org_exists", "message": "It exists."}}"#;
        let error = CliError::refused(409, body);
        assert_eq!(error.to_string(), "refused (409 org_exists): It exists.");
        assert_eq!(error.exit_code(), 1);
        let error = CliError::refused(502, b"Bad Gateway");
        assert_eq!(error.to_string(), "refused (502 http_error): Bad Gateway");
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Unreachable("x".into()).exit_code(), 3);
        assert_eq!(CliError::Cancelled.exit_code(), 4);
    }
}
