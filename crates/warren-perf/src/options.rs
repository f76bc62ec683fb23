//! Command-line options, named after RabbitMQ PerfTest's where they overlap.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::tls::TlsClient;

/// A PerfTest-style AMQP 0-9-1 load generator.
///
/// Each producer and consumer is its own connection and task. How they
/// write is --client: pipelined (many publishes per write, the default),
/// single (one write per publish and per ack, as most client libraries do)
/// or lapin (the lapin client library). Message bodies carry a send
/// timestamp for consumer-side latency.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "warren-perf", version, about)]
pub struct Options {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (5671 with --tls).
    #[arg(long, default_value_t = 5672, default_value_if("tls", "true", "5671"))]
    pub port: u16,
    /// Connect with TLS (AMQPS). Needs --tls-ca or --tls-insecure; the
    /// broker's certificate must name --host.
    #[arg(long)]
    pub tls: bool,
    /// PEM bundle of the CAs that may sign the broker's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// Accept any broker certificate, for any name (the handshake is still
    /// checked): for a self-signed test broker only.
    #[arg(long, requires = "tls", conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
    /// The TLS client every connection uses, built by `normalize` from the
    /// three options above.
    #[arg(skip)]
    #[serde(skip)]
    pub(crate) tls_client: Option<TlsClient>,
    /// Virtual host.
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// User for PLAIN authentication.
    #[arg(long, default_value = "guest")]
    pub user: String,
    /// Password for PLAIN authentication.
    #[arg(long, default_value = "guest")]
    #[serde(skip)]
    pub password: String,
    /// How producers and consumers talk to the broker; see [`Client`].
    #[arg(long, value_enum, default_value_t = Client::Pipelined)]
    pub client: Client,
    /// Number of producers, one connection each.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Number of consumers, one connection each (with --fanout: one per queue).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Message body size in bytes; at least 16 (a send timestamp and a run id).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Seconds to run; in --backlog mode, the limit on each of the two phases.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Outstanding (unconfirmed) publishes per producer; 0 = no confirm mode.
    #[arg(long, default_value_t = 0)]
    pub confirm: u64,
    /// Publish with delivery-mode 2.
    #[arg(long)]
    pub persistent: bool,
    /// Declare the queues (and the fanout exchange) durable.
    #[arg(long)]
    pub durable: bool,
    /// Declare the queues exclusive (on the consumer's connection).
    #[arg(long)]
    pub exclusive: bool,
    /// Consumer prefetch (basic.qos); 0 = no limit, no basic.qos sent.
    #[arg(long, default_value_t = 0)]
    pub prefetch: u16,
    /// Consume with no-ack.
    #[arg(long)]
    pub autoack: bool,
    /// Ack every N messages with multiple=true; 0 = ack each message.
    #[arg(long, default_value_t = 0)]
    pub multi_ack: u64,
    /// Number of queues; producers and consumers are spread round-robin.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Queue name prefix: queues are `<prefix>-0`, `<prefix>-1`, ...
    #[arg(long, default_value = "warren-perf")]
    pub queue_prefix: String,
    /// Publish to a fanout exchange bound to N queues, one consumer each.
    #[arg(long, default_value_t = 0)]
    pub fanout: u32,
    /// Per-producer publish rate limit in msg/s; 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publish N messages with no consumer running, wait for every confirm,
    /// then start the consumers and time the drain. With --producers 0,
    /// only drain N messages already queued; with --consumers 0, only
    /// publish them and leave them queued.
    #[arg(long, default_value_t = 0)]
    pub backlog: u64,
    /// Keep what the queues already hold instead of purging them first.
    #[arg(long)]
    pub no_purge: bool,
    /// Seconds to wait after the run for consumers to catch up.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// Sample the broker process: CPU seconds and peak RSS during the run.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print one JSON object on stdout (after the human line, on stderr).
    #[arg(long)]
    pub json: bool,
    /// Tokio worker threads (1 or 2 is typical).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Publish to an in-process sink that reads and discards, to measure the
    /// tool itself; implies --consumers 0, no confirms, no declares.
    #[arg(long)]
    pub sink: bool,
    /// Wait (up to --duration) until the broker accepts a connection and a
    /// passive queue.declare answers for every queue; print the counts and
    /// the time taken. For timing broker recovery.
    #[arg(long)]
    pub probe: bool,
}

