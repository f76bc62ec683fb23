//! A consumer: one connection, one task, reading deliveries, timing them by
//! the timestamp in their body, and acking (singly, every N with
//! `multiple`, or not at all with no-ack).
//!
//! [`run`] is the same for every client style (--client); the [`Session`]
//! enum is the seam, and [`Recorder`] (latency) and [`AckPolicy`] (when to
//! ack) are shared by all. The codec styles read as much as the socket
//! holds and decode every whole frame; pipelined, the acks produced by one
//! read are written together, single, each ack frame is a write of its
//! own. The lapin style lives in `lapin_client`.

use std::collections::VecDeque;
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
use crate::options::{Client, Options};
use crate::shared::{Counters, Go, now_ns, run_id, wait_go};
use crate::{amqprs_client, lapin_client};

/// What one consumer consumes.
pub(crate) struct Plan {
    /// Index, for error texts and consumer tags.
    pub(crate) id: u32,
    /// Queue indexes to consume from.
    pub(crate) queues: Vec<u32>,
    /// Declare (and bind) these queues on this connection: exclusive ones.
    pub(crate) declare: bool,
}

impl Plan {
    /// The consumer tag for queue `q`.
    pub(crate) fn tag(&self, q: u32) -> String {
        format!("warren-perf-{}-{}", self.id, q)
    }
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
    let session = match Session::open(&opts, &plan).await {
        Ok(session) => {
            let _ = ready.send(true).await;
            session
        }
        Err(e) => {
            counters.error(&who, e);
            let _ = ready.send(false).await;
            return Histogram::default();
        }
    };
    let Some(start) = wait_go(&mut go).await else {
        session.close().await;
        return Histogram::default();
    };
    let mut recorder = Recorder::new(record_for.map(|d| start + d));
    if let Err(e) = session
        .consume(&opts, &plan, &counters, &mut recorder, &mut stop)
        .await
    {
        counters.error(&who, e);
    }
    recorder.hist
}

/// One consumer's connection, in the style --client asks for.
enum Session {
    /// warren-perf's codec connection (pipelined or single ack writes).
    Codec(Conn),
    /// A lapin connection and channel (boxed: lapin's types are large).
    Lapin(Box<lapin_client::Session>),
    /// An amqprs connection and channel.
    Amqprs(Box<amqprs_client::Session>),
}

impl Session {
    /// Connects, declares exclusive queues, sets the prefetch.
    async fn open(opts: &Options, plan: &Plan) -> std::result::Result<Session, String> {
        match opts.client {
            Client::Pipelined | Client::Single => codec_setup(opts, plan)
                .await
                .map(Session::Codec)
                .map_err(|e| e.to_string()),
            Client::Lapin => {
                let session = lapin_client::Session::open(opts, false).await?;
                session.consumer_setup(opts, plan).await?;
                Ok(Session::Lapin(Box::new(session)))
            }
            Client::Amqprs => {
                let session = amqprs_client::Session::open(opts, None).await?;
                session.consumer_setup(opts, plan).await?;
                Ok(Session::Amqprs(Box::new(session)))
            }
        }
    }

    /// Consumes until `stop`, then closes.
    async fn consume(
        self,
        opts: &Options,
        plan: &Plan,
        counters: &Counters,
        recorder: &mut Recorder,
        stop: &mut watch::Receiver<bool>,
    ) -> std::result::Result<(), String> {
        match self {
            Session::Codec(conn) => {
                let mut c = Consumer {
                    opts,
                    counters,
                    conn,
                    wbuf: BytesMut::with_capacity(64 * 1024),
                    writes: VecDeque::new(),
                    recorder,
                    state: State::Method,
                    acks: AckPolicy::new(opts),
                };
                c.consume(plan, stop).await.map_err(|e| e.to_string())?;
                c.conn.close().await;
                Ok(())
            }
            Session::Lapin(session) => session.consume(opts, plan, counters, recorder, stop).await,
            Session::Amqprs(session) => session.consume(opts, plan, counters, recorder, stop).await,
        }
    }

