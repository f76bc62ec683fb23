//! lapin 2 against Warren. Usage: `lapin_client SCENARIO`.

#[path = "../common.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

fn q_name(p: &str) -> String {
    name("lapin", p)
}

async fn connect_with(pw: &str, heartbeat: Option<u16>) -> lapin::Result<Connection> {
    let mut uri = format!("amqp://{}:{pw}@{}:{}/%2f", user(), host(), port());
    if let Some(h) = heartbeat {
        uri += &format!("?heartbeat={h}");
    }
    Connection::connect(&uri, ConnectionProperties::default()).await
}

async fn connect() -> Result<Connection, String> {
    connect_with(&password(), None).await.ctx("connect")
}

fn opts(durable: bool, exclusive: bool, auto_delete: bool) -> QueueDeclareOptions {
    QueueDeclareOptions { durable, exclusive, auto_delete, ..Default::default() }
}

async fn declare(ch: &Channel, q: &str, o: QueueDeclareOptions) -> Result<String, String> {
    Ok(ch.queue_declare(q, o, FieldTable::default()).await.ctx("queue.declare")?.name().to_string())
}

async fn publish(ch: &Channel, ex: &str, key: &str, body: &[u8], props: BasicProperties) -> Result<Confirmation, String> {
    let pc = ch.basic_publish(ex, key, BasicPublishOptions::default(), body, props).await.ctx("publish")?;
    pc.await.ctx("confirm")
}

async fn get_one(ch: &Channel, q: &str, secs: u64) -> Result<Delivery, String> {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if let Some(m) = ch.basic_get(q, BasicGetOptions { no_ack: true }).await.ctx("basic.get")? {
            return Ok(m.delivery);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("no message on {q}"))
}

async fn drain(ch: &Channel, q: &str) -> Result<Vec<Delivery>, String> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match ch.basic_get(q, BasicGetOptions { no_ack: true }).await.ctx("basic.get")? {
            Some(m) => out.push(m.delivery),
            None => return Ok(out),
        }
    }
    Err("queue did not drain".into())
}

async fn next(c: &mut Consumer, secs: u64, what: &str) -> Result<Delivery, String> {
    match tokio::time::timeout(Duration::from_secs(secs), c.next()).await {
        Ok(Some(d)) => d.ctx(what),
        Ok(None) => Err(format!("{what}: consumer ended")),
        Err(_) => Err(format!("timed out waiting for {what}")),
    }
}

/// Every delivery that arrives until the stream pauses for 50 ms.
async fn pending(c: &mut Consumer) -> Result<Vec<Delivery>, String> {
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(50), c.next()).await {
        got.push(d.ctx("delivery")?);
    }
    Ok(got)
}

async fn consume(ch: &Channel, q: &str, no_ack: bool) -> Result<Consumer, String> {
    ch.basic_consume(q, "", BasicConsumeOptions { no_ack, ..Default::default() }, FieldTable::default())
        .await
        .ctx("basic.consume")
}

/// Checks that a result is the channel.close RabbitMQ would send.
fn expect_close<T>(r: lapin::Result<T>, code: u16) -> Result<String, String> {
    match r {
        Err(lapin::Error::ProtocolError(e)) => {
            check_eq(e.get_id(), code, &format!("reply code ({})", e.get_message()))?;
            Ok(e.get_message().to_string())
        }
        Err(e) => Err(format!("expected channel.close {code}, got {e:?}")),
        Ok(_) => Err(format!("expected channel.close {code}")),
    }
}

async fn bound_queue(conn: &Connection, ex: &str, keys: &[&str]) -> Result<(Channel, String), String> {
    let ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&ch, "", opts(false, true, false)).await?;
    check(q.starts_with("amq.gen-"), format!("server-named queue {q}"))?;
    for k in keys {
        ch.queue_bind(&q, ex, k, QueueBindOptions::default(), FieldTable::default()).await.ctx("bind")?;
    }
    Ok((ch, q))
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, String> {
    let ch = conn.create_channel().await.ctx("channel")?;
    ch.confirm_select(ConfirmSelectOptions::default()).await.ctx("confirm.select")?;
    Ok(ch)
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

async fn exchange(ch: &Channel, ex: &str, kind: ExchangeKind) -> Res {
    ch.exchange_declare(ex, kind, ExchangeDeclareOptions::default(), FieldTable::default()).await.ctx("exchange.declare")
}

async fn hello() -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&ch, &q_name("hello"), opts(false, false, false)).await?;
    publish(&ch, "", &q, b"Hello World!", BasicProperties::default()).await?;
    let mut c = consume(&ch, &q, true).await?;
    check_eq(text(&next(&mut c, 5, "hello").await?).as_str(), "Hello World!", "body")?;
    ch.queue_delete(&q, QueueDeleteOptions::default()).await.ctx("delete")?;
    Ok(())
}

