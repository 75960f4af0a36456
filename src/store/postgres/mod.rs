//! The PostgreSQL backend (`store.url = "postgres://…"`): one database shared by every node,
//! reached through the blocking `postgres` client over a small r2d2 pool; its schema and
//! migrations (`schema`). The queries are the store's, written once (see `store::sql`); this
//! module rewrites their `?N` placeholders to `$N` and converts values, nothing else.
//!
//! # Blocking client
//!
//! `postgres::Client` drives a tokio runtime of its own inside each call: called on a runtime
//! worker it panics ("Cannot start a runtime from within a runtime"). Every caller of the store
//! already runs on `spawn_blocking` or a plain thread (see `store::interface`), and `server`
//! opens the store on a blocking thread.
//!
//! # Writers across nodes
//!
//! Every write transaction first takes one transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`), so writers of every node are serialised as SQLite's
//! `BEGIN IMMEDIATE` serialises them in one process: a read-then-write (a default signing
//! certificate, a CSR's status, a grant's row) never races a writer on another node. Admin writes
//! are rare and short; reads take no lock (`REPEATABLE READ, READ ONLY`: one consistent snapshot).
//!
//! # Propagation to other nodes
//!
//! Every write to a table an org's snapshot is built from fires a trigger (migration 2) that
//! sends `NOTIFY portcullis_org, '<org id>'` inside the writing transaction: it reaches the other
//! nodes when, and only when, the change commits, whichever query made it. Each node keeps one
//! `LISTEN`ing connection (`listen`) that hands the org named to the registry, which rebuilds it
//! as a local change does; after a lost connection it reloads everything, since notifications sent
//! meanwhile are gone.
//!
//! # Nodes alive
//!
//! Each node holds a session advisory lock on a connection of its own (`holder`): PostgreSQL
//! releases it when the node is gone, so `pg_locks` tells which nodes' grant reservations are
//! still held and which count as spent (`store::grant_holds`).
//!
//! # Outages
//!
//! A caller waits at most `CONNECT_TIMEOUT` for a connection; a connection that cannot be had,
//! or that breaks under a statement, is [`DbError::Unavailable`] (the admin API answers 503
//! `store_unavailable`), never a generic failure.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use r2d2_postgres::PostgresConnectionManager;

use super::sql::{Backend, DbError, Row, Sql, Value};
use super::{GrantRules, MasterKey, SqlStore, StoreError};
use crate::clock::Clock;

mod holder;
mod leader;
mod listen;
pub(super) mod schema;
mod target;

pub use leader::campaign;
pub use listen::{listen, Change};
pub use target::Target;

type Pool = r2d2::Pool<PostgresConnectionManager<target::Tls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<target::Tls>>;

/// Connections kept per node: the admin API's blocking calls, the device writer and the
/// notifier rarely need more at once; a caller beyond waits for one.
const POOL_SIZE: u32 = 8;
/// How long a caller waits for a connection (and the first connection may take) before the store
/// reports the database unreachable: short, so that an admin call during an outage answers 503
/// well within 10 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The advisory lock every write transaction takes ("portcull" in ASCII).
const WRITE_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// The PostgreSQL database, shared by every node.
pub struct Postgres {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool>,
    /// Always `Some` until dropped: this node's place among the grant holders (`holder`).
    holder: Option<holder::HolderLock>,
}

impl SqlStore {
    /// Connects to the PostgreSQL database `target`, runs the migrations under an advisory lock
    /// (several nodes starting at once migrate once), and checks that `master_key` opens what the
    /// store sealed (`StoreError::MasterKey` otherwise). Blocks: call it off the runtime's
    /// workers.
    pub fn connect(
        target: &Target,
        master_key: MasterKey,
        grant_rules: Arc<dyn GrantRules>,
        clock: Clock,
    ) -> Result<SqlStore, StoreError> {
        // One connection first, outside the pool: a refusal is told with its reason (the pool
        // would only say that it timed out).
        drop(target.connect().map_err(pg)?);
        let manager = target.manager();
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(manager)
            .map_err(|e| DbError::Backend(format!("postgres: cannot connect: {e}")))?;
        let mut backend = Postgres {
            pool: Some(pool),
            holder: None,
        };
        schema::migrate(&mut *backend.get()?)?;
        backend.holder = Some(holder::HolderLock::take(target)?);
        SqlStore::new(Box::new(backend), master_key, grant_rules, clock)
    }
}

impl Postgres {
    fn get(&self) -> Result<Conn, DbError> {
        self.pool
            .as_ref()
            .ok_or_else(|| DbError::Backend("postgres: the store is closed".into()))?
            .get()
            .map_err(|e| DbError::Unavailable(format!("postgres: no connection: {e}")))
    }

    fn begin(&self, statement: &str) -> Result<Box<dyn Sql + '_>, DbError> {
        let mut conn = self.get()?;
        conn.batch_execute(statement).map_err(pg)?;
        Ok(Box::new(PgTx {
            conn: RefCell::new(conn),
            open: Cell::new(true),
        }))
    }
}

/// Closing a `postgres::Client` blocks: the store's last reference dropped on a runtime worker
/// (a server's shutdown) would panic there, so the pool and the holder lock's connection are
/// then dropped on a thread of their own.
impl Drop for Postgres {
    fn drop(&mut self) {
        let pool = self.pool.take();
        let holder = self.holder.take().and_then(holder::HolderLock::into_client);
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::spawn(move || drop((pool, holder)));
        }
    }
}

