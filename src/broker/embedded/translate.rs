//! Packets to and from rumqttd's types, and reason codes both ways: the only place that builds or
//! reads a `rumqttd::protocol` value.

use bytes::Bytes;
use rumqttd::protocol::{
    self as rp, DisconnectReasonCode, Filter, PubAckReason, PubCompReason, PubRecReason,
    PubRelReason, RetainForwardRule, SubscribeReasonCode, UnsubAckReason,
};

use super::BrokerError;
use crate::codec::{Ack, Disconnect, Packet, Properties, Publish, QoS, SubAck, UnsubAck};

/// Reason codes both ways for one of rumqttd's reason enums; unknown codes become `$fallback`.
macro_rules! reason_codes {
    ($ty:ident, $to_code:ident, $from_code:ident, $fallback:ident, { $($variant:ident = $code:literal),+ $(,)? }) => {
        fn $to_code(reason: $ty) -> u8 {
            match reason {
                $($ty::$variant => $code,)+
            }
        }

        fn $from_code(code: u8) -> $ty {
            match code {
                $($code => $ty::$variant,)+
                _ => $ty::$fallback,
            }
        }
    };
}

reason_codes!(PubAckReason, puback_code, puback_reason, UnspecifiedError, {
    Success = 0x00, NoMatchingSubscribers = 0x10, UnspecifiedError = 0x80,
    ImplementationSpecificError = 0x83, NotAuthorized = 0x87, TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91, QuotaExceeded = 0x97, PayloadFormatInvalid = 0x99,
});
reason_codes!(PubRecReason, pubrec_code, pubrec_reason, UnspecifiedError, {
    Success = 0x00, NoMatchingSubscribers = 0x10, UnspecifiedError = 0x80,
    ImplementationSpecificError = 0x83, NotAuthorized = 0x87, TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91, QuotaExceeded = 0x97, PayloadFormatInvalid = 0x99,
});
reason_codes!(PubRelReason, pubrel_code, pubrel_reason, PacketIdentifierNotFound, {
    Success = 0x00, PacketIdentifierNotFound = 0x92,
});
reason_codes!(PubCompReason, pubcomp_code, pubcomp_reason, PacketIdentifierNotFound, {
    Success = 0x00, PacketIdentifierNotFound = 0x92,
});
reason_codes!(DisconnectReasonCode, disconnect_code, disconnect_reason, UnspecifiedError, {
    NormalDisconnection = 0x00, DisconnectWithWillMessage = 0x04, UnspecifiedError = 0x80,
    MalformedPacket = 0x81, ProtocolError = 0x82, ImplementationSpecificError = 0x83,
    NotAuthorized = 0x87, ServerBusy = 0x89, ServerShuttingDown = 0x8B,
    KeepAliveTimeout = 0x8D, SessionTakenOver = 0x8E, TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90, ReceiveMaximumExceeded = 0x93, TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95, MessageRateTooHigh = 0x96, QuotaExceeded = 0x97,
    AdministrativeAction = 0x98, PayloadFormatInvalid = 0x99, RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B, UseAnotherServer = 0x9C, ServerMoved = 0x9D,
    SharedSubscriptionNotSupported = 0x9E, ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0, SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
});

