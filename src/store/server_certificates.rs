//! Queries on `server_certificates` and the org's active one, and [`ServerCertStore::org_state`].

use super::sql::{params, params_from_iter, OptionalExtension, Row, Sql, SqlExt, ToValue, Value};
use super::DbError;
use super::ServerCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::cert_info::CertInfoRow;
use super::filter::{ListFilter, Where};
use super::Audit;
use super::{
    from_micros, new_id, require_org, to_micros, truncate_to_micros, unique_or, NewServerCert,
    OrgState, Page, PageRequest, ServerCertRecord, SqlStore, StoreError,
};
use crate::identity::OrgId;

/// The AAD of a server certificate's sealed key: bound to its row.
fn key_aad(id: &str) -> String {
    format!("server_certificates/{id}/key")
}

const COLUMNS: &str = "s.id, s.chain_pem, s.subject, s.issuer, s.serial, s.fingerprint_sha256, \
     s.not_before, s.not_after, s.common_name, s.dns_names, s.registered_at, \
     CASE WHEN o.active_server_certificate = s.id THEN 1 ELSE 0 END, s.alias";
const FROM: &str = "server_certificates s JOIN orgs o ON o.id = s.org";

pub(super) fn chain_to_pem(chain: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<pem::Pem> = chain
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))
        .collect();
    pem::encode_many(&blocks)
}

pub(super) fn chain_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let blocks = pem::parse_many(text).map_err(|e| StoreError::Corrupt(format!("chain: {e}")))?;
    if blocks.is_empty() {
        return Err(StoreError::Corrupt("empty certificate chain".into()));
    }
    Ok(blocks
        .into_iter()
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect())
}

struct ServerCertRow {
    id: String,
    chain_pem: String,
    info: CertInfoRow,
    registered_at: i64,
    active: bool,
    alias: String,
}

impl ServerCertRow {
    fn read(row: &Row) -> Result<ServerCertRow, DbError> {
        Ok(ServerCertRow {
            id: row.get(0)?,
            chain_pem: row.get(1)?,
            info: CertInfoRow::read(row, 2)?,
            registered_at: row.get(10)?,
            active: row.get(11)?,
            alias: row.get(12)?,
        })
    }

    fn into_record(self, org: &OrgId) -> Result<ServerCertRecord, StoreError> {
        Ok(ServerCertRecord {
            info: self.info.into_info()?,
            chain: chain_from_pem(&self.chain_pem)?,
            id: self.id,
            org: org.clone(),
            alias: self.alias,
            active: self.active,
            registered_at: from_micros(self.registered_at)?,
        })
    }
}

fn get_server_cert(
    conn: &dyn Sql,
    org: &OrgId,
    id: &str,
) -> Result<Option<ServerCertRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM {FROM} WHERE s.org = ?1 AND s.id = ?2"),
        params![org.as_str(), id],
        ServerCertRow::read,
    )
    .optional()?
    .map(|row| row.into_record(org))
    .transpose()
}

impl ServerCertStore for SqlStore {
    fn insert_server_cert(
        &self,
        org: &OrgId,
        new: &NewServerCert,
        audit: &Audit,
    ) -> Result<ServerCertRecord, StoreError> {
        if new.chain.is_empty() {
            return Err(StoreError::Corrupt("empty certificate chain".into()));
        }
        let registered_at = truncate_to_micros(new.registered_at)?;
        let id = new_id(registered_at)?;
        let key_sealed = self.master_key.seal_private_key(&key_aad(&id), &new.key)?;
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let info = CertInfoRow::from_info(&new.info)?;
        let inserted = tx.execute(
            "INSERT INTO server_certificates (id, org, chain_pem, key_sealed, subject, issuer,
                 serial, fingerprint_sha256, not_before, not_after, common_name, dns_names,
                 registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params_from_iter(
                [
                    &id as &dyn ToValue,
                    &org.as_str(),
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
            "UPDATE server_certificates SET alias = COALESCE(common_name, subject) WHERE id = ?1",
            [&id],
        )?;
        let record = get_server_cert(&tx, org, &id)?
            .ok_or_else(|| StoreError::Corrupt("inserted server certificate vanished".into()))?;
        audit.record(&tx, org, Some(&id))?;
        tx.commit()?;
        Ok(record)
    }

    fn server_cert(&self, org: &OrgId, id: &str) -> Result<Option<ServerCertRecord>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        get_server_cert(&conn, org, id)
    }

    fn list_server_certs(
        &self,
        org: &OrgId,
        filter: &ListFilter<bool>,
        page: &PageRequest,
    ) -> Result<Page<ServerCertRecord>, StoreError> {
        let mut clause = Where::page("s.org", "s.registered_at", "s.id", org, page);
        clause.filter("s.alias", filter);
        if let Some(active) = filter.status {
            clause.and(
                "CASE WHEN o.active_server_certificate = s.id THEN 1 ELSE 0 END = ?",
                Value::Integer(i64::from(active)),
            );
        }
        let select = format!("SELECT {COLUMNS} FROM {FROM}");
        let records = clause.fetch(
            &*self.conn()?,
            org,
            &select,
            page,
            ServerCertRow::read,
            |r| r.into_record(org),
        )?;
        Ok(Page::from_rows(records, page.limit(), |c| {
            (c.registered_at, c.id.as_str())
        }))
    }

    fn server_cert_key(
        &self,
        org: &OrgId,
        id: &str,
    ) -> Result<Option<PrivateKeyDer<'static>>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn()?
            .query_row(
                "SELECT key_sealed FROM server_certificates WHERE org = ?1 AND id = ?2",
                params![org.as_str(), id],
                |row| row.get(0),
            )
            .optional()?;
        sealed
            .map(|s| self.master_key.open_private_key(&key_aad(id), &s))
            .transpose()
    }

