//! The JSON each resource shows. Built from store records; private keys have no field here.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::identity::OrgId;
use crate::mqtt::topics::TopicPolicy;
use crate::pki::CertInfo;
use crate::store::{CaRecord, OrgRecord, Page, ServerCertRecord};

/// RFC 3339 in UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[derive(Debug, Serialize)]
pub struct ListView<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListView<T> {
    pub fn from_page<R>(page: Page<R>, view: impl Fn(R) -> T) -> ListView<T> {
        ListView {
            items: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub topic_policy: TopicPolicy,
    pub created_at: String,
}

impl From<OrgRecord> for OrgView {
    fn from(o: OrgRecord) -> OrgView {
        OrgView {
            id: o.id.as_str().to_owned(),
            name: o.name,
            topic_policy: o.topic_policy,
            created_at: rfc3339(o.created_at),
        }
    }
}

/// The fields both certificate views show, first and in this order.
#[derive(Debug, Serialize)]
pub struct CertView {
    pub id: String,
    pub org: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
}

impl CertView {
    fn new(id: String, org: &OrgId, info: &CertInfo) -> CertView {
        CertView {
            id,
            org: org.as_str().to_owned(),
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            fingerprint_sha256: info.fingerprint_sha256.clone(),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CaView {
    #[serde(flatten)]
    pub cert: CertView,
    pub description: String,
    pub active: bool,
    pub registered_at: String,
}

impl From<CaRecord> for CaView {
    fn from(c: CaRecord) -> CaView {
        CaView {
            cert: CertView::new(c.id, &c.org, &c.info),
            description: c.description,
            active: c.active,
            registered_at: rfc3339(c.registered_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServerCertView {
    #[serde(flatten)]
    pub cert: CertView,
    pub dns_names: Vec<String>,
    pub active: bool,
    pub registered_at: String,
}

impl From<ServerCertRecord> for ServerCertView {
    fn from(c: ServerCertRecord) -> ServerCertView {
        ServerCertView {
            cert: CertView::new(c.id, &c.org, &c.info),
            dns_names: c.info.dns_names,
            active: c.active,
            registered_at: rfc3339(c.registered_at),
        }
    }
}
