//! The `x-delayed-message` exchange end to end, with lapin: messages held
//! until their `x-delay`, never routed early, and persistent ones on a
//! durable exchange kept across a restart with their original deadlines.
//! Timing is asserted one way only (not before the deadline); the upper
//! bounds are the generous read timeouts.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use warren_tests::http::Http;
use warren_tests::lapin_util::{channel, connect, consume, next_delivery, within};
use warren_tests::{TestBroker, start_broker, start_durable_broker};

/// Declares the durable delayed exchange `dx` (routing as direct), the
/// durable queue `dq` and binds them with key `k`.
async fn topology(ch: &lapin::Channel) {
    let mut args = FieldTable::default();
    args.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString(LongString::from("direct")),
    );
    within(
        "exchange.declare",
        ch.exchange_declare(
            "dx".into(),
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        ),
    )
    .await
    .unwrap();
    within(
        "queue.declare",
        ch.queue_declare(
            "dq".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    within(
        "queue.bind",
        ch.queue_bind(
            "dq".into(),
            "dx".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
}

/// Publishes `body` to `dx` with `x-delay` and waits for its confirm.
async fn publish_delayed(ch: &lapin::Channel, body: &[u8], delay_ms: i32, mode: u8) {
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), AMQPValue::LongInt(delay_ms));
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "dx".into(),
            "k".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_delivery_mode(mode)
                .with_headers(headers),
        ),
    )
    .await
    .unwrap();
    assert!(within("confirm", confirm).await.unwrap().is_ack());
}

fn held(broker: &TestBroker) -> Option<usize> {
    broker
        .broker
        .vhost("/")
        .and_then(|vh| vh.exchange(b"dx"))
        .and_then(|x| x.messages_delayed())
}

fn x_delay(d: &lapin::message::Delivery) -> Option<AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delay").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_not_routed_before_its_time() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    topology(&ch).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let mut consumer = consume(&ch, "dq", "c", BasicConsumeOptions::default()).await;
    let sent = Instant::now();
    publish_delayed(&ch, b"later", 300, 1).await;
    assert_eq!(held(&broker), Some(1));
    let d = next_delivery(&mut consumer).await;
    assert!(sent.elapsed() >= Duration::from_millis(300), "routed early");
    assert_eq!(&d.data[..], b"later");
    assert_eq!(x_delay(&d), Some(AMQPValue::LongInt(-300)));
    assert_eq!(held(&broker), Some(0));
    // The management API lists the type and how many the exchange holds.
    let http = Http::new(broker.http, "guest", "guest");
    let types = http.get("/api/overview").await.json()["exchange_types"].clone();
    assert!(
        types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "x-delayed-message"),
        "{types}"
    );
    let x = http.get("/api/exchanges/%2f/dx").await.json();
    assert_eq!(x["type"], "x-delayed-message");
    assert_eq!(x["messages_delayed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_delayed_messages_survive_a_restart_and_keep_their_time() {
    let broker = start_durable_broker().await;
    let sent = Instant::now();
    {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        topology(&ch).await;
        within(
            "confirm.select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        publish_delayed(&ch, b"second", 3_000, 2).await;
        publish_delayed(&ch, b"first", 1_500, 2).await;
        // Stored too, as the plugin stores every delayed message.
        publish_delayed(&ch, b"transient", 1_500, 1).await;
        assert_eq!(held(&broker), Some(3));
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    assert_eq!(held(&broker), Some(3), "every held message came back");
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, "dq", "c", BasicConsumeOptions::default()).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(&d.data[..], b"first");
    assert!(
        sent.elapsed() >= Duration::from_millis(1_500),
        "routed early"
    );
    assert_eq!(x_delay(&d), Some(AMQPValue::LongInt(-1_500)));
    let d = next_delivery(&mut consumer).await;
    assert_eq!(&d.data[..], b"transient");
    assert_eq!(d.properties.delivery_mode(), &Some(1), "still transient");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(&d.data[..], b"second");
    assert!(
        sent.elapsed() >= Duration::from_millis(3_000),
        "routed early"
    );
    assert_eq!(held(&broker), Some(0));
    // Routed means stored in the durable queue: it is there after
    // another restart, and the delayed record is gone.
    within("connection.close", conn.close(200, "OK".into()))
        .await
        .unwrap();
    let broker = broker.restart().await;
    assert_eq!(held(&broker), Some(0));
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = within(
        "passive declare",
        ch.queue_declare(
            "dq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        q.message_count(),
        2,
        "the persistent unacked deliveries requeued and kept (the transient one is not)"
    );
}
