//! `overview`, `whoami`, `cluster-name`, `extensions`, `nodes`, the
//! aliveness test and the health checks.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use warren_codec::{BasicProperties, ShortStr};
use warren_core::broker::Alarm;
use warren_core::exchange::ExchangeKind;
use warren_core::vhost::QueueDeclare;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::rates::QueueRates;
use crate::{Shared, body_json, no_content};

/// The RabbitMQ version whose management API this one follows.
pub(crate) const RABBITMQ_COMPAT: &str = "3.12.0";

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/cluster-name", get(cluster_name).put(set_cluster_name))
        .route(
            "/api/extensions",
            get(|_: Caller| async { Json(json!([])) }),
        )
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route("/api/health/checks/virtual-hosts", get(ok))
        .route("/api/health/checks/node-is-quorum-critical", get(ok))
        .route("/api/health/checks/node-is-mirror-sync-critical", get(ok))
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(ok),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
        .route("/api/healthchecks/node", get(ok))
        .route("/api/healthchecks/node/{node}", get(ok))
}

/// A rate block RabbitMQ attaches to each counter.
pub(crate) fn details(rate: f64) -> Value {
    json!({ "rate": rate })
}

async fn overview(State(m): State<Shared>, caller: Caller) -> Json<Value> {
    let b = &m.broker;
    let vhosts = caller.visible_vhosts(&m);
    let (mut queues, mut exchanges, mut consumers) = (0u64, 0u64, 0u64);
    let (mut ready, mut unacked) = (0u64, 0u64);
    let mut stats = warren_core::queue::Counters::default();
    let mut rates = QueueRates::default();
    for vh in &vhosts {
        exchanges += vh.exchanges().len() as u64;
        for q in vh.queues() {
            let s = q.stats();
            rates.add(&m.rates.queue(q.me.id));
            queues += 1;
            consumers += s.consumers;
            ready += s.ready;
            unacked += s.unacked;
            stats.publish += s.counters.publish;
            stats.deliver += s.counters.deliver;
            stats.deliver_no_ack += s.counters.deliver_no_ack;
            stats.get += s.counters.get;
            stats.get_no_ack += s.counters.get_no_ack;
            stats.redeliver += s.counters.redeliver;
            stats.ack += s.counters.ack;
        }
    }
    let conns = crate::live::visible_connections(&m, &caller);
    let channels: usize = conns.iter().map(|c| c.channel_count()).sum();
    let mut object_totals = json!({
        "connections": conns.len(),
        "channels": channels,
        "exchanges": exchanges,
        "queues": queues,
    });
    if caller.is_monitor() {
        object_totals["consumers"] = consumers.into();
    }
    let mut o = json!({
        "management_version": RABBITMQ_COMPAT,
        "rates_mode": "basic",
        "sample_retention_policies": {
            "global": [600, 3600, 28800, 86400],
            "basic": [600, 3600],
            "detailed": [600],
        },
        "exchange_types": exchange_types(),
        "product_version": b.config.version,
        "product_name": b.config.product,
        "rabbitmq_version": RABBITMQ_COMPAT,
        "cluster_name": m.cluster_name(),
        "erlang_version": "none (Warren is written in Rust)",
        "erlang_full_version": "none",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": message_stats(&stats, &rates),
        "churn_rates": {},
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": details(rates.ready + rates.unacked),
            "messages_ready": ready,
            "messages_ready_details": details(rates.ready),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": details(rates.unacked),
        },
        "object_totals": object_totals,
        "statistics_db_event_queue": 0,
    });
    if caller.is_monitor() {
        // Confirms and returns are counted per channel, broker-wide, not
        // per queue: only a user who sees every connection sees their
        // totals.
        let totals = b.message_totals();
        o["message_stats"]["confirm"] = totals.confirmed.into();
        o["message_stats"]["confirm_details"] = details(m.rates.confirm());
        o["message_stats"]["return_unroutable"] = totals.returned.into();
        o["message_stats"]["return_unroutable_details"] = details(m.rates.returned());
        o["node"] = m.node.clone().into();
        o["listeners"] = m
            .listeners
            .iter()
            .map(|l| {
                json!({
                    "node": m.node,
                    "protocol": l.protocol,
                    "ip_address": l.addr.ip().to_string(),
                    "port": l.addr.port(),
                    "socket_opts": {},
                })
            })
            .collect();
        o["contexts"] = m
            .listeners
            .iter()
            .filter(|l| l.protocol.starts_with("http"))
            .map(|l| {
                json!({
                    "node": m.node,
                    "description": "RabbitMQ Management",
                    "path": "/",
                    "port": l.addr.port().to_string(),
                })
            })
            .collect();
    }
    Json(o)
}

