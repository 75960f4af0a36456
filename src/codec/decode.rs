//! Decoding: bytes from the network into packets, each field parsed into its type once, so nothing
//! past this point sees an invalid packet. `Ok(None)` asks for more bytes and consumes nothing; an
//! error means the stream is unusable and must be closed.

use bytes::BytesMut;

use super::frame::{
    check_first_byte, take_frame, AUTH, CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK,
    PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
use super::properties::{
    read_properties, PropSet, ACK_PROPS, AUTH_PROPS, CONNACK_PROPS, CONNECT_PROPS,
    DISCONNECT_PROPS, PUBLISH_PROPS, SUBSCRIBE_PROPS, UNSUBSCRIBE_PROPS, WILL_PROPS,
};
use super::wire::{topic_name, Reader};
use super::{
    Ack, Auth, CodecError, ConnAck, Connect, Disconnect, Packet, Properties, Protocol, Publish,
    QoS, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

/// Decodes the first packet of a session, which must be a CONNECT; its protocol level decides the
/// protocol of everything after it. `Ok(None)`: more bytes are needed (nothing consumed).
pub fn decode_connect(buf: &mut BytesMut, max_size: usize) -> Result<Option<Connect>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != CONNECT {
        return Err(CodecError::Protocol("first packet is not CONNECT"));
    }
    check_first_byte(first, Protocol::V5)?;
    let Some(body) = take_frame(buf, max_size)? else {
        return Ok(None);
    };
    read_connect(&mut Reader::new(&body)).map(Some)
}

/// Decodes one packet from the front of `buf` and consumes its bytes. `Ok(None)`: more bytes are
/// needed (nothing consumed). An error means the stream is unusable and must be closed.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_size: usize,
) -> Result<Option<Packet>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // The first byte alone can condemn the stream: refuse garbage before waiting for its body.
    check_first_byte(first, protocol)?;
    let Some(body) = take_frame(buf, max_size)? else {
        return Ok(None);
    };
    let mut r = Reader::new(&body);
    let v5 = protocol == Protocol::V5;
    let packet = match first >> 4 {
        CONNECT => Packet::Connect(Box::new(read_connect(&mut r)?)),
        CONNACK => Packet::ConnAck(read_connack(&mut r, v5)?),
        PUBLISH => Packet::Publish(read_publish(first, &mut r, v5)?),
        PUBACK => Packet::PubAck(read_ack(&mut r, v5)?),
        PUBREC => Packet::PubRec(read_ack(&mut r, v5)?),
        PUBREL => Packet::PubRel(read_ack(&mut r, v5)?),
        PUBCOMP => Packet::PubComp(read_ack(&mut r, v5)?),
        SUBSCRIBE => Packet::Subscribe(read_subscribe(&mut r, v5)?),
        SUBACK => Packet::SubAck(read_suback(&mut r, v5)?),
        UNSUBSCRIBE => Packet::Unsubscribe(read_unsubscribe(&mut r, v5)?),
        UNSUBACK => Packet::UnsubAck(read_unsuback(&mut r, v5)?),
        PINGREQ => {
            r.expect_end()?;
            Packet::PingReq
        }
        PINGRESP => {
            r.expect_end()?;
            Packet::PingResp
        }
        DISCONNECT => {
            let (reason, properties) = read_reason_and_props(&mut r, v5, DISCONNECT_PROPS)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        AUTH => {
            let (reason, properties) = read_reason_and_props(&mut r, v5, AUTH_PROPS)?;
            Packet::Auth(Auth { reason, properties })
        }
        _ => return Err(CodecError::Malformed("reserved packet type")),
    };
    Ok(Some(packet))
}

fn qos(bits: u8) -> Result<QoS, CodecError> {
    match bits {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(CodecError::Malformed("QoS 3")),
    }
}

