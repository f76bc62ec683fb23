//! The Prometheus endpoint against a known workload: RabbitMQ's metric
//! names, types and labels, and values that match what clients did.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use warren_tests::http::Http;
use warren_tests::lapin_util::{channel, connect, within};
use warren_tests::start_broker;

/// Samples by `name{labels}`, and each family's type.
fn parse(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let family = key.split('{').next().unwrap();
        assert!(types.contains_key(family), "no TYPE line before {line}");
        samples.insert(key.to_string(), value.parse::<f64>().unwrap());
    }
    (samples, types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_known_workload() {
    let b = start_broker().await;
    let conn = connect(&b).await;
    let ch = channel(&conn).await;
    within(
        "declare",
        ch.queue_declare(
            "m.q".into(),
            QueueDeclareOptions::default(),
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
    for i in 0..10u8 {
        let confirm = within(
            "publish",
            ch.basic_publish(
                "".into(),
                "m.q".into(),
                BasicPublishOptions::default(),
                &[i],
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        assert!(within("confirm", confirm).await.unwrap().is_ack());
    }
    for _ in 0..4 {
        let m = within(
            "get",
            ch.basic_get("m.q".into(), BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        within("ack", m.ack(BasicAckOptions::default()))
            .await
            .unwrap();
    }
    // The acks are asynchronous: wait until the queue says so.
    let api = Http::new(b.http, "guest", "guest");
    within("acks applied", async {
        while api.get("/api/queues/%2F/m.q").await.json()["messages"] != 6 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    let r = Http::anonymous(b.metrics).get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let (s, types) = parse(&String::from_utf8(r.body).unwrap());
    assert_eq!(s["rabbitmq_connections"], 1.0);
    assert_eq!(s["rabbitmq_channels"], 1.0);
    assert_eq!(s["rabbitmq_queues"], 1.0);
    assert_eq!(s["rabbitmq_queue_messages_ready"], 6.0);
    assert_eq!(s["rabbitmq_queue_messages_unacked"], 0.0);
    assert_eq!(
        s["rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"],
        10.0
    );
    assert_eq!(
        s["rabbitmq_global_messages_confirmed_total{protocol=\"amqp091\"}"],
        10.0
    );
    assert_eq!(
        s["rabbitmq_global_messages_delivered_total{protocol=\"amqp091\"}"],
        4.0
    );
    assert_eq!(
        s["rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\"}"],
        4.0
    );
    // Nothing was published mandatory and unroutable.
    assert_eq!(
        s["rabbitmq_global_messages_unroutable_returned_total{protocol=\"amqp091\"}"],
        0.0
    );
    assert!(s["rabbitmq_process_resident_memory_bytes"] > 1e6);
    assert_eq!(s["rabbitmq_alarms_memory_used_watermark"], 0.0);
    assert_eq!(types["rabbitmq_global_messages_received_total"], "counter");
    assert_eq!(types["rabbitmq_queues"], "gauge");
    assert!(
        s.keys()
            .any(|k| k.starts_with("rabbitmq_build_info{rabbitmq_version="))
    );
    assert!(
        s.keys()
            .any(|k| k.starts_with("rabbitmq_identity_info{rabbitmq_node=\"warren@"))
    );

    let per = Http::anonymous(b.metrics).get("/metrics/per-object").await;
    let (p, _) = parse(&String::from_utf8(per.body).unwrap());
    assert_eq!(
        p["rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"m.q\"}"],
        6.0
    );
    assert_eq!(
        p["rabbitmq_queue_messages_published_total{vhost=\"/\",queue=\"m.q\"}"],
        10.0
    );

    // Counters never go back: the connection's counts outlive it.
    within("close", conn.close(200, "OK".into())).await.unwrap();
    within("connection gone", async {
        loop {
            let r = Http::anonymous(b.metrics).get("/metrics").await;
            let (s, _) = parse(&String::from_utf8(r.body).unwrap());
            if s["rabbitmq_connections"] == 0.0 {
                assert_eq!(
                    s["rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"],
                    10.0
                );
                assert_eq!(
                    s["rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\"}"],
                    4.0
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
