//! MQTT 3.1.1 and 5 packet codec for untrusted input: the lowest layer of the data path, spoken
//! by the session (to devices) and by the broker link (to the embedded broker) alike.
//!
//! One packet model (the MQTT 5 superset) for both versions: a 3.1.1 packet decodes with empty
//! properties and encodes with its properties dropped. Decoding never panics on any input: every
//! length is checked before it is used, and a packet larger than the caller's limit is refused from
//! its fixed header, before its body is buffered.
//!
//! Cut along the seams of the wire format: `packet` holds the types, `frame` the fixed header
//! (packet type, flags, remaining length), `wire` the primitives both directions share (a
//! bounds-checked reader, a measuring sink, strings and variable byte integers), `properties` the
//! MQTT 5 properties, `decode` and `encode` the variable headers and payloads of every packet type.

mod decode;
mod encode;
mod filter;
mod frame;
pub mod origin;
mod packet;
mod properties;
#[cfg(test)]
mod tests;
mod wire;

pub use decode::{decode, decode_connect};
pub use encode::{encode, encoded_len, publish_len};
pub use filter::matches;
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, SubAck,
    Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

/// Why bytes could not be decoded or a packet encoded; [`CodecError::reason_code`] says what the
/// peer is told.
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
    /// The SUBACK code for a filter past a cap on subscription filters.
    pub const QUOTA_EXCEEDED: u8 = 0x97;

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
