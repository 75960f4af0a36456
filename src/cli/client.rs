//! The CLI's HTTP client for the admin API: one request per connection (through
//! [`crate::fetch::connect`], so `http` and `https` URLs alike), the bearer token on every
//! request, JSON bodies, error bodies read and turned into [`CliError::Refused`], and the event
//! stream read line by line as it comes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::CliError;
use crate::fetch::{self, FetchError};

/// Deadline of one request, from connecting to the end of its answer (to the end of the
/// headers for the event stream).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes of one answer read (a page of 500 certificates fits many times over).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The admin API at `base` (e.g. `http://127.0.0.1:8080`), with the token every call carries.
pub struct Client {
    base: String,
    /// Never printed: this type has no `Debug`.
    token: String,
}

/// One call: method, path under `/api/v1` (segments already encoded), query, JSON body.
#[derive(Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Call {
    pub fn new(method: Method, path: String) -> Call {
        Call {
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn body(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }

    /// Adds `name=value` when there is a value.
    pub fn query(mut self, name: &'static str, value: Option<String>) -> Call {
        if let Some(value) = value {
            self.query.push((name, value));
        }
        self
    }

    fn target(&self, base: &str) -> String {
        let mut url = format!("{}/api/v1{}", base.trim_end_matches('/'), self.path);
        for (i, (name, value)) in self.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        url
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: a path segment or a query
/// value taken from the command line reaches the server as typed.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(base: String, token: String) -> Client {
        Client { base, token }
    }

    /// Sends `call`: the answer's body (empty for 204), or the API's refusal.
    pub async fn send(&self, call: &Call) -> Result<Bytes, CliError> {
        tokio::time::timeout(TIMEOUT, async {
            let response = self.open(call).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CliError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                Err(CliError::refused(status.as_u16(), &body))
            }
        })
        .await
        .map_err(|_| CliError::Unreachable(format!("no answer within {TIMEOUT:?}")))?
    }

    /// Sends `call` and hands each line of the answer to `line` as it arrives, until the server
    /// ends the stream.
    pub async fn stream_lines(
        &self,
        call: &Call,
        mut line: impl FnMut(&str),
    ) -> Result<(), CliError> {
        let response = tokio::time::timeout(TIMEOUT, self.open(call))
            .await
            .map_err(|_| CliError::Unreachable(format!("no answer within {TIMEOUT:?}")))??;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(CliError::refused(status.as_u16(), &body));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CliError::Unreachable(format!("the stream: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let rest = pending.split_off(end + 1);
                let text = String::from_utf8_lossy(&pending);
                line(text.trim_end_matches(['\n', '\r']));
                pending = rest;
            }
        }
        Err(CliError::Unreachable("the server ended the stream".into()))
    }

    /// Connects, sends the request and reads the answer's head; the connection is driven by a
    /// task of its own while the body is read.
    async fn open(&self, call: &Call) -> Result<Response<Incoming>, CliError> {
        let url = call.target(&self.base);
        let (uri, io) = fetch::connect(&url).await.map_err(unreachable)?;
        let mut request = fetch::request_to(call.method.clone(), &uri)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::ACCEPT, "application/json, text/event-stream");
        let body = match &call.body {
            Some(json) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| CliError::Usage(format!("cannot build the request to {url}: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| unreachable(FetchError::Http(e)))?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(FetchError::Http(e)))
    }
}

fn unreachable(error: FetchError) -> CliError {
    match error {
        FetchError::Url(url) => CliError::Usage(format!(
            "--url: {url:?} is not an http:// or https:// URL with a host"
        )),
        other => CliError::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(encode("acme-1.x_~"), "acme-1.x_~");
        assert_eq!(encode("a b/c?d&e=+"), "a%20b%2Fc%3Fd%26e%3D%2B");
        let call = Call::new(Method::GET, "/orgs/acme/ca-certificates".into())
            .query("limit", Some("5".into()))
            .query("cursor", None)
            .query("q", Some("a/b".into()));
        assert_eq!(
            call.target("http://h:1/"),
            "http://h:1/api/v1/orgs/acme/ca-certificates?limit=5&q=a%2Fb"
        );
    }
}
