//! Topic policy: maps what a client publishes and subscribes to into its organisation's namespace
//! inside the broker (`<org>/…`), refuses everything else, and maps deliveries back.

use crate::identity::{ClientId, Identity};

/// An organisation's topic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TopicPolicy {
    /// The Watson IoT topic space of DESIGN §4 (the default).
    #[default]
    #[serde(rename = "iot-2")]
    Iot2,
    /// Any topic or filter not starting with `$` (and `$share/<group>/<filter>`), under `<org>/`.
    #[serde(rename = "open")]
    Open,
}

/// Why a topic or filter was refused; a bounded label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicRefused {
    #[error("topic not allowed for this client")]
    NotAllowed,
    #[error("malformed topic or filter")]
    Malformed,
}

/// The mapping for one session: built once at CONNECT.
#[derive(Debug, Clone)]
pub struct TopicMap {
    client: ClientId,
    policy: TopicPolicy,
}

impl TopicMap {
    pub fn new(client: ClientId, policy: TopicPolicy) -> TopicMap {
        TopicMap { client, policy }
    }

    /// Client topic (PUBLISH or will) → broker topic.
    pub fn publish(&self, topic: &str) -> Result<String, TopicRefused> {
        let _ = (topic, &self.client, self.policy, Identity::parse);
        todo!()
    }

    /// Client filter (SUBSCRIBE or UNSUBSCRIBE) → broker filter.
    pub fn filter(&self, filter: &str) -> Result<String, TopicRefused> {
        let _ = filter;
        todo!()
    }

    /// Broker topic of a delivery → the topic the client sees; `None` if it is outside the
    /// client's view (never delivered).
    pub fn deliver(&self, broker_topic: &str) -> Option<String> {
        let _ = broker_topic;
        todo!()
    }
}
