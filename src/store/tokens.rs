//! Queries on `tokens`: what verifies and revokes an org token (never the token itself).

use super::sql::{params, OptionalExtension, Row, Sql, SqlExt};
use super::DbError;
use super::TokenStore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Audit;
use super::{
    from_micros, new_id, parse_org_id, records, require_org, to_micros, truncate_to_micros, Page,
    PageRequest, SqlStore, StoreError,
};
use crate::identity::OrgId;

/// An org token's role (DESIGN §7b). The bootstrap admin token has none of these: it is admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Approver,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        }
    }

    fn from_sql(s: &str) -> Result<Role, StoreError> {
        match s {
            "operator" => Ok(Role::Operator),
            "approver" => Ok(Role::Approver),
            "viewer" => Ok(Role::Viewer),
            other => Err(StoreError::Corrupt(format!("unknown role {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Active,
    Suspended,
    /// For good: its signing certificate was deleted, or the token was.
    Revoked,
}

impl TokenStatus {
    fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Suspended => "suspended",
            TokenStatus::Revoked => "revoked",
        }
    }

    fn from_sql(s: &str) -> Result<TokenStatus, StoreError> {
        match s {
            "active" => Ok(TokenStatus::Active),
            "suspended" => Ok(TokenStatus::Suspended),
            "revoked" => Ok(TokenStatus::Revoked),
            other => Err(StoreError::Corrupt(format!(
                "unknown token status {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Also the JWT's `jti`.
    pub id: String,
    pub org: OrgId,
    pub name: String,
    pub role: Role,
    pub status: TokenStatus,
    /// `None` once its signing certificate was deleted.
    pub signing_certificate: Option<String>,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A token about to be issued.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The id of the org's signing certificate that signs it.
    pub signing_certificate: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A change to a token; `None` leaves the field as it is. A revoked token changes no more.
#[derive(Debug, Clone, Default)]
pub struct TokenPatch {
    pub name: Option<String>,
    pub status: Option<TokenStatus>,
}

const COLUMNS: &str =
    "id, org, name, role, status, signing_certificate, created_by, created_at, expires_at";

struct TokenRow {
    id: String,
    org: String,
    name: String,
    role: String,
    status: String,
    signing_certificate: Option<String>,
    created_by: String,
    created_at: i64,
    expires_at: i64,
}

impl TokenRow {
    fn read(row: &Row) -> Result<TokenRow, DbError> {
        Ok(TokenRow {
            id: row.get(0)?,
            org: row.get(1)?,
            name: row.get(2)?,
            role: row.get(3)?,
            status: row.get(4)?,
            signing_certificate: row.get(5)?,
            created_by: row.get(6)?,
            created_at: row.get(7)?,
            expires_at: row.get(8)?,
        })
    }

    fn into_record(self) -> Result<TokenRecord, StoreError> {
        Ok(TokenRecord {
            org: parse_org_id(&self.org)?,
            role: Role::from_sql(&self.role)?,
            status: TokenStatus::from_sql(&self.status)?,
            id: self.id,
            name: self.name,
            signing_certificate: self.signing_certificate,
            created_by: self.created_by,
            created_at: from_micros(self.created_at)?,
            expires_at: from_micros(self.expires_at)?,
        })
    }
}

fn get_token(
    conn: &dyn Sql,
    org: Option<&OrgId>,
    id: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let row = match org {
        Some(org) => conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM tokens WHERE org = ?1 AND id = ?2"),
                params![org.as_str(), id],
                TokenRow::read,
            )
            .optional()?,
        None => conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"),
                [id],
                TokenRow::read,
            )
            .optional()?,
    };
    row.map(TokenRow::into_record).transpose()
}

impl TokenStore for SqlStore {
    fn insert_token(
        &self,
        org: &OrgId,
        new: &NewToken,
        audit: &Audit,
    ) -> Result<TokenRecord, StoreError> {
        let created_at = truncate_to_micros(new.created_at)?;
        let expires_at = truncate_to_micros(new.expires_at)?;
        let id = new_id(created_at)?;
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let signing_exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM signing_certificates WHERE org = ?1 AND id = ?2)",
            params![org.as_str(), new.signing_certificate],
            |row| row.get(0),
        )?;
        if !signing_exists {
            return Err(StoreError::NoSigningCertificate);
        }
        tx.execute(
            &format!(
                "INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8)"
            ),
            params![
                id,
                org.as_str(),
                new.name,
                new.role.as_str(),
                new.signing_certificate,
                new.created_by,
                to_micros(created_at),
                to_micros(expires_at),
            ],
        )?;
        let record = get_token(&tx, Some(org), &id)?
            .ok_or_else(|| StoreError::Corrupt("inserted token not found".into()))?;
        audit.record(&tx, org, Some(&id))?;
        tx.commit()?;
        Ok(record)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        get_token(&*self.conn()?, None, id)
    }

    fn org_token(&self, org: &OrgId, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        get_token(&conn, Some(org), id)
    }

    fn list_tokens(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError> {
        let (after_micros, after_id) = page.after();
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM tokens
             WHERE org = ?1 AND (created_at, id) > (?2, ?3)
             ORDER BY created_at, id
             LIMIT ?4"
        ))?;
        let records = records(
            stmt.query_map(
                params![org.as_str(), after_micros, after_id, page.rows_to_fetch()],
                TokenRow::read,
            )?,
            TokenRow::into_record,
        )?;
        Ok(Page::from_rows(records, page.limit(), |t| {
            (t.created_at, t.id.as_str())
        }))
    }

    fn update_token(
        &self,
        org: &OrgId,
        id: &str,
        patch: &TokenPatch,
        audit: &Audit,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let Some(current) = get_token(&tx, Some(org), id)? else {
            return Ok(None);
        };
        if current.status == TokenStatus::Revoked {
            return Err(StoreError::TokenRevoked);
        }
        tx.execute(
            "UPDATE tokens SET name = COALESCE(?3, name), status = COALESCE(?4, status)
             WHERE org = ?1 AND id = ?2",
            params![
                org.as_str(),
                id,
                patch.name,
                patch.status.map(TokenStatus::as_str)
            ],
        )?;
        let record = get_token(&tx, Some(org), id)?;
        audit.record(&tx, org, Some(id))?;
        tx.commit()?;
        Ok(record)
    }
}
