//! Queries on `audit_events`: who changed what, when and why.

use rusqlite::{params, Row};
use time::OffsetDateTime;

use super::{
    from_micros, new_id, records, to_micros, truncate_to_micros, Page, PageRequest, Store,
    StoreError,
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

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: OffsetDateTime,
    pub actor: String,
    pub actor_role: String,
    pub action: String,
    pub target: Option<String>,
    pub reason: Option<String>,
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
    fn read(row: &Row<'_>) -> rusqlite::Result<AuditRow> {
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

impl Store {
    /// Records an event of `org` (which need not exist any more: its deletion is an event).
    pub fn insert_audit_event(
        &self,
        org: &OrgId,
        new: &NewAuditEvent,
    ) -> Result<AuditEvent, StoreError> {
        let at = truncate_to_micros(new.at)?;
        let id = new_id(at)?;
        self.conn().execute(
            &format!(
                "INSERT INTO audit_events (org, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                org.as_str(),
                id,
                to_micros(at),
                new.actor,
                new.actor_role,
                new.action,
                new.target,
                new.reason,
            ],
        )?;
        Ok(AuditEvent {
            id,
            org: org.clone(),
            at,
            actor: new.actor.clone(),
            actor_role: new.actor_role.clone(),
            action: new.action.clone(),
            target: new.target.clone(),
            reason: new.reason.clone(),
        })
    }

    /// The org's events, oldest first.
    pub fn list_audit_events(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let (after_micros, after_id) = page.after();
        let conn = self.conn();
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