async fn work_queues() -> Res {
    let conn = connect().await?;
    let pub_ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&pub_ch, &q_name("tasks"), opts(true, false, false)).await?;
    let n = 20;
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let wc = connect().await?;
        let ch = wc.create_channel().await.ctx("channel")?;
        ch.basic_qos(1, BasicQosOptions::default()).await.ctx("qos")?;
        let mut c = consume(&ch, &q, false).await?;
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let _keep = wc;
            let mut mine = 0usize;
            while done.load(Ordering::SeqCst) < n {
                let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), c.next()).await else { continue };
                let d = d.ctx("delivery")?;
                // Holding this task, the worker must not be sent another.
                if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), c.next()).await {
                    return Err("worker has more than 1 unacked with prefetch 1".to_string());
                }
                d.ack(BasicAckOptions::default()).await.ctx("ack")?;
                mine += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<usize, String>(mine)
        }));
    }
    for i in 0..n {
        let props = BasicProperties::default().with_delivery_mode(2);
        publish(&pub_ch, "", &q, format!("task {i}").as_bytes(), props).await?;
    }
    let mut counts = Vec::new();
    for w in workers {
        counts.push(tokio::time::timeout(Duration::from_secs(20), w).await.ctx("worker")?.ctx("worker")??);
    }
    check_eq(counts.iter().sum::<usize>(), n, "tasks done")?;
    check(counts.iter().all(|&c| c > 0), format!("fair dispatch: {counts:?}"))?;
    pub_ch.queue_delete(&q, QueueDeleteOptions::default()).await.ctx("delete")?;
    Ok(())
}

async fn pubsub() -> Res {
    let conn = connect().await?;
    let ex = q_name("logs");
    let pub_ch = confirm_channel(&conn).await?;
    exchange(&pub_ch, &ex, ExchangeKind::Fanout).await?;
    let (c1, c2) = (connect().await?, connect().await?);
    let subs = [bound_queue(&c1, &ex, &[""]).await?, bound_queue(&c2, &ex, &[""]).await?];
    publish(&pub_ch, &ex, "", b"log line", BasicProperties::default()).await?;
    for (ch, q) in &subs {
        check_eq(text(&get_one(ch, q, 5).await?).as_str(), "log line", "fanout copy")?;
    }
    pub_ch.exchange_delete(&ex, ExchangeDeleteOptions::default()).await.ctx("exchange.delete")
}

async fn routing() -> Res {
    let conn = connect().await?;
    let ex = q_name("direct_logs");
    let pub_ch = confirm_channel(&conn).await?;
    exchange(&pub_ch, &ex, ExchangeKind::Direct).await?;
    let (cha, qa) = bound_queue(&conn, &ex, &["error"]).await?;
    let (chb, qb) = bound_queue(&conn, &ex, &["info", "warning", "error"]).await?;
    for sev in ["info", "warning", "error"] {
        publish(&pub_ch, &ex, sev, sev.as_bytes(), BasicProperties::default()).await?;
    }
    let a: Vec<String> = drain(&cha, &qa).await?.iter().map(text).collect();
    let b: Vec<String> = drain(&chb, &qb).await?.iter().map(text).collect();
    check_eq(a, vec!["error".to_string()], "error-only queue")?;
    check_eq(b, ["info", "warning", "error"].map(String::from).to_vec(), "all-severities queue")?;
    pub_ch.exchange_delete(&ex, ExchangeDeleteOptions::default()).await.ctx("exchange.delete")
}

