//! Feeds arbitrary bytes to the MQTT codec: no input may panic it, and whatever it decodes must
//! encode back to a packet that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portcullis::codec::{decode, decode_connect, encode, Packet, Protocol};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a size limit, so the PacketTooLarge path is exercised too.
    let Some((&limit, input)) = data.split_first() else {
        return;
    };
    let max_size = if limit == 0 {
        usize::MAX
    } else {
        usize::from(limit) * 64
    };

    let mut buf = BytesMut::from(input);
    let before = buf.len();
    if let Ok(None) = decode_connect(&mut buf, max_size) {
        assert_eq!(buf.len(), before, "incomplete CONNECT consumed bytes");
    }

    for protocol in [Protocol::V311, Protocol::V5] {
        let mut buf = BytesMut::from(input);
        loop {
            let before = buf.len();
            match decode(&mut buf, protocol, max_size) {
                Ok(Some(packet)) => check_round_trip(&packet, protocol),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "incomplete packet consumed bytes");
                    break;
                }
                Err(_) => break,
            }
        }
    }
});

fn check_round_trip(packet: &Packet, protocol: Protocol) {
    // A CONNECT carries its own protocol level.
    let protocol = match packet {
        Packet::Connect(c) => c.protocol,
        _ => protocol,
    };
    let mut out = BytesMut::new();
    encode(packet, protocol, &mut out).expect("a decoded packet encodes");
    let again = decode(&mut out, protocol, usize::MAX)
        .expect("an encoded packet decodes")
        .expect("an encoded packet is complete");
    assert_eq!(&again, packet);
    assert!(out.is_empty());
}
