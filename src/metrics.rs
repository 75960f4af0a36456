//! Metric names, their descriptions and the Prometheus recorder, in one place. Labels are bounded:
//! a reason, a direction or a kind, never a client id or a peer address.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Counter: accepted TCP connections on the MQTTS listener.
pub const CONNECTIONS_ACCEPTED: &str = "portcullis_connections_accepted_total";
/// Counter: connections refused, by `stage` (`tcp`, `tls`, `connect`) and bounded `reason`.
pub const CONNECTIONS_REFUSED: &str = "portcullis_connections_refused_total";
/// Counter: admin connections the admin listener closed, by `reason`: `max_connections` (at
/// accept, over `admin.max_connections`), `header_timeout`, `body_timeout`, `idle_timeout`,
/// `write_timeout`.
pub const ADMIN_CONNECTIONS_CLOSED: &str = "portcullis_admin_connections_closed_total";
/// Counter: completed TLS handshakes, by `resumed` (`true`/`false`).
pub const HANDSHAKES: &str = "portcullis_tls_handshakes_total";
/// Counter: failed loads of an org's TLS ticket keys from the store (resumption goes on with the
/// keys held; without one, full handshakes).
pub const TICKET_KEY_LOAD_FAILURES: &str = "portcullis_tls_ticket_key_load_failures_total";
/// Histogram: seconds from accept to a completed TLS handshake.
pub const HANDSHAKE_SECONDS: &str = "portcullis_tls_handshake_seconds";
/// Gauge: live MQTT sessions (CONNACK accepted, not yet closed).
pub const SESSIONS_LIVE: &str = "portcullis_sessions_live";
/// Counter: sessions closed by the front-end because a change invalidated them, by `reason`.
pub const SESSIONS_REVOKED: &str = "portcullis_sessions_revoked_total";
/// Counter: MQTT packets, by `direction` (`in` from clients, `out` to clients).
pub const PACKETS: &str = "portcullis_packets_total";
/// Counter: MQTT bytes, by `direction`.
pub const BYTES: &str = "portcullis_bytes_total";
/// Counter: publishes and filters refused by the topic policy, by `kind` (`publish`, `filter`).
pub const TOPICS_REFUSED: &str = "portcullis_topics_refused_total";
/// Counter: subscription filters refused by a cap, by `cap` (`session`, `org`, `broker`).
pub const FILTERS_REFUSED: &str = "portcullis_filters_refused_total";
/// Gauge: subscription filters held by live sessions and kept persistent sessions.
pub const FILTERS_LIVE: &str = "portcullis_filters_live";
/// Gauge: distinct subscription filters the embedded broker holds (it frees none).
pub const BROKER_FILTERS: &str = "portcullis_broker_filters";
/// Counter: device sightings dropped because the registry's queue was full.
pub const DEVICES_DROPPED: &str = "portcullis_device_registry_dropped_total";
/// News for the other nodes (admissions, alerts) dropped because the queue was full.
pub const CLUSTER_NEWS_DROPPED: &str = "portcullis_cluster_news_dropped_total";
/// Gauge: the earliest Unix time at which a served certificate expires, by `kind`: `ca` (active
/// CA certificates of every org), `server` (active uploaded server certificates), `platform_ca`.
pub const CERT_EXPIRY: &str = "portcullis_certificate_earliest_expiry_timestamp_seconds";
/// Gauge: certificates of every org (CA, server, signing, devices' from the registry) expiring
/// within `within_days` (`1`, `7`, `30`), by `kind`; read from the store at each scrape.
pub const CERTS_EXPIRING: &str = "portcullis_certificates_expiring";
/// Gauge: seconds until the next certificate of any org expires (absent when none is ahead).
pub const NEXT_EXPIRY_SECONDS: &str = "portcullis_certificate_next_expiry_seconds";
/// Gauge: active CAs whose CRL is past its nextUpdate (`revocation.on_stale_crl` decides what that
/// does); read from the store at each scrape.
pub const CRLS_STALE: &str = "portcullis_crls_stale";
/// Counter: notices delivered or failed, by `channel` (`email`, `webhook`) and `outcome`.
pub const NOTIFICATIONS: &str = "portcullis_notifications_total";
/// Gauges: bytes the process holds allocated, and bytes its allocator keeps resident for them
/// (jemalloc's `stats.allocated` and `stats.resident`); read at each scrape.
pub const MEMORY_ALLOCATED: &str = "portcullis_memory_allocated_bytes";
pub const MEMORY_RESIDENT: &str = "portcullis_memory_allocator_resident_bytes";

