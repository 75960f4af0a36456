//! SUBSCRIBE and UNSUBSCRIBE through the forwarder: each filter is mapped into the org's
//! namespace and counted against the caps; those refused here are answered here, the others
//! forwarded, and the broker's SUBACK/UNSUBACK (which covers the forwarded filters only) is
//! merged back with the refused ones in their places.

use bytes::BytesMut;

use super::{encode_to, user_properties_only, Flow, Forwarder, Quota};
use crate::codec::{
    reason, Packet, Properties, Protocol, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::mqtt::SessionError;

/// Where each filter of a forwarded SUBSCRIBE or UNSUBSCRIBE went: `Ok(i)` is its index in the
/// forwarded packet, `Err(code)` was refused here with that code.
pub type Slots = Vec<Result<usize, u8>>;

impl<Q: Quota> Forwarder<Q> {
    /// The code for a filter refused here.
    fn refused_filter_code(&self) -> u8 {
        match self.protocol {
            Protocol::V311 => reason::V311_SUBACK_FAILURE,
            Protocol::V5 => reason::NOT_AUTHORIZED,
        }
    }

    /// The code for a filter past a cap (see [`crate::mqtt::filters`]).
    fn quota_filter_code(&self) -> u8 {
        match self.protocol {
            Protocol::V311 => reason::V311_SUBACK_FAILURE,
            Protocol::V5 => reason::QUOTA_EXCEEDED,
        }
    }

    pub(super) fn client_subscribe(
        &mut self,
        subscribe: Subscribe,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        // The codec refused identifier 0 (a protocol error) already.
        let identifier = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut slots = Vec::with_capacity(subscribe.subscriptions.len());
        let mut forwarded = Vec::with_capacity(subscribe.subscriptions.len());
        for mut subscription in subscribe.subscriptions {
            match self.topics.filter(&subscription.filter) {
                Ok(filter) => match self.filters.admit(&filter) {
                    Ok(added) => {
                        if added {
                            self.count_outside(&filter, true);
                        }
                        subscription.filter = filter;
                        slots.push(Ok(forwarded.len()));
                        forwarded.push(subscription);
                    }
                    Err(_) => slots.push(Err(self.quota_filter_code())),
                },
                Err(_) => {
                    metrics::counter!(crate::metrics::TOPICS_REFUSED, "kind" => "filter")
                        .increment(1);
                    slots.push(Err(self.refused_filter_code()));
                }
            }
        }
        if forwarded.is_empty() {
            let suback = SubAck {
                packet_id: subscribe.packet_id,
                codes: slots.iter().map(|slot| slot.err().unwrap_or(0)).collect(),
                properties: Properties::default(),
            };
            encode_to(&Packet::SubAck(suback), self.protocol, to_client)?;
            return Ok(Flow::Continue);
        }
        for subscription in &forwarded {
            let filter = subscription.filter.clone();
            self.subscriptions
                .insert(filter, subscription.options, identifier);
        }
        self.flight
            .get()
            .pending_subscribes
            .insert(subscribe.packet_id, slots);
        let packet = Packet::Subscribe(Subscribe {
            packet_id: subscribe.packet_id,
            subscriptions: forwarded,
            properties: user_properties_only(subscribe.properties),
        });
        to_broker.push(packet);
        Ok(Flow::Continue)
    }

    pub(super) fn client_unsubscribe(
        &mut self,
        unsubscribe: Unsubscribe,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        let mut slots = Vec::with_capacity(unsubscribe.filters.len());
        let mut forwarded = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            match self.topics.filter(filter) {
                Ok(filter) => {
                    if self.filters.release(&filter) {
                        self.count_outside(&filter, false);
                    }
                    slots.push(Ok(forwarded.len()));
                    forwarded.push(filter);
                }
                Err(_) => slots.push(Err(reason::NOT_AUTHORIZED)),
            }
        }
        if forwarded.is_empty() {
            let codes = match self.protocol {
                Protocol::V311 => Vec::new(),
                Protocol::V5 => vec![reason::NOT_AUTHORIZED; slots.len()],
            };
            let unsuback = UnsubAck {
                packet_id: unsubscribe.packet_id,
                codes,
                properties: Properties::default(),
            };
            encode_to(&Packet::UnsubAck(unsuback), self.protocol, to_client)?;
            return Ok(Flow::Continue);
        }
        for filter in &forwarded {
            self.subscriptions.remove(filter);
        }
        self.flight
            .get()
            .pending_unsubscribes
            .insert(unsubscribe.packet_id, slots);
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: unsubscribe.packet_id,
            filters: forwarded,
            properties: user_properties_only(unsubscribe.properties),
        });
        to_broker.push(packet);
        Ok(Flow::Continue)
    }

    /// The broker's SUBACK covers the forwarded filters only: put the refused ones back in place,
    /// and translate codes for 3.1.1 (any failure is 0x80 there).
    pub(super) fn merge_suback(&mut self, suback: SubAck) -> Packet {
        // rumqttd grants every filter it is handed (an invalid one ends the link instead).
        let refused = self.refused_filter_code();
        let translate = |code: u8| match self.protocol {
            Protocol::V311 if code >= reason::V311_SUBACK_FAILURE => reason::V311_SUBACK_FAILURE,
            _ => code,
        };
        let codes = match self
            .flight
            .get()
            .pending_subscribes
            .remove(&suback.packet_id)
        {
            Some(slots) => slots
                .iter()
                .map(|slot| match slot {
                    Ok(i) => suback.codes.get(*i).copied().map_or(refused, translate),
                    Err(code) => *code,
                })
                .collect(),
            None => suback.codes.iter().copied().map(translate).collect(),
        };
        Packet::SubAck(SubAck {
            packet_id: suback.packet_id,
            codes,
            properties: suback.properties,
        })
    }

    pub(super) fn merge_unsuback(&mut self, unsuback: UnsubAck) -> Packet {
        let slots = self
            .flight
            .get()
            .pending_unsubscribes
            .remove(&unsuback.packet_id);
        let codes = match (self.protocol, slots) {
            (Protocol::V311, _) => Vec::new(),
            (Protocol::V5, Some(slots)) => slots
                .iter()
                .map(|slot| match slot {
                    Ok(i) => unsuback.codes.get(*i).copied().unwrap_or(0),
                    Err(code) => *code,
                })
                .collect(),
            (Protocol::V5, None) => unsuback.codes,
        };
        Packet::UnsubAck(UnsubAck {
            packet_id: unsuback.packet_id,
            codes,
            properties: unsuback.properties,
        })
    }
}
