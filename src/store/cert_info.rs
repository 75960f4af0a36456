//! The columns `ca_certificates` and `server_certificates` share: the [`CertInfo`] that `pki`
//! checked, kept as it was checked (times as unix microseconds, DNS names as a JSON array), so
//! both tables write and read it the same way.

use super::sql::{Row, ToValue};
use super::DbError;

use super::{from_micros, to_micros, StoreError};
use crate::pki::CertInfo;

/// `subject, issuer, serial, fingerprint_sha256, not_before, not_after, common_name, dns_names`
/// as SQLite holds them, in that order in both tables.
pub(super) struct CertInfoRow {
    subject: String,
    issuer: String,
    serial: String,
    fingerprint_sha256: String,
    not_before: i64,
    not_after: i64,
    common_name: Option<String>,
    dns_names: String,
}

impl CertInfoRow {
    /// The eight columns starting at column `first` of `row`.
    pub(super) fn read(row: &Row, first: usize) -> Result<CertInfoRow, DbError> {
        Ok(CertInfoRow {
            subject: row.get(first)?,
            issuer: row.get(first + 1)?,
            serial: row.get(first + 2)?,
            fingerprint_sha256: row.get(first + 3)?,
            not_before: row.get(first + 4)?,
            not_after: row.get(first + 5)?,
            common_name: row.get(first + 6)?,
            dns_names: row.get(first + 7)?,
        })
    }

    pub(super) fn from_info(info: &CertInfo) -> Result<CertInfoRow, StoreError> {
        Ok(CertInfoRow {
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            fingerprint_sha256: info.fingerprint_sha256.clone(),
            not_before: to_micros(info.not_before),
            not_after: to_micros(info.not_after),
            common_name: info.common_name.clone(),
            dns_names: serde_json::to_string(&info.dns_names)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        })
    }

    /// The eight values, in column order, for an `INSERT`.
    pub(super) fn params(&self) -> [&dyn ToValue; 8] {
        [
            &self.subject,
            &self.issuer,
            &self.serial,
            &self.fingerprint_sha256,
            &self.not_before,
            &self.not_after,
            &self.common_name,
            &self.dns_names,
        ]
    }

    pub(super) fn into_info(self) -> Result<CertInfo, StoreError> {
        Ok(CertInfo {
            subject: self.subject,
            issuer: self.issuer,
            serial: self.serial,
            fingerprint_sha256: self.fingerprint_sha256,
            not_before: from_micros(self.not_before)?,
            not_after: from_micros(self.not_after)?,
            common_name: self.common_name,
            dns_names: serde_json::from_str(&self.dns_names)
                .map_err(|e| StoreError::Corrupt(format!("dns_names: {e}")))?,
        })
    }
}
