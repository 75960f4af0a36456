//! Queries on `devices`: the registry of identities seen, written in batches behind the connect
//! path; and the `expiring` view over every certificate kind of an org, devices' included.

use super::sql::{params, Row, SqlExt, Value};
use super::DbError;
use super::DeviceStore;
use time::OffsetDateTime;

use super::filter::Where;
use super::{
    from_micros, parse_org_id, records, require_org, to_micros, words, Page, PageRequest, SqlStore,
    StoreError,
};
use crate::identity::OrgId;

/// One authentication, as the session saw it.
#[derive(Debug, Clone)]
pub struct DeviceSeen {
    pub org: OrgId,
    pub identity: String,
    pub fingerprint_sha256: String,
    pub ca_id: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    pub at: OffsetDateTime,
    /// Every identity its certificate claims.
    pub claims: Vec<String>,
    /// The other active CAs that vouched for its chain.
    pub also_ca_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub org: OrgId,
    pub identity: String,
    pub fingerprint_sha256: String,
    pub ca_id: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    /// The node that saw it last (DESIGN §12; empty for a sighting older than the column).
    pub node: String,
    /// Every identity its certificate claims, and the other active CAs that vouched for its
    /// chain, at its last sighting (empty for a sighting older than the columns).
    pub claims: Vec<String>,
    pub also_ca_ids: Vec<String>,
}

/// Filters of the device list; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// The identity's type (`sensor` of `d:sensor:dev1`).
    pub device_type: Option<String>,
    /// A prefix of the identity's id (`dev` matches `d:sensor:dev1`).
    pub id_prefix: Option<String>,
    pub expires_before: Option<OffsetDateTime>,
    pub seen_after: Option<OffsetDateTime>,
}

const COLUMNS: &str =
    "org, identity, fingerprint_sha256, ca_id, serial, not_after, first_seen, last_seen, node, \
     claims, also_ca_ids";

/// A row before its times and org are converted.
struct DeviceRow {
    org: String,
    identity: String,
    fingerprint_sha256: String,
    ca_id: String,
    serial: String,
    not_after: i64,
    first_seen: i64,
    last_seen: i64,
    node: String,
    claims: String,
    also_ca_ids: String,
}

impl DeviceRow {
    fn read(row: &Row) -> Result<DeviceRow, DbError> {
        Ok(DeviceRow {
            org: row.get(0)?,
            identity: row.get(1)?,
            fingerprint_sha256: row.get(2)?,
            ca_id: row.get(3)?,
            serial: row.get(4)?,
            not_after: row.get(5)?,
            first_seen: row.get(6)?,
            last_seen: row.get(7)?,
            node: row.get(8)?,
            claims: row.get(9)?,
            also_ca_ids: row.get(10)?,
        })
    }

    fn into_record(self) -> Result<DeviceRecord, StoreError> {
        Ok(DeviceRecord {
            org: parse_org_id(&self.org)?,
            identity: self.identity,
            fingerprint_sha256: self.fingerprint_sha256,
            ca_id: self.ca_id,
            serial: self.serial,
            not_after: from_micros(self.not_after)?,
            first_seen: from_micros(self.first_seen)?,
            last_seen: from_micros(self.last_seen)?,
            node: self.node,
            claims: words(&self.claims),
            also_ca_ids: words(&self.also_ca_ids),
        })
    }
}

/// A certificate of the org that expires soon, of any kind.
#[derive(Debug, Clone)]
pub struct Expiring {
    /// `ca`, `server`, `signing` or `device`.
    pub kind: String,
    /// The resource id; for a device, its certificate's fingerprint.
    pub id: String,
    /// The alias; for a device, its identity.
    pub name: String,
    pub not_after: OffsetDateTime,
}