    fn delete_server_cert(&self, org: &OrgId, id: &str, audit: &Audit) -> Result<bool, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        let active: Option<String> = tx.query_row(
            "SELECT active_server_certificate FROM orgs WHERE id = ?1",
            [org.as_str()],
            |row| row.get(0),
        )?;
        if active.as_deref() == Some(id) {
            return Err(StoreError::CertificateActive);
        }
        let deleted = match tx.execute(
            "DELETE FROM server_certificates WHERE org = ?1 AND id = ?2",
            params![org.as_str(), id],
        ) {
            Ok(n) => n,
            Err(e) if super::is_foreign_key_violation(&e) => {
                return Err(StoreError::CertificateActive)
            }
            Err(e) => return Err(e.into()),
        };
        if deleted > 0 {
            audit.record(&tx, org, Some(id))?;
        }
        tx.commit()?;
        Ok(deleted > 0)
    }

    fn active_server_cert_id(&self, org: &OrgId) -> Result<Option<String>, StoreError> {
        self.conn()?
            .query_row(
                "SELECT active_server_certificate FROM orgs WHERE id = ?1",
                [org.as_str()],
                |row| row.get(0),
            )
            .optional()?
            .ok_or(StoreError::UnknownOrg)
    }

    fn set_active_server_cert(
        &self,
        org: &OrgId,
        id: Option<&str>,
        audit: &Audit,
    ) -> Result<bool, StoreError> {
        let tx = self.begin()?;
        require_org(&tx, org)?;
        if let Some(id) = id {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM server_certificates WHERE org = ?1 AND id = ?2)",
                params![org.as_str(), id],
                |row| row.get(0),
            )?;
            if !exists {
                return Ok(false);
            }
        }
        tx.execute(
            "UPDATE orgs SET active_server_certificate = ?2 WHERE id = ?1",
            params![org.as_str(), id],
        )?;
        audit.record(&tx, org, Some(id.unwrap_or("platform-default")))?;
        tx.commit()?;
        Ok(true)
    }

    fn org_state(&self, org: &OrgId) -> Result<Option<OrgState>, StoreError> {
        // One read: the org, its CAs and its certificate as of one moment.
        let tx = self.conn()?;
        let Some(record) = super::orgs::get_org(&tx, org)? else {
            return Ok(None);
        };
        let active_cas = super::ca_certificates::active_cas(&tx, org)?;
        let active: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT s.id, s.key_sealed FROM orgs o
                 JOIN server_certificates s ON s.org = o.id AND s.id = o.active_server_certificate
                 WHERE o.id = ?1",
                [org.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let active_server_cert = match active {
            None => None,
            Some((id, sealed)) => {
                let cert = get_server_cert(&tx, org, &id)?.ok_or_else(|| {
                    StoreError::Corrupt("active server certificate vanished".into())
                })?;
                let key = self.master_key.open_private_key(&key_aad(&id), &sealed)?;
                Some((cert, key))
            }
        };
        let blocked = super::blocked::all_blocked(&tx, org)?;
        let crls = super::crls::active_crls(&tx, org)?;
        tx.commit()?;
        Ok(Some(OrgState {
            org: record,
            active_cas,
            active_server_cert,
            blocked,
            crls,
        }))
    }
}
