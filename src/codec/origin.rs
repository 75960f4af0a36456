//! The stamp every message carries through the broker: who published it (its QoS, RETAIN flag
//! and, when No Local may need it, its client id), put on by the front-end on the way in and taken
//! off before any client sees the message. It lets the front-end do what rumqttd 0.20 leaves out
//! (No Local, Retain As Published, delivery at the lower QoS: `mqtt::delivery`); an upstream broker
//! that does these itself never sees it (`broker::upstream` takes it off). It lives in the codec
//! because it is a convention on [`Properties`] that both sides of the broker read.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Properties, QoS};

/// The user property that carries a publisher's client id through the broker, when a No Local
/// subscription may need it (see [`stamp`]).
pub(crate) const ORIGIN: &str = "portcullis-origin";

/// Set in a payload format indicator that carries a stamp: a client's own indicator is 0 or 1 (the
/// codec refuses any other value), so a stamped one cannot be forged.
const STAMPED: u8 = 0x80;

/// No Local subscriptions held now, in every session of the process (kept sessions included). While
/// there is none, a message need not carry its publisher's client id: the stamp then costs the
/// broker no allocation at all.
static NO_LOCAL: AtomicUsize = AtomicUsize::new(0);

/// Who published a message, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub qos: QoS,
    pub retain: bool,
    /// The publisher's client id, when the stamp carries it (never for a will: its session is
    /// gone).
    pub client_id: Option<String>,
}

/// Stamps a message on its way to the broker with how it was published (`qos`, `retain`) and by
/// whom (`publisher`, `None` for a will), dropping any property of the stamp's name a client sent.
///
/// The QoS and RETAIN flag ride in the payload format indicator, beside the client's own
/// indicator: rumqttd carries it untouched and copies it with no allocation, where a user
/// property costs three allocations each time the router copies the message. The publisher's
/// client id, which only No Local needs (MQTT 5 §3.8.3.1), is added as a user property only while
/// some session holds a No Local subscription, or for a retained message (which a No Local
/// subscription made later may receive). A live message stamped while no No Local subscription
/// is held cannot reach one of its publisher's: a subscription is counted before its SUBSCRIBE
/// goes to the broker, on the link that carries its client's later messages (one link per client
/// id at a time), and the broker starts a new subscription at the end of its log.
pub fn stamp(properties: &mut Properties, qos: QoS, retain: bool, publisher: Option<&str>) {
    if !properties.user_properties.is_empty() {
        properties
            .user_properties
            .retain(|(name, _)| name != ORIGIN);
    }
    let format = match properties.payload_format_indicator {
        None => 0,
        Some(0) => 1,
        Some(_) => 2,
    };
    properties.payload_format_indicator =
        Some(STAMPED | qos as u8 | u8::from(retain) << 2 | format << 3);
    if let Some(client_id) = publisher {
        if retain || NO_LOCAL.load(Ordering::Acquire) > 0 {
            properties
                .user_properties
                .push((ORIGIN.to_owned(), client_id.to_owned()));
        }
    }
}

/// Takes the stamp off a delivery, giving the client's payload format indicator back; `None` when
/// there is none (or it is not ours).
pub fn take(properties: &mut Properties) -> Option<Origin> {
    let client_id = if properties.user_properties.is_empty() {
        None
    } else {
        let at = properties
            .user_properties
            .iter()
            .position(|(name, _)| name == ORIGIN);
        let client_id = at.map(|at| properties.user_properties.remove(at).1);
        properties
            .user_properties
            .retain(|(name, _)| name != ORIGIN);
        client_id
    };
    let code = properties.payload_format_indicator?;
    if code & STAMPED == 0 {
        return None;
    }
    properties.payload_format_indicator = match (code >> 3) & 3 {
        1 => Some(0),
        2 => Some(1),
        _ => None,
    };
    let qos = match code & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return None,
    };
    Some(Origin {
        qos,
        retain: code & 4 != 0,
        client_id,
    })
}

/// One No Local subscription, counted in [`NO_LOCAL`] for as long as it is held.
#[derive(Debug)]
pub struct NoLocal;

impl NoLocal {
    pub fn held() -> NoLocal {
        NO_LOCAL.fetch_add(1, Ordering::AcqRel);
        NoLocal
    }
}

impl Clone for NoLocal {
    fn clone(&self) -> NoLocal {
        NoLocal::held()
    }
}

impl Drop for NoLocal {
    fn drop(&mut self) {
        NO_LOCAL.fetch_sub(1, Ordering::AcqRel);
    }
}
