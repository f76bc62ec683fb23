//! A consumer: one connection, one task, reading deliveries, timing them by
//! the timestamp in their body, and acking (singly, every N with
//! `multiple`, or not at all with no-ack). Acks produced by one read are
//! written together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use warren_codec::{
    BasicAck, BasicConsume, BasicQos, ConnectionCloseOk, Frame, Method, ShortStr, encode_method,
};

use crate::client::{CHANNEL, ClientError, Conn, Result, close_error};
use crate::histogram::Histogram;
use crate::options::Options;
use crate::shared::{Counters, Go, now_ns, run_id, wait_go};

/// What one consumer consumes.
pub(crate) struct Plan {
    /// Index, for error texts and consumer tags.
    pub(crate) id: u32,
    /// Queue indexes to consume from.
    pub(crate) queues: Vec<u32>,
    /// Declare (and bind) these queues on this connection: exclusive ones.
    pub(crate) declare: bool,
}

/// Connects, declares exclusive queues and sets qos if asked, says ready,
/// waits for the start signal, consumes until `stop` turns true. Latency is
/// recorded for messages of this run received within `record_for` of the
/// start (or all of them, when `None`).
pub(crate) async fn run(
    opts: Arc<Options>,
    plan: Plan,
    counters: Arc<Counters>,
    ready: mpsc::Sender<bool>,
    mut go: Go,
    mut stop: watch::Receiver<bool>,
    record_for: Option<Duration>,
) -> Histogram {
    let who = format!("consumer {}", plan.id);
    let mut hist = Histogram::default();
    let conn = match setup(&opts, &plan).await {
        Ok(conn) => {
            let _ = ready.send(true).await;
            conn
        }
        Err(e) => {
            counters.error(&who, e);
            let _ = ready.send(false).await;
            return hist;
        }
    };
    let Some(start) = wait_go(&mut go).await else {
        conn.close().await;
        return hist;
    };
    let mut c = Consumer {
        opts: &opts,
        counters: &counters,
        conn,
        wbuf: BytesMut::with_capacity(64 * 1024),
        hist: &mut hist,
        state: State::Method,
        unacked: 0,
        ack_every: match (opts.multi_ack, opts.prefetch) {
            (0, _) => 1,
            // Waiting for more than the prefetch allows would stall.
            (n, 0) => n,
            (n, p) => n.min(u64::from(p)),
        },
        run_id: run_id().to_be_bytes(),
        record_until: record_for.map(|d| start + d),
    };
    match c.consume(&plan, &mut stop).await {
        Ok(()) => c.conn.close().await,
        Err(e) => counters.error(&who, e),
    }
    hist
}

async fn setup(opts: &Options, plan: &Plan) -> Result<Conn> {
    let mut conn = Conn::open(opts).await?;
    if plan.declare {
        for &q in &plan.queues {
            conn.declare_queue(opts, &opts.queue_name(q), false).await?;
            if opts.fanout > 0 {
                conn.bind_fanout(opts, &opts.queue_name(q)).await?;
            }
        }
    }
    if opts.prefetch > 0 {
        let qos = BasicQos {
            prefetch_count: opts.prefetch,
            ..Default::default()
        };
        match conn.rpc(qos.into()).await? {
            Method::BasicQosOk(_) => {}
            other => return Err(ClientError::Unexpected(other.name().to_string())),
        }
    }
    Ok(conn)
}

/// Where the consumer is in the delivery it is reading.
enum State {
    /// Expecting a method.
    Method,
    /// Got basic.deliver with this tag; expecting its header.
    Header(u64),
    /// Expecting `remaining` more body bytes of this delivery tag; `first`
    /// until the first body frame (which holds the timestamp) is seen.
    Body {
        tag: u64,
        remaining: u64,
        first: bool,
    },
}

struct Consumer<'a> {
    opts: &'a Options,
    counters: &'a Counters,
    conn: Conn,
    wbuf: BytesMut,
    hist: &'a mut Histogram,
    state: State,
    unacked: u64,
    ack_every: u64,
    run_id: [u8; 8],
    record_until: Option<Instant>,
}

