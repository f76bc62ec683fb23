//! The memory and disk alarms end to end: limits from the config, checked
//! by the server's resource monitor against the process's resident memory
//! and `statvfs` of the data directory, raising `connection.blocked` with
//! RabbitMQ's reasons before anything fails, and shown by `/api/nodes` and
//! `/metrics` under RabbitMQ's names.
//!
//! A limit the machine cannot meet (more free disk than any disk has,
//! less memory than the test process already uses) raises an alarm at
//! once; lowering or raising the limit at runtime, as `rabbitmqctl
//! set_disk_free_limit` and `set_vm_memory_high_watermark` do, clears it.
//! The cgroup-limited watermark is tested on the real binary in
//! `crates/warren-server/tests/cgroup.rs`.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;
use warren_codec::{
    BasicProperties, ConfirmSelect, FieldTable, FieldValue, Method, QueueDeclare, ShortStr,
};
use warren_core::broker::AlarmCause;
use warren_server::resources::ByteSize;
use warren_tests::http::Http;
use warren_tests::{RawClient, TestBroker, start_broker_with, start_durable_broker};

/// More free space than any disk has: 1,000 PB.
const HUGE: u64 = 1_000_000_000_000_000_000;

/// A client that says it understands `connection.blocked`, as RabbitMQ's
/// clients do, logged in as guest on `/`.
async fn blocked_aware_client(addr: SocketAddr) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.read_start().await;
    let caps = FieldTable::new()
        .with("connection.blocked", FieldValue::Bool(true))
        .with("publisher_confirms", FieldValue::Bool(true));
    let props = FieldTable::new().with("capabilities", FieldValue::Table(caps));
    c.send_start_ok_with(props, "PLAIN", b"\0guest\0guest")
        .await;
    c.tune_and_open_ok().await;
    c
}

/// Waits (bounded by the client's read timeout) for `connection.blocked`
/// and checks its reason.
async fn expect_blocked(c: &mut RawClient, reason: &str) {
    match c.read_method().await {
        (0, Method::ConnectionBlocked(b)) => assert_eq!(b.reason.to_string(), reason),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
}

async fn expect_unblocked(c: &mut RawClient) {
    match c.read_method().await {
        (0, Method::ConnectionUnblocked(_)) => {}
        other => panic!("expected connection.unblocked, got {other:?}"),
    }
}

/// This node in `/api/nodes`.
async fn node(b: &TestBroker) -> Value {
    let r = Http::new(b.http, "guest", "guest").get("/api/nodes").await;
    assert_eq!(r.status, 200);
    r.json()[0].clone()
}

/// The unlabelled samples of `/metrics`, by name, after checking each has
/// a HELP and a TYPE line.
async fn scrape(b: &TestBroker) -> BTreeMap<String, f64> {
    let r = Http::anonymous(b.metrics).get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ').unwrap();
        if !key.contains('{') {
            assert!(text.contains(&format!("# TYPE {key} gauge")), "{key}");
            samples.insert(key.to_string(), value.parse::<f64>().unwrap());
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_limit_above_free_space_blocks_publishers_until_lowered() {
    let b = start_broker_with(|c| c.limits.disk_free_limit = Some(ByteSize(HUGE))).await;
    let mut c = blocked_aware_client(b.addr).await;
    c.open_channel(1).await;
    let q = c.declare_temp_queue(1).await;
    // A connection is blocked once it publishes, as in RabbitMQ.
    c.publish(1, &q, b"before").await;
    expect_blocked(&mut c, "low on disk space").await;
    // The free-space check raised it; no write failed.
    assert!(b.broker.cause_raised(AlarmCause::DiskFreeLow));
    assert!(!b.broker.cause_raised(AlarmCause::StoreWriteFailed));

    let n = node(&b).await;
    assert_eq!(n["disk_free_alarm"], true, "{n}");
    assert_eq!(n["mem_alarm"], false, "{n}");
    assert_eq!(n["disk_free_limit"].as_u64(), Some(HUGE), "{n}");
    let free = n["disk_free"].as_u64().unwrap();
    assert!(free > 0 && free < HUGE, "{n}");
    let m = scrape(&b).await;
    assert_eq!(m["rabbitmq_alarms_free_disk_space_watermark"], 1.0);
    assert_eq!(m["rabbitmq_alarms_memory_used_watermark"], 0.0);
    assert_eq!(m["rabbitmq_disk_space_available_limit_bytes"], HUGE as f64);
    assert!(m["rabbitmq_disk_space_available_bytes"] > 0.0);
    let health = Http::new(b.http, "guest", "guest")
        .get("/api/health/checks/alarms")
        .await;
    assert_eq!(health.status, 503);

    // Lowered at runtime, as `rabbitmqctl set_disk_free_limit` does.
    b.broker.set_disk_free_limit(1);
    expect_unblocked(&mut c).await;
    c.publish(1, &q, b"after").await;
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b"before"[..]));
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b"after"[..]));
    let n = node(&b).await;
    assert_eq!(n["disk_free_alarm"], false, "{n}");
    assert_eq!(n["disk_free_limit"].as_u64(), Some(1), "{n}");
}

