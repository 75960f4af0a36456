//! The `live_sessions` table (DESIGN §12): every node's live sessions, so that the session list
//! of any node shows the whole cluster. Each node writes only its own rows, in batches behind the
//! connect path (see `crate::cluster`), and lists its own from memory; a node that is down (no
//! heartbeat for `cluster.down_after_seconds`) has its rows left out of every list, and forgotten
//! by the next sweep.

use time::OffsetDateTime;

use super::filter::Where;
use super::sql::{params, Row, Sql, SqlExt, Value};
use super::{
    from_micros, parse_org_id, to_micros, words, DbError, LiveSessionStore, PageRequest, SqlStore,
    StoreError,
};
use crate::identity::OrgId;

/// One live session, as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSession {
    /// The node that serves it.
    pub node_id: String,
    /// That node's own number for it.
    pub session: u64,
    pub org: OrgId,
    pub client_id: String,
    pub identity: String,
    pub ca_id: String,
    pub fingerprint_sha256: String,
    pub serial: String,
    /// 4 (3.1.1) or 5.
    pub protocol: u8,
    pub peer: Option<String>,
    pub connected_at: OffsetDateTime,
    /// Every identity its certificate claims (empty: not recorded, a row of an older node).
    pub claims: Vec<String>,
    /// The other active CAs that vouched for its chain when it connected.
    pub also_ca_ids: Vec<String>,
}

const COLUMNS: &str = "node_id, session, org, client_id, identity, ca_id, fingerprint_sha256, \
                       serial, protocol, peer, connected_at, claims, also_ca_ids";

/// A row before its time and org are converted.
struct SessionRow {
    node_id: String,
    session: u64,
    org: String,
    client_id: String,
    identity: String,
    ca_id: String,
    fingerprint_sha256: String,
    serial: String,
    protocol: u8,
    peer: Option<String>,
    connected_at: i64,
    claims: String,
    also_ca_ids: String,
}

impl SessionRow {
    fn read(row: &Row) -> Result<SessionRow, DbError> {
        Ok(SessionRow {
            node_id: row.get(0)?,
            session: row.get(1)?,
            org: row.get(2)?,
            client_id: row.get(3)?,
            identity: row.get(4)?,
            ca_id: row.get(5)?,
            fingerprint_sha256: row.get(6)?,
            serial: row.get(7)?,
            protocol: u8::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
            peer: row.get(9)?,
            connected_at: row.get(10)?,
            claims: row.get(11)?,
            also_ca_ids: row.get(12)?,
        })
    }

    fn into_record(self) -> Result<NodeSession, StoreError> {
        Ok(NodeSession {
            node_id: self.node_id,
            session: self.session,
            org: parse_org_id(&self.org)?,
            client_id: self.client_id,
            identity: self.identity,
            ca_id: self.ca_id,
            fingerprint_sha256: self.fingerprint_sha256,
            serial: self.serial,
            protocol: self.protocol,
            peer: self.peer,
            connected_at: from_micros(self.connected_at)?,
            claims: words(&self.claims),
            also_ca_ids: words(&self.also_ca_ids),
        })
    }
}

/// Rows written in one statement (13 parameters each, well inside both engines' limits).
const ROWS_PER_STATEMENT: usize = 256;

/// Adds `sessions` (one already there is left as it is), a few hundred per statement.
fn insert(tx: &dyn Sql, sessions: &[NodeSession]) -> Result<(), DbError> {
    for chunk in sessions.chunks(ROWS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len());
        let mut args = Vec::with_capacity(chunk.len() * 13);
        for s in chunk {
            let n = args.len();
            values.push(format!(
                "({})",
                (1..=13)
                    .map(|i| format!("?{}", n + i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            args.extend(params![
                s.node_id,
                i64::try_from(s.session).unwrap_or(i64::MAX),
                s.org.as_str(),
                s.client_id,
                s.identity,
                s.ca_id,
                s.fingerprint_sha256,
                s.serial,
                s.protocol,
                s.peer,
                to_micros(s.connected_at),
                s.claims.join(" "),
                s.also_ca_ids.join(" ")
            ]);
        }
        tx.execute(
            &format!(
                "INSERT INTO live_sessions ({COLUMNS}) VALUES {}
                 ON CONFLICT (node_id, session) DO NOTHING",
                values.join(", ")
            ),
            args,
        )?;
    }
    Ok(())
}

impl LiveSessionStore for SqlStore {
    fn sessions_changed(
        &self,
        node_id: &str,
        opened: &[NodeSession],
        closed: &[u64],
    ) -> Result<(), StoreError> {
        let tx = self.begin_own()?;
        insert(&*tx, opened)?;
        for chunk in closed.chunks(ROWS_PER_STATEMENT) {
            let mut args = vec![Value::Text(node_id.to_owned())];
            let listed = (2..chunk.len() + 2)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            args.extend(
                chunk
                    .iter()
                    .map(|s| Value::Integer(i64::try_from(*s).unwrap_or(i64::MAX))),
            );
            tx.execute(
                &format!("DELETE FROM live_sessions WHERE node_id = ?1 AND session IN ({listed})"),
                args,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn replace_sessions(&self, node_id: &str, sessions: &[NodeSession]) -> Result<(), StoreError> {
        let tx = self.begin_own()?;
        tx.execute("DELETE FROM live_sessions WHERE node_id = ?1", [node_id])?;
        insert(&*tx, sessions)?;
        tx.commit()?;
        Ok(())
    }

    fn other_nodes_sessions(
        &self,
        org: &OrgId,
        node_id: &str,
        seen_since: OffsetDateTime,
        page: &PageRequest,
    ) -> Result<Vec<NodeSession>, StoreError> {
        let mut clause = Where::page("org", "connected_at", "client_id", org, page);
        clause.and("node_id <> ?", Value::Text(node_id.to_owned()));
        clause.and(
            "node_id IN (SELECT node_id FROM nodes WHERE last_seen >= ?)",
            Value::Integer(to_micros(seen_since)),
        );
        let select = format!("SELECT {COLUMNS} FROM live_sessions");
        clause.fetch(
            &*self.conn()?,
            org,
            &select,
            page,
            SessionRow::read,
            SessionRow::into_record,
        )
    }

    fn forget_sessions_of_nodes_down(&self, seen_before: OffsetDateTime) -> Result<(), StoreError> {
        let tx = self.begin()?;
        tx.execute(
            "DELETE FROM live_sessions WHERE node_id IN
                 (SELECT node_id FROM nodes WHERE last_seen < ?1)",
            params![to_micros(seen_before)],
        )?;
        tx.commit()?;
        Ok(())
    }
}