/// Sets the memory gauges from the allocator's statistics (jemalloc only: the system allocator
/// has none to give).
pub fn record_allocator() {
    #[cfg(feature = "jemalloc")]
    if tikv_jemalloc_ctl::epoch::advance().is_ok() {
        if let Ok(bytes) = tikv_jemalloc_ctl::stats::allocated::read() {
            metrics::gauge!(MEMORY_ALLOCATED).set(bytes as f64);
        }
        if let Ok(bytes) = tikv_jemalloc_ctl::stats::resident::read() {
            metrics::gauge!(MEMORY_RESIDENT).set(bytes as f64);
        }
    }
}

/// Sets the expiry gauges from `summary`, as of `now`.
pub fn record_expiry(summary: &crate::store::ExpirySummary, now: time::OffsetDateTime) {
    for (kind, counts) in &summary.counts {
        for (days, count) in ["1", "7", "30"].into_iter().zip(counts) {
            metrics::gauge!(CERTS_EXPIRING, "kind" => *kind, "within_days" => days)
                .set(*count as f64);
        }
    }
    metrics::gauge!(CRLS_STALE).set(summary.stale_crls as f64);
    if let Some(next) = summary.next {
        metrics::gauge!(NEXT_EXPIRY_SECONDS).set((next - now).as_seconds_f64().max(0.0));
    }
}
/// Counter: OCSP requests sent, by `outcome` (`good`, `revoked`, `unknown`, `error`).
pub const OCSP_REQUESTS: &str = "portcullis_ocsp_requests_total";
/// Counter: OCSP checks answered from the cache (a remembered failure included).
pub const OCSP_CACHE_HITS: &str = "portcullis_ocsp_cache_hits_total";
/// Counter: CRL fetches from CAs' `crl_url`, by `outcome` (`updated`, `unchanged`, `unreachable`,
/// `rejected`, `error`).
pub const CRL_FETCHES: &str = "portcullis_crl_fetches_total";

/// The process-wide Prometheus handle. The recorder is installed once per process (several
/// servers in one test process share it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(HANDSHAKE_SECONDS.to_owned()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0,
                    ],
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may be installed already (an embedding application's): then ours
            // still renders, but records nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        "Accepted TCP connections on the MQTTS listener"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused, by stage and reason"
    );
    describe_counter!(
        ADMIN_CONNECTIONS_CLOSED,
        "Admin connections closed by the listener (limit at accept, deadlines), by reason"
    );
    describe_counter!(HANDSHAKES, "Completed TLS handshakes, by resumption");
    describe_counter!(
        TICKET_KEY_LOAD_FAILURES,
        "Failed loads of an org's TLS ticket keys from the store"
    );
    describe_histogram!(
        HANDSHAKE_SECONDS,
        Unit::Seconds,
        "Accept to completed TLS handshake"
    );
    describe_gauge!(SESSIONS_LIVE, "Live MQTT sessions");
    describe_gauge!(
        CERTS_EXPIRING,
        "Certificates expiring within 1, 7 or 30 days, by kind"
    );
    describe_gauge!(
        NEXT_EXPIRY_SECONDS,
        Unit::Seconds,
        "Seconds until the next certificate expires"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notices sent or failed, by channel and outcome"
    );
    describe_counter!(
        SESSIONS_REVOKED,
        "Sessions closed because a change invalidated them"
    );
    describe_counter!(PACKETS, "MQTT packets, by direction");
    describe_counter!(BYTES, Unit::Bytes, "MQTT bytes, by direction");
    describe_counter!(
        TOPICS_REFUSED,
        "Publishes and filters refused by the topic policy"
    );
    describe_counter!(
        FILTERS_REFUSED,
        "Subscription filters refused by a cap, by cap (session, org, broker)"
    );
    describe_gauge!(
        FILTERS_LIVE,
        "Subscription filters held by live and kept persistent sessions"
    );
    describe_gauge!(
        BROKER_FILTERS,
        "Distinct subscription filters the embedded broker holds (never freed)"
    );
    describe_gauge!(CERT_EXPIRY, "Earliest certificate expiry, by kind");
    describe_counter!(
        DEVICES_DROPPED,
        "Device registry sightings dropped (queue full)"
    );
    describe_counter!(
        CLUSTER_NEWS_DROPPED,
        "News for the other nodes (admissions, session rows, events, alerts) dropped (queue full)"
    );
    describe_counter!(OCSP_REQUESTS, "OCSP requests sent, by outcome");
    describe_counter!(OCSP_CACHE_HITS, "OCSP checks answered from the cache");
    describe_counter!(CRL_FETCHES, "CRL fetches from CAs' crl_url, by outcome");
    describe_gauge!(
        MEMORY_ALLOCATED,
        Unit::Bytes,
        "Bytes the process holds allocated (jemalloc)"
    );
    describe_gauge!(
        MEMORY_RESIDENT,
        Unit::Bytes,
        "Bytes the allocator keeps resident, its own and the process's (jemalloc)"
    );
}
