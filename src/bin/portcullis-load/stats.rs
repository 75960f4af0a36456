//! What a run measures: latency histograms, failures by kind, the server's CPU and RSS from
//! `/proc/<pid>`, and the progress line on stderr.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::session::Error;

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6 %), in constant memory
/// whatever the number of samples.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// A log-linear histogram of nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The middle of bucket `i`'s range.
fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let low = (SUB + i % SUB) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    pub fn record_ns(&mut self, ns: u64) {
        if let Some(c) = self.counts.get_mut(bucket(ns)) {
            *c += 1;
        }
        self.total += 1;
        self.sum += u128::from(ns);
        self.max = self.max.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_value(i).min(self.max);
            }
        }
        self.max
    }

    /// `{p50, p90, p99, max, mean}` in milliseconds.
    pub fn summary_ms(&self) -> Value {
        let ms = |ns: u64| round3(ns as f64 / 1e6);
        let mean = if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64 / 1e6
        };
        json!({
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max),
            "mean": round3(mean),
        })
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Failures by kind, with the first detail of each kind as a sample.
#[derive(Default, Clone)]
pub struct Failures {
    counts: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
}

impl Failures {
    pub fn add(&mut self, error: &Error) {
        let kind = error.failure.kind();
        self.samples
            .entry(kind.clone())
            .or_insert_with(|| error.detail.clone());
        *self.counts.entry(kind).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Failures) {
        for (kind, n) in &other.counts {
            *self.counts.entry(kind.clone()).or_insert(0) += n;
        }
        for (kind, detail) in &other.samples {
            self.samples
                .entry(kind.clone())
                .or_insert_with(|| detail.clone());
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn json(&self) -> Value {
        json!({ "by_kind": self.counts, "samples": self.samples })
    }

    /// `kind=n, kind=n` or `none`.
    pub fn line(&self) -> String {
        if self.counts.is_empty() {
            return "none".into();
        }
        self.counts
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line per kind with its sample, for the human summary.
    pub fn samples_lines(&self) -> String {
        self.samples
            .iter()
            .map(|(kind, detail)| format!("    {kind}: e.g. {detail}\n"))
            .collect()
    }
}

/// A process observed through `/proc/<pid>`: CPU (utime + stime) and resident memory.
#[derive(Clone)]
pub struct Process {
    pid: u32,
    clock_ticks: u64,
}

impl Process {
    pub fn new(pid: u32) -> anyhow::Result<Process> {
        let process = Process {
            pid,
            clock_ticks: clock_ticks(),
        };
        process.cpu_ticks()?;
        Ok(process)
    }

    /// This process, to show what the tool itself spent.
    pub fn current() -> Option<Process> {
        Process::new(std::process::id()).ok()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn clock_ticks_per_second(&self) -> u64 {
        self.clock_ticks
    }

    /// utime + stime of every thread, in clock ticks.
    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| anyhow::anyhow!("{path}: unexpected format"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 (utime) and 15 (stime); `fields[0]` is field 3 (state).
        let field = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{path}: no field {}", i + 3))
        };
        Ok(field(11)? + field(12)?)
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        Ok(self.cpu_ticks()? as f64 / self.clock_ticks as f64)
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{path}: no VmRSS"))
    }
}

/// `sysconf(_SC_CLK_TCK)` as `getconf CLK_TCK` prints it (the crate forbids `unsafe`, so no FFI);
/// 100, the value on every mainstream Linux, when `getconf` is missing.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU seconds a process spent between two points.
pub struct CpuWindow {
    start: f64,
}

/// The CPU the server (when its pid was given) and this tool spend over one timed phase.
pub struct CpuMeter {
    server: Option<(Process, CpuWindow)>,
    client: Option<(Process, CpuWindow)>,
}

impl CpuMeter {
    pub fn start(server: Option<&Process>) -> anyhow::Result<CpuMeter> {
        let server = match server {
            Some(server) => Some((server.clone(), CpuWindow::start(server)?)),
            None => None,
        };
        // This tool's own CPU is best effort: a missing /proc/self only loses that line.
        let client =
            Process::current().and_then(|me| CpuWindow::start(&me).ok().map(|window| (me, window)));
        Ok(CpuMeter { server, client })
    }

    /// Seconds of CPU since `start`: (the server's, this tool's).
    pub fn seconds(&self) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let server = match &self.server {
            Some((process, window)) => Some(window.seconds(process)?),
            None => None,
        };
        let client = self
            .client
            .as_ref()
            .and_then(|(process, window)| window.seconds(process).ok());
        Ok((server, client))
    }
}

impl CpuWindow {
    pub fn start(process: &Process) -> anyhow::Result<CpuWindow> {
        Ok(CpuWindow {
            start: process.cpu_seconds()?,
        })
    }

    pub fn seconds(&self, process: &Process) -> anyhow::Result<f64> {
        Ok(process.cpu_seconds()? - self.start)
    }
}

/// Counters the progress line reads while workers update them.
#[derive(Default)]
pub struct Counters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Mode-specific (messages received in `throughput`).
    pub other: AtomicU64,
}

impl Counters {
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

/// Prints `line(elapsed, counters)` on stderr every second once a phase has run for 2 s; stops
/// when the returned guard is dropped.
pub fn progress(
    label: &'static str,
    counters: Arc<Counters>,
    line: impl Fn(Duration, &Counters) -> String + Send + 'static,
) -> ProgressGuard {
    let started = Instant::now();
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(2),
            Duration::from_secs(1),
        );
        loop {
            tick.tick().await;
            eprintln!(
                "[{label} {:>5.1}s] {}",
                started.elapsed().as_secs_f64(),
                line(started.elapsed(), &counters)
            );
        }
    });
    ProgressGuard(handle)
}

pub struct ProgressGuard(tokio::task::JoinHandle<()>);

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once `stop` holds `true` (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, before any caller's await.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_precision() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456,
            10_000_000_000,
            u64::MAX / 3,
        ] {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v} -> {b}");
            let back = bucket_value(b);
            let err = back.abs_diff(v) as f64 / (v.max(1)) as f64;
            assert!(err <= 1.0 / 64.0, "{v} -> {b} -> {back}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5) as f64 / 1e6;
        let p99 = h.quantile(0.99) as f64 / 1e6;
        assert!((p50 - 50.0).abs() < 1.0, "{p50}");
        assert!((p99 - 99.0).abs() < 2.0, "{p99}");
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn proc_stat_of_self() {
        let me = Process::current().unwrap();
        assert!(me.rss_kib().unwrap() > 0);
        me.cpu_ticks().unwrap();
    }
}
