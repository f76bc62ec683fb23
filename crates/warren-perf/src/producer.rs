//! A producer: one connection, one task, publishing as fast as the socket,
//! the confirm window and the rate limit allow.
//!
//! [`run`] is the same for every client style (--client); the [`Session`]
//! enum is the seam. The codec styles share [`Publisher`]: every message is
//! a copy of a pre-encoded template (method, header and body frames, built
//! once with the codec's encoders) with the send timestamp patched into the
//! body. Pipelined, a batch of them is written with one `try_write`;
//! single, each message is one write, finished before the next is
//! encoded. The loop drives the socket with `try_read`/`try_write` and only
//! waits when it can do nothing else, so confirms are read as they arrive
//! without a second task. The lapin style lives in `lapin_client`. Every
//! style paces itself with [`Pacing`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::sync::mpsc;
use warren_codec::{
    BasicProperties, BasicPublish, ChannelFlowOk, ConfirmSelect, ConnectionCloseOk, Frame, Method,
    ShortStr, encode_content, encode_content_header, encode_method,
};

use crate::client::{CHANNEL, ClientError, Conn, Result, close_error};
use crate::confirms::ConfirmTracker;
use crate::options::{Client, Options};
use crate::shared::{Counters, Go, nanos_at, run_id, wait_go};
use crate::{amqprs_client, lapin_client};

/// Bytes encoded per write: big enough that syscalls are a small share of
/// the work, small enough to stay in L2.
const BATCH_BYTES: usize = 128 * 1024;

/// How long the last batch may take to write once time is up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a producer waits, once time is up, for the confirms of what it
/// published, so the settle figures account for every publish.
pub(crate) const CONFIRM_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What one producer publishes.
pub(crate) struct Plan {
    /// Index, for error texts.
    pub(crate) id: u32,
    /// (exchange, routing key) pairs, used round-robin.
    pub(crate) targets: Vec<(String, String)>,
    /// Stop after this many messages (backlog mode), once all are confirmed.
    pub(crate) limit: Option<u64>,
    /// How long to publish for, from the start signal.
    pub(crate) duration: Duration,
    /// Close politely at the end (not with the sink, which never answers).
    pub(crate) graceful_close: bool,
}

/// One encoded message to copy, and where its timestamp goes.
pub(crate) struct Template {
    pub(crate) bytes: Bytes,
    pub(crate) ts_offset: usize,
}

/// A `--size`-byte body: bytes 0..8 are left for the timestamp, 8..16
/// carry the run id.
pub(crate) fn body(opts: &Options) -> Vec<u8> {
    let mut body = vec![0u8; opts.size];
    body[8..16].copy_from_slice(&run_id().to_be_bytes());
    body
}

/// The publish loop of the library styles (lapin, amqprs): paced as
/// --rate and the backlog's limit say, each publish first taking a permit
/// of the confirm window (the style gives permits back as confirms come),
/// its body stamped with the send time, the plan's targets in turn.
///
/// ```text
/// while let Some((exchange, key, body)) = lp.next(window).await? {
///     publish ...;
///     lp.sent(counters);
/// }
/// ```
pub(crate) struct LibraryLoop<'a> {
    plan: &'a Plan,
    deadline: Instant,
    pacing: Pacing,
    body: Vec<u8>,
    next_target: usize,
}

impl<'a> LibraryLoop<'a> {
    pub(crate) fn new(opts: &Options, plan: &'a Plan, start: Instant) -> Self {
        LibraryLoop {
            plan,
            deadline: start + plan.duration,
            pacing: Pacing::new(opts, plan.limit, start),
            body: body(opts),
            next_target: 0,
        }
    }

