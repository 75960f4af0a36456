//! The fixed header every packet opens with: packet type, flags and remaining length. The first
//! byte alone is checked before anything else and the size limit applies as soon as the remaining
//! length is readable, so garbage and oversized packets are refused before their bodies are
//! buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::{CodecError, Packet, Protocol};

// Packet types (MQTT 5 §2.1.2).
pub(super) const CONNECT: u8 = 1;
pub(super) const CONNACK: u8 = 2;
pub(super) const PUBLISH: u8 = 3;
pub(super) const PUBACK: u8 = 4;
pub(super) const PUBREC: u8 = 5;
pub(super) const PUBREL: u8 = 6;
pub(super) const PUBCOMP: u8 = 7;
pub(super) const SUBSCRIBE: u8 = 8;
pub(super) const SUBACK: u8 = 9;
pub(super) const UNSUBSCRIBE: u8 = 10;
pub(super) const UNSUBACK: u8 = 11;
pub(super) const PINGREQ: u8 = 12;
pub(super) const PINGRESP: u8 = 13;
pub(super) const DISCONNECT: u8 = 14;
pub(super) const AUTH: u8 = 15;

/// Checks the packet type and the fixed-header flags, which MQTT fixes for every type but PUBLISH.
pub(super) fn check_first_byte(first: u8, protocol: Protocol) -> Result<(), CodecError> {
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
pub(super) fn take_frame(buf: &mut BytesMut, max_size: usize) -> Result<Option<Bytes>, CodecError> {
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

pub(super) fn first_byte(packet: &Packet) -> u8 {
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::codec::tests::*;
    use crate::codec::{decode, decode_connect, CodecError, Packet, Protocol};

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
}
