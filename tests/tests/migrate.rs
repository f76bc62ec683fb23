//! `warrenctl migrate` end to end: two in-process brokers, a source filled
//! with messages carrying properties over several queues (one a priority
//! queue), a run interrupted half-way by the hidden `--stop-after`, a second
//! run that finishes the job; then every message must be at the
//! destination, in order per queue, with its properties, duplicated only
//! where the first run stopped, and the source's queues empty.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;
use warren_cli::Io;
use warren_cli::config::Env;
use warren_tests::http::Http;
use warren_tests::lapin_util::{channel, connect, connect_url, consume, next_delivery, within};
use warren_tests::{TestBroker, start_broker};

/// Messages in the source, over [`QUEUES`] queues. With 100,000 the whole
/// file takes about 16 s in a debug build on two cores (filling the source
/// 5 s, the two runs 2 s and 2.5 s, the checks the rest).
const MESSAGES: u64 = 100_000;
/// Queues `migrate-0` .. `migrate-9`; `migrate-0` is a priority queue.
const QUEUES: u64 = 10;
/// The hidden option stops the first run once this many were confirmed.
const STOP_AFTER: u64 = MESSAGES * 2 / 5;
/// `--batch` and `--parallel` of both runs: at most a batch per worker is
/// in flight when the first run stops, which bounds the duplicates.
const BATCH: u64 = 500;
const PARALLEL: u64 = 4;
/// How long one warrenctl run may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn queue(i: u64) -> String {
    format!("migrate-{i}")
}

/// Runs warrenctl in-process on a blocking thread: (exit code, stdout,
/// stderr).
async fn warrenctl(args: Vec<String>) -> (i32, String, String) {
    let run = tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = std::io::empty();
        let code = warren_cli::run(
            std::iter::once("warrenctl".to_string()).chain(args),
            &Env::default(),
            &mut Io {
                out: &mut out,
                err: &mut err,
                input: &mut input,
                tty: false,
            },
        );
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    });
    match tokio::time::timeout(RUN_LIMIT, run).await {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("warrenctl did not finish within {RUN_LIMIT:?}"),
    }
}

