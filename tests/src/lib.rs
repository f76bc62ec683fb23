//! Shared helpers for Warren's end-to-end tests (the files in `tests/tests/`).
//!
//! # Layout
//! - [`TestBroker`], [`start_broker`], [`start_broker_with`]: a broker run
//!   in-process on `127.0.0.1:0`, stopped when the handle is dropped.
//! - [`RawClient`]: a byte-level AMQP client for hostile-input tests. It
//!   writes whatever bytes or frames it is given and reads what the broker
//!   sends back; every read is bounded by [`READ_TIMEOUT`].
//! - [`assert_broker_works`]: a fresh client does a handshake, declares a
//!   queue, publishes and gets the message back, proving that an earlier
//!   misbehaving client did not hurt the broker.
//! - [`lapin_util`]: small helpers for the tests that use the lapin client.
//!
//! Nothing here waits on a sleep: every wait is on an event (a frame, EOF,
//! a join) under `tokio::time::timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warren_codec::{
    BasicProperties, ConnectionTune, ConnectionTuneOk, FieldTable, FieldValue, Frame, FrameDecoder,
    LongStr, Method, PROTOCOL_HEADER, ShortStr, encode_content, encode_method,
};
use warren_server::{Config, Server};

pub mod http;
pub mod lapin_util;
pub mod tls;

/// How long any single read from the broker may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Most frames [`RawClient`] skips while looking for a particular one.
const MAX_SKIPPED_FRAMES: usize = 100;

/// A broker running in-process. Dropping it asks the broker to shut down.
#[derive(Debug)]
pub struct TestBroker {
    /// Where the broker listens (always on loopback).
    pub addr: SocketAddr,
    /// The broker model, for administration a test does directly.
    pub broker: std::sync::Arc<warren_core::Broker>,
    /// Where the management HTTP API listens (always on loopback).
    pub http: SocketAddr,
    /// Where the Prometheus endpoint listens (always on loopback).
    pub metrics: SocketAddr,
    /// Where AMQPS listens, when the configuration has a certificate.
    pub tls: Option<SocketAddr>,
    /// The loaded certificates (to reload them as SIGHUP would).
    pub tls_handle: Option<warren_server::Tls>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    config: Config,
    /// Whether the broker keeps durable state in `data_dir`.
    durable: bool,
    /// Whether dropping the handle deletes the data directory (not while a
    /// restart hands it on).
    owns_data: bool,
}

impl TestBroker {
    /// An AMQP URI for the default vhost with the default `guest` user.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Shuts the broker down and waits (bounded) for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("broker did not shut down within 10 s")
                .expect("broker task panicked");
        }
    }

    /// Shuts the broker down, waits for it, and starts a new one with the
    /// same configuration and data directory (on a new port), as after a
    /// process restart.
    pub async fn restart(mut self) -> TestBroker {
        self.owns_data = false;
        let (config, durable) = (self.config.clone(), self.durable);
        self.stop().await;
        spawn_broker(config, durable).await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.owns_data {
            // Best effort: the store may not have created anything.
            let _ = std::fs::remove_dir_all(&self.config.data_dir);
        }
    }
}

/// Starts a broker with the default configuration.
pub async fn start_broker() -> TestBroker {
    start_broker_with(|_| {}).await
}

/// Starts a broker that keeps durable state in its data directory
/// (`Server::open`), for tests that restart it.
pub async fn start_durable_broker() -> TestBroker {
    spawn_broker(test_config(), true).await
}

/// [`start_durable_broker`] after letting the caller adjust the
/// configuration (its data directory among it).
pub async fn start_durable_broker_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let mut config = test_config();
    adjust(&mut config);
    spawn_broker(config, true).await
}

fn test_config() -> Config {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let data_dir = std::env::temp_dir().join(format!(
        "warren-tests-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Config {
        data_dir,
        shutdown_timeout_ms: 1_000,
        ..Config::default()
    }
}

/// Starts a broker after letting the caller adjust the configuration.
///
/// The listener is bound here, on `127.0.0.1:0`; `listen` in the config is
/// not used. Each broker gets its own data directory under the system
/// temporary directory; this one keeps nothing in it (`Server::new`).
pub async fn start_broker_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let mut config = test_config();
    adjust(&mut config);
    spawn_broker(config, false).await
}

