//! Queues: ready messages in order, consumers with credit, and dispatch.
//!
//! A queue's mutable state sits behind one short `std::sync::Mutex`. It is
//! taken by whichever task publishes to, acks on, or consumes from the
//! queue, never across an await, and the only lock taken while holding it is
//! a consumer connection's [`Mailbox`] (lock order: queue, then mailbox).
//!
//! Messages carry a per-queue sequence number, so a requeued message goes
//! back to its original place rather than to the tail.
//!
//! A message paged out to the store is read back with the lock released:
//! dispatch stops at a paged head and asks for a load, and the op that
//! found it (publish, ack, consume, the broker's tick) reads a window of
//! [`READ_AHEAD`] messages, re-takes the lock, puts them in place and
//! dispatches again. A failed read leaves the message queued (counted in
//! [`Queue::load_failures`], retried on the next op or tick); only a
//! message the store proves absent is skipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use warren_codec::{FieldTable, FieldValue, ShortStr};

use crate::mailbox::{Event, Mailbox};
use crate::message::Message;
use crate::persist::{LoadError, PersistOp, Persistence};

/// A queue with at least this many ready messages, while consumers are
/// taking them, holds its publishers back...
pub const FLOW_HIGH: usize = 10_000;
/// ...until it is down to this many.
pub const FLOW_LOW: usize = 5_000;
/// Consumers count as taking messages if one was delivered this recently.
pub const FLOW_ACTIVE: Duration = Duration::from_millis(200);

/// No-ack deliveries a consumer's connection may have received but not yet
/// written out.
pub const NO_ACK_WINDOW: u32 = 1000;

/// Ready messages beyond this many in one queue are kept on disk only (when
/// persistent and the queue durable), so a long backlog does not need RAM
/// for every body.
pub const RESIDENT_LIMIT: usize = 8192;

/// Beyond this many ready messages a queue holds a backlog: the small
/// bodies of messages it alone refers to are copied out of the read buffer
/// they arrived in. A body slice keeps its whole 64 KiB read buffer alive,
/// which for a backlog of 16-byte messages is some 60 bytes of framing
/// kept per message (S6's million messages: 365 -> ~310 MiB). Below it
/// nothing is copied: copying every small body cost latency in S1.
pub const COMPACT_FROM: usize = 16_384;

/// Bodies up to this size are compacted in a backlog.
pub const COMPACT_BODY: usize = 512;

/// Paged-out messages read back per load, with the lock released.
pub const READ_AHEAD: usize = 256;

/// Loads one op may run before it leaves the rest to the next op or tick.
const LOAD_ROUNDS: usize = 4;

/// What one read of a stored message gave.
type Loaded = Result<Option<Arc<Message>>, LoadError>;

/// Identifies a connection within the broker.
pub type ConnId = u64;

/// `x-queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// A classic queue.
    Classic,
    /// A quorum queue: on this single node, a durable classic queue with
    /// quorum's declare rules.
    Quorum,
}

impl QueueType {
    /// The name as clients send it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

pub use crate::message::{QueueRef, QueuedMessage};

/// A channel's shared prefetch window (`basic.qos global=true`), counted
/// across every queue the channel consumes from.
#[derive(Debug, Default)]
pub struct Credit {
    limit: AtomicU32,
    used: AtomicU32,
}

impl Credit {
    /// Sets the limit; 0 means unlimited.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Takes one unit if the window allows.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            self.used.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                if u < limit { Some(u + 1) } else { None }
            })
            .is_ok()
    }

    /// Returns `n` units.
    pub fn release(&self, n: u32) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Whether a limit is set.
    pub fn is_limited(&self) -> bool {
        self.limit.load(Ordering::Relaxed) != 0
    }
}

/// A consumer as the queue sees it.
#[derive(Debug)]
pub struct Consumer {
    /// Consumer tag, unique on its channel.
    pub tag: ShortStr,
    /// Owning connection.
    pub conn: ConnId,
    /// Channel on that connection.
    pub channel: u16,
    /// Where deliveries go.
    pub mailbox: Arc<Mailbox>,
    /// Whether deliveries must be acknowledged.
    pub ack: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u32,
    /// The channel's shared window.
    pub channel_credit: Arc<Credit>,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// `x-priority`: higher first.
    pub priority: i64,
    in_flight: u32,
}

impl Consumer {
    /// A consumer with nothing in flight.
    #[allow(
        clippy::too_many_arguments,
        reason = "a plain constructor of a plain record"
    )]
    pub fn new(
        tag: ShortStr,
        conn: ConnId,
        channel: u16,
        mailbox: Arc<Mailbox>,
        ack: bool,
        prefetch: u32,
        channel_credit: Arc<Credit>,
        exclusive: bool,
        priority: i64,
    ) -> Self {
        Consumer {
            tag,
            conn,
            channel,
            mailbox,
            ack,
            prefetch,
            channel_credit,
            exclusive,
            priority,
            in_flight: 0,
        }
    }

    fn is(&self, conn: ConnId, channel: u16, tag: &ShortStr) -> bool {
        self.conn == conn && self.channel == channel && &self.tag == tag
    }

    fn has_room(&self) -> bool {
        if self.ack {
            self.prefetch == 0 || self.in_flight < self.prefetch
        } else {
            // No-ack deliveries count until their connection has written
            // them out, so a slow no-ack consumer holds back the queue
            // instead of piling messages up in its connection.
            self.in_flight < NO_ACK_WINDOW
        }
    }
}

