//! Schema migrations: numbered SQL files in `migrations/`, compiled in, each applied once in its
//! own transaction and recorded in `schema_migrations`. A database written by a newer Portcullis
//! (a version this build does not know) is refused rather than guessed at.

use rusqlite::{params, Connection, TransactionBehavior};
use time::OffsetDateTime;

use super::{db, StoreError};

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
];

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(db)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(db)?;
    if current > LATEST {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this build knows ({LATEST})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        apply(conn, *version, sql).map_err(db)?;
        tracing::info!(version, "applied store migration");
    }
    Ok(())
}

fn apply(conn: &mut Connection, version: i64, sql: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(sql)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
        params![version, crate::store::to_micros(OffsetDateTime::now_utc())],
    )?;
    tx.commit()
}
