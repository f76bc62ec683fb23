//! amqprs 2 against Warren. Usage: `amqprs_client SCENARIO`.
//!
//! amqprs reports what the server sends on its own (channel.close, a
//! server-sent basic.cancel, basic.return, confirms) through a
//! `ChannelCallback`; `Recorder` below writes those events into shared
//! state that the scenarios poll.

#[path = "../common.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
use amqprs::channel::*;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldArray, FieldTable, FieldValue, Nack, Return};
use async_trait::async_trait;
use common::*;
use tokio::sync::mpsc::UnboundedReceiver;

type Msg = amqprs::channel::ConsumerMessage;

/// What the server has told a channel on its own initiative.
#[derive(Default)]
struct Seen {
    closes: Vec<(u16, String)>,
    cancels: Vec<String>,
    returns: Vec<(u16, String, Vec<u8>)>,
    acked: u64,
    nacked: u64,
    // Delivery tags settled so far, to count `multiple` acks exactly.
    settled_upto: u64,
}

// A std Mutex: it is never held across an `.await`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Seen>>);

impl Events {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

struct Recorder(Events);

#[async_trait]
impl ChannelCallback for Recorder {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        self.0.with(|s| s.closes.push((close.reply_code(), close.reply_text().clone())));
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, cancel: Cancel) -> Result<(), amqprs::error::Error> {
        self.0.with(|s| s.cancels.push(cancel.consumer_tag().clone()));
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.with(|s| {
            let n = if ack.mutiple() { ack.delivery_tag() - s.settled_upto } else { 1 };
            s.acked += n;
            s.settled_upto = s.settled_upto.max(ack.delivery_tag());
        });
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0.with(|s| {
            s.nacked += 1;
            s.settled_upto = s.settled_upto.max(nack.delivery_tag());
        });
    }
    async fn publish_return(&mut self, _: &Channel, ret: Return, _: BasicProperties, content: Vec<u8>) {
        self.0.with(|s| s.returns.push((ret.reply_code(), ret.reply_text().clone(), content)));
    }
}

fn q_name(p: &str) -> String {
    name("amqprs", p)
}

async fn connect_with(pw: &str, heartbeat: u16) -> Result<Connection, amqprs::error::Error> {
    let args = OpenConnectionArguments::new(&host(), port(), &user(), pw).heartbeat(heartbeat).finish();
    let conn = Connection::open(&args).await?;
    conn.register_callback(DefaultConnectionCallback).await?;
    Ok(conn)
}

async fn connect() -> Result<Connection, String> {
    connect_with(&password(), 10).await.ctx("connect")
}

async fn channel(conn: &Connection) -> Result<(Channel, Events), String> {
    let ch = conn.open_channel(None).await.ctx("channel.open")?;
    let ev = Events::default();
    ch.register_callback(Recorder(ev.clone())).await.ctx("register_callback")?;
    Ok((ch, ev))
}

async fn confirm_channel(conn: &Connection) -> Result<(Channel, Events), String> {
    let (ch, ev) = channel(conn).await?;
    ch.confirm_select(ConfirmSelectArguments::default()).await.ctx("confirm.select")?;
    Ok((ch, ev))
}

async fn declare(ch: &Channel, args: QueueDeclareArguments) -> Result<(String, u32), String> {
    let (q, count, _) = ch.queue_declare(args).await.ctx("queue.declare")?.ok_or("no declare-ok")?;
    Ok((q, count))
}

fn qargs(q: &str, durable: bool, exclusive: bool, auto_delete: bool) -> QueueDeclareArguments {
    QueueDeclareArguments::new(q).durable(durable).exclusive(exclusive).auto_delete(auto_delete).finish()
}

async fn publish_with(ch: &Channel, ex: &str, key: &str, body: &[u8], props: BasicProperties, mandatory: bool) -> Res {
    let args = BasicPublishArguments::new(ex, key).mandatory(mandatory).finish();
    ch.basic_publish(props, body.to_vec(), args).await.ctx("publish")
}

