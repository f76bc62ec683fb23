//! Crash tests: the real `warren` binary, killed with SIGKILL.
//!
//! The promise under test: a persistent message on a durable queue that the
//! broker has confirmed is never lost, even if the broker is killed at any
//! moment. Three publishers with confirms keep up to [`WINDOW`] persistent
//! messages in flight, to a durable queue and through a durable fanout
//! exchange to two more, while the broker is killed at pseudo-random moments
//! and restarted on the same data directory. At the end every queue is
//! drained and every confirmed id must be found where it was routed.
//!
//! The second test checks what RabbitMQ brings back after a crash:
//! delivered-but-unacked persistent messages with `redelivered` set, the
//! others without it, in their original order, and no transient message.
//!
//! Layout: a [`Broker`] child-process handle and its log reader, a small
//! seeded PRNG for the crash moments, the publishers, the drain, the checks.
//! The seed can be changed with `WARREN_CRASH_SEED`; on failure the data
//! directory is kept and its path printed. `WARREN_CRASH_BIN` runs another
//! `warren` build instead of this package's (for instance one that confirms
//! before flushing, to watch the test fail).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures_core::Stream;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};

use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use tokio::sync::watch;

/// Broker kills while the publishers run (one more follows before the drain).
const KILLS: u32 = 20;
/// Concurrent publishers.
const PUBLISHERS: u32 = 3;
/// Most unconfirmed publishes per publisher.
const WINDOW: usize = 200;
/// Crash moments are drawn from this range, in milliseconds after the
/// broker said it was listening.
const CRASH_DELAY_MS: std::ops::Range<u64> = 100..600;
/// Bound on any single client operation (connect, declare, one confirm).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a broker start: spawn to its `warren started` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on the whole publishing phase of one publisher.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(45);
/// Most connections one publisher opens.
const MAX_SESSIONS: u32 = 400;

const DIRECT_QUEUE: &str = "crash-direct";
const FANOUT: &str = "crash-fanout";
const FAN_QUEUES: [&str; 2] = ["crash-fan-a", "crash-fan-b"];

// ---------------------------------------------------------------------------
// The broker process.

/// The last lines the brokers logged, and every ERROR line, for reports.
#[derive(Default)]
struct Logs {
    /// A std Mutex: held only to push or copy lines, never across an await.
    inner: Mutex<LogLines>,
}

#[derive(Default)]
struct LogLines {
    tail: VecDeque<String>,
    errors: Vec<String>,
}

impl Logs {
    fn push(&self, line: String) {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if line.contains("ERROR") && l.errors.len() < 50 {
            l.errors.push(line.clone());
        }
        if l.tail.len() == 200 {
            l.tail.pop_front();
        }
        l.tail.push_back(line);
    }

    fn tail(&self) -> String {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn errors(&self) -> Vec<String> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        l.errors.clone()
    }
}

/// A running `warren` child process; killed with SIGKILL when dropped.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    /// Starts `warren` on `data_dir`, listening on an ephemeral loopback
    /// port, and waits (bounded) for its `warren started` line and for the
    /// port to accept a connection. Blocking.
    fn start(data_dir: &Path, logs: &Arc<Logs>) -> Broker {
        let mut child = Command::new(warren_bin())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--management-listen")
            .arg("127.0.0.1:0")
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log")
            .arg("info")
            // RUST_LOG would override --log; colours would split the fields.
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the warren binary: {e}"));
        let (tx, rx) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        // One reader per pipe, to its end (the child's death): the pipes are
        // drained so the broker never blocks on logging, and the first
        // `warren started` line hands its address over.
        for stream in streams {
            let tx = tx.clone();
            let logs = Arc::clone(logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    if line.contains("warren started")
                        && let Some(addr) = listen_addr(&line)
                    {
                        let _ = tx.send(addr);
                    }
                    logs.push(line);
                }
            });
        }
        drop(tx);
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "warren did not log 'warren started' ({e:?}, exit {status:?}); last lines:\n{}",
                    logs.tail()
                );
            }
        };
        assert!(addr.ip().is_loopback(), "broker listens on {addr}");
        let mut broker = Broker { child, addr };
        broker.wait_accepting(logs);
        broker
    }

    /// The listener is bound before the start line is logged, so the first
    /// attempt normally succeeds; the retries only bound a slow accept.
    fn wait_accepting(&mut self, logs: &Logs) {
        for _ in 0..50 {
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("warren exited ({status}); last lines:\n{}", logs.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} does not accept connections", self.addr);
    }

    /// SIGKILL, then reap. Blocking.
    fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        // `Child::kill` sends SIGKILL on Unix: no shutdown path runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The broker binary: this package's, unless `WARREN_CRASH_BIN` names
/// another.
fn warren_bin() -> PathBuf {
    std::env::var_os("WARREN_CRASH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_warren")))
}

