//! A real PostgreSQL 15 for tests, on loopback: one server per test binary, started on first use
//! in a temporary directory, and one fresh database per test ([`database`]), so tests stay
//! parallel. Used by the integration tests (`tests/common`) and by the store's own tests
//! (`src/store/tests.rs` includes this file).
//!
//! PostgreSQL refuses to run as root: as root the server runs as the `postgres` user (`runuser`),
//! in a directory it owns. A watchdog process stops the server (by its data directory) and removes
//! the directory once the test binary has exited. Missing binaries fail the test with what to
//! install: CI installs the Debian package `postgresql`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Where Debian puts PostgreSQL 15's server binaries; `PORTCULLIS_PG_BIN` overrides.
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

struct Server {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    data: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The URL of a new, empty database on this binary's server (started on first use).
pub fn database() -> String {
    create_database(SERVER.get_or_init(|| start(None)))
}

/// A PostgreSQL server of the test's own, which it may stop and start again (an outage) without
/// touching the other tests' databases.
pub struct OwnServer(Server);

/// Starts a [`OwnServer`].
pub fn own_server() -> OwnServer {
    OwnServer(start(None))
}

/// Starts a [`OwnServer`] that takes TCP connections over TLS only (`hostssl`; a plain one is
/// rejected), with the PEM certificate chain `chain` and key `key`.
pub fn own_server_tls(chain: &str, key: &str) -> OwnServer {
    OwnServer(start(Some((chain, key))))
}

impl OwnServer {
    /// The URL of a new, empty database on this server.
    pub fn database(&self) -> String {
        create_database(&self.0)
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected).
    pub fn stop(&self) {
        let mut pg_ctl = as_postgres(&self.0.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.0.data)
            .args(["-m", "fast", "-w", "stop"]);
        run(pg_ctl, "pg_ctl stop");
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn start(&self) {
        pg_ctl_start(&self.0.bin, &self.0.dir, &self.0.data);
    }
}

fn create_database(server: &Server) -> String {
    let name = format!("t_{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
    let out = Command::new(server.bin.join("createdb"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            &name,
        ])
        .output()
        .expect("run createdb");
    assert!(
        out.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    url(server.port, &name)
}

/// The URL of database `name` on port `port`.
fn url(port: u16, name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` run as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(tls: Option<(&str, &str)>) -> Server {
    let bin = PathBuf::from(std::env::var("PORTCULLIS_PG_BIN").unwrap_or(DEFAULT_BIN.into()));
    assert!(
        bin.join("postgres").exists() && bin.join("initdb").exists(),
        "PostgreSQL 15 binaries not found in {}: install the Debian package `postgresql` \
         (apt-get install postgresql), or set PORTCULLIS_PG_BIN to their directory",
        bin.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("portcullis-pg-")
        .tempdir()
        .expect("temporary directory")
        .keep();
    let data = dir.join("data");
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&dir);
                c
            },
            "chown the PostgreSQL directory to postgres",
        );
    }
    let mut initdb = as_postgres(&bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "--auth=trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initdb");
    let port = free_port();
    let conf = format!(
        "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
        dir.display()
    );
    let conf_path = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
    text.push_str(&conf);
    if let Some((chain, key)) = tls {
        text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        // Local (Unix socket) connections stay as they are; TCP ones must use TLS.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        for (name, content) in [("server.crt", chain), ("server.key", key)] {
            let path = data.join(name);
            std::fs::write(&path, content).expect("write the server's TLS files");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the server's TLS files");
            if is_root() {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(&path);
                run(chown, "chown the server's TLS files");
            }
        }
    }
    std::fs::write(&conf_path, text).expect("write postgresql.conf");
    pg_ctl_start(&bin, &dir, &data);
    watch(&bin, &dir, &data);
    Server {
        bin,
        port,
        dir,
        data,
    }
}

fn pg_ctl_start(bin: &Path, dir: &Path, data: &Path) {
    let mut pg_ctl = as_postgres(&bin.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "start"]);
    run(pg_ctl, "pg_ctl start");
}

/// Spawns a watchdog that stops the server and removes `dir` once this process has exited.
/// It is never waited for: it outlives this process by design (init reaps it).
#[allow(clippy::zombie_processes)]
fn watch(bin: &Path, dir: &Path, data: &Path) {
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            bin.join("pg_ctl").display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            bin.join("pg_ctl").display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the PostgreSQL watchdog");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
