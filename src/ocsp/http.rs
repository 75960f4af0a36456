//! The one HTTP exchange of an OCSP check: POST the request (RFC 6960 A.1), read at most 64 KiB
//! back. One connection per request and no pool: requests are rare (one per certificate per
//! `nextUpdate`), and a fresh connection cannot be a stale one.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::OcspError;

/// A larger answer is not an OCSP response for one certificate (they are a few KiB at most).
const MAX_BODY: usize = 64 * 1024;

/// POSTs the DER `request` to `url` and returns the body of a 200 answer.
///
/// Only `http://`: an OCSP answer is signed, so TLS adds nothing to its integrity, and responders
/// serve plain HTTP (an `https://` responder would need a trust store of its own). An `https://`
/// URL is an error, which the caller logs. The caller bounds the whole exchange with its timeout.
pub(super) async fn post(url: &str, request: Vec<u8>) -> Result<Bytes, OcspError> {
    let uri: Uri = url.parse().map_err(|_| OcspError::BadUrl(url.to_owned()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(OcspError::HttpsUnsupported),
        _ => return Err(OcspError::BadUrl(url.to_owned())),
    }
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(OcspError::BadUrl(url.to_owned()));
    };
    let port = uri.port_u16().unwrap_or(80);
    // `host` keeps an IPv6 literal's brackets, which a socket address does not take.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(OcspError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(OcspError::Http)?;
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let host_header = authority.as_str().rsplit('@').next().unwrap_or(host);
    let request = Request::post(path)
        .header(HOST, host_header)
        .header(CONTENT_TYPE, "application/ocsp-request")
        .header(CONNECTION, "close")
        .body(Full::new(Bytes::from(request)))
        .map_err(|_| OcspError::BadUrl(url.to_owned()))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(OcspError::Http)?;
        if response.status() != StatusCode::OK {
            return Err(OcspError::HttpStatus(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(OcspError::Body)?;
        Ok(body.to_bytes())
    };
    // The connection is driven here, not spawned, so nothing outlives the caller's timeout.
    tokio::pin!(connection, exchange);
    tokio::select! {
        answer = &mut exchange => answer,
        closed = &mut connection => {
            closed.map_err(OcspError::Http)?;
            exchange.await
        }
    }
}
