//! The SQLite implementation's own tests: its files, migrations, master key check, sealing on
//! disk and transactions, which the interface cannot see. What any store must do is tested
//! through `dyn Store` in the parent module.

use std::path::Path;

use super::*;

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SqliteStore>();
}

#[test]
fn migrations_are_idempotent_and_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        new_org(&store, "acme");
    }
    let store = open(dir.path());
    assert_eq!(store.org_ids().unwrap(), vec![org("acme")]);
    let conn = store.conn();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=schema::LATEST).collect::<Vec<_>>());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .conn()
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)",
                [],
            )
            .unwrap();
    }
    assert!(matches!(
        SqliteStore::open_with_key(dir.path(), key(), grant_rules(), Clock::system()),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn another_master_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let other = MasterKey::from_bytes(&[1u8; 32]).unwrap();
    assert!(matches!(
        SqliteStore::open_with_key(dir.path(), other, grant_rules(), Clock::system()),
        Err(StoreError::MasterKey(_))
    ));
    open(dir.path());
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

#[test]
fn server_cert_key_is_sealed_and_round_trips() {
    let (dir, store, a) = acme_sqlite();
    let new = new_server_cert(1, T0);
    let cert = store.insert_server_cert(&a, &new, &test_audit()).unwrap();
    assert!(!cert.active, "a new server certificate is not active");
    assert_eq!(cert.chain, new.chain);
    assert_eq!(cert.info, new.info);
    assert_eq!(
        store.server_cert_key(&a, &cert.id).unwrap().unwrap(),
        new.key
    );
    assert!(store.server_cert_key(&a, "ffff").unwrap().is_none());
    assert!(matches!(
        store.insert_server_cert(&a, &new_server_cert(1, T0), &test_audit()),
        Err(StoreError::DuplicateCertificate)
    ));

    // Checkpoint so the rows are in the main file too, then look for the key in every file.
    store
        .conn()
        .execute_batch("PRAGMA wal_checkpoint(FULL)")
        .unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(KEY_MARKER.len()).any(|w| w == KEY_MARKER),
            "plaintext key on disk"
        );
    }
    // The sealed key is bound to its row: moved to another row, it does not open.
    let other = store
        .insert_server_cert(&a, &new_server_cert(2, T0), &test_audit())
        .unwrap();
    store
        .conn()
        .execute(
            "UPDATE server_certificates SET key_sealed =
                 (SELECT key_sealed FROM server_certificates WHERE id = ?1) WHERE id = ?2",
            [&cert.id, &other.id],
        )
        .unwrap();
    assert!(matches!(
        store.server_cert_key(&a, &other.id),
        Err(StoreError::Corrupt(_))
    ));
}

/// Makes every audit insert fail, as a full disk between the change and its record would.
fn refuse_audit_events(store: &SqliteStore) {
    store
        .conn()
        .execute_batch(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END;",
        )
        .unwrap();
}

#[test]
fn a_change_whose_audit_event_fails_is_not_kept() {
    let (_dir, store, acme) = acme_sqlite();
    let ca = store
        .insert_ca(&acme, &new_ca(1, "kept", T0), &test_audit())
        .unwrap();
    let cert = store
        .insert_server_cert(&acme, &new_server_cert(1, T0), &test_audit())
        .unwrap();
    let before = audit_events(&store, &acme).len();
    refuse_audit_events(&store);

    assert!(store
        .insert_ca(&acme, &new_ca(2, "lost", T0), &test_audit())
        .is_err());
    assert!(store
        .update_ca(&acme, &ca.id, &DEACTIVATE, &test_audit())
        .is_err());
    assert!(store
        .set_active_server_cert(&acme, Some(&cert.id), &test_audit())
        .is_err());
    assert!(store
        .delete_server_cert(&acme, &cert.id, &test_audit())
        .is_err());
    assert!(store.delete_ca(&acme, &ca.id, &test_audit()).is_err());
    let patch = OrgPatch {
        name: Some("renamed".into()),
        ..OrgPatch::default()
    };
    assert!(store.update_org(&acme, &patch, &test_audit()).is_err());
    assert!(store.delete_org(&acme, &test_audit()).is_err());
    let other = NewOrg {
        id: org("other"),
        name: "Other".into(),
        topic_policy: TopicPolicy::Iot2,
        created_at: T0,
    };
    assert!(store.create_org(&other, None, &test_audit()).is_err());

    // Nothing of any of them was kept.
    let page = PageRequest {
        limit: 500,
        cursor: None,
    };
    let cas = store.list_cas(&acme, &CaFilter::default(), &page).unwrap();
    assert_eq!(cas.items.len(), 1);
    assert!(cas.items[0].active, "the CA was deactivated");
    assert!(store.server_cert(&acme, &cert.id).unwrap().is_some());
    assert_eq!(store.active_server_cert_id(&acme).unwrap(), None);
    assert_eq!(store.org(&acme).unwrap().unwrap().name, "acme Inc.");
    assert!(store.org(&org("other")).unwrap().is_none());

    store
        .conn()
        .execute_batch("DROP TRIGGER refuse_audit")
        .unwrap();
    assert_eq!(audit_events(&store, &acme).len(), before);
}
