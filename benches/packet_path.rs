//! Per-packet and per-connection costs on the hot path that need no network: PUBLISH decode and
//! re-encode from 64 B to 64 KiB, client-id and identity parsing, and topic mapping.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::codec::{self, Packet, Properties, Protocol, Publish, QoS};
use portcullis::identity::{ClientId, Identity};
use portcullis::mqtt::topics::{TopicMap, TopicPolicy};

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

fn identity_parsing(c: &mut Criterion) {
    c.bench_function("client_id_parse", |b| {
        b.iter(|| ClientId::parse(std::hint::black_box("d:acme:sensor-type:device-0001")))
    });
    c.bench_function("identity_parse", |b| {
        b.iter(|| Identity::parse(std::hint::black_box("d:sensor-type:device-0001")))
    });
}

criterion_group!(benches, codec_publish, identity_parsing);
criterion_main!(benches);
