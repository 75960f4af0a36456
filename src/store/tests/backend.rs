//! What any store must do underneath its areas, on both engines: keys sealed and bound to their
//! row, a change and its audit event in one transaction, migrations run once, the master key
//! check, and what the platform holds once for every node.

use super::*;

pub(super) fn server_cert_key_is_sealed_and_round_trips(engine: Engine) {
    let (db, store, a) = acme_store(engine);
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

    // SQLite: checkpoint so the rows are in the main file too, then look for the key in every
    // file.
    if db.url.is_none() {
        let conn = store.conn().unwrap();
        let _: i64 = conn
            .query_row("PRAGMA wal_checkpoint(FULL)", params![], |r| r.get(0))
            .unwrap();
    }
    for entry in std::fs::read_dir(db.dir.path()).unwrap() {
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
    let tx = store.begin().unwrap();
    tx.execute(
        "UPDATE server_certificates SET key_sealed =
             (SELECT key_sealed FROM server_certificates WHERE id = ?1) WHERE id = ?2",
        [&cert.id, &other.id],
    )
    .unwrap();
    tx.commit().unwrap();
    assert!(matches!(
        store.server_cert_key(&a, &other.id),
        Err(StoreError::Corrupt(_))
    ));
}

/// Runs `statements` in one write transaction.
pub(super) fn write_sql(store: &SqlStore, statements: &[&str]) {
    let tx = store.begin().unwrap();
    for statement in statements {
        tx.execute(statement, params![]).unwrap();
    }
    tx.commit().unwrap();
}

/// Makes every audit insert fail, as a full disk between the change and its record would.
pub(super) fn refuse_audit_events(db: &TestDb, store: &SqlStore) {
    match db.url {
        None => write_sql(
            store,
            &["CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
               BEGIN SELECT RAISE(ABORT, 'audit refused'); END;"],
        ),
        Some(_) => write_sql(
            store,
            &[
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
                 FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
            ],
        ),
    }
}

pub(super) fn a_change_whose_audit_event_fails_is_not_kept(engine: Engine) {
    let (db, store, acme) = acme_store(engine);
    let ca = store
        .insert_ca(&acme, &new_ca(1, "kept", T0), &test_audit())
        .unwrap();
    let cert = store
        .insert_server_cert(&acme, &new_server_cert(1, T0), &test_audit())
        .unwrap();
    let before = audit_events(&store, &acme).len();
    refuse_audit_events(&db, &store);

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

    let drop = match db.url {
        None => "DROP TRIGGER refuse_audit",
        Some(_) => "DROP TRIGGER refuse_audit ON audit_events",
    };
    write_sql(&store, &[drop]);
    assert_eq!(audit_events(&store, &acme).len(), before);
}

pub(super) fn newer_schema_is_refused(engine: Engine) {
    let db = TestDb::new(engine);
    write_sql(
        &db.open(),
        &["INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)"],
    );
    assert!(matches!(db.open_with(key()), Err(StoreError::Corrupt(_))));
}

pub(super) fn another_master_key_is_refused(engine: Engine) {
    let db = TestDb::new(engine);
    drop(db.open());
    let other = MasterKey::from_bytes(&[1u8; 32]).unwrap();
    assert!(matches!(db.open_with(other), Err(StoreError::MasterKey(_))));
    db.open();
}

pub(super) fn data_survives_reopen_and_migrations_run_once(engine: Engine) {
    let db = TestDb::new(engine);
    new_org(&db.open(), "acme");
    let store = db.open();
    assert_eq!(store.org_ids().unwrap(), vec![org("acme")]);
    let conn = store.conn().unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map(params![], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let latest = match engine {
        Engine::Sqlite => sqlite::schema::LATEST,
        Engine::Postgres => postgres::schema::LATEST,
    };
    assert_eq!(versions, (1..=latest).collect::<Vec<_>>());
}

pub(super) fn platform_values_are_created_once(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open();
    let first = crate::pki::generate_platform_ca().unwrap();
    let second = crate::pki::generate_platform_ca().unwrap();
    let kept = store.create_platform_ca(&first).unwrap();
    assert_eq!(kept.cert_der, first.cert_der);
    // Another node starting later (another store on the same database) loads the first one.
    let other = db.open();
    let loaded = other.create_platform_ca(&second).unwrap();
    assert_eq!(loaded.cert_der, first.cert_der);
    assert_eq!(loaded.key_der.secret_der(), first.key_der.secret_der());

    assert_eq!(
        store.shared_admin_token("first-token").unwrap(),
        "first-token"
    );
    assert_eq!(
        other.shared_admin_token("second-token").unwrap(),
        "first-token"
    );

    assert!(store.default_server_cert().unwrap().is_none());
    let (chain, key) = crate::pki::issue_server_cert(&first, &["*.example.com".into()]).unwrap();
    store.set_default_server_cert(&chain, &key).unwrap();
    let (loaded_chain, loaded_key) = other.default_server_cert().unwrap().unwrap();
    assert_eq!(loaded_chain, chain);
    assert_eq!(loaded_key.secret_der(), key.secret_der());
}

/// The last reference to a store may go on a runtime worker (a server's shutdown): closing it
/// must not block there (PostgreSQL's client would panic, "Cannot start a runtime from within a
/// runtime").
pub(super) fn a_store_dropped_on_the_runtime_does_not_panic(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open();
    new_org(&store, "acme");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move { drop(store) });
    assert_eq!(db.open().org_ids().unwrap(), vec![org("acme")]);
}

/// PostgreSQL only (SQLite is one process's): nodes starting at once on a fresh database migrate
/// it once, under the advisory lock, and all end up with the one platform CA the first created.
#[test]
fn nodes_starting_at_once_migrate_once_and_share_one_platform_ca() {
    let db = TestDb::new(Engine::Postgres);
    let barrier = std::sync::Barrier::new(4);
    let cas: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let nodes: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let store = db.open();
                    let mine = crate::pki::generate_platform_ca().unwrap();
                    store.create_platform_ca(&mine).unwrap().cert_der.to_vec()
                })
            })
            .collect();
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    assert!(cas.iter().all(|ca| *ca == cas[0]), "one platform CA");
    let store = db.open();
    let conn = store.conn().unwrap();
    let applied: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_migrations", params![], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(applied, postgres::schema::LATEST);
}

