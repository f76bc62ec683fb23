//! The commands, each a few calls to the management API.

use std::io::Read;

use serde_json::{Map, Value, json};

use crate::cli::{BindingArgs, Close, Declare, Delete, Export, Import, ListKind, Purge};
use crate::client::{Api, base64, seg};
use crate::config::Resolved;
use crate::error::{CliError, Exit};
use crate::output::{Out, at};

/// What a command needs.
pub struct Ctx<'a> {
    /// The API.
    pub api: &'a Api,
    /// Connection settings (the vhost).
    pub conn: &'a Resolved,
    /// Output.
    pub out: Out<'a>,
    /// Standard input.
    pub input: &'a mut dyn Read,
}

/// A `NAME=VALUE` argument's value, typed as people write them: integers
/// and decimals are numbers, `true`/`false` booleans, `{...}`/`[...]`/`"..."`
/// JSON, anything else a string.
pub fn typed(v: &str) -> Value {
    match v {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    if v.starts_with(['{', '[', '"'])
        && let Ok(j) = serde_json::from_str::<Value>(v)
    {
        return j;
    }
    Value::String(v.to_string())
}

/// `NAME=VALUE` pairs as a JSON object.
pub fn pairs(items: &[String], what: &str) -> Result<Map<String, Value>, CliError> {
    let mut m = Map::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("{what} must be NAME=VALUE: {it}")))?;
        if k.is_empty() {
            return Err(CliError::usage(format!("{what} needs a name: {it}")));
        }
        m.insert(k.to_string(), typed(v));
    }
    Ok(m)
}

fn tags_list(tags: &str) -> Vec<String> {
    tags.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn read_all(input: &mut dyn Read, what: &str) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    input.read_to_end(&mut buf).map_err(|e| {
        CliError::new(
            Exit::Failure,
            format!("cannot read {what} from standard input: {e}"),
        )
    })?;
    Ok(buf)
}

fn read_file_or_stdin(path: &str, input: &mut dyn Read, what: &str) -> Result<Vec<u8>, CliError> {
    if path == "-" {
        return read_all(input, what);
    }
    std::fs::read(path).map_err(|e| CliError::usage(format!("cannot read {path}: {e}")))
}

// ---------------------------------------------------------------- overview, status

/// `overview`.
pub fn overview(c: &mut Ctx<'_>) -> Result<(), CliError> {
    let o = c.api.get("overview")?;
    c.out.object(
        &o,
        &[
            ("product", "product_name"),
            ("version", "product_version"),
            ("rabbitmq compatibility", "rabbitmq_version"),
            ("cluster", "cluster_name"),
            ("node", "node"),
            ("connections", "object_totals.connections"),
            ("channels", "object_totals.channels"),
            ("queues", "object_totals.queues"),
            ("consumers", "object_totals.consumers"),
            ("exchanges", "object_totals.exchanges"),
            ("messages", "queue_totals.messages"),
            ("ready", "queue_totals.messages_ready"),
            ("unacknowledged", "queue_totals.messages_unacknowledged"),
            ("publish rate", "message_stats.publish_details.rate"),
            ("deliver rate", "message_stats.deliver_get_details.rate"),
            ("ack rate", "message_stats.ack_details.rate"),
        ],
    )
}