impl Consumer<'_> {
    async fn consume(&mut self, plan: &Plan, stop: &mut watch::Receiver<bool>) -> Result<()> {
        for &q in &plan.queues {
            let consume = BasicConsume {
                queue: ShortStr::from(self.opts.queue_name(q)),
                consumer_tag: ShortStr::from(format!("warren-perf-{}-{}", plan.id, q)),
                no_ack: self.opts.autoack,
                ..Default::default()
            };
            encode_method(&mut self.wbuf, CHANNEL, &consume.into());
        }
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let mut write_blocked = false;
            if !self.wbuf.is_empty() {
                match self.conn.stream.try_write(&self.wbuf) {
                    Ok(n) => self.wbuf.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => write_blocked = true,
                    Err(e) => return Err(e.into()),
                }
            }
            self.conn.rbuf.reserve(64 * 1024);
            let read_some = match self.conn.stream.try_read_buf(&mut self.conn.rbuf) {
                Ok(0) => return Err(ClientError::Eof("")),
                Ok(_) => {
                    self.handle_incoming()?;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(e) => return Err(e.into()),
            };
            if read_some || (!self.wbuf.is_empty() && !write_blocked) {
                tokio::task::yield_now().await;
                continue;
            }
            let interest = if self.wbuf.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            tokio::select! {
                r = self.conn.stream.ready(interest) => { r?; }
                _ = stop.changed() => {}
            }
        }
    }

    /// Decodes every whole frame read so far.
    fn handle_incoming(&mut self) -> Result<()> {
        let now = Instant::now();
        let now_ns = now_ns();
        let record = self.record_until.is_none_or(|t| now < t);
        let mut received = 0;
        while let Some(frame) = self.conn.decoder.decode(&mut self.conn.rbuf)? {
            match (frame, &mut self.state) {
                (Frame::Method { method, .. }, State::Method) => match method {
                    Method::BasicDeliver(d) => self.state = State::Header(d.delivery_tag),
                    Method::BasicConsumeOk(_) => {}
                    Method::BasicCancel(c) => {
                        return Err(ClientError::Unexpected(format!(
                            "basic.cancel of consumer {}",
                            c.consumer_tag
                        )));
                    }
                    m @ (Method::ConnectionClose(_) | Method::ChannelClose(_)) => {
                        if matches!(m, Method::ConnectionClose(_)) {
                            let mut out = BytesMut::new();
                            encode_method(&mut out, 0, &ConnectionCloseOk.into());
                            let _ = self.conn.stream.try_write(&out);
                        }
                        return Err(close_error(&m).unwrap_or(ClientError::Eof("")));
                    }
                    other => {
                        return Err(ClientError::Unexpected(other.name().to_string()));
                    }
                },
                (Frame::Header { header, .. }, State::Header(tag)) => {
                    let tag = *tag;
                    if header.body_size == 0 {
                        self.state = State::Method;
                        received += 1;
                        self.delivered(tag);
                    } else {
                        self.state = State::Body {
                            tag,
                            remaining: header.body_size,
                            first: true,
                        };
                    }
                }
                (
                    Frame::Body { payload, .. },
                    State::Body {
                        tag,
                        remaining,
                        first,
                    },
                ) => {
                    let tag = *tag;
                    // The first body frame holds the timestamp and run id.
                    if *first && record && payload.len() >= 16 && payload[8..16] == self.run_id {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&payload[..8]);
                        self.hist
                            .record(now_ns.saturating_sub(u64::from_be_bytes(ts)));
                    }
                    *first = false;
                    *remaining = remaining.saturating_sub(payload.len() as u64);
                    if *remaining == 0 {
                        self.state = State::Method;
                        received += 1;
                        self.delivered(tag);
                    }
                }
                (Frame::Heartbeat { .. }, _) => {}
                (other, _) => {
                    return Err(ClientError::Unexpected(format!(
                        "frame out of order: {other:?}"
                    )));
                }
            }
        }
        self.counters
            .received
            .fetch_add(received, Ordering::Relaxed);
        Ok(())
    }

    /// Acks a completed delivery as the options say.
    fn delivered(&mut self, tag: u64) {
        if self.opts.autoack {
            return;
        }
        self.unacked += 1;
        if self.unacked >= self.ack_every {
            let ack = BasicAck {
                delivery_tag: tag,
                multiple: self.ack_every > 1,
            };
            encode_method(&mut self.wbuf, CHANNEL, &ack.into());
            self.unacked = 0;
        }
    }
}
