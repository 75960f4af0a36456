//! The platform row: the platform CA certificate and its sealed key.

use super::PlatformStore;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{to_micros, SqliteStore, StoreError};
use crate::pki::Issuer;

const CA_KEY_AAD: &str = "platform/1/ca_key";

impl PlatformStore for SqliteStore {
    fn platform_ca(&self) -> Result<Option<Issuer>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT ca_der, ca_key_sealed FROM platform WHERE id = 1",
                [],
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

    fn set_platform_ca(&self, issuer: &Issuer) -> Result<(), StoreError> {
        let sealed = self
            .master_key
            .seal_private_key(CA_KEY_AAD, &issuer.key_der)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
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
        tx.commit()?;
        Ok(())
    }
}
