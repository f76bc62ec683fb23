//! Definitions in RabbitMQ's JSON format, both ways: `GET` exports users,
//! vhosts, permissions, topic permissions, durable queues, exchanges and
//! the bindings between them (the whole broker or one vhost); `POST`
//! imports such a file. An import is checked as a whole before anything
//! is applied.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use warren_codec::ShortStr;
use warren_core::access::{PermissionSpec, TopicPermissionSpec, VhostMeta};
use warren_core::exchange::ExchangeKind;
use warren_core::password::Password;
use warren_core::persist::BindingTarget;
use warren_core::policy::Policy;
use warren_core::vhost::{Binding, ExchangeDeclare, QueueDeclare};

use crate::access::SHA256;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{flag, json_to_table, table_to_json, tags, text};
use crate::overview::RABBITMQ_COMPAT;
use crate::policies::{operator_parameter_json, policy_json};
use crate::topology::HTTP_CONN;
use crate::{Shared, no_content};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route("/api/all-configuration", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

/// A vhost's queues, exchanges and bindings as RabbitMQ exports them:
/// every queue but exclusive ones, every exchange but the default and
/// `amq.*` ones (durable or not), and the bindings between them.
fn topology(vhosts: &[std::sync::Arc<warren_core::VHost>]) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for vh in vhosts {
        let mut qs = vh.queues();
        qs.sort_by(|a, b| a.name().cmp(b.name()));
        for q in qs.iter().filter(|q| q.spec.exclusive_owner.is_none()) {
            queues.push(json!({
                "name": q.name().to_lossy(),
                "vhost": vh.name,
                "durable": q.spec.durable,
                "auto_delete": q.spec.auto_delete,
                "arguments": table_to_json(&q.spec.arguments),
            }));
        }
        let exported = |e: &warren_core::exchange::Exchange| {
            !e.name().is_empty() && !e.name().starts_with(b"amq.")
        };
        let mut xs = vh.exchanges();
        xs.sort_by(|a, b| a.name().cmp(b.name()));
        for e in xs.iter().filter(|e| exported(e)) {
            exchanges.push(json!({
                "name": e.name().to_lossy(),
                "vhost": vh.name,
                "type": e.spec.kind.as_str(),
                "durable": e.spec.durable,
                "auto_delete": e.spec.auto_delete,
                "internal": e.spec.internal,
                "arguments": table_to_json(&e.spec.arguments),
            }));
        }
        let exported_queue = |name: &str| {
            vh.queue(name.as_bytes())
                .is_some_and(|q| q.spec.exclusive_owner.is_none())
        };
        for mut b in crate::topology::bindings_of(vh, false) {
            let dest = b["destination"].as_str().unwrap_or_default().to_string();
            if b["destination_type"] == "queue" && !exported_queue(&dest) {
                continue;
            }
            if let Some(o) = b.as_object_mut() {
                o.remove("properties_key");
            }
            bindings.push(b);
        }
    }
    (queues, exchanges, bindings)
}

