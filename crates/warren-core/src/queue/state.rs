//! A queue's state as a deterministic state machine: commands in, effects
//! out, time as a parameter.
//!
//! [`QueueState`] holds ready messages by priority, consumers (by id:
//! connection, channel and tag) with their credit, single-active-consumer,
//! TTL and expiry, length limits and overflow, and what dead-lettering and
//! paging are waiting for. It holds no lock, no connection and no store:
//! each command appends what must follow to an [`Effects`] buffer
//! (deliveries by consumer index, store ops in order, dead letters with
//! their reason, consumers to cancel, publishers to hold back or let go).
//! Paged-out messages it needs are asked for through
//! [`QueueState::wants_load`] and [`QueueState::take_load_request`], and
//! their reads come back with [`QueueState::loaded`]. The same commands at
//! the same times give the same effects. [`super::Queue`] is the thin
//! executor around it.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use warren_codec::ShortStr;

use super::dedup::{DedupKey, DedupSet};
use super::{
    COMPACT_BODY, COMPACT_FROM, ConnId, ConsumeRefused, Credit, DeathReason, FLOW_ACTIVE,
    FLOW_HIGH, FLOW_LOW, NO_ACK_WINDOW, Overflow, QueueArgs, READ_AHEAD, RESIDENT_LIMIT, Recovered,
};
use crate::message::{Gauge, Message, Packed, QueuedMessage};
use crate::persist::{EnqueueMeta, PersistOp};

/// A consumer as the state machine knows it: ids and counters, no
/// connection.
#[derive(Debug)]
pub(crate) struct ConsumerState {
    pub(crate) tag: ShortStr,
    pub(crate) conn: ConnId,
    pub(crate) channel: u16,
    pub(crate) ack: bool,
    pub(crate) prefetch: u32,
    /// The channel's shared window (`basic.qos global=true`): a counter
    /// shared with the channel's other consumers, not a model object.
    pub(crate) credit: Arc<Credit>,
    pub(crate) exclusive: bool,
    pub(crate) priority: i64,
    /// For a no-ack consumer: deliveries its connection has not written
    /// out yet.
    pub(crate) in_flight: u32,
    /// Sequence numbers delivered to this consumer and not yet settled
    /// (acknowledging consumers only), oldest first.
    pub(crate) unacked: VecDeque<u64>,
}

/// Deliveries awaiting settlement on a channel that no live consumer of
/// this queue owns: `basic.get` with ack, and those of consumers cancelled
/// before their messages were settled.
#[derive(Debug)]
struct Held {
    conn: ConnId,
    channel: u16,
    seqs: VecDeque<u64>,
}

/// Removes `seq` from a list of unsettled deliveries, which are mostly
/// settled in the order they went out.
fn forget(seqs: &mut VecDeque<u64>, seq: u64) -> bool {
    if seqs.front() == Some(&seq) {
        seqs.pop_front();
        return true;
    }
    match seqs.iter().position(|&s| s == seq) {
        Some(i) => {
            seqs.remove(i);
            true
        }
        None => false,
    }
}

impl ConsumerState {
    fn is(&self, conn: ConnId, channel: u16, tag: &ShortStr) -> bool {
        self.conn == conn && self.channel == channel && &self.tag == tag
    }

    fn has_room(&self) -> bool {
        if self.ack {
            self.prefetch == 0 || self.unacked.len() < self.prefetch as usize
        } else {
            // No-ack deliveries count until their connection has written
            // them out, so a slow no-ack consumer holds back the queue
            // instead of piling messages up in its connection.
            self.in_flight < NO_ACK_WINDOW
        }
    }
}

/// What a command asks to be done, in order, by whoever runs the machine.
/// The buffers are reused from command to command (`clear` keeps their
/// capacity), so the publish and deliver path allocates nothing here.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Store ops, in the order the store must see them.
    pub(crate) persist: Vec<PersistOp>,
    /// Messages for the consumer at an index of [`QueueState::consumers`]
    /// as it is once the command is done.
    pub(crate) deliver: Vec<(usize, QueuedMessage)>,
    /// Messages that died, with why.
    pub(crate) dead: Vec<(QueuedMessage, DeathReason)>,
    /// Consumers removed by a delete, to be told (`basic.cancel`): their
    /// index before the delete, channel and tag.
    pub(crate) cancel: Vec<(usize, u16, ShortStr)>,
    /// Hold the publishing connection of this command back.
    pub(crate) throttle: bool,
    /// Let every held-back publisher go.
    pub(crate) release_throttled: bool,
}

impl Effects {
    pub(crate) fn clear(&mut self) {
        self.persist.clear();
        self.deliver.clear();
        self.dead.clear();
        self.cancel.clear();
        self.throttle = false;
        self.release_throttled = false;
    }
}

/// A ready message's content: in memory, or only in the store.
#[derive(Debug)]
pub(crate) enum Payload {
    Resident(Arc<Message>),
    /// A small message of a long backlog, in one allocation (unstored:
    /// a stored one there is paged out instead).
    Packed(Packed),
    Paged {
        id: u64,
        bytes: u32,
        priority: u8,
    },
}

/// A deadline in 8 bytes, where an `Option<Instant>` takes 16 and every
/// queue entry has one: nanoseconds after a reference instant, plus one,
/// 0 for none. The reference lies 2^32 seconds (136 years) before the
/// first deadline the process converts, so any instant a clock passes in
/// (a fake one in tests too) fits the 584 years a `u64` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Deadline(u64);

static REFERENCE: OnceLock<Instant> = OnceLock::new();

impl Deadline {
    pub(crate) fn new(at: Option<Instant>) -> Deadline {
        let Some(at) = at else {
            return Deadline(0);
        };
        let base =
            *REFERENCE.get_or_init(|| at.checked_sub(Duration::from_secs(1 << 32)).unwrap_or(at));
        let nanos = at.saturating_duration_since(base).as_nanos();
        Deadline(
            u64::try_from(nanos)
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1),
        )
    }

    pub(crate) fn get(self) -> Option<Instant> {
        let nanos = self.0.checked_sub(1)?;
        REFERENCE.get().map(|b| *b + Duration::from_nanos(nanos))
    }

    pub(crate) fn is_some(self) -> bool {
        self.0 != 0
    }
}

/// One ready message as the queue keeps it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) payload: Payload,
    pub(crate) redelivered: bool,
    pub(crate) expires_at: Deadline,
    /// Returns after reaching a client (see [`QueuedMessage`]).
    pub(crate) delivery_count: u32,
}

