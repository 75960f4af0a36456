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
use crate::config::Config;
use crate::listener::admin::AdminLimits;
use crate::listener::{self, Limits};
use crate::mqtt::filters::FilterQuota;
use crate::mqtt::session::Context;
use crate::notify::{Notifier, NotifyError};
use crate::pki::{self, Issuer, PkiError};
use crate::registry::{Platform, Registry, RegistryError};
use crate::revocation::crl::CrlFetcher;
use crate::revocation::ocsp::Ocsp;
use crate::store::{self, SqliteStore, Store, StoreError};
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
}

pub struct Server {
    config: Config,
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
        // The one place that chooses the store; everything past here names only `dyn Store`.
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
            &data_dir,
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
                let issuer = pki::generate_platform_ca()?;
                store.set_platform_ca(&issuer)?;
                tracing::info!("platform CA created");
                issuer
            }
        };
        write_platform_ca(&data_dir, &platform_ca)?;
        let platform_expiry = pki::cert_info(&platform_ca.cert_der)?.not_after;
        metrics::gauge!(crate::metrics::CERT_EXPIRY, "kind" => "platform_ca")
            .set(platform_expiry.unix_timestamp() as f64);
        let (chain, key) = match &config.mqtts.default_cert {
            Some((cert, key)) => load_default_cert(cert, key)?,
            None => pki::issue_server_cert(&platform_ca, &[format!("*.{}", config.mqtts.domain)])?,
        };
        let platform = Platform {
            domain: config.mqtts.domain.clone(),
            default_cert: tls::certified_key(chain, key)?,
            no_sni_org: config.mqtts.no_sni_org.clone(),
            deny_stale_crl: config.revocation.deny_stale_crl,
        };
        let registry = Arc::new(Registry::load(store.clone(), platform)?);
        let token = store::bootstrap_admin_token(&data_dir)?;
        let broker = Arc::new(Broker::start(&config.broker).await?);

        let mqtts = bind_listener("MQTTS", config.mqtts.listen).await?;
        let admin = bind_listener("admin", config.admin.listen).await?;
        let (devices, device_writer) = crate::devices::DeviceLog::new(store.clone());
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
        let admin_state = AdminState {
            crl_fetcher: crl_fetcher.clone(),
            store,
            registry: registry.clone(),
            admin_token_sha256: sha256(token.as_bytes()),
            metrics,
            max_body_bytes: config.admin.max_body_bytes,
            notifier: notifier.clone(),
            broker: Some(broker.clone()),
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
            write_timeout: config.mqtts.write_timeout,
            max_packet_size: config.mqtts.max_packet_size,
            ocsp: Arc::new(Ocsp::new(config.revocation.fetch_timeout)),
            notifier: notifier.clone(),
        });
        Ok(Server {
            config,
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
        let crl_fetcher = tokio::spawn(self.crl_fetcher.run(stopped.clone()));
        let mqtts = tokio::spawn(listener::run(
            self.mqtts,
            self.context,
            limits,
            stopped.clone(),
        ));
        let notifier = tokio::spawn(self.notifier.run(stopped.clone()));
        let store = self.admin_state.store.clone();
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
        // Grant uses spent from memory are written, so a clean restart does not count the
        // reservations left as spent.
        tokio::task::spawn_blocking(move || store.flush_grants())
            .await
            .map_err(|e| ServerError::Store(StoreError::Corrupt(format!("flush: {e}"))))??;
        Ok(())
    }
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
