//! MQTT 5 properties (§2.2.2): their identifiers, which of them each packet type may carry, and
//! their reading and writing. A 3.1.1 packet has none; its callers never come here.

use super::wire::{put_binary, put_str, put_varint, topic_name, Counter, Reader, Sink};
use super::{CodecError, Properties};

// Property identifiers (MQTT 5 §2.2.2.2).
pub(super) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(super) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(super) const CONTENT_TYPE: u8 = 0x03;
pub(super) const RESPONSE_TOPIC: u8 = 0x08;
pub(super) const CORRELATION_DATA: u8 = 0x09;
pub(super) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(super) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(super) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(super) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(super) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(super) const AUTHENTICATION_DATA: u8 = 0x16;
pub(super) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(super) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(super) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(super) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(super) const SERVER_REFERENCE: u8 = 0x1C;
pub(super) const REASON_STRING: u8 = 0x1F;
pub(super) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(super) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(super) const TOPIC_ALIAS: u8 = 0x23;
pub(super) const MAXIMUM_QOS: u8 = 0x24;
pub(super) const RETAIN_AVAILABLE: u8 = 0x25;
pub(super) const USER_PROPERTY: u8 = 0x26;
pub(super) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(super) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(super) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(super) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

pub(super) const fn bit(id: u8) -> u64 {
    1u64 << id
}

/// Which properties a packet may carry, and which of them may appear more than once; a set of
/// property identifiers as a bit mask, so every check is one instruction and decoding stays linear.
#[derive(Clone, Copy)]
pub(super) struct PropSet {
    pub(super) allowed: u64,
    pub(super) repeatable: u64,
}

const fn props(allowed: u64) -> PropSet {
    PropSet {
        allowed: allowed | bit(USER_PROPERTY),
        repeatable: bit(USER_PROPERTY),
    }
}

pub(super) const WILL_PROPS: PropSet = props(
    bit(PAYLOAD_FORMAT_INDICATOR)
        | bit(MESSAGE_EXPIRY_INTERVAL)
        | bit(CONTENT_TYPE)
        | bit(RESPONSE_TOPIC)
        | bit(CORRELATION_DATA)
        | bit(WILL_DELAY_INTERVAL),
);
pub(super) const CONNECT_PROPS: PropSet = props(
    bit(SESSION_EXPIRY_INTERVAL)
        | bit(AUTHENTICATION_METHOD)
        | bit(AUTHENTICATION_DATA)
        | bit(REQUEST_PROBLEM_INFORMATION)
        | bit(REQUEST_RESPONSE_INFORMATION)
        | bit(RECEIVE_MAXIMUM)
        | bit(TOPIC_ALIAS_MAXIMUM)
        | bit(MAXIMUM_PACKET_SIZE),
);
pub(super) const CONNACK_PROPS: PropSet = props(
    bit(SESSION_EXPIRY_INTERVAL)
        | bit(ASSIGNED_CLIENT_IDENTIFIER)
        | bit(SERVER_KEEP_ALIVE)
        | bit(AUTHENTICATION_METHOD)
        | bit(AUTHENTICATION_DATA)
        | bit(RESPONSE_INFORMATION)
        | bit(SERVER_REFERENCE)
        | bit(REASON_STRING)
        | bit(RECEIVE_MAXIMUM)
        | bit(TOPIC_ALIAS_MAXIMUM)
        | bit(MAXIMUM_QOS)
        | bit(RETAIN_AVAILABLE)
        | bit(MAXIMUM_PACKET_SIZE)
        | bit(WILDCARD_SUBSCRIPTION_AVAILABLE)
        | bit(SUBSCRIPTION_IDENTIFIER_AVAILABLE)
        | bit(SHARED_SUBSCRIPTION_AVAILABLE),
);
pub(super) const PUBLISH_PROPS: PropSet = PropSet {
    allowed: bit(PAYLOAD_FORMAT_INDICATOR)
        | bit(MESSAGE_EXPIRY_INTERVAL)
        | bit(CONTENT_TYPE)
        | bit(RESPONSE_TOPIC)
        | bit(CORRELATION_DATA)
        | bit(SUBSCRIPTION_IDENTIFIER)
        | bit(TOPIC_ALIAS)
        | bit(USER_PROPERTY),
    // A server delivers one Subscription Identifier per matching subscription.
    repeatable: bit(USER_PROPERTY) | bit(SUBSCRIPTION_IDENTIFIER),
};
pub(super) const ACK_PROPS: PropSet = props(bit(REASON_STRING));
pub(super) const SUBSCRIBE_PROPS: PropSet = props(bit(SUBSCRIPTION_IDENTIFIER));
pub(super) const UNSUBSCRIBE_PROPS: PropSet = props(0);
pub(super) const DISCONNECT_PROPS: PropSet =
    props(bit(SESSION_EXPIRY_INTERVAL) | bit(SERVER_REFERENCE) | bit(REASON_STRING));