/// Why a consumer could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeRefused {
    /// The queue has an exclusive consumer, or an exclusive one was asked
    /// for while others exist.
    ExclusiveInUse,
    /// The queue was deleted meanwhile.
    Deleted,
}

/// Declared properties of a queue.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// The name.
    pub name: ShortStr,
    /// Survives restarts.
    pub durable: bool,
    /// Owning connection of an exclusive queue.
    pub exclusive_owner: Option<ConnId>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments, as given.
    pub arguments: FieldTable,
    /// `x-queue-type`.
    pub kind: QueueType,
    /// Id in the durable store (durable queues on a broker with a store).
    pub store_id: Option<u64>,
}

/// What to do when a length limit is reached (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest messages.
    DropHead,
    /// Refuse new messages: publishers in confirm mode get `basic.nack`.
    RejectPublish,
    /// Refuse new messages and dead-letter them.
    RejectPublishDlx,
}

/// The queue arguments that change behaviour, parsed once at declare time
/// (the vhost validated them first).
#[derive(Debug, Clone)]
pub struct QueueArgs {
    /// `x-message-ttl`.
    pub message_ttl: Option<Duration>,
    /// `x-expires`: delete after this long unused.
    pub expires: Option<Duration>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<ShortStr>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<ShortStr>,
    /// `x-max-priority` (0: not a priority queue).
    pub max_priority: u8,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
}

impl QueueArgs {
    /// Reads validated declare arguments.
    pub fn from_table(t: &FieldTable) -> Self {
        let int = |k: &str| {
            t.get(k)
                .and_then(FieldValue::as_i64)
                .and_then(|n| u64::try_from(n).ok())
        };
        let text = |k: &str| match t.get(k) {
            Some(FieldValue::LongStr(s)) => Some(ShortStr::truncating(&s.to_lossy())),
            _ => None,
        };
        QueueArgs {
            message_ttl: int("x-message-ttl").map(Duration::from_millis),
            expires: int("x-expires").map(Duration::from_millis),
            max_length: int("x-max-length"),
            max_length_bytes: int("x-max-length-bytes"),
            overflow: match text("x-overflow").as_ref().map(ShortStr::as_bytes) {
                Some(b"reject-publish") => Overflow::RejectPublish,
                Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dead_letter_exchange: text("x-dead-letter-exchange"),
            dead_letter_routing_key: text("x-dead-letter-routing-key"),
            max_priority: int("x-max-priority").map_or(0, |n| u8::try_from(n).unwrap_or(u8::MAX)),
            single_active_consumer: t
                .get("x-single-active-consumer")
                .and_then(FieldValue::as_bool)
                .unwrap_or(false),
        }
    }

    fn has_length_limit(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }
}

/// Why a message was dead-lettered (`x-death` `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeathReason {
    /// Rejected or nacked with `requeue=false`.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// A length limit pushed it out.
    Maxlen,
}

impl DeathReason {
    /// The name RabbitMQ puts in `x-death`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
        }
    }
}

/// A ready message's content: in memory, or only in the store.
#[derive(Debug)]
enum Payload {
    Resident(Arc<Message>),
    Paged { id: u64, bytes: u32, priority: u8 },
}

/// One ready message as the queue keeps it.
#[derive(Debug)]
struct Entry {
    seq: u64,
    payload: Payload,
    redelivered: bool,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_paged(&self) -> bool {
        matches!(self.payload, Payload::Paged { .. })
    }

    fn bytes(&self) -> u64 {
        match &self.payload {
            Payload::Resident(m) => m.body.len() as u64,
            Payload::Paged { bytes, .. } => u64::from(*bytes),
        }
    }

    fn priority(&self) -> u8 {
        match &self.payload {
            Payload::Resident(m) => m.properties.priority.unwrap_or(0),
            Payload::Paged { priority, .. } => *priority,
        }
    }

    fn store_id(&self) -> Option<u64> {
        match &self.payload {
            Payload::Resident(m) => m.store_id,
            Payload::Paged { id, .. } => Some(*id),
        }
    }
}

