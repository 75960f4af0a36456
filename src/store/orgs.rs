//! Queries on `orgs`.

use super::sql::{params, OptionalExtension, Row, Sql, SqlExt};
use super::DbError;
use super::OrgStore;

use super::grants::{insert_grant, GrantHolder};
use super::signing_certificates::insert_signing_cert;
use super::Audit;
use super::{
    from_micros, parse_org_id, records, to_micros, topic_policy_from_sql, topic_policy_to_sql,
    truncate_to_micros, unique_or, NewOrg, NewSigningCert, OrgPatch, OrgRecord, Page, PageRequest,
    Role, SqlStore, StoreError,
};
use crate::identity::OrgId;

const COLUMNS: &str = "id, name, topic_policy, created_at, approval_required_roles";

/// A row of `orgs` before its id is parsed.
struct OrgRow {
    id: String,
    name: String,
    topic_policy: String,
    created_at: i64,
    approval_required_roles: String,
}

impl OrgRow {
    fn read(row: &Row) -> Result<OrgRow, DbError> {
        Ok(OrgRow {
            id: row.get(0)?,
            name: row.get(1)?,
            topic_policy: row.get(2)?,
            created_at: row.get(3)?,
            approval_required_roles: row.get(4)?,
        })
    }

    /// `id` is the org the caller asked for, when it did: no need to parse it again.
    fn into_record(self, id: Option<&OrgId>) -> Result<OrgRecord, StoreError> {
        Ok(OrgRecord {
            id: match id {
                Some(id) => id.clone(),
                None => parse_org_id(&self.id)?,
            },
            name: self.name,
            topic_policy: topic_policy_from_sql(&self.topic_policy)?,
            approval_required_roles: serde_json::from_str(&self.approval_required_roles)
                .map_err(|e| StoreError::Corrupt(format!("approval_required_roles: {e}")))?,
            created_at: from_micros(self.created_at)?,
        })
    }
}

pub(super) fn get_org(conn: &dyn Sql, id: &OrgId) -> Result<Option<OrgRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM orgs WHERE id = ?1"),
        [id.as_str()],
        OrgRow::read,
    )
    .optional()?
    .map(|row| row.into_record(Some(id)))
    .transpose()
}

impl OrgStore for SqlStore {
    fn org_ids(&self) -> Result<Vec<OrgId>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT id FROM orgs ORDER BY id")?;
        let ids = records(
            stmt.query_map(params![], |row| row.get::<_, String>(0))?,
            |id| parse_org_id(&id),
        )?;
        Ok(ids)
    }

    fn create_org(
        &self,
        new: &NewOrg,
        signing: Option<&NewSigningCert>,
        audit: &Audit,
    ) -> Result<OrgRecord, StoreError> {
        let record = OrgRecord {
            id: new.id.clone(),
            name: new.name.clone(),
            topic_policy: new.topic_policy,
            approval_required_roles: Vec::new(),
            created_at: truncate_to_micros(new.created_at)?,
        };
        let tx = self.begin()?;
        let inserted = tx.execute(
            "INSERT INTO orgs (id, name, topic_policy, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                record.id.as_str(),
                record.name,
                topic_policy_to_sql(record.topic_policy),
                to_micros(record.created_at),
            ],
        );
        unique_or(inserted, StoreError::OrgExists)?;
        if let Some(signing) = signing {
            let id = insert_signing_cert(&tx, &self.master_key, &record.id, signing, true)?;
            let holder = GrantHolder::SigningCertificate;
            insert_grant(
                &tx,
                &*self.grant_rules,
                &record.id,
                holder,
                &id,
                self.clock.now(),
                signing.key_passphrase.as_ref(),
            )?;
        }
        audit.record(&tx, &record.id, Some(record.id.as_str()))?;
        tx.commit()?;
        Ok(record)
    }

    fn org(&self, id: &OrgId) -> Result<Option<OrgRecord>, StoreError> {
        get_org(&*self.conn()?, id)
    }

    fn list_orgs(&self, page: &PageRequest) -> Result<Page<OrgRecord>, StoreError> {
        let conn = self.conn()?;
        let (after_micros, after_id) = page.after();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM orgs
             WHERE (created_at, id) > (?1, ?2)
             ORDER BY created_at, id
             LIMIT ?3"
        ))?;
        let records = records(
            stmt.query_map(
                params![after_micros, after_id, page.rows_to_fetch()],
                OrgRow::read,
            )?,
            |row| row.into_record(None),
        )?;
        Ok(Page::from_rows(records, page.limit(), |o| {
            (o.created_at, o.id.as_str())
        }))
    }

    fn update_org(
        &self,
        id: &OrgId,
        patch: &OrgPatch,
        audit: &Audit,
    ) -> Result<Option<OrgRecord>, StoreError> {
        let tx = self.begin()?;
        let changed = tx.execute(
            "UPDATE orgs SET name = COALESCE(?2, name), topic_policy = COALESCE(?3, topic_policy),
                 approval_required_roles = COALESCE(?4, approval_required_roles)
             WHERE id = ?1",
            params![
                id.as_str(),
                patch.name,
                patch.topic_policy.map(topic_policy_to_sql),
                patch
                    .approval_required_roles
                    .as_deref()
                    .map(roles_json)
                    .transpose()?,
            ],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let record = get_org(&tx, id)?;
        audit.record(&tx, id, Some(id.as_str()))?;
        tx.commit()?;
        Ok(record)
    }

    fn delete_org(&self, id: &OrgId, audit: &Audit) -> Result<bool, StoreError> {
        let tx = self.begin()?;
        let deleted = tx.execute("DELETE FROM orgs WHERE id = ?1", [id.as_str()])?;
        if deleted > 0 {
            audit.record(&tx, id, Some(id.as_str()))?;
        }
        tx.commit()?;
        Ok(deleted > 0)
    }
}

/// Roles as stored: a JSON array, each once, in a stable order.
fn roles_json(roles: &[Role]) -> Result<String, StoreError> {
    let mut unique: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    unique.sort_unstable();
    unique.dedup();
    serde_json::to_string(&unique).map_err(|e| StoreError::Corrupt(e.to_string()))
}