/// Kills `broker` with SIGKILL and starts a new one on the same directory,
/// off the async worker threads.
async fn kill_and_restart(broker: Broker, data_dir: &Path, logs: &Arc<Logs>) -> Broker {
    let data_dir = data_dir.to_path_buf();
    let logs = Arc::clone(logs);
    tokio::task::spawn_blocking(move || {
        broker.kill();
        Broker::start(&data_dir, &logs)
    })
    .await
    .unwrap()
}

async fn start(data_dir: &Path, logs: &Arc<Logs>) -> Broker {
    let data_dir = data_dir.to_path_buf();
    let logs = Arc::clone(logs);
    tokio::task::spawn_blocking(move || Broker::start(&data_dir, &logs))
        .await
        .unwrap()
}

fn url(addr: SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// Drops ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in a `listen=127.0.0.1:PORT` field.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A fresh data directory under the system temp dir; removed on drop unless
/// the test is failing, when it is kept for inspection.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "warren-crash-{name}-{}-{nanos}",
            std::process::id()
        ));
        assert!(!path.exists(), "{} already exists", path.display());
        DataDir(path)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash test failed: data directory kept at {}",
                self.0.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers.

/// SplitMix64: a seeded PRNG, so a failing run can be repeated.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn in_range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.next() % (r.end - r.start)
    }
}

/// Awaits `fut` for at most [`OP_TIMEOUT`]; a lapin error or a timeout
/// becomes a text.
async fn op<T>(what: &str, fut: impl Future<Output = lapin::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {OP_TIMEOUT:?}")),
    }
}

async fn connect(addr: SocketAddr) -> Result<Connection, String> {
    op(
        "connect",
        Connection::connect(&url(addr), ConnectionProperties::default()),
    )
    .await
}

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

/// The next delivery of `consumer`, bounded by [`OP_TIMEOUT`].
async fn next_delivery(consumer: &mut lapin::Consumer) -> Result<Delivery, String> {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx));
    match tokio::time::timeout(OP_TIMEOUT, next).await {
        Ok(Some(Ok(d))) => Ok(d),
        Ok(Some(Err(e))) => Err(format!("consumer error: {e}")),
        Ok(None) => Err("consumer cancelled".to_string()),
        Err(_) => Err(format!("no delivery within {OP_TIMEOUT:?}")),
    }
}

// ---------------------------------------------------------------------------
// Publishers.

/// Which broker is up: a new epoch per start; `None` while it is down.
#[derive(Debug, Clone, Copy)]
struct Current {
    epoch: u32,
    addr: Option<SocketAddr>,
}

/// What one publisher did.
#[derive(Debug, Default)]
struct PublisherReport {
    id: u32,
    /// Sequence numbers `0..attempted` were handed to `basic.publish`.
    attempted: u64,
    /// Sequence numbers whose confirm was an ack.
    confirmed: Vec<u64>,
    /// Confirms that were nacks (not confirmations).
    nacked: u64,
    /// Acked but returned as unroutable: a queue or binding was missing.
    returned: Vec<u64>,
    /// Acks per broker epoch.
    acks_by_epoch: HashMap<u32, u64>,
    sessions: u32,
    broken_sessions: u32,
    last_error: Option<String>,
}

