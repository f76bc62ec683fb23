//! What survives a broker restart, with lapin: durable exchanges, queues
//! and bindings, and persistent messages in durable queues; transient
//! things do not. The broker is stopped cleanly and reopened on the same
//! data directory.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use warren_tests::lapin_util::{
    channel, confirming_channel, connect, declare_queue_with, drain_bodies, expect_amqp_error,
    within,
};
use warren_tests::start_durable_broker;

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// Publishes with confirms on, waiting for the ack: once it arrives the
/// message is on disk (a confirm waits for the flush that covers it).
async fn publish_confirmed(ch: &lapin::Channel, exchange: &str, key: &str, body: &[u8], mode: u8) {
    let props = BasicProperties::default()
        .with_delivery_mode(mode)
        .with_message_id("id-1".into());
    publish_acked(ch, exchange, key, body, props).await;
}

/// Publishes with `props` and waits for the confirm, which must be an ack.
async fn publish_acked(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .unwrap();
    assert!(within("confirm", confirm).await.unwrap().is_ack());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_message_in_durable_queue_survives_restart() {
    let broker = start_durable_broker().await;
    {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        within(
            "queue.declare",
            ch.queue_declare("keep".into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
        within(
            "confirm.select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        publish_confirmed(&ch, "", "keep", b"persistent", 2).await;
        publish_confirmed(&ch, "", "keep", b"transient", 1).await;
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = within(
        "passive declare",
        ch.queue_declare("keep".into(), passive(), FieldTable::default()),
    )
    .await
    .expect("the durable queue survives");
    assert_eq!(q.message_count(), 1, "only the persistent message survives");
    let m = within(
        "basic.get",
        ch.basic_get("keep".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("the persistent message");
    assert_eq!(m.delivery.data, b"persistent");
    assert_eq!(*m.delivery.properties.delivery_mode(), Some(2));
    assert_eq!(
        m.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("id-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_queue_is_gone_after_restart() {
    let broker = start_durable_broker().await;
    {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        within(
            "queue.declare",
            ch.queue_declare(
                "fleeting".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let r = within(
        "passive declare",
        ch.queue_declare("fleeting".into(), passive(), FieldTable::default()),
    )
    .await;
    expect_amqp_error(r, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_exchange_and_binding_survive_restart() {
    let broker = start_durable_broker().await;
    {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        within(
            "exchange.declare",
            ch.exchange_declare(
                "orders".into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        within(
            "queue.declare",
            ch.queue_declare("eu-orders".into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
        within(
            "queue.bind",
            ch.queue_bind(
                "eu-orders".into(),
                "orders".into(),
                "eu.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    publish_confirmed(&ch, "orders", "eu.de.new", b"routed", 2).await;
    publish_confirmed(&ch, "orders", "us.new", b"not routed", 2).await;
    let m = within(
        "basic.get",
        ch.basic_get("eu-orders".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("routed through the recovered binding");
    assert_eq!(m.delivery.data, b"routed");
    let none = within(
        "basic.get",
        ch.basic_get("eu-orders".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap();
    assert!(none.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_do_not_come_back_after_restart() {
    let broker = start_durable_broker().await;
    {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        within(
            "queue.declare",
            ch.queue_declare("done".into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
        within(
            "confirm.select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        publish_confirmed(&ch, "", "done", b"first", 2).await;
        publish_confirmed(&ch, "", "done", b"second", 2).await;
        let m = within(
            "basic.get",
            ch.basic_get("done".into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(m.delivery.data, b"first");
        m.delivery.acker.ack(Default::default()).await.unwrap();
        // A synchronous round trip so the ack has been processed.
        within(
            "passive declare",
            ch.queue_declare("done".into(), passive(), FieldTable::default()),
        )
        .await
        .unwrap();
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = within(
        "passive declare",
        ch.queue_declare("done".into(), passive(), FieldTable::default()),
    )
    .await
    .unwrap();
    assert_eq!(q.message_count(), 1);
    let m = within(
        "basic.get",
        ch.basic_get("done".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(m.delivery.data, b"second");
}

/// Users, vhosts and permissions changed at runtime are stored and come
/// back after a restart; the configuration seeds them on first boot only
/// (a deleted `guest` stays deleted). A deleted vhost's durable queue is
/// gone with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_users_vhosts_and_permissions_survive_restart() {
    use warren_core::access::{PermissionSpec, VhostMeta};
    use warren_core::password::Password;
    let broker = start_durable_broker().await;
    {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        within(
            "queue.declare",
            ch.queue_declare("in-root".into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let b = &broker.broker;
    b.put_vhost(VhostMeta {
        name: "ops-vhost".into(),
        description: "for ops".into(),
        tags: vec!["a".into()],
        default_queue_type: String::new(),
        limits: Default::default(),
    });
    b.put_vhost(VhostMeta {
        name: "doomed".into(),
        ..VhostMeta::default()
    });
    assert!(b.put_user(
        "ops",
        Some(Password::Plain("s3cret".into())),
        vec!["monitoring".into()]
    ));
    b.put_permissions(PermissionSpec::all("ops", "ops-vhost"))
        .unwrap();
    b.put_permissions(PermissionSpec::all("ops", "doomed"))
        .unwrap();
    let url = |addr: std::net::SocketAddr, v: &str| format!("amqp://ops:s3cret@{addr}/{v}");
    {
        let conn = warren_tests::lapin_util::connect_url(&url(broker.addr, "doomed")).await;
        let ch = channel(&conn).await;
        within(
            "queue.declare",
            ch.queue_declare("in-doomed".into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    b.delete_vhost("doomed").unwrap();
    b.delete_user("guest").unwrap();
    let broker = broker.restart().await;
    let b = &broker.broker;
    assert!(b.access.user("guest").is_none(), "guest was seeded again");
    let ops = b.access.user("ops").unwrap();
    assert_eq!(ops.tags, ["monitoring"]);
    assert!(b.vhost("doomed").is_none());
    assert_eq!(b.vhost("ops-vhost").unwrap().meta().description, "for ops");
    assert_eq!(b.access.permission_specs(Some("ops"), None).len(), 1);
    // The durable queue of "/" is still there; guest cannot log in.
    assert!(b.vhost("/").unwrap().queue(b"in-root").is_some());
    let conn = warren_tests::lapin_util::connect_url(&url(broker.addr, "ops-vhost")).await;
    let ch = channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare("fresh".into(), durable(), FieldTable::default()),
    )
    .await
    .unwrap();
    within("connection.close", conn.close(200, "OK".into()))
        .await
        .unwrap();
    let refused =
        lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default()).await;
    assert!(refused.is_err(), "guest could still log in");
}

/// Publishes one persistent message with the given expiration and body,
/// waiting for its confirm.
async fn publish_expiring(ch: &lapin::Channel, queue: &str, body: &[u8], expiration: Option<&str>) {
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(e) = expiration {
        props = props.with_expiration(e.into());
    }
    publish_acked(ch, "", queue, body, props).await;
}

/// A recovered message keeps the deadline it was published with (its
/// clock does not restart with the broker), and a queue's byte limit
/// counts recovered messages' bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_messages_keep_their_deadlines_and_count_their_bytes() {
    let broker = start_durable_broker().await;
    let mut limited = FieldTable::default();
    limited.insert(
        "x-max-length-bytes".into(),
        lapin::types::AMQPValue::LongLongInt(3000),
    );
    let published;
    {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        for (q, args) in [("ttl", FieldTable::default()), ("bytes", limited.clone())] {
            declare_queue_with(&ch, q, true, args).await;
        }
        publish_expiring(&ch, "ttl", b"short", Some("1500")).await;
        // The broker stamped the deadline before it confirmed.
        published = std::time::Instant::now();
        publish_expiring(&ch, "ttl", b"long", Some("600000")).await;
        for body in [b"a", b"b"] {
            publish_expiring(&ch, "bytes", &body.repeat(1000), None).await;
        }
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    // Two more bodies of 1000 bytes: with the recovered 2000 counted, the
    // limit of 3000 drops the oldest ("a") to take the fourth.
    for body in [b"c", b"d"] {
        publish_expiring(&ch, "bytes", &body.repeat(1000), None).await;
    }
    let left: Vec<u8> = drain_bodies(&ch, "bytes", 5)
        .await
        .iter()
        .map(|b| b.as_bytes()[0])
        .collect();
    assert_eq!(
        left, b"bcd",
        "the byte limit did not count recovered bodies"
    );
    // The short message's deadline passes 1.5 s after it was published,
    // restart or not; the head expires then, the long one stays.
    let deadline = published + std::time::Duration::from_millis(1502);
    tokio::time::sleep_until(deadline.into()).await;
    let got = within(
        "basic.get",
        ch.basic_get("ttl".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .map(|m| m.delivery.data);
    assert_eq!(
        got.as_deref(),
        Some(&b"long"[..]),
        "the expired message came back"
    );
    within("connection.close", conn.close(200, "OK".into()))
        .await
        .unwrap();
}

/// A quorum queue's delivery count survives a restart: a message returned
/// twice before it comes back with `x-delivery-count` 2 after, as in
/// RabbitMQ, where the count lives in the queue's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queues_delivery_count_survives_a_restart() {
    use lapin::options::BasicNackOptions;
    use lapin::types::AMQPValue;
    let broker = start_durable_broker().await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(10));
    let count = |m: &lapin::message::BasicGetMessage| -> Option<i64> {
        let h = m.delivery.properties.headers().as_ref()?;
        match h.inner().get("x-delivery-count")? {
            AMQPValue::LongLongInt(n) => Some(*n),
            AMQPValue::LongInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortInt(n) => Some(i64::from(*n)),
            other => panic!("x-delivery-count is {other:?}"),
        }
    };
    {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        declare_queue_with(&ch, "qq", true, args).await;
        publish_expiring(&ch, "qq", b"poison", None).await;
        for returned in 0..2 {
            let m = within(
                "basic.get",
                ch.basic_get("qq".into(), BasicGetOptions { no_ack: false }),
            )
            .await
            .unwrap()
            .expect("the message");
            assert_eq!(count(&m).unwrap_or(0), returned);
            within(
                "basic.nack",
                m.delivery.acker.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        }
        // A round trip: the nacks have been handled (and stored).
        within(
            "queue.declare",
            ch.queue_declare("qq".into(), passive(), FieldTable::default()),
        )
        .await
        .unwrap();
        within("connection.close", conn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let m = within(
        "basic.get",
        ch.basic_get("qq".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("the message survives");
    assert!(m.delivery.redelivered);
    assert_eq!(count(&m), Some(2), "the delivery count restarted");
    within("connection.close", conn.close(200, "OK".into()))
        .await
        .unwrap();
}
