//! The SQLite backend (the embedded default): `<data_dir>/portcullis.db` in WAL mode, its
//! numbered migrations (`schema`), and `Sql` over rusqlite. The queries themselves are the
//! store's (backend-neutral, in `store`); this module only runs them.
//!
//! # Concurrency
//!
//! One `rusqlite::Connection` behind a `std::sync::Mutex`: every store method is short,
//! synchronous and holds the lock for one transaction (`BEGIN IMMEDIATE` for a write), so writers
//! are serialised as `Backend::write` promises. A poisoned lock is taken over: a panic inside
//! a transaction dropped it, and dropping a `SqliteTx` rolls back.

use std::cell::Cell;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::sql::{Backend, DbError, Row, Sql, Value};
use super::{GrantRules, MasterKey, SqlStore, StoreError};
use crate::clock::Clock;

pub(super) mod schema;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "portcullis.db";

/// The SQLite database of one process.
pub struct Sqlite {
    conn: Mutex<Connection>,
    /// Random for each opening: the database has one process, so the grant reservations of any
    /// other holder were left by a process that is gone.
    holder: i64,
}

impl SqlStore {
    /// Opens (creating when needed) the SQLite store `<data_dir>/portcullis.db`, runs the
    /// migrations, and loads the master key from `PORTCULLIS_MASTER_KEY` or
    /// `<data_dir>/master.key` (generated, mode 0600). Grants are given and judged by
    /// `grant_rules` (the configured `grants::GrantPolicy`) on `clock`.
    pub fn open(
        data_dir: &Path,
        grant_rules: Arc<dyn GrantRules>,
        clock: Clock,
    ) -> Result<SqlStore, StoreError> {
        let master_key = super::load_master_key(data_dir)?;
        SqlStore::open_with_key(data_dir, master_key, grant_rules, clock)
    }

    /// Opens the SQLite store with a given master key (what [`SqlStore::open`] does once it has
    /// the key).
    pub fn open_with_key(
        data_dir: &Path,
        master_key: MasterKey,
        grant_rules: Arc<dyn GrantRules>,
        clock: Clock,
    ) -> Result<SqlStore, StoreError> {
        super::create_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        create_private_file(&path)?;
        let mut conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        // WAL: readers never block the writer; FULL: a committed admin change survives power loss.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        schema::migrate(&mut conn)?;
        let mut holder = [0u8; 8];
        super::crypto::random_bytes(&mut holder)?;
        let backend = Sqlite {
            conn: Mutex::new(conn),
            holder: i64::from_be_bytes(holder) & i64::MAX,
        };
        SqlStore::new(Box::new(backend), master_key, grant_rules, clock)
    }
}

impl Sqlite {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for Sqlite {
    fn read(&self) -> Result<Box<dyn Sql + '_>, DbError> {
        // One connection under a lock: no writer can interleave, so no transaction is needed.
        Ok(Box::new(SqliteTx {
            conn: self.lock(),
            open: Cell::new(false),
        }))
    }

    fn write(&self) -> Result<Box<dyn Sql + '_>, DbError> {
        let conn = self.lock();
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
        Ok(Box::new(SqliteTx {
            conn,
            open: Cell::new(true),
        }))
    }

    fn write_own(&self) -> Result<Box<dyn Sql + '_>, DbError> {
        self.write()
    }

    fn holder(&self) -> Result<i64, DbError> {
        Ok(self.holder)
    }

    fn live_holders(&self) -> String {
        format!("SELECT {}", self.holder)
    }

    /// One process is the one node: nobody else to tell.
    fn tell_nodes(&self, _payloads: &[String]) -> Result<(), DbError> {
        Ok(())
    }
}

/// The locked connection, inside `BEGIN IMMEDIATE` when `open`.
struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    open: Cell<bool>,
}

impl Sql for SqliteTx<'_> {
    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db)?;
        stmt.execute(rusqlite::params_from_iter(params.iter()))
            .map_err(db)
    }

    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(db)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db)? {
            let values = (0..columns)
                .map(|i| from_sqlite(row.get_ref(i).map_err(db)?, i))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Row::new(values));
        }
        Ok(out)
    }

    fn commit(self: Box<Self>) -> Result<(), DbError> {
        if self.open.replace(false) {
            self.conn.execute_batch("COMMIT").map_err(db)?;
        }
        Ok(())
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "sqlite rollback failed");
            }
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Value, DbError> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Text(t) => {
            Value::Text(String::from_utf8(t.to_vec()).map_err(|e| DbError::Column {
                index,
                message: e.to_string(),
            })?)
        }
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(_) => {
            return Err(DbError::Column {
                index,
                message: "a real number, which the store never writes".into(),
            })
        }
    })
}

/// A rusqlite error as the store sees it: constraint violations told apart.
pub(super) fn db(e: rusqlite::Error) -> DbError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            DbError::Unique(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            DbError::ForeignKey(e.to_string())
        }
        rusqlite::Error::QueryReturnedNoRows => DbError::NoRows,
        _ => DbError::Backend(format!("sqlite: {e}")),
    }
}

/// Creates an empty file with mode 0600 unless it exists, so that SQLite (which gives its WAL and
/// shared-memory files the database's mode) never makes them readable by others.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}