/// A durable broker: a confirmed persistent publish, then a disk limit
/// above the free space blocks the publisher while every write so far has
/// succeeded, and lowering it lets the next persistent publish be
/// confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_broker_is_blocked_before_a_write_fails() {
    let b = start_durable_broker().await;
    let mut c = blocked_aware_client(b.addr).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        QueueDeclare {
            queue: "res.durable".into(),
            durable: true,
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::QueueDeclareOk(_))
    ));
    c.send_method(1, ConfirmSelect::default()).await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::ConfirmSelectOk(_))
    ));
    let persistent = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    let publish = || warren_codec::BasicPublish {
        routing_key: ShortStr::from("res.durable"),
        ..Default::default()
    };
    c.send_content(1, publish(), &persistent, b"one").await;
    match c.read_method().await {
        (1, Method::BasicAck(a)) => assert_eq!(a.delivery_tag, 1),
        other => panic!("expected basic.ack, got {other:?}"),
    }

    b.broker.set_disk_free_limit(HUGE);
    expect_blocked(&mut c, "low on disk space").await;
    assert!(!b.broker.cause_raised(AlarmCause::StoreWriteFailed));

    b.broker.set_disk_free_limit(0);
    expect_unblocked(&mut c).await;
    c.send_content(1, publish(), &persistent, b"two").await;
    match c.read_method().await {
        (1, Method::BasicAck(a)) => assert_eq!(a.delivery_tag, 2),
        other => panic!("expected basic.ack, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_watermark_below_resident_memory_blocks_publishers() {
    const LIMIT: u64 = 1 << 20;
    let b = start_broker_with(|c| {
        c.limits.memory_high_watermark_absolute = Some(ByteSize(LIMIT));
    })
    .await;
    let mut c = blocked_aware_client(b.addr).await;
    c.open_channel(1).await;
    let q = c.declare_temp_queue(1).await;
    c.publish(1, &q, b"m").await;
    expect_blocked(&mut c, "low on memory").await;

    let n = node(&b).await;
    assert_eq!(n["mem_alarm"], true, "{n}");
    assert_eq!(n["disk_free_alarm"], false, "{n}");
    assert_eq!(n["mem_limit"].as_u64(), Some(LIMIT), "{n}");
    assert!(n["mem_used"].as_u64().unwrap() > LIMIT, "{n}");
    assert_eq!(n["mem_calculation_strategy"], "rss", "{n}");
    let m = scrape(&b).await;
    assert_eq!(m["rabbitmq_alarms_memory_used_watermark"], 1.0);
    assert_eq!(m["rabbitmq_alarms_free_disk_space_watermark"], 0.0);
    assert_eq!(m["rabbitmq_resident_memory_limit_bytes"], LIMIT as f64);
    assert!(m["rabbitmq_process_resident_memory_bytes"] > LIMIT as f64);

    // Raised at runtime, as `rabbitmqctl set_vm_memory_high_watermark
    // absolute` does: 1 PiB.
    b.broker.set_memory_limit(1 << 50);
    expect_unblocked(&mut c).await;
    let m = scrape(&b).await;
    assert_eq!(m["rabbitmq_alarms_memory_used_watermark"], 0.0);
    assert_eq!(
        m["rabbitmq_resident_memory_limit_bytes"],
        (1u64 << 50) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_are_rabbitmqs() {
    let b = start_broker_with(|_| {}).await;
    let n = node(&b).await;
    // 50 MB of free disk, and 40% of the memory available.
    assert_eq!(n["disk_free_limit"].as_u64(), Some(50_000_000), "{n}");
    let available = warren_server::resources::available_memory().bytes();
    assert_eq!(
        n["mem_limit"].as_u64(),
        Some((available as f64 * 0.4) as u64),
        "{n}"
    );
    assert_eq!(n["mem_alarm"], false, "{n}");
}
