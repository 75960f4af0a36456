//! Topic policy: maps what a client publishes and subscribes to into its organisation's namespace
//! inside the broker (`<org>/…`), refuses everything else, and maps deliveries back.
//!
//! Why here and why so strict: the broker knows nothing of organisations or devices; tenant
//! isolation is exactly this mapping. Every topic a client names is checked against MQTT syntax
//! first (a violation is [`TopicRefused::Malformed`]), then against the org's policy
//! ([`TopicRefused::NotAllowed`]), and only then prefixed. Because the prefix is added here and
//! never taken from the client, no topic a client writes — `#`, `+/…`, `../other`, another org's
//! name — can reach outside `<org>/`. MQTT has no path semantics: `..` is an ordinary level name.
//!
//! These functions run for every message: they split on `/` without collecting and allocate only
//! the one `String` they return.

use crate::identity::{is_name, ClientId, Identity};

/// An organisation's policy is a stored attribute of the org, defined with the store's records.
pub use crate::store::TopicPolicy;

/// Why a topic or filter was refused; a bounded label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicRefused {
    #[error("topic not allowed for this client")]
    NotAllowed,
    #[error("malformed topic or filter")]
    Malformed,
}

/// Longest topic or filter MQTT can carry (a two-byte length).
const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// One level of an iot-2 pattern.
#[derive(Clone, Copy)]
enum Level {
    /// Exactly this text.
    Lit(&'static str),
    /// A name segment (1–36 of `[A-Za-z0-9_.-]`), or `+` when matching a filter.
    Name,
}

use Level::{Lit, Name};

/// `iot-2/evt/<E>/fmt/<F>` (device publish).
const DEVICE_EVT: [Level; 5] = [Lit("iot-2"), Lit("evt"), Name, Lit("fmt"), Name];
/// `iot-2/cmd/<C>/fmt/<F>` (device subscribe).
const DEVICE_CMD: [Level; 5] = [Lit("iot-2"), Lit("cmd"), Name, Lit("fmt"), Name];
/// `iot-2/type/<t>/id/<i>/evt/<E>/fmt/<F>`.
const TYPED_EVT: [Level; 9] = typed("evt");
/// `iot-2/type/<t>/id/<i>/cmd/<C>/fmt/<F>`.
const TYPED_CMD: [Level; 9] = typed("cmd");
/// `iot-2/type/<t>/id/<i>/mon`.
const TYPED_MON: [Level; 6] = [Lit("iot-2"), Lit("type"), Name, Lit("id"), Name, Lit("mon")];

const fn typed(kind: &'static str) -> [Level; 9] {
    [
        Lit("iot-2"),
        Lit("type"),
        Name,
        Lit("id"),
        Name,
        Lit(kind),
        Name,
        Lit("fmt"),
        Name,
    ]
}

/// True when `topic` has exactly the levels of `pattern`; in a filter (`plus_ok`) a `Name` level
/// may also be `+`.
fn matches(topic: &str, pattern: &[Level], plus_ok: bool) -> bool {
    let mut levels = topic.split('/');
    for want in pattern {
        let ok = match (levels.next(), want) {
            (Some(got), Lit(lit)) => got == *lit,
            (Some(got), Name) => is_name(got) || (plus_ok && got == "+"),
            (None, _) => false,
        };
        if !ok {
            return false;
        }
    }
    levels.next().is_none()
}

/// The first `N` levels of `topic`, when it has exactly `N`.
fn levels<const N: usize>(topic: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut it = topic.split('/');
    for slot in &mut out {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

/// MQTT topic-name syntax (PUBLISH, will): not empty, no wildcard, no NUL.
fn check_topic_syntax(topic: &str) -> Result<(), TopicRefused> {
    if topic.is_empty()
        || topic.len() > MAX_TOPIC_LEN
        || topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
    {
        return Err(TopicRefused::Malformed);
    }
    Ok(())
}

/// MQTT topic-filter syntax: not empty, no NUL, `+` alone in its level, `#` alone in the last.
fn check_filter_syntax(filter: &str) -> Result<(), TopicRefused> {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return Err(TopicRefused::Malformed);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let bad_plus = level.contains('+') && level != "+";
        let bad_hash = level.contains('#') && (level != "#" || !last);
        if bad_plus || bad_hash {
            return Err(TopicRefused::Malformed);
        }
    }
    Ok(())
}

/// `prefix/rest` in one allocation, refused when MQTT could not carry it.
fn join(prefix: &[&str], rest: &str) -> Result<String, TopicRefused> {
    let len = prefix.iter().map(|p| p.len() + 1).sum::<usize>() + rest.len();
    if len > MAX_TOPIC_LEN {
        return Err(TopicRefused::Malformed);
    }
    let mut out = String::with_capacity(len);
    for p in prefix {
        out.push_str(p);
        out.push('/');
    }
    out.push_str(rest);
    Ok(out)
}

impl TopicPolicy {
    /// Every topic policy, each at its [`TopicPolicy::index`].
    pub const ALL: [TopicPolicy; 2] = [TopicPolicy::Iot2, TopicPolicy::Open];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a mapped name is, for [`TopicMap::keeps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A PUBLISH topic or a will's.
    Topic,
    /// A SUBSCRIBE filter.
    Filter,
}

/// The mapping for one session: built at CONNECT, its policy changed only when the org's is and
/// the session holds nothing the new one refuses ([`TopicMap::keeps`]).
///
/// Gateways: a gateway may publish events for itself or for any device of its organisation and
/// subscribe to the commands of any of them. There is no gateway↔device registry yet, so "the
/// devices behind it" of DESIGN §4 is, for now, every device of the org: a gateway certificate is
/// as powerful as the org's devices together. When a registry exists, this is where it is checked.
#[derive(Debug, Clone)]
pub struct TopicMap {
    client: ClientId,
    policy: TopicPolicy,
}

impl TopicMap {
    pub fn new(client: ClientId, policy: TopicPolicy) -> TopicMap {
        TopicMap { client, policy }
    }

    fn org(&self) -> &str {
        self.client.org.as_str()
    }

    pub fn policy(&self) -> TopicPolicy {
        self.policy
    }

    /// Follows `policy` from now on: the org's policy changed under a live session that
    /// [`TopicMap::keeps`] everything it holds (DESIGN §13).
    pub fn set_policy(&mut self, policy: TopicPolicy) {
        self.policy = policy;
    }

    /// Whether `broker`, what this map made of one of its client's topics (`Form::Topic`) or
    /// filters, is what `policy` makes of the same name: a session may go on holding it under
    /// `policy`, and it means the same there. A name `policy` refuses, or would route elsewhere
    /// (a device's `iot-2/cmd/…` filter is its own commands under `iot-2`, a topic of that name
    /// under `open`), is not kept.
    pub fn keeps(&self, policy: TopicPolicy, broker: &str, form: Form) -> bool {
        if policy == self.policy {
            return true;
        }
        let Some(name) = self.client_form(broker) else {
            return false;
        };
        let under = TopicMap {
            client: self.client.clone(),
            policy,
        };
        let mapped = match form {
            Form::Topic => under.publish(&name),
            Form::Filter => under.filter(&name),
        };
        mapped.is_ok_and(|mapped| mapped == broker)
    }

    /// The name the client wrote for `broker`, a topic or filter this map made: the inverse of
    /// [`TopicMap::publish`] and [`TopicMap::filter`].
    fn client_form(&self, broker: &str) -> Option<String> {
        let org = self.org();
        if let Some(shared) = broker.strip_prefix("$share/") {
            let (group, inner) = shared.split_once('/')?;
            let rest = inner.strip_prefix(org)?.strip_prefix('/')?;
            return join(&["$share", group], rest).ok();
        }
        let rest = broker.strip_prefix(org)?.strip_prefix('/')?;
        match (self.policy, &self.client.identity) {
            (
                TopicPolicy::Iot2,
                Identity::Device {
                    device_type,
                    device_id,
                },
            ) => match levels::<9>(rest) {
                Some(["iot-2", "type", t, "id", i, kind, name, fmt, format])
                    if t == device_type.as_str() && i == device_id.as_str() =>
                {
                    join(&["iot-2", kind, name, fmt], format).ok()
                }
                _ => None,
            },
            _ => Some(rest.to_owned()),
        }
    }

    /// Client topic (PUBLISH or will) → broker topic.
    pub fn publish(&self, topic: &str) -> Result<String, TopicRefused> {
        check_topic_syntax(topic)?;
        if topic.starts_with('$') {
            return Err(TopicRefused::NotAllowed);
        }
        let org = self.org();
        let allowed = match (self.policy, &self.client.identity) {
            (TopicPolicy::Open, _) => true,
            (
                TopicPolicy::Iot2,
                Identity::Device {
                    device_type,
                    device_id,
                },
            ) => return device_own(org, device_type, device_id, topic, &DEVICE_EVT, false),
            (TopicPolicy::Iot2, Identity::Gateway { .. }) => matches(topic, &TYPED_EVT, false),
            (TopicPolicy::Iot2, Identity::App { .. }) => {
                matches(topic, &TYPED_EVT, false) || matches(topic, &TYPED_CMD, false)
            }
        };
        under_org(org, topic, allowed)
    }

    /// Client filter (SUBSCRIBE or UNSUBSCRIBE) → broker filter.
    pub fn filter(&self, filter: &str) -> Result<String, TopicRefused> {
        check_filter_syntax(filter)?;
        let org = self.org();
        if self.policy == TopicPolicy::Open {
            return open_filter(org, filter);
        }
        if filter.starts_with('$') {
            return Err(TopicRefused::NotAllowed);
        }
        let allowed = match &self.client.identity {
            Identity::Device {
                device_type,
                device_id,
            } => return device_own(org, device_type, device_id, filter, &DEVICE_CMD, true),
            typed => receives_typed(typed, filter, true),
        };
        under_org(org, filter, allowed)
    }

    /// Broker topic of a delivery → the topic the client sees; `None` if it is outside the
    /// client's view (never delivered).
    pub fn deliver(&self, broker_topic: &str) -> Option<String> {
        let rest = broker_topic
            .strip_prefix(self.org())
            .and_then(|r| r.strip_prefix('/'))?;
        if check_topic_syntax(rest).is_err() {
            return None;
        }
        let visible = match (self.policy, &self.client.identity) {
            (TopicPolicy::Open, _) => true,
            (
                TopicPolicy::Iot2,
                Identity::Device {
                    device_type,
                    device_id,
                },
            ) => {
                return match levels::<9>(rest) {
                    Some(["iot-2", "type", t, "id", i, cmd, c, fmt, f])
                        if t == device_type.as_str()
                            && i == device_id.as_str()
                            && matches(rest, &TYPED_CMD, false) =>
                    {
                        join(&["iot-2", cmd, c, fmt], f).ok()
                    }
                    _ => None,
                };
            }
            (TopicPolicy::Iot2, typed) => receives_typed(typed, rest, false),
        };
        visible.then(|| rest.to_owned())
    }
}

/// A device's own topic or filter, `iot-2/<evt|cmd>/<name>/fmt/<format>` matching `pattern`, →
/// `<org>/iot-2/type/<device_type>/id/<device_id>/<evt|cmd>/<name>/fmt/<format>`: the device's
/// type and id come from its certificate, never from what it writes.
fn device_own(
    org: &str,
    device_type: &str,
    device_id: &str,
    topic: &str,
    pattern: &[Level],
    plus_ok: bool,
) -> Result<String, TopicRefused> {
    match levels::<5>(topic) {
        Some(["iot-2", kind, name, fmt, format]) if matches(topic, pattern, plus_ok) => join(
            &[
                org,
                "iot-2",
                "type",
                device_type,
                "id",
                device_id,
                kind,
                name,
                fmt,
            ],
            format,
        ),
        _ => Err(TopicRefused::NotAllowed),
    }
}

/// Whether a gateway or an app receives this typed (`iot-2/type/<t>/id/<i>/…`) topic; with
/// `plus_ok`, whether it may subscribe to this filter. One rule for both, so a client is delivered
/// exactly what it may subscribe to. A device is never asked: it has its own short form.
fn receives_typed(identity: &Identity, topic: &str, plus_ok: bool) -> bool {
    match identity {
        Identity::Device { .. } => false,
        Identity::Gateway { .. } => matches(topic, &TYPED_CMD, plus_ok),
        Identity::App { .. } => {
            matches(topic, &TYPED_EVT, plus_ok) || matches(topic, &TYPED_MON, plus_ok)
        }
    }
}

/// `<org>/<topic>` when `allowed`.
fn under_org(org: &str, topic: &str, allowed: bool) -> Result<String, TopicRefused> {
    if allowed {
        join(&[org], topic)
    } else {
        Err(TopicRefused::NotAllowed)
    }
}

/// `open` policy filter: any filter not starting with `$` under `<org>/`, and
/// `$share/<group>/<filter>` → `$share/<group>/<org>/<filter>`.
fn open_filter(org: &str, filter: &str) -> Result<String, TopicRefused> {
    let Some(shared) = filter.strip_prefix("$share/") else {
        if filter.starts_with('$') {
            return Err(TopicRefused::NotAllowed);
        }
        return join(&[org], filter);
    };
    // MQTT 5 §4.8.2: the share name is at least one character, without `/`, `+` or `#`, and the
    // filter after it is not empty.
    let (group, inner) = shared.split_once('/').ok_or(TopicRefused::Malformed)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicRefused::Malformed);
    }
    if inner.starts_with('$') {
        return Err(TopicRefused::NotAllowed);
    }
    join(&["$share", group, org], inner)
}

#[cfg(test)]
mod tests {
    use super::TopicRefused::{Malformed, NotAllowed};
    use super::*;