    /// Waits until the next publish is due and has its permit of `window`;
    /// its (exchange, routing key, body), or `None` at the deadline or the
    /// limit.
    pub(crate) async fn next(
        &mut self,
        window: Option<&tokio::sync::Semaphore>,
    ) -> std::result::Result<Option<(&'a str, &'a str, &[u8])>, String> {
        if self.pacing.limit_reached() {
            return Ok(None);
        }
        if let Some(due) = self.pacing.next_due()
            && due > Instant::now()
        {
            tokio::time::sleep_until(due.min(self.deadline).into()).await;
        }
        if Instant::now() >= self.deadline {
            return Ok(None);
        }
        if let Some(window) = window {
            let Ok(permit) = tokio::time::timeout_at(self.deadline.into(), window.acquire()).await
            else {
                return Ok(None);
            };
            // Given back by the style when the confirm comes.
            permit.map_err(|e| e.to_string())?.forget();
        }
        self.body[..8].copy_from_slice(&nanos_at(Instant::now()).to_be_bytes());
        let plan = self.plan;
        let Some((exchange, key)) = plan.targets.get(self.next_target) else {
            return Err("a producer with nothing to publish to".to_string());
        };
        self.next_target = (self.next_target + 1) % plan.targets.len();
        Ok(Some((exchange.as_str(), key.as_str(), &self.body)))
    }

