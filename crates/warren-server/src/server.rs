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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use warren_core::{Broker, ConnInfo, Connection, Mailbox, Wake};

use crate::config::Config;
use crate::persistence::Persister;
use crate::tls::Tls;

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

/// The sockets a broker accepts AMQP connections on.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Plaintext AMQP (5672).
    pub amqp: Option<TcpListener>,
    /// AMQPS (5671), with the certificates it presents.
    pub amqps: Option<(TcpListener, Tls)>,
}

/// Accepts connections on `listener` until `shutdown` completes, then closes
/// every connection with 320 CONNECTION_FORCED, waits a bounded time for
/// them, and returns.
pub async fn run(listener: TcpListener, server: Server, shutdown: impl Future) {
    let listeners = Listeners {
        amqp: Some(listener),
        amqps: None,
    };
    run_listeners(listeners, server, shutdown).await;
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// [`run`] on plaintext and TLS listeners.
///
/// Two caps bound what peers can hold before they have logged in: at most
/// `max_unauthenticated_connections` sockets between accept and
/// `connection.open-ok` (more are closed at accept), and at most
/// `max_connections` plus that many sockets in all. The broker itself
/// refuses `connection.open` beyond `max_connections`, with RabbitMQ's
/// code and text.
pub async fn run_listeners(listeners: Listeners, server: Server, shutdown: impl Future) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let pre_auth = server.config.max_unauthenticated_connections.max(1);
    let limit = Arc::new(Semaphore::new(
        server.config.max_connections.saturating_add(pre_auth),
    ));
    let handshaking = Arc::new(Semaphore::new(pre_auth));
    let mut tasks = JoinSet::new();
    let ticker = tokio::spawn(tick(Arc::clone(&server.broker), stop_rx.clone()));
    let delayed = tokio::spawn(delayed_timer(Arc::clone(&server.broker), stop_rx.clone()));
    let monitor = tokio::spawn(crate::resources::monitor(server.clone(), stop_rx.clone()));
    let amqps = listeners.amqps.as_ref().map(|(l, _)| l);
    tokio::pin!(shutdown);
    loop {
        let (accepted, tls) = tokio::select! {
            _ = &mut shutdown => break,
            a = accept(listeners.amqp.as_ref()) => (a, None),
            a = accept(amqps) => (a, listeners.amqps.as_ref().map(|(_, t)| t.clone())),
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res && e.is_panic() {
                    tracing::error!("a connection task panicked; only that connection was closed");
                }
                continue;
            }
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(handshake) = Arc::clone(&handshaking).try_acquire_owned() else {
            tracing::warn!(peer = %peer, limit = pre_auth, "too many connections in the handshake, refusing connection");
            drop(socket);
            continue;
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(peer = %peer, "connection limit reached, refusing connection");
            drop(socket);
            continue;
        };
        let server = server.clone();
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            serve(socket, peer, server, stop, tls, handshake).await;
            drop(permit);
        });
    }
    tracing::info!(
        connections = tasks.len(),
        "shutting down: closing client connections"
    );
    drop(listeners);
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
    delayed.abort();
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

/// Most delayed messages routed in one go; the timer yields between
/// batches, so a backlog due at once (after a restart) does not hold a
/// worker thread.
const DELAYED_BATCH: usize = 1024;

