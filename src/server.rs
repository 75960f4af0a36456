//! The whole server: [`Server::bind`] opens the store, makes or loads the platform PKI, starts the
//! embedded broker and binds both listeners, so the caller can read the real addresses; then
//! [`Server::run`] serves until the shutdown future resolves and drains.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::broker::{Broker, BrokerError};
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::{Config, StoreConfig};
use crate::health::Health;
use crate::listener::admin::AdminLimits;
use crate::listener::{self, Limits};
use crate::mqtt::filters::FilterQuota;
use crate::mqtt::session::Context;
use crate::notify::{Notifier, NotifyError};
use crate::pki::{self, Issuer, PkiError};
use crate::registry::{Platform, Registry, RegistryError};
use crate::revocation::crl::CrlFetcher;
use crate::revocation::ocsp::Ocsp;
use crate::store::postgres::Change;
use crate::store::{self, Store, StoreError};
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("platform PKI: {0}")]
    Pki(#[from] PkiError),
    #[error("default server certificate: {0}")]
    DefaultCert(String),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
    #[error("store TLS: {0}")]
    StoreTls(String),
}

impl ServerError {
    /// True when the operator must change how the node is started (exit 64, EX_USAGE): its
    /// master key does not open the store.
    pub fn is_usage(&self) -> bool {
        matches!(self, ServerError::Store(StoreError::MasterKey(_)))
    }
}