impl Entry {
    pub(crate) fn is_paged(&self) -> bool {
        matches!(self.payload, Payload::Paged { .. })
    }

    fn bytes(&self) -> u64 {
        match &self.payload {
            Payload::Resident(m) => m.body.len() as u64,
            Payload::Packed(p) => p.body_len() as u64,
            Payload::Paged { bytes, .. } => u64::from(*bytes),
        }
    }

    fn priority(&self) -> u8 {
        match &self.payload {
            Payload::Resident(m) => m.properties.priority.unwrap_or(0),
            Payload::Packed(p) => p.priority(),
            Payload::Paged { priority, .. } => *priority,
        }
    }

    pub(crate) fn store_id(&self) -> Option<u64> {
        match &self.payload {
            Payload::Resident(m) => m.store_id,
            Payload::Packed(_) => None,
            Payload::Paged { id, .. } => Some(*id),
        }
    }

    /// An entry in memory as a delivery (a packed one unpacked, its body
    /// counted in `gauge` again); `None` for a paged one (read it back
    /// first).
    fn resident(self, gauge: Option<&'static Gauge>) -> Option<QueuedMessage> {
        let message = match self.payload {
            Payload::Resident(message) => message,
            Payload::Packed(p) => {
                let mut m = p.unpack();
                if let Some(g) = gauge {
                    g.track(&mut m);
                }
                Arc::new(m)
            }
            Payload::Paged { .. } => return None,
        };
        Some(QueuedMessage {
            seq: self.seq,
            message,
            redelivered: self.redelivered,
            expires_at: self.expires_at.get(),
            delivery_count: self.delivery_count,
        })
    }
}

/// A level's deque is shrunk when it holds a quarter of its capacity and
/// that is above this many entries.
const SHRINK_ABOVE: usize = 1 << 16;

/// Ready messages, one FIFO per priority level (one level for an ordinary
/// queue), each ordered by sequence number.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    levels: Vec<VecDeque<Entry>>,
    pub(crate) len: usize,
    pub(crate) bytes: u64,
}

impl Ready {
    fn new(max_priority: u8) -> Self {
        Ready {
            levels: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    fn level(&self, e: &Entry) -> usize {
        usize::from(e.priority()).min(self.levels.len() - 1)
    }

    fn push_back(&mut self, e: Entry) {
        self.len += 1;
        self.bytes += e.bytes();
        let l = self.level(&e);
        self.levels[l].push_back(e);
    }

    fn insert_by_seq(&mut self, e: Entry) {
        self.len += 1;
        self.bytes += e.bytes();
        let l = self.level(&e);
        let q = &mut self.levels[l];
        let pos = q.partition_point(|r| r.seq < e.seq);
        q.insert(pos, e);
    }

    fn front(&self) -> Option<&Entry> {
        self.levels.iter().rev().find_map(|q| q.front())
    }

    fn taken(&mut self, e: Entry) -> Entry {
        self.len -= 1;
        self.bytes -= e.bytes();
        e
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let q = self.levels.iter_mut().rev().find(|q| !q.is_empty())?;
        let e = q.pop_front()?;
        // A drained backlog gives its memory back: the deque keeps the
        // capacity of its longest moment otherwise (ten million entries
        // are some 800 MB).
        if q.capacity() > SHRINK_ABOVE && q.len() * 4 < q.capacity() {
            q.shrink_to(q.len() * 2);
        }
        Some(self.taken(e))
    }

    /// The oldest message (lowest sequence number) across levels, for
    /// drop-head: length limits drop by age, not by priority.
    fn pop_oldest(&mut self) -> Option<Entry> {
        let level = (0..self.levels.len())
            .filter(|&l| !self.levels[l].is_empty())
            .min_by_key(|&l| self.levels[l].front().map_or(u64::MAX, |m| m.seq))?;
        let e = self.levels[level].pop_front()?;
        Some(self.taken(e))
    }

    /// The first `n` paged-out messages in delivery order (highest
    /// priority first), as (seq, store id), stopping at the first resident
    /// one of each level.
    fn paged_front(&self, n: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for q in self.levels.iter().rev() {
            for e in q.iter().take(n - out.len()) {
                match e.payload {
                    Payload::Paged { id, .. } => out.push((e.seq, id)),
                    Payload::Resident(_) | Payload::Packed(_) => break,
                }
            }
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// The entry at `seq`, wherever its priority put it. Entries read
    /// back are at the front: the search starts with the first
    /// [`READ_AHEAD`] entries of each level (in cache), before a search of
    /// a long backlog's whole deque (a cache miss a step).
    fn find_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        self.levels.iter_mut().find_map(|q| {
            let near = q.len().min(READ_AHEAD);
            let i = match q.get(near.saturating_sub(1)) {
                Some(last) if last.seq >= seq => {
                    let (mut lo, mut hi) = (0, near);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if q[mid].seq < seq {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                }
                _ => q.partition_point(|e| e.seq < seq),
            };
            q.get_mut(i).filter(|e| e.seq == seq)
        })
    }

    /// Removes the entry at `seq`.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.levels.iter_mut().find_map(|q| {
            let i = q.partition_point(|e| e.seq < seq);
            if q.get(i).is_some_and(|e| e.seq == seq) {
                q.remove(i)
            } else {
                None
            }
        })?;
        Some(self.taken(e))
    }

    /// A paged entry read back: resident from now on, its byte count
    /// corrected (a recovered record's size may not have been known).
    fn page_in(&mut self, seq: u64, message: Arc<Message>) -> bool {
        let Some(e) = self.find_mut(seq) else {
            return false;
        };
        if !e.is_paged() {
            return false;
        }
        let before = e.bytes();
        e.payload = Payload::Resident(message);
        let after = e.bytes();
        self.bytes = self.bytes - before + after;
        true
    }

    fn drain(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.bytes = 0;
        self.levels.iter_mut().flat_map(|q| q.drain(..)).collect()
    }
}

/// The result of reading back one paged-out message.
#[derive(Debug)]
pub(crate) enum Read {
    /// Here it is.
    Found(Arc<Message>),
    /// The store proves it does not have it.
    Absent,
    /// The read failed; the message may well be there.
    Failed,
}

/// Paged-out messages to read: (seq, store id) at the head, and entries
/// that died while paged out.
#[derive(Debug, Default)]
pub(crate) struct LoadRequest {
    pub(crate) head: Vec<(u64, u64)>,
    pub(crate) dying: Vec<(Entry, DeathReason)>,
}

/// Message counts since the queue was declared (RabbitMQ's
/// `message_stats`), kept under the queue's lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages accepted.
    pub publish: u64,
    /// Delivered to acknowledging consumers.
    pub deliver: u64,
    /// Delivered to no-ack consumers.
    pub deliver_no_ack: u64,
    /// Taken by `basic.get` with ack.
    pub get: u64,
    /// Taken by `basic.get` with no-ack.
    pub get_no_ack: u64,
    /// Delivered again after a requeue.
    pub redeliver: u64,
    /// Acknowledged.
    pub ack: u64,
}