async fn topics() -> Res {
    let conn = connect().await?;
    let ex = q_name("topic_logs");
    let pub_ch = confirm_channel(&conn).await?;
    exchange(&pub_ch, &ex, ExchangeKind::Topic).await?;
    let (ch1, q1) = bound_queue(&conn, &ex, TOPIC_Q1.0).await?;
    let (ch2, q2) = bound_queue(&conn, &ex, TOPIC_Q2.0).await?;
    for k in TOPIC_KEYS {
        publish(&pub_ch, &ex, k, k.as_bytes(), BasicProperties::default()).await?;
    }
    for (ch, q, want) in [(&ch1, &q1, TOPIC_Q1.1), (&ch2, &q2, TOPIC_Q2.1)] {
        let got: Vec<String> = drain(ch, q).await?.iter().map(|d| d.routing_key.to_string()).collect();
        check_eq(got, want.iter().map(|s| s.to_string()).collect(), q)?;
    }
    pub_ch.exchange_delete(&ex, ExchangeDeleteOptions::default()).await.ctx("exchange.delete")
}

async fn rpc() -> Res {
    let server = connect().await?;
    let sch = server.create_channel().await.ctx("channel")?;
    let rpc_queue = declare(&sch, &q_name("rpc_queue"), opts(false, false, true)).await?;
    sch.basic_qos(1, BasicQosOptions::default()).await.ctx("qos")?;
    let mut requests = consume(&sch, &rpc_queue, false).await?;
    tokio::spawn(async move {
        while let Some(Ok(d)) = requests.next().await {
            let n: u32 = text(&d).parse().unwrap_or(0);
            let reply_to = d.properties.reply_to().clone().unwrap_or_default();
            let props = BasicProperties::default()
                .with_correlation_id(d.properties.correlation_id().clone().unwrap_or_default());
            let _ = sch.basic_publish("", reply_to.as_str(), BasicPublishOptions::default(), fib(n).to_string().as_bytes(), props).await;
            let _ = d.ack(BasicAckOptions::default()).await;
        }
    });

    let client = connect().await?;
    let cch = client.create_channel().await.ctx("channel")?;
    let reply_q = declare(&cch, "", opts(false, true, false)).await?;
    let mut replies = consume(&cch, &reply_q, true).await?;
    for n in [1u32, 10, 30] {
        let corr = format!("corr-{n}");
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(reply_q.clone()))
            .with_correlation_id(ShortString::from(corr.clone()));
        publish(&cch, "", &rpc_queue, n.to_string().as_bytes(), props).await?;
        loop {
            let d = next(&mut replies, 5, "rpc reply").await?;
            if d.properties.correlation_id().as_ref().map(|c| c.as_str()) == Some(corr.as_str()) {
                check_eq(text(&d), fib(n).to_string(), &format!("fib({n})"))?;
                break;
            }
        }
    }
    Ok(())
}

