//! `throughput`: P publishers → S subscribers for a fixed duration. Every payload starts with its
//! send time (nanoseconds since the run's epoch, big-endian u64), then the publisher's index and
//! its sequence number (u32 each); subscribers take receive time − send time as the latency.
//!
//! QoS 1 publishers keep a bounded window of unacknowledged messages (`--inflight`), so the tool
//! measures the server rather than a queue of its own; QoS 1 loss is what the server acknowledged
//! times S minus what the subscribers got after a short drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use portcullis::codec::{
    Ack, Packet, Properties, Protocol, Publish, QoS, Subscribe, Subscription, SubscriptionOptions,
};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::session::{self, Error, Failure, Reader, Session, Step, Writer};
use crate::stats::{self, Counters, CpuMeter, Failures, Histogram};
use crate::target::{expand, prepare, ConnectionSpec, Endpoint, Role};
use crate::{Report, Setup};

#[derive(Args)]
pub struct ThroughputArgs {
    /// Publishers.
    #[arg(short = 'P', long = "publishers", default_value_t = 1)]
    publishers: usize,
    /// Subscribers; each subscribes to --sub-filter and should get every message.
    #[arg(short = 'S', long = "subscribers", default_value_t = 1)]
    subscribers: usize,
    /// QoS of publishes and of the subscription.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload size in bytes (at least 16: send time, publisher, sequence).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages per second per publisher (default: as fast as the server takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Seconds to wait after publishing for the last messages (and QoS 1 acks).
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Topic publishers publish to; `{i}` is the publisher's index.
    #[arg(long, default_value = "iot-2/evt/load/fmt/bin")]
    pub_topic: String,
    /// Topic filter subscribers subscribe to.
    #[arg(long, default_value = "iot-2/type/+/id/+/evt/+/fmt/+")]
    sub_filter: String,
    /// Subject CN of subscribers' minted certificates (publishers use --identity-template).
    #[arg(long, default_value = "a:load{i}")]
    sub_identity_template: String,
    /// Subscribers' client ids (publishers use --client-id-template).
    #[arg(long, default_value = "a:acme:load{i}")]
    sub_client_id_template: String,
}

/// Bytes of the header every payload starts with.
const HEADER: usize = 16;
/// Most messages one write carries.
const BATCH: usize = 64;

/// What one subscriber counted.
#[derive(Default)]
struct SubResult {
    received: u64,
    latency: Histogram,
    failures: Failures,
}

/// What one publisher counted.
#[derive(Default)]
struct PubResult {
    published: u64,
    acked: u64,
    refused: u64,
    failures: Failures,
}

