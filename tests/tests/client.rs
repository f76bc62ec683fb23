//! End-to-end tests with the lapin client against an in-process broker:
//! publish, consume, get, acknowledgements, confirms, returns, QoS,
//! exclusive and auto-delete queues, server-sent cancels, heartbeats,
//! transactions, and the errors clients rely on (section 10 of
//! `shared/reference/rabbitmq-behaviour.md`).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use warren_tests::lapin_util::{
    channel, connect, connect_url, consume, declare, expect_amqp_error, next_delivery, next_within,
    within,
};
use warren_tests::start_broker;

/// Long enough for a delivery that is on its way to arrive, short enough to
/// keep the suite fast; used only to check that something does *not* happen.
const QUIET: Duration = Duration::from_millis(300);

async fn publish(ch: &lapin::Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_with(ch, exchange, key, body, BasicProperties::default()).await;
}

async fn publish_with(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    within(
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
}

async fn get(
    ch: &lapin::Channel,
    queue: &str,
    no_ack: bool,
) -> Option<lapin::message::BasicGetMessage> {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack }),
    )
    .await
    .unwrap()
}

/// The number of ready messages, by a passive declare on a fresh channel.
async fn ready_count(conn: &lapin::Connection, queue: &str) -> u32 {
    let ch = channel(conn).await;
    let q = within(
        "passive queue.declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let _ = ch.close(200, "OK".into()).await;
    q.message_count()
}

// ---------------------------------------------------------------------------
// Publish, consume, get, acknowledgements
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_consume_in_order_with_properties() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "hello").await;
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_correlation_id("c-1".into())
        .with_delivery_mode(2);
    for i in 0..3 {
        publish_with(&ch, "", "hello", format!("m{i}").as_bytes(), props.clone()).await;
    }
    let mut consumer = consume(&ch, "hello", "ctag", BasicConsumeOptions::default()).await;
    for i in 0..3u64 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, format!("m{i}").as_bytes());
        assert_eq!(
            d.delivery_tag,
            i + 1,
            "delivery tags start at 1 per channel"
        );
        assert!(!d.redelivered);
        assert_eq!(d.routing_key.as_str(), "hello");
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain")
        );
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|s| s.as_str()),
            Some("c-1")
        );
        assert_eq!(*d.properties.delivery_mode(), Some(2));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Acked messages are gone.
    assert_eq!(ready_count(&conn, "hello").await, 0);
    conn.close(200, "OK".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_spanning_many_frames_round_trips() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "big").await;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "big", &body).await;
    let got = get(&ch, "big", true).await.expect("a message");
    assert_eq!(got.delivery.data.len(), body.len());
    assert!(got.delivery.data == body, "body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_message_count_then_empty() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "g").await;
    publish(&ch, "", "g", b"a").await;
    publish(&ch, "", "g", b"b").await;
    let first = get(&ch, "g", false).await.expect("first message");
    assert_eq!(first.delivery.data, b"a");
    assert_eq!(first.message_count, 1, "messages left after this one");
    first
        .delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let second = get(&ch, "g", true).await.expect("second message");
    assert_eq!(second.delivery.data, b"b");
    assert_eq!(second.message_count, 0);
    assert!(get(&ch, "g", true).await.is_none(), "get-empty expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_redelivers_with_redelivered_set() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "n").await;
    publish(&ch, "", "n", b"retry me").await;
    let m = get(&ch, "n", false).await.unwrap();
    assert!(!m.delivery.redelivered);
    m.delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let again = get(&ch, "n", false).await.expect("requeued message");
    assert_eq!(again.delivery.data, b"retry me");
    assert!(again.delivery.redelivered, "redelivered must be true");
    // nack without requeue discards.
    again
        .delivery
        .acker
        .nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        })
        .await
        .unwrap();
    assert!(get(&ch, "n", true).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_requeues_everything_up_to_the_tag() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "nm").await;
    for b in [b"1", b"2", b"3"] {
        publish(&ch, "", "nm", b).await;
    }
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(get(&ch, "nm", false).await.unwrap().delivery.delivery_tag);
    }
    within(
        "basic.nack",
        ch.basic_nack(
            tags[1],
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .unwrap();
    // Tags 1 and 2 are back; 3 is still unacked.
    assert_eq!(ready_count(&conn, "nm").await, 2);
    let a = get(&ch, "nm", true).await.unwrap();
    let b = get(&ch, "nm", true).await.unwrap();
    assert!(a.delivery.redelivered && b.delivery.redelivered);
    let mut bodies = vec![a.delivery.data, b.delivery.data];
    bodies.sort();
    assert_eq!(bodies, vec![b"1".to_vec(), b"2".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_requeue_and_discard() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "r").await;
    publish(&ch, "", "r", b"x").await;
    let m = get(&ch, "r", false).await.unwrap();
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let m = get(&ch, "r", false).await.unwrap();
    assert!(m.delivery.redelivered);
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert!(
        get(&ch, "r", true).await.is_none(),
        "rejected message is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_when_the_channel_closes() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "u").await;
    publish(&ch, "", "u", b"keep").await;
    let mut consumer = consume(&ch, "u", "c", BasicConsumeOptions::default()).await;
    let d = next_delivery(&mut consumer).await;
    assert!(!d.redelivered);
    within("channel.close", ch.close(200, "OK".into()))
        .await
        .unwrap();
    let ch2 = channel(&conn).await;
    let m = get(&ch2, "u", true)
        .await
        .expect("requeued on channel close");
    assert_eq!(m.delivery.data, b"keep");
    assert!(m.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_when_the_connection_drops() {
    let broker = start_broker().await;
    let a = connect(&broker).await;
    let ch = channel(&a).await;
    declare(&ch, "drop").await;
    publish(&ch, "", "drop", b"keep").await;
    let m = get(&ch, "drop", false).await.unwrap();
    assert!(!m.delivery.redelivered);
    within("connection.close", a.close(200, "OK".into()))
        .await
        .unwrap();
    let b = connect(&broker).await;
    let ch = channel(&b).await;
    let m = get(&ch, "drop", true)
        .await
        .expect("requeued on disconnect");
    assert!(m.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_closes_the_channel_with_406() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "dbl").await;
    publish(&ch, "", "dbl", b"x").await;
    let m = get(&ch, "dbl", false).await.unwrap();
    let tag = m.delivery.delivery_tag;
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    // The 406 arrives asynchronously: the next synchronous call sees it.
    let err = within(
        "queue.declare",
        ch.queue_declare(
            "dbl".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(err, 406);
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
    );
    // The connection survives.
    let ch2 = channel(&conn).await;
    declare(&ch2, "dbl").await;
}

// ---------------------------------------------------------------------------
// Publisher confirms and returns
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_ack_every_publish() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "conf").await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    // One at a time.
    for i in 0..5 {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                "conf".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        let c = within("confirm", confirm).await.unwrap();
        assert!(c.is_ack(), "publish {i}: {c:?}");
    }
    // A burst, which the broker may confirm with multiple=true.
    let mut confirms = Vec::new();
    for i in 0..200 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                "conf".into(),
                BasicPublishOptions::default(),
                format!("burst {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    let returned = within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .unwrap();
    assert!(returned.is_empty());
    for (i, c) in confirms.into_iter().enumerate() {
        let c = within("confirm", c).await.unwrap();
        assert!(c.is_ack(), "burst publish {i}: {c:?}");
    }
    assert_eq!(ready_count(&conn, "conf").await, 205);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_312_before_the_ack() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "no-such-queue".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default().with_priority(3),
        ),
    )
    .await
    .unwrap();
    let c = within("confirm", confirm).await.unwrap();
    // An unroutable message is still acked (not nacked) by RabbitMQ.
    assert!(c.is_ack(), "{c:?}");
    // lapin attaches a return to the confirm only if it arrived first.
    let ret = c
        .take_message()
        .expect("basic.return must arrive before the confirm ack");
    assert_eq!(ret.reply_code, 312);
    assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(ret.delivery.data, b"lost");
    assert_eq!(ret.delivery.routing_key.as_str(), "no-such-queue");
    assert_eq!(*ret.delivery.properties.priority(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_mandatory_unroutable_is_dropped_and_acked() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "no-such-queue".into(),
            BasicPublishOptions::default(),
            b"dropped",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let c = within("confirm", confirm).await.unwrap();
    assert!(c.is_ack());
    assert!(c.take_message().is_none());
}

// ---------------------------------------------------------------------------
// QoS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_two_delivers_two_until_an_ack() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "qos").await;
    for i in 0..5 {
        publish(&ch, "", "qos", format!("{i}").as_bytes()).await;
    }
    within("basic.qos", ch.basic_qos(2, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = consume(&ch, "qos", "c", BasicConsumeOptions::default()).await;
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    assert_eq!(
        (first.data.as_slice(), second.data.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    // The broker's own count: three ready, so the third was not sent...
    assert_eq!(ready_count(&conn, "qos").await, 3);
    // ...and nothing more arrives while two are unacked.
    assert!(
        next_within(&mut consumer, QUIET).await.is_err(),
        "a third delivery arrived with prefetch 2"
    );
    first.acker.ack(BasicAckOptions::default()).await.unwrap();
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.data, b"2");
    assert!(
        next_within(&mut consumer, QUIET).await.is_err(),
        "only one ack, so only one more delivery"
    );
    assert_eq!(ready_count(&conn, "qos").await, 2);
}

// ---------------------------------------------------------------------------
// Exclusive and auto-delete queues, server-sent cancel
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection() {
    let broker = start_broker().await;
    let owner = connect(&broker).await;
    let och = channel(&owner).await;
    within(
        "queue.declare",
        och.queue_declare(
            "excl".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();

    let other = connect(&broker).await;
    let expected = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl' in vhost '/'. \
                    It could be originally declared on another connection or the exclusive property value \
                    does not match that of the original declaration.";
    // Declare, passive declare, consume and get from another connection: 405.
    let ch = channel(&other).await;
    let r = ch
        .queue_declare(
            "excl".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_eq!(expect_amqp_error(r, 405), expected);
    let ch = channel(&other).await;
    let r = ch
        .queue_declare(
            "excl".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_amqp_error(r, 405);
    let ch = channel(&other).await;
    let r = ch
        .basic_consume(
            "excl".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_amqp_error(r, 405);
    let ch = channel(&other).await;
    let r = ch
        .basic_get("excl".into(), BasicGetOptions::default())
        .await;
    expect_amqp_error(r, 405);
    assert!(other.status().connected(), "405 is a channel error");

    // The owner still uses it; when it goes, so does the queue.
    publish(&och, "", "excl", b"mine").await;
    assert!(get(&och, "excl", true).await.is_some());
    within("connection.close", owner.close(200, "OK".into()))
        .await
        .unwrap();
    let ch = channel(&other).await;
    let r = ch
        .queue_declare(
            "excl".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_error(r, 404),
        "NOT_FOUND - no queue 'excl' in vhost '/'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare(
            "ad".into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let _c1 = consume(&ch, "ad", "c1", BasicConsumeOptions::default()).await;
    let _c2 = consume(&ch, "ad", "c2", BasicConsumeOptions::default()).await;
    within(
        "basic.cancel",
        ch.basic_cancel("c1".into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    // One consumer left: the queue stays.
    assert_eq!(ready_count(&conn, "ad").await, 0);
    within(
        "basic.cancel",
        ch.basic_cancel("c2".into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    let probe = channel(&conn).await;
    let r = probe
        .queue_declare(
            "ad".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_amqp_error(r, 404),
        "NOT_FOUND - no queue 'ad' in vhost '/'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_consumed_queue_cancels_the_consumer() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "doomed").await;
    let mut consumer = consume(&ch, "doomed", "watcher", BasicConsumeOptions::default()).await;
    let admin = channel(&conn).await;
    let count = within(
        "queue.delete",
        admin.queue_delete("doomed".into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(count, 0);
    // The server's basic.cancel ends the consumer stream.
    match next_within(&mut consumer, Duration::from_secs(5)).await {
        Ok(None) => {}
        other => panic!("expected the consumer to be cancelled, got {other:?}"),
    }
    // The channel is still open and usable.
    assert!(ch.status().connected(), "channel closed by the cancel");
    declare(&ch, "after").await;
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_with_one_second_heartbeat_survives_idling() {
    let broker = start_broker().await;
    let conn = connect_url(&format!("{}?heartbeat=1", broker.url())).await;
    assert_eq!(conn.configuration().heartbeat(), 1);
    let ch = channel(&conn).await;
    declare(&ch, "hb").await;
    // Idle for four intervals: this sleep is the behaviour under test, not
    // a synchronisation. The broker closes silent peers after about two.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(conn.status().connected(), "connection dropped while idle");
    publish(&ch, "", "hb", b"still here").await;
    let m = get(&ch, "hb", true).await.expect("message after idling");
    assert_eq!(m.delivery.data, b"still here");
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_rollback_discards_and_commit_enqueues() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "tx").await;
    within("tx.select", ch.tx_select()).await.unwrap();
    publish(&ch, "", "tx", b"rolled back").await;
    assert_eq!(
        ready_count(&conn, "tx").await,
        0,
        "not visible before commit"
    );
    within("tx.rollback", ch.tx_rollback()).await.unwrap();
    assert_eq!(ready_count(&conn, "tx").await, 0);
    publish(&ch, "", "tx", b"committed").await;
    within("tx.commit", ch.tx_commit()).await.unwrap();
    assert_eq!(ready_count(&conn, "tx").await, 1);
    let reader = channel(&conn).await;
    let m = get(&reader, "tx", true).await.unwrap();
    assert_eq!(m.delivery.data, b"committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_acks_take_effect_on_commit_only() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let setup = channel(&conn).await;
    declare(&setup, "txa").await;
    publish(&setup, "", "txa", b"m").await;
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select()).await.unwrap();
    let m = get(&ch, "txa", false).await.unwrap();
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    within("tx.rollback", ch.tx_rollback()).await.unwrap();
    // Rolled back: still unacked, so closing the channel requeues it.
    within("channel.close", ch.close(200, "OK".into()))
        .await
        .unwrap();
    assert_eq!(ready_count(&conn, "txa").await, 1);
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select()).await.unwrap();
    let m = get(&ch, "txa", false).await.unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    within("tx.commit", ch.tx_commit()).await.unwrap();
    within("channel.close", ch.close(200, "OK".into()))
        .await
        .unwrap();
    assert_eq!(
        ready_count(&conn, "txa").await,
        0,
        "committed ack removed it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_on_a_non_transactional_channel_is_406() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let text = expect_amqp_error(within("tx.commit", ch.tx_commit()).await, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_from_confirm_to_tx_is_406() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let text = expect_amqp_error(within("tx.select", ch.tx_select()).await, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );
}

// ---------------------------------------------------------------------------
// Errors clients rely on
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404_then_a_new_channel_works() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let r = within(
        "passive declare",
        ch.queue_declare(
            "missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(r, 404),
        "NOT_FOUND - no queue 'missing' in vhost '/'"
    );
    assert!(!ch.status().connected(), "404 must close the channel");
    assert!(conn.status().connected(), "404 is a channel error");
    let ch2 = channel(&conn).await;
    declare(&ch2, "missing").await;
    publish(&ch2, "", "missing", b"now it exists").await;
    assert!(get(&ch2, "missing", true).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_durable_is_406_with_rabbitmq_text() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "q1").await;
    let r = within(
        "queue.declare",
        ch.queue_declare(
            "q1".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(r, 406),
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q1' in vhost '/': \
         received 'true' but current is 'false'"
    );
    let ch2 = channel(&conn).await;
    // An identical redeclare is fine.
    declare(&ch2, "q1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_x_arg_is_406() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    within(
        "queue.declare",
        ch.queue_declare("q2".into(), QueueDeclareOptions::default(), args),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(20));
    let r = within(
        "queue.declare",
        ch.queue_declare("q2".into(), QueueDeclareOptions::default(), args),
    )
    .await;
    let text = expect_amqp_error(r, 406);
    assert!(
        text.starts_with(
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q2' in vhost '/'"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_redeclare_with_different_type_is_406() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "exchange.declare",
        ch.exchange_declare(
            "ex".into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let r = within(
        "exchange.declare",
        ch.exchange_declare(
            "ex".into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(r, 406),
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'ex' in vhost '/': \
         received 'fanout' but current is 'direct'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_consume_on_missing_queue_are_404() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let r = within(
        "basic.get",
        ch.basic_get("nowhere".into(), BasicGetOptions::default()),
    )
    .await;
    assert_eq!(
        expect_amqp_error(r, 404),
        "NOT_FOUND - no queue 'nowhere' in vhost '/'"
    );
    let ch = channel(&conn).await;
    let r = within(
        "basic.consume",
        ch.basic_consume(
            "nowhere".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    expect_amqp_error(r, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_missing_queue_is_ok_and_declaring_amq_names_is_403() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let n = within(
        "queue.delete",
        ch.queue_delete("never-existed".into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    let r = within(
        "queue.declare",
        ch.queue_declare(
            "amq.mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    expect_amqp_error(r, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue_has_rabbitmq_shape() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = within(
        "queue.declare",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let name = q.name().as_str();
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!(name.len(), "amq.gen-".len() + 22, "{name}");
    assert!(
        name["amq.gen-".len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{name}"
    );
}
