//! PostgreSQL's schema: numbered SQL files in `migrations/`, compiled in, applied by
//! `store::sql::migrate` as SQLite's are. Nodes starting at once take a session advisory lock
//! first, so one of them migrates and the others find the schema current.

use postgres::Client;

use super::pg;
use crate::store::sql::{self, DbError, Migrations};
use crate::store::StoreError;

/// `(version, sql)`, in order. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_cluster.sql")),
    (3, include_str!("migrations/0003_ticket_keys.sql")),
    (4, include_str!("migrations/0004_grant_holds.sql")),
    (5, include_str!("migrations/0005_leader.sql")),
    (6, include_str!("migrations/0006_live_sessions.sql")),
    (7, include_str!("migrations/0007_device_claims.sql")),
];

/// The newest schema version this build knows (the tests check it was reached).
#[cfg(test)]
pub(crate) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock migrations run under (one more than the write lock).
const MIGRATE_LOCK: i64 = super::WRITE_LOCK + 1;

pub(crate) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .map_err(pg)?;
    let migrated = sql::migrate(&mut Engine(client), MIGRATIONS);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    migrated?;
    unlocked.map_err(pg)?;
    Ok(())
}

struct Engine<'a>(&'a mut Client);

impl Migrations for Engine<'_> {
    fn current(&mut self) -> Result<i64, DbError> {
        self.0
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    BIGINT PRIMARY KEY NOT NULL,
                     applied_at BIGINT NOT NULL
                 )",
            )
            .map_err(pg)?;
        Ok(self
            .0
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(pg)?
            .get(0))
    }

    fn apply(&mut self, version: i64, sql: &str, applied_at: i64) -> Result<(), DbError> {
        let mut tx = self.0.transaction().map_err(pg)?;
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &applied_at],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)
    }
}