pub async fn run(setup: Setup, args: ThroughputArgs) -> anyhow::Result<Report> {
    if args.publishers == 0 || args.subscribers == 0 {
        bail!("-P and -S must be at least 1");
    }
    if args.size < HEADER {
        bail!("--size must be at least {HEADER} bytes");
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    if !(args.drain >= 0.0 && args.drain <= 600.0) {
        bail!("--drain must be between 0 and 600 seconds");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be positive");
    }
    if args.inflight == 0 || args.inflight > 65_535 {
        bail!("--inflight must be between 1 and 65535");
    }
    let qos = if args.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let first = setup.first_index;
    let sub_role = Role {
        minter: setup.minter.as_ref(),
        identity_template: &args.sub_identity_template,
        client_id_template: &args.sub_client_id_template,
        first,
    };
    let (sub_specs, sub_times) = prepare(&setup.endpoint, &sub_role, args.subscribers)?;
    let (pub_specs, pub_times) = prepare(&setup.endpoint, &setup.role(), args.publishers)?;
    let mut times = sub_times;
    times.add(pub_times);
    let endpoint = Arc::new(setup.endpoint);

    // Subscribers first, each subscribed (SUBACK seen) before any publisher starts.
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for spec in &sub_specs {
        subscribers.push(subscribe(&endpoint, spec, &args.sub_filter, qos).await?);
    }
    let mut publishers = Vec::with_capacity(args.publishers);
    for spec in &pub_specs {
        publishers.push(
            Session::open(&endpoint, spec)
                .await
                .map_err(|e| anyhow!("publisher {}: {e}", spec.client_id))?,
        );
    }

    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let (stop_subs, subs_stopped) = watch::channel(false);
    let mut sub_tasks = tokio::task::JoinSet::new();
    for session in subscribers {
        sub_tasks.spawn(run_subscriber(
            session,
            epoch,
            endpoint.keep_alive,
            counters.clone(),
            subs_stopped.clone(),
        ));
    }

    let cpu = CpuMeter::start(setup.server.as_ref())?;
    let duration = Duration::from_secs_f64(args.duration);
    let (pubs, subs) = (args.publishers as u64, args.subscribers as u64);
    let progress = stats::progress("throughput", counters.clone(), move |elapsed, c| {
        let (published, failed, received) = c.get();
        let secs = elapsed.as_secs_f64().max(1e-9);
        format!(
            "{published} published ({:.0}/s), {received} received ({:.0}/s), {failed} publisher failures [{pubs} → {subs}]",
            published as f64 / secs,
            received as f64 / secs
        )
    });
    let started = Instant::now();
    let end = tokio::time::Instant::from_std(started + duration);
    let mut pub_tasks = tokio::task::JoinSet::new();
    for (i, session) in publishers.into_iter().enumerate() {
        let plan = PublishPlan {
            index: u32::try_from(first + i).unwrap_or(u32::MAX),
            topic: expand(&args.pub_topic, first + i),
            qos,
            size: args.size,
            rate: args.rate,
            inflight: args.inflight,
            keep_alive: endpoint.keep_alive,
            end,
            drain: Duration::from_secs_f64(args.drain),
            epoch,
        };
        pub_tasks.spawn(run_publisher(session, plan, counters.clone()));
    }
    let mut published = PubResult::default();
    while let Some(result) = pub_tasks.join_next().await {
        if let Ok(r) = result {
            published.published += r.published;
            published.acked += r.acked;
            published.refused += r.refused;
            published.failures.merge(&r.failures);
        }
    }
    // Publishers stop at `end` (earlier only if they all failed); the QoS 1 ack wait is not counted.
    let publish_secs = duration.as_secs_f64().min(started.elapsed().as_secs_f64());

    // Drain: wait until every subscriber has what it should get, or the drain time is up.
    let per_sub_expected = if qos == QoS::AtLeastOnce {
        published.acked
    } else {
        published.published
    };
    let expected = per_sub_expected * subs;
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain);
    while counters.other.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(progress);
    let (server_cpu_s, client_cpu_s) = cpu.seconds()?;
    let _ = stop_subs.send(true);
    let mut per_sub = Vec::new();
    let mut latency = Histogram::default();
    let mut sub_failures = Failures::default();
    while let Some(result) = sub_tasks.join_next().await {
        if let Ok(r) = result {
            latency.merge(&r.latency);
            sub_failures.merge(&r.failures);
            per_sub.push(r.received);
        }
    }
    let received: u64 = per_sub.iter().sum();
    let loss = expected as i64 - received as i64;

    let rate = |n: u64| (n as f64 / publish_secs.max(1e-9)).round();
    let server_json = match (&setup.server, server_cpu_s) {
        (Some(server), Some(cpu)) => json!({
            "pid": server.pid(),
            "cpu_seconds": stats::round3(cpu),
            "cpu_us_per_message_published": if published.published == 0 { None } else {
                Some(stats::round3(cpu * 1e6 / published.published as f64))
            },
        }),
        _ => serde_json::Value::Null,
    };
    let json = json!({
        "mode": "throughput",
        "target": endpoint.describe(),
        "tls": endpoint.tls.is_some(),
        "protocol": if endpoint.protocol == Protocol::V5 { 5 } else { 4 },
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "qos": args.qos,
        "size": args.size,
        "rate_per_publisher": args.rate,
        "inflight": args.inflight,
        "duration_seconds": stats::round3(publish_secs),
        "prepare": crate::connect::prepare_json(&times),
        "published": published.published,
        "published_per_second": rate(published.published),
        "acked": if qos == QoS::AtLeastOnce { Some(published.acked) } else { None },
        "refused_by_server": published.refused,
        "received": received,
        "received_per_second": rate(received),
        "received_per_subscriber": per_sub,
        "received_per_second_per_subscriber": per_sub.iter().map(|&n| rate(n)).collect::<Vec<_>>(),
        "expected": expected,
        "loss": loss,
        "latency_ms": latency.summary_ms(),
        "publisher_failures": published.failures.json(),
        "subscriber_failures": sub_failures.json(),
        "server": server_json,
        "client_cpu_seconds": client_cpu_s.map(stats::round3),
    });

    let ms = |q: f64| latency.quantile(q) as f64 / 1e6;
    let mut text = crate::connect::prepare_line(&times);
    text += &format!(
        "throughput: {} → {} on {} ({}, MQTT {}), QoS {}, {} B payloads, {:.1} s{}\n",
        args.publishers,
        args.subscribers,
        endpoint.describe(),
        if endpoint.tls.is_some() {
            "TLS"
        } else {
            "plain TCP"
        },
        if endpoint.protocol == Protocol::V5 {
            "5"
        } else {
            "3.1.1"
        },
        args.qos,
        args.size,
        publish_secs,
        args.rate
            .map(|r| format!(", {r} msg/s per publisher"))
            .unwrap_or_default(),
    );
    text += &format!(
        "  published {} ({:.0}/s){}; received {received} ({:.0}/s), per subscriber {:?}\n",
        published.published,
        rate(published.published),
        if qos == QoS::AtLeastOnce {
            format!(", acked {}, refused {}", published.acked, published.refused)
        } else {
            String::new()
        },
        rate(received),
        per_sub,
    );
    text += &format!(
        "  latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        latency.quantile(1.0) as f64 / 1e6
    );
    text += &format!(
        "  expected {expected}, loss {loss}{}\n",
        if qos == QoS::AtMostOnce {
            " (QoS 0: the server may drop)"
        } else {
            ""
        }
    );
    text += &format!(
        "  failures: publishers {}; subscribers {}\n",
        published.failures.line(),
        sub_failures.line()
    );
    text += &published.failures.samples_lines();
    text += &sub_failures.samples_lines();
    if let (Some(server), Some(cpu)) = (&setup.server, server_cpu_s) {
        text += &format!(
            "  server pid {}: {cpu:.2} s CPU, {:.2} µs per message published\n",
            server.pid(),
            cpu * 1e6 / published.published.max(1) as f64
        );
    }
    if let Some(cpu) = client_cpu_s {
        text += &format!("  this tool: {cpu:.2} s CPU\n");
    }
    Ok(Report { json, text })
}