impl PublisherReport {
    fn record(&mut self, seq: u64, epoch: u32, c: Confirmation) {
        match c {
            Confirmation::Ack(None) => {
                self.confirmed.push(seq);
                *self.acks_by_epoch.entry(epoch).or_default() += 1;
            }
            Confirmation::Ack(Some(_)) => self.returned.push(seq),
            Confirmation::Nack(_) => self.nacked += 1,
            Confirmation::NotRequested => panic!("publisher confirms were not on"),
        }
    }
}

/// Even sequence numbers go to the durable queue by the default exchange,
/// odd ones through the fanout exchange to both of its queues.
fn route(seq: u64) -> (&'static str, &'static str) {
    if seq.is_multiple_of(2) {
        ("", DIRECT_QUEUE)
    } else {
        (FANOUT, "")
    }
}

fn body(publisher: u32, seq: u64) -> String {
    format!("{publisher}:{seq}")
}

/// Publishes until `stop`, reconnecting to whichever broker is up.
async fn publisher(
    id: u32,
    mut current: watch::Receiver<Current>,
    stop: Arc<AtomicBool>,
) -> PublisherReport {
    let mut report = PublisherReport {
        id,
        ..Default::default()
    };
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    for _ in 0..MAX_SESSIONS {
        if stop.load(Ordering::SeqCst) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "publisher {id} still running after {PUBLISH_DEADLINE:?}: {report:?}"
        );
        let now = *current.borrow_and_update();
        if let Some(addr) = now.addr {
            report.sessions += 1;
            match session(id, addr, now.epoch, &mut report, &stop).await {
                Ok(()) => return report,
                Err(e) => {
                    report.broken_sessions += 1;
                    report.last_error = Some(e);
                }
            }
        }
        // Wait for the next broker (or, if the failure had another cause,
        // retry after a bounded wait).
        let _ = tokio::time::timeout(Duration::from_secs(2), current.changed()).await;
    }
    panic!("publisher {id} opened {MAX_SESSIONS} connections: {report:?}");
}

/// One connection's worth of publishing. `Ok` when stopped, `Err` when the
/// connection broke (or anything else failed).
async fn session(
    id: u32,
    addr: SocketAddr,
    epoch: u32,
    report: &mut PublisherReport,
    stop: &AtomicBool,
) -> Result<(), String> {
    let conn = connect(addr).await?;
    let ch = op("channel.open", conn.create_channel()).await?;
    op(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    let mut pending: VecDeque<(u64, PublisherConfirm)> = VecDeque::with_capacity(WINDOW);
    let result = 'session: loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        while pending.len() < WINDOW {
            let seq = report.attempted;
            report.attempted += 1;
            let (exchange, key) = route(seq);
            let published = op(
                "basic.publish",
                ch.basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body(id, seq).as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                ),
            )
            .await;
            match published {
                Ok(confirm) => pending.push_back((seq, confirm)),
                Err(e) => break 'session Err(e),
            }
        }
        let Some((seq, confirm)) = pending.pop_front() else {
            continue;
        };
        match op("confirm", confirm).await {
            Ok(c) => report.record(seq, epoch, c),
            Err(e) => break Err(e),
        }
    };
    // Stopping: wait for the outstanding confirms. Broken: keep the acks
    // that had already arrived (a zero timeout still polls once).
    let wait = if result.is_ok() {
        OP_TIMEOUT
    } else {
        Duration::ZERO
    };
    for (seq, confirm) in pending {
        if let Ok(Ok(c)) = tokio::time::timeout(wait, confirm).await {
            report.record(seq, epoch, c);
        }
    }
    if result.is_ok() {
        op("connection.close", conn.close(200, "done".into())).await?;
    }
    result
}

// ---------------------------------------------------------------------------
// Setup and drain.

