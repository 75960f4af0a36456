//! What the broker holds for a device's command filters (issue 11, finding 8): one coarse filter,
//! however many distinct filters the device names (`portcullis_broker_filters`, a process-wide
//! gauge: this binary has this one test so no other server sets it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mqtt::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode as Code5};
use rumqttc::v5::mqttbytes::QoS as QoS5;

/// The value of the gauge on `/metrics`; 0 when absent.
async fn broker_filters(server: &TestServer) -> f64 {
    let (status, body) = server.api("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    body.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_broker_filters ")?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_device_with_5000_command_filters_makes_the_broker_hold_one_filter() {
    let server = TestServer::start_with(|c| c.mqtts.max_filters_per_session = 10_000).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server
        .bridge("acme.messaging.localhost", &ca.client("d:sensor:dev1", &[]))
        .await;
    let (device, eventloop, _) = connect_v5(v5_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let mut inbox = drive_v5(eventloop);
    for batch in 0..20 {
        let filters = (batch * 250..batch * 250 + 250)
            .map(|n| Filter::new(format!("iot-2/cmd/c{n}/fmt/json"), QoS5::AtLeastOnce));
        device.subscribe_many(filters).await.unwrap();
        let codes = recv_v5(&mut inbox, |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await;
        assert_eq!(
            codes,
            vec![Code5::Success(QoS5::AtLeastOnce); 250],
            "batch {batch}"
        );
    }
    assert_eq!(broker_filters(&server).await, 1.0);

    let app = clients::publisher_v4(&server, &ca, "acme", "a:ops").await;
    for name in ["nope", "c4321"] {
        let topic = format!("iot-2/type/sensor/id/dev1/cmd/{name}/fmt/json");
        app.publish(topic, rumqttc::QoS::AtLeastOnce, false, name)
            .await
            .unwrap();
    }
    let topic = recv_v5(&mut inbox, |p| match p {
        Packet::Publish(p) => Some(p.topic.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&topic[..], b"iot-2/cmd/c4321/fmt/json");
}
