//! Queues, exchanges and bindings: list, inspect, declare, delete, purge,
//! publish and get, through the vhost's typed requests and with the
//! caller's own AMQP permissions, as RabbitMQ's API does them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use warren_codec::{FieldTable, ShortStr};
use warren_core::VHost;
use warren_core::exchange::{Destination, Exchange};
use warren_core::password::{base64_decode, base64_encode};
use warren_core::permissions::{Access, Grant, Resource};
use warren_core::persist::BindingTarget;
use warren_core::queue::{ConnId, Queue};
use warren_core::vhost::{Binding, ExchangeDeclare, QueueDeclare};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{
    flag, int, json_to_properties, json_to_table, properties_to_json, table_to_json, text,
};
use crate::list::{ListQuery, respond, respond_lazy};
use crate::overview::{details, message_stats};
use crate::{Shared, body_json, created, no_content};

/// The connection id HTTP requests act as: no AMQP connection has it, so
/// exclusive queues of connections stay theirs.
pub(crate) const HTTP_CONN: ConnId = 0;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/queues", get(all_queues))
        .route("/api/queues/{vhost}", get(vhost_queues))
        .route(
            "/api/queues/{vhost}/{name}",
            get(one_queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge),
        )
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/queues/{vhost}/{name}/actions", post(queue_action))
        .route("/api/exchanges", get(all_exchanges))
        .route("/api/exchanges/{vhost}", get(vhost_exchanges))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(one_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(exchange_bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(exchange_bindings_destination),
        )
        .route("/api/bindings", get(all_bindings))
        .route("/api/bindings/{vhost}", get(vhost_bindings))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings_between).post(add_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(one_binding).delete(delete_binding),
        )
}

// ---------------------------------------------------------------- helpers

/// `amq.default` in a path is the default exchange.
fn exchange_name(name: &str) -> ShortStr {
    if name == "amq.default" {
        ShortStr::empty()
    } else {
        ShortStr::from(name)
    }
}

fn short(name: &str, what: &str) -> Result<ShortStr, ApiError> {
    if name.len() > 255 {
        return Err(ApiError::bad_request(format!("{what} name too long")));
    }
    Ok(ShortStr::from(name))
}

/// The caller's own AMQP permission check in `vh`: 401 as RabbitMQ maps an
/// access refusal inside an HTTP call.
fn check(
    m: &Shared,
    caller: &Caller,
    vh: &VHost,
    access: Access,
    kind: Resource,
    name: &[u8],
) -> Result<(), ApiError> {
    let perms = m
        .broker
        .permissions(caller.name(), &vh.name)
        .ok_or_else(|| ApiError::not_authorised("Access refused."))?;
    Grant {
        user: caller.name(),
        vhost: &vh.name,
        perms: &perms,
    }
    .check(access, kind, name)
    .map_err(|_| ApiError::not_authorised("Access refused."))
}

/// The vhost of a PUT: a missing one is 404 `vhost_not_found`.
fn put_vhost(m: &Shared, caller: &Caller, name: &str) -> Result<Arc<VHost>, ApiError> {
    if m.broker.vhost(name).is_none() {
        return Err(ApiError::not_found_because("vhost_not_found"));
    }
    caller.vhost(m, name)
}

// ---------------------------------------------------------------- queues