async fn declare_topology(addr: SocketAddr) {
    let conn = connect(addr).await.unwrap();
    let ch = op("channel.open", conn.create_channel()).await.unwrap();
    for q in [DIRECT_QUEUE, FAN_QUEUES[0], FAN_QUEUES[1]] {
        op(
            "queue.declare",
            ch.queue_declare(q.into(), durable(), FieldTable::default()),
        )
        .await
        .unwrap();
    }
    op(
        "exchange.declare",
        ch.exchange_declare(
            FANOUT.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for q in FAN_QUEUES {
        op(
            "queue.bind",
            ch.queue_bind(
                q.into(),
                FANOUT.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    op("connection.close", conn.close(200, "done".into()))
        .await
        .unwrap();
}

/// Consumes (with acks) every message of `queue`; returns the bodies in
/// delivery order and checks the queue is empty afterwards.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let declared = op(
        "queue.declare passive",
        ch.queue_declare(queue.into(), passive(), FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("durable queue {queue} is gone after the crashes: {e}"));
    let expected = declared.message_count() as usize;
    op("basic.qos", ch.basic_qos(1000, BasicQosOptions::default()))
        .await
        .unwrap();
    let tag = format!("drain-{queue}");
    let mut consumer = op(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let mut bodies = Vec::with_capacity(expected);
    let mut last_tag = None;
    for i in 0..expected {
        let d = next_delivery(&mut consumer)
            .await
            .unwrap_or_else(|e| panic!("{queue}: delivery {i} of {expected}: {e}"));
        bodies.push(String::from_utf8(d.data).unwrap());
        last_tag = Some(d.delivery_tag);
        if i % 500 == 499 {
            op(
                "basic.ack",
                ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true }),
            )
            .await
            .unwrap();
        }
    }
    if let Some(t) = last_tag {
        op(
            "basic.ack",
            ch.basic_ack(t, BasicAckOptions { multiple: true }),
        )
        .await
        .unwrap();
    }
    op(
        "basic.cancel",
        ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    // Anything delivered beyond the count went back on cancel; the queue
    // must now be empty.
    let left = op(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap();
    assert!(
        left.is_none(),
        "{queue} still has messages after draining the {expected} it reported"
    );
    bodies
}

/// Parses `publisher:seq`.
fn parse_body(b: &str) -> Option<(u32, u64)> {
    let (p, s) = b.split_once(':')?;
    Some((p.parse().ok()?, s.parse().ok()?))
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_persistent_messages_survive_repeated_sigkill() {
    let started = Instant::now();
    let seed = std::env::var("WARREN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_u64);
    let mut rng = SplitMix64(seed);
    let dir = DataDir::new("confirms");
    let logs = Arc::new(Logs::default());

    let mut broker = start(&dir.0, &logs).await;
    declare_topology(broker.addr).await;

    let (tx, rx) = watch::channel(Current {
        epoch: 0,
        addr: Some(broker.addr),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|id| tokio::spawn(publisher(id, rx.clone(), Arc::clone(&stop))))
        .collect();

    let mut restarts = 0u32;
    for kill in 1..=KILLS {
        // The delay only picks the crash moment; nothing waits on it.
        let delay = rng.in_range(CRASH_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        tx.send_replace(Current {
            epoch: kill,
            addr: None,
        });
        broker = kill_and_restart(broker, &dir.0, &logs).await;
        restarts += 1;
        tx.send_replace(Current {
            epoch: kill,
            addr: Some(broker.addr),
        });
    }
    // Let the last broker confirm something before stopping, as the others
    // did.
    let delay = rng.in_range(CRASH_DELAY_MS);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    for p in publishers {
        let r = tokio::time::timeout(Duration::from_secs(30), p)
            .await
            .expect("a publisher did not stop within 30 s")
            .unwrap();
        reports.push(r);
    }
    let publish_phase = started.elapsed();

    // One more crash, with everything confirmed and nothing in flight.
    broker = kill_and_restart(broker, &dir.0, &logs).await;
    restarts += 1;

    let conn = connect(broker.addr).await.unwrap();
    let ch = op("channel.open", conn.create_channel()).await.unwrap();
    let mut contents: HashMap<&str, Vec<String>> = HashMap::new();
    for q in [DIRECT_QUEUE, FAN_QUEUES[0], FAN_QUEUES[1]] {
        contents.insert(q, drain(&ch, q).await);
    }
    op("connection.close", conn.close(200, "done".into()))
        .await
        .unwrap();
    drop(broker);

    // Check.
    let attempted: HashMap<u32, u64> = reports.iter().map(|r| (r.id, r.attempted)).collect();
    let mut found: HashMap<&str, HashSet<(u32, u64)>> = HashMap::new();
    let mut duplicates = 0usize;
    let mut out_of_order = Vec::new();
    let mut misrouted = Vec::new();
    let mut unknown = Vec::new();
    for (q, bodies) in &contents {
        let set = found.entry(q).or_default();
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for b in bodies {
            let Some((p, s)) =
                parse_body(b).filter(|(p, s)| attempted.get(p).is_some_and(|&n| *s < n))
            else {
                unknown.push(format!("{q}: {b:?}"));
                continue;
            };
            if !set.insert((p, s)) {
                duplicates += 1;
            }
            if (route(s).0 == FANOUT) != (*q != DIRECT_QUEUE) {
                misrouted.push(format!("{q}: {b}"));
            }
            // One publisher's messages, one channel at a time, come out of
            // each queue in publishing order.
            if let Some(prev) = last_seq.insert(p, s)
                && prev >= s
            {
                out_of_order.push(format!("{q}: {p}:{s} after {p}:{prev}"));
            }
        }
    }
    let mut confirmed = 0usize;
    let mut lost = Vec::new();
    let mut confirmed_ids = HashSet::new();
    for r in &reports {
        for &s in &r.confirmed {
            confirmed += 1;
            confirmed_ids.insert((r.id, s));
            let queues: &[&str] = if route(s).0 == FANOUT {
                &FAN_QUEUES
            } else {
                &[DIRECT_QUEUE]
            };
            for q in queues {
                if !found[q].contains(&(r.id, s)) {
                    lost.push(format!("{q}: {}", body(r.id, s)));
                }
            }
        }
    }
    let survivors: HashSet<(u32, u64)> = found
        .values()
        .flatten()
        .filter(|id| !confirmed_ids.contains(id))
        .copied()
        .collect();
    let attempted_total: u64 = attempted.values().sum();
    let nacked: u64 = reports.iter().map(|r| r.nacked).sum();
    let returned: Vec<String> = reports
        .iter()
        .flat_map(|r| r.returned.iter().map(|&s| body(r.id, s)))
        .collect();
    let mut epochs_with_acks: HashSet<u32> = HashSet::new();
    for r in &reports {
        epochs_with_acks.extend(r.acks_by_epoch.keys());
    }
    let sessions: u32 = reports.iter().map(|r| r.sessions).sum();
    let broken: u32 = reports.iter().map(|r| r.broken_sessions).sum();
    let errors = logs.errors();

    println!("crash test: seed {seed:#x}");
    println!(
        "crash test: {restarts} restarts ({KILLS} SIGKILLs while publishing, 1 after), \
         {} of {} broker epochs confirmed something",
        epochs_with_acks.len(),
        KILLS + 1
    );
    println!(
        "crash test: {attempted_total} publishes attempted, {confirmed} confirmed, {nacked} nacked, \
         {} returned; {sessions} connections, {broken} broken",
        returned.len()
    );
    println!(
        "crash test: found {} / {} / {} messages in {DIRECT_QUEUE} / {} / {}",
        contents[DIRECT_QUEUE].len(),
        contents[FAN_QUEUES[0]].len(),
        contents[FAN_QUEUES[1]].len(),
        FAN_QUEUES[0],
        FAN_QUEUES[1]
    );
    println!(
        "crash test: lost {}, duplicates {duplicates}, unconfirmed that survived {}, \
         out of order {}, misrouted {}, unknown {}",
        lost.len(),
        survivors.len(),
        out_of_order.len(),
        misrouted.len(),
        unknown.len()
    );
    println!(
        "crash test: broker ERROR lines {}; publishing {:.1?}, total {:.1?}",
        errors.len(),
        publish_phase,
        started.elapsed()
    );
    for r in &reports {
        if let Some(e) = &r.last_error {
            println!("crash test: publisher {} last error: {e}", r.id);
        }
    }
    for e in errors.iter().take(10) {
        println!("crash test: broker: {e}");
    }

    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        returned.is_empty(),
        "acked as unroutable (queue or binding missing): {:?}",
        &returned[..returned.len().min(20)]
    );
    assert!(misrouted.is_empty(), "misrouted: {misrouted:?}");
    assert!(unknown.is_empty(), "never published: {unknown:?}");
    assert!(
        out_of_order.is_empty(),
        "out of order: {:?}",
        &out_of_order[..out_of_order.len().min(20)]
    );
    // The test means something only if confirms arrived while the broker
    // was being killed, in most of its lives.
    assert!(
        epochs_with_acks.len() as u32 > KILLS / 2,
        "only {} broker epochs confirmed anything",
        epochs_with_acks.len()
    );
    assert!(confirmed > 1000, "only {confirmed} confirms");
    assert!(errors.is_empty(), "broker logged errors: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_unacked_messages_come_back_redelivered_after_sigkill() {
    const QUEUE: &str = "crash-redeliver";
    const PERSISTENT: usize = 10;
    const TRANSIENT: usize = 5;
    const DELIVERED: usize = 6;
    let dir = DataDir::new("redeliver");
    let logs = Arc::new(Logs::default());
    let broker = start(&dir.0, &logs).await;

    let conn = connect(broker.addr).await.unwrap();
    let publisher = op("channel.open", conn.create_channel()).await.unwrap();
    op(
        "queue.declare",
        publisher.queue_declare(QUEUE.into(), durable(), FieldTable::default()),
    )
    .await
    .unwrap();
    op(
        "confirm.select",
        publisher.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    // p0 t0 p1 t1 ... p4 t4 p5 ... p9: transient messages between
    // persistent ones, on the same durable queue.
    let mut order = Vec::new();
    for i in 0..PERSISTENT {
        order.push((format!("p{i}"), 2));
        if i < TRANSIENT {
            order.push((format!("t{i}"), 1));
        }
    }
    let publish = |body: String, mode: u8| {
        let ch = publisher.clone();
        async move {
            let confirm = op(
                "basic.publish",
                ch.basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(mode),
                ),
            )
            .await
            .unwrap();
            let c = op("confirm", confirm).await.unwrap();
            assert!(c.is_ack(), "{body}: {c:?}");
        }
    };
    for (body, mode) in &order {
        publish(body.clone(), *mode).await;
    }

    // Deliver the first six (p0 t0 p1 t1 p2 t2) to a consumer that never
    // acks them.
    let consumer_ch = op("channel.open", conn.create_channel()).await.unwrap();
    op(
        "basic.qos",
        consumer_ch.basic_qos(DELIVERED as u16, BasicQosOptions::default()),
    )
    .await
    .unwrap();
    let mut consumer = op(
        "basic.consume",
        consumer_ch.basic_consume(
            QUEUE.into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for (i, (expected, _)) in order.iter().take(DELIVERED).enumerate() {
        let d = next_delivery(&mut consumer).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&d.data),
            *expected,
            "delivery {i} before the crash"
        );
        assert!(!d.redelivered, "{expected} was never delivered before");
    }
    // A confirmed persistent publish after the deliveries: its confirm
    // waits for a flush covering everything the broker did before it,
    // including recording those deliveries. (Without it, whether the
    // delivered marks reached the disk before the kill would be a race.)
    publish("marker".to_string(), 2).await;

    let broker = kill_and_restart(broker, &dir.0, &logs).await;
    drop(consumer);
    drop(conn);

    let conn = connect(broker.addr).await.unwrap();
    let ch = op("channel.open", conn.create_channel()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..(PERSISTENT + TRANSIENT + 2) {
        match op(
            "basic.get",
            ch.basic_get(QUEUE.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .unwrap()
        {
            Some(m) => got.push((
                String::from_utf8(m.delivery.data.clone()).unwrap(),
                m.delivery.redelivered,
            )),
            None => break,
        }
    }
    let mut expected: Vec<(String, bool)> = (0..PERSISTENT)
        .map(|i| (format!("p{i}"), i < DELIVERED / 2))
        .collect();
    expected.push(("marker".to_string(), false));
    println!("redelivery test: after SIGKILL got {got:?}");
    assert_eq!(
        got, expected,
        "after SIGKILL: persistent messages in order, the delivered ones (p0-p2) redelivered, \
         no transient message"
    );
    op("connection.close", conn.close(200, "done".into()))
        .await
        .unwrap();
    let errors = logs.errors();
    assert!(errors.is_empty(), "broker logged errors: {errors:?}");
}
