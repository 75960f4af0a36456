//! Topic filter matching (MQTT 5 §4.7), as the broker does it: the front-end matches deliveries
//! against a session's own filters (subscription options, coarse broker filters) the same way.

/// Whether an MQTT filter matches a topic (both as the broker knows them); a shared
/// subscription's `$share/<group>/` is not part of its filter (4.8.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(shared) => match shared.split_once('/') {
            Some((_, inner)) => inner,
            None => return false,
        },
        None => filter,
    };
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("o/a/b", "o/a/b"));
        assert!(matches("o/+/b", "o/a/b"));
        assert!(matches("o/#", "o/a/b"));
        assert!(matches("o/a/#", "o/a"));
        assert!(matches("o/+", "o/"));
        assert!(matches("$share/g/o/+/b", "o/a/b"));
        assert!(!matches("o/a", "o/a/b"));
        assert!(!matches("o/a/b", "o/a"));
        assert!(!matches("o/+/c", "o/a/b"));
        assert!(!matches("$share/g", "o/a"));
    }
}
