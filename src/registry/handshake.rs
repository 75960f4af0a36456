//! The registry's side of a TLS handshake: which org a ClientHello's SNI names (the snapshot routes
//! it), and, once the chain is verified, which of that org's active CAs it leads to and who the
//! client is. `tls` runs the handshake from plain inputs and asks these two questions through the
//! closures [`accept`] hands it, so TLS never reads the registry.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{ActiveCa, OrgEntry, Platform, Registry, Snapshot};
use crate::identity::{self, Identity, OrgId};
use crate::revocation::ocsp::{self, OcspMode};
use crate::tls::{self, Handshake, Refusal, Refused};

/// The typed outcome of a successful handshake.
pub struct PeerIdentity {
    pub org: Arc<OrgEntry>,
    /// The active CA the client chain verified to.
    pub ca_id: String,
    /// Other active CAs the chain leads to (see `authenticating_ca`); mostly none.
    pub also_ca_ids: Vec<String>,
    /// Identities the leaf certificate claims, sorted, without repeats (may be empty: then no
    /// client id can bind).
    pub claims: Vec<Identity>,
    /// SHA-256 of the leaf's DER and its serial, lower-case hex: what a blocklist names.
    pub fingerprint_sha256: String,
    pub serial: String,
    /// The leaf's notAfter, for the device registry.
    pub not_after: time::OffsetDateTime,
    pub resumed: bool,
    /// SNI as sent, for logs.
    pub sni: Option<String>,
    /// The client's address, for the sessions list.
    pub addr: Option<std::net::SocketAddr>,
    /// The certificate as OCSP asks about it, when its CA's `ocsp_mode` is not `off`: asked
    /// before CONNACK, never during the handshake.
    pub ocsp: Option<Arc<ocsp::Subject>>,
}

impl Snapshot {
    /// Which org a ClientHello's SNI names (DESIGN §2), or why none.
    pub fn route(&self, platform: &Platform, sni: Option<&str>) -> Result<Arc<OrgEntry>, Refusal> {
        let routed = match sni {
            None => Err(Refusal::NoSni),
            Some(name) => self.route_name(platform, &name.to_ascii_lowercase()),
        };
        routed.or_else(|refusal| {
            platform
                .no_sni_org
                .as_ref()
                .and_then(|org| self.org(org.as_str()))
                .cloned()
                .ok_or(refusal)
        })
    }

    fn route_name(&self, platform: &Platform, name: &str) -> Result<Arc<OrgEntry>, Refusal> {
        let (label, rest) = name.split_once('.').ok_or(Refusal::UnrecognizedName)?;
        if rest == platform.domain {
            return self.org(label).cloned().ok_or(Refusal::UnknownOrg);
        }
        // A custom domain `<org>.messaging.<custom>` is the org's when its active certificate
        // covers it.
        if rest.starts_with("messaging.") {
            if let Some(entry) = self.org(label) {
                if entry
                    .server_names
                    .iter()
                    .any(|pattern| crate::pki::name_covers(pattern, name))
                {
                    return Ok(entry.clone());
                }
            }
        }
        Err(Refusal::UnrecognizedName)
    }
}

/// Accepts one TLS connection under `deadline`: routes the ClientHello to its org, completes the
/// handshake with that org's config, and finds which of the org's currently active CAs the client
/// chain verified to.
pub async fn accept(
    stream: TcpStream,
    registry: &Registry,
    deadline: Duration,
) -> Result<(tls::Stream, PeerIdentity), Refused> {
    let route = |sni: Option<&str>| {
        registry
            .snapshot()
            .route(registry.platform(), sni)
            .and_then(|entry| match &entry.tls {
                Some(config) => Ok((config.server.clone(), entry.org.id.clone())),
                None => Err(Refusal::OrgHasNoCa),
            })
    };
    tls::accept(stream, deadline, route, |done| admit(registry, done)).await
}

