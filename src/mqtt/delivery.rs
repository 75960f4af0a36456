//! What the front-end adds to each delivery that rumqttd 0.20 leaves out: the client's Receive
//! Maximum ([`Window`]), the subscription options rumqttd ignores (No Local, Retain As Published,
//! Retain Handling 2), delivery at the lower of the publish QoS and the subscription QoS, the
//! subscription identifiers of every matching subscription (MQTT 5 §3.8.3.1, §3.3.4,
//! §3.3.2.3.8), and the client's Maximum Packet Size ([`fit`]).
//!
//! Why it can be done here: every message reaches the broker through a session (or a will) of
//! this front-end, which stamps it with its [`Origin`] (`codec::origin`) — the publisher's QoS and RETAIN flag in
//! the payload format indicator, its client id in a user property when No Local may need it (see
//! [`crate::codec::origin::stamp`]) — which the broker carries untouched, and which is taken off again before any client
//! sees the message (a client's own property of that name is dropped on the way in). Each session keeps its own [`Subscriptions`] (broker filter, options, identifier), so
//! a delivery is judged against the subscriptions it matches. rumqttd sends one copy per
//! matching filter and does not say which: a copy is kept when any matching subscription wants
//! it, so overlapping subscriptions with different options are honoured as a whole, not copy by
//! copy (README, conformance).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::codec::origin::{NoLocal, Origin};
use crate::codec::{
    self, matches, Connect, Packet, Properties, Protocol, Publish, QoS, SubscriptionOptions,
};

/// What a subscription asks beyond what the broker does itself.
#[derive(Debug, Clone)]
struct Special {
    options: SubscriptionOptions,
    identifier: Option<u32>,
    /// Held while this is a No Local subscription.
    _no_local: Option<NoLocal>,
}

/// The session's subscriptions, by broker filter (`<org>/…`, or `$share/<group>/<org>/…`): a new
/// SUBSCRIBE of a filter replaces it (MQTT-3.8.4-3). Most subscriptions ask nothing the broker
/// does not do ("plain"); only the others are looked at for every delivery, so a session with
/// many plain filters costs no more per message than one with none.
#[derive(Debug, Default, Clone)]
pub struct Subscriptions {
    plain: HashSet<String>,
    special: HashMap<String, Special>,
}

/// How one delivery goes to the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub qos: QoS,
    pub retain: bool,
    pub identifiers: Vec<u32>,
}

impl Subscriptions {
    pub fn insert(
        &mut self,
        filter: String,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) {
        self.remove(&filter);
        let plain = !options.no_local
            && !options.retain_as_published
            && options.retain_handling != 2
            && identifier.is_none();
        if plain {
            self.plain.insert(filter);
        } else {
            let special = Special {
                options,
                identifier,
                _no_local: options.no_local.then(NoLocal::held),
            };
            self.special.insert(filter, special);
        }
    }

    /// Whether any subscription asks more than the broker does: a kept session without one
    /// needs nothing kept for its resume.
    pub fn asks_more(&self) -> bool {
        !self.special.is_empty()
    }

    pub fn remove(&mut self, filter: &str) {
        self.plain.remove(filter);
        self.special.remove(filter);
    }

