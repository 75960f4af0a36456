//! Configuration: `config/default.toml` (embedded), then the file given with `--config`, then
//! `PORTCULLIS__<SECTION>__<KEY>` environment variables; raw serde structs validated into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::grants::GrantPolicy;
use crate::identity::OrgId;

mod upstream_url;
pub use upstream_url::Target;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mqtts: MqttsConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub broker: BrokerConfig,
    pub revocation: RevocationConfig,
    pub notify: NotifyConfig,
    pub grants: GrantPolicy,
    pub cluster: ClusterConfig,
}

/// `[cluster]`: how this node names itself and keeps its heartbeat (DESIGN §12).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `None`: `<hostname>-<mqtts port>`, decided once the MQTTS listener is bound.
    pub node_id: Option<String>,
    /// How often the node writes its heartbeat to the store.
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this is listed `down`.
    pub down_after: Duration,
}

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `smtp://host:port`, `smtps://…` or `smtp://…?tls=required`, with optional `user:pass@`;
    /// `None`: no e-mail is sent (webhooks still are).
    pub smtp_url: Option<String>,
    pub from: String,
    pub check_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// `revocation.on_stale_crl = "deny"`.
    pub deny_stale_crl: bool,
    /// Deadline of one OCSP request or CRL download.
    pub fetch_timeout: Duration,
    /// How often live sessions of CAs with OCSP on are checked again.
    pub ocsp_recheck: Duration,
}

#[derive(Debug, Clone)]
pub struct MqttsConfig {
    pub listen: SocketAddr,
    /// Lower-case, without leading or trailing dot.
    pub domain: String,
    pub no_sni_org: Option<OrgId>,
    pub default_cert: Option<(PathBuf, PathBuf)>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub max_packet_size: usize,
    pub max_connections: usize,
    pub max_concurrent_handshakes: usize,
    /// How long a new connection may stay silent before it is closed; waited for before a
    /// handshake slot is taken, so silent sockets cannot hold the slots.
    pub first_byte_timeout: Duration,
    /// Most connections open at once from one source, an IPv4 address or an IPv6 /64 (handshakes
    /// included).
    pub max_connections_per_source: usize,
    /// Longest keep-alive an MQTT 5 client may use; one asking more, or none (0), is told this
    /// one in CONNACK (Server Keep Alive). 0: no cap.
    pub max_keep_alive: u16,
    /// An MQTT 3.1.1 PUBLISH the topic rules refuse: acknowledged and dropped (`true`,
    /// "acknowledge") or the connection closed (`false`, "disconnect", the default).
    pub acknowledge_refused_v311: bool,
    /// Subscription filters one session may hold (enforced by `mqtt::filters`).
    pub max_filters_per_session: usize,
    /// Subscription filters the sessions of one organisation may hold together.
    pub max_filters_per_org: usize,
    /// How long one TLS session ticket key seals tickets (DESIGN §12); a ticket opens for one to
    /// two of these periods.
    pub ticket_rotation: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Most admin connections open at once; further ones are closed at accept, so the admin
    /// listener cannot take the descriptors and memory the device listener needs.
    pub max_connections: usize,
    /// Deadline for a request's headers, from its first byte (from accept for a new connection).
    pub header_timeout: Duration,
    /// Deadline for a request's whole body, from the end of its headers.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a response may wait for a client that does not read it.
    pub write_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Where the store lives: `None` for SQLite in `data_dir`, or a `postgres://` URL (DESIGN §12).
    pub url: Option<String>,
    /// TLS to PostgreSQL: the CA that verifies the database (none: no TLS), and the client
    /// certificate's chain and key files when given.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub max_connections: usize,
    /// Plain MQTT 5 listeners on loopback beside the local links: the load tool's baseline only,
    /// never set from the configuration (the server binds none).
    pub plain_listeners: usize,
    /// Distinct subscription filters the broker may ever be handed (it frees none).
    pub max_filters: usize,
    /// Of those, how many one organisation may hand it: its share.
    pub max_filters_per_org: usize,
    /// `broker.mode = "upstream"`: the upstream broker cluster (none: the embedded broker).
    pub upstream: Option<UpstreamConfig>,
}

