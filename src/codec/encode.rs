//! Encoding: packets into bytes. A packet is measured first (which also validates it), then written
//! once: the payload is copied exactly once, and a packet that cannot be encoded leaves the output
//! as it was. Fields 3.1.1 cannot carry are dropped.

use bytes::{BufMut, BytesMut};

use super::frame::first_byte;
use super::properties::{
    write_properties, PropSet, ACK_PROPS, AUTH_PROPS, CONNACK_PROPS, CONNECT_PROPS,
    DISCONNECT_PROPS, PUBLISH_PROPS, SUBSCRIBE_PROPS, UNSUBSCRIBE_PROPS, WILL_PROPS,
};
use super::wire::{put_binary, put_packet_id, put_str, put_varint, Counter, Sink, MAX_VARINT};
use super::{CodecError, Connect, Packet, Properties, Protocol, Publish, QoS};

/// Appends `packet` encoded for `protocol` to `out`. Fields 3.1.1 cannot carry are dropped.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), CodecError> {
    // Measure first (which also validates), then write once: the header is written before the
    // body, so the payload is copied exactly once and nothing is shifted afterwards.
    let remaining = remaining_length(packet, protocol)?;
    let start = out.len();
    out.reserve(5 + remaining);
    BufMut::put_u8(out, first_byte(packet));
    put_varint(out, remaining)?;
    if let Err(e) = write_body(packet, protocol, out) {
        out.truncate(start);
        return Err(e);
    }
    Ok(())
}

/// How many bytes [`encode`] would append for `packet`, found without writing (or allocating)
/// anything: a size check against a client's Maximum Packet Size costs no encoding.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, CodecError> {
    with_header(remaining_length(packet, protocol)?)
}

/// [`encoded_len`] of a PUBLISH, without making a [`Packet`] of it (which would take it).
pub fn publish_len(publish: &Publish, protocol: Protocol) -> Result<usize, CodecError> {
    let mut counter = Counter(0);
    write_publish(publish, protocol == Protocol::V5, &mut counter)?;
    with_header(checked(counter)?)
}

fn with_header(remaining: usize) -> Result<usize, CodecError> {
    let mut header = Counter(1);
    put_varint(&mut header, remaining)?;
    Ok(header.0 + remaining)
}

/// The packet's Remaining Length (which also validates it).
fn remaining_length(packet: &Packet, protocol: Protocol) -> Result<usize, CodecError> {
    let mut counter = Counter(0);
    write_body(packet, protocol, &mut counter)?;
    checked(counter)
}

fn checked(counter: Counter) -> Result<usize, CodecError> {
    if counter.0 > MAX_VARINT {
        return Err(CodecError::Encode("remaining length exceeds 268,435,455"));
    }
    Ok(counter.0)
}

fn is_empty(p: &Properties) -> bool {
    *p == Properties::default()
}

