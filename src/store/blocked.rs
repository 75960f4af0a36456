//! Queries on `blocked_devices`: the org's device blocklist.

use super::sql::{params, Row, Sql, SqlExt};
use super::BlocklistStore;
use super::DbError;
use time::OffsetDateTime;

use super::Audit;
use super::{
    from_micros, new_id, records, require_org, to_micros, truncate_to_micros, Page, PageRequest,
    SqlStore, StoreError,
};
use crate::identity::{Identity, OrgId};

/// What one blocklist entry blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockTarget {
    /// Every certificate claiming this identity.
    Identity(Identity),
    /// One certificate, by the SHA-256 of its DER (lower-case hex).
    Fingerprint(String),
    /// One certificate, by its serial (lower-case hex) under one of the org's CAs.
    Serial { ca_id: String, serial: String },
}

#[derive(Debug, Clone)]
pub struct BlockedDevice {
    pub id: String,
    pub org: OrgId,
    pub target: BlockTarget,
    pub reason: String,
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

pub struct NewBlock {
    pub target: BlockTarget,
    pub reason: String,
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

const COLUMNS: &str =
    "id, identity, fingerprint_sha256, ca_id, serial, reason, created_by, created_at";

type BlockRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
);

fn read(row: &Row) -> Result<BlockRow, DbError> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn into_record(org: &OrgId, row: BlockRow) -> Result<BlockedDevice, StoreError> {
    let (id, identity, fingerprint, ca_id, serial, reason, created_by, created_at) = row;
    let target = match (identity, fingerprint, ca_id, serial) {
        (Some(identity), None, None, None) => BlockTarget::Identity(
            Identity::parse(&identity)
                .ok_or_else(|| StoreError::Corrupt(format!("blocked identity {identity:?}")))?,
        ),
        (None, Some(fingerprint), None, None) => BlockTarget::Fingerprint(fingerprint),
        (None, None, Some(ca_id), Some(serial)) => BlockTarget::Serial { ca_id, serial },
        _ => return Err(StoreError::Corrupt(format!("blocklist entry {id}"))),
    };
    Ok(BlockedDevice {
        id,
        org: org.clone(),
        target,
        reason,
        created_by,
        created_at: from_micros(created_at)?,
    })
}

/// Every entry of the org's blocklist (what the registry serves).
pub(super) fn all_blocked(conn: &dyn Sql, org: &OrgId) -> Result<Vec<BlockedDevice>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM blocked_devices WHERE org = ?1 ORDER BY created_at, id"
    ))?;
    let rows = records(stmt.query_map([org.as_str()], read)?, |row| {
        into_record(org, row)
    })?;
    Ok(rows)
}

impl BlocklistStore for SqlStore {
    fn insert_blocked(
        &self,
        org: &OrgId,
        new: &NewBlock,
        audit: &Audit,
    ) -> Result<BlockedDevice, StoreError> {
        let created_at = truncate_to_micros(new.created_at)?;
        let id = new_id(created_at)?;
        let (identity, fingerprint, ca_id, serial) = match &new.target {
            BlockTarget::Identity(identity) => (Some(identity.to_string()), None, None, None),
            BlockTarget::Fingerprint(f) => (None, Some(f.clone()), None, None),
            BlockTarget::Serial { ca_id, serial } => {
                (None, None, Some(ca_id.clone()), Some(serial.clone()))
            }
        };
        let tx = self.begin()?;
        require_org(&tx, org)?;
        tx.execute(
            &format!("INSERT INTO blocked_devices (org, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                org.as_str(),
                id,
                identity,
                fingerprint,
                ca_id,
                serial,
                new.reason,
                new.created_by,
                to_micros(created_at)
            ],
        )?;
        audit.record(&tx, org, Some(&id))?;
        tx.commit()?;
        Ok(BlockedDevice {
            id,
            org: org.clone(),
            target: new.target.clone(),
            reason: new.reason.clone(),
            created_by: new.created_by.clone(),
            created_at,
        })
    }

    fn list_blocked(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<BlockedDevice>, StoreError> {
        let (after_micros, after_id) = page.after();
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM blocked_devices
             WHERE org = ?1 AND (created_at, id) > (?2, ?3)
             ORDER BY created_at, id LIMIT ?4"
        ))?;
        let rows = records(
            stmt.query_map(
                params![org.as_str(), after_micros, after_id, page.rows_to_fetch()],
                read,
            )?,
            |row| into_record(org, row),
        )?;
        Ok(Page::from_rows(rows, page.limit(), |b| {
            (b.created_at, b.id.as_str())
        }))
    }

    fn delete_blocked(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let deleted = tx.execute(
            "DELETE FROM blocked_devices WHERE org = ?1 AND id = ?2",
            params![org.as_str(), id],
        )?;
        if deleted > 0 {
            audit.record(&tx, org, Some(id))?;
        }
        tx.commit()?;
        Ok(deleted > 0)
    }
}
