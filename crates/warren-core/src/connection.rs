//! The AMQP connection state machine, without IO.
//!
//! Inputs are `handle_*` (socket bytes, mailbox events, timer expiry) and
//! outputs are the bytes in [`Connection::take_output`] and the deadline in
//! [`Connection::poll_timeout`]. Time is always a parameter, so tests drive
//! a connection with scripted frames and a fake clock.
//!
//! ```text
//!  Header --AMQP 0-9-1--> StartOk --start-ok--> TuneOk --tune-ok--> Open
//!                                                                     |
//!          Closed <--close-ok/timeout-- Closing <--error-- Running <--open
//!             ^                                                |
//!             +--EOF/linger timeout-- Lingering <--close-------+
//! ```
//! After the client's `connection.close` we answer `close-ok` and leave the
//! socket open for the client to close, discarding what it still sends
//! (bounded by [`linger_timeout`]), as RabbitMQ does: a client that reads
//! EOF before it has handled the `close-ok` reports an aborted connection,
//! and one still writing (publishes queued behind its close) gets EPIPE.
//! Errors before `Running` close the socket without a close frame (as
//! RabbitMQ does), except a refused login when the client advertised
//! `authentication_failure_close`, and a refused vhost at `connection.open`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use warren_codec::{
    ChannelOpen, ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionOpenOk,
    ConnectionStart, ConnectionTune, ConnectionUpdateSecretOk, DecodeError, FieldTable, FieldValue,
    Frame, FrameDecoder, LongStr, Method, PROTOCOL_HEADER, ProtocolHeader, ReplyCode, ShortStr,
    TxCommit, decode_protocol_header, encode_method,
};

use crate::broker::{Broker, LoginRefused};
use crate::channel::{Channel, Ctx};
use crate::error::{AmqpError, ChannelError, CloseReason, ConnectionError, Error, Initiator};
use crate::fxhash::FxHashMap;
use crate::mailbox::{Event, Mailbox};
use crate::message::{QueueRef, QueuedMessage};
use crate::permissions::Permissions;
use crate::queue::{ConnId, Queue};
use crate::registry::{ConnState, ConnectionEntry};
use crate::vhost::VHost;

/// Frame limit before `tune-ok` (RabbitMQ 4.1's `initial_frame_max`).
pub const PRE_TUNE_FRAME_MAX: u32 = 8192;
/// Smallest `frame_max` a client may negotiate (the 0-9-1 minimum).
pub const MIN_FRAME_MAX: u32 = 4096;
/// Longest the consumer timeout goes unchecked while deliveries are
/// outstanding (RabbitMQ's channel looks once a minute, at its tick).
pub const ACK_CHECK_MAX: Duration = Duration::from_secs(60);
/// How long we wait for `close-ok` after sending `connection.close`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest we keep a socket open after our `close-ok`, waiting for the
/// client to close it (RabbitMQ's `CLOSING_TIMEOUT`).
pub const LINGER_MAX: Duration = Duration::from_secs(30);

/// How long a connection lingers after `close-ok`: the heartbeat interval
/// when one was negotiated and is shorter, [`LINGER_MAX`] otherwise, as
/// RabbitMQ's reader does.
pub fn linger_timeout(heartbeat: Duration) -> Duration {
    if heartbeat.is_zero() {
        LINGER_MAX
    } else {
        heartbeat.min(LINGER_MAX)
    }
}

/// Facts about the peer the IO layer knows.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Printable peer address.
    pub peer: String,
    /// Printable local address the peer connected to.
    pub local: String,
    /// Whether the peer connected from a loopback address.
    pub loopback: bool,
    /// The TLS session, when the connection came in on a TLS listener.
    pub tls: Option<Arc<crate::registry::TlsInfo>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    StartOk,
    TuneOk,
    Open,
    Running,
    /// We sent `connection.close`; only close/close-ok matter now.
    Closing,
    /// The client closed and we answered `close-ok`: everything it held
    /// is released, its input is discarded, and we wait (bounded) for it to
    /// close the socket.
    Lingering,
    Closed,
}

/// Capabilities the client advertised in `start-ok`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientCaps {
    pub(crate) consumer_cancel_notify: bool,
    pub(crate) authentication_failure_close: bool,
    pub(crate) connection_blocked: bool,
}

/// One AMQP connection.
pub struct Connection {
    id: ConnId,
    broker: Arc<Broker>,
    info: ConnInfo,
    state: State,
    decoder: FrameDecoder,
    out: BytesMut,
    mailbox: Arc<Mailbox>,
    /// What the broker and its API see of this connection.
    entry: Arc<ConnectionEntry>,
    /// The users-and-permissions epoch `perms` was read at.
    access_epoch: u64,
    events: VecDeque<Event>,
    channels: FxHashMap<u16, Channel>,
    vhost: Option<Arc<VHost>>,
    perms: Option<Arc<Permissions>>,
    user: String,
    caps: ClientCaps,
    channel_max: u16,
    frame_max: u32,
    heartbeat: Duration,
    started: Instant,
    last_recv: Instant,
    last_send: Instant,
    close_deadline: Option<Instant>,
    exclusive_queues: Vec<Arc<Queue>>,
    /// Why the connection ended: the first reason set wins.
    close_reason: Option<CloseReason>,
    /// The client has published: alarms block it.
    published: bool,
    /// We told the client `connection.blocked` and not yet `unblocked`.
    blocked_sent: bool,
    /// Input was paused at the last look (alarm or flow control).
    was_paused: bool,
    /// When to look at the channels' oldest unacknowledged deliveries for
    /// the consumer timeout; `None` while nothing is outstanding.
    ack_check_at: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection that has just been accepted.
    pub fn new(broker: Arc<Broker>, info: ConnInfo, mailbox: Arc<Mailbox>, now: Instant) -> Self {
        let id = broker.next_conn_id();
        let mut entry = ConnectionEntry::new(
            id,
            &info.peer,
            &info.local,
            broker.wall_clock_secs().saturating_mul(1000),
            Arc::clone(&mailbox),
        );
        entry.tls = info.tls.clone();
        let entry = Arc::new(entry);
        broker.register(Arc::clone(&entry));
        let limits = &broker.config.limits;
        let (channel_max, frame_max) = (limits.channel_max, limits.frame_max);
        Connection {
            id,
            broker,
            info,
            state: State::Header,
            decoder: FrameDecoder::new(PRE_TUNE_FRAME_MAX),
            out: BytesMut::with_capacity(16 * 1024),
            mailbox,
            entry,
            access_epoch: 0,
            events: VecDeque::new(),
            channels: FxHashMap::default(),
            vhost: None,
            perms: None,
            user: String::new(),
            caps: ClientCaps::default(),
            channel_max,
            frame_max,
            heartbeat: Duration::ZERO,
            started: now,
            last_recv: now,
            last_send: now,
            close_deadline: None,
            exclusive_queues: Vec::new(),
            close_reason: None,
            published: false,
            blocked_sent: false,
            was_paused: false,
            ack_check_at: None,
        }
    }

