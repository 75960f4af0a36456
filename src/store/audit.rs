//! Queries on `audit_events`: who changed what, when and why.

use super::sql::{params, Row, Sql, SqlExt};
use super::AuditStore;
use super::DbError;
use time::OffsetDateTime;

use super::{
    from_micros, new_id, records, require_org, to_micros, truncate_to_micros, Page, PageRequest,
    SqlStore, StoreError,
};
use crate::identity::OrgId;

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: String,
    pub org: OrgId,
    pub at: OffsetDateTime,
    /// "admin" (the bootstrap token) or an org token's name.
    pub actor: String,
    /// "admin" or the org token's role.
    pub actor_role: String,
    /// `<resource>.<verb>`, e.g. `ca_certificate.create`.
    pub action: String,
    pub target: Option<String>,
    pub reason: Option<String>,
}

/// Who makes a change, what the change is and why: every store method that makes an operator's
/// change takes one, and records it as an audit event inside the change's own transaction, so a
/// change never commits without its record (nor a record without its change). The store fills
/// in the time and the target (the id of what changed, which it knows, even when it makes it).
#[derive(Debug, Clone)]
pub struct Audit {
    /// "admin" (the bootstrap token) or an org token's name.
    pub actor: String,
    /// "admin" or the org token's role.
    pub actor_role: String,
    /// `<resource>.<verb>`, e.g. `ca_certificate.create`.
    pub action: String,
    pub reason: Option<String>,
}

impl Audit {
    /// The event of `action` by `actor` in `actor_role`, without a reason.
    pub fn by(actor: &str, actor_role: &str, action: &str) -> Audit {
        Audit {
            actor: actor.to_owned(),
            actor_role: actor_role.to_owned(),
            action: action.to_owned(),
            reason: None,
        }
    }

    /// Writes the event about `target` of `org` on `conn`, which is the change's open
    /// transaction: it commits or rolls back with the change.
    pub(super) fn record(
        &self,
        conn: &dyn Sql,
        org: &OrgId,
        target: Option<&str>,
    ) -> Result<(), StoreError> {
        tracing::info!(who = self.actor, role = self.actor_role, what = self.action, org = %org,
            target = target.unwrap_or_default(), "admin change");
        let at = truncate_to_micros(OffsetDateTime::now_utc())?;
        let id = new_id(at)?;
        conn.execute(
            &format!(
                "INSERT INTO audit_events (org, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                org.as_str(),
                id,
                to_micros(at),
                self.actor,
                self.actor_role,
                self.action,
                target,
                self.reason,
            ],
        )?;
        Ok(())
    }
}

const COLUMNS: &str = "id, at, actor, actor_role, action, target, reason";

struct AuditRow {
    id: String,
    at: i64,
    actor: String,
    actor_role: String,
    action: String,
    target: Option<String>,
    reason: Option<String>,
}

impl AuditRow {
    fn read(row: &Row) -> Result<AuditRow, DbError> {
        Ok(AuditRow {
            id: row.get(0)?,
            at: row.get(1)?,
            actor: row.get(2)?,
            actor_role: row.get(3)?,
            action: row.get(4)?,
            target: row.get(5)?,
            reason: row.get(6)?,
        })
    }

    fn into_event(self, org: &OrgId) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: self.id,
            org: org.clone(),
            at: from_micros(self.at)?,
            actor: self.actor,
            actor_role: self.actor_role,
            action: self.action,
            target: self.target,
            reason: self.reason,
        })
    }
}

impl AuditStore for SqlStore {
    fn record_action(
        &self,
        org: &OrgId,
        audit: &Audit,
        target: Option<&str>,
    ) -> Result<(), StoreError> {
        let tx = self.begin()?;
        audit.record(&*tx, org, target)?;
        tx.commit()?;
        Ok(())
    }

    fn list_audit_events(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let (after_micros, after_id) = page.after();
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit_events
             WHERE org = ?1 AND (at, id) > (?2, ?3)
             ORDER BY at, id
             LIMIT ?4"
        ))?;
        let events = records(
            stmt.query_map(
                params![org.as_str(), after_micros, after_id, page.rows_to_fetch()],
                AuditRow::read,
            )?,
            |r| r.into_event(org),
        )?;
        Ok(Page::from_rows(events, page.limit(), |e| {
            (e.at, e.id.as_str())
        }))
    }
}
