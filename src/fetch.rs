//! Outbound HTTP: CRL downloads from a CA's `crl_url`, OCSP requests, notification webhooks. One
//! request per connection (HTTP/1.1 over TCP, or TLS verified against the system's roots for
//! `https`), one deadline over the whole exchange, and a cap on the body read, so a slow or
//! hostile server costs a bounded wait and bounded memory. The operator CLI connects through
//! [`connect`] too.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {0:?}: only http:// and https:// URLs with a host")]
    Url(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    #[error("HTTP request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("the response body is larger than {0} bytes, or broken")]
    Body(usize),
    #[error("the server answered {0}")]
    Status(StatusCode),
}

/// True for an `http://` or `https://` URL with a host: one [`Fetch`] can ask.
pub fn is_fetchable(url: &str) -> bool {
    url.parse::<Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.host().is_some()
            // Credentials in a URL would travel in the Host header and show in views.
            && !u.authority().is_some_and(|a| a.as_str().contains('@'))
    })
}

/// One outbound request.
pub struct Fetch<'a> {
    pub method: Method,
    pub url: &'a str,
    /// `(name, value)` pairs, `Content-Type` among them when there is a body.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
    pub timeout: Duration,
    /// The most bytes of response body read.
    pub max_body: usize,
}

impl Fetch<'_> {
    /// Sends the request; the body of a 2xx answer, else `Status`.
    pub async fn send(self) -> Result<Bytes, FetchError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange())
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }

    async fn exchange(self) -> Result<Bytes, FetchError> {
        let (uri, io) = connect(self.url).await?;
        let mut request = request_to(self.method, &uri);
        for (name, value) in self.headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(self.body))
            .map_err(FetchError::Request)?;
        round_trip(io, request, self.max_body).await
    }
}

/// A byte stream to a server: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The parsed URL and a connection to its host: TCP, or TLS verified against the system's roots
/// for `https` (the operator CLI's requests go through here too).
pub async fn connect(url: &str) -> Result<(Uri, Box<dyn Io>), FetchError> {
    let bad_url = || FetchError::Url(url.to_owned());
    if !is_fetchable(url) {
        return Err(bad_url());
    }
    let uri: Uri = url.parse().map_err(|_| bad_url())?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad_url()),
    };
    let host = uri.host().ok_or_else(bad_url)?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(FetchError::Connect)?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok((uri, Box::new(tcp)));
    }
    let name = ServerName::try_from(host).map_err(|_| bad_url())?;
    let stream = connector()
        .connect(name, tcp)
        .await
        .map_err(FetchError::Tls)?;
    Ok((uri, Box::new(stream)))
}

/// A request for `uri`'s path and query, with its `Host` and our `User-Agent`.
pub fn request_to(method: Method, uri: &Uri) -> hyper::http::request::Builder {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority(uri))
        .header(hyper::header::USER_AGENT, "portcullis")
}

fn authority(uri: &Uri) -> String {
    uri.authority()
        .map_or_else(String::new, |a| a.as_str().to_owned())
}

async fn round_trip<S>(
    io: S,
    request: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(FetchError::Http)?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(FetchError::Http)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|_| FetchError::Body(max_body))?;
        Ok(body.to_bytes())
    };
    // The connection is driven here, not spawned, so nothing outlives the caller's deadline.
    tokio::pin!(connection, exchange);
    tokio::select! {
        answer = &mut exchange => answer,
        closed = &mut connection => {
            closed.map_err(FetchError::Http)?;
            exchange.await
        }
    }
}

/// TLS client configuration over the system's root certificates, built once.
fn connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        match config {
            Ok(config) => Arc::new(config),
            // The default provider always supports the default versions.
            Err(_) => Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        }
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot HTTP server answering `response` and handing back the request it read.
    async fn serve_once(response: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/path?q=1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).await.unwrap();
            request.truncate(n);
            stream.write_all(response).await.unwrap();
            let _ = stream.shutdown().await;
            request
        });
        (url, task)
    }

    fn post(url: &str, max_body: usize, timeout: Duration) -> Fetch<'_> {
        Fetch {
            method: Method::POST,
            url,
            headers: &[("content-type", "text/plain")],
            body: Bytes::from_static(b"hello"),
            timeout,
            max_body,
        }
    }

    #[tokio::test]
    async fn a_post_sends_its_body_and_reads_the_answer() {
        let (url, server) =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        let body = post(&url, 100, Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            request.starts_with("POST /path?q=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request
            .to_ascii_lowercase()
            .contains("content-type: text/plain"));
        assert!(request.ends_with("hello"));
    }

    #[tokio::test]
    async fn errors_oversized_bodies_and_silence_are_reported() {
        let (url, _server) = serve_once(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n").await;
        let error = post(&url, 100, Duration::from_secs(5)).send().await;
        assert!(matches!(error, Err(FetchError::Status(s)) if s.as_u16() == 503));

        let (url, _server) =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let error = post(&url, 4, Duration::from_secs(5)).send().await;
        assert!(matches!(error, Err(FetchError::Body(4))), "{error:?}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let error = post(&url, 100, Duration::from_millis(200)).send().await;
        assert!(matches!(error, Err(FetchError::Timeout(_))), "{error:?}");

        for url in [
            "ftp://example.com/",
            "not a url",
            "/relative",
            "http://user:secret@127.0.0.1/",
        ] {
            let error = post(url, 100, Duration::from_secs(1)).send().await;
            assert!(matches!(error, Err(FetchError::Url(_))), "{url}: {error:?}");
        }
    }
}