    async fn close(self) {
        match self {
            Session::Codec(conn) => conn.close().await,
            Session::Lapin(session) => session.close().await,
            Session::Amqprs(session) => session.close().await,
        }
    }
}

async fn codec_setup(opts: &Options, plan: &Plan) -> Result<Conn> {
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

/// What the library styles (lapin, amqprs) do with each delivery: time
/// it, count it, and say which ack the --multi-ack policy wants sent.
pub(crate) struct LibraryDeliveries<'a> {
    counters: &'a Counters,
    recorder: &'a mut Recorder,
    acks: AckPolicy,
}

impl<'a> LibraryDeliveries<'a> {
    pub(crate) fn new(opts: &Options, counters: &'a Counters, recorder: &'a mut Recorder) -> Self {
        LibraryDeliveries {
            counters,
            recorder,
            acks: AckPolicy::new(opts),
        }
    }

    /// A delivery of `body` with `tag` arrived: the (tag, multiple) to ack
    /// now, if any.
    pub(crate) fn delivered(&mut self, body: &[u8], tag: u64) -> Option<(u64, bool)> {
        if self.recorder.recording(Instant::now()) {
            self.recorder.record(body, now_ns());
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.acks.delivered(tag)
    }
}

/// What `next` yields, or `None` once `stop` is true (or its sender gone).
pub(crate) async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    next: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(next);
    loop {
        if *stop.borrow() {
            return None;
        }
        tokio::select! {
            v = &mut next => return Some(v),
            changed = stop.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Consumer-side latency, for every client style: the time from the
/// timestamp in a body's first 8 bytes to its arrival, for this run's
/// messages only (bytes 8..16 hold the run id).
pub(crate) struct Recorder {
    pub(crate) hist: Histogram,
    run_id: [u8; 8],
    /// Record only until then (the timed window), or always.
    record_until: Option<Instant>,
}

impl Recorder {
    pub(crate) fn new(record_until: Option<Instant>) -> Recorder {
        Recorder {
            hist: Histogram::default(),
            run_id: run_id().to_be_bytes(),
            record_until,
        }
    }

    /// Whether messages arriving at `now` are timed.
    pub(crate) fn recording(&self, now: Instant) -> bool {
        self.record_until.is_none_or(|t| now < t)
    }

    /// Times a body that arrived at `now_ns` (since the epoch), given its
    /// first bytes, if it is this run's.
    pub(crate) fn record(&mut self, body: &[u8], now_ns: u64) {
        if body.len() >= 16 && body[8..16] == self.run_id {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&body[..8]);
            self.hist
                .record(now_ns.saturating_sub(u64::from_be_bytes(ts)));
        }
    }
}

/// When to ack, for every client style: never with no-ack, each message,
/// or every N with `multiple` (never waiting for more than the prefetch
/// lets the broker send).
pub(crate) struct AckPolicy {
    autoack: bool,
    every: u64,
    unacked: u64,
}

impl AckPolicy {
    pub(crate) fn new(opts: &Options) -> AckPolicy {
        AckPolicy {
            autoack: opts.autoack,
            every: match (opts.multi_ack, opts.prefetch) {
                (0, _) => 1,
                // Waiting for more than the prefetch allows would stall.
                (n, 0) => n,
                (n, p) => n.min(u64::from(p)),
            },
            unacked: 0,
        }
    }

    /// Notes a completed delivery; returns the ack to send now, if any, as
    /// (delivery tag, multiple).
    pub(crate) fn delivered(&mut self, tag: u64) -> Option<(u64, bool)> {
        if self.autoack {
            return None;
        }
        self.unacked += 1;
        if self.unacked < self.every {
            return None;
        }
        self.unacked = 0;
        Some((tag, self.every > 1))
    }
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

/// The codec styles' reading loop.
struct Consumer<'a> {
    opts: &'a Options,
    counters: &'a Counters,
    conn: Conn,
    /// Bytes to write: consumes, acks, a close-ok.
    wbuf: BytesMut,
    /// Single style: the sizes of the frames in `wbuf`, each written with a
    /// write of its own (what is left of the first, once partly written).
    /// Empty when pipelined: `wbuf` goes in as few writes as it takes.
    writes: VecDeque<usize>,
    recorder: &'a mut Recorder,
    state: State,
    acks: AckPolicy,
}

impl Consumer<'_> {
    async fn consume(&mut self, plan: &Plan, stop: &mut watch::Receiver<bool>) -> Result<()> {
        for &q in &plan.queues {
            let consume = BasicConsume {
                queue: ShortStr::from(self.opts.queue_name(q)),
                consumer_tag: ShortStr::from(plan.tag(q)),
                no_ack: self.opts.autoack,
                ..Default::default()
            };
            self.queue_method(&consume.into());
        }
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let write_blocked = self.write_some()?;
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

    /// Appends a method frame to the bytes to write (a write of its own in
    /// the single style).
    fn queue_method(&mut self, method: &Method) {
        let before = self.wbuf.len();
        encode_method(&mut self.wbuf, CHANNEL, method);
        if self.opts.client == Client::Single {
            self.writes.push_back(self.wbuf.len() - before);
        }
    }

    /// Writes what `wbuf` holds until done or the socket is full: all at
    /// once when pipelined, frame by frame when single. True if the socket
    /// would block.
    fn write_some(&mut self) -> Result<bool> {
        while !self.wbuf.is_empty() {
            let len = match self.writes.front() {
                Some(&len) => len,
                None => self.wbuf.len(),
            };
            match self.conn.stream.try_write(&self.wbuf[..len]) {
                Ok(n) => {
                    self.wbuf.advance(n);
                    if let Some(front) = self.writes.front_mut() {
                        *front -= n;
                        if *front == 0 {
                            self.writes.pop_front();
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Decodes every whole frame read so far.
    fn handle_incoming(&mut self) -> Result<()> {
        let now_ns = now_ns();
        let record = self.recorder.recording(Instant::now());
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
                    if *first && record {
                        self.recorder.record(&payload, now_ns);
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
        if let Some((delivery_tag, multiple)) = self.acks.delivered(tag) {
            let ack = BasicAck {
                delivery_tag,
                multiple,
            };
            self.queue_method(&ack.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn opts(args: &[&str]) -> Options {
        let mut all = vec!["warren-perf"];
        all.extend_from_slice(args);
        Options::parse_from(all)
    }

    #[test]
    fn ack_policy_acks_each_every_n_or_never() {
        let mut each = AckPolicy::new(&opts(&[]));
        assert_eq!(each.delivered(1), Some((1, false)));
        assert_eq!(each.delivered(2), Some((2, false)));
        let mut every3 = AckPolicy::new(&opts(&["--multi-ack", "3"]));
        let acks: Vec<_> = (1..=7).map(|t| every3.delivered(t)).collect();
        assert_eq!(
            acks,
            [
                None,
                None,
                Some((3, true)),
                None,
                None,
                Some((6, true)),
                None
            ]
        );
        // Never more than the prefetch lets the broker send.
        let mut capped = AckPolicy::new(&opts(&["--multi-ack", "50", "--prefetch", "2"]));
        assert_eq!(capped.delivered(1), None);
        assert_eq!(capped.delivered(2), Some((2, true)));
        let mut none = AckPolicy::new(&opts(&["--autoack"]));
        assert_eq!(none.delivered(1), None);
    }

    #[test]
    fn recorder_times_only_this_runs_bodies() {
        let mut r = Recorder::new(None);
        let mut body = vec![0u8; 16];
        body[..8].copy_from_slice(&1_000u64.to_be_bytes());
        body[8..].copy_from_slice(&run_id().to_be_bytes());
        r.record(&body, 5_000);
        body[8..].copy_from_slice(&(run_id() ^ 1).to_be_bytes());
        r.record(&body, 5_000);
        r.record(&body[..10], 5_000);
        assert_eq!(r.hist.count(), 1);
        assert_eq!(r.hist.max(), 4_000);
        let past = Recorder::new(Some(Instant::now()));
        assert!(!past.recording(Instant::now() + Duration::from_millis(1)));
    }
}
