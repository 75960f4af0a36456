//! PostgreSQL migrations: numbered SQL files in `migrations/`, compiled in, each applied once in
//! its own transaction and recorded in `schema_migrations`, as the SQLite ones. Nodes starting at
//! once take a session advisory lock first, so one of them migrates and the others find the
//! schema current; a database written by a newer Portcullis is refused rather than guessed at.

use postgres::Client;
use time::OffsetDateTime;

use super::{pg, StoreError};

/// `(version, sql)`, in order. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/0001_init.sql"))];

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock migrations run under (one more than the write lock).
const MIGRATE_LOCK: i64 = super::WRITE_LOCK + 1;

pub(crate) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .map_err(pg)?;
    let migrated = migrate_locked(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    migrated?;
    unlocked.map_err(pg)?;
    Ok(())
}

fn migrate_locked(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY NOT NULL,
                 applied_at BIGINT NOT NULL
             )",
        )
        .map_err(pg)?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(pg)?
        .get(0);
    if current > LATEST {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this build knows ({LATEST})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let mut tx = client.transaction().map_err(pg)?;
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[version, &crate::store::to_micros(OffsetDateTime::now_utc())],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        tracing::info!(version, "applied store migration");
    }
    Ok(())
}
