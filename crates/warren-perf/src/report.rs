//! The outcome of a run: one human line, or one JSON object.

use serde::Serialize;

use crate::broker::BrokerStats;
use crate::histogram::Histogram;
use crate::options::Options;

/// Latency percentiles in milliseconds, from the merged histogram.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Messages timed.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest, exactly.
    pub max_ms: f64,
    /// Mean, exactly.
    pub mean_ms: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram) -> Latency {
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            count: h.count(),
            p50_ms: ms(h.quantile(0.50)),
            p95_ms: ms(h.quantile(0.95)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1e6,
        }
    }
}

/// Backlog mode's two phases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backlog {
    /// Messages asked for.
    pub messages: u64,
    /// Seconds from the start until every publish was confirmed (0 with
    /// --producers 0).
    pub publish_s: f64,
    /// Confirmed publishes per second over `publish_s`.
    pub publish_rate: f64,
    /// Broker RSS once the backlog was confirmed, MiB (with --broker-pid).
    pub rss_with_backlog_mib: Option<f64>,
    /// Deliveries expected in the drain (messages x fanout queues).
    pub expected: u64,
    /// Deliveries received in the drain.
    pub drained: u64,
    /// Seconds from starting the consumers until the last delivery (or the
    /// limit, --duration).
    pub drain_s: f64,
    /// Deliveries per second over `drain_s`.
    pub drain_rate: f64,
    /// Broker CPU microseconds per confirmed publish in the publish phase
    /// (with --broker-pid and producers).
    pub publish_cpu_us_per_msg: Option<f64>,
    /// Broker CPU microseconds per delivery in the drain phase, the
    /// consumers' setup included (with --broker-pid and consumers).
    pub drain_cpu_us_per_msg: Option<f64>,
}

/// What happened after the timed window, while consumers caught up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settle {
    /// Messages published in the whole run.
    pub sent_total: u64,
    /// Deliveries expected (sent x fanout queues).
    pub expected: u64,
    /// Publishes confirmed in the whole run: the window, and the confirms
    /// the producers waited for (briefly) after it.
    pub confirmed_total: u64,
    /// Deliveries received in the whole run, settle included.
    pub received_total: u64,
    /// Seconds spent waiting.
    pub settle_s: f64,
}

/// The sink's view, in --sink mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStats {
    /// Bytes the sink read after the handshakes.
    pub bytes: u64,
    /// Encoded size of one message (method + header + body frames).
    pub bytes_per_message: u64,
    /// Messages those bytes make.
    pub messages: u64,
    /// MiB/s over the run.
    pub mib_per_s: f64,
}

/// What --probe saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probe {
    /// Milliseconds until a connection opened.
    pub connected_ms: f64,
    /// Milliseconds until every passive declare answered.
    pub ready_ms: f64,
    /// (queue, message count) pairs.
    pub queues: Vec<(String, u32)>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `run`, `backlog`, `sink` or `probe`.
    pub mode: &'static str,
    /// The options, after normalising (password left out).
    pub options: Options,
    /// Seconds the rates are over (the timed window; in backlog mode the
    /// publish phase for sent/confirmed and the drain for received).
    pub duration_s: f64,
    /// Messages published in the window.
    pub sent: u64,
    /// Publishes confirmed in the window.
    pub confirmed: u64,
    /// Publishes nacked in the window.
    pub nacked: u64,
    /// basic.return frames.
    pub returned: u64,
    /// Deliveries received in the window.
    pub received: u64,
    /// Errors (failed connections, closes from the broker, nacks).
    pub errors: u64,
    /// Published msg/s.
    pub sent_rate: f64,
    /// Confirmed msg/s.
    pub confirmed_rate: f64,
    /// Received msg/s.
    pub received_rate: f64,
    /// Consumer-side latency.
    pub latency: Latency,
    /// The broker's CPU and memory, with --broker-pid.
    pub broker: Option<BrokerStats>,
    /// Backlog mode's phases.
    pub backlog: Option<Backlog>,
    /// The catch-up after the window.
    pub settle: Option<Settle>,
    /// --sink figures.
    pub sink: Option<SinkStats>,
    /// --probe figures.
    pub probe: Option<Probe>,
    /// With --tls: the protocol and cipher suite the broker chose (for the
    /// setup connection; every connection offers the same).
    pub tls: Option<String>,
    /// The first error texts.
    pub error_messages: Vec<String>,
}