async fn publish(ch: &Channel, ex: &str, key: &str, body: &[u8]) -> Res {
    publish_with(ch, ex, key, body, BasicProperties::default(), false).await
}

type Got = (amqprs::GetOk, BasicProperties, Vec<u8>);

async fn get_one(ch: &Channel, q: &str, secs: u64) -> Result<Got, String> {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if let Some(m) = ch.basic_get(BasicGetArguments::new(q).no_ack(true).finish()).await.ctx("basic.get")? {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("no message on {q}"))
}

async fn drain(ch: &Channel, q: &str) -> Result<Vec<Got>, String> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match ch.basic_get(BasicGetArguments::new(q).no_ack(true).finish()).await.ctx("basic.get")? {
            Some(m) => out.push(m),
            None => return Ok(out),
        }
    }
    Err("queue did not drain".into())
}

async fn consume(ch: &Channel, q: &str, manual_ack: bool) -> Result<(String, UnboundedReceiver<Msg>), String> {
    ch.basic_consume_rx(BasicConsumeArguments::new(q, "").manual_ack(manual_ack).finish()).await.ctx("basic.consume")
}

async fn next(rx: &mut UnboundedReceiver<Msg>, secs: u64, what: &str) -> Result<(u64, bool, BasicProperties, Vec<u8>), String> {
    match tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        Ok(Some(m)) => {
            let d = m.deliver.ok_or("no deliver")?;
            Ok((d.delivery_tag(), d.redelivered(), m.basic_properties.unwrap_or_default(), m.content.unwrap_or_default()))
        }
        Ok(None) => Err(format!("{what}: consumer ended")),
        Err(_) => Err(format!("timed out waiting for {what}")),
    }
}

/// Every delivery that arrives until the stream pauses for 50 ms.
async fn pending(rx: &mut UnboundedReceiver<Msg>) -> Vec<u64> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
        got.extend(m.deliver.map(|d| d.delivery_tag()));
    }
    got
}

/// Waits for the server's channel.close on `ev` and checks its code.
async fn expect_close<T: std::fmt::Debug>(r: Result<T, amqprs::error::Error>, ev: &Events, code: u16) -> Result<String, String> {
    // The failing call may return before or after the callback has run.
    until(|| ev.with(|s| !s.closes.is_empty()), 5, &format!("channel.close {code} (call returned {r:?})")).await?;
    let (got, text) = ev.with(|s| s.closes[0].clone());
    check_eq(got, code, &format!("reply code ({text})"))?;
    Ok(text)
}

async fn bound_queue(conn: &Connection, ex: &str, keys: &[&str]) -> Result<(Channel, String), String> {
    let (ch, _) = channel(conn).await?;
    let (q, _) = declare(&ch, QueueDeclareArguments::exclusive_server_named()).await?;
    check(q.starts_with("amq.gen-"), format!("server-named queue {q}"))?;
    for k in keys {
        ch.queue_bind(QueueBindArguments::new(&q, ex, k)).await.ctx("bind")?;
    }
    Ok((ch, q))
}

async fn exchange(ch: &Channel, ex: &str, kind: &str) -> Res {
    ch.exchange_declare(ExchangeDeclareArguments::new(ex, kind)).await.ctx("exchange.declare")
}

async fn wait_acks(ev: &Events, n: u64) -> Res {
    until(|| ev.with(|s| s.acked + s.nacked >= n), 10, &format!("{n} confirms")).await?;
    check_eq(ev.with(|s| (s.acked, s.nacked)), (n, 0), "acks and nacks")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn hello() -> Res {
    let conn = connect().await?;
    let (ch, _) = channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("hello"), false, false, false)).await?;
    publish(&ch, "", &q, b"Hello World!").await?;
    let (_, mut rx) = consume(&ch, &q, true).await?;
    let (tag, _, _, body) = next(&mut rx, 5, "hello").await?;
    check_eq(text(&body).as_str(), "Hello World!", "body")?;
    ch.basic_ack(BasicAckArguments::new(tag, false)).await.ctx("ack")?;
    ch.queue_delete(QueueDeleteArguments::new(&q)).await.ctx("delete")?;
    conn.close().await.ctx("close")
}

