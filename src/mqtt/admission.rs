//! Admission: from a CONNECT to a session that may forward, or to the one refusal it is told.
//! The CONNECT's client id is bound to an identity the TLS handshake proved, its will topic is
//! checked against the org's policy, the session is registered and then checked against the
//! current registry snapshot (a change that lands in between closes it) and the CA's OCSP policy,
//! the client id is claimed (an older session of it ends first), and the broker session is opened
//! with the CONNECT's clean start and session expiry.
//!
//! [`admit`] does no I/O with the client: it answers `Ok(Admitted)` or the [`Refusal`] the
//! caller tells the client with [`refusal_connack`] (DESIGN §3), so that the session's glue
//! ([`crate::mqtt::session`]) owns the socket and every refusal is written in one place.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::broker::{BrokerError, BrokerSession, Expiry, Opening};
use crate::cluster::Seat;
use crate::codec::{self, origin, ConnAck, Connect, Packet, Properties, Protocol, Will};
use crate::identity::ClientId;
use crate::mqtt::forward::{RECEIVE_MAXIMUM, TOPIC_ALIAS_MAX};
use crate::mqtt::topics::TopicMap;
use crate::mqtt::{Context, SessionError};
use crate::ocsp::Verdict;
use crate::refusal::Refusal;
use crate::registry::{ClientIdGuard, Device, PeerIdentity, Revocation, SessionGuard, SessionInfo};

/// A CONNECT admitted: everything the session forwards with, and the guards it holds until it
/// ends.
pub struct Admitted {
    pub connect: Connect,
    /// The bound client id, as text (what the broker and the events know it by).
    pub client_id: String,
    /// The device, as the registry's live-session table holds it.
    pub device: Device,
    /// The client's namespace in the broker.
    pub topics: TopicMap,
    /// The will, mapped into the org's namespace and stamped with its origin.
    pub will: Option<Will>,
    /// The client id the server assigned (MQTT 5, an empty client id), told in CONNACK.
    pub assigned: Option<String>,
    /// How long the broker keeps the session after the connection (the CONNECT's).
    pub expiry: Expiry,
    /// The session's entry in the live-session table (a change closes it through it).
    pub guard: SessionGuard,
    /// The client id, held by this session alone.
    pub held: ClientIdGuard,
    /// The session in the cluster's list (DESIGN §12).
    pub seat: Seat,
    pub broker: BrokerSession,
}

/// Reads bytes into `buf` until it holds a whole CONNECT; what follows it stays in `buf`.
pub async fn read_connect<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Connect, SessionError> {
    loop {
        if let Some(connect) =
            codec::decode_connect(buf, max_packet_size).map_err(SessionError::ClientCodec)?
        {
            return Ok(connect);
        }
        if client.read_buf(buf).await? == 0 {
            return Err(SessionError::ClosedBeforeConnect);
        }
    }
}

/// Admits `connect` from `peer`, or says why not (see the module documentation).
pub async fn admit(
    connect: Connect,
    peer: &PeerIdentity,
    ctx: &Context,
) -> Result<Admitted, Refusal> {
    let protocol = connect.protocol;
    let (client_id, assigned) = bind(&connect, peer)?;
    let org = peer.org.org.id.clone();
    // Register first, then check the current snapshot (see `registry`).
    let client_id_text = client_id.to_string();
    let info = SessionInfo {
        client_id: client_id_text.clone(),
        device: Device {
            identity: client_id.identity.clone(),
            claims: peer.claims.clone(),
            ca_id: peer.ca_id.clone(),
            also_ca_ids: peer.also_ca_ids.clone(),
            fingerprint_sha256: peer.fingerprint_sha256.clone(),
            serial: peer.serial.clone(),
        },
        protocol: match protocol {
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        },
        peer: peer.addr,
        connected_at: time::OffsetDateTime::now_utc(),
    };
    let device = info.device.clone();
    let guard = ctx
        .registry
        .sessions()
        .register(org.clone(), info, peer.ocsp.clone());
    let policy = match ctx.registry.snapshot().org(org.as_str()) {
        Some(entry) => match entry.revocation(&device) {
            Some(revocation) => return Err(revocation.refusal()),
            None => entry.org.topic_policy,
        },
        None => return Err(Revocation::CaInactive.refusal()),
    };
    // The topic policy of the snapshot checked, not the handshake's: a policy change published
    // since was either seen here or is told to this registered session (see `registry`).
    let topics = TopicMap::new(client_id.clone(), policy);
    let will = match &connect.will {
        Some(will) => {
            let topic = topics
                .publish(&will.topic)
                .map_err(|_| Refusal::WillTopic)?;
            let mut properties = will.properties.clone();
            origin::stamp(&mut properties, will.qos, will.retain, None);
            Some(Will {
                topic,
                properties,
                ..will.clone()
            })
        }
        None => None,
    };

    if let Some(refusal) = ocsp_refusal(peer, ctx).await {
        return Err(refusal);
    }

    // One session per client id: an older one is told to end, and this waits until its broker
    // connection is gone.
    let held = ctx
        .registry
        .sessions()
        .claim(&client_id_text, ctx.connect_timeout)
        .await
        .ok_or(Refusal::BrokerBusy)?;
    // And on the other nodes: a session of this client id there ends (taken over), as soon as
    // they hear of this one; told now, so that this session's word goes out before its CONNACK.
    let seat = ctx.cluster.admitted(guard.id());
    let expiry = session_expiry(&connect);
    let opening = Opening {
        client_id: &client_id_text,
        // A kept session the org's topic policy changed under is resumed only if it still holds
        // nothing the policy refuses or routes elsewhere; otherwise the broker starts it clean.
        clean_start: connect.clean_start || !ctx.filters.resumes_under(&client_id, policy),
        expiry,
        will: will.as_ref(),
        keep_alive: keep_alive(&connect, ctx.max_keep_alive).0,
    };
    let broker = ctx.broker.open_session(opening).await.map_err(|error| {
        tracing::warn!(%error, "no broker link");
        match error {
            BrokerError::Full => Refusal::BrokerBusy,
            _ => Refusal::BrokerUnavailable,
        }
    })?;
    Ok(Admitted {
        connect,
        client_id: client_id_text,
        device,
        topics,
        will,
        assigned,
        expiry,
        guard,
        held,
        seat,
        broker,
    })
}

