//! The leader lock of the cluster (DESIGN §12): a session-level advisory lock, held on a
//! connection of its own by one node at a time. The node holding it runs what must run once per
//! cluster (the notifier, the CRL fetches). When that node dies its connection goes, PostgreSQL
//! releases the lock, and another node, trying again every [`RETRY`], takes it.
//!
//! A thread, as for the listening connection (`listen`): the blocking client drives its own
//! runtime. The holder asks its connection every [`CHECK`] whether it still lives; a connection
//! that fails (or whose TCP keepalives go unanswered) loses the lead at once, before PostgreSQL
//! can give the lock to another node.

use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;
use tokio::sync::watch;

use super::{pause, Target};
use crate::store::StoreError;

/// The lock ("portcull" + 2: the write lock is +0, migrations +1).
const LEADER_LOCK: i64 = super::WRITE_LOCK + 2;
/// How often a node that does not lead tries to take the lock: a dead leader is replaced within
/// this, plus the time PostgreSQL takes to see its connection gone.
pub const RETRY: Duration = Duration::from_secs(5);
/// How often the leader checks that its connection (and so the lock) still lives.
const CHECK: Duration = Duration::from_secs(1);

/// Starts the thread that campaigns for the lead on the database at `url` until `stop` turns
/// true; `lead(true)` when this node took the lock, `lead(false)` when it lost it (or stops).
pub fn campaign<F>(
    target: &Target,
    node_id: &str,
    stop: watch::Receiver<bool>,
    lead: F,
) -> Result<JoinHandle<()>, StoreError>
where
    F: FnMut(bool) + Send + 'static,
{
    let target = target.with(|config| {
        config.application_name(&format!("portcullis leader lock {node_id}"));
        // A leader cut from the database must find out well before the others may take over.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(2));
        config.keepalives_interval(Duration::from_secs(1));
        config.keepalives_retries(3);
    });
    std::thread::Builder::new()
        .name("pg-leader".into())
        .spawn(move || run(&target, &stop, lead))
        .map_err(StoreError::Io)
}

fn run<F: FnMut(bool)>(target: &Target, stop: &watch::Receiver<bool>, mut lead: F) {
    let mut logged = false;
    while !*stop.borrow() {
        match target.connect() {
            Ok(mut client) => {
                logged = false;
                // PostgreSQL's side too: a leader whose network is gone releases the lock
                // within about 11 s, not after the system's two hours of keepalive silence.
                let keepalives = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
                                  SET tcp_keepalives_count = 3";
                if let Err(error) = client.batch_execute(keepalives) {
                    tracing::warn!(%error, "leader lock: keepalives not set");
                }
                if let Err(error) = hold(client, stop, &mut lead) {
                    tracing::warn!(%error, "leader lock connection lost; trying again");
                }
            }
            Err(error) if !logged => {
                tracing::warn!(%error, "leader lock: cannot connect; trying again");
                logged = true;
            }
            Err(_) => {}
        }
        pause(stop, RETRY);
    }
}

/// Tries for the lock every [`RETRY`] and, once held, checks it every [`CHECK`], until the
/// connection fails (`Err`, the lead lost) or the node stops (`Ok`; closing the connection
/// releases the lock).
fn hold<F: FnMut(bool)>(
    mut client: Client,
    stop: &watch::Receiver<bool>,
    lead: &mut F,
) -> Result<(), postgres::Error> {
    let mut leading = false;
    let outcome = loop {
        if *stop.borrow() {
            break Ok(());
        }
        let asked = if leading {
            client.batch_execute("SELECT 1").map(|()| true)
        } else {
            client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                .map(|row| row.get::<_, bool>(0))
        };
        match asked {
            Ok(true) if !leading => {
                leading = true;
                tracing::info!("this node leads the cluster");
                lead(true);
            }
            Ok(_) => {}
            Err(error) => break Err(error),
        }
        pause(stop, if leading { CHECK } else { RETRY });
    };
    if leading {
        lead(false);
    }
    outcome
}
