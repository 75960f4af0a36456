//! Access grants' rows (DESIGN §11): every key the product signs with for an org — a CA imported
//! with its key, a signing certificate — carries a grant limited in time and in uses. What a grant
//! allows and when it has run out is the `grants` module's to decide; the store keeps the rows, counts
//! uses atomically, and asks the [`GrantRules`] it was opened with inside its transactions, so a
//! change of status and its effects commit together.
//!
//! # Uses
//!
//! A signature spends one use. Uses are reserved in the store in blocks, atomically and never
//! past `max_uses` however many nodes reserve, then spent from memory; what a node spent is
//! written as an increment of `uses` once per block, on a change of status and at a clean stop
//! ([`GrantStore::flush_grants`], which also gives back what it did not spend). What a node that
//! is gone held counts as spent. The rule, and why it holds, are `grant_holds`'s.
//!
//! A use is spent without reaching the store ([`Share`]) unless it ends the node's block or
//! changes the grant's status as this node last saw it: the block's first and last uses, and a
//! change of status, take one write transaction. A renewal voids the renewing node's share;
//! other nodes' shares carry over into the new period (see `renew_grant`).
//!
//! A record's `uses` is the store's `uses` plus what this node spent and has not written yet:
//! exact once every node stopped cleanly; while other nodes hold blocks, short of what they
//! spent since their last write (less than a block each); after a node is killed, at least
//! every use it made (its whole share counts as spent).
//!
//! # Status
//!
//! The status ([`GrantRules::status`]) is evaluated from the clock and the uses whenever a grant is
//! read or spent ([`GrantStore::refresh_grants`]) and written when it changes — only forward
//! (`active` → `warning` → `expired`) until a renewal, since nodes judge from different counts
//! of uses and none may undo another's `warning` or `expired`; a signing
//! certificate's grant expiring suspends the tokens it signed, in the same transaction. An expired
//! grant spends nothing ([`StoreError::GrantExpired`]).

use super::grant_holds::{self, Meter};
use super::sql::{params, OptionalExtension, Params, Row, Sql, SqlExt, Value};
use super::DbError;
use super::{GrantRules, GrantStore};
use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

use time::OffsetDateTime;

use super::filter::Where;
use super::Audit;
use super::{
    from_micros, new_id, records, require_org, to_micros, Page, PageRequest, SqlStore, StoreError,
};
use crate::identity::OrgId;

/// Wrong codes after which a renewal challenge is void.
pub const MAX_CHALLENGE_FAILURES: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantStatus {
    Active,
    Warning,
    Expired,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Warning => "warning",
            GrantStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<GrantStatus> {
        match s {
            "active" => Some(GrantStatus::Active),
            "warning" => Some(GrantStatus::Warning),
            "expired" => Some(GrantStatus::Expired),
            _ => None,
        }
    }
}

/// What holds the key a grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantHolder {
    CaCertificate,
    SigningCertificate,
}

impl GrantHolder {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantHolder::CaCertificate => "ca_certificate",
            GrantHolder::SigningCertificate => "signing_certificate",
        }
    }

    fn from_sql(s: &str) -> Result<GrantHolder, StoreError> {
        match s {
            "ca_certificate" => Ok(GrantHolder::CaCertificate),
            "signing_certificate" => Ok(GrantHolder::SigningCertificate),
            other => Err(StoreError::Corrupt(format!(
                "unknown grant holder {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrantRecord {
    pub id: String,
    pub org: OrgId,
    pub holder: GrantHolder,
    pub holder_id: String,
    pub status: GrantStatus,
    /// Signatures made.
    pub uses: i64,
    pub max_uses: i64,
    pub granted_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Its key was imported from PKCS#12: renewing asks for that file's passphrase.
    pub needs_key_passphrase: bool,
}

/// What a new or renewed grant is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantTerms {
    pub expires_at: OffsetDateTime,
    pub max_uses: i64,
}

/// A renewal that did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalRefused {
    /// No pending challenge, or the code is wrong (the fifth wrong code voids the challenge).
    Invalid,
    /// The challenge's two minutes are over.
    Expired,
    /// The key was imported from PKCS#12 and the passphrase given is missing or wrong (counted
    /// as a wrong code).
    Passphrase,
}

/// The passphrase of an imported PKCS#12 file: a renewal of the grant on its key must present it
/// again. Only a verifier (salted PBKDF2) is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPassphrase(pub String);

impl std::fmt::Debug for KeyPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPassphrase(<redacted>)")
    }
}

