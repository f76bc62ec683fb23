//! `warren-perf`: a PerfTest-style AMQP 0-9-1 load generator, speaking the
//! protocol directly through `warren-codec`, for Warren and RabbitMQ alike.
//!
//! # Layout
//! - [`options`]: the command line ([`Options`]).
//! - `runner`: [`run`], the orchestration of one run: topology, tasks, the
//!   timed window or the backlog's phases, settle, the report.
//! - `client`: handshake (PLAIN, broker's frame_max, heartbeat 0) and the
//!   synchronous methods used during setup.
//! - `stream`: the socket, plain TCP or TLS, with the readiness calls the
//!   hot loops use; `tls`: the TLS client options build (--tls).
//! - `producer` / `consumer`: one task and one connection each, in the
//!   style --client asks for ([`options::Client`]): pipelined (many
//!   pre-encoded publishes per write; acks of one read together), single
//!   (one write per publish and per ack) on the codec connection, driving
//!   the socket with `try_read`/`try_write`; or `lapin_client` and
//!   `amqprs_client`, the same through the lapin and amqprs libraries. The pacing (confirm window, rate, backlog
//!   limit), the latency recorder and the ack policy are shared.
//! - `confirms`: the unconfirmed window; `histogram`: latency buckets.
//! - [`broker`]: CPU and RSS of the broker process from `/proc`.
//! - [`sink`]: a discard-everything peer for measuring the tool itself.
//! - [`report`]: the human line and the JSON object, with the broker's CPU
//!   per message (`broker.cpu_us_per_msg`), the figure that compares
//!   client styles and brokers.
//!
//! Every message body starts with the send time (ns since a process-wide
//! instant) and this run's id, so consumers time only this run's messages.

mod amqprs_client;
pub mod broker;
mod client;
mod confirms;
mod consumer;
mod histogram;
mod lapin_client;
pub mod options;
mod producer;
pub mod report;
mod runner;
mod shared;
pub mod sink;
mod stream;
mod tls;

pub use options::Options;
pub use report::Report;
pub use runner::run;