/// Ready messages, one FIFO per priority level (one level for an ordinary
/// queue), each ordered by sequence number.
#[derive(Debug, Default)]
struct Ready {
    levels: Vec<VecDeque<Entry>>,
    len: usize,
    bytes: u64,
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
        let e = self.levels.iter_mut().rev().find_map(|q| q.pop_front())?;
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
                    Payload::Resident(_) => break,
                }
            }
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// The entry at `seq`, wherever its priority put it.
    fn find_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        self.levels.iter_mut().find_map(|q| {
            let i = q.partition_point(|e| e.seq < seq);
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

/// Messages that died in a queue (expired, rejected, pushed out by a
/// limit), handed back by the operation that killed them: the caller, who
/// knows the vhost, routes them to the dead-letter exchange once the
/// queue's lock is released (`VHost::dead_letter`). The queue itself
/// knows nothing of vhosts or exchanges.
#[derive(Debug, Default)]
#[must_use = "dead letters are lost unless routed with VHost::dead_letter"]
pub struct DeadLetters {
    /// The messages and why each died.
    pub messages: Vec<(QueuedMessage, DeathReason)>,
    /// When they died (the queue's latest clock reading).
    pub now: Option<Instant>,
}

impl DeadLetters {
    /// Whether there is nothing to route.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Who the queue is, for the deliveries it hands out: its name and an
    /// id no other queue of this process has (a queue deleted and declared
    /// again under the same name is another queue).
    pub me: QueueRef,
    /// What it was declared with.
    pub spec: QueueSpec,
    /// Parsed behaviour arguments.
    pub args: QueueArgs,
    store: Option<Arc<dyn Persistence>>,
    deleted: AtomicBool,
    /// Whether any message may carry an expiry, so the periodic sweep can
    /// skip queues that have none.
    may_expire: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ready: Ready,
    next_seq: u64,
    consumers: Vec<Consumer>,
    /// Index to start the next round-robin scan at.
    cursor: usize,
    /// Set once a consumer has ever subscribed (auto-delete waits for that).
    had_consumer: bool,
    /// The latest time any caller told the queue about.
    clock: Option<Instant>,
    /// Last declare, get or consumer activity, for `x-expires`.
    last_used: Option<Instant>,
    /// When a consumer last got a message (is the queue being drained?).
    last_delivery: Option<Instant>,
    /// Publishing connections held back while this queue is congested.
    throttled: Vec<Arc<Mailbox>>,
    /// Dead letters waiting to be routed once the lock is released.
    dead: Vec<(QueuedMessage, DeathReason)>,
    /// Paged-out messages that died and must be read (unlocked) before
    /// they can be dead-lettered: (entry, reason).
    dead_paged: Vec<(Entry, DeathReason)>,
    /// Dispatch stopped at a paged-out message: read the head back.
    need_load: bool,
    /// An op is reading messages back right now (with the lock released).
    loading: bool,
    /// A read failed: only the broker's tick tries again (not every op).
    retry_load: bool,
    /// Reads from the store that failed (the messages stayed queued).
    load_failures: u64,
}

/// Result of removing a consumer.
#[derive(Debug)]
pub struct Removed {
    /// Whether a consumer was found.
    pub found: bool,
    /// The queue is auto-delete and has just lost its last consumer.
    pub auto_delete_now: bool,
    /// Messages that died meanwhile (dispatch expires the head).
    pub dead: DeadLetters,
}

/// A message recovered from the store at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Recovered {
    /// Position in the queue.
    pub seq: u64,
    /// Message store id.
    pub msg: u64,
    /// It had been delivered before the restart.
    pub delivered: bool,
    /// Body size, if known.
    pub bytes: u32,
    /// Priority, if known.
    pub priority: u8,
}

impl Queue {
    /// A new, empty queue, persisting through `store` if durable.
    pub fn new(spec: QueueSpec, store: Option<Arc<dyn Persistence>>) -> Arc<Self> {
        let args = QueueArgs::from_table(&spec.arguments);
        let state = State {
            ready: Ready::new(args.max_priority),
            next_seq: 0,
            consumers: Vec::new(),
            cursor: 0,
            had_consumer: false,
            clock: None,
            last_used: None,
            dead: Vec::new(),
            dead_paged: Vec::new(),
            need_load: false,
            loading: false,
            retry_load: false,
            load_failures: 0,
            last_delivery: None,
            throttled: Vec::new(),
        };
        let may_expire = args.message_ttl.is_some() || args.expires.is_some();
        let store = if spec.store_id.is_some() { store } else { None };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let me = QueueRef {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: spec.name.clone(),
        };
        Arc::new(Queue {
            me,
            spec,
            args,
            store,
            deleted: AtomicBool::new(false),
            may_expire: AtomicBool::new(may_expire),
            state: Mutex::new(state),
        })
    }

    /// The name.
    pub fn name(&self) -> &ShortStr {
        &self.spec.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent enough
        // (every mutation is a single push/pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits a store op if this queue is durable and the message stored.
    fn persist(&self, op: impl FnOnce(u64) -> PersistOp) {
        if let (Some(store), Some(q)) = (&self.store, self.spec.store_id) {
            store.submit(op(q));
        }
    }

    fn dequeue_op(&self, seq: u64, msg: Option<u64>) {
        if let Some(msg) = msg {
            self.persist(|queue| PersistOp::Dequeue { queue, seq, msg });
        }
    }

    /// Turns a resident entry into a delivery. Paged entries are never
    /// passed here: they are read back first ([`Queue::load`]).
    fn resident(e: Entry) -> Option<QueuedMessage> {
        match e.payload {
            Payload::Resident(message) => Some(QueuedMessage {
                seq: e.seq,
                message,
                redelivered: e.redelivered,
                expires_at: e.expires_at,
            }),
            Payload::Paged { .. } => None,
        }
    }

    /// Finishes an op: reads back paged-out messages dispatch is waiting
    /// for (with the lock released), and hands back the dead letters the
    /// op produced, for the caller to route once the lock is gone.
    fn after<'a>(self: &'a Arc<Self>, mut st: MutexGuard<'a, State>) -> DeadLetters {
        let mut rounds = 0;
        while (st.need_load || !st.dead_paged.is_empty()) && !st.loading && rounds < LOAD_ROUNDS {
            st = self.load(st);
            rounds += 1;
        }
        DeadLetters {
            messages: std::mem::take(&mut st.dead),
            now: st.clock,
        }
    }

    /// Reads back, with the lock released, the paged-out messages at the
    /// head (up to [`READ_AHEAD`]) and those waiting to be dead-lettered;
    /// then re-takes the lock, puts them in place and dispatches. A message
    /// whose read failed stays queued (and paged) for the next attempt; one
    /// the store does not have is skipped.
    fn load<'a>(self: &'a Arc<Self>, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.need_load = false;
        let head = st.ready.paged_front(READ_AHEAD);
        let dying = std::mem::take(&mut st.dead_paged);
        let Some(store) = self
            .store
            .clone()
            .filter(|_| !head.is_empty() || !dying.is_empty())
        else {
            // Nothing to read (or no store to read from: cannot happen for
            // a queue with paged entries).
            return st;
        };
        st.loading = true;
        drop(st);
        let read = |id: u64| store.load(id);
        let head: Vec<(u64, u64, Loaded)> = head
            .into_iter()
            .map(|(seq, id)| (seq, id, read(id)))
            .collect();
        let dying: Vec<(Entry, DeathReason, Loaded)> = dying
            .into_iter()
            .map(|(e, why)| {
                let r = e.store_id().map_or(Ok(None), read);
                (e, why, r)
            })
            .collect();
        let mut st = self.lock();
        st.loading = false;
        let mut failed = false;
        for (seq, id, res) in head {
            match res {
                Ok(Some(m)) => {
                    st.ready.page_in(seq, m);
                }
                Ok(None) => {
                    if st.ready.remove(seq).is_some() {
                        tracing::error!(queue = %self.name(), msg = id, "stored message is missing; skipping it");
                        self.dequeue_op(seq, Some(id));
                    }
                }
                Err(e) => {
                    failed = true;
                    st.load_failures += 1;
                    tracing::error!(queue = %self.name(), msg = id, error = %e, "cannot read a stored message; it stays queued");
                }
            }
        }
        for (e, why, res) in dying {
            match res {
                Ok(Some(message)) => {
                    let (seq, id) = (e.seq, e.store_id());
                    if !self.is_deleted() {
                        self.dequeue_op(seq, id);
                    }
                    st.dead.push((
                        QueuedMessage {
                            seq,
                            message,
                            redelivered: e.redelivered,
                            expires_at: e.expires_at,
                        },
                        why,
                    ));
                }
                Ok(None) if !self.is_deleted() => self.dequeue_op(e.seq, e.store_id()),
                Ok(None) => {}
                Err(err) => {
                    // Back in its place: it dies (and is read) again later.
                    failed = true;
                    st.load_failures += 1;
                    tracing::error!(queue = %self.name(), msg = ?e.store_id(), error = %err, "cannot read a dead-lettered message; it stays queued");
                    if !self.is_deleted() {
                        st.ready.insert_by_seq(e);
                    }
                }
            }
        }
        if failed {
            // Retried by the next op or the broker's tick, not in a loop.
            st.need_load = false;
            st.retry_load = true;
        } else {
            self.dispatch_locked(&mut st);
        }
        st
    }

    /// Removes an entry for good (expired, dropped, rejected): tells the
    /// store and queues it for dead-lettering. A paged-out one is read
    /// back first, unlocked; it leaves the store only once it has been.
    fn kill(&self, st: &mut State, e: Entry, reason: DeathReason) {
        if self.args.dead_letter_exchange.is_none() {
            self.dequeue_op(e.seq, e.store_id());
            return;
        }
        if e.is_paged() {
            st.dead_paged.push((e, reason));
            return;
        }
        self.dequeue_op(e.seq, e.store_id());
        if let Some(m) = Self::resident(e) {
            st.dead.push((m, reason));
        }
    }

    /// Reads of stored messages that failed so far (each was retried).
    pub fn load_failures(&self) -> u64 {
        self.lock().load_failures
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Whether `conn` may use this queue (405 otherwise).
    pub fn accessible_by(&self, conn: ConnId) -> bool {
        self.spec.exclusive_owner.is_none_or(|owner| owner == conn)
    }

    /// Whether messages published to this queue are stored.
    pub fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Marks the queue used now (declare, get), for `x-expires`.
    pub fn touch(&self, now: Instant) {
        let mut st = self.lock();
        st.clock = Some(now);
        st.last_used = Some(now);
    }

    /// Loads the messages the store held for this queue at start-up, in
    /// order, without reading their bodies.
    pub fn recover(&self, entries: impl IntoIterator<Item = Recovered>) {
        let mut st = self.lock();
        for r in entries {
            st.next_seq = st.next_seq.max(r.seq + 1);
            let e = Entry {
                seq: r.seq,
                payload: Payload::Paged {
                    id: r.msg,
                    bytes: r.bytes,
                    priority: r.priority,
                },
                redelivered: r.delivered,
                expires_at: None,
            };
            st.ready.push_back(e);
        }
        if self.args.message_ttl.is_some() {
            // TTLs restart from recovery: expiry times are not stored.
            self.may_expire.store(true, Ordering::Relaxed);
        }
    }

    /// Appends a message and delivers what consumers can take. Returns
    /// false if a length limit with `reject-publish` refused it, and the
    /// messages that died.
    ///
    /// If the queue is congested (long, and being drained by consumers)
    /// the `publisher` is held back until it drains: its connection stops
    /// reading, so end-to-end latency stays bounded under overload.
    pub fn publish(
        self: &Arc<Self>,
        mut message: Arc<Message>,
        now: Instant,
        publisher: Option<&Arc<Mailbox>>,
    ) -> (bool, DeadLetters) {
        let mut st = self.lock();
        // Routed just before the queue was deleted (a route found or
        // reused before the delete): the message goes with the queue.
        // `delete` sets the flag under this lock, so nothing lands after.
        if self.is_deleted() {
            return (true, DeadLetters::default());
        }
        st.clock = Some(now);
        if st.last_used.is_none() {
            st.last_used = Some(now);
        }
        let ttl = match (self.args.message_ttl, message_expiration(&message)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if ttl.is_some() {
            self.may_expire.store(true, Ordering::Relaxed);
        }
        let seq = st.next_seq;
        let stored = message.store_id.filter(|_| self.store.is_some());
        let bytes = message.body.len() as u64;
        let refused = self.args.has_length_limit()
            && self.args.overflow != Overflow::DropHead
            && (self
                .args
                .max_length
                .is_some_and(|n| st.ready.len as u64 >= n)
                || self
                    .args
                    .max_length_bytes
                    .is_some_and(|n| st.ready.bytes + bytes > n));
        if refused {
            if self.args.overflow == Overflow::RejectPublishDlx
                && self.args.dead_letter_exchange.is_some()
            {
                let m = QueuedMessage {
                    seq,
                    message,
                    redelivered: false,
                    expires_at: None,
                };
                st.dead.push((m, DeathReason::Maxlen));
            }
            return (false, self.after(st));
        }
        st.next_seq += 1;
        if let Some(msg) = stored {
            // Under the lock: the store sees this before any dequeue of it.
            self.persist(|queue| PersistOp::Enqueue { queue, seq, msg });
        }
        let payload = match stored {
            Some(id) if st.ready.len >= RESIDENT_LIMIT => Payload::Paged {
                id,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                priority: message.properties.priority.unwrap_or(0),
            },
            _ => {
                if st.ready.len >= COMPACT_FROM
                    && message.body.len() <= COMPACT_BODY
                    && let Some(m) = Arc::get_mut(&mut message)
                {
                    m.body = bytes::Bytes::copy_from_slice(&m.body);
                }
                Payload::Resident(message)
            }
        };
        st.ready.push_back(Entry {
            seq,
            payload,
            redelivered: false,
            expires_at: ttl.map(|t| now + t),
        });
        if self.args.has_length_limit() {
            while self.over_limit(&st) {
                let Some(old) = st.ready.pop_oldest() else {
                    break;
                };
                self.kill(&mut st, old, DeathReason::Maxlen);
            }
        }
        self.dispatch_locked(&mut st);
        if let Some(p) = publisher
            && Self::congested(&st)
            && !st.throttled.iter().any(|m| Arc::ptr_eq(m, p))
        {
            p.throttle();
            st.throttled.push(Arc::clone(p));
        }
        (true, self.after(st))
    }

    fn over_limit(&self, st: &State) -> bool {
        self.args
            .max_length
            .is_some_and(|n| st.ready.len as u64 > n)
            || self
                .args
                .max_length_bytes
                .is_some_and(|n| st.ready.bytes > n)
    }

    /// Ready messages (not counting unacknowledged ones), as `declare-ok`
    /// reports them.
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.lock().ready.len).unwrap_or(u32::MAX)
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.lock().consumers.len()).unwrap_or(u32::MAX)
    }

    /// Ready messages and consumers in one look.
    pub fn counts(&self) -> (u32, u32) {
        let st = self.lock();
        (
            u32::try_from(st.ready.len).unwrap_or(u32::MAX),
            u32::try_from(st.consumers.len()).unwrap_or(u32::MAX),
        )
    }

    /// Adds a consumer and starts delivering to it.
    pub fn add_consumer(
        self: &Arc<Self>,
        consumer: Consumer,
    ) -> Result<DeadLetters, ConsumeRefused> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(ConsumeRefused::Deleted);
        }
        if st.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !st.consumers.is_empty())
        {
            return Err(ConsumeRefused::ExclusiveInUse);
        }
        st.had_consumer = true;
        st.consumers.push(consumer);
        self.dispatch_locked(&mut st);
        Ok(self.after(st))
    }

    /// Removes a consumer.
    pub fn remove_consumer(
        self: &Arc<Self>,
        conn: ConnId,
        channel: u16,
        tag: &ShortStr,
    ) -> Removed {
        let mut st = self.lock();
        let before = st.consumers.len();
        st.consumers.retain(|c| !c.is(conn, channel, tag));
        let found = st.consumers.len() != before;
        if st.cursor >= st.consumers.len() {
            st.cursor = 0;
        }
        if st.consumers.is_empty() {
            st.last_used = st.clock;
        }
        // Others may now get what the removed consumer could not take.
        self.dispatch_locked(&mut st);
        let auto_delete_now = found && self.spec.auto_delete && st.consumers.is_empty();
        Removed {
            found,
            auto_delete_now,
            dead: self.after(st),
        }
    }

    /// Settles deliveries made to one consumer (or to `basic.get` when
    /// `consumer` is `None`): frees `settled` units of its prefetch, puts
    /// `requeue` back in place (the caller sets `redelivered` on those that
    /// reached the client), and dispatches.
    pub fn settle(
        self: &Arc<Self>,
        conn: ConnId,
        channel: u16,
        consumer: Option<&ShortStr>,
        settled: u32,
        requeue: impl IntoIterator<Item = QueuedMessage>,
    ) -> DeadLetters {
        self.settle_all(
            conn,
            channel,
            consumer,
            settled,
            requeue,
            Vec::new(),
            Vec::new(),
        )
    }

    /// Acknowledges deliveries: frees prefetch and forgets them for good.
    pub fn ack(
        self: &Arc<Self>,
        conn: ConnId,
        channel: u16,
        consumer: Option<&ShortStr>,
        acked: Vec<QueuedMessage>,
    ) -> DeadLetters {
        let n = u32::try_from(acked.len()).unwrap_or(u32::MAX);
        let n = if consumer.is_some() { n } else { 0 };
        self.settle_all(conn, channel, consumer, n, [], acked, Vec::new())
    }

    /// [`Queue::settle`], also dead-lettering rejected messages.
    pub fn settle_with_dead(
        self: &Arc<Self>,
        conn: ConnId,
        channel: u16,
        consumer: Option<&ShortStr>,
        settled: u32,
        requeue: impl IntoIterator<Item = QueuedMessage>,
        rejected: Vec<QueuedMessage>,
    ) -> DeadLetters {
        self.settle_all(
            conn,
            channel,
            consumer,
            settled,
            requeue,
            Vec::new(),
            rejected,
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one lock acquisition for every way a delivery ends"
    )]
    fn settle_all(
        self: &Arc<Self>,
        conn: ConnId,
        channel: u16,
        consumer: Option<&ShortStr>,
        settled: u32,
        requeue: impl IntoIterator<Item = QueuedMessage>,
        acked: Vec<QueuedMessage>,
        rejected: Vec<QueuedMessage>,
    ) -> DeadLetters {
        let mut st = self.lock();
        if let Some(tag) = consumer
            && let Some(c) = st.consumers.iter_mut().find(|c| c.is(conn, channel, tag))
        {
            c.in_flight = c.in_flight.saturating_sub(settled);
        }
        // Once deleted, the store dropped everything this queue held.
        let live = !self.is_deleted();
        if live {
            for m in &acked {
                self.dequeue_op(m.seq, m.message.store_id);
            }
            for m in &rejected {
                self.dequeue_op(m.seq, m.message.store_id);
            }
        }
        let mut any = false;
        for m in requeue {
            if !live {
                break;
            }
            let e = Entry {
                seq: m.seq,
                payload: Payload::Resident(m.message),
                redelivered: m.redelivered,
                expires_at: m.expires_at,
            };
            st.ready.insert_by_seq(e);
            any = true;
        }
        if self.args.dead_letter_exchange.is_some() {
            st.dead
                .extend(rejected.into_iter().map(|m| (m, DeathReason::Rejected)));
        }
        if any || settled > 0 {
            self.dispatch_locked(&mut st);
        }
        self.after(st)
    }

    /// Delivers what the consumers have room for.
    pub fn dispatch(self: &Arc<Self>) -> DeadLetters {
        let mut st = self.lock();
        self.dispatch_locked(&mut st);
        self.after(st)
    }

    /// Drops expired messages from the head.
    fn expire_head(&self, st: &mut State) {
        let Some(now) = st.clock else { return };
        while st
            .ready
            .front()
            .is_some_and(|m| m.expires_at.is_some_and(|e| e < now))
        {
            if let Some(e) = st.ready.pop_front() {
                self.kill(st, e, DeathReason::Expired);
            }
        }
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        self.expire_head(st);
        while st.ready.len > 0 && !st.consumers.is_empty() {
            if st.ready.front().is_some_and(Entry::is_paged) {
                // Read back by `after`, with the lock released.
                st.need_load = !st.retry_load;
                break;
            }
            let Some(i) = self.pick(st) else { break };
            let Some(message) = st.ready.pop_front().and_then(Self::resident) else {
                break;
            };
            if let Some(msg) = message.message.store_id {
                let (seq, ack) = (message.seq, st.consumers[i].ack);
                self.persist(|queue| {
                    if ack {
                        PersistOp::Delivered { queue, seq, msg }
                    } else {
                        PersistOp::Dequeue { queue, seq, msg }
                    }
                });
            }
            let c = &mut st.consumers[i];
            c.in_flight += 1;
            c.mailbox
                .deliver(c.channel, &c.tag, c.ack, &self.me, message);
            st.cursor = i + 1;
            st.last_delivery = st.clock;
            self.expire_head(st);
        }
        if !st.throttled.is_empty() && st.ready.len < FLOW_LOW {
            Self::release_throttled(st);
        }
    }

    /// Whether publishers should wait: many ready messages while consumers
    /// are taking them (a backlog nobody consumes does not hold anyone back).
    fn congested(st: &State) -> bool {
        st.ready.len >= FLOW_HIGH
            && !st.consumers.is_empty()
            && match (st.last_delivery, st.clock) {
                (Some(d), Some(now)) => now.saturating_duration_since(d) < FLOW_ACTIVE,
                _ => false,
            }
    }

    fn release_throttled(st: &mut State) {
        for m in st.throttled.drain(..) {
            m.release_throttle();
        }
    }

    /// Picks the next consumer with room: the highest priority first,
    /// round-robin among equals; with single-active-consumer only the
    /// earliest. Takes channel credit for the one chosen.
    fn pick(&self, st: &mut State) -> Option<usize> {
        let n = st.consumers.len();
        if self.args.single_active_consumer {
            let c = st.consumers.first()?;
            return (c.has_room() && (!c.ack || c.channel_credit.try_acquire())).then_some(0);
        }
        let top = st
            .consumers
            .iter()
            .filter(|c| c.has_room())
            .map(|c| c.priority)
            .max()?;
        for k in 0..n {
            let i = (st.cursor + k) % n;
            let c = &st.consumers[i];
            if c.priority == top && c.has_room() && (!c.ack || c.channel_credit.try_acquire()) {
                return Some(i);
            }
        }
        // Every top-priority consumer is blocked by its channel's window;
        // try lower priorities in order.
        for k in 0..n {
            let i = (st.cursor + k) % n;
            let c = &st.consumers[i];
            if c.priority < top && c.has_room() && (!c.ack || c.channel_credit.try_acquire()) {
                return Some(i);
            }
        }
        None
    }

    /// Takes the head message for `basic.get`, with the number left.
    pub fn get(
        self: &Arc<Self>,
        now: Instant,
        no_ack: bool,
    ) -> (Option<(QueuedMessage, u32)>, DeadLetters) {
        let mut st = self.lock();
        st.clock = Some(now);
        st.last_used = Some(now);
        self.expire_head(&mut st);
        if st.ready.front().is_some_and(Entry::is_paged) {
            // Read back with the lock released; if that fails the message
            // stays queued and this get finds the queue empty for now.
            st = self.load(st);
        }
        let got = match st.ready.front() {
            Some(e) if !e.is_paged() => st.ready.pop_front().and_then(Self::resident),
            _ => None,
        };
        if let Some(m) = &got
            && let Some(msg) = m.message.store_id
        {
            let seq = m.seq;
            if no_ack {
                self.persist(|queue| PersistOp::Dequeue { queue, seq, msg });
            } else {
                self.persist(|queue| PersistOp::Delivered { queue, seq, msg });
            }
        }
        let left = u32::try_from(st.ready.len).unwrap_or(u32::MAX);
        let dead = self.after(st);
        (got.map(|m| (m, left)), dead)
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let entries = st.ready.drain();
        for e in &entries {
            self.dequeue_op(e.seq, e.store_id());
        }
        u32::try_from(entries.len()).unwrap_or(u32::MAX)
    }

    /// Expires what is due; returns true if the queue itself has been
    /// unused for longer than `x-expires` and should be deleted.
    pub fn expire(self: &Arc<Self>, now: Instant) -> (bool, DeadLetters) {
        let mut st = self.lock();
        st.clock = Some(now);
        // Consumers that stopped taking messages no longer hold publishers.
        if !st.throttled.is_empty() && !Self::congested(&st) {
            Self::release_throttled(&mut st);
        }
        if std::mem::take(&mut st.retry_load) || st.need_load {
            // A read failed earlier: try again, once per tick.
            st.need_load = true;
            self.dispatch_locked(&mut st);
            st.need_load = true;
            return (false, self.after(st));
        }
        if !self.may_expire.load(Ordering::Relaxed) {
            return (false, DeadLetters::default());
        }
        self.dispatch_locked(&mut st);
        let unused_too_long = self.args.expires.is_some_and(|ttl| {
            st.consumers.is_empty()
                && st
                    .last_used
                    .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
        });
        (unused_too_long, self.after(st))
    }

    /// Marks the queue deleted, drops its messages and tells every consumer
    /// (`basic.cancel`). Returns the number of ready messages it had.
    pub fn delete(&self, vhost: &str) -> u32 {
        let mut st = self.lock();
        if self.deleted.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let n = u32::try_from(st.ready.drain().len()).unwrap_or(u32::MAX);
        Self::release_throttled(&mut st);
        self.persist(|id| PersistOp::DeleteQueue {
            vhost: vhost.to_string(),
            name: self.spec.name.clone(),
            id,
        });
        for c in st.consumers.drain(..) {
            c.mailbox.push(Event::Cancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
        n
    }

    /// Whether the queue has no consumers (RabbitMQ's `if-unused`).
    pub fn is_unused(&self) -> bool {
        self.lock().consumers.is_empty()
    }
}

/// The message's own `expiration`, if valid (the channel already refused
/// invalid ones).
fn message_expiration(m: &Message) -> Option<Duration> {
    let e = m.properties.expiration.as_ref()?;
    e.as_str()?.parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Weak;
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::mailbox::NoWake;
    use crate::message::{Message, Properties};

    /// A store whose reads can be made to fail, and that checks no read
    /// happens while the queue's lock is held.
    #[derive(Debug, Default)]
    struct FlakyStore {
        messages: Mutex<HashMap<u64, Arc<Message>>>,
        fail: AtomicBool,
        reads: AtomicU32,
        reads_under_lock: AtomicU32,
        queue: Mutex<Weak<Queue>>,
        dequeued: Mutex<Vec<u64>>,
    }

    impl Persistence for FlakyStore {
        fn submit(&self, op: PersistOp) {
            if let PersistOp::Dequeue { seq, .. } = op {
                self.dequeued.lock().unwrap().push(seq);
            }
        }

        fn load(&self, id: u64) -> Result<Option<Arc<Message>>, LoadError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if let Some(q) = self.queue.lock().unwrap().upgrade()
                && q.state.try_lock().is_err()
            {
                self.reads_under_lock.fetch_add(1, Ordering::SeqCst);
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(LoadError("injected read error".into()));
            }
            Ok(self.messages.lock().unwrap().get(&id).cloned())
        }
    }

    fn spec(arguments: FieldTable) -> QueueSpec {
        QueueSpec {
            name: ShortStr::from("q"),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments,
            kind: QueueType::Classic,
            store_id: Some(1),
        }
    }

    fn stored(id: u64, body: &'static [u8]) -> Arc<Message> {
        let mut m = Message::new(
            ShortStr::empty(),
            ShortStr::from("q"),
            Properties::default(),
            bytes::Bytes::from_static(body),
        );
        m.store_id = Some(id);
        Arc::new(m)
    }

    /// A durable queue recovered with messages 1..=n paged out (bodies
    /// "m1", "m2", ... in the store), on a store that fails reads.
    fn recovered(n: u64, arguments: FieldTable) -> (Arc<Queue>, Arc<FlakyStore>) {
        let store = Arc::new(FlakyStore::default());
        store.fail.store(true, Ordering::SeqCst);
        for id in 1..=n {
            let body: &'static [u8] = Box::leak(format!("m{id}").into_bytes().into_boxed_slice());
            store.messages.lock().unwrap().insert(id, stored(id, body));
        }
        let q = Queue::new(spec(arguments), Some(Arc::clone(&store) as _));
        *store.queue.lock().unwrap() = Arc::downgrade(&q);
        q.recover((1..=n).map(|id| Recovered {
            seq: id,
            msg: id,
            delivered: false,
            bytes: 2,
            priority: 0,
        }));
        (q, store)
    }

    fn consumer(mailbox: &Arc<Mailbox>) -> Consumer {
        Consumer::new(
            ShortStr::from("c"),
            1,
            1,
            Arc::clone(mailbox),
            true,
            0,
            Arc::new(Credit::default()),
            false,
            0,
        )
    }

    fn delivered(mailbox: &Arc<Mailbox>) -> Vec<Vec<u8>> {
        let mut events = VecDeque::new();
        mailbox.drain_into(&mut events);
        events
            .into_iter()
            .flat_map(|e| match e {
                Event::Deliver { messages, .. } => messages
                    .into_iter()
                    .map(|m| m.message.body.to_vec())
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_failed_read_keeps_the_message_queued_until_a_read_works() {
        let (q, store) = recovered(3, FieldTable::new());
        let mailbox = Mailbox::new(Box::new(NoWake));
        assert!(q.add_consumer(consumer(&mailbox)).unwrap().is_empty());
        // The reads failed: nothing delivered, nothing dropped, nothing
        // dequeued in the store, the failure counted.
        assert!(delivered(&mailbox).is_empty());
        assert_eq!(q.message_count(), 3);
        assert!(store.dequeued.lock().unwrap().is_empty());
        assert!(q.load_failures() >= 1);
        // basic.get finds nothing it can read yet, and takes nothing.
        assert!(q.get(Instant::now(), true).0.is_none());
        assert_eq!(q.message_count(), 3);
        // The store recovers; the broker's tick retries.
        store.fail.store(false, Ordering::SeqCst);
        assert!(q.expire(Instant::now()).1.is_empty());
        assert_eq!(
            delivered(&mailbox),
            [b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()]
        );
        assert_eq!(q.message_count(), 0);
        assert!(store.reads.load(Ordering::SeqCst) >= 4);
        assert_eq!(
            store.reads_under_lock.load(Ordering::SeqCst),
            0,
            "a read under the queue's lock"
        );
    }

    #[test]
    fn only_a_record_proven_absent_is_skipped() {
        let (q, store) = recovered(3, FieldTable::new());
        store.fail.store(false, Ordering::SeqCst);
        store.messages.lock().unwrap().remove(&2);
        // The first get reads the window: message 2 is gone from the
        // store, so it is skipped (and dequeued there).
        let (m, left) = q.get(Instant::now(), true).0.unwrap();
        assert_eq!((&m.message.body[..], left), (&b"m1"[..], 1));
        let (m, left) = q.get(Instant::now(), true).0.unwrap();
        assert_eq!((&m.message.body[..], left), (&b"m3"[..], 0));
        assert!(store.dequeued.lock().unwrap().contains(&2));
        assert_eq!(
            store.reads_under_lock.load(Ordering::SeqCst),
            0,
            "a read under the queue's lock"
        );
    }

    #[test]
    fn paged_messages_pushed_out_are_read_unlocked_and_kept_on_failure() {
        let args = FieldTable::new()
            .with("x-max-length", FieldValue::I64(1))
            .with("x-dead-letter-exchange", FieldValue::LongStr("dlx".into()));
        let (q, store) = recovered(2, args);
        let now = Instant::now();
        // A publish pushes the two paged messages out; reading them for
        // dead-lettering fails, so they stay (and stay stored).
        let (accepted, dead) = q.publish(stored(10, b"m10"), now, None);
        assert!(accepted && dead.is_empty());
        assert_eq!(q.message_count(), 3);
        assert!(store.dequeued.lock().unwrap().is_empty());
        assert_eq!(q.load_failures(), 2);
        // Once readable they come back as dead letters, for the vhost to
        // route, and leave the store, with the older m10.
        store.fail.store(false, Ordering::SeqCst);
        let (accepted, dead) = q.publish(stored(11, b"m11"), now, None);
        assert!(accepted);
        let mut bodies: Vec<(Vec<u8>, DeathReason)> = dead
            .messages
            .iter()
            .map(|(m, why)| (m.message.body.to_vec(), *why))
            .collect();
        bodies.sort();
        assert_eq!(
            bodies,
            [
                (b"m1".to_vec(), DeathReason::Maxlen),
                (b"m10".to_vec(), DeathReason::Maxlen),
                (b"m2".to_vec(), DeathReason::Maxlen)
            ]
        );
        assert_eq!(dead.now, Some(now));
        assert_eq!(q.message_count(), 1);
        let mut gone = store.dequeued.lock().unwrap().clone();
        gone.sort_unstable();
        assert_eq!(gone, [1, 2, 3]);
        assert_eq!(
            store.reads_under_lock.load(Ordering::SeqCst),
            0,
            "a read under the queue's lock"
        );
    }

    #[test]
    fn a_deleted_queue_takes_no_message() {
        let q = Queue::new(
            QueueSpec {
                name: ShortStr::from("q"),
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::new(),
                kind: QueueType::Classic,
                store_id: None,
            },
            None,
        );
        let message = || {
            Arc::new(Message::new(
                ShortStr::empty(),
                ShortStr::from("q"),
                Properties::default(),
                bytes::Bytes::from_static(b"m"),
            ))
        };
        let now = Instant::now();
        assert!(q.publish(message(), now, None).0);
        assert_eq!(q.message_count(), 1);
        assert_eq!(q.delete("/"), 1);
        assert!(q.publish(message(), now, None).0);
        assert_eq!(q.message_count(), 0);
    }
}