async fn confirms(style: &str) -> Res {
    let conn = connect().await?;
    let ch = confirm_channel(&conn).await?;
    let q = declare(&ch, &q_name("confirms"), opts(false, true, false)).await?;
    let body = |i: usize| i.to_string().into_bytes();
    match style {
        "individual" => {
            for i in 0..100 {
                let c = publish(&ch, "", &q, &body(i), BasicProperties::default()).await?;
                check(c.is_ack(), format!("publish {i} not acked: {c:?}"))?;
            }
        }
        "batch" => {
            for _ in 0..10 {
                for i in 0..10 {
                    ch.basic_publish("", &q, BasicPublishOptions::default(), &body(i), BasicProperties::default())
                        .await
                        .ctx("publish")?;
                }
                check(ch.wait_for_confirms().await.ctx("wait_for_confirms")?.is_empty(), "returned messages")?;
            }
        }
        _ => {
            // Each confirmation is awaited by its own task while publishing goes on.
            let acked = Arc::new(AtomicUsize::new(0));
            for i in 0..100 {
                let pc = ch.basic_publish("", &q, BasicPublishOptions::default(), &body(i), BasicProperties::default())
                    .await
                    .ctx("publish")?;
                let acked = acked.clone();
                tokio::spawn(async move {
                    if matches!(pc.await, Ok(c) if c.is_ack()) {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            until(|| acked.load(Ordering::SeqCst) == 100, 10, "100 acks").await?;
        }
    }
    let count = ch
        .queue_declare(&q, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .ctx("passive declare")?
        .message_count();
    check_eq(count, 100, "messages confirmed")
}

async fn confirms_individual() -> Res { confirms("individual").await }
async fn confirms_batch() -> Res { confirms("batch").await }
async fn confirms_async() -> Res { confirms("async").await }

async fn mandatory_return() -> Res {
    let conn = connect().await?;
    // lapin hands a returned message back with the publisher confirm.
    let ch = confirm_channel(&conn).await?;
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    let pc = ch.basic_publish("", &q_name("nowhere"), opts, b"lost", BasicProperties::default()).await.ctx("publish")?;
    let ret = pc.await.ctx("confirm")?.take_message().ok_or("no basic.return")?;
    check_eq(
        (ret.reply_code, ret.reply_text.as_str(), ret.delivery.data.as_slice()),
        (312, "NO_ROUTE", b"lost".as_slice()),
        "basic.return",
    )
}

async fn nack_requeue() -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&ch, &q_name("nack"), opts(false, true, false)).await?;
    publish(&ch, "", &q, b"again", BasicProperties::default()).await?;
    let mut c = consume(&ch, &q, false).await?;
    let d = next(&mut c, 5, "delivery").await?;
    check_eq((d.redelivered, text(&d).as_str()), (false, "again"), "first delivery")?;
    d.nack(BasicNackOptions { requeue: true, multiple: false }).await.ctx("nack")?;
    let d = next(&mut c, 5, "redelivery").await?;
    check_eq((d.redelivered, text(&d).as_str()), (true, "again"), "redelivery")?;
    d.ack(BasicAckOptions::default()).await.ctx("ack")
}

async fn prefetch_limit() -> Res {
    let conn = connect().await?;
    let ch = confirm_channel(&conn).await?;
    let q = declare(&ch, &q_name("prefetch"), opts(false, true, false)).await?;
    let (total, limit) = (30usize, 5usize);
    for i in 0..total {
        publish(&ch, "", &q, i.to_string().as_bytes(), BasicProperties::default()).await?;
    }
    ch.basic_qos(limit as u16, BasicQosOptions::default()).await.ctx("qos")?;
    let mut c = consume(&ch, &q, false).await?;
    let mut done = 0;
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while done < total && std::time::Instant::now() < end {
        // Let the broker push as much as it will before acking anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = pending(&mut c).await?;
        check(got.len() <= limit, format!("{} unacked with prefetch {limit}", got.len()))?;
        if let Some(last) = got.last() {
            check(got.len() == limit || done + got.len() == total, format!("only {} delivered while more are ready", got.len()))?;
            last.ack(BasicAckOptions { multiple: true }).await.ctx("ack")?;
            done += got.len();
        }
    }
    check_eq(done, total, "consumed")
}

async fn exclusive_locked() -> Res {
    let a = connect().await?;
    let q = declare(&a.create_channel().await.ctx("channel")?, &q_name("exclusive"), opts(false, true, false)).await?;
    let b = connect().await?;
    let ch = b.create_channel().await.ctx("channel")?;
    let t = expect_close(ch.queue_declare(&q, opts(false, false, false), FieldTable::default()).await, 405)?;
    check(t.starts_with("RESOURCE_LOCKED - "), format!("text {t}"))?;
    let ch = b.create_channel().await.ctx("channel")?;
    expect_close(ch.basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::default()).await, 405)?;
    Ok(())
}

async fn passive_404() -> Res {
    let conn = connect().await?;
    let q = q_name("missing");
    let ch = conn.create_channel().await.ctx("channel")?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let t = expect_close(ch.queue_declare(&q, passive, FieldTable::default()).await, 404)?;
    check_eq(t, format!("NOT_FOUND - no queue '{q}' in vhost '/'"), "text")?;
    let ch = conn.create_channel().await.ctx("channel")?;
    declare(&ch, &q, opts(false, true, false)).await?;
    publish(&ch, "", &q, b"still working", BasicProperties::default()).await?;
    check_eq(text(&get_one(&ch, &q, 5).await?).as_str(), "still working", "after 404")
}

async fn redeclare_406() -> Res {
    let conn = connect().await?;
    let q = q_name("redeclare");
    declare(&conn.create_channel().await.ctx("channel")?, &q, opts(false, false, false)).await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    let t = expect_close(ch.queue_declare(&q, opts(true, false, false), FieldTable::default()).await, 406)?;
    check_eq(t, redeclare_text(&q), "text")?;
    let ch = conn.create_channel().await.ctx("channel")?;
    ch.queue_delete(&q, QueueDeleteOptions::default()).await.ctx("delete")?;
    Ok(())
}

async fn wrong_password() -> Res {
    match connect_with("wrong-password", None).await {
        Ok(_) => Err("login with a wrong password succeeded".into()),
        Err(lapin::Error::ProtocolError(e)) => check_eq(e.get_id(), 403, &format!("reply code ({})", e.get_message())),
        Err(e) => Err(format!("expected 403, got {e:?}")),
    }
}

async fn large_message() -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&ch, &q_name("large"), opts(false, true, false)).await?;
    let body = large_body();
    publish(&ch, "", &q, &body, BasicProperties::default()).await?;
    let got = get_one(&ch, &q, 20).await?;
    check_eq((got.data.len(), sha(&got.data)), (body.len(), sha(&body)), "body")
}

