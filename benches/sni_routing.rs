//! SNI → org lookup (`Snapshot::route`) with 10, 1,000 and 10,000 orgs, through a registry snapshot
//! built the real way: a `Store` in a temporary directory, one org and one active CA per org,
//! then `Registry::load` (which builds every org's `ServerConfig`). One CA certificate serves
//! every org: the lookup never looks at it.
//!
//! Cases per size: `hit` (existing orgs under the platform domain, rotating over up to 1,024
//! names spread over the whole table), `hit_same_name` (one name: the lookup with its memory in
//! cache), `unknown_org`, and `custom_domain_miss` (an existing org under `messaging.<custom>`
//! whose active certificate does not cover it).
//!
//! The setup prints to stderr the registry's start-up cost: time and memory of `Registry::load`,
//! and of two of its parts alone (every org's `tls::org_server_config`, and the 4,096-entry
//! session cache each of those allocates).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::identity::OrgId;
use portcullis::mqtt::topics::TopicPolicy;
use portcullis::registry::{ActiveCa, Platform, Registry};
use portcullis::store::{Audit, CaStore, MasterKey, NewCa, NewOrg, OrgStore, SqliteStore};
use portcullis::{pki, tls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

const DOMAIN: &str = "messaging.localhost";

/// The audit event of a change made by a test.
fn test_audit() -> Audit {
    Audit::by("test", "admin", "test.change")
}

fn org_id(i: usize) -> String {
    format!("org{i:05}")
}

fn ca_der() -> CertificateDer<'static> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Bench Device CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params
        .self_signed(&key)
        .expect("self-signed CA")
        .der()
        .clone()
}

fn platform() -> Platform {
    let platform_ca = pki::generate_platform_ca().expect("platform CA");
    let (chain, key) =
        pki::issue_server_cert(&platform_ca, &[format!("*.{DOMAIN}")]).expect("server cert");
    Platform {
        domain: DOMAIN.to_owned(),
        default_cert: tls::certified_key(chain, key).expect("certified key"),
        no_sni_org: None,
        deny_stale_crl: false,
        ticket_rotation: std::time::Duration::from_secs(6 * 3600),
    }
}

/// `VmRSS` and `VmSize` of this process from `/proc/self/status` (Linux), in KiB.
fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|line| line.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    Some((field("VmRSS:")?, field("VmSize:")?))
}

/// Runs `build` and prints, for `orgs` orgs, how long it took and what memory it added.
fn report<T>(orgs: usize, what: &str, build: impl FnOnce() -> T) -> T {
    let before = memory_kib();
    let started = Instant::now();
    let built = build();
    let took = started.elapsed();
    let memory = match (before, memory_kib()) {
        (Some((rss0, vm0)), Some((rss1, vm1))) => {
            let per_org = |a: u64, b: u64| b.saturating_sub(a) as f64 / orgs as f64;
            format!(
                "RSS +{:.1} MiB ({:.1} KiB/org), virtual +{:.1} KiB/org",
                rss1.saturating_sub(rss0) as f64 / 1024.0,
                per_org(rss0, rss1),
                per_org(vm0, vm1),
            )
        }
        _ => "memory unknown".to_owned(),
    };
    eprintln!(
        "  {orgs} orgs, {what}: {:.1} ms ({:.1} µs/org); {memory}",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / orgs as f64,
    );
    built
}

