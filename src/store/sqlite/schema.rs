//! SQLite's schema: numbered SQL files in `migrations/`, compiled in, applied by
//! `store::sql::migrate` (once each, in its own transaction, recorded in `schema_migrations`).

use rusqlite::{params, Connection, TransactionBehavior};

use super::db;
use crate::store::sql::{self, DbError, Migrations};
use crate::store::StoreError;

/// `(version, sql)`, in order. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_tokens_audit.sql")),
    (3, include_str!("migrations/0003_csrs.sql")),
    (4, include_str!("migrations/0004_aliases.sql")),
    (5, include_str!("migrations/0005_blocked_devices.sql")),
    (6, include_str!("migrations/0006_crls.sql")),
    (7, include_str!("migrations/0007_devices.sql")),
    (8, include_str!("migrations/0008_grants_notifications.sql")),
    (9, include_str!("migrations/0009_nodes.sql")),
    (10, include_str!("migrations/0010_ticket_keys.sql")),
    (11, include_str!("migrations/0011_grant_holds.sql")),
    (12, include_str!("migrations/0012_leader.sql")),
    (13, include_str!("migrations/0013_live_sessions.sql")),
    (14, include_str!("migrations/0014_device_claims.sql")),
];

/// The newest schema version this build knows (the tests check it was reached).
#[cfg(test)]
pub(crate) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    sql::migrate(&mut Engine(conn), MIGRATIONS)
}

struct Engine<'a>(&'a mut Connection);

impl Migrations for Engine<'_> {
    fn current(&mut self) -> Result<i64, DbError> {
        self.0
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    INTEGER PRIMARY KEY NOT NULL,
                     applied_at INTEGER NOT NULL
                 )",
            )
            .map_err(db)?;
        self.0
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(db)
    }

    fn apply(&mut self, version: i64, sql: &str, applied_at: i64) -> Result<(), DbError> {
        let tx = self
            .0
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, applied_at],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }
}