/// Ticket keys: created once per org and epoch (a second node, or a second call, gets the same),
/// sealed and bound to their row, older epochs forgotten, none for an unknown org.
pub(super) fn ticket_keys_are_created_once_sealed_and_forgotten(engine: Engine) {
    let (db, store, a) = acme_store(engine);
    new_org(&store, "beta");
    let first = store.ticket_keys(&a, 100).unwrap();
    assert_eq!(
        first.iter().map(|k| k.epoch).collect::<Vec<_>>(),
        [100, 101]
    );
    // Another node on the same database gets the same keys.
    let other_node = db.open();
    let again = other_node.ticket_keys(&a, 100).unwrap();
    assert_eq!(secrets(&again), secrets(&first));
    assert_ne!(
        secrets(&store.ticket_keys(&org("beta"), 100).unwrap()),
        secrets(&first),
        "two orgs share a key"
    );
    // The epoch turns: the previous key is still there, the next one created.
    let turned = other_node.ticket_keys(&a, 101).unwrap();
    assert_eq!(
        turned.iter().map(|k| k.epoch).collect::<Vec<_>>(),
        [100, 101, 102]
    );
    assert_eq!(secrets(&turned)[..2], secrets(&first)[..]);
    // Two epochs on, 100 is forgotten, for every org.
    store.ticket_keys(&a, 102).unwrap();
    let left: i64 = store
        .conn()
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM ticket_keys WHERE epoch < 101",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    assert!(matches!(
        store.ticket_keys(&org("nope"), 100),
        Err(StoreError::UnknownOrg)
    ));
    // Sealed and bound to its row: moved to another epoch, it does not open.
    write_sql(
        &store,
        &[
            "UPDATE ticket_keys SET key_sealed = (SELECT key_sealed FROM ticket_keys
             WHERE org = 'acme' AND epoch = 102) WHERE org = 'acme' AND epoch = 103",
        ],
    );
    assert!(matches!(
        store.ticket_keys(&a, 102),
        Err(StoreError::Corrupt(_))
    ));
}

