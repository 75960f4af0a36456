//! Grant uses counted exactly (DESIGN §11, §12; the rule is `grant_holds`'s): reserved in blocks,
//! never past `max_uses` however many stores spend, exact once every store stopped cleanly, and
//! never under the uses made when a store vanished without stopping.

use super::*;
use crate::store::grant_holds::RESERVE_BLOCK;

/// Grants that last a century and expire by uses alone, at `max_uses`.
struct CountedGrants(i64);

impl GrantRules for CountedGrants {
    fn terms(&self, granted_at: OffsetDateTime) -> GrantTerms {
        GrantTerms {
            expires_at: granted_at + Duration::days(36_500),
            max_uses: self.0,
        }
    }

    fn status(&self, grant: &GrantRecord, _now: OffsetDateTime) -> GrantStatus {
        if grant.uses >= grant.max_uses {
            GrantStatus::Expired
        } else {
            GrantStatus::Active
        }
    }
}

impl TestDb {
    /// A store (a node) whose grants get `max_uses`.
    fn open_counted(&self, max_uses: i64) -> SqlStore {
        let rules: Arc<dyn GrantRules> = Arc::new(CountedGrants(max_uses));
        match &self.url {
            None => SqlStore::open_with_key(self.dir.path(), key(), rules, Clock::system()),
            Some(url) => SqlStore::connect(
                &postgres::Target::new(url, None).unwrap(),
                key(),
                rules,
                Clock::system(),
            ),
        }
        .unwrap()
    }
}

/// The org `acme` and a CA of it imported with its key: the id of the CA, which holds a grant.
fn granted_ca(store: &SqlStore) -> String {
    new_org(store, "acme");
    let mut ca = new_ca(1, "signs CSRs", T0);
    ca.key = Some(PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
        KEY_MARKER.to_vec(),
    )));
    let ca = store.insert_ca(&org("acme"), &ca, &test_audit()).unwrap();
    assert!(ca.grant.is_some(), "a CA with its key has a grant");
    ca.id
}

/// The grant row as stored: (`uses`, `reserved`, the uses every store holds).
fn stored(store: &SqlStore, ca: &str) -> (i64, i64, i64) {
    store
        .conn()
        .unwrap()
        .query_row(
            "SELECT uses, reserved,
                 (SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM grant_holds h
                  WHERE h.grant_id = g.id)
             FROM grants g WHERE holder_id = ?1",
            [ca],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// `uses` as the store shows it (the store's count plus this store's unwritten spending).
fn shown_uses(store: &SqlStore, ca: &str) -> i64 {
    store.grant_of(&org("acme"), ca).unwrap().unwrap().uses
}

/// Spends uses of the grant on `ca` until `limit` were spent or the grant refuses; how many were.
fn spend(store: &SqlStore, ca: &str, limit: i64) -> i64 {
    let mut spent = 0;
    while spent < limit {
        match store.spend_use(&org("acme"), ca) {
            Ok(Some(_)) => spent += 1,
            Err(StoreError::GrantExpired) => break,
            other => panic!("spend_use: {other:?}"),
        }
    }
    spent
}

pub(super) fn uses_are_reserved_in_blocks_and_written_exactly_at_a_clean_stop(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open_counted(250);
    let ca = granted_ca(&store);
    assert_eq!(spend(&store, &ca, 150), 150);
    assert_eq!(
        shown_uses(&store, &ca),
        150,
        "this store's own count is exact"
    );
    // The first block was written when it ran out; the second is held, 50 of it spent.
    assert_eq!(stored(&store, &ca), (RESERVE_BLOCK, 200, 100));
    store.flush_grants().unwrap();
    assert_eq!(
        stored(&store, &ca),
        (150, 150, 0),
        "unspent uses given back"
    );
    drop(store);

    let store = db.open_counted(250);
    assert_eq!(shown_uses(&store, &ca), 150);
    assert_eq!(spend(&store, &ca, 1000), 100, "never past max_uses");
    let grant = store.grant_of(&org("acme"), &ca).unwrap().unwrap();
    assert_eq!((grant.uses, grant.status), (250, GrantStatus::Expired));
    assert_eq!(stored(&store, &ca), (250, 250, 0));
}

pub(super) fn a_store_gone_without_stopping_leaves_every_use_it_made_counted(engine: Engine) {
    let db = TestDb::new(engine);
    let killed = db.open_counted(10_000);
    let ca = granted_ca(&killed);
    // PostgreSQL: another node, alive throughout (SQLite has one process).
    let survivor = matches!(engine, Engine::Postgres).then(|| db.open_counted(10_000));
    assert_eq!(spend(&killed, &ca, 150), 150);
    if let Some(survivor) = &survivor {
        assert_eq!(spend(survivor, &ca, 30), 30);
    }
    // The killed store never flushes: its connections close, as a kill -9's do. It wrote its
    // first block when it ran out and held a second, 50 of it spent: all 200 count as spent.
    drop(killed);
    let Some(survivor) = survivor else {
        // One process per file: the store opened next counts every share left as spent.
        let reopened = db.open_counted(10_000);
        assert_eq!(shown_uses(&reopened, &ca), 2 * RESERVE_BLOCK);
        assert_eq!(stored(&reopened, &ca), (200, 200, 0));
        return;
    };
    // The survivor counts the dead node's share once PostgreSQL ended its session.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while shown_uses(&survivor, &ca) < 150 + 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead node's uses are still uncounted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(shown_uses(&survivor, &ca), 2 * RESERVE_BLOCK + 30);
    survivor.flush_grants().unwrap();
    assert_eq!(stored(&survivor, &ca), (230, 230, 0));
}

/// PostgreSQL only (SQLite is one process's): two stores on one database stand for two nodes.
/// Spending one grant at once, together they make exactly `max_uses` signatures, and the grant
/// counts exactly that once both stopped. Each node's grants are read meanwhile, as the admin
/// API and the notifier do, which must not block its spending.
#[test]
fn two_nodes_spending_one_grant_never_pass_max_uses() {
    const MAX: i64 = 1_037;
    let db = TestDb::new(Engine::Postgres);
    let nodes = [db.open_counted(MAX), db.open_counted(MAX)];
    let ca = &granted_ca(&nodes[0]);
    let done = &std::sync::atomic::AtomicBool::new(false);
    let made: i64 = std::thread::scope(|scope| {
        for node in &nodes {
            scope.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(shown_uses(node, ca) <= MAX);
                }
            });
        }
        let spending: Vec<_> = nodes
            .iter()
            .map(|node| scope.spawn(move || spend(node, ca, i64::MAX)))
            .collect();
        let made = spending.into_iter().map(|s| s.join().unwrap()).sum();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        made
    });
    assert_eq!(made, MAX, "every use made once, none past max_uses");
    for node in &nodes {
        node.flush_grants().unwrap();
    }
    assert_eq!(stored(&nodes[0], ca), (MAX, MAX, 0));
    let grant = nodes[1].grant_of(&org("acme"), ca).unwrap().unwrap();
    assert_eq!((grant.uses, grant.status), (MAX, GrantStatus::Expired));
}