/// RabbitMQ's `message_stats` block: counts and their sampled rates.
pub(crate) fn message_stats(c: &warren_core::queue::Counters, r: &QueueRates) -> Value {
    let deliver_get = c.deliver + c.deliver_no_ack + c.get + c.get_no_ack;
    json!({
        "publish": c.publish,
        "publish_details": details(r.publish),
        "deliver": c.deliver,
        "deliver_details": details(r.deliver),
        "deliver_no_ack": c.deliver_no_ack,
        "deliver_no_ack_details": details(r.deliver_no_ack),
        "get": c.get,
        "get_details": details(r.get),
        "get_no_ack": c.get_no_ack,
        "get_no_ack_details": details(r.get_no_ack),
        "deliver_get": deliver_get,
        "deliver_get_details": details(r.deliver_get()),
        "redeliver": c.redeliver,
        "redeliver_details": details(r.redeliver),
        "ack": c.ack,
        "ack_details": details(r.ack),
    })
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.name(), "tags": caller.account.tags }))
}

async fn cluster_name(State(m): State<Shared>, _: Caller) -> Json<Value> {
    Json(json!({ "name": m.cluster_name() }))
}

async fn set_cluster_name(
    State(m): State<Shared>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    let name = crate::json::text(&body, "name")?
        .ok_or_else(|| ApiError::bad_request("[{key_missing,name}]"))?;
    *m.cluster_name
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = name.to_string();
    Ok(no_content())
}

pub(crate) fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn node_json(m: &Shared) -> Value {
    let b = &m.broker;
    json!({
        "name": m.node,
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        // The server's resource monitor samples these (resident memory,
        // statvfs of the data directory); this API reads no files for them.
        "mem_used": b.memory_used(),
        "mem_limit": b.memory_limit(),
        "mem_alarm": b.alarm_raised(Alarm::Memory),
        "mem_calculation_strategy": "rss",
        "disk_free": b.disk_free(),
        "disk_free_limit": b.disk_free_limit(),
        "disk_free_alarm": b.alarm_raised(Alarm::Disk),
        "fd_used": open_files(),
        "sockets_used": b.connection_count(),
        "proc_used": 0,
        "uptime": u64::try_from(Instant::now().duration_since(m.started).as_millis()).unwrap_or(u64::MAX),
        "processors": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "partitions": [],
        "being_drained": false,
        "applications": [],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        ],
    })
}

/// The exchange types, as `/api/overview` and `/api/nodes` list them:
/// the built-in four and the plugin types Warren has built in.
fn exchange_types() -> Value {
    ExchangeKind::ALL
        .iter()
        .map(|k| json!({"name": k.as_str(), "description": k.description(), "enabled": true}))
        .collect()
}

async fn nodes(State(m): State<Shared>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_monitor()?;
    Ok(Json(json!([node_json(&m)])))
}

async fn node(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_monitor()?;
    if name != m.node {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&m)))
}

/// Declares `aliveness-test`, publishes to it and reads it back.
async fn aliveness(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let name = ShortStr::from_static("aliveness-test");
    let now = Instant::now();
    let declare = QueueDeclare {
        name: name.clone(),
        server_named: false,
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: warren_codec::FieldTable::new(),
    };
    let (q, _, _) = vh.declare_queue(crate::topology::HTTP_CONN, &declare, now)?;
    let routed = vh.publish_one(
        &ShortStr::empty(),
        name,
        BasicProperties::default(),
        Bytes::from_static(b"test_message"),
        now,
    )?;
    let (got, dead) = q.get(now, None);
    vh.dead_letter(&q, dead);
    if !routed || got.is_none() {
        return Err(ApiError::internal("aliveness test failed"));
    }
    Ok(Json(json!({ "status": "ok" })))
}

async fn ok(_: Caller) -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn failed(reason: &str, extra: Value) -> Response {
    let mut body = json!({ "status": "failed", "reason": reason });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn alarms(State(m): State<Shared>, _: Caller) -> Response {
    let raised: Vec<Value> = [Alarm::Memory, Alarm::Disk]
        .into_iter()
        .filter(|a| m.broker.alarm_raised(*a))
        .map(|a| {
            let resource = if a == Alarm::Memory { "memory" } else { "disk" };
            json!({ "node": m.node, "resource": resource })
        })
        .collect();
    if raised.is_empty() {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        failed(
            "There are alarms in effect in the cluster",
            json!({ "alarms": raised }),
        )
    }
}

async fn port_listener(
    State(m): State<Shared>,
    _: Caller,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid port: {port}")))?;
    let ports: Vec<u16> = m.listeners.iter().map(|l| l.addr.port()).collect();
    if ports.contains(&port) {
        Ok(Json(json!({ "status": "ok", "port": port })).into_response())
    } else {
        Ok(failed(
            &format!("No active listener on port {port}"),
            json!({ "missing": port, "ports": ports }),
        ))
    }
}

async fn protocol_listener(
    State(m): State<Shared>,
    _: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let wanted = match protocol.to_ascii_lowercase().as_str() {
        "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "http" | "management" => "http",
        "https" | "http/ssl" => "https",
        other => {
            return failed(
                &format!("No active listener for protocol {other}"),
                json!({}),
            );
        }
    };
    let protocols: Vec<&str> = m.listeners.iter().map(|l| l.protocol.as_str()).collect();
    if protocols.contains(&wanted) {
        Json(json!({ "status": "ok", "protocol": wanted })).into_response()
    } else {
        failed(
            &format!("No active listener for protocol {wanted}"),
            json!({ "missing": wanted, "protocols": protocols }),
        )
    }
}