impl Report {
    /// An empty report of `mode` for `options`.
    pub(crate) fn new(mode: &'static str, options: Options) -> Report {
        Report {
            mode,
            options,
            duration_s: 0.0,
            sent: 0,
            confirmed: 0,
            nacked: 0,
            returned: 0,
            received: 0,
            errors: 0,
            sent_rate: 0.0,
            confirmed_rate: 0.0,
            received_rate: 0.0,
            latency: Latency::default(),
            broker: None,
            backlog: None,
            settle: None,
            sink: None,
            probe: None,
            tls: None,
            error_messages: Vec::new(),
        }
    }

    /// The summary line, PerfTest-like:
    /// `sent X msg/s, confirmed Y msg/s, received Z msg/s, latency
    /// p50/p95/p99 = a/b/c ms, errors E, broker cpu C s (P%, U us/msg),
    /// broker peak rss R MiB`, preceded by mode-specific lines where there
    /// are any.
    pub fn human(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.tls {
            out.push_str(&format!("tls: {t}\n"));
        }
        if let Some(b) = &self.backlog {
            out.push_str(&format!(
                "backlog {}: published+confirmed in {:.2} s ({:.0} msg/s), drained {}/{} in {:.2} s ({:.0} msg/s){}\n",
                b.messages,
                b.publish_s,
                b.publish_rate,
                b.drained,
                b.expected,
                b.drain_s,
                b.drain_rate,
                b.rss_with_backlog_mib
                    .map(|r| format!(", broker rss with backlog {r:.0} MiB"))
                    .unwrap_or_default(),
            ));
            if b.publish_cpu_us_per_msg.is_some() || b.drain_cpu_us_per_msg.is_some() {
                let us = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
                out.push_str(&format!(
                    "backlog broker cpu: publish {} us/msg, drain {} us/msg\n",
                    us(b.publish_cpu_us_per_msg),
                    us(b.drain_cpu_us_per_msg)
                ));
            }
        }
        if let Some(s) = &self.sink {
            out.push_str(&format!(
                "sink: {} bytes read, {} bytes/message, {} messages, {:.0} MiB/s\n",
                s.bytes, s.bytes_per_message, s.messages, s.mib_per_s
            ));
        }
        if let Some(s) = &self.settle {
            out.push_str(&format!(
                "after settle ({:.1} s): sent {}, confirmed {}, received {} of {} expected\n",
                s.settle_s, s.sent_total, s.confirmed_total, s.received_total, s.expected
            ));
        }
        if let Some(p) = &self.probe {
            let queues: Vec<String> = p.queues.iter().map(|(q, n)| format!("{q}={n}")).collect();
            out.push_str(&format!(
                "probe: connected after {:.0} ms, queues answered after {:.0} ms: {}\n",
                p.connected_ms,
                p.ready_ms,
                queues.join(" ")
            ));
        }
        if self.mode == "probe" {
            return out.trim_end().to_string();
        }
        let broker = match &self.broker {
            Some(b) => format!(
                "broker cpu {:.2} s ({:.0}%, {} us/msg), broker peak rss {:.0} MiB",
                b.cpu_s,
                b.cpu_pct,
                b.cpu_us_per_msg
                    .map_or("n/a".to_string(), |us| format!("{us:.2}")),
                b.peak_rss_mib
            ),
            None => "broker cpu n/a, broker peak rss n/a".to_string(),
        };
        out.push_str(&format!(
            "sent {:.0} msg/s, confirmed {:.0} msg/s, received {:.0} msg/s, latency p50/p95/p99 = {:.3}/{:.3}/{:.3} ms, errors {}, {}",
            self.sent_rate,
            self.confirmed_rate,
            self.received_rate,
            self.latency.p50_ms,
            self.latency.p95_ms,
            self.latency.p99_ms,
            self.errors,
            broker
        ));
        out
    }
}
