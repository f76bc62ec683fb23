//! Warren's management HTTP API: RabbitMQ's management plugin's paths,
//! JSON, status codes and error bodies, so that `rabbitmqadmin`,
//! monitoring checks, the Terraform provider and `curl` scripts work
//! unchanged. Every change goes through the broker model's typed requests
//! (`warren_core::admin`, `VHost::declare_queue`, ...); nothing here
//! touches a connection's task or the store.
//!
//! # Layout
//! - [`auth`]: HTTP Basic against the broker's users, and the tags' rights.
//! - [`error`]: `{"error", "reason"}` bodies and the AMQP-to-HTTP mapping.
//! - [`json`]: field tables and properties as JSON.
//! - [`list`]: pagination, sorting, `columns` and `name` filters.
//! - `overview`, `access`, `topology`, `live`, `policies`, `definitions`:
//!   the routes.

mod access;
pub mod auth;
pub mod definitions;
pub mod error;
pub mod json;
pub mod list;
mod live;
mod overview;
mod policies;
mod topology;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use warren_core::Broker;

use crate::error::ApiError;

/// A listener the broker runs, as `overview` and the health checks report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `amqp`, `amqp/ssl`, `http`.
    pub protocol: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// What the API serves from.
#[derive(Debug)]
pub struct Management {
    /// The broker model.
    pub broker: Arc<Broker>,
    /// This node's name (`warren@host`).
    pub node: String,
    /// The listeners, this API's included.
    pub listeners: Vec<Listener>,
    /// When the broker started.
    pub started: Instant,
    /// The cluster name (`PUT /api/cluster-name` changes it).
    pub cluster_name: RwLock<String>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
}

impl Management {
    /// The API state for `broker`, named `node`.
    pub fn new(broker: Arc<Broker>, node: String, listeners: Vec<Listener>) -> Arc<Self> {
        Arc::new(Management {
            broker,
            cluster_name: RwLock::new(node.clone()),
            node,
            listeners,
            started: Instant::now(),
            max_body: 20_000_000,
        })
    }

    fn cluster_name(&self) -> String {
        self.cluster_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The shared state handlers get.
pub type Shared = Arc<Management>;

/// The whole API as a router (paths under `/api`).
pub fn router(state: Shared) -> Router {
    let max_body = state.max_body;
    let api = Router::new()
        .merge(overview::routes())
        .merge(access::routes())
        .merge(topology::routes())
        .merge(live::routes())
        .merge(definitions::routes())
        .merge(policies::routes())
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    // A trailing slash names the same resource (rabbit-hole asks for
    // `users/`): strip it before routing.
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn(strip_trailing_slash))
}

async fn strip_trailing_slash(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    if req.method() == Method::OPTIONS {
        // CORS preflight: allowed everywhere, no credentials needed.
        return StatusCode::OK.into_response();
    }
    next.run(req).await
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A request body as JSON: empty (or `null`) is `{}`; anything that is not
/// a JSON object is 400 as RabbitMQ answers it.
pub(crate) fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Null) => Ok(Value::Object(serde_json::Map::new())),
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(Value::String(_)) => Err(ApiError::bad_request(
            "Request body decoded to a string. Is the input JSON-encoded twice?",
        )),
        Ok(_) => Err(ApiError::bad_request("not_json")),
        Err(_) => Err(ApiError::bad_request("not_json")),
    }
}

/// 201 for a resource created, 204 for one that existed.
pub(crate) fn created(new: bool) -> Response {
    if new {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// 204, empty.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
