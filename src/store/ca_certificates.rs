//! Queries on `ca_certificates`.

use super::sql::{params, params_from_iter, OptionalExtension, Row, Sql, SqlExt, ToValue, Value};
use super::DbError;
use super::{CaStore, GrantStore, OcspMode};
use rustls_pki_types::CertificateDer;

use crate::pki::Issuer;

use super::cert_info::CertInfoRow;
use super::filter::{ListFilter, Where};
use super::grants::{insert_grant, GrantHolder};
use super::Audit;
use super::{
    from_micros, new_id, parse_org_id, records, require_org, to_micros, truncate_to_micros,
    unique_or, CaFilter, CaPatch, CaRecord, NewCa, Page, PageRequest, SqlStore, StoreError,
};
use crate::identity::OrgId;

/// The columns an insert writes; reads add whether a key is kept.
const COLUMNS: &str = "id, der, subject, issuer, serial, fingerprint_sha256, not_before, \
                       not_after, common_name, dns_names, description, active, registered_at";
const READ_COLUMNS: &str = "id, der, subject, issuer, serial, fingerprint_sha256, not_before, \
     not_after, common_name, dns_names, description, active, registered_at, \
     key_sealed IS NOT NULL, alias, crl_url, ocsp_mode, ocsp_url";

/// The AAD of a CA's sealed key: bound to its row.
fn key_aad(id: &str) -> String {
    format!("ca_certificates/{id}/key")
}

struct CaRow {
    id: String,
    der: Vec<u8>,
    info: CertInfoRow,
    description: String,
    active: bool,
    registered_at: i64,
    has_key: bool,
    alias: String,
    crl_url: Option<String>,
    ocsp_mode: String,
    ocsp_url: Option<String>,
}

impl CaRow {
    fn read(row: &Row) -> Result<CaRow, DbError> {
        Ok(CaRow {
            id: row.get(0)?,
            der: row.get(1)?,
            info: CertInfoRow::read(row, 2)?,
            description: row.get(10)?,
            active: row.get(11)?,
            registered_at: row.get(12)?,
            has_key: row.get(13)?,
            alias: row.get(14)?,
            crl_url: row.get(15)?,
            ocsp_mode: row.get(16)?,
            ocsp_url: row.get(17)?,
        })
    }

    fn into_record(self, org: &OrgId) -> Result<CaRecord, StoreError> {
        Ok(CaRecord {
            info: self.info.into_info()?,
            id: self.id,
            org: org.clone(),
            der: CertificateDer::from(self.der),
            alias: self.alias,
            description: self.description,
            active: self.active,
            has_key: self.has_key,
            registered_at: from_micros(self.registered_at)?,
            grant: None,
            crl_url: self.crl_url,
            ocsp_mode: OcspMode::parse(&self.ocsp_mode).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown ocsp_mode {:?}", self.ocsp_mode))
            })?,
            ocsp_url: self.ocsp_url,
        })
    }
}

fn get_ca(conn: &dyn Sql, org: &OrgId, id: &str) -> Result<Option<CaRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {READ_COLUMNS} FROM ca_certificates WHERE org = ?1 AND id = ?2"),
        params![org.as_str(), id],
        CaRow::read,
    )
    .optional()?
    .map(|row| row.into_record(org))
    .transpose()
}

/// The org's active CAs in registration order: what its client verifier trusts.
pub(super) fn active_cas(conn: &dyn Sql, org: &OrgId) -> Result<Vec<CaRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {READ_COLUMNS} FROM ca_certificates WHERE org = ?1 AND active = 1
         ORDER BY registered_at, id"
    ))?;
    let cas = records(stmt.query_map([org.as_str()], CaRow::read)?, |r| {
        r.into_record(org)
    })?;
    Ok(cas)
}

impl CaStore for SqlStore {
    fn insert_ca(&self, org: &OrgId, new: &NewCa, audit: &Audit) -> Result<CaRecord, StoreError> {
        let registered_at = truncate_to_micros(new.registered_at)?;
        let id = new_id(registered_at)?;
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let info = CertInfoRow::from_info(&new.info)?;
        let inserted = tx.execute(
            &format!(
                "INSERT INTO ca_certificates (org, {COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1, ?13)"
            ),
            params_from_iter(
                [&org.as_str() as &dyn ToValue, &id, &new.der.as_ref()]
                    .into_iter()
                    .chain(info.params())
                    .chain([&new.description as &dyn ToValue, &to_micros(registered_at)]),
            ),
        );
        unique_or(inserted, StoreError::DuplicateCertificate)?;
        // The alias starts as the CN (else the subject); PATCH changes it.
        tx.execute(
            "UPDATE ca_certificates SET alias = COALESCE(common_name, subject) WHERE id = ?1",
            [&id],
        )?;
        if let Some(key) = &new.key {
            let sealed = self.master_key.seal_private_key(&key_aad(&id), key)?;
            tx.execute(
                "UPDATE ca_certificates SET key_sealed = ?2 WHERE id = ?1",
                params![id, sealed],
            )?;
            let holder = GrantHolder::CaCertificate;
            let (rules, now) = (&*self.grant_rules, self.clock.now());
            let passphrase = new.key_passphrase.as_ref();
            insert_grant(&tx, rules, org, holder, &id, now, passphrase)?;
        }
        let mut record = get_ca(&tx, org, &id)?
            .ok_or_else(|| StoreError::Corrupt("inserted CA certificate vanished".into()))?;
        record.grant = self.grant_on(&tx, &id)?;
        audit.record(&tx, org, Some(&id))?;
        tx.commit()?;
        Ok(record)
    }

