//! The `nodes` table (DESIGN §12): each node's heartbeat — when it started, when it last wrote,
//! how many sessions it serves, which version it runs — so that any node can list the cluster.
//! Whether a node is up is decided by the reader from `last_seen` (see `admin::cluster`): a node
//! that was killed simply stops writing.

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
}