pub struct Server {
    config: Config,
    /// The PostgreSQL database (`None`: SQLite).
    postgres: Option<store::postgres::Target>,
    mqtts: TcpListener,
    admin: TcpListener,
    context: Arc<Context>,
    admin_state: AdminState,
    notifier: Arc<Notifier>,
    crl_fetcher: Arc<CrlFetcher>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        Server::bind_with_clock(config, Clock::system()).await
    }

    /// [`Server::bind`] with the clock that expiry, notifications and grants read: tests pass a
    /// manual one.
    pub async fn bind_with_clock(config: Config, clock: Clock) -> Result<Server, ServerError> {
        // The recorder first, so that what bind records is kept.
        let metrics = crate::metrics::handle();
        let data_dir = config.store.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        // The store's client blocks (PostgreSQL's would panic on a runtime worker): everything
        // that reads or writes it before serving runs on a blocking thread.
        let opening = config.clone();
        let Opened {
            postgres,
            store,
            registry,
            token,
        } = tokio::task::spawn_blocking(move || open_state(&opening, clock))
            .await
            .map_err(|e| ServerError::Store(StoreError::Corrupt(format!("opening: {e}"))))??;
        let broker = Arc::new(Broker::start(&config.broker).await?);

        let mqtts = bind_listener("MQTTS", config.mqtts.listen).await?;
        let admin = bind_listener("admin", config.admin.listen).await?;
        let node_id = node_id(&config, &mqtts);
        let health = Arc::new(Health::new(node_id.clone(), config.cluster.down_after));
        if config.store.url.is_none() {
            // SQLite: this process is the one node, and it leads.
            let store = store.clone();
            let node_id = node_id.clone();
            tokio::task::spawn_blocking(move || {
                store.forget_other_nodes(&node_id)?;
                store.lead(&node_id, time::OffsetDateTime::now_utc())
            })
            .await
            .map_err(|e| ServerError::Store(StoreError::Corrupt(format!("nodes: {e}"))))??;
            health.set_leading(true);
        }
        let (devices, device_writer) = crate::devices::DeviceLog::new(store.clone(), node_id);
        tokio::spawn(device_writer);
        let notifier = Arc::new(Notifier::new(
            store.clone(),
            &config.notify,
            config.revocation.fetch_timeout,
        )?);
        let crl_fetcher = Arc::new(CrlFetcher::new(
            store.clone(),
            registry.clone(),
            config.revocation.fetch_timeout,
        ));
        let (cluster, cluster_teller) = Cluster::new(
            health.node_id.clone(),
            store.clone(),
            config.store.url.is_some(),
            registry.clone(),
            notifier.clone(),
            health.leadership(),
            config.cluster.down_after,
        );
        if let Some(teller) = cluster_teller {
            tokio::spawn(teller);
        }
        let cluster = Arc::new(cluster);
        let admin_state = AdminState {
            cluster: cluster.clone(),
            crl_fetcher: crl_fetcher.clone(),
            store,
            registry: registry.clone(),
            admin_token_sha256: sha256(token.as_bytes()),
            metrics,
            max_body_bytes: config.admin.max_body_bytes,
            notifier: notifier.clone(),
            broker: Some(broker.clone()),
            health: health.clone(),
        };
        let filters = FilterQuota::new(
            config.mqtts.max_filters_per_session,
            config.mqtts.max_filters_per_org,
            broker.clone(),
        );
        let context = Arc::new(Context {
            registry,
            broker,
            filters,
            devices,
            connect_timeout: config.mqtts.connect_timeout,
            max_keep_alive: config.mqtts.max_keep_alive,
            acknowledge_refused_v311: config.mqtts.acknowledge_refused_v311,
            write_timeout: config.mqtts.write_timeout,
            max_packet_size: config.mqtts.max_packet_size,
            ocsp: Arc::new(Ocsp::new(config.revocation.fetch_timeout)),
            cluster,
        });
        Ok(Server {
            config,
            postgres,
            mqtts,
            admin,
            context,
            admin_state,
            notifier,
            crl_fetcher,
        })
    }

    pub fn mqtts_addr(&self) -> SocketAddr {
        self.mqtts.local_addr().unwrap_or(self.config.mqtts.listen)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// Serves until `shutdown` resolves; then stops accepting, closes live sessions and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop, stopped) = watch::channel(false);
        let limits = Limits {
            max_connections: self.config.mqtts.max_connections,
            max_connections_per_source: self.config.mqtts.max_connections_per_source,
            max_concurrent_handshakes: self.config.mqtts.max_concurrent_handshakes,
            first_byte_timeout: self.config.mqtts.first_byte_timeout,
            handshake_timeout: self.config.mqtts.handshake_timeout,
        };
        let admin_limits = AdminLimits {
            max_connections: self.config.admin.max_connections,
            header_timeout: self.config.admin.header_timeout,
            body_timeout: self.config.admin.body_timeout,
            idle_timeout: self.config.admin.idle_timeout,
            write_timeout: self.config.admin.write_timeout,
        };
        tracing::info!(mqtts = %self.mqtts_addr(), admin = %self.admin_addr(), "serving");
        let ocsp_recheck = tokio::spawn(crate::registry::ocsp_recheck::run(
            self.context.registry.clone(),
            self.context.ocsp.clone(),
            self.config.revocation.ocsp_recheck,
            stopped.clone(),
        ));
        // PostgreSQL: follow the changes other nodes commit, and campaign for the lead (DESIGN
        // §12). A change to an org may be a CRL source set through another node: the fetcher
        // (running on the leader) reads its sources again. The node serves once it follows
        // (what other nodes tell it from then on reaches it), or once it gave up waiting.
        let store = self.admin_state.store.clone();
        let health = self.admin_state.health.clone();
        let (followed, mut following) = watch::channel(self.config.store.url.is_none());
        let threads = match &self.postgres {
            Some(target) => {
                let mut follow = health.clone().follow(self.admin_state.registry.clone());
                let fetcher = self.crl_fetcher.clone();
                let cluster = self.admin_state.cluster.clone();
                let listening =
                    store::postgres::listen(target, stopped.clone(), move |change| match change {
                        Change::Told(message) => {
                            cluster.apply(message);
                            Ok(())
                        }
                        change => {
                            let settled = matches!(change, Change::Everything | Change::Lost);
                            if let Change::Org(_) = change {
                                fetcher.sources_changed();
                            }
                            let listening = matches!(change, Change::Everything);
                            let applied = follow(change);
                            if listening {
                                cluster.followed();
                            }
                            if settled {
                                followed.send_replace(true);
                            }
                            applied
                        }
                    })?;
                let campaign = crate::leader::campaign(
                    target,
                    health.clone(),
                    store.clone(),
                    stopped.clone(),
                )?;
                vec![listening, campaign]
            }
            None => Vec::new(),
        };
        let _ = tokio::time::timeout(FOLLOW_WAIT, following.wait_for(|follows| *follows)).await;
        let mqtts = tokio::spawn(listener::run(
            self.mqtts,
            self.context,
            limits,
            stopped.clone(),
        ));
        // Once per cluster (DESIGN §12): on the leader only.
        let notifier = self.notifier.clone();
        let notifier = tokio::spawn(crate::leader::while_leading(
            health.leadership(),
            stopped.clone(),
            move |stop| notifier.clone().run(stop),
        ));
        let fetcher = self.crl_fetcher.clone();
        let crl_fetcher = tokio::spawn(crate::leader::while_leading(
            health.leadership(),
            stopped.clone(),
            move |stop| fetcher.clone().run(stop),
        ));
        let heartbeat = tokio::spawn(crate::health::heartbeat(
            health.clone(),
            store.clone(),
            self.admin_state.registry.clone(),
            self.config.cluster.heartbeat_interval,
            stopped.clone(),
        ));
        let admin = tokio::spawn(listener::admin::run(
            self.admin,
            admin::router(self.admin_state),
            admin_limits,
            stopped,
        ));
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        let _ = mqtts.await;
        let _ = notifier.await;
        let _ = crl_fetcher.await;
        let _ = ocsp_recheck.await;
        let _ = admin.await;
        let _ = heartbeat.await;
        for thread in threads {
            // Each sees the stop within a quarter of a second.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Grant uses spent from memory are written, so a clean restart does not count the
        // reservations left as spent.
        tokio::task::spawn_blocking(move || store.flush_grants())
            .await
            .map_err(|e| ServerError::Store(StoreError::Corrupt(format!("flush: {e}"))))??;
        Ok(())
    }
}

