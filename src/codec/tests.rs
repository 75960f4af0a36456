//! The codec's shared test fixtures (a sample of every packet type, with every property it may
//! carry; builders of raw packets) and the tests that cross its seams: round trips through
//! `encode` and `decode`, the reason codes of errors, and a deterministic fuzz loop.

use bytes::{Bytes, BytesMut};

use super::properties::*;
use super::wire::{put_varint, Sink};
use super::*;

pub(super) const MAX: usize = 1 << 20;

pub(super) fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

/// Every property the set allows, with valid values; repeatable ones twice.
pub(super) fn full_props(set: PropSet) -> Properties {
    let has = |id: u8| set.allowed & bit(id) != 0;
    let s = |v: &str, id: u8| has(id).then(|| v.to_owned());
    Properties {
        payload_format_indicator: has(PAYLOAD_FORMAT_INDICATOR).then_some(1),
        message_expiry_interval: has(MESSAGE_EXPIRY_INTERVAL).then_some(3600),
        content_type: s("application/json", CONTENT_TYPE),
        response_topic: s("reply/to/me", RESPONSE_TOPIC),
        correlation_data: has(CORRELATION_DATA).then(|| b(b"\x00\x01corr")),
        subscription_identifiers: match set.repeatable & bit(SUBSCRIPTION_IDENTIFIER) {
            0 if has(SUBSCRIPTION_IDENTIFIER) => vec![268_435_455],
            0 => vec![],
            _ => vec![1, 300, 268_435_455],
        },
        session_expiry_interval: has(SESSION_EXPIRY_INTERVAL).then_some(u32::MAX),
        assigned_client_identifier: s("d:acme:t:1", ASSIGNED_CLIENT_IDENTIFIER),
        server_keep_alive: has(SERVER_KEEP_ALIVE).then_some(60),
        authentication_method: s("SCRAM-SHA-1", AUTHENTICATION_METHOD),
        authentication_data: has(AUTHENTICATION_DATA).then(|| b(b"\xff\x00data")),
        request_problem_information: has(REQUEST_PROBLEM_INFORMATION).then_some(0),
        will_delay_interval: has(WILL_DELAY_INTERVAL).then_some(10),
        request_response_information: has(REQUEST_RESPONSE_INFORMATION).then_some(1),
        response_information: s("resp/info", RESPONSE_INFORMATION),
        server_reference: s("other.example:8883", SERVER_REFERENCE),
        reason_string: s("a reason \u{e9}", REASON_STRING),
        receive_maximum: has(RECEIVE_MAXIMUM).then_some(65535),
        topic_alias_maximum: has(TOPIC_ALIAS_MAXIMUM).then_some(0),
        topic_alias: has(TOPIC_ALIAS).then_some(7),
        maximum_qos: has(MAXIMUM_QOS).then_some(1),
        retain_available: has(RETAIN_AVAILABLE).then_some(0),
        user_properties: vec![
            ("k".into(), "v".into()),
            ("k".into(), "".into()),
            ("\u{1F600}".into(), "x".into()),
        ],
        maximum_packet_size: has(MAXIMUM_PACKET_SIZE).then_some(1 << 20),
        wildcard_subscription_available: has(WILDCARD_SUBSCRIPTION_AVAILABLE).then_some(1),
        subscription_identifier_available: has(SUBSCRIPTION_IDENTIFIER_AVAILABLE).then_some(0),
        shared_subscription_available: has(SHARED_SUBSCRIPTION_AVAILABLE).then_some(1),
    }
}

pub(super) fn connect(protocol: Protocol, props: bool) -> Connect {
    let p = |set| {
        if props {
            full_props(set)
        } else {
            Properties::default()
        }
    };
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: "d:acme:sensor:dev1".into(),
        will: Some(Will {
            topic: "iot-2/evt/status/fmt/json".into(),
            payload: b(b"{\"gone\":true}"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: p(WILL_PROPS),
        }),
        username: Some("user".into()),
        password: Some(b(b"\x00secret")),
        properties: p(CONNECT_PROPS),
    }
}

pub(super) fn ack(packet_id: u16, reason: u8, properties: Properties) -> Ack {
    Ack {
        packet_id,
        reason,
        properties,
    }
}

