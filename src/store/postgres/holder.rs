//! Which nodes are alive, as PostgreSQL itself knows it: each store holds, on one connection of
//! its own (outside the pool, whose connections come and go), a session advisory lock keyed by
//! its holder id (`grant_holders` sequence). PostgreSQL releases the lock when that connection
//! ends — the node stopped, was killed (`kill -9` closes its sockets), or its host vanished (the
//! connection's TCP keepalives, set short here, end it within about half a minute) — so
//! `pg_locks` lists exactly the holders alive, and the grant uses a dead one held are counted as
//! spent by whichever node looks next (see `store::grant_holds`).
//!
//! A store whose lock connection was lost takes the lock again before its next reservation;
//! meanwhile its holds may have been counted as spent (an over-count, never an under-count).

use std::sync::{Mutex, MutexGuard, PoisonError};

use postgres::Client;

use super::{pg, Target, CONNECT_TIMEOUT};
use crate::store::sql::DbError;

/// First key of the holders' advisory locks ("grnt" in ASCII); the holder id is the second.
const LOCK_CLASS: i32 = 0x6772_6e74;

/// Short keepalives on the lock's connection, so PostgreSQL notices a vanished host soon (a
/// killed process closes its connection at once).
const KEEPALIVES: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                          SET tcp_keepalives_count = 3";

/// This store's holder id and the connection that holds its lock.
pub(super) struct HolderLock {
    target: Target,
    id: i32,
    conn: Mutex<Option<Locked>>,
}

struct Locked {
    client: Client,
    /// False while a previous connection's session, not yet ended, still holds the lock.
    locked: bool,
}

impl HolderLock {
    /// A new holder id, locked.
    pub(super) fn take(target: &Target) -> Result<HolderLock, DbError> {
        let mut client = connect(target)?;
        let id: i64 = client
            .query_one("SELECT nextval('grant_holders')", &[])
            .map_err(pg)?
            .get(0);
        let id = i32::try_from(id)
            .map_err(|_| DbError::Backend(format!("postgres: holder id {id} out of range")))?;
        let holder = HolderLock {
            target: target.clone(),
            id,
            conn: Mutex::new(None),
        };
        let locked = try_lock(&mut client, id)?;
        *holder.lock() = Some(Locked { client, locked });
        Ok(holder)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Locked>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The holder id, with its lock held: the connection is checked (one round trip) and, when
    /// it was lost, opened again and the lock taken again.
    pub(super) fn id(&self) -> Result<i64, DbError> {
        let mut conn = self.lock();
        let alive = match conn.as_mut() {
            Some(held) => held.client.is_valid(CONNECT_TIMEOUT).is_ok(),
            None => false,
        };
        if !alive {
            if conn.take().is_some() {
                tracing::warn!(
                    holder = self.id,
                    "the connection holding this node's grant reservations was lost: reconnecting"
                );
            }
            let client = connect(&self.target)?;
            *conn = Some(Locked {
                client,
                locked: false,
            });
        }
        if let Some(held) = conn.as_mut().filter(|held| !held.locked) {
            held.locked = try_lock(&mut held.client, self.id)?;
        }
        Ok(self.id.into())
    }

    /// The connection, for closing it off a runtime worker.
    pub(super) fn into_client(self) -> Option<Client> {
        self.conn
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|held| held.client)
    }
}

fn connect(target: &Target) -> Result<Client, DbError> {
    let mut client = target
        .connect()
        .map_err(|e| DbError::Unavailable(format!("postgres: holder lock: {e}")))?;
    client.batch_execute(KEEPALIVES).map_err(pg)?;
    Ok(client)
}

/// Takes the lock of holder `id`; false while another session (an older connection of this
/// store, not yet ended) still has it.
fn try_lock(client: &mut Client, id: i32) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &id])
        .map_err(pg)?
        .get(0))
}

/// The holder ids whose lock some session of this database holds.
pub(super) fn live_holders() -> String {
    format!(
        "SELECT objid::bigint FROM pg_locks
         WHERE locktype = 'advisory' AND classid = {LOCK_CLASS} AND objsubid = 2 AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
}
