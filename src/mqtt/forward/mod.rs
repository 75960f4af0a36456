//! The forwarding half of a session: client packets to the broker and broker packets to the
//! client, as a state machine on decoded packets. It holds what the session adds to the broker
//! on the way (topic mapping and aliases, the server's Receive Maximum, the filter caps, the
//! client's Receive Maximum window and Maximum Packet Size, subscription options and
//! identifiers, QoS downgrades, acks in the broker's order) and nothing of sockets or the broker
//! link: every method takes a packet and appends what to write to the client (bytes) and what
//! to send to the broker (packets), so it is tested on packets alone (`tests.rs`), and the
//! session's loop ([`crate::mqtt::session`]) only moves bytes and packets.
//!
//! `subscribe.rs` holds SUBSCRIBE and UNSUBSCRIBE, whose acks are merged with the filters
//! refused here.

use std::collections::{HashMap, HashSet};

use bytes::BytesMut;
use metrics::Counter;

use crate::broker::{Expiry, InFlight, InOrder, OnDemand};
use crate::codec::{
    self, origin, reason, Ack, Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS,
};
use crate::mqtt::delivery::{self, Subscriptions};
use crate::mqtt::filters::{FilterRefused, SessionFilters};
use crate::mqtt::topics::{Form, TopicMap, TopicPolicy};
use crate::mqtt::SessionError;

mod aliases;
mod subscribe;
#[cfg(test)]
mod tests;

use aliases::Aliases;
use subscribe::Slots;

/// Topic aliases a client may use (MQTT 5); they are resolved here.
pub const TOPIC_ALIAS_MAX: u16 = 64;
/// QoS 1/2 PUBLISHes an MQTT 5 client may have unacknowledged (the Receive Maximum announced in
/// CONNACK); one more is answered with DISCONNECT 0x93 (MQTT-3.3.4-8, 4.9).
pub const RECEIVE_MAXIMUM: u16 = 100;