/// PostgreSQL only: two nodes spending different amounts at once; while both hold a block each
/// shows its own uses and what the other wrote, and once both stopped cleanly `uses` is exact.
#[test]
fn two_nodes_count_exactly_after_both_stop() {
    let db = TestDb::new(Engine::Postgres);
    let nodes = [db.open_counted(1_000_000), db.open_counted(1_000_000)];
    let ca = &granted_ca(&nodes[0]);
    let wanted = [333, 444];
    std::thread::scope(|scope| {
        for (node, n) in nodes.iter().zip(wanted) {
            scope.spawn(move || assert_eq!(spend(node, ca, n), n));
        }
    });
    for (node, n) in nodes.iter().zip(wanted) {
        let shown = shown_uses(node, ca);
        assert!(
            (n..=333 + 444).contains(&shown),
            "a node shows at least its own {n} uses and never more than were made: {shown}"
        );
    }
    let (_, reserved, _) = stored(&nodes[0], ca);
    assert!(reserved <= 333 + 444 + 2 * RESERVE_BLOCK, "{reserved}");
    for node in &nodes {
        node.flush_grants().unwrap();
    }
    assert_eq!(stored(&nodes[1], ca), (777, 777, 0));
    assert_eq!(shown_uses(&nodes[0], ca), 777);
}

/// PostgreSQL only: a signature reaches the store once per block. With the database stopped, a
/// node goes on spending the block it holds, up to the use that ends it, which must be written.
#[test]
fn a_held_block_is_spent_without_the_store() {
    let server = pg::own_server();
    let db = TestDb {
        dir: tempfile::tempdir().unwrap(),
        url: Some(server.database()),
    };
    let store = db.open_counted(1_000_000);
    let ca = granted_ca(&store);
    assert_eq!(spend(&store, &ca, 1), 1, "the first use reserves a block");
    server.stop();
    assert_eq!(spend(&store, &ca, RESERVE_BLOCK - 2), RESERVE_BLOCK - 2);
    let last = store.spend_use(&org("acme"), &ca);
    assert!(
        matches!(&last, Err(e) if e.is_unavailable()),
        "the block's last use is written: {last:?}"
    );
    server.start();
    assert_eq!(spend(&store, &ca, 1), 1);
    store.flush_grants().unwrap();
    assert_eq!(stored(&store, &ca), (RESERVE_BLOCK, RESERVE_BLOCK, 0));
}