    fn map(client: &str, policy: TopicPolicy) -> TopicMap {
        TopicMap::new(ClientId::parse(client).unwrap(), policy)
    }

    fn device() -> TopicMap {
        map("d:acme:sensor:dev1", TopicPolicy::Iot2)
    }
    fn gateway() -> TopicMap {
        map("g:acme:gw:g1", TopicPolicy::Iot2)
    }
    fn app() -> TopicMap {
        map("a:acme:dash", TopicPolicy::Iot2)
    }
    fn open() -> TopicMap {
        map("d:acme:sensor:dev1", TopicPolicy::Open)
    }

    /// `(input, expected)` rows for one direction.
    fn check(
        what: &str,
        f: impl Fn(&str) -> Result<String, TopicRefused>,
        rows: &[(&str, Result<&str, TopicRefused>)],
    ) {
        for (input, want) in rows {
            let got = f(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{what} {input:?}");
        }
    }

    /// Attacks every iot-2 client kind must refuse, as filters. As a topic name, anything holding
    /// a wildcard is malformed instead (see [`check_common`]).
    const COMMON_REFUSALS: &[(&str, Result<&str, TopicRefused>)] = &[
        ("", Err(Malformed)),
        ("#", Err(NotAllowed)),
        ("+", Err(NotAllowed)),
        ("$SYS/#", Err(NotAllowed)),
        ("$SYS/broker/clients", Err(NotAllowed)),
        (
            "$share/g/iot-2/type/sensor/id/dev1/evt/e/fmt/json",
            Err(NotAllowed),
        ),
        ("iot-2/#", Err(NotAllowed)),
        (
            "+/iot-2/type/sensor/id/dev1/cmd/c/fmt/json",
            Err(NotAllowed),
        ),
        (
            "acme/iot-2/type/sensor/id/dev1/cmd/c/fmt/json",
            Err(NotAllowed),
        ),
        (
            "beta/iot-2/type/sensor/id/dev1/evt/e/fmt/json",
            Err(NotAllowed),
        ),
        (
            "../beta/iot-2/type/sensor/id/dev1/evt/e/fmt/json",
            Err(NotAllowed),
        ),
        ("/iot-2/evt/e/fmt/json", Err(NotAllowed)),
        ("iot-2/evt/e/fmt/json/", Err(NotAllowed)),
        ("iot-2//evt/e/fmt/json", Err(NotAllowed)),
        ("IOT-2/evt/e/fmt/json", Err(NotAllowed)),
        ("iot-2/type/sensor/id/dev1/evt/e/fmt/json\0", Err(Malformed)),
        ("iot-2/evt/e#/fmt/json", Err(Malformed)),
        ("iot-2/evt/e+/fmt/json", Err(Malformed)),
    ];

    fn check_common(m: &TopicMap) {
        check("filter", |t| m.filter(t), COMMON_REFUSALS);
        for (input, want) in COMMON_REFUSALS {
            let want = if input.contains(['+', '#']) {
                Err(Malformed)
            } else {
                *want
            };
            assert_eq!(
                m.publish(input).as_deref().map_err(|e| *e),
                want,
                "publish {input:?}"
            );
        }
    }

    #[test]
    fn device_publish() {
        let m = device();
        check_common(&m);
        let n36 = "e".repeat(36);
        let n37 = "e".repeat(37);
        let ok36 = format!("iot-2/evt/{n36}/fmt/json");
        let want36 = format!("acme/iot-2/type/sensor/id/dev1/evt/{n36}/fmt/json");
        let bad37 = format!("iot-2/evt/{n37}/fmt/json");
        check(
            "publish",
            |t| m.publish(t),
            &[
                (
                    "iot-2/evt/status/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev1/evt/status/fmt/json"),
                ),
                (
                    "iot-2/evt/a.b_c-D/fmt/x.y",
                    Ok("acme/iot-2/type/sensor/id/dev1/evt/a.b_c-D/fmt/x.y"),
                ),
                // `..` is an ordinary level name in MQTT; it stays where it is put.
                (
                    "iot-2/evt/../fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev1/evt/../fmt/json"),
                ),
                (&ok36, Ok(&want36)),
                (&bad37, Err(NotAllowed)),
                ("iot-2/evt/+/fmt/json", Err(Malformed)),
                ("iot-2/evt/e/fmt/#", Err(Malformed)),
                ("iot-2/evt//fmt/json", Err(NotAllowed)),
                ("iot-2/evt/e/fmt/", Err(NotAllowed)),
                ("iot-2/evt/e/fmt/j son", Err(NotAllowed)),
                ("iot-2/evt/é/fmt/json", Err(NotAllowed)),
                ("iot-2/evt/e/fmt/json/extra", Err(NotAllowed)),
                ("iot-2/evt/e", Err(NotAllowed)),
                ("iot-2/cmd/c/fmt/json", Err(NotAllowed)),
                // Another device's topic space, or its own in the typed form: refused.
                ("iot-2/type/sensor/id/dev2/evt/e/fmt/json", Err(NotAllowed)),
                ("iot-2/type/sensor/id/dev1/evt/e/fmt/json", Err(NotAllowed)),
                ("iot-2/type/sensor/id/dev2/cmd/c/fmt/json", Err(NotAllowed)),
            ],
        );
    }