/// `[broker.upstream]` (DESIGN §12): where and how each session's upstream connection goes.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// `mqtt://host:port` / `mqtts://host:port`, tried in turn.
    pub urls: Vec<Target>,
    pub protocol: crate::codec::Protocol,
    /// The front-end's own credential, the same for every upstream connection.
    pub username: String,
    pub password: String,
    /// mqtts: the CA that verifies the broker; `cert_file`/`key_file`: the client certificate.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("UpstreamConfig")
            .field("urls", &self.urls)
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    mqtts: RawMqtts,
    admin: RawAdmin,
    store: RawStore,
    broker: RawBroker,
    revocation: RawRevocation,
    notify: RawNotify,
    grants: RawGrants,
    cluster: RawCluster,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node_id: String,
    heartbeat_seconds: u64,
    down_after_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    smtp_url: String,
    from: String,
    check_interval_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    max_age_days: u32,
    max_uses: u64,
    warn_before_days: u32,
    warn_usage_ratio: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    on_stale_crl: String,
    fetch_timeout_ms: u64,
    ocsp_recheck_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtts {
    listen: SocketAddr,
    domain: String,
    no_sni_org: Option<String>,
    default_cert: Option<PathBuf>,
    default_key: Option<PathBuf>,
    handshake_timeout_ms: u64,
    connect_timeout_ms: u64,
    write_timeout_ms: u64,
    max_packet_size: usize,
    max_connections: usize,
    max_concurrent_handshakes: usize,
    first_byte_timeout_ms: u64,
    max_connections_per_source: usize,
    max_filters_per_session: usize,
    max_filters_per_org: usize,
    max_keep_alive_secs: u16,
    refused_publish_v311: String,
    ticket_rotation_hours: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
    max_body_bytes: usize,
    max_connections: usize,
    header_timeout_ms: u64,
    body_timeout_ms: u64,
    idle_timeout_ms: u64,
    write_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    data_dir: PathBuf,
    #[serde(default)]
    url: String,
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    max_connections: usize,
    max_filters: usize,
    max_filters_per_org: usize,
    mode: String,
    upstream: RawUpstream,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    urls: Vec<String>,
    protocol: String,
    username: String,
    password: String,
    ca_file: String,
    cert_file: String,
    key_file: String,
}

