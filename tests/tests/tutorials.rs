//! The core flows of RabbitMQ's seven tutorials, written with lapin against
//! an in-process broker: hello world, work queues, publish/subscribe,
//! routing, topics, RPC and publisher confirms.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeSet;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use warren_tests::lapin_util::{channel, connect, consume, next_delivery, next_within, within};
use warren_tests::start_broker;

const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
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

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
}

/// A server-named exclusive queue bound to `exchange` with each key.
async fn bound_queue(ch: &Channel, exchange: &str, keys: &[&str]) -> String {
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
    let name = q.name().as_str().to_string();
    for key in keys {
        within(
            "queue.bind",
            ch.queue_bind(
                name.as_str().into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    name
}

/// Everything currently in `queue`, by basic.get (bounded).
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let got = within(
            "basic.get",
            ch.basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            ),
        )
        .await
        .unwrap();
        match got {
            Some(m) => out.push(String::from_utf8(m.delivery.data).unwrap()),
            None => return out,
        }
    }
    panic!("queue {queue} never emptied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_1_hello_world() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare(
            "hello".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    publish(
        &ch,
        "",
        "hello",
        b"Hello World!",
        BasicProperties::default(),
    )
    .await;
    let receiver = connect(&broker).await;
    let rch = channel(&receiver).await;
    let mut consumer = consume(
        &rch,
        "hello",
        "",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    assert!(consumer.tag().as_str().starts_with("amq.ctag-"));
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"Hello World!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_2_work_queues_fair_dispatch() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare(
            "task_queue".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    // Two workers, prefetch 1, manual ack.
    let w1 = channel(&conn).await;
    let w2 = channel(&conn).await;
    for w in [&w1, &w2] {
        within("basic.qos", w.basic_qos(1, BasicQosOptions::default()))
            .await
            .unwrap();
    }
    let mut c1 = consume(&w1, "task_queue", "w1", BasicConsumeOptions::default()).await;
    let mut c2 = consume(&w2, "task_queue", "w2", BasicConsumeOptions::default()).await;
    for i in 0..6 {
        publish(
            &ch,
            "",
            "task_queue",
            format!("task {i}").as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    }
    // Each worker holds one message at a time: take one from each, ack,
    // repeat. With prefetch 1 neither can get ahead of its ack.
    let mut seen = BTreeSet::new();
    let mut per_worker = [0, 0];
    for _ in 0..3 {
        for (i, c) in [&mut c1, &mut c2].into_iter().enumerate() {
            let d = next_delivery(c).await;
            assert_eq!(*d.properties.delivery_mode(), Some(2));
            assert!(
                next_within(c, QUIET).await.is_err(),
                "worker {i} got a second message before acking"
            );
            assert!(seen.insert(String::from_utf8(d.data.clone()).unwrap()));
            per_worker[i] += 1;
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    assert_eq!(per_worker, [3, 3]);
    assert_eq!(seen.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_3_publish_subscribe() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    exchange(&ch, "logs", ExchangeKind::Fanout).await;
    let a = bound_queue(&ch, "logs", &[""]).await;
    let b = bound_queue(&ch, "logs", &[""]).await;
    publish(
        &ch,
        "logs",
        "ignored",
        b"info: hi",
        BasicProperties::default(),
    )
    .await;
    publish(&ch, "logs", "", b"info: there", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &a).await, ["info: hi", "info: there"]);
    assert_eq!(drain(&ch, &b).await, ["info: hi", "info: there"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_4_routing() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    exchange(&ch, "direct_logs", ExchangeKind::Direct).await;
    let errors = bound_queue(&ch, "direct_logs", &["error"]).await;
    let all = bound_queue(&ch, "direct_logs", &["info", "warning", "error"]).await;
    for sev in ["info", "warning", "error", "debug"] {
        publish(
            &ch,
            "direct_logs",
            sev,
            sev.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(drain(&ch, &errors).await, ["error"]);
    assert_eq!(drain(&ch, &all).await, ["info", "warning", "error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_5_topics() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    exchange(&ch, "topic_logs", ExchangeKind::Topic).await;
    let q1 = bound_queue(&ch, "topic_logs", &["*.orange.*"]).await;
    let q2 = bound_queue(&ch, "topic_logs", &["*.*.rabbit", "lazy.#"]).await;
    let everything = bound_queue(&ch, "topic_logs", &["#"]).await;
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.new.rabbit",
        "lazy.orange.new.rabbit",
        "lazy",
    ];
    for key in keys {
        publish(
            &ch,
            "topic_logs",
            key,
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(
        drain(&ch, &q1).await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    // lazy.pink.rabbit matches both of q2's bindings but arrives once.
    assert_eq!(
        drain(&ch, &q2).await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.new.rabbit",
            "lazy",
        ]
    );
    assert_eq!(drain(&ch, &everything).await, keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_6_rpc() {
    let broker = start_broker().await;
    // The server: consumes rpc_queue, answers to reply_to with the same
    // correlation id.
    let server_conn = connect(&broker).await;
    let sch = channel(&server_conn).await;
    within(
        "queue.declare",
        sch.queue_declare(
            "rpc_queue".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    within("basic.qos", sch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut requests = consume(
        &sch,
        "rpc_queue",
        "rpc-server",
        BasicConsumeOptions::default(),
    )
    .await;
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let d = next_delivery(&mut requests).await;
            let n: u64 = String::from_utf8(d.data.clone()).unwrap().parse().unwrap();
            let reply_to = d.properties.reply_to().clone().expect("reply_to");
            let corr = d
                .properties
                .correlation_id()
                .clone()
                .expect("correlation_id");
            let answer = fib(n).to_string();
            sch.basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                answer.as_bytes(),
                BasicProperties::default().with_correlation_id(corr),
            )
            .await
            .unwrap();
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    });

    // The client: an exclusive callback queue.
    let client_conn = connect(&broker).await;
    let cch = channel(&client_conn).await;
    let callback = within(
        "queue.declare",
        cch.queue_declare(
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
    let callback = callback.name().as_str().to_string();
    let mut replies = consume(
        &cch,
        &callback,
        "",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    for (i, n) in [10u64, 20, 30].into_iter().enumerate() {
        let corr = format!("req-{i}");
        publish(
            &cch,
            "",
            "rpc_queue",
            n.to_string().as_bytes(),
            BasicProperties::default()
                .with_reply_to(callback.as_str().into())
                .with_correlation_id(corr.as_str().into()),
        )
        .await;
        let d = next_delivery(&mut replies).await;
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some(corr.as_str())
        );
        assert_eq!(String::from_utf8(d.data).unwrap(), fib(n).to_string());
    }
    within("rpc server", server).await.unwrap();
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_7_publisher_confirms() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare(
            "confirms".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    // Strategy 1: publish and wait for each confirm.
    for i in 0..10 {
        let c = ch
            .basic_publish(
                "".into(),
                "confirms".into(),
                BasicPublishOptions::default(),
                format!("single {i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        assert!(within("confirm", c).await.unwrap().is_ack());
    }
    // Strategy 2: publish a batch, wait for all.
    for batch in 0..5 {
        for i in 0..20 {
            ch.basic_publish(
                "".into(),
                "confirms".into(),
                BasicPublishOptions::default(),
                format!("batch {batch} {i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        }
        let returned = within("wait_for_confirms", ch.wait_for_confirms())
            .await
            .unwrap();
        assert!(returned.is_empty());
    }
    // Strategy 3: handle confirms as they come.
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(
            ch.basic_publish(
                "".into(),
                "confirms".into(),
                BasicPublishOptions::default(),
                format!("async {i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    for c in pending {
        assert!(within("confirm", c).await.unwrap().is_ack());
    }
    let q = within(
        "queue.declare",
        ch.queue_declare(
            "confirms".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(q.message_count(), 210);
}
