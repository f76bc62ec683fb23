//! Orchestration: declare the topology, start the consumers and producers,
//! say go, time the window (or the backlog's two phases), settle, collect.
//!
//! Every wait here has a bound: setup by [`SETUP_TIMEOUT`], the window by
//! --duration, the catch-up by --settle, joins by [`JOIN_TIMEOUT`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{self, Sampler};
use crate::client::Conn;
use crate::consumer;
use crate::histogram::Histogram;
use crate::options::Options;
use crate::producer;
use crate::report::{Backlog, Latency, Probe, Report, Settle, SinkStats};
use crate::shared::{Counters, Snapshot, epoch};
use crate::sink;

/// How long all connections together may take to open.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a task may take to finish once told to.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often completion (settle, drain) is polled.
const POLL: Duration = Duration::from_millis(5);

/// Runs what the options describe and reports. `Err` means the run could
/// not start (a connection or declare failed); failures during the run are
/// counted in the report's errors.
pub async fn run(mut opts: Options) -> Result<Report, String> {
    epoch();
    if opts.probe {
        return probe(opts).await;
    }
    let sink = if opts.sink {
        let s = sink::spawn().map_err(|e| format!("sink: {e}"))?;
        opts.host = s.addr.ip().to_string();
        opts.port = s.addr.port();
        Some(s)
    } else {
        None
    };
    let opts = Arc::new(opts);
    let mut queued = 0;
    let mut tls = None;
    if sink.is_none() {
        (queued, tls) = setup_topology(&opts)
            .await
            .map_err(|e| format!("declaring the topology on {}: {e}", opts.addr()))?;
    }
    let counters = Arc::new(Counters::default());
    let mut report = if opts.backlog > 0 {
        backlog(&opts, &counters, queued).await?
    } else {
        timed(&opts, &counters).await?
    };
    if let Some(s) = sink {
        let per_message = producer::template(&opts, "", &opts.queue_name(0), 131_072)
            .bytes
            .len() as u64;
        let bytes = s.bytes.load(std::sync::atomic::Ordering::Relaxed);
        report.mode = "sink";
        report.sink = Some(SinkStats {
            bytes,
            bytes_per_message: per_message,
            messages: bytes / per_message,
            mib_per_s: bytes as f64 / 1_048_576.0 / report.duration_s,
        });
    }
    report.tls = tls;
    report.errors = counters.snapshot().errors;
    report.error_messages = counters.messages();
    Ok(report)
}

/// Declares the fanout exchange and the (non-exclusive) queues, binds and
/// purges them, on a connection of its own. Returns how many messages the
/// queues hold afterwards (0 unless --no-purge), and what TLS the
/// connection negotiated.
async fn setup_topology(opts: &Options) -> crate::client::Result<(u64, Option<String>)> {
    let mut queued = 0;
    let mut conn = Conn::open(opts).await?;
    let tls = conn.tls_session();
    if opts.fanout > 0 {
        conn.declare_fanout(opts).await?;
    }
    if !opts.exclusive {
        for q in 0..opts.queues {
            let name = opts.queue_name(q);
            let count = conn.declare_queue(opts, &name, false).await?;
            if opts.fanout > 0 {
                conn.bind_fanout(opts, &name).await?;
            }
            if opts.no_purge {
                queued += u64::from(count);
            } else {
                conn.purge(&name).await?;
            }
        }
    }
    conn.close().await;
    Ok((queued, tls))
}

/// What producers publish to: the fanout exchange, or their queues through
/// the default exchange.
fn producer_targets(opts: &Options, p: u32) -> Vec<(String, String)> {
    if opts.fanout > 0 {
        vec![(opts.fanout_exchange(), String::new())]
    } else {
        opts.queues_for(p, opts.producers)
            .into_iter()
            .map(|q| (String::new(), opts.queue_name(q)))
            .collect()
    }
}

/// How many deliveries one publish makes.
fn copies(opts: &Options) -> u64 {
    u64::from(opts.fanout.max(1))
}

/// The messages a run's broker CPU is divided by: the confirmed publishes
/// when producers publish with confirms, else the deliveries received.
fn run_messages(opts: &Options, counts: &Snapshot) -> u64 {
    if opts.confirm > 0 && opts.producers > 0 {
        counts.confirmed
    } else {
        counts.received
    }
}