fn bad(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

impl RawBroker {
    /// `broker.mode` and `[broker.upstream]`, checked: `None` for the embedded broker.
    fn upstream(&self) -> Result<Option<UpstreamConfig>, ConfigError> {
        match self.mode.as_str() {
            "embedded" => return Ok(None),
            "upstream" => {}
            _ => return Err(bad("broker.mode", "must be \"embedded\" or \"upstream\"")),
        }
        let raw = &self.upstream;
        if raw.urls.is_empty() {
            return Err(bad("broker.upstream.urls", "must name at least one broker"));
        }
        let mut tls = false;
        let mut urls = Vec::with_capacity(raw.urls.len());
        for url in &raw.urls {
            let target = Target::parse(url).map_err(|e| bad("broker.upstream.urls", &e))?;
            tls |= target.tls;
            urls.push(target);
        }
        let protocol = match raw.protocol.as_str() {
            "5" => crate::codec::Protocol::V5,
            "3.1.1" => crate::codec::Protocol::V311,
            _ => {
                return Err(bad(
                    "broker.upstream.protocol",
                    "must be \"5\" or \"3.1.1\"",
                ))
            }
        };
        let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
        let (ca_file, cert_file, key_file) = (
            path(&raw.ca_file),
            path(&raw.cert_file),
            path(&raw.key_file),
        );
        if tls && ca_file.is_none() {
            return Err(bad("broker.upstream.ca_file", "mqtts:// URLs need it"));
        }
        if cert_file.is_some() != key_file.is_some() {
            return Err(bad(
                "broker.upstream.cert_file",
                "needs key_file, and the reverse",
            ));
        }
        Ok(Some(UpstreamConfig {
            urls,
            protocol,
            username: raw.username.clone(),
            password: raw.password.clone(),
            ca_file,
            cert_file,
            key_file,
        }))
    }
}

impl Config {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, None)
    }

    /// [`Config::load`] reading `env` instead of the process environment when given.
    fn load_with_env(
        file: Option<&std::path::Path>,
        env: Option<config::Map<String, String>>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("PORTCULLIS")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // PORTCULLIS__BROKER__UPSTREAM__URLS=mqtt://a:1883,mqtt://b:1883
                .list_separator(",")
                .with_list_parse_key("broker.upstream.urls")
                .source(env),
        );
        let raw: Raw = builder.build()?.try_deserialize()?;
        Config::validate(raw)
    }

    /// The embedded defaults alone, with the given overrides applied by the caller: what tests use.
    pub fn defaults() -> Result<Config, ConfigError> {
        let raw: Raw = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        Config::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let domain = raw.mqtts.domain.trim_matches('.').to_ascii_lowercase();
        let domain_ok = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err(invalid("mqtts.domain", "must be a DNS name"));
        }
        let no_sni_org = match raw.mqtts.no_sni_org.as_deref() {
            None | Some("") => None,
            Some(s) => {
                Some(OrgId::parse(s).map_err(|e| invalid("mqtts.no_sni_org", &e.to_string()))?)
            }
        };
        let acknowledge_refused_v311 = match raw.mqtts.refused_publish_v311.as_str() {
            "disconnect" => false,
            "acknowledge" => true,
            _ => {
                return Err(invalid(
                    "mqtts.refused_publish_v311",
                    "must be \"disconnect\" or \"acknowledge\"",
                ))
            }
        };
        let default_cert = match (raw.mqtts.default_cert, raw.mqtts.default_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "mqtts.default_cert",
                    "default_cert and default_key go together",
                ))
            }
        };
        let positive = |key: &'static str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        positive("mqtts.handshake_timeout_ms", raw.mqtts.handshake_timeout_ms)?;
        positive("mqtts.connect_timeout_ms", raw.mqtts.connect_timeout_ms)?;
        positive("mqtts.write_timeout_ms", raw.mqtts.write_timeout_ms)?;
        positive("mqtts.max_connections", raw.mqtts.max_connections as u64)?;
        positive(
            "mqtts.max_concurrent_handshakes",
            raw.mqtts.max_concurrent_handshakes as u64,
        )?;
        positive(
            "mqtts.first_byte_timeout_ms",
            raw.mqtts.first_byte_timeout_ms,
        )?;
        positive(
            "mqtts.max_connections_per_source",
            raw.mqtts.max_connections_per_source as u64,
        )?;
        positive("admin.max_connections", raw.admin.max_connections as u64)?;
        positive("admin.header_timeout_ms", raw.admin.header_timeout_ms)?;
        positive("admin.body_timeout_ms", raw.admin.body_timeout_ms)?;
        positive("admin.idle_timeout_ms", raw.admin.idle_timeout_ms)?;
        positive("admin.write_timeout_ms", raw.admin.write_timeout_ms)?;
        positive("broker.max_connections", raw.broker.max_connections as u64)?;
        positive(
            "mqtts.max_filters_per_session",
            raw.mqtts.max_filters_per_session as u64,
        )?;
        positive(
            "mqtts.max_filters_per_org",
            raw.mqtts.max_filters_per_org as u64,
        )?;
        positive("broker.max_filters", raw.broker.max_filters as u64)?;
        positive(
            "broker.max_filters_per_org",
            raw.broker.max_filters_per_org as u64,
        )?;
        positive(
            "revocation.fetch_timeout_ms",
            raw.revocation.fetch_timeout_ms,
        )?;
        positive(
            "revocation.ocsp_recheck_seconds",
            raw.revocation.ocsp_recheck_seconds,
        )?;
        positive(
            "notify.check_interval_seconds",
            raw.notify.check_interval_seconds,
        )?;
        positive("grants.max_age_days", u64::from(raw.grants.max_age_days))?;
        if raw.grants.max_age_days > 3650 {
            return Err(invalid("grants.max_age_days", "must be at most 3650"));
        }
        positive("grants.max_uses", raw.grants.max_uses)?;
        if raw.grants.max_uses > i64::MAX as u64 {
            return Err(invalid("grants.max_uses", "is too large"));
        }
        if raw.grants.warn_before_days >= raw.grants.max_age_days {
            return Err(invalid(
                "grants.warn_before_days",
                "must be less than grants.max_age_days",
            ));
        }
        if !(raw.grants.warn_usage_ratio > 0.0 && raw.grants.warn_usage_ratio <= 1.0) {
            return Err(invalid(
                "grants.warn_usage_ratio",
                "must be greater than 0 and at most 1",
            ));
        }
        if raw.notify.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid("notify.from", "must be an e-mail address"));
        }
        let smtp_url = match raw.notify.smtp_url.trim() {
            "" => None,
            url if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                Some(url.to_owned())
            }
            _ => {
                return Err(invalid(
                    "notify.smtp_url",
                    "must be empty or an smtp:// or smtps:// URL",
                ))
            }
        };
        if raw.mqtts.max_packet_size < 64 || raw.mqtts.max_packet_size > 268_435_455 {
            return Err(invalid(
                "mqtts.max_packet_size",
                "must be between 64 and 268435455",
            ));
        }
        // A ticket opens for up to two periods, and TLS 1.3 caps a ticket's life at 7 days.
        if !(1..=84).contains(&raw.mqtts.ticket_rotation_hours) {
            return Err(invalid(
                "mqtts.ticket_rotation_hours",
                "must be between 1 and 84",
            ));
        }
        let cluster = cluster(raw.cluster)?;
        if raw.admin.max_body_bytes < 1024 {
            return Err(invalid("admin.max_body_bytes", "must be at least 1024"));
        }
        Ok(Config {
            mqtts: MqttsConfig {
                listen: raw.mqtts.listen,
                domain,
                no_sni_org,
                default_cert,
                handshake_timeout: Duration::from_millis(raw.mqtts.handshake_timeout_ms),
                connect_timeout: Duration::from_millis(raw.mqtts.connect_timeout_ms),
                write_timeout: Duration::from_millis(raw.mqtts.write_timeout_ms),
                max_packet_size: raw.mqtts.max_packet_size,
                max_connections: raw.mqtts.max_connections,
                max_concurrent_handshakes: raw.mqtts.max_concurrent_handshakes,
                first_byte_timeout: Duration::from_millis(raw.mqtts.first_byte_timeout_ms),
                max_connections_per_source: raw.mqtts.max_connections_per_source,
                max_keep_alive: raw.mqtts.max_keep_alive_secs,
                acknowledge_refused_v311,
                max_filters_per_session: raw.mqtts.max_filters_per_session,
                max_filters_per_org: raw.mqtts.max_filters_per_org,
                ticket_rotation: Duration::from_secs(raw.mqtts.ticket_rotation_hours * 3600),
            },
            admin: AdminConfig {
                listen: raw.admin.listen,
                max_body_bytes: raw.admin.max_body_bytes,
                max_connections: raw.admin.max_connections,
                header_timeout: Duration::from_millis(raw.admin.header_timeout_ms),
                body_timeout: Duration::from_millis(raw.admin.body_timeout_ms),
                idle_timeout: Duration::from_millis(raw.admin.idle_timeout_ms),
                write_timeout: Duration::from_millis(raw.admin.write_timeout_ms),
            },
            store: raw.store.checked()?,
            broker: BrokerConfig {
                max_connections: raw.broker.max_connections,
                plain_listeners: 0,
                max_filters: raw.broker.max_filters,
                max_filters_per_org: raw.broker.max_filters_per_org,
                upstream: raw.broker.upstream()?,
            },
            revocation: RevocationConfig {
                deny_stale_crl: match raw.revocation.on_stale_crl.as_str() {
                    "allow" => false,
                    "deny" => true,
                    _ => {
                        return Err(invalid(
                            "revocation.on_stale_crl",
                            "must be \"allow\" or \"deny\"",
                        ))
                    }
                },
                fetch_timeout: Duration::from_millis(raw.revocation.fetch_timeout_ms),
                ocsp_recheck: Duration::from_secs(raw.revocation.ocsp_recheck_seconds),
            },
            notify: NotifyConfig {
                smtp_url,
                from: raw.notify.from,
                check_interval: Duration::from_secs(raw.notify.check_interval_seconds),
            },
            grants: GrantPolicy {
                max_age: time::Duration::days(i64::from(raw.grants.max_age_days)),
                max_uses: raw.grants.max_uses as i64,
                warn_before: time::Duration::days(i64::from(raw.grants.warn_before_days)),
                warn_usage_ratio: raw.grants.warn_usage_ratio,
            },
            cluster,
        })
    }
}

