//! Queries on `signing_certificates` and the org's default one: the keys org tokens are signed
//! with.

use super::sql::{params, params_from_iter, OptionalExtension, Row, Sql, SqlExt, ToValue, Value};
use super::DbError;
use super::{GrantStore, SigningCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use super::cert_info::CertInfoRow;
use super::filter::{ListFilter, Where};
use super::grants::{insert_grant, GrantHolder, GrantRecord, KeyPassphrase};
use super::server_certificates::{chain_from_pem, chain_to_pem};
use super::Audit;
use super::{
    from_micros, new_id, require_org, to_micros, truncate_to_micros, unique_or, Page, PageRequest,
    SqlStore, StoreError,
};
use crate::identity::OrgId;
use crate::pki::CertInfo;

/// The AAD of a signing certificate's sealed key: bound to its row.
fn key_aad(id: &str) -> String {
    format!("signing_certificates/{id}/key")
}

#[derive(Debug, Clone)]
pub struct SigningCertRecord {
    pub id: String,
    pub org: OrgId,
    pub alias: String,
    /// Of the leaf.
    pub info: CertInfo,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The org's default: new tokens are signed with it.
    pub is_default: bool,
    /// Tokens it signed that are not revoked.
    pub tokens: u64,
    pub registered_at: OffsetDateTime,
    /// The access grant on its key.
    pub grant: Option<GrantRecord>,
}

/// A signing certificate chain and its key, generated or imported.
pub struct NewSigningCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Of the leaf.
    pub info: CertInfo,
    pub alias: String,
    /// The passphrase of the PKCS#12 file it was imported from (renewing its grant asks for it).
    pub key_passphrase: Option<KeyPassphrase>,
    pub registered_at: OffsetDateTime,
}

/// What deleting a signing certificate did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningCertDeleted {
    NotFound,
    /// Deleted; this many tokens it signed were revoked.
    Deleted {
        tokens_revoked: u64,
    },
}

const COLUMNS: &str = "s.id, s.alias, s.chain_pem, s.subject, s.issuer, s.serial, \
     s.fingerprint_sha256, s.not_before, s.not_after, s.common_name, s.dns_names, \
     s.registered_at, CASE WHEN o.default_signing_certificate = s.id THEN 1 ELSE 0 END, \
     (SELECT COUNT(*) FROM tokens t WHERE t.signing_certificate = s.id AND t.status != 'revoked')";
const FROM: &str = "signing_certificates s JOIN orgs o ON o.id = s.org";

struct SigningCertRow {
    id: String,
    alias: String,
    chain_pem: String,
    info: CertInfoRow,
    registered_at: i64,
    is_default: bool,
    tokens: i64,
}

impl SigningCertRow {
    fn read(row: &Row) -> Result<SigningCertRow, DbError> {
        Ok(SigningCertRow {
            id: row.get(0)?,
            alias: row.get(1)?,
            chain_pem: row.get(2)?,
            info: CertInfoRow::read(row, 3)?,
            registered_at: row.get(11)?,
            is_default: row.get(12)?,
            tokens: row.get(13)?,
        })
    }

    fn into_record(self, org: &OrgId) -> Result<SigningCertRecord, StoreError> {
        Ok(SigningCertRecord {
            info: self.info.into_info()?,
            chain: chain_from_pem(&self.chain_pem)?,
            id: self.id,
            org: org.clone(),
            alias: self.alias,
            is_default: self.is_default,
            tokens: u64::try_from(self.tokens).unwrap_or(0),
            registered_at: from_micros(self.registered_at)?,
            grant: None,
        })
    }
}

fn get_signing_cert(
    conn: &dyn Sql,
    org: &OrgId,
    id: &str,
) -> Result<Option<SigningCertRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM {FROM} WHERE s.org = ?1 AND s.id = ?2"),
        params![org.as_str(), id],
        SigningCertRow::read,
    )
    .optional()?
    .map(|row| row.into_record(org))
    .transpose()
}

/// Inserts a signing certificate of `org` (which must exist) inside `tx`; it becomes the org's
/// default when `make_default` or when the org has none. Returns its id.
pub(super) fn insert_signing_cert(
    tx: &dyn Sql,
    master_key: &super::MasterKey,
    org: &OrgId,
    new: &NewSigningCert,
    make_default: bool,
) -> Result<String, StoreError> {
    if new.chain.is_empty() {
        return Err(StoreError::Corrupt("empty certificate chain".into()));
    }
    let registered_at = truncate_to_micros(new.registered_at)?;
    let id = new_id(registered_at)?;
    let key_sealed = master_key.seal_private_key(&key_aad(&id), &new.key)?;
    let info = CertInfoRow::from_info(&new.info)?;
    let inserted = tx.execute(
        "INSERT INTO signing_certificates (id, org, alias, chain_pem, key_sealed, subject, issuer,
             serial, fingerprint_sha256, not_before, not_after, common_name, dns_names,
             registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params_from_iter(
            [
                &id as &dyn ToValue,
                &org.as_str(),
                &new.alias,
                &chain_to_pem(&new.chain),
                &key_sealed,
            ]
            .into_iter()
            .chain(info.params())
            .chain([&to_micros(registered_at) as &dyn ToValue]),
        ),
    );
    unique_or(inserted, StoreError::DuplicateCertificate)?;
    tx.execute(
        "UPDATE orgs SET default_signing_certificate = ?2
         WHERE id = ?1 AND (?3 OR default_signing_certificate IS NULL)",
        params![org.as_str(), id, make_default],
    )?;
    Ok(id)
}