async fn many_channels() -> Res {
    let conn = connect().await?;
    let q = q_name("channels");
    let mut chans = Vec::new();
    for _ in 0..100 {
        chans.push(confirm_channel(&conn).await?);
    }
    declare(&chans[0], &q, opts(false, true, false)).await?;
    let mut confirms = Vec::new();
    for (i, ch) in chans.iter().enumerate() {
        confirms.push(ch.basic_publish("", &q, BasicPublishOptions::default(), i.to_string().as_bytes(), BasicProperties::default()).await.ctx("publish")?);
    }
    for c in confirms {
        check(c.await.ctx("confirm")?.is_ack(), "nacked")?;
    }
    let got = sorted_ints(drain(&chans[99], &q).await?.into_iter().map(|d| d.data));
    check_eq(got, (0..100).collect(), "one message per channel")?;
    for ch in &chans {
        ch.close(200, "bye").await.ctx("channel.close")?;
    }
    Ok(())
}

async fn heartbeat() -> Res {
    let conn = connect_with(&password(), Some(2)).await.ctx("connect")?;
    let ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&ch, &q_name("heartbeat"), opts(false, true, false)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    check(conn.status().connected(), format!("connection closed while idle: {:?}", conn.status().state()))?;
    publish(&ch, "", &q, b"alive", BasicProperties::default()).await?;
    check_eq(text(&get_one(&ch, &q, 5).await?).as_str(), "alive", "after idle")
}

async fn server_cancel() -> Res {
    let a = connect().await?;
    let ch = a.create_channel().await.ctx("channel")?;
    let q = declare(&ch, &q_name("cancel"), opts(false, false, false)).await?;
    let mut c = consume(&ch, &q, false).await?;
    let b = connect().await?;
    b.create_channel().await.ctx("channel")?.queue_delete(&q, QueueDeleteOptions::default()).await.ctx("delete")?;
    // lapin ends the consumer's stream when the server cancels it.
    match tokio::time::timeout(Duration::from_secs(5), c.next()).await {
        Ok(None) => Ok(()),
        Ok(Some(d)) => Err(format!("unexpected delivery {d:?}")),
        Err(_) => Err("no server-sent basic.cancel within 5s".into()),
    }
}

/// RabbitMQ's "hello world" sender for lapin, ending as the tutorial does.
async fn hello_send(q: &str) -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    declare(&ch, q, opts(false, false, false)).await?;
    ch.basic_publish("", q, BasicPublishOptions::default(), b"Hello World!", BasicProperties::default())
        .await
        .ctx("publish")?;
    conn.close(0, "").await.ctx("connection.close")
}

/// Deletes `q` on a new connection and checks how many messages it held.
async fn delete_counting(q: &str, want: u32, what: &str) -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    check_eq(ch.queue_delete(q, QueueDeleteOptions::default()).await.ctx("delete")?, want, what)?;
    conn.close(200, "").await.ctx("connection.close")
}

async fn close_clean() -> Res {
    // The close races the broker's socket close, so once is not enough.
    let q = q_name("close");
    for i in 0..50 {
        hello_send(&q).await.map_err(|e| format!("iteration {i}: {e}"))?;
    }
    delete_counting(&q, 50, "messages published before each close").await
}

async fn close_after_burst() -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    let q = declare(&ch, &q_name("burst"), opts(false, false, false)).await?;
    let n = 5000;
    for i in 0..n {
        // Without confirm mode the returned confirmation is already settled.
        ch.basic_publish("", &q, BasicPublishOptions::default(), format!("burst {i}").as_bytes(), BasicProperties::default())
            .await
            .ctx("publish")?;
    }
    conn.close(0, "").await.ctx("connection.close")?;
    delete_counting(&q, n, "messages published before close").await
}