/// The session's filter caps as the forwarder uses them: [`SessionFilters`] in a session. A
/// trait so that the forwarder can be driven on packets without the broker the caps count in.
pub trait Quota {
    /// Takes a slot for `filter` (a broker filter; `true`: newly held), or says which cap
    /// refuses it.
    fn admit(&mut self, filter: &str) -> Result<bool, FilterRefused>;
    /// Gives back the slot of `filter` (unsubscribed; `true`: it was held).
    fn release(&mut self, filter: &str) -> bool;
    /// Whether `keep` holds for every filter held.
    fn all(&self, keep: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl Quota for SessionFilters {
    fn admit(&mut self, filter: &str) -> Result<bool, FilterRefused> {
        SessionFilters::admit(self, filter)
    }

    fn release(&mut self, filter: &str) -> bool {
        SessionFilters::release(self, filter)
    }

    fn all(&self, keep: &mut dyn FnMut(&str) -> bool) -> bool {
        SessionFilters::all(self, keep)
    }
}

/// Encodes `packet` for the client; an encoding error ends the session.
pub fn encode_to(
    packet: &Packet,
    protocol: Protocol,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    codec::encode(packet, protocol, out).map_err(SessionError::ClientCodec)
}

// Only the properties MQTT 5 allows in each packet reach the broker: rumqttd closes the
// connection, without a word, on any other.

fn publish_only(properties: Properties) -> Properties {
    Properties {
        payload_format_indicator: properties.payload_format_indicator,
        message_expiry_interval: properties.message_expiry_interval,
        content_type: properties.content_type,
        response_topic: properties.response_topic,
        correlation_data: properties.correlation_data,
        user_properties: properties.user_properties,
        ..Properties::default()
    }
}

fn ack_only(ack: Ack) -> Ack {
    Ack {
        packet_id: ack.packet_id,
        reason: ack.reason,
        properties: Properties {
            reason_string: ack.properties.reason_string,
            user_properties: ack.properties.user_properties,
            ..Properties::default()
        },
    }
}

fn user_properties_only(properties: Properties) -> Properties {
    Properties {
        user_properties: properties.user_properties,
        ..Properties::default()
    }
}

/// Per-session handles on the traffic counters, resolved once.
pub struct Counters {
    pub packets_in: Counter,
    pub packets_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

impl Counters {
    fn new() -> Counters {
        use crate::metrics::{BYTES, PACKETS};
        Counters {
            packets_in: metrics::counter!(PACKETS, "direction" => "in"),
            packets_out: metrics::counter!(PACKETS, "direction" => "out"),
            bytes_in: metrics::counter!(BYTES, "direction" => "in"),
            bytes_out: metrics::counter!(BYTES, "direction" => "out"),
        }
    }
}

/// The server's rules a forwarder applies (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The largest packet a client may send (the server's Maximum Packet Size).
    pub max_packet_size: usize,
    /// Acknowledge and drop an MQTT 3.1.1 PUBLISH the topic rules refuse, rather than close.
    pub acknowledge_refused_v311: bool,
}

/// What the session does after a packet.
pub enum Flow {
    Continue,
    /// A clean end (DISCONNECT).
    Done,
}

/// One session's forwarding state (see the module documentation).
pub struct Forwarder<Q = SessionFilters> {
    protocol: Protocol,
    /// The largest packet the client may send (the server's Maximum Packet Size).
    max_packet_size: usize,
    /// An MQTT 3.1.1 PUBLISH the topic rules refuse is acknowledged and dropped instead of
    /// ending the connection (3.3.5 allows either; `mqtts.refused_publish_v311`).
    acknowledge_refused: bool,
    /// What is in flight, made with the first packet that needs it and dropped when the session
    /// is idle with nothing in it ([`Forwarder::idle`]): an idle session holds none of its tables.
    flight: OnDemand<Flight>,
    topics: TopicMap,
    /// The client's topic aliases (MQTT 5), resolved here.
    aliases: HashMap<u16, String>,
    /// The aliases given to deliveries ([`aliases`]).
    out_aliases: Aliases,
    /// The filters this session holds, under the session and organisation caps.
    filters: Q,
    /// How many of the filters held each topic policy would not keep ([`TopicMap::keeps`]), by
    /// [`TopicPolicy::index`]: counted as they come and go, so that asking costs nothing.
    outside: [u32; TopicPolicy::ALL.len()],
    /// The filters held changed since [`Forwarder::holds_changed`] was last asked.
    filters_changed: bool,
    window: delivery::Window,
    /// The session's will (if it has one) is due when it ends: false after a DISCONNECT, unless
    /// its reason was "disconnect with will message".
    will_wanted: bool,
    /// How long the session is kept after the connection ends (a DISCONNECT may change it).
    expiry: Expiry,
    /// The CONNECT's Session Expiry Interval was 0: a DISCONNECT may not raise it (3.14.2.2.2).
    zero_expiry: bool,
    client_id: String,
    /// What the client subscribed to in this connection (see [`delivery`]).
    subscriptions: delivery::Subscriptions,
    /// The client's Maximum Packet Size (MQTT 5): nothing larger is sent to it (MQTT-3.1.2-24).
    maximum_packet_size: Option<usize>,
    /// The broker's deliveries to acknowledge (PUBACK/PUBREC), in its order.
    broker_acks: InOrder,
    /// The broker's PUBRELs to complete (PUBCOMP), in its order.
    broker_comps: InOrder,
    counters: Counters,
}

/// The part of a [`Forwarder`] that packets in flight need.
#[derive(Default)]
struct Flight {
    /// Packet ids of refused QoS 2 PUBLISHes acknowledged with PUBREC (3.1.1, see above): their
    /// PUBREL is completed here.
    refused_qos2: HashSet<u16>,
    pending_subscribes: HashMap<u16, Slots>,
    pending_unsubscribes: HashMap<u16, Slots>,
    /// Packet ids of the client's QoS 1/2 PUBLISHes not yet acknowledged (its Receive Maximum
    /// quota, MQTT 5 only).
    receiving: HashSet<u16>,
    /// Broker packet ids of QoS 2 deliveries sent to the client at QoS 1: its PUBACK becomes the
    /// broker's PUBREC.
    downgraded: HashSet<u16>,
    /// Broker packet ids of QoS 2 deliveries the front-end answered with PUBREC itself (dropped
    /// or downgraded): the broker's PUBREL for them is answered here with PUBCOMP.
    released_here: HashSet<u16>,
}

impl InFlight for Flight {
    fn is_settled(&self) -> bool {
        self.refused_qos2.is_empty()
            && self.pending_subscribes.is_empty()
            && self.pending_unsubscribes.is_empty()
            && self.receiving.is_empty()
            && self.downgraded.is_empty()
            && self.released_here.is_empty()
    }
}

/// What outlives the forwarder when its connection ends: what the session decides of the broker's
/// session and the will.
pub struct Ended<Q> {
    /// How long the broker keeps the session (the CONNECT's, or a DISCONNECT's).
    pub expiry: Expiry,
    /// Whether the will is due (no DISCONNECT, or one with reason 0x04).
    pub will_wanted: bool,
    pub filters: Q,
    pub subscriptions: Subscriptions,
    /// The topic policy the session followed last (its filters were made under it).
    pub policy: TopicPolicy,
}

impl<Q: Quota> Forwarder<Q> {
    /// Drops what packets in flight needed, when nothing is in flight (the session is idle).
    pub fn idle(&mut self) {
        self.flight.idle();
    }

    /// The forwarder of a session its client opened with `connect`, as `client_id` (the bound
    /// client id's text), with `topics` its namespace, `filters` its filter caps, `subscriptions`
    /// those a resumed session kept, `expiry` the CONNECT's session expiry, and `rules` the
    /// server's own.
    pub fn new(
        connect: &Connect,
        client_id: String,
        topics: TopicMap,
        filters: Q,
        subscriptions: Subscriptions,
        expiry: Expiry,
        rules: Rules,
    ) -> Forwarder<Q> {
        let protocol = connect.protocol;
        let mut forwarder = Forwarder {
            protocol,
            max_packet_size: rules.max_packet_size,
            acknowledge_refused: rules.acknowledge_refused_v311 && protocol == Protocol::V311,
            flight: OnDemand::default(),
            topics,
            aliases: HashMap::new(),
            out_aliases: Aliases::new(connect.properties.topic_alias_maximum),
            filters,
            outside: [0; TopicPolicy::ALL.len()],
            filters_changed: true,
            window: delivery::Window::new(connect),
            will_wanted: true,
            expiry,
            zero_expiry: expiry == Expiry::Now,
            client_id,
            subscriptions,
            maximum_packet_size: match protocol {
                Protocol::V5 => connect
                    .properties
                    .maximum_packet_size
                    .and_then(|max| usize::try_from(max).ok()),
                Protocol::V311 => None,
            },
            broker_acks: InOrder::default(),
            broker_comps: InOrder::default(),
            counters: Counters::new(),
        };
        forwarder.recount();
        forwarder
    }

    /// Whether the filters held changed since this was last asked (first: since the start).
    pub fn holds_changed(&mut self) -> bool {
        std::mem::take(&mut self.filters_changed)
    }

    /// Whether every filter the session holds, and its will's topic (`will`, broker form), mean
    /// the same under `policy` ([`TopicMap::keeps`]): the session may go on under it.
    pub fn keeps_under(&self, policy: TopicPolicy, will: Option<&str>) -> bool {
        self.outside[policy.index()] == 0
            && will.is_none_or(|topic| self.keeps_topic(policy, topic))
    }

    /// Whether `topic` (broker form: the will's) means the same under `policy`.
    pub fn keeps_topic(&self, policy: TopicPolicy, topic: &str) -> bool {
        self.topics.keeps(policy, topic, Form::Topic)
    }

    /// Follows the org's new topic policy, which [`Forwarder::keeps_under`] said it may.
    pub fn set_policy(&mut self, policy: TopicPolicy) {
        self.topics.set_policy(policy);
        self.recount();
    }

    /// The session's will is not published when it ends.
    pub fn cancel_will(&mut self) {
        self.will_wanted = false;
    }

    /// Counts `filter`, newly held (`held`) or let go, among those each policy would not keep.
    fn count_outside(&mut self, filter: &str, held: bool) {
        for policy in TopicPolicy::ALL {
            if !self.topics.keeps(policy, filter, Form::Filter) {
                let count = &mut self.outside[policy.index()];
                *count = if held {
                    count.saturating_add(1)
                } else {
                    count.saturating_sub(1)
                };
            }
        }
        self.filters_changed = true;
    }

    /// Counts again every filter held (at the start: a resumed session's; after a policy change).
    fn recount(&mut self) {
        let mut outside = [0u32; TopicPolicy::ALL.len()];
        let topics = &self.topics;
        self.filters.all(&mut |filter| {
            for policy in TopicPolicy::ALL {
                if !topics.keeps(policy, filter, Form::Filter) {
                    outside[policy.index()] += 1;
                }
            }
            true
        });
        self.outside = outside;
        self.filters_changed = true;
    }

    /// The traffic counters, for the bytes the session's loop moves.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Ends the forwarding; what the session decides with at its end.
    pub fn end(self) -> Ended<Q> {
        Ended {
            expiry: self.expiry,
            will_wanted: self.will_wanted,
            filters: self.filters,
            subscriptions: self.subscriptions,
            policy: self.topics.policy(),
        }
    }

    /// An MQTT 5 client is told why it is disconnected; a 3.1.1 client just sees the close.
    pub fn disconnect(&self, code: u8, to_client: &mut BytesMut) {
        self.disconnect_saying(code, None, to_client);
    }

    /// [`Forwarder::disconnect`], with a reason string for an MQTT 5 client.
    pub fn disconnect_saying(&self, code: u8, why: Option<&str>, to_client: &mut BytesMut) {
        if self.protocol == Protocol::V5 {
            let packet = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties {
                    reason_string: why.map(str::to_owned),
                    ..Properties::default()
                },
            });
            let _ = codec::encode(&packet, Protocol::V5, to_client);
        }
    }

