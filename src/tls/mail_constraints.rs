//! rfc822Name (e-mail) name constraints of client certificate chains (RFC 5280 §4.2.1.10),
//! enforced here because rustls-webpki cannot: it refuses every certificate with a SAN e-mail
//! under a CA that constrains e-mails, and ignores the subject's emailAddress.
//!
//! How, without weakening anything else: each of an org's CAs becomes a trust anchor whose name
//! constraints keep every subtree except the rfc822Name ones (DNS, IP, directory name and URI
//! constraints are still webpki's to enforce, exactly as before). Those rfc822Name subtrees are
//! kept here, and once webpki has verified a chain, it is verified again with a path check of
//! ours ([`MailCheck`]): webpki hands over each path it would accept and moves on to
//! another when ours refuses. Along the path, the constraints of the CA and of each intermediate
//! apply to every certificate below it: to each SAN rfc822Name, or, when a certificate has no SAN
//! extension, to each emailAddress attribute of its subject.
//!
//! Matching (RFC 5280 §4.2.1.10, §7.5): a constraint `user@host` is that mailbox (local part
//! case-sensitive, host not), `host` every mailbox on that host, `.domain` every mailbox on a host
//! under that domain (not on the domain itself). A presented name that is not `local@host`, or a
//! constraint that is none of the three, cannot be processed: it is refused (fail closed), as
//! RFC 5280 asks of a constraint an application does not process.
//!
//! Not covered: an intermediate sent by the client that carries rfc822Name constraints, above a
//! certificate with a SAN e-mail, is still refused by webpki; upload it as one of the org's CAs.

use std::sync::Arc;

use der::{Decode, Encode, Tag, TagNumber, Tagged};
use rustls::{CertificateError, Error, OtherError};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// `[1] IA5String`: a GeneralName's rfc822Name.
const RFC822_NAME: u8 = 0x81;
/// Constraint comparisons one chain may cost, as webpki's own budget for name constraints.
const MAX_COMPARISONS: usize = 250_000;

/// One rfc822Name constraint base.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MailBase {
    /// `local@host`: that mailbox.
    Mailbox { local: String, host: String },
    /// `host`: every mailbox on that host.
    Host(String),
    /// `.domain` (kept with its dot): every mailbox on a host under it.
    Domain(String),
    /// None of the three (empty, a minimum or maximum, not ASCII): matches every name when
    /// excluded, none when permitted.
    Unusable,
}

impl MailBase {
    fn parse(value: &[u8], has_bounds: bool) -> MailBase {
        let Some(text) = std::str::from_utf8(value).ok().filter(|t| t.is_ascii()) else {
            return MailBase::Unusable;
        };
        if has_bounds || text.is_empty() {
            return MailBase::Unusable;
        }
        match text.rsplit_once('@') {
            Some((local, host)) if !local.is_empty() && is_host(host) => MailBase::Mailbox {
                local: local.to_owned(),
                host: host.to_owned(),
            },
            Some(_) => MailBase::Unusable,
            None if text.starts_with('.') && is_host(&text[1..]) => {
                MailBase::Domain(text.to_owned())
            }
            None if is_host(text) => MailBase::Host(text.to_owned()),
            None => MailBase::Unusable,
        }
    }

    /// Whether the mailbox `local@host` is inside this base; `excluded` decides for `Unusable`.
    fn covers(&self, local: &str, host: &str, excluded: bool) -> bool {
        match self {
            MailBase::Mailbox { local: l, host: h } => local == l && host.eq_ignore_ascii_case(h),
            MailBase::Host(h) => host.eq_ignore_ascii_case(h),
            MailBase::Domain(d) => {
                host.len() > d.len()
                    && host.is_char_boundary(host.len() - d.len())
                    && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
            }
            MailBase::Unusable => excluded,
        }
    }
}

/// A host name as a mail constraint may give one: labels of at least one character.
fn is_host(host: &str) -> bool {
    !host.is_empty() && host.split('.').all(|label| !label.is_empty())
}

/// The rfc822Name subtrees of one certificate's NameConstraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailConstraints {
    permitted: Vec<MailBase>,
    excluded: Vec<MailBase>,
}

impl MailConstraints {
    fn is_empty(&self) -> bool {
        self.permitted.is_empty() && self.excluded.is_empty()
    }