fn read_connect(r: &mut Reader<'_>) -> Result<Connect, CodecError> {
    let name = r.prefixed()?;
    let level = r.u8()?;
    let protocol = match (name, level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        _ => return Err(CodecError::UnsupportedProtocol(level)),
    };
    let v5 = protocol == Protocol::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(CodecError::Malformed("reserved CONNECT flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(CodecError::Malformed("will QoS 3"));
    }
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(CodecError::Malformed(
            "will QoS or retain without will flag",
        ));
    }
    if !v5 && password_flag && !username_flag {
        return Err(CodecError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        read_properties(r, CONNECT_PROPS)?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            read_properties(r, WILL_PROPS)?
        } else {
            Properties::default()
        };
        let topic = topic_name(r.prefixed()?)?;
        if topic.is_empty() {
            return Err(CodecError::Protocol("empty will topic"));
        }
        Some(Will {
            topic,
            payload: r.binary()?,
            qos: qos(will_qos)?,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.expect_end()?;
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn read_connack(r: &mut Reader<'_>, v5: bool) -> Result<ConnAck, CodecError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(CodecError::Malformed("reserved CONNACK flag set"));
    }
    let code = r.u8()?;
    let properties = if v5 {
        read_properties(r, CONNACK_PROPS)?
    } else {
        Properties::default()
    };
    r.expect_end()?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        code,
        properties,
    })
}

fn read_publish(first: u8, r: &mut Reader<'_>, v5: bool) -> Result<Publish, CodecError> {
    let qos = qos((first >> 1) & 0x03)?;
    let topic = topic_name(r.prefixed()?)?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(r.packet_id()?),
    };
    let properties = if v5 {
        read_properties(r, PUBLISH_PROPS)?
    } else {
        Properties::default()
    };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(CodecError::Protocol(
            "empty topic name without a topic alias",
        ));
    }
    Ok(Publish {
        dup: first & 0x08 != 0,
        qos,
        retain: first & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn read_ack(r: &mut Reader<'_>, v5: bool) -> Result<Ack, CodecError> {
    let packet_id = r.packet_id()?;
    let (reason, properties) = read_reason_and_props(r, v5, ACK_PROPS)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// The optional tail of MQTT 5 acks, DISCONNECT and AUTH: absent means reason 0 and no properties,
/// a lone byte means that reason and no properties. 3.1.1 has neither.
fn read_reason_and_props(
    r: &mut Reader<'_>,
    v5: bool,
    set: PropSet,
) -> Result<(u8, Properties), CodecError> {
    let mut reason = 0;
    let mut properties = Properties::default();
    if v5 && !r.is_empty() {
        reason = r.u8()?;
        if !r.is_empty() {
            properties = read_properties(r, set)?;
        }
    }
    r.expect_end()?;
    Ok((reason, properties))
}

fn read_subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, CodecError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        read_properties(r, SUBSCRIBE_PROPS)?
    } else {
        Properties::default()
    };
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if options & reserved != 0 {
            return Err(CodecError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(CodecError::Protocol("retain handling 3"));
        }
        subscriptions.push(Subscription {
            filter,
            options: SubscriptionOptions {
                qos: qos(options & 0x03)?,
                no_local: options & 0x04 != 0,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            },
        });
    }
    if subscriptions.is_empty() {
        return Err(CodecError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

fn read_suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, CodecError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        read_properties(r, ACK_PROPS)?
    } else {
        Properties::default()
    };
    Ok(SubAck {
        packet_id,
        codes: r.rest().to_vec(),
        properties,
    })
}

fn read_unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, CodecError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        read_properties(r, UNSUBSCRIBE_PROPS)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(CodecError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn read_unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, CodecError> {
    let packet_id = r.packet_id()?;
    if !v5 {
        r.expect_end()?;
        return Ok(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = read_properties(r, ACK_PROPS)?;
    Ok(UnsubAck {
        packet_id,
        codes: r.rest().to_vec(),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::codec::tests::*;
    use crate::codec::wire::put_varint;
    use crate::codec::{
        decode, Auth, CodecError, Disconnect, Packet, Properties, Protocol, Publish, QoS,
    };

    #[test]
    fn short_forms_v5() {
        let v5 = Protocol::V5;
        for first in [0x40, 0x50, 0x62, 0x70] {
            let packet = dec_one(&[first, 0x02, 0x00, 0x07], v5);
            let (Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a)) =
                packet
            else {
                panic!("not an ack: {packet:?}");
            };
            assert_eq!(a, ack(7, 0, Properties::default()));
            let packet = dec_one(&[first, 0x03, 0x00, 0x07, 0x92], v5);
            let (Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a)) =
                packet
            else {
                panic!("not an ack: {packet:?}");
            };
            assert_eq!(a, ack(7, 0x92, Properties::default()));
            // Reason with an explicitly empty property list.
            assert!(dec(&[first, 0x04, 0x00, 0x07, 0x92, 0x00], v5).is_ok());
        }
        let none = Properties::default;
        assert_eq!(
            dec_one(&[0xE0, 0x00], v5),
            Packet::Disconnect(Disconnect {
                reason: 0,
                properties: none()
            })
        );
        assert_eq!(
            dec_one(&[0xE0, 0x01, 0x04], v5),
            Packet::Disconnect(Disconnect {
                reason: 4,
                properties: none()
            })
        );
        assert_eq!(
            dec_one(&[0xF0, 0x00], v5),
            Packet::Auth(Auth {
                reason: 0,
                properties: none()
            })
        );
        assert_eq!(
            dec_one(&[0xF0, 0x01, 0x18], v5),
            Packet::Auth(Auth {
                reason: 0x18,
                properties: none()
            })
        );
        // 3.1.1 acks are exactly two bytes long.
        assert!(matches!(
            dec(&[0x40, 0x03, 0x00, 0x07, 0x00], Protocol::V311),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            dec(&[0xE0, 0x01, 0x00], Protocol::V311),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn publish_payload_is_zero_copy() {
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: Some(1),
            properties: Properties::default(),
            payload: Bytes::from(vec![1; 4096]),
        });
        let mut buf = enc(&packet, Protocol::V311);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let Some(Packet::Publish(p)) = decode(&mut buf, Protocol::V311, MAX).unwrap() else {
            panic!("not a publish");
        };
        assert!(range.contains(&(p.payload.as_ptr() as usize)));
        assert_eq!(p.payload.len(), 4096);
    }

    #[test]
    fn connect_protocol_levels() {
        let v4 = b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x00\x00\x00";
        assert_eq!(dec_connect(v4).unwrap().unwrap().protocol, Protocol::V311);
        let v5 = b"\x10\x0d\x00\x04MQTT\x05\x00\x00\x00\x00\x00\x00";
        assert_eq!(dec_connect(v5).unwrap().unwrap().protocol, Protocol::V5);
        let mqisdp = b"\x10\x0e\x00\x06MQIsdp\x03\x00\x00\x00\x00\x00";
        assert_eq!(dec_connect(mqisdp), Err(CodecError::UnsupportedProtocol(3)));
        let v6 = b"\x10\x0c\x00\x04MQTT\x06\x00\x00\x00\x00\x00";
        assert_eq!(dec_connect(v6), Err(CodecError::UnsupportedProtocol(6)));
        let v3 = b"\x10\x0c\x00\x04MQTT\x03\x00\x00\x00\x00\x00";
        assert_eq!(dec_connect(v3), Err(CodecError::UnsupportedProtocol(3)));
        let lower = b"\x10\x0c\x00\x04mqtt\x04\x00\x00\x00\x00\x00";
        assert_eq!(dec_connect(lower), Err(CodecError::UnsupportedProtocol(4)));
        // Not a CONNECT first, even before the rest of the packet arrives.
        for first in [0x20u8, 0x30, 0xC0, 0x00, 0xF0] {
            assert!(matches!(
                dec_connect(&[first]),
                Err(CodecError::Protocol(_))
            ));
        }
        assert!(matches!(
            dec_connect(&[0x11]),
            Err(CodecError::Malformed(_))
        ));
        // A second CONNECT decodes as a packet; the session refuses it.
        assert!(matches!(
            dec(v4, Protocol::V311),
            Ok(Some(Packet::Connect(_)))
        ));
        assert!(matches!(
            dec(v4, Protocol::V5),
            Ok(Some(Packet::Connect(_)))
        ));
    }

    /// A CONNECT with the given level, flags and payload (no properties in v5).
    fn raw_connect(level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = b"\x00\x04MQTT".to_vec();
        body.extend([level, flags, 0, 10]);
        if level == 5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        let mut out = vec![0x10];
        put_varint(&mut out_vec(&mut out), body.len()).unwrap();
        out.extend(body);
        out
    }

    #[test]
    fn connect_flags() {
        let id = b"\x00\x01c";
        let will = b"\x00\x01t\x00\x00";
        let will5 = b"\x00\x00\x01t\x00\x00";
        for level in [4, 5] {
            let w: &[u8] = if level == 5 { will5 } else { will };
            let ok = |flags, payload: &[u8]| {
                dec_connect(&raw_connect(level, flags, &[id, payload].concat()))
            };
            assert!(ok(0x00, b"").unwrap().is_some());
            assert!(ok(0x02, b"").unwrap().unwrap().clean_start);
            // Reserved bit.
            assert!(matches!(ok(0x01, b""), Err(CodecError::Malformed(_))));
            // Will QoS 3, QoS or retain without the will flag.
            assert!(matches!(ok(0x1C, w), Err(CodecError::Malformed(_))));
            assert!(matches!(ok(0x08, b""), Err(CodecError::Malformed(_))));
            assert!(matches!(ok(0x10, b""), Err(CodecError::Malformed(_))));
            assert!(matches!(ok(0x20, b""), Err(CodecError::Malformed(_))));
            let c = ok(0x34, w).unwrap().unwrap();
            let will = c.will.unwrap();
            assert_eq!((will.qos, will.retain), (QoS::ExactlyOnce, true));
            // User name and password.
            let c = ok(0xC0, b"\x00\x01u\x00\x02pw").unwrap().unwrap();
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
            let password_only = ok(0x40, b"\x00\x02pw");
            if level == 4 {
                assert!(matches!(password_only, Err(CodecError::Malformed(_))));
            } else {
                let c = password_only.unwrap().unwrap();
                assert_eq!((c.username, c.password), (None, Some(b(b"pw"))));
            }
            // Fields the flags announce must be there, and nothing after them.
            assert!(matches!(ok(0x80, b""), Err(CodecError::Malformed(_))));
            assert!(matches!(ok(0x04, b""), Err(CodecError::Malformed(_))));
            assert!(matches!(ok(0x00, b"\x00"), Err(CodecError::Malformed(_))));
            // Will topic: a topic name.
            let wild: &[u8] = if level == 5 {
                b"\x00\x00\x01#\x00\x00"
            } else {
                b"\x00\x01#\x00\x00"
            };
            assert!(matches!(ok(0x04, wild), Err(CodecError::Protocol(_))));
            let empty: &[u8] = if level == 5 {
                b"\x00\x00\x00\x00\x00"
            } else {
                b"\x00\x00\x00\x00"
            };
            assert!(matches!(ok(0x04, empty), Err(CodecError::Protocol(_))));
        }
    }

    #[test]
    fn client_id_strings() {
        for level in [4, 5] {
            let c = dec_connect(&raw_connect(level, 0, b"\x00\x00"))
                .unwrap()
                .unwrap();
            assert_eq!(c.client_id, "");
            for bad in [
                &b"\x00\x02\xC3\x28"[..],
                b"\x00\x02a\x00",
                b"\x00\x01\xFF",
                b"\x00\x03\xED\xA0\x80",
            ] {
                assert_eq!(
                    dec_connect(&raw_connect(level, 0, bad)),
                    Err(CodecError::InvalidUtf8),
                    "{bad:?}"
                );
            }
            let c = dec_connect(&raw_connect(level, 0, "\x00\x04\u{e9}\u{e9}".as_bytes()))
                .unwrap()
                .unwrap();
            assert_eq!(c.client_id, "\u{e9}\u{e9}");
        }
    }
    #[test]
    fn publish_topic_names() {
        let v3 = Protocol::V311;
        let v5 = Protocol::V5;
        assert!(dec(&raw_publish(0x30, b"a/b", b"x"), v3).unwrap().is_some());
        assert!(dec(&raw_publish(0x30, b"a/b", b"\x00x"), v5)
            .unwrap()
            .is_some());
        for bad in [&b"a\xFFb"[..], b"a\x00b", b"\xC0\xAF", b"\xED\xA0\x80"] {
            assert_eq!(
                dec(&raw_publish(0x30, bad, b""), v3),
                Err(CodecError::InvalidUtf8)
            );
            assert_eq!(
                dec(&raw_publish(0x30, bad, b"\x00"), v5),
                Err(CodecError::InvalidUtf8)
            );
        }
        for wild in [&b"a/+"[..], b"#", b"a/#", b"+", b"a+b"] {
            assert!(matches!(
                dec(&raw_publish(0x30, wild, b""), v3),
                Err(CodecError::Protocol(_))
            ));
            assert!(matches!(
                dec(&raw_publish(0x30, wild, b"\x00"), v5),
                Err(CodecError::Protocol(_))
            ));
        }
        // Empty topic: only with a topic alias, only in MQTT 5.
        assert!(matches!(
            dec(&raw_publish(0x30, b"", b"payload"), v3),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&raw_publish(0x30, b"", b"\x00"), v5),
            Err(CodecError::Protocol(_))
        ));
        let Some(Packet::Publish(p)) =
            dec(&raw_publish(0x30, b"", b"\x03\x23\x00\x05p"), v5).unwrap()
        else {
            panic!("not a publish");
        };
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("", Some(5)));
        assert_eq!(p.payload, b(b"p"));
        // Topic alias 0 is invalid.
        assert!(matches!(
            dec(&raw_publish(0x30, b"t", b"\x03\x23\x00\x00"), v5),
            Err(CodecError::Protocol(_))
        ));
        // QoS 1 needs a packet identifier.
        assert!(matches!(
            dec(&raw_publish(0x32, b"t", b"\x00"), v3),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn packet_id_zero() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let bad: &[&[u8]] = &[
                &[0x40, 0x02, 0x00, 0x00],
                &[0x50, 0x02, 0x00, 0x00],
                &[0x62, 0x02, 0x00, 0x00],
                &[0x70, 0x02, 0x00, 0x00],
                &[0xB0, 0x02, 0x00, 0x00],
            ];
            for bytes in bad {
                assert!(matches!(dec(bytes, protocol), Err(CodecError::Protocol(_))));
            }
        }
        let v3 = Protocol::V311;
        assert!(matches!(
            dec(&raw_publish(0x32, b"t", b"\x00\x00"), v3),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0x82, 0x06, 0, 0, 0, 1, b'a', 0], v3),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0xA2, 0x05, 0, 0, 0, 1, b'a'], v3),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0x90, 0x03, 0, 0, 0], v3),
            Err(CodecError::Protocol(_))
        ));
    }

    #[test]
    fn subscribe_validation() {
        let v3 = Protocol::V311;
        let v5 = Protocol::V5;
        // No filter at all.
        assert!(matches!(
            dec(&[0x82, 0x02, 0, 1], v3),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0x82, 0x03, 0, 1, 0], v5),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0xA2, 0x02, 0, 1], v3),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0xA2, 0x03, 0, 1, 0], v5),
            Err(CodecError::Protocol(_))
        ));
        // Options: 3.1.1 has only QoS; MQTT 5 reserves the top two bits.
        for (opts, v3_ok, v5_ok) in [
            (0x00u8, true, true),
            (0x02, true, true),
            (0x03, false, false),
            (0x04, false, true),
            (0x2E, false, true),
            (0x30, false, false),
            (0x40, false, false),
            (0x80, false, false),
        ] {
            let r3 = dec(&[0x82, 0x06, 0, 1, 0, 1, b'a', opts], v3);
            assert_eq!(r3.is_ok(), v3_ok, "{opts:#x} {r3:?}");
            let r5 = dec(&[0x82, 0x07, 0, 1, 0, 0, 1, b'a', opts], v5);
            assert_eq!(r5.is_ok(), v5_ok, "{opts:#x} {r5:?}");
        }
        // A filter without its options byte.
        assert!(matches!(
            dec(&[0x82, 0x05, 0, 1, 0, 1, b'a'], v3),
            Err(CodecError::Malformed(_))
        ));
        // Filters are UTF-8 strings.
        assert_eq!(
            dec(&[0x82, 0x06, 0, 1, 0, 1, 0xFF, 0], v3),
            Err(CodecError::InvalidUtf8)
        );
        assert_eq!(
            dec(&[0xA2, 0x05, 0, 1, 0, 1, 0], v3),
            Err(CodecError::InvalidUtf8)
        );
        // One subscription identifier at most, and not 0.
        assert!(matches!(
            dec(&[0x82, 0x0B, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0], v5),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            dec(&[0x82, 0x09, 0, 1, 2, 0x0B, 0, 0, 1, b'a', 0], v5),
            Err(CodecError::Protocol(_))
        ));
    }
}