/// The arguments of a migration from `source` to `dest`, then `extra`.
fn migrate_args(source: &TestBroker, dest: &TestBroker, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--url".into(),
        format!("http://{}", dest.http),
        "--user".into(),
        "guest".into(),
        "--password".into(),
        "guest".into(),
        "migrate".into(),
        "--source-url".into(),
        format!("http://{}", source.http),
        "--source-user".into(),
        "guest".into(),
        "--source-password".into(),
        "guest".into(),
        "--source-amqp".into(),
        format!("amqp://guest:guest@{}", source.addr),
        "--amqp".into(),
        format!("amqp://guest:guest@{}", dest.addr),
        "--batch".into(),
        BATCH.to_string(),
        "--parallel".into(),
        PARALLEL.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A message's properties: everything a migration must keep.
fn properties(q: u64, seq: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("seq".into(), AMQPValue::LongLongInt(seq as i64));
    headers.insert(
        "origin".into(),
        AMQPValue::LongString(LongString::from(queue(q))),
    );
    let p = BasicProperties::default()
        .with_content_type("application/x-migrate-test".into())
        .with_delivery_mode(2)
        .with_message_id(seq.to_string().into())
        .with_correlation_id(format!("c-{seq}").into())
        .with_timestamp(1_700_000_000 + seq)
        .with_expiration("86400000".into())
        .with_headers(headers);
    if q == 0 {
        p.with_priority((seq % 10) as u8)
    } else {
        p
    }
}

/// Declares the queues (and an exchange routing to them, so that half of
/// the messages come through it) and publishes `per_queue` messages to
/// each, with confirms; plus a queue `other` with 3 messages that the
/// `--queues` filter leaves alone.
async fn fill(source: &TestBroker, per_queue: u64) {
    let conn = connect(source).await;
    let ch = channel(&conn).await;
    within(
        "exchange.declare",
        ch.exchange_declare(
            "migrate.x".into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for q in 0..QUEUES {
        let mut args = FieldTable::default();
        if q == 0 {
            args.insert("x-max-priority".into(), AMQPValue::LongInt(9));
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        within(
            "queue.declare",
            ch.queue_declare(queue(q).as_str().into(), durable, args),
        )
        .await
        .unwrap();
        within(
            "queue.bind",
            ch.queue_bind(
                queue(q).as_str().into(),
                "migrate.x".into(),
                queue(q).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    within(
        "queue.declare",
        ch.queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for i in 0..3 {
        ch.basic_publish(
            "".into(),
            "other".into(),
            BasicPublishOptions::default(),
            format!("other {i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    // One publisher per queue, each on its own channel with confirms.
    let mut tasks = Vec::new();
    for q in 0..QUEUES {
        let ch = channel(&conn).await;
        tasks.push(tokio::spawn(async move {
            within(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await
            .unwrap();
            for seq in 0..per_queue {
                let exchange = if seq % 2 == 0 { "migrate.x" } else { "" };
                let body = format!("{}:{seq}:{}", queue(q), "x".repeat(64));
                // The confirm is collected by wait_for_confirms below.
                let _confirm = ch
                    .basic_publish(
                        exchange.into(),
                        queue(q).as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties(q, seq),
                    )
                    .await
                    .unwrap();
            }
            let returned = tokio::time::timeout(RUN_LIMIT, ch.wait_for_confirms())
                .await
                .unwrap()
                .unwrap();
            assert!(returned.is_empty());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let _ = conn.close(200, "OK".into()).await;
}

/// Ready messages per queue, by passive declares.
async fn counts(broker: &TestBroker, names: &[String]) -> Vec<u64> {
    let conn = connect(broker).await;
    let mut out = Vec::new();
    for name in names {
        let ch = channel(&conn).await;
        let q = within(
            "passive queue.declare",
            ch.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        out.push(u64::from(q.message_count()));
        let _ = ch.close(200, "OK".into()).await;
    }
    let _ = conn.close(200, "OK".into()).await;
    out
}

/// Consumes (no-ack) everything in queue `q` of the destination and checks
/// each message's properties; returns the sequence numbers in the order
/// they came, grouped by priority (one group unless `q` is the priority
/// queue).
async fn drain(dest: &TestBroker, q: u64, n: u64) -> BTreeMap<u8, Vec<u64>> {
    let conn = connect(dest).await;
    let ch = channel(&conn).await;
    within("basic.qos", ch.basic_qos(1000, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = consume(
        &ch,
        &queue(q),
        "check",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let mut groups: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for _ in 0..n {
        let d = next_delivery(&mut consumer).await;
        let p = &d.properties;
        let seq: u64 = p.message_id().as_ref().unwrap().as_str().parse().unwrap();
        let want = properties(q, seq);
        assert_eq!(p.content_type(), want.content_type(), "queue {q} seq {seq}");
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.correlation_id(), want.correlation_id());
        assert_eq!(p.timestamp(), want.timestamp());
        assert_eq!(p.expiration(), want.expiration());
        assert_eq!(p.priority(), want.priority());
        let headers = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            headers.get("seq"),
            Some(&AMQPValue::LongLongInt(seq as i64)),
            "queue {q}: headers {headers:?}"
        );
        assert_eq!(
            headers.get("origin"),
            Some(&AMQPValue::LongString(LongString::from(queue(q))))
        );
        assert_eq!(
            d.data,
            format!("{}:{seq}:{}", queue(q), "x".repeat(64)).as_bytes()
        );
        assert_eq!(
            d.routing_key.as_str(),
            queue(q),
            "republished to the default exchange"
        );
        groups
            .entry(p.priority().unwrap_or(0))
            .or_default()
            .push(seq);
    }
    let _ = conn.close(200, "OK".into()).await;
    groups
}

/// Checks one group of sequence numbers as the destination delivered them:
/// without repeats it is `expected` in order, and it goes back (the second
/// run moving again what the first one had sent but not acknowledged) at
/// most once. Returns how many repeats there were.
fn check_order(what: &str, got: &[u64], expected: &[u64]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<u64> = got.iter().copied().filter(|s| seen.insert(*s)).collect();
    assert!(
        firsts == expected,
        "{what}: messages missing or out of order"
    );
    let restarts = got.windows(2).filter(|w| w[1] <= w[0]).count();
    assert!(restarts <= 1, "{what}: {restarts} places out of order");
    (got.len() - firsts.len()) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_resumes_and_loses_nothing() {
    let source = start_broker().await;
    let dest = start_broker().await;
    let per_queue = MESSAGES / QUEUES;
    let t0 = Instant::now();
    fill(&source, per_queue).await;
    let filled = t0.elapsed();
    let names: Vec<String> = (0..QUEUES).map(queue).collect();
    assert_eq!(
        counts(&source, &names).await,
        vec![per_queue; QUEUES as usize]
    );

    // A dry run shows the plan and changes nothing.
    let (code, out, err) = warrenctl(migrate_args(
        &source,
        &dest,
        &["--queues", "^migrate-", "--dry-run", "--format", "json"],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["messages"], MESSAGES);
    assert_eq!(plan["queues"].as_array().unwrap().len(), QUEUES as usize);
    assert_eq!(plan["definitions"]["queues"], QUEUES + 1);
    assert_eq!(plan["definitions"]["exchanges"], 1);
    assert_eq!(plan["definitions"]["bindings"], QUEUES);
    let dest_api = Http::new(dest.http, "guest", "guest");
    assert_eq!(
        dest_api.get("/api/queues/%2F/migrate-0").await.status,
        404,
        "the dry run changed nothing"
    );

    // The first run stops abruptly part-way: some messages are at the
    // destination, the rest (including those in flight) on the source.
    let t1 = Instant::now();
    let stop = STOP_AFTER.to_string();
    let (code, _, err) = warrenctl(migrate_args(
        &source,
        &dest,
        &["--queues", "^migrate-", "--stop-after", &stop],
    ))
    .await;
    let first_run = t1.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("warrenctl: stopped after") && err.lines().count() == 1,
        "{err}"
    );
    let left: u64 = counts(&source, &names).await.iter().sum();
    let arrived: u64 = counts(&dest, &names).await.iter().sum();
    assert!(left > 0 && left < MESSAGES, "{left} left");
    assert!(arrived >= STOP_AFTER, "{arrived} arrived");
    assert!(
        arrived + left >= MESSAGES,
        "{arrived} arrived, {left} left: some lost"
    );

    // The second run carries on, skipping the definitions already there.
    let t2 = Instant::now();
    let (code, out, err) = warrenctl(migrate_args(
        &source,
        &dest,
        &[
            "--queues",
            "^migrate-",
            "--skip-definitions",
            "--format",
            "json",
        ],
    ))
    .await;
    let second_run = t2.elapsed();
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["messages"], left, "{summary}");
    let per_queue_moved: u64 = summary["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            assert_eq!(q["left"], 0, "{q}");
            q["messages"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(per_queue_moved, left);
    assert!(summary["rate"].as_f64().unwrap() > 0.0);

    // The source is empty, but for the queue the filter left alone.
    assert_eq!(counts(&source, &names).await, vec![0; QUEUES as usize]);
    assert_eq!(counts(&source, &["other".to_string()]).await, vec![3]);
    // The definitions came along: the exchange, its bindings, the priority.
    let defs = dest_api.get("/api/definitions").await.json();
    assert!(
        defs["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "migrate.x")
    );
    assert_eq!(defs["bindings"].as_array().unwrap().len(), QUEUES as usize);
    let q0 = defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "migrate-0")
        .unwrap();
    assert_eq!(q0["arguments"]["x-max-priority"], 9);

    // Every message, in order, with its properties; repeats only where the
    // first run stopped, at most a batch per worker.
    let at_dest = counts(&dest, &names).await;
    let mut duplicates = 0;
    for q in 0..QUEUES {
        let groups = drain(&dest, q, at_dest[q as usize]).await;
        let mut expected: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
        for seq in 0..per_queue {
            expected
                .entry(if q == 0 { (seq % 10) as u8 } else { 0 })
                .or_default()
                .push(seq);
        }
        assert_eq!(
            groups.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (prio, seqs) in &groups {
            duplicates += check_order(&format!("queue {q} priority {prio}"), seqs, &expected[prio]);
        }
    }
    assert_eq!(counts(&dest, &names).await, vec![0; QUEUES as usize]);
    assert!(duplicates <= BATCH * PARALLEL, "{duplicates} duplicates");
    println!(
        "{MESSAGES} messages: filled in {filled:?}, first run {first_run:?} \
         (stopped after {STOP_AFTER}), second run {second_run:?} ({left} messages), \
         {duplicates} duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_one_line_with_the_right_exit_code() {
    let source = start_broker().await;
    let dest = start_broker().await;
    fill(&source, 5).await;
    let with = |replace: &[(&str, String)], extra: &[&str]| {
        let mut args = migrate_args(&source, &dest, extra);
        for (option, value) in replace {
            let i = args.iter().position(|a| a == option).unwrap();
            args[i + 1] = value.clone();
        }
        args
    };
    // The source's API refuses the password: 4.
    let (code, _, err) = warrenctl(with(&[("--source-password", "wrong".into())], &[])).await;
    assert_eq!((code, err.lines().count()), (4, 1), "{err}");
    // Nothing listens at the source's API: 3.
    let (code, _, err) =
        warrenctl(with(&[("--source-url", "http://127.0.0.1:1".into())], &[])).await;
    assert_eq!((code, err.lines().count()), (3, 1), "{err}");
    // A bad --queues expression or AMQP URL: 2, before anything is done.
    let (code, _, err) = warrenctl(with(&[], &["--queues", "("])).await;
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    let (code, _, err) = warrenctl(with(&[("--amqp", "amqps://guest:secret@x".into())], &[])).await;
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(!err.contains("secret"), "{err}");
    // The source's AMQP port refuses the password: 4, and no message moved.
    let (code, _, err) = warrenctl(with(
        &[(
            "--source-amqp",
            format!("amqp://guest:wrong@{}", source.addr),
        )],
        &["--queues", "^migrate-1$"],
    ))
    .await;
    assert_eq!((code, err.lines().count()), (4, 1), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    // Nothing listens at the destination's AMQP port: 3.
    let (code, _, err) = warrenctl(with(
        &[("--amqp", "amqp://guest:guest@127.0.0.1:1".into())],
        &["--queues", "^migrate-1$"],
    ))
    .await;
    assert_eq!((code, err.lines().count()), (3, 1), "{err}");
    assert_eq!(counts(&source, &[queue(1)]).await, vec![5]);
    // A plain run then moves them, with one line per queue and a summary.
    let (code, out, err) = warrenctl(with(&[], &["--queues", "^migrate-1$"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("queue 'migrate-1' (vhost '/'): 5 messages"),
        "{out}"
    );
    assert!(out.contains("moved 5 messages"), "{out}");
    assert_eq!(counts(&source, &[queue(1)]).await, vec![0]);
    assert_eq!(counts(&dest, &[queue(1)]).await, vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vhost_moves_into_a_vhost_created_for_it() {
    let source = start_broker().await;
    let dest = start_broker().await;
    let api = Http::new(source.http, "guest", "guest");
    let put = api
        .put("/api/vhosts/shop", r#"{"description":"the shop"}"#)
        .await;
    assert!(put.status < 300, "{put:?}");
    for path in ["/api/queues/shop/orders", "/api/queues/%2F/elsewhere"] {
        let put = api.put(path, r#"{"durable":true}"#).await;
        assert!(put.status < 300, "{path}: {put:?}");
    }
    let conn = connect_url(&format!("amqp://guest:guest@{}/shop", source.addr)).await;
    let ch = channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    for i in 0..50 {
        let _confirm = ch
            .basic_publish(
                "".into(),
                "orders".into(),
                BasicPublishOptions::default(),
                format!("order {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    assert!(
        within("confirms", ch.wait_for_confirms())
            .await
            .unwrap()
            .is_empty()
    );
    let _ = conn.close(200, "OK".into()).await;

    let (code, out, err) = warrenctl(migrate_args(
        &source,
        &dest,
        &["--vhost", "shop", "--format", "json"],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["messages"], 50, "{summary}");
    let moved: Vec<&str> = summary["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(moved, ["orders"], "only the vhost's queues");

    let here = Http::new(dest.http, "guest", "guest");
    let vhost = here.get("/api/vhosts/shop").await;
    assert_eq!(vhost.status, 200);
    assert_eq!(vhost.json()["description"], "the shop");
    assert_eq!(here.get("/api/queues/%2F/elsewhere").await.status, 404);
    let conn = connect_url(&format!("amqp://guest:guest@{}/shop", dest.addr)).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(
        &ch,
        "orders",
        "check",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    for i in 0..50 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, format!("order {i}").as_bytes());
    }
    let _ = conn.close(200, "OK".into()).await;
    let left = api.get("/api/queues/shop/orders").await.json();
    assert_eq!(left["messages"], 0, "{left}");
}
