//! A test OCSP responder on 127.0.0.1:0: real signed answers (x509-ocsp's types, signed with the
//! CA's key), a status per serial (good unless told otherwise), and a count of requests answered.
//! A request whose CertID does not name this CA (hashes over its subject and key) is answered
//! `unknown`, as a real responder would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use rcgen::{KeyPair, SigningKey};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use x509_cert::der::asn1::{BitString, GeneralizedTime, OctetString};
use x509_cert::der::oid::db::rfc5912::{ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384};
use x509_cert::der::{DateTime, Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, ResponderId,
    ResponseData, RevokedInfo, SingleResponse, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertState {
    Good,
    Revoked,
    Unknown,
}

struct Responder {
    key: KeyPair,
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    /// By serial, without leading zero octets.
    states: Mutex<HashMap<Vec<u8>, CertState>>,
    requests: AtomicUsize,
    /// Seconds from an answer's thisUpdate to its nextUpdate.
    next_update_secs: AtomicU64,
}

pub struct OcspResponder {
    url: String,
    responder: Arc<Responder>,
    task: Option<JoinHandle<()>>,
}

impl OcspResponder {
    /// Answers for the CA `issuer_cert` (DER), signing with its key (PKCS#8 DER, ECDSA).
    pub async fn start(issuer_cert: &[u8], issuer_key_pkcs8: &[u8]) -> OcspResponder {
        let (_, cert) = X509Certificate::from_der(issuer_cert).unwrap();
        let responder = Arc::new(Responder {
            key: KeyPair::try_from(issuer_key_pkcs8).unwrap(),
            name_hash: sha1(cert.subject().as_raw()),
            key_hash: sha1(&cert.public_key().subject_public_key.data),
            states: Mutex::default(),
            requests: AtomicUsize::new(0),
            next_update_secs: AtomicU64::new(3600),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ocsp", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/ocsp", axum::routing::post(answer))
            .with_state(responder.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        OcspResponder {
            url,
            responder,
            task: Some(task),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the responder says of `leaf` (DER) from now on.
    pub fn set_status(&self, leaf: &[u8], state: CertState) {
        let (_, cert) = X509Certificate::from_der(leaf).unwrap();
        let serial = strip(cert.raw_serial()).to_vec();
        self.responder.states.lock().unwrap().insert(serial, state);
    }

    /// Answers from now on are valid for `validity` (whole seconds; an hour unless told).
    pub fn set_next_update(&self, validity: Duration) {
        self.responder
            .next_update_secs
            .store(validity.as_secs(), Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.responder.requests.load(Ordering::SeqCst)
    }

    /// Closes the listener: from now on a connection is refused.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = super::step(task).await;
        }
    }
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn answer(State(responder): State<Arc<Responder>>, body: Bytes) -> impl IntoResponse {
    let request = OcspRequest::from_der(&body).unwrap();
    let now = SystemTime::now();
    let validity = Duration::from_secs(responder.next_update_secs.load(Ordering::SeqCst));
    let responses = request
        .tbs_request
        .request_list
        .iter()
        .map(|asked| {
            let id = &asked.req_cert;
            let ours = id.issuer_name_hash.as_bytes() == responder.name_hash
                && id.issuer_key_hash.as_bytes() == responder.key_hash;
            let state = match responder
                .states
                .lock()
                .unwrap()
                .get(strip(id.serial_number.as_bytes()))
            {
                _ if !ours => CertState::Unknown,
                Some(state) => *state,
                None => CertState::Good,
            };
            SingleResponse {
                cert_id: id.clone(),
                cert_status: match state {
                    CertState::Good => CertStatus::good(),
                    CertState::Revoked => CertStatus::Revoked(RevokedInfo {
                        revocation_time: time(now - Duration::from_secs(3600)),
                        revocation_reason: None,
                    }),
                    CertState::Unknown => CertStatus::unknown(),
                },
                this_update: time(now),
                next_update: Some(time(now + validity)),
                single_extensions: None,
            }
        })
        .collect();
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(responder.key_hash.clone()).unwrap()),
        produced_at: time(now),
        responses,
        response_extensions: None,
    };
    let signature = responder.key.sign(&data.to_der().unwrap()).unwrap();
    let oid = if responder.key.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
        ECDSA_WITH_SHA_384
    } else {
        assert!(responder.key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256);
        ECDSA_WITH_SHA_256
    };
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature).unwrap(),
        certs: None,
    };
    let response = OcspResponse::successful(basic).unwrap().to_der().unwrap();
    responder.requests.fetch_add(1, Ordering::SeqCst);
    ([(CONTENT_TYPE, "application/ocsp-response")], response)
}

fn time(at: SystemTime) -> OcspGeneralizedTime {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    let whole = Duration::from_secs(since.as_secs());
    GeneralizedTime::from_date_time(DateTime::from_unix_duration(whole).unwrap()).into()
}

fn strip(serial: &[u8]) -> &[u8] {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    &serial[first..]
}

fn sha1(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}
