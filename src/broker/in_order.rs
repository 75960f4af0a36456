//! Acknowledgements in the order rumqttd 0.20 takes them: a fact of the broker, kept behind it.

use std::collections::VecDeque;

use crate::codec::Packet;

/// Acknowledgements handed to the broker in the order it expects them. rumqttd 0.20 takes the
/// PUBACKs and PUBRECs of its deliveries to a link only in the order it sent them, and the
/// PUBCOMPs in the order it sent its PUBRELs; an ack out of that order ends the link. The client
/// may answer in any order, and the front-end settles some deliveries itself (one the client
/// does not get, or gets at QoS 0), so each ack waits here until every earlier one is ready.
#[derive(Default)]
pub struct InOrder {
    /// Packet ids in the broker's order, with the ack once it is ready.
    expected: VecDeque<(u16, Option<Packet>)>,
}

impl InOrder {
    /// The broker sent something with `packet_id` that it wants acknowledged.
    pub fn expect(&mut self, packet_id: u16) {
        self.expected.push_back((packet_id, None));
    }

    /// `ack` (for `packet_id`) is ready: it goes to `out` once every earlier one has gone. An ack
    /// for nothing expected goes at once (the broker judges it).
    pub fn ready(&mut self, packet_id: u16, ack: Packet, out: &mut Vec<Packet>) {
        let slot = self
            .expected
            .iter_mut()
            .find(|(id, ready)| *id == packet_id && ready.is_none());
        match slot {
            Some((_, ready)) => *ready = Some(ack),
            None => out.push(ack),
        }
        while self
            .expected
            .front()
            .is_some_and(|(_, ready)| ready.is_some())
        {
            if let Some((_, Some(ack))) = self.expected.pop_front() {
                out.push(ack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, Properties};

    #[test]
    fn acks_reach_the_broker_in_the_order_it_sent() {
        let ack = |packet_id| {
            Packet::PubAck(codec::Ack {
                packet_id,
                reason: 0,
                properties: Properties::default(),
            })
        };
        let ids = |out: &[Packet]| -> Vec<u16> {
            out.iter()
                .map(|p| match p {
                    Packet::PubAck(a) => a.packet_id,
                    _ => 0,
                })
                .collect()
        };
        let mut order = InOrder::default();
        let mut out = Vec::new();
        for id in [1, 2, 3] {
            order.expect(id);
        }
        order.ready(3, ack(3), &mut out);
        order.ready(2, ack(2), &mut out);
        assert!(out.is_empty(), "acks went before the first one was ready");
        order.ready(1, ack(1), &mut out);
        assert_eq!(ids(&out), vec![1, 2, 3]);
        order.ready(9, ack(9), &mut out);
        assert_eq!(
            ids(&out),
            vec![1, 2, 3, 9],
            "an unexpected ack goes at once"
        );
    }
}
