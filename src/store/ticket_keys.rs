//! The `ticket_keys` table (DESIGN §12): TLS session ticket keys, one random 32-byte key per org
//! and rotation epoch, sealed with the master key like private keys. Every node follows the same
//! schedule without talking to the others: the epoch is the wall time divided by the rotation
//! period (decided above the store), and a node asking for an epoch's keys creates the current
//! and the next one when missing. Creation is insert-if-absent, so two nodes racing keep, and
//! both return, the one that was stored first.

use super::crypto::random_bytes;
use super::sql::{params, SqlExt};
use super::{SqlStore, StoreError, TicketKeyStore};
use crate::identity::OrgId;

/// Length of a ticket key.
pub const TICKET_KEY_LEN: usize = 32;

/// One org's ticket key for one epoch. Its `Debug` never shows the key.
pub struct TicketKey {
    pub epoch: i64,
    pub secret: [u8; TICKET_KEY_LEN],
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKey(epoch {}, ..)", self.epoch)
    }
}

/// What a sealed key is bound to: its org and epoch.
fn aad(org: &OrgId, epoch: i64) -> String {
    format!("ticket_keys/{org}/{epoch}/key")
}

impl TicketKeyStore for SqlStore {
    fn ticket_keys(&self, org: &OrgId, epoch: i64) -> Result<Vec<TicketKey>, StoreError> {
        let held = self.read_ticket_keys(&*self.conn()?, org, epoch)?;
        let has = |e: i64| held.iter().any(|key| key.epoch == e);
        if has(epoch) && has(epoch + 1) {
            return Ok(held);
        }
        let tx = self.begin()?;
        super::require_org(&*tx, org)?;
        tx.execute(
            "DELETE FROM ticket_keys WHERE epoch < ?1",
            params![epoch - 1],
        )?;
        for e in [epoch, epoch + 1] {
            let mut secret = [0u8; TICKET_KEY_LEN];
            random_bytes(&mut secret)?;
            let sealed = self.master_key.seal(&aad(org, e), &secret)?;
            tx.execute(
                "INSERT INTO ticket_keys (org, epoch, key_sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (org, epoch) DO NOTHING",
                params![org.as_str(), e, sealed],
            )?;
        }
        let keys = self.read_ticket_keys(&*tx, org, epoch)?;
        tx.commit()?;
        Ok(keys)
    }
}

impl SqlStore {
    /// The org's keys of epochs `epoch - 1 ..= epoch + 1`, opened.
    fn read_ticket_keys(
        &self,
        conn: &dyn super::Sql,
        org: &OrgId,
        epoch: i64,
    ) -> Result<Vec<TicketKey>, StoreError> {
        let rows = conn
            .prepare(
                "SELECT epoch, key_sealed FROM ticket_keys
                 WHERE org = ?1 AND epoch BETWEEN ?2 AND ?3 ORDER BY epoch",
            )?
            .query_map(params![org.as_str(), epoch - 1, epoch + 1], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })?;
        super::records(rows, |(epoch, sealed)| {
            let opened = self.master_key.open(&aad(org, epoch), &sealed)?;
            let secret = opened.try_into().map_err(|_| {
                StoreError::Corrupt(format!("{}: not a ticket key", aad(org, epoch)))
            })?;
            Ok(TicketKey { epoch, secret })
        })
    }
}