const PBKDF2_ROUNDS: u32 = 100_000;
const SALT_LEN: usize = 16;

fn pbkdf2(salt: &[u8], passphrase: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(PBKDF2_ROUNDS).unwrap_or(std::num::NonZeroU32::MIN),
        salt,
        passphrase.as_bytes(),
        &mut out,
    );
    out
}

fn passphrase_verifier(passphrase: &KeyPassphrase) -> Result<Vec<u8>, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    super::crypto::random_bytes(&mut salt)?;
    let mut verifier = salt.to_vec();
    verifier.extend_from_slice(&pbkdf2(&salt, &passphrase.0));
    Ok(verifier)
}

fn passphrase_matches(verifier: &[u8], given: &str) -> bool {
    verifier.len() == SALT_LEN + 32
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            &verifier[SALT_LEN..],
            &pbkdf2(&verifier[..SALT_LEN], given),
        )
        .is_ok()
}

const COLUMNS: &str = "id, org, holder_kind, holder_id, status, uses, max_uses, granted_at, \
                       expires_at, passphrase_verifier IS NOT NULL";

struct GrantRow {
    id: String,
    org: String,
    holder: String,
    holder_id: String,
    status: String,
    uses: i64,
    max_uses: i64,
    granted_at: i64,
    expires_at: i64,
    needs_passphrase: bool,
}

impl GrantRow {
    fn read(row: &Row) -> Result<GrantRow, DbError> {
        Ok(GrantRow {
            id: row.get(0)?,
            org: row.get(1)?,
            holder: row.get(2)?,
            holder_id: row.get(3)?,
            status: row.get(4)?,
            uses: row.get(5)?,
            max_uses: row.get(6)?,
            granted_at: row.get(7)?,
            expires_at: row.get(8)?,
            needs_passphrase: row.get(9)?,
        })
    }

    /// This node's meter of the grant (a new one when it holds none).
    fn meter(&self, shares: &HashMap<String, Share>) -> Meter {
        shares
            .get(&self.id)
            .map_or_else(Meter::default, |s| s.meter)
    }

    /// The record, with the uses this node spent beyond what the row says.
    fn into_record(self, shares: &HashMap<String, Share>) -> Result<GrantRecord, StoreError> {
        let uses = self.uses + self.meter(shares).unwritten;
        Ok(GrantRecord {
            org: super::parse_org_id(&self.org)?,
            holder: GrantHolder::from_sql(&self.holder)?,
            holder_id: self.holder_id,
            status: GrantStatus::parse(&self.status)
                .ok_or_else(|| StoreError::Corrupt(format!("grant status {:?}", self.status)))?,
            uses,
            max_uses: self.max_uses,
            granted_at: from_micros(self.granted_at)?,
            expires_at: from_micros(self.expires_at)?,
            needs_key_passphrase: self.needs_passphrase,
            id: self.id,
        })
    }
}

/// This node's share of a grant: its meter, and the grant as the store held it when the meter
/// last met the store, by which a use spent from memory is judged.
#[derive(Debug, Clone)]
pub(super) struct Share {
    meter: Meter,
    stored: GrantRecord,
}

impl Share {
    /// The share of `grant` as this node sees it (its `uses` counting `meter`'s unwritten ones).
    fn new(grant: &GrantRecord, meter: Meter) -> Share {
        let mut stored = grant.clone();
        stored.uses -= meter.unwritten;
        Share { meter, stored }
    }

