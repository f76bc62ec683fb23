//! The `warren` broker process: configuration, the TCP listener, one task
//! per connection driving a [`warren_core::Connection`], and shutdown.
//!
//! # Layout
//! - [`config`]: the TOML file and its defaults.
//! - [`server`]: [`run`], the accept loop and the per-connection driver.
//! - [`persistence`]: the thread that batches store writes and releases
//!   confirms after each flush.
//! - [`journal`]: what that thread needs from storage, over sled and in
//!   memory (for tests that crash it at every step).
//! - [`recovery`]: rebuilding the broker from the data directory.
//! - [`management`]: the management HTTP API beside AMQP, and
//!   `load_definitions`.
//! - [`tls`]: certificates for AMQPS and HTTPS, reloaded on SIGHUP, and
//!   the names `EXTERNAL` logs in with.
//! - [`resources`]: memory and free disk against their alarm thresholds.
//!
//! Tests start a broker with [`run`] on `127.0.0.1:0` in-process.

pub mod config;
mod inbox;
pub mod journal;
pub mod management;
pub mod persistence;
pub mod recovery;
pub mod resources;
pub mod server;
pub mod tls;

pub use config::Config;
pub use server::{Listeners, Server, run, run_listeners};
pub use tls::Tls;
