//! Caps on subscription filters (issue 11, finding 8): a session, an organisation and the embedded
//! broker each hold a bounded number of filters; a filter past a cap is refused in the SUBACK
//! (MQTT 5: 0x97 quota exceeded, 3.1.1: 0x80) while the others are granted, and the counts follow
//! the subscriptions that exist now.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::clients::*;
use common::mqtt::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode as Code5};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{QoS, SubscribeReasonCode};

const SNI: &str = "acme.messaging.localhost";

/// A command filter of a device, distinct per `n`.
fn command(n: usize) -> String {
    format!("iot-2/cmd/c{n}/fmt/json")
}

/// An application's filter on every device type, distinct per `n`: it reaches the broker as it
/// is (a filter on one device reaches it as that device's coarse filter, see `coarse_filters`).
fn wide(n: usize) -> String {
    format!("iot-2/type/+/id/dev{n}/evt/e/fmt/json")
}

/// Subscribes an MQTT 5 client to `filters` in one SUBSCRIBE and returns the SUBACK codes.
async fn subscribe_v5(
    client: &rumqttc::v5::AsyncClient,
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<Packet>,
    filters: impl IntoIterator<Item = String>,
) -> Vec<Code5> {
    let filters: Vec<Filter> = filters
        .into_iter()
        .map(|f| Filter::new(f, QoS5::AtLeastOnce))
        .collect();
    client.subscribe_many(filters).await.unwrap();
    recv_v5(inbox, |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
}

/// A 3.1.1 client's SUBACK codes for `filters` in one SUBSCRIBE.
async fn subscribe_many_v4(
    client: &rumqttc::AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    filters: impl IntoIterator<Item = String>,
) -> Vec<SubscribeReasonCode> {
    let filters = filters
        .into_iter()
        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
    client.subscribe_many(filters).await.unwrap();
    next_v4(eventloop, |p| match p {
        rumqttc::Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .unwrap()
}

/// Sends DISCONNECT and lets go of the connection once it is written.
async fn leave(client: rumqttc::AsyncClient, mut eventloop: rumqttc::EventLoop) {
    client.disconnect().await.unwrap();
    loop {
        match step(eventloop.poll()).await {
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Subscribes to `filter` until it is granted (a released count takes effect once the server
/// has seen the other session end).
async fn granted_eventually(
    client: &rumqttc::AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    filter: &str,
) -> bool {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let codes = subscribe_v4(client, eventloop, filter, QoS::AtLeastOnce).await;
        if codes == vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)] {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_filter_past_the_session_cap_is_refused_and_unsubscribing_frees_a_slot() {
    let server = TestServer::start_with(|c| c.mqtts.max_filters_per_session = 3).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let (device, eventloop, _) = connect_v5(v5_options(addr, "d:acme:sensor:dev1"))
        .await
        .unwrap();
    let mut inbox = drive_v5(eventloop);
    let granted = Code5::Success(QoS5::AtLeastOnce);

    // The same filter twice counts once; the fourth distinct one is over the cap.
    let mut filters: Vec<String> = (0..4).map(command).collect();
    filters.insert(1, command(0));
    let codes = subscribe_v5(&device, &mut inbox, filters).await;
    assert_eq!(
        codes,
        vec![granted, granted, granted, granted, Code5::QuotaExceeded]
    );
    // Still full, and a filter the session holds is granted again.
    let codes = subscribe_v5(&device, &mut inbox, [command(9), command(2)]).await;
    assert_eq!(codes, vec![Code5::QuotaExceeded, granted]);

    device.unsubscribe(command(1)).await.unwrap();
    recv_v5(&mut inbox, |p| {
        matches!(p, Packet::UnsubAck(_)).then_some(())
    })
    .await;
    let codes = subscribe_v5(&device, &mut inbox, [command(9)]).await;
    assert_eq!(codes, vec![granted]);

    // The granted filters work: a command on c9 reaches the device.
    let app = publisher_v4(&server, &ca, "acme", "a:ops").await;
    app.publish(
        "iot-2/type/sensor/id/dev1/cmd/c9/fmt/json",
        QoS::AtLeastOnce,
        false,
        "go",
    )
    .await
    .unwrap();
    let topic = recv_v5(&mut inbox, |p| match p {
        Packet::Publish(p) => Some(p.topic.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&topic[..], b"iot-2/cmd/c9/fmt/json");
}

#[tokio::test]
async fn mqtt311_gets_failure_for_a_filter_past_the_cap() {
    let server = TestServer::start_with(|c| c.mqtts.max_filters_per_session = 2).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (device, mut eventloop) = connected_v4(&server, &ca, "acme", "d:sensor:dev1").await;
    let codes = subscribe_many_v4(&device, &mut eventloop, (0..3).map(command)).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(codes, vec![granted, granted, SubscribeReasonCode::Failure]);
}

#[tokio::test]
async fn the_org_cap_counts_across_devices_and_a_disconnect_releases_its_filters() {
    let server = TestServer::start_with(|c| {
        c.mqtts.max_filters_per_session = 10;
        c.mqtts.max_filters_per_org = 2;
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let (first, mut first_loop) = connected_v4(&server, &ca, "acme", "d:sensor:dev1").await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    let codes = subscribe_many_v4(&first, &mut first_loop, (0..2).map(command)).await;
    assert_eq!(codes, vec![granted, granted]);

    let (second, mut second_loop) = connected_v4(&server, &ca, "acme", "d:sensor:dev2").await;
    let codes = subscribe_v4(&second, &mut second_loop, &command(0), QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Failure], "the org is full");

    // Another org is counted apart.
    let (beta_ca, _) = server.org_with_ca("beta").await;
    let (other, mut other_loop) = connected_v4(&server, &beta_ca, "beta", "d:sensor:dev1").await;
    let codes = subscribe_v4(&other, &mut other_loop, &command(0), QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![granted]);

    // The first device leaves (clean session): its two filters are the org's again.
    leave(first, first_loop).await;
    assert!(
        granted_eventually(&second, &mut second_loop, &command(0)).await,
        "the org's count was not released on disconnect"
    );
}

#[tokio::test]
async fn a_persistent_session_keeps_its_filters_counted_until_a_clean_start() {
    let server = TestServer::start_with(|c| c.mqtts.max_filters_per_org = 1).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let sni_addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);

    let mut options = v4_options(sni_addr, "d:acme:sensor:dev1");
    options.set_clean_session(false);
    let (keeper, mut keeper_loop) = connect_v4(options.clone()).await.unwrap();
    let codes = subscribe_v4(&keeper, &mut keeper_loop, &command(0), QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![granted]);
    leave(keeper, keeper_loop).await;

    // The broker keeps the subscription, so the org's count does too.
    let (other, mut other_loop) = connected_v4(&server, &ca, "acme", "d:sensor:dev2").await;
    let codes = subscribe_v4(&other, &mut other_loop, &command(1), QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Failure]);

    // A clean start ends the stored session and releases its filter.
    options.set_clean_session(true);
    let (_clean, _clean_loop) = connect_v4(options).await.unwrap();
    assert!(granted_eventually(&other, &mut other_loop, &command(1)).await);
}

#[tokio::test]
async fn the_broker_is_handed_no_more_distinct_filters_than_its_bound() {
    // 20,000 distinct filters per SUBSCRIBE, again and again over new connections, took the
    // process past a gigabyte: the broker's filter state is never freed. Filters that no longer
    // exist must not let new distinct ones in past `broker.max_filters`. (Filters on one device
    // reach the broker as one coarse filter: these name no one type.)
    let server = TestServer::start_with(|c| {
        c.mqtts.max_filters_per_session = 100;
        c.broker.max_filters = 6;
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    for round in 0..3 {
        let (device, mut eventloop) = connected_v4(&server, &ca, "acme", "a:ops").await;
        let filters = (round * 4..round * 4 + 4).map(wide);
        let codes = subscribe_many_v4(&device, &mut eventloop, filters).await;
        let expected: Vec<_> = (round * 4..round * 4 + 4)
            .map(|n| {
                if n < 6 {
                    granted
                } else {
                    SubscribeReasonCode::Failure
                }
            })
            .collect();
        assert_eq!(codes, expected, "round {round}");
        // A filter the broker holds already costs nothing new and is granted.
        let codes = subscribe_v4(&device, &mut eventloop, &wide(0), QoS::AtLeastOnce).await;
        assert_eq!(codes, vec![granted], "round {round}");
        leave(device, eventloop).await;
    }
}

#[tokio::test]
async fn a_kept_session_releases_its_filters_when_its_expiry_passes_and_zero_expiry_keeps_none() {
    let server = TestServer::start_with(|c| c.mqtts.max_filters_per_org = 1).await;
    let (ca, _) = server.org_with_ca("acme").await;
    let addr = server.bridge(SNI, &ca.client("d:sensor:dev1", &[])).await;
    let (other, mut other_loop) = connected_v4(&server, &ca, "acme", "d:sensor:dev2").await;

    // MQTT 5, clean start 0 and Session Expiry Interval 0 (MQTT-3.1.2-23): the session ends with
    // its connection, and so does its claim on the org's filters.
    let mut options = v5_options(addr, "d:acme:sensor:dev1");
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(0));
    let (device, eventloop, _) = connect_v5(options.clone()).await.unwrap();
    let mut inbox = drive_v5(eventloop);
    let codes = subscribe_v5(&device, &mut inbox, [command(0)]).await;
    assert_eq!(codes, vec![Code5::Success(QoS5::AtLeastOnce)]);
    device.disconnect().await.unwrap();
    assert!(
        granted_eventually(&other, &mut other_loop, &command(1)).await,
        "a session that is not kept released nothing"
    );
    other.unsubscribe(command(1)).await.unwrap();
    next_v4(&mut other_loop, |p| {
        matches!(p, rumqttc::Packet::UnsubAck(_)).then_some(())
    })
    .await
    .unwrap();

    // Kept for 2 s after its connection: counted meanwhile, released once the broker discards it.
    options.set_session_expiry_interval(Some(2));
    let (device, eventloop, _) = connect_v5(options).await.unwrap();
    let mut inbox = drive_v5(eventloop);
    let codes = subscribe_v5(&device, &mut inbox, [command(0)]).await;
    assert_eq!(codes, vec![Code5::Success(QoS5::AtLeastOnce)]);
    device.disconnect().await.unwrap();
    let codes = subscribe_v4(&other, &mut other_loop, &command(1), QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Failure],
        "kept: still counted"
    );
    assert!(
        granted_eventually(&other, &mut other_loop, &command(1)).await,
        "an expired session's filters were never released"
    );
}

#[tokio::test]
async fn subscribing_and_unsubscribing_new_filters_uses_up_only_the_orgs_share_of_the_broker() {
    // The broker frees no filter: a device that subscribes to ever new filters and unsubscribes
    // again stays within its own caps, yet must not fill the broker's bound for other orgs.
    let server = TestServer::start_with(|c| {
        c.broker.max_filters_per_org = 2;
        c.broker.max_filters = 100;
    })
    .await;
    let (ca, _) = server.org_with_ca("acme").await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    let (device, mut eventloop) = connected_v4(&server, &ca, "acme", "a:ops").await;
    for n in 0..2 {
        let codes = subscribe_v4(&device, &mut eventloop, &wide(n), QoS::AtLeastOnce).await;
        assert_eq!(codes, vec![granted], "filter {n}");
        device.unsubscribe(wide(n)).await.unwrap();
        next_v4(&mut eventloop, |p| {
            matches!(p, rumqttc::Packet::UnsubAck(_)).then_some(())
        })
        .await
        .unwrap();
    }
    let codes = subscribe_v4(&device, &mut eventloop, &wide(2), QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Failure],
        "a third distinct filter past the org's share"
    );
    let codes = subscribe_v4(&device, &mut eventloop, &wide(0), QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![granted], "a filter the org handed over before");

    let (beta_ca, _) = server.org_with_ca("beta").await;
    let (other, mut other_loop) = connected_v4(&server, &beta_ca, "beta", "a:ops").await;
    let codes = subscribe_v4(&other, &mut other_loop, &wide(7), QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![granted], "another org keeps its share");
}