    /// Spends one use from memory when the store need not hear of it now: a use is left after
    /// this one (the last one of a block is written with it), and the grant's status stays.
    fn spend(&mut self, rules: &dyn GrantRules, now: OffsetDateTime) -> Option<GrantRecord> {
        let mut grant = self.stored.clone();
        grant.uses += self.meter.unwritten + 1;
        let unchanged = rules.status(&grant, now).max(grant.status) == grant.status;
        if self.meter.left < 2 || grant.status == GrantStatus::Expired || !unchanged {
            return None;
        }
        self.meter.spend().then_some(grant)
    }
}

/// The grant row matching `condition` (SQL over the grants table, `?N` for `params`), if any.
fn grant_row(
    conn: &dyn Sql,
    condition: &str,
    params: impl Params,
) -> Result<Option<GrantRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM grants WHERE {condition}"),
            params,
            GrantRow::read,
        )
        .optional()?)
}

/// Inserts the grant of a key the product was just given, in the caller's transaction.
pub(super) fn insert_grant(
    conn: &dyn Sql,
    rules: &dyn GrantRules,
    org: &OrgId,
    holder: GrantHolder,
    holder_id: &str,
    now: OffsetDateTime,
    passphrase: Option<&KeyPassphrase>,
) -> Result<(), StoreError> {
    let terms = rules.terms(now);
    let verifier = passphrase
        .filter(|p| !p.0.is_empty())
        .map(passphrase_verifier)
        .transpose()?;
    conn.execute(
        "INSERT INTO grants (id, org, holder_kind, holder_id, granted_at, expires_at, max_uses,
             passphrase_verifier)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            new_id(now)?,
            org.as_str(),
            holder.as_str(),
            holder_id,
            to_micros(now),
            to_micros(terms.expires_at),
            terms.max_uses,
            verifier,
        ],
    )?;
    Ok(())
}

/// Writes `grant`'s new status; on expiry of a signing certificate's grant, suspends the active
/// tokens it signed. The caller settles its meter in the same transaction, so the `uses` the
/// status was judged by are written with it.
fn set_status(conn: &dyn Sql, grant: &GrantRecord, status: GrantStatus) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE grants SET status = ?2 WHERE id = ?1",
        params![grant.id, status.as_str()],
    )?;
    if status == GrantStatus::Expired && grant.holder == GrantHolder::SigningCertificate {
        let suspended = conn.execute(
            "UPDATE tokens SET status = 'suspended'
             WHERE org = ?1 AND signing_certificate = ?2 AND status = 'active'",
            params![grant.org.as_str(), grant.holder_id],
        )?;
        tracing::warn!(org = %grant.org, grant = %grant.id, suspended, "grant expired: its tokens are suspended");
    }
    Ok(())
}

impl SqlStore {
    fn shares(&self) -> std::sync::MutexGuard<'_, HashMap<String, Share>> {
        self.grant_shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes what `meter` spent, in the caller's transaction (see `grant_holds::settle`).
    fn settle(&self, conn: &dyn Sql, grant_id: &str, meter: &mut Meter) -> Result<(), StoreError> {
        if meter.unwritten == 0 {
            return Ok(());
        }
        grant_holds::settle(conn, self.db.holder()?, grant_id, meter)
    }

    /// The grant on `holder_id`'s key, read inside the caller's transaction: what a CA or signing
    /// certificate record shows inline.
    pub(super) fn grant_on(
        &self,
        conn: &dyn Sql,
        holder_id: &str,
    ) -> Result<Option<GrantRecord>, StoreError> {
        grant_row(conn, "holder_id = ?1", [holder_id])?
            .map(|row| row.into_record(&self.shares()))
            .transpose()
    }

    fn grant_where(
        &self,
        org: &OrgId,
        column: &str,
        value: &str,
    ) -> Result<Option<GrantRecord>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let condition = format!("org = ?1 AND {column} = ?2");
        grant_row(&conn, &condition, params![org.as_str(), value])?
            .map(|row| row.into_record(&self.shares()))
            .transpose()
    }
}