async fn work_queues() -> Res {
    let conn = connect().await?;
    let (pub_ch, _) = channel(&conn).await?;
    let (q, _) = declare(&pub_ch, qargs(&q_name("tasks"), true, false, false)).await?;
    let n = 20usize;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let wc = connect().await?;
        let (ch, _) = channel(&wc).await?;
        ch.basic_qos(BasicQosArguments::new(0, 1, false)).await.ctx("qos")?;
        let (_, mut rx) = consume(&ch, &q, true).await?;
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let _keep = wc;
            let mut mine = 0usize;
            while done.load(std::sync::atomic::Ordering::SeqCst) < n {
                let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await else { continue };
                let tag = m.deliver.ok_or("no deliver")?.delivery_tag();
                // Holding this task, the worker must not be sent another.
                if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                    return Err("worker has more than 1 unacked with prefetch 1".to_string());
                }
                ch.basic_ack(BasicAckArguments::new(tag, false)).await.ctx("ack")?;
                mine += 1;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok::<usize, String>(mine)
        }));
    }
    for i in 0..n {
        let props = BasicProperties::default().with_delivery_mode(amqprs::DELIVERY_MODE_PERSISTENT).finish();
        publish_with(&pub_ch, "", &q, format!("task {i}").as_bytes(), props, false).await?;
    }
    let mut counts = Vec::new();
    for w in workers {
        counts.push(tokio::time::timeout(Duration::from_secs(20), w).await.ctx("worker")?.ctx("worker")??);
    }
    check_eq(counts.iter().sum::<usize>(), n, "tasks done")?;
    check(counts.iter().all(|&c| c > 0), format!("fair dispatch: {counts:?}"))?;
    pub_ch.queue_delete(QueueDeleteArguments::new(&q)).await.ctx("delete")?;
    Ok(())
}

async fn pubsub() -> Res {
    let conn = connect().await?;
    let ex = q_name("logs");
    let (pub_ch, ev) = confirm_channel(&conn).await?;
    exchange(&pub_ch, &ex, "fanout").await?;
    let (c1, c2) = (connect().await?, connect().await?);
    let subs = [bound_queue(&c1, &ex, &[""]).await?, bound_queue(&c2, &ex, &[""]).await?];
    publish(&pub_ch, &ex, "", b"log line").await?;
    wait_acks(&ev, 1).await?;
    for (ch, q) in &subs {
        check_eq(text(&get_one(ch, q, 5).await?.2).as_str(), "log line", "fanout copy")?;
    }
    pub_ch.exchange_delete(ExchangeDeleteArguments::new(&ex)).await.ctx("exchange.delete")
}

async fn routing() -> Res {
    let conn = connect().await?;
    let ex = q_name("direct_logs");
    let (pub_ch, ev) = confirm_channel(&conn).await?;
    exchange(&pub_ch, &ex, "direct").await?;
    let (cha, qa) = bound_queue(&conn, &ex, &["error"]).await?;
    let (chb, qb) = bound_queue(&conn, &ex, &["info", "warning", "error"]).await?;
    for sev in ["info", "warning", "error"] {
        publish(&pub_ch, &ex, sev, sev.as_bytes()).await?;
    }
    wait_acks(&ev, 3).await?;
    let a: Vec<String> = drain(&cha, &qa).await?.iter().map(|m| text(&m.2)).collect();
    let b: Vec<String> = drain(&chb, &qb).await?.iter().map(|m| text(&m.2)).collect();
    check_eq(a, vec!["error".to_string()], "error-only queue")?;
    check_eq(b, ["info", "warning", "error"].map(String::from).to_vec(), "all-severities queue")?;
    pub_ch.exchange_delete(ExchangeDeleteArguments::new(&ex)).await.ctx("exchange.delete")
}