/// A queue's state. See the module documentation.
#[derive(Debug)]
pub(crate) struct QueueState {
    args: QueueArgs,
    auto_delete: bool,
    /// The queue's store id, when it is durable on a broker with a store:
    /// only then are store ops produced.
    store_id: Option<u64>,
    pub(crate) ready: Ready,
    next_seq: u64,
    pub(crate) consumers: Vec<ConsumerState>,
    /// Unsettled deliveries no live consumer owns, by channel.
    held: Vec<Held>,
    /// Index to start the next round-robin scan at.
    cursor: usize,
    /// Set once a consumer has ever subscribed.
    had_consumer: bool,
    /// The latest time any command carried.
    pub(crate) clock: Option<Instant>,
    /// Last declare, get or consumer activity, for `x-expires`.
    last_used: Option<Instant>,
    /// When a consumer last got a message (is the queue being drained?).
    last_delivery: Option<Instant>,
    /// Publishing connections held back while this queue is congested.
    pub(crate) throttled: usize,
    /// Paged-out messages that died and must be read before they can be
    /// dead-lettered.
    dead_paged: Vec<(Entry, DeathReason)>,
    /// The memory gauge of the messages it packed, to count them again
    /// when they are unpacked.
    gauge: Option<&'static Gauge>,
    /// Dispatch stopped at a paged-out message: read the head back.
    pub(crate) need_load: bool,
    /// A read failed: only the broker's tick tries again (not every op).
    pub(crate) retry_load: bool,
    /// Reads from the store that failed (the messages stayed queued).
    pub(crate) load_failures: u64,
    /// Deleted: takes nothing any more.
    deleted: bool,
    /// A quorum queue: its messages carry `x-delivery-count` and are held
    /// to `x-delivery-limit`.
    pub(crate) quorum: bool,
    /// Message counts for the management API.
    pub(crate) counters: Counters,
    /// With `x-message-deduplication`, the ids of the messages held;
    /// `None` (and never looked at) otherwise.
    dedup: Option<Box<DedupSet>>,
}

impl QueueState {
    pub(crate) fn new(args: QueueArgs, auto_delete: bool, store_id: Option<u64>) -> Self {
        QueueState {
            dedup: args.deduplicate.then(Box::default),
            ready: Ready::new(args.max_priority),
            args,
            auto_delete,
            store_id,
            next_seq: 0,
            consumers: Vec::new(),
            held: Vec::new(),
            cursor: 0,
            had_consumer: false,
            clock: None,
            last_used: None,
            last_delivery: None,
            throttled: 0,
            dead_paged: Vec::new(),
            gauge: None,
            need_load: false,
            retry_load: false,
            load_failures: 0,
            deleted: false,
            quorum: false,
            counters: Counters::default(),
        }
    }

    fn persist(&self, fx: &mut Effects, op: impl FnOnce(u64) -> PersistOp) {
        if let Some(q) = self.store_id {
            fx.persist.push(op(q));
        }
    }

    fn dequeue_op(&self, fx: &mut Effects, seq: u64, msg: Option<u64>) {
        if let Some(msg) = msg {
            self.persist(fx, |queue| PersistOp::Dequeue { queue, seq, msg });
        }
    }

    /// Removes an entry for good (expired, dropped): tells the store and
    /// hands it out to be dead-lettered. A paged-out one is read back
    /// first; it leaves the store only once it has been.
    fn kill(&mut self, fx: &mut Effects, e: Entry, reason: DeathReason) {
        self.forget_id(e.seq);
        if self.args.dead_letter_exchange.is_none() {
            self.dequeue_op(fx, e.seq, e.store_id());
            return;
        }
        if e.is_paged() {
            self.dead_paged.push((e, reason));
            return;
        }
        self.dequeue_op(fx, e.seq, e.store_id());
        if let Some(m) = e.resident(self.gauge) {
            fx.dead.push((m, reason));
        }
    }

    /// Whether some ready message has a deadline (recovered ones keep
    /// theirs).
    pub(crate) fn any_expiry(&self) -> bool {
        self.ready
            .levels
            .iter()
            .flatten()
            .any(|e| e.expires_at.is_some())
    }

    /// The queue-wide message TTL in effect.
    pub(crate) fn message_ttl(&self) -> Option<std::time::Duration> {
        self.args.message_ttl
    }

    /// New behaviour arguments (a policy changed): limits lowered below
    /// what the queue holds drop the oldest at once, as a declare with them
    /// would have.
    pub(crate) fn set_args(&mut self, fx: &mut Effects, args: QueueArgs) {
        if args.deduplicate != self.dedup.is_some() {
            self.dedup = args.deduplicate.then(Box::default);
        }
        self.args = args;
        if self.args.has_length_limit() && self.args.overflow == Overflow::DropHead {
            while self.over_limit() {
                let Some(old) = self.ready.pop_oldest() else {
                    break;
                };
                self.kill(fx, old, DeathReason::Maxlen);
            }
        }
        self.dispatch(fx);
    }

