//! MQTT 3.1.1 and 5 packet codec for untrusted input.
//!
//! One packet model (the MQTT 5 superset) for both versions: a 3.1.1 packet decodes with empty
//! properties and encodes with its properties dropped. Decoding never panics on any input: every
//! length is checked before it is used, and a packet larger than the caller's limit is refused from
//! its fixed header, before its body is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol level of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    PacketTooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("unsupported protocol name or level {0}")]
    UnsupportedProtocol(u8),
    #[error("cannot encode: {0}")]
    Encode(&'static str),
}

/// MQTT 5 properties; every field is optional and absent for 3.1.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    /// Clean Session (3.1.1) or Clean Start (5).
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

/// CONNACK. `code` is the 3.1.1 return code or the MQTT 5 reason code, as the session's protocol says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// Present exactly when `qos` is not `AtMostOnce`.
    pub packet_id: Option<u16>,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP. `reason` is 0 for 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: u16,
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    pub options: SubscriptionOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub subscriptions: Vec<Subscription>,
    pub properties: Properties,
}

/// SUBACK: one code per filter (3.1.1 return codes 0, 1, 2, 0x80 or MQTT 5 reason codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<String>,
    pub properties: Properties,
}

/// UNSUBACK: `codes` is empty for 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl CodecError {
    /// The MQTT 5 reason code that tells the peer why its stream was closed (for a DISCONNECT, or a
    /// CONNACK when the error came from the CONNECT). A 3.1.1 peer is simply disconnected, except
    /// for [`CodecError::UnsupportedProtocol`], which 3.1.1 answers with CONNACK return code 0x01.
    pub fn reason_code(&self) -> u8 {
        match self {
            Self::MalformedRemainingLength | Self::Malformed(_) | Self::InvalidUtf8 => {
                reason::MALFORMED_PACKET
            }
            Self::Protocol(_) => reason::PROTOCOL_ERROR,
            Self::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            Self::UnsupportedProtocol(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            Self::Encode(_) => reason::IMPLEMENTATION_SPECIFIC_ERROR,
        }
    }
}

/// MQTT 5 reason codes (and the 3.1.1 CONNACK return codes) the front-end sends.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const PACKET_TOO_LARGE: u8 = 0x95;

    /// MQTT 3.1.1 CONNACK return codes.
    pub const V311_ACCEPTED: u8 = 0x00;
    pub const V311_UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    pub const V311_IDENTIFIER_REJECTED: u8 = 0x02;
    pub const V311_SERVER_UNAVAILABLE: u8 = 0x03;
    pub const V311_BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
    pub const V311_NOT_AUTHORIZED: u8 = 0x05;
    /// MQTT 3.1.1 SUBACK return code for a refused filter.
    pub const V311_SUBACK_FAILURE: u8 = 0x80;
}

/// Largest value of a Variable Byte Integer, hence of a remaining length.
const MAX_VARINT: usize = 268_435_455;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

// Property identifiers (MQTT 5 §2.2.2.2).
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

const fn bit(id: u8) -> u64 {
    1u64 << id
}

/// Which properties a packet may carry, and which of them may appear more than once; a set of
/// property identifiers as a bit mask, so every check is one instruction and decoding stays linear.
#[derive(Clone, Copy)]
struct PropSet {
    allowed: u64,
    repeatable: u64,
}

const fn props(allowed: u64) -> PropSet {
    PropSet {
        allowed: allowed | bit(USER_PROPERTY),
        repeatable: bit(USER_PROPERTY),
    }
}

