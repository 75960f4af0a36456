//! Every reason a connection is refused or a live session closed, in one table: the bounded
//! label metrics and the event stream carry (an API: `portcullis_connections_refused_total`,
//! `portcullis_sessions_revoked_total`, the `reason` of `refused` events, the README's list), and,
//! for a refusal answered at CONNECT, the CONNACK code and reason string the client is told.
//!
//! Why one table: the same refusal is found by the TLS verifier (a revoked leaf), at CONNECT (a
//! TLS resumption skipped the handshake's check) and by a registry change that closes live
//! sessions; spelled in each of those places, one spelling drifts and a dashboard or an alert
//! silently stops matching. Every layer that refuses (`listener`, `tls`, `registry`, `mqtt`)
//! reads this module, which reads only the codec's reason codes.

use crate::codec::{reason, Protocol};

/// Why a connection was refused (at TCP accept, the TLS handshake or CONNECT), or why a live
/// session was closed by a change. [`Refusal::as_str`] is the label; it never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    // TCP accept.
    MaxConnections,
    MaxConnectionsPerSource,
    /// No first byte of a ClientHello before the first-byte deadline.
    FirstByteTimeout,
    // TLS handshake.
    /// No SNI, or an IP literal (rustls drops those from the ClientHello).
    NoSni,
    UnknownOrg,
    UnrecognizedName,
    OrgHasNoCa,
    /// The handshake did not finish within its deadline.
    Timeout,
    /// No handshake slot was free within the handshake deadline.
    AdmissionTimeout,
    NoClientCertificate,
    UnknownCa,
    CertificateExpired,
    CertificateNotYetValid,
    /// Revoked: listed in the CRL of the CA that issued it, or so answered by OCSP.
    CertificateRevoked,
    /// Outside a CA's name constraints (DNS, IP or e-mail).
    NameConstraintViolation,
    BadCertificate,
    /// The CA that verified the chain is no longer active (a change raced the handshake).
    CaInactive,
    ClientAlert,
    Handshake,
    Io,
    // CONNECT.
    ConnectTimeout,
    ClosedBeforeConnect,
    UnsupportedProtocol,
    ClientIdInvalid,
    OrgMismatch,
    IdentityMismatch,
    DeviceBlocked,
    /// The CA's CRL is past its nextUpdate and `revocation.on_stale_crl` is `deny` (a TLS
    /// resumption skipped the handshake's check).
    CrlStale,
    /// The CA's `ocsp_mode` is `hard` and its responder gave no usable answer.
    OcspUnavailable,
    WillTopic,
    AuthMethod,
    BrokerUnavailable,
    BrokerBusy,
    // A live session closed by a change.
    /// The session's organisation was deleted.
    OrgDeleted,
    /// The org's new topic policy refuses a filter the session holds or its will, or would route
    /// it elsewhere.
    TopicPolicy,
}

use Refusal::*;

/// Every refusal, in the order of the enum.
const ALL: [Refusal; 35] = [
    MaxConnections,
    MaxConnectionsPerSource,
    FirstByteTimeout,
    NoSni,
    UnknownOrg,
    UnrecognizedName,
    OrgHasNoCa,
    Timeout,
    AdmissionTimeout,
    NoClientCertificate,
    UnknownCa,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    NameConstraintViolation,
    BadCertificate,
    CaInactive,
    ClientAlert,
    Handshake,
    Io,
    ConnectTimeout,
    ClosedBeforeConnect,
    UnsupportedProtocol,
    ClientIdInvalid,
    OrgMismatch,
    IdentityMismatch,
    DeviceBlocked,
    CrlStale,
    OcspUnavailable,
    WillTopic,
    AuthMethod,
    BrokerUnavailable,
    BrokerBusy,
    OrgDeleted,
    TopicPolicy,
];

impl Refusal {
    /// The refusal whose label (`as_str`) is `label`.
    pub fn from_label(label: &str) -> Option<Refusal> {
        ALL.into_iter().find(|refusal| refusal.as_str() == label)
    }

