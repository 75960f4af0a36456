//! Queries on `csrs`: certificate signing requests with keys generated here, their signature
//! requests and approvals, and the server certificates they became.

use super::sql::{params, OptionalExtension, Row, Sql, SqlExt, Value};
use super::CsrStore;
use super::DbError;

use super::filter::{ListFilter, Where};
use rustls_pki_types::PrivateKeyDer;
use time::OffsetDateTime;

use super::Audit;
use super::{
    from_micros, new_id, require_org, to_micros, truncate_to_micros, Page, PageRequest, SqlStore,
    StoreError,
};
use crate::identity::OrgId;
use crate::pki::KeyType;

fn key_aad(id: &str) -> String {
    format!("csrs/{id}/key")
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CsrStatus {
    Generated,
    PendingApproval,
    Completed,
    Rejected,
}

impl CsrStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CsrStatus::Generated => "generated",
            CsrStatus::PendingApproval => "pending_approval",
            CsrStatus::Completed => "completed",
            CsrStatus::Rejected => "rejected",
        }
    }

    fn from_sql(s: &str) -> Result<CsrStatus, StoreError> {
        match s {
            "generated" => Ok(CsrStatus::Generated),
            "pending_approval" => Ok(CsrStatus::PendingApproval),
            "completed" => Ok(CsrStatus::Completed),
            "rejected" => Ok(CsrStatus::Rejected),
            other => Err(StoreError::Corrupt(format!("unknown CSR status {other:?}"))),
        }
    }
}

/// A signature request: who asked, for what, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRequest {
    /// "admin" or the requesting token's id: who may not approve it.
    pub requested_by_id: String,
    pub requested_by: String,
    pub requested_role: String,
    /// `None`: self-signed; `Some("platform")` or a CA id.
    pub issuer: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct CsrRecord {
    pub id: String,
    pub org: OrgId,
    pub alias: String,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub key_type: KeyType,
    pub csr_pem: String,
    pub status: CsrStatus,
    pub request: Option<SignatureRequest>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub server_certificate: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub struct NewCsr {
    pub alias: String,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub key_type: KeyType,
    pub csr_pem: String,
    pub key: PrivateKeyDer<'static>,
    pub created_at: OffsetDateTime,
}

/// A change of a CSR's state, applied only when its status is still `from`.
pub enum CsrTransition {
    /// A signature request waits for an approver.
    Requested(SignatureRequest),
    /// It became server certificate `server_certificate` (from `generated` with an upload or an
    /// immediate signature, from `pending_approval` on approval); `decision` names the approver.
    Completed {
        request: Option<SignatureRequest>,
        server_certificate: String,
        decision: Option<(String, String)>,
    },
    /// An approver rejected its signature request: (who, why).
    Rejected { decided_by: String, reason: String },
}

const COLUMNS: &str = "id, alias, common_name, dns_names, key_type, csr_pem, status, \
     requested_by_id, requested_by, requested_role, request, request_reason, decided_by, \
     decision_reason, server_certificate, created_at, updated_at";

struct CsrRow {
    id: String,
    alias: String,
    common_name: String,
    dns_names: String,
    key_type: String,
    csr_pem: String,
    status: String,
    requested_by_id: Option<String>,
    requested_by: Option<String>,
    requested_role: Option<String>,
    request: Option<String>,
    request_reason: Option<String>,
    decided_by: Option<String>,
    decision_reason: Option<String>,
    server_certificate: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl CsrRow {
    fn read(row: &Row) -> Result<CsrRow, DbError> {
        Ok(CsrRow {
            id: row.get(0)?,
            alias: row.get(1)?,
            common_name: row.get(2)?,
            dns_names: row.get(3)?,
            key_type: row.get(4)?,
            csr_pem: row.get(5)?,
            status: row.get(6)?,
            requested_by_id: row.get(7)?,
            requested_by: row.get(8)?,
            requested_role: row.get(9)?,
            request: row.get(10)?,
            request_reason: row.get(11)?,
            decided_by: row.get(12)?,
            decision_reason: row.get(13)?,
            server_certificate: row.get(14)?,
            created_at: row.get(15)?,
            updated_at: row.get(16)?,
        })
    }

    fn into_record(self, org: &OrgId) -> Result<CsrRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("csr {}: {what}", self.id));
        let request = match (self.requested_by_id, self.requested_by, self.requested_role) {
            (Some(requested_by_id), Some(requested_by), Some(requested_role)) => {
                Some(SignatureRequest {
                    requested_by_id,
                    requested_by,
                    requested_role,
                    issuer: self
                        .request
                        .as_deref()
                        .map(serde_json::from_str::<Option<String>>)
                        .transpose()
                        .map_err(|_| corrupt("request"))?
                        .flatten(),
                    reason: self.request_reason.unwrap_or_default(),
                })
            }
            _ => None,
        };
        Ok(CsrRecord {
            org: org.clone(),
            alias: self.alias,
            common_name: self.common_name,
            dns_names: serde_json::from_str(&self.dns_names).map_err(|_| corrupt("dns_names"))?,
            key_type: KeyType::parse(&self.key_type).ok_or_else(|| corrupt("key_type"))?,
            csr_pem: self.csr_pem,
            status: CsrStatus::from_sql(&self.status)?,
            request,
            decided_by: self.decided_by,
            decision_reason: self.decision_reason,
            server_certificate: self.server_certificate,
            created_at: from_micros(self.created_at)?,
            updated_at: from_micros(self.updated_at)?,
            id: self.id,
        })
    }
}