/// The CONNACK that accepts `admitted`: MQTT 5 is told the server's limits (Receive Maximum,
/// Maximum Packet Size `max_packet_size`, topic aliases) and any assigned client id.
pub fn connack(admitted: &Admitted, max_packet_size: usize, max_keep_alive: u16) -> Packet {
    let mut connack = ConnAck {
        session_present: admitted.broker.session_present(),
        code: 0,
        properties: Properties::default(),
    };
    if admitted.connect.protocol == Protocol::V5 {
        connack.properties = Properties {
            receive_maximum: Some(RECEIVE_MAXIMUM),
            maximum_packet_size: Some(u32::try_from(max_packet_size).unwrap_or(u32::MAX)),
            topic_alias_maximum: Some(TOPIC_ALIAS_MAX),
            assigned_client_identifier: admitted.assigned.clone(),
            server_keep_alive: keep_alive(&admitted.connect, max_keep_alive).1,
            ..Properties::default()
        };
    }
    Packet::ConnAck(connack)
}

/// The keep-alive a session is served with, and the Server Keep Alive its CONNACK announces when
/// that differs from what the client asked: an MQTT 5 client asking none (0) or more than
/// `max` (when not 0) is held to `max` (MQTT 5 §3.2.2.3.14). A 3.1.1 client cannot be told, and
/// is served as it asked.
pub fn keep_alive(connect: &Connect, max: u16) -> (u16, Option<u16>) {
    let asked = connect.keep_alive;
    let capped = connect.protocol == Protocol::V5 && max > 0 && (asked == 0 || asked > max);
    if capped {
        (max, Some(max))
    } else {
        (asked, None)
    }
}

/// The CONNACK that refuses a CONNECT of `protocol`: the refusal's code, and for MQTT 5 its
/// sentence as the reason string.
pub fn refusal_connack(refusal: Refusal, protocol: Protocol) -> Packet {
    let mut properties = Properties::default();
    if protocol == Protocol::V5 {
        properties.reason_string = Some(refusal.sentence().to_owned());
    }
    Packet::ConnAck(ConnAck {
        session_present: false,
        code: refusal.connack_code(protocol),
        properties,
    })
}

/// How long the session is kept after its connection ends (MQTT 5: the CONNECT's Session Expiry
/// Interval, absent = 0; 3.1.1: clean session 1 ends it with the connection, 0 keeps it).
pub fn session_expiry(connect: &Connect) -> Expiry {
    match connect.protocol {
        Protocol::V5 => {
            Expiry::from_interval(connect.properties.session_expiry_interval.unwrap_or(0))
        }
        Protocol::V311 if connect.clean_start => Expiry::Now,
        Protocol::V311 => Expiry::Never,
    }
}

/// How long a will waits after the connection is lost (MQTT 5: the will delay, or the session's
/// expiry when that comes first; 3.1.1 has neither).
pub fn will_delay(connect: &Connect) -> Duration {
    let will_delay = connect
        .will
        .as_ref()
        .and_then(|will| will.properties.will_delay_interval)
        .unwrap_or(0);
    let session_expiry = connect.properties.session_expiry_interval.unwrap_or(0);
    match connect.protocol {
        Protocol::V5 => Duration::from_secs(u64::from(will_delay.min(session_expiry))),
        Protocol::V311 => Duration::ZERO,
    }
}

/// What the authenticating CA's OCSP policy says of the peer's certificate (DESIGN §11). An
/// unanswered check is told to the org's notification channels, whatever the mode.
async fn ocsp_refusal(peer: &PeerIdentity, ctx: &Context) -> Option<Refusal> {
    let subject = peer.ocsp.as_ref()?;
    let ca = peer.org.cas.iter().find(|ca| ca.id == peer.ca_id)?;
    let verdict = ctx.ocsp.verdict(subject, ca.ocsp_url.as_deref()).await;
    if verdict == Verdict::Unavailable {
        ctx.cluster.alert(
            &peer.org.org.id,
            crate::notify::OCSP_UNAVAILABLE,
            format!("ca:{}", ca.id),
        );
    }
    ca.ocsp_mode.refusal(verdict).map(|_| match verdict {
        Verdict::Revoked => Refusal::CertificateRevoked,
        _ => Refusal::OcspUnavailable,
    })
}

