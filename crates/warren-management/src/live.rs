//! Connections, channels and consumers, read from the entries connections
//! and channels publish (no connection task is asked anything), and
//! connections closed from outside (`DELETE` with `X-Reason`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use warren_core::VHost;
use warren_core::queue::{ConnId, Queue};
use warren_core::registry::{ChannelEntry, ConnectionEntry};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::table_to_json;
use crate::list::{ListQuery, respond};
use crate::overview::details;
use crate::{Shared, no_content};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(close_connection),
        )
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route(
            "/api/connections/username/{user}",
            get(user_connections).delete(close_user_connections),
        )
        .route("/api/vhosts/{vhost}/connections", get(vhost_connections))
        .route("/api/channels", get(channels))
        .route("/api/channels/{name}", get(channel))
        .route("/api/vhosts/{vhost}/channels", get(vhost_channels))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(vhost_consumers))
}

/// The connections the caller may see: all for monitors, else its own.
pub(crate) fn visible_connections(m: &Shared, caller: &Caller) -> Vec<Arc<ConnectionEntry>> {
    m.broker
        .connections()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.negotiated().user == caller.name())
        .collect()
}

fn host_port(addr: &str) -> (String, u16) {
    match addr.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => (addr.to_string(), 0),
    }
}

fn connection_json(m: &Shared, c: &ConnectionEntry) -> Value {
    let n = c.negotiated().clone();
    let (peer_host, peer_port) = host_port(&c.peer);
    let (host, port) = host_port(&c.local);
    let (recv_rate, send_rate) = m.rates.connection(c.id);
    let user_provided = n
        .client_properties
        .get("connection_name")
        .map(|v| table_to_json(&warren_codec::FieldTable::new().with("n", v.clone()))["n"].clone());
    let mut v = json!({
        "name": c.name,
        "node": m.node,
        "type": "network",
        "vhost": n.vhost,
        "user": n.user,
        "user_who_performed_action": n.user,
        "state": c.state().as_str(),
        "channels": c.channel_count(),
        "channel_max": n.channel_max,
        "frame_max": n.frame_max,
        "timeout": n.heartbeat,
        "protocol": "AMQP 0-9-1",
        "host": host,
        "port": port,
        "peer_host": peer_host,
        "peer_port": peer_port,
        "ssl": c.tls.is_some(),
        "ssl_protocol": c.tls.as_ref().map(|t| t.protocol.clone()),
        "ssl_key_exchange": Value::Null,
        "ssl_cipher": c.tls.as_ref().map(|t| t.cipher.clone()),
        "ssl_hash": Value::Null,
        "peer_cert_subject": c.tls.as_ref().and_then(|t| t.peer_cert_subject.clone()),
        "peer_cert_issuer": c.tls.as_ref().and_then(|t| t.peer_cert_issuer.clone()),
        "peer_cert_validity": c.tls.as_ref().and_then(|t| t.peer_cert_validity.clone()),
        "auth_mechanism": n.auth_mechanism,
        "client_properties": table_to_json(&n.client_properties),
        "connected_at": c.connected_at,
        "recv_oct": c.recv_oct.load(Ordering::Relaxed),
        "recv_oct_details": details(recv_rate),
        "send_oct": c.send_oct.load(Ordering::Relaxed),
        "send_oct_details": details(send_rate),
        "recv_cnt": c.recv_cnt.load(Ordering::Relaxed),
        "send_cnt": c.send_cnt.load(Ordering::Relaxed),
        "send_pend": 0,
        "reductions": 0,
        "reductions_details": details(0.0),
        "garbage_collection": {},
    });
    if let Some(u) = user_provided {
        v["user_provided_name"] = u;
    }
    v
}

fn find_connection(
    m: &Shared,
    caller: &Caller,
    name: &str,
) -> Result<Arc<ConnectionEntry>, ApiError> {
    let c = m
        .broker
        .connection_named(name)
        .ok_or_else(ApiError::not_found)?;
    if !caller.is_monitor() && c.negotiated().user != caller.name() {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    Ok(c)
}

async fn connections(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let items = visible_connections(&m, &caller)
        .iter()
        .map(|c| connection_json(&m, c))
        .collect();
    respond(items, &q, &["vhost", "name"])
}

async fn vhost_connections(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.vhost(&m, &vhost)?;
    let items = visible_connections(&m, &caller)
        .iter()
        .filter(|c| c.negotiated().vhost == vhost)
        .map(|c| connection_json(&m, c))
        .collect();
    respond(items, &q, &["vhost", "name"])
}

async fn connection(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = find_connection(&m, &caller, &name)?;
    Ok(Json(connection_json(&m, &c)))
}

/// RabbitMQ's reason when `X-Reason` is absent.
const DEFAULT_REASON: &str = "Closed via management plugin";

fn reason(headers: &HeaderMap) -> String {
    headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REASON)
        .to_string()
}