fn write_body<W: Sink>(packet: &Packet, protocol: Protocol, w: &mut W) -> Result<(), CodecError> {
    let v5 = protocol == Protocol::V5;
    match packet {
        Packet::Connect(c) => write_connect(c, v5, w),
        Packet::ConnAck(a) => {
            w.put_u8(u8::from(a.session_present));
            w.put_u8(a.code);
            if v5 {
                write_properties(w, &a.properties, CONNACK_PROPS)?;
            }
            Ok(())
        }
        Packet::Publish(p) => write_publish(p, v5, w),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            put_packet_id(w, a.packet_id)?;
            write_reason_and_props(w, v5, a.reason, &a.properties, ACK_PROPS)
        }
        Packet::Subscribe(s) => {
            put_packet_id(w, s.packet_id)?;
            if v5 {
                write_properties(w, &s.properties, SUBSCRIBE_PROPS)?;
            }
            if s.subscriptions.is_empty() {
                return Err(CodecError::Encode("SUBSCRIBE without a topic filter"));
            }
            for sub in &s.subscriptions {
                put_str(w, &sub.filter)?;
                let o = sub.options;
                let mut byte = o.qos as u8;
                if v5 {
                    if o.retain_handling > 2 {
                        return Err(CodecError::Encode("retain handling above 2"));
                    }
                    byte |= (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | (o.retain_handling << 4);
                }
                w.put_u8(byte);
            }
            Ok(())
        }
        Packet::SubAck(s) => {
            put_packet_id(w, s.packet_id)?;
            if v5 {
                write_properties(w, &s.properties, ACK_PROPS)?;
            }
            w.put_slice(&s.codes);
            Ok(())
        }
        Packet::Unsubscribe(u) => {
            put_packet_id(w, u.packet_id)?;
            if v5 {
                write_properties(w, &u.properties, UNSUBSCRIBE_PROPS)?;
            }
            if u.filters.is_empty() {
                return Err(CodecError::Encode("UNSUBSCRIBE without a topic filter"));
            }
            for filter in &u.filters {
                put_str(w, filter)?;
            }
            Ok(())
        }
        Packet::UnsubAck(u) => {
            put_packet_id(w, u.packet_id)?;
            if v5 {
                write_properties(w, &u.properties, ACK_PROPS)?;
                w.put_slice(&u.codes);
            }
            Ok(())
        }
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => {
            write_reason_and_props(w, v5, d.reason, &d.properties, DISCONNECT_PROPS)
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(CodecError::Encode("AUTH does not exist in MQTT 3.1.1"));
            }
            write_reason_and_props(w, v5, a.reason, &a.properties, AUTH_PROPS)
        }
    }
}

/// The MQTT 5 tail of acks, DISCONNECT and AUTH in its shortest form: nothing for reason 0 without
/// properties, the reason alone without properties, else both. Nothing at all for 3.1.1.
fn write_publish<W: Sink>(p: &Publish, v5: bool, w: &mut W) -> Result<(), CodecError> {
    if p.qos == QoS::AtMostOnce && p.dup {
        return Err(CodecError::Encode("DUP set on a QoS 0 PUBLISH"));
    }
    put_str(w, &p.topic)?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtMostOnce, Some(_)) => {
            return Err(CodecError::Encode("packet identifier on a QoS 0 PUBLISH"))
        }
        (_, Some(id)) => put_packet_id(w, id)?,
        (_, None) => {
            return Err(CodecError::Encode(
                "QoS 1 or 2 PUBLISH without packet identifier",
            ))
        }
    }
    if v5 {
        write_properties(w, &p.properties, PUBLISH_PROPS)?;
    }
    w.put_slice(&p.payload);
    Ok(())
}

fn write_reason_and_props<W: Sink>(
    w: &mut W,
    v5: bool,
    reason: u8,
    properties: &Properties,
    set: PropSet,
) -> Result<(), CodecError> {
    if !v5 {
        return Ok(());
    }
    let no_props = is_empty(properties);
    if reason == 0 && no_props {
        return Ok(());
    }
    w.put_u8(reason);
    if no_props {
        return Ok(());
    }
    write_properties(w, properties, set)
}