/// Waits for `n` tasks to report their setup; false if one failed or the
/// bound passed.
async fn all_ready(rx: &mut mpsc::Receiver<bool>, n: u32) -> bool {
    tokio::time::timeout(SETUP_TIMEOUT, async {
        for _ in 0..n {
            if rx.recv().await != Some(true) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false)
}

type Go = (
    watch::Sender<Option<Instant>>,
    watch::Receiver<Option<Instant>>,
);

fn spawn_producers(
    opts: &Arc<Options>,
    counters: &Arc<Counters>,
    go: &Go,
    limit_total: Option<u64>,
) -> (Vec<JoinHandle<()>>, mpsc::Receiver<bool>) {
    let n = opts.producers;
    let (ready_tx, ready_rx) = mpsc::channel(n.max(1) as usize);
    let handles = (0..n)
        .map(|p| {
            let limit = limit_total
                .map(|total| total / u64::from(n) + u64::from(u64::from(p) < total % u64::from(n)));
            let plan = producer::Plan {
                id: p,
                targets: producer_targets(opts, p),
                limit,
                duration: Duration::from_secs(opts.duration),
                graceful_close: !opts.sink,
            };
            tokio::spawn(producer::run(
                opts.clone(),
                plan,
                counters.clone(),
                ready_tx.clone(),
                go.1.clone(),
            ))
        })
        .collect();
    (handles, ready_rx)
}

fn spawn_consumers(
    opts: &Arc<Options>,
    counters: &Arc<Counters>,
    go: &Go,
    stop: &watch::Receiver<bool>,
    record_for: Option<Duration>,
) -> (Vec<JoinHandle<Histogram>>, mpsc::Receiver<bool>) {
    let n = opts.consumers;
    let (ready_tx, ready_rx) = mpsc::channel(n.max(1) as usize);
    let handles = (0..n)
        .map(|c| {
            let plan = consumer::Plan {
                id: c,
                queues: opts.queues_for(c, n),
                declare: opts.exclusive,
            };
            tokio::spawn(consumer::run(
                opts.clone(),
                plan,
                counters.clone(),
                ready_tx.clone(),
                go.1.clone(),
                stop.clone(),
                record_for,
            ))
        })
        .collect();
    (handles, ready_rx)
}

/// Joins tasks, all by `deadline`; a task that has not finished by then is
/// aborted and counted as an error.
async fn join_all<T: Default>(
    handles: Vec<JoinHandle<T>>,
    counters: &Counters,
    deadline: Instant,
) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for mut h in handles {
        match tokio::time::timeout_at(deadline.into(), &mut h).await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => counters.error("task", e),
            Err(_) => {
                h.abort();
                counters.error("task", "did not finish in time; aborted");
            }
        }
    }
    out
}

/// Prints a progress line every second until aborted.
fn progress(counters: Arc<Counters>, quiet: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let start = Instant::now();
        let mut last = counters.snapshot();
        let mut tick = tokio::time::interval_at(
            (start + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        loop {
            tick.tick().await;
            let now = counters.snapshot();
            eprintln!(
                "[{:>4}s] sent {} msg/s, confirmed {} msg/s, received {} msg/s, errors {}",
                start.elapsed().as_secs(),
                now.sent - last.sent,
                now.confirmed - last.confirmed,
                now.received - last.received,
                now.errors
            );
            last = now;
        }
    })
}

fn start_sampler(opts: &Options) -> Result<Option<Sampler>, String> {
    opts.broker_pid.map(Sampler::start).transpose()
}

fn finish_sampler(s: Option<Sampler>, counters: &Counters) -> Option<broker::BrokerStats> {
    match s?.finish() {
        Ok(stats) => Some(stats),
        Err(e) => {
            counters.error("broker sampling", e);
            None
        }
    }
}

fn merged(hists: &[Histogram]) -> Histogram {
    let mut all = Histogram::default();
    for h in hists {
        all.merge(h);
    }
    all
}