fn queue_json(m: &Shared, vh: &VHost, q: &Queue) -> Value {
    let s = q.stats();
    let r = m.rates.queue(q.me.id);
    let applied = q.applied_policies();
    let name_of = |p: &Option<std::sync::Arc<warren_core::policy::Policy>>| {
        p.as_ref()
            .map_or(Value::Null, |p| Value::String(p.name.clone()))
    };
    let utilisation = if s.consumers > 0 { 1.0 } else { 0.0 };
    json!({
        "name": q.name().to_lossy(),
        "vhost": vh.name,
        "durable": q.spec.durable,
        "auto_delete": q.spec.auto_delete,
        "exclusive": q.spec.exclusive_owner.is_some(),
        "arguments": table_to_json(&q.spec.arguments),
        "node": m.node,
        "type": q.spec.kind.as_str(),
        "state": "running",
        "messages": s.ready + s.unacked,
        "messages_details": details(r.ready + r.unacked),
        "messages_ready": s.ready,
        "messages_ready_details": details(r.ready),
        "messages_unacknowledged": s.unacked,
        "messages_unacknowledged_details": details(r.unacked),
        "message_bytes": s.ready_bytes,
        "message_bytes_ready": s.ready_bytes,
        "consumers": s.consumers,
        "consumer_utilisation": utilisation,
        "consumer_capacity": utilisation,
        "exclusive_consumer_tag": s.exclusive_consumer.map(|t| t.to_lossy().into_owned()),
        "single_active_consumer_tag": Value::Null,
        "memory": s.ready_bytes,
        "policy": name_of(&applied.policy),
        "operator_policy": name_of(&applied.operator_policy),
        "effective_policy_definition": table_to_json(&applied.definition),
        "head_message_timestamp": Value::Null,
        "recoverable_slaves": Value::Null,
        "message_stats": message_stats(&s.counters, &r),
    })
}

/// Every queue of `vhosts`, with its vhost and name, for lazy listing.
fn queue_handles(vhosts: &[Arc<VHost>]) -> Vec<(Arc<VHost>, Arc<Queue>, String)> {
    let mut out = Vec::new();
    for vh in vhosts {
        for q in vh.queues() {
            let name = q.name().to_lossy().into_owned();
            out.push((Arc::clone(vh), q, name));
        }
    }
    out
}

fn list_queues(m: &Shared, vhosts: &[Arc<VHost>], q: &ListQuery) -> Result<Response, ApiError> {
    respond_lazy(
        queue_handles(vhosts),
        q,
        &["vhost", "name"],
        |(vh, _, name)| (vh.name.as_str(), name.as_str()),
        |(vh, queue, _)| queue_json(m, vh, queue),
    )
}

async fn all_queues(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    list_queues(&m, &caller.visible_vhosts(&m), &q)
}

async fn vhost_queues(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    list_queues(&m, &[vh], &q)
}

fn find_queue(vh: &VHost, name: &str) -> Result<Arc<Queue>, ApiError> {
    vh.queue(name.as_bytes()).ok_or_else(ApiError::not_found)
}

async fn one_queue(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let q = find_queue(&vh, &name)?;
    let mut v = queue_json(&m, &vh, &q);
    v["consumer_details"] = crate::live::consumers_of_queue(&m, &vh, &q).into();
    Ok(Json(v))
}

async fn put_queue(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let vh = put_vhost(&m, &caller, &vhost)?;
    let body = body_json(&body)?;
    let name = short(&name, "queue")?;
    check(
        &m,
        &caller,
        &vh,
        Access::Configure,
        Resource::Queue,
        name.as_bytes(),
    )?;
    let declare = QueueDeclare {
        name: name.clone(),
        server_named: false,
        passive: false,
        durable: flag(&body, "durable", false)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments: json_to_table(body.get("arguments").unwrap_or(&Value::Null))?,
    };
    let existed = vh.queue(name.as_bytes()).is_some();
    vh.declare_queue(HTTP_CONN, &declare, Instant::now())?;
    Ok(created(!existed))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

async fn delete_queue(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(dq): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let q = find_queue(&vh, &name)?;
    check(
        &m,
        &caller,
        &vh,
        Access::Configure,
        Resource::Queue,
        q.name().as_bytes(),
    )?;
    vh.delete_queue(
        HTTP_CONN,
        q.name(),
        dq.if_unused.as_deref() == Some("true"),
        dq.if_empty.as_deref() == Some("true"),
    )?;
    Ok(no_content())
}

async fn purge(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let q = find_queue(&vh, &name)?;
    check(
        &m,
        &caller,
        &vh,
        Access::Read,
        Resource::Queue,
        q.name().as_bytes(),
    )?;
    let q = vh.queue_for(HTTP_CONN, q.name())?;
    q.purge();
    Ok(no_content())
}

async fn queue_action(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let vh = caller.vhost(&m, &vhost)?;
    find_queue(&vh, &name)?;
    let body = body_json(&body)?;
    match text(&body, "action")? {
        // Mirroring does not exist here: there is nothing to synchronise.
        Some("sync" | "cancel_sync") => Ok(no_content()),
        Some(other) => Err(ApiError::bad_request(format!("unknown action: {other}"))),
        None => Err(ApiError::bad_request("[{key_missing,action}]")),
    }
}

/// How `get` settles what it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    AckRequeue,
    Ack,
    RejectRequeue,
    Reject,
}