impl Backend for Postgres {
    fn read(&self) -> Result<Box<dyn Sql + '_>, DbError> {
        self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    }

    fn write(&self) -> Result<Box<dyn Sql + '_>, DbError> {
        self.begin(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))
    }

    fn write_own(&self) -> Result<Box<dyn Sql + '_>, DbError> {
        self.begin("BEGIN")
    }

    fn holder(&self) -> Result<i64, DbError> {
        self.holder
            .as_ref()
            .ok_or_else(|| DbError::Backend("postgres: the store is closed".into()))?
            .id()
    }

    fn live_holders(&self) -> String {
        holder::live_holders()
    }

    fn tell_nodes(&self, payloads: &[String]) -> Result<(), DbError> {
        self.get()?
            .execute(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS n(p, i) ORDER BY i",
                &[&listen::NODE_CHANNEL, &payloads],
            )
            .map_err(pg)?;
        Ok(())
    }
}

/// Sleeps `total` on a thread of the store's own (the listener, the leader lock), waking early
/// when the node stops.
fn pause(stop: &tokio::sync::watch::Receiver<bool>, total: Duration) {
    let until = std::time::Instant::now() + total;
    while !*stop.borrow() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until - std::time::Instant::now()));
    }
}

/// A pooled connection inside a transaction; rolled back when dropped uncommitted.
struct PgTx {
    conn: RefCell<Conn>,
    open: Cell<bool>,
}

impl Sql for PgTx {
    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize, DbError> {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let changed = self
            .conn
            .borrow_mut()
            .execute(&numbered(sql), &params)
            .map_err(pg)?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let rows = self
            .conn
            .borrow_mut()
            .query(&numbered(sql), &params)
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| column(row, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row::new)
            })
            .collect()
    }

    fn commit(self: Box<Self>) -> Result<(), DbError> {
        self.open.set(false);
        self.conn.borrow_mut().batch_execute("COMMIT").map_err(pg)
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if self.open.get() {
            // A connection that cannot roll back is closed: the pool drops it on return.
            if let Err(e) = self.conn.get_mut().batch_execute("ROLLBACK") {
                tracing::warn!(error = %e, "postgres rollback failed");
            }
        }
    }
}

/// `sql` with SQLite's `?N` and `?` placeholders as PostgreSQL's `$N` (a bare `?` is one more
/// than the largest number before it, as SQLite counts). Quoted text is left alone.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1u32;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        let n = digits.parse::<u32>().unwrap_or(next);
        next = next.max(n + 1);
        out.push('$');
        out.push_str(&n.to_string());
    }
    out
}

/// Column `i` of a PostgreSQL row, in the types the shared queries read.
fn column(row: &postgres::Row, i: usize) -> Result<Value, DbError> {
    let ty = row.columns()[i].type_().clone();
    let err = |e: postgres::Error| DbError::Column {
        index: i,
        message: e.to_string(),
    };
    let value = match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(err)?
            .map(Value::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(|v| Value::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(|v| Value::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(err)?
            .map(|v| Value::Integer(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(i)
            .map_err(err)?
            .map(Value::Text),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(err)?
            .map(Value::Blob),
        other => {
            return Err(DbError::Column {
                index: i,
                message: format!("type {other}, which the store never reads"),
            })
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

/// A value bound to whatever type PostgreSQL inferred for its parameter: an integer binds to
/// any integer type (checked) or to a boolean, text to text, a blob to `bytea`.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer bound to a parameter of type {ty}").into()),
            },
            Value::Text(s) => s.as_str().to_sql_checked(ty, out),
            Value::Blob(b) => b.as_slice().to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A postgres error as the store sees it: constraint violations told apart, and a lost or
/// refused connection reported as [`DbError::Unavailable`].
fn pg(e: postgres::Error) -> DbError {
    let message = match (e.as_db_error(), e.source()) {
        (Some(db), _) => db.to_string(),
        // A TLS handshake's, or the socket's: what went wrong is in the source.
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    };
    match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => DbError::Unique(message),
        Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => DbError::ForeignKey(message),
        _ if is_connection_lost(&e) => DbError::Unavailable(format!("postgres: {message}")),
        _ => DbError::Backend(format!("postgres: {message}")),
    }
}

/// True when `e` says the connection is gone or the server will not serve it: closed, an I/O
/// error, or SQLSTATE class 08 (connection exception) or 57 (operator intervention: shutdown).
fn is_connection_lost(e: &postgres::Error) -> bool {
    let class = e.code().map(|c| &c.code()[..2]);
    e.is_closed()
        || matches!(class, Some("08" | "57"))
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(numbered("a = ?1 AND b = ?2"), "a = $1 AND b = $2");
        assert_eq!(
            numbered("a = ?3 AND b = ? AND c = ?"),
            "a = $3 AND b = $4 AND c = $5"
        );
        assert_eq!(numbered("?2, ?1, ?"), "$2, $1, $3");
        assert_eq!(numbered("x = '?' AND y = ?"), "x = '?' AND y = $1");
        assert_eq!(
            numbered("x = 'it''s ?' AND y = ?1"),
            "x = 'it''s ?' AND y = $1"
        );
    }
}
