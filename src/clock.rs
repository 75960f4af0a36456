//! The wall clock that expiry, notifications and access grants read. Production reads the system
//! clock; tests hand the server a manual one and move it, so that "60 days later" needs no sleep
//! (DESIGN §11). TLS validity and token lifetimes read the system clock directly: they are checked
//! against certificates and tokens made at real time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock; `Some`: a manual clock, in microseconds since the epoch.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `at` until moved.
    pub fn manual(at: OffsetDateTime) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(micros(at)))),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match &self.manual {
            None => OffsetDateTime::now_utc(),
            Some(at) => from_micros(at.load(Ordering::Relaxed)),
        }
    }

    /// Moves a manual clock by `by` (a system clock does not move).
    pub fn advance(&self, by: time::Duration) {
        if let Some(at) = &self.manual {
            at.fetch_add(by.whole_microseconds() as i64, Ordering::Relaxed);
        }
    }
}

/// RFC 3339 in UTC: how every time the platform shows (API, notifications) is written. Here, with
/// the clock, so that both the admin API and `notify` read it from below.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn micros(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = OffsetDateTime::now_utc() - time::Duration::days(3);
        let clock = Clock::manual(start);
        assert_eq!(micros(clock.now()), micros(start));
        clock.advance(time::Duration::days(2));
        assert_eq!(micros(clock.now()), micros(start + time::Duration::days(2)));
        let system = Clock::system();
        system.advance(time::Duration::days(2));
        assert!(system.now() - OffsetDateTime::now_utc() < time::Duration::seconds(1));
    }
}