/// A sample of every packet type, with every property the type allows when `props`.
pub(super) fn samples(protocol: Protocol, props: bool) -> Vec<Packet> {
    let p = |set| {
        if props {
            full_props(set)
        } else {
            Properties::default()
        }
    };
    let v5 = protocol == Protocol::V5;
    let mut out = vec![
        Packet::Connect(Box::new(connect(protocol, props))),
        Packet::Connect(Box::new(Connect {
            protocol,
            clean_start: false,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
            properties: p(CONNECT_PROPS),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: p(CONNACK_PROPS),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: if v5 { 0x87 } else { 5 },
            properties: Properties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/b".into(),
            packet_id: None,
            properties: p(PUBLISH_PROPS),
            payload: Bytes::new(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "iot-2/evt/\u{e9}v\u{e9}nement/fmt/json".into(),
            packet_id: Some(1),
            properties: p(PUBLISH_PROPS),
            payload: Bytes::from(vec![0xAB; 300]),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "x".into(),
            packet_id: Some(65535),
            properties: Properties::default(),
            payload: Bytes::from(vec![7; 70_000]),
        }),
        Packet::PubAck(ack(1, 0, Properties::default())),
        Packet::PubRec(ack(2, 0, Properties::default())),
        Packet::PubRel(ack(3, 0, Properties::default())),
        Packet::PubComp(ack(4, 0, Properties::default())),
        Packet::Subscribe(Subscribe {
            packet_id: 10,
            subscriptions: vec![
                Subscription {
                    filter: "iot-2/cmd/+/fmt/json".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: if v5 { 2 } else { 0 },
                    },
                },
                Subscription {
                    filter: "#".into(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: if v5 { 1 } else { 0 },
                    },
                },
            ],
            properties: p(SUBSCRIBE_PROPS),
        }),
        Packet::SubAck(SubAck {
            packet_id: 10,
            codes: if v5 {
                vec![0, 2, 0x87]
            } else {
                vec![0, 2, 0x80]
            },
            properties: p(ACK_PROPS),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 11,
            filters: vec!["a/+".into(), "".into(), "b/#".into()],
            properties: p(UNSUBSCRIBE_PROPS),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 11,
            codes: if v5 { vec![0, 0x11, 0x87] } else { vec![] },
            properties: p(ACK_PROPS),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default(),
        }),
    ];
    if v5 {
        out.extend([
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: String::new(),
                packet_id: Some(9),
                properties: Properties {
                    topic_alias: Some(3),
                    ..Properties::default()
                },
                payload: b(b"aliased"),
            }),
            Packet::PubAck(ack(5, 0x10, Properties::default())),
            Packet::PubRec(ack(6, 0x80, p(ACK_PROPS))),
            Packet::PubRel(ack(7, 0x92, p(ACK_PROPS))),
            Packet::PubComp(ack(8, 0, p(ACK_PROPS))),
            Packet::Disconnect(Disconnect {
                reason: 0x8E,
                properties: Properties::default(),
            }),
            Packet::Disconnect(Disconnect {
                reason: 0,
                properties: p(DISCONNECT_PROPS),
            }),
            Packet::Auth(Auth {
                reason: 0,
                properties: Properties::default(),
            }),
            Packet::Auth(Auth {
                reason: 0x18,
                properties: Properties::default(),
            }),
            Packet::Auth(Auth {
                reason: 0x19,
                properties: p(AUTH_PROPS),
            }),
        ]);
    }
    out
}

pub(super) fn enc(packet: &Packet, protocol: Protocol) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, protocol, &mut out).unwrap();
    out
}

pub(super) fn dec(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, CodecError> {
    decode(&mut BytesMut::from(bytes), protocol, MAX)
}

pub(super) fn dec_connect(bytes: &[u8]) -> Result<Option<Connect>, CodecError> {
    decode_connect(&mut BytesMut::from(bytes), MAX)
}

/// Decodes `bytes`, which must hold exactly one packet.
pub(super) fn dec_one(bytes: &[u8], protocol: Protocol) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, protocol, MAX).unwrap().unwrap();
    assert!(buf.is_empty(), "bytes left over");
    packet
}