/// What [`open_state`] gives the server.
struct Opened {
    /// The PostgreSQL database (`None`: SQLite).
    postgres: Option<store::postgres::Target>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    token: String,
}

/// Opens the store the configuration names, and makes or loads what it holds once for every
/// node: the platform CA, the default server certificate, the admin token; then loads the
/// registry's snapshots. Blocks.
fn open_state(config: &Config, clock: Clock) -> Result<Opened, ServerError> {
    let data_dir = &config.store.data_dir;
    let postgres = match &config.store.url {
        Some(url) => Some(store::postgres::Target::new(
            url,
            store_tls(&config.store)?,
        )?),
        None => None,
    };
    // The one place that chooses the store; everything past here names only `dyn Store`.
    let store: Arc<dyn Store> = Arc::new(store::open_configured(
        data_dir,
        postgres.as_ref(),
        Arc::new(config.grants),
        clock,
    )?);
    let granted = store.ensure_grants()?;
    if granted > 0 {
        tracing::info!(granted, "access grants given to keys held without one");
    }
    let platform_ca = match store.platform_ca()? {
        Some(issuer) => issuer,
        None => {
            let issuer = store.create_platform_ca(&pki::generate_platform_ca()?)?;
            tracing::info!("platform CA created");
            issuer
        }
    };
    write_platform_ca(data_dir, &platform_ca)?;
    let platform_expiry = pki::cert_info(&platform_ca.cert_der)?.not_after;
    metrics::gauge!(crate::metrics::CERT_EXPIRY, "kind" => "platform_ca")
        .set(platform_expiry.unix_timestamp() as f64);
    let (chain, key) = match &config.mqtts.default_cert {
        Some((cert, key)) => load_default_cert(cert, key)?,
        None => default_server_cert(&*store, &platform_ca, &config.mqtts.domain)?,
    };
    let platform = Platform {
        domain: config.mqtts.domain.clone(),
        default_cert: tls::certified_key(chain, key)?,
        no_sni_org: config.mqtts.no_sni_org.clone(),
        deny_stale_crl: config.revocation.deny_stale_crl,
        ticket_rotation: config.mqtts.ticket_rotation,
    };
    let registry = Arc::new(Registry::load(store.clone(), platform)?);
    let token = match &postgres {
        None => store::bootstrap_admin_token(data_dir)?,
        Some(_) => store::shared_admin_token(&*store, data_dir)?,
    };
    Ok(Opened {
        postgres,
        store,
        registry,
        token,
    })
}