/// The wall clock in Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Routes delayed messages when their time comes: sleeps until the
/// broker's next delayed deadline, or until a publish holds a message
/// until earlier (the broker's waker), then hands core the time.
async fn delayed_timer(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let waker = Arc::clone(&notify);
    broker.set_delayed_waker(Box::new(move || waker.notify_one()));
    loop {
        let now = std::time::Instant::now();
        let wall = unix_ms();
        broker.sync_clock(now, wall);
        let next = broker.route_delayed(now, wall, DELAYED_BATCH);
        // Nothing held: sleep until a publish wakes us (the clock is
        // synced again at least hourly).
        let pause = next.map_or(Duration::from_secs(3600), |d| {
            Duration::from_millis(d.saturating_sub(wall))
        });
        if pause.is_zero() {
            tokio::task::yield_now().await;
            if *stop.borrow() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = notify.notified() => {}
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

async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    server: Server,
    stop: watch::Receiver<bool>,
    tls: Option<Tls>,
    handshake: OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    let local = socket
        .local_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let Some(tls) = tls else {
        let info = ConnInfo {
            peer: peer.to_string(),
            local,
            loopback: peer.ip().is_loopback(),
            tls: None,
        };
        let (rd, wr) = socket.into_split();
        let io = Io {
            rd,
            wr,
            flush: false,
        };
        return serve_stream(io, info, server, stop, handshake).await;
    };
    // The TLS handshake counts against the same time as AMQP's.
    let limit = Duration::from_millis(server.broker.config.limits.handshake_timeout_ms);
    let stream = match tokio::time::timeout(limit, tls.acceptor().accept(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(peer = %peer, error = %e, "TLS handshake failed, closing connection");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer, "TLS handshake timed out, closing connection");
            return;
        }
    };
    let info = ConnInfo {
        peer: peer.to_string(),
        local,
        loopback: peer.ip().is_loopback(),
        tls: Some(Arc::new(tls.session_info(stream.get_ref().1))),
    };
    let (rd, wr) = tokio::io::split(stream);
    let io = Io {
        rd,
        wr,
        flush: true,
    };
    serve_stream(io, info, server, stop, handshake).await;
}

async fn serve_stream<R, W>(
    io: Io<R, W>,
    info: ConnInfo,
    server: Server,
    stop: watch::Receiver<bool>,
    handshake: OwnedSemaphorePermit,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let notify = Arc::new(Notify::new());
    let mailbox = Mailbox::new(Box::new(NotifyWake(Arc::clone(&notify))));
    let peer = info.peer.clone();
    let tls = info.tls.as_ref().map(|t| t.protocol.clone());
    let conn = Connection::new(
        Arc::clone(&server.broker),
        info,
        mailbox,
        std::time::Instant::now(),
    );
    let span = tracing::info_span!("conn", conn = conn.id(), peer = %peer);
    let mut guard = Guard(conn);
    async {
        match &tls {
            Some(p) => tracing::info!(tls = %p, "accepting AMQP connection"),
            None => tracing::info!("accepting AMQP connection"),
        }
        if let Err(e) = drive(io, &mut guard.0, notify, stop, Some(handshake)).await {
            tracing::debug!(error = %e, "socket error");
        }
        let (user, vhost) = {
            let n = guard.0.entry().negotiated();
            (n.user.clone(), n.vhost.clone())
        };
        match guard.0.close_reason() {
            Some(r) => tracing::info!(%user, %vhost, reason = %r, "closing AMQP connection"),
            None => tracing::info!(%user, %vhost, "closing AMQP connection: closed by the client"),
        }
    }
    .instrument(span)
    .await;
}

/// A connection's two halves; `flush` when writes may stay buffered (TLS
/// records) until flushed.
struct Io<R, W> {
    rd: R,
    wr: W,
    flush: bool,
}

async fn drive<R, W>(
    io: Io<R, W>,
    conn: &mut Connection,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    mut handshake: Option<OwnedSemaphorePermit>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Io {
        mut rd,
        mut wr,
        flush,
    } = io;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut pending = BytesMut::new();
    let mut stopping = false;
    let mut unflushed = false;
    // One timer for the connection's life. It is set to fire no later
    // than the connection's next deadline; a deadline that moved later
    // (every write moves the heartbeat's) leaves it as it is, so it may
    // fire early, find nothing due, and be set again. Setting it anew on
    // every pass cost two timer-wheel operations (under its lock) per
    // message at low rates.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        if conn.has_output() {
            pending.unsplit(conn.take_output());
        }
        if handshake.is_some() && conn.is_running() {
            // Logged in: no longer counts against the pre-auth cap.
            handshake = None;
        }
        if conn.is_closed() {
            // Best effort: the close frame or protocol header, then FIN.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                wr.write_all(&pending).await?;
                wr.shutdown().await
            })
            .await;
            return Ok(());
        }
        match (conn.poll_timeout().map(Instant::from_std), armed) {
            (Some(d), Some(at)) if at <= d => {}
            (Some(d), _) => {
                timer.as_mut().reset(d);
                armed = Some(d);
            }
            (None, _) => armed = None,
        }
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
            res = write_or_flush(&mut wr, &pending), if !pending.is_empty() || unflushed => {
                match res? {
                    None => unflushed = false,
                    Some(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Some(n) => {
                    pending.advance(n);
                    unflushed = flush;
                    let e = conn.entry();
                    e.send_oct.fetch_add(n as u64, Ordering::Relaxed);
                    e.send_cnt.fetch_add(1, Ordering::Relaxed);
                    }
                }
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
            () = &mut timer, if armed.is_some() => {
                armed = None;
                conn.handle_timeout(std::time::Instant::now());
            }
        }
    }
}

/// Writes what it can of `pending`; with nothing pending, flushes (TLS
/// records the last write left buffered) and returns `None`.
async fn write_or_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    pending: &[u8],
) -> std::io::Result<Option<usize>> {
    if pending.is_empty() {
        wr.flush().await?;
        return Ok(None);
    }
    wr.write(pending).await.map(Some)
}