/// A registry over `orgs` orgs, and the store's directory (kept alive with it).
fn registry(orgs: usize) -> (tempfile::TempDir, Registry) {
    // tmpfs when there is one: populating commits two transactions per org, each an fsync on disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let store = SqliteStore::open_with_key(
        dir.path(),
        MasterKey::from_bytes(&[7; 32]).expect("master key"),
        std::sync::Arc::new(portcullis::grants::GrantPolicy::default()),
        portcullis::clock::Clock::system(),
    )
    .expect("open the store");
    let der = ca_der();
    let now = OffsetDateTime::now_utc();
    let info = pki::check_ca(&der, now).expect("a valid CA");
    eprintln!("registry setup, {orgs} orgs:");
    report(orgs, "store populated (tmpfs)", || {
        for i in 0..orgs {
            let id = OrgId::parse(&org_id(i)).expect("org id");
            store
                .create_org(
                    &NewOrg {
                        id: id.clone(),
                        name: format!("Org {i}"),
                        topic_policy: TopicPolicy::Iot2,
                        created_at: now,
                    },
                    None,
                    &test_audit(),
                )
                .expect("create org");
            store
                .insert_ca(
                    &id,
                    &NewCa {
                        der: der.clone(),
                        info: info.clone(),
                        description: "bench".to_owned(),
                        key: None,
                        key_passphrase: None,
                        registered_at: now,
                    },
                    &test_audit(),
                )
                .expect("insert CA");
        }
    });
    let platform = platform();
    let ca = ActiveCa {
        id: "bench-ca".to_owned(),
        subject_raw: tls::subject_raw(&der).expect("subject"),
        der: der.clone(),
        ocsp_mode: portcullis::ocsp::OcspMode::Off,
        ocsp_url: None,
    };
    let registry = report(orgs, "Registry::load", || {
        Registry::load(Arc::new(store), platform).expect("load the registry")
    });
    // Parts of a load, each alone and after it (so no memory the load freed is reused), to see
    // where its time and memory go; kept alive until both are measured for the same reason.
    let platform = registry.platform();
    let configs = report(orgs, "of which tls::org_server_config alone", || {
        (0..orgs)
            .map(|_| {
                let tickets = tls::TicketKeys::new(platform.ticket_rotation, |epoch| {
                    Ok(vec![(epoch, [7; 32])])
                });
                tls::org_server_config(tls::OrgTls {
                    cas: &[&ca.der],
                    crls: Vec::new(),
                    active: None,
                    default_cert: platform.default_cert.clone(),
                    deny_stale_crl: platform.deny_stale_crl,
                    tickets: &tickets,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .expect("org configs")
    });
    let caches = report(
        orgs,
        "of which ServerSessionMemoryCache::new(4096) alone",
        || {
            (0..orgs)
                .map(|_| rustls::server::ServerSessionMemoryCache::new(4096))
                .collect::<Vec<_>>()
        },
    );
    drop((configs, caches));
    assert_eq!(registry.snapshot().len(), orgs);
    (dir, registry)
}

fn sni_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("sni_route");
    for orgs in [10usize, 1_000, 10_000] {
        let (_dir, registry) = registry(orgs);
        let snapshot = registry.snapshot();
        let platform = registry.platform();
        let count = orgs.min(1024);
        let names: Vec<String> = (0..count)
            .map(|k| format!("{}.{DOMAIN}", org_id(k * orgs / count)))
            .collect();
        group.bench_with_input(BenchmarkId::new("hit", orgs), &names, |b, names| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % names.len();
                snapshot
                    .route(platform, Some(black_box(names[next].as_str())))
                    .expect("routes")
            })
        });
        // One name only: the same lookup with its memory in cache, to tell hashing from misses.
        group.bench_with_input(
            BenchmarkId::new("hit_same_name", orgs),
            &names[0],
            |b, sni| {
                b.iter(|| {
                    snapshot
                        .route(platform, Some(black_box(sni.as_str())))
                        .expect("routes")
                })
            },
        );
        let unknown = format!("nosuch.{DOMAIN}");
        group.bench_with_input(BenchmarkId::new("unknown_org", orgs), &unknown, |b, sni| {
            b.iter(|| {
                snapshot
                    .route(platform, Some(black_box(sni.as_str())))
                    .is_err()
            })
        });
        let custom = format!("{}.messaging.example.com", org_id(orgs / 2));
        group.bench_with_input(
            BenchmarkId::new("custom_domain_miss", orgs),
            &custom,
            |b, sni| {
                b.iter(|| {
                    snapshot
                        .route(platform, Some(black_box(sni.as_str())))
                        .is_err()
                })
            },
        );
        if orgs == 10 {
            // What `registry::accept` adds around the lookup: one lock-free snapshot load.
            group.bench_function("snapshot_load", |b| b.iter(|| registry.snapshot()));
        }
    }
    group.finish();
}

criterion_group!(benches, sni_route);
criterion_main!(benches);