impl RawStore {
    /// `[store]`, checked: TLS files only with a PostgreSQL URL, a client certificate's chain and
    /// key together.
    fn checked(self) -> Result<StoreConfig, ConfigError> {
        let url = store_url(&self.url)?;
        let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
        let ca_file = path(&self.ca_file);
        let client_cert = match (path(&self.cert_file), path(&self.key_file)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(bad("store.cert_file", "needs key_file, and the reverse")),
        };
        if url.is_none() && (ca_file.is_some() || client_cert.is_some()) {
            return Err(bad(
                "store.ca_file",
                "TLS files need a postgres:// store.url",
            ));
        }
        if client_cert.is_some() && ca_file.is_none() {
            return Err(bad(
                "store.cert_file",
                "a client certificate needs ca_file (TLS)",
            ));
        }
        Ok(StoreConfig {
            data_dir: self.data_dir,
            url,
            ca_file,
            client_cert,
        })
    }
}

/// `store.url`: empty is SQLite in `data_dir`; otherwise a `postgres://` (or `postgresql://`)
/// URL, refused at load time rather than at the first query.
fn store_url(url: &str) -> Result<Option<String>, ConfigError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Invalid {
            key: "store.url",
            reason: "must be empty (SQLite in data_dir) or a postgres:// URL".into(),
        });
    }
    Ok(Some(url.to_owned()))
}

