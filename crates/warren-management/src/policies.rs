//! Policies and operator policies (`/api/policies`,
//! `/api/operator-policies`), `/api/parameters` for what definitions
//! carry there (operator policies), and vhost and user limits
//! (`/api/vhost-limits`, `/api/user-limits`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use warren_core::access::UserLimits;
use warren_core::admin::AdminError;
use warren_core::policy::Policy;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{int, json_to_table, table_to_json, text};
use crate::{Shared, body_json, created, no_content};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/policies", get(|s, c| list(s, c, None, false)))
        .route(
            "/api/policies/{vhost}",
            get(|s, c, Path(v): Path<String>| list(s, c, Some(v), false)),
        )
        .route(
            "/api/policies/{vhost}/{name}",
            get(|s, c, p| one(s, c, p, false))
                .put(|s, c, p, b| put(s, c, p, b, false))
                .delete(|s, c, p| delete(s, c, p, false)),
        )
        .route("/api/operator-policies", get(|s, c| list(s, c, None, true)))
        .route(
            "/api/operator-policies/{vhost}",
            get(|s, c, Path(v): Path<String>| list(s, c, Some(v), true)),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(|s, c, p| one(s, c, p, true))
                .put(|s, c, p, b| put(s, c, p, b, true))
                .delete(|s, c, p| delete(s, c, p, true)),
        )
        .route("/api/parameters", get(parameters))
        .route("/api/vhost-limits", get(all_vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(put_vhost_limit).delete(delete_vhost_limit),
        )
        .route("/api/user-limits", get(all_user_limits))
        .route("/api/user-limits/{user}", get(user_limits))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(put_user_limit).delete(delete_user_limit),
        )
        .route("/api/parameters/{component}", get(parameters_of))
}

/// A policy as RabbitMQ's API shows it.
pub(crate) fn policy_json(p: &Policy) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to.as_str(),
        "definition": table_to_json(&p.definition),
        "priority": p.priority,
    })
}

/// An operator policy as a runtime parameter (how definitions carry it).
pub(crate) fn operator_parameter_json(p: &Policy) -> Value {
    json!({
        "vhost": p.vhost,
        "component": "operator_policy",
        "name": p.name,
        "value": {
            "pattern": p.pattern,
            "definition": table_to_json(&p.definition),
            "priority": p.priority,
            "apply-to": p.apply_to.as_str(),
        },
    })
}

fn may_read(caller: &Caller, operator: bool) -> Result<(), ApiError> {
    if operator {
        caller.require_admin()
    } else {
        Ok(())
    }
}

fn may_write(m: &Shared, caller: &Caller, vhost: &str, operator: bool) -> Result<(), ApiError> {
    if operator {
        return caller.require_admin();
    }
    caller.require_policymaker()?;
    if !caller.may_use_vhost(m, vhost) {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    Ok(())
}

fn policies_in(
    m: &Shared,
    caller: &Caller,
    vhost: Option<&str>,
    operator: bool,
) -> Result<Vec<Arc<Policy>>, ApiError> {
    let vhosts = match vhost {
        Some(v) => vec![caller.vhost(m, v)?],
        None => caller.visible_vhosts(m),
    };
    Ok(vhosts
        .iter()
        .flat_map(|vh| vh.policies())
        .filter(|p| p.operator == operator)
        .collect())
}

async fn list(
    State(m): State<Shared>,
    caller: Caller,
    vhost: Option<String>,
    operator: bool,
) -> Result<Json<Value>, ApiError> {
    may_read(&caller, operator)?;
    let items = policies_in(&m, &caller, vhost.as_deref(), operator)?;
    Ok(Json(items.iter().map(|p| policy_json(p)).collect()))
}

async fn one(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    operator: bool,
) -> Result<Json<Value>, ApiError> {
    may_write(&m, &caller, &vhost, operator)?;
    let vh = m.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    vh.policies()
        .iter()
        .find(|p| p.name == name && p.operator == operator)
        .map(|p| Json(policy_json(p)))
        .ok_or_else(ApiError::not_found)
}

async fn put(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
    operator: bool,
) -> Result<Response, ApiError> {
    may_write(&m, &caller, &vhost, operator)?;
    if m.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found_because("vhost_not_found"));
    }
    let body = body_json(&body)?;
    let pattern =
        text(&body, "pattern")?.ok_or_else(|| ApiError::bad_request("[{key_missing,pattern}]"))?;
    let definition = match body.get("definition") {
        Some(d @ Value::Object(_)) => json_to_table(d)?,
        Some(_) => return Err(ApiError::bad_request("definition must be an object")),
        None => return Err(ApiError::bad_request("[{key_missing,definition}]")),
    };
    let priority = int(&body, "priority")?.unwrap_or(0);
    let apply_to = text(&body, "apply-to")?.unwrap_or("all");
    let new = m.broker.put_policy(
        &vhost, &name, pattern, apply_to, priority, definition, operator,
    )?;
    Ok(created(new))
}