    #[test]
    fn device_filter() {
        let m = device();
        check(
            "filter",
            |t| m.filter(t),
            &[
                (
                    "iot-2/cmd/reboot/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json"),
                ),
                (
                    "iot-2/cmd/+/fmt/+",
                    Ok("acme/iot-2/type/sensor/id/dev1/cmd/+/fmt/+"),
                ),
                (
                    "iot-2/cmd/+/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev1/cmd/+/fmt/json"),
                ),
                ("iot-2/cmd/#", Err(NotAllowed)),
                ("iot-2/cmd/+/fmt/#", Err(NotAllowed)),
                ("iot-2/+/c/fmt/json", Err(NotAllowed)),
                ("+/cmd/c/fmt/json", Err(NotAllowed)),
                ("iot-2/cmd/c+/fmt/json", Err(Malformed)),
                ("iot-2/cmd/#/fmt/json", Err(Malformed)),
                ("iot-2/evt/+/fmt/+", Err(NotAllowed)),
                ("iot-2/type/sensor/id/dev2/cmd/+/fmt/+", Err(NotAllowed)),
                ("iot-2/type/+/id/+/cmd/+/fmt/+", Err(NotAllowed)),
                ("iot-2/type/sensor/id/dev1/cmd/+/fmt/+", Err(NotAllowed)),
            ],
        );
    }

    #[test]
    fn device_deliver() {
        let m = device();
        assert_eq!(
            m.deliver("acme/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json")
                .as_deref(),
            Some("iot-2/cmd/reboot/fmt/json")
        );
        for outside in [
            "acme/iot-2/type/sensor/id/dev2/cmd/reboot/fmt/json",
            "acme/iot-2/type/other/id/dev1/cmd/reboot/fmt/json",
            "beta/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
            "acme/iot-2/type/sensor/id/dev1/evt/e/fmt/json",
            "acme/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json/x",
            "acme/iot-2/type/sensor/id/dev1/cmd/reboot",
            "acmex/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
            "acme",
            "acme/",
            "",
            "$SYS/broker",
            "iot-2/cmd/reboot/fmt/json",
        ] {
            assert_eq!(m.deliver(outside), None, "{outside:?}");
        }
    }

    #[test]
    fn gateway_publish_filter_deliver() {
        let m = gateway();
        check_common(&m);
        check(
            "publish",
            |t| m.publish(t),
            &[
                (
                    "iot-2/type/gw/id/g1/evt/up/fmt/json",
                    Ok("acme/iot-2/type/gw/id/g1/evt/up/fmt/json"),
                ),
                // Any device of the org: no gateway↔device registry yet.
                (
                    "iot-2/type/sensor/id/dev9/evt/up/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev9/evt/up/fmt/json"),
                ),
                ("iot-2/type/sensor/id/dev9/cmd/c/fmt/json", Err(NotAllowed)),
                ("iot-2/type/sensor/id/dev9/mon", Err(NotAllowed)),
                ("iot-2/evt/up/fmt/json", Err(NotAllowed)),
                ("iot-2/type/+/id/dev9/evt/up/fmt/json", Err(Malformed)),
                ("iot-2/type//id/dev9/evt/up/fmt/json", Err(NotAllowed)),
            ],
        );
        check(
            "filter",
            |t| m.filter(t),
            &[
                (
                    "iot-2/type/+/id/+/cmd/+/fmt/+",
                    Ok("acme/iot-2/type/+/id/+/cmd/+/fmt/+"),
                ),
                (
                    "iot-2/type/gw/id/g1/cmd/c/fmt/json",
                    Ok("acme/iot-2/type/gw/id/g1/cmd/c/fmt/json"),
                ),
                ("iot-2/type/+/id/+/cmd/#", Err(NotAllowed)),
                ("iot-2/type/+/id/+/evt/+/fmt/+", Err(NotAllowed)),
                ("iot-2/type/+/id/+/mon", Err(NotAllowed)),
                ("iot-2/cmd/+/fmt/+", Err(NotAllowed)),
            ],
        );
        assert_eq!(
            m.deliver("acme/iot-2/type/sensor/id/dev9/cmd/c/fmt/json")
                .as_deref(),
            Some("iot-2/type/sensor/id/dev9/cmd/c/fmt/json")
        );
        for outside in [
            "beta/iot-2/type/sensor/id/dev9/cmd/c/fmt/json",
            "acme/iot-2/type/sensor/id/dev9/evt/c/fmt/json",
            "acme/other/topic",
            "acme/",
        ] {
            assert_eq!(m.deliver(outside), None, "{outside:?}");
        }
    }

    #[test]
    fn app_publish_filter_deliver() {
        let m = app();
        check_common(&m);
        check(
            "publish",
            |t| m.publish(t),
            &[
                (
                    "iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json"),
                ),
                (
                    "iot-2/type/sensor/id/dev1/evt/e/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/dev1/evt/e/fmt/json"),
                ),
                ("iot-2/type/sensor/id/dev1/mon", Err(NotAllowed)),
                ("iot-2/evt/e/fmt/json", Err(NotAllowed)),
                ("iot-2/cmd/c/fmt/json", Err(NotAllowed)),
            ],
        );
        check(
            "filter",
            |t| m.filter(t),
            &[
                (
                    "iot-2/type/+/id/+/evt/+/fmt/+",
                    Ok("acme/iot-2/type/+/id/+/evt/+/fmt/+"),
                ),
                (
                    "iot-2/type/sensor/id/+/evt/status/fmt/json",
                    Ok("acme/iot-2/type/sensor/id/+/evt/status/fmt/json"),
                ),
                ("iot-2/type/+/id/+/mon", Ok("acme/iot-2/type/+/id/+/mon")),
                ("iot-2/type/+/id/+/cmd/+/fmt/+", Err(NotAllowed)),
                ("iot-2/type/+/id/+/#", Err(NotAllowed)),
                ("iot-2/type/+/id/+/mon/#", Err(NotAllowed)),
                ("iot-2/type/+/id/+/+", Err(NotAllowed)),
            ],
        );
        for (broker, client) in [
            (
                "acme/iot-2/type/sensor/id/dev1/evt/e/fmt/json",
                Some("iot-2/type/sensor/id/dev1/evt/e/fmt/json"),
            ),
            (
                "acme/iot-2/type/sensor/id/dev1/mon",
                Some("iot-2/type/sensor/id/dev1/mon"),
            ),
            ("acme/iot-2/type/sensor/id/dev1/cmd/c/fmt/json", None),
            ("beta/iot-2/type/sensor/id/dev1/evt/e/fmt/json", None),
            ("acme-2/iot-2/type/sensor/id/dev1/evt/e/fmt/json", None),
        ] {
            assert_eq!(m.deliver(broker).as_deref(), client, "{broker:?}");
        }
    }

    #[test]
    fn open_policy_publish() {
        let m = open();
        check(
            "publish",
            |t| m.publish(t),
            &[
                ("a/b/c", Ok("acme/a/b/c")),
                ("a", Ok("acme/a")),
                ("/", Ok("acme//")),
                ("a//b", Ok("acme/a//b")),
                // Another org's name in the topic stays confined under our own prefix.
                ("beta/secrets", Ok("acme/beta/secrets")),
                ("../beta/secrets", Ok("acme/../beta/secrets")),
                ("", Err(Malformed)),
                ("a/#", Err(Malformed)),
                ("a/+/b", Err(Malformed)),
                ("a\0b", Err(Malformed)),
                ("$SYS/x", Err(NotAllowed)),
                ("$share/g/a", Err(NotAllowed)),
            ],
        );
    }

    #[test]
    fn open_policy_filter() {
        let m = open();
        check(
            "filter",
            |t| m.filter(t),
            &[
                ("#", Ok("acme/#")),
                ("+/x", Ok("acme/+/x")),
                ("a/+/b/#", Ok("acme/a/+/b/#")),
                ("beta/#", Ok("acme/beta/#")),
                ("$share/workers/jobs/#", Ok("$share/workers/acme/jobs/#")),
                ("$share/workers/#", Ok("$share/workers/acme/#")),
                ("$share/workers/beta/#", Ok("$share/workers/acme/beta/#")),
                ("", Err(Malformed)),
                ("a/#/b", Err(Malformed)),
                ("a#", Err(Malformed)),
                ("a/b+", Err(Malformed)),
                ("+a/b", Err(Malformed)),
                ("a\0", Err(Malformed)),
                ("$SYS/#", Err(NotAllowed)),
                ("$share", Err(NotAllowed)),
                ("$shared/g/a", Err(NotAllowed)),
                ("$share/", Err(Malformed)),
                ("$share/g", Err(Malformed)),
                ("$share/g/", Err(Malformed)),
                ("$share//a", Err(Malformed)),
                ("$share/#", Err(Malformed)),
                ("$share/+/a", Err(Malformed)),
                ("$share/g+/a", Err(Malformed)),
                ("$share/g/$SYS/#", Err(NotAllowed)),
                ("$share/g/$share/h/a", Err(NotAllowed)),
            ],
        );
    }

    #[test]
    fn open_policy_deliver() {
        let m = open();
        assert_eq!(m.deliver("acme/a/b").as_deref(), Some("a/b"));
        assert_eq!(m.deliver("acme/beta/x").as_deref(), Some("beta/x"));
        assert_eq!(m.deliver("acme//").as_deref(), Some("/"));
        for outside in [
            "beta/a/b", "acme", "acme/", "acmes/a", "$SYS/x", "a/acme/b", "",
        ] {
            assert_eq!(m.deliver(outside), None, "{outside:?}");
        }
    }

    #[test]
    fn open_policy_applies_to_every_kind() {
        for c in ["g:acme:gw:g1", "a:acme:dash"] {
            let m = map(c, TopicPolicy::Open);
            assert_eq!(m.publish("x/y").as_deref(), Ok("acme/x/y"));
            assert_eq!(m.filter("#").as_deref(), Ok("acme/#"));
            assert_eq!(m.deliver("acme/x").as_deref(), Some("x"));
        }
    }

    #[test]
    fn round_trip_device_command() {
        // What an app publishes for a device is delivered to that device, and only to it.
        let broker = app()
            .publish("iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json")
            .unwrap();
        assert_eq!(
            device().deliver(&broker).as_deref(),
            Some("iot-2/cmd/reboot/fmt/json")
        );
        let other = map("d:acme:sensor:dev2", TopicPolicy::Iot2);
        assert_eq!(other.deliver(&broker), None);
        let other_org = map("d:beta:sensor:dev1", TopicPolicy::Iot2);
        assert_eq!(other_org.deliver(&broker), None);
        // And a device event reaches the app in the typed form.
        let evt = device().publish("iot-2/evt/t/fmt/json").unwrap();
        assert_eq!(
            app().deliver(&evt).as_deref(),
            Some("iot-2/type/sensor/id/dev1/evt/t/fmt/json")
        );
    }

    #[test]
    fn prefixed_result_must_fit_in_mqtt() {
        let m = open();
        let long = "x".repeat(MAX_TOPIC_LEN - 5);
        assert_eq!(m.publish(&long).map(|s| s.len()), Ok(MAX_TOPIC_LEN));
        let too_long = "x".repeat(MAX_TOPIC_LEN - 4);
        assert_eq!(m.publish(&too_long), Err(Malformed));
        assert_eq!(m.filter(&too_long), Err(Malformed));
    }

    #[test]
    fn policy_serde_names() {
        assert_eq!(
            serde_json::to_string(&TopicPolicy::Iot2).unwrap(),
            "\"iot-2\""
        );
        assert_eq!(
            serde_json::from_str::<TopicPolicy>("\"open\"").unwrap(),
            TopicPolicy::Open
        );
        assert_eq!(TopicPolicy::default(), TopicPolicy::Iot2);
    }

    /// What a session holds survives a policy change only where the new policy maps the same
    /// client name to the same broker name.
    #[test]
    fn a_policy_change_keeps_what_means_the_same() {
        use Form::{Filter, Topic};
        let kept = |m: &TopicMap, to, name: &str, form| {
            let broker = match form {
                Topic => m.publish(name),
                Filter => m.filter(name),
            }
            .unwrap();
            m.keeps(to, &broker, form)
        };
        let (iot2, open_) = (TopicPolicy::Iot2, TopicPolicy::Open);
        // Open to iot-2: anything outside iot-2 goes; a device's own short form now means its
        // own commands, no longer a topic of that name.
        let d = open();
        assert!(!kept(&d, iot2, "foo/#", Filter));
        assert!(!kept(&d, iot2, "iot-2/cmd/+/fmt/+", Filter));
        assert!(!kept(&d, iot2, "iot-2/evt/x/fmt/json", Topic));
        assert!(!kept(&d, iot2, "$share/g/foo", Filter));
        let a = map("a:acme:dash", open_);
        assert!(kept(&a, iot2, "iot-2/type/+/id/+/evt/+/fmt/+", Filter));
        assert!(kept(&a, iot2, "iot-2/type/t/id/i/mon", Filter));
        assert!(!kept(&a, iot2, "iot-2/type/+/id/+/cmd/+/fmt/+", Filter));
        assert!(!kept(
            &a,
            iot2,
            "$share/g/iot-2/type/+/id/+/evt/+/fmt/+",
            Filter
        ));
        // Iot-2 to open: typed names mean the same, a device's short forms do not.
        assert!(kept(&app(), open_, "iot-2/type/+/id/+/evt/+/fmt/+", Filter));
        assert!(kept(
            &gateway(),
            open_,
            "iot-2/type/t/id/i/evt/e/fmt/f",
            Topic
        ));
        assert!(!kept(&device(), open_, "iot-2/cmd/+/fmt/+", Filter));
        assert!(!kept(&device(), open_, "iot-2/evt/x/fmt/json", Topic));
        // No change keeps everything; a name from elsewhere is never kept.
        assert!(kept(&d, open_, "foo/#", Filter));
        assert!(!device().keeps(open_, "beta/iot-2/cmd/x/fmt/y", Filter));
        assert!(!device().keeps(open_, "acme/iot-2/type/other/id/dev1/cmd/+/fmt/+", Filter));
        let mut m = open();
        m.set_policy(iot2);
        assert_eq!(m.policy(), iot2);
        assert_eq!(m.publish("foo"), Err(NotAllowed));
    }
}
