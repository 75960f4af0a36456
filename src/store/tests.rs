//! Store tests on a temporary data directory. Certificates here are opaque bytes with made-up
//! `CertInfo`: the store keeps what `pki` checked, it does not parse certificates itself.

use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::sql::{params, SqlExt};
use super::*;
use crate::pki::Issuer;

fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

/// The audit event of a change made by a test.
fn test_audit() -> Audit {
    Audit::by("test", "admin", "test.change")
}

fn key() -> MasterKey {
    MasterKey::from_bytes(&[42u8; 32]).unwrap()
}

/// The SQLite store in `dir`, for the tests of what only SQLite has.
fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open_with_key(dir, key(), grant_rules(), Clock::system()).unwrap()
}

#[path = "../../tests/common/pg.rs"]
mod pg;

#[path = "sqlite/tests.rs"]
mod sqlite_only;

mod backend;
use backend::*;
mod grant_uses;
use grant_uses::*;

/// The engine a behaviour test runs on: each runs on both (see `on_both_engines!`).
#[derive(Debug, Clone, Copy)]
enum Engine {
    Sqlite,
    Postgres,
}

/// The database of one test: a temporary data directory (SQLite's file, the master key's), and
/// on PostgreSQL a fresh database on the test binary's server. Opening it again reaches the same
/// data.
struct TestDb {
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl TestDb {
    fn new(engine: Engine) -> TestDb {
        TestDb {
            dir: tempfile::tempdir().unwrap(),
            url: match engine {
                Engine::Sqlite => None,
                Engine::Postgres => Some(pg::database()),
            },
        }
    }

    fn open(&self) -> SqlStore {
        self.open_with(key()).unwrap()
    }

    fn open_with(&self, key: MasterKey) -> Result<SqlStore, StoreError> {
        match &self.url {
            None => SqlStore::open_with_key(self.dir.path(), key, grant_rules(), Clock::system()),
            Some(url) => SqlStore::connect(
                &postgres::Target::new(url, None)?,
                key,
                grant_rules(),
                Clock::system(),
            ),
        }
    }
}

/// Grants given for a century and never running out: no test here is about grants (the policy
/// is tested in `grants`, the grant flow through the admin API).
struct LastingGrants;

impl GrantRules for LastingGrants {
    fn terms(&self, granted_at: OffsetDateTime) -> GrantTerms {
        GrantTerms {
            expires_at: granted_at + Duration::days(36_500),
            max_uses: i64::MAX,
        }
    }

    fn status(&self, _grant: &GrantRecord, _now: OffsetDateTime) -> GrantStatus {
        GrantStatus::Active
    }
}

fn grant_rules() -> Arc<dyn GrantRules> {
    Arc::new(LastingGrants)
}

const T0: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

fn new_org(store: &dyn Store, id: &str) -> OrgRecord {
    store
        .create_org(
            &NewOrg {
                id: org(id),
                name: format!("{id} Inc."),
                topic_policy: TopicPolicy::Iot2,
                created_at: T0,
            },
            None,
            &test_audit(),
        )
        .unwrap()
}

/// A store on a fresh database, holding the org `acme`; the database lives as long as it is kept.
fn acme_store(engine: Engine) -> (TestDb, SqlStore, OrgId) {
    let db = TestDb::new(engine);
    let store = db.open();
    new_org(&store, "acme");
    (db, store, org("acme"))
}

const DEACTIVATE: CaPatch = CaPatch {
    active: Some(false),
    alias: None,
    description: None,
    crl_url: None,
    ocsp_mode: None,
    ocsp_url: None,
};

fn info(subject: &str, fingerprint: &str) -> CertInfo {
    CertInfo {
        subject: subject.to_owned(),
        issuer: "CN=Issuer".to_owned(),
        serial: "01ab".to_owned(),
        fingerprint_sha256: fingerprint.to_owned(),
        not_before: datetime!(2024-01-01 00:00:00 UTC),
        not_after: datetime!(9999-12-31 23:59:59 UTC),
        common_name: Some(subject.trim_start_matches("CN=").to_owned()),
        dns_names: vec![],
    }
}

fn new_ca(n: u32, description: &str, at: OffsetDateTime) -> NewCa {
    NewCa {
        der: CertificateDer::from(vec![0x30, n as u8]),
        info: info(&format!("CN=Device CA {n}"), &format!("{n:064x}")),
        description: description.to_owned(),
        key: None,
        key_passphrase: None,
        registered_at: at,
    }
}

const KEY_MARKER: &[u8] = b"-----PLAINTEXT PRIVATE KEY MARKER THAT MUST NEVER REACH THE DISK-----";

fn new_server_cert(n: u32, at: OffsetDateTime) -> NewServerCert {
    let mut key = KEY_MARKER.to_vec();
    key.push(n as u8);
    let mut info = info(
        &format!("CN=acme.messaging.example {n}"),
        &format!("{:064x}", 1000 + n),
    );
    info.dns_names = vec!["acme.messaging.example".to_owned()];
    NewServerCert {
        chain: vec![
            CertificateDer::from(vec![0x30, 0x01, n as u8]),
            CertificateDer::from(vec![0x30, 0x02]),
        ],
        key: PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key)),
        info,
        registered_at: at,
    }
}

