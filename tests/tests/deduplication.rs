//! Message deduplication as the community plugin
//! `rabbitmq-message-deduplication` (v0.6.x) has it, against a real broker
//! on loopback with lapin: the `x-message-deduplication` exchange (routes
//! as fanout, a repeated `x-deduplication-header` id within its time to
//! live goes nowhere) and the queue argument (a message whose id the queue
//! holds is refused with `basic.nack`), and both across a restart.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use warren_tests::http::guest;
use warren_tests::lapin_util::{
    bind, channel, confirming_channel, connect, consume, declare_queue_with, drain_bodies,
    expect_amqp_error, next_delivery, within,
};
use warren_tests::{start_broker, start_durable_broker};

const DEDUP: &str = "x-message-deduplication";

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A message with this id (and optionally its own `x-cache-ttl`).
fn with_id(id: &str, ttl_ms: Option<i64>) -> BasicProperties {
    let mut headers = vec![("x-deduplication-header", text(id))];
    if let Some(ms) = ttl_ms {
        headers.push(("x-cache-ttl", AMQPValue::LongLongInt(ms)));
    }
    BasicProperties::default()
        .with_headers(table(&headers))
        .with_delivery_mode(2)
}

async fn declare_dedup_exchange(
    ch: &Channel,
    name: &str,
    durable: bool,
    arguments: FieldTable,
) -> lapin::Result<()> {
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.into(),
            ExchangeKind::Custom(DEDUP.to_string()),
            ExchangeDeclareOptions {
                durable,
                ..Default::default()
            },
            arguments,
        ),
    )
    .await
}

/// Publishes and waits for the confirm, so what was routed is queued.
async fn publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &str,
    props: BasicProperties,
    mandatory: bool,
) -> Confirmation {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body.as_bytes(),
            props,
        ),
    )
    .await
    .unwrap();
    within("confirm", confirm).await.unwrap()
}

/// Takes every message out of `queue` (no-ack): the bodies.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    // Bounded: no test here publishes more than a few messages.
    drain_bodies(ch, queue, 1000).await
}

