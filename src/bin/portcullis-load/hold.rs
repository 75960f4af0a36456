//! `hold`: open N sessions and keep them idle, to measure what an idle session costs the server in
//! resident memory (VmRSS of `--server-pid`, before opening and at the end of the hold).
//! Each held session answers nothing but sends PINGREQ at half its keep-alive, and notices when the
//! server drops it. With `--subscribe` each session first subscribes (one SUBSCRIBE of
//! `--filters` filters, awaited before the RSS is read): the memory of sessions with their
//! subscriptions, and of a device sending many distinct filters. RSS is read once more
//! `--closed-seconds` after the sessions are closed: what stays when they leave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use portcullis::codec::{Packet, Properties, QoS, Subscribe, Subscription, SubscriptionOptions};
use serde_json::json;
use tokio::sync::watch;

use crate::connect::{open_all, prepare_json, prepare_line, progress_line};
use crate::session::{Session, Step};
use crate::stats::{self, Counters, CpuWindow, Process};
use crate::target::prepare;
use crate::{Report, Setup};

#[derive(Args)]
pub struct HoldArgs {
    /// Sessions to open and hold.
    #[arg(short = 'n', long = "connections", default_value_t = 1000)]
    n: usize,
    /// Concurrent workers opening them.
    #[arg(short = 't', long = "workers", default_value_t = 32)]
    workers: usize,
    /// How long to hold them once all are open, at least 1 s (the RSS is read at its end).
    #[arg(long, default_value_t = 2.0)]
    hold_seconds: f64,
    /// How long after the last session closed the RSS is read again.
    #[arg(long, default_value_t = 5.0)]
    closed_seconds: f64,
    /// Subscribe each session to this filter (QoS 1) before holding it; `{k}` is replaced by
    /// the filter's number, `--filter-offset` + 0..`--filters`.
    #[arg(long)]
    subscribe: Option<String>,
    /// Filters in each session's one SUBSCRIBE.
    #[arg(long, default_value_t = 1)]
    filters: usize,
    /// First filter number (distinct filters across runs).
    #[arg(long, default_value_t = 0)]
    filter_offset: usize,
}

/// SUBACK codes of the held sessions: granted, refused.
#[derive(Default)]
struct Granted {
    granted: u64,
    refused: u64,
}

/// Sends `filters` in one SUBSCRIBE and counts the SUBACK's codes; `None` when the session
/// failed (it is dropped).
async fn subscribe(mut session: Session, filters: &[String]) -> Option<(Session, Granted)> {
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    };
    let subscribe = Subscribe {
        packet_id: 1,
        subscriptions: filters
            .iter()
            .map(|filter| Subscription {
                filter: filter.clone(),
                options,
            })
            .collect(),
        properties: Properties::default(),
    };
    session.send(&Packet::Subscribe(subscribe)).await.ok()?;
    loop {
        if let Packet::SubAck(ack) = session.recv(Step::Suback).await.ok()? {
            let granted = ack.codes.iter().filter(|&&code| code < 0x80).count() as u64;
            let refused = ack.codes.len() as u64 - granted;
            return Some((session, Granted { granted, refused }));
        }
    }
}

