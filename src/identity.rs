//! The identity grammar: organisation ids, the identities a client certificate claims (`d:<type>:<id>`,
//! `g:<type>:<id>`, `a:<appId>` in the subject CN or a SAN email), and MQTT client ids
//! (`d:<org>:<type>:<id>`, `g:<org>:<type>:<id>`, `a:<org>:<appId>`). Parsed once, at the edge.
//!
//! Why a module of its own: the same few rules decide who a TLS peer is, which client id it may
//! use, and which topics it can reach (every name segment here is also a topic level). Once a value
//! of these types exists it is valid, so the session and the topic map never re-check it.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("organisation id must be a DNS label of 1-32 characters [a-z0-9-]")]
    InvalidOrgId,
    #[error("client id must be d:<org>:<type>:<id>, g:<org>:<type>:<id> or a:<org>:<appId>")]
    InvalidClientId,
    #[error("certificate cannot be parsed")]
    BadCertificate,
}

/// Longest `<type>`, `<id>` or `<appId>` (and iot-2 topic segment).
pub(crate) const MAX_NAME_LEN: usize = 36;

/// True when `s` is 1–36 of `[A-Za-z0-9_.-]`: a device type, device id, app id, or an iot-2 topic
/// segment. Such a segment can never hold `/`, `+`, `#`, `$` or `:`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An organisation id: `^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(s: &str) -> Result<OrgId, IdentityError> {
        let b = s.as_bytes();
        let inner_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
        let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(first), Some(last))
                if b.len() <= 32 && edge_ok(first) && edge_ok(last) && b.iter().all(inner_ok) =>
            {
                Ok(OrgId(s.to_owned()))
            }
            _ => Err(IdentityError::InvalidOrgId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a certificate may claim, without an organisation. `type`, `id`, `app`: 1–36 of
/// `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identity {
    Device {
        device_type: String,
        device_id: String,
    },
    Gateway {
        gateway_type: String,
        gateway_id: String,
    },
    App {
        app_id: String,
    },
}

impl Identity {
    /// Parses `d:<type>:<id>`, `g:<type>:<id>` or `a:<appId>`; anything else claims nothing.
    pub fn parse(s: &str) -> Option<Identity> {
        let (kind, names) = s.split_once(':')?;
        Identity::from_parts(kind, names)
    }

    /// `kind` is `d`, `g` or `a`; `names` is `<type>:<id>` or `<appId>`. Shared by the certificate
    /// and the client-id grammar so the two can never disagree.
    fn from_parts(kind: &str, names: &str) -> Option<Identity> {
        let mut parts = names.split(':');
        let first = parts.next()?;
        let second = parts.next();
        if parts.next().is_some() || !is_name(first) {
            return None;
        }
        match (kind, second) {
            ("d", Some(id)) if is_name(id) => Some(Identity::Device {
                device_type: first.to_owned(),
                device_id: id.to_owned(),
            }),
            ("g", Some(id)) if is_name(id) => Some(Identity::Gateway {
                gateway_type: first.to_owned(),
                gateway_id: id.to_owned(),
            }),
            ("a", None) => Some(Identity::App {
                app_id: first.to_owned(),
            }),
            _ => None,
        }
    }
}

/// `d:<type>:<id>`, `g:<type>:<id>` or `a:<appId>`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Device {
                device_type,
                device_id,
            } => write!(f, "d:{device_type}:{device_id}"),
            Identity::Gateway {
                gateway_type,
                gateway_id,
            } => write!(f, "g:{gateway_type}:{gateway_id}"),
            Identity::App { app_id } => write!(f, "a:{app_id}"),
        }
    }
}

/// The identities a client certificate claims: its subject CN and each SAN rfc822Name that parse
/// as an [`Identity`], sorted and without duplicates.
///
/// Every CN attribute of the subject counts (there is normally one). Names that do not parse are ignored, not errors: a certificate may carry ordinary e-mail
/// addresses beside its identities. Trailing bytes after the DER, or a subject alternative name
/// extension that cannot be parsed, make the certificate `BadCertificate`.
pub fn claims(leaf_der: &[u8]) -> Result<Vec<Identity>, IdentityError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(leaf_der).map_err(|_| IdentityError::BadCertificate)?;
    if !rest.is_empty() {
        return Err(IdentityError::BadCertificate);
    }
    claims_of(&cert)
}