    fn ca_issuer(&self, org: &OrgId, id: &str) -> Result<Option<Option<Issuer>>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT der, key_sealed FROM ca_certificates WHERE org = ?1 AND id = ?2",
                params![org.as_str(), id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(der, sealed)| {
            sealed
                .map(|sealed| {
                    Ok(Issuer {
                        cert_der: CertificateDer::from(der),
                        key_der: self.master_key.open_private_key(&key_aad(id), &sealed)?,
                    })
                })
                .transpose()
        })
        .transpose()
    }

    fn ca(&self, org: &OrgId, id: &str) -> Result<Option<CaRecord>, StoreError> {
        self.refresh_grants(Some(org))?;
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let Some(mut record) = get_ca(&conn, org, id)? else {
            return Ok(None);
        };
        record.grant = self.grant_on(&conn, id)?;
        Ok(Some(record))
    }

    fn list_cas(
        &self,
        org: &OrgId,
        filter: &CaFilter,
        page: &PageRequest,
    ) -> Result<Page<CaRecord>, StoreError> {
        let mut clause = Where::page("org", "registered_at", "id", org, page);
        if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
            // lower() folds ASCII only, like the subjects and descriptions operators search.
            clause.and(
                "(instr(lower(subject), lower(?)) > 0 OR instr(lower(description), lower(?)) > 0)",
                Value::Text(q.to_owned()),
            );
        }
        if let Some(active) = filter.active {
            clause.and("active = ?", Value::Integer(i64::from(active)));
        }
        clause.filter(
            "alias",
            &ListFilter::<()> {
                alias: filter.alias.clone(),
                registered_after: filter.registered_after,
                registered_before: filter.registered_before,
                status: None,
                grant_status: filter.grant_status,
            },
        );
        self.refresh_grants(Some(org))?;
        let conn = self.conn()?;
        let select = format!("SELECT {READ_COLUMNS} FROM ca_certificates");
        let mut records = clause.fetch(&conn, org, &select, page, CaRow::read, |r| {
            r.into_record(org)
        })?;
        for record in &mut records {
            record.grant = self.grant_on(&conn, &record.id)?;
        }
        Ok(Page::from_rows(records, page.limit(), |c| {
            (c.registered_at, c.id.as_str())
        }))
    }

    fn update_ca(
        &self,
        org: &OrgId,
        id: &str,
        patch: &CaPatch,
        audit: &Audit,
    ) -> Result<Option<CaRecord>, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let changed = tx.execute(
            "UPDATE ca_certificates
             SET active = COALESCE(?3, active), description = COALESCE(?4, description),
                 alias = COALESCE(?5, alias),
                 crl_url = CASE WHEN ?6 THEN ?7 ELSE crl_url END,
                 ocsp_mode = COALESCE(?8, ocsp_mode),
                 ocsp_url = CASE WHEN ?9 THEN ?10 ELSE ocsp_url END
             WHERE org = ?1 AND id = ?2",
            params![
                org.as_str(),
                id,
                patch.active,
                patch.description,
                patch.alias,
                patch.crl_url.is_some(),
                patch.crl_url.clone().flatten(),
                patch.ocsp_mode.map(OcspMode::as_str),
                patch.ocsp_url.is_some(),
                patch.ocsp_url.clone().flatten(),
            ],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let mut record = get_ca(&tx, org, id)?;
        if let Some(record) = &mut record {
            record.grant = self.grant_on(&tx, id)?;
        }
        audit.record(&tx, org, Some(id))?;
        tx.commit()?;
        Ok(record)
    }

    fn crl_sources(&self) -> Result<Vec<(OrgId, String, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT org, id, crl_url FROM ca_certificates
             WHERE crl_url IS NOT NULL AND active = 1 ORDER BY org, id",
        )?;
        let rows = stmt.query_map(params![], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        records(rows, |(org, id, url)| Ok((parse_org_id(&org)?, id, url)))
    }

    fn delete_ca(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let deleted = tx.execute(
            "DELETE FROM ca_certificates WHERE org = ?1 AND id = ?2",
            params![org.as_str(), id],
        )?;
        if deleted > 0 {
            audit.record(&tx, org, Some(id))?;
        }
        tx.commit()?;
        Ok(deleted > 0)
    }
}