    /// The broker-wide id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// What the broker and its API see of this connection (the IO layer
    /// adds its byte counts).
    pub fn entry(&self) -> &Arc<ConnectionEntry> {
        &self.entry
    }

    /// The peer, as given.
    pub fn peer(&self) -> &str {
        &self.info.peer
    }

    /// Whether the connection is finished: flush the output, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the handshake has completed and the connection is in use.
    pub fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// Why it ended (or is ending), once it is.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// Bytes to write to the socket, in order.
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    /// Whether there is output waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Consumes as many whole frames from `buf` as it holds.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) {
        let _wakes = crate::mailbox::defer_wakes();
        if !buf.is_empty() {
            self.last_recv = now;
        }
        let before = self.out.len();
        loop {
            match self.state {
                State::Closed | State::Lingering => {
                    buf.clear();
                    break;
                }
                State::Header => match decode_protocol_header(buf) {
                    ProtocolHeader::Incomplete => break,
                    ProtocolHeader::Mismatch => {
                        self.out.put_slice(PROTOCOL_HEADER);
                        self.finish(CloseReason::broker("protocol header mismatch"));
                        buf.clear();
                        break;
                    }
                    ProtocolHeader::Amqp091 => {
                        let _ = buf.split_to(PROTOCOL_HEADER.len());
                        self.send_start();
                        self.state = State::StartOk;
                    }
                },
                // An alarm blocks a publishing connection: leave the rest
                // unread (RabbitMQ stops reading such sockets).
                _ if self.input_paused() => break,
                _ => match self.decoder.decode(buf) {
                    Ok(None) => break,
                    Ok(Some(frame)) => self.handle_frame(frame, now),
                    Err(e) => {
                        self.decode_error(e, now);
                        buf.clear();
                        break;
                    }
                },
            }
        }
        self.flush_confirms();
        self.update_blocked(now);
        if self.out.len() != before {
            self.last_send = now;
        }
    }

    /// Whether the connection published and an alarm is raised.
    fn publishing_blocked(&self) -> bool {
        self.published && self.broker.is_blocked()
    }

    /// Whether the driver should read from the socket: not while a
    /// resource alarm blocks this publishing connection.
    pub fn wants_input(&self) -> bool {
        !(self.state == State::Running && self.input_paused())
    }

    /// Blocked by an alarm, or held back by a congested queue (flow
    /// control: silent, as RabbitMQ's credit flow is).
    fn input_paused(&self) -> bool {
        self.publishing_blocked() || self.mailbox.is_throttled()
    }

    /// Sends `connection.blocked`/`unblocked` when the state changed, to
    /// clients that asked for them.
    fn update_blocked(&mut self, now: Instant) {
        if self.state != State::Running {
            return;
        }
        let paused = self.input_paused();
        if self.was_paused && !paused {
            // Nothing was read while paused: the client's heartbeats count
            // from now.
            self.last_recv = now;
        }
        self.was_paused = paused;
        let blocked = self.publishing_blocked();
        if blocked && !self.blocked_sent {
            self.blocked_sent = true;
            self.entry.set_state(ConnState::Blocked);
            if self.caps.connection_blocked {
                let reason = self.broker.block_reason().unwrap_or("resource alarm");
                self.send(
                    0,
                    warren_codec::ConnectionBlocked {
                        reason: ShortStr::from_static(reason),
                    },
                );
            }
        } else if !blocked && self.blocked_sent {
            self.blocked_sent = false;
            self.entry.set_state(ConnState::Running);
            // We read nothing while blocked: the client's heartbeats count
            // from now, as RabbitMQ pauses its heartbeat monitor.
            self.last_recv = now;
            if self.caps.connection_blocked {
                self.send(0, warren_codec::ConnectionUnblocked);
            }
        }
    }

    fn decode_error(&mut self, e: DecodeError, now: Instant) {
        if self.state == State::Running {
            tracing::warn!(conn = self.id, error = %e, "peer sent a malformed frame");
            let err = AmqpError::new(e.reply_code(), e).in_method(e.class_id, e.method_id);
            self.fail(0, Error::Connection(ConnectionError(err)), now);
        } else {
            self.finish(CloseReason::broker(format!(
                "malformed frame during handshake: {e}"
            )));
        }
    }

    /// Delivers what queues have put in the mailbox.
    pub fn handle_events(&mut self, now: Instant) {
        let _wakes = crate::mailbox::defer_wakes();
        self.mailbox.drain_into(&mut self.events);
        if self.events.is_empty() {
            return;
        }
        let before = self.out.len();
        while let Some(ev) = self.events.pop_front() {
            self.handle_event(ev, now);
        }
        if let Some(vh) = &self.vhost {
            for ch in self.channels.values_mut() {
                ch.flush_written(self.id, vh);
            }
        }
        self.flush_confirms();
        self.update_blocked(now);
        if self.out.len() != before {
            self.last_send = now;
        }
    }

    fn handle_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Deliver {
                channel,
                consumer_tag,
                ack,
                queue,
                messages,
            } => {
                let live = self.state == State::Running;
                match (self.channels.get_mut(&channel), &self.vhost) {
                    (Some(ch), Some(vh)) if live => {
                        let was_empty = ack && !ch.has_unacked();
                        ch.deliver(
                            &mut self.out,
                            self.frame_max,
                            (self.id, vh),
                            (&consumer_tag, ack),
                            &queue,
                            messages,
                            now,
                        );
                        ch.sync_entry();
                        if was_empty || (ack && self.ack_check_at.is_none()) {
                            arm_ack_check(
                                &mut self.ack_check_at,
                                ch,
                                self.broker.config.limits.consumer_timeout,
                                now,
                            );
                        }
                    }
                    _ => {
                        if ack {
                            self.give_back(channel, &consumer_tag, &queue, messages);
                        }
                    }
                }
            }
            Event::Alarm => {}
            Event::ForceClose { text } => self.force_close_with(text, now),
            Event::DirectReply {
                channel,
                consumer_tag,
                message,
            } => {
                if self.state == State::Running
                    && let Some(ch) = self.channels.get_mut(&channel)
                {
                    ch.deliver_reply(&mut self.out, self.frame_max, consumer_tag, message);
                }
            }
            Event::Confirmed { channel, seq, ok } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.confirmed(seq, ok);
                }
            }
            Event::TxCommitted { channel, ok } => {
                let open = self.state == State::Running
                    && self
                        .channels
                        .get(&channel)
                        .is_some_and(|ch| !ch.is_closing());
                if open && ok {
                    self.send(channel, warren_codec::TxCommitOk);
                } else if open {
                    let err = AmqpError::new(
                        ReplyCode::InternalError,
                        "the store failed to write the transaction",
                    )
                    .in_method(TxCommit::CLASS_ID, TxCommit::METHOD_ID);
                    self.fail(channel, Error::Channel(ChannelError(err)), now);
                }
            }
            Event::Cancelled {
                channel,
                consumer_tag,
            } => {
                if let Some(ch) = self.channels.get_mut(&channel)
                    && ch.forget_consumer(&consumer_tag)
                    && self.caps.consumer_cancel_notify
                    && self.state == State::Running
                {
                    encode_method(
                        &mut self.out,
                        channel,
                        &Method::from(warren_codec::BasicCancel {
                            consumer_tag,
                            nowait: true,
                        }),
                    );
                }
            }
        }
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Closing | State::Lingering => self.close_deadline,
            State::Running => {
                let beat = (!self.heartbeat.is_zero()).then(|| {
                    (self.last_send + self.heartbeat / 2).min(self.last_recv + self.heartbeat * 2)
                });
                match (beat, self.ack_check_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => Some(
                self.started
                    + Duration::from_millis(self.broker.config.limits.handshake_timeout_ms),
            ),
        }
    }

    /// Acts on deadlines that have passed: heartbeats to send, a silent
    /// peer, a handshake or close that took too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Closing => {
                if self.close_deadline.is_some_and(|d| now >= d) {
                    self.finish(CloseReason::broker("no close-ok in time"));
                }
            }
            State::Lingering => {
                if self.close_deadline.is_some_and(|d| now >= d) {
                    self.finish(CloseReason::broker(
                        "client did not close its socket after close-ok",
                    ));
                }
            }
            State::Running => {
                if self.ack_check_at.is_some_and(|t| now >= t) {
                    self.check_consumer_timeouts(now);
                }
                if self.heartbeat.is_zero() || self.state != State::Running {
                    return;
                }
                if now >= self.last_recv + self.heartbeat * 2 && !self.input_paused() {
                    tracing::warn!(
                        conn = self.id,
                        "missed heartbeats from client, timeout: {:?}",
                        self.heartbeat
                    );
                    self.finish(CloseReason::broker(format!(
                        "missed heartbeats from client, timeout: {}s",
                        self.heartbeat.as_secs()
                    )));
                    return;
                }
                if now >= self.last_send + self.heartbeat / 2 {
                    Frame::Heartbeat { channel: 0 }.encode(&mut self.out);
                    self.last_send = now;
                }
            }
            _ => {
                if now
                    >= self.started
                        + Duration::from_millis(self.broker.config.limits.handshake_timeout_ms)
                {
                    self.finish(CloseReason::broker("handshake timeout"));
                }
            }
        }
    }

    /// When the consumer timeout should next be looked at: the earliest
    /// time a channel's oldest unacknowledged delivery times out, and at
    /// least every [`ACK_CHECK_MAX`] while any is outstanding (so that a
    /// policy lowering the timeout takes effect); `None` when nothing is
    /// outstanding. Each look reads the head queue's arguments once per
    /// channel; deliveries themselves only record their time.
    fn next_ack_check(&self, now: Instant) -> Option<Instant> {
        let default = self.broker.config.limits.consumer_timeout;
        let mut next: Option<Instant> = None;
        let mut outstanding = false;
        for ch in self.channels.values() {
            outstanding |= ch.has_unacked();
            if let Some((at, _, _)) = ch.ack_deadline(default) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if !outstanding {
            return None;
        }
        let cap = now + ACK_CHECK_MAX;
        Some(next.map_or(cap, |n| n.min(cap)))
    }

    /// Closes every channel whose oldest unacknowledged delivery has been
    /// out longer than its consumer timeout, with RabbitMQ's 406 (no class
    /// or method); closing requeues its deliveries. Then schedules the
    /// next look.
    fn check_consumer_timeouts(&mut self, now: Instant) {
        let default = self.broker.config.limits.consumer_timeout;
        let mut expired = Vec::new();
        for (&n, ch) in &self.channels {
            if let Some((at, timeout, head)) = ch.ack_deadline(default)
                && now >= at
            {
                let ms = timeout.as_millis();
                tracing::warn!(
                    conn = self.id,
                    channel = n,
                    queue = %head.queue,
                    delivery_tag = head.delivery_tag,
                    "consumer '{}' on channel {n} and queue '{}' has timed out waiting for a consumer acknowledgement of a delivery with delivery tag = {}. Timeout used: {ms} ms",
                    head.consumer_tag.map_or_else(|| "none".to_string(), ToString::to_string),
                    head.queue,
                    head.delivery_tag,
                );
                expired.push((n, ms));
            }
        }
        for (n, ms) in expired {
            let err = Error::precondition(format!(
                "delivery acknowledgement on channel {n} timed out. Timeout value used: {ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
            ));
            self.fail(n, err, now);
        }
        self.ack_check_at = self.next_ack_check(now);
    }

    /// Closes the connection from our side with 320 CONNECTION_FORCED, as
    /// on broker shutdown.
    pub fn force_close(&mut self, reason: &str, now: Instant) {
        match self.state {
            State::Running | State::Open => {
                let err = Error::connection(
                    ReplyCode::ConnectionForced,
                    format!("broker forced connection closure with reason '{reason}'"),
                );
                self.fail(0, err, now);
            }
            State::Closing | State::Closed => {}
            // In the handshake, or lingering after our close-ok: nothing
            // to say, just close.
            _ => self.finish(CloseReason::broker(reason)),
        }
    }

    /// Re-reads the user's permissions in the open vhost when users or
    /// permissions changed since they were read: a revoked permission
    /// refuses the next operation, as in RabbitMQ.
    fn refresh_permissions(&mut self) {
        let epoch = self.broker.access.epoch();
        if epoch == self.access_epoch {
            return;
        }
        self.access_epoch = epoch;
        for ch in self.channels.values_mut() {
            ch.forget_route();
        }
        if let Some(vh) = &self.vhost {
            let perms = self.broker.permissions(&self.user, &vh.name);
            self.perms = Some(perms.unwrap_or_else(|| Arc::new(Permissions::none())));
        }
    }

    /// Closes the connection from our side with 320 CONNECTION_FORCED and
    /// `text` (an operator closed it, its user or vhost was deleted).
    fn force_close_with(&mut self, text: String, now: Instant) {
        match self.state {
            State::Running | State::Open => {
                let err = Error::connection(ReplyCode::ConnectionForced, text);
                self.fail(0, err, now);
            }
            State::Closing | State::Closed => {}
            _ => self.finish(CloseReason::broker(text)),
        }
    }

    /// Releases everything the connection holds: unacked messages are
    /// requeued, consumers cancelled, exclusive queues deleted. Call once,
    /// when the socket is gone.
    pub fn on_disconnect(&mut self) {
        self.broker.unregister(self.id);
        self.release_all();
        self.state = State::Closed;
    }

    /// Cancels every consumer, requeues every unacked message (also those
    /// still in the mailbox) and deletes exclusive queues. Done when the
    /// connection closes, before `close-ok` or our `connection.close` is
    /// sent, as RabbitMQ terminates channels first; again (finding nothing)
    /// when the socket goes.
    fn release_all(&mut self) {
        for (n, mut ch) in self.channels.drain() {
            self.entry.remove_channel(n);
            if let Some(vh) = &self.vhost {
                ch.release(self.id, vh);
            }
        }
        // Deliveries that raced with the close go back to their queues.
        self.mailbox.drain_into(&mut self.events);
        for ev in std::mem::take(&mut self.events) {
            if let Event::Deliver {
                channel,
                consumer_tag,
                ack: true,
                queue,
                messages,
            } = ev
            {
                self.give_back(channel, &consumer_tag, &queue, messages);
            }
        }
        if let Some(vh) = &self.vhost {
            for q in self.exclusive_queues.drain(..) {
                vh.remove_queue(&q);
            }
        }
    }

    /// Deliveries that will not be written (their channel or connection is
    /// closing) go back to their queue, unread.
    fn give_back(
        &self,
        channel: u16,
        consumer_tag: &ShortStr,
        queue: &QueueRef,
        messages: Vec<QueuedMessage>,
    ) {
        if let Some(vh) = &self.vhost {
            crate::channel::give_back(vh, (self.id, channel), consumer_tag, queue, messages);
        }
    }

    /// The client's `connection.close`: release everything, answer
    /// `close-ok`, and wait for the client to close the socket.
    fn closed_by_client(&mut self, close: &ConnectionClose, now: Instant) {
        self.release_all();
        self.entry.set_state(ConnState::Closing);
        self.send(0, ConnectionCloseOk);
        self.set_reason(CloseReason {
            initiator: Initiator::Client,
            code: Some(close.reply_code),
            text: close.reply_text.to_lossy().into_owned(),
        });
        self.state = State::Lingering;
        self.close_deadline = Some(now + linger_timeout(self.heartbeat));
    }

    fn set_reason(&mut self, reason: CloseReason) {
        if self.close_reason.is_none() {
            self.close_reason = Some(reason);
        }
    }

    /// Closes the socket now, without a close frame.
    fn finish(&mut self, reason: CloseReason) {
        self.set_reason(reason);
        self.state = State::Closed;
    }

    fn send(&mut self, channel: u16, method: impl Into<Method>) {
        encode_method(&mut self.out, channel, &method.into());
    }

    /// The one path from an error to its close: a channel error closes
    /// `channel` (its consumers cancelled, its unacked messages requeued)
    /// and waits for `channel.close-ok`; a connection error releases
    /// everything, sends `connection.close` and waits (until
    /// [`CLOSE_TIMEOUT`]) for `close-ok`.
    fn fail(&mut self, channel: u16, err: Error, now: Instant) {
        match err {
            Error::Channel(ChannelError(e)) => {
                tracing::debug!(conn = self.id, channel, reply_code = e.code.code(), text = %e.text, "closing channel");
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                if let Some(vh) = &self.vhost {
                    ch.release(self.id, vh);
                }
                ch.start_closing();
                self.send(channel, e.channel_close());
            }
            Error::Connection(ConnectionError(e)) => {
                if matches!(
                    self.state,
                    State::Closing | State::Lingering | State::Closed
                ) {
                    return;
                }
                tracing::debug!(conn = self.id, reply_code = e.code.code(), text = %e.text, "closing connection");
                self.set_reason(CloseReason {
                    initiator: Initiator::Broker,
                    code: Some(e.code.code()),
                    text: e.text.clone(),
                });
                self.release_all();
                self.send(0, e.connection_close());
                self.state = State::Closing;
                self.entry.set_state(ConnState::Closing);
                self.close_deadline = Some(now + CLOSE_TIMEOUT);
            }
        }
    }

    fn send_start(&mut self) {
        let caps = [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ];
        // Only what works is advertised: clients switch features on from this.
        let works = |_: &str| true;
        let mut capabilities = FieldTable::new();
        for c in caps {
            if works(c) {
                capabilities.insert(c, FieldValue::Bool(true));
            }
        }
        let cfg = &self.broker.config;
        let mut props = FieldTable::new()
            .with("capabilities", FieldValue::Table(capabilities))
            .with("cluster_name", FieldValue::LongStr("warren".into()))
            .with(
                "copyright",
                FieldValue::LongStr("Copyright (c) the Warren authors".into()),
            )
            .with(
                "information",
                FieldValue::LongStr("Licensed under the Apache License 2.0".into()),
            )
            .with("platform", FieldValue::LongStr("Rust".into()))
            .with(
                "product",
                FieldValue::LongStr(LongStr::from(cfg.product.as_str())),
            )
            .with(
                "version",
                FieldValue::LongStr(LongStr::from(cfg.version.as_str())),
            );
        for (key, value) in &cfg.server_properties {
            match props
                .0
                .iter_mut()
                .find(|(k, _)| k.as_bytes() == key.as_bytes())
            {
                Some(entry) => entry.1 = value.clone(),
                None => props.insert(key.as_str(), value.clone()),
            }
        }
        self.send(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                // EXTERNAL only where there is a verified certificate to
                // log in with, as rabbitmq_auth_mechanism_ssl offers it.
                mechanisms: if self.external_name().is_some() {
                    "PLAIN AMQPLAIN EXTERNAL".into()
                } else {
                    "PLAIN AMQPLAIN".into()
                },
                locales: "en_US".into(),
            },
        );
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        match self.state {
            State::Closed | State::Lingering => {}
            State::Closing => {
                if let Frame::Method { channel: 0, method } = frame {
                    match method {
                        Method::ConnectionCloseOk(_) => self.state = State::Closed,
                        // The closes crossed: answer theirs and keep
                        // waiting (bounded) for the close-ok to ours, as
                        // RabbitMQ does; closing now could reach the
                        // client before it has read our close-ok.
                        Method::ConnectionClose(_) => self.send(0, ConnectionCloseOk),
                        _ => {}
                    }
                }
            }
            State::Running => self.handle_running(frame, now),
            _ => self.handle_handshake(frame, now),
        }
    }

    fn handle_handshake(&mut self, frame: Frame, now: Instant) {
        let Frame::Method { channel: 0, method } = frame else {
            if let Frame::Heartbeat { channel: 0 } = frame {
                return;
            }
            self.finish(CloseReason::broker("unexpected frame during handshake"));
            return;
        };
        match (self.state, method) {
            (State::StartOk, Method::ConnectionStartOk(m)) => {
                self.caps = client_caps(&m.client_properties);
                let external = m.mechanism.as_bytes() == b"EXTERNAL";
                let creds = match m.mechanism.as_bytes() {
                    b"PLAIN" => parse_plain(m.response.as_bytes()),
                    b"AMQPLAIN" => parse_amqplain(&m.response.0),
                    b"EXTERNAL" => match self.external_name() {
                        Some(name) => Some((name.to_string(), Vec::new())),
                        None => {
                            self.refuse_login(
                                &m.mechanism,
                                "EXTERNAL login needs a verified client certificate",
                                now,
                            );
                            return;
                        }
                    },
                    _ => {
                        self.finish(CloseReason::broker(format!(
                            "unsupported authentication mechanism '{}'",
                            m.mechanism
                        )));
                        return;
                    }
                };
                let Some((user, password)) = creds else {
                    self.refuse_login(&m.mechanism, "malformed SASL response", now);
                    return;
                };
                let login = if external {
                    self.broker.authenticate_external(&user, self.info.loopback)
                } else {
                    self.broker
                        .authenticate(&user, &password, self.info.loopback)
                };
                match login {
                    Ok(_) => {
                        {
                            let mut n = self.entry.negotiated();
                            n.user.clone_from(&user);
                            n.client_properties = m.client_properties.clone();
                            n.auth_mechanism = m.mechanism.to_lossy().into_owned();
                        }
                        self.user = user;
                        let l = &self.broker.config.limits;
                        let tune = ConnectionTune {
                            channel_max: l.channel_max,
                            frame_max: l.frame_max,
                            heartbeat: l.heartbeat,
                        };
                        self.send(0, tune);
                        self.state = State::TuneOk;
                    }
                    Err(LoginRefused::BadCredentials) => self.refuse_login(
                        &m.mechanism,
                        &format!("bad credentials for user '{user}'"),
                        now,
                    ),
                    Err(LoginRefused::NotFromLoopback) => self.refuse_login(
                        &m.mechanism,
                        &format!("user '{user}' can only connect via localhost"),
                        now,
                    ),
                }
            }
            (State::TuneOk, Method::ConnectionTuneOk(m)) => {
                let l = &self.broker.config.limits;
                if m.channel_max == 0 || m.channel_max > l.channel_max {
                    self.finish(CloseReason::broker(format!(
                        "negotiated channel_max = {} is higher than the maximum allowed value ({})",
                        m.channel_max, l.channel_max
                    )));
                    return;
                }
                if m.frame_max == 0 || m.frame_max > l.frame_max {
                    self.finish(CloseReason::broker(format!(
                        "negotiated frame_max = {} is higher than the maximum allowed value ({})",
                        m.frame_max, l.frame_max
                    )));
                    return;
                }
                if m.frame_max < MIN_FRAME_MAX {
                    self.finish(CloseReason::broker(format!(
                        "negotiated frame_max = {} is lower than the minimum allowed value ({MIN_FRAME_MAX})",
                        m.frame_max
                    )));
                    return;
                }
                self.channel_max = m.channel_max;
                self.frame_max = m.frame_max;
                self.decoder.max_frame = m.frame_max;
                self.heartbeat = Duration::from_secs(u64::from(m.heartbeat));
                {
                    let mut n = self.entry.negotiated();
                    n.frame_max = m.frame_max;
                    n.channel_max = m.channel_max;
                    n.heartbeat = m.heartbeat;
                }
                self.state = State::Open;
            }
            (State::Open, Method::ConnectionOpen(m)) => {
                let name = m.virtual_host.to_lossy().into_owned();
                // RabbitMQ's order: the node's limit, the vhost's (which
                // also finds a missing vhost), the user's, then access.
                // Counts include connections still in their handshake,
                // as ranch's `active_connections` does; this one is
                // among them.
                if let Some(n) = self.broker.config.limits.connection_max
                    && self.broker.connection_count() > n
                {
                    let text =
                        format!("connection refused: node connection limit ({n}) is reached");
                    self.refuse_open(text, now);
                    return;
                }
                let Some(vh) = self.broker.vhost(&name) else {
                    let err =
                        AmqpError::new(ReplyCode::NotAllowed, format!("vhost {name} not found"))
                            .in_method(ConnectionOpen::CLASS_ID, ConnectionOpen::METHOD_ID);
                    self.fail(0, Error::Connection(ConnectionError(err)), now);
                    return;
                };
                self.access_epoch = self.broker.access.epoch();
                let open = self
                    .broker
                    .connections()
                    .iter()
                    .filter(|c| c.id != self.id && c.negotiated().vhost == name)
                    .count();
                if let Some(n) =
                    crate::access::VhostLimits::reached(vh.limits().max_connections, open)
                {
                    let text = format!(
                        "access to vhost '{name}' refused for user '{}': connection limit ({n}) is reached",
                        self.user
                    );
                    let err = AmqpError::new(ReplyCode::NotAllowed, text)
                        .in_method(ConnectionOpen::CLASS_ID, ConnectionOpen::METHOD_ID);
                    self.fail(0, Error::Connection(ConnectionError(err)), now);
                    return;
                }
                if let Some(n) = self.user_connection_limit_reached() {
                    // RabbitMQ 3.10's words (3.11.x and later begin in
                    // lower case).
                    let text = format!(
                        "Connection refused for user '{}': user connection limit ({n}) is reached",
                        self.user
                    );
                    self.refuse_open(text, now);
                    return;
                }
                let Some(perms) = self.broker.permissions(&self.user, &name) else {
                    let text = format!("access to vhost '{name}' refused for user '{}'", self.user);
                    let err = AmqpError::new(ReplyCode::NotAllowed, text)
                        .in_method(ConnectionOpen::CLASS_ID, ConnectionOpen::METHOD_ID);
                    self.fail(0, Error::Connection(ConnectionError(err)), now);
                    return;
                };
                self.perms = Some(perms);
                self.vhost = Some(vh);
                self.entry.negotiated().vhost.clone_from(&name);
                self.entry.set_state(ConnState::Running);
                self.send(
                    0,
                    ConnectionOpenOk {
                        known_hosts: ShortStr::empty(),
                    },
                );
                self.state = State::Running;
                // RabbitMQ's line, which operators grep for.
                tracing::info!(
                    conn = self.id,
                    peer = %self.info.peer,
                    vhost = %name,
                    user = %self.user,
                    "user '{}' authenticated and granted access to vhost '{name}'",
                    self.user
                );
            }
            (_, Method::ConnectionClose(close)) => self.closed_by_client(&close, now),
            (_, m) => self.finish(CloseReason::broker(format!(
                "unexpected {} during handshake",
                m.name()
            ))),
        }
    }

    /// Refuses `connection.open` with 530 NOT_ALLOWED and `text`.
    fn refuse_open(&mut self, text: String, now: Instant) {
        let err = AmqpError::new(ReplyCode::NotAllowed, text)
            .in_method(ConnectionOpen::CLASS_ID, ConnectionOpen::METHOD_ID);
        self.fail(0, Error::Connection(ConnectionError(err)), now);
    }

    /// The user's connection limit, if this connection would exceed it:
    /// RabbitMQ counts the user's open connections (tracked from
    /// `open-ok`), in every vhost. Limits are looked up first, so a user
    /// without them costs no walk over the connections.
    fn user_connection_limit_reached(&self) -> Option<i64> {
        let limit = self.broker.access.user_limits(&self.user)?.max_connections;
        limit.filter(|&n| n >= 0)?;
        let open = self
            .broker
            .connections()
            .iter()
            .filter(|c| {
                let n = c.negotiated();
                c.id != self.id && n.user == self.user && !n.vhost.is_empty()
            })
            .count();
        crate::access::VhostLimits::reached(limit, open)
    }

    /// The user's channel limit, if one more channel would exceed it:
    /// RabbitMQ counts the user's channels on every connection.
    fn user_channel_limit_reached(&self) -> Option<i64> {
        let limit = self.broker.access.user_limits(&self.user)?.max_channels;
        limit.filter(|&n| n >= 0)?;
        let others: usize = self
            .broker
            .connections()
            .iter()
            .filter(|c| c.id != self.id && c.negotiated().user == self.user)
            .map(|c| c.channel_count())
            .sum();
        crate::access::VhostLimits::reached(limit, others + self.channels.len())
    }

    /// The name a verified client certificate logs in as, if any.
    fn external_name(&self) -> Option<&str> {
        self.info.tls.as_ref()?.login_name.as_deref()
    }

    fn refuse_login(&mut self, mechanism: &ShortStr, why: &str, now: Instant) {
        tracing::warn!(peer = %self.info.peer, "login refused: {why}");
        if self.caps.authentication_failure_close {
            let text = format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            );
            self.fail(0, Error::connection(ReplyCode::AccessRefused, text), now);
        } else {
            self.finish(CloseReason::broker(format!("login refused: {why}")));
        }
    }

    fn handle_running(&mut self, frame: Frame, now: Instant) {
        match &frame {
            Frame::Method { channel, method } => {
                tracing::debug!(conn = self.id, channel, method = method.name(), "method")
            }
            other => tracing::trace!(conn = self.id, channel = other.channel(), "content frame"),
        }
        let channel = frame.channel();
        if channel == 0 {
            match frame {
                Frame::Heartbeat { .. } => {}
                Frame::Method { method, .. } => self.handle_channel0(method, now),
                _ => self.fail(
                    0,
                    Error::connection(ReplyCode::ChannelError, "content frame on channel 0"),
                    now,
                ),
            }
            return;
        }
        let (class_id, method_id) = match &frame {
            Frame::Method { method, .. } => (method.class_id(), method.method_id()),
            _ => (0, 0),
        };
        if let Frame::Heartbeat { .. } = frame {
            let err = Error::connection(
                ReplyCode::UnexpectedFrame,
                format!("heartbeat frame on channel {channel}"),
            );
            self.fail(0, err, now);
            return;
        }
        if let Frame::Method { method, .. } = &frame
            && method.class_id() == warren_codec::CLASS_CONNECTION
        {
            let err = Error::connection(ReplyCode::CommandInvalid, "unimplemented method")
                .in_method(class_id, method_id);
            self.fail(0, err, now);
            return;
        }
        if !self.channels.contains_key(&channel) {
            match frame {
                Frame::Method {
                    method: Method::ChannelOpen(_),
                    ..
                } => {
                    if self.channels.len() >= usize::from(self.channel_max) {
                        let err = Error::connection(
                            ReplyCode::NotAllowed,
                            format!(
                                "number of channels opened ({}) has reached the negotiated channel_max ({})",
                                self.channels.len(),
                                self.channel_max
                            ),
                        )
                        .in_method(ChannelOpen::CLASS_ID, ChannelOpen::METHOD_ID);
                        self.fail(0, err, now);
                        return;
                    }
                    if let Some(n) = self.user_channel_limit_reached() {
                        // A connection error naming no method (class and
                        // method 0), as RabbitMQ's reader raises it.
                        let err = Error::connection(
                            ReplyCode::NotAllowed,
                            format!(
                                "number of channels opened for user '{}' has reached the maximum allowed user limit of ({n})",
                                self.user
                            ),
                        );
                        self.fail(0, err, now);
                        return;
                    }
                    let ch = Channel::new(channel, self.broker.config.limits.max_message_size);
                    self.entry.add_channel(Arc::clone(&ch.entry));
                    self.channels.insert(channel, ch);
                    self.send(
                        channel,
                        warren_codec::ChannelOpenOk {
                            channel_id: LongStr::default(),
                        },
                    );
                    tracing::debug!(conn = self.id, channel, "channel open");
                }
                _ => {
                    let err = Error::connection(ReplyCode::ChannelError, "expected 'channel.open'")
                        .in_method(class_id, method_id);
                    self.fail(0, err, now);
                }
            }
            return;
        }
        // Borrowed, not cloned: these Arcs are shared by every connection
        // of the vhost, and touching their counts on every frame costs.
        if self.vhost.is_none() || self.perms.is_none() {
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.is_closing() {
            // After our channel.close only close/close-ok count.
            match frame {
                Frame::Method {
                    method: Method::ChannelCloseOk(_),
                    ..
                } => {
                    self.channels.remove(&channel);
                    self.entry.remove_channel(channel);
                }
                // Our close crossed theirs: answer it, and keep the channel
                // (closing) until the close-ok to ours arrives, as RabbitMQ
                // does; a close-ok for a channel we had forgotten would
                // otherwise close the connection with 504.
                Frame::Method {
                    method: Method::ChannelClose(_),
                    ..
                } => {
                    self.send(channel, warren_codec::ChannelCloseOk);
                }
                _ => {}
            }
            return;
        }
        if let Frame::Method {
            method: Method::ChannelOpen(_),
            ..
        } = frame
        {
            let err = Error::connection(ReplyCode::ChannelError, "second 'channel.open' seen")
                .in_method(ChannelOpen::CLASS_ID, ChannelOpen::METHOD_ID);
            self.fail(0, err, now);
            return;
        }
        if let Frame::Method {
            method: Method::ChannelClose(_),
            ..
        } = frame
        {
            if let Some(vhost) = &self.vhost {
                ch.release(self.id, vhost);
            }
            self.channels.remove(&channel);
            self.entry.remove_channel(channel);
            self.send(channel, warren_codec::ChannelCloseOk);
            return;
        }
        if let Frame::Method {
            method: Method::BasicPublish(_),
            ..
        } = frame
        {
            self.published = true;
        }
        if let Frame::Method {
            method: Method::BasicCancel(_),
            ..
        } = frame
        {
            // Deliveries dispatched before the cancel go out before cancel-ok.
            self.handle_events(now);
        }
        let deletes_queue = matches!(
            frame,
            Frame::Method {
                method: Method::QueueDelete(_),
                ..
            }
        );
        let gets = matches!(
            frame,
            Frame::Method {
                method: Method::BasicGet(_),
                ..
            }
        );
        let mark = self.out.len();
        self.refresh_permissions();
        let (Some(vhost), Some(perms)) = (&self.vhost, &self.perms) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let was_empty = gets && !ch.has_unacked();
        let mut ctx = Ctx {
            broker: &self.broker,
            vhost,
            conn: self.id,
            mailbox: &self.mailbox,
            out: &mut self.out,
            frame_max: self.frame_max,
            user: &self.user,
            exclusive_queues: &mut self.exclusive_queues,
            now,
            perms,
        };
        // A publish changes nothing the channel's entry shows (its count is
        // kept by the publish itself): no stores on that path.
        let is_method = matches!(
            frame,
            Frame::Method { ref method, .. } if !matches!(method, Method::BasicPublish(_))
        );
        let res = ch.handle_frame(&mut ctx, frame);
        if is_method {
            ch.sync_entry();
        }
        if was_empty || (gets && self.ack_check_at.is_none()) {
            arm_ack_check(
                &mut self.ack_check_at,
                ch,
                self.broker.config.limits.consumer_timeout,
                now,
            );
        }
        if res.is_ok() && deletes_queue && self.out.len() > mark {
            // The deleted queue's consumers on this connection hear
            // basic.cancel before the delete-ok, as from RabbitMQ: a client
            // that checks its consumers after delete-ok finds them gone.
            let reply = self.out.split_off(mark);
            self.handle_events(now);
            self.out.unsplit(reply);
            return;
        }
        if let Err(err) = res {
            let err = err.in_method(class_id, method_id);
            if let Error::Connection(ConnectionError(e)) = &err {
                tracing::warn!(conn = self.id, channel, reply_code = e.code.code(), text = %e.text, "connection error");
            }
            self.fail(channel, err, now);
        }
    }

    fn handle_channel0(&mut self, method: Method, now: Instant) {
        match method {
            Method::ConnectionClose(close) => {
                self.closed_by_client(&close, now);
                tracing::info!(conn = self.id, peer = %self.info.peer, "connection closed by client");
            }
            Method::ConnectionCloseOk(_) => self.finish(CloseReason {
                initiator: Initiator::Client,
                code: None,
                text: "close-ok without a close".to_string(),
            }),
            Method::ConnectionUpdateSecret(_) => self.send(0, ConnectionUpdateSecretOk),
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => {}
            m => {
                let (c, mid) = (m.class_id(), m.method_id());
                let text = if c == warren_codec::CLASS_CONNECTION {
                    format!("unexpected method {} in connection state running", m.name())
                } else {
                    "unexpected method in connection state running".to_string()
                };
                let code = if c == warren_codec::CLASS_CONNECTION {
                    ReplyCode::CommandInvalid
                } else {
                    ReplyCode::ChannelError
                };
                self.fail(0, Error::connection(code, text).in_method(c, mid), now);
            }
        }
    }

    fn flush_confirms(&mut self) {
        for (id, ch) in self.channels.iter_mut() {
            ch.flush_confirms(&mut self.out, *id);
        }
    }
}