/// `[cluster]`: a node id of at most 64 printable characters (empty: decided at bind); a
/// heartbeat of at least a second, and `down_after` longer than it (or every node would flap).
fn cluster(raw: RawCluster) -> Result<ClusterConfig, ConfigError> {
    let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    };
    let node_id = raw.node_id.trim();
    if node_id.chars().count() > 64 || node_id.chars().any(char::is_control) {
        return Err(invalid(
            "cluster.node_id",
            "must be at most 64 characters without control characters",
        ));
    }
    if raw.heartbeat_seconds == 0 || raw.heartbeat_seconds > 3600 {
        return Err(invalid(
            "cluster.heartbeat_seconds",
            "must be between 1 and 3600",
        ));
    }
    if raw.down_after_seconds <= raw.heartbeat_seconds {
        return Err(invalid(
            "cluster.down_after_seconds",
            "must be greater than cluster.heartbeat_seconds",
        ));
    }
    Ok(ClusterConfig {
        node_id: (!node_id.is_empty()).then(|| node_id.to_owned()),
        heartbeat_interval: Duration::from_secs(raw.heartbeat_seconds),
        down_after: Duration::from_secs(raw.down_after_seconds),
    })
}

#[cfg(test)]
mod upstream_tests {
    use super::*;

    pub(super) fn load(broker: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("portcullis.toml");
        std::fs::write(&file, broker).unwrap();
        Config::load(Some(&file))
    }