    /// The message [`LibraryLoop::next`] gave was published.
    pub(crate) fn sent(&mut self, counters: &Counters) {
        self.pacing.sent += 1;
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Until when a library style waits for its outstanding confirms after
/// its [`LibraryLoop`]: a backlog run to its deadline (every publish must be
/// confirmed), a timed run briefly, for the settle figures.
pub(crate) fn confirms_until(plan: &Plan, start: Instant) -> Instant {
    if plan.limit.is_some() {
        start + plan.duration
    } else {
        Instant::now() + CONFIRM_DRAIN_TIMEOUT
    }
}

/// Encodes a publish of a `size`-byte body to `exchange`/`routing_key`:
/// bytes 0..8 of the body are left for the timestamp, 8..16 carry the run id.
pub(crate) fn template(
    opts: &Options,
    exchange: &str,
    routing_key: &str,
    frame_max: u32,
) -> Template {
    let publish: Method = BasicPublish {
        exchange: ShortStr::from(exchange),
        routing_key: ShortStr::from(routing_key),
        ..Default::default()
    }
    .into();
    let props = BasicProperties {
        delivery_mode: opts.persistent.then_some(2),
        ..Default::default()
    };
    let body = body(opts);
    let mut head = BytesMut::new();
    encode_method(&mut head, CHANNEL, &publish);
    encode_content_header(&mut head, CHANNEL, 60, body.len() as u64, &props);
    let mut bytes = BytesMut::new();
    encode_content(
        &mut bytes,
        CHANNEL,
        &publish,
        &props,
        &body,
        frame_max as usize,
    );
    // The first body frame starts right after the header frame; its payload
    // after the 7-byte frame header.
    Template {
        bytes: bytes.freeze(),
        ts_offset: head.len() + 7,
    }
}

/// Connects, enters confirm mode if asked, says ready, waits for the start
/// signal and publishes until the plan is done. Errors are counted in
/// `counters`; nothing is returned.
pub(crate) async fn run(
    opts: Arc<Options>,
    plan: Plan,
    counters: Arc<Counters>,
    ready: mpsc::Sender<bool>,
    mut go: Go,
) {
    let who = format!("producer {}", plan.id);
    let session = match Session::open(&opts, &counters).await {
        Ok(session) => {
            let _ = ready.send(true).await;
            session
        }
        Err(e) => {
            counters.error(&who, e);
            let _ = ready.send(false).await;
            return;
        }
    };
    let Some(start) = wait_go(&mut go).await else {
        session.close().await;
        return;
    };
    if let Err(e) = session.publish(&opts, &plan, &counters, start).await {
        counters.error(&who, e);
    }
}

/// One producer's connection, in the style --client asks for.
enum Session {
    /// warren-perf's codec connection (pipelined or single writes).
    Codec(Conn),
    /// A lapin connection and channel (boxed: lapin's types are large).
    Lapin(Box<lapin_client::Session>),
    /// An amqprs connection and channel.
    Amqprs(Box<amqprs_client::Session>),
}

impl Session {
    /// Connects and enters confirm mode if asked.
    async fn open(
        opts: &Options,
        counters: &Arc<Counters>,
    ) -> std::result::Result<Session, String> {
        match opts.client {
            Client::Pipelined | Client::Single => codec_setup(opts)
                .await
                .map(Session::Codec)
                .map_err(|e| e.to_string()),
            Client::Lapin => lapin_client::Session::open(opts, opts.confirm > 0)
                .await
                .map(|s| Session::Lapin(Box::new(s))),
            Client::Amqprs => {
                amqprs_client::Session::open(opts, (opts.confirm > 0).then_some(counters))
                    .await
                    .map(|s| Session::Amqprs(Box::new(s)))
            }
        }
    }

    /// Publishes until the plan is done, then closes (politely unless the
    /// plan says not to).
    async fn publish(
        self,
        opts: &Options,
        plan: &Plan,
        counters: &Arc<Counters>,
        start: Instant,
    ) -> std::result::Result<(), String> {
        match self {
            Session::Codec(conn) => {
                let mut p = Publisher::new(opts, plan, conn, counters, start);
                p.publish().await.map_err(|e| e.to_string())?;
                if plan.graceful_close {
                    p.drain_confirms().await.map_err(|e| e.to_string())?;
                    p.conn.close().await;
                }
                Ok(())
            }
            Session::Lapin(session) => session.publish(opts, plan, counters, start).await,
            Session::Amqprs(session) => session.publish(opts, plan, counters, start).await,
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

async fn codec_setup(opts: &Options) -> Result<Conn> {
    let mut conn = Conn::open(opts).await?;
    if opts.confirm > 0 {
        match conn.rpc(ConfirmSelect::default().into()).await? {
            Method::ConfirmSelectOk(_) => {}
            other => return Err(ClientError::Unexpected(other.name().to_string())),
        }
    }
    Ok(conn)
}

/// What a producer may publish now, for every client style: the confirm
/// window (--confirm), the backlog's limit and the rate limit (--rate).
pub(crate) struct Pacing {
    /// Outstanding publishes allowed; 0 = no confirm mode.
    confirm: u64,
    /// msg/s; 0 = unlimited.
    rate: f64,
    /// Stop after this many (backlog mode).
    limit: Option<u64>,
    /// When publishing started (the rate counts from here).
    start: Instant,
    /// Published so far.
    pub(crate) sent: u64,
}

impl Pacing {
    pub(crate) fn new(opts: &Options, limit: Option<u64>, start: Instant) -> Pacing {
        Pacing {
            confirm: opts.confirm,
            rate: opts.rate,
            limit,
            start,
            sent: 0,
        }
    }

    /// How many messages may be sent at `now`, at most `batch`, with
    /// `outstanding` publishes unconfirmed.
    pub(crate) fn allowance(&self, now: Instant, batch: u64, outstanding: u64) -> u64 {
        let mut n = batch;
        if self.confirm > 0 {
            n = n.min(self.confirm.saturating_sub(outstanding));
        }
        if let Some(limit) = self.limit {
            n = n.min(limit.saturating_sub(self.sent));
        }
        if self.rate > 0.0 {
            let due = ((now - self.start).as_secs_f64() * self.rate) as u64 + 1;
            n = n.min(due.saturating_sub(self.sent));
        }
        n
    }

    /// When the rate limit next allows a message, if there is a rate limit
    /// and the limit is not reached.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        (self.rate > 0.0 && !self.limit_reached())
            .then(|| self.start + Duration::from_secs_f64(self.sent as f64 / self.rate))
    }

    /// Whether the backlog's limit is reached (never without one).
    pub(crate) fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l)
    }

    /// Whether there is a limit at all (backlog mode).
    pub(crate) fn has_limit(&self) -> bool {
        self.limit.is_some()
    }
}

/// The codec styles' publishing loop: pipelined (a batch per write) or
/// single (one message per write).
struct Publisher<'a> {
    opts: &'a Options,
    counters: &'a Counters,
    conn: Conn,
    templates: Vec<Template>,
    next_template: usize,
    wbuf: BytesMut,
    tracker: ConfirmTracker,
    /// Messages encoded per write when nothing else limits it: as many as
    /// fill [`BATCH_BYTES`] pipelined, 1 single.
    batch: u64,
    pacing: Pacing,
    deadline: Instant,
    /// channel.flow from the broker: publishing paused while false.
    flow_active: bool,
}

impl<'a> Publisher<'a> {
    fn new(
        opts: &'a Options,
        plan: &Plan,
        conn: Conn,
        counters: &'a Counters,
        start: Instant,
    ) -> Self {
        let templates: Vec<Template> = plan
            .targets
            .iter()
            .map(|(x, rk)| template(opts, x, rk, conn.frame_max))
            .collect();
        let per_message = templates.first().map_or(64, |t| t.bytes.len());
        let batch = match opts.client {
            Client::Single => 1,
            Client::Pipelined | Client::Lapin | Client::Amqprs => {
                (BATCH_BYTES / per_message).max(1) as u64
            }
        };
        Publisher {
            opts,
            counters,
            conn,
            batch,
            templates,
            next_template: 0,
            wbuf: BytesMut::with_capacity(BATCH_BYTES * 2),
            tracker: ConfirmTracker::new(),
            pacing: Pacing::new(opts, plan.limit, start),
            deadline: start + plan.duration,
            flow_active: true,
        }
    }