pub(super) const AUTH_PROPS: PropSet =
    props(bit(AUTHENTICATION_METHOD) | bit(AUTHENTICATION_DATA) | bit(REASON_STRING));

pub(super) fn read_properties(r: &mut Reader<'_>, set: PropSet) -> Result<Properties, CodecError> {
    let len = usize::try_from(r.varint()?)
        .map_err(|_| CodecError::Malformed("property length exceeds the packet"))?;
    if len > r.remaining() {
        return Err(CodecError::Malformed("property length exceeds the packet"));
    }
    let mut p = r.sub(len)?;
    let mut props = Properties::default();
    let mut seen = 0u64;
    while !p.is_empty() {
        let id = p.varint()?;
        let id = u8::try_from(id)
            .ok()
            .filter(|&id| id < 64 && KNOWN_PROPERTIES & bit(id) != 0)
            .ok_or(CodecError::Malformed("unknown property identifier"))?;
        let b = bit(id);
        if set.allowed & b == 0 {
            return Err(CodecError::Malformed("property not allowed in this packet"));
        }
        if seen & b != 0 && set.repeatable & b == 0 {
            return Err(CodecError::Protocol("property included more than once"));
        }
        seen |= b;
        match id {
            PAYLOAD_FORMAT_INDICATOR => props.payload_format_indicator = Some(zero_or_one(&mut p)?),
            MESSAGE_EXPIRY_INTERVAL => props.message_expiry_interval = Some(p.u32()?),
            CONTENT_TYPE => props.content_type = Some(p.string()?),
            RESPONSE_TOPIC => props.response_topic = Some(topic_name(p.prefixed()?)?),
            CORRELATION_DATA => props.correlation_data = Some(p.binary()?),
            SUBSCRIPTION_IDENTIFIER => match p.varint()? {
                0 => return Err(CodecError::Protocol("subscription identifier 0")),
                v => props.subscription_identifiers.push(v),
            },
            SESSION_EXPIRY_INTERVAL => props.session_expiry_interval = Some(p.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => props.assigned_client_identifier = Some(p.string()?),
            SERVER_KEEP_ALIVE => props.server_keep_alive = Some(p.u16()?),
            AUTHENTICATION_METHOD => props.authentication_method = Some(p.string()?),
            AUTHENTICATION_DATA => props.authentication_data = Some(p.binary()?),
            REQUEST_PROBLEM_INFORMATION => {
                props.request_problem_information = Some(zero_or_one(&mut p)?)
            }
            WILL_DELAY_INTERVAL => props.will_delay_interval = Some(p.u32()?),
            REQUEST_RESPONSE_INFORMATION => {
                props.request_response_information = Some(zero_or_one(&mut p)?)
            }
            RESPONSE_INFORMATION => props.response_information = Some(p.string()?),
            SERVER_REFERENCE => props.server_reference = Some(p.string()?),
            REASON_STRING => props.reason_string = Some(p.string()?),
            RECEIVE_MAXIMUM => props.receive_maximum = Some(nonzero_u16(&mut p)?),
            TOPIC_ALIAS_MAXIMUM => props.topic_alias_maximum = Some(p.u16()?),
            TOPIC_ALIAS => props.topic_alias = Some(nonzero_u16(&mut p)?),
            MAXIMUM_QOS => props.maximum_qos = Some(zero_or_one(&mut p)?),
            RETAIN_AVAILABLE => props.retain_available = Some(zero_or_one(&mut p)?),
            USER_PROPERTY => {
                let key = p.string()?;
                let value = p.string()?;
                props.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => match p.u32()? {
                0 => return Err(CodecError::Protocol("maximum packet size 0")),
                v => props.maximum_packet_size = Some(v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                props.wildcard_subscription_available = Some(zero_or_one(&mut p)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                props.subscription_identifier_available = Some(zero_or_one(&mut p)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                props.shared_subscription_available = Some(zero_or_one(&mut p)?)
            }
            _ => return Err(CodecError::Malformed("unknown property identifier")),
        }
    }
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(CodecError::Protocol(
            "authentication data without authentication method",
        ));
    }
    Ok(props)
}

const KNOWN_PROPERTIES: u64 = WILL_PROPS.allowed
    | CONNECT_PROPS.allowed
    | CONNACK_PROPS.allowed
    | PUBLISH_PROPS.allowed
    | ACK_PROPS.allowed
    | SUBSCRIBE_PROPS.allowed
    | DISCONNECT_PROPS.allowed
    | AUTH_PROPS.allowed;

fn zero_or_one(p: &mut Reader<'_>) -> Result<u8, CodecError> {
    match p.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(CodecError::Protocol("property value must be 0 or 1")),
    }
}

fn nonzero_u16(p: &mut Reader<'_>) -> Result<u16, CodecError> {
    match p.u16()? {
        0 => Err(CodecError::Protocol("property value must not be 0")),
        v => Ok(v),
    }
}

/// Property length, then the properties. A property the packet type may not carry is an error
/// rather than silently dropped: it is a bug in the caller, and the peer would refuse the packet.
pub(super) fn write_properties<W: Sink>(
    w: &mut W,
    p: &Properties,
    set: PropSet,
) -> Result<(), CodecError> {
    let mut counter = Counter(0);
    write_property_list(&mut counter, p, set)?;
    put_varint(w, counter.0)?;
    write_property_list(w, p, set)
}

fn put_id<W: Sink>(w: &mut W, set: PropSet, id: u8) -> Result<(), CodecError> {
    if set.allowed & bit(id) == 0 {
        return Err(CodecError::Encode("property not allowed in this packet"));
    }
    w.put_u8(id);
    Ok(())
}

fn write_property_list<W: Sink>(w: &mut W, p: &Properties, set: PropSet) -> Result<(), CodecError> {
    if let Some(v) = p.payload_format_indicator {
        put_id(w, set, PAYLOAD_FORMAT_INDICATOR)?;
        w.put_u8(v);
    }
    if let Some(v) = p.message_expiry_interval {
        put_id(w, set, MESSAGE_EXPIRY_INTERVAL)?;
        w.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        put_id(w, set, CONTENT_TYPE)?;
        put_str(w, v)?;
    }
    if let Some(v) = &p.response_topic {
        put_id(w, set, RESPONSE_TOPIC)?;
        put_str(w, v)?;
    }
    if let Some(v) = &p.correlation_data {
        put_id(w, set, CORRELATION_DATA)?;
        put_binary(w, v)?;
    }
    if p.subscription_identifiers.len() > 1 && set.repeatable & bit(SUBSCRIPTION_IDENTIFIER) == 0 {
        return Err(CodecError::Encode("more than one subscription identifier"));
    }
    for &v in &p.subscription_identifiers {
        put_id(w, set, SUBSCRIPTION_IDENTIFIER)?;
        if v == 0 {
            return Err(CodecError::Encode("subscription identifier 0"));
        }
        put_varint(w, v as usize)?;
    }
    if let Some(v) = p.session_expiry_interval {
        put_id(w, set, SESSION_EXPIRY_INTERVAL)?;
        w.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_identifier {
        put_id(w, set, ASSIGNED_CLIENT_IDENTIFIER)?;
        put_str(w, v)?;
    }
    if let Some(v) = p.server_keep_alive {
        put_id(w, set, SERVER_KEEP_ALIVE)?;
        w.put_u16(v);
    }
    if let Some(v) = &p.authentication_method {
        put_id(w, set, AUTHENTICATION_METHOD)?;
        put_str(w, v)?;
    }
    if let Some(v) = &p.authentication_data {
        put_id(w, set, AUTHENTICATION_DATA)?;
        put_binary(w, v)?;
    }
    if let Some(v) = p.request_problem_information {
        put_id(w, set, REQUEST_PROBLEM_INFORMATION)?;
        w.put_u8(v);
    }
    if let Some(v) = p.will_delay_interval {
        put_id(w, set, WILL_DELAY_INTERVAL)?;
        w.put_u32(v);
    }
    if let Some(v) = p.request_response_information {
        put_id(w, set, REQUEST_RESPONSE_INFORMATION)?;
        w.put_u8(v);
    }
    if let Some(v) = &p.response_information {
        put_id(w, set, RESPONSE_INFORMATION)?;
        put_str(w, v)?;
    }
    if let Some(v) = &p.server_reference {
        put_id(w, set, SERVER_REFERENCE)?;
        put_str(w, v)?;
    }
    if let Some(v) = &p.reason_string {
        put_id(w, set, REASON_STRING)?;
        put_str(w, v)?;
    }
    if let Some(v) = p.receive_maximum {
        put_id(w, set, RECEIVE_MAXIMUM)?;
        w.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        put_id(w, set, TOPIC_ALIAS_MAXIMUM)?;
        w.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        put_id(w, set, TOPIC_ALIAS)?;
        w.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        put_id(w, set, MAXIMUM_QOS)?;
        w.put_u8(v);
    }
    if let Some(v) = p.retain_available {
        put_id(w, set, RETAIN_AVAILABLE)?;
        w.put_u8(v);
    }
    for (key, value) in &p.user_properties {
        put_id(w, set, USER_PROPERTY)?;
        put_str(w, key)?;
        put_str(w, value)?;
    }
    if let Some(v) = p.maximum_packet_size {
        put_id(w, set, MAXIMUM_PACKET_SIZE)?;
        w.put_u32(v);
    }
    if let Some(v) = p.wildcard_subscription_available {
        put_id(w, set, WILDCARD_SUBSCRIPTION_AVAILABLE)?;
        w.put_u8(v);
    }
    if let Some(v) = p.subscription_identifier_available {
        put_id(w, set, SUBSCRIPTION_IDENTIFIER_AVAILABLE)?;
        w.put_u8(v);
    }
    if let Some(v) = p.shared_subscription_available {
        put_id(w, set, SHARED_SUBSCRIPTION_AVAILABLE)?;
        w.put_u8(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::codec::tests::*;
    use crate::codec::{CodecError, Packet, Protocol};

    /// A v5 DISCONNECT carrying the given raw property bytes.
    fn disconnect_with(props: &[u8]) -> Vec<u8> {
        let mut out = vec![0xE0, (2 + props.len()) as u8, 0x00, props.len() as u8];
        out.extend_from_slice(props);
        out
    }

    #[test]
    fn properties_validation() {
        let v5 = Protocol::V5;
        let ok = |props: &[u8]| dec(&disconnect_with(props), v5);
        assert!(ok(b"").unwrap().is_some());
        assert!(ok(b"\x1F\x00\x02ok").unwrap().is_some());
        assert!(ok(b"\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01v")
            .unwrap()
            .is_some());
        // Unknown identifiers, including multi-byte ones.
        for unknown in [
            &b"\x00"[..],
            b"\x04\x00",
            b"\x2B\x00",
            b"\x7F\x00",
            b"\x80\x01\x00",
        ] {
            assert!(
                matches!(ok(unknown), Err(CodecError::Malformed(_))),
                "{unknown:?}"
            );
        }
        // Twice a property that may appear once.
        assert!(matches!(
            ok(b"\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02"),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            ok(b"\x1F\x00\x00\x1F\x00\x00"),
            Err(CodecError::Protocol(_))
        ));
        // Known, but not allowed in a DISCONNECT.
        assert!(matches!(ok(b"\x23\x00\x01"), Err(CodecError::Malformed(_))));
        assert!(matches!(ok(b"\x01\x00"), Err(CodecError::Malformed(_))));
        // A property value running past the property length.
        assert!(matches!(ok(b"\x11\x00\x00"), Err(CodecError::Malformed(_))));
        assert!(matches!(
            ok(b"\x1F\x00\x09ab"),
            Err(CodecError::Malformed(_))
        ));
        // A property length running past the packet.
        assert!(matches!(
            dec(&[0xE0, 0x03, 0x00, 0x05, 0x1F], v5),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            dec(&[0xE0, 0x06, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], v5),
            Err(CodecError::Malformed(_))
        ));
        // Strings in properties are MQTT strings.
        assert_eq!(ok(b"\x1F\x00\x01\x00"), Err(CodecError::InvalidUtf8));
        assert_eq!(
            ok(b"\x26\x00\x01\xFF\x00\x00"),
            Err(CodecError::InvalidUtf8)
        );
        // Values outside their range.
        let connack = |props: &[u8]| {
            let mut out = vec![0x20, (3 + props.len()) as u8, 0x00, 0x00, props.len() as u8];
            out.extend_from_slice(props);
            dec(&out, v5)
        };
        assert!(connack(b"\x24\x01").unwrap().is_some());
        for bad in [
            &b"\x24\x02"[..],
            b"\x25\x02",
            b"\x28\x02",
            b"\x29\x02",
            b"\x2A\x02",
            b"\x21\x00\x00",
            b"\x27\x00\x00\x00\x00",
            b"\x16\x00\x01x", // authentication data without a method
        ] {
            assert!(
                matches!(connack(bad), Err(CodecError::Protocol(_))),
                "{bad:?}"
            );
        }
        // Subscription identifiers may repeat in PUBLISH.
        let Some(Packet::Publish(p)) =
            dec(&raw_publish(0x30, b"t", b"\x05\x0B\x01\x0B\x80\x01"), v5).unwrap()
        else {
            panic!("not a publish");
        };
        assert_eq!(p.properties.subscription_identifiers, vec![1, 128]);
        // Response topic is a topic name.
        assert!(matches!(
            dec(&raw_publish(0x30, b"t", b"\x04\x08\x00\x01#"), v5),
            Err(CodecError::Protocol(_))
        ));
    }
}
