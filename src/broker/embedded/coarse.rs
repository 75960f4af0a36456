//! Coarse filters: what the router holds for a session's per-device filters (issue 11, finding 8).
//!
//! Why: rumqttd 0.20 keeps every distinct filter it was ever handed for good (about 6 KiB each),
//! so a device that names ever new command filters grows the process for good. A filter whose
//! levels after the org are literal `iot-2/type/<T>/id/<I>/<kind>/<a>/fmt/<b>` (a device's own
//! command filters, or an application's filter on one device) is handed to the router as the one
//! coarse filter `<org>/iot-2/type/<T>/id/<I>/<kind>/+/fmt/+`, subscribed at QoS 2; the link keeps
//! the session's real filters here ([`Table`]) and lets a delivery through only when one of them
//! matches, at the highest QoS of those that match. What the router keeps for good is then one
//! filter per (device, kind), however many filters the device names. Filters with wildcards in
//! the type or id position, shared subscriptions and anything else go to the router as they are.

use std::collections::HashMap;

use crate::codec::matches;
use crate::codec::QoS;

/// Levels of a filter the router may hold coarsely: org, `iot-2`, `type`, T, `id`, I, kind, a,
/// `fmt`, b.
const LEVELS: usize = 10;

/// The coarse filter that stands for `filter` in the router, or `None` when `filter` goes to the
/// router as it is. Also takes a topic: its coarse filter is the one that covers it.
pub fn coarse(filter: &str) -> Option<String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let [org, iot, ty, t, id, i, kind, a, fmt, b] = levels[..] else {
        return None;
    };
    let literal = |level: &str| !level.is_empty() && !level.contains(['+', '#']);
    let covered = |level: &str| level == "+" || literal(level);
    let shaped = iot == "iot-2" && ty == "type" && id == "id" && fmt == "fmt";
    let ok = shaped
        && !org.starts_with('$')
        && [org, t, i, kind].into_iter().all(literal)
        && covered(a)
        && covered(b);
    debug_assert!(!ok || levels.len() == LEVELS);
    ok.then(|| format!("{org}/iot-2/type/{t}/id/{i}/{kind}/+/fmt/+"))
}

/// What the link does with a delivery (see [`Table::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not under a coarse filter of this session: as the router sent it.
    AsSent,
    /// Under a coarse filter, and wanted: at most at this QoS.
    Capped(QoS),
    /// Under a coarse filter, and no filter of the session matches: settled by the link.
    Unwanted,
}

/// One session's filters as the link sees them: the real ones under each coarse filter the
/// router holds for it, and the ones it handed the router as they are ("direct"), each with its
/// QoS. Kept with a session rumqttd keeps (the router keeps the coarse subscriptions).
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// The real filters under each coarse filter: a list, not a map (a device has one or a few,
    /// at most `mqtts.max_filters_per_session`, and a map of one costs four entries' room).
    coarse: HashMap<String, Vec<(String, QoS)>>,
    direct: HashMap<String, QoS>,
}

/// What [`Table::subscribe`] changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Added {
    /// The coarse filter that stands for it, or `None` when it goes to the router as it is.
    pub coarse: Option<String>,
    /// The router does not hold the coarse filter for this session yet: subscribe it.
    pub coarse_is_new: bool,
    /// The session did not hold this filter before (a SUBSCRIBE of one it holds replaces it,
    /// and the router, which holds it already, sends no retained messages for it again).
    pub filter_is_new: bool,
}