fn secrets(keys: &[TicketKey]) -> Vec<[u8; 32]> {
    keys.iter().map(|k| k.secret).collect()
}

/// What a node tells the others (`NodeStore::tell_nodes`) reaches a connection listening on the
/// nodes' channel, every message, in the order told, however many go in one round trip, packed
/// several to a notification.
#[test]
fn news_told_in_one_round_trip_arrives_whole_and_in_order() {
    use ::postgres::fallible_iterator::FallibleIterator;
    let db = TestDb::new(Engine::Postgres);
    let store = db.open();
    let url = db.url.as_deref().unwrap();
    let mut listener = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    listener.batch_execute("LISTEN portcullis_node").unwrap();
    let told: Vec<NodeMessage> = (0..300)
        .map(|session| NodeMessage {
            from: "node-1".into(),
            news: NodeNews::Admitted {
                org: "acme".into(),
                client_id: format!("d:acme:sensor:dev{session}"),
                session,
            },
        })
        .collect();
    store.tell_nodes(&told[..1]).unwrap();
    store.tell_nodes(&told[1..]).unwrap();
    // Packed several to a notification, each within PostgreSQL's 8000 bytes.
    let mut heard: Vec<NodeMessage> = Vec::new();
    let mut notifications = 0;
    let mut notifications_of = listener.notifications();
    let mut waiting = notifications_of.timeout_iter(std::time::Duration::from_secs(5));
    while heard.len() < told.len() {
        let notification = waiting.next().unwrap().expect("every message heard");
        assert!(notification.payload().len() <= 8000);
        let packed: Vec<NodeMessage> = serde_json::from_str(notification.payload()).unwrap();
        heard.extend(packed);
        notifications += 1;
    }
    assert_eq!(heard, told);
    assert!(
        notifications < 20,
        "{notifications} notifications for 300 messages"
    );
}

fn node_session(
    node_id: &str,
    session: u64,
    client_id: &str,
    connected_at: OffsetDateTime,
) -> NodeSession {
    NodeSession {
        node_id: node_id.into(),
        session,
        org: org("acme"),
        client_id: client_id.into(),
        identity: "d:sensor:dev1".into(),
        ca_id: "ca-1".into(),
        fingerprint_sha256: "ab".repeat(32),
        serial: "01".into(),
        protocol: 5,
        peer: Some("127.0.0.1:50000".into()),
        connected_at,
        claims: vec!["d:sensor:dev1".into(), "a:dash".into()],
        also_ca_ids: vec!["ca-0".into()],
    }
}

fn beat(store: &SqlStore, node_id: &str, last_seen: OffsetDateTime) {
    store
        .heartbeat(&NodeRecord {
            node_id: node_id.into(),
            started_at: T0,
            last_seen,
            sessions: 0,
            version: "test".into(),
        })
        .unwrap();
}