    pub(super) fn refused_key(broker: &str) -> &'static str {
        match load(broker) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{broker}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn store_tls_files_go_with_a_postgres_url_and_a_client_key_with_its_certificate() {
        let url = "[store]\nurl = \"postgres://db.example/portcullis\"\n";
        let config = load(&format!(
            "{url}ca_file = \"/etc/db-ca.pem\"\ncert_file = \"/etc/c.pem\"\nkey_file = \"/etc/c.key\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.store.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/db-ca.pem"))
        );
        assert!(config.store.client_cert.is_some());
        assert!(Config::defaults().unwrap().store.ca_file.is_none());
        assert_eq!(
            refused_key("[store]\nca_file = \"/etc/db-ca.pem\"\n"),
            "store.ca_file"
        );
        assert_eq!(
            refused_key(&format!("{url}ca_file = \"/a\"\ncert_file = \"/c.pem\"\n")),
            "store.cert_file"
        );
        assert_eq!(
            refused_key(&format!(
                "{url}cert_file = \"/c.pem\"\nkey_file = \"/c.key\"\n"
            )),
            "store.cert_file"
        );
    }

    #[test]
    fn the_upstream_broker_block_is_read_and_checked() {
        let config = load(
            "[broker]\nmode = \"upstream\"\n[broker.upstream]\n\
             urls = [\"mqtt://10.0.0.5\", \"mqtts://b.example:8883\"]\nprotocol = \"3.1.1\"\n\
             username = \"fe\"\npassword = \"s3cret\"\nca_file = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let upstream = config.broker.upstream.expect("upstream mode");
        assert_eq!(upstream.urls.len(), 2);
        assert_eq!(upstream.protocol, crate::codec::Protocol::V311);
        assert_eq!(
            upstream.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert!(
            !format!("{upstream:?}").contains("s3cret"),
            "the password is printed"
        );
        assert!(Config::defaults().unwrap().broker.upstream.is_none());

        // The environment alone can name several URLs, comma-separated.
        let env = [
            ("PORTCULLIS__BROKER__MODE", "upstream"),
            (
                "PORTCULLIS__BROKER__UPSTREAM__URLS",
                "mqtt://10.0.0.5:1883,mqtt://10.0.0.6",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let upstream = Config::load_with_env(None, Some(env))
            .unwrap()
            .broker
            .upstream
            .expect("upstream mode from the environment");
        let hosts: Vec<_> = upstream
            .urls
            .iter()
            .map(|t| (t.host.as_str(), t.port))
            .collect();
        assert_eq!(hosts, [("10.0.0.5", 1883), ("10.0.0.6", 1883)]);

        let upstream =
            |rest: &str| format!("[broker]\nmode = \"upstream\"\n[broker.upstream]\n{rest}");
        assert_eq!(refused_key("[broker]\nmode = \"cluster\"\n"), "broker.mode");
        assert_eq!(refused_key(&upstream("")), "broker.upstream.urls");
        assert_eq!(
            refused_key(&upstream("urls = [\"tcp://x\"]\n")),
            "broker.upstream.urls"
        );
        assert_eq!(
            refused_key(&upstream("urls = [\"mqtt://x\"]\nprotocol = \"4\"\n")),
            "broker.upstream.protocol"
        );
        assert_eq!(
            refused_key(&upstream("urls = [\"mqtts://x\"]\n")),
            "broker.upstream.ca_file"
        );
        assert_eq!(
            refused_key(&upstream("urls = [\"mqtt://x\"]\ncert_file = \"/c.pem\"\n")),
            "broker.upstream.cert_file"
        );
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    fn raw(node_id: &str, heartbeat: u64, down_after: u64) -> RawCluster {
        RawCluster {
            node_id: node_id.to_owned(),
            heartbeat_seconds: heartbeat,
            down_after_seconds: down_after,
        }
    }

    #[test]
    fn cluster_keys_are_checked() {
        let defaults = Config::defaults().unwrap().cluster;
        assert_eq!(defaults.node_id, None);
        assert_eq!(defaults.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(defaults.down_after, Duration::from_secs(15));
        assert_eq!(
            cluster(raw(" node-1 ", 1, 3)).unwrap().node_id.as_deref(),
            Some("node-1")
        );
        for (bad, key) in [
            (raw(&"n".repeat(65), 1, 3), "cluster.node_id"),
            (raw("a\nb", 1, 3), "cluster.node_id"),
            (raw("", 0, 3), "cluster.heartbeat_seconds"),
            (raw("", 5, 5), "cluster.down_after_seconds"),
        ] {
            match cluster(bad) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_ticket_rotation_is_checked() {
        use super::upstream_tests::{load, refused_key};
        let hours = |h: u64| format!("[mqtts]\nticket_rotation_hours = {h}\n");
        assert_eq!(
            Config::defaults().unwrap().mqtts.ticket_rotation,
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(
            load(&hours(84)).unwrap().mqtts.ticket_rotation,
            Duration::from_secs(84 * 3600)
        );
        for bad in [0, 85] {
            assert_eq!(refused_key(&hours(bad)), "mqtts.ticket_rotation_hours");
        }
    }
}