const WILL_PROPS: PropSet = props(
    bit(PAYLOAD_FORMAT_INDICATOR)
        | bit(MESSAGE_EXPIRY_INTERVAL)
        | bit(CONTENT_TYPE)
        | bit(RESPONSE_TOPIC)
        | bit(CORRELATION_DATA)
        | bit(WILL_DELAY_INTERVAL),
);
const CONNECT_PROPS: PropSet = props(
    bit(SESSION_EXPIRY_INTERVAL)
        | bit(AUTHENTICATION_METHOD)
        | bit(AUTHENTICATION_DATA)
        | bit(REQUEST_PROBLEM_INFORMATION)
        | bit(REQUEST_RESPONSE_INFORMATION)
        | bit(RECEIVE_MAXIMUM)
        | bit(TOPIC_ALIAS_MAXIMUM)
        | bit(MAXIMUM_PACKET_SIZE),
);
const CONNACK_PROPS: PropSet = props(
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
const PUBLISH_PROPS: PropSet = PropSet {
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
const ACK_PROPS: PropSet = props(bit(REASON_STRING));
const SUBSCRIBE_PROPS: PropSet = props(bit(SUBSCRIPTION_IDENTIFIER));
const UNSUBSCRIBE_PROPS: PropSet = props(0);
const DISCONNECT_PROPS: PropSet =
    props(bit(SESSION_EXPIRY_INTERVAL) | bit(SERVER_REFERENCE) | bit(REASON_STRING));
const AUTH_PROPS: PropSet =
    props(bit(AUTHENTICATION_METHOD) | bit(AUTHENTICATION_DATA) | bit(REASON_STRING));

const TRUNCATED: CodecError = CodecError::Malformed("packet shorter than its contents");

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

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

/// Checks the packet type and the fixed-header flags, which MQTT fixes for every type but PUBLISH.
fn check_first_byte(first: u8, protocol: Protocol) -> Result<(), CodecError> {
    let flags = first & 0x0F;
    match first >> 4 {
        0 => Err(CodecError::Malformed("reserved packet type 0")),
        PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                Err(CodecError::Malformed("PUBLISH with QoS 3"))
            } else if qos == 0 && flags & 0x08 != 0 {
                Err(CodecError::Malformed("DUP set on a QoS 0 PUBLISH"))
            } else {
                Ok(())
            }
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags != 0b0010 => {
            Err(CodecError::Malformed("fixed header flags must be 0b0010"))
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Ok(()),
        AUTH if protocol == Protocol::V311 => {
            Err(CodecError::Malformed("AUTH does not exist in MQTT 3.1.1"))
        }
        _ if flags != 0 => Err(CodecError::Malformed("fixed header flags must be 0")),
        _ => Ok(()),
    }
}

/// Reads the fixed header at the front of `buf`; once the whole packet is buffered, consumes it and
/// returns its body (zero-copy). The size limit applies as soon as the header is readable.
fn take_frame(buf: &mut BytesMut, max_size: usize) -> Result<Option<Bytes>, CodecError> {
    let mut remaining = 0usize;
    let mut header_len = None;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            header_len = Some(2 + i);
            break;
        }
    }
    let Some(header_len) = header_len else {
        return Err(CodecError::MalformedRemainingLength);
    };
    let size = header_len
        .checked_add(remaining)
        .ok_or(CodecError::MalformedRemainingLength)?;
    if size > max_size {
        return Err(CodecError::PacketTooLarge {
            size,
            max: max_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header_len);
    Ok(Some(frame))
}

/// A bounds-checked cursor over a packet body; every read fails with `Malformed` rather than
/// reading past `end`, and byte fields come out as zero-copy slices of the body.
struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(frame: &'a Bytes) -> Self {
        Self {
            frame,
            pos: 0,
            end: frame.len(),
        }
    }

    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn expect_end(&self) -> Result<(), CodecError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.end)
            .ok_or(TRUNCATED)?;
        let slice = self.frame.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(slice)
    }

    /// A reader over the next `n` bytes, which this one skips.
    fn sub(&mut self, n: usize) -> Result<Reader<'a>, CodecError> {
        let start = self.pos;
        self.take(n)?;
        Ok(Reader {
            frame: self.frame,
            pos: start,
            end: self.pos,
        })
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        match self.take(1)? {
            &[b] => Ok(b),
            _ => Err(TRUNCATED),
        }
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        match self.take(2)? {
            &[a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(TRUNCATED),
        }
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        match self.take(4)? {
            &[a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(TRUNCATED),
        }
    }

    fn varint(&mut self) -> Result<u32, CodecError> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21] {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    fn packet_id(&mut self) -> Result<u16, CodecError> {
        match self.u16()? {
            0 => Err(CodecError::Protocol("packet identifier 0")),
            id => Ok(id),
        }
    }

    /// Two-byte length, then that many bytes.
    fn prefixed(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn binary(&mut self) -> Result<Bytes, CodecError> {
        let len = usize::from(self.u16()?);
        let start = self.pos;
        self.take(len)?;
        Ok(self.frame.slice(start..self.pos))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        utf8(self.prefixed()?).map(str::to_owned)
    }

    /// Everything left, zero-copy.
    fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.end);
        self.pos = self.end;
        self.frame.slice(start..self.end)
    }
}