fn size(n: i64) -> (&'static str, AMQPValue) {
    ("x-cache-size", AMQPValue::LongLongInt(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_routes_an_id_once_to_every_bound_queue() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    declare_dedup_exchange(&ch, "dedup", false, table(&[size(100)]))
        .await
        .unwrap();
    for q in ["d1", "d2"] {
        declare_queue_with(&ch, q, false, FieldTable::default()).await;
        // Fanout: the binding keys do not matter.
        bind(&ch, q, "dedup", q).await.unwrap();
    }
    for (body, id) in [("a", "1"), ("a-again", "1"), ("b", "2"), ("a-more", "1")] {
        let c = publish(&ch, "dedup", "any", body, with_id(id, None), false).await;
        assert!(c.is_ack(), "{body}: {c:?}");
    }
    // No id: routed every time.
    for body in ["plain1", "plain2"] {
        publish(&ch, "dedup", "", body, BasicProperties::default(), false).await;
    }
    for q in ["d1", "d2"] {
        assert_eq!(drain(&ch, q).await, ["a", "b", "plain1", "plain2"], "{q}");
    }
    // A duplicate published mandatory goes nowhere: basic.return, then ack.
    let c = publish(&ch, "dedup", "k", "dup", with_id("1", None), true).await;
    let returned = c.take_message().expect("a duplicate comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    within("close", conn.close(200, "OK".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_routed_again_after_its_ttl() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    let ttl = ("x-cache-ttl", AMQPValue::LongInt(300));
    declare_dedup_exchange(&ch, "ttl", false, table(&[size(10), ttl]))
        .await
        .unwrap();
    declare_queue_with(&ch, "tq", false, FieldTable::default()).await;
    bind(&ch, "tq", "ttl", "").await.unwrap();
    // The exchange's ttl, then a message's own (shorter) x-cache-ttl.
    for (id, own, ms) in [("e", None, 300), ("m", Some(150), 150)] {
        let first = Instant::now();
        publish(&ch, "ttl", "", "first", with_id(id, own), false).await;
        publish(&ch, "ttl", "", "dup", with_id(id, own), false).await;
        assert_eq!(drain(&ch, "tq").await, ["first"]);
        // Republish until the id has expired (the broker's tick runs the
        // cache's clock every 100 ms), within a bound.
        let mut routed_after = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            publish(&ch, "ttl", "", "again", with_id(id, own), false).await;
            if !drain(&ch, "tq").await.is_empty() {
                routed_after = Some(first.elapsed());
                break;
            }
        }
        let after = routed_after.expect("routed again after the ttl");
        assert!(after >= Duration::from_millis(ms), "{id}: after {after:?}");
    }
    within("close", conn.close(200, "OK".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_refuses_arguments_as_the_plugin_does() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let cases: [(FieldTable, String); 3] = [
        (
            FieldTable::default(),
            format!(
                "PRECONDITION_FAILED - Missing or invalid argument, {}'x-cache-size' must be an integer greater than 0",
                " ".repeat(10)
            ),
        ),
        (
            table(&[size(5), ("x-cache-ttl", text("bar"))]),
            format!(
                "PRECONDITION_FAILED - Invalid argument, {}'x-cache-ttl' must be an integer greater than 0",
                " ".repeat(22)
            ),
        ),
        (
            table(&[size(5), ("x-cache-persistence", text("tape"))]),
            format!(
                "PRECONDITION_FAILED - Invalid argument, {}'x-cache-persistence' must be either 'disk' or 'memory'",
                " ".repeat(13)
            ),
        ),
    ];
    for (args, want) in cases {
        let ch = channel(&conn).await;
        let got = expect_amqp_error(declare_dedup_exchange(&ch, "bad", false, args).await, 406);
        assert_eq!(got, want);
    }
    let ch = channel(&conn).await;
    let ok = table(&[
        ("x-cache-size", text("10")),
        ("x-cache-ttl", text("1000")),
        ("x-cache-persistence", text("disk")),
    ]);
    declare_dedup_exchange(&ch, "good", false, ok)
        .await
        .unwrap();
    within("close", conn.close(200, "OK".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduplicating_queue_nacks_an_id_it_holds_until_acked() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    let dedup = table(&[(DEDUP, AMQPValue::Boolean(true))]);
    declare_queue_with(&ch, "work", false, dedup).await;
    assert!(
        publish(&ch, "", "work", "job", with_id("j1", None), false)
            .await
            .is_ack()
    );
    // The id is in the queue: refused with basic.nack (and not returned,
    // though mandatory: it was routed).
    let c = publish(&ch, "", "work", "job-again", with_id("j1", None), true).await;
    assert!(c.is_nack(), "{c:?}");
    // A real consumer takes it; until the ack the id stays.
    let consumer_ch = channel(&conn).await;
    let mut consumer = consume(
        &consumer_ch,
        "work",
        "worker",
        BasicConsumeOptions::default(),
    )
    .await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"job");
    assert!(
        publish(&ch, "", "work", "job-again", with_id("j1", None), false)
            .await
            .is_nack()
    );
    within("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    // basic.ack is asynchronous: the next publish on another channel may
    // race it, so wait (bounded) for the id to leave the queue.
    let mut accepted = false;
    for _ in 0..200 {
        if publish(&ch, "", "work", "job2", with_id("j1", None), false)
            .await
            .is_ack()
        {
            accepted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(accepted, "the acked message's id was freed");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"job2");
    within("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within("close", conn.close(200, "OK".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_and_queued_ids_survive_a_restart() {
    let broker = start_durable_broker().await;
    let dedup_args = || table(&[(DEDUP, AMQPValue::Boolean(true))]);
    let ex_args = || {
        table(&[
            size(100),
            ("x-cache-ttl", AMQPValue::LongInt(60_000)),
            ("x-cache-persistence", text("disk")),
        ])
    };
    {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        declare_dedup_exchange(&ch, "dx", true, ex_args())
            .await
            .unwrap();
        declare_queue_with(&ch, "dq", true, dedup_args()).await;
        declare_queue_with(&ch, "fan", true, FieldTable::default()).await;
        bind(&ch, "fan", "dx", "").await.unwrap();
        assert!(
            publish(&ch, "", "dq", "kept", with_id("p1", None), false)
                .await
                .is_ack()
        );
        publish(&ch, "dx", "", "x1", with_id("x1", None), false).await;
        within("close", conn.close(200, "OK".into())).await.unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    // Both came back with their arguments (a redeclare with them is fine,
    // and the exchange still validates as itself).
    declare_dedup_exchange(&ch, "dx", true, ex_args())
        .await
        .unwrap();
    declare_queue_with(&ch, "dq", true, dedup_args()).await;
    // The recovered message's id is known again.
    assert!(
        publish(&ch, "", "dq", "dup", with_id("p1", None), false)
            .await
            .is_nack()
    );
    assert!(
        publish(&ch, "", "dq", "new", with_id("p2", None), false)
            .await
            .is_ack()
    );
    assert_eq!(drain(&ch, "dq").await, ["kept", "new"]);
    // The exchange's disk cache came back: an id seen before the restart
    // is not routed again, a new one is, once.
    for body in ["x1", "y1", "y1-again"] {
        let id = if body == "x1" { "x1" } else { "y1" };
        publish(&ch, "dx", "", body, with_id(id, None), false).await;
    }
    assert_eq!(drain(&ch, "fan").await, ["x1", "y1"]);
    within("close", conn.close(200, "OK".into())).await.unwrap();
}

/// How many messages `queue` holds (a passive declare).
async fn count(ch: &Channel, queue: &str) -> u32 {
    within(
        "queue.declare passive",
        ch.queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap()
    .message_count()
}

/// A transient message with this id: its queue copy does not survive a
/// restart, so only the exchange's cache can tell the id again.
fn transient_with_id(id: &str) -> BasicProperties {
    with_id(id, None).with_delivery_mode(1)
}

/// Declares the durable exchange `name` (with `arguments`) bound to the
/// durable queue `queue`.
async fn dedup_topology(ch: &Channel, name: &str, queue: &str, arguments: FieldTable) {
    declare_dedup_exchange(ch, name, true, arguments)
        .await
        .unwrap();
    declare_queue_with(ch, queue, true, FieldTable::default()).await;
    bind(ch, queue, name, "").await.unwrap();
}

/// After a restart: `id` is not routed through `exchange` (mandatory: it
/// comes back NO_ROUTE, and `queue` stays as it was), another id is.
async fn assert_known_after_restart(ch: &Channel, exchange: &str, queue: &str, id: &str) {
    let before = count(ch, queue).await;
    let c = publish(ch, exchange, "", "again", transient_with_id(id), true).await;
    assert!(c.is_ack(), "{c:?}");
    let returned = c.take_message().expect("the known id comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(count(ch, queue).await, before);
    let c = publish(ch, exchange, "", "other", transient_with_id("other"), true).await;
    assert!(c.take_message().is_none(), "a new id is routed");
    assert_eq!(count(ch, queue).await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_cache_keeps_its_ids_across_a_restart_and_a_memory_cache_does_not() {
    let broker = start_durable_broker().await;
    let args = |persistence: &str| {
        table(&[
            size(10),
            ("x-cache-ttl", AMQPValue::LongInt(600_000)),
            ("x-cache-persistence", text(persistence)),
        ])
    };
    {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        dedup_topology(&ch, "disk", "disk-q", args("disk")).await;
        dedup_topology(&ch, "mem", "mem-q", args("memory")).await;
        for ex in ["disk", "mem"] {
            // Confirmed: for the disk cache, after the flush that holds
            // the id (the message itself is transient).
            let c = publish(&ch, ex, "", "first", transient_with_id("a"), true).await;
            assert!(c.is_ack() && c.take_message().is_none());
        }
        within("close", conn.close(200, "OK".into())).await.unwrap();
    }
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    // The transient copies are gone with the restart.
    assert_eq!(count(&ch, "disk-q").await, 0);
    assert_known_after_restart(&ch, "disk", "disk-q", "a").await;
    // The memory cache forgot its ids: "a" is routed again.
    let c = publish(&ch, "mem", "", "again", transient_with_id("a"), true).await;
    assert!(c.take_message().is_none());
    assert_eq!(count(&ch, "mem-q").await, 1);
    // Deleting the exchange deletes its ids: one declared again with the
    // same name starts empty, after another restart too.
    within(
        "exchange.delete",
        ch.exchange_delete("disk".into(), Default::default()),
    )
    .await
    .unwrap();
    dedup_topology(&ch, "disk", "disk-q", args("disk")).await;
    within("close", conn.close(200, "OK".into())).await.unwrap();
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    let c = publish(&ch, "disk", "", "fresh", transient_with_id("a"), true).await;
    assert!(
        c.take_message().is_none(),
        "the deleted exchange's ids are gone"
    );
    within("close", conn.close(200, "OK".into())).await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_set_the_plugins_keys_and_win_over_arguments() {
    let broker = start_durable_broker().await;
    let api = guest(&broker);
    // The plugin's validation, with its words.
    let r = api
        .put(
            "/api/policies/%2F/bad",
            r#"{"pattern":".*","definition":{"x-cache-size":"100"}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Validation failed\n\n'x-cache-size' must be an integer greater than 0, got <<\"100\">>\n"
    );
    // An exchange declared with a memory cache of 10 ids...
    {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        dedup_topology(&ch, "px", "pq", table(&[size(10)])).await;
        within("close", conn.close(200, "OK".into())).await.unwrap();
    }
    // ... runs with the policy's disk cache of 2 ids.
    let r = api
        .put(
            "/api/policies/%2F/dedup",
            r#"{"pattern":"^px$","apply-to":"exchanges","definition":{"x-cache-size":2,"x-cache-persistence":"disk"}}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        for id in ["a", "b", "c"] {
            publish(&ch, "px", "", id, transient_with_id(id), false).await;
        }
        // "a" was evicted by the policy's size; "c" is known.
        let c = publish(&ch, "px", "", "c", transient_with_id("c"), true).await;
        assert!(c.take_message().is_some());
        within("close", conn.close(200, "OK".into())).await.unwrap();
    }
    // The plugin's `cache_info` in the exchange's API object.
    let x = api.get("/api/exchanges/%2F/px").await.json();
    let info = &x["cache_info"];
    assert_eq!(info["entries"], 2, "{x}");
    assert_eq!(info["size"], 2, "{x}");
    assert!(info["bytes"].as_u64().is_some_and(|b| b > 0), "{x}");
    assert_eq!(info["nodes"].as_array().map(Vec::len), Some(1), "{x}");
    let listed = api.get("/api/exchanges/%2F").await.json();
    let plain = listed
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == "amq.direct"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(plain["type"], "direct", "{listed}");
    assert!(plain.get("cache_info").is_none(), "{plain}");
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    // The policy's disk cache came back with "b" and "c" ("a" was evicted).
    assert_known_after_restart(&ch, "px", "pq", "c").await;
    within("close", conn.close(200, "OK".into())).await.unwrap();
    broker.stop().await;
}
