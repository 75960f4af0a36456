//! The SQLite backend's own tests: its files, pragmas and what is on disk, which PostgreSQL has
//! no counterpart of. What any store must do (migrations, the master key check, sealing,
//! transactions) is tested on both engines in `store::tests`, whose helpers these use.

use std::path::Path;

use super::*;

#[test]
fn migrations_are_idempotent_and_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        new_org(&store, "acme");
    }
    let store = open(dir.path());
    assert_eq!(store.org_ids().unwrap(), vec![org("acme")]);
    let conn = store.conn().unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map(sql::params![], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=sqlite::schema::LATEST).collect::<Vec<_>>());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", sql::params![], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", sql::params![], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[cfg(unix)]
#[test]
fn open_creates_data_dir_and_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nested").join("data");
    // Store::open reads PORTCULLIS_MASTER_KEY; no test sets it, so it generates master.key.
    let store = SqliteStore::open(&dir, grant_rules(), Clock::system()).unwrap();
    drop(store);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
    if std::env::var(crypto::MASTER_KEY_ENV).is_err() {
        assert_eq!(mode(&dir.join(crypto::MASTER_KEY_FILE)), 0o600);
    }
    // And it opens again with the key it generated.
    SqliteStore::open(&dir, grant_rules(), Clock::system()).unwrap();
}