/// How the producers and consumers write, from the broker's point of view
/// the difference between a load generator and a real application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// warren-perf's own codec connection; a producer encodes as many
    /// publishes as it may send into one buffer and writes them with one
    /// syscall, a consumer writes the acks of one read together. The
    /// cheapest load for the broker per message.
    Pipelined,
    /// The same codec connection, but each publish (method, header and
    /// body frames) is its own write, completed before the next is encoded,
    /// and each ack frame is its own write, as pika and amqprs do.
    Single,
    /// The lapin client library (one connection and channel per producer
    /// and consumer): `basic_publish` awaited per message, confirms through
    /// its `PublisherConfirm` futures, `basic_consume` and `basic_ack` per
    /// message (or per --multi-ack N). No TLS, no --sink.
    Lapin,
    /// The amqprs client library, which issue 19's first figures were
    /// measured with: each publish one write from its writer task,
    /// confirms counted in its channel callback, `basic_consume_rx` and
    /// `basic_ack` per message (or per --multi-ack N). No TLS, no --sink.
    Amqprs,
}

impl Client {
    /// The third-party library this style drives, if it is one.
    pub fn library(self) -> Option<&'static str> {
        match self {
            Client::Pipelined | Client::Single => None,
            Client::Lapin => Some("lapin"),
            Client::Amqprs => Some("amqprs"),
        }
    }
}