/// [`claims`] of a certificate parsed already (the TLS path parses the leaf once for this and
/// for finding its CA).
pub fn claims_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<Vec<Identity>, IdentityError> {
    let mut out: Vec<Identity> = Vec::new();
    let mut add = |s: &str| out.extend(Identity::parse(s));
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            add(s);
        }
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::BadCertificate)?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::RFC822Name(email) = name {
                add(email);
            }
        }
    }
    // Sorted and without repeats, in O(n log n): a certificate may carry many names.
    out.sort_unstable();
    out.dedup();
    // Kept for the connection's life: no spare capacity.
    out.shrink_to_fit();
    Ok(out)
}

/// An MQTT client id bound to an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub org: OrgId,
    pub identity: Identity,
}

impl ClientId {
    pub fn parse(s: &str) -> Result<ClientId, IdentityError> {
        let (kind, rest) = s.split_once(':').ok_or(IdentityError::InvalidClientId)?;
        let (org, names) = rest.split_once(':').ok_or(IdentityError::InvalidClientId)?;
        let org = OrgId::parse(org).map_err(|_| IdentityError::InvalidClientId)?;
        let identity = Identity::from_parts(kind, names).ok_or(IdentityError::InvalidClientId)?;
        Ok(ClientId { org, identity })
    }
}

