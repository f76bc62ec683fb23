//! Vhosts, users, permissions and topic permissions, through
//! `warren_core::admin`'s typed requests.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use warren_core::access::{Account, PermissionSpec, TopicPermissionSpec, VhostMeta};
use warren_core::password::Password;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{tags, text};
use crate::list::{ListQuery, respond};
use crate::overview::details;
use crate::{Shared, body_json, created, no_content};

/// RabbitMQ's name for the only hash Warren keeps.
pub(crate) const SHA256: &str = "rabbit_password_hashing_sha256";

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(vhost).put(put_vhost).delete(delete_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(|s, c, Path(v): Path<String>| grants(s, c, None, Some(v), false)),
        )
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(|s, c, Path(v): Path<String>| grants(s, c, None, Some(v), true)),
        )
        .route("/api/users", get(users))
        .route(
            "/api/users/without-permissions",
            get(users_without_permissions),
        )
        .route("/api/users/bulk-delete", post(bulk_delete))
        .route(
            "/api/users/{user}",
            get(user).put(put_user).delete(delete_user),
        )
        .route(
            "/api/users/{user}/permissions",
            get(|s, c, Path(u): Path<String>| grants(s, c, Some(u), None, false)),
        )
        .route(
            "/api/users/{user}/topic-permissions",
            get(|s, c, Path(u): Path<String>| grants(s, c, Some(u), None, true)),
        )
        .route(
            "/api/permissions",
            get(|s, c| grants(s, c, None, None, false)),
        )
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route(
            "/api/topic-permissions",
            get(|s, c| grants(s, c, None, None, true)),
        )
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topic_permission)
                .put(put_topic_permission)
                .delete(delete_topic_permission),
        )
        .route(
            "/api/topic-permissions/{vhost}/{user}/{exchange}",
            axum::routing::delete(delete_one_topic_permission),
        )
}

// ---------------------------------------------------------------- vhosts

fn vhost_json(m: &Shared, vh: &warren_core::VHost) -> Value {
    let meta = vh.meta();
    let (mut ready, mut unacked) = (0u64, 0u64);
    for q in vh.queues() {
        let s = q.stats();
        ready += s.ready;
        unacked += s.unacked;
    }
    let dqt = if meta.default_queue_type.is_empty() {
        "undefined".to_string()
    } else {
        meta.default_queue_type.clone()
    };
    json!({
        "name": vh.name,
        "description": meta.description,
        "tags": meta.tags,
        "default_queue_type": dqt,
        "metadata": {"description": meta.description, "tags": meta.tags},
        "tracing": false,
        "cluster_state": {m.node.clone(): "running"},
        "messages": ready + unacked,
        "messages_details": details(0.0),
        "messages_ready": ready,
        "messages_ready_details": details(0.0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": details(0.0),
    })
}

async fn vhosts(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let mut all = m.broker.vhosts();
    if !caller.is_monitor() {
        all.retain(|v| caller.may_use_vhost(&m, &v.name));
    }
    respond(
        all.iter().map(|v| vhost_json(&m, v)).collect(),
        &q,
        &["name"],
    )
}

async fn vhost(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let vh = m.broker.vhost(&name).ok_or_else(ApiError::not_found)?;
    if !caller.is_monitor() && !caller.may_use_vhost(&m, &name) {
        return Err(ApiError::not_authorised(
            "User not authorised to access virtual host",
        ));
    }
    Ok(Json(vhost_json(&m, &vh)))
}

async fn put_vhost(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request("invalid vhost name"));
    }
    let old = m.broker.vhost(&name).map(|v| v.meta());
    let default_queue_type = match text(&body, "default_queue_type")? {
        Some(t @ ("classic" | "quorum")) => t.to_string(),
        Some("undefined") | None => old
            .as_ref()
            .map(|o| o.default_queue_type.clone())
            .unwrap_or_default(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported queue type '{other}'"
            )));
        }
    };
    let meta = VhostMeta {
        limits: Default::default(),
        name: name.clone(),
        description: match text(&body, "description")? {
            Some(d) => d.to_string(),
            None => old
                .as_ref()
                .map(|o| o.description.clone())
                .unwrap_or_default(),
        },
        tags: match body.get("tags") {
            Some(t) => tags(t)?,
            None => old.map(|o| o.tags).unwrap_or_default(),
        },
        default_queue_type,
    };
    let (_, new) = m.broker.put_vhost(meta);
    if new {
        // RabbitMQ grants the creating user everything on a vhost it makes.
        m.broker
            .put_permissions(PermissionSpec::all(caller.name(), &name))?;
    }
    Ok(created(new))
}

async fn delete_vhost(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker.delete_vhost(&name)?;
    Ok(no_content())
}

// ---------------------------------------------------------------- users

/// A user as RabbitMQ's API shows it, with its limits (`{}` when none).
pub(crate) fn user_json(m: &Shared, u: &Account) -> Value {
    let limits = m.broker.access.user_limits(&u.name).unwrap_or_default();
    json!({
        "name": u.name,
        "password_hash": u.password.as_ref().and_then(Password::to_rabbitmq_hash).unwrap_or_default(),
        "hashing_algorithm": SHA256,
        "tags": u.tags,
        "limits": crate::policies::user_limits_value(&limits),
    })
}

async fn users(
    State(m): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let items = m
        .broker
        .access
        .users()
        .iter()
        .map(|u| user_json(&m, u))
        .collect();
    respond(items, &q, &["name"])
}

async fn users_without_permissions(
    State(m): State<Shared>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        m.broker
            .access
            .users_without_permissions()
            .iter()
            .map(|u| user_json(&m, u))
            .collect(),
    )))
}

fn find_user(m: &Shared, name: &str) -> Result<Arc<Account>, ApiError> {
    m.broker.access.user(name).ok_or_else(ApiError::not_found)
}