async fn get_messages(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let q = find_queue(&vh, &name)?;
    let body = body_json(&body)?;
    let count =
        int(&body, "count")?.ok_or_else(|| ApiError::bad_request("[{key_missing,count}]"))?;
    let mode = match text(&body, "ackmode")? {
        Some("ack_requeue_true") => AckMode::AckRequeue,
        Some("ack_requeue_false") => AckMode::Ack,
        Some("reject_requeue_true") => AckMode::RejectRequeue,
        Some("reject_requeue_false") => AckMode::Reject,
        Some(other) => return Err(ApiError::bad_request(format!("unknown ackmode: {other}"))),
        None => return Err(ApiError::bad_request("[{key_missing,ackmode}]")),
    };
    let base64 = match text(&body, "encoding")? {
        Some("auto") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Unsupported encoding. Please use auto or base64.",
            ));
        }
        None => return Err(ApiError::bad_request("[{key_missing,encoding}]")),
    };
    let truncate = int(&body, "truncate")?.and_then(|t| usize::try_from(t).ok());
    check(
        &m,
        &caller,
        &vh,
        Access::Read,
        Resource::Queue,
        q.name().as_bytes(),
    )?;
    let q = vh.queue_for(HTTP_CONN, q.name())?;
    let now = Instant::now();
    let mut taken = Vec::new();
    let mut out = Vec::new();
    // Bounded by the request and by what the queue holds.
    for _ in 0..count.clamp(0, 10_000) {
        let (got, dead) = q.get(now, Some((HTTP_CONN, 0)));
        vh.dead_letter(&q, dead);
        let Some((msg, left)) = got else { break };
        let body = &msg.message.body;
        let shown = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
        let (payload, encoding) = match std::str::from_utf8(shown) {
            Ok(s) if !base64 => (s.to_string(), "string"),
            _ => (base64_encode(shown), "base64"),
        };
        out.push(json!({
            "payload_bytes": body.len(),
            "redelivered": msg.redelivered,
            "exchange": msg.message.exchange.to_lossy(),
            "routing_key": msg.message.routing_key.to_lossy(),
            "message_count": left,
            "properties": properties_to_json(&msg.message.properties),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        taken.push(msg);
    }
    // Settled once all are taken, so a requeued message is not taken
    // again by the same request.
    let dead = match mode {
        AckMode::Ack => q.ack(HTTP_CONN, 0, None, taken),
        AckMode::AckRequeue | AckMode::RejectRequeue => {
            for t in &mut taken {
                t.redelivered = true;
            }
            q.settle(HTTP_CONN, 0, None, 0, taken)
        }
        AckMode::Reject => q.settle_with_dead(HTTP_CONN, 0, None, 0, [], taken),
    };
    vh.dead_letter(&q, dead);
    Ok(Json(Value::Array(out)))
}

// ---------------------------------------------------------------- exchanges

fn exchange_json(node: &str, vh: &VHost, e: &Exchange) -> Value {
    let mut v = exchange_fields(vh, e);
    if let Some(obj) = v.as_object_mut() {
        // The delayed-message plugin's `info` adds how many it holds.
        if let Some(n) = e.messages_delayed() {
            obj.insert("messages_delayed".into(), json!(n));
        }
        // The deduplication plugin's adds its cache (v0.6: entries, bytes,
        // the nodes holding it, the size bound).
        if let Some((entries, bytes, size)) = e.dedup_cache_info() {
            obj.insert(
                "cache_info".into(),
                json!({"entries": entries, "bytes": bytes, "nodes": [node], "size": size}),
            );
        }
    }
    v
}

fn exchange_fields(vh: &VHost, e: &Exchange) -> Value {
    json!({
        "name": e.name().to_lossy(),
        "vhost": vh.name,
        "type": e.spec.kind.as_str(),
        "durable": e.spec.durable,
        "auto_delete": e.spec.auto_delete,
        "internal": e.spec.internal,
        "arguments": table_to_json(&e.spec.arguments),
        "user_who_performed_action": "",
        "policy": e.policy().map_or(Value::Null, |p| Value::String(p.name.clone())),
        "message_stats": {},
    })
}

fn exchanges_of(node: &str, vhosts: &[Arc<VHost>]) -> Vec<Value> {
    let mut out = Vec::new();
    for vh in vhosts {
        for e in vh.exchanges() {
            out.push(exchange_json(node, vh, &e));
        }
    }
    out
}

async fn all_exchanges(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    respond(
        exchanges_of(&m.node, &caller.visible_vhosts(&m)),
        &q,
        &["vhost", "name"],
    )
}

async fn vhost_exchanges(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    respond(exchanges_of(&m.node, &[vh]), &q, &["vhost", "name"])
}

fn find_exchange(vh: &VHost, name: &str) -> Result<Arc<Exchange>, ApiError> {
    vh.exchange(exchange_name(name).as_bytes())
        .ok_or_else(ApiError::not_found)
}

async fn one_exchange(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let e = find_exchange(&vh, &name)?;
    Ok(Json(exchange_json(&m.node, &vh, &e)))
}

async fn put_exchange(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let vh = put_vhost(&m, &caller, &vhost)?;
    let body = body_json(&body)?;
    let name = short(&name, "exchange")?;
    check(
        &m,
        &caller,
        &vh,
        Access::Configure,
        Resource::Exchange,
        name.as_bytes(),
    )?;
    let kind = text(&body, "type")?.ok_or_else(|| ApiError::bad_request("[{key_missing,type}]"))?;
    let declare = ExchangeDeclare {
        name: name.clone(),
        kind: short(kind, "type")?,
        passive: false,
        durable: flag(&body, "durable", true)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        arguments: json_to_table(body.get("arguments").unwrap_or(&Value::Null))?,
    };
    let existed = vh.exchange(name.as_bytes()).is_some();
    vh.declare_exchange(&declare)?;
    Ok(created(!existed))
}

async fn delete_exchange(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(dq): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let e = find_exchange(&vh, &name)?;
    check(
        &m,
        &caller,
        &vh,
        Access::Configure,
        Resource::Exchange,
        e.name().as_bytes(),
    )?;
    vh.delete_exchange(e.name(), dq.if_unused.as_deref() == Some("true"))?;
    Ok(no_content())
}

async fn publish(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let e = find_exchange(&vh, &name)?;
    let body = body_json(&body)?;
    for key in ["properties", "routing_key", "payload", "payload_encoding"] {
        if body.get(key).is_none() {
            return Err(ApiError::bad_request(format!("[{{key_missing,{key}}}]")));
        }
    }
    let properties = json_to_properties(&body["properties"])?;
    let key = short(text(&body, "routing_key")?.unwrap_or(""), "routing key")?;
    let payload = body["payload"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("payload_not_string"))?;
    let payload = match text(&body, "payload_encoding")? {
        Some("string") => Bytes::copy_from_slice(payload.as_bytes()),
        Some("base64") => {
            Bytes::from(base64_decode(payload).ok_or_else(|| ApiError::bad_request("not_base64"))?)
        }
        _ => return Err(ApiError::bad_request("unknown payload_encoding")),
    };
    if properties
        .user_id
        .as_ref()
        .is_some_and(|u| u.as_bytes() != caller.name().as_bytes())
    {
        return Err(ApiError::bad_request(
            "user_id property set to a different user than the authenticated one",
        ));
    }
    check(
        &m,
        &caller,
        &vh,
        Access::Write,
        Resource::Exchange,
        e.name().as_bytes(),
    )?;
    if e.spec.kind == warren_core::exchange::ExchangeKind::Topic
        && let Some(perms) = m.broker.permissions(caller.name(), &vh.name)
    {
        Grant {
            user: caller.name(),
            vhost: &vh.name,
            perms: &perms,
        }
        .check_topic(Access::Write, e.name().as_bytes(), key.as_bytes())
        .map_err(|_| ApiError::not_authorised("Access refused."))?;
    }
    let routed = vh.publish_one(e.name(), key, properties, payload, Instant::now())?;
    Ok(Json(json!({ "routed": routed })))
}

// ---------------------------------------------------------------- bindings

/// RabbitMQ's `quote_plus`, with `~` escaped too (it separates the key
/// from the arguments' hash).
fn quote_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => s.push(char::from(b)),
            b' ' => s.push('+'),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// A stable 6-character hash of binding arguments (clients treat it as
/// opaque; RabbitMQ's own is an Erlang term hash).
fn args_hash(args: &FieldTable) -> String {
    let text = serde_json::to_string(&table_to_json(args)).unwrap_or_default();
    // FNV-1a, 32 bits: stable across processes and versions.
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    base64_encode(&h.to_be_bytes())
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// RabbitMQ's `properties_key` of a binding.
pub(crate) fn properties_key(key: &[u8], args: &FieldTable) -> String {
    if args.0.is_empty() {
        if key.is_empty() {
            "~".to_string()
        } else {
            quote_key(key)
        }
    } else {
        format!("{}~{}", quote_key(key), args_hash(args))
    }
}

fn binding_json(
    vh: &str,
    source: &str,
    dest: &str,
    kind: &str,
    key: &[u8],
    args: &FieldTable,
) -> Value {
    json!({
        "source": source,
        "vhost": vh,
        "destination": dest,
        "destination_type": kind,
        "routing_key": String::from_utf8_lossy(key),
        "arguments": table_to_json(args),
        "properties_key": properties_key(key, args),
    })
}

/// Every binding of a vhost, the default exchange's implicit ones first.
pub(crate) fn bindings_of(vh: &VHost, with_default: bool) -> Vec<Value> {
    let mut out = Vec::new();
    if with_default {
        let mut queues = vh.queues();
        queues.sort_by(|a, b| a.name().cmp(b.name()));
        for q in queues {
            let name = q.name().to_lossy();
            out.push(binding_json(
                &vh.name,
                "",
                &name,
                "queue",
                q.name().as_bytes(),
                &FieldTable::new(),
            ));
        }
    }
    let mut exchanges = vh.exchanges();
    exchanges.sort_by(|a, b| a.name().cmp(b.name()));
    for e in exchanges {
        let source = e.name().to_lossy();
        for b in e.bindings() {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => (q.name().to_lossy().into_owned(), "queue"),
                Destination::Exchange(x) => (x.to_lossy().into_owned(), "exchange"),
            };
            out.push(binding_json(
                &vh.name,
                &source,
                &dest,
                kind,
                b.key.as_bytes(),
                &b.arguments,
            ));
        }
    }
    out
}

async fn all_bindings(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let items = caller
        .visible_vhosts(&m)
        .iter()
        .flat_map(|vh| bindings_of(vh, true))
        .collect();
    respond(items, &q, &[])
}

async fn vhost_bindings(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    respond(bindings_of(&vh, true), &q, &[])
}

fn filter_bindings(items: Vec<Value>, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    items.into_iter().filter(|b| pred(b)).collect()
}

async fn queue_bindings(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    find_queue(&vh, &name)?;
    Ok(Json(Value::Array(filter_bindings(
        bindings_of(&vh, true),
        |b| b["destination_type"] == "queue" && b["destination"] == name.as_str(),
    ))))
}

async fn exchange_bindings_source(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let e = find_exchange(&vh, &name)?;
    let source = e.name().to_lossy().into_owned();
    Ok(Json(Value::Array(filter_bindings(
        bindings_of(&vh, false),
        |b| b["source"] == source.as_str(),
    ))))
}

async fn exchange_bindings_destination(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let e = find_exchange(&vh, &name)?;
    let dest = e.name().to_lossy().into_owned();
    Ok(Json(Value::Array(filter_bindings(
        bindings_of(&vh, false),
        |b| b["destination_type"] == "exchange" && b["destination"] == dest.as_str(),
    ))))
}

/// A binding needs `write` on its destination and `read` on its source,
/// as `queue.bind` does.
fn check_binding(
    m: &Shared,
    caller: &Caller,
    vh: &VHost,
    source: &ShortStr,
    destination: &BindingTarget,
) -> Result<(), ApiError> {
    let (kind, name) = match destination {
        BindingTarget::Queue(q) => (Resource::Queue, q),
        BindingTarget::Exchange(e) => (Resource::Exchange, e),
    };
    check(m, caller, vh, Access::Write, kind, name.as_bytes())?;
    check(
        m,
        caller,
        vh,
        Access::Read,
        Resource::Exchange,
        source.as_bytes(),
    )
}

/// `q` or `e` in a binding path.
fn target(kind: &str, name: &str) -> Result<(BindingTarget, &'static str), ApiError> {
    match kind {
        "q" => Ok((BindingTarget::Queue(short(name, "queue")?), "queue")),
        "e" => Ok((BindingTarget::Exchange(exchange_name(name)), "exchange")),
        _ => Err(ApiError::not_found()),
    }
}

fn between(vh: &VHost, source: &str, kind: &'static str, dest: &str) -> Vec<Value> {
    let source = exchange_name(source).to_lossy().into_owned();
    let dest = if kind == "exchange" {
        exchange_name(dest).to_lossy().into_owned()
    } else {
        dest.to_string()
    };
    filter_bindings(bindings_of(vh, source.is_empty()), |b| {
        b["source"] == source.as_str()
            && b["destination_type"] == kind
            && b["destination"] == dest.as_str()
    })
}

async fn bindings_between(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let (_, kind) = target(&kind, &dest)?;
    Ok(Json(Value::Array(between(&vh, &source, kind, &dest))))
}

async fn add_binding(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let (destination, kind_name) = target(&kind, &dest)?;
    let body = body_json(&body)?;
    let key = short(text(&body, "routing_key")?.unwrap_or(""), "routing key")?;
    let arguments = json_to_table(body.get("arguments").unwrap_or(&Value::Null))?;
    let source = exchange_name(&source);
    check_binding(&m, &caller, &vh, &source, &destination)?;
    let props = properties_key(key.as_bytes(), &arguments);
    vh.bind(
        HTTP_CONN,
        &Binding {
            source,
            destination,
            routing_key: key,
            arguments,
        },
    )?;
    let _ = kind_name;
    let location = format!("{}/{}", quote_key(dest.as_bytes()), props);
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// The binding a `{props}` path segment names, if any.
fn find_binding(
    vh: &VHost,
    source: &str,
    kind: &'static str,
    dest: &str,
    props: &str,
) -> Option<Value> {
    between(vh, source, kind, dest)
        .into_iter()
        .find(|b| b["properties_key"] == props)
}

async fn one_binding(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let (_, kind) = target(&kind, &dest)?;
    find_binding(&vh, &source, kind, &dest, &props)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

async fn delete_binding(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Result<Response, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let (destination, _) = target(&kind, &dest)?;
    let source = exchange_name(&source);
    let ex = vh
        .exchange(source.as_bytes())
        .ok_or_else(ApiError::not_found)?;
    // The binding as the exchange holds it: its arguments exactly as
    // declared, whatever JSON made of their types.
    let found = ex
        .bindings()
        .into_iter()
        .find(|b| {
            let same_dest = match (&b.destination, &destination) {
                (Destination::Queue(q), BindingTarget::Queue(n)) => q.name() == n,
                (Destination::Exchange(x), BindingTarget::Exchange(n)) => x == n,
                _ => false,
            };
            same_dest && properties_key(b.key.as_bytes(), &b.arguments) == props
        })
        .ok_or_else(ApiError::not_found)?;
    check_binding(&m, &caller, &vh, &source, &destination)?;
    vh.unbind(
        HTTP_CONN,
        &Binding {
            source,
            destination,
            routing_key: found.key,
            arguments: found.arguments,
        },
    )?;
    Ok(no_content())
}
