//! The link's half of coarse filters ([`super::coarse`]): it rewrites what passes between a
//! session and the router so that the session sees what the router would have sent had it held
//! the session's real filters.
//!
//! - SUBSCRIBE: a filter under a coarse one is granted here at the QoS asked; the coarse filter is
//!   subscribed (QoS 2) by a SUBSCRIBE of the link's own when the session does not hold it yet.
//!   The rest goes to the router, and its SUBACK is merged back in order.
//! - UNSUBSCRIBE: likewise; the last real filter under a coarse one unsubscribes the coarse one.
//! - A delivery under a coarse filter goes on only when a filter of the session matches it, at
//!   no more than the highest QoS of those that match, once (MQTT 5 §3.3.4). What the session does
//!   not get, or gets at a lower QoS, is settled with the router here; rumqttd takes acks only in
//!   the order it sent its deliveries, so every ack goes through [`InOrder`], as the session's do.
//! - Retained messages the router would not send (rumqttd sends them only on a filter's first
//!   SUBSCRIBE for the session, and ignores Retain Handling): for a new real filter under a coarse
//!   filter the router already holds for the session, and for a SUBSCRIBE with Retain Handling 0
//!   of a filter the session holds already (MQTT 5 §3.8.3.1, 3.1.1 §3.8.4), are fetched by the
//!   link (see [`super::link`]) and handed to the session as the link's own deliveries, with
//!   packet ids of their own ([`OWN_IDS`]) whose acks end here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::RangeInclusive;

use super::coarse::{Table, Verdict};
use crate::broker::{InFlight, InOrder, OnDemand};
use crate::codec::{
    reason, Ack, Packet, Properties, Publish, QoS, SubAck, Subscribe, Subscription,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// Packet id of the link's own SUBSCRIBE and UNSUBSCRIBE of coarse filters: never a client's (0
/// is not a valid one), so their acks are told from the session's.
const OWN: u16 = 0;
/// Packet ids of the link's own deliveries: above the router's (`1..=BROKER_MAX_INFLIGHT`).
const OWN_IDS: RangeInclusive<u16> = 0x8000..=0xFFFF;

/// UNSUBACK reason for a filter the session did not hold (MQTT 5).
const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
/// Most of the link's own deliveries awaiting their acks.
const MAX_OWN: usize = 1024;

/// Where each filter's code of a SUBSCRIBE or UNSUBSCRIBE comes from.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The router's answer for the filter at this index of what it was handed.
    Router(usize),
    /// Answered here.
    Here(u8),
}

/// One link's rewriting state; its [`Table`] lives on with a session rumqttd keeps.
#[derive(Default)]
pub struct Narrow {
    pub table: Table,
    /// The router's deliveries to acknowledge (PUBACK/PUBREC), in its order.
    acks: InOrder,
    /// The router's PUBRELs to complete, in its order.
    comps: InOrder,
    /// What is in flight, made with the first packet that needs it and dropped when the link is
    /// idle with nothing in it ([`Narrow::idle`]): an idle session holds none of its tables.
    flight: OnDemand<Flight>,
    next_own: u16,
}

/// The part of [`Narrow`] that packets in flight need.
#[derive(Default)]
struct Flight {
    /// Router packet ids of QoS 2 deliveries handed on at QoS 1: the session's PUBACK becomes a
    /// PUBREC.
    downgraded: HashSet<u16>,
    /// Router packet ids answered with PUBREC here: their PUBREL is completed here.
    released_here: HashSet<u16>,
    pending_subscribes: HashMap<u16, Vec<Slot>>,
    pending_unsubscribes: HashMap<u16, Vec<Slot>>,
    /// Packet ids of the link's own deliveries not yet completed.
    own: HashSet<u16>,
    /// Coarse filters subscribed whose SUBACK has not come back: the router's first sweep of
    /// each, with its retained messages, is still to come (and is narrowed by the table as it
    /// is then), so new filters under them need no fetch.
    fresh: HashSet<String>,
    /// The coarse filters of each of the link's SUBSCRIBEs awaiting their SUBACK, in order.
    fresh_batches: VecDeque<Vec<String>>,
    /// Fetched retained messages held back until the router's SUBACK of the SUBSCRIBE that asked
    /// for them (by its packet id) has gone to the session: SUBACK first, as the broker does.
    after_suback: Vec<(u16, Vec<Packet>)>,
}