/// Binds the CONNECT's client id to the identities the certificate claims (DESIGN §3).
fn bind(connect: &Connect, peer: &PeerIdentity) -> Result<(ClientId, Option<String>), Refusal> {
    if connect.protocol == Protocol::V5 && connect.properties.authentication_method.is_some() {
        return Err(Refusal::AuthMethod);
    }
    let org = &peer.org.org.id;
    if connect.client_id.is_empty() {
        if connect.protocol == Protocol::V311 && !connect.clean_start {
            return Err(Refusal::ClientIdInvalid);
        }
        return match peer.claims.as_slice() {
            [] => Err(Refusal::IdentityMismatch),
            [identity] => {
                let id = ClientId {
                    org: org.clone(),
                    identity: identity.clone(),
                };
                let assigned = (connect.protocol == Protocol::V5).then(|| id.to_string());
                Ok((id, assigned))
            }
            _ => Err(Refusal::ClientIdInvalid),
        };
    }
    Ok((bind_id(&connect.client_id, peer)?, None))
}

/// Binds a client id the client sent to the identities its certificate claims.
pub fn bind_id(client_id: &str, peer: &PeerIdentity) -> Result<ClientId, Refusal> {
    let id = ClientId::parse(client_id).map_err(|_| Refusal::ClientIdInvalid)?;
    if id.org != peer.org.org.id {
        return Err(Refusal::OrgMismatch);
    }
    if peer.claims.binary_search(&id.identity).is_err() {
        return Err(Refusal::IdentityMismatch);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(protocol: Protocol, clean_start: bool, properties: Properties) -> Connect {
        Connect {
            protocol,
            clean_start,
            keep_alive: 0,
            client_id: "d:acme:sensor:dev1".into(),
            will: None,
            username: None,
            password: None,
            properties,
        }
    }

    #[test]
    fn keep_alive_is_capped_for_mqtt5_only_and_announced_when_changed() {
        let asking = |protocol, keep_alive| Connect {
            keep_alive,
            ..connect(protocol, true, Properties::default())
        };
        assert_eq!(keep_alive(&asking(Protocol::V5, 30), 60), (30, None));
        assert_eq!(keep_alive(&asking(Protocol::V5, 60), 60), (60, None));
        assert_eq!(keep_alive(&asking(Protocol::V5, 120), 60), (60, Some(60)));
        assert_eq!(keep_alive(&asking(Protocol::V5, 0), 60), (60, Some(60)));
        assert_eq!(keep_alive(&asking(Protocol::V5, 0), 0), (0, None));
        assert_eq!(keep_alive(&asking(Protocol::V5, 65535), 0), (65535, None));
        assert_eq!(keep_alive(&asking(Protocol::V311, 120), 60), (120, None));
        assert_eq!(keep_alive(&asking(Protocol::V311, 0), 60), (0, None));
    }

    #[test]
    fn a_refusal_connack_carries_its_code_and_for_mqtt5_its_sentence() {
        let v5 = refusal_connack(Refusal::IdentityMismatch, Protocol::V5);
        assert_eq!(
            v5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0x87,
                properties: Properties {
                    reason_string: Some(
                        "client id is not an identity the certificate claims".into()
                    ),
                    ..Properties::default()
                },
            })
        );
        let v311 = refusal_connack(Refusal::ClientIdInvalid, Protocol::V311);
        assert_eq!(
            v311,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0x02,
                properties: Properties::default(),
            })
        );
    }

    #[test]
    fn session_expiry_and_will_delay_follow_the_connect() {
        let with = |interval| Properties {
            session_expiry_interval: interval,
            ..Properties::default()
        };
        assert_eq!(
            session_expiry(&connect(Protocol::V5, false, with(None))),
            Expiry::Now
        );
        assert_eq!(
            session_expiry(&connect(Protocol::V5, true, with(Some(60)))),
            Expiry::After(Duration::from_secs(60))
        );
        assert_eq!(
            session_expiry(&connect(Protocol::V5, true, with(Some(u32::MAX)))),
            Expiry::Never
        );
        assert_eq!(
            session_expiry(&connect(Protocol::V311, true, with(None))),
            Expiry::Now
        );
        assert_eq!(
            session_expiry(&connect(Protocol::V311, false, with(None))),
            Expiry::Never
        );
        let mut v5 = connect(Protocol::V5, true, with(Some(30)));
        v5.will = Some(Will {
            topic: "t".into(),
            payload: bytes::Bytes::new(),
            qos: codec::QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(90),
                ..Properties::default()
            },
        });
        assert_eq!(
            will_delay(&v5),
            Duration::from_secs(30),
            "capped by the expiry"
        );
    }
}