async fn spawn_broker(mut config: Config, durable: bool) -> TestBroker {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    config.listen = addr;
    let amqps = if config.tls.enabled() {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let tls = warren_server::Tls::load(&config.tls).expect("load the test certificates");
        Some((l, tls))
    } else {
        None
    };
    let tls_addr = amqps
        .as_ref()
        .map(|(l, _)| l.local_addr().expect("local_addr"));
    let tls_handle = amqps.as_ref().map(|(_, t)| t.clone());
    let https = if config.management.tls {
        tls_handle
            .as_ref()
            .map(|t| t.for_http().expect("load the test certificates"))
    } else {
        None
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = if durable {
        Server::open(config.clone()).expect("open the broker's data directory")
    } else {
        Server::new(config.clone())
    };
    let broker = std::sync::Arc::clone(&server.broker);
    let http_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let http = http_listener.local_addr().expect("local_addr");
    let mut listed = vec![warren_server::management::listener("amqp", addr)];
    listed.extend(tls_addr.map(|a| warren_server::management::listener("amqp/ssl", a)));
    let web = if https.is_some() { "https" } else { "http" };
    listed.push(warren_server::management::listener(web, http));
    let state = warren_server::management::state_for(&server, listed);
    warren_server::management::load_definitions(&server, &state).expect("load_definitions");
    let metrics_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let metrics = metrics_listener.local_addr().expect("local_addr");
    let metrics_tls = match (&tls_handle, config.metrics.tls) {
        (Some(t), true) => {
            let t = t.for_http().expect("load the test certificates");
            Some(std::sync::Arc::new(move || t.server_config()) as warren_management::TlsSource)
        }
        _ => None,
    };
    let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
    let metrics_state = std::sync::Arc::clone(&state);
    tokio::spawn(async move {
        let _ = warren_management::serve_metrics(
            metrics_listener,
            metrics_state,
            metrics_tls,
            async move {
                let _ = metrics_stopped.await;
            },
        )
        .await;
    });
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let stop = async move {
            let _ = http_stopped.await;
        };
        let _ = match https {
            Some(t) => {
                let source: warren_management::TlsSource =
                    std::sync::Arc::new(move || t.server_config());
                warren_management::serve_tls(http_listener, state, source, stop).await
            }
            None => warren_management::serve(http_listener, state, stop).await,
        };
    });
    let listeners = warren_server::Listeners {
        amqp: config.tls.plaintext.then_some(listener),
        amqps,
    };
    let task = tokio::spawn(async move {
        warren_server::run_listeners(listeners, server, async move {
            let _ = rx.await;
        })
        .await;
        let _ = stop_http.send(());
        let _ = stop_metrics.send(());
    });
    TestBroker {
        addr,
        broker,
        http,
        metrics,
        tls: tls_addr,
        tls_handle,
        shutdown: Some(tx),
        task: Some(task),
        config,
        durable,
        owns_data: true,
    }
}

/// What a `connection.close` or `channel.close` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The reply code.
    pub code: u16,
    /// The reply text.
    pub text: String,
    /// Class id of the failing method (0 for frame-level errors).
    pub class_id: u16,
    /// Method id of the failing method.
    pub method_id: u16,
}

/// The result of one read from the broker.
#[derive(Debug)]
pub enum Read {
    /// A whole frame.
    Frame(Frame),
    /// The broker closed the socket (FIN, or a reset).
    Eof,
    /// Raw bytes that are not frames: what a protocol-header mismatch gets.
    Bytes(Bytes),
}

/// A byte-level AMQP client. It never checks what it sends, so tests can send
/// anything; it decodes what the broker sends with Warren's own codec.
#[derive(Debug)]
pub struct RawClient {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// The `frame_max` agreed in the handshake (used to split bodies).
    pub frame_max: u32,
    /// The `connection.tune` the broker sent, once it has.
    pub tune: Option<ConnectionTune>,
}

/// What [`RawClient`] talks over: TCP, or TLS over TCP.
pub trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> Stream
    for T
{
}

/// Client properties that ask for the notifications RabbitMQ only sends to
/// clients that advertise them.
fn client_properties() -> FieldTable {
    let caps = FieldTable::new()
        .with("consumer_cancel_notify", FieldValue::Bool(true))
        .with("authentication_failure_close", FieldValue::Bool(true))
        .with("publisher_confirms", FieldValue::Bool(true))
        .with("basic.nack", FieldValue::Bool(true));
    FieldTable::new()
        .with("product", FieldValue::LongStr("warren-tests".into()))
        .with("capabilities", FieldValue::Table(caps))
}