async fn user(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(user_json(&m, find_user(&m, &name)?.as_ref())))
}

/// The password of a user `PUT`: in clear (hashed here), as a RabbitMQ
/// hash, or none.
fn password_of(body: &Value) -> Result<Option<Password>, ApiError> {
    let clear = text(body, "password")?;
    let hash = text(body, "password_hash")?;
    match (clear, hash) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "both_password_and_password_hash_are_provided",
        )),
        (Some(p), None) => Ok(Some(Password::Plain(p.to_string()))),
        (None, Some("")) | (None, None) => Ok(None),
        (None, Some(h)) => {
            if let Some(alg) = text(body, "hashing_algorithm")?
                && alg != SHA256
            {
                return Err(ApiError::bad_request(format!(
                    "unsupported hashing algorithm '{alg}'"
                )));
            }
            Password::from_rabbitmq_hash(h)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request("invalid password_hash"))
        }
    }
}

async fn put_user(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("invalid user name"));
    }
    let user_tags = match (body.get("tags"), body.get("administrator")) {
        (Some(t), _) => tags(t)?,
        (None, Some(a)) if a == "true" || a == &Value::Bool(true) => {
            vec!["administrator".to_string()]
        }
        (None, Some(_)) => Vec::new(),
        (None, None) => return Err(ApiError::bad_request("tags_not_present")),
    };
    let password = password_of(&body)?;
    let new = m.broker.put_user(&name, password, user_tags);
    if new && let Some(Value::Object(perms)) = body.get("permissions") {
        for (vhost, p) in perms {
            let spec = PermissionSpec {
                user: name.clone(),
                vhost: vhost.clone(),
                configure: text(p, "configure")?.unwrap_or("").to_string(),
                write: text(p, "write")?.unwrap_or("").to_string(),
                read: text(p, "read")?.unwrap_or("").to_string(),
            };
            m.broker.put_permissions(spec)?;
        }
    }
    Ok(created(new))
}

async fn delete_user(
    State(m): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker.delete_user(&name)?;
    Ok(no_content())
}

async fn bulk_delete(
    State(m): State<Shared>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    let Some(Value::Array(names)) = body.get("users") else {
        return Err(ApiError::bad_request("[{key_missing,users}]"));
    };
    for n in names.iter().filter_map(Value::as_str) {
        // Users that do not exist are skipped, as in RabbitMQ.
        let _ = m.broker.delete_user(n);
    }
    Ok(no_content())
}

// ---------------------------------------------------------------- permissions

fn permission_json(p: &PermissionSpec) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn topic_json(t: &TopicPermissionSpec) -> Value {
    json!({"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write, "read": t.read})
}

/// Permissions (or, `topic`, topic permissions), of one user or in one
/// vhost (either must exist) or all.
async fn grants(
    State(m): State<Shared>,
    caller: Caller,
    user: Option<String>,
    vhost: Option<String>,
    topic: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    if let Some(u) = &user {
        find_user(&m, u)?;
    }
    if let Some(v) = &vhost {
        m.broker.vhost(v).ok_or_else(ApiError::not_found)?;
    }
    let (u, v) = (user.as_deref(), vhost.as_deref());
    let items: Vec<Value> = if topic {
        m.broker
            .access
            .topic_permission_specs(u, v)
            .iter()
            .map(topic_json)
            .collect()
    } else {
        m.broker
            .access
            .permission_specs(u, v)
            .iter()
            .map(permission_json)
            .collect()
    };
    Ok(Json(Value::Array(items)))
}

async fn permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    m.broker
        .access
        .permission_specs(Some(&user), Some(&vhost))
        .first()
        .map(|p| Json(permission_json(p)))
        .ok_or_else(ApiError::not_found)
}

fn user_and_vhost_exist(m: &Shared, user: &str, vhost: &str) -> Result<(), ApiError> {
    if m.broker.access.user(user).is_none() || m.broker.vhost(vhost).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    Ok(())
}

fn required<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    text(body, key)?.ok_or_else(|| ApiError::bad_request(format!("[{{key_missing,{key}}}]")))
}

async fn put_permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    user_and_vhost_exist(&m, &user, &vhost)?;
    let spec = PermissionSpec {
        user: user.clone(),
        vhost: vhost.clone(),
        configure: required(&body, "configure")?.to_string(),
        write: required(&body, "write")?.to_string(),
        read: required(&body, "read")?.to_string(),
    };
    let new = m.broker.permissions(&user, &vhost).is_none();
    m.broker.put_permissions(spec)?;
    Ok(created(new))
}

async fn delete_permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker.delete_permissions(&user, &vhost)?;
    Ok(no_content())
}

async fn topic_permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let items = m
        .broker
        .access
        .topic_permission_specs(Some(&user), Some(&vhost));
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(items.iter().map(topic_json).collect()))
}

async fn put_topic_permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    user_and_vhost_exist(&m, &user, &vhost)?;
    let spec = TopicPermissionSpec {
        user: user.clone(),
        vhost: vhost.clone(),
        exchange: required(&body, "exchange")?.to_string(),
        write: required(&body, "write")?.to_string(),
        read: required(&body, "read")?.to_string(),
    };
    let new = !m
        .broker
        .access
        .topic_permission_specs(Some(&user), Some(&vhost))
        .iter()
        .any(|t| t.exchange == spec.exchange);
    m.broker.put_topic_permissions(spec)?;
    Ok(created(new))
}

async fn delete_topic_permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker.delete_topic_permissions(&user, &vhost, None)?;
    Ok(no_content())
}

async fn delete_one_topic_permission(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, user, exchange)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker
        .delete_topic_permissions(&user, &vhost, Some(&exchange))?;
    Ok(no_content())
}
