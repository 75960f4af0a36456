//! Queries on `crls`: the revocation list held for each CA certificate.

use super::sql::{params, OptionalExtension, Sql, SqlExt};
use super::CrlStore;
use time::OffsetDateTime;

use super::Audit;
use super::{records, require_org, to_micros, SqlStore, StoreError};
use crate::identity::OrgId;
use crate::pki::CrlInfo;

/// The CRLs of the org's active CAs: (CA id, DER). What the registry serves.
pub(super) fn active_crls(
    conn: &dyn Sql,
    org: &OrgId,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT c.ca_id, c.der FROM crls c
         JOIN ca_certificates a ON a.id = c.ca_id AND a.active = 1
         WHERE c.org = ?1 ORDER BY c.ca_id",
    )?;
    let rows = records(
        stmt.query_map([org.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?,
        Ok,
    )?;
    Ok(rows)
}

impl CrlStore for SqlStore {
    fn set_crl(
        &self,
        org: &OrgId,
        ca_id: &str,
        der: &[u8],
        info: &CrlInfo,
        now: OffsetDateTime,
        audit: Option<&Audit>,
    ) -> Result<(), StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let held: Option<i64> = tx
            .query_row(
                "SELECT this_update FROM crls WHERE ca_id = ?1 AND org = ?2",
                params![ca_id, org.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        if held.is_some_and(|held| held > to_micros(info.this_update)) {
            return Err(StoreError::CrlOlder);
        }
        tx.execute(
            "INSERT INTO crls (ca_id, org, der, this_update, next_update, entries, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (ca_id) DO UPDATE SET der = excluded.der,
                 this_update = excluded.this_update, next_update = excluded.next_update,
                 entries = excluded.entries, updated_at = excluded.updated_at",
            params![
                ca_id,
                org.as_str(),
                der,
                to_micros(info.this_update),
                info.next_update.map(to_micros),
                i64::try_from(info.revoked.len()).unwrap_or(i64::MAX),
                to_micros(now),
            ],
        )?;
        if let Some(audit) = audit {
            audit.record(&tx, org, Some(ca_id))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn crl(&self, org: &OrgId, ca_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        Ok(conn
            .query_row(
                "SELECT der FROM crls WHERE ca_id = ?1 AND org = ?2",
                params![ca_id, org.as_str()],
                |row| row.get(0),
            )
            .optional()?)
    }
}