async fn export_all(State(m): State<Shared>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let b = &m.broker;
    let mut vhosts = b.vhosts();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    let users: Vec<Value> = b
        .access
        .users()
        .iter()
        .map(|u| {
            // RabbitMQ 3.10 exports each user's limits on its entry.
            let limits = b.access.user_limits(&u.name).unwrap_or_default();
            json!({
                "name": u.name,
                "password_hash": u.password.as_ref().and_then(Password::to_rabbitmq_hash).unwrap_or_default(),
                "hashing_algorithm": SHA256,
                "tags": u.tags,
                "limits": crate::policies::user_limits_value(&limits),
            })
        })
        .collect();
    let vhost_items: Vec<Value> = vhosts
        .iter()
        .map(|v| {
            let meta = v.meta();
            let mut o = json!({"name": v.name, "description": meta.description, "tags": meta.tags});
            if !meta.default_queue_type.is_empty() {
                o["default_queue_type"] = meta.default_queue_type.into();
            }
            o["metadata"] = json!({"description": o["description"], "tags": o["tags"]});
            o
        })
        .collect();
    let permissions: Vec<Value> = b
        .access
        .permission_specs(None, None)
        .iter()
        .map(|p| json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}))
        .collect();
    let topic: Vec<Value> = b
        .access
        .topic_permission_specs(None, None)
        .iter()
        .map(|t| json!({"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write, "read": t.read}))
        .collect();
    let (queues, exchanges, bindings) = topology(&vhosts);
    let all_policies: Vec<_> = vhosts.iter().flat_map(|v| v.policies()).collect();
    let policies: Vec<Value> = all_policies
        .iter()
        .filter(|p| !p.operator)
        .map(|p| policy_json(p))
        .collect();
    let mut parameters: Vec<Value> = all_policies
        .iter()
        .filter(|p| p.operator)
        .map(|p| operator_parameter_json(p))
        .collect();
    for vh in &vhosts {
        if let Some(l) = crate::policies::limits_json(vh) {
            parameters.push(json!({
                "vhost": vh.name, "component": "vhost-limits", "name": "limits", "value": l["value"],
            }));
        }
    }
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_COMPAT,
        "rabbitmq_version": RABBITMQ_COMPAT,
        "product_name": b.config.product,
        "product_version": b.config.version,
        "users": users,
        "vhosts": vhost_items,
        "permissions": permissions,
        "topic_permissions": topic,
        "parameters": parameters,
        "global_parameters": [{"name": "cluster_name", "value": m.cluster_name()}],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

async fn export_vhost(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let vh = m
        .broker
        .vhost(&vhost)
        .ok_or_else(|| ApiError::bad_request("vhost_not_found"))?;
    let policies: Vec<Value> = vh
        .policies()
        .iter()
        .filter(|p| !p.operator)
        .map(|p| policy_json(p))
        .collect();
    let (mut queues, mut exchanges, mut bindings) = topology(&[vh]);
    // A vhost's export names no vhost in its items, as RabbitMQ's.
    for item in queues
        .iter_mut()
        .chain(exchanges.iter_mut())
        .chain(bindings.iter_mut())
    {
        if let Some(o) = item.as_object_mut() {
            o.remove("vhost");
        }
    }
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_COMPAT,
        "rabbitmq_version": RABBITMQ_COMPAT,
        "product_name": m.broker.config.product,
        "product_version": m.broker.config.version,
        "parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

// ---------------------------------------------------------------- import

/// One change an import makes, checked before any is applied.
enum Step {
    Vhost(VhostMeta),
    User {
        name: String,
        password: Option<Password>,
        tags: Vec<String>,
    },
    /// A user's limits from its entry's `limits` (merged into what it has,
    /// as `rabbitmqctl set_user_limits` does).
    UserLimits(String, Vec<(String, i64)>),
    Permission(PermissionSpec),
    TopicPermission(TopicPermissionSpec),
    ClusterName(String),
    Exchange(String, ExchangeDeclare),
    Queue(String, QueueDeclare),
    Binding(String, Binding),
    Policy(Policy),
    Limit(String, String, i64),
}

fn items<'a>(body: &'a Value, key: &str) -> Result<&'a [Value], ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a list"))),
    }
}

fn need<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a str, ApiError> {
    text(v, key)?.ok_or_else(|| ApiError::bad_request(format!("{what}: {key} missing")))
}

fn short(s: &str, what: &str) -> Result<ShortStr, ApiError> {
    if s.len() > 255 {
        return Err(ApiError::bad_request(format!("{what} name too long: {s}")));
    }
    Ok(ShortStr::from(s))
}

/// A policy item (`vhost` given apart), checked.
fn policy_of(vhost: &str, p: &Value, operator: bool) -> Result<Policy, ApiError> {
    let name = need(p, "name", "policy")?;
    let pattern = need(p, "pattern", "policy")?;
    let definition = json_to_table(p.get("definition").unwrap_or(&Value::Null))?;
    let priority = crate::json::int(p, "priority")?.unwrap_or(0);
    let apply_to = text(p, "apply-to")?.unwrap_or("all");
    Policy::new(
        vhost, name, pattern, apply_to, priority, definition, operator,
    )
    .map_err(ApiError::bad_request)
}

/// A user entry's `limits` (RabbitMQ 3.10 exports `{}` or, for example,
/// `{"max-connections": 10}`), checked as RabbitMQ checks user limits.
fn user_limits_of(user: &str, limits: Option<&Value>) -> Result<Vec<(String, i64)>, ApiError> {
    let items = match limits {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "user {user}: limits must be an object"
            )));
        }
    };
    let mut out = Vec::new();
    for (k, v) in items {
        let n = v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("{k} should be a number, actually was {v}"))
        })?;
        if !warren_core::access::UserLimits::NAMES.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unrecognised terms [{{<<\"{k}\">>,{n}}}] in user-limits"
            )));
        }
        out.push((k.clone(), n));
    }
    Ok(out)
}