fn write_connect<W: Sink>(c: &Connect, v5: bool, w: &mut W) -> Result<(), CodecError> {
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(will) = &c.will {
        flags |= 0x04 | ((will.qos as u8) << 3);
        if will.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        if !v5 && c.username.is_none() {
            return Err(CodecError::Encode(
                "MQTT 3.1.1 CONNECT with a password but no user name",
            ));
        }
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    put_str(w, "MQTT")?;
    w.put_u8(if v5 { 5 } else { 4 });
    w.put_u8(flags);
    w.put_u16(c.keep_alive);
    if v5 {
        write_properties(w, &c.properties, CONNECT_PROPS)?;
    }
    put_str(w, &c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            write_properties(w, &will.properties, WILL_PROPS)?;
        }
        put_str(w, &will.topic)?;
        put_binary(w, &will.payload)?;
    }
    if let Some(username) = &c.username {
        put_str(w, username)?;
    }
    if let Some(password) = &c.password {
        put_binary(w, password)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use crate::codec::tests::*;
    use crate::codec::wire::MAX_VARINT;
    use crate::codec::{
        encode, encoded_len, publish_len, Auth, CodecError, ConnAck, Disconnect, Packet,
        Properties, Protocol, Publish, QoS, Subscribe, Subscription, SubscriptionOptions, UnsubAck,
    };

    #[test]
    fn v311_encoding_drops_what_311_cannot_carry() {
        for packet in samples(Protocol::V5, true) {
            if matches!(&packet, Packet::Publish(p) if p.topic.is_empty()) {
                continue; // a topic alias has no 3.1.1 form
            }
            if matches!(packet, Packet::Auth(_)) {
                let mut out = BytesMut::new();
                assert!(matches!(
                    encode(&packet, Protocol::V311, &mut out),
                    Err(CodecError::Encode(_))
                ));
                assert!(out.is_empty());
                continue;
            }
            let bytes = enc(&packet, Protocol::V311);
            assert_eq!(dec_one(&bytes, Protocol::V311), stripped(&packet));
        }
    }

    #[test]
    fn encoded_len_is_what_encode_appends() {
        let mut big = samples(Protocol::V5, true);
        big.push(Packet::PubAck(ack(1, 0, Properties::default())));
        big.push(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from(vec![7u8; 20_000]),
        }));
        for packet in &big {
            for protocol in [Protocol::V5, Protocol::V311] {
                let mut out = BytesMut::new();
                match encode(packet, protocol, &mut out) {
                    Ok(()) => assert_eq!(encoded_len(packet, protocol).ok(), Some(out.len())),
                    Err(_) => assert!(encoded_len(packet, protocol).is_err()),
                }
                if let Packet::Publish(publish) = packet {
                    let len = publish_len(publish, protocol).ok();
                    assert_eq!(len, encoded_len(packet, protocol).ok());
                }
            }
        }
    }

    #[test]
    fn known_encodings() {
        let v5 = Protocol::V5;
        let v3 = Protocol::V311;
        let short = Packet::PubAck(ack(0x0102, 0, Properties::default()));
        assert_eq!(&enc(&short, v5)[..], &[0x40, 0x02, 0x01, 0x02]);
        assert_eq!(&enc(&short, v3)[..], &[0x40, 0x02, 0x01, 0x02]);
        let reason_only = Packet::PubRec(ack(1, 0x10, Properties::default()));
        assert_eq!(&enc(&reason_only, v5)[..], &[0x50, 0x03, 0x00, 0x01, 0x10]);
        assert_eq!(&enc(&reason_only, v3)[..], &[0x50, 0x02, 0x00, 0x01]);
        let disconnect = Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default(),
        });
        assert_eq!(&enc(&disconnect, v5)[..], &[0xE0, 0x00]);
        let disconnect = Packet::Disconnect(Disconnect {
            reason: 0x8E,
            properties: Properties::default(),
        });
        assert_eq!(&enc(&disconnect, v5)[..], &[0xE0, 0x01, 0x8E]);
        assert_eq!(&enc(&disconnect, v3)[..], &[0xE0, 0x00]);
        assert_eq!(&enc(&Packet::PingReq, v3)[..], &[0xC0, 0x00]);
        let connack = Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: Properties::default(),
        });
        assert_eq!(&enc(&connack, v5)[..], &[0x20, 0x03, 0x01, 0x00, 0x00]);
        assert_eq!(&enc(&connack, v3)[..], &[0x20, 0x02, 0x01, 0x00]);
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: 5,
            codes: vec![0x11],
            properties: Properties::default(),
        });
        assert_eq!(&enc(&unsuback, v3)[..], &[0xB0, 0x02, 0x00, 0x05]);
        assert_eq!(
            &enc(&unsuback, v5)[..],
            &[0xB0, 0x04, 0x00, 0x05, 0x00, 0x11]
        );
        // A 3.1.1 CONNECT as mosquitto_pub sends it.
        let bytes = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1";
        let c = dec_connect(bytes).unwrap().unwrap();
        assert_eq!(c.protocol, Protocol::V311);
        assert_eq!(c.client_id, "dev1");
        assert_eq!(c.keep_alive, 60);
        assert!(c.clean_start);
        assert_eq!(&enc(&Packet::Connect(Box::new(c)), v3)[..], &bytes[..]);
    }

    #[test]
    fn encode_refuses_what_cannot_be_encoded() {
        let v5 = Protocol::V5;
        let publish = |topic: String, qos, packet_id, payload| {
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic,
                packet_id,
                properties: Properties::default(),
                payload,
            })
        };
        let refused = |packet: &Packet, protocol| {
            let mut out = BytesMut::from(&b"keep"[..]);
            let result = encode(packet, protocol, &mut out);
            if result.is_err() {
                assert_eq!(&out[..], b"keep", "output left untouched");
            }
            matches!(result, Err(CodecError::Encode(_)))
        };
        let long = "x".repeat(65_536);
        assert!(refused(
            &publish(long.clone(), QoS::AtMostOnce, None, Bytes::new()),
            v5
        ));
        assert!(!refused(
            &publish("x".repeat(65_535), QoS::AtMostOnce, None, Bytes::new()),
            v5
        ));
        assert!(refused(
            &publish("t".into(), QoS::AtLeastOnce, None, Bytes::new()),
            v5
        ));
        assert!(refused(
            &publish("t".into(), QoS::AtMostOnce, Some(1), Bytes::new()),
            v5
        ));
        assert!(refused(
            &publish("t".into(), QoS::AtLeastOnce, Some(0), Bytes::new()),
            v5
        ));
        // Over 268,435,455 bytes of remaining length (zeroed pages, never touched).
        let huge = Bytes::from(vec![0u8; MAX_VARINT]);
        assert!(refused(
            &publish("t".into(), QoS::AtMostOnce, None, huge),
            v5
        ));
        assert!(refused(
            &Packet::PubAck(ack(0, 0, Properties::default())),
            v5
        ));
        assert!(refused(
            &Packet::Auth(Auth {
                reason: 0,
                properties: Properties::default()
            }),
            Protocol::V311
        ));
        // A property the packet type cannot carry.
        let properties = Properties {
            topic_alias: Some(1),
            ..Properties::default()
        };
        assert!(refused(&Packet::PubAck(ack(1, 0, properties.clone())), v5));
        // ... which 3.1.1 drops with every other property.
        assert!(!refused(
            &Packet::PubAck(ack(1, 0, properties)),
            Protocol::V311
        ));
        let mut c = connect(Protocol::V5, false);
        c.username = None;
        assert!(refused(
            &Packet::Connect(Box::new(c.clone())),
            Protocol::V311
        ));
        assert!(!refused(&Packet::Connect(Box::new(c.clone())), v5));
        c.client_id = long.clone();
        assert!(refused(&Packet::Connect(Box::new(c)), v5));
        let mut user = Properties::default();
        user.user_properties.push(("k".into(), long));
        assert!(refused(
            &Packet::Disconnect(Disconnect {
                reason: 0,
                properties: user
            }),
            v5
        ));
        let sub = |subscriptions| {
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                subscriptions,
                properties: Properties::default(),
            })
        };
        assert!(refused(&sub(vec![]), v5));
        let options = SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 3,
        };
        let filter = Subscription {
            filter: "a".into(),
            options,
        };
        assert!(refused(&sub(vec![filter]), v5));
        let ids = Properties {
            subscription_identifiers: vec![0],
            ..Properties::default()
        };
        assert!(refused(
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "t".into(),
                packet_id: None,
                properties: ids,
                payload: Bytes::new(),
            }),
            v5
        ));
    }
}