/// What a handshake under `org` would make of `chain` (leaf first) now, without a connection
/// (`POST …/explain`): the org's verifier, then the same admission as after a real handshake.
pub fn examine(
    registry: &Registry,
    org: &OrgId,
    chain: &[CertificateDer<'static>],
) -> Result<PeerIdentity, Refusal> {
    let entry = registry
        .snapshot()
        .org(org.as_str())
        .cloned()
        .ok_or(Refusal::UnknownOrg)?;
    entry
        .tls
        .as_ref()
        .ok_or(Refusal::OrgHasNoCa)?
        .verify(chain)?;
    let examined = Handshake {
        routed: org.clone(),
        chain,
        resumed: false,
        sni: None,
        addr: None,
    };
    admit(registry, examined)
}

/// Who the client of a completed handshake is, under the current snapshot (not the one the
/// handshake started under).
fn admit(registry: &Registry, done: Handshake<'_, OrgId>) -> Result<PeerIdentity, Refusal> {
    let chain = done.chain;
    let entry = registry
        .snapshot()
        .org(done.routed.as_str())
        .cloned()
        .ok_or(Refusal::UnknownOrg)?;
    // The leaf is parsed once, for its CA and its claims.
    let leaf = match X509Certificate::from_der(&chain[0]) {
        Ok(([], leaf)) => leaf,
        _ => return Err(Refusal::BadCertificate),
    };
    let (ca, leaf_issuer, also_ca_ids) =
        authenticating_ca(&entry.cas, &leaf, &chain[1..]).ok_or(Refusal::CaInactive)?;
    let ca_id = ca.id.clone();
    let ocsp = (ca.ocsp_mode != OcspMode::Off).then(|| {
        // What OCSP asks about is the leaf's issuer: the CA, or the intermediate on the path.
        let issuer = match leaf_issuer {
            Some(i) => &chain[1 + i],
            None => &ca.der,
        };
        Arc::new(ocsp::Subject {
            leaf: chain[0].to_vec(),
            issuer: issuer.to_vec(),
            aia_url: ocsp::aia_url(&chain[0]),
        })
    });
    let claims = identity::claims_of(&leaf).map_err(|_| Refusal::BadCertificate)?;
    let serial = crate::pki::serial_hex(leaf.raw_serial());
    let not_after = leaf.validity().not_after.to_datetime();
    let fingerprint_sha256 = crate::pki::fingerprint_sha256(&chain[0]);
    Ok(PeerIdentity {
        org: entry,
        ca_id,
        also_ca_ids,
        claims,
        fingerprint_sha256,
        serial,
        not_after,
        resumed: done.resumed,
        sni: done.sni,
        addr: done.addr,
        ocsp,
    })
}
/// The active CA the (already verified) chain leads to, which certificate issued the leaf (`None`
/// the CA itself, `Some(i)` the `i`-th of `intermediates`), and the other active CAs that vouch
/// for the chain too ([`vouching`]). The walk follows names from the leaf: at each step an active
/// CA whose subject is the current certificate's issuer, else the intermediate of that subject.
/// Certificates off that path are never looked at (a client may send any extra certificate it
/// likes), and where several share the subject (a key rollover, or a look-alike slipped into the
/// chain), the one whose key verifies the signature is taken.
fn authenticating_ca<'a>(
    cas: &'a [ActiveCa],
    leaf: &X509Certificate<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(&'a ActiveCa, Option<usize>, Vec<String>)> {
    let parsed = intermediates
        .iter()
        .map(|der| X509Certificate::from_der(der).ok().map(|(_, cert)| cert))
        .collect::<Option<Vec<_>>>()?;
    let mut current = leaf;
    let mut leaf_issuer = None;
    let mut walked = vec![false; parsed.len()];
    for depth in 0..=parsed.len() {
        let issuer = current.issuer().as_raw();
        let named = || cas.iter().filter(|ca| ca.subject_raw == issuer);
        let ca = match named().count() {
            0 => None,
            1 => named().next(),
            _ => named().find(|ca| signed_by(current, &ca.der)),
        };
        if let Some(ca) = ca {
            let also = vouching(cas, ca, current, &parsed, walked);
            return Some((ca, leaf_issuer, also));
        }
        let named = || {
            parsed
                .iter()
                .enumerate()
                .filter(|(_, cert)| cert.subject().as_raw() == issuer)
        };
        let (next, _) = match named().count() {
            0 => return None,
            1 => named().next()?,
            _ => named()
                .find(|(_, cert)| current.verify_signature(Some(cert.public_key())).is_ok())?,
        };
        if depth == 0 {
            leaf_issuer = Some(next);
        }
        walked[next] = true;
        current = &parsed[next];
    }
    None
}

/// Steps [`vouching`] takes above the authenticating CA at most.
const VOUCHING_STEPS: usize = 4;

/// The other active CAs that vouch for a chain `found` authenticated at `current`: a renewed copy
/// of `found` (same subject, a key that verifies), and above it the CAs of the intermediates the
/// client sent (the root of an uploaded intermediate the device sends). A session stays while any
/// of them is active, so the list must never claim too much: the walk goes up one verified step
/// at a time through certificates not walked yet, stops where a name is ambiguous or a
/// certificate issued itself, and takes at most [`VOUCHING_STEPS`] steps, so a chain stuffed with
/// look-alikes costs a few signature checks. Mostly it is empty and costs none.
fn vouching<'c, 'd>(
    cas: &[ActiveCa],
    found: &ActiveCa,
    mut current: &'c X509Certificate<'d>,
    parsed: &'c [X509Certificate<'d>],
    mut walked: Vec<bool>,
) -> Vec<String> {
    let mut also: Vec<String> = Vec::new();
    for _ in 0..VOUCHING_STEPS {
        let issuer = current.issuer().as_raw();
        for ca in cas.iter().filter(|ca| ca.subject_raw == issuer) {
            if ca.id != found.id && !also.contains(&ca.id) && signed_by(current, &ca.der) {
                also.push(ca.id.clone());
            }
        }
        if current.subject().as_raw() == issuer {
            break;
        }
        let mut named = parsed
            .iter()
            .enumerate()
            .filter(|(i, cert)| !walked[*i] && cert.subject().as_raw() == issuer);
        let (Some((next, cert)), None) = (named.next(), named.next()) else {
            break;
        };
        if current.verify_signature(Some(cert.public_key())).is_err() {
            break;
        }
        walked[next] = true;
        current = cert;
    }
    also
}

fn signed_by(cert: &X509Certificate<'_>, issuer_der: &[u8]) -> bool {
    X509Certificate::from_der(issuer_der)
        .map(|(_, issuer)| cert.verify_signature(Some(issuer.public_key())).is_ok())
        .unwrap_or(false)
}