/// The TLS client configuration of the connections to PostgreSQL (`store.ca_file`), if any.
fn store_tls(config: &StoreConfig) -> Result<Option<Arc<rustls::ClientConfig>>, ServerError> {
    let Some(ca_file) = &config.ca_file else {
        return Ok(None);
    };
    let client = config
        .client_cert
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let tls = pki::client_tls(ca_file, client).map_err(ServerError::StoreTls)?;
    Ok(Some(Arc::new(tls)))
}

/// How long a node on PostgreSQL waits at its start for its listening connection before serving.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Renewed this long before it expires (at a start).
const DEFAULT_CERT_MARGIN: time::Duration = time::Duration::days(30);

/// The platform's default server certificate (`*.<domain>`, issued by the platform CA): the one
/// stored, so every node serves the same; issued and stored when there is none, when it names
/// another domain or another CA, or when it expires within [`DEFAULT_CERT_MARGIN`].
fn default_server_cert(
    store: &dyn Store,
    platform_ca: &Issuer,
    domain: &str,
) -> Result<Chain, ServerError> {
    let name = format!("*.{domain}");
    if let Some((chain, key)) = store.default_server_cert()? {
        let ca = pki::cert_info(&platform_ca.cert_der)?.subject;
        let leaf = chain.first().map(|leaf| pki::cert_info(leaf)).transpose()?;
        let current = leaf.is_some_and(|info| {
            info.dns_names.contains(&name)
                && info.issuer == ca
                && info.not_after > time::OffsetDateTime::now_utc() + DEFAULT_CERT_MARGIN
        });
        if current {
            return Ok((chain, key));
        }
    }
    let (chain, key) = pki::issue_server_cert(platform_ca, &[name])?;
    store.set_default_server_cert(&chain, &key)?;
    tracing::info!(domain, "default server certificate issued");
    Ok((chain, key))
}

/// `cluster.node_id`, or `<hostname>-<mqtts port>` (the port bound, so that two nodes of one
/// host differ even when both asked for port 0).
fn node_id(config: &Config, mqtts: &TcpListener) -> String {
    if let Some(id) = &config.cluster.node_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let port = mqtts
        .local_addr()
        .map_or(config.mqtts.listen.port(), |a| a.port());
    format!("{host}-{port}")
}

async fn bind_listener(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `<data_dir>/platform-ca.pem`, for devices to trust.
fn write_platform_ca(data_dir: &Path, issuer: &Issuer) -> Result<(), ServerError> {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", issuer.cert_der.to_vec()));
    std::fs::write(data_dir.join("platform-ca.pem"), pem).map_err(|source| ServerError::DataDir {
        path: data_dir.join("platform-ca.pem").display().to_string(),
        source,
    })
}

type Chain = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

fn load_default_cert(cert: &Path, key: &Path) -> Result<Chain, ServerError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| ServerError::DefaultCert(format!("{}: {e}", path.display())))
    };
    let chain = pki::certs_from_pem(&read(cert)?)?;
    let key = pki::private_key_from_pem(&read(key)?, None)?;
    Ok((chain, key))
}