impl SigningCertStore for SqlStore {
    fn insert_signing_cert(
        &self,
        org: &OrgId,
        new: &NewSigningCert,
        make_default: bool,
        audit: &Audit,
    ) -> Result<SigningCertRecord, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let id = insert_signing_cert(&tx, &self.master_key, org, new, make_default)?;
        let holder = GrantHolder::SigningCertificate;
        let passphrase = new.key_passphrase.as_ref();
        insert_grant(
            &tx,
            &*self.grant_rules,
            org,
            holder,
            &id,
            self.clock.now(),
            passphrase,
        )?;
        let mut record = get_signing_cert(&tx, org, &id)?
            .ok_or_else(|| StoreError::Corrupt("inserted signing certificate not found".into()))?;
        record.grant = self.grant_on(&tx, &id)?;
        audit.record(&tx, org, Some(&id))?;
        tx.commit()?;
        Ok(record)
    }

    fn signing_cert(&self, org: &OrgId, id: &str) -> Result<Option<SigningCertRecord>, StoreError> {
        self.refresh_grants(Some(org))?;
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let Some(mut record) = get_signing_cert(&conn, org, id)? else {
            return Ok(None);
        };
        record.grant = self.grant_on(&conn, id)?;
        Ok(Some(record))
    }

    fn list_signing_certs(
        &self,
        org: &OrgId,
        filter: &ListFilter<bool>,
        page: &PageRequest,
    ) -> Result<Page<SigningCertRecord>, StoreError> {
        let mut clause = Where::page("s.org", "s.registered_at", "s.id", org, page);
        clause.filter("s.alias", filter);
        if let Some(is_default) = filter.status {
            clause.and(
                "CASE WHEN o.default_signing_certificate = s.id THEN 1 ELSE 0 END = ?",
                Value::Integer(i64::from(is_default)),
            );
        }
        self.refresh_grants(Some(org))?;
        let conn = self.conn()?;
        let select = format!("SELECT {COLUMNS} FROM {FROM}");
        let mut records = clause.fetch(&conn, org, &select, page, SigningCertRow::read, |r| {
            r.into_record(org)
        })?;
        for record in &mut records {
            record.grant = self.grant_on(&conn, &record.id)?;
        }
        Ok(Page::from_rows(records, page.limit(), |c| {
            (c.registered_at, c.id.as_str())
        }))
    }

    fn default_signing_key(
        &self,
        org: &OrgId,
    ) -> Result<Option<(SigningCertRecord, PrivateKeyDer<'static>)>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let row: Option<(String, Vec<u8>)> = conn
            .query_row(
                "SELECT s.id, s.key_sealed FROM signing_certificates s
                 JOIN orgs o ON o.default_signing_certificate = s.id AND o.id = s.org
                 WHERE o.id = ?1",
                [org.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((id, sealed)) = row else {
            return Ok(None);
        };
        let key = self.master_key.open_private_key(&key_aad(&id), &sealed)?;
        let record = get_signing_cert(&conn, org, &id)?
            .ok_or_else(|| StoreError::Corrupt("default signing certificate vanished".into()))?;
        Ok(Some((record, key)))
    }

    fn set_default_signing_cert(
        &self,
        org: &OrgId,
        id: &str,
        audit: &Audit,
    ) -> Result<Option<SigningCertRecord>, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        if get_signing_cert(&tx, org, id)?.is_none() {
            return Ok(None);
        }
        tx.execute(
            "UPDATE orgs SET default_signing_certificate = ?2 WHERE id = ?1",
            params![org.as_str(), id],
        )?;
        let mut record = get_signing_cert(&tx, org, id)?;
        if let Some(record) = &mut record {
            record.grant = self.grant_on(&tx, id)?;
        }
        audit.record(&tx, org, Some(id))?;
        tx.commit()?;
        Ok(record)
    }

    fn delete_signing_cert(
        &self,
        org: &OrgId,
        id: &str,
        audit: &Audit,
    ) -> Result<SigningCertDeleted, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let Some(record) = get_signing_cert(&tx, org, id)? else {
            return Ok(SigningCertDeleted::NotFound);
        };
        if record.is_default {
            return Err(StoreError::SigningCertificateDefault);
        }
        let revoked = tx.execute(
            "UPDATE tokens SET status = 'revoked', signing_certificate = NULL
             WHERE signing_certificate = ?1 AND status != 'revoked'",
            [id],
        )?;
        tx.execute(
            "UPDATE tokens SET signing_certificate = NULL WHERE signing_certificate = ?1",
            [id],
        )?;
        tx.execute(
            "DELETE FROM signing_certificates WHERE org = ?1 AND id = ?2",
            params![org.as_str(), id],
        )?;
        audit.record(&tx, org, Some(id))?;
        tx.commit()?;
        Ok(SigningCertDeleted::Deleted {
            tokens_revoked: u64::try_from(revoked).unwrap_or(0),
        })
    }
}