/// `d:<org>:<type>:<id>`, `g:<org>:<type>:<id>` or `a:<org>:<appId>`.
impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let org = &self.org;
        match &self.identity {
            Identity::Device {
                device_type,
                device_id,
            } => write!(f, "d:{org}:{device_type}:{device_id}"),
            Identity::Gateway {
                gateway_type,
                gateway_id,
            } => write!(f, "g:{org}:{gateway_type}:{gateway_id}"),
            Identity::App { app_id } => write!(f, "a:{org}:{app_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(t: &str, i: &str) -> Identity {
        Identity::Device {
            device_type: t.into(),
            device_id: i.into(),
        }
    }

    fn gw(t: &str, i: &str) -> Identity {
        Identity::Gateway {
            gateway_type: t.into(),
            gateway_id: i.into(),
        }
    }

    fn app(a: &str) -> Identity {
        Identity::App { app_id: a.into() }
    }

    #[test]
    fn org_ids() {
        for ok in [
            "a",
            "0",
            "acme",
            "a-b",
            "a--b",
            "9lives",
            &"a".repeat(32),
            "ab",
        ] {
            assert_eq!(OrgId::parse(ok).unwrap().as_str(), ok, "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "-",
            "Acme",
            "ac_me",
            "ac.me",
            "ac me",
            "acme/",
            "é",
            &"a".repeat(33),
        ] {
            assert_eq!(
                OrgId::parse(bad),
                Err(IdentityError::InvalidOrgId),
                "{bad:?}"
            );
        }
        assert_eq!(OrgId::parse("acme").unwrap().to_string(), "acme");
    }

    #[test]
    fn identity_grammar() {
        assert_eq!(
            Identity::parse("d:sensor:dev1"),
            Some(dev("sensor", "dev1"))
        );
        assert_eq!(
            Identity::parse("g:gw-Type:G_1.x"),
            Some(gw("gw-Type", "G_1.x"))
        );
        assert_eq!(Identity::parse("a:app-1"), Some(app("app-1")));
        let n36 = "x".repeat(36);
        let n37 = "x".repeat(37);
        assert_eq!(
            Identity::parse(&format!("d:{n36}:{n36}")),
            Some(dev(&n36, &n36))
        );
        assert_eq!(Identity::parse(&format!("a:{n36}")), Some(app(&n36)));
        for bad in [
            format!("d:{n37}:x"),
            format!("d:x:{n37}"),
            format!("g:{n37}:x"),
            format!("a:{n37}"),
            "d:acme:sensor:dev1".into(),
            "g:acme:gw:1".into(),
            "a:acme:app".into(),
            "d:sensor".into(),
            "g:gw".into(),
            "d::dev1".into(),
            "d:sensor:".into(),
            "a:".into(),
            "a".into(),
            "".into(),
            ":".into(),
            "x:sensor:dev1".into(),
            "D:sensor:dev1".into(),
            "d:sen sor:dev1".into(),
            "d:sensor:dev/1".into(),
            "d:sensor:dev+".into(),
            "d:sensor:#".into(),
            "d:sensor:dév".into(),
            "a:$SYS".into(),
            "d:sensor:dev1\0".into(),
            "sensor@example.com".into(),
        ] {
            assert_eq!(Identity::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn identity_display_round_trips() {
        for s in ["d:sensor:dev1", "g:gw:g1", "a:app"] {
            assert_eq!(Identity::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn client_ids() {
        let c = ClientId::parse("d:acme:sensor:dev1").unwrap();
        assert_eq!(c.org.as_str(), "acme");
        assert_eq!(c.identity, dev("sensor", "dev1"));
        assert_eq!(
            ClientId::parse("g:acme:gw:g1").unwrap().identity,
            gw("gw", "g1")
        );
        assert_eq!(
            ClientId::parse("a:acme:app1").unwrap().identity,
            app("app1")
        );
        for s in ["d:acme:sensor:dev1", "g:a-1:gw:g1", "a:acme:app1"] {
            assert_eq!(ClientId::parse(s).unwrap().to_string(), s);
        }
        let n36 = "x".repeat(36);
        let n37 = "x".repeat(37);
        assert!(ClientId::parse(&format!("d:acme:{n36}:{n36}")).is_ok());
        for bad in [
            String::new(),
            "d:sensor:dev1".into(), // no org: would read org=sensor, one name
            "a:app".into(),
            "d:Acme:sensor:dev1".into(),
            "d:-acme:sensor:dev1".into(),
            format!("d:{}:s:d", "a".repeat(33)),
            format!("d:acme:{n37}:x"),
            format!("a:acme:{n37}"),
            "d:acme:sensor:dev1:x".into(),
            "a:acme:app:x".into(),
            "x:acme:sensor:dev1".into(),
            "d::sensor:dev1".into(),
            "d:acme::dev1".into(),
            "d:acme:sensor:".into(),
            "a:acme:".into(),
            "mosquitto-1234".into(),
        ] {
            assert_eq!(
                ClientId::parse(&bad),
                Err(IdentityError::InvalidClientId),
                "{bad:?}"
            );
        }
    }

    fn leaf(cn: Option<&str>, emails: &[&str], dns: &[&str]) -> Vec<u8> {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for e in emails {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name((*e).try_into().unwrap()));
        }
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn claims_cn_and_emails_sorted_deduplicated() {
        let der = leaf(
            Some("d:sensor:dev1"),
            &[
                "someone@example.com",
                "a:dashboard",
                "d:sensor:dev1",
                "g:gw:g1",
                "a:dashboard",
            ],
            &["d:sensor:other"],
        );
        assert_eq!(
            claims(&der).unwrap(),
            vec![dev("sensor", "dev1"), gw("gw", "g1"), app("dashboard")]
        );
    }

    #[test]
    fn claims_ignores_names_with_org_and_dns_sans() {
        let der = leaf(
            Some("d:acme:sensor:dev1"),
            &["ops@acme.example"],
            &["g:gw:g1"],
        );
        assert_eq!(claims(&der).unwrap(), vec![]);
        let der = leaf(None, &["g:gw:g1"], &[]);
        assert_eq!(claims(&der).unwrap(), vec![gw("gw", "g1")]);
        let der = leaf(Some("not an identity"), &[], &[]);
        assert_eq!(claims(&der).unwrap(), vec![]);
    }

    #[test]
    fn claims_refuses_garbage() {
        assert_eq!(claims(b""), Err(IdentityError::BadCertificate));
        assert_eq!(claims(b"\x30\x03abc"), Err(IdentityError::BadCertificate));
        let mut der = leaf(Some("a:x"), &[], &[]);
        der.push(0);
        assert_eq!(claims(&der), Err(IdentityError::BadCertificate));
        der.pop();
        der.truncate(der.len() - 10);
        assert_eq!(claims(&der), Err(IdentityError::BadCertificate));
    }
}
