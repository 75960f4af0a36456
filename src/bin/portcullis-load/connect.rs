//! `connect`: N connections — TCP, TLS, CONNECT, CONNACK — made by T concurrent workers. Reports
//! connections/s, the latency from TCP connect start to CONNACK, failures by kind, the fraction of
//! handshakes resumed, and with `--server-pid` the server's CPU per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;

use crate::session::Session;
use crate::stats::{self, Counters, CpuMeter, Failures, Histogram};
use crate::target::{prepare, prepare_per_worker, ConnectionSpec, Endpoint, PrepareTimes};
use crate::{Report, Setup};

#[derive(Args)]
pub struct ConnectArgs {
    /// Connections to make.
    #[arg(short = 'n', long = "connections", default_value_t = 1000)]
    n: usize,
    /// Concurrent workers; each makes its connections one after the other.
    #[arg(short = 't', long = "workers", default_value_t = 32)]
    workers: usize,
    /// TLS resumption: each worker keeps one session cache and one client certificate, so its
    /// connections after the first resume. The certificate claims every identity the worker
    /// uses (CN and SAN emails), so client ids stay one per connection.
    #[arg(long)]
    resume: bool,
    /// Like --resume without resumption: each worker presents one certificate for all its
    /// connections, every handshake a full one (known devices reconnecting without a ticket).
    #[arg(long, conflicts_with = "resume")]
    known_devices: bool,
    /// With --resume: every connection of a worker uses the worker's client id (`{i}` = its
    /// index), like a device reconnecting, instead of one client id per connection.
    #[arg(long, requires = "resume")]
    reuse_client_id: bool,
    /// Keep every connection open until all are made (default: DISCONNECT and close at once).
    #[arg(long)]
    hold_until_end: bool,
}

/// What opening a batch of connections gave.
pub struct Opened {
    pub latency: Histogram,
    pub failures: Failures,
    pub ok: u64,
    pub resumed: u64,
    /// The sessions kept open (when asked to keep them).
    pub held: Vec<Session>,
}

