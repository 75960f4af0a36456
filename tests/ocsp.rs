//! The OCSP client against a real (test) responder over HTTP: verdicts, an unreachable or silent
//! responder, and one request for a storm of checks of one certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ocsp::{CertState, OcspResponder};
use common::{step, TestCa};
use portcullis::ocsp::{Ocsp, Verdict};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn the_responder_decides_good_revoked_or_unknown() {
    let ca = TestCa::root("OCSP CA");
    let responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    let good = ca.client("good", &[]);
    let revoked = ca.client("revoked", &[]);
    let unknown = ca.client("unknown", &[]);
    responder.set_status(&revoked.chain[0], CertState::Revoked);
    responder.set_status(&unknown.chain[0], CertState::Unknown);
    let ocsp = Ocsp::new(TIMEOUT);
    for (leaf, verdict) in [
        (&good, Verdict::Good),
        (&revoked, Verdict::Revoked),
        (&unknown, Verdict::Unavailable),
    ] {
        let got = step(ocsp.status(&leaf.chain[0], &ca.cert, responder.url())).await;
        assert_eq!(got, verdict);
    }
    assert_eq!(responder.requests(), 3);
}

#[tokio::test]
async fn an_intermediate_is_the_issuer_it_names() {
    let root = TestCa::root("OCSP root");
    let ca = root.intermediate("OCSP intermediate");
    let responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    let leaf = ca.client("dev1", &[]);
    responder.set_status(&leaf.chain[0], CertState::Revoked);
    let ocsp = Ocsp::new(TIMEOUT);
    // chain[1] is the intermediate that issued the leaf.
    let got = step(ocsp.status(&leaf.chain[0], &leaf.chain[1], responder.url())).await;
    assert_eq!(got, Verdict::Revoked);
    // Given the wrong issuer, the check refuses without asking.
    let got = step(ocsp.status(&leaf.chain[0], &root.cert, responder.url())).await;
    assert_eq!(got, Verdict::Unavailable);
    assert_eq!(responder.requests(), 1);
}

#[tokio::test]
async fn a_stopped_responder_is_unavailable() {
    let ca = TestCa::root("OCSP CA");
    let mut responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    let leaf = ca.client("dev1", &[]);
    let url = responder.url().to_owned();
    responder.stop().await;
    let ocsp = Ocsp::new(TIMEOUT);
    let got = step(ocsp.status(&leaf.chain[0], &ca.cert, &url)).await;
    assert_eq!(got, Verdict::Unavailable);
    assert_eq!(responder.requests(), 0);
}

#[tokio::test]
async fn unreachable_and_bad_urls_are_unavailable() {
    let ca = TestCa::root("OCSP CA");
    let leaf = ca.client("dev1", &[]);
    let ocsp = Ocsp::new(TIMEOUT);
    for url in ["https://127.0.0.1:1/", "ftp://x/", "not a url", ""] {
        let got = step(ocsp.status(&leaf.chain[0], &ca.cert, url)).await;
        assert_eq!(got, Verdict::Unavailable, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_checks_of_one_certificate_sends_one_request() {
    let ca = TestCa::root("OCSP CA");
    let responder = OcspResponder::start(&ca.cert, &ca.key_pkcs8()).await;
    let leaf = Arc::new(ca.client("dev1", &[]).chain[0].to_vec());
    let issuer = Arc::new(ca.cert.to_vec());
    let ocsp = Arc::new(Ocsp::new(TIMEOUT));
    let url = Arc::new(responder.url().to_owned());
    let storm = |ocsp: Arc<Ocsp>| {
        let barrier = Arc::new(tokio::sync::Barrier::new(200));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (ocsp, leaf, issuer, url) =
                    (ocsp.clone(), leaf.clone(), issuer.clone(), url.clone());
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    step(barrier.wait()).await;
                    step(ocsp.status(&leaf, &issuer, &url)).await
                })
            })
            .collect();
        async move {
            for task in tasks {
                assert_eq!(step(task).await.unwrap(), Verdict::Good);
            }
        }
    };
    storm(ocsp.clone()).await;
    assert_eq!(responder.requests(), 1);
    // From the cache.
    storm(ocsp.clone()).await;
    assert_eq!(responder.requests(), 1);
    // Another client (no shared cache) asks again: the responder was counting all along.
    storm(Arc::new(Ocsp::new(TIMEOUT))).await;
    assert_eq!(responder.requests(), 2);
}

/// A "responder" that accepts connections and closes or holds them, counting them.
async fn dead_responder(hold: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            if hold {
                held.push(stream);
            }
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_failure_is_remembered_so_a_storm_does_not_hammer_a_dead_responder() {
    let ca = TestCa::root("OCSP CA");
    let leaf = ca.client("dev1", &[]);
    let (url, accepted) = dead_responder(false).await;
    let ocsp = Ocsp::new(TIMEOUT);
    for _ in 0..3 {
        let got = step(ocsp.status(&leaf.chain[0], &ca.cert, &url)).await;
        assert_eq!(got, Verdict::Unavailable);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_silent_responder_costs_the_timeout_and_no_more() {
    let ca = TestCa::root("OCSP CA");
    let leaf = ca.client("dev1", &[]);
    let (url, accepted) = dead_responder(true).await;
    let ocsp = Ocsp::new(Duration::from_millis(300));
    let started = Instant::now();
    let got = step(ocsp.status(&leaf.chain[0], &ca.cert, &url)).await;
    assert_eq!(got, Verdict::Unavailable);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
