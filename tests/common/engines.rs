//! Real MQTT brokers for the upstream broker tests: mosquitto 2 (MQTT 5) and NATS 2.9 with
//! JetStream and MQTT (3.1.1), each started by the test on 127.0.0.1 in a temporary directory
//! with a password the front-end logs in with, and stopped by its PID (when dropped, or killed on
//! purpose to show a broker going away). A missing engine fails the test with what to install.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, STEP};

/// The front-end's credential on every engine started here.
pub const USER: &str = "portcullis";
pub const PASSWORD: &str = "front-end-secret";

/// A front-end's `[broker.upstream]` to these engines' `urls`, speaking MQTT 3.1.1 (NATS).
pub fn upstream_v311(urls: &[String]) -> portcullis::config::UpstreamConfig {
    portcullis::config::UpstreamConfig {
        urls: urls
            .iter()
            .map(|url| portcullis::config::Target::parse(url).unwrap())
            .collect(),
        protocol: portcullis::codec::Protocol::V311,
        username: USER.into(),
        password: PASSWORD.into(),
        ca_file: None,
        cert_file: None,
        key_file: None,
    }
}

/// The same as the environment of the real binary (`PORTCULLIS__BROKER__…`).
pub fn upstream_v311_env(urls: &[String]) -> Vec<(String, String)> {
    [
        ("MODE", "upstream".to_owned()),
        ("UPSTREAM__URLS", urls.join(",")),
        ("UPSTREAM__PROTOCOL", "3.1.1".to_owned()),
        ("UPSTREAM__USERNAME", USER.to_owned()),
        ("UPSTREAM__PASSWORD", PASSWORD.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("PORTCULLIS__BROKER__{key}"), value))
    .collect()
}

/// A running broker; killed when dropped.
pub struct Engine {
    child: Child,
    /// Its MQTT listener.
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Engine {
    /// The `mqtt://` URL of its MQTT listener.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Kills the broker (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds an engine's binary, or fails the test saying which Debian package brings it.
fn binary(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} not found: these tests need a real {name}; install the Debian package \
         `{package}` (apt-get install -y {package}; .ci/run does)"
    );
}

/// A port free now on 127.0.0.1, for an engine to bind a moment later: below the kernel's
/// ephemeral range, where `bind(0)` and every outgoing connection take theirs, so that none of the
/// test's own connections (or a NATS node's, dialling a route not yet up) takes it meanwhile.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FIRST);
    assert!(span > 0, "no ports below the ephemeral range ({ephemeral})");
    // Test binaries may run side by side: each starts at its own place.
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port below {ephemeral}");
        let port = (FIRST + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts `command` and waits until `addr` accepts TCP connections.
async fn run(mut command: Command, addr: SocketAddr, dir: tempfile::TempDir) -> Engine {
    let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut engine = Engine { child, addr, dir };
    let up = eventually(STEP, || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    if !up {
        let log = std::fs::read_to_string(engine.dir.path().join("engine.log")).unwrap_or_default();
        engine.kill();
        panic!("{command:?} did not listen on {addr}: {log}");
    }
    engine
}

/// mosquitto 2 on a new port, MQTT 3.1.1 and 5, accepting only [`USER`]/[`PASSWORD`].
pub async fn mosquitto() -> Engine {
    mosquitto_on(free_port()).await
}

/// mosquitto on `port` (a restart on the same port).
pub async fn mosquitto_on(port: u16) -> Engine {
    mosquitto_with(port, "").await
}

/// mosquitto on `port`, with `extra` lines in its configuration file.
pub async fn mosquitto_with(port: u16, extra: &str) -> Engine {
    let broker = binary("mosquitto", "mosquitto");
    let passwd_tool = binary("mosquitto_passwd", "mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let made = Command::new(passwd_tool)
        .arg("-c")
        .arg("-b")
        .arg(&passwd)
        .args([USER, PASSWORD])
        .status()
        .unwrap();
    assert!(made.success(), "mosquitto_passwd failed");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             persistence false\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             {extra}\n",
            passwd.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(broker);
    command.arg("-c").arg(&conf);
    run(command, ([127, 0, 0, 1], port).into(), dir).await
}

/// mosquitto 2 with one TLS listener on a new port: its server certificate `server_pem` (chain)
/// and `server_key`, and client certificates required, verified against `client_ca_pem` (the
/// certificate's identity is the username).
pub async fn mosquitto_tls(server_pem: &str, server_key: &str, client_ca_pem: &str) -> Engine {
    let broker = binary("mosquitto", "mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca) = (
        file("server.pem", server_pem),
        file("server.key", server_key),
        file("clients-ca.pem", client_ca_pem),
    );
    let conf = file(
        "mosquitto.conf",
        &format!(
            "listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n\
             persistence false\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        ),
    );
    let mut command = Command::new(broker);
    command.arg("-c").arg(conf);
    run(command, ([127, 0, 0, 1], port).into(), dir).await
}

/// NATS 2.9 with JetStream and MQTT (3.1.1 only) on a new port, accepting only
/// [`USER`]/[`PASSWORD`].
pub async fn nats() -> Engine {
    nats_node("single", "", "").await
}

/// One NATS node named `name`; `mqtt` is added to its `mqtt {}` block, `cluster` to its file.
async fn nats_node(name: &str, mqtt_extra: &str, cluster: &str) -> Engine {
    let broker = binary("nats-server", "nats-server");
    let dir = tempfile::tempdir().unwrap();
    let (client, mqtt) = (free_port(), free_port());
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             mqtt {{ listen: \"127.0.0.1:{mqtt}\"{mqtt_extra} }}\n\
             authorization {{ user: \"{USER}\", password: \"{PASSWORD}\" }}\n{cluster}\n",
            dir.path().join("js").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(broker);
    command.arg("-c").arg(&conf);
    run(command, ([127, 0, 0, 1], mqtt).into(), dir).await
}

/// A 3-node NATS cluster with JetStream and MQTT (`stream_replicas: 3`), each node accepting only
/// [`USER`]/[`PASSWORD`] on its MQTT listener. Returned once every node listens; JetStream may
/// still be electing its leaders (see [`mqtt_ready`]).
pub async fn nats_cluster() -> Vec<Engine> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list = routes
        .iter()
        .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let cluster = format!(
            "cluster {{ name: \"portcullis-test\", listen: \"127.0.0.1:{route}\", \
             routes: [{route_list}] }}"
        );
        nodes.push(nats_node(&format!("n{i}"), ", stream_replicas: 3", &cluster).await);
    }
    nodes
}

/// Whether `engine` takes a new MQTT 3.1.1 session that keeps state (clean session 0, a QoS 1
/// subscription): a NATS node answers only once JetStream is ready.
pub async fn mqtt_ready(engine: &Engine) -> bool {
    // A new client id each time: NATS answers a known one sooner than it can create a session.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options =
        rumqttc::MqttOptions::new(format!("readiness-{id}"), "127.0.0.1", engine.addr.port());
    options.set_credentials(USER, PASSWORD);
    options.set_clean_session(false);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let probe = async {
        client
            .subscribe("readiness/probe", rumqttc::QoS::AtLeastOnce)
            .await
            .ok()?;
        loop {
            match eventloop.poll().await.ok()? {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)) => {
                    return Some(matches!(
                        ack.return_codes.first(),
                        Some(rumqttc::SubscribeReasonCode::Success(_))
                    ))
                }
                _ => continue,
            }
        }
    };
    let ready = tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
    ready
}

/// How long a test waits for a broker-side effect (a kill noticed, a probe changing state).
pub const NOTICE: Duration = Duration::from_secs(10);