impl GrantStore for SqlStore {
    fn clock(&self) -> &Clock {
        &self.clock
    }

    fn grant_changed(&self) -> Arc<Notify> {
        self.grant_changed.clone()
    }

    fn ensure_grants(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let tx = self.begin()?;
        let mut missing: Vec<(String, String, GrantHolder)> = Vec::new();
        for (table, holder, keyed) in [
            (
                "ca_certificates",
                GrantHolder::CaCertificate,
                "key_sealed IS NOT NULL",
            ),
            (
                "signing_certificates",
                GrantHolder::SigningCertificate,
                "1 = 1",
            ),
        ] {
            let mut stmt = tx.prepare(&format!(
                "SELECT org, id FROM {table} t WHERE {keyed}
                 AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.holder_id = t.id)"
            ))?;
            let rows = stmt.query_map(params![], |row| Ok((row.get(0)?, row.get(1)?, holder)))?;
            missing.extend(rows.collect::<Result<Vec<_>, DbError>>()?);
        }
        for (org, id, holder) in &missing {
            insert_grant(
                &tx,
                &*self.grant_rules,
                &super::parse_org_id(org)?,
                *holder,
                id,
                now,
                None,
            )?;
        }
        tx.commit()?;
        Ok(missing.len())
    }

    fn refresh_grants(&self, org: Option<&OrgId>) -> Result<Vec<GrantRecord>, StoreError> {
        let now = self.clock.now();
        let tx = self.begin()?;
        grant_holds::write_off_dead(&*tx, &self.db.live_holders())?;
        let rows = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM grants
                 WHERE status != 'expired' AND (CAST(?1 AS TEXT) IS NULL OR org = ?1)"
            ))?;
            let rows = stmt.query_map([org.map(OrgId::as_str)], GrantRow::read)?;
            rows.collect::<Result<Vec<_>, DbError>>()?
        };
        let mut changed = Vec::new();
        let mut shares = self.shares();
        // Written back once the transaction committed.
        let mut settled = Vec::new();
        for row in rows {
            let mut meter = row.meter(&shares);
            let mut grant = row.into_record(&shares)?;
            // Within a period a status only moves on, whichever node judged it last.
            let status = self.grant_rules.status(&grant, now).max(grant.status);
            if status != grant.status {
                self.settle(&*tx, &grant.id, &mut meter)?;
                set_status(&tx, &grant, status)?;
                grant.status = status;
                settled.push(Share::new(&grant, meter));
                changed.push(grant);
            }
        }
        tx.commit()?;
        shares.extend(settled.into_iter().map(|s| (s.stored.id.clone(), s)));
        drop(shares);
        if !changed.is_empty() {
            self.grant_changed.notify_one();
        }
        Ok(changed)
    }

    fn grant(&self, org: &OrgId, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.refresh_grants(Some(org))?;
        self.grant_where(org, "id", id)
    }

    fn grant_of(&self, org: &OrgId, holder_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.refresh_grants(Some(org))?;
        self.grant_where(org, "holder_id", holder_id)
    }

    fn grants_to_notify(&self, org: &OrgId) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM grants WHERE org = ?1 AND status != 'active'
             ORDER BY granted_at, id"
        ))?;
        let shares = self.shares();
        let grants = records(stmt.query_map([org.as_str()], GrantRow::read)?, |r| {
            r.into_record(&shares)
        })?;
        Ok(grants)
    }

    fn list_grants(
        &self,
        org: &OrgId,
        status: Option<GrantStatus>,
        page: &PageRequest,
    ) -> Result<Page<GrantRecord>, StoreError> {
        self.refresh_grants(Some(org))?;
        let mut clause = Where::page("org", "granted_at", "id", org, page);
        if let Some(status) = status {
            clause.and("status = ?", Value::Text(status.as_str().to_owned()));
        }
        let conn = self.conn()?;
        let select = format!("SELECT {COLUMNS} FROM grants");
        let shares = self.shares();
        let records = clause.fetch(&conn, org, &select, page, GrantRow::read, |r| {
            r.into_record(&shares)
        })?;
        Ok(Page::from_rows(records, page.limit(), |g| {
            (g.granted_at, g.id.as_str())
        }))
    }

    fn spend_use(&self, org: &OrgId, holder_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let now = self.clock.now();
        {
            let mut shares = self.shares();
            let held = shares
                .values_mut()
                .find(|s| s.stored.holder_id == holder_id && s.stored.org == *org);
            if let Some(grant) = held.and_then(|share| share.spend(&*self.grant_rules, now)) {
                return Ok(Some(grant));
            }
        }
        // The shares are locked after the transaction is open, as everywhere: a writer waiting
        // for them never holds the database's write lock against one holding them.
        let tx = self.begin()?;
        let Some(row) = grant_row(
            &tx,
            "org = ?1 AND holder_id = ?2",
            params![org.as_str(), holder_id],
        )?
        else {
            return Ok(None);
        };
        let mut shares = self.shares();
        // A copy, written back only once the transaction committed: a reservation the store
        // did not record must never be spent from memory.
        let mut meter = row.meter(&shares);
        let mut grant = row.into_record(&shares)?;
        let stored_status = grant.status;
        // Within a period a status only moves on, whichever node judged it last.
        let before = self.grant_rules.status(&grant, now).max(stored_status);
        if before == GrantStatus::Expired {
            if stored_status != GrantStatus::Expired {
                self.settle(&*tx, &grant.id, &mut meter)?;
                set_status(&tx, &grant, before)?;
                tx.commit()?;
                grant.status = before;
                shares.insert(grant.id.clone(), Share::new(&grant, meter));
                self.grant_changed.notify_one();
            }
            return Err(StoreError::GrantExpired);
        }
        if meter.left == 0 {
            grant_holds::write_off_dead(&*tx, &self.db.live_holders())?;
            grant_holds::reserve(&*tx, self.db.holder()?, &grant.id, &mut meter)?;
            // Settled, and other nodes' shares perhaps written off: `uses` moved.
            grant.uses =
                tx.query_row("SELECT uses FROM grants WHERE id = ?1", [&grant.id], |r| {
                    r.get(0)
                })?;
        }
        let spent = meter.spend();
        grant.uses += i64::from(spent);
        let after = self.grant_rules.status(&grant, now).max(stored_status);
        // A node whose block ran out writes what it spent at once: the uses it made are then
        // in the store even if it never signs again.
        if after != stored_status || meter.left == 0 {
            self.settle(&*tx, &grant.id, &mut meter)?;
        }
        if after != stored_status {
            set_status(&tx, &grant, after)?;
            grant.status = after;
        }
        tx.commit()?;
        shares.insert(grant.id.clone(), Share::new(&grant, meter));
        drop(shares);
        if after != stored_status {
            self.grant_changed.notify_one();
        }
        if !spent {
            // Every use is spent, or held by other nodes.
            return Err(StoreError::GrantExpired);
        }
        Ok(Some(grant))
    }

    fn flush_grants(&self) -> Result<(), StoreError> {
        if self.shares().is_empty() {
            return Ok(());
        }
        let holder = self.db.holder()?;
        let tx = self.begin()?;
        let mut shares = self.shares();
        for (id, share) in shares.iter() {
            grant_holds::give_back(&*tx, holder, id, share.meter)?;
        }
        tx.commit()?;
        shares.clear();
        Ok(())
    }

    fn open_challenge(
        &self,
        org: &OrgId,
        id: &str,
        code_sha256: &[u8],
        expires_at: OffsetDateTime,
        audit: &Audit,
    ) -> Result<Option<()>, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let updated = tx.execute(
            "UPDATE grants SET challenge_sha256 = ?3, challenge_expires_at = ?4,
                 challenge_failures = 0
             WHERE org = ?1 AND id = ?2",
            params![org.as_str(), id, code_sha256, to_micros(expires_at)],
        )?;
        if updated > 0 {
            audit.record(&tx, org, Some(id))?;
        }
        tx.commit()?;
        Ok((updated > 0).then_some(()))
    }

    fn renew_grant(
        &self,
        org: &OrgId,
        id: &str,
        code_sha256: &[u8],
        passphrase: Option<&str>,
        audit: &Audit,
    ) -> Result<Option<Result<GrantRecord, RenewalRefused>>, StoreError> {
        let now = self.clock.now();
        let tx = self.begin()?;
        require_org(&tx, org)?;
        type Challenge = (Option<Vec<u8>>, Option<i64>, i64, Option<Vec<u8>>);
        let challenge: Option<Challenge> = tx
            .query_row(
                "SELECT challenge_sha256, challenge_expires_at, challenge_failures,
                     passphrase_verifier FROM grants
                 WHERE org = ?1 AND id = ?2",
                params![org.as_str(), id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        let Some((expected, deadline, failures, verifier)) = challenge else {
            return Ok(None);
        };
        let (Some(expected), Some(deadline)) = (expected, deadline) else {
            return Ok(Some(Err(RenewalRefused::Invalid)));
        };
        let clear = "UPDATE grants SET challenge_sha256 = NULL, challenge_expires_at = NULL,
                         challenge_failures = 0 WHERE id = ?1";
        if to_micros(now) > deadline {
            tx.execute(clear, [id])?;
            tx.commit()?;
            return Ok(Some(Err(RenewalRefused::Expired)));
        }
        let code_wrong =
            aws_lc_rs::constant_time::verify_slices_are_equal(&expected, code_sha256).is_err();
        let passphrase_wrong = verifier
            .is_some_and(|verifier| !passphrase.is_some_and(|p| passphrase_matches(&verifier, p)));
        if code_wrong || passphrase_wrong {
            if failures + 1 >= MAX_CHALLENGE_FAILURES {
                tx.execute(clear, [id])?;
            } else {
                tx.execute(
                    "UPDATE grants SET challenge_failures = challenge_failures + 1 WHERE id = ?1",
                    [id],
                )?;
            }
            tx.commit()?;
            return Ok(Some(Err(if code_wrong {
                RenewalRefused::Invalid
            } else {
                RenewalRefused::Passphrase
            })));
        }
        tx.execute(clear, [id])?;
        // A grant that ran out without anyone noticing yet is expired first: its tokens are
        // suspended, as they would have been, and stay so after the renewal.
        let vanished = || StoreError::Corrupt("a grant vanished inside its transaction".into());
        let held = grant_row(&tx, "id = ?1", [id])?
            .ok_or_else(vanished)?
            .into_record(&self.shares())?;
        if held.status != GrantStatus::Expired
            && self.grant_rules.status(&held, now) == GrantStatus::Expired
        {
            set_status(&tx, &held, GrantStatus::Expired)?;
        }
        // This node's share of the period that ended is void. Other nodes' shares carry over
        // into the new one, so the uses they go on spending count (and those they spent before
        // and had not written: an over-count, never an under-count).
        tx.execute(
            "DELETE FROM grant_holds WHERE grant_id = ?1 AND holder = ?2",
            params![id, self.db.holder()?],
        )?;
        let terms = self.grant_rules.terms(now);
        tx.execute(
            "UPDATE grants SET granted_at = ?2, expires_at = ?3, uses = 0,
                 reserved = (SELECT COALESCE(SUM(held), 0) FROM grant_holds WHERE grant_id = ?1),
                 max_uses = ?4, status = 'active'
             WHERE id = ?1",
            params![
                id,
                to_micros(now),
                to_micros(terms.expires_at),
                terms.max_uses,
            ],
        )?;
        let mut shares = self.shares();
        shares.remove(id);
        let grant = grant_row(&tx, "id = ?1", [id])?
            .ok_or_else(vanished)?
            .into_record(&shares)?;
        drop(shares);
        audit.record(&tx, org, Some(id))?;
        tx.commit()?;
        self.grant_changed.notify_one();
        Ok(Some(Ok(grant)))
    }
}