/// Opens a subscriber and subscribes it; an error ends the run (a measurement without all its
/// subscribers means nothing).
async fn subscribe(
    endpoint: &Endpoint,
    spec: &ConnectionSpec,
    filter: &str,
    qos: QoS,
) -> anyhow::Result<Session> {
    let fail = |e: Error| anyhow!("subscriber {}: {e}", spec.client_id);
    let mut session = Session::open(endpoint, spec).await.map_err(fail)?;
    let subscribe = Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: filter.to_owned(),
            options: SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    };
    session
        .send(&Packet::Subscribe(subscribe))
        .await
        .map_err(fail)?;
    loop {
        match session.recv(Step::Suback).await.map_err(fail)? {
            Packet::SubAck(ack) => {
                return match ack.codes.first() {
                    Some(&code) if code < 0x80 => Ok(session),
                    code => Err(fail(Error::new(
                        Failure::SubscribeRefused(code.copied().unwrap_or(0x80)),
                        format!("filter {filter:?} refused"),
                    ))),
                };
            }
            // Retained messages may come first.
            Packet::Publish(_) => {}
            other => {
                return Err(fail(Error::new(
                    Failure::Protocol,
                    format!("expected SUBACK, got {}", session::packet_name(&other)),
                )))
            }
        }
    }
}

