//! Where a node's PostgreSQL is and how it is reached: the settings of `store.url`, and TLS when
//! the node was given a client configuration (`store.ca_file`: the server verified against it,
//! its name checked against the URL's host; `store.cert_file`/`key_file`: the client
//! certificate). Every connection a node makes — the pool, the listener, the leader lock, the
//! holder lock — goes through one [`Target`], so either all of them use TLS or none does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::config::SslMode;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::{Client, Socket};
use r2d2_postgres::PostgresConnectionManager;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::CONNECT_TIMEOUT;
use crate::store::{DbError, StoreError};

/// The database of `store.url`, and how to reach it.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    tls: Tls,
}

impl Target {
    /// `url` (`postgres://user@host:port/db`), reached over TLS with `tls` when given: then
    /// always (`sslmode=require`, whatever the URL says but `disable`), else never (a URL asking
    /// for `sslmode=require` without it is refused, not silently downgraded).
    pub fn new(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Target, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| DbError::Backend(format!("postgres: store.url: {e}")))?;
        let mode = match (config.get_ssl_mode(), &tls) {
            (SslMode::Disable, Some(_)) => {
                return Err(DbError::Backend(
                    "postgres: store.url says sslmode=disable, but store.ca_file is set".into(),
                )
                .into())
            }
            (SslMode::Require, None) => {
                return Err(DbError::Backend(
                    "postgres: store.url says sslmode=require: set store.ca_file to the CA \
                     that verifies the database's certificate"
                        .into(),
                )
                .into())
            }
            (_, Some(_)) => SslMode::Require,
            (_, None) => SslMode::Disable,
        };
        config.ssl_mode(mode);
        config.connect_timeout(CONNECT_TIMEOUT);
        Ok(Target {
            config,
            tls: Tls(tls),
        })
    }

    /// The same database, with `adjust`ed connection settings (keepalives, a name).
    pub(super) fn with(&self, adjust: impl FnOnce(&mut postgres::Config)) -> Target {
        let mut target = self.clone();
        adjust(&mut target.config);
        target
    }

    pub(super) fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }

    pub(super) fn manager(&self) -> PostgresConnectionManager<Tls> {
        PostgresConnectionManager::new(self.config.clone(), self.tls.clone())
    }
}

/// The connector of a [`Target`]: rustls, or none (then the URL's `sslmode` is `disable` and it is
/// never asked to connect).
#[derive(Clone)]
pub struct Tls(Option<Arc<rustls::ClientConfig>>);

impl MakeTlsConnect<Socket> for Tls {
    type Stream = TlsSocket;
    type TlsConnect = Connect;
    type Error = io::Error;

    /// Asked for every host, TLS or not: what cannot be done fails in [`Connect::connect`],
    /// which only TLS calls.
    fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
        Ok(Connect {
            config: self.0.clone(),
            host: host.to_owned(),
        })
    }
}

/// One TLS handshake to the database on `host`.
pub struct Connect {
    config: Option<Arc<rustls::ClientConfig>>,
    host: String,
}

impl TlsConnect<Socket> for Connect {
    type Stream = TlsSocket;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsSocket>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS to PostgreSQL without store.ca_file"))?;
            let name = ServerName::try_from(self.host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            connector.connect(name, socket).await.map(TlsSocket)
        })
    }
}

/// A connection to the database over TLS.
pub struct TlsSocket(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for TlsSocket {
    /// No channel binding: SCRAM authenticates without it (`SCRAM-SHA-256`, not `-PLUS`); the
    /// server's certificate is verified by the handshake itself.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_tls() -> Option<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Some(Arc::new(config))
    }

    fn mode(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<SslMode, String> {
        Target::new(url, tls)
            .map(|t| t.config.get_ssl_mode())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tls_is_used_for_every_connection_or_none_and_never_downgraded() {
        let url = "postgres://portcullis@db.example/portcullis";
        assert_eq!(mode(url, None), Ok(SslMode::Disable));
        assert_eq!(
            mode(&format!("{url}?sslmode=prefer"), None),
            Ok(SslMode::Disable)
        );
        assert_eq!(mode(url, some_tls()), Ok(SslMode::Require));
        assert_eq!(
            mode(&format!("{url}?sslmode=prefer"), some_tls()),
            Ok(SslMode::Require)
        );
        let refused = mode(&format!("{url}?sslmode=require"), None).unwrap_err();
        assert!(refused.contains("store.ca_file"), "{refused}");
        let refused = mode(&format!("{url}?sslmode=disable"), some_tls()).unwrap_err();
        assert!(refused.contains("sslmode=disable"), "{refused}");
    }
}