/// The normal mode: consumers, then producers, then --duration seconds of
/// load; rates are over the window, then a bounded catch-up.
async fn timed(opts: &Arc<Options>, counters: &Arc<Counters>) -> Result<Report, String> {
    let go: Go = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let duration = Duration::from_secs(opts.duration);
    let (consumers, mut c_ready) = spawn_consumers(opts, counters, &go, &stop_rx, Some(duration));
    if !all_ready(&mut c_ready, opts.consumers).await {
        return Err(format!("consumer setup failed: {:?}", counters.messages()));
    }
    let (producers, mut p_ready) = spawn_producers(opts, counters, &go, None);
    if !all_ready(&mut p_ready, opts.producers).await {
        return Err(format!("producer setup failed: {:?}", counters.messages()));
    }
    let sampler = start_sampler(opts)?;
    let printer = progress(counters.clone(), opts.quiet);
    let start = Instant::now();
    let _ = go.0.send(Some(start));
    tokio::time::sleep_until((start + duration).into()).await;
    let window: Snapshot = counters.snapshot();
    let broker = finish_sampler(sampler, counters);
    join_all(producers, counters, Instant::now() + JOIN_TIMEOUT).await;

    let settle_start = Instant::now();
    let sent_total = counters.snapshot().sent;
    let expected = sent_total * copies(opts);
    let settle = if opts.consumers > 0 {
        let limit = settle_start + Duration::from_secs(opts.settle);
        while counters.snapshot().received < expected && Instant::now() < limit {
            tokio::time::sleep(POLL).await;
        }
        Some(Settle {
            sent_total,
            expected,
            confirmed_total: counters.snapshot().confirmed,
            received_total: counters.snapshot().received,
            settle_s: settle_start.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    let _ = stop_tx.send(true);
    let hists = join_all(consumers, counters, Instant::now() + JOIN_TIMEOUT).await;
    printer.abort();

    let secs = duration.as_secs_f64();
    let mut r = Report::new("run", (**opts).clone());
    r.duration_s = secs;
    r.sent = window.sent;
    r.confirmed = window.confirmed;
    r.nacked = window.nacked;
    r.returned = window.returned;
    r.received = window.received;
    r.sent_rate = window.sent as f64 / secs;
    r.confirmed_rate = window.confirmed as f64 / secs;
    r.received_rate = window.received as f64 / secs;
    r.latency = Latency::from_histogram(&merged(&hists));
    r.broker = broker.map(|b| b.per_message(run_messages(opts, &window)));
    r.settle = settle;
    Ok(r)
}

/// Backlog mode: publish --backlog messages with no consumer, wait for the
/// confirms, then start the consumers and time the drain. Each phase is
/// bounded by --duration. With no producers, the drain expects the
/// `queued` messages found at setup (at most --backlog).
async fn backlog(
    opts: &Arc<Options>,
    counters: &Arc<Counters>,
    queued: u64,
) -> Result<Report, String> {
    let limit = Duration::from_secs(opts.duration);
    let sampler = start_sampler(opts)?;
    let printer = progress(counters.clone(), opts.quiet);
    let mut b = Backlog {
        messages: opts.backlog,
        ..Default::default()
    };

    let mut published = Snapshot::default();
    let mut publish_cpu = None;
    if opts.producers > 0 {
        let go: Go = watch::channel(None);
        let (producers, mut p_ready) = spawn_producers(opts, counters, &go, Some(opts.backlog));
        if !all_ready(&mut p_ready, opts.producers).await {
            printer.abort();
            return Err(format!("producer setup failed: {:?}", counters.messages()));
        }
        let start = Instant::now();
        let _ = go.0.send(Some(start));
        // Producers end by themselves once all is confirmed, or at the limit.
        join_all(producers, counters, start + limit + JOIN_TIMEOUT).await;
        b.publish_s = start.elapsed().as_secs_f64();
        published = counters.snapshot();
        b.publish_rate = published.confirmed as f64 / b.publish_s;
        b.rss_with_backlog_mib = sampler.as_ref().and_then(Sampler::rss_now_mib);
        publish_cpu = sampler.as_ref().and_then(Sampler::cpu_so_far);
        b.publish_cpu_us_per_msg =
            publish_cpu.and_then(|cpu| broker::cpu_us_per_msg(cpu, published.confirmed));
        if published.confirmed < opts.backlog {
            counters.error(
                "backlog",
                format!(
                    "only {} of {} publishes confirmed ({} nacked)",
                    published.confirmed, opts.backlog, published.nacked
                ),
            );
        }
        b.expected = published.confirmed * copies(opts);
    } else {
        b.expected = queued.min(opts.backlog * copies(opts));
    }

    if opts.consumers == 0 {
        // Publish only: leave the backlog in place (for a restart test).
        b.expected = 0;
    }
    let go: Go = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (consumers, mut c_ready) = spawn_consumers(opts, counters, &go, &stop_rx, None);
    if !all_ready(&mut c_ready, opts.consumers).await {
        printer.abort();
        return Err(format!("consumer setup failed: {:?}", counters.messages()));
    }
    let start = Instant::now();
    let _ = go.0.send(Some(start));
    let deadline = start + limit;
    while counters.snapshot().received < b.expected && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    b.drain_s = start.elapsed().as_secs_f64();
    b.drained = counters.snapshot().received;
    if b.drained > 0 {
        b.drain_rate = b.drained as f64 / b.drain_s;
    }
    let broker = finish_sampler(sampler, counters);
    if opts.consumers > 0
        && let Some(total) = broker.as_ref().map(|s| s.cpu_s)
    {
        // With producers, the drain is what came after the publish phase.
        let drain_cpu = match (opts.producers > 0, publish_cpu) {
            (false, _) => Some(total),
            (true, Some(publish)) => Some(total - publish),
            (true, None) => None,
        };
        b.drain_cpu_us_per_msg = drain_cpu.and_then(|cpu| broker::cpu_us_per_msg(cpu, b.drained));
    }
    let _ = stop_tx.send(true);
    let hists = join_all(consumers, counters, Instant::now() + JOIN_TIMEOUT).await;
    printer.abort();
    let messages = if opts.producers > 0 {
        published.confirmed
    } else {
        b.drained
    };

    let mut r = Report::new("backlog", (**opts).clone());
    r.duration_s = b.publish_s + b.drain_s;
    r.sent = published.sent;
    r.confirmed = published.confirmed;
    r.nacked = published.nacked;
    r.returned = published.returned;
    r.received = b.drained;
    if b.publish_s > 0.0 {
        r.sent_rate = published.sent as f64 / b.publish_s;
        r.confirmed_rate = b.publish_rate;
    }
    r.received_rate = b.drain_rate;
    r.latency = Latency::from_histogram(&merged(&hists));
    r.broker = broker.map(|s| s.per_message(messages));
    r.backlog = Some(b);
    Ok(r)
}

/// Waits until the broker accepts a connection and answers a passive
/// declare for every queue, within --duration.
async fn probe(opts: Options) -> Result<Report, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.duration);
    let mut conn = loop {
        match Conn::open(&opts).await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no connection within {} s: {e}", opts.duration));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    let connected_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut queues = Vec::new();
    for q in 0..opts.queues {
        let name = opts.queue_name(q);
        let n = conn
            .declare_queue(&opts, &name, true)
            .await
            .map_err(|e| format!("passive declare of {name}: {e}"))?;
        queues.push((name, n));
    }
    let ready_ms = start.elapsed().as_secs_f64() * 1e3;
    let tls = conn.tls_session();
    conn.close().await;
    let mut r = Report::new("probe", opts);
    r.tls = tls;
    r.probe = Some(Probe {
        connected_ms,
        ready_ms,
        queues,
    });
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn broker_cpu_is_per_confirm_with_confirms_else_per_delivery() {
        let counts = Snapshot {
            sent: 1_000,
            confirmed: 900,
            received: 800,
            ..Default::default()
        };
        let confirming = Options::parse_from(["warren-perf", "--confirm", "10"]);
        assert_eq!(run_messages(&confirming, &counts), 900);
        let plain = Options::parse_from(["warren-perf"]);
        assert_eq!(run_messages(&plain, &counts), 800);
        // Only consumers: confirms cannot count.
        let drain = Options::parse_from(["warren-perf", "--confirm", "10", "--producers", "0"]);
        assert_eq!(run_messages(&drain, &counts), 800);
    }
}