async fn close_connection(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = m
        .broker
        .connection_named(&name)
        .ok_or_else(ApiError::not_found)?;
    // Only administrators close other users' connections.
    if !caller.is_admin() && c.negotiated().user != caller.name() {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    let text = reason(&headers);
    let id = c.id;
    m.broker.close_connections(|e| e.id == id, &text);
    Ok(no_content())
}

async fn user_connections(
    State(m): State<Shared>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !caller.is_monitor() && user != caller.name() {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    let items: Vec<Value> = m
        .broker
        .connections()
        .iter()
        .filter(|c| c.negotiated().user == user)
        .map(|c| {
            let n = c.negotiated();
            json!({"name": c.name, "vhost": n.vhost, "user": n.user, "node": m.node})
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

async fn close_user_connections(
    State(m): State<Shared>,
    caller: Caller,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !caller.is_admin() && user != caller.name() {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    let text = reason(&headers);
    m.broker
        .close_connections(|c| c.negotiated().user == user, &text);
    Ok(no_content())
}

// ---------------------------------------------------------------- channels

fn channel_name(c: &ConnectionEntry, number: u16) -> String {
    format!("{} ({number})", c.name)
}

fn channel_json(m: &Shared, c: &ConnectionEntry, ch: &ChannelEntry) -> Value {
    let n = c.negotiated().clone();
    let (peer_host, peer_port) = host_port(&c.peer);
    json!({
        "name": channel_name(c, ch.number),
        "number": ch.number,
        "node": m.node,
        "user": n.user,
        "vhost": n.vhost,
        "user_who_performed_action": n.user,
        "connection_details": {"name": c.name, "peer_host": peer_host, "peer_port": peer_port},
        "consumer_count": ch.consumer_count.load(Ordering::Relaxed),
        "messages_unacknowledged": ch.messages_unacknowledged.load(Ordering::Relaxed),
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "prefetch_count": ch.prefetch_count.load(Ordering::Relaxed),
        "global_prefetch_count": ch.global_prefetch_count.load(Ordering::Relaxed),
        "confirm": ch.confirm.load(Ordering::Relaxed),
        "transactional": ch.transactional.load(Ordering::Relaxed),
        "state": "running",
        "pending_raft_commands": 0,
        "reductions": 0,
        "reductions_details": details(0.0),
        "garbage_collection": {},
        "message_stats": {},
    })
}

fn channels_of(m: &Shared, conns: &[Arc<ConnectionEntry>]) -> Vec<Value> {
    let mut out = Vec::new();
    for c in conns {
        for ch in c.channels() {
            out.push(channel_json(m, c, &ch));
        }
    }
    out
}

async fn channels(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let conns = visible_connections(&m, &caller);
    respond(channels_of(&m, &conns), &q, &["vhost", "name"])
}

async fn vhost_channels(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.vhost(&m, &vhost)?;
    let conns: Vec<_> = visible_connections(&m, &caller)
        .into_iter()
        .filter(|c| c.negotiated().vhost == vhost)
        .collect();
    respond(channels_of(&m, &conns), &q, &["vhost", "name"])
}

async fn connection_channels(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = find_connection(&m, &caller, &name)?;
    Ok(Json(Value::Array(channels_of(&m, &[c]))))
}

async fn channel(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // "<connection name> (<number>)"
    let (conn, number) = name
        .rsplit_once(" (")
        .and_then(|(c, n)| Some((c, n.strip_suffix(')')?.parse::<u16>().ok()?)))
        .ok_or_else(ApiError::not_found)?;
    let c = find_connection(&m, &caller, conn)?;
    let ch = c
        .channels()
        .into_iter()
        .find(|ch| ch.number == number)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(channel_json(&m, &c, &ch)))
}

// ---------------------------------------------------------------- consumers

fn consumer_json(
    m: &Shared,
    vh: &VHost,
    q: &Queue,
    conns: &HashMap<ConnId, Arc<ConnectionEntry>>,
    c: &warren_core::queue::ConsumerInfo,
) -> Value {
    let channel_details = match conns.get(&c.conn) {
        Some(e) => {
            let (peer_host, peer_port) = host_port(&e.peer);
            json!({
                "name": channel_name(e, c.channel),
                "number": c.channel,
                "connection_name": e.name,
                "peer_host": peer_host,
                "peer_port": peer_port,
                "user": e.negotiated().user,
                "node": m.node,
            })
        }
        None => json!([]),
    };
    let status = if !c.single_active {
        "up"
    } else if c.active {
        "single_active"
    } else {
        "waiting"
    };
    let mut arguments = serde_json::Map::new();
    if c.priority != 0 {
        arguments.insert("x-priority".into(), c.priority.into());
    }
    json!({
        "consumer_tag": c.tag.to_lossy(),
        "queue": {"name": q.name().to_lossy(), "vhost": vh.name},
        "channel_details": channel_details,
        "ack_required": c.ack,
        "prefetch_count": c.prefetch,
        "exclusive": c.exclusive,
        "arguments": arguments,
        "active": c.active,
        "activity_status": status,
    })
}

fn connection_map(m: &Shared) -> HashMap<ConnId, Arc<ConnectionEntry>> {
    m.broker
        .connections()
        .into_iter()
        .map(|c| (c.id, c))
        .collect()
}

/// A queue's consumers as `GET /api/queues/{vhost}/{name}` shows them.
pub(crate) fn consumers_of_queue(m: &Shared, vh: &VHost, q: &Queue) -> Vec<Value> {
    let conns = connection_map(m);
    q.consumers()
        .iter()
        .map(|c| consumer_json(m, vh, q, &conns, c))
        .collect()
}

fn consumers_in(m: &Shared, caller: &Caller, vhosts: &[Arc<VHost>]) -> Vec<Value> {
    let conns = connection_map(m);
    let mut out = Vec::new();
    for vh in vhosts {
        for q in vh.queues() {
            for c in q.consumers() {
                let mine = conns
                    .get(&c.conn)
                    .is_some_and(|e| e.negotiated().user == caller.name());
                if caller.is_monitor() || mine {
                    out.push(consumer_json(m, vh, &q, &conns, &c));
                }
            }
        }
    }
    out
}

async fn consumers(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let vhosts = caller.visible_vhosts(&m);
    respond(consumers_in(&m, &caller, &vhosts), &q, &[])
}

async fn vhost_consumers(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    respond(consumers_in(&m, &caller, &[vh]), &q, &[])
}