fn long_strings(v: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(v.iter().map(|s| AMQPValue::LongString((*s).into())).collect::<Vec<_>>().into())
}

/// Headers as `k=v` text, so a failure reads well.
fn show_headers(h: &Option<FieldTable>) -> String {
    fn show(v: &AMQPValue) -> String {
        match v {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::FieldArray(a) => format!("[{}]", a.as_slice().iter().map(show).collect::<Vec<_>>().join(",")),
            v => format!("{v:?}"),
        }
    }
    let Some(h) = h else { return "none".into() };
    h.inner().iter().map(|(k, v)| format!("{k}={}", show(v))).collect::<Vec<_>>().join(" ")
}

/// One publish with CC and BCC headers; `keys` route to queues a, b, c
/// (on the default exchange, `keys` is None and the queue names are used).
async fn cc_bcc_round(ch: &Channel, ex: &str, keys: Option<[&str; 3]>) -> Res {
    let mut qs = Vec::new();
    for x in ["a", "b", "c"] {
        qs.push(declare(ch, &q_name(&format!("cc-{x}")), opts(false, true, false)).await?);
    }
    let keys = keys.unwrap_or([qs[0].as_str(), qs[1].as_str(), qs[2].as_str()]);
    if !ex.is_empty() {
        for (q, k) in qs.iter().zip(keys) {
            ch.queue_bind(q, ex, k, QueueBindOptions::default(), FieldTable::default()).await.ctx("bind")?;
        }
    }
    let mut headers = FieldTable::default();
    headers.insert("CC".into(), long_strings(&[keys[1]]));
    headers.insert("BCC".into(), long_strings(&[keys[2]]));
    headers.insert("x-other".into(), AMQPValue::LongString("kept".into()));
    let props = BasicProperties::default().with_headers(headers);
    ch.basic_publish(ex, keys[0], BasicPublishOptions::default(), b"cc and bcc", props).await.ctx("publish")?;
    // Each queue gets one copy, with the publish's routing key, and BCC gone.
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for (x, q) in ["a", "b", "c"].iter().zip(&qs) {
        let seen = match get_one(ch, q, 2).await {
            Ok(d) => {
                let again = ch.basic_get(q, BasicGetOptions { no_ack: true }).await.ctx("basic.get")?.is_some();
                format!("key={} body={} {} second_copy={again}", d.routing_key, text(&d), show_headers(d.properties.headers()))
            }
            Err(e) => e,
        };
        got.push(format!("{x}: {seen}"));
        want.push(format!("{x}: key={} body=cc and bcc CC=[{}] x-other=kept second_copy=false", keys[0], keys[1]));
    }
    check_eq(got, want, "deliveries")
}

async fn cc_bcc() -> Res {
    let conn = connect().await?;
    let ch = conn.create_channel().await.ctx("channel")?;
    cc_bcc_round(&ch, "", None).await?;
    let ex = q_name("cc");
    exchange(&ch, &ex, ExchangeKind::Direct).await?;
    cc_bcc_round(&ch, &ex, Some(["key-a", "key-b", "key-c"])).await?;
    ch.exchange_delete(&ex, ExchangeDeleteOptions::default()).await.ctx("exchange.delete")?;
    conn.close(200, "").await.ctx("connection.close")
}

async fn channel_close_race() -> Res {
    // Checked against RabbitMQ 3.10: when lapin's channel.close crosses the
    // broker's, lapin 2.5 drops the channel at the broker's close and then
    // fails on the close-ok for its own (InvalidChannel(1), or the next
    // channel fails with InvalidChannelState / InvalidConnectionState).
    Err(format!("{NA} lapin 2.5 loses the connection when its channel.close crosses the broker's, against RabbitMQ too"))
}

macro_rules! scenarios {
    ($($f:ident),* $(,)?) => {
        &[$((stringify!($f), (|| Box::pin($f()) as std::pin::Pin<Box<dyn std::future::Future<Output = Res> + Send>>) as Scenario)),*]
    };
}

fn main() {
    run(scenarios![
        hello, work_queues, pubsub, routing, topics, rpc, confirms_individual, confirms_batch,
        confirms_async, mandatory_return, nack_requeue, prefetch_limit, exclusive_locked,
        passive_404, redeclare_406, wrong_password, large_message, many_channels, heartbeat,
        server_cancel, close_clean, close_after_burst, cc_bcc, channel_close_race,
    ])
}