    /// How a delivery the broker sent at `qos` with `retain` on `topic` (a broker topic) goes to
    /// the client of `client_id`; `None`: not at all (it is settled as if delivered).
    ///
    /// A subscription that does not want it: No Local and the client's own message (3.8.3.1), or
    /// Retain Handling 2 and a retained message sent because of the subscription (the broker
    /// marks those RETAIN, and clears RETAIN on every live message). A session that matches none
    /// of its known subscriptions (one resumed from an earlier connection) gets what the broker
    /// sent, at the lower QoS.
    pub fn plan(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        origin: Option<&Origin>,
        client_id: &str,
    ) -> Option<Plan> {
        let own = origin.is_some_and(|o| o.client_id.as_deref() == Some(client_id));
        let mut refused = false;
        let mut wanted = Vec::new();
        for (filter, special) in &self.special {
            if !matches(filter, topic) {
                continue;
            }
            let options = &special.options;
            if (own && options.no_local) || (retain && options.retain_handling == 2) {
                refused = true;
                continue;
            }
            wanted.push(special);
        }
        // Refused by every special match: still wanted by a plain one that matches?
        if refused && wanted.is_empty() && !self.plain.iter().any(|f| matches(f, topic)) {
            return None;
        }
        let published_retained = origin.is_some_and(|o| o.retain);
        let retain_as_published = wanted.iter().any(|e| e.options.retain_as_published);
        let mut identifiers: Vec<u32> = wanted.iter().filter_map(|e| e.identifier).collect();
        identifiers.sort_unstable();
        identifiers.dedup();
        Some(Plan {
            qos: origin.map_or(qos, |o| qos.min(o.qos)),
            retain: retain || (retain_as_published && published_retained),
            identifiers,
        })
    }
}

/// `packet` as it may go to a client whose Maximum Packet Size is `maximum`: `None` when even
/// without its reason string and user properties (the properties the server may drop, 3.1.2.25)
/// it is larger. A PUBLISH is never trimmed: its user properties are the application's.
pub fn fit(packet: Packet, protocol: Protocol, maximum: Option<usize>) -> Option<Packet> {
    let Some(maximum) = maximum else {
        return Some(packet);
    };
    let size = |packet: &Packet| codec::encoded_len(packet, protocol).unwrap_or(usize::MAX);
    if size(&packet) <= maximum {
        return Some(packet);
    }
    let trimmed = match packet {
        Packet::Publish(_) => return None,
        Packet::PubAck(ack) => Packet::PubAck(trim_ack(ack)),
        Packet::PubRec(ack) => Packet::PubRec(trim_ack(ack)),
        Packet::PubRel(ack) => Packet::PubRel(trim_ack(ack)),
        Packet::PubComp(ack) => Packet::PubComp(trim_ack(ack)),
        Packet::SubAck(mut ack) => {
            trim(&mut ack.properties);
            Packet::SubAck(ack)
        }
        Packet::UnsubAck(mut ack) => {
            trim(&mut ack.properties);
            Packet::UnsubAck(ack)
        }
        Packet::Disconnect(mut disconnect) => {
            trim(&mut disconnect.properties);
            Packet::Disconnect(disconnect)
        }
        other => other,
    };
    (size(&trimmed) <= maximum).then_some(trimmed)
}

fn trim(properties: &mut Properties) {
    properties.reason_string = None;
    properties.user_properties.clear();
}

fn trim_ack(mut ack: codec::Ack) -> codec::Ack {
    trim(&mut ack.properties);
    ack
}

/// The client's Receive Maximum (MQTT 5): QoS 1/2 deliveries it has not acknowledged yet are
/// counted, and further ones wait here. rumqttd ignores Receive Maximum (it keeps up to 100
/// deliveries in flight), so without this a client asking for fewer would be overrun. The queue
/// is bounded by the broker's own window.
pub struct Window {
    receive_maximum: u16,
    in_flight: u16,
    waiting: VecDeque<Publish>,
}

impl Window {
    pub fn new(connect: &Connect) -> Window {
        let receive_maximum = match connect.protocol {
            Protocol::V5 => connect.properties.receive_maximum.unwrap_or(u16::MAX),
            Protocol::V311 => u16::MAX,
        };
        Window {
            receive_maximum,
            in_flight: 0,
            waiting: VecDeque::new(),
        }
    }

    /// The delivery to send now, if the window has room; else it waits.
    pub fn admit(&mut self, publish: Publish) -> Option<Publish> {
        if publish.qos == QoS::AtMostOnce {
            return Some(publish);
        }
        if self.in_flight < self.receive_maximum && self.waiting.is_empty() {
            self.in_flight += 1;
            return Some(publish);
        }
        self.waiting.push_back(publish);
        None
    }