/// A channel's oldest unacknowledged delivery may be new (the channel had
/// none, or no look is scheduled): the next look is no later than its
/// deadline, nor than [`ACK_CHECK_MAX`] from now.
fn arm_ack_check(
    check_at: &mut Option<Instant>,
    ch: &Channel,
    default: Option<Duration>,
    now: Instant,
) {
    let at = ch
        .ack_deadline(default)
        .map_or(now + ACK_CHECK_MAX, |(at, _, _)| {
            at.min(now + ACK_CHECK_MAX)
        });
    *check_at = Some(check_at.map_or(at, |t| t.min(at)));
}

fn client_caps(props: &FieldTable) -> ClientCaps {
    let mut caps = ClientCaps::default();
    if let Some(FieldValue::Table(t)) = props.get("capabilities") {
        let on = |k: &str| t.get(k).and_then(FieldValue::as_bool).unwrap_or(false);
        caps.consumer_cancel_notify = on("consumer_cancel_notify");
        caps.authentication_failure_close = on("authentication_failure_close");
        caps.connection_blocked = on("connection.blocked");
    }
    caps
}

/// SASL PLAIN: `[authzid] \0 authcid \0 password`.
fn parse_plain(resp: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = resp.splitn(3, |&b| b == 0);
    let _authzid = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    Some((String::from_utf8(user.to_vec()).ok()?, pass.to_vec()))
}

/// AMQPLAIN: a field table without its length prefix, with `LOGIN` and
/// `PASSWORD` entries.
fn parse_amqplain(resp: &Bytes) -> Option<(String, Vec<u8>)> {
    let mut framed = BytesMut::with_capacity(resp.len() + 4);
    framed.put_u32(u32::try_from(resp.len()).ok()?);
    framed.put_slice(resp);
    let framed = framed.freeze();
    let mut r = warren_codec::Reader::new(&framed);
    let t = r.table().ok()?;
    let text = |k: &str| match t.get(k) {
        Some(FieldValue::LongStr(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    Some((String::from_utf8(text("LOGIN")?).ok()?, text("PASSWORD")?))
}