    /// Marks the queue used (declare, get), for `x-expires`.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.clock = Some(now);
        self.last_used = Some(now);
    }

    /// Messages the store held at start-up, in order, bodies not read.
    pub(crate) fn recover(&mut self, entries: impl IntoIterator<Item = Recovered>) {
        let entries = entries.into_iter();
        // A backlog of millions: room for all of it at once, not grown into
        // by doubling (which holds both copies at the switch).
        if let [level] = &mut self.ready.levels[..] {
            level.reserve(entries.size_hint().0);
        }
        for r in entries {
            self.next_seq = self.next_seq.max(r.seq + 1);
            self.ready.push_back(Entry {
                seq: r.seq,
                payload: Payload::Paged {
                    id: r.msg,
                    bytes: r.bytes,
                    priority: r.priority,
                },
                redelivered: r.delivered,
                expires_at: Deadline::new(r.expires_at),
                // Every delivery before the restart that was not acked
                // came back (the last one by the restart).
                delivery_count: r.delivery_count.max(u32::from(r.delivered)),
            });
        }
    }

    /// The ids of recovered messages (a deduplicating queue), by sequence
    /// number.
    pub(crate) fn remember_ids(&mut self, ids: Vec<(u64, DedupKey)>) {
        if let Some(d) = &mut self.dedup {
            for (seq, key) in ids {
                d.insert(key, seq, None);
            }
        }
    }

    /// The message at `seq` left the queue: its id (if deduplicating) is
    /// free again.
    fn forget_id(&mut self, seq: u64) {
        if let Some(d) = &mut self.dedup {
            d.forget(seq);
        }
    }

    /// `publish`: appends a message (with its time to live, if any) and
    /// delivers what consumers can take. False if a `reject-publish` limit
    /// refused it. `publisher`: the command came from a publishing
    /// connection, which a congested queue holds back.
    pub(crate) fn publish(
        &mut self,
        fx: &mut Effects,
        message: Arc<Message>,
        ttl: Option<std::time::Duration>,
        now: Instant,
        publisher: bool,
    ) -> bool {
        // Routed just before the queue was deleted: it goes with the queue.
        if self.deleted {
            return true;
        }
        self.clock = Some(now);
        if self.last_used.is_none() {
            self.last_used = Some(now);
        }
        let seq = self.next_seq;
        let stored = message.store_id.filter(|_| self.store_id.is_some());
        let bytes = message.body.len() as u64;
        let refused = self.args.has_length_limit()
            && self.args.overflow != Overflow::DropHead
            && (self
                .args
                .max_length
                .is_some_and(|n| self.ready.len as u64 >= n)
                || self
                    .args
                    .max_length_bytes
                    .is_some_and(|n| self.ready.bytes + bytes > n));
        if refused {
            if self.args.overflow == Overflow::RejectPublishDlx
                && self.args.dead_letter_exchange.is_some()
            {
                let m = QueuedMessage {
                    seq,
                    message,
                    redelivered: false,
                    expires_at: None,
                    delivery_count: 0,
                };
                fx.dead.push((m, DeathReason::Maxlen));
            }
            return false;
        }
        // `x-message-deduplication`: a message whose id is in the queue is
        // refused (a publisher in confirm mode gets `basic.nack`, as with
        // the plugin on RabbitMQ 3.8 and later).
        let id = match &self.dedup {
            None => None,
            Some(d) => match DedupKey::from_headers(message.properties.headers.as_ref()) {
                Some(key) if d.contains(&key, now) => return false,
                key => key,
            },
        };
        self.next_seq += 1;
        self.counters.publish += 1;
        if let Some(msg) = stored {
            let meta = EnqueueMeta {
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                priority: message.properties.priority.unwrap_or(0),
                ttl_ms: ttl.map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
            };
            self.persist(fx, |queue| PersistOp::Enqueue {
                queue,
                seq,
                msg,
                meta,
            });
        }
        let payload = match stored {
            Some(id) if self.ready.len >= RESIDENT_LIMIT => Payload::Paged {
                id,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                priority: message.properties.priority.unwrap_or(0),
            },
            _ => self.compact(message),
        };
        self.ready.push_back(Entry {
            seq,
            payload,
            redelivered: false,
            expires_at: Deadline::new(ttl.map(|t| now + t)),
            delivery_count: 0,
        });
        if let (Some(d), Some(key)) = (&mut self.dedup, id) {
            d.insert(key, seq, ttl.map(|t| now + t));
        }
        if self.args.has_length_limit() {
            while self.over_limit() {
                let Some(old) = self.ready.pop_oldest() else {
                    break;
                };
                self.kill(fx, old, DeathReason::Maxlen);
            }
        }
        self.dispatch(fx);
        if publisher && self.congested() {
            fx.throttle = true;
        }
        true
    }

    /// How a message that is not paged out is kept. In a backlog (beyond
    /// [`COMPACT_FROM`] ready messages) a small one that no other queue
    /// shares is packed into one allocation: it leaves the read buffer its
    /// body was a slice of (a 64 KiB buffer kept alive by every message
    /// in it) and the 160-byte shared message. A deduplicating queue keeps
    /// its messages as they are (it reads their headers as they leave).
    fn compact(&mut self, mut message: Arc<Message>) -> Payload {
        if self.ready.len >= COMPACT_FROM
            && message.body.len() <= COMPACT_BODY
            && self.dedup.is_none()
            && message.store_id.is_none()
            && let Some(m) = Arc::get_mut(&mut message)
            && let Some(packed) = Packed::pack(m)
        {
            if self.gauge.is_none() {
                self.gauge = m.gauge;
            }
            return Payload::Packed(packed);
        }
        Payload::Resident(message)
    }

    fn over_limit(&self) -> bool {
        self.args
            .max_length
            .is_some_and(|n| self.ready.len as u64 > n)
            || self
                .args
                .max_length_bytes
                .is_some_and(|n| self.ready.bytes > n)
    }

    /// `basic.consume`.
    pub(crate) fn add_consumer(
        &mut self,
        fx: &mut Effects,
        consumer: ConsumerState,
    ) -> Result<(), ConsumeRefused> {
        if self.deleted {
            return Err(ConsumeRefused::Deleted);
        }
        if self.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !self.consumers.is_empty())
        {
            return Err(ConsumeRefused::ExclusiveInUse);
        }
        self.had_consumer = true;
        self.consumers.push(consumer);
        self.dispatch(fx);
        Ok(())
    }

    /// `basic.cancel`, or the consumer's channel went away: the index it
    /// had, and whether an auto-delete queue just lost its last consumer.
    /// Does not dispatch: the caller drops the consumer's connection at
    /// that index first, then dispatches to the others.
    pub(crate) fn remove_consumer(
        &mut self,
        conn: ConnId,
        channel: u16,
        tag: &ShortStr,
    ) -> (Option<usize>, bool) {
        let index = self.consumers.iter().position(|c| c.is(conn, channel, tag));
        if let Some(i) = index {
            let gone = self.consumers.remove(i);
            // Its deliveries stay out until their channel settles them.
            self.hold(conn, channel, gone.unacked);
        }
        if self.cursor >= self.consumers.len() {
            self.cursor = 0;
        }
        if self.consumers.is_empty() {
            self.last_used = self.clock;
        }
        let auto_delete_now = index.is_some() && self.auto_delete && self.consumers.is_empty();
        (index, auto_delete_now)
    }

    /// Deliveries to one consumer (or to `basic.get` when `consumer` is
    /// `None`) are over: `settled` units of its prefetch are free again,
    /// `requeue` goes back in place, `acked` is done, `rejected` dies.
    /// What the queue keeps no reference to (the acked messages, and the
    /// rejected ones when there is no dead-letter exchange) stays with the
    /// caller, to be dropped once the queue's lock is released: freeing
    /// messages under it made publishers wait.
    #[allow(
        clippy::too_many_arguments,
        reason = "one command for every way a delivery ends"
    )]
    pub(crate) fn settle(
        &mut self,
        fx: &mut Effects,
        (conn, channel, consumer): (ConnId, u16, Option<&ShortStr>),
        settled: u32,
        requeue: impl IntoIterator<Item = QueuedMessage>,
        acked: &[QueuedMessage],
        rejected: &mut Vec<QueuedMessage>,
    ) {
        let owner =
            consumer.and_then(|tag| self.consumers.iter().position(|c| c.is(conn, channel, tag)));
        // An acknowledging consumer's window is its unacked deliveries,
        // freed below as they are found; `settled` counts a no-ack
        // consumer's written-out ones.
        if let Some(i) = owner
            && !self.consumers[i].ack
        {
            let c = &mut self.consumers[i];
            c.in_flight = c.in_flight.saturating_sub(settled);
        }
        // Once deleted, the store dropped everything this queue held.
        let live = !self.deleted;
        self.counters.ack += acked.len() as u64;
        if live {
            for m in acked.iter().chain(rejected.iter()) {
                self.untrack(owner, conn, channel, m.seq);
                self.dequeue_op(fx, m.seq, m.message.store_id);
                self.forget_id(m.seq);
            }
        }
        let mut any = false;
        if live {
            for m in requeue {
                self.untrack(owner, conn, channel, m.seq);
                // A quorum queue's message back more often than its limit
                // dies instead (RabbitMQ 3.10's rabbit_fifo: the count
                // grows on every return, and `count > limit` dead-letters).
                if self
                    .args
                    .delivery_limit
                    .is_some_and(|limit| u64::from(m.delivery_count) > limit)
                {
                    self.dequeue_op(fx, m.seq, m.message.store_id);
                    self.forget_id(m.seq);
                    if self.args.dead_letter_exchange.is_some() {
                        fx.dead.push((m, DeathReason::DeliveryLimit));
                    }
                    continue;
                }
                self.ready.insert_by_seq(Entry {
                    seq: m.seq,
                    payload: Payload::Resident(m.message),
                    redelivered: m.redelivered,
                    expires_at: Deadline::new(m.expires_at),
                    delivery_count: m.delivery_count,
                });
                any = true;
            }
        }
        if self.args.dead_letter_exchange.is_some() {
            fx.dead
                .extend(rejected.drain(..).map(|m| (m, DeathReason::Rejected)));
        }
        if any || settled > 0 {
            self.dispatch(fx);
        }
    }

    /// Drops expired messages from the head.
    fn expire_head(&mut self, fx: &mut Effects) {
        let Some(now) = self.clock else { return };
        while self
            .ready
            .front()
            .is_some_and(|m| m.expires_at.get().is_some_and(|e| e < now))
        {
            if let Some(e) = self.ready.pop_front() {
                self.kill(fx, e, DeathReason::Expired);
            }
        }
    }

    /// Delivers what the consumers have room for, stopping at a paged-out
    /// head (read it back, then dispatch again).
    pub(crate) fn dispatch(&mut self, fx: &mut Effects) {
        self.expire_head(fx);
        while self.ready.len > 0 && !self.consumers.is_empty() {
            if self.ready.front().is_some_and(Entry::is_paged) {
                if !self.retry_load {
                    self.need_load = true;
                }
                break;
            }
            let Some(i) = self.pick() else { break };
            let gauge = self.gauge;
            let Some(message) = self.ready.pop_front().and_then(|e| e.resident(gauge)) else {
                break;
            };
            if let Some(msg) = message.message.store_id {
                let (seq, ack) = (message.seq, self.consumers[i].ack);
                let count = message.delivery_count.saturating_add(1);
                self.persist(fx, |queue| {
                    if ack {
                        PersistOp::Delivered {
                            queue,
                            seq,
                            msg,
                            count,
                        }
                    } else {
                        PersistOp::Dequeue { queue, seq, msg }
                    }
                });
            }
            let c = &mut self.consumers[i];
            if c.ack {
                c.unacked.push_back(message.seq);
                self.counters.deliver += 1;
            } else {
                c.in_flight += 1;
                self.counters.deliver_no_ack += 1;
                if let Some(d) = &mut self.dedup {
                    d.forget(message.seq);
                }
            }
            self.counters.redeliver += u64::from(message.redelivered);
            fx.deliver.push((i, message));
            self.cursor = i + 1;
            self.last_delivery = self.clock;
            self.expire_head(fx);
        }
        if self.throttled > 0 && self.ready.len < FLOW_LOW {
            fx.release_throttled = true;
        }
    }

    /// Whether publishers should wait: many ready messages while consumers
    /// are taking them (a backlog nobody consumes does not hold anyone back).
    pub(crate) fn congested(&self) -> bool {
        self.ready.len >= FLOW_HIGH
            && !self.consumers.is_empty()
            && match (self.last_delivery, self.clock) {
                (Some(d), Some(now)) => now.saturating_duration_since(d) < FLOW_ACTIVE,
                _ => false,
            }
    }

    /// Picks the next consumer with room: the highest priority first,
    /// round-robin among equals; with single-active-consumer only the
    /// earliest. Takes channel credit for the one chosen.
    fn pick(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        let takes = |c: &ConsumerState| c.has_room() && (!c.ack || c.credit.try_acquire());
        if self.args.single_active_consumer {
            return takes(self.consumers.first()?).then_some(0);
        }
        let top = self
            .consumers
            .iter()
            .filter(|c| c.has_room())
            .map(|c| c.priority)
            .max()?;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let c = &self.consumers[i];
            if c.priority == top && takes(c) {
                return Some(i);
            }
        }
        // Every top-priority consumer is blocked by its channel's window;
        // try lower priorities in order.
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let c = &self.consumers[i];
            if c.priority < top && takes(c) {
                return Some(i);
            }
        }
        None
    }

    /// `basic.get`: the head message, with the number left; `None` when
    /// empty, or when the head is paged out (read it back and ask again).
    /// `ack`: the channel that must settle it, or `None` for no-ack.
    pub(crate) fn get(
        &mut self,
        fx: &mut Effects,
        now: Instant,
        ack: Option<(ConnId, u16)>,
    ) -> Option<QueuedMessage> {
        let no_ack = ack.is_none();
        self.touch(now);
        self.expire_head(fx);
        if self.ready.front().is_none_or(Entry::is_paged) {
            return None;
        }
        let gauge = self.gauge;
        let m = self.ready.pop_front().and_then(|e| e.resident(gauge))?;
        if let Some(msg) = m.message.store_id {
            let seq = m.seq;
            let count = m.delivery_count.saturating_add(1);
            self.persist(fx, |queue| {
                if no_ack {
                    PersistOp::Dequeue { queue, seq, msg }
                } else {
                    PersistOp::Delivered {
                        queue,
                        seq,
                        msg,
                        count,
                    }
                }
            });
        }
        if let Some((conn, channel)) = ack {
            self.hold(conn, channel, VecDeque::from([m.seq]));
            self.counters.get += 1;
        } else {
            self.counters.get_no_ack += 1;
            self.forget_id(m.seq);
        }
        self.counters.redeliver += u64::from(m.redelivered);
        Some(m)
    }

    /// Whether the head is paged out (`basic.get` must read it first).
    pub(crate) fn head_is_paged(&self) -> bool {
        self.ready.front().is_some_and(Entry::is_paged)
    }

    /// `queue.purge`: drops every ready message; how many.
    pub(crate) fn purge(&mut self, fx: &mut Effects) -> u32 {
        let entries = self.ready.drain();
        for e in &entries {
            self.dequeue_op(fx, e.seq, e.store_id());
        }
        // The plugin flushes the queue's whole cache: the ids of delivered,
        // unsettled messages go too.
        if let Some(d) = &mut self.dedup {
            d.clear();
        }
        u32::try_from(entries.len()).unwrap_or(u32::MAX)
    }

    /// The broker's tick: lets held-back publishers go once consumers
    /// stopped taking messages, retries failed reads, expires what is due.
    /// True if the queue has been unused for longer than `x-expires`.
    pub(crate) fn tick(&mut self, fx: &mut Effects, now: Instant, may_expire: bool) -> bool {
        self.clock = Some(now);
        if self.throttled > 0 && !self.congested() {
            fx.release_throttled = true;
        }
        if std::mem::take(&mut self.retry_load) || self.need_load {
            self.need_load = true;
            self.dispatch(fx);
            return false;
        }
        if !may_expire {
            return false;
        }
        self.dispatch(fx);
        self.args.expires.is_some_and(|ttl| {
            self.consumers.is_empty()
                && self
                    .last_used
                    .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
        })
    }

    /// `queue.delete`: drops every message and every consumer (each to be
    /// told). How many messages were ready.
    pub(crate) fn delete(&mut self, fx: &mut Effects, vhost: &str, name: &ShortStr) -> u32 {
        if self.deleted {
            return 0;
        }
        self.deleted = true;
        self.dedup = None;
        let n = u32::try_from(self.ready.drain().len()).unwrap_or(u32::MAX);
        self.dead_paged.clear();
        self.held.clear();
        if self.throttled > 0 {
            fx.release_throttled = true;
        }
        self.persist(fx, |id| PersistOp::DeleteQueue {
            vhost: vhost.to_string(),
            name: name.clone(),
            id,
        });
        for (i, c) in self.consumers.drain(..).enumerate() {
            fx.cancel.push((i, c.channel, c.tag));
        }
        n
    }

    /// What to read back now: the paged head (up to [`READ_AHEAD`]) and
    /// the paged entries that died.
    pub(crate) fn take_load_request(&mut self) -> LoadRequest {
        self.need_load = false;
        LoadRequest {
            head: self.ready.paged_front(READ_AHEAD),
            dying: std::mem::take(&mut self.dead_paged),
        }
    }

    /// The reads of a [`LoadRequest`] are back: messages found become
    /// resident, ones the store proves absent are skipped (and dequeued),
    /// failed ones stay queued and paged for the tick to retry. Dying
    /// entries read back are dead-lettered; failed ones go back in place.
    /// Dispatches if every read worked.
    pub(crate) fn loaded(
        &mut self,
        fx: &mut Effects,
        head: Vec<(u64, u64, Read)>,
        dying: Vec<(Entry, DeathReason, Read)>,
    ) -> Vec<(u64, &'static str)> {
        let mut failed = false;
        let mut problems = Vec::new();
        for (seq, id, read) in head {
            match read {
                Read::Found(m) => {
                    self.ready.page_in(seq, m);
                }
                Read::Absent => {
                    self.forget_id(seq);
                    if self.ready.remove(seq).is_some() {
                        problems.push((id, "stored message is missing; skipping it"));
                        self.dequeue_op(fx, seq, Some(id));
                    }
                }
                Read::Failed => {
                    failed = true;
                    self.load_failures += 1;
                    problems.push((id, "cannot read a stored message; it stays queued"));
                }
            }
        }
        for (e, why, read) in dying {
            match read {
                Read::Found(message) => {
                    let (seq, id) = (e.seq, e.store_id());
                    if !self.deleted {
                        self.dequeue_op(fx, seq, id);
                    }
                    fx.dead.push((
                        QueuedMessage {
                            seq,
                            message,
                            redelivered: e.redelivered,
                            expires_at: e.expires_at.get(),
                            delivery_count: e.delivery_count,
                        },
                        why,
                    ));
                }
                Read::Absent => {
                    if !self.deleted {
                        self.dequeue_op(fx, e.seq, e.store_id());
                    }
                }
                Read::Failed => {
                    // Back in its place: it dies (and is read) again later.
                    failed = true;
                    self.load_failures += 1;
                    problems.push((
                        e.store_id().unwrap_or(0),
                        "cannot read a dead-lettered message; it stays queued",
                    ));
                    if !self.deleted {
                        self.ready.insert_by_seq(e);
                    }
                }
            }
        }
        if failed {
            // Retried by the broker's tick, not in a loop.
            self.need_load = false;
            self.retry_load = true;
        } else {
            self.dispatch(fx);
        }
        problems
    }

    /// Whether reads are wanted.
    pub(crate) fn wants_load(&self) -> bool {
        self.need_load || !self.dead_paged.is_empty()
    }

    /// Ready messages.
    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len
    }

    /// Whether the queue is being consumed from.
    pub(crate) fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Number of consumers.
    pub(crate) fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Deliveries not yet acknowledged, rejected or requeued, whoever
    /// holds them (RabbitMQ's `messages_unacknowledged`).
    pub(crate) fn unacked_len(&self) -> usize {
        self.consumers
            .iter()
            .map(|c| c.unacked.len())
            .sum::<usize>()
            + self.held.iter().map(|h| h.seqs.len()).sum::<usize>()
    }

    /// Adds unsettled deliveries to what a channel holds without a live
    /// consumer.
    fn hold(&mut self, conn: ConnId, channel: u16, seqs: VecDeque<u64>) {
        if seqs.is_empty() {
            return;
        }
        match self
            .held
            .iter_mut()
            .find(|h| h.conn == conn && h.channel == channel)
        {
            Some(h) => h.seqs.extend(seqs),
            None => self.held.push(Held {
                conn,
                channel,
                seqs,
            }),
        }
    }

    /// A delivery is settled: forgets it from its consumer (`owner`, an
    /// index of `consumers`) or, failing that, from what its channel
    /// holds.
    fn untrack(&mut self, owner: Option<usize>, conn: ConnId, channel: u16, seq: u64) {
        if let Some(i) = owner
            && forget(&mut self.consumers[i].unacked, seq)
        {
            return;
        }
        if let Some(k) = self
            .held
            .iter()
            .position(|h| h.conn == conn && h.channel == channel)
        {
            forget(&mut self.held[k].seqs, seq);
            if self.held[k].seqs.is_empty() {
                self.held.swap_remove(k);
            }
        }
    }
}