    /// A QoS 1/2 delivery completed (PUBACK, PUBCOMP, or a failed PUBREC): the next waiting one,
    /// if any, may go.
    pub fn complete(&mut self) -> Option<Publish> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight < self.receive_maximum {
            let next = self.waiting.pop_front()?;
            self.in_flight += 1;
            return Some(next);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::origin::{stamp, take, ORIGIN};
    fn options(no_local: bool, rap: bool, rh: u8) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local,
            retain_as_published: rap,
            retain_handling: rh,
        }
    }

    fn origin(qos: QoS, retain: bool, client_id: &str) -> Origin {
        Origin {
            qos,
            retain,
            client_id: Some(client_id.to_owned()),
        }
    }

    /// The tests that hold No Local subscriptions or depend on there being none (the count is the
    /// process's) run one at a time.
    static COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn counted() -> std::sync::MutexGuard<'static, ()> {
        COUNT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn the_stamp_survives_and_a_forged_one_is_replaced() {
        let _count = counted();
        let mut subs = Subscriptions::default();
        subs.insert("o/t".into(), options(true, false, 0), None);
        for format in [None, Some(0), Some(1)] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for retain in [false, true] {
                    let mut properties = Properties {
                        payload_format_indicator: format,
                        user_properties: vec![
                            ("a".into(), "1".into()),
                            (ORIGIN.into(), "00forged".into()),
                        ],
                        ..Properties::default()
                    };
                    stamp(&mut properties, qos, retain, Some("d:acme:sensor:dev1"));
                    let mine = origin(qos, retain, "d:acme:sensor:dev1");
                    assert_eq!(take(&mut properties), Some(mine));
                    assert_eq!(properties.user_properties, vec![("a".into(), "1".into())]);
                    assert_eq!(properties.payload_format_indicator, format);
                    assert_eq!(take(&mut properties), None);
                }
            }
        }
        let mut will = Properties::default();
        stamp(&mut will, QoS::AtLeastOnce, true, None);
        let taken = take(&mut will).map(|o| (o.qos, o.retain, o.client_id));
        assert_eq!(taken, Some((QoS::AtLeastOnce, true, None)));
        // Not ours: a client's indicator, a client's property of the stamp's name.
        let mut bad = Properties {
            payload_format_indicator: Some(1),
            user_properties: vec![(ORIGIN.into(), "9x".into())],
            ..Properties::default()
        };
        assert_eq!(take(&mut bad), None);
        assert!(bad.user_properties.is_empty());
        assert_eq!(bad.payload_format_indicator, Some(1));
    }

    #[test]
    fn without_no_local_subscriptions_a_live_message_carries_no_user_property() {
        let _count = counted();
        let mut properties = Properties::default();
        stamp(
            &mut properties,
            QoS::AtMostOnce,
            false,
            Some("d:acme:sensor:dev1"),
        );
        assert!(
            properties.user_properties.is_empty(),
            "the broker copies a user property with three allocations per copy"
        );
        // A retained one does: a No Local subscription made later may receive it.
        let mut retained = Properties::default();
        stamp(
            &mut retained,
            QoS::AtMostOnce,
            true,
            Some("d:acme:sensor:dev1"),
        );
        let origin = take(&mut retained).and_then(|o| o.client_id);
        assert_eq!(origin.as_deref(), Some("d:acme:sensor:dev1"));
        // While a No Local subscription is held (a clone too), every message does.
        let mut subs = Subscriptions::default();
        subs.insert("o/t".into(), options(true, false, 0), None);
        let kept = subs.clone();
        drop(subs);
        let mut live = Properties::default();
        stamp(
            &mut live,
            QoS::AtMostOnce,
            false,
            Some("d:acme:sensor:dev1"),
        );
        assert_eq!(live.user_properties.len(), 1);
        drop(kept);
        let mut after = Properties::default();
        stamp(
            &mut after,
            QoS::AtMostOnce,
            false,
            Some("d:acme:sensor:dev1"),
        );
        assert!(after.user_properties.is_empty());
    }

    #[test]
    fn a_plan_follows_the_subscription_options() {
        let _count = counted();
        let mut subs = Subscriptions::default();
        subs.insert("o/t".into(), options(true, false, 0), Some(7));
        let me = "d:o:s:me";
        let own = origin(QoS::AtLeastOnce, false, me);
        let other = origin(QoS::AtMostOnce, true, "d:o:s:other");
        // No Local drops the client's own message, not another's.
        assert_eq!(
            subs.plan("o/t", QoS::ExactlyOnce, false, Some(&own), me),
            None
        );
        let plan = subs.plan("o/t", QoS::ExactlyOnce, false, Some(&other), me);
        assert_eq!(
            plan,
            Some(Plan {
                qos: QoS::AtMostOnce,
                retain: false,
                identifiers: vec![7],
            })
        );
        // A second matching subscription without No Local keeps it, with its identifier only.
        subs.insert("o/+".into(), options(false, true, 2), Some(3));
        let plan = subs
            .plan("o/t", QoS::AtLeastOnce, false, Some(&own), me)
            .unwrap();
        assert_eq!((plan.qos, plan.identifiers), (QoS::AtLeastOnce, vec![3]));
        // Retain As Published keeps the publisher's RETAIN on a live delivery.
        let plan = subs
            .plan("o/t", QoS::AtLeastOnce, false, Some(&other), me)
            .unwrap();
        assert!(plan.retain);
        // Retain Handling 2 on every match: the retained copy sent at subscribe is dropped.
        subs.remove("o/t");
        assert_eq!(
            subs.plan("o/t", QoS::AtLeastOnce, true, Some(&other), me),
            None
        );
        // Unknown subscriptions (a resumed session): as the broker sent it, at the lower QoS.
        let plan = subs
            .plan("x/y", QoS::ExactlyOnce, true, Some(&own), me)
            .unwrap();
        assert_eq!((plan.qos, plan.retain), (QoS::AtLeastOnce, true));
    }

    #[test]
    fn oversized_packets_lose_their_reason_string_or_are_dropped() {
        let suback = Packet::SubAck(codec::SubAck {
            packet_id: 1,
            codes: vec![0],
            properties: Properties {
                reason_string: Some("x".repeat(100)),
                ..Properties::default()
            },
        });
        let fitted = fit(suback.clone(), Protocol::V5, Some(20)).unwrap();
        let Packet::SubAck(ack) = fitted else {
            panic!("not a SUBACK")
        };
        assert_eq!(ack.properties.reason_string, None);
        assert_eq!(fit(suback.clone(), Protocol::V5, None), Some(suback));
        let publish = Packet::Publish(codec::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Properties::default(),
            payload: bytes::Bytes::from(vec![0u8; 100]),
        });
        assert_eq!(fit(publish, Protocol::V5, Some(50)), None);
    }

    #[test]
    fn the_window_holds_deliveries_beyond_the_clients_receive_maximum() {
        let connect = Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
            properties: Properties {
                receive_maximum: Some(1),
                ..Properties::default()
            },
        };
        let mut window = Window::new(&connect);
        let message = |qos, id| Publish {
            dup: false,
            qos,
            retain: false,
            topic: "t".into(),
            packet_id: id,
            properties: Properties::default(),
            payload: bytes::Bytes::new(),
        };
        assert!(window.admit(message(QoS::AtLeastOnce, Some(1))).is_some());
        assert!(window.admit(message(QoS::AtLeastOnce, Some(2))).is_none());
        assert!(window.admit(message(QoS::AtMostOnce, None)).is_some());
        assert_eq!(window.complete().and_then(|p| p.packet_id), Some(2));
        assert!(window.complete().is_none());
    }
}