    /// Whether `name` (a SAN rfc822Name or subject emailAddress) satisfies these constraints;
    /// `budget` counts comparisons.
    fn allows(&self, name: &str, budget: &mut usize) -> bool {
        let Some((local, host)) = name
            .rsplit_once('@')
            .filter(|(l, h)| !l.is_empty() && is_host(h))
        else {
            // Not a mailbox: it cannot be shown inside or outside any subtree.
            return false;
        };
        *budget = budget.saturating_add(self.permitted.len() + self.excluded.len());
        if *budget > MAX_COMPARISONS {
            return false;
        }
        let excluded = self.excluded.iter().any(|b| b.covers(local, host, true));
        let permitted = self.permitted.is_empty()
            || self.permitted.iter().any(|b| b.covers(local, host, false));
        permitted && !excluded
    }
}

/// Splits the content of a NameConstraints SEQUENCE (as webpki keeps it in a trust anchor) into
/// its rfc822Name subtrees and the content without them (`None` when nothing else is left).
/// `Err` when it does not decode: then it is left whole to webpki, which refuses what it cannot
/// read.
fn split(content: &[u8]) -> Result<(MailConstraints, Option<Vec<u8>>), der::Error> {
    let mut mail = MailConstraints::default();
    let mut rest = Vec::new();
    let mut reader = der::SliceReader::new(content)?;
    while !der::Reader::is_finished(&reader) {
        let subtrees: der::Any = der::Reader::decode(&mut reader)?;
        let into = match subtrees.tag() {
            Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            } => &mut mail.permitted,
            Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N1,
            } => &mut mail.excluded,
            _ => return Err(der::Tag::Sequence.value_error()),
        };
        let mut kept = Vec::new();
        let mut items = der::SliceReader::new(subtrees.value())?;
        while !der::Reader::is_finished(&items) {
            let subtree: der::Any = der::Reader::decode(&mut items)?;
            let mut fields = der::SliceReader::new(subtree.value())?;
            let base: der::Any = der::Reader::decode(&mut fields)?;
            if base.tag().octet() == RFC822_NAME {
                let has_bounds = !der::Reader::is_finished(&fields);
                into.push(MailBase::parse(base.value(), has_bounds));
            } else {
                kept.extend_from_slice(&subtree.to_der()?);
            }
        }
        if !kept.is_empty() {
            rest.extend_from_slice(&der::Any::new(subtrees.tag(), kept)?.to_der()?);
        }
    }
    Ok((mail, (!rest.is_empty()).then_some(rest)))
}

/// The rfc822Name constraints of a certificate on the path (an intermediate), if any.
fn constraints_of(cert: &X509Certificate<'_>) -> Result<Option<MailConstraints>, ()> {
    let extension = cert
        .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS)
        .map_err(|_| ())?;
    let Some(extension) = extension else {
        return Ok(None);
    };
    let sequence = der::Any::from_der(extension.value).map_err(|_| ())?;
    let (mail, _) = split(sequence.value()).map_err(|_| ())?;
    Ok((!mail.is_empty()).then_some(mail))
}

/// The e-mail names of `cert` that constraints apply to: its SAN rfc822Names, or without a SAN
/// extension its subject's emailAddress attributes. `Err` when they cannot be read.
fn mail_names<'a>(cert: &'a X509Certificate<'a>) -> Result<Vec<&'a str>, ()> {
    let mut names = Vec::new();
    match cert.subject_alternative_name().map_err(|_| ())? {
        Some(san) => {
            for name in &san.value.general_names {
                if let GeneralName::RFC822Name(email) = name {
                    names.push(*email);
                }
            }
        }
        None => {
            for email in cert.subject().iter_email() {
                names.push(email.as_str().map_err(|_| ())?);
            }
        }
    }
    Ok(names)
}

/// A trust anchor for `der` whose name constraints keep all but the rfc822Name subtrees, and
/// those subtrees (when it has any).
pub fn anchor(
    der: &CertificateDer<'_>,
) -> Result<(TrustAnchor<'static>, Option<MailConstraints>), webpki::Error> {
    let mut anchor = webpki::anchor_from_trusted_cert(der)?.to_owned();
    let Some(content) = anchor.name_constraints.as_ref() else {
        return Ok((anchor, None));
    };
    match split(content.as_ref()) {
        Ok((mail, rest)) if !mail.is_empty() => {
            anchor.name_constraints = rest.map(Into::into);
            Ok((anchor, Some(mail)))
        }
        _ => Ok((anchor, None)),
    }
}

