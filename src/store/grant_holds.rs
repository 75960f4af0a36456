//! The `grant_holds` table: the uses of each grant that each store (each node) holds (DESIGN §11,
//! §12). Several nodes spend one grant; none may pass `max_uses`, none may make a round trip per
//! signature, and a node killed at any moment must leave `uses` no lower than the signatures made.
//!
//! # The rule
//!
//! - A store reserves up to [`RESERVE_BLOCK`] uses at a time, in one write transaction (all
//!   writers of every node are serialised): `reserved` grows by what is left under `max_uses`,
//!   never past it (the `UPDATE` checks it again), and the store's row here grows by as much.
//!   So `reserved` = `uses` + the holds of every live store, and the sum of every node's
//!   reservations never passes `max_uses`.
//! - Uses are spent from memory ([`Meter`]). What a store spent is added to `uses` as an
//!   increment — with its next reservation, when its block runs out, when the grant changes
//!   status, at a clean stop — and taken off its hold; a clean stop also gives back what it did
//!   not spend (`reserved` shrinks) and deletes its rows.
//! - A store that is gone leaves rows here: whatever it held, spent or not, is then added to
//!   `uses` ([`write_off_dead`], run at open, by every grant read and before every reservation).
//!   A store is alive while the backend says so (`Backend::live_holders`: on PostgreSQL, while its
//!   connection holds its advisory lock; on SQLite, the one process that opened the file). A
//!   crash therefore over-counts by what the dead node had not spent (less than a block per
//!   grant), and never under-counts.
//!
//! A renewal sets `uses` to 0 and deletes the renewing store's row; the other stores' rows carry
//! over, `reserved` being their sum, so what they spend from them counts in the new period (with
//! what they spent before and had not written: an over-count, never an under-count).
//!
//! A store whose row was written off while it still lived (its lock connection was lost) finds
//! its row gone when it next writes: its increments are then already counted, and it adds none.

use super::sql::{params, Sql, SqlExt};
use super::StoreError;

/// Uses reserved at a time.
pub const RESERVE_BLOCK: i64 = 100;

/// This store's count of one grant's uses: reserved for it, and spent from memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Meter {
    /// Spent and not yet added to `uses`.
    pub(super) unwritten: i64,
    /// Reserved and not yet spent.
    pub(super) left: i64,
}

impl Meter {
    /// Spends one use of the block; false when none is left.
    pub(super) fn spend(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        self.unwritten += 1;
        true
    }
}

/// Adds what `meter` spent to the grant's `uses` and takes it off this store's hold, in the
/// caller's transaction — unless the hold was written off, which counted it already.
pub(super) fn settle(
    conn: &dyn Sql,
    holder: i64,
    grant_id: &str,
    meter: &mut Meter,
) -> Result<(), StoreError> {
    if meter.unwritten > 0 && take_off(conn, holder, grant_id, meter.unwritten)? {
        conn.execute(
            "UPDATE grants SET uses = uses + ?2 WHERE id = ?1",
            params![grant_id, meter.unwritten],
        )?;
    }
    meter.unwritten = 0;
    Ok(())
}

/// Settles `meter`, then reserves up to [`RESERVE_BLOCK`] more uses for it, never past
/// `max_uses`: none when every use is spent or held.
pub(super) fn reserve(
    conn: &dyn Sql,
    holder: i64,
    grant_id: &str,
    meter: &mut Meter,
) -> Result<(), StoreError> {
    settle(conn, holder, grant_id, meter)?;
    let (reserved, max_uses): (i64, i64) = conn.query_row(
        "SELECT reserved, max_uses FROM grants WHERE id = ?1",
        [grant_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let block = RESERVE_BLOCK.min(max_uses.saturating_sub(reserved));
    if block <= 0 {
        return Ok(());
    }
    let reserved = conn.execute(
        "UPDATE grants SET reserved = reserved + ?2 WHERE id = ?1 AND reserved + ?2 <= max_uses",
        params![grant_id, block],
    )?;
    if reserved == 0 {
        return Ok(());
    }
    conn.execute(
        "INSERT INTO grant_holds (grant_id, holder, held) VALUES (?1, ?2, ?3)
         ON CONFLICT (grant_id, holder) DO UPDATE SET held = grant_holds.held + excluded.held",
        params![grant_id, holder, block],
    )?;
    meter.left += block;
    Ok(())
}

/// What a clean stop does for one grant: settles `meter`, gives back the uses it did not spend,
/// and deletes this store's emptied hold.
pub(super) fn give_back(
    conn: &dyn Sql,
    holder: i64,
    grant_id: &str,
    mut meter: Meter,
) -> Result<(), StoreError> {
    settle(conn, holder, grant_id, &mut meter)?;
    if meter.left > 0 && take_off(conn, holder, grant_id, meter.left)? {
        conn.execute(
            "UPDATE grants SET reserved = reserved - ?2 WHERE id = ?1",
            params![grant_id, meter.left],
        )?;
    }
    conn.execute(
        "DELETE FROM grant_holds WHERE grant_id = ?1 AND holder = ?2 AND held = 0",
        params![grant_id, holder],
    )?;
    Ok(())
}

/// Takes `uses` off this store's hold of the grant; false when it holds none (written off).
fn take_off(conn: &dyn Sql, holder: i64, grant_id: &str, uses: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE grant_holds SET held = held - ?3
         WHERE grant_id = ?1 AND holder = ?2 AND held >= ?3",
        params![grant_id, holder, uses],
    )? > 0)
}

/// Counts as spent every use held by a store that is gone (`live_holders`: the query of the
/// holders alive), in the caller's write transaction. Each dead row is read, then deleted and
/// added by its own statements, so a holder dying meanwhile is left for the next pass rather
/// than deleted uncounted.
pub(super) fn write_off_dead(conn: &dyn Sql, live_holders: &str) -> Result<(), StoreError> {
    let dead = {
        let mut stmt = conn.prepare(&format!(
            "SELECT grant_id, holder, held FROM grant_holds WHERE holder NOT IN ({live_holders})"
        ))?;
        let rows = stmt.query_map(params![], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    for (grant_id, holder, held) in &dead {
        conn.execute(
            "DELETE FROM grant_holds WHERE grant_id = ?1 AND holder = ?2",
            params![grant_id, holder],
        )?;
        conn.execute(
            "UPDATE grants SET uses = uses + ?2 WHERE id = ?1",
            params![grant_id, held],
        )?;
    }
    if !dead.is_empty() {
        let uses: i64 = dead.iter().map(|(_, _, held)| held).sum();
        tracing::warn!(
            holds = dead.len(),
            uses,
            "grant uses held by a node that is gone are counted as spent"
        );
    }
    Ok(())
}