async fn topics() -> Res {
    let conn = connect().await?;
    let ex = q_name("topic_logs");
    let (pub_ch, ev) = confirm_channel(&conn).await?;
    exchange(&pub_ch, &ex, "topic").await?;
    let (ch1, q1) = bound_queue(&conn, &ex, TOPIC_Q1.0).await?;
    let (ch2, q2) = bound_queue(&conn, &ex, TOPIC_Q2.0).await?;
    for k in TOPIC_KEYS {
        publish(&pub_ch, &ex, k, k.as_bytes()).await?;
    }
    wait_acks(&ev, TOPIC_KEYS.len() as u64).await?;
    for (ch, q, want) in [(&ch1, &q1, TOPIC_Q1.1), (&ch2, &q2, TOPIC_Q2.1)] {
        let got: Vec<String> = drain(ch, q).await?.iter().map(|m| m.0.routing_key().clone()).collect();
        check_eq(got, want.iter().map(|s| s.to_string()).collect(), q)?;
    }
    pub_ch.exchange_delete(ExchangeDeleteArguments::new(&ex)).await.ctx("exchange.delete")
}

async fn rpc() -> Res {
    let server = connect().await?;
    let (sch, _) = channel(&server).await?;
    let (rpc_queue, _) = declare(&sch, qargs(&q_name("rpc_queue"), false, false, true)).await?;
    sch.basic_qos(BasicQosArguments::new(0, 1, false)).await.ctx("qos")?;
    let (_, mut requests) = consume(&sch, &rpc_queue, true).await?;
    tokio::spawn(async move {
        while let Some(m) = requests.recv().await {
            let (Some(d), Some(p), Some(body)) = (m.deliver, m.basic_properties, m.content) else { continue };
            let n: u32 = text(&body).parse().unwrap_or(0);
            let reply = BasicProperties::default().with_correlation_id(p.correlation_id().map_or("", |s| s)).finish();
            let args = BasicPublishArguments::new("", p.reply_to().map_or("", |s| s));
            let _ = sch.basic_publish(reply, fib(n).to_string().into_bytes(), args).await;
            let _ = sch.basic_ack(BasicAckArguments::new(d.delivery_tag(), false)).await;
        }
    });

    let client = connect().await?;
    let (cch, _) = channel(&client).await?;
    let (reply_q, _) = declare(&cch, QueueDeclareArguments::exclusive_server_named()).await?;
    let (_, mut replies) = consume(&cch, &reply_q, false).await?;
    for n in [1u32, 10, 30] {
        let corr = format!("corr-{n}");
        let props = BasicProperties::default().with_reply_to(&reply_q).with_correlation_id(&corr).finish();
        publish_with(&cch, "", &rpc_queue, n.to_string().as_bytes(), props, false).await?;
        loop {
            let (_, _, p, body) = next(&mut replies, 5, "rpc reply").await?;
            if p.correlation_id() == Some(&corr) {
                check_eq(text(&body), fib(n).to_string(), &format!("fib({n})"))?;
                break;
            }
        }
    }
    Ok(())
}

async fn confirms(batch: u64) -> Res {
    // amqprs has no call that waits for a confirm: every style reads the
    // acks that the channel callback records. `batch` publishes are made
    // before waiting; 100 means "publish all, then collect" (async).
    let conn = connect().await?;
    let (ch, ev) = confirm_channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("confirms"), false, true, false)).await?;
    let mut sent = 0;
    while sent < 100 {
        for _ in 0..batch {
            publish(&ch, "", &q, sent.to_string().as_bytes()).await?;
            sent += 1;
        }
        wait_acks(&ev, sent).await?;
    }
    let (_, count) = declare(&ch, QueueDeclareArguments::new(&q).passive(true).finish()).await?;
    check_eq(count, 100, "messages confirmed")
}

async fn confirms_individual() -> Res { confirms(1).await }
async fn confirms_batch() -> Res { confirms(10).await }
async fn confirms_async() -> Res { confirms(100).await }