impl DeviceStore for SqlStore {
    fn record_devices(&self, node_id: &str, seen: &[DeviceSeen]) -> Result<(), StoreError> {
        let tx = self.begin()?;
        for s in seen {
            tx.execute(
                "INSERT INTO devices (org, identity, fingerprint_sha256, ca_id, serial, not_after,
                     first_seen, last_seen, node, claims, also_ca_ids)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10
                 WHERE EXISTS (SELECT 1 FROM orgs WHERE id = ?1)
                 ON CONFLICT (org, identity, fingerprint_sha256) DO UPDATE
                 SET last_seen = CASE WHEN devices.last_seen > excluded.last_seen
                     THEN devices.last_seen ELSE excluded.last_seen END,
                     node = CASE WHEN devices.last_seen > excluded.last_seen
                     THEN devices.node ELSE excluded.node END,
                     ca_id = excluded.ca_id, claims = excluded.claims,
                     also_ca_ids = excluded.also_ca_ids",
                params![
                    s.org.as_str(),
                    s.identity,
                    s.fingerprint_sha256,
                    s.ca_id,
                    s.serial,
                    to_micros(s.not_after),
                    to_micros(s.at),
                    node_id,
                    s.claims.join(" "),
                    s.also_ca_ids.join(" "),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn list_devices(
        &self,
        org: &OrgId,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<DeviceRecord>, StoreError> {
        let mut clause = Where::page("org", "first_seen", "fingerprint_sha256", org, page);
        if let Some(device_type) = filter.device_type.as_deref().filter(|t| !t.is_empty()) {
            // `d:<type>:` or `g:<type>:`.
            clause.and(
                "(substr(identity, 3, length(CAST(? AS TEXT))) = ? AND substr(identity, 3 + length(CAST(? AS TEXT)), 1) = ':')",
                Value::Text(device_type.to_owned()),
            );
        }
        if let Some(prefix) = filter.id_prefix.as_deref().filter(|p| !p.is_empty()) {
            clause.and(
                "instr(substr(identity, 3), ':') > 0 AND substr(substr(identity, 3), instr(substr(identity, 3), ':') + 1, length(CAST(? AS TEXT))) = ?",
                Value::Text(prefix.to_owned()),
            );
        }
        if let Some(t) = filter.expires_before {
            clause.and("not_after < ?", Value::Integer(to_micros(t)));
        }
        if let Some(t) = filter.seen_after {
            clause.and("last_seen > ?", Value::Integer(to_micros(t)));
        }
        let select = format!("SELECT {COLUMNS} FROM devices");
        let rows = clause.fetch(
            &*self.conn()?,
            org,
            &select,
            page,
            DeviceRow::read,
            DeviceRow::into_record,
        )?;
        Ok(Page::from_rows(rows, page.limit(), |d| {
            (d.first_seen, d.fingerprint_sha256.as_str())
        }))
    }

    fn expiring(
        &self,
        org: &OrgId,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<Expiring>, StoreError> {
        let conn = self.conn()?;
        require_org(&conn, org)?;
        let mut stmt = conn.prepare(
            "SELECT 'ca', id, alias, not_after FROM ca_certificates
                 WHERE org = ?1 AND not_after >= ?2 AND not_after < ?3
             UNION ALL SELECT 'server', id, alias, not_after FROM server_certificates
                 WHERE org = ?1 AND not_after >= ?2 AND not_after < ?3
             UNION ALL SELECT 'signing', id, alias, not_after FROM signing_certificates
                 WHERE org = ?1 AND not_after >= ?2 AND not_after < ?3
             UNION ALL SELECT 'device', fingerprint_sha256, identity, not_after FROM devices
                 WHERE org = ?1 AND not_after >= ?2 AND not_after < ?3
             ORDER BY 4, 1, 2",
        )?;
        let rows = records(
            stmt.query_map(
                params![org.as_str(), to_micros(from), to_micros(until)],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )?,
            |(kind, id, name, not_after)| {
                Ok(Expiring {
                    kind,
                    id,
                    name,
                    not_after: from_micros(not_after)?,
                })
            },
        )?;
        Ok(rows)
    }
}
