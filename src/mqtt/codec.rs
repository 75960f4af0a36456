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
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;

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
    let s = utf8(raw)?;
    if raw.iter().any(|&b| b == b'+' || b == b'#') {
        return Err(CodecError::Protocol("wildcard in a topic name"));
    }
    Ok(s.to_owned())
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