fn suback_code(code: SubscribeReasonCode) -> u8 {
    use SubscribeReasonCode as C;
    match code {
        C::QoS0 | C::Success(rp::QoS::AtMostOnce) => 0x00,
        C::QoS1 | C::Success(rp::QoS::AtLeastOnce) => 0x01,
        C::QoS2 | C::Success(rp::QoS::ExactlyOnce) => 0x02,
        C::Failure | C::Unspecified => 0x80,
        C::ImplementationSpecific => 0x83,
        C::NotAuthorized => 0x87,
        C::TopicFilterInvalid => 0x8F,
        C::PkidInUse => 0x91,
        C::QuotaExceeded => 0x97,
        C::SharedSubscriptionsNotSupported => 0x9E,
        C::SubscriptionIdNotSupported => 0xA1,
        C::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn unsuback_code(reason: UnsubAckReason) -> u8 {
    use UnsubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoSubscriptionExisted => 0x11,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicFilterInvalid => 0x8F,
        R::PacketIdentifierInUse => 0x91,
    }
}

fn router_qos(qos: QoS) -> rp::QoS {
    match qos {
        QoS::AtMostOnce => rp::QoS::AtMostOnce,
        QoS::AtLeastOnce => rp::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rp::QoS::ExactlyOnce,
    }
}

/// One of PUBACK, PUBREC, PUBREL, PUBCOMP for the router (the four have the same shape there);
/// properties are left out when there are none.
macro_rules! router_ack {
    ($ack:expr, $packet:ident, $properties:ident, $reason:ident) => {{
        let ack: Ack = $ack;
        let p = ack.properties;
        let properties = (p.reason_string.is_some() || !p.user_properties.is_empty()).then_some(
            rp::$properties {
                reason_string: p.reason_string,
                user_properties: p.user_properties,
            },
        );
        let packet = rp::$packet {
            pkid: ack.packet_id,
            reason: $reason(ack.reason),
        };
        rp::Packet::$packet(packet, properties)
    }};
}

/// The reason string and user properties of an acknowledgement from the router (the property
/// types differ per packet, the fields do not).
macro_rules! ack_properties {
    ($properties:expr) => {{
        let (reason_string, user_properties) = $properties
            .map(|p| (p.reason_string, p.user_properties))
            .unwrap_or_default();
        Properties {
            reason_string,
            user_properties,
            ..Properties::default()
        }
    }};
}

/// One of PUBACK, PUBREC, PUBREL, PUBCOMP from the router.
macro_rules! ack_from_router {
    ($ack:expr, $properties:expr, $code:ident) => {
        Ack {
            packet_id: $ack.pkid,
            reason: $code($ack.reason),
            properties: ack_properties!($properties),
        }
    };
}

/// rumqttd's `Publish` hides QoS, DUP and packet id from other crates; they are set through its
/// own serialised header: first byte, packet id, topic length 0.
fn router_publish(publish: Publish) -> (rp::Publish, Option<rp::PublishProperties>) {
    let first = 0x30
        | (u8::from(publish.dup) << 3)
        | ((router_qos(publish.qos) as u8) << 1)
        | u8::from(publish.retain);
    let [hi, lo] = publish.packet_id.unwrap_or(0).to_be_bytes();
    let mut out = rp::Publish::deserialize(Bytes::copy_from_slice(&[first, hi, lo, 0, 0]));
    out.topic = Bytes::from(publish.topic.into_bytes());
    out.payload = publish.payload;
    let p = publish.properties;
    let properties = (p.payload_format_indicator.is_some()
        || p.message_expiry_interval.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty())
    .then(|| rp::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    });
    (out, properties)
}

/// The inverse of [`router_publish`]; `None` for a topic that is not UTF-8 (never stored: every
/// topic reached the router through the front-end).
pub(super) fn publish_from_router(
    publish: rp::Publish,
    properties: Option<rp::PublishProperties>,
) -> Option<Publish> {
    let mut head = publish.clone();
    head.topic = Bytes::new();
    head.payload = Bytes::new();
    let header = head.serialize();
    let (first, packet_id) = match header.as_ref() {
        [first, hi, lo, ..] => (*first, u16::from_be_bytes([*hi, *lo])),
        _ => return None,
    };
    let qos = match (first >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let topic = String::from_utf8(publish.topic.to_vec()).ok()?;
    let p = properties.unwrap_or_default();
    Some(Publish {
        dup: first & 0b1000 != 0,
        qos,
        retain: publish.retain,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
        properties: Properties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..Properties::default()
        },
        payload: publish.payload,
    })
}

/// A packet of the session, as the router takes it.
pub(super) fn to_router(packet: Packet) -> Result<rp::Packet, BrokerError> {
    Ok(match packet {
        Packet::Publish(publish) => {
            let (publish, properties) = router_publish(publish);
            rp::Packet::Publish(publish, properties)
        }
        Packet::PubAck(ack) => router_ack!(ack, PubAck, PubAckProperties, puback_reason),
        Packet::PubRec(ack) => router_ack!(ack, PubRec, PubRecProperties, pubrec_reason),
        // rumqttd takes a PUBREL only without properties (it ignores any other).
        Packet::PubRel(ack) => rp::Packet::PubRel(
            rp::PubRel {
                pkid: ack.packet_id,
                reason: pubrel_reason(ack.reason),
            },
            None,
        ),
        Packet::PubComp(ack) => router_ack!(ack, PubComp, PubCompProperties, pubcomp_reason),
        Packet::Subscribe(subscribe) => rp::Packet::Subscribe(
            rp::Subscribe {
                pkid: subscribe.packet_id,
                filters: subscribe
                    .subscriptions
                    .into_iter()
                    .map(|s| Filter {
                        path: s.filter,
                        qos: router_qos(s.options.qos),
                        nolocal: s.options.no_local,
                        preserve_retain: s.options.retain_as_published,
                        retain_forward_rule: match s.options.retain_handling {
                            0 => RetainForwardRule::OnEverySubscribe,
                            1 => RetainForwardRule::OnNewSubscribe,
                            _ => RetainForwardRule::Never,
                        },
                    })
                    .collect(),
            },
            (!subscribe.properties.user_properties.is_empty()).then_some(rp::SubscribeProperties {
                id: None,
                user_properties: subscribe.properties.user_properties,
            }),
        ),
        Packet::Unsubscribe(unsubscribe) => rp::Packet::Unsubscribe(
            rp::Unsubscribe {
                pkid: unsubscribe.packet_id,
                filters: unsubscribe.filters,
            },
            (!unsubscribe.properties.user_properties.is_empty()).then_some({
                rp::UnsubscribeProperties {
                    user_properties: unsubscribe.properties.user_properties,
                }
            }),
        ),
        Packet::Disconnect(disconnect) => {
            let p = disconnect.properties;
            let properties = (p.session_expiry_interval.is_some()
                || p.reason_string.is_some()
                || !p.user_properties.is_empty())
            .then_some(rp::DisconnectProperties {
                session_expiry_interval: p.session_expiry_interval,
                reason_string: p.reason_string,
                user_properties: p.user_properties,
                server_reference: None,
            });
            rp::Packet::Disconnect(
                rp::Disconnect {
                    reason_code: disconnect_reason(disconnect.reason),
                },
                properties,
            )
        }
        Packet::Connect(_) => return Err(BrokerError::Unsupported("CONNECT")),
        Packet::ConnAck(_) => return Err(BrokerError::Unsupported("CONNACK")),
        Packet::SubAck(_) => return Err(BrokerError::Unsupported("SUBACK")),
        Packet::UnsubAck(_) => return Err(BrokerError::Unsupported("UNSUBACK")),
        Packet::PingReq => return Err(BrokerError::Unsupported("PINGREQ")),
        Packet::PingResp => return Err(BrokerError::Unsupported("PINGRESP")),
        Packet::Auth(_) => return Err(BrokerError::Unsupported("AUTH")),
    })
}