/// Makes a connection for each of `specs` with `workers` workers. Workers take the next one in
/// line, or with `striped` worker `w` makes connections `w, w + workers, …` (the specs of
/// resumption: one configuration per worker). Each session is closed right after its CONNACK
/// unless `keep`.
pub async fn open_all(
    endpoint: Arc<Endpoint>,
    specs: Arc<Vec<ConnectionSpec>>,
    workers: usize,
    striped: bool,
    keep: bool,
    counters: Arc<Counters>,
) -> Opened {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (endpoint, specs, next, counters) = (
            endpoint.clone(),
            specs.clone(),
            next.clone(),
            counters.clone(),
        );
        tasks.spawn(async move {
            let mut opened = Opened {
                latency: Histogram::default(),
                failures: Failures::default(),
                ok: 0,
                resumed: 0,
                held: Vec::new(),
            };
            let mut mine = w;
            loop {
                let i = if striped {
                    let i = mine;
                    mine += workers;
                    i
                } else {
                    next.fetch_add(1, Ordering::Relaxed)
                };
                let Some(spec) = specs.get(i) else {
                    break;
                };
                let started = Instant::now();
                match Session::open(&endpoint, spec).await {
                    Ok(session) => {
                        opened.latency.record(started.elapsed());
                        opened.ok += 1;
                        opened.resumed += u64::from(session.resumed);
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        if keep {
                            opened.held.push(session);
                        } else {
                            session.close().await;
                        }
                    }
                    Err(error) => {
                        opened.failures.add(&error);
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            opened
        });
    }
    let mut all = Opened {
        latency: Histogram::default(),
        failures: Failures::default(),
        ok: 0,
        resumed: 0,
        held: Vec::new(),
    };
    while let Some(result) = tasks.join_next().await {
        // A worker cannot panic on network input; if one did, its connections are simply missing.
        if let Ok(opened) = result {
            all.latency.merge(&opened.latency);
            all.failures.merge(&opened.failures);
            all.ok += opened.ok;
            all.resumed += opened.resumed;
            all.held.extend(opened.held);
        }
    }
    all
}

/// Closes sessions concurrently (DISCONNECT, close), at most 256 at a time.
pub async fn close_all(sessions: Vec<Session>) {
    let mut tasks = tokio::task::JoinSet::new();
    for session in sessions {
        if tasks.len() >= 256 {
            let _ = tasks.join_next().await;
        }
        tasks.spawn(session.close());
    }
    while tasks.join_next().await.is_some() {}
}

/// A progress line for a batch of `n` connections.
pub fn progress_line(n: usize) -> impl Fn(Duration, &Counters) -> String + Send + 'static {
    move |elapsed, counters| {
        let (ok, failed, _) = counters.get();
        format!(
            "{}/{n} connections, {ok} ok, {failed} failed, {:.0}/s",
            ok + failed,
            ok as f64 / elapsed.as_secs_f64().max(1e-9)
        )
    }
}

pub fn prepare_json(times: &PrepareTimes) -> serde_json::Value {
    json!({
        "certificates_minted": times.minted,
        "mint_seconds": stats::round3(times.mint.as_secs_f64()),
        "client_configs_seconds": stats::round3(times.configs.as_secs_f64()),
    })
}

pub fn prepare_line(times: &PrepareTimes) -> String {
    if times.minted == 0 {
        return String::new();
    }
    format!(
        "minted {} client certificates in {:.3} s (configs {:.3} s), before the timed phase\n",
        times.minted,
        times.mint.as_secs_f64(),
        times.configs.as_secs_f64()
    )
}

pub async fn run(setup: Setup, args: ConnectArgs) -> anyhow::Result<Report> {
    if args.n == 0 || args.workers == 0 {
        bail!("-n and -t must be at least 1");
    }
    if args.reuse_client_id && args.hold_until_end {
        bail!("--reuse-client-id uses one client id per worker: it cannot hold every connection");
    }
    let workers = args.workers.min(args.n);
    let (specs, times) = if args.resume || args.known_devices {
        prepare_per_worker(
            &setup.endpoint,
            &setup.role(),
            args.n,
            workers,
            args.reuse_client_id,
            args.resume,
        )?
    } else {
        prepare(&setup.endpoint, &setup.role(), args.n)?
    };
    let endpoint = Arc::new(setup.endpoint);
    let cpu = CpuMeter::start(setup.server.as_ref())?;

    let counters = Arc::new(Counters::default());
    let progress = stats::progress("connect", counters.clone(), progress_line(args.n));
    let started = Instant::now();
    let opened = open_all(
        endpoint.clone(),
        Arc::new(specs),
        workers,
        args.resume,
        args.hold_until_end,
        counters,
    )
    .await;
    let wall = started.elapsed();
    drop(progress);
    let (server_cpu_s, client_cpu_s) = cpu.seconds()?;
    let held = opened.held.len();
    close_all(opened.held).await;

    let ok = opened.ok;
    let rate = ok as f64 / wall.as_secs_f64().max(1e-9);
    let resumed_fraction = if ok == 0 {
        0.0
    } else {
        opened.resumed as f64 / ok as f64
    };
    let server_json = match (&setup.server, server_cpu_s) {
        (Some(server), Some(cpu)) => json!({
            "pid": server.pid(),
            "clock_ticks_per_second": server.clock_ticks_per_second(),
            "cpu_seconds": stats::round3(cpu),
            "cpu_us_per_connection": if ok == 0 { None } else { Some((cpu * 1e6 / ok as f64).round()) },
        }),
        _ => serde_json::Value::Null,
    };
    let json = json!({
        "mode": "connect",
        "target": endpoint.describe(),
        "tls": endpoint.tls.is_some(),
        "protocol": if endpoint.protocol == portcullis::codec::Protocol::V5 { 5 } else { 4 },
        "resume": args.resume,
        "known_devices": args.known_devices,
        "reuse_client_id": args.reuse_client_id,
        "hold_until_end": args.hold_until_end,
        "connections": args.n,
        "workers": workers,
        "prepare": prepare_json(&times),
        "wall_seconds": stats::round3(wall.as_secs_f64()),
        "ok": ok,
        "failed": opened.failures.total(),
        "connections_per_second": rate.round(),
        "latency_ms": opened.latency.summary_ms(),
        "resumed": opened.resumed,
        "resumed_fraction": stats::round3(resumed_fraction),
        "failures": opened.failures.json(),
        "server": server_json,
        "client_cpu_seconds": client_cpu_s.map(stats::round3),
    });

    let lat = &opened.latency;
    let ms = |q: f64| lat.quantile(q) as f64 / 1e6;
    let mut text = prepare_line(&times);
    text += &format!(
        "connect: {ok}/{} connections to {} ({}, MQTT {}) with {workers} workers in {:.3} s: {rate:.0} connections/s\n",
        args.n,
        endpoint.describe(),
        if endpoint.tls.is_some() { "TLS" } else { "plain TCP" },
        if endpoint.protocol == portcullis::codec::Protocol::V5 { "5" } else { "3.1.1" },
        wall.as_secs_f64(),
    );
    text += &format!(
        "  latency (TCP connect → CONNACK): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        lat.quantile(1.0) as f64 / 1e6
    );
    if args.resume {
        text += &format!(
            "  resumed: {} of {ok} ({:.1} %)\n",
            opened.resumed,
            resumed_fraction * 100.0
        );
    }
    if args.hold_until_end {
        text += &format!("  held {held} connections until the end\n");
    }
    text += &format!("  failures: {}\n", opened.failures.line());
    text += &opened.failures.samples_lines();
    if let (Some(server), Some(cpu)) = (&setup.server, server_cpu_s) {
        text += &format!(
            "  server pid {}: {cpu:.2} s CPU, {} µs per connection\n",
            server.pid(),
            if ok == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}", cpu * 1e6 / ok as f64)
            }
        );
    }
    if let Some(cpu) = client_cpu_s {
        text += &format!("  this tool: {cpu:.2} s CPU\n");
    }
    Ok(Report { json, text })
}