    /// How many messages may be encoded now.
    fn allowance(&self, now: Instant) -> u64 {
        if !self.flow_active {
            return 0;
        }
        self.pacing
            .allowance(now, self.batch, self.tracker.outstanding())
    }

    fn fill(&mut self, n: u64, now: Instant) {
        let ts = nanos_at(now).to_be_bytes();
        for _ in 0..n {
            let t = &self.templates[self.next_template];
            self.next_template += 1;
            if self.next_template == self.templates.len() {
                self.next_template = 0;
            }
            let at = self.wbuf.len() + t.ts_offset;
            self.wbuf.extend_from_slice(&t.bytes);
            self.wbuf[at..at + 8].copy_from_slice(&ts);
        }
        self.pacing.sent += n;
        if self.opts.confirm > 0 {
            self.tracker.published(n);
        }
        self.counters.sent.fetch_add(n, Ordering::Relaxed);
    }

    fn done(&self, now: Instant) -> bool {
        if now >= self.deadline {
            return true;
        }
        self.pacing.has_limit()
            && self.pacing.limit_reached()
            && self.wbuf.is_empty()
            && self.tracker.outstanding() == 0
    }

    async fn publish(&mut self) -> Result<()> {
        loop {
            let now = Instant::now();
            if self.done(now) {
                return self.flush().await;
            }
            if self.wbuf.is_empty() {
                let n = self.allowance(now);
                if n > 0 {
                    self.fill(n, now);
                }
            }
            let mut write_blocked = false;
            if !self.wbuf.is_empty() {
                // Single style: wbuf holds one message (and perhaps a
                // flow-ok), so this is one write per publish; the next is
                // encoded only once this one is fully written.
                match self.conn.stream.try_write(&self.wbuf) {
                    Ok(n) => self.wbuf.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => write_blocked = true,
                    Err(e) => return Err(e.into()),
                }
            }
            // No syscall unless the socket was last seen readable: tokio
            // answers WouldBlock from its readiness cache.
            self.conn.rbuf.reserve(16 * 1024);
            match self.conn.stream.try_read_buf(&mut self.conn.rbuf) {
                Ok(0) => return Err(ClientError::Eof("")),
                Ok(_) => self.handle_incoming()?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            let can_write = !self.wbuf.is_empty() && !write_blocked;
            let can_fill = self.wbuf.is_empty() && self.allowance(now) > 0;
            if can_write || can_fill {
                // try_* calls never yield on their own: give the other
                // tasks on this worker their turn once per batch.
                tokio::task::yield_now().await;
                continue;
            }
            let interest = if self.wbuf.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            let rate_wait = self.wbuf.is_empty() && self.flow_active;
            let wake = match self.pacing.next_due() {
                Some(due) if rate_wait => due.min(self.deadline),
                _ => self.deadline,
            };
            tokio::select! {
                r = self.conn.stream.ready(interest) => { r?; }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Once time is up: reads the confirms still outstanding, for at most
    /// [`CONFIRM_DRAIN_TIMEOUT`], so the settle figures count them. Not
    /// getting them all is no error: the report shows the difference.
    async fn drain_confirms(&mut self) -> Result<()> {
        let limit = Instant::now() + CONFIRM_DRAIN_TIMEOUT;
        while self.tracker.outstanding() > 0 {
            self.conn.rbuf.reserve(16 * 1024);
            let read = tokio::time::timeout_at(
                limit.into(),
                self.conn.stream.read_buf(&mut self.conn.rbuf),
            );
            match read.await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => return Err(ClientError::Eof("")),
                Ok(Ok(_)) => self.handle_incoming()?,
                Ok(Err(e)) => return Err(e.into()),
            }
            // A flow-ok answered while draining.
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is left of the last batch, so every message counted as
    /// sent was written. Bounded: a broker that stopped reading is an error.
    async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(FLUSH_TIMEOUT, self.conn.stream.write_all(&self.wbuf))
            .await
            .map_err(|_| ClientError::Timeout("writing the last batch"))??;
        self.wbuf.clear();
        Ok(())
    }

    /// Handles what the broker sent: confirms, returns, flow, closes.
    fn handle_incoming(&mut self) -> Result<()> {
        while let Some(frame) = self.conn.decoder.decode(&mut self.conn.rbuf)? {
            let Frame::Method { method, .. } = frame else {
                continue;
            };
            match method {
                Method::BasicAck(a) => {
                    let n = self.tracker.settle(a.delivery_tag, a.multiple);
                    self.counters.confirmed.fetch_add(n, Ordering::Relaxed);
                }
                Method::BasicNack(a) => {
                    let n = self.tracker.settle(a.delivery_tag, a.multiple);
                    self.counters.nacked.fetch_add(n, Ordering::Relaxed);
                }
                Method::BasicReturn(_) => {
                    self.counters.returned.fetch_add(1, Ordering::Relaxed);
                }
                Method::ChannelFlow(f) => {
                    self.flow_active = f.active;
                    // wbuf holds whole messages only, so a method frame
                    // appended here never splits one.
                    encode_method(
                        &mut self.wbuf,
                        CHANNEL,
                        &ChannelFlowOk { active: f.active }.into(),
                    );
                }
                m @ (Method::ConnectionClose(_) | Method::ChannelClose(_)) => {
                    if matches!(m, Method::ConnectionClose(_)) {
                        let mut out = BytesMut::new();
                        encode_method(&mut out, 0, &ConnectionCloseOk.into());
                        let _ = self.conn.stream.try_write(&out);
                    }
                    return Err(close_error(&m).unwrap_or(ClientError::Eof("")));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use warren_codec::FrameDecoder;

    #[test]
    fn template_decodes_as_a_publish_with_the_run_id() {
        let opts = Options::parse_from(["warren-perf", "--size", "20000", "--persistent"]);
        let t = template(&opts, "", "q", 4096);
        let mut buf = BytesMut::from(&t.bytes[..]);
        buf[t.ts_offset..t.ts_offset + 8].copy_from_slice(&42u64.to_be_bytes());
        let dec = FrameDecoder::new(4096);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).expect("valid frames") {
            frames.push(f);
        }
        assert!(buf.is_empty());
        assert!(matches!(
            &frames[0],
            Frame::Method { method: Method::BasicPublish(p), .. } if p.routing_key == "q"
        ));
        let Frame::Header { header, .. } = &frames[1] else {
            panic!("no header: {frames:?}");
        };
        assert_eq!(header.body_size, 20000);
        assert_eq!(header.properties.delivery_mode, Some(2));
        let Frame::Body { payload, .. } = &frames[2] else {
            panic!("no body");
        };
        assert_eq!(payload[..8], 42u64.to_be_bytes());
        assert_eq!(payload[8..16], run_id().to_be_bytes());
        let total: usize = frames[2..]
            .iter()
            .map(|f| match f {
                Frame::Body { payload, .. } => payload.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 20000);
    }
}