impl InFlight for Flight {
    fn is_settled(&self) -> bool {
        self.downgraded.is_empty()
            && self.released_here.is_empty()
            && self.pending_subscribes.is_empty()
            && self.pending_unsubscribes.is_empty()
            && self.own.is_empty()
            && self.fresh.is_empty()
            && self.fresh_batches.is_empty()
            && self.after_suback.is_empty()
    }
}

/// Retained messages the link must fetch for one SUBSCRIBE (see [`Narrow::outgoing`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Fetch {
    pub packet_id: u16,
    pub filters: Vec<(String, QoS)>,
}

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: reason::SUCCESS,
        properties: Properties::default(),
    }
}

impl Narrow {
    /// Drops what packets in flight needed, when nothing is in flight (see [`Flight`]).
    pub fn idle(&mut self) {
        self.flight.idle();
    }

    /// A link's state, with the real filters a resumed session kept.
    pub fn new(table: Table) -> Narrow {
        Narrow {
            table,
            ..Narrow::default()
        }
    }

    /// A session packet on its way to the router: what goes on is appended to `router`, what is
    /// answered here to `session`. Returns the filters (with their QoS) whose retained messages
    /// the link must fetch because the router will not send them.
    pub fn outgoing(
        &mut self,
        packet: Packet,
        router: &mut Vec<Packet>,
        session: &mut VecDeque<Packet>,
    ) -> Option<Fetch> {
        match packet {
            Packet::Subscribe(subscribe) => return self.subscribe(subscribe, router, session),
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe, router, session),
            Packet::PubAck(a) if self.flight.get().own.remove(&a.packet_id) => {}
            Packet::PubComp(a) if self.flight.get().own.remove(&a.packet_id) => {}
            Packet::PubRec(a) if self.flight.get().own.contains(&a.packet_id) => {
                session.push_back(Packet::PubRel(ack(a.packet_id)));
            }
            Packet::PubAck(a) => {
                let id = a.packet_id;
                let packet = if self.flight.get().downgraded.remove(&id) {
                    self.flight.get().released_here.insert(id);
                    Packet::PubRec(a)
                } else {
                    Packet::PubAck(a)
                };
                self.acks.ready(id, packet, router);
            }
            Packet::PubRec(a) => self.acks.ready(a.packet_id, Packet::PubRec(a), router),
            Packet::PubComp(a) => self.comps.ready(a.packet_id, Packet::PubComp(a), router),
            other => router.push(other),
        }
        None
    }

    fn subscribe(
        &mut self,
        subscribe: Subscribe,
        router: &mut Vec<Packet>,
        session: &mut VecDeque<Packet>,
    ) -> Option<Fetch> {
        let mut slots = Vec::with_capacity(subscribe.subscriptions.len());
        let mut forwarded = Vec::new();
        let mut new_coarse = Vec::new();
        let mut retained = Vec::new();
        for subscription in subscribe.subscriptions {
            let options = subscription.options;
            let added = self.table.subscribe(&subscription.filter, options.qos);
            // Retain Handling 0: at every SUBSCRIBE; 1: only for a subscription that did not
            // exist (MQTT 5 §3.8.3.1; 3.1.1 §3.8.4 re-sends them on every SUBSCRIBE too).
            let wants_retained = match options.retain_handling {
                0 => true,
                1 => added.filter_is_new,
                _ => false,
            };
            match added.coarse {
                Some(coarse) => {
                    slots.push(Slot::Here(options.qos as u8));
                    if added.coarse_is_new {
                        self.flight.get().fresh.insert(coarse.clone());
                        new_coarse.push(coarse);
                    } else if wants_retained && !self.flight.get().fresh.contains(&coarse) {
                        retained.push((subscription.filter, options.qos));
                    }
                }
                None => {
                    // The router sends retained messages on a filter's first SUBSCRIBE only,
                    // and none for shared subscriptions.
                    if wants_retained
                        && !added.filter_is_new
                        && !subscription.filter.starts_with("$share/")
                    {
                        retained.push((subscription.filter.clone(), options.qos));
                    }
                    slots.push(Slot::Router(forwarded.len()));
                    forwarded.push(subscription);
                }
            }
        }
        if !new_coarse.is_empty() {
            let options = SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            };
            self.flight
                .get()
                .fresh_batches
                .push_back(new_coarse.clone());
            router.push(Packet::Subscribe(Subscribe {
                packet_id: OWN,
                subscriptions: new_coarse
                    .into_iter()
                    .map(|filter| Subscription { filter, options })
                    .collect(),
                properties: Properties::default(),
            }));
        }
        if forwarded.is_empty() {
            session.push_back(Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                codes: merge(&slots, &[], reason::UNSPECIFIED_ERROR),
                properties: Properties::default(),
            }));
        } else {
            self.flight
                .get()
                .pending_subscribes
                .insert(subscribe.packet_id, slots);
        }
        let packet_id = subscribe.packet_id;
        if !forwarded.is_empty() {
            router.push(Packet::Subscribe(Subscribe {
                subscriptions: forwarded,
                ..subscribe
            }));
        }
        (!retained.is_empty()).then_some(Fetch {
            packet_id,
            filters: retained,
        })
    }

    /// The link's own deliveries of retained messages fetched for the SUBSCRIBE `packet_id`: to
    /// the session now, or after the router's SUBACK of it when that is still to come.
    pub fn fetched(
        &mut self,
        packet_id: u16,
        deliveries: Vec<Packet>,
        session: &mut VecDeque<Packet>,
    ) {
        if self
            .flight
            .get()
            .pending_subscribes
            .contains_key(&packet_id)
        {
            self.flight.get().after_suback.push((packet_id, deliveries));
        } else {
            session.extend(deliveries);
        }
    }

    fn unsubscribe(
        &mut self,
        unsubscribe: Unsubscribe,
        router: &mut Vec<Packet>,
        session: &mut VecDeque<Packet>,
    ) {
        let mut slots = Vec::with_capacity(unsubscribe.filters.len());
        let mut forwarded = Vec::new();
        for filter in unsubscribe.filters {
            match self.table.unsubscribe(&filter) {
                Ok(last) => {
                    slots.push(Slot::Here(reason::SUCCESS));
                    // rumqttd looks at the first filter of an UNSUBSCRIBE only: one each.
                    if let Some(coarse) = last {
                        router.push(Packet::Unsubscribe(Unsubscribe {
                            packet_id: OWN,
                            filters: vec![coarse],
                            properties: Properties::default(),
                        }));
                    }
                }
                Err(true) => slots.push(Slot::Here(NO_SUBSCRIPTION_EXISTED)),
                Err(false) => {
                    slots.push(Slot::Router(forwarded.len()));
                    forwarded.push(filter);
                }
            }
        }
        if forwarded.is_empty() {
            session.push_back(Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                codes: merge(&slots, &[], reason::SUCCESS),
                properties: Properties::default(),
            }));
        } else {
            self.flight
                .get()
                .pending_unsubscribes
                .insert(unsubscribe.packet_id, slots);
            router.push(Packet::Unsubscribe(Unsubscribe {
                filters: forwarded,
                ..unsubscribe
            }));
        }
    }

    /// A router packet on its way to the session: what the session gets is appended to
    /// `session`, what the link answers itself to `router`.
    pub fn incoming(
        &mut self,
        packet: Packet,
        session: &mut Vec<Packet>,
        router: &mut Vec<Packet>,
    ) {
        match packet {
            Packet::Publish(publish) => {
                if let Some(publish) = self.delivery(publish, router) {
                    session.push(Packet::Publish(publish));
                }
            }
            Packet::SubAck(a) if a.packet_id == OWN => {
                for coarse in self
                    .flight
                    .get()
                    .fresh_batches
                    .pop_front()
                    .unwrap_or_default()
                {
                    self.flight.get().fresh.remove(&coarse);
                }
            }
            Packet::UnsubAck(a) if a.packet_id == OWN => {}
            Packet::SubAck(mut a) => {
                let id = a.packet_id;
                if let Some(slots) = self.flight.get().pending_subscribes.remove(&id) {
                    a.codes = merge(&slots, &a.codes, reason::UNSPECIFIED_ERROR);
                }
                session.push(Packet::SubAck(a));
                if let Some(at) = self
                    .flight
                    .get()
                    .after_suback
                    .iter()
                    .position(|(p, _)| *p == id)
                {
                    session.extend(self.flight.get().after_suback.swap_remove(at).1);
                }
            }
            Packet::UnsubAck(mut a) => {
                if let Some(slots) = self.flight.get().pending_unsubscribes.remove(&a.packet_id) {
                    a.codes = merge(&slots, &a.codes, reason::SUCCESS);
                }
                session.push(Packet::UnsubAck(a));
            }
            Packet::PubRel(a) => {
                let id = a.packet_id;
                self.comps.expect(id);
                if self.flight.get().released_here.remove(&id) {
                    self.comps.ready(id, Packet::PubComp(ack(id)), router);
                } else {
                    session.push(Packet::PubRel(a));
                }
            }
            other => session.push(other),
        }
    }

    fn delivery(&mut self, mut publish: Publish, router: &mut Vec<Packet>) -> Option<Publish> {
        let id = publish.packet_id.filter(|_| publish.qos != QoS::AtMostOnce);
        if let Some(id) = id {
            self.acks.expect(id);
        }
        let (cap, wanted) = match self.table.verdict(&publish.topic) {
            Verdict::AsSent => return Some(publish),
            Verdict::Capped(cap) => (cap, true),
            Verdict::Unwanted => (QoS::AtMostOnce, false),
        };
        if publish.qos <= cap {
            return wanted.then_some(publish);
        }
        match (publish.qos, cap, id) {
            (QoS::ExactlyOnce, QoS::AtLeastOnce, Some(id)) => {
                self.flight.get().downgraded.insert(id);
            }
            (QoS::AtLeastOnce, _, Some(id)) => self.acks.ready(id, Packet::PubAck(ack(id)), router),
            (QoS::ExactlyOnce, _, Some(id)) => {
                self.flight.get().released_here.insert(id);
                self.acks.ready(id, Packet::PubRec(ack(id)), router);
            }
            _ => {}
        }
        publish.qos = cap;
        if cap == QoS::AtMostOnce {
            publish.packet_id = None;
        }
        wanted.then_some(publish)
    }

    /// A retained message the link fetched for the session, as a delivery of its own at `qos`.
    pub fn own_delivery(&mut self, mut publish: Publish, qos: QoS) -> Packet {
        publish.qos = qos;
        publish.dup = false;
        publish.retain = true;
        publish.packet_id = None;
        // A client that never acknowledges gets the rest at QoS 0, not an ever larger set.
        if qos != QoS::AtMostOnce && self.flight.get().own.len() < MAX_OWN {
            if !OWN_IDS.contains(&self.next_own) {
                self.next_own = *OWN_IDS.start();
            }
            while self.flight.get().own.contains(&self.next_own) {
                self.next_own = self.next_own.checked_add(1).unwrap_or(*OWN_IDS.start());
            }
            self.flight.get().own.insert(self.next_own);
            publish.packet_id = Some(self.next_own);
            self.next_own = self.next_own.checked_add(1).unwrap_or(*OWN_IDS.start());
        }
        Packet::Publish(publish)
    }
}