async fn mandatory_return() -> Res {
    let conn = connect().await?;
    let (ch, ev) = channel(&conn).await?;
    publish_with(&ch, "", &q_name("nowhere"), b"lost", BasicProperties::default(), true).await?;
    until(|| ev.with(|s| !s.returns.is_empty()), 5, "basic.return").await?;
    check_eq(ev.with(|s| s.returns[0].clone()), (312, "NO_ROUTE".to_string(), b"lost".to_vec()), "basic.return")
}

async fn nack_requeue() -> Res {
    let conn = connect().await?;
    let (ch, _) = channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("nack"), false, true, false)).await?;
    publish(&ch, "", &q, b"again").await?;
    let (_, mut rx) = consume(&ch, &q, true).await?;
    let (tag, redelivered, _, body) = next(&mut rx, 5, "delivery").await?;
    check_eq((redelivered, text(&body).as_str()), (false, "again"), "first delivery")?;
    ch.basic_nack(BasicNackArguments::new(tag, false, true)).await.ctx("nack")?;
    let (tag, redelivered, _, body) = next(&mut rx, 5, "redelivery").await?;
    check_eq((redelivered, text(&body).as_str()), (true, "again"), "redelivery")?;
    ch.basic_ack(BasicAckArguments::new(tag, false)).await.ctx("ack")
}

async fn prefetch_limit() -> Res {
    let conn = connect().await?;
    let (ch, ev) = confirm_channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("prefetch"), false, true, false)).await?;
    let (total, limit) = (30usize, 5usize);
    for i in 0..total {
        publish(&ch, "", &q, i.to_string().as_bytes()).await?;
    }
    wait_acks(&ev, total as u64).await?;
    ch.basic_qos(BasicQosArguments::new(0, limit as u16, false)).await.ctx("qos")?;
    let (_, mut rx) = consume(&ch, &q, true).await?;
    let mut done = 0;
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while done < total && std::time::Instant::now() < end {
        // Let the broker push as much as it will before acking anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = pending(&mut rx).await;
        check(got.len() <= limit, format!("{} unacked with prefetch {limit}", got.len()))?;
        if let Some(&last) = got.last() {
            check(got.len() == limit || done + got.len() == total, format!("only {} delivered while more are ready", got.len()))?;
            ch.basic_ack(BasicAckArguments::new(last, true)).await.ctx("ack")?;
            done += got.len();
        }
    }
    check_eq(done, total, "consumed")
}

async fn exclusive_locked() -> Res {
    let a = connect().await?;
    let (ach, _) = channel(&a).await?;
    let (q, _) = declare(&ach, qargs(&q_name("exclusive"), false, true, false)).await?;
    let b = connect().await?;
    let (ch, ev) = channel(&b).await?;
    let t = expect_close(ch.queue_declare(qargs(&q, false, false, false)).await, &ev, 405).await?;
    check(t.starts_with("RESOURCE_LOCKED - "), format!("text {t}"))?;
    let (ch, ev) = channel(&b).await?;
    expect_close(ch.basic_consume_rx(BasicConsumeArguments::new(&q, "")).await.map(|r| r.0), &ev, 405).await?;
    Ok(())
}

async fn passive_404() -> Res {
    let conn = connect().await?;
    let q = q_name("missing");
    let (ch, ev) = channel(&conn).await?;
    let t = expect_close(ch.queue_declare(QueueDeclareArguments::new(&q).passive(true).finish()).await, &ev, 404).await?;
    check_eq(t, format!("NOT_FOUND - no queue '{q}' in vhost '/'"), "text")?;
    let (ch, _) = channel(&conn).await?;
    declare(&ch, qargs(&q, false, true, false)).await?;
    publish(&ch, "", &q, b"still working").await?;
    check_eq(text(&get_one(&ch, &q, 5).await?.2).as_str(), "still working", "after 404")
}