    /// The bounded snake_case label of metrics, events, logs and the README.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerSource => "max_connections_per_source",
            Refusal::FirstByteTimeout => "first_byte_timeout",
            Refusal::NoSni => "no_sni",
            Refusal::UnknownOrg => "unknown_org",
            Refusal::UnrecognizedName => "unrecognized_name",
            Refusal::OrgHasNoCa => "org_has_no_ca",
            Refusal::Timeout => "timeout",
            Refusal::AdmissionTimeout => "admission_timeout",
            Refusal::NoClientCertificate => "no_client_certificate",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::CertificateExpired => "certificate_expired",
            Refusal::CertificateNotYetValid => "certificate_not_yet_valid",
            Refusal::CertificateRevoked => "certificate_revoked",
            Refusal::NameConstraintViolation => "name_constraint_violation",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::CaInactive => "ca_inactive",
            Refusal::ClientAlert => "client_alert",
            Refusal::Handshake => "handshake",
            Refusal::Io => "io",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::ClosedBeforeConnect => "closed_before_connect",
            Refusal::UnsupportedProtocol => "unsupported_protocol",
            Refusal::ClientIdInvalid => "client_id_invalid",
            Refusal::OrgMismatch => "org_mismatch",
            Refusal::IdentityMismatch => "identity_mismatch",
            Refusal::DeviceBlocked => "device_blocked",
            Refusal::CrlStale => "crl_stale",
            Refusal::OcspUnavailable => "ocsp_unavailable",
            Refusal::WillTopic => "will_topic_not_allowed",
            Refusal::AuthMethod => "auth_method_unsupported",
            Refusal::BrokerUnavailable => "broker_unavailable",
            Refusal::BrokerBusy => "broker_busy",
            Refusal::OrgDeleted => "org_deleted",
            Refusal::TopicPolicy => "topic_policy",
        }
    }

    /// The CONNACK code of a refusal answered at CONNECT: 3.1.1 has only a few return codes, so
    /// every refusal of who the client is becomes "not authorized" there; MQTT 5 says more.
    pub fn connack_code(self, protocol: Protocol) -> u8 {
        match (protocol, self) {
            (Protocol::V311, Refusal::UnsupportedProtocol) => {
                reason::V311_UNACCEPTABLE_PROTOCOL_VERSION
            }
            (Protocol::V311, Refusal::ClientIdInvalid) => reason::V311_IDENTIFIER_REJECTED,
            (Protocol::V311, Refusal::BrokerUnavailable | Refusal::BrokerBusy) => {
                reason::V311_SERVER_UNAVAILABLE
            }
            (Protocol::V311, _) => reason::V311_NOT_AUTHORIZED,
            (Protocol::V5, Refusal::UnsupportedProtocol) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            (Protocol::V5, Refusal::ClientIdInvalid) => reason::CLIENT_IDENTIFIER_NOT_VALID,
            (Protocol::V5, Refusal::WillTopic) => reason::TOPIC_NAME_INVALID,
            (Protocol::V5, Refusal::AuthMethod) => reason::BAD_AUTHENTICATION_METHOD,
            (Protocol::V5, Refusal::BrokerUnavailable) => reason::SERVER_UNAVAILABLE,
            (Protocol::V5, Refusal::BrokerBusy) => reason::SERVER_BUSY,
            (Protocol::V5, _) => reason::NOT_AUTHORIZED,
        }
    }

    /// What a person is told: the reason string an MQTT 5 CONNACK refusal carries, and the
    /// message of `POST …/explain` (what the device's operator needs to fix it).
    pub fn sentence(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "the server is at its connection limit",
            Refusal::MaxConnectionsPerSource => "too many connections from this address",
            Refusal::FirstByteTimeout => "the client sent nothing after connecting",
            Refusal::NoSni => "the client did not name the server it connects to (SNI)",
            Refusal::UnknownOrg => "the server name (SNI) names no organisation",
            Refusal::UnrecognizedName => "the server name (SNI) is not one this server answers to",
            Refusal::OrgHasNoCa => {
                "the organisation has no active CA certificate, so no device can connect"
            }
            Refusal::Timeout => "the TLS handshake did not finish in time",
            Refusal::AdmissionTimeout => {
                "the server was too busy to start the TLS handshake in time"
            }
            Refusal::NoClientCertificate => "the client presented no certificate",
            Refusal::UnknownCa => {
                "the certificate chain leads to none of the organisation's active CA certificates"
            }
            Refusal::CertificateExpired => "the certificate has expired",
            Refusal::CertificateNotYetValid => "the certificate is not valid yet",
            Refusal::NameConstraintViolation => {
                "the certificate names something its CA's name constraints do not allow"
            }
            Refusal::BadCertificate => {
                "the certificate cannot be used (malformed, wrong key usage or a bad signature)"
            }
            Refusal::ClientAlert => "the client ended the TLS handshake",
            Refusal::Handshake => "the TLS handshake failed",
            Refusal::Io => "the connection failed during the TLS handshake",
            Refusal::ConnectTimeout => "no CONNECT came in time after the TLS handshake",
            Refusal::ClosedBeforeConnect => "the client closed the connection before its CONNECT",
            Refusal::OrgDeleted => "the organisation was deleted",
            Refusal::TopicPolicy => {
                "the organisation's topic policy refuses a subscription or the will"
            }
            Refusal::UnsupportedProtocol => "only MQTT 3.1.1 and 5 are supported",
            Refusal::ClientIdInvalid => {
                "client id must be d:<org>:<type>:<id>, g:<org>:<type>:<id> or a:<org>:<appId>"
            }
            Refusal::OrgMismatch => "client id names another organisation",
            Refusal::IdentityMismatch => "client id is not an identity the certificate claims",
            Refusal::CaInactive => "the certificate's CA is no longer active",
            Refusal::DeviceBlocked => "this device is blocked",
            Refusal::CertificateRevoked => "the certificate is revoked",
            Refusal::CrlStale => "the CA's revocation list is out of date",
            Refusal::OcspUnavailable => "the certificate's revocation status cannot be checked now",
            Refusal::WillTopic => "will topic not allowed",
            Refusal::AuthMethod => "enhanced authentication is not supported",
            Refusal::BrokerUnavailable => "broker unavailable",
            Refusal::BrokerBusy => "broker busy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels are an API (metrics, events, README): each is pinned here, and none is shared
    /// by two variants.
    #[test]
    fn every_label_is_spelled_as_the_readme_lists_it() {
        let table = [
            (Refusal::MaxConnections, "max_connections"),
            (
                Refusal::MaxConnectionsPerSource,
                "max_connections_per_source",
            ),
            (Refusal::FirstByteTimeout, "first_byte_timeout"),
            (Refusal::NoSni, "no_sni"),
            (Refusal::UnknownOrg, "unknown_org"),
            (Refusal::UnrecognizedName, "unrecognized_name"),
            (Refusal::OrgHasNoCa, "org_has_no_ca"),
            (Refusal::Timeout, "timeout"),
            (Refusal::AdmissionTimeout, "admission_timeout"),
            (Refusal::NoClientCertificate, "no_client_certificate"),
            (Refusal::UnknownCa, "unknown_ca"),
            (Refusal::CertificateExpired, "certificate_expired"),
            (Refusal::CertificateNotYetValid, "certificate_not_yet_valid"),
            (Refusal::CertificateRevoked, "certificate_revoked"),
            (
                Refusal::NameConstraintViolation,
                "name_constraint_violation",
            ),
            (Refusal::BadCertificate, "bad_certificate"),
            (Refusal::CaInactive, "ca_inactive"),
            (Refusal::ClientAlert, "client_alert"),
            (Refusal::Handshake, "handshake"),
            (Refusal::Io, "io"),
            (Refusal::ConnectTimeout, "connect_timeout"),
            (Refusal::ClosedBeforeConnect, "closed_before_connect"),
            (Refusal::UnsupportedProtocol, "unsupported_protocol"),
            (Refusal::ClientIdInvalid, "client_id_invalid"),
            (Refusal::OrgMismatch, "org_mismatch"),
            (Refusal::IdentityMismatch, "identity_mismatch"),
            (Refusal::DeviceBlocked, "device_blocked"),
            (Refusal::CrlStale, "crl_stale"),
            (Refusal::OcspUnavailable, "ocsp_unavailable"),
            (Refusal::WillTopic, "will_topic_not_allowed"),
            (Refusal::AuthMethod, "auth_method_unsupported"),
            (Refusal::BrokerUnavailable, "broker_unavailable"),
            (Refusal::BrokerBusy, "broker_busy"),
            (Refusal::OrgDeleted, "org_deleted"),
            (Refusal::TopicPolicy, "topic_policy"),
        ];
        for (refusal, label) in table {
            assert_eq!(refusal.as_str(), label, "{refusal:?}");
            assert_eq!(Refusal::from_label(label), Some(refusal));
        }
        assert_eq!(ALL.len(), table.len(), "ALL lists every refusal");
        assert_eq!(Refusal::from_label("nonsense"), None);
        let mut labels: Vec<_> = table.iter().map(|(_, label)| *label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), table.len(), "two variants share a label");
        // The README's list of refusal reasons is this table (but `org_deleted` and
        // `topic_policy`, which close a live session and are listed with their metric).
        let readme = include_str!("../README.md");
        let start = readme
            .find("Refusal reasons")
            .expect("the README lists refusal reasons");
        let list = &readme[start..];
        let list = &list[..list.find("\n\n").unwrap_or(list.len())];
        let mut listed: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        listed.retain(|word| !["tls", "connect", "tcp", "src/refusal.rs"].contains(word));
        listed.sort_unstable();
        listed.dedup();
        let mut expected: Vec<&str> = table
            .iter()
            .filter(|(refusal, _)| ![Refusal::OrgDeleted, Refusal::TopicPolicy].contains(refusal))
            .map(|(_, label)| *label)
            .collect();
        expected.sort_unstable();
        assert_eq!(listed, expected, "the README's list differs from the table");
        assert!(readme.contains("`org_deleted`") && readme.contains("`topic_policy`"));
    }

    #[test]
    fn connack_codes_follow_each_protocol() {
        use Protocol::{V311, V5};
        let cases = [
            (Refusal::UnsupportedProtocol, V311, 0x01),
            (Refusal::ClientIdInvalid, V311, 0x02),
            (Refusal::BrokerBusy, V311, 0x03),
            (Refusal::BrokerUnavailable, V311, 0x03),
            (Refusal::IdentityMismatch, V311, 0x05),
            (Refusal::DeviceBlocked, V311, 0x05),
            (Refusal::UnsupportedProtocol, V5, 0x84),
            (Refusal::ClientIdInvalid, V5, 0x85),
            (Refusal::OrgMismatch, V5, 0x87),
            (Refusal::OcspUnavailable, V5, 0x87),
            (Refusal::BrokerUnavailable, V5, 0x88),
            (Refusal::BrokerBusy, V5, 0x89),
            (Refusal::AuthMethod, V5, 0x8C),
            (Refusal::WillTopic, V5, 0x90),
        ];
        for (refusal, protocol, code) in cases {
            assert_eq!(
                refusal.connack_code(protocol),
                code,
                "{refusal:?} {protocol:?}"
            );
        }
    }
}
