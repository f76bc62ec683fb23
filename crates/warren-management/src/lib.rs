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
//!   the routes; `move_messages`: Warren's own queue-to-queue move.
//! - [`ui`]: the web UI's embedded files, served at `/`.

mod access;
pub mod auth;
pub mod definitions;
pub mod error;
pub mod json;
pub mod list;
mod live;
pub mod metrics;
mod move_messages;
mod overview;
mod policies;
pub mod rates;
mod topology;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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
    /// How often rates are sampled.
    pub stats_interval: std::time::Duration,
    /// The rates as of the last sample.
    pub rates: Arc<rates::Rates>,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
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
            stats_interval: std::time::Duration::from_secs(5),
            rates: Arc::default(),
            header_timeout: HEADER_TIMEOUT,
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

/// The whole API as a router (paths under `/api`), with the web UI at `/`.
pub fn router(state: Shared) -> Router {
    let max_body = state.max_body;
    let api = Router::new()
        .merge(overview::routes())
        .merge(access::routes())
        .merge(topology::routes())
        .merge(live::routes())
        .merge(definitions::routes())
        .merge(policies::routes())
        .merge(move_messages::routes())
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    // A trailing slash names the same resource (rabbit-hole asks for
    // `users/`): strip it before routing. The web UI's files are at `/`
    // and `/ui/...`; every other path is the API's.
    Router::new()
        .merge(ui::routes())
        .fallback_service(api)
        .layer(middleware::from_fn(strip_trailing_slash))
        .layer(middleware::from_fn(ui::quiet_challenge))
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

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may take, body upload included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one connection is kept before it is closed gracefully (after
/// the request in progress): bounds idle kept-alive connections.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Most HTTP connections served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 512;

/// Serves the API on `listener` until `shutdown` completes. Each
/// connection is its own task: slow clients time out (headers in 30 s, a
/// whole request in 120 s), a connection is closed gracefully after
/// 120 s, and at most 512 are served at once; nothing here runs on an
/// AMQP connection's task.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler =
        tokio::spawn(Arc::clone(&state.rates).run(Arc::clone(&state.broker), state.stats_interval));
    let header_timeout = state.header_timeout;
    let app = router(state)
        .layer(middleware::from_fn(rabbitmq_reply_shape))
        .layer(middleware::from_fn(request_timeout));
    let served = serve_app(listener, app, header_timeout, None, shutdown).await;
    sampler.abort();
    served
}

/// The TLS configuration current for a new HTTPS connection (the broker
/// swaps it when certificates are reloaded).
pub type TlsSource = Arc<dyn Fn() -> Arc<tokio_rustls::rustls::ServerConfig> + Send + Sync>;

/// [`serve`] over HTTPS.
pub async fn serve_tls(
    listener: TcpListener,
    state: Shared,
    tls: TlsSource,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler =
        tokio::spawn(Arc::clone(&state.rates).run(Arc::clone(&state.broker), state.stats_interval));
    let header_timeout = state.header_timeout;
    let app = router(state)
        .layer(middleware::from_fn(rabbitmq_reply_shape))
        .layer(middleware::from_fn(request_timeout));
    let served = serve_app(listener, app, header_timeout, Some(tls), shutdown).await;
    sampler.abort();
    served
}

/// Serves the Prometheus endpoints (`/metrics`, `/metrics/per-object`) on
/// `listener` until `shutdown` completes, with the API's bounds on slow
/// clients; over HTTPS when given a TLS source.
pub async fn serve_metrics(
    listener: TcpListener,
    state: Shared,
    tls: Option<TlsSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = state.header_timeout;
    let app = metrics::router(state).layer(middleware::from_fn(request_timeout));
    serve_app(listener, app, header_timeout, tls, shutdown).await
}

async fn serve_app(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    tls: Option<TlsSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
        };
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let tls = tls.as_ref().map(|source| source());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, app, header_timeout).await,
                Some(config) => {
                    // The TLS handshake is bounded like the request headers.
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, app, header_timeout).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!("HTTPS handshake timed out"),
                    }
                }
            }
        });
    }
    Ok(())
}

async fn serve_connection<S>(stream: S, app: Router, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    if tokio::time::timeout(CONNECTION_LIFETIME, conn.as_mut())
        .await
        .is_err()
    {
        // The request in progress (itself bounded) may finish.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.as_mut()).await;
    }
}

async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// Replies as RabbitMQ shapes them: `columns` on a reply that is one
/// object (lists apply it themselves), and a body over the limit as its
/// 400.
async fn rabbitmq_reply_shape(req: Request, next: Next) -> Response {
    let columns: Option<Vec<String>> = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("columns="))
            .find(|c| !c.is_empty())
            .map(|c| {
                c.replace("%2C", ",")
                    .replace("%2c", ",")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            })
    });
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // RabbitMQ's answer to a body over the limit.
        return ApiError::bad_request("Exceeded HTTP request body size limit").into_response();
    }
    let Some(columns) = columns else {
        return response;
    };
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The body is rebuilt: its length is the new body's.
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) if v.get("items").is_none() => {
            let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
            let projected = list::project(&v, &cols);
            (parts, axum::Json(projected)).into_response()
        }
        _ => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that never finishes its headers is disconnected.
    #[tokio::test]
    async fn a_slow_client_is_dropped() {
        let broker = Broker::new(warren_core::BrokerConfig::default());
        let mut m = Management::new(broker, "warren@test".into(), Vec::new());
        if let Some(inner) = Arc::get_mut(&mut m) {
            inner.header_timeout = Duration::from_millis(200);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m, async move {
            let _ = stopped.await;
        }));
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "still connected after 10 s");
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
}
