//! The URLs of `broker.upstream.urls` (`mqtt://host:port`, `mqtts://host:port`), parsed when the
//! configuration is read, so a bad one stops the start with the key's name.

/// One `mqtt://host:port` or `mqtts://host:port` URL of `broker.upstream.urls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Target {
    /// Parses a URL (default ports 1883 and 8883); the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!("{url:?}: must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
            return Err(format!("{url:?}: expected mqtt[s]://host[:port]"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.strip_prefix('[') {
            // An IPv6 literal: [::1]:1883.
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{url:?}: unclosed ["))?;
                match after {
                    "" => (host, default_port),
                    port => (
                        host,
                        parse_port(url, port.strip_prefix(':').unwrap_or("?"))?,
                    ),
                }
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(url, port)?),
                None => (rest, default_port),
            },
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Target {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

fn parse_port(url: &str, port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{url:?}: bad port {port:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_refuse_what_is_not_a_broker_url() {
        let t = Target::parse("mqtt://10.0.0.5").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("10.0.0.5", 1883, false));
        let t = Target::parse("mqtts://broker.example:9883/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("broker.example", 9883, true)
        );
        let t = Target::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 1884));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://x:0",
            "mqtt://x:99999",
            "mqtt://u:p@x",
            "mqtt://x/topic",
            "mqtt://[::1",
            "mqtt://:1883",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
