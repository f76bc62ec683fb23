//! The plugin exchange types RabbitMQ users install everywhere, against a
//! real broker on loopback: `x-consistent-hash` (the bundled
//! `rabbitmq_consistent_hash_exchange`) and `x-random`
//! (`rabbitmq_random_exchange`), declared and used with lapin, through the
//! management API, and across a restart.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::{HashMap, HashSet};

use lapin::options::{BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{Value, json};
use warren_tests::http::Http;
use warren_tests::lapin_util::{
    bind, channel, confirming_channel, connect, declare_queue_with, drain_bodies,
    expect_amqp_error, within,
};
use warren_tests::{start_broker, start_durable_broker};

fn custom(kind: &str) -> ExchangeKind {
    ExchangeKind::Custom(kind.to_string())
}

fn args(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    t
}

async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: &str,
    durable: bool,
    arguments: FieldTable,
) -> lapin::Result<()> {
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.into(),
            custom(kind),
            ExchangeDeclareOptions {
                durable,
                ..Default::default()
            },
            arguments,
        ),
    )
    .await
}

async fn declare_queue(ch: &Channel, name: &str, durable: bool) {
    declare_queue_with(ch, name, durable, FieldTable::default()).await;
}

/// Publishes with confirms and waits for each confirm, so what was routed
/// is in its queue when this returns.
async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
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
    within("confirm", confirm).await.unwrap();
}

/// Takes every message out of `queues`: the bodies each held.
async fn drain(ch: &Channel, queues: &[String]) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    for q in queues {
        // Bounded: no test here publishes more than 10,000 messages.
        let bodies = drain_bodies(ch, q, 10_000).await;
        out.insert(q.clone(), bodies);
    }
    out
}

