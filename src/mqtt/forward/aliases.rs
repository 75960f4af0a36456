//! Topic aliases the server gives its deliveries (MQTT 5 §3.3.2.3.4): a client whose CONNECT
//! allows them (Topic Alias Maximum above 0) gets the first delivery on a topic with the topic
//! and an alias, and later ones on it with the alias and an empty topic.
//!
//! The first topics delivered each take the next alias, up to the client's maximum and at most
//! [`OUT_ALIASES`]; a topic past that goes out in full. Aliases are never reassigned: a device
//! mostly hears on a few command topics, and a fixed table keeps the cost at a short scan of a
//! few strings per delivery, nothing at all for a client that allows none. Aliases belong to one
//! network connection: a new one starts with an empty table, redeliveries included.

use crate::codec::Publish;

/// Most aliases the server gives one connection's deliveries, whatever the client allows.
pub const OUT_ALIASES: u16 = 16;

/// One connection's delivery aliases: alias `n` stands for `topics[n - 1]`.
#[derive(Debug, Default)]
pub struct Aliases {
    max: u16,
    topics: Vec<Box<str>>,
}

impl Aliases {
    /// The aliases of a connection whose client allows `client_max` (its CONNECT's Topic Alias
    /// Maximum; none on MQTT 3.1.1).
    pub fn new(client_max: Option<u16>) -> Aliases {
        Aliases {
            max: client_max.unwrap_or(0).min(OUT_ALIASES),
            topics: Vec::new(),
        }
    }

    /// Sends `publish` under its topic's alias: the alias alone when the client has seen it,
    /// with the topic when it is new, unchanged when no alias is left.
    pub fn apply(&mut self, publish: &mut Publish) {
        if self.max == 0 {
            return;
        }
        if let Some(at) = self.topics.iter().position(|t| **t == *publish.topic) {
            publish.properties.topic_alias = u16::try_from(at + 1).ok();
            publish.topic.clear();
        } else if self.topics.len() < usize::from(self.max) {
            self.topics.push(publish.topic.as_str().into());
            publish.properties.topic_alias = u16::try_from(self.topics.len()).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Properties, QoS};

    fn on(topic: &str) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.to_owned(),
            packet_id: None,
            properties: Properties::default(),
            payload: bytes::Bytes::new(),
        }
    }

    fn sent(aliases: &mut Aliases, topic: &str) -> (String, Option<u16>) {
        let mut publish = on(topic);
        aliases.apply(&mut publish);
        (publish.topic, publish.properties.topic_alias)
    }

    #[test]
    fn topics_take_aliases_up_to_the_clients_maximum() {
        let mut aliases = Aliases::new(Some(2));
        assert_eq!(sent(&mut aliases, "a"), ("a".into(), Some(1)));
        assert_eq!(sent(&mut aliases, "a"), ("".into(), Some(1)));
        assert_eq!(sent(&mut aliases, "b"), ("b".into(), Some(2)));
        assert_eq!(sent(&mut aliases, "c"), ("c".into(), None), "no alias left");
        assert_eq!(sent(&mut aliases, "c"), ("c".into(), None));
        assert_eq!(sent(&mut aliases, "b"), ("".into(), Some(2)));
    }

    #[test]
    fn none_for_a_client_that_allows_none_and_never_above_the_cap() {
        let mut none = Aliases::new(Some(0));
        assert_eq!(sent(&mut none, "a"), ("a".into(), None));
        let mut v311 = Aliases::new(None);
        assert_eq!(sent(&mut v311, "a"), ("a".into(), None));
        let mut many = Aliases::new(Some(u16::MAX));
        for n in 0..OUT_ALIASES + 3 {
            let (_, alias) = sent(&mut many, &format!("t{n}"));
            assert_eq!(alias, (n < OUT_ALIASES).then_some(n + 1));
        }
    }
}
