//! Where notices land in tests: a real SMTP server on loopback (Debian's python3-aiosmtpd,
//! writing each message into a maildir) and a webhook receiver that checks each POST's HMAC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// `python3 -m aiosmtpd` on 127.0.0.1, storing messages in a maildir; killed on drop.
pub struct SmtpSink {
    child: Child,
    pub addr: SocketAddr,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

/// Debian's interpreter, where python3-aiosmtpd installs (another `python3` on the PATH may not
/// have it).
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        // A free port: bound, read, released, then taken by the SMTP server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (Debian package python3-aiosmtpd)");
        let sink = SmtpSink {
            child,
            addr,
            maildir,
            _dir: dir,
        };
        let up = super::eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "the SMTP server did not start");
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut messages: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, std::fs::read_to_string(e.path()).ok()?))
            })
            .collect();
        messages.sort();
        messages.into_iter().map(|(_, m)| m).collect()
    }

    /// Messages whose text contains `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| unfold(m).contains(needle))
            .collect()
    }
}

/// A message with its folded header lines joined, so a long Subject reads as one line.
pub fn unfold(message: &str) -> String {
    message.replace("\r\n ", " ").replace("\n ", " ")
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook endpoint on 127.0.0.1:0 keeping every POST whose signature checks with `secret`;
/// a POST with a wrong or missing signature is answered 401 and counted. The first `fail_first`
/// POSTs are answered 503, to see the sender retry.
pub struct WebhookReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    bad_signatures: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start(secret: &'static str, fail_first: usize) -> WebhookReceiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let bad_signatures = Arc::new(Mutex::new(0));
        let failures_left = Arc::new(Mutex::new(fail_first));
        let (kept, bad) = (received.clone(), bad_signatures.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (kept, bad, failures_left) = (kept.clone(), bad.clone(), failures_left.clone());
                async move {
                    {
                        let mut left = failures_left.lock().unwrap();
                        if *left > 0 {
                            *left -= 1;
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                    }
                    let expected = format!("sha256={}", hmac_sha256_hex(secret, &body));
                    let given = headers
                        .get("x-portcullis-signature")
                        .and_then(|v| v.to_str().ok());
                    if given != Some(expected.as_str()) {
                        *bad.lock().unwrap() += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    kept.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            url,
            received,
            bad_signatures,
            task,
        }
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Notices received for `event` about `object`.
    pub fn count(&self, event: &str, object: &str) -> usize {
        self.received()
            .iter()
            .filter(|n| n["event"] == event && n["object"] == object)
            .count()
    }

    pub fn bad_signatures(&self) -> usize {
        *self.bad_signatures.lock().unwrap()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// HMAC-SHA256 written out from its definition (RFC 2104) over SHA-256, so the receiver checks
/// the server's signatures with code of its own.
fn hmac_sha256_hex(key: &str, message: &[u8]) -> String {
    use aws_lc_rs::digest::{digest, SHA256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    } else {
        block[..key.len()].copy_from_slice(key.as_bytes());
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = pad(0x36);
    inner.extend_from_slice(message);
    let mut outer = pad(0x5c);
    outer.extend_from_slice(digest(&SHA256, &inner).as_ref());
    hex::encode(digest(&SHA256, &outer).as_ref())
}