/// Which queue each body is in, checking that each is in exactly one.
fn placement(drained: &HashMap<String, Vec<String>>) -> HashMap<String, String> {
    let mut at = HashMap::new();
    for (q, bodies) in drained {
        for b in bodies {
            assert!(
                at.insert(b.clone(), q.clone()).is_none(),
                "message {b} is in two queues"
            );
        }
    }
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_routes_each_message_to_one_queue_by_its_key() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    declare_exchange(
        &ch,
        "hashed",
        "x-consistent-hash",
        false,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queues: Vec<String> = (0..5).map(|i| format!("part-{i}")).collect();
    for q in &queues {
        declare_queue(&ch, q, false).await;
        bind(&ch, q, "hashed", "1").await.unwrap();
    }
    // 500 distinct keys, then one key 20 times.
    for i in 0..500 {
        publish(
            &ch,
            "hashed",
            &format!("order-{i}"),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    for i in 0..20 {
        publish(
            &ch,
            "hashed",
            "order-7",
            format!("again{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let drained = drain(&ch, &queues).await;
    let at = placement(&drained);
    assert_eq!(at.len(), 520, "every message routed exactly once");
    assert!(
        drained.values().all(|b| b.len() > 50),
        "spread: {:?}",
        drained
            .iter()
            .map(|(q, b)| (q, b.len()))
            .collect::<Vec<_>>()
    );
    let home = &at["m7"];
    assert!((0..20).all(|i| &at[&format!("again{i}")] == home));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_weights_and_exchange_destinations() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    declare_exchange(
        &ch,
        "weighted",
        "x-consistent-hash",
        false,
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_queue(&ch, "light", false).await;
    declare_queue(&ch, "heavy", false).await;
    bind(&ch, "light", "weighted", "10").await.unwrap();
    // An exchange-to-exchange binding with twice the weight.
    within(
        "exchange.declare",
        ch.exchange_declare(
            "fan".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    bind(&ch, "heavy", "fan", "").await.unwrap();
    within(
        "exchange.bind",
        ch.exchange_bind(
            "fan".into(),
            "weighted".into(),
            "20".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for i in 0..1500 {
        publish(
            &ch,
            "weighted",
            &format!("k{i}"),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let drained = drain(&ch, &["light".to_string(), "heavy".to_string()]).await;
    assert_eq!(placement(&drained).len(), 1500);
    let ratio = drained["heavy"].len() as f64 / drained["light"].len() as f64;
    assert!((1.6..2.4).contains(&ratio), "heavy:light = {ratio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_a_header() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    declare_exchange(
        &ch,
        "by-user",
        "x-consistent-hash",
        false,
        args(&[("hash-header", "user")]),
    )
    .await
    .unwrap();
    let queues: Vec<String> = (0..4).map(|i| format!("u{i}")).collect();
    for q in &queues {
        declare_queue(&ch, q, false).await;
        bind(&ch, q, "by-user", "1").await.unwrap();
    }
    // The routing key varies; the header decides.
    for i in 0..200 {
        let mut h = FieldTable::default();
        h.insert(
            "user".into(),
            AMQPValue::LongString(format!("user-{}", i % 40).into()),
        );
        let props = BasicProperties::default().with_headers(h);
        publish(
            &ch,
            "by-user",
            &format!("rk{i}"),
            format!("{}:{i}", i % 40).as_bytes(),
            props,
        )
        .await;
    }
    // Without the header: all to one queue.
    for i in 0..30 {
        publish(
            &ch,
            "by-user",
            &format!("rk{i}"),
            format!("none:{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let drained = drain(&ch, &queues).await;
    let at = placement(&drained);
    assert_eq!(at.len(), 230);
    let mut home: HashMap<String, String> = HashMap::new();
    for (body, q) in &at {
        let user = body.split(':').next().unwrap().to_string();
        let prev = home.entry(user.clone()).or_insert_with(|| q.clone());
        assert_eq!(prev, q, "messages of {user} went to two queues");
    }
    assert!(drained.values().filter(|b| !b.is_empty()).count() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_a_property_through_the_api_and_amqp() {
    let broker = start_broker().await;
    let api = Http::new(broker.http, "guest", "guest");
    let r = api
        .put(
            "/api/exchanges/%2f/by-id",
            r#"{"type":"x-consistent-hash","arguments":{"hash-property":"message_id"}}"#,
        )
        .await;
    assert!(r.status == 201 || r.status == 204, "{}", r.status);
    for i in 0..4 {
        api.put(&format!("/api/queues/%2f/id{i}"), "{}").await;
        let r = api
            .post(
                &format!("/api/bindings/%2f/e/by-id/q/id{i}"),
                r#"{"routing_key":"1"}"#,
            )
            .await;
        assert_eq!(r.status, 201);
    }
    for i in 0..120 {
        let body = json!({
            "properties": {"message_id": format!("id-{}", i % 30)},
            "routing_key": format!("rk{i}"),
            "payload": format!("{}:{i}", i % 30),
            "payload_encoding": "string",
        });
        let r = api
            .post("/api/exchanges/%2f/by-id/publish", &body.to_string())
            .await;
        assert_eq!(r.json()["routed"], true);
    }
    // And over AMQP: the same ids land where the API's did.
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    for i in 0..120 {
        publish(
            &ch,
            "by-id",
            &format!("other-rk{i}"),
            format!("{}:amqp{i}", i % 30).as_bytes(),
            BasicProperties::default().with_message_id(format!("id-{}", i % 30).into()),
        )
        .await;
    }
    let queues: Vec<String> = (0..4).map(|i| format!("id{i}")).collect();
    let drained = drain(&ch, &queues).await;
    let at = placement(&drained);
    assert_eq!(at.len(), 240);
    let mut home: HashMap<String, String> = HashMap::new();
    for (body, q) in &at {
        let id = body.split(':').next().unwrap().to_string();
        assert_eq!(home.entry(id).or_insert_with(|| q.clone()), q);
    }
    assert!(drained.values().filter(|b| !b.is_empty()).count() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_refuses_what_the_plugin_refuses() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let both = args(&[("hash-header", "h"), ("hash-property", "message_id")]);
    let ch = channel(&conn).await;
    let text = expect_amqp_error(
        declare_exchange(&ch, "x1", "x-consistent-hash", false, both).await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"
    );
    let ch = channel(&conn).await;
    let text = expect_amqp_error(
        declare_exchange(
            &ch,
            "x1",
            "x-consistent-hash",
            false,
            args(&[("hash-property", "app_id")]),
        )
        .await,
        406,
    );
    assert_eq!(text, "PRECONDITION_FAILED - Unsupported property: app_id");

    let ch = channel(&conn).await;
    declare_exchange(
        &ch,
        "x2",
        "x-consistent-hash",
        false,
        args(&[("hash-header", "h")]),
    )
    .await
    .unwrap();
    // Redeclaring compares only alternate-exchange among the arguments, as
    // RabbitMQ does for every type; the type itself must match.
    declare_exchange(&ch, "x2", "x-consistent-hash", false, FieldTable::default())
        .await
        .unwrap();
    let text = expect_amqp_error(
        declare_exchange(&ch, "x2", "x-random", false, FieldTable::default()).await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x2' in vhost '/': received 'x-random' but current is 'x-consistent-hash'"
    );
    for (key, expected) in [
        (
            "abc",
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>",
        ),
        (
            "",
            "PRECONDITION_FAILED - The binding key must be an integer: <<>>",
        ),
        (
            "0",
            "PRECONDITION_FAILED - The binding key must be greater than 0",
        ),
        (
            "-3",
            "PRECONDITION_FAILED - The binding key must be greater than 0",
        ),
    ] {
        let ch = channel(&conn).await;
        declare_queue(&ch, "target", false).await;
        let text = expect_amqp_error(bind(&ch, "target", "x2", key).await, 406);
        assert_eq!(text, expected, "key {key:?}");
    }
    // The connection is still fine; a good key binds.
    let ch = channel(&conn).await;
    bind(&ch, "target", "x2", "5").await.unwrap();
    // Unknown types still close the connection with 503.
    let text = expect_amqp_error(
        declare_exchange(&ch, "x3", "x-bogus", false, FieldTable::default()).await,
        503,
    );
    assert_eq!(text, "COMMAND_INVALID - unknown exchange type 'x-bogus'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_go_to_the_alternate_exchange() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    within(
        "exchange.declare",
        ch.exchange_declare(
            "ae".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    declare_queue(&ch, "lost", false).await;
    bind(&ch, "lost", "ae", "").await.unwrap();
    for kind in ["x-consistent-hash", "x-random"] {
        declare_exchange(
            &ch,
            kind,
            kind,
            false,
            args(&[("alternate-exchange", "ae")]),
        )
        .await
        .unwrap();
        publish(&ch, kind, "k", kind.as_bytes(), BasicProperties::default()).await;
    }
    let drained = drain(&ch, &["lost".to_string()]).await;
    assert_eq!(drained["lost"], vec!["x-consistent-hash", "x-random"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_routes_each_message_to_one_bound_queue() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    declare_exchange(&ch, "any", "x-random", false, FieldTable::default())
        .await
        .unwrap();
    let queues: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    // Binding keys do not matter.
    for (q, key) in queues.iter().zip(["a", "b", ""]) {
        declare_queue(&ch, q, false).await;
        bind(&ch, q, "any", key).await.unwrap();
    }
    for i in 0..600 {
        publish(
            &ch,
            "any",
            "a",
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let drained = drain(&ch, &queues).await;
    assert_eq!(placement(&drained).len(), 600);
    for (q, bodies) in &drained {
        assert!(
            (120..=280).contains(&bodies.len()),
            "{q} got {}",
            bodies.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_plugin_exchanges_and_bindings_survive_restart() {
    let broker = start_durable_broker().await;
    let queues: Vec<String> = (0..4).map(|i| format!("dq{i}")).collect();
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let before = {
        let conn = connect(&broker).await;
        let ch = confirming_channel(&conn).await;
        declare_exchange(
            &ch,
            "dhash",
            "x-consistent-hash",
            true,
            FieldTable::default(),
        )
        .await
        .unwrap();
        declare_exchange(
            &ch,
            "dhead",
            "x-consistent-hash",
            true,
            args(&[("hash-header", "h")]),
        )
        .await
        .unwrap();
        declare_exchange(&ch, "drandom", "x-random", true, FieldTable::default())
            .await
            .unwrap();
        for q in &queues {
            declare_queue(&ch, q, true).await;
            bind(&ch, q, "dhash", "1").await.unwrap();
        }
        bind(&ch, "dq0", "dhead", "3").await.unwrap();
        bind(&ch, "dq1", "drandom", "x").await.unwrap();
        for k in &keys {
            publish(&ch, "dhash", k, k.as_bytes(), BasicProperties::default()).await;
        }
        let at = placement(&drain(&ch, &queues).await);
        within("close", conn.close(200, "OK".into())).await.unwrap();
        at
    };
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    for k in &keys {
        publish(&ch, "dhash", k, k.as_bytes(), BasicProperties::default()).await;
    }
    publish(&ch, "dhead", "k", b"by header", BasicProperties::default()).await;
    publish(
        &ch,
        "drandom",
        "k",
        b"at random",
        BasicProperties::default(),
    )
    .await;
    let drained = drain(&ch, &queues).await;
    let after = placement(&drained);
    // The bindings were made in the order the store lists them (by queue
    // name), so every key is where it was before the restart.
    for k in &keys {
        assert_eq!(after[k], before[k], "key {k}");
    }
    assert_eq!(after["by header"], "dq0");
    assert_eq!(after["at random"], "dq1");
    // The arguments and types came back too.
    let api = Http::new(broker.http, "guest", "guest");
    let x = api.get("/api/exchanges/%2f/dhead").await.json();
    assert_eq!(x["type"], "x-consistent-hash");
    assert_eq!(x["durable"], true);
    assert_eq!(x["arguments"], json!({"hash-header": "h"}));
    assert_eq!(
        api.get("/api/exchanges/%2f/drandom").await.json()["type"],
        "x-random"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_declares_exports_and_imports_plugin_types() {
    let broker = start_broker().await;
    let api = Http::new(broker.http, "guest", "guest");
    let overview = api.get("/api/overview").await.json();
    let types: HashSet<(String, String, bool)> = overview["exchange_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["description"].as_str().unwrap().to_string(),
                t["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(types.contains(&(
        "x-consistent-hash".to_string(),
        "Consistent Hashing Exchange".to_string(),
        true
    )));
    assert!(types.contains(&(
        "x-random".to_string(),
        "Randomly picks a binding (queue) to route via (to).".to_string(),
        true
    )));
    assert!(types.contains(&(
        "topic".to_string(),
        "AMQP topic exchange, as per the AMQP specification".to_string(),
        true
    )));

    // Declared through the API, with RabbitMQ's 400 for what the plugin refuses.
    let r = api
        .put(
            "/api/exchanges/%2f/via-api",
            r#"{"type":"x-consistent-hash","durable":true,"arguments":{"hash-header":"tenant"}}"#,
        )
        .await;
    assert!(r.status == 201 || r.status == 204, "{}", r.status);
    let r = api
        .put(
            "/api/exchanges/%2f/bad",
            r#"{"type":"x-consistent-hash","arguments":{"hash-header":"a","hash-property":"timestamp"}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "hash-header and hash-property are mutually exclusive"
    );
    api.put("/api/queues/%2f/api-q", r#"{"durable":true}"#)
        .await;
    let r = api
        .post(
            "/api/bindings/%2f/e/via-api/q/api-q",
            r#"{"routing_key":"ten"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "The binding key must be an integer: <<\"ten\">>"
    );

    // Exported with their types; imported into another vhost.
    let defs = api.get("/api/definitions").await.json();
    let exported = defs["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "via-api")
        .cloned()
        .unwrap();
    assert_eq!(exported["type"], "x-consistent-hash");
    assert_eq!(exported["arguments"], json!({"hash-header": "tenant"}));
    let import = json!({
        "vhosts": [{"name": "imported"}],
        "permissions": [{"user": "guest", "vhost": "imported", "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [
            {"name": "rnd", "vhost": "imported", "type": "x-random", "durable": true,
             "auto_delete": false, "internal": false, "arguments": {}},
            {"name": "chx", "vhost": "imported", "type": "x-consistent-hash", "durable": true,
             "auto_delete": false, "internal": false, "arguments": {"hash-property": "correlation_id"}},
        ],
    });
    let r = api.post("/api/definitions", &import.to_string()).await;
    assert!(
        r.status == 201 || r.status == 204,
        "{} {:?}",
        r.status,
        r.json()
    );
    let x: Value = api.get("/api/exchanges/imported/chx").await.json();
    assert_eq!(x["type"], "x-consistent-hash");
    assert_eq!(x["arguments"], json!({"hash-property": "correlation_id"}));
    assert_eq!(
        api.get("/api/exchanges/imported/rnd").await.json()["type"],
        "x-random"
    );
}