impl Table {
    /// Takes `filter` at `qos`, under its coarse filter or as a direct one.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Added {
        let Some(coarse) = coarse(filter) else {
            let filter_is_new = self.direct.insert(filter.to_owned(), qos).is_none();
            return Added {
                coarse: None,
                coarse_is_new: false,
                filter_is_new,
            };
        };
        let coarse_is_new = !self.coarse.contains_key(&coarse);
        let real = self.coarse.entry(coarse.clone()).or_default();
        let filter_is_new = match real.iter_mut().find(|(held, _)| held == filter) {
            Some((_, held_qos)) => {
                *held_qos = qos;
                false
            }
            None => {
                real.push((filter.to_owned(), qos));
                true
            }
        };
        Added {
            coarse: Some(coarse),
            coarse_is_new,
            filter_is_new,
        }
    }

    /// Lets go of `filter`: `Ok(Some(coarse))` when that was the last filter under `coarse`
    /// (unsubscribe it from the router), `Ok(None)` when the router keeps it, `Err(true)` when
    /// the session did not hold it (under a coarse filter), `Err(false)` when it is direct.
    pub fn unsubscribe(&mut self, filter: &str) -> Result<Option<String>, bool> {
        let Some(coarse) = coarse(filter) else {
            self.direct.remove(filter);
            return Err(false);
        };
        let Some(real) = self.coarse.get_mut(&coarse) else {
            return Err(true);
        };
        let Some(at) = real.iter().position(|(held, _)| held == filter) else {
            return Err(true);
        };
        real.swap_remove(at);
        if real.is_empty() {
            self.coarse.remove(&coarse);
            return Ok(Some(coarse));
        }
        Ok(None)
    }

    /// Whether the session holds nothing under a coarse filter (nothing worth keeping).
    pub fn is_empty(&self) -> bool {
        self.coarse.is_empty()
    }

    /// How a delivery on `topic` (a broker topic) goes on: a topic under one of the session's
    /// coarse filters goes only when a filter of the session matches it, at the highest QoS of
    /// those that match (MQTT 5 §3.3.4: one copy for overlapping subscriptions).
    pub fn verdict(&self, topic: &str) -> Verdict {
        if self.coarse.is_empty() {
            return Verdict::AsSent;
        }
        let Some(real) = coarse(topic).and_then(|c| self.coarse.get(&c)) else {
            return Verdict::AsSent;
        };
        let direct = self.direct.iter();
        real.iter()
            .map(|(filter, qos)| (filter, qos))
            .chain(direct)
            .filter(|(filter, _)| matches(filter, topic))
            .map(|(_, qos)| *qos)
            .max()
            .map_or(Verdict::Unwanted, Verdict::Capped)
    }

    /// The highest QoS of `filters` (real filters under coarse ones) that match `topic`, if any.
    pub fn wanted_by(filters: &[(String, QoS)], topic: &str) -> Option<QoS> {
        filters
            .iter()
            .filter(|(filter, _)| matches(filter, topic))
            .map(|(_, qos)| *qos)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_device_filters_are_coarse_and_the_rest_is_not() {
        let c = |f: &str| coarse(f);
        let want = Some("acme/iot-2/type/s/id/d1/cmd/+/fmt/+".to_owned());
        assert_eq!(c("acme/iot-2/type/s/id/d1/cmd/reboot/fmt/json"), want);
        assert_eq!(c("acme/iot-2/type/s/id/d1/cmd/+/fmt/+"), want);
        assert_eq!(c("acme/iot-2/type/s/id/d1/cmd/c1/fmt/+"), want);
        assert_eq!(
            c("acme/iot-2/type/s/id/d1/evt/e/fmt/json"),
            Some("acme/iot-2/type/s/id/d1/evt/+/fmt/+".to_owned())
        );
        for direct in [
            "acme/iot-2/type/+/id/d1/cmd/c/fmt/json",
            "acme/iot-2/type/s/id/+/cmd/c/fmt/json",
            "acme/iot-2/type/s/id/d1/+/c/fmt/json",
            "acme/iot-2/type/s/id/d1/mon",
            "acme/iot-2/type/s/id/d1/cmd/#",
            "acme/iot-2/type/s/id/d1/cmd/c/fmt/#",
            "acme/iot-2/type/s/id/d1/cmd/c/fmt/json/x",
            "acme/iot-2/type/s/id/d1/cmd/c/xxx/json",
            "$share/g/acme/iot-2/type/s/id/d1/cmd/c/fmt/json",
            "acme/other",
        ] {
            assert_eq!(c(direct), None, "{direct}");
        }
    }

    #[test]
    fn deliveries_follow_the_real_filters_at_their_highest_qos() {
        let mut table = Table::default();
        let a = table.subscribe("o/iot-2/type/s/id/d/cmd/a/fmt/json", QoS::AtMostOnce);
        assert!(a.coarse.is_some() && a.coarse_is_new && a.filter_is_new);
        let b = table.subscribe("o/iot-2/type/s/id/d/cmd/+/fmt/json", QoS::AtLeastOnce);
        assert!(!b.coarse_is_new && b.filter_is_new);
        let again = table.subscribe("o/iot-2/type/s/id/d/cmd/+/fmt/json", QoS::AtLeastOnce);
        assert!(!again.coarse_is_new && !again.filter_is_new);
        let direct = "o/iot-2/type/+/id/+/evt/+/fmt/+";
        let d = table.subscribe(direct, QoS::ExactlyOnce);
        assert!(d.coarse.is_none() && d.filter_is_new);
        assert!(!table.subscribe(direct, QoS::ExactlyOnce).filter_is_new);
        assert_eq!(
            table.verdict("o/iot-2/type/s/id/d/cmd/a/fmt/json"),
            Verdict::Capped(QoS::AtLeastOnce)
        );
        assert_eq!(
            table.verdict("o/iot-2/type/s/id/d/cmd/a/fmt/xml"),
            Verdict::Unwanted
        );
        assert_eq!(
            table.verdict("o/iot-2/type/s/id/d/evt/a/fmt/xml"),
            Verdict::AsSent
        );
        assert_eq!(
            table.unsubscribe("o/iot-2/type/s/id/d/cmd/a/fmt/json"),
            Ok(None)
        );
        assert_eq!(
            table.unsubscribe("o/iot-2/type/s/id/d/cmd/a/fmt/json"),
            Err(true)
        );
        assert_eq!(
            table.unsubscribe("o/iot-2/type/s/id/d/cmd/+/fmt/json"),
            Ok(Some("o/iot-2/type/s/id/d/cmd/+/fmt/+".to_owned()))
        );
        assert!(table.is_empty());
        assert_eq!(
            table.verdict("o/iot-2/type/s/id/d/cmd/a/fmt/json"),
            Verdict::AsSent
        );
    }
}