/// Asserts every proper prefix of `bytes` is incomplete and consumes nothing.
fn assert_prefixes_incomplete(bytes: &[u8], protocol: Protocol) {
    for len in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..len]);
        assert_eq!(decode(&mut buf, protocol, MAX), Ok(None), "prefix {len}");
        assert_eq!(buf.len(), len, "prefix {len} consumed bytes");
        if bytes.first() == Some(&0x10) {
            assert_eq!(decode_connect(&mut buf, MAX), Ok(None), "prefix {len}");
            assert_eq!(buf.len(), len);
        }
    }
}

fn check_round_trip(packet: &Packet, protocol: Protocol) {
    let bytes = enc(packet, protocol);
    let mut buf = bytes.clone();
    buf.extend_from_slice(&[0xC0, 0x00]); // a PINGREQ right behind it
    let decoded = decode(&mut buf, protocol, MAX).unwrap().unwrap();
    assert_eq!(&decoded, packet, "{protocol:?}");
    assert_eq!(&buf[..], &[0xC0, 0x00], "consumed more than one packet");
    if let Packet::Connect(c) = packet {
        assert_eq!(dec_connect(&bytes).unwrap().unwrap(), **c);
    }
    if bytes.len() < 5000 {
        assert_prefixes_incomplete(&bytes, protocol);
    }
}

/// What a packet becomes through 3.1.1: no properties, reasons or MQTT 5 options.
pub(super) fn stripped(packet: &Packet) -> Packet {
    let none = Properties::default;
    let ack = |a: &Ack| Ack {
        packet_id: a.packet_id,
        reason: 0,
        properties: none(),
    };
    match packet {
        Packet::Connect(c) => {
            let mut c = c.clone();
            c.protocol = Protocol::V311;
            c.properties = none();
            if let Some(w) = &mut c.will {
                w.properties = none();
            }
            Packet::Connect(c)
        }
        Packet::ConnAck(a) => Packet::ConnAck(ConnAck {
            properties: none(),
            ..a.clone()
        }),
        Packet::Publish(p) => Packet::Publish(Publish {
            properties: none(),
            ..p.clone()
        }),
        Packet::PubAck(a) => Packet::PubAck(ack(a)),
        Packet::PubRec(a) => Packet::PubRec(ack(a)),
        Packet::PubRel(a) => Packet::PubRel(ack(a)),
        Packet::PubComp(a) => Packet::PubComp(ack(a)),
        Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.packet_id,
            subscriptions: s
                .subscriptions
                .iter()
                .map(|sub| Subscription {
                    filter: sub.filter.clone(),
                    options: SubscriptionOptions {
                        qos: sub.options.qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                })
                .collect(),
            properties: none(),
        }),
        Packet::SubAck(s) => Packet::SubAck(SubAck {
            properties: none(),
            ..s.clone()
        }),
        Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            properties: none(),
            ..u.clone()
        }),
        Packet::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            codes: vec![],
            properties: none(),
        }),
        Packet::Disconnect(_) => Packet::Disconnect(Disconnect {
            reason: 0,
            properties: none(),
        }),
        other => other.clone(),
    }
}

#[test]
fn round_trip_every_packet_type_v5() {
    for props in [false, true] {
        for packet in samples(Protocol::V5, props) {
            check_round_trip(&packet, Protocol::V5);
        }
    }
}

#[test]
fn round_trip_every_packet_type_v311() {
    for props in [false, true] {
        for packet in samples(Protocol::V311, props) {
            check_round_trip(&stripped(&packet), Protocol::V311);
        }
    }
}

#[test]
fn several_packets_in_one_buffer() {
    let mut buf = BytesMut::new();
    let packets = samples(Protocol::V5, true);
    for p in &packets {
        encode(p, Protocol::V5, &mut buf).unwrap();
    }
    for p in &packets {
        assert_eq!(&decode(&mut buf, Protocol::V5, MAX).unwrap().unwrap(), p);
    }
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, Protocol::V5, MAX), Ok(None));
}

pub(super) struct VecSink<'a>(&'a mut Vec<u8>);
impl Sink for VecSink<'_> {
    fn put_u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.0.extend(v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.0.extend(v.to_be_bytes());
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0.extend_from_slice(s);
    }
}
pub(super) fn out_vec(v: &mut Vec<u8>) -> VecSink<'_> {
    VecSink(v)
}