/// `status`: healthy when reachable, logged in and no alarm is in effect.
pub fn status(c: &mut Ctx<'_>) -> Result<bool, CliError> {
    let o = c.api.get("overview")?;
    let alarms = match c.api.get("health/checks/alarms") {
        Ok(_) => Vec::new(),
        Err(e) if e.exit == Exit::Failure => {
            vec![e.message.rsplit(": ").next().unwrap_or("alarm").to_string()]
        }
        Err(e) => return Err(e),
    };
    let listeners: Vec<String> = o
        .get("listeners")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    format!(
                        "{} {}:{}",
                        l["protocol"].as_str().unwrap_or("?"),
                        l["ip_address"].as_str().unwrap_or("?"),
                        l["port"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let healthy = alarms.is_empty();
    let doc = json!({
        "healthy": healthy,
        "server": c.api.server(),
        "product": o["product_name"],
        "version": o["product_version"],
        "node": o["node"],
        "alarms": alarms,
        "listeners": listeners,
    });
    let mut shown = doc.clone();
    shown["alarms"] = Value::String(if healthy {
        "none".into()
    } else {
        alarms.join(", ")
    });
    shown["listeners"] = Value::String(listeners.join(", "));
    if c.out.format == crate::cli::Format::Json {
        c.out.json(&doc)?;
    } else {
        c.out.object(
            &shown,
            &[
                ("healthy", "healthy"),
                ("server", "server"),
                ("product", "product"),
                ("version", "version"),
                ("node", "node"),
                ("alarms", "alarms"),
                ("listeners", "listeners"),
            ],
        )?;
    }
    Ok(healthy)
}

// ---------------------------------------------------------------- list

fn default_columns(kind: ListKind) -> &'static [&'static str] {
    match kind {
        ListKind::Queues => &[
            "vhost",
            "name",
            "type",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "message_bytes",
            "message_stats.publish_details.rate",
        ],
        ListKind::Exchanges => &[
            "vhost",
            "name",
            "type",
            "durable",
            "auto_delete",
            "internal",
        ],
        ListKind::Bindings => &[
            "vhost",
            "source",
            "destination",
            "destination_type",
            "routing_key",
        ],
        ListKind::Connections => &[
            "name",
            "user",
            "vhost",
            "state",
            "channels",
            "recv_oct_details.rate",
            "send_oct_details.rate",
        ],
        ListKind::Channels => &[
            "name",
            "user",
            "vhost",
            "consumer_count",
            "messages_unacknowledged",
            "prefetch_count",
            "confirm",
        ],
        ListKind::Consumers => &[
            "queue.vhost",
            "queue.name",
            "consumer_tag",
            "channel_details.name",
            "ack_required",
            "prefetch_count",
        ],
        ListKind::Users => &["name", "tags"],
        ListKind::Vhosts => &["name", "description", "messages"],
        ListKind::Permissions => &["user", "vhost", "configure", "write", "read"],
        ListKind::Policies => &[
            "vhost",
            "name",
            "pattern",
            "apply-to",
            "priority",
            "definition",
        ],
    }
}

fn list_path(kind: ListKind, vhost: Option<&str>) -> String {
    let v = vhost.map(seg);
    match (kind, v) {
        (ListKind::Queues, Some(v)) => format!("queues/{v}"),
        (ListKind::Queues, None) => "queues".into(),
        (ListKind::Exchanges, Some(v)) => format!("exchanges/{v}"),
        (ListKind::Exchanges, None) => "exchanges".into(),
        (ListKind::Bindings, Some(v)) => format!("bindings/{v}"),
        (ListKind::Bindings, None) => "bindings".into(),
        (ListKind::Connections, Some(v)) => format!("vhosts/{v}/connections"),
        (ListKind::Connections, None) => "connections".into(),
        (ListKind::Channels, Some(v)) => format!("vhosts/{v}/channels"),
        (ListKind::Channels, None) => "channels".into(),
        (ListKind::Consumers, Some(v)) => format!("consumers/{v}"),
        (ListKind::Consumers, None) => "consumers".into(),
        (ListKind::Users, _) => "users".into(),
        (ListKind::Vhosts, _) => "vhosts".into(),
        (ListKind::Permissions, Some(v)) => format!("vhosts/{v}/permissions"),
        (ListKind::Permissions, None) => "permissions".into(),
        (ListKind::Policies, Some(v)) => format!("policies/{v}"),
        (ListKind::Policies, None) => "policies".into(),
    }
}

/// The name a `--filter` matches.
fn row_name(kind: ListKind, v: &Value) -> String {
    let path = match kind {
        ListKind::Bindings => "destination",
        ListKind::Consumers => "consumer_tag",
        ListKind::Permissions => "user",
        _ => "name",
    };
    at(v, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `list KIND`.
pub fn list(
    c: &mut Ctx<'_>,
    kind: ListKind,
    columns: Option<&str>,
    filter: Option<&str>,
    sort: Option<&str>,
    reverse: bool,
) -> Result<(), CliError> {
    let vhost = c.conn.vhost_given.then_some(c.conn.vhost.as_str());
    let all = c.api.get(&list_path(kind, vhost))?;
    let mut items: Vec<Value> = match all {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    if let Some(f) = filter {
        let re = regex::Regex::new(f).map_err(|e| CliError::usage(format!("--filter: {e}")))?;
        items.retain(|i| re.is_match(&row_name(kind, i)));
    }
    if let Some(s) = sort {
        items.sort_by(|a, b| {
            let (x, y) = (at(a, s), at(b, s));
            match (x.and_then(Value::as_f64), y.and_then(Value::as_f64)) {
                (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
                _ => x.map(ToString::to_string).cmp(&y.map(ToString::to_string)),
            }
        });
    }
    if reverse {
        items.reverse();
    }
    let (cols, given): (Vec<String>, bool) = match columns {
        Some(c) => (c.split(',').map(|s| s.trim().to_string()).collect(), true),
        None => (
            default_columns(kind)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            false,
        ),
    };
    c.out.rows(&items, &cols, given)
}

// ---------------------------------------------------------------- declare, delete, purge

/// `declare ...`.
pub fn declare(c: &mut Ctx<'_>, what: Declare) -> Result<(), CliError> {
    let v = seg(&c.conn.vhost);
    match what {
        Declare::Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            args,
        } => {
            let body = json!({
                "type": kind, "durable": durable, "auto_delete": auto_delete,
                "internal": internal, "arguments": pairs(&args, "--arg")?,
            });
            c.api.put(&format!("exchanges/{v}/{}", seg(&name)), &body)?;
            c.out.note(&format!(
                "exchange '{name}' declared in vhost '{}'",
                c.conn.vhost
            ))
        }
        Declare::Queue {
            name,
            durable,
            auto_delete,
            kind,
            args,
        } => {
            let mut arguments = pairs(&args, "--arg")?;
            if let Some(k) = kind {
                arguments.insert("x-queue-type".into(), Value::String(k));
            }
            let body =
                json!({"durable": durable, "auto_delete": auto_delete, "arguments": arguments});
            c.api.put(&format!("queues/{v}/{}", seg(&name)), &body)?;
            c.out.note(&format!(
                "queue '{name}' declared in vhost '{}'",
                c.conn.vhost
            ))
        }
        Declare::Binding { which, args } => {
            let BindingArgs {
                source,
                destination,
                destination_type,
                routing_key,
            } = which;
            let d = dest_kind(&destination_type)?;
            let body = json!({"routing_key": routing_key, "arguments": pairs(&args, "--arg")?});
            let src = if source.is_empty() {
                "amq.default".to_string()
            } else {
                source.clone()
            };
            c.api.post(
                &format!("bindings/{v}/e/{}/{d}/{}", seg(&src), seg(&destination)),
                &body,
            )?;
            c.out.note(&format!(
                "binding from '{source}' to '{destination}' with key '{routing_key}' declared"
            ))
        }
        Declare::User {
            name,
            new_password,
            password_hash,
            tags,
        } => {
            let mut body = json!({"tags": tags_list(&tags)});
            match (new_password, password_hash) {
                (_, Some(h)) => body["password_hash"] = Value::String(h),
                (Some(p), None) => body["password"] = Value::String(p),
                (None, None) => {
                    let p = read_password(c.input)?;
                    body["password"] = Value::String(p);
                }
            }
            c.api.put(&format!("users/{}", seg(&name)), &body)?;
            c.out.note(&format!("user '{name}' declared"))
        }
        Declare::Vhost {
            name,
            description,
            tags,
            default_queue_type,
        } => {
            let mut body = Map::new();
            if let Some(d) = description {
                body.insert("description".into(), Value::String(d));
            }
            if let Some(t) = tags {
                body.insert("tags".into(), json!(tags_list(&t)));
            }
            if let Some(q) = default_queue_type {
                body.insert("default_queue_type".into(), Value::String(q));
            }
            c.api
                .put(&format!("vhosts/{}", seg(&name)), &Value::Object(body))?;
            c.out.note(&format!("vhost '{name}' declared"))
        }
        Declare::Permission {
            for_user: user,
            configure,
            write,
            read,
        } => {
            let body = json!({"configure": configure, "write": write, "read": read});
            c.api
                .put(&format!("permissions/{v}/{}", seg(&user)), &body)?;
            c.out.note(&format!(
                "permissions of '{user}' in vhost '{}' set",
                c.conn.vhost
            ))
        }
        Declare::TopicPermission {
            for_user: user,
            exchange,
            write,
            read,
        } => {
            let body = json!({"exchange": exchange, "write": write, "read": read});
            c.api
                .put(&format!("topic-permissions/{v}/{}", seg(&user)), &body)?;
            c.out.note(&format!(
                "topic permissions of '{user}' on '{exchange}' set"
            ))
        }
        Declare::Policy {
            name,
            pattern,
            definition,
            priority,
            apply_to,
            operator,
        } => {
            let definition: Value = serde_json::from_str(&definition)
                .map_err(|e| CliError::usage(format!("--definition is not JSON: {e}")))?;
            if !definition.is_object() {
                return Err(CliError::usage("--definition must be a JSON object"));
            }
            let body = json!({"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to});
            let kind = if operator {
                "operator-policies"
            } else {
                "policies"
            };
            c.api.put(&format!("{kind}/{v}/{}", seg(&name)), &body)?;
            c.out
                .note(&format!("policy '{name}' set in vhost '{}'", c.conn.vhost))
        }
    }
}

fn dest_kind(t: &str) -> Result<&'static str, CliError> {
    match t {
        "queue" | "q" => Ok("q"),
        "exchange" | "e" => Ok("e"),
        other => Err(CliError::usage(format!(
            "--destination-type must be queue or exchange: {other}"
        ))),
    }
}

fn read_password(input: &mut dyn Read) -> Result<String, CliError> {
    let raw = read_all(input, "the password")?;
    let text = String::from_utf8(raw).map_err(|_| CliError::usage("the password is not UTF-8"))?;
    let p = text.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        return Err(CliError::usage(
            "no password given (standard input was empty)",
        ));
    }
    Ok(p)
}

/// `delete ...`.
pub fn delete(c: &mut Ctx<'_>, what: Delete) -> Result<(), CliError> {
    let v = seg(&c.conn.vhost);
    let (path, done) = match what {
        Delete::Exchange { name, if_unused } => {
            let q = if if_unused { "?if-unused=true" } else { "" };
            (
                format!("exchanges/{v}/{}{q}", seg(&name)),
                format!("exchange '{name}' deleted"),
            )
        }
        Delete::Queue {
            name,
            if_unused,
            if_empty,
        } => {
            let mut q = Vec::new();
            if if_unused {
                q.push("if-unused=true");
            }
            if if_empty {
                q.push("if-empty=true");
            }
            let q = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            (
                format!("queues/{v}/{}{q}", seg(&name)),
                format!("queue '{name}' deleted"),
            )
        }
        Delete::Binding { which } => {
            let BindingArgs {
                source,
                destination,
                destination_type,
                routing_key,
            } = which;
            let d = dest_kind(&destination_type)?;
            let src = if source.is_empty() {
                "amq.default".to_string()
            } else {
                source.clone()
            };
            let base = format!("bindings/{v}/e/{}/{d}/{}", seg(&src), seg(&destination));
            let found = c.api.get(&base)?;
            let props = found
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["routing_key"].as_str() == Some(routing_key.as_str()))
                .and_then(|b| b["properties_key"].as_str().map(str::to_string))
                .ok_or_else(|| {
                    CliError::new(
                        Exit::NotFound,
                        format!(
                            "no binding from '{source}' to '{destination}' with key '{routing_key}' in vhost '{}' on {}",
                            c.conn.vhost,
                            c.api.server()
                        ),
                    )
                })?;
            (
                format!("{base}/{}", seg(&props)),
                "binding deleted".to_string(),
            )
        }
        Delete::User { name } => (
            format!("users/{}", seg(&name)),
            format!("user '{name}' deleted"),
        ),
        Delete::Vhost { name } => (
            format!("vhosts/{}", seg(&name)),
            format!("vhost '{name}' deleted"),
        ),
        Delete::Permission { for_user: user } => (
            format!("permissions/{v}/{}", seg(&user)),
            format!("permissions of '{user}' deleted"),
        ),
        Delete::TopicPermission {
            for_user: user,
            exchange,
        } => {
            let mut p = format!("topic-permissions/{v}/{}", seg(&user));
            if let Some(x) = exchange {
                p = format!("{p}/{}", seg(&x));
            }
            (p, format!("topic permissions of '{user}' deleted"))
        }
        Delete::Policy { name, operator } => {
            let kind = if operator {
                "operator-policies"
            } else {
                "policies"
            };
            (
                format!("{kind}/{v}/{}", seg(&name)),
                format!("policy '{name}' deleted"),
            )
        }
    };
    c.api.delete(&path, &[])?;
    c.out.note(&done)
}

/// `purge queue NAME`.
pub fn purge(c: &mut Ctx<'_>, what: Purge) -> Result<(), CliError> {
    let Purge::Queue { name } = what;
    c.api.delete(
        &format!("queues/{}/{}/contents", seg(&c.conn.vhost), seg(&name)),
        &[],
    )?;
    c.out.note(&format!("queue '{name}' purged"))
}

// ---------------------------------------------------------------- publish, get

/// `publish`.
#[allow(clippy::too_many_arguments, reason = "the publish options")]
pub fn publish(
    c: &mut Ctx<'_>,
    exchange: &str,
    routing_key: &str,
    body: Option<String>,
    body_file: Option<std::path::PathBuf>,
    properties: &[String],
    headers: &[String],
    persistent: bool,
) -> Result<(), CliError> {
    let payload: Vec<u8> = match (body, body_file) {
        (Some(b), _) => b.into_bytes(),
        (None, Some(f)) => read_file_or_stdin(&f.to_string_lossy(), c.input, "the body")?,
        (None, None) => read_all(c.input, "the body")?,
    };
    let mut props = pairs(properties, "--property")?;
    for k in [
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    ] {
        if let Some(v) = props.get_mut(k)
            && !v.is_string()
        {
            *v = Value::String(v.to_string());
        }
    }
    if persistent {
        props.insert("delivery_mode".into(), Value::from(2));
    }
    if !headers.is_empty() {
        props.insert("headers".into(), Value::Object(pairs(headers, "--header")?));
    }
    let (text, encoding) = match String::from_utf8(payload) {
        Ok(s) => (s, "string"),
        Err(e) => (base64(e.as_bytes()), "base64"),
    };
    let x = if exchange.is_empty() {
        "amq.default"
    } else {
        exchange
    };
    let r = c.api.post(
        &format!("exchanges/{}/{}/publish", seg(&c.conn.vhost), seg(x)),
        &json!({"properties": props, "routing_key": routing_key, "payload": text, "payload_encoding": encoding}),
    )?;
    let routed = r
        .as_ref()
        .and_then(|v| v["routed"].as_bool())
        .unwrap_or(false);
    match c.out.format {
        crate::cli::Format::Json => c.out.json(&json!({"routed": routed})),
        crate::cli::Format::Tsv => c
            .out
            .object(&json!({"routed": routed}), &[("routed", "routed")]),
        crate::cli::Format::Table => c.out.note(if routed {
            "published"
        } else {
            "published, but no queue took it (not routed)"
        }),
    }
}

/// `get`.
pub fn get(
    c: &mut Ctx<'_>,
    queue: &str,
    count: u32,
    ack: bool,
    reject: bool,
    base64_always: bool,
) -> Result<(), CliError> {
    let ackmode = match (ack, reject) {
        (true, _) => "ack_requeue_false",
        (false, true) => "reject_requeue_false",
        (false, false) => "ack_requeue_true",
    };
    let encoding = if base64_always { "base64" } else { "auto" };
    let r = c.api.post(
        &format!("queues/{}/{}/get", seg(&c.conn.vhost), seg(queue)),
        &json!({"count": count, "ackmode": ackmode, "encoding": encoding}),
    )?;
    let items: Vec<Value> = match r {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    if c.out.format == crate::cli::Format::Table {
        // Bodies shown safely: text as text (control characters escaped),
        // binary as its size and base64.
        let shown: Vec<Value> = items
            .iter()
            .map(|m| {
                let mut m = m.clone();
                let payload = m["payload"].as_str().unwrap_or_default().to_string();
                m["payload"] = Value::String(if m["payload_encoding"] == "base64" {
                    format!("<{} bytes, base64> {payload}", m["payload_bytes"])
                } else {
                    payload.escape_debug().to_string()
                });
                m
            })
            .collect();
        if shown.is_empty() {
            return c.out.note(&format!("queue '{queue}' is empty"));
        }
        let cols: Vec<String> = [
            "exchange",
            "routing_key",
            "redelivered",
            "message_count",
            "payload_bytes",
            "payload",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        return c.out.rows(&shown, &cols, false);
    }
    let cols: Vec<String> = [
        "exchange",
        "routing_key",
        "redelivered",
        "message_count",
        "payload_bytes",
        "payload_encoding",
        "payload",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.out.rows(&items, &cols, false)
}

// ---------------------------------------------------------------- close, definitions, passwords

/// `close connection NAME`.
pub fn close(c: &mut Ctx<'_>, what: Close) -> Result<(), CliError> {
    let Close::Connection { name, reason } = what;
    c.api.delete(
        &format!("connections/{}", seg(&name)),
        &[("X-Reason", &reason)],
    )?;
    c.out.note(&format!("connection '{name}' closed"))
}

/// `export definitions [FILE|-]`.
pub fn export(c: &mut Ctx<'_>, what: Export) -> Result<(), CliError> {
    let Export::Definitions { file } = what;
    let path = if c.conn.vhost_given {
        format!("definitions/{}", seg(&c.conn.vhost))
    } else {
        "definitions".to_string()
    };
    let defs = c.api.get(&path)?;
    let text = serde_json::to_string_pretty(&defs)
        .map_err(|e| CliError::new(Exit::Failure, e.to_string()))?;
    if file == "-" {
        let fmt = c.out.format;
        c.out.format = crate::cli::Format::Json;
        let r = c.out.json(&defs);
        c.out.format = fmt;
        return r;
    }
    std::fs::write(&file, text + "\n")
        .map_err(|e| CliError::new(Exit::Failure, format!("cannot write {file}: {e}")))?;
    c.out.note(&format!("definitions exported to {file}"))
}

/// `import definitions FILE|-`.
pub fn import(c: &mut Ctx<'_>, what: Import) -> Result<(), CliError> {
    let Import::Definitions { file } = what;
    let raw = read_file_or_stdin(&file, c.input, "the definitions")?;
    let defs: Value = serde_json::from_slice(&raw)
        .map_err(|e| CliError::usage(format!("{file} is not JSON: {e}")))?;
    let path = if c.conn.vhost_given {
        format!("definitions/{}", seg(&c.conn.vhost))
    } else {
        "definitions".to_string()
    };
    c.api.post(&path, &defs)?;
    c.out.note(&format!("definitions imported from {file}"))
}

/// `set-password USER`.
pub fn set_password(c: &mut Ctx<'_>, user: &str, password: Option<String>) -> Result<(), CliError> {
    let u = c.api.get(&format!("users/{}", seg(user)))?;
    let password = match password {
        Some(p) => p,
        None => read_password(c.input)?,
    };
    let tags = u.get("tags").cloned().unwrap_or(json!([]));
    c.api.put(
        &format!("users/{}", seg(user)),
        &json!({"password": password, "tags": tags}),
    )?;
    c.out.note(&format!("password of '{user}' changed"))
}

// ---------------------------------------------------------------- user limits

/// `set-user-limits USER JSON`: one `PUT /api/user-limits/USER/NAME` per
/// limit named, in the order given; the first the server refuses stops it.
pub fn set_user_limits(c: &mut Ctx<'_>, user: &str, definition: &str) -> Result<(), CliError> {
    let limits = match serde_json::from_str::<Value>(definition) {
        Ok(Value::Object(o)) => o,
        _ => {
            return Err(CliError::usage(format!(
                "the limits must be a JSON object, e.g. '{{\"max-connections\": 10}}': {definition}"
            )));
        }
    };
    for (name, value) in &limits {
        c.api.put(
            &format!("user-limits/{}/{}", seg(user), seg(name)),
            &json!({ "value": value }),
        )?;
    }
    c.out.note(&format!("limits of '{user}' set"))
}

/// `clear-user-limits USER NAME|all`.
pub fn clear_user_limits(c: &mut Ctx<'_>, user: &str, name: &str) -> Result<(), CliError> {
    c.api
        .delete(&format!("user-limits/{}/{}", seg(user), seg(name)), &[])?;
    c.out.note(&format!("limit '{name}' of '{user}' cleared"))
}

/// `list-user-limits [--for-user USER]`.
pub fn list_user_limits(c: &mut Ctx<'_>, user: Option<&str>) -> Result<(), CliError> {
    let path = match user {
        Some(u) => format!("user-limits/{}", seg(u)),
        None => "user-limits".to_string(),
    };
    let items = match c.api.get(&path)? {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    let columns: Vec<String> = ["user", "value.max-connections", "value.max-channels"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.out.rows(&items, &columns, false)
}

/// RabbitMQ's `password_hash` of `password` with `salt`.
pub fn rabbitmq_hash(password: &str, salt: [u8; 4]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&digest);
    base64(&raw)
}

/// `hash-password`.
pub fn hash_password(c: &mut Ctx<'_>, password: Option<String>) -> Result<(), CliError> {
    use std::hash::{BuildHasher, Hasher};
    let password = match password {
        Some(p) => p,
        None => read_password(c.input)?,
    };
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(password.as_bytes());
    let v = h.finish().to_le_bytes();
    let hash = rabbitmq_hash(&password, [v[0], v[1], v[2], v[3]]);
    let fmt = c.out.format;
    c.out.format = crate::cli::Format::Table;
    let r = c.out.note(&hash);
    c.out.format = fmt;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_values_are_typed_as_people_write_them() {
        assert_eq!(typed("1000"), json!(1000));
        assert_eq!(typed("1.5"), json!(1.5));
        assert_eq!(typed("true"), json!(true));
        assert_eq!(typed("reject-publish"), json!("reject-publish"));
        assert_eq!(typed(r#"["a","b"]"#), json!(["a", "b"]));
        assert_eq!(typed(r#""007""#), json!("007"));
        assert!(pairs(&["novalue".into()], "--arg").is_err());
    }

    #[test]
    fn hashes_are_rabbitmqs() {
        // base64(salt ++ sha256(salt ++ "guest")) with a zero salt.
        let h = rabbitmq_hash("guest", [0, 0, 0, 0]);
        assert_eq!(crate::client::unbase64(&h).map(|r| r.len()), Some(36));
        assert!(h.starts_with("AAAAA"));
    }
}