async fn delete(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    operator: bool,
) -> Result<Response, ApiError> {
    may_write(&m, &caller, &vhost, operator)?;
    m.broker.delete_policy(&vhost, &name, operator)?;
    Ok(no_content())
}

/// A user's limits as RabbitMQ's `user_limits` lists them, if it has any.
pub(crate) fn user_limits_json(user: &str, l: &UserLimits) -> Option<Value> {
    (!l.is_empty()).then(|| json!({"user": user, "value": user_limits_value(l)}))
}

/// A user's limits as an object of RabbitMQ's names (`{}` when none).
pub(crate) fn user_limits_value(l: &UserLimits) -> Value {
    Value::Object(
        l.entries()
            .into_iter()
            .map(|(name, n)| (name.to_string(), n.into()))
            .collect(),
    )
}

/// Every user with limits. Any management user may list them, as RabbitMQ
/// lets it (`is_authorized_vhost_visible` with no vhost in the path).
async fn all_user_limits(State(m): State<Shared>, _: Caller) -> Json<Value> {
    Json(
        m.broker
            .access
            .all_user_limits()
            .iter()
            .filter_map(|(u, l)| user_limits_json(u, l))
            .collect(),
    )
}

async fn user_limits(
    State(m): State<Shared>,
    _: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let l = m
        .broker
        .access
        .user_limits(&user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(user_limits_json(&user, &l).into_iter().collect()))
}

/// `PUT /api/user-limits/{user}/{name}` with `{"value": N}`: RabbitMQ's
/// validation of user limits (an integer, a known name) and its texts.
async fn put_user_limit(
    State(m): State<Shared>,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    let value = match body.get("value") {
        None => return Err(ApiError::bad_request("[{key_missing,value}]")),
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} should be a number, actually was {}",
                erlang_term(v)
            ))
        })?,
    };
    m.broker
        .set_user_limit(&user, &name, Some(value))
        .map_err(user_limit_error)?;
    Ok(no_content())
}

/// A JSON value as Erlang's `~p` prints what RabbitMQ decoded it to, for
/// its validation texts: strings are binaries, `null` the atom.
fn erlang_term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

async fn delete_user_limit(
    State(m): State<Shared>,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker
        .set_user_limit(&user, &name, None)
        .map_err(user_limit_error)?;
    Ok(no_content())
}

/// A missing user in a user-limit change: 404 `user_not_found`, as
/// RabbitMQ's `rabbit_mgmt_wm_user_limit` names it.
fn user_limit_error(e: AdminError) -> ApiError {
    match e {
        AdminError::NotFound(_) => ApiError::not_found_because("user_not_found"),
        other => other.into(),
    }
}

/// A vhost's limits as RabbitMQ lists them, if it has any.
pub(crate) fn limits_json(vh: &warren_core::VHost) -> Option<Value> {
    let l = vh.limits();
    let mut value = serde_json::Map::new();
    if let Some(n) = l.max_connections {
        value.insert("max-connections".into(), n.into());
    }
    if let Some(n) = l.max_queues {
        value.insert("max-queues".into(), n.into());
    }
    (!value.is_empty()).then(|| json!({"vhost": vh.name, "value": value}))
}

async fn all_vhost_limits(State(m): State<Shared>, caller: Caller) -> Json<Value> {
    Json(
        caller
            .visible_vhosts(&m)
            .iter()
            .filter_map(|v| limits_json(v))
            .collect(),
    )
}

async fn vhost_limits(
    State(m): State<Shared>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    Ok(Json(limits_json(&vh).into_iter().collect()))
}

async fn put_vhost_limit(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    let value =
        int(&body, "value")?.ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    if m.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found_because("vhost_not_found"));
    }
    m.broker.set_vhost_limit(&vhost, &name, Some(value))?;
    Ok(no_content())
}

async fn delete_vhost_limit(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    m.broker.set_vhost_limit(&vhost, &name, None)?;
    Ok(no_content())
}

async fn parameters(State(m): State<Shared>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_policymaker()?;
    parameters_of(State(m), caller, Path("operator_policy".to_string())).await
}

async fn parameters_of(
    State(m): State<Shared>,
    caller: Caller,
    Path(component): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_policymaker()?;
    if component != "operator_policy" || !caller.is_admin() {
        return Ok(Json(json!([])));
    }
    let items = policies_in(&m, &caller, None, true)?;
    Ok(Json(
        items.iter().map(|p| operator_parameter_json(p)).collect(),
    ))
}