    /// Decodes and handles every whole packet in `buf` (what the client sent).
    pub fn client_packets(
        &mut self,
        buf: &mut BytesMut,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        loop {
            let packet = match codec::decode(buf, self.protocol, self.max_packet_size) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(Flow::Continue),
                Err(error) => {
                    self.disconnect(error.reason_code(), to_client);
                    return Err(SessionError::ClientCodec(error));
                }
            };
            self.counters.packets_in.increment(1);
            if let Flow::Done = self.client_packet(packet, to_client, to_broker)? {
                return Ok(Flow::Done);
            }
        }
    }

    /// Handles one packet from the client.
    pub fn client_packet(
        &mut self,
        packet: Packet,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        let forward = match packet {
            Packet::Publish(publish) => return self.client_publish(publish, to_client, to_broker),
            Packet::Subscribe(subscribe) => {
                return self.client_subscribe(subscribe, to_client, to_broker)
            }
            Packet::Unsubscribe(unsubscribe) => {
                return self.client_unsubscribe(unsubscribe, to_client, to_broker)
            }
            Packet::PingReq => {
                self.counters.packets_out.increment(1);
                encode_to(&Packet::PingResp, self.protocol, to_client)?;
                return Ok(Flow::Continue);
            }
            Packet::Disconnect(disconnect) => {
                if let Some(interval) = disconnect.properties.session_expiry_interval {
                    if self.zero_expiry && interval != 0 {
                        // Not a valid DISCONNECT: the will stays due.
                        return self.violation("session expiry raised from 0", to_client);
                    }
                    self.expiry = Expiry::from_interval(interval);
                }
                let disconnect = Disconnect {
                    reason: disconnect.reason,
                    properties: Properties {
                        reason_string: disconnect.properties.reason_string,
                        user_properties: disconnect.properties.user_properties,
                        ..Properties::default()
                    },
                };
                self.will_wanted = disconnect.reason == reason::DISCONNECT_WITH_WILL;
                to_broker.push(Packet::Disconnect(disconnect));
                return Ok(Flow::Done);
            }
            Packet::PubAck(ack) => {
                self.delivery_completed(to_client)?;
                let id = ack.packet_id;
                let ack = if self.flight.get().downgraded.remove(&id) {
                    self.flight.get().released_here.insert(id);
                    Packet::PubRec(ack_only(ack))
                } else {
                    Packet::PubAck(ack_only(ack))
                };
                self.broker_acks.ready(id, ack, to_broker);
                return Ok(Flow::Continue);
            }
            Packet::PubRec(ack) => {
                if ack.reason >= reason::UNSPECIFIED_ERROR {
                    self.delivery_completed(to_client)?;
                }
                let id = ack.packet_id;
                self.broker_acks
                    .ready(id, Packet::PubRec(ack_only(ack)), to_broker);
                return Ok(Flow::Continue);
            }
            Packet::PubRel(ack) if self.flight.get().refused_qos2.remove(&ack.packet_id) => {
                encode_to(&Packet::PubComp(ack), self.protocol, to_client)?;
                return Ok(Flow::Continue);
            }
            Packet::PubRel(ack) => Packet::PubRel(ack_only(ack)),
            Packet::PubComp(ack) => {
                self.delivery_completed(to_client)?;
                let id = ack.packet_id;
                self.broker_comps
                    .ready(id, Packet::PubComp(ack_only(ack)), to_broker);
                return Ok(Flow::Continue);
            }
            Packet::Auth(_) => return self.violation("AUTH is not supported", to_client),
            Packet::Connect(_) => return self.violation("second CONNECT", to_client),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return self.violation("server-only packet from a client", to_client)
            }
        };
        to_broker.push(forward);
        Ok(Flow::Continue)
    }

    /// The client finished a QoS 1/2 delivery: send the next one the window held back.
    fn delivery_completed(&mut self, to_client: &mut BytesMut) -> Result<(), SessionError> {
        match self.window.complete() {
            Some(next) => self.write(Packet::Publish(next), to_client),
            None => Ok(()),
        }
    }

    /// Writes `packet` for the client, a delivery under its topic alias.
    fn write(&mut self, mut packet: Packet, to_client: &mut BytesMut) -> Result<(), SessionError> {
        if let Packet::Publish(publish) = &mut packet {
            self.out_aliases.apply(publish);
        }
        self.counters.packets_out.increment(1);
        encode_to(&packet, self.protocol, to_client)
    }

    fn violation(
        &self,
        what: &'static str,
        to_client: &mut BytesMut,
    ) -> Result<Flow, SessionError> {
        self.disconnect(reason::PROTOCOL_ERROR, to_client);
        Err(SessionError::ClientViolation(what))
    }

    fn client_publish(
        &mut self,
        mut publish: Publish,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        if let Some(alias) = publish.properties.topic_alias.take() {
            if alias == 0 || alias > TOPIC_ALIAS_MAX {
                self.disconnect(reason::TOPIC_ALIAS_INVALID, to_client);
                return Err(SessionError::ClientViolation("topic alias out of range"));
            }
            if publish.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(topic) => publish.topic.clone_from(topic),
                    None => return self.violation("unknown topic alias", to_client),
                }
            } else {
                self.aliases.insert(alias, publish.topic.clone());
            }
        }
        match self.topics.publish(&publish.topic) {
            Ok(topic) => {
                if let Some(id) = publish.packet_id {
                    let over = self.flight.get().receiving.len() >= usize::from(RECEIVE_MAXIMUM);
                    if self.protocol == Protocol::V5
                        && over
                        && !self.flight.get().receiving.contains(&id)
                    {
                        self.disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED, to_client);
                        return Err(SessionError::ClientViolation("receive maximum exceeded"));
                    }
                    self.flight.get().receiving.insert(id);
                }
                publish.topic = topic;
                publish.properties = publish_only(publish.properties);
                let (qos, retain) = (publish.qos, publish.retain);
                origin::stamp(&mut publish.properties, qos, retain, Some(&self.client_id));
                to_broker.push(Packet::Publish(publish));
                Ok(Flow::Continue)
            }
            Err(_) => {
                metrics::counter!(crate::metrics::TOPICS_REFUSED, "kind" => "publish").increment(1);
                let refused_ack = |packet_id| Ack {
                    packet_id,
                    reason: reason::NOT_AUTHORIZED,
                    properties: Properties::default(),
                };
                match (self.protocol, publish.qos, publish.packet_id) {
                    (Protocol::V5, QoS::AtLeastOnce, Some(id)) => {
                        encode_to(&Packet::PubAck(refused_ack(id)), Protocol::V5, to_client)?;
                        Ok(Flow::Continue)
                    }
                    (Protocol::V5, QoS::ExactlyOnce, Some(id)) => {
                        encode_to(&Packet::PubRec(refused_ack(id)), Protocol::V5, to_client)?;
                        Ok(Flow::Continue)
                    }
                    (Protocol::V311, qos, packet_id) if self.acknowledge_refused => {
                        let accepted = |packet_id| Ack {
                            packet_id,
                            reason: reason::SUCCESS,
                            properties: Properties::default(),
                        };
                        let ack = match (qos, packet_id) {
                            (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(accepted(id))),
                            (QoS::ExactlyOnce, Some(id)) => {
                                self.flight.get().refused_qos2.insert(id);
                                Some(Packet::PubRec(accepted(id)))
                            }
                            _ => None,
                        };
                        if let Some(ack) = ack {
                            encode_to(&ack, Protocol::V311, to_client)?;
                        }
                        Ok(Flow::Continue)
                    }
                    _ => {
                        self.disconnect(reason::NOT_AUTHORIZED, to_client);
                        Err(SessionError::TopicRefused)
                    }
                }
            }
        }
    }

    /// Handles the packets the broker sent (`packets` is left empty).
    pub fn broker_packets(
        &mut self,
        packets: &mut Vec<Packet>,
        to_client: &mut BytesMut,
        to_broker: &mut Vec<Packet>,
    ) -> Result<Flow, SessionError> {
        for packet in packets.drain(..) {
            let to_send = match packet {
                Packet::Publish(publish) => self.delivery(publish, to_broker),
                Packet::SubAck(suback) => Some(self.merge_suback(suback)),
                Packet::UnsubAck(unsuback) => Some(self.merge_unsuback(unsuback)),
                Packet::Disconnect(disconnect) => {
                    if self.protocol == Protocol::V5 {
                        encode_to(&Packet::Disconnect(disconnect), Protocol::V5, to_client)?;
                    }
                    return Err(SessionError::BrokerClosed);
                }
                Packet::PubAck(ack) => {
                    self.flight.get().receiving.remove(&ack.packet_id);
                    Some(Packet::PubAck(ack))
                }
                Packet::PubRec(ack) => {
                    if ack.reason >= reason::UNSPECIFIED_ERROR {
                        self.flight.get().receiving.remove(&ack.packet_id);
                    }
                    Some(Packet::PubRec(ack))
                }
                Packet::PubComp(ack) => {
                    self.flight.get().receiving.remove(&ack.packet_id);
                    Some(Packet::PubComp(ack))
                }
                Packet::PubRel(ack) => {
                    self.broker_comps.expect(ack.packet_id);
                    if self.flight.get().released_here.remove(&ack.packet_id) {
                        let id = ack.packet_id;
                        self.broker_comps
                            .ready(id, Packet::PubComp(ack_only(ack)), to_broker);
                        None
                    } else {
                        Some(Packet::PubRel(ack))
                    }
                }
                // The link hands over nothing else (see `broker::from_router`).
                _ => None,
            };
            let to_send = to_send
                .and_then(|packet| delivery::fit(packet, self.protocol, self.maximum_packet_size));
            if let Some(packet) = to_send {
                self.write(packet, to_client)?;
            }
        }
        Ok(Flow::Continue)
    }

    /// A broker delivery, mapped back into the client's view and judged against the session's
    /// subscriptions ([`delivery`]). One the client does not get — outside its view (impossible
    /// by construction of the filters), unwanted by its subscription options, or larger than its
    /// Maximum Packet Size (3.1.2.25: discarded as if delivered) — is settled with the broker
    /// here.
    fn delivery(&mut self, mut publish: Publish, to_broker: &mut Vec<Packet>) -> Option<Packet> {
        let origin = origin::take(&mut publish.properties);
        let sent_qos = publish.qos;
        if let (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) = (sent_qos, publish.packet_id) {
            self.broker_acks.expect(id);
        }
        let Some(topic) = self.topics.deliver(&publish.topic) else {
            tracing::warn!(topic = %publish.topic, "delivery outside the client's view dropped");
            self.settle(sent_qos, publish.packet_id, to_broker);
            return None;
        };
        let plan = self.subscriptions.plan(
            &publish.topic,
            sent_qos,
            publish.retain,
            origin.as_ref(),
            &self.client_id,
        );
        let Some(plan) = plan else {
            self.settle(sent_qos, publish.packet_id, to_broker);
            return None;
        };
        publish.topic = topic;
        publish.properties.topic_alias = None;
        publish.retain = plan.retain;
        publish.properties.subscription_identifiers = plan.identifiers;
        if let Some(maximum) = self.maximum_packet_size {
            let fits = codec::publish_len(&publish, self.protocol).is_ok_and(|len| len <= maximum);
            if !fits {
                self.settle(sent_qos, publish.packet_id, to_broker);
                return None;
            }
        }
        match (sent_qos, plan.qos, publish.packet_id) {
            (QoS::ExactlyOnce, QoS::AtLeastOnce, Some(id)) => {
                self.flight.get().downgraded.insert(id);
            }
            (_, QoS::AtMostOnce, id @ Some(_)) => {
                self.settle(sent_qos, id, to_broker);
                publish.packet_id = None;
            }
            _ => {}
        }
        publish.qos = plan.qos;
        self.window.admit(publish).map(Packet::Publish)
    }

    /// Acknowledges a delivery to the broker as if the client had received it (after every
    /// earlier one: [`InOrder`]).
    fn settle(&mut self, qos: QoS, packet_id: Option<u16>, to_broker: &mut Vec<Packet>) {
        let ack = |packet_id| Ack {
            packet_id,
            reason: 0,
            properties: Properties::default(),
        };
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.broker_acks
                    .ready(id, Packet::PubAck(ack(id)), to_broker)
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.flight.get().released_here.insert(id);
                self.broker_acks
                    .ready(id, Packet::PubRec(ack(id)), to_broker);
            }
            _ => {}
        }
    }
}