/// Reads and checks a definitions file into steps. `only`: the vhost of a
/// per-vhost import (items name no vhost).
fn plan(m: &Shared, body: &Value, only: Option<&str>) -> Result<Vec<Step>, ApiError> {
    let mut steps = Vec::new();
    let mut new_vhosts: Vec<String> = Vec::new();
    if only.is_none() {
        for v in items(body, "vhosts")? {
            let name = need(v, "name", "vhost")?.to_string();
            let meta = v.get("metadata").unwrap_or(v);
            steps.push(Step::Vhost(VhostMeta {
                limits: Default::default(),
                name: name.clone(),
                description: text(meta, "description")?.unwrap_or("").to_string(),
                tags: meta.get("tags").map(tags).transpose()?.unwrap_or_default(),
                default_queue_type: match text(v, "default_queue_type")? {
                    Some(t @ ("classic" | "quorum")) => t.to_string(),
                    _ => String::new(),
                },
            }));
            new_vhosts.push(name);
        }
        for u in items(body, "users")? {
            let name = need(u, "name", "user")?.to_string();
            let hash = text(u, "password_hash")?.unwrap_or("");
            if let Some(alg) = text(u, "hashing_algorithm")?
                && alg != SHA256
            {
                return Err(ApiError::bad_request(format!(
                    "user {name}: unsupported hashing algorithm '{alg}'"
                )));
            }
            let password = if hash.is_empty() {
                None
            } else {
                Some(Password::from_rabbitmq_hash(hash).ok_or_else(|| {
                    ApiError::bad_request(format!("user {name}: invalid password_hash"))
                })?)
            };
            let tags = u.get("tags").map(tags).transpose()?.unwrap_or_default();
            let limits = user_limits_of(&name, u.get("limits"))?;
            steps.push(Step::User {
                name: name.clone(),
                password,
                tags,
            });
            if !limits.is_empty() {
                steps.push(Step::UserLimits(name, limits));
            }
        }
    }
    let vhost_known = |v: &str| m.broker.vhost(v).is_some() || new_vhosts.iter().any(|n| n == v);
    let vhost_of = |item: &Value, what: &str| -> Result<String, ApiError> {
        let v = match only {
            Some(v) => v.to_string(),
            None => need(item, "vhost", what)?.to_string(),
        };
        if !vhost_known(&v) {
            return Err(ApiError::bad_request(format!(
                "{what}: vhost '{v}' not found"
            )));
        }
        Ok(v)
    };
    if only.is_none() {
        let user_known = |u: &str| {
            m.broker.access.user(u).is_some()
                || steps
                    .iter()
                    .any(|s| matches!(s, Step::User { name, .. } if name == u))
        };
        let mut perms = Vec::new();
        for p in items(body, "permissions")? {
            let spec = PermissionSpec {
                user: need(p, "user", "permission")?.to_string(),
                vhost: vhost_of(p, "permission")?,
                configure: need(p, "configure", "permission")?.to_string(),
                write: need(p, "write", "permission")?.to_string(),
                read: need(p, "read", "permission")?.to_string(),
            };
            if !user_known(&spec.user) {
                return Err(ApiError::bad_request(format!(
                    "permission: user '{}' not found",
                    spec.user
                )));
            }
            spec.compile().map_err(ApiError::bad_request)?;
            perms.push(Step::Permission(spec));
        }
        for t in items(body, "topic_permissions")? {
            let spec = TopicPermissionSpec {
                user: need(t, "user", "topic permission")?.to_string(),
                vhost: vhost_of(t, "topic permission")?,
                exchange: need(t, "exchange", "topic permission")?.to_string(),
                write: need(t, "write", "topic permission")?.to_string(),
                read: need(t, "read", "topic permission")?.to_string(),
            };
            if !user_known(&spec.user) {
                return Err(ApiError::bad_request(format!(
                    "topic permission: user '{}' not found",
                    spec.user
                )));
            }
            for p in [&spec.write, &spec.read] {
                warren_core::access::check_topic_pattern(p).map_err(ApiError::bad_request)?;
            }
            perms.push(Step::TopicPermission(spec));
        }
        steps.extend(perms);
        for g in items(body, "global_parameters")? {
            if text(g, "name")? == Some("cluster_name")
                && let Some(name) = g.get("value").and_then(Value::as_str)
            {
                steps.push(Step::ClusterName(name.to_string()));
            }
        }
    }
    for p in items(body, "policies")? {
        let vhost = vhost_of(p, "policy")?;
        steps.push(Step::Policy(policy_of(&vhost, p, false)?));
    }
    for p in items(body, "parameters")? {
        let vhost = vhost_of(p, "parameter")?;
        let name = need(p, "name", "parameter")?;
        match need(p, "component", "parameter")? {
            "operator_policy" => {
                let mut value = p.get("value").cloned().unwrap_or(Value::Null);
                if let Some(o) = value.as_object_mut() {
                    o.insert("name".into(), Value::String(name.to_string()));
                }
                steps.push(Step::Policy(policy_of(&vhost, &value, true)?));
            }
            "vhost-limits" => {
                let Some(Value::Object(limits)) = p.get("value") else {
                    return Err(ApiError::bad_request(
                        "vhost-limits: value must be an object",
                    ));
                };
                for (k, v) in limits {
                    if !matches!(k.as_str(), "max-connections" | "max-queues") {
                        return Err(ApiError::bad_request(format!(
                            "vhost-limits: unknown limit '{k}'"
                        )));
                    }
                    let n = v.as_i64().ok_or_else(|| {
                        ApiError::bad_request(format!("vhost-limits: {k} must be an integer"))
                    })?;
                    steps.push(Step::Limit(vhost.clone(), k.clone(), n));
                }
            }
            other => {
                // Plugin parameters (shovels, federation) do not apply here.
                tracing::warn!(component = other, vhost = %vhost, parameter = name, "definitions: parameter not applied");
            }
        }
    }
    for e in items(body, "exchanges")? {
        let vhost = vhost_of(e, "exchange")?;
        let name = need(e, "name", "exchange")?;
        let kind = need(e, "type", "exchange")?;
        if ExchangeKind::parse(kind.as_bytes()).is_none() {
            return Err(ApiError::bad_request(format!(
                "exchange {name}: unknown exchange type '{kind}'"
            )));
        }
        steps.push(Step::Exchange(
            vhost,
            ExchangeDeclare {
                name: short(name, "exchange")?,
                kind: short(kind, "type")?,
                passive: false,
                durable: flag(e, "durable", true)?,
                auto_delete: flag(e, "auto_delete", false)?,
                internal: flag(e, "internal", false)?,
                arguments: json_to_table(e.get("arguments").unwrap_or(&Value::Null))?,
            },
        ));
    }
    for q in items(body, "queues")? {
        let vhost = vhost_of(q, "queue")?;
        let name = need(q, "name", "queue")?;
        steps.push(Step::Queue(
            vhost,
            QueueDeclare {
                name: short(name, "queue")?,
                server_named: false,
                passive: false,
                durable: flag(q, "durable", true)?,
                exclusive: false,
                auto_delete: flag(q, "auto_delete", false)?,
                arguments: json_to_table(q.get("arguments").unwrap_or(&Value::Null))?,
            },
        ));
    }
    for b in items(body, "bindings")? {
        let vhost = vhost_of(b, "binding")?;
        let dest = short(need(b, "destination", "binding")?, "destination")?;
        let destination = match need(b, "destination_type", "binding")? {
            "queue" => BindingTarget::Queue(dest),
            "exchange" => BindingTarget::Exchange(dest),
            other => {
                return Err(ApiError::bad_request(format!(
                    "binding: unknown destination_type '{other}'"
                )));
            }
        };
        steps.push(Step::Binding(
            vhost,
            Binding {
                source: short(need(b, "source", "binding")?, "source")?,
                destination,
                routing_key: short(text(b, "routing_key")?.unwrap_or(""), "routing key")?,
                arguments: json_to_table(b.get("arguments").unwrap_or(&Value::Null))?,
            },
        ));
    }
    // Bindings must join exchanges and queues that exist, or that this
    // file declares.
    for s in &steps {
        let Step::Binding(v, b) = s else { continue };
        let declared_exchange = |name: &ShortStr| {
            steps
                .iter()
                .any(|s| matches!(s, Step::Exchange(sv, d) if sv == v && d.name == *name))
                || m.broker
                    .vhost(v)
                    .is_some_and(|vh| vh.exchange(name.as_bytes()).is_some())
        };
        let declared_queue = |name: &ShortStr| {
            steps
                .iter()
                .any(|s| matches!(s, Step::Queue(sv, d) if sv == v && d.name == *name))
                || m.broker
                    .vhost(v)
                    .is_some_and(|vh| vh.queue(name.as_bytes()).is_some())
        };
        let dest_ok = match &b.destination {
            BindingTarget::Queue(q) => declared_queue(q),
            BindingTarget::Exchange(e) => declared_exchange(e),
        };
        if !declared_exchange(&b.source) || !dest_ok {
            return Err(ApiError::bad_request(format!(
                "binding from '{}' in vhost '{v}': source or destination not found",
                b.source
            )));
        }
    }
    // What only declaring can check (argument values, redeclare
    // equivalence): checked against what exists now, before anything
    // changes.
    for s in &steps {
        match s {
            Step::Queue(v, d) => match m.broker.vhost(v) {
                Some(vh) => vh.check_queue_declare(d),
                None => warren_core::VHost::check_queue_in_new_vhost(v, d),
            }
            .map_err(|r| ApiError::bad_request(r.detail()))?,
            Step::Exchange(v, d) => {
                if let Some(vh) = m.broker.vhost(v) {
                    vh.check_exchange_declare(d)
                        .map_err(|r| ApiError::bad_request(r.detail()))?;
                } else if d.name.is_empty() || d.name.starts_with(b"amq.") {
                    return Err(ApiError::bad_request(format!(
                        "exchange name '{}' contains reserved prefix 'amq.*'",
                        d.name
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(steps)
}

/// Applies checked steps in order; what fails now (a race with another
/// change) is reported, with what came before it applied.
fn apply(m: &Shared, steps: Vec<Step>) -> Result<(), ApiError> {
    let now = Instant::now();
    for s in steps {
        match s {
            Step::Vhost(meta) => {
                m.broker.put_vhost(meta);
            }
            Step::User {
                name,
                password,
                tags,
            } => {
                m.broker.put_user(&name, password, tags);
            }
            Step::UserLimits(user, limits) => {
                let values: Vec<(&str, i64)> =
                    limits.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                m.broker.merge_user_limits(&user, &values)?;
            }
            Step::Permission(p) => m.broker.put_permissions(p)?,
            Step::TopicPermission(t) => m.broker.put_topic_permissions(t)?,
            Step::ClusterName(n) => {
                *m.cluster_name
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = n;
            }
            Step::Exchange(v, d) => {
                let vh = m.broker.vhost(&v).ok_or_else(ApiError::not_found)?;
                vh.declare_exchange(&d)
                    .map_err(|r| ApiError::bad_request(r.detail()))?;
            }
            Step::Queue(v, d) => {
                let vh = m.broker.vhost(&v).ok_or_else(ApiError::not_found)?;
                vh.declare_queue(HTTP_CONN, &d, now)
                    .map_err(|r| ApiError::bad_request(r.detail()))?;
            }
            Step::Binding(v, b) => {
                let vh = m.broker.vhost(&v).ok_or_else(ApiError::not_found)?;
                vh.bind(HTTP_CONN, &b)
                    .map_err(|r| ApiError::bad_request(r.detail()))?;
            }
            Step::Limit(vhost, name, n) => m.broker.set_vhost_limit(&vhost, &name, Some(n))?,
            Step::Policy(p) => {
                m.broker.put_policy(
                    &p.vhost,
                    &p.name,
                    &p.pattern,
                    p.apply_to.as_str(),
                    p.priority,
                    p.definition,
                    p.operator,
                )?;
            }
        }
    }
    Ok(())
}

async fn import_all(
    State(m): State<Shared>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = definitions_json(&body)?;
    let steps = plan(&m, &body, None)?;
    apply(&m, steps)?;
    Ok(no_content())
}

async fn import_vhost(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    if m.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found_because("vhost_not_found"));
    }
    let body = definitions_json(&body)?;
    let steps = plan(&m, &body, Some(&vhost))?;
    apply(&m, steps)?;
    Ok(no_content())
}

/// An uploaded definitions file: a JSON object, or RabbitMQ's 400.
fn definitions_json(body: &Bytes) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::bad_request("failed_to_parse_json")),
    }
}

/// Applies a definitions file at boot (`load_definitions`): the same
/// checks and steps as `POST /api/definitions`.
pub fn load_file(m: &Shared, text: &str) -> Result<(), String> {
    let body: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !body.is_object() {
        return Err("not a JSON object".to_string());
    }
    let steps = plan(m, &body, None).map_err(|e| e.reason)?;
    apply(m, steps).map_err(|e| e.reason)
}