#[test]
fn admin_token_env_then_file() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    assert_eq!(admin_token(&dir, Some(" from-env ")).unwrap(), "from-env");
    assert!(!dir.join(ADMIN_TOKEN_FILE).exists());
    let generated = admin_token(&dir, None).unwrap();
    assert_eq!(generated.len(), 43, "32 bytes, base64url without padding");
    assert!(generated
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(
        admin_token(&dir, Some("")).unwrap(),
        generated,
        "file is kept"
    );
    assert_eq!(
        admin_token(&dir, Some("env")).unwrap(),
        "env",
        "env still wins"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let other_dir = parent.path().join("other");
    assert_ne!(admin_token(&other_dir, None).unwrap(), generated);
}

fn orgs_crud(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open();
    let created = store
        .create_org(
            &NewOrg {
                id: org("acme"),
                name: "Acme".into(),
                topic_policy: TopicPolicy::Open,
                created_at: datetime!(2025-01-01 00:00:00.123456789 UTC),
            },
            None,
            &test_audit(),
        )
        .unwrap();
    assert_eq!(
        created.created_at,
        datetime!(2025-01-01 00:00:00.123456 UTC),
        "microseconds, like a read"
    );
    assert_eq!(store.org(&org("acme")).unwrap(), Some(created.clone()));
    let dup = store.create_org(
        &NewOrg {
            id: org("acme"),
            name: "Other".into(),
            topic_policy: TopicPolicy::Iot2,
            created_at: T0,
        },
        None,
        &test_audit(),
    );
    assert!(matches!(dup, Err(StoreError::OrgExists)));
    assert_eq!(store.org(&org("nope")).unwrap(), None);

    let patched = store
        .update_org(
            &org("acme"),
            &OrgPatch {
                name: Some("Acme Ltd".into()),
                topic_policy: None,
                approval_required_roles: None,
            },
            &test_audit(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(patched.name, "Acme Ltd");
    assert_eq!(patched.topic_policy, TopicPolicy::Open);
    let patched = store
        .update_org(
            &org("acme"),
            &OrgPatch {
                name: None,
                topic_policy: Some(TopicPolicy::Iot2),
                approval_required_roles: None,
            },
            &test_audit(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(patched.name, "Acme Ltd");
    assert_eq!(patched.topic_policy, TopicPolicy::Iot2);
    assert_eq!(patched.created_at, created.created_at);
    assert!(store
        .update_org(&org("nope"), &OrgPatch::default(), &test_audit())
        .unwrap()
        .is_none());

    assert!(store.delete_org(&org("acme"), &test_audit()).unwrap());
    assert!(!store.delete_org(&org("acme"), &test_audit()).unwrap());
    assert!(store.org(&org("acme")).unwrap().is_none());
    assert!(store.org_state(&org("acme")).unwrap().is_none());
}

fn orgs_page_in_creation_order(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open();
    // Same created_at for some: the id breaks the tie.
    for (i, id) in ["zeta", "alpha", "mid", "beta", "omega"].iter().enumerate() {
        store
            .create_org(
                &NewOrg {
                    id: org(id),
                    name: id.to_string(),
                    topic_policy: TopicPolicy::Iot2,
                    created_at: T0 + Duration::seconds((i / 2) as i64),
                },
                None,
                &test_audit(),
            )
            .unwrap();
    }
    let mut seen = vec![];
    let mut page = PageRequest {
        limit: 2,
        cursor: None,
    };
    loop {
        let p = store.list_orgs(&page).unwrap();
        assert!(p.items.len() <= 2);
        seen.extend(p.items.iter().map(|o| o.id.as_str().to_owned()));
        match p.next_cursor {
            Some(c) => page.cursor = Some(Cursor::parse(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ["alpha", "zeta", "beta", "mid", "omega"]);
}

fn ca_insert_get_duplicate_and_unknown_org(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open();
    new_org(&store, "acme");
    new_org(&store, "other");
    let ca = store
        .insert_ca(&org("acme"), &new_ca(1, "fleet A", T0), &test_audit())
        .unwrap();
    assert!(ca.active);
    assert_eq!(ca.org, org("acme"));
    assert_eq!(ca.id.len(), 32);
    assert_eq!(ca.info, new_ca(1, "", T0).info);
    assert_eq!(ca.der.as_ref(), &[0x30, 1]);
    let got = store.ca(&org("acme"), &ca.id).unwrap().unwrap();
    assert_eq!(got.info, ca.info);
    assert_eq!(got.description, "fleet A");
    assert_eq!(got.registered_at, T0);

    assert!(matches!(
        store.insert_ca(&org("acme"), &new_ca(1, "again", T0), &test_audit()),
        Err(StoreError::DuplicateCertificate)
    ));
    // The same certificate in another org is another registration.
    store
        .insert_ca(&org("other"), &new_ca(1, "theirs", T0), &test_audit())
        .unwrap();
    // A CA is only found under its own org.
    assert!(store.ca(&org("other"), &ca.id).unwrap().is_none());
    assert!(matches!(
        store.insert_ca(&org("ghost"), &new_ca(2, "", T0), &test_audit()),
        Err(StoreError::UnknownOrg)
    ));
    assert!(matches!(
        store.ca(&org("ghost"), &ca.id),
        Err(StoreError::UnknownOrg)
    ));
    assert!(matches!(
        store.list_cas(&org("ghost"), &CaFilter::default(), &PageRequest::default()),
        Err(StoreError::UnknownOrg)
    ));
}

fn ids(page: &Page<CaRecord>) -> Vec<String> {
    page.items.iter().map(|c| c.description.clone()).collect()
}

fn ca_list_filters(engine: Engine) {
    let (_dir, store, a) = acme_store(engine);
    let descriptions = ["Fleet North", "fleet south", "lab", "Backup"];
    for (i, d) in descriptions.iter().enumerate() {
        store
            .insert_ca(
                &a,
                &new_ca(i as u32, d, T0 + Duration::hours(i as i64)),
                &test_audit(),
            )
            .unwrap();
    }
    let all = PageRequest::default();
    let list = |f: CaFilter| ids(&store.list_cas(&a, &f, &all).unwrap());
    assert_eq!(list(CaFilter::default()), descriptions);
    // q: case-insensitive, description or subject.
    let q = |s: &str| CaFilter {
        q: Some(s.into()),
        ..CaFilter::default()
    };
    assert_eq!(list(q("FLEET")), ["Fleet North", "fleet south"]);
    assert_eq!(list(q("device ca 2")), ["lab"]);
    assert_eq!(list(q("%")), Vec::<String>::new(), "no LIKE wildcards");
    assert_eq!(list(q("")), descriptions);

    let lab = store.list_cas(&a, &q("lab"), &all).unwrap().items[0].clone();
    store
        .update_ca(&a, &lab.id, &DEACTIVATE, &test_audit())
        .unwrap();
    let active = |b| CaFilter {
        active: Some(b),
        ..CaFilter::default()
    };
    assert_eq!(list(active(false)), ["lab"]);
    assert_eq!(list(active(true)), ["Fleet North", "fleet south", "Backup"]);

    let window = CaFilter {
        registered_after: Some(T0),
        registered_before: Some(T0 + Duration::hours(3)),
        ..CaFilter::default()
    };
    assert_eq!(
        list(window),
        ["fleet south", "lab"],
        "both bounds exclusive"
    );
    let combined = CaFilter {
        alias: None,
        q: Some("fleet".into()),
        active: Some(true),
        registered_after: Some(T0 - Duration::seconds(1)),
        registered_before: None,
        grant_status: None,
    };
    assert_eq!(list(combined), ["Fleet North", "fleet south"]);
}

fn ca_paging_is_stable_under_inserts_and_deletes(engine: Engine) {
    let (_dir, store, a) = acme_store(engine);
    // Many with the same registered_at: ids break the tie.
    let mut expected = vec![];
    for i in 0..7u32 {
        let at = T0 + Duration::seconds(i64::from(i / 3));
        let ca = store
            .insert_ca(&a, &new_ca(i, &format!("ca{i}"), at), &test_audit())
            .unwrap();
        expected.push((ca.registered_at, ca.id));
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let filter = CaFilter::default();
    let first = store
        .list_cas(
            &a,
            &filter,
            &PageRequest {
                limit: 3,
                cursor: None,
            },
        )
        .unwrap();
    let first_ids: Vec<String> = first.items.iter().map(|c| c.id.clone()).collect();
    assert_eq!(first_ids, expected[..3]);
    // Between pages: delete a row already seen and one not yet seen, insert one earlier.
    assert!(store.delete_ca(&a, &expected[0], &test_audit()).unwrap());
    assert!(store.delete_ca(&a, &expected[4], &test_audit()).unwrap());
    store
        .insert_ca(
            &a,
            &new_ca(99, "early", T0 - Duration::hours(1)),
            &test_audit(),
        )
        .unwrap();
    let mut rest = vec![];
    let mut cursor = first.next_cursor.clone();
    while let Some(c) = cursor {
        let p = store
            .list_cas(
                &a,
                &filter,
                &PageRequest {
                    limit: 3,
                    cursor: Some(Cursor::parse(&c).unwrap()),
                },
            )
            .unwrap();
        rest.extend(p.items.iter().map(|c| c.id.clone()));
        cursor = p.next_cursor;
    }
    let mut want: Vec<String> = expected[3..].to_vec();
    want.retain(|id| *id != expected[4]);
    assert_eq!(rest, want, "no repeats, no skips");

    // An exact multiple of the limit ends with next_cursor None, not an empty page.
    let p = store
        .list_cas(
            &a,
            &filter,
            &PageRequest {
                limit: 6,
                cursor: None,
            },
        )
        .unwrap();
    assert_eq!(p.items.len(), 6);
    assert!(p.next_cursor.is_none());
}

fn ca_patch_delete_and_cascade(engine: Engine) {
    let (_dir, store, a) = acme_store(engine);
    let ca = store
        .insert_ca(&a, &new_ca(1, "old", T0), &test_audit())
        .unwrap();
    let patched = store
        .update_ca(
            &a,
            &ca.id,
            &CaPatch {
                description: Some("new".into()),
                ..CaPatch::default()
            },
            &test_audit(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(patched.description, "new");
    assert!(patched.active);
    let patched = store
        .update_ca(&a, &ca.id, &DEACTIVATE, &test_audit())
        .unwrap()
        .unwrap();
    assert!(!patched.active);
    assert_eq!(patched.description, "new");
    assert!(store
        .update_ca(&a, "ffff", &CaPatch::default(), &test_audit())
        .unwrap()
        .is_none());
    assert!(store.org_state(&a).unwrap().unwrap().active_cas.is_empty());

    let second = store
        .insert_ca(&a, &new_ca(2, "second", T0), &test_audit())
        .unwrap();
    assert!(store.delete_ca(&a, &second.id, &test_audit()).unwrap());
    assert!(!store.delete_ca(&a, &second.id, &test_audit()).unwrap());

    store
        .insert_server_cert(&a, &new_server_cert(1, T0), &test_audit())
        .unwrap();
    assert!(store.delete_org(&a, &test_audit()).unwrap());
    let conn = store.conn().unwrap();
    for table in ["ca_certificates", "server_certificates"] {
        let n: i64 = conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 0, "{table} rows cascade with the org");
    }
}

fn active_server_cert_lifecycle(engine: Engine) {
    let (_dir, store, a) = acme_store(engine);
    new_org(&store, "other");
    let c1 = store
        .insert_server_cert(&a, &new_server_cert(1, T0), &test_audit())
        .unwrap();
    let c2 = store
        .insert_server_cert(
            &a,
            &new_server_cert(2, T0 + Duration::seconds(1)),
            &test_audit(),
        )
        .unwrap();
    let theirs = store
        .insert_server_cert(&org("other"), &new_server_cert(3, T0), &test_audit())
        .unwrap();

    assert!(store
        .org_state(&a)
        .unwrap()
        .unwrap()
        .active_server_cert
        .is_none());
    assert!(!store
        .set_active_server_cert(&a, Some("ffff"), &test_audit())
        .unwrap());
    assert!(
        !store
            .set_active_server_cert(&a, Some(&theirs.id), &test_audit())
            .unwrap(),
        "another org's certificate"
    );
    assert!(matches!(
        store.set_active_server_cert(&org("ghost"), None, &test_audit()),
        Err(StoreError::UnknownOrg)
    ));
    assert!(store
        .set_active_server_cert(&a, Some(&c2.id), &test_audit())
        .unwrap());

    let state = store.org_state(&a).unwrap().unwrap();
    let (active, key) = state.active_server_cert.unwrap();
    assert_eq!(active.id, c2.id);
    assert!(active.active);
    assert_eq!(key, new_server_cert(2, T0).key);
    assert!(!store.server_cert(&a, &c1.id).unwrap().unwrap().active);
    let listed = store
        .list_server_certs(&a, &ListFilter::default(), &PageRequest::default())
        .unwrap();
    let flags: Vec<(String, bool)> = listed
        .items
        .iter()
        .map(|c| (c.id.clone(), c.active))
        .collect();
    assert_eq!(flags, [(c1.id.clone(), false), (c2.id.clone(), true)]);

    assert!(matches!(
        store.delete_server_cert(&a, &c2.id, &test_audit()),
        Err(StoreError::CertificateActive)
    ));
    assert!(store.delete_server_cert(&a, &c1.id, &test_audit()).unwrap());
    assert!(!store.delete_server_cert(&a, &c1.id, &test_audit()).unwrap());
    assert!(store
        .set_active_server_cert(&a, None, &test_audit())
        .unwrap());
    assert!(store.delete_server_cert(&a, &c2.id, &test_audit()).unwrap());
    assert!(store
        .org_state(&a)
        .unwrap()
        .unwrap()
        .active_server_cert
        .is_none());
    // Deleting an org whose certificate is active works (and cascades).
    let c4 = store
        .insert_server_cert(&org("other"), &new_server_cert(4, T0), &test_audit())
        .unwrap();
    assert!(store
        .set_active_server_cert(&org("other"), Some(&c4.id), &test_audit())
        .unwrap());
    assert!(store.delete_org(&org("other"), &test_audit()).unwrap());
}

fn org_state_has_active_cas_in_order(engine: Engine) {
    let (_dir, store, a) = acme_store(engine);
    let c1 = store
        .insert_ca(&a, &new_ca(1, "one", T0), &test_audit())
        .unwrap();
    let c2 = store
        .insert_ca(
            &a,
            &new_ca(2, "two", T0 + Duration::seconds(1)),
            &test_audit(),
        )
        .unwrap();
    let c3 = store
        .insert_ca(
            &a,
            &new_ca(3, "three", T0 + Duration::seconds(2)),
            &test_audit(),
        )
        .unwrap();
    store
        .update_ca(&a, &c2.id, &DEACTIVATE, &test_audit())
        .unwrap();
    let state = store.org_state(&a).unwrap().unwrap();
    assert_eq!(state.org.id, a);
    let ids: Vec<&str> = state.active_cas.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [c1.id.as_str(), c3.id.as_str()]);
}

fn platform_ca_round_trip(engine: Engine) {
    let db = TestDb::new(engine);
    {
        let store = db.open();
        assert!(store.platform_ca().unwrap().is_none());
        store
            .set_platform_ca(&Issuer {
                cert_der: CertificateDer::from(vec![0x30, 9]),
                key_der: PrivateKeyDer::from(PrivatePkcs8KeyDer::from(KEY_MARKER.to_vec())),
            })
            .unwrap();
    }
    let store = db.open();
    let issuer = store.platform_ca().unwrap().unwrap();
    assert_eq!(issuer.cert_der.as_ref(), &[0x30, 9]);
    assert_eq!(issuer.key_der.secret_der(), KEY_MARKER);
    store
        .set_platform_ca(&Issuer {
            cert_der: CertificateDer::from(vec![0x30, 10]),
            key_der: PrivateKeyDer::from(PrivatePkcs8KeyDer::from(vec![5])),
        })
        .unwrap();
    assert_eq!(
        store.platform_ca().unwrap().unwrap().cert_der.as_ref(),
        &[0x30, 10]
    );
}

#[test]
fn new_ids_are_time_ordered_and_distinct() {
    let a = new_id(T0).unwrap();
    let b = new_id(T0 + Duration::milliseconds(1)).unwrap();
    let c = new_id(T0 + Duration::milliseconds(1)).unwrap();
    assert!(a < b && a < c);
    assert_ne!(b, c);
    assert_eq!(a.len(), 32);
}

fn audit_events(store: &dyn Store, org: &OrgId) -> Vec<AuditEvent> {
    let page = PageRequest {
        limit: 500,
        cursor: None,
    };
    store.list_audit_events(org, &page).unwrap().items
}

fn a_change_is_recorded_with_its_reason_in_its_own_transaction(engine: Engine) {
    let (_dir, store, acme) = acme_store(engine);
    let before = audit_events(&store, &acme).len();
    let mut audit = Audit::by("olga", "operator", "ca_certificate.create");
    audit.reason = Some("ticket 7".into());
    let ca = store.insert_ca(&acme, &new_ca(1, "x", T0), &audit).unwrap();
    let events = audit_events(&store, &acme);
    assert_eq!(events.len(), before + 1);
    let event = events.last().unwrap();
    assert_eq!(
        (event.actor.as_str(), event.actor_role.as_str()),
        ("olga", "operator")
    );
    assert_eq!(event.action, "ca_certificate.create");
    assert_eq!(event.target.as_deref(), Some(ca.id.as_str()));
    assert_eq!(event.reason.as_deref(), Some("ticket 7"));

    // A change that fails (and rolls back) records nothing; nor does one that finds nothing.
    let duplicate = store.insert_ca(&acme, &new_ca(1, "again", T0), &test_audit());
    assert!(matches!(duplicate, Err(StoreError::DuplicateCertificate)));
    assert!(!store.delete_ca(&acme, "nope", &test_audit()).unwrap());
    let missing = store.update_ca(&acme, "nope", &DEACTIVATE, &test_audit());
    assert!(missing.unwrap().is_none());
    assert_eq!(audit_events(&store, &acme).len(), before + 1);
}

fn node_heartbeats_replace_each_other_and_the_last_leader_is_kept(engine: Engine) {
    let db = TestDb::new(engine);
    let store = db.open();
    let beat = |id: &str, seen: OffsetDateTime, sessions: u64| crate::store::NodeRecord {
        node_id: id.to_owned(),
        started_at: T0,
        last_seen: seen,
        sessions,
        version: "1.0.0".to_owned(),
    };
    store.heartbeat(&beat("b", T0, 1)).unwrap();
    store.heartbeat(&beat("a", T0, 2)).unwrap();
    let later = beat("a", T0 + Duration::seconds(5), 7);
    store.heartbeat(&later).unwrap();
    assert_eq!(
        store.nodes().unwrap(),
        vec![later.clone(), beat("b", T0, 1)]
    );
    store.forget_other_nodes("a").unwrap();
    assert_eq!(store.nodes().unwrap(), vec![later]);
    assert_eq!(store.leader().unwrap(), None);
    store.lead("a", T0).unwrap();
    store.lead("b", T0 + Duration::seconds(1)).unwrap();
    assert_eq!(store.leader().unwrap().as_deref(), Some("b"));
}

/// Every behaviour test above, as one `#[test]` per engine. A test left out of this list is dead
/// code, which the build refuses (`-D warnings`): none runs on one engine only.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Engine::Sqlite)
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                super::$name(super::Engine::Postgres)
            })*
        }
    };
}

on_both_engines!(
    orgs_crud,
    orgs_page_in_creation_order,
    ca_insert_get_duplicate_and_unknown_org,
    ca_list_filters,
    ca_paging_is_stable_under_inserts_and_deletes,
    ca_patch_delete_and_cascade,
    active_server_cert_lifecycle,
    org_state_has_active_cas_in_order,
    platform_ca_round_trip,
    a_change_is_recorded_with_its_reason_in_its_own_transaction,
    server_cert_key_is_sealed_and_round_trips,
    a_change_whose_audit_event_fails_is_not_kept,
    newer_schema_is_refused,
    another_master_key_is_refused,
    data_survives_reopen_and_migrations_run_once,
    platform_values_are_created_once,
    a_store_dropped_on_the_runtime_does_not_panic,
    node_heartbeats_replace_each_other_and_the_last_leader_is_kept,
    ticket_keys_are_created_once_sealed_and_forgotten,
    live_sessions_are_listed_per_node_and_forgotten_when_down,
    uses_are_reserved_in_blocks_and_written_exactly_at_a_clean_stop,
    a_store_gone_without_stopping_leaves_every_use_it_made_counted
);