impl Options {
    /// Checks combinations the run cannot honour, and applies the implied
    /// settings (--fanout fixes the queue and consumer counts, --sink drops
    /// consumers and confirms, --backlog needs confirms). With --tls, loads
    /// the CA bundle: connections fail until this has run.
    pub fn normalize(&mut self) -> Result<(), String> {
        if self.size < 16 {
            return Err(format!("--size {} is below the minimum of 16", self.size));
        }
        if self.fanout > 0 {
            self.queues = self.fanout;
            self.consumers = self.fanout;
        }
        if self.queues == 0 {
            return Err("--queues must be at least 1".into());
        }
        if self.sink {
            self.consumers = 0;
            self.confirm = 0;
            self.backlog = 0;
            self.broker_pid = None;
        }
        if self.backlog > 0 && self.producers > 0 && self.confirm == 0 {
            self.confirm = 1000;
        }
        if self.exclusive && self.consumers > self.queues {
            return Err(
                "--exclusive needs --consumers <= --queues: an exclusive queue has one owner"
                    .into(),
            );
        }
        if self.exclusive && (self.consumers < self.queues || self.backlog > 0) {
            return Err(
                "--exclusive queues are declared by their consumer: use --consumers == --queues and no --backlog"
                    .into(),
            );
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err("--rate must be a finite number >= 0".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.duration == 0 {
            return Err("--duration must be at least 1".into());
        }
        if let Some(lib) = self.client.library() {
            if self.tls {
                return Err(format!(
                    "--client {lib} speaks plain TCP only (warren-perf builds {lib} without TLS): drop --tls"
                ));
            }
            if self.sink {
                return Err(format!(
                    "--sink measures warren-perf's own encoder, not {lib}: use --client pipelined or single"
                ));
            }
        }
        if self.tls {
            if self.sink {
                return Err("--sink speaks plain TCP only: drop --tls".into());
            }
            self.tls_client = Some(match (&self.tls_ca, self.tls_insecure) {
                (Some(ca), _) => TlsClient::with_ca_file(ca)?,
                (None, true) => TlsClient::insecure()?,
                (None, false) => {
                    return Err(
                        "--tls needs --tls-ca FILE (the CA of the broker's certificate) or --tls-insecure"
                            .into(),
                    );
                }
            });
        }
        Ok(())
    }

    /// The broker address.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The name of queue `i`.
    pub(crate) fn queue_name(&self, i: u32) -> String {
        format!("{}-{}", self.queue_prefix, i)
    }

    /// The fanout exchange's name.
    pub(crate) fn fanout_exchange(&self) -> String {
        format!("{}-fanout", self.queue_prefix)
    }

    /// Queues producer or consumer `i` of `n` works on: every queue `q` with
    /// `q % n == i`, or queue `i % queues` when there are more workers than
    /// queues. Every queue gets a worker when `n > 0`.
    pub(crate) fn queues_for(&self, i: u32, n: u32) -> Vec<u32> {
        if n >= self.queues {
            vec![i % self.queues]
        } else {
            (0..self.queues).filter(|q| q % n == i).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        let mut all = vec!["warren-perf"];
        all.extend_from_slice(args);
        let mut o = Options::parse_from(all);
        o.normalize().expect("valid options");
        o
    }

    #[test]
    fn round_robin_covers_every_queue() {
        let o = opts(&["--queues", "5"]);
        assert_eq!(o.queues_for(0, 2), vec![0, 2, 4]);
        assert_eq!(o.queues_for(1, 2), vec![1, 3]);
        assert_eq!(o.queues_for(6, 10), vec![1]);
        assert_eq!(o.queues_for(0, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn fanout_sets_queues_and_consumers() {
        let o = opts(&["--fanout", "10", "--consumers", "3"]);
        assert_eq!((o.queues, o.consumers), (10, 10));
    }

    #[test]
    fn tls_moves_the_default_port_and_needs_a_trust_decision() {
        assert_eq!(opts(&[]).port, 5672);
        let o = opts(&["--tls", "--tls-insecure"]);
        assert_eq!(o.port, 5671);
        assert!(o.tls_client.is_some());
        assert_eq!(
            opts(&["--tls", "--tls-insecure", "--port", "5999"]).port,
            5999
        );
        let mut o = Options::parse_from(["warren-perf", "--tls"]);
        assert!(o.normalize().is_err());
        assert!(Options::try_parse_from(["warren-perf", "--tls-insecure"]).is_err());
        let mut o = Options::parse_from(["warren-perf", "--tls", "--tls-ca", "/nonexistent.pem"]);
        let err = o.normalize().expect_err("a missing CA file");
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }

    #[test]
    fn client_styles_parse_and_the_libraries_refuse_tls_and_the_sink() {
        assert_eq!(opts(&[]).client, Client::Pipelined);
        assert_eq!(opts(&["--client", "single"]).client, Client::Single);
        assert_eq!(opts(&["--client", "lapin"]).client, Client::Lapin);
        assert_eq!(opts(&["--client", "amqprs"]).client, Client::Amqprs);
        assert!(Options::try_parse_from(["warren-perf", "--client", "pika"]).is_err());
        for lib in ["lapin", "amqprs"] {
            for extra in [["--tls", "--tls-insecure"], ["--sink", "--quiet"]] {
                let mut o =
                    Options::parse_from(["warren-perf", "--client", lib].into_iter().chain(extra));
                let err = o.normalize().expect_err("the library cannot do this");
                assert!(err.contains(lib), "{err}");
            }
        }
        let json = serde_json::to_value(opts(&["--client", "single"])).expect("json");
        assert_eq!(json["client"], "single");
    }

    #[test]
    fn backlog_forces_confirms_and_small_sizes_are_refused() {
        assert_eq!(opts(&["--backlog", "10"]).confirm, 1000);
        let mut o = Options::parse_from(["warren-perf", "--size", "8"]);
        assert!(o.normalize().is_err());
    }
}