/// The cluster-wide session list: each node's rows as it wrote them, another node's only while it
/// is up, paged in `(connected_at, client_id)` order; a node's rows replaced whole, and those of
/// nodes down forgotten.
pub(super) fn live_sessions_are_listed_per_node_and_forgotten_when_down(engine: Engine) {
    let (_db, store, a) = acme_store(engine);
    new_org(&store, "beta");
    let now = OffsetDateTime::now_utc();
    for node in ["node-1", "node-2", "node-3"] {
        beat(&store, node, now);
    }
    let t = |s: i64| T0 + Duration::seconds(s);
    store
        .sessions_changed(
            "node-2",
            &[
                node_session("node-2", 1, "d:acme:sensor:b", t(2)),
                node_session("node-2", 2, "d:acme:sensor:a", t(2)),
                node_session("node-2", 3, "d:acme:sensor:c", t(1)),
            ],
            &[],
        )
        .unwrap();
    let mut other_org = node_session("node-3", 1, "d:beta:sensor:x", t(0));
    other_org.org = org("beta");
    store
        .sessions_changed(
            "node-3",
            &[
                node_session("node-3", 7, "d:acme:sensor:d", t(3)),
                other_org,
            ],
            &[],
        )
        .unwrap();
    // Opened and closed in one batch: not listed; a second write of a row leaves it as it is.
    store
        .sessions_changed(
            "node-2",
            &[
                node_session("node-2", 4, "d:acme:sensor:gone", t(4)),
                node_session("node-2", 1, "d:acme:sensor:b", t(9)),
            ],
            &[4],
        )
        .unwrap();

    let listed = |except: &str, page: &PageRequest| {
        store
            .other_nodes_sessions(&a, except, now - Duration::seconds(15), page)
            .unwrap()
            .into_iter()
            .map(|s| (s.node_id, s.client_id))
            .collect::<Vec<_>>()
    };
    let pair = |node: &str, id: &str| (node.to_owned(), format!("d:acme:sensor:{id}"));
    let all = PageRequest::default();
    assert_eq!(
        listed("node-1", &all),
        [
            pair("node-2", "c"),
            pair("node-2", "a"),
            pair("node-2", "b"),
            pair("node-3", "d")
        ]
    );
    // The asking node's own rows are left out (it lists them from memory).
    assert_eq!(listed("node-3", &all).len(), 3);
    // One page and one more row, after the cursor.
    let page = PageRequest {
        limit: 1,
        cursor: Some(Cursor::after(to_micros(t(2)), "d:acme:sensor:a")),
    };
    assert_eq!(
        listed("node-1", &page),
        [pair("node-2", "b"), pair("node-3", "d")]
    );
    let whole = store
        .other_nodes_sessions(&a, "node-1", now - Duration::seconds(15), &all)
        .unwrap();
    assert_eq!(whole[0], node_session("node-2", 3, "d:acme:sensor:c", t(1)));
    assert!(matches!(
        store.other_nodes_sessions(&org("nope"), "node-1", now, &all),
        Err(StoreError::UnknownOrg)
    ));

    // Node 2's heartbeat grows old: its rows are not listed, then forgotten.
    beat(&store, "node-2", now - Duration::seconds(60));
    assert_eq!(listed("node-1", &all), [pair("node-3", "d")]);
    store
        .forget_sessions_of_nodes_down(now - Duration::seconds(15))
        .unwrap();
    beat(&store, "node-2", now);
    assert_eq!(listed("node-1", &all), [pair("node-3", "d")]);

    // A node's rows replaced whole (its start, or after lost news).
    store
        .replace_sessions(
            "node-3",
            &[node_session("node-3", 1, "d:acme:sensor:e", t(5))],
        )
        .unwrap();
    assert_eq!(listed("node-1", &all), [pair("node-3", "e")]);
    store.replace_sessions("node-3", &[]).unwrap();
    assert!(listed("node-1", &all).is_empty());

    // More rows than one statement takes, in and out.
    let many: Vec<_> = (1..=600)
        .map(|n| node_session("node-3", n, &format!("d:acme:sensor:m{n}"), t(6)))
        .collect();
    let rows_of_node_3 = || -> i64 {
        store
            .conn()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM live_sessions WHERE node_id = 'node-3'",
                params![],
                |r| r.get(0),
            )
            .unwrap()
    };
    store.replace_sessions("node-3", &many).unwrap();
    assert_eq!(rows_of_node_3(), 600);
    let closed: Vec<u64> = (1..=599).collect();
    store.sessions_changed("node-3", &[], &closed).unwrap();
    assert_eq!(rows_of_node_3(), 1);
}