async fn redeclare_406() -> Res {
    let conn = connect().await?;
    let q = q_name("redeclare");
    let (ch, _) = channel(&conn).await?;
    declare(&ch, qargs(&q, false, false, false)).await?;
    let (ch2, ev) = channel(&conn).await?;
    let t = expect_close(ch2.queue_declare(qargs(&q, true, false, false)).await, &ev, 406).await?;
    check_eq(t, redeclare_text(&q), "text")?;
    ch.queue_delete(QueueDeleteArguments::new(&q)).await.ctx("delete")?;
    Ok(())
}

async fn wrong_password() -> Res {
    match connect_with("wrong-password", 10).await {
        Ok(_) => Err("login with a wrong password succeeded".into()),
        // amqprs does not advertise authentication_failure_close, so the
        // broker (RabbitMQ too) refuses by closing the socket after start-ok.
        Err(amqprs::error::Error::NetworkError(s)) if s.contains("peer shutdown") => Ok(()),
        Err(e) => {
            let s = format!("{e:?}");
            check(s.contains("403") || s.contains("ACCESS_REFUSED"), format!("error {s}"))
        }
    }
}

async fn large_message() -> Res {
    let conn = connect().await?;
    let (ch, _) = channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("large"), false, true, false)).await?;
    let body = large_body();
    publish(&ch, "", &q, &body).await?;
    let got = get_one(&ch, &q, 20).await?.2;
    check_eq((got.len(), sha(&got)), (body.len(), sha(&body)), "body")
}

async fn many_channels() -> Res {
    let conn = connect().await?;
    let q = q_name("channels");
    let mut chans = Vec::new();
    for _ in 0..100 {
        chans.push(confirm_channel(&conn).await?);
    }
    declare(&chans[0].0, qargs(&q, false, true, false)).await?;
    for (i, (ch, _)) in chans.iter().enumerate() {
        publish(ch, "", &q, i.to_string().as_bytes()).await?;
    }
    for (_, ev) in &chans {
        wait_acks(ev, 1).await?;
    }
    let got = sorted_ints(drain(&chans[99].0, &q).await?.into_iter().map(|m| m.2));
    check_eq(got, (0..100).collect(), "one message per channel")?;
    for (ch, _) in chans {
        ch.close().await.ctx("channel.close")?;
    }
    Ok(())
}

async fn heartbeat() -> Res {
    let conn = connect_with(&password(), 2).await.ctx("connect")?;
    check_eq(conn.heartbeat(), 2, "negotiated heartbeat")?;
    let (ch, _) = channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("heartbeat"), false, true, false)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    check(conn.is_open(), "connection closed while idle")?;
    publish(&ch, "", &q, b"alive").await?;
    check_eq(text(&get_one(&ch, &q, 5).await?.2).as_str(), "alive", "after idle")
}

async fn server_cancel() -> Res {
    let a = connect().await?;
    let (ch, ev) = channel(&a).await?;
    let (q, _) = declare(&ch, qargs(&q_name("cancel"), false, false, false)).await?;
    let (tag, _rx) = consume(&ch, &q, true).await?;
    let b = connect().await?;
    let (bch, _) = channel(&b).await?;
    bch.queue_delete(QueueDeleteArguments::new(&q)).await.ctx("delete")?;
    until(|| ev.with(|s| !s.cancels.is_empty()), 5, "server-sent basic.cancel").await?;
    check_eq(ev.with(|s| s.cancels.clone()), vec![tag], "cancelled tag")
}

/// RabbitMQ's "hello world" sender as amqprs's tutorial writes it.
async fn hello_send(q: &str) -> Res {
    let conn = connect().await?;
    let (ch, _) = channel(&conn).await?;
    declare(&ch, qargs(q, false, false, false)).await?;
    publish(&ch, "", q, b"Hello World!").await?;
    ch.close().await.ctx("channel.close")?;
    conn.close().await.ctx("connection.close")
}

