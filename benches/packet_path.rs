//! Per-packet and per-connection costs on the hot path that need no network: PUBLISH decode and
//! re-encode from 64 B to 64 KiB, client-id and identity parsing, topic mapping, and the
//! front-end's whole per-message work around the broker (`message_front_end`: the origin stamp on
//! the way in, the stamp taken off, the delivery decision and the encoding on the way out), which
//! issue 11 made 30 % dearer before it was cut back.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::codec::{self, origin, Packet, Properties, Protocol, Publish, QoS};
use portcullis::identity::{ClientId, Identity};
use portcullis::mqtt::delivery::Subscriptions;
use portcullis::mqtt::topics::{Form, TopicMap, TopicPolicy};

fn publish_bytes(size: usize) -> BytesMut {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "iot-2/evt/temperature/fmt/json".to_owned(),
        packet_id: Some(7),
        properties: Properties::default(),
        payload: Bytes::from(vec![0x5a; size]),
    });
    let mut out = BytesMut::new();
    codec::encode(&packet, Protocol::V311, &mut out).expect("encodes");
    out
}

fn codec_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_decode_map_encode");
    let map = TopicMap::new(
        ClientId::parse("d:acme:sensor:dev1").expect("valid"),
        TopicPolicy::Iot2,
    );
    for size in [64usize, 1024, 16 * 1024, 64 * 1024] {
        let wire = publish_bytes(size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            let mut out = BytesMut::with_capacity(wire.len() + 64);
            b.iter(|| {
                let mut buf = wire.clone();
                let Ok(Some(Packet::Publish(mut publish))) =
                    codec::decode(&mut buf, Protocol::V311, 1 << 20)
                else {
                    panic!("decodes");
                };
                publish.topic = map.publish(&publish.topic).expect("allowed");
                out.clear();
                codec::encode(&Packet::Publish(publish), Protocol::V5, &mut out).expect("encodes");
                out.len()
            })
        });
    }
    group.finish();
}

/// One 64-byte QoS 0 message from a 3.1.1 publisher to a subscriber, as the front-end handles it
/// on both sides of the broker (the broker's own work excluded): decode and map the topic, stamp
/// it; then take the stamp off, map the topic back, plan the delivery against the subscriber's
/// subscriptions, check the subscriber's Maximum Packet Size (`mps` cases) and encode it.
fn message_front_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("message_front_end");
    let publisher = "d:acme:sensor:dev1";
    let map = TopicMap::new(
        ClientId::parse(publisher).expect("valid"),
        TopicPolicy::Iot2,
    );
    let app = TopicMap::new(
        ClientId::parse("a:acme:ops").expect("valid"),
        TopicPolicy::Iot2,
    );
    let wire = publish_bytes(64);
    let mut plain = Subscriptions::default();
    plain.insert(
        "acme/iot-2/type/+/id/+/evt/+/fmt/+".to_owned(),
        codec::SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        },
        None,
    );
    let cases = [
        ("v311", Protocol::V311, None),
        ("v5_mps", Protocol::V5, Some(1024usize)),
    ];
    for (name, protocol, maximum) in cases {
        group.bench_function(name, |b| {
            let mut out = BytesMut::with_capacity(256);
            b.iter(|| {
                let mut buf = wire.clone();
                let Ok(Some(Packet::Publish(mut publish))) =
                    codec::decode(&mut buf, Protocol::V311, 1 << 20)
                else {
                    panic!("decodes");
                };
                publish.topic = map.publish(&publish.topic).expect("allowed");
                let (qos, retain) = (publish.qos, publish.retain);
                origin::stamp(&mut publish.properties, qos, retain, Some(publisher));
                // The broker's side: the same message comes back to the subscriber.
                let origin = origin::take(&mut publish.properties);
                let topic = app.deliver(&publish.topic).expect("in view");
                let plan = plain
                    .plan(&publish.topic, qos, retain, origin.as_ref(), "a:acme:ops")
                    .expect("wanted");
                publish.topic = topic;
                publish.qos = plan.qos;
                publish.properties.subscription_identifiers = plan.identifiers;
                if let Some(maximum) = maximum {
                    let len = codec::publish_len(&publish, protocol).expect("measures");
                    assert!(len <= maximum);
                }
                out.clear();
                codec::encode(&Packet::Publish(publish), protocol, &mut out).expect("encodes");
                out.len()
            })
        });
    }
    group.finish();
}

fn identity_parsing(c: &mut Criterion) {
    c.bench_function("client_id_parse", |b| {
        b.iter(|| ClientId::parse(std::hint::black_box("d:acme:sensor-type:device-0001")))
    });
    c.bench_function("identity_parse", |b| {
        b.iter(|| Identity::parse(std::hint::black_box("d:sensor-type:device-0001")))
    });
}

/// What a SUBSCRIBE pays per filter: mapping it (`filter_map`), and, once newly held, judging it
/// under every other topic policy (`filter_keeps`: counted for a policy change's dry run).
fn subscribe_filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe_filter");
    let device = TopicMap::new(
        ClientId::parse("d:acme:sensor:dev1").expect("valid"),
        TopicPolicy::Iot2,
    );
    let filter = "iot-2/cmd/+/fmt/json";
    let broker = device.filter(filter).expect("allowed");
    group.bench_function("filter_map", |b| {
        b.iter(|| device.filter(std::hint::black_box(filter)))
    });
    group.bench_function("filter_keeps", |b| {
        b.iter(|| {
            device.keeps(
                TopicPolicy::Open,
                std::hint::black_box(&broker),
                Form::Filter,
            )
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    codec_publish,
    message_front_end,
    identity_parsing,
    subscribe_filter
);
criterion_main!(benches);
