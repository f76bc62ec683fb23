//! The accept loop and the per-connection driver.
//!
//! Each connection is one task that races socket reads, socket writes,
//! mailbox wake-ups, its next deadline and shutdown. Output accumulates in
//! one buffer and goes out with as few `write` calls as the socket allows;
//! while more than [`WRITE_HIGH_WATER`] bytes wait to be written the task
//! stops reading, so a client that does not read cannot make the broker
//! buffer without bound.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use warren_core::{Broker, ConnInfo, Connection, Mailbox, Wake};

use crate::config::Config;
use crate::persistence::Persister;

/// Stop reading from a client while this much output is unwritten.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Bytes to ask the socket for per read.
const READ_CHUNK: usize = 64 * 1024;

/// A running broker's shared state.
#[derive(Debug, Clone)]
pub struct Server {
    /// The broker model.
    pub broker: Arc<Broker>,
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// The store, when the broker is durable.
    pub persister: Option<Arc<Persister>>,
    persist_thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Server {
    /// Builds an in-memory broker from a configuration: nothing is written
    /// to `data_dir` and nothing survives a restart.
    pub fn new(config: Config) -> Self {
        let broker = Broker::new(config.broker_config());
        Server {
            broker,
            config: Arc::new(config),
            persister: None,
            persist_thread: Arc::default(),
        }
    }

    /// Opens the store in `config.data_dir`, recovers durable exchanges,
    /// queues, bindings and persistent messages, and builds the broker.
    pub fn open(config: Config) -> Result<Self, crate::recovery::RecoveryError> {
        let (broker, persister, thread) = crate::recovery::open(&config)?;
        Ok(Server {
            broker,
            config: Arc::new(config),
            persister: Some(persister),
            persist_thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Writes and flushes what the store has been given, then stops its
    /// thread. Called at the end of [`run`].
    pub async fn close_store(&self) {
        if let Some(p) = &self.persister {
            p.close();
        }
        let thread = self
            .persist_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = thread {
            // Bounded: a store that failed (a full disk) may not finish its
            // last flush; everything confirmed was flushed long before.
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = t.join();
                let _ = done_tx.send(());
            });
            let waited =
                tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(10)))
                    .await;
            if !matches!(waited, Ok(Ok(()))) {
                tracing::error!("the store did not close within 10 s; exiting anyway");
            }
        }
    }
}

struct NotifyWake(Arc<Notify>);

impl Wake for NotifyWake {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Accepts connections on `listener` until `shutdown` completes, then closes
/// every connection with 320 CONNECTION_FORCED, waits a bounded time for
/// them, and returns.
pub async fn run(listener: TcpListener, server: Server, shutdown: impl Future) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(server.config.max_connections));
    let mut tasks = JoinSet::new();
    let ticker = tokio::spawn(tick(Arc::clone(&server.broker), stop_rx.clone()));
    let monitor = tokio::spawn(crate::resources::monitor(server.clone(), stop_rx.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    tracing::warn!(peer = %peer, "connection limit reached, refusing connection");
                    drop(socket);
                    continue;
                };
                let server = server.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    serve(socket, peer, server, stop).await;
                    drop(permit);
                });
            }
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res && e.is_panic() {
                    tracing::error!("a connection task panicked; only that connection was closed");
                }
            }
        }
    }
    tracing::info!(
        connections = tasks.len(),
        "shutting down: closing client connections"
    );
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Duration::from_millis(server.config.shutdown_timeout_ms);
    let drained = tokio::time::timeout(deadline, async {
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res
                && e.is_panic()
            {
                tracing::error!("a connection task panicked during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "shutdown timeout: dropping remaining connections"
        );
        tasks.abort_all();
    }
    ticker.abort();
    monitor.abort();
    server.close_store().await;
}

/// How often message TTLs and queue expiry are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Periodic broker work (TTL expiry, `x-expires`) until shutdown.
async fn tick(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                broker.tick(std::time::Instant::now(), unix);
            }
            _ = stop.changed() => return,
        }
    }
}

/// Owns a connection so its resources are released however the task ends,
/// panics included: unacked messages go back to their queues and exclusive
/// queues are deleted.
struct Guard(Connection);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.on_disconnect();
    }
}

async fn serve(socket: TcpStream, peer: SocketAddr, server: Server, stop: watch::Receiver<bool>) {
    let _ = socket.set_nodelay(true);
    let notify = Arc::new(Notify::new());
    let mailbox = Mailbox::new(Box::new(NotifyWake(Arc::clone(&notify))));
    let local = socket
        .local_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let info = ConnInfo {
        peer: peer.to_string(),
        local,
        loopback: peer.ip().is_loopback(),
        tls: None,
    };
    let conn = Connection::new(
        Arc::clone(&server.broker),
        info,
        mailbox,
        std::time::Instant::now(),
    );
    let span = tracing::info_span!("conn", conn = conn.id(), peer = %peer);
    let mut guard = Guard(conn);
    async {
        tracing::debug!("accepted");
        if let Err(e) = drive(socket, &mut guard.0, notify, stop).await {
            tracing::debug!(error = %e, "socket error");
        }
        match guard.0.close_reason() {
            Some(r) => tracing::info!(reason = %r, "connection closed"),
            None => tracing::info!("connection closed by peer"),
        }
    }
    .instrument(span)
    .await;
}

async fn drive(
    socket: TcpStream,
    conn: &mut Connection,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = socket.into_split();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut pending = BytesMut::new();
    let mut stopping = false;
    loop {
        if conn.has_output() {
            pending.unsplit(conn.take_output());
        }
        if conn.is_closed() {
            // Best effort: the close frame or protocol header, then FIN.
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&pending)).await;
            let _ = wr.shutdown().await;
            return Ok(());
        }
        let deadline = conn.poll_timeout().map(Instant::from_std);
        let room = pending.len() < WRITE_HIGH_WATER;
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            res = stop.changed(), if !stopping => {
                stopping = true;
                if res.is_ok() {
                    conn.force_close("shutdown", std::time::Instant::now());
                }
            }
            res = wr.write(&pending), if !pending.is_empty() => {
                let n = res?;
                pending.advance(n);
                let e = conn.entry();
                e.send_oct.fetch_add(n as u64, Ordering::Relaxed);
                e.send_cnt.fetch_add(1, Ordering::Relaxed);
            }
            res = rd.read_buf(&mut rbuf), if room && conn.wants_input() => {
                let n = res?;
                if n == 0 {
                    return Ok(());
                }
                let e = conn.entry();
                e.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
                e.recv_cnt.fetch_add(1, Ordering::Relaxed);
                let now = std::time::Instant::now();
                conn.handle_input(&mut rbuf, now);
                // Deliveries caused by this input (consume, ack, recover)
                // go out in the same write as the replies before them.
                conn.handle_events(now);
            }
            _ = notify.notified(), if room => {
                let now = std::time::Instant::now();
                conn.handle_events(now);
                // An alarm that cleared lets buffered input through.
                if conn.wants_input() && !rbuf.is_empty() {
                    conn.handle_input(&mut rbuf, now);
                    conn.handle_events(now);
                }
            }
            _ = sleep_until(deadline) => {
                conn.handle_timeout(std::time::Instant::now());
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