fn get_csr(conn: &dyn Sql, org: &OrgId, id: &str) -> Result<Option<CsrRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM csrs WHERE org = ?1 AND id = ?2"),
        params![org.as_str(), id],
        CsrRow::read,
    )
    .optional()?
    .map(|row| row.into_record(org))
    .transpose()
}

impl CsrStore for SqlStore {
    fn insert_csr(
        &self,
        org: &OrgId,
        new: &NewCsr,
        audit: &Audit,
    ) -> Result<CsrRecord, StoreError> {
        let created_at = truncate_to_micros(new.created_at)?;
        let id = new_id(created_at)?;
        let key_sealed = self.master_key.seal_private_key(&key_aad(&id), &new.key)?;
        let dns_names = serde_json::to_string(&new.dns_names)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = self.begin()?;
        require_org(&tx, org)?;
        tx.execute(
            "INSERT INTO csrs (id, org, alias, common_name, dns_names, key_type, csr_pem,
                 key_sealed, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'generated', ?9, ?9)",
            params![
                id,
                org.as_str(),
                new.alias,
                new.common_name,
                dns_names,
                new.key_type.as_str(),
                new.csr_pem,
                key_sealed,
                to_micros(created_at),
            ],
        )?;
        let record = get_csr(&tx, org, &id)?
            .ok_or_else(|| StoreError::Corrupt("inserted CSR vanished".into()))?;
        audit.record(&tx, org, Some(&id))?;
        tx.commit()?;
        Ok(record)
    }

    fn csr(&self, org: &OrgId, id: &str) -> Result<Option<CsrRecord>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        get_csr(&conn, org, id)
    }

    fn csr_with_key(
        &self,
        org: &OrgId,
        id: &str,
    ) -> Result<Option<(CsrRecord, PrivateKeyDer<'static>)>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let Some(record) = get_csr(&conn, org, id)? else {
            return Ok(None);
        };
        let sealed: Vec<u8> =
            conn.query_row("SELECT key_sealed FROM csrs WHERE id = ?1", [id], |row| {
                row.get(0)
            })?;
        let key = self.master_key.open_private_key(&key_aad(id), &sealed)?;
        Ok(Some((record, key)))
    }

    fn list_csrs(
        &self,
        org: &OrgId,
        filter: &ListFilter<CsrStatus>,
        page: &PageRequest,
    ) -> Result<Page<CsrRecord>, StoreError> {
        let mut clause = Where::page("org", "created_at", "id", org, page);
        clause.filter("alias", filter);
        if let Some(status) = filter.status {
            clause.and("status = ?", Value::Text(status.as_str().to_owned()));
        }
        let select = format!("SELECT {COLUMNS} FROM csrs");
        let records = clause.fetch(&*self.conn()?, org, &select, page, CsrRow::read, |r| {
            r.into_record(org)
        })?;
        Ok(Page::from_rows(records, page.limit(), |c| {
            (c.created_at, c.id.as_str())
        }))
    }

    fn transition_csr(
        &self,
        org: &OrgId,
        id: &str,
        from: CsrStatus,
        transition: &CsrTransition,
        at: OffsetDateTime,
        audit: &Audit,
    ) -> Result<Option<CsrRecord>, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let Some(current) = get_csr(&tx, org, id)? else {
            return Ok(None);
        };
        if current.status != from {
            return Err(StoreError::CsrStatus(current.status));
        }
        let at = to_micros(at);
        let set_request = |request: &SignatureRequest| -> Result<(), StoreError> {
            let issuer = serde_json::to_string(&request.issuer)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "UPDATE csrs SET requested_by_id = ?2, requested_by = ?3, requested_role = ?4,
                     request = ?5, request_reason = ?6 WHERE id = ?1",
                params![
                    id,
                    request.requested_by_id,
                    request.requested_by,
                    request.requested_role,
                    issuer,
                    request.reason
                ],
            )?;
            Ok(())
        };
        match transition {
            CsrTransition::Requested(request) => {
                set_request(request)?;
                tx.execute(
                    "UPDATE csrs SET status = 'pending_approval', updated_at = ?2 WHERE id = ?1",
                    params![id, at],
                )?;
            }
            CsrTransition::Completed {
                request,
                server_certificate,
                decision,
            } => {
                if let Some(request) = request {
                    set_request(request)?;
                }
                let (decided_by, decision_reason) = decision.clone().unzip();
                tx.execute(
                    "UPDATE csrs SET status = 'completed', server_certificate = ?2,
                         decided_by = COALESCE(?3, decided_by),
                         decision_reason = COALESCE(?4, decision_reason), updated_at = ?5
                     WHERE id = ?1",
                    params![id, server_certificate, decided_by, decision_reason, at],
                )?;
            }
            CsrTransition::Rejected { decided_by, reason } => {
                tx.execute(
                    "UPDATE csrs SET status = 'rejected', decided_by = ?2, decision_reason = ?3,
                         updated_at = ?4
                     WHERE id = ?1",
                    params![id, decided_by, reason, at],
                )?;
            }
        }
        let record = get_csr(&tx, org, id)?;
        audit.record(&tx, org, Some(id))?;
        tx.commit()?;
        Ok(record)
    }

    fn delete_csr(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let deleted = tx.execute(
            "DELETE FROM csrs WHERE org = ?1 AND id = ?2",
            params![org.as_str(), id],
        )?;
        if deleted > 0 {
            audit.record(&tx, org, Some(id))?;
        }
        tx.commit()?;
        Ok(deleted > 0)
    }
}