impl QueueArgs {
    fn has_length_limit(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use warren_codec::{FieldTable, FieldValue};

    use super::*;
    use crate::message::Properties;

    fn state(args: FieldTable, stored: bool) -> QueueState {
        QueueState::new(QueueArgs::from_table(&args), false, stored.then_some(9))
    }

    fn message(body: &'static str, store_id: Option<u64>) -> Arc<Message> {
        let mut m = Message::new(
            ShortStr::empty(),
            "q".into(),
            Properties::default(),
            Bytes::from_static(body.as_bytes()),
        );
        m.store_id = store_id;
        Arc::new(m)
    }

    fn consumer(tag: &str, prefetch: u32) -> ConsumerState {
        ConsumerState {
            tag: tag.into(),
            conn: 1,
            channel: 1,
            ack: true,
            prefetch,
            credit: Arc::new(Credit::default()),
            exclusive: false,
            priority: 0,
            in_flight: 0,
            unacked: VecDeque::new(),
        }
    }

    /// The effects of one command, as text.
    fn show(fx: &mut Effects) -> Vec<String> {
        let mut out = Vec::new();
        for op in fx.persist.drain(..) {
            out.push(match op {
                PersistOp::Enqueue { seq, msg, .. } => format!("store enqueue {seq} m{msg}"),
                PersistOp::Delivered { seq, msg, .. } => format!("store delivered {seq} m{msg}"),
                PersistOp::Dequeue { seq, msg, .. } => format!("store dequeue {seq} m{msg}"),
                other => format!("store {other:?}"),
            });
        }
        for (i, m) in fx.deliver.drain(..) {
            out.push(format!(
                "deliver {i} {}",
                String::from_utf8_lossy(&m.message.body)
            ));
        }
        for (m, why) in fx.dead.drain(..) {
            out.push(format!(
                "dead {} {}",
                String::from_utf8_lossy(&m.message.body),
                why.as_str()
            ));
        }
        for (i, _, tag) in fx.cancel.drain(..) {
            out.push(format!("cancel {i} {tag}"));
        }
        if fx.throttle {
            out.push("throttle".into());
        }
        if fx.release_throttled {
            out.push("release".into());
        }
        fx.clear();
        out
    }

    #[test]
    fn commands_in_effects_out() {
        let t0 = Instant::now();
        let mut fx = Effects::default();
        let mut st = state(FieldTable::new(), true);
        assert!(st.publish(&mut fx, message("a", Some(1)), None, t0, true));
        assert_eq!(show(&mut fx), ["store enqueue 0 m1"]);
        st.add_consumer(&mut fx, consumer("c", 1)).unwrap();
        assert_eq!(show(&mut fx), ["store delivered 0 m1", "deliver 0 a"]);
        assert!(st.publish(&mut fx, message("b", Some(2)), None, t0, true));
        // Prefetch 1: stored, not delivered.
        assert_eq!(show(&mut fx), ["store enqueue 1 m2"]);
        let a = QueuedMessage {
            seq: 0,
            message: message("a", Some(1)),
            redelivered: false,
            expires_at: None,
            delivery_count: 0,
        };
        st.settle(
            &mut fx,
            (1, 1, Some(&"c".into())),
            1,
            [],
            &[a],
            &mut Vec::new(),
        );
        assert_eq!(
            show(&mut fx),
            ["store dequeue 0 m1", "store delivered 1 m2", "deliver 0 b"]
        );
        st.add_consumer(&mut fx, consumer("d", 0)).unwrap();
        assert_eq!(st.delete(&mut fx, "/", &"q".into()), 0);
        assert_eq!(
            show(&mut fx),
            [
                "store DeleteQueue { vhost: \"/\", name: \"q\", id: 9 }",
                "cancel 0 c",
                "cancel 1 d"
            ]
        );
        // Deleted: takes nothing, says nothing.
        assert!(st.publish(&mut fx, message("late", Some(3)), None, t0, true));
        assert!(show(&mut fx).is_empty());
    }

    #[test]
    fn time_is_a_parameter() {
        let args =
            FieldTable::new().with("x-dead-letter-exchange", FieldValue::LongStr("dlx".into()));
        let t0 = Instant::now();
        let mut fx = Effects::default();
        let mut st = state(args, false);
        let ttl = Some(Duration::from_millis(100));
        assert!(st.publish(&mut fx, message("a", None), ttl, t0, false));
        assert!(!st.tick(&mut fx, t0 + Duration::from_millis(100), true));
        assert!(
            show(&mut fx).is_empty(),
            "not yet: expiry is strictly after"
        );
        st.tick(&mut fx, t0 + Duration::from_millis(101), true);
        assert_eq!(show(&mut fx), ["dead a expired"]);
    }

    #[test]
    fn a_congested_queue_asks_to_hold_its_publisher_back() {
        let t0 = Instant::now();
        let mut fx = Effects::default();
        let mut st = state(FieldTable::new(), false);
        st.add_consumer(&mut fx, consumer("c", 1)).unwrap();
        for _ in 0..=FLOW_HIGH {
            st.publish(&mut fx, message("m", None), None, t0, true);
        }
        let shown = show(&mut fx);
        assert_eq!(
            shown.iter().filter(|s| *s == "throttle").count(),
            1,
            "{shown:?}"
        );
        // The executor holds one publisher; below FLOW_LOW it lets go.
        st.throttled = 1;
        assert_eq!(st.purge(&mut fx), u32::try_from(FLOW_HIGH).unwrap());
        st.dispatch(&mut fx);
        assert_eq!(show(&mut fx), ["release"]);
    }

    #[test]
    fn the_same_commands_give_the_same_effects() {
        let run = || {
            let t0 = Instant::now();
            let args = FieldTable::new()
                .with("x-max-length", FieldValue::I64(3))
                .with("x-dead-letter-exchange", FieldValue::LongStr("dlx".into()))
                .with("x-max-priority", FieldValue::I64(3));
            let mut st = state(args, true);
            let mut fx = Effects::default();
            let mut log = Vec::new();
            for i in 0..20u64 {
                let mut m = Message::new(
                    ShortStr::empty(),
                    "q".into(),
                    Properties::from(warren_codec::BasicProperties {
                        priority: Some((i % 4) as u8),
                        ..Default::default()
                    }),
                    Bytes::from(i.to_string()),
                );
                m.store_id = Some(i);
                st.publish(&mut fx, Arc::new(m), None, t0, i % 3 == 0);
                if i == 5 {
                    st.add_consumer(&mut fx, consumer("c", 2)).unwrap();
                }
                log.extend(show(&mut fx));
            }
            log
        };
        let (a, b) = (run(), run());
        assert!(a.len() > 20, "{a:?}");
        assert_eq!(a, b);
    }

    #[test]
    fn a_backlog_packs_small_messages_and_gives_them_back_whole() {
        let t0 = Instant::now();
        let gauge = Gauge::leak();
        let args = FieldTable::new().with("x-max-priority", FieldValue::I64(2));
        let mut st = state(args, false);
        let mut fx = Effects::default();
        let n = COMPACT_FROM as u64 + 50;
        let props = |i: u64| {
            Properties::from(warren_codec::BasicProperties {
                priority: Some((i % 3) as u8),
                message_id: i
                    .is_multiple_of(2)
                    .then(|| ShortStr::from(format!("id-{i}"))),
                headers: i
                    .is_multiple_of(5)
                    .then(|| FieldTable::new().with("n", FieldValue::I64(i as i64))),
                ..Default::default()
            })
        };
        let exchange = ShortStr::from("an-exchange-name-longer-than-thirty-bytes");
        let mut expected_bytes = 0;
        for i in 0..n {
            let body = Bytes::from(format!("body {i}"));
            expected_bytes += body.len() as u64;
            let mut m = Message::new(exchange.clone(), format!("rk.{i}").into(), props(i), body);
            gauge.track(&mut m);
            let ttl = (i == n - 1).then_some(Duration::from_secs(5));
            assert!(st.publish(&mut fx, Arc::new(m), ttl, t0, true));
        }
        let packed = st
            .ready
            .levels
            .iter()
            .flatten()
            .filter(|e| matches!(e.payload, Payload::Packed(_)))
            .count();
        // Roughly everything past the first COMPACT_FROM (spread over
        // three levels, each counted from the queue's length).
        assert!((40..=50).contains(&packed), "{packed} packed");
        assert_eq!(st.ready.bytes, expected_bytes);
        // Packed bodies are no longer counted; unpacked ones are again.
        let held = gauge.bytes();
        assert!(held < expected_bytes, "{held} of {expected_bytes}");

        let mut seen = Vec::new();
        while let Some(m) = st.get(&mut fx, t0, None) {
            let i: u64 = String::from_utf8_lossy(&m.message.body)[5..]
                .parse()
                .unwrap();
            assert_eq!(m.message.exchange, exchange);
            assert_eq!(m.message.routing_key, ShortStr::from(format!("rk.{i}")));
            assert_eq!(*m.message.properties, *props(i), "message {i}");
            assert_eq!(m.expires_at.is_some(), i == n - 1);
            if i == n - 1 {
                assert_eq!(m.expires_at, Some(t0 + Duration::from_secs(5)));
            }
            seen.push(i);
        }
        assert_eq!(seen.len() as u64, n);
        assert_eq!(st.ready.bytes, 0);
        // Highest priority first, in publish order within a priority.
        let key = |i: &u64| (std::cmp::Reverse(i % 3), *i);
        assert!(seen.is_sorted_by_key(key));
        drop(fx);
        assert_eq!(gauge.bytes(), 0);
    }

    #[test]
    fn packed_messages_expire_and_dead_letter_whole() {
        let t0 = Instant::now();
        let args = FieldTable::new()
            .with("x-message-ttl", FieldValue::I64(1000))
            .with("x-dead-letter-exchange", FieldValue::LongStr("dlx".into()));
        let mut st = state(args, false);
        let mut fx = Effects::default();
        let n = COMPACT_FROM + 3;
        for i in 0..n {
            let m = Message::new(
                ShortStr::empty(),
                "q".into(),
                Properties::default(),
                Bytes::from(i.to_string()),
            );
            st.publish(&mut fx, Arc::new(m), st.message_ttl(), t0, true);
        }
        assert!(matches!(
            st.ready.levels[0].back().unwrap().payload,
            Payload::Packed(_)
        ));
        st.tick(&mut fx, t0 + Duration::from_millis(1001), true);
        let dead: Vec<String> = fx
            .dead
            .iter()
            .map(|(m, why)| {
                format!(
                    "{} {}",
                    String::from_utf8_lossy(&m.message.body),
                    why.as_str()
                )
            })
            .collect();
        assert_eq!(dead.len(), n);
        assert_eq!(dead[n - 1], format!("{} expired", n - 1));
        assert_eq!(st.ready.len, 0);
    }

    #[test]
    fn entries_stay_small() {
        // 1M queued messages cost this each in the deque (S6).
        assert!(std::mem::size_of::<Entry>() <= 48);
        assert_eq!(std::mem::size_of::<Deadline>(), 8);
    }

    #[test]
    fn deadlines_keep_their_instant() {
        let t = Instant::now();
        for at in [
            t,
            t + Duration::from_nanos(1),
            t + Duration::from_secs(86_400 * 365),
        ] {
            assert_eq!(Deadline::new(Some(at)).get(), Some(at));
        }
        assert_eq!(Deadline::new(None).get(), None);
        assert!(!Deadline::new(None).is_some());
    }
}
