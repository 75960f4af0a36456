//! Test helpers for the broker's own tests: a broker, and links driven as a session drives them.

use std::time::Duration;

use bytes::Bytes;

use super::{Broker, BrokerError, BrokerSession};
use crate::codec::{
    self, Ack, Packet, Properties, Publish, QoS, Subscribe, Subscription, SubscriptionOptions,
};
use crate::config::BrokerConfig;

pub const T: Duration = Duration::from_secs(10);

pub async fn start_with(max_connections: usize, plain_listeners: usize) -> Broker {
    let config = BrokerConfig {
        max_connections,
        plain_listeners,
        max_filters: 1000,
        max_filters_per_org: 1000,
        upstream: None,
    };
    tokio::time::timeout(T, Broker::start(&config))
        .await
        .unwrap()
        .unwrap()
}

/// A session with the packets `recv` handed over but the test has not looked at yet.
pub struct Link {
    pub session: BrokerSession,
    pub received: std::collections::VecDeque<Packet>,
}

impl Link {
    pub fn open(broker: &Broker, client_id: &str, clean_start: bool) -> Link {
        Link {
            session: broker.open(client_id, clean_start).unwrap(),
            received: Default::default(),
        }
    }

    pub async fn next(&mut self) -> Result<Packet, BrokerError> {
        if self.received.is_empty() {
            let mut out = Vec::new();
            self.session.recv(&mut out).await?;
            self.received.extend(out);
        }
        Ok(self
            .received
            .pop_front()
            .expect("recv returns at least one packet"))
    }

    pub async fn close(self) {
        self.session.close().await;
    }
}

pub async fn send(link: &mut Link, packet: Packet) {
    link.session.send(&mut vec![packet]).await.unwrap();
}

pub async fn recv(link: &mut Link) -> Packet {
    tokio::time::timeout(T, link.next()).await.unwrap().unwrap()
}

pub fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned(),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    }
}

pub fn will(topic: &str) -> codec::Will {
    codec::Will {
        topic: topic.to_owned(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    }
}

/// A session subscribed to `filter` at QoS 1.
pub async fn subscriber(broker: &Broker, client_id: &str, filter: &str) -> Link {
    let mut link = Link::open(broker, client_id, true);
    subscribe(&mut link, filter).await;
    link
}

pub async fn subscribe(session: &mut Link, filter: &str) {
    subscribe_at(session, filter, QoS::AtLeastOnce).await;
}

pub async fn subscribe_at(session: &mut Link, filter: &str, qos: QoS) {
    let options = SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    };
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: filter.to_owned(),
            options,
        }],
        properties: Properties::default(),
    });
    send(session, packet).await;
    match recv(session).await {
        Packet::SubAck(ack) => assert_eq!(ack.codes, vec![qos as u8]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// The next PUBLISH, acknowledged when it is QoS 1.
pub async fn delivery(session: &mut Link) -> Publish {
    loop {
        if let Packet::Publish(p) = recv(session).await {
            if let Some(packet_id) = p.packet_id {
                let ack = Ack {
                    packet_id,
                    reason: 0,
                    properties: Properties::default(),
                };
                send(session, Packet::PubAck(ack)).await;
            }
            return p;
        }
    }
}
