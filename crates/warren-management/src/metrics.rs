//! Prometheus text exposition with the metric names, types, labels and
//! units of RabbitMQ's `rabbitmq_prometheus` plugin wherever Warren
//! measures the same thing, so its Grafana dashboards show Warren's
//! figures; Warren-only figures are named `warren_`. `/metrics` is
//! aggregated (no per-object labels), `/metrics/per-object` adds each
//! queue's figures with `vhost` and `queue` labels, as the plugin's do.
//! Nothing here is on the publish path: message counts are per-channel
//! relaxed atomics, read when scraped.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use warren_core::broker::Alarm;

use crate::Shared;
use crate::overview::RABBITMQ_COMPAT;

/// The metrics routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(|s| metrics(s, false)))
        .route("/metrics/per-object", get(|s| metrics(s, true)))
        .with_state(state)
}

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

async fn metrics(State(m): State<Shared>, per_object: bool) -> impl IntoResponse {
    let b = &m.broker;
    let mut t = Text(String::with_capacity(8192));
    let conns = b.connections();
    let channels: usize = conns.iter().map(|c| c.channel_count()).sum();
    let (mut queues, mut consumers, mut ready, mut unacked) = (0u64, 0u64, 0u64, 0u64);
    let mut per_queue = Vec::new();
    for vh in b.vhosts() {
        for q in vh.queues() {
            let s = q.stats();
            queues += 1;
            consumers += s.consumers;
            ready += s.ready;
            unacked += s.unacked;
            if per_object {
                per_queue.push((vh.name.clone(), q.name().to_lossy().into_owned(), s));
            }
        }
    }
    t.one(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        conns.len() as f64,
    );
    t.one(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        channels as f64,
    );
    t.one(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        queues as f64,
    );
    t.one(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        consumers as f64,
    );
    if per_object {
        type Get = fn(&warren_core::queue::QueueStats) -> u64;
        let families: [(&str, &str, Get); 4] = [
            (
                "rabbitmq_queue_messages_ready",
                "Messages ready to be delivered to consumers",
                |s| s.ready,
            ),
            (
                "rabbitmq_queue_messages_unacked",
                "Messages delivered to consumers but not yet acknowledged",
                |s| s.unacked,
            ),
            (
                "rabbitmq_queue_messages",
                "Sum of ready and unacknowledged messages - total queue depth",
                |s| s.ready + s.unacked,
            ),
            ("rabbitmq_queue_consumers", "Consumers on a queue", |s| {
                s.consumers
            }),
        ];
        for (name, help, get) in families {
            t.family(name, "gauge", help);
            for (vhost, queue, s) in &per_queue {
                let labels = format!("vhost=\"{}\",queue=\"{}\"", esc(vhost), esc(queue));
                t.sample(name, &labels, get(s) as f64);
            }
        }
        t.family(
            "rabbitmq_queue_messages_published_total",
            "counter",
            "Messages published into a queue",
        );
        for (vhost, queue, s) in &per_queue {
            let labels = format!("vhost=\"{}\",queue=\"{}\"", esc(vhost), esc(queue));
            t.sample(
                "rabbitmq_queue_messages_published_total",
                &labels,
                s.counters.publish as f64,
            );
        }
    } else {
        t.one(
            "rabbitmq_queue_messages_ready",
            "gauge",
            "Messages ready to be delivered to consumers",
            ready as f64,
        );
        t.one(
            "rabbitmq_queue_messages_unacked",
            "gauge",
            "Messages delivered to consumers but not yet acknowledged",
            unacked as f64,
        );
        t.one(
            "rabbitmq_queue_messages",
            "gauge",
            "Sum of ready and unacknowledged messages - total queue depth",
            (ready + unacked) as f64,
        );
    }
    let totals = b.message_totals();
    let proto = "protocol=\"amqp091\"";
    for (name, help, v) in [
        (
            "rabbitmq_global_messages_received_total",
            "Total number of messages received from publishers",
            totals.received,
        ),
        (
            "rabbitmq_global_messages_delivered_total",
            "Total number of messages delivered to consumers",
            totals.delivered,
        ),
        (
            "rabbitmq_global_messages_acknowledged_total",
            "Total number of messages acknowledged by consumers",
            totals.acknowledged,
        ),
        (
            "rabbitmq_global_messages_confirmed_total",
            "Total number of messages confirmed to publishers",
            totals.confirmed,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned_total",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            totals.returned,
        ),
    ] {
        t.family(name, "counter", help);
        t.sample(name, proto, v as f64);
    }
    t.one(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        b.memory_used() as f64,
    );
    t.one(
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
        crate::overview::open_files() as f64,
    );
    t.one(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        b.memory_limit() as f64,
    );
    // Before the resource monitor's first sample there is no figure: the
    // family is declared without a sample rather than with a false 0.
    t.family(
        "rabbitmq_disk_space_available_bytes",
        "gauge",
        "Disk space available in bytes",
    );
    if let Some(free) = b.disk_free() {
        t.sample("rabbitmq_disk_space_available_bytes", "", free as f64);
    }
    t.one(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        b.disk_free_limit() as f64,
    );
    let alarm = |a| if b.alarm_raised(a) { 1.0 } else { 0.0 };
    t.one(
        "rabbitmq_alarms_memory_used_watermark",
        "gauge",
        "is set to 1 when the memory watermark alarm is in effect",
        alarm(Alarm::Memory),
    );
    t.one(
        "rabbitmq_alarms_free_disk_space_watermark",
        "gauge",
        "is set to 1 when the free disk space alarm is in effect",
        alarm(Alarm::Disk),
    );
    t.one(
        "rabbitmq_alarms_file_descriptor_limit",
        "gauge",
        "is set to 1 when the file descriptor limit alarm is in effect",
        0.0,
    );
    t.family(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    t.sample(
        "rabbitmq_build_info",
        &format!(
            "rabbitmq_version=\"{RABBITMQ_COMPAT}\",prometheus_plugin_version=\"{RABBITMQ_COMPAT}\",prometheus_client_version=\"none\",erlang_version=\"none\",warren_version=\"{}\"",
            esc(&b.config.version)
        ),
        1.0,
    );
    t.family(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    t.sample(
        "rabbitmq_identity_info",
        &format!(
            "rabbitmq_node=\"{}\",rabbitmq_cluster=\"{}\",rabbitmq_cluster_permanent_id=\"{}\"",
            esc(&m.node),
            esc(&m.cluster_name()),
            esc(&m.node)
        ),
        1.0,
    );
    t.one(
        "warren_message_bytes_in_memory",
        "gauge",
        "Bytes of message bodies held in memory",
        b.memory_in_use() as f64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.0,
    )
}
