//! Rates, sampled off the hot path: every `interval` a task reads each
//! queue's counters and each connection's byte counts (one short lock per
//! queue, relaxed atomic loads per connection) and keeps the rate per
//! second since the previous sample, as RabbitMQ's statistics collector
//! does every `collect_statistics_interval`. Handlers only read the table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use warren_core::Broker;
use warren_core::queue::{ConnId, Counters, QueueStats};

/// Per-second rates of one queue's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueRates {
    /// Messages published into it.
    pub publish: f64,
    /// Delivered to acknowledging consumers.
    pub deliver: f64,
    /// Delivered to no-ack consumers.
    pub deliver_no_ack: f64,
    /// Taken by `basic.get` with ack.
    pub get: f64,
    /// Taken by `basic.get` with no-ack.
    pub get_no_ack: f64,
    /// Delivered again.
    pub redeliver: f64,
    /// Acknowledged.
    pub ack: f64,
    /// Change of ready messages.
    pub ready: f64,
    /// Change of unacknowledged messages.
    pub unacked: f64,
}

impl QueueRates {
    /// Everything delivered or got.
    pub fn deliver_get(&self) -> f64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// Adds another queue's rates (for totals).
    pub fn add(&mut self, o: &QueueRates) {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.redeliver += o.redeliver;
        self.ack += o.ack;
        self.ready += o.ready;
        self.unacked += o.unacked;
    }
}

#[derive(Debug, Clone, Copy)]
struct QueueSample {
    at: Instant,
    counters: Counters,
    ready: u64,
    unacked: u64,
}

#[derive(Debug, Clone, Copy)]
struct ConnSample {
    at: Instant,
    recv: u64,
    send: u64,
}

#[derive(Debug, Default)]
struct Table {
    queues: HashMap<u64, (QueueSample, QueueRates)>,
    conns: HashMap<ConnId, (ConnSample, (f64, f64))>,
    /// The broker's count of publisher confirms at the last sample, and
    /// its rate since the one before.
    confirmed: Option<(Instant, u64)>,
    confirm_rate: f64,
    /// The same for mandatory publishes returned unroutable.
    returned: Option<(Instant, u64)>,
    return_rate: f64,
}

/// The rates of everything, as of the last sample.
#[derive(Debug, Default)]
pub struct Rates {
    table: Mutex<Table>,
}

fn per_second(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    // Counters only grow; gauges (ready, unacked) may fall.
    (now as f64 - before as f64) / secs
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one sample of every queue and connection of `broker`.
    pub fn sample(&self, broker: &Broker, now: Instant) {
        let mut queues = Vec::new();
        for vh in broker.vhosts() {
            for q in vh.queues() {
                queues.push((q.me.id, q.stats()));
            }
        }
        let conns: Vec<(ConnId, u64, u64)> = broker
            .connections()
            .iter()
            .map(|c| {
                (
                    c.id,
                    c.recv_oct.load(Ordering::Relaxed),
                    c.send_oct.load(Ordering::Relaxed),
                )
            })
            .collect();
        let totals = broker.message_totals();
        let mut t = self.lock();
        if let Some((at, before)) = t.confirmed {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            t.confirm_rate = per_second(totals.confirmed, before, secs).max(0.0);
        }
        t.confirmed = Some((now, totals.confirmed));
        if let Some((at, before)) = t.returned {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            t.return_rate = per_second(totals.returned, before, secs).max(0.0);
        }
        t.returned = Some((now, totals.returned));
        let mut next_q = HashMap::with_capacity(queues.len());
        for (id, s) in queues {
            let rates = t
                .queues
                .get(&id)
                .map(|(prev, _)| queue_rates(prev, &s, now))
                .unwrap_or_default();
            let sample = QueueSample {
                at: now,
                counters: s.counters,
                ready: s.ready,
                unacked: s.unacked,
            };
            next_q.insert(id, (sample, rates));
        }
        t.queues = next_q;
        let mut next_c = HashMap::with_capacity(conns.len());
        for (id, recv, send) in conns {
            let rates = t.conns.get(&id).map_or((0.0, 0.0), |(prev, _)| {
                let secs = now.saturating_duration_since(prev.at).as_secs_f64();
                (
                    per_second(recv, prev.recv, secs),
                    per_second(send, prev.send, secs),
                )
            });
            next_c.insert(
                id,
                (
                    ConnSample {
                        at: now,
                        recv,
                        send,
                    },
                    rates,
                ),
            );
        }
        t.conns = next_c;
    }

    /// A queue's rates (zero before two samples).
    pub fn queue(&self, id: u64) -> QueueRates {
        self.lock()
            .queues
            .get(&id)
            .map(|(_, r)| *r)
            .unwrap_or_default()
    }

    /// Publisher confirms per second, broker-wide (zero before two
    /// samples).
    pub fn confirm(&self) -> f64 {
        self.lock().confirm_rate
    }

    /// Mandatory publishes returned unroutable per second, broker-wide.
    pub fn returned(&self) -> f64 {
        self.lock().return_rate
    }

    /// A connection's (receive, send) bytes per second.
    pub fn connection(&self, id: ConnId) -> (f64, f64) {
        self.lock().conns.get(&id).map_or((0.0, 0.0), |(_, r)| *r)
    }

    /// Samples `broker` every `interval` until the task is dropped.
    pub async fn run(
        self: std::sync::Arc<Self>,
        broker: std::sync::Arc<Broker>,
        interval: Duration,
    ) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(&broker, Instant::now());
        }
    }
}

fn queue_rates(prev: &QueueSample, now_s: &QueueStats, now: Instant) -> QueueRates {
    let secs = now.saturating_duration_since(prev.at).as_secs_f64();
    let (a, b) = (&now_s.counters, &prev.counters);
    QueueRates {
        publish: per_second(a.publish, b.publish, secs),
        deliver: per_second(a.deliver, b.deliver, secs),
        deliver_no_ack: per_second(a.deliver_no_ack, b.deliver_no_ack, secs),
        get: per_second(a.get, b.get, secs),
        get_no_ack: per_second(a.get_no_ack, b.get_no_ack, secs),
        redeliver: per_second(a.redeliver, b.redeliver, secs),
        ack: per_second(a.ack, b.ack, secs),
        ready: per_second(now_s.ready, prev.ready, secs),
        unacked: per_second(now_s.unacked, prev.unacked, secs),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use warren_codec::{BasicProperties, FieldTable, ShortStr};
    use warren_core::BrokerConfig;
    use warren_core::vhost::QueueDeclare;

    use super::*;

    #[test]
    fn rates_are_per_second_between_two_samples() {
        let broker = Broker::new(BrokerConfig::default());
        let vh = broker.vhost("/").expect("default vhost");
        let t0 = Instant::now();
        let d = QueueDeclare {
            name: "q".into(),
            server_named: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let (q, _, _) = vh.declare_queue(0, &d, t0).expect("declare");
        let rates = Arc::new(Rates::default());
        rates.sample(&broker, t0);
        for _ in 0..10 {
            let routed = vh
                .publish_one(
                    &ShortStr::empty(),
                    "q".into(),
                    BasicProperties::default(),
                    Bytes::from_static(b"x"),
                    t0,
                )
                .expect("publish");
            assert!(routed);
        }
        rates.sample(&broker, t0 + Duration::from_secs(2));
        let r = rates.queue(q.me.id);
        assert!((r.publish - 5.0).abs() < 1e-9, "{r:?}");
        assert!((r.ready - 5.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.ack, 0.0);
        // A queue never sampled has no rates.
        assert_eq!(rates.queue(u64::MAX), QueueRates::default());
    }
}