/// A packet from the router, as the session handles it; `None` for what concerns no client
/// (PINGRESP, CONNACK).
pub(super) fn from_router(packet: rp::Packet) -> Option<Packet> {
    Some(match packet {
        rp::Packet::Publish(publish, properties) => {
            Packet::Publish(publish_from_router(publish, properties)?)
        }
        rp::Packet::PubAck(ack, p) => Packet::PubAck(ack_from_router!(ack, p, puback_code)),
        rp::Packet::PubRec(ack, p) => Packet::PubRec(ack_from_router!(ack, p, pubrec_code)),
        rp::Packet::PubRel(ack, p) => Packet::PubRel(ack_from_router!(ack, p, pubrel_code)),
        rp::Packet::PubComp(ack, p) => Packet::PubComp(ack_from_router!(ack, p, pubcomp_code)),
        rp::Packet::SubAck(ack, p) => Packet::SubAck(SubAck {
            packet_id: ack.pkid,
            codes: ack.return_codes.into_iter().map(suback_code).collect(),
            properties: ack_properties!(p),
        }),
        rp::Packet::UnsubAck(ack, p) => Packet::UnsubAck(UnsubAck {
            packet_id: ack.pkid,
            codes: ack.reasons.into_iter().map(unsuback_code).collect(),
            properties: ack_properties!(p),
        }),
        rp::Packet::Disconnect(disconnect, p) => Packet::Disconnect(Disconnect {
            reason: disconnect_code(disconnect.reason_code),
            properties: Properties {
                reason_string: p.and_then(|p| p.reason_string),
                ..Properties::default()
            },
        }),
        rp::Packet::Connect(..)
        | rp::Packet::ConnAck(..)
        | rp::Packet::Subscribe(..)
        | rp::Packet::Unsubscribe(..)
        | rp::Packet::PingReq(_)
        | rp::Packet::PingResp(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::embedded::testing::publish;

    #[test]
    fn publish_header_fields_survive_the_router_types() {
        for (qos, packet_id) in [
            (QoS::AtMostOnce, None),
            (QoS::AtLeastOnce, Some(1)),
            (QoS::ExactlyOnce, Some(65_535)),
        ] {
            for (dup, retain) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut original = publish("a/b", qos, packet_id, b"payload");
                original.dup = dup;
                original.retain = retain;
                original.properties.user_properties = vec![("k".into(), "v".into())];
                original.properties.content_type = Some("text/plain".into());
                let (p, props) = router_publish(original.clone());
                assert_eq!(publish_from_router(p, props), Some(original));
            }
        }
    }

    #[test]
    fn reason_codes_map_both_ways() {
        for code in [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
            assert_eq!(puback_code(puback_reason(code)), code);
            assert_eq!(pubrec_code(pubrec_reason(code)), code);
        }
        assert_eq!(pubcomp_code(pubcomp_reason(0x92)), 0x92);
        assert_eq!(pubrel_code(pubrel_reason(0x00)), 0x00);
        for code in [0x00, 0x04, 0x8E, 0xA2] {
            assert_eq!(disconnect_code(disconnect_reason(code)), code);
        }
        assert_eq!(
            puback_code(puback_reason(0x42)),
            0x80,
            "unknown codes are errors"
        );
    }
}