/// Each filter's code: answered here, or the router's (`missing` if the router said nothing for
/// it: rumqttd answers an UNSUBSCRIBE for its first filter only).
fn merge(slots: &[Slot], router: &[u8], missing: u8) -> Vec<u8> {
    slots
        .iter()
        .map(|slot| match slot {
            Slot::Here(code) => *code,
            Slot::Router(i) => router.get(*i).copied().unwrap_or(missing),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COARSE: &str = "o/iot-2/type/s/id/d/cmd/+/fmt/+";

    fn filter(name: &str, qos: QoS) -> Subscription {
        Subscription {
            filter: format!("o/iot-2/type/s/id/d/cmd/{name}/fmt/json"),
            options: SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }
    }

    fn delivery(name: &str, packet_id: u16) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: format!("o/iot-2/type/s/id/d/cmd/{name}/fmt/json"),
            packet_id: Some(packet_id),
            properties: Properties::default(),
            payload: bytes::Bytes::new(),
        })
    }

    /// (kind, packet id) of each packet, for short assertions.
    fn ids(packets: &[Packet]) -> Vec<(&'static str, u16)> {
        packets
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => ("publish", p.packet_id.unwrap_or(0)),
                Packet::PubAck(a) => ("puback", a.packet_id),
                Packet::PubRec(a) => ("pubrec", a.packet_id),
                Packet::PubComp(a) => ("pubcomp", a.packet_id),
                Packet::SubAck(a) => ("suback", a.packet_id),
                Packet::Subscribe(s) => ("subscribe", s.packet_id),
                _ => ("other", 0),
            })
            .collect()
    }

    #[test]
    fn deliveries_are_narrowed_and_settled_in_the_routers_order() {
        let mut narrow = Narrow::default();
        let (mut router, mut local, mut session) = (Vec::new(), VecDeque::new(), Vec::new());
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 5,
            subscriptions: vec![
                filter("low", QoS::AtMostOnce),
                filter("mid", QoS::AtLeastOnce),
            ],
            properties: Properties::default(),
        });
        assert!(narrow
            .outgoing(subscribe, &mut router, &mut local)
            .is_none());
        let Some(Packet::Subscribe(coarse)) = router.pop() else {
            panic!("no coarse SUBSCRIBE");
        };
        assert_eq!(coarse.packet_id, OWN);
        assert_eq!(coarse.subscriptions[0].filter, COARSE);
        assert_eq!(coarse.subscriptions[0].options.qos, QoS::ExactlyOnce);
        let Some(Packet::SubAck(ack)) = local.pop_front() else {
            panic!("no SUBACK");
        };
        assert_eq!((ack.packet_id, ack.codes), (5, vec![0, 1]));

        // QoS 2 from the router: "mid" goes at QoS 1, "other" matches nothing, "low" at QoS 0.
        for (name, id) in [("mid", 1), ("other", 2), ("low", 3)] {
            narrow.incoming(delivery(name, id), &mut session, &mut router);
        }
        assert_eq!(ids(&session), vec![("publish", 1), ("publish", 0)]);
        assert!(
            router.is_empty(),
            "settled before the session acked the first"
        );
        narrow.outgoing(Packet::PubAck(ack_of(1)), &mut router, &mut local);
        assert_eq!(
            ids(&router),
            vec![("pubrec", 1), ("pubrec", 2), ("pubrec", 3)]
        );
        router.clear();
        session.clear();
        for id in [1, 2, 3] {
            narrow.incoming(Packet::PubRel(ack_of(id)), &mut session, &mut router);
        }
        assert!(session.is_empty(), "every PUBREL is answered here");
        assert_eq!(
            ids(&router),
            vec![("pubcomp", 1), ("pubcomp", 2), ("pubcomp", 3)]
        );
    }

    fn ack_of(packet_id: u16) -> Ack {
        ack(packet_id)
    }

    fn subscribe_to(filter: &str, packet_id: u16, retain_handling: u8) -> Packet {
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling,
        };
        Packet::Subscribe(Subscribe {
            packet_id,
            subscriptions: vec![Subscription {
                filter: filter.to_owned(),
                options,
            }],
            properties: Properties::default(),
        })
    }

    /// A direct filter subscribed again with Retain Handling 0 needs its retained messages
    /// fetched (the router sends them on the first SUBSCRIBE only), and they follow the
    /// router's SUBACK; with Retain Handling 1 or 2 nothing is fetched.
    #[test]
    fn a_repeated_subscribe_fetches_retained_messages_after_its_suback() {
        let mut narrow = Narrow::default();
        let (mut router, mut local, mut session) = (Vec::new(), VecDeque::new(), Vec::new());
        let direct = "o/plain/+";
        let first = narrow.outgoing(subscribe_to(direct, 5, 0), &mut router, &mut local);
        assert_eq!(first, None, "the router sends them for a new filter");
        let suback = |id| {
            Packet::SubAck(SubAck {
                packet_id: id,
                codes: vec![1],
                properties: Properties::default(),
            })
        };
        narrow.incoming(suback(5), &mut session, &mut router);
        for retain_handling in [1, 2] {
            let again = subscribe_to(direct, 6, retain_handling);
            assert_eq!(narrow.outgoing(again, &mut router, &mut local), None);
        }
        let again = narrow.outgoing(subscribe_to(direct, 7, 0), &mut router, &mut local);
        let expected = Fetch {
            packet_id: 7,
            filters: vec![(direct.to_owned(), QoS::AtLeastOnce)],
        };
        assert_eq!(again, Some(expected));
        assert_eq!(ids(&router).last(), Some(&("subscribe", 7)));
        let Packet::Publish(mut retained) = delivery("x", 9) else {
            unreachable!()
        };
        retained.topic = "o/plain/x".to_owned();
        let own = narrow.own_delivery(retained, QoS::AtLeastOnce);
        narrow.fetched(7, vec![own], &mut local);
        assert!(local.is_empty(), "held until the SUBACK");
        session.clear();
        narrow.incoming(suback(7), &mut session, &mut router);
        assert_eq!(
            ids(&session),
            vec![("suback", 7), ("publish", *OWN_IDS.start())]
        );
    }
}
