//! What the platform holds once for every node: the platform CA (the `platform` row, its key
//! sealed), and in `store_meta` the default server certificate and the bootstrap admin token
//! (both sealed). Each is created inside one write transaction, so of several nodes starting at
//! once the first creates it and the others load it.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use super::sql::{params, OptionalExtension, Sql, SqlExt};
use super::PlatformStore;
use super::{to_micros, SqlStore, StoreError};
use crate::pki::Issuer;

const CA_KEY_AAD: &str = "platform/1/ca_key";
const DEFAULT_CHAIN: &str = "default_server_chain";
const DEFAULT_KEY: &str = "default_server_key";
const ADMIN_TOKEN: &str = "admin_token";

/// The additional data a `store_meta` value is sealed with: bound to its name.
fn meta_aad(name: &str) -> String {
    format!("store_meta/{name}/value")
}

fn meta(conn: &dyn Sql, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM store_meta WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?)
}

fn set_meta(conn: &dyn Sql, name: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO store_meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

impl SqlStore {
    fn read_platform_ca(&self, conn: &dyn Sql) -> Result<Option<Issuer>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT ca_der, ca_key_sealed FROM platform WHERE id = 1",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(der, sealed)| {
            Ok(Issuer {
                cert_der: CertificateDer::from(der),
                key_der: self.master_key.open_private_key(CA_KEY_AAD, &sealed)?,
            })
        })
        .transpose()
    }

    fn write_platform_ca(&self, conn: &dyn Sql, issuer: &Issuer) -> Result<(), StoreError> {
        let sealed = self
            .master_key
            .seal_private_key(CA_KEY_AAD, &issuer.key_der)?;
        conn.execute(
            "INSERT INTO platform (id, ca_der, ca_key_sealed, created_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE
             SET ca_der = excluded.ca_der, ca_key_sealed = excluded.ca_key_sealed,
                 created_at = excluded.created_at",
            params![
                issuer.cert_der.as_ref(),
                sealed,
                to_micros(OffsetDateTime::now_utc())
            ],
        )?;
        Ok(())
    }
}

impl PlatformStore for SqlStore {
    fn platform_ca(&self) -> Result<Option<Issuer>, StoreError> {
        self.read_platform_ca(&*self.conn()?)
    }

    fn set_platform_ca(&self, issuer: &Issuer) -> Result<(), StoreError> {
        let tx = self.begin()?;
        self.write_platform_ca(&*tx, issuer)?;
        tx.commit()?;
        Ok(())
    }

    fn create_platform_ca(&self, issuer: &Issuer) -> Result<Issuer, StoreError> {
        let tx = self.begin()?;
        if let Some(stored) = self.read_platform_ca(&*tx)? {
            return Ok(stored);
        }
        self.write_platform_ca(&*tx, issuer)?;
        tx.commit()?;
        Ok(Issuer {
            cert_der: issuer.cert_der.clone(),
            key_der: issuer.key_der.clone_key(),
        })
    }

    fn default_server_cert(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, StoreError> {
        let conn = self.conn()?;
        let (Some(chain), Some(sealed)) =
            (meta(&*conn, DEFAULT_CHAIN)?, meta(&*conn, DEFAULT_KEY)?)
        else {
            return Ok(None);
        };
        let chain = crate::pki::certs_from_pem(&chain)
            .map_err(|e| StoreError::Corrupt(format!("default server certificate: {e}")))?;
        let key = self
            .master_key
            .open_private_key(&meta_aad(DEFAULT_KEY), &sealed)?;
        Ok(Some((chain, key)))
    }

    fn set_default_server_cert(
        &self,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
    ) -> Result<(), StoreError> {
        let pem: String = chain
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect();
        let sealed = self
            .master_key
            .seal_private_key(&meta_aad(DEFAULT_KEY), key)?;
        let tx = self.begin()?;
        set_meta(&*tx, DEFAULT_CHAIN, pem.as_bytes())?;
        set_meta(&*tx, DEFAULT_KEY, &sealed)?;
        tx.commit()?;
        Ok(())
    }

    fn shared_admin_token(&self, candidate: &str) -> Result<String, StoreError> {
        let aad = meta_aad(ADMIN_TOKEN);
        let tx = self.begin()?;
        if let Some(sealed) = meta(&*tx, ADMIN_TOKEN)? {
            let token = self.master_key.open(&aad, &sealed)?;
            return String::from_utf8(token)
                .map_err(|_| StoreError::Corrupt("the stored admin token is not text".into()));
        }
        let sealed = self.master_key.seal(&aad, candidate.as_bytes())?;
        set_meta(&*tx, ADMIN_TOKEN, &sealed)?;
        tx.commit()?;
        Ok(candidate.to_owned())
    }
}