/// An MQTT UTF-8 string: well-formed UTF-8 without U+0000.
fn utf8(raw: &[u8]) -> Result<&str, CodecError> {
    if raw.contains(&0) {
        return Err(CodecError::InvalidUtf8);
    }
    std::str::from_utf8(raw).map_err(|_| CodecError::InvalidUtf8)
}

/// A topic name: an MQTT string without wildcards; emptiness is the caller's call (topic aliases).
fn topic_name(raw: &[u8]) -> Result<String, CodecError> {
    // One scan for U+0000 and both wildcards: all ASCII, so never inside a multi-byte sequence.
    match raw.iter().find(|&&b| matches!(b, 0 | b'+' | b'#')) {
        Some(0) => Err(CodecError::InvalidUtf8),
        Some(_) => Err(CodecError::Protocol("wildcard in a topic name")),
        None => std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| CodecError::InvalidUtf8),
    }
}

fn qos(bits: u8) -> Result<QoS, CodecError> {
    match bits {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(CodecError::Malformed("QoS 3")),
    }
}

fn read_properties(r: &mut Reader<'_>, set: PropSet) -> Result<Properties, CodecError> {
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

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends `packet` encoded for `protocol` to `out`. Fields 3.1.1 cannot carry are dropped.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), CodecError> {
    // Measure first (which also validates), then write once: the header is written before the
    // body, so the payload is copied exactly once and nothing is shifted afterwards.
    let mut counter = Counter(0);
    write_body(packet, protocol, &mut counter)?;
    let remaining = counter.0;
    if remaining > MAX_VARINT {
        return Err(CodecError::Encode("remaining length exceeds 268,435,455"));
    }
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

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => CONNECT << 4,
        Packet::ConnAck(_) => CONNACK << 4,
        Packet::Publish(p) => {
            (PUBLISH << 4) | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(_) => PUBACK << 4,
        Packet::PubRec(_) => PUBREC << 4,
        Packet::PubRel(_) => (PUBREL << 4) | 0b0010,
        Packet::PubComp(_) => PUBCOMP << 4,
        Packet::Subscribe(_) => (SUBSCRIBE << 4) | 0b0010,
        Packet::SubAck(_) => SUBACK << 4,
        Packet::Unsubscribe(_) => (UNSUBSCRIBE << 4) | 0b0010,
        Packet::UnsubAck(_) => UNSUBACK << 4,
        Packet::PingReq => PINGREQ << 4,
        Packet::PingResp => PINGRESP << 4,
        Packet::Disconnect(_) => DISCONNECT << 4,
        Packet::Auth(_) => AUTH << 4,
    }
}

/// Where encoded bytes go: the output buffer, or a counter that measures the remaining length.
trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, s: &[u8]);
}

struct Counter(usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 = self.0.saturating_add(1);
    }
    fn put_u16(&mut self, _: u16) {
        self.0 = self.0.saturating_add(2);
    }
    fn put_u32(&mut self, _: u32) {
        self.0 = self.0.saturating_add(4);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0 = self.0.saturating_add(s.len());
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

fn put_varint<W: Sink>(w: &mut W, mut v: usize) -> Result<(), CodecError> {
    if v > MAX_VARINT {
        return Err(CodecError::Encode(
            "variable byte integer exceeds 268,435,455",
        ));
    }
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        w.put_u8(b);
        if v == 0 {
            return Ok(());
        }
    }
}