/// Deletes `q` on a new connection and checks how many messages it held.
async fn delete_counting(q: &str, want: u32, what: &str) -> Res {
    let conn = connect().await?;
    let (ch, _) = channel(&conn).await?;
    let n = ch.queue_delete(QueueDeleteArguments::new(q)).await.ctx("delete")?;
    check_eq(n, Some(want), what)?;
    conn.close().await.ctx("connection.close")
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
    let (ch, _) = channel(&conn).await?;
    let (q, _) = declare(&ch, qargs(&q_name("burst"), false, false, false)).await?;
    let n = 5000;
    for i in 0..n {
        publish(&ch, "", &q, format!("burst {i}").as_bytes()).await?;
    }
    conn.close().await.ctx("connection.close")?;
    delete_counting(&q, n, "messages published before close").await
}

fn long_strings(v: &[&str]) -> FieldValue {
    FieldValue::A(FieldArray::try_from(v.iter().map(|&s| FieldValue::from(s)).collect::<Vec<_>>()).unwrap())
}

/// Headers as sorted `k=v` text, so a failure reads well.
fn show_headers(h: Option<&FieldTable>) -> String {
    fn show(v: &FieldValue) -> String {
        match v {
            FieldValue::A(a) => format!("[{}]", Vec::from(a.clone()).iter().map(show).collect::<Vec<_>>().join(",")),
            v => v.to_string(),
        }
    }
    let Some(h) = h else { return "none".into() };
    let mut kv: Vec<String> = h.as_ref().iter().map(|(k, v)| format!("{k}={}", show(v))).collect();
    kv.sort();
    kv.join(" ")
}

/// One publish with CC and BCC headers; `keys` route to queues a, b, c
/// (on the default exchange, `keys` is None and the queue names are used).
async fn cc_bcc_round(ch: &Channel, ex: &str, keys: Option<[&str; 3]>) -> Res {
    let mut qs = Vec::new();
    for x in ["a", "b", "c"] {
        qs.push(declare(ch, qargs(&q_name(&format!("cc-{x}")), false, true, false)).await?.0);
    }
    let keys = keys.unwrap_or([qs[0].as_str(), qs[1].as_str(), qs[2].as_str()]);
    if !ex.is_empty() {
        for (q, k) in qs.iter().zip(keys) {
            ch.queue_bind(QueueBindArguments::new(q, ex, k)).await.ctx("bind")?;
        }
    }
    let mut headers = FieldTable::new();
    headers.insert("CC".try_into().unwrap(), long_strings(&[keys[1]]));
    headers.insert("BCC".try_into().unwrap(), long_strings(&[keys[2]]));
    headers.insert("x-other".try_into().unwrap(), FieldValue::from("kept"));
    let props = BasicProperties::default().with_headers(headers).finish();
    publish_with(ch, ex, keys[0], b"cc and bcc", props, false).await?;
    // Each queue gets one copy, with the publish's routing key, and BCC gone.
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for (x, q) in ["a", "b", "c"].iter().zip(&qs) {
        let seen = match get_one(ch, q, 2).await {
            Ok((get, props, body)) => {
                let again = ch.basic_get(BasicGetArguments::new(q).no_ack(true).finish()).await.ctx("basic.get")?.is_some();
                format!("key={} body={} {} second_copy={again}", get.routing_key(), text(&body), show_headers(props.headers()))
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
    let (ch, _) = channel(&conn).await?;
    cc_bcc_round(&ch, "", None).await?;
    let ex = q_name("cc");
    exchange(&ch, &ex, "direct").await?;
    cc_bcc_round(&ch, &ex, Some(["key-a", "key-b", "key-c"])).await?;
    ch.exchange_delete(ExchangeDeleteArguments::new(&ex)).await.ctx("exchange.delete")?;
    conn.close().await.ctx("connection.close")
}

async fn channel_close_race() -> Res {
    // Checked against RabbitMQ 3.10: when amqprs's channel.close crosses the
    // broker's, the next calls on another channel of the connection fail
    // inside amqprs 2.1 (InternalChannelError "channel closed", or "failed
    // to receive response to Get").
    Err(format!("{NA} amqprs 2.1 breaks another channel when its channel.close crosses the broker's, against RabbitMQ too"))
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