/// How long the server gets to settle after the last CONNACK before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(setup: Setup, args: HoldArgs) -> anyhow::Result<Report> {
    if args.n == 0 || args.workers == 0 {
        bail!("-n and -t must be at least 1");
    }
    if !(args.hold_seconds >= 0.0 && args.hold_seconds <= 3600.0) {
        bail!("--hold-seconds must be between 0 and 3600");
    }
    if !(args.closed_seconds >= 0.0 && args.closed_seconds <= 3600.0) {
        bail!("--closed-seconds must be between 0 and 3600");
    }
    if args.filters == 0 || args.filters > 100_000 {
        bail!("--filters must be between 1 and 100000");
    }
    let filters: Vec<String> = match &args.subscribe {
        Some(template) => (args.filter_offset..args.filter_offset + args.filters)
            .map(|k| template.replace("{k}", &k.to_string()))
            .collect(),
        None => Vec::new(),
    };
    let workers = args.workers.min(args.n);
    let (specs, times) = prepare(&setup.endpoint, &setup.role(), args.n)?;
    let keep_alive = setup.endpoint.keep_alive;
    let endpoint = Arc::new(setup.endpoint);
    let server = setup.server;
    let rss_before = server.as_ref().map(Process::rss_kib).transpose()?;
    let server_cpu = server.as_ref().map(CpuWindow::start).transpose()?;

    let counters = Arc::new(Counters::default());
    let progress = stats::progress("hold", counters.clone(), progress_line(args.n));
    let started = Instant::now();
    let opened = open_all(
        endpoint.clone(),
        Arc::new(specs),
        workers,
        false,
        true,
        counters,
    )
    .await;
    let open_wall = started.elapsed();
    drop(progress);
    let server_cpu_s = match (&server, &server_cpu) {
        (Some(server), Some(window)) => Some(window.seconds(server)?),
        _ => None,
    };

    let mut held = opened.held;
    let mut codes = Granted::default();
    if !filters.is_empty() {
        let filters = Arc::new(filters);
        let mut subscribing = tokio::task::JoinSet::new();
        for session in held.drain(..) {
            let filters = filters.clone();
            subscribing.spawn(async move { subscribe(session, &filters).await });
        }
        while let Some(done) = subscribing.join_next().await {
            if let Ok(Some((session, granted))) = done {
                codes.granted += granted.granted;
                codes.refused += granted.refused;
                held.push(session);
            }
        }
    }
    let subscribed = held.len();
    let (stop, stopped) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut holders = tokio::task::JoinSet::new();
    for session in held {
        holders.spawn(hold(session, keep_alive, stopped.clone(), dropped.clone()));
    }
    // Read at the end of the hold: what sessions idle that long cost.
    tokio::time::sleep(Duration::from_secs_f64(args.hold_seconds).max(SETTLE)).await;
    let rss_after = server.as_ref().map(Process::rss_kib).transpose()?;
    let dropped_during_hold = dropped.load(Ordering::Relaxed);
    let _ = stop.send(true);
    while holders.join_next().await.is_some() {}
    if server.is_some() {
        tokio::time::sleep(Duration::from_secs_f64(args.closed_seconds)).await;
    }
    let rss_closed = server.as_ref().map(Process::rss_kib).transpose()?;

    let ok = opened.ok;
    let per_session = match (rss_before, rss_after) {
        (Some(before), Some(after)) if ok > 0 => Some((after as f64 - before as f64) / ok as f64),
        _ => None,
    };
    let json = json!({
        "mode": "hold",
        "target": endpoint.describe(),
        "tls": endpoint.tls.is_some(),
        "connections": args.n,
        "workers": workers,
        "keep_alive": keep_alive,
        "prepare": prepare_json(&times),
        "open_seconds": stats::round3(open_wall.as_secs_f64()),
        "ok": ok,
        "failed": opened.failures.total(),
        "dropped_during_hold": dropped_during_hold,
        "latency_ms": opened.latency.summary_ms(),
        "failures": opened.failures.json(),
        "subscribe": args.subscribe.as_ref().map(|filter| json!({
            "filter": filter,
            "filters_per_session": args.filters,
            "sessions_subscribed": subscribed,
            "granted": codes.granted,
            "refused": codes.refused,
        })),
        "server": server.as_ref().map(|s| json!({
            "pid": s.pid(),
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_after_close_kib": rss_closed,
            "kib_per_session": per_session.map(|v| (v * 100.0).round() / 100.0),
            "cpu_seconds_opening": server_cpu_s.map(stats::round3),
        })),
    });
    let mut text = prepare_line(&times);
    text += &format!(
        "hold: {ok}/{} sessions open to {} in {:.3} s (p50 {:.2} ms, p99 {:.2} ms), held {:.1} s, {dropped_during_hold} dropped by the server while held\n",
        args.n,
        endpoint.describe(),
        open_wall.as_secs_f64(),
        opened.latency.quantile(0.5) as f64 / 1e6,
        opened.latency.quantile(0.99) as f64 / 1e6,
        args.hold_seconds.max(SETTLE.as_secs_f64()),
    );
    text += &format!("  failures: {}\n", opened.failures.line());
    text += &opened.failures.samples_lines();
    if args.subscribe.is_some() {
        text += &format!(
            "  subscribed {subscribed} sessions: {} filters granted, {} refused\n",
            codes.granted, codes.refused
        );
    }
    if let (Some(server), Some(before), Some(after)) = (&server, rss_before, rss_after) {
        text += &format!(
            "  server pid {}: RSS {before} KiB → {after} KiB, {} KiB per session; {} KiB after close",
            server.pid(),
            per_session.map_or("-".to_owned(), |v| format!("{v:.1}")),
            rss_closed.map_or("-".to_owned(), |v| v.to_string()),
        );
        if let Some(cpu) = server_cpu_s {
            text += &format!("; {cpu:.2} s CPU while opening");
        }
        text += "\n";
    }
    Ok(Report { json, text })
}

/// Keeps one session idle until `stop`: PINGREQ at half the keep-alive, every packet from the
/// server read and dropped; a session the server closes counts in `dropped`.
async fn hold(
    mut session: Session,
    keep_alive: u16,
    mut stop: watch::Receiver<bool>,
    dropped: Arc<AtomicU64>,
) {
    let ping_every = Duration::from_secs(u64::from(keep_alive.max(2)) / 2);
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    loop {
        tokio::select! {
            _ = stats::stopped(&mut stop) => break,
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping += ping_every;
                if session.send(&Packet::PingReq).await.is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            packet = session.next_packet() => {
                if packet.is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    session.close().await;
}
