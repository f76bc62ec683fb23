//! Starting the management HTTP API beside the AMQP listener, and
//! applying `load_definitions` at boot.

use std::net::SocketAddr;
use std::sync::Arc;

use warren_management::{Listener, Management};

use crate::Server;

/// This node's name as the API reports it: `warren@<hostname>`.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("warren@{host}")
}

/// The API's state for `server`, listening on `http` beside AMQP on
/// `amqp`.
pub fn state(server: &Server, amqp: SocketAddr, http: Option<SocketAddr>) -> Arc<Management> {
    let mut listeners = vec![listener("amqp", amqp)];
    listeners.extend(http.map(|h| listener("http", h)));
    state_for(server, listeners)
}

/// A listener as the API lists it: `amqp`, `amqp/ssl`, `http`, `https`.
pub fn listener(protocol: &str, addr: SocketAddr) -> Listener {
    Listener {
        protocol: protocol.to_string(),
        addr,
    }
}

/// The API's state for `server` with the listeners it reports.
pub fn state_for(server: &Server, listeners: Vec<Listener>) -> Arc<Management> {
    let mut m = Management::new(Arc::clone(&server.broker), node_name(), listeners);
    if let Some(inner) = Arc::get_mut(&mut m) {
        inner.max_body = server.config.management.max_body_bytes;
        inner.stats_interval =
            std::time::Duration::from_millis(server.config.management.stats_interval_ms);
    }
    m
}

/// Applies the configured `load_definitions` file, if any.
pub fn load_definitions(server: &Server, state: &Arc<Management>) -> Result<(), String> {
    let Some(path) = &server.config.load_definitions else {
        return Ok(());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("load_definitions {}: {e}", path.display()))?;
    warren_management::definitions::load_file(state, &text)
        .map_err(|e| format!("load_definitions {}: {e}", path.display()))?;
    tracing::info!(file = %path.display(), "definitions loaded");
    Ok(())
}