fn put_binary<W: Sink>(w: &mut W, b: &[u8]) -> Result<(), CodecError> {
    let len = u16::try_from(b.len())
        .map_err(|_| CodecError::Encode("string or binary field longer than 65,535 bytes"))?;
    w.put_u16(len);
    w.put_slice(b);
    Ok(())
}

fn put_str<W: Sink>(w: &mut W, s: &str) -> Result<(), CodecError> {
    put_binary(w, s.as_bytes())
}

fn put_packet_id<W: Sink>(w: &mut W, id: u16) -> Result<(), CodecError> {
    if id == 0 {
        return Err(CodecError::Encode("packet identifier 0"));
    }
    w.put_u16(id);
    Ok(())
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
        Packet::Publish(p) => {
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

/// Property length, then the properties. A property the packet type may not carry is an error
/// rather than silently dropped: it is a bug in the caller, and the peer would refuse the packet.
fn write_properties<W: Sink>(w: &mut W, p: &Properties, set: PropSet) -> Result<(), CodecError> {
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
    use super::*;

    const MAX: usize = 1 << 20;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    /// Every property the set allows, with valid values; repeatable ones twice.
    fn full_props(set: PropSet) -> Properties {
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

    fn connect(protocol: Protocol, props: bool) -> Connect {
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

    fn ack(packet_id: u16, reason: u8, properties: Properties) -> Ack {
        Ack {
            packet_id,
            reason,
            properties,
        }
    }

    /// A sample of every packet type, with every property the type allows when `props`.
    fn samples(protocol: Protocol, props: bool) -> Vec<Packet> {
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

    fn enc(packet: &Packet, protocol: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        encode(packet, protocol, &mut out).unwrap();
        out
    }

    fn dec(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, CodecError> {
        decode(&mut BytesMut::from(bytes), protocol, MAX)
    }

    fn dec_connect(bytes: &[u8]) -> Result<Option<Connect>, CodecError> {
        decode_connect(&mut BytesMut::from(bytes), MAX)
    }

    /// Decodes `bytes`, which must hold exactly one packet.
    fn dec_one(bytes: &[u8], protocol: Protocol) -> Packet {
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
    fn stripped(packet: &Packet) -> Packet {
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

    struct VecSink<'a>(&'a mut Vec<u8>);
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
    fn out_vec(v: &mut Vec<u8>) -> VecSink<'_> {
        VecSink(v)
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

    fn raw_publish(first: u8, topic: &[u8], rest: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let len = 2 + topic.len() + rest.len();
        put_varint(&mut out_vec(&mut out), len).unwrap();
        out.extend((topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(rest);
        out
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
    fn fixed_header_flags() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let bad: &[&[u8]] = &[
                &[0x60, 0x02, 0x00, 0x01],          // PUBREL without 0b0010
                &[0x61, 0x02, 0x00, 0x01],          // PUBREL wrong flags
                &[0x80, 0x06, 0, 1, 0, 1, b'a', 0], // SUBSCRIBE without 0b0010
                &[0xA0, 0x05, 0, 1, 0, 1, b'a'],    // UNSUBSCRIBE without 0b0010
                &[0x42, 0x02, 0x00, 0x01],          // PUBACK with flags
                &[0x52, 0x02, 0x00, 0x01],          // PUBREC with flags
                &[0x72, 0x02, 0x00, 0x01],          // PUBCOMP with flags
                &[0xC1, 0x00],                      // PINGREQ with flags
                &[0xD8, 0x00],                      // PINGRESP with flags
                &[0xE2, 0x00],                      // DISCONNECT with flags
                &[0x21, 0x02, 0x00, 0x00],          // CONNACK with flags
                &[0x92, 0x03, 0x00, 0x01, 0x00],    // SUBACK with flags
                &[0x36, 0x05, 0, 1, b't', 0, 1],    // PUBLISH QoS 3
                &[0x38, 0x03, 0, 1, b't'],          // DUP on QoS 0
                &[0x00, 0x00],                      // reserved type 0
                &[0x1F, 0x00],                      // CONNECT with flags
            ];
            for bytes in bad {
                assert!(
                    matches!(dec(bytes, protocol), Err(CodecError::Malformed(_))),
                    "{bytes:02x?}"
                );
                // Refused from the first byte, before the rest arrives.
                assert!(dec(&bytes[..1], protocol).is_err(), "{bytes:02x?}");
            }
        }
        assert!(matches!(
            dec(&[0xF0, 0x00], Protocol::V311),
            Err(CodecError::Malformed(_))
        ));
        // Reserved CONNACK acknowledge flags.
        assert!(matches!(
            dec(&[0x20, 0x02, 0x02, 0x00], Protocol::V311),
            Err(CodecError::Malformed(_))
        ));
        // Body longer than a packet type allows.
        assert!(matches!(
            dec(&[0xC0, 0x01, 0x00], Protocol::V5),
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

    #[test]
    fn remaining_length() {
        let v3 = Protocol::V311;
        // Truncated: the varint is not complete yet.
        for partial in [
            &[0x30u8][..],
            &[0x30, 0x80],
            &[0x30, 0xFF, 0xFF],
            &[0x30, 0xFF, 0xFF, 0xFF],
        ] {
            let mut buf = BytesMut::from(partial);
            assert_eq!(decode(&mut buf, v3, usize::MAX), Ok(None));
            assert_eq!(buf.len(), partial.len());
        }
        // Overlong: a fifth byte would be needed.
        for overlong in [
            &[0x30u8, 0x80, 0x80, 0x80, 0x80][..],
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ] {
            assert_eq!(
                decode(&mut BytesMut::from(overlong), v3, usize::MAX),
                Err(CodecError::MalformedRemainingLength)
            );
            assert_eq!(
                decode_connect(
                    &mut BytesMut::from(&[0x10, 0x80, 0x80, 0x80, 0x80][..]),
                    usize::MAX
                ),
                Err(CodecError::MalformedRemainingLength)
            );
        }
        // The largest remaining length is accepted (and waited for).
        let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(decode(&mut buf, v3, usize::MAX), Ok(None));
        // Non-minimal encodings are tolerated.
        assert_eq!(dec_one(&[0xC0, 0x80, 0x00], v3), Packet::PingReq);
        // Remaining length shorter than the packet's fields.
        assert!(matches!(
            dec(&[0x40, 0x01, 0x00], v3),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            dec(&[0x30, 0x01, 0x00], v3),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_packet_refused_from_its_header() {
        let v5 = Protocol::V5;
        // 2 + 16_383 bytes declared; only the header is here.
        let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0x7F][..]);
        assert_eq!(
            decode(&mut buf, v5, 1000),
            Err(CodecError::PacketTooLarge {
                size: 16_386,
                max: 1000
            })
        );
        assert_eq!(buf.len(), 3, "nothing consumed");
        let mut buf = BytesMut::from(&[0x10u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(
            decode_connect(&mut buf, 65_536),
            Err(CodecError::PacketTooLarge {
                size: 268_435_460,
                max: 65_536
            })
        );
        // The limit counts the whole packet, header included.
        let publish = raw_publish(0x30, b"t", b"12345");
        assert!(dec(&publish, Protocol::V311).is_ok());
        let exact = publish.len();
        assert!(decode(&mut BytesMut::from(&publish[..]), Protocol::V311, exact).is_ok());
        assert!(matches!(
            decode(
                &mut BytesMut::from(&publish[..2]),
                Protocol::V311,
                exact - 1
            ),
            Err(CodecError::PacketTooLarge { .. })
        ));
    }

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
}