/// A CA whose rfc822Name constraints are enforced here, known by its anchor's subject and key.
#[derive(Debug)]
struct ConstrainedCa {
    subject: Vec<u8>,
    spki: Vec<u8>,
    mail: MailConstraints,
}

/// The rfc822Name check of an org's client chains, run once webpki has verified a chain (see the
/// module documentation).
#[derive(Debug, Default)]
pub struct MailCheck {
    anchors: Vec<TrustAnchor<'static>>,
    constrained: Vec<ConstrainedCa>,
}

impl MailCheck {
    /// `anchors` are the ones the webpki verifier trusts (as [`anchor`] made them),
    /// `constrained` the rfc822Name constraints [`anchor`] took out of them, by anchor.
    pub fn new(
        anchors: Vec<TrustAnchor<'static>>,
        constrained: Vec<(TrustAnchor<'static>, MailConstraints)>,
    ) -> MailCheck {
        let constrained = constrained
            .into_iter()
            .map(|(anchor, mail)| ConstrainedCa {
                subject: anchor.subject.as_ref().to_vec(),
                spki: anchor.subject_public_key_info.as_ref().to_vec(),
                mail,
            })
            .collect();
        MailCheck {
            anchors,
            constrained,
        }
    }

    /// Whether a chain needs our path check: a CA has rfc822Name constraints, or an intermediate
    /// of the chain may have.
    fn applies(&self, intermediates: &[CertificateDer<'_>]) -> bool {
        !self.constrained.is_empty()
            || intermediates.iter().any(|der| {
                X509Certificate::from_der(der)
                    .map(|(_, cert)| !matches!(constraints_of(&cert), Ok(None)))
                    .unwrap_or(true)
            })
    }

    /// The rfc822Name check of one path webpki would accept.
    fn path_ok(&self, path: &webpki::VerifiedPath<'_>) -> Result<(), webpki::Error> {
        let refused = webpki::Error::NameConstraintViolation;
        let anchor = path.anchor();
        let mut applicable: Vec<MailConstraints> = self
            .constrained
            .iter()
            .filter(|ca| {
                ca.subject == anchor.subject.as_ref()
                    && ca.spki == anchor.subject_public_key_info.as_ref()
            })
            .map(|ca| ca.mail.clone())
            .collect();
        // Top of the path first: the leaf's issuer is the first intermediate.
        let mut ders: Vec<CertificateDer<'_>> =
            path.intermediate_certificates().map(|c| c.der()).collect();
        ders.reverse();
        ders.push(path.end_entity().der());
        let last = ders.len() - 1;
        let mut budget = 0;
        for (i, der) in ders.iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(der).map_err(|_| refused.clone())?;
            let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
            // RFC 5280 §6.1.3: a self-issued intermediate is not checked.
            if !applicable.is_empty() && (i == last || !self_issued) {
                for name in mail_names(&cert).map_err(|_| refused.clone())? {
                    if !applicable.iter().all(|c| c.allows(name, &mut budget)) {
                        return Err(refused);
                    }
                }
            }
            if i != last {
                let own = constraints_of(&cert).map_err(|_| refused.clone())?;
                applicable.extend(own);
            }
        }
        Ok(())
    }

    /// Checks a chain webpki has verified: a no-op unless e-mail constraints may apply, else the
    /// chain is verified again with [`Self::path_ok`] on each path, refused as a
    /// `NameConstraintViolation` (as webpki's own) when no path passes.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        if !self.applies(intermediates) {
            return Ok(());
        }
        let refused = |e: webpki::Error| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(refused)?;
        let check = |path: &webpki::VerifiedPath<'_>| self.path_ok(path);
        cert.verify_for_usage(
            super::provider().signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            Some(&check),
        )
        .map(|_| ())
        .map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraints(permitted: &[&str], excluded: &[&str]) -> MailConstraints {
        let parse = |list: &[&str]| {
            list.iter()
                .map(|s| MailBase::parse(s.as_bytes(), false))
                .collect()
        };
        MailConstraints {
            permitted: parse(permitted),
            excluded: parse(excluded),
        }
    }

    fn allows(c: &MailConstraints, name: &str) -> bool {
        c.allows(name, &mut 0)
    }