impl RawClient {
    /// Opens a TCP connection; nothing is sent yet.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient::over(stream)
    }

    /// A client over an established stream (a TLS session, say).
    pub fn over(stream: impl Stream + 'static) -> RawClient {
        RawClient {
            stream: Box::new(stream),
            buf: BytesMut::with_capacity(64 * 1024),
            // Generous: the broker should never send more than it offered,
            // and a test that checks that wants to see the frame.
            decoder: FrameDecoder::new(16 * 1024 * 1024),
            frame_max: 131_072,
            tune: None,
        }
    }

    /// Writes bytes as they are. Fails if the broker has already closed.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes one method frame.
    pub async fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &method.into());
        self.send_raw(&buf).await.expect("write method frame");
    }

    /// Writes a method with content: method, header and body frames.
    pub async fn send_content(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        let mut buf = BytesMut::new();
        encode_content(
            &mut buf,
            channel,
            &method.into(),
            properties,
            body,
            self.frame_max as usize,
        );
        self.send_raw(&buf).await.expect("write content frames");
    }

    /// Reads the next frame, EOF, or (before any frame could be framed) raw
    /// bytes. Panics if nothing arrives within [`READ_TIMEOUT`].
    pub async fn read(&mut self) -> Read {
        self.read_within(READ_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no frame or EOF from the broker within {READ_TIMEOUT:?}"))
    }

    /// Like [`RawClient::read`], but gives up after `limit` and returns
    /// `None` instead of panicking.
    pub async fn read_within(&mut self, limit: Duration) -> Option<Read> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Bytes that cannot start a frame (a protocol header such as
            // `AMQP\0\0\x09\x01`) are handed over raw once 8 have arrived.
            let raw = self
                .buf
                .first()
                .is_some_and(|b| !matches!(b, 1 | 2 | 3 | 8));
            if raw && self.buf.len() >= PROTOCOL_HEADER.len() {
                return Some(Read::Bytes(self.buf.split().freeze()));
            }
            if !raw {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(frame)) => return Some(Read::Frame(frame)),
                    Ok(None) => {}
                    Err(e) => panic!(
                        "the broker sent bytes that do not decode ({e}): {:?}",
                        &self.buf[..self.buf.len().min(64)]
                    ),
                }
            }
            self.buf.reserve(4096);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => {
                    // A reset counts as closed: when the broker closes with
                    // unread input the kernel sends RST instead of FIN.
                    if self.buf.is_empty() {
                        return Some(Read::Eof);
                    }
                    // Leftover bytes that never formed a frame.
                    return Some(Read::Bytes(self.buf.split().freeze()));
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads the next frame, skipping heartbeats. Panics on EOF or timeout.
    pub async fn read_frame(&mut self) -> Frame {
        for _ in 0..MAX_SKIPPED_FRAMES {
            match self.read().await {
                Read::Frame(Frame::Heartbeat { channel: 0 }) => continue,
                Read::Frame(f) => return f,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
        panic!("only heartbeats from the broker");
    }

    /// Reads the next method frame (skipping heartbeats) and returns its
    /// channel and method. Panics on anything else.
    pub async fn read_method(&mut self) -> (u16, Method) {
        match self.read_frame().await {
            Frame::Method { channel, method } => (channel, method),
            other => panic!("expected a method frame, got {other:?}"),
        }
    }

    /// Sends the protocol header and answers `connection.start`; returns the
    /// `connection.tune` the broker proposes, leaving `tune-ok` to the caller.
    pub async fn start_handshake(&mut self) -> ConnectionTune {
        self.start_handshake_as("PLAIN", b"\0guest\0guest").await
    }

    /// Sends the protocol header and reads `connection.start`, returning
    /// the mechanisms it offers.
    pub async fn read_start(&mut self) -> String {
        self.send_raw(PROTOCOL_HEADER)
            .await
            .expect("write protocol header");
        match self.read_method().await {
            (0, Method::ConnectionStart(start)) => {
                assert_eq!((start.version_major, start.version_minor), (0, 9));
                start.mechanisms.to_lossy().into_owned()
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// [`RawClient::start_handshake`] with another SASL mechanism and
    /// response (`EXTERNAL` with an empty one, say).
    pub async fn start_handshake_as(&mut self, mechanism: &str, response: &[u8]) -> ConnectionTune {
        self.read_start().await;
        self.send_start_ok(mechanism, response).await;
        match self.read_method().await {
            (0, Method::ConnectionTune(tune)) => {
                self.tune = Some(tune.clone());
                tune
            }
            other => panic!("expected connection.tune, got {other:?}"),
        }
    }

    /// Answers `connection.start` with `start-ok`.
    pub async fn send_start_ok(&mut self, mechanism: &str, response: &[u8]) {
        self.send_start_ok_with(client_properties(), mechanism, response)
            .await;
    }

    /// Answers `connection.start` with `start-ok` and the given client
    /// properties (capabilities a test wants to advertise, or not).
    pub async fn send_start_ok_with(
        &mut self,
        client_properties: FieldTable,
        mechanism: &str,
        response: &[u8],
    ) {
        self.send_method(
            0,
            warren_codec::ConnectionStartOk {
                client_properties,
                mechanism: mechanism.into(),
                response: LongStr::from(Bytes::copy_from_slice(response)),
                locale: "en_US".into(),
            },
        )
        .await;
    }

    /// After `start-ok`: takes the broker's `connection.tune` (heartbeats
    /// off), answers it and sends `connection.open` of `/`. The answer to
    /// the open (open-ok or a close) is left to the caller.
    pub async fn tune_and_open(&mut self) {
        let tune = match self.read_method().await {
            (0, Method::ConnectionTune(t)) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        self.tune = Some(tune.clone());
        self.frame_max = tune.frame_max;
        self.send_method(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            },
        )
        .await;
        self.send_method(
            0,
            warren_codec::ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            },
        )
        .await;
    }

    /// [`RawClient::tune_and_open`], then checks for `open-ok`.
    pub async fn tune_and_open_ok(&mut self) {
        self.tune_and_open().await;
        match self.read_method().await {
            (0, Method::ConnectionOpenOk(_)) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// A full handshake accepting the broker's limits, heartbeats off.
    pub async fn handshake(&mut self) {
        self.handshake_with(|t| ConnectionTuneOk {
            channel_max: t.channel_max,
            frame_max: t.frame_max,
            heartbeat: 0,
        })
        .await;
    }

    /// A full handshake with the `tune-ok` the caller builds from `tune`.
    pub async fn handshake_with(
        &mut self,
        tune_ok: impl FnOnce(&ConnectionTune) -> ConnectionTuneOk,
    ) {
        let tune = self.start_handshake().await;
        let ok = tune_ok(&tune);
        self.frame_max = ok.frame_max;
        self.send_method(0, ok).await;
        self.send_method(
            0,
            warren_codec::ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            },
        )
        .await;
        match self.read_method().await {
            (0, Method::ConnectionOpenOk(_)) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// Opens a channel and waits for `open-ok`.
    pub async fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, warren_codec::ChannelOpen::default())
            .await;
        match self.read_method().await {
            (c, Method::ChannelOpenOk(_)) if c == channel => {}
            other => panic!("expected channel.open-ok on {channel}, got {other:?}"),
        }
    }

    /// Declares a server-named exclusive queue and returns its name.
    pub async fn declare_temp_queue(&mut self, channel: u16) -> ShortStr {
        self.send_method(
            channel,
            warren_codec::QueueDeclare {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        match self.read_method().await {
            (c, Method::QueueDeclareOk(ok)) if c == channel => ok.queue,
            other => panic!("expected queue.declare-ok on {channel}, got {other:?}"),
        }
    }

    /// Publishes `body` to the default exchange with routing key `queue`.
    pub async fn publish(&mut self, channel: u16, queue: &ShortStr, body: &[u8]) {
        self.send_content(
            channel,
            warren_codec::BasicPublish {
                routing_key: queue.clone(),
                ..Default::default()
            },
            &BasicProperties::default(),
            body,
        )
        .await;
    }

    /// `basic.get` with auto-ack: the body, or `None` on `get-empty`.
    pub async fn get(&mut self, channel: u16, queue: &ShortStr) -> Option<Bytes> {
        self.send_method(
            channel,
            warren_codec::BasicGet {
                queue: queue.clone(),
                no_ack: true,
                ..Default::default()
            },
        )
        .await;
        match self.read_method().await {
            (_, Method::BasicGetEmpty(_)) => return None,
            (c, Method::BasicGetOk(_)) if c == channel => {}
            other => panic!("expected basic.get-ok on {channel}, got {other:?}"),
        }
        let size = match self.read_frame().await {
            Frame::Header { header, .. } => header.body_size,
            other => panic!("expected a content header, got {other:?}"),
        };
        let mut body = BytesMut::new();
        for _ in 0..10_000 {
            if body.len() as u64 >= size {
                break;
            }
            match self.read_frame().await {
                Frame::Body { payload, .. } => body.extend_from_slice(&payload),
                other => panic!("expected a content body, got {other:?}"),
            }
        }
        assert_eq!(body.len() as u64, size, "body size differs from the header");
        Some(body.freeze())
    }

    /// Waits for `connection.close`, answers `close-ok`, and checks that the
    /// broker then closes the socket. Frames before the close (replies to
    /// pipelined methods, heartbeats) are skipped.
    pub async fn expect_close(&mut self) -> CloseInfo {
        for _ in 0..MAX_SKIPPED_FRAMES {
            match self.read().await {
                Read::Frame(Frame::Method {
                    channel,
                    method: Method::ConnectionClose(c),
                }) => {
                    assert_eq!(channel, 0, "connection.close on channel {channel}");
                    // The broker may already have closed; a failed write is fine.
                    let mut buf = BytesMut::new();
                    encode_method(&mut buf, 0, &Method::from(warren_codec::ConnectionCloseOk));
                    let _ = self.send_raw(&buf).await;
                    self.expect_eof().await;
                    return CloseInfo {
                        code: c.reply_code,
                        text: c.reply_text.to_lossy().into_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    };
                }
                Read::Frame(_) => continue,
                other => panic!("expected connection.close, got {other:?}"),
            }
        }
        panic!("no connection.close among {MAX_SKIPPED_FRAMES} frames");
    }

    /// Waits for `channel.close` on `channel` and answers `close-ok`.
    pub async fn expect_channel_close(&mut self, channel: u16) -> CloseInfo {
        for _ in 0..MAX_SKIPPED_FRAMES {
            match self.read_frame().await {
                Frame::Method {
                    channel: c,
                    method: Method::ChannelClose(close),
                } if c == channel => {
                    self.send_method(channel, warren_codec::ChannelCloseOk)
                        .await;
                    return CloseInfo {
                        code: close.reply_code,
                        text: close.reply_text.to_lossy().into_owned(),
                        class_id: close.class_id,
                        method_id: close.method_id,
                    };
                }
                Frame::Method {
                    method: Method::ConnectionClose(c),
                    ..
                } => panic!("expected channel.close on {channel}, got connection.close {c:?}"),
                _ => continue,
            }
        }
        panic!("no channel.close among {MAX_SKIPPED_FRAMES} frames");
    }

    /// Reads until the broker closes the socket; returns what arrived first
    /// (heartbeats excluded). Panics if the socket stays open past
    /// [`READ_TIMEOUT`].
    pub async fn expect_eof(&mut self) -> Vec<Read> {
        let mut seen = Vec::new();
        for _ in 0..MAX_SKIPPED_FRAMES {
            match self.read().await {
                Read::Eof => return seen,
                Read::Frame(Frame::Heartbeat { channel: 0 }) => {}
                other => seen.push(other),
            }
        }
        panic!("the broker kept sending without closing: {seen:?}");
    }

    /// Checks the broker closes the socket without sending anything but
    /// heartbeats (RabbitMQ's answer to errors before `connection.open`).
    pub async fn expect_silent_close(&mut self) {
        let seen = self.expect_eof().await;
        assert!(
            seen.is_empty(),
            "expected a close without frames, got {seen:?}"
        );
    }

    /// Sends `connection.close` 200, waits for `close-ok`, then closes
    /// its side as a client does and waits for the broker's EOF (the
    /// broker leaves closing the socket to the client, as RabbitMQ does).
    pub async fn close(&mut self) {
        self.close_ok().await;
        self.shutdown_write().await;
        self.expect_eof().await;
    }

    /// Sends FIN: the client is done writing, as after `close-ok`.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    /// Sends `connection.close` 200 and waits for `close-ok`; the socket
    /// stays open.
    pub async fn close_ok(&mut self) {
        self.send_method(
            0,
            warren_codec::ConnectionClose {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            },
        )
        .await;
        for _ in 0..MAX_SKIPPED_FRAMES {
            match self.read_frame().await {
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_),
                } => return,
                _ => continue,
            }
        }
        panic!("no connection.close-ok");
    }
}

/// Proves the broker still serves new clients: handshake, declare a queue,
/// publish, get the same body back, close cleanly.
pub async fn assert_broker_works(addr: SocketAddr) {
    let mut c = RawClient::connect(addr).await;
    c.handshake().await;
    c.open_channel(1).await;
    let q = c.declare_temp_queue(1).await;
    c.publish(1, &q, b"still alive").await;
    let body = c.get(1, &q).await;
    assert_eq!(body.as_deref(), Some(&b"still alive"[..]));
    c.close().await;
}