/// Nanoseconds since `epoch`.
fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Reads deliveries until `stop`: latency from each payload's send time, PUBACK for QoS 1 (all
/// acks of one read in one write), PINGREQ at half the keep-alive.
async fn run_subscriber(
    mut session: Session,
    epoch: Instant,
    keep_alive: u16,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut result = SubResult::default();
    let protocol = session.protocol;
    let ping_every = Duration::from_secs(u64::from(keep_alive.max(2)) / 2);
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    let mut acks = BytesMut::new();
    loop {
        let first = tokio::select! {
            _ = stats::stopped(&mut stop) => break,
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping += ping_every;
                if let Err(e) = session.send(&Packet::PingReq).await {
                    result.failures.add(&e);
                    break;
                }
                continue;
            }
            packet = session.next_packet() => packet,
        };
        let mut packet = first;
        let mut batch = 0u64;
        loop {
            match packet {
                Ok(Packet::Publish(publish)) => {
                    batch += 1;
                    if let Some(sent) = publish.payload.get(..8) {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(sent);
                        let sent = u64::from_be_bytes(ts);
                        result.latency.record_ns(now_ns(epoch).saturating_sub(sent));
                    }
                    if let (QoS::AtLeastOnce, Some(id)) = (publish.qos, publish.packet_id) {
                        let ack = Packet::PubAck(Ack {
                            packet_id: id,
                            reason: 0,
                            properties: Properties::default(),
                        });
                        if let Err(e) = session::encode(&ack, protocol, &mut acks) {
                            result.failures.add(&e);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    result.failures.add(&e);
                    result.received += batch;
                    counters.other.fetch_add(batch, Ordering::Relaxed);
                    return result;
                }
            }
            packet = match session.try_decode() {
                Ok(Some(p)) => Ok(p),
                Ok(None) => break,
                Err(e) => Err(e),
            };
        }
        result.received += batch;
        counters.other.fetch_add(batch, Ordering::Relaxed);
        if !acks.is_empty() {
            if let Err(e) = session.write(&acks).await {
                result.failures.add(&e);
                return result;
            }
            acks.clear();
        }
    }
    session.close().await;
    result
}

/// What one publisher does.
struct PublishPlan {
    index: u32,
    topic: String,
    qos: QoS,
    size: usize,
    rate: Option<f64>,
    inflight: usize,
    keep_alive: u16,
    end: tokio::time::Instant,
    drain: Duration,
    epoch: Instant,
}

/// Publishes until `plan.end` (in batches of up to [`BATCH`] messages per write), then waits for
/// the outstanding QoS 1 acks, at most `plan.drain`.
async fn run_publisher(session: Session, plan: PublishPlan, counters: Arc<Counters>) -> PubResult {
    let (reader, mut writer) = session.split();
    let window = Arc::new(Semaphore::new(plan.inflight));
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let (stop_reader, reader_stopped) = watch::channel(false);
    let reader_task = tokio::spawn(read_acks(
        reader,
        window.clone(),
        acked.clone(),
        refused.clone(),
        reader_stopped,
    ));
    let mut result = PubResult::default();
    if let Err(e) = publish_until_end(&mut writer, &plan, &window, &counters, &mut result).await {
        result.failures.add(&e);
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    if plan.qos == QoS::AtLeastOnce {
        // Every permit back means every message acknowledged.
        let all = u32::try_from(plan.inflight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(plan.drain, window.acquire_many(all)).await;
    }
    let _ = stop_reader.send(true);
    if let Ok(Err(e)) = reader_task.await {
        result.failures.add(&e);
    }
    writer.close().await;
    result.acked = acked.load(Ordering::Relaxed);
    result.refused = refused.load(Ordering::Relaxed);
    result
}

async fn publish_until_end(
    writer: &mut Writer,
    plan: &PublishPlan,
    window: &Semaphore,
    counters: &Counters,
    result: &mut PubResult,
) -> Result<(), Error> {
    let protocol = writer.protocol;
    let started = tokio::time::Instant::now();
    let ping_every = Duration::from_secs(u64::from(plan.keep_alive.max(2)) / 2);
    let mut last_write = started;
    let mut out = BytesMut::with_capacity(BATCH * (plan.size + plan.topic.len() + 8));
    let mut seq: u32 = 0;
    let mut packet_id: u16 = 0;
    loop {
        let now = tokio::time::Instant::now();
        if now >= plan.end {
            return Ok(());
        }
        // How many messages are due now.
        let mut due = BATCH;
        if let Some(rate) = plan.rate {
            let should_have = ((now - started).as_secs_f64() * rate).floor() as u64 + 1;
            let behind = should_have.saturating_sub(result.published);
            if behind == 0 {
                let next = started + Duration::from_secs_f64(result.published as f64 / rate);
                let wake = next.min(last_write + ping_every).min(plan.end);
                tokio::time::sleep_until(wake).await;
                if tokio::time::Instant::now() >= last_write + ping_every {
                    out.clear();
                    session::encode(&Packet::PingReq, protocol, &mut out)?;
                    writer.write(&out).await?;
                    last_write = tokio::time::Instant::now();
                }
                continue;
            }
            due = due.min(usize::try_from(behind).unwrap_or(BATCH));
        }
        if plan.qos == QoS::AtLeastOnce {
            // One slot, waiting for it (bounded by the end of the run), then whatever else is free.
            let permit = tokio::select! {
                permit = window.acquire() => permit,
                _ = tokio::time::sleep_until(plan.end) => return Ok(()),
            };
            let Ok(permit) = permit else { return Ok(()) };
            permit.forget();
            let mut got = 1;
            while got < due {
                match window.try_acquire() {
                    Ok(permit) => {
                        permit.forget();
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            due = got;
        }
        out.clear();
        for _ in 0..due {
            let mut payload = BytesMut::with_capacity(plan.size);
            payload.put_u64(now_ns(plan.epoch));
            payload.put_u32(plan.index);
            payload.put_u32(seq);
            payload.resize(plan.size, 0);
            seq = seq.wrapping_add(1);
            let id = if plan.qos == QoS::AtLeastOnce {
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                Some(packet_id)
            } else {
                None
            };
            let publish = Packet::Publish(Publish {
                dup: false,
                qos: plan.qos,
                retain: false,
                topic: plan.topic.clone(),
                packet_id: id,
                properties: Properties::default(),
                payload: Bytes::from(payload),
            });
            session::encode(&publish, protocol, &mut out)?;
        }
        writer.write(&out).await?;
        last_write = tokio::time::Instant::now();
        result.published += due as u64;
        counters.ok.fetch_add(due as u64, Ordering::Relaxed);
    }
}

/// Reads what the server sends a publisher: PUBACKs give their window slot back.
async fn read_acks(
    mut reader: Reader,
    window: Arc<Semaphore>,
    acked: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    loop {
        let packet = tokio::select! {
            _ = stats::stopped(&mut stop) => return Ok(()),
            packet = reader.next_packet() => packet?,
        };
        if let Packet::PubAck(ack) = packet {
            if ack.reason >= 0x80 {
                refused.fetch_add(1, Ordering::Relaxed);
            } else {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            window.add_permits(1);
        }
    }
}