pub(super) fn raw_publish(first: u8, topic: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let len = 2 + topic.len() + rest.len();
    put_varint(&mut out_vec(&mut out), len).unwrap();
    out.extend((topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(rest);
    out
}

#[test]
fn reason_codes_for_errors() {
    assert_eq!(CodecError::InvalidUtf8.reason_code(), 0x81);
    assert_eq!(CodecError::Protocol("x").reason_code(), 0x82);
    assert_eq!(CodecError::UnsupportedProtocol(3).reason_code(), 0x84);
    assert_eq!(
        CodecError::PacketTooLarge { size: 2, max: 1 }.reason_code(),
        0x95
    );
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz loop.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes `input` every way there is; anything that decodes must re-encode to itself.
fn exercise(input: &[u8], max_size: usize) {
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut buf = BytesMut::from(input);
        // Keep decoding until the input runs out or fails.
        while let Ok(Some(packet)) = decode(&mut buf, protocol, max_size) {
            let encode_as = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => protocol,
            };
            let mut out = BytesMut::new();
            encode(&packet, encode_as, &mut out).unwrap();
            let again = if let Packet::Connect(c) = &packet {
                Packet::Connect(Box::new(
                    decode_connect(&mut out, usize::MAX).unwrap().unwrap(),
                ))
                .eq(&Packet::Connect(c.clone()))
            } else {
                decode(&mut out, protocol, usize::MAX).unwrap().unwrap() == packet
            };
            assert!(again, "re-encoding changed {packet:?}");
            assert!(out.is_empty());
        }
    }
    let mut buf = BytesMut::from(input);
    let before = buf.len();
    if let Ok(None) = decode_connect(&mut buf, max_size) {
        assert_eq!(buf.len(), before);
    }
}

#[test]
fn fuzz_random_and_mutated_inputs_never_panic() {
    // A longer run: PORTCULLIS_CODEC_FUZZ_ROUNDS=5000000 PORTCULLIS_CODEC_FUZZ_SEED=7.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("PORTCULLIS_CODEC_FUZZ_ROUNDS", 60_000);
    let mut rng = Rng(env("PORTCULLIS_CODEC_FUZZ_SEED", 0x9E37_79B9_7F4A_7C15) | 1);
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for protocol in [Protocol::V311, Protocol::V5] {
        for props in [false, true] {
            for packet in samples(protocol, props) {
                let bytes = enc(&packet, protocol);
                if bytes.len() < 2000 {
                    seeds.push(bytes.to_vec());
                }
            }
        }
    }
    let interesting = [
        0x00u8, 0x01, 0x02, 0x7F, 0x80, 0xFF, b'+', b'#', 0x0B, 0x26, 0x23,
    ];
    for round in 0..rounds {
        let input: Vec<u8> = if round % 4 == 0 {
            // Pure noise, with a plausible first byte half of the time.
            let len = rng.below(64);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(first) = v.first_mut() {
                if rng.below(2) == 0 {
                    *first = (*first & 0xF0) | [0, 0, 2, 0][rng.below(4)];
                }
            }
            v
        } else {
            let mut v = seeds[rng.below(seeds.len())].clone();
            if rng.below(8) == 0 {
                v.extend_from_slice(&seeds[rng.below(seeds.len())]);
            }
            for _ in 0..1 + rng.below(4) {
                if v.is_empty() {
                    break;
                }
                let i = rng.below(v.len());
                match rng.below(7) {
                    0 => v[i] = rng.next() as u8,
                    1 => v[i] ^= 1 << rng.below(8),
                    2 => v[i] = interesting[rng.below(interesting.len())],
                    3 => v.truncate(i),
                    4 => v.insert(i, rng.next() as u8),
                    5 => {
                        let end = (i + 1 + rng.below(8)).min(v.len());
                        let chunk = v[i..end].to_vec();
                        v.splice(i..i, chunk);
                    }
                    _ => {
                        v.remove(i);
                    }
                }
            }
            v
        };
        let max_size = if rng.below(8) == 0 {
            rng.below(256)
        } else {
            MAX
        };
        exercise(&input, max_size);
    }
}
