//! The `nodes` table (DESIGN §12): each node's heartbeat — when it started, when it last wrote,
//! how many sessions it serves, which version it runs — so that any node can list the cluster.
//! Whether a node is up is decided by the reader from `last_seen` (see `admin::cluster`): a node
//! that was killed simply stops writing. The `leader` row names the node that last took the
//! cluster's leader lock (see `crate::leader`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::sql::{params, SqlExt};
use super::{from_micros, to_micros, NodeStore, SqlStore, StoreError};

/// One node's heartbeat, as it writes it and as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    pub started_at: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub sessions: u64,
    pub version: String,
}

/// What one node tells the others (see `crate::cluster`), carried by the store: on PostgreSQL a
/// `NOTIFY portcullis_node` whose JSON payload is an array of as many as fit in [`PAYLOAD`] bytes
/// (PostgreSQL takes 8000; client ids and org ids are short); on SQLite there is nobody else to
/// tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMessage {
    /// The node that tells it (a node ignores what it told itself).
    pub from: String,
    #[serde(flatten)]
    pub news: NodeNews,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeNews {
    /// Session `session` (the admitting node's number) of `client_id` was admitted: an older
    /// one elsewhere is taken over.
    Admitted {
        org: String,
        client_id: String,
        session: u64,
    },
    /// An operator ends the session of `client_id`; the node that held it answers `Closed`.
    Disconnect {
        org: String,
        client_id: String,
        request: u64,
    },
    /// The session that node `to` asked for (its request `request`) was closed here.
    Closed { to: String, request: u64 },
    /// For the leader's notifier: a pass is due (settings changed), or an alert from the data
    /// path (`alert`: org, event, object).
    Notify {
        alert: Option<(String, String, String)>,
    },
    /// A connect, disconnect or refusal on that node, for the event streams of the others
    /// (boxed: an event is several times the size of the other news).
    Event { event: Box<crate::events::Event> },
    /// An event stream of `org` is read on that node: its events are wanted (said again while
    /// it is read).
    Watching { org: String },
}

/// Most bytes of messages packed in one notification: PostgreSQL's limit is 8000.
const PAYLOAD: usize = 7900;

impl NodeStore for SqlStore {
    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let tx = self.begin()?;
        tx.execute(
            "INSERT INTO nodes (node_id, started_at, last_seen, sessions, version)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (node_id) DO UPDATE SET started_at = excluded.started_at,
                 last_seen = excluded.last_seen, sessions = excluded.sessions,
                 version = excluded.version",
            params![
                node.node_id,
                to_micros(node.started_at),
                to_micros(node.last_seen),
                i64::try_from(node.sessions).unwrap_or(i64::MAX),
                node.version
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let tx = self.conn()?;
        let rows = tx
            .prepare(
                "SELECT node_id, started_at, last_seen, sessions, version FROM nodes
                 ORDER BY node_id",
            )?
            .query_map(params![], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, u64>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })?;
        super::records(
            rows,
            |(node_id, started_at, last_seen, sessions, version)| {
                Ok(NodeRecord {
                    node_id,
                    started_at: from_micros(started_at)?,
                    last_seen: from_micros(last_seen)?,
                    sessions,
                    version,
                })
            },
        )
    }

    fn forget_other_nodes(&self, node_id: &str) -> Result<(), StoreError> {
        let tx = self.begin()?;
        tx.execute("DELETE FROM nodes WHERE node_id <> ?1", [node_id])?;
        tx.commit()?;
        Ok(())
    }

    fn lead(&self, node_id: &str, since: OffsetDateTime) -> Result<(), StoreError> {
        let tx = self.begin()?;
        tx.execute(
            "INSERT INTO leader (id, node_id, since) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, since = excluded.since",
            params![node_id, to_micros(since)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn tell_nodes(&self, messages: &[NodeMessage]) -> Result<(), StoreError> {
        let mut payloads = Vec::new();
        let mut packed = String::new();
        for message in messages {
            let json = serde_json::to_string(message)
                .map_err(|e| StoreError::Corrupt(format!("node message: {e}")))?;
            if !packed.is_empty() && packed.len() + json.len() + 2 > PAYLOAD {
                packed.push(']');
                payloads.push(std::mem::take(&mut packed));
            }
            packed.push(if packed.is_empty() { '[' } else { ',' });
            packed.push_str(&json);
        }
        if !packed.is_empty() {
            packed.push(']');
            payloads.push(packed);
        }
        Ok(self.db.tell_nodes(&payloads)?)
    }

    fn leader(&self) -> Result<Option<String>, StoreError> {
        let tx = self.conn()?;
        let rows = tx
            .prepare("SELECT node_id FROM leader WHERE id = 1")?
            .query_map(params![], |row| row.get::<_, String>(0))?;
        Ok(super::records(rows, Ok)?.into_iter().next())
    }
}