    #[test]
    fn constraint_forms() {
        assert_eq!(
            MailBase::parse(b"root@example.com", false),
            MailBase::Mailbox {
                local: "root".into(),
                host: "example.com".into()
            }
        );
        assert_eq!(
            MailBase::parse(b"example.com", false),
            MailBase::Host("example.com".into())
        );
        assert_eq!(
            MailBase::parse(b".example.com", false),
            MailBase::Domain(".example.com".into())
        );
        for unusable in [
            &b""[..],
            b"@example.com",
            b"root@",
            b"root@.example.com",
            b".",
            b"a..b",
            b"caf\xc3\xa9.example",
        ] {
            assert_eq!(MailBase::parse(unusable, false), MailBase::Unusable);
        }
        assert_eq!(MailBase::parse(b"example.com", true), MailBase::Unusable);
    }

    #[test]
    fn rfc5280_matching() {
        let host = constraints(&["example.com"], &[]);
        assert!(allows(&host, "a@example.com"));
        assert!(allows(&host, "a@EXAMPLE.COM"));
        assert!(!allows(&host, "a@x.example.com"));
        let domain = constraints(&[".example.com"], &[]);
        assert!(allows(&domain, "a@x.example.com"));
        assert!(!allows(&domain, "a@example.com"));
        assert!(!allows(&domain, "a@xexample.com"));
        let mailbox = constraints(&["Root@Example.com"], &[]);
        assert!(allows(&mailbox, "Root@example.COM"));
        assert!(!allows(&mailbox, "root@example.com"));
        // Several permitted: any one; excluded wins.
        let mixed = constraints(&["a.example", "b.example"], &["x@b.example"]);
        assert!(allows(&mixed, "y@b.example"));
        assert!(!allows(&mixed, "x@b.example"));
        assert!(!allows(&mixed, "y@c.example"));
        // Not mailboxes: never inside nor provably outside.
        let excluded_only = constraints(&[], &[".evil.example"]);
        for bare in ["d:sensor:dev1", "@example.com", "a@", "a@b..c"] {
            assert!(!allows(&excluded_only, bare), "{bare}");
        }
        // An unusable base: permitted matches nothing, excluded everything.
        assert!(!allows(&constraints(&[""], &[]), "a@example.com"));
        assert!(!allows(&constraints(&[], &[""]), "a@example.com"));
    }

    #[test]
    fn the_budget_bounds_comparisons() {
        let many: Vec<String> = (0..1000).map(|i| format!("h{i}.example")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let c = constraints(&refs, &[]);
        let mut budget = 0;
        let mut seen = 0;
        while c.allows("a@h999.example", &mut budget) {
            seen += 1;
        }
        assert_eq!(seen, MAX_COMPARISONS / 1000);
    }

    /// NameConstraints content (as a trust anchor holds it) of `params`' CA certificate.
    fn anchor_of(nc: rcgen::NameConstraints) -> (TrustAnchor<'static>, Option<MailConstraints>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.name_constraints = Some(nc);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        anchor(cert.der()).unwrap()
    }

    #[test]
    fn anchors_keep_every_other_constraint() {
        use rcgen::GeneralSubtree as G;
        let (only_mail, mail) = anchor_of(rcgen::NameConstraints {
            permitted_subtrees: vec![G::Rfc822Name("example.com".into())],
            excluded_subtrees: vec![G::Rfc822Name(".evil.example".into())],
        });
        assert_eq!(only_mail.name_constraints, None);
        assert_eq!(
            mail,
            Some(constraints(&["example.com"], &[".evil.example"]))
        );

        let (mixed, mail) = anchor_of(rcgen::NameConstraints {
            permitted_subtrees: vec![
                G::DnsName("devices.example.com".into()),
                G::Rfc822Name("example.com".into()),
            ],
            excluded_subtrees: vec![G::DnsName("lab.devices.example.com".into())],
        });
        assert_eq!(mail, Some(constraints(&["example.com"], &[])));
        // What is left is exactly the DNS subtrees, as webpki would have read them.
        let (dns_only, none) = anchor_of(rcgen::NameConstraints {
            permitted_subtrees: vec![G::DnsName("devices.example.com".into())],
            excluded_subtrees: vec![G::DnsName("lab.devices.example.com".into())],
        });
        assert_eq!(none, None);
        assert_eq!(mixed.name_constraints, dns_only.name_constraints);
        assert!(mixed.name_constraints.is_some());
    }
}
