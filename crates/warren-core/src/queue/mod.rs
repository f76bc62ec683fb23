//! Queues: ready messages in order, consumers with credit, and dispatch.
//!
//! # Layout
//! - [`state`] (private): the queue as a deterministic state machine,
//!   commands in, effects out, no locks, connections or store.
//! - this module: the public types, and [`Queue`], the executor that runs
//!   the state machine under the queue's lock and carries out its effects.
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

pub mod dedup;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use warren_codec::{FieldTable, FieldValue, ShortStr};

use crate::mailbox::{Event, Mailbox};
use crate::message::Message;
use crate::persist::{LoadError, Persistence};
use crate::policy::Policy;
pub use state::Counters;
use state::{ConsumerState, Effects, QueueState, Read};

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

    /// The limit; 0 means unlimited.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether a limit is set.
    pub fn is_limited(&self) -> bool {
        self.limit.load(Ordering::Relaxed) != 0
    }
}

/// A consumer to add to a queue: what the queue's state machine keeps of it
/// (ids, prefetch, credit), and the mailbox its deliveries go to, which
/// the executor keeps beside it.
#[derive(Debug)]
pub struct Consumer {
    state: ConsumerState,
    mailbox: Arc<Mailbox>,
}

impl Consumer {
    /// A consumer with nothing in flight: `tag` on `channel` of `conn`,
    /// delivering to `mailbox`, acknowledging or not, with its own
    /// `prefetch` (0: none) and its channel's shared window, `exclusive`,
    /// and its `x-priority`.
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
            state: ConsumerState {
                tag,
                conn,
                channel,
                ack,
                prefetch,
                credit: channel_credit,
                exclusive,
                priority,
                in_flight: 0,
                unacked: std::collections::VecDeque::new(),
            },
            mailbox,
        }
    }
}

/// The policies applying to a queue, and their effective definition.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The user policy, if one matches.
    pub policy: Option<Arc<Policy>>,
    /// The operator policy, if one matches.
    pub operator_policy: Option<Arc<Policy>>,
    /// What they set together.
    pub definition: FieldTable,
}

/// A queue's counts for the management API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready messages.
    pub ready: u64,
    /// Their body bytes.
    pub ready_bytes: u64,
    /// Deliveries awaiting acknowledgement.
    pub unacked: u64,
    /// Consumers.
    pub consumers: u64,
    /// Message counts since declared.
    pub counters: Counters,
    /// The exclusive consumer's tag, if there is one.
    pub exclusive_consumer: Option<ShortStr>,
}

/// One consumer of a queue, as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Its tag.
    pub tag: ShortStr,
    /// Its connection.
    pub conn: ConnId,
    /// Its channel.
    pub channel: u16,
    /// Whether it acknowledges.
    pub ack: bool,
    /// Its prefetch (0: none).
    pub prefetch: u32,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// `x-priority`.
    pub priority: i64,
    /// Receives messages (false: waiting behind the single active one).
    pub active: bool,
    /// The queue has single-active-consumer on.
    pub single_active: bool,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `x-consumer-timeout` (or the policy's `consumer-timeout`, the
    /// lower of the two): how long a delivery from this queue may stay
    /// unacknowledged; `None`: the broker's `consumer_timeout`.
    pub consumer_timeout: Option<Duration>,
    /// `x-delivery-limit` (quorum queues only): a message that comes back
    /// more often than this is dead-lettered (reason `delivery_limit`).
    pub delivery_limit: Option<u64>,
    /// `x-message-deduplication` (the community deduplication plugin;
    /// classic queues only): a message whose `x-deduplication-header` is
    /// already in the queue is refused. On unless absent or `false` (the
    /// plugin takes any other value as true).
    pub deduplicate: bool,
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
            consumer_timeout: int("x-consumer-timeout").map(Duration::from_millis),
            delivery_limit: int("x-delivery-limit"),
            deduplicate: t
                .get("x-message-deduplication")
                .is_some_and(|v| !matches!(v, FieldValue::Bool(false))),
        }
    }

    /// [`QueueArgs::from_table`] for a queue of `kind`: only quorum queues
    /// count deliveries against `x-delivery-limit`, as in RabbitMQ 3.10.
    pub fn for_kind(t: &FieldTable, kind: QueueType) -> Self {
        let mut args = Self::from_table(t);
        if kind == QueueType::Quorum {
            // Quorum queues know no reject-publish-dlx: RabbitMQ 3.10 logs
            // it and drops the head.
            if args.overflow == Overflow::RejectPublishDlx {
                args.overflow = Overflow::DropHead;
            }
            // The plugin deduplicates classic queues only.
            args.deduplicate = false;
        } else {
            args.delivery_limit = None;
        }
        args
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
    /// It came back to its quorum queue more often than `x-delivery-limit`.
    DeliveryLimit,
}

impl DeathReason {
    /// The name RabbitMQ puts in `x-death`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
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

/// A queue: its [`QueueState`] behind one short mutex, and the executor
/// that carries out what the state machine asks.
///
/// Every operation locks, gives the state machine one command, then carries
/// out its effects: store ops and deliveries while still holding the lock
/// (so the store and each consumer see them in the queue's order), reads
/// of paged-out messages with the lock released, and dead letters handed
/// back to the caller (who routes them through the vhost).
#[derive(Debug)]
pub struct Queue {
    /// Who the queue is, for the deliveries it hands out: its name and an
    /// id no other queue of this process has (a queue deleted and declared
    /// again under the same name is another queue).
    pub me: QueueRef,
    /// What it was declared with.
    pub spec: QueueSpec,
    /// Behaviour arguments in effect: the declared ones with the applying
    /// policies merged in (see [`crate::policy`]).
    args: std::sync::RwLock<Arc<QueueArgs>>,
    /// The policy and operator policy applying now.
    policies: std::sync::RwLock<Applied>,
    store: Option<Arc<dyn Persistence>>,
    deleted: AtomicBool,
    /// Whether any message may carry an expiry, so the periodic sweep can
    /// skip queues that have none.
    may_expire: AtomicBool,
    inner: Mutex<Inner>,
}

/// What the lock protects: the state machine, the connections it refers to
/// by id, and the reused effect buffers.
#[derive(Debug)]
struct Inner {
    st: QueueState,
    /// The mailbox of each consumer, index for index with
    /// `st.consumers`.
    sinks: Vec<Arc<Mailbox>>,
    /// Publishing connections held back while this queue is congested.
    throttled: Vec<Arc<Mailbox>>,
    /// An op is reading messages back right now (with the lock released).
    loading: bool,
}

thread_local! {
    /// The effect buffers, one set per thread and reused by every queue
    /// operation on it: nothing is allocated once they have grown, and,
    /// unlike buffers kept in the queue, they never move between cores.
    static EFFECTS: std::cell::RefCell<Effects> = std::cell::RefCell::new(Effects::default());
}

/// Runs `f` with this thread's effect buffers, cleared (fresh ones if an
/// operation is already using them on this thread, which the executor
/// never does: effects that lead to other queues run after `f`).
fn with_effects<R>(f: impl FnOnce(&mut Effects) -> R) -> R {
    EFFECTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut fx) => {
            fx.clear();
            f(&mut fx)
        }
        Err(_) => f(&mut Effects::default()),
    })
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
    /// When it expires (its deadline as stored at publish time).
    pub expires_at: Option<std::time::Instant>,
    /// Deliveries before the restart (0 if unknown).
    pub delivery_count: u32,
}

/// Loads one op may run before it leaves the rest to the next op or tick.
const LOAD_ROUNDS: usize = 4;

impl Queue {
    /// A new, empty queue, persisting through `store` if durable.
    pub fn new(spec: QueueSpec, store: Option<Arc<dyn Persistence>>) -> Arc<Self> {
        let args = QueueArgs::for_kind(&spec.arguments, spec.kind);
        let store = if spec.store_id.is_some() { store } else { None };
        let store_id = spec.store_id.filter(|_| store.is_some());
        let may_expire = args.message_ttl.is_some() || args.expires.is_some();
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let me = QueueRef {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: spec.name.clone(),
        };
        let mut st = QueueState::new(args.clone(), spec.auto_delete, store_id);
        st.quorum = spec.kind == QueueType::Quorum;
        Arc::new(Queue {
            me,
            spec,
            args: std::sync::RwLock::new(Arc::new(args)),
            policies: std::sync::RwLock::new(Applied::default()),
            store,
            deleted: AtomicBool::new(false),
            may_expire: AtomicBool::new(may_expire),
            inner: Mutex::new(Inner {
                st,
                sinks: Vec::new(),
                throttled: Vec::new(),
                loading: false,
            }),
        })
    }

    /// The name.
    pub fn name(&self) -> &ShortStr {
        &self.spec.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the state consistent enough
        // (every mutation is a single push/pop), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out what must happen under the lock, in order: store ops,
    /// then deliveries, cancels and flow control. Dead letters stay in the
    /// buffer for [`Queue::finish`].
    fn apply(&self, inner: &mut Inner, fx: &mut Effects, publisher: Option<&Arc<Mailbox>>) {
        let Inner {
            st,
            sinks,
            throttled,
            ..
        } = inner;
        if let Some(store) = &self.store {
            // One hand-over for a command's ops (an ack of many messages,
            // a dispatch of many): the persistence thread takes them in
            // one go.
            if fx.persist.len() > 1 {
                store.submit_all(std::mem::take(&mut fx.persist));
            } else if let Some(op) = fx.persist.pop() {
                store.submit(op);
            }
        } else {
            fx.persist.clear();
        }
        // Runs of deliveries to one consumer go into its mailbox under one
        // lock of it (usually a command's deliveries are all one run).
        let mut run = fx.deliver.drain(..).peekable();
        while let Some(&(i, _)) = run.peek() {
            let messages = std::iter::from_fn(|| run.next_if(|d| d.0 == i).map(|d| d.1));
            match (st.consumers.get(i), sinks.get(i)) {
                (Some(c), Some(sink)) => {
                    sink.deliver_run(c.channel, &c.tag, c.ack, &self.me, messages);
                }
                _ => messages.for_each(drop),
            }
        }
        if fx.throttle
            && let Some(p) = publisher
            && !throttled.iter().any(|m| Arc::ptr_eq(m, p))
        {
            p.throttle();
            throttled.push(Arc::clone(p));
        }
        if fx.release_throttled {
            for m in throttled.drain(..) {
                m.release_throttle();
            }
        }
        st.throttled = throttled.len();
        fx.throttle = false;
        fx.release_throttled = false;
    }

    /// Ends an op: reads back what the state machine is waiting for (with
    /// the lock released, a few windows at most), then hands back the dead
    /// letters for the caller to route once the lock is gone.
    fn finish<'a>(
        self: &'a Arc<Self>,
        mut inner: MutexGuard<'a, Inner>,
        fx: &mut Effects,
    ) -> DeadLetters {
        let mut rounds = 0;
        while inner.st.wants_load() && !inner.loading && rounds < LOAD_ROUNDS {
            inner = self.load(inner, fx);
            rounds += 1;
        }
        DeadLetters {
            messages: std::mem::take(&mut fx.dead),
            now: inner.st.clock,
        }
    }

    /// Reads back, with the lock released, what the state machine asked
    /// for, then re-takes the lock and gives it the results.
    fn load<'a>(
        self: &'a Arc<Self>,
        mut inner: MutexGuard<'a, Inner>,
        fx: &mut Effects,
    ) -> MutexGuard<'a, Inner> {
        let request = inner.st.take_load_request();
        let Some(store) = self
            .store
            .clone()
            .filter(|_| !request.head.is_empty() || !request.dying.is_empty())
        else {
            // Nothing to read (or no store to read from: cannot happen for
            // a queue with paged entries).
            return inner;
        };
        inner.loading = true;
        drop(inner);
        let outcome = |id: u64, r: Result<Option<Arc<Message>>, LoadError>| match r {
            Ok(Some(m)) => Read::Found(m),
            Ok(None) => Read::Absent,
            Err(e) => {
                tracing::warn!(queue = %self.name(), msg = id, error = %e, "store read failed");
                Read::Failed
            }
        };
        let read = |id: u64| outcome(id, store.load(id));
        let ids: Vec<u64> = request.head.iter().map(|(_, id)| *id).collect();
        let head: Vec<(u64, u64, Read)> = request
            .head
            .into_iter()
            .zip(store.load_many(&ids))
            .map(|((seq, id), r)| (seq, id, outcome(id, r)))
            .collect();
        let dying: Vec<(state::Entry, DeathReason, Read)> = request
            .dying
            .into_iter()
            .map(|(e, why)| {
                let r = e.store_id().map_or(Read::Absent, read);
                (e, why, r)
            })
            .collect();
        let mut inner = self.lock();
        inner.loading = false;
        for (msg, what) in inner.st.loaded(fx, head, dying) {
            tracing::error!(queue = %self.name(), msg, "{what}");
        }
        self.apply(&mut inner, fx, None);
        inner
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
        self.lock().st.touch(now);
    }

    /// The behaviour arguments in effect (declared, with policies).
    pub fn args(&self) -> Arc<QueueArgs> {
        Arc::clone(
            &self
                .args
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The policy and operator policy applying now, and their effective
    /// definition.
    pub fn applied_policies(&self) -> Applied {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies a policy and an operator policy (either may be none): the
    /// arguments in effect become the declared ones with their effective
    /// definition merged in, by RabbitMQ's rule per key. Limits lowered
    /// below what the queue holds take effect at once; a new TTL applies to
    /// messages published from now on.
    pub fn apply_policies(
        self: &Arc<Self>,
        user: Option<Arc<Policy>>,
        operator: Option<Arc<Policy>>,
    ) -> DeadLetters {
        let definition = crate::policy::effective_definition(user.as_deref(), operator.as_deref());
        let merged = crate::policy::merge(&self.spec.arguments, &definition);
        let mut args = QueueArgs::for_kind(&merged, self.spec.kind);
        // Not policy keys: the declared values stand.
        let declared = QueueArgs::from_table(&self.spec.arguments);
        args.max_priority = declared.max_priority;
        args.single_active_consumer = declared.single_active_consumer;
        if args.message_ttl.is_some() || args.expires.is_some() {
            self.may_expire.store(true, Ordering::Relaxed);
        }
        *self
            .policies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Applied {
            policy: user,
            operator_policy: operator,
            definition,
        };
        let changed = {
            let mut current = self
                .args
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = **current != args;
            *current = Arc::new(args.clone());
            changed
        };
        if !changed {
            return DeadLetters::default();
        }
        with_effects(|fx| {
            let mut inner = self.lock();
            inner.st.set_args(fx, args);
            self.apply(&mut inner, fx, None);
            self.finish(inner, fx)
        })
    }

    /// Loads the messages the store held for this queue at start-up, in
    /// order, without reading their bodies.
    ///
    /// A deduplicating queue reads each message back first (with the lock
    /// not yet taken) to learn its id: the ids of the messages it holds
    /// survive a restart. A message that cannot be read is recovered
    /// without its id.
    pub fn recover(&self, entries: impl IntoIterator<Item = Recovered>) {
        let inner = match self.store.as_ref().filter(|_| self.args().deduplicate) {
            None => {
                let mut inner = self.lock();
                inner.st.recover(entries);
                inner
            }
            Some(store) => {
                let entries: Vec<Recovered> = entries.into_iter().collect();
                let ids: Vec<(u64, dedup::DedupKey)> = entries
                    .iter()
                    .filter_map(|r| {
                        let m = store.load(r.msg).ok().flatten()?;
                        let key = dedup::DedupKey::from_headers(m.properties.headers.as_ref())?;
                        Some((r.seq, key))
                    })
                    .collect();
                let mut inner = self.lock();
                inner.st.recover(entries);
                inner.st.remember_ids(ids);
                inner
            }
        };
        if inner.st.message_ttl().is_some() || inner.st.any_expiry() {
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
        message: Arc<Message>,
        now: Instant,
        publisher: Option<&Arc<Mailbox>>,
    ) -> (bool, DeadLetters) {
        let own = message_expiration(&message);
        with_effects(|fx| {
            let mut inner = self.lock();
            let ttl = match (inner.st.message_ttl(), own) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if ttl.is_some() && !self.may_expire.load(Ordering::Relaxed) {
                self.may_expire.store(true, Ordering::Relaxed);
            }
            let accepted = inner.st.publish(fx, message, ttl, now, publisher.is_some());
            self.apply(&mut inner, fx, publisher);
            (accepted, self.finish(inner, fx))
        })
    }

    /// Ready messages (not counting unacknowledged ones), as `declare-ok`
    /// reports them.
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.lock().st.ready_len()).unwrap_or(u32::MAX)
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.lock().st.consumer_count()).unwrap_or(u32::MAX)
    }

    /// Deliveries awaiting acknowledgement (RabbitMQ's
    /// `messages_unacknowledged`).
    pub fn unacked_count(&self) -> u32 {
        u32::try_from(self.lock().st.unacked_len()).unwrap_or(u32::MAX)
    }

    /// Everything the management API shows of the queue, in one look.
    pub fn stats(&self) -> QueueStats {
        let inner = self.lock();
        let st = &inner.st;
        QueueStats {
            ready: st.ready_len() as u64,
            ready_bytes: st.ready.bytes,
            unacked: st.unacked_len() as u64,
            consumers: st.consumer_count() as u64,
            counters: st.counters,
            exclusive_consumer: st
                .consumers
                .iter()
                .find(|c| c.exclusive)
                .map(|c| c.tag.clone()),
        }
    }

    /// The queue's consumers, in the order they subscribed.
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        let inner = self.lock();
        let sac = self.args().single_active_consumer;
        inner
            .st
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| ConsumerInfo {
                tag: c.tag.clone(),
                conn: c.conn,
                channel: c.channel,
                ack: c.ack,
                prefetch: c.prefetch,
                exclusive: c.exclusive,
                priority: c.priority,
                active: !sac || i == 0,
                single_active: sac,
            })
            .collect()
    }

    /// Ready messages and consumers in one look.
    pub fn counts(&self) -> (u32, u32) {
        let inner = self.lock();
        (
            u32::try_from(inner.st.ready_len()).unwrap_or(u32::MAX),
            u32::try_from(inner.st.consumer_count()).unwrap_or(u32::MAX),
        )
    }

    /// Adds a consumer and starts delivering to it.
    pub fn add_consumer(
        self: &Arc<Self>,
        consumer: Consumer,
    ) -> Result<DeadLetters, ConsumeRefused> {
        let Consumer { state, mailbox } = consumer;
        with_effects(|fx| {
            let mut inner = self.lock();
            let Inner { st, sinks, .. } = &mut *inner;
            // The sink goes in first, at the index the consumer will have, so
            // that the deliveries of this very command find it.
            sinks.push(mailbox);
            let added = st.add_consumer(fx, state);
            if added.is_err() {
                sinks.pop();
                fx.clear();
            }
            added?;
            self.apply(&mut inner, fx, None);
            Ok(self.finish(inner, fx))
        })
    }

    /// Removes a consumer.
    pub fn remove_consumer(
        self: &Arc<Self>,
        conn: ConnId,
        channel: u16,
        tag: &ShortStr,
    ) -> Removed {
        with_effects(|fx| {
            let mut inner = self.lock();
            let Inner { st, sinks, .. } = &mut *inner;
            let (index, auto_delete_now) = st.remove_consumer(conn, channel, tag);
            if let Some(i) = index
                && i < sinks.len()
            {
                sinks.remove(i);
            }
            // Others may now get what the removed consumer could not take.
            st.dispatch(fx);
            self.apply(&mut inner, fx, None);
            Removed {
                found: index.is_some(),
                auto_delete_now,
                dead: self.finish(inner, fx),
            }
        })
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
            (conn, channel, consumer),
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
        self.settle_all((conn, channel, consumer), n, [], acked, Vec::new())
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
            (conn, channel, consumer),
            settled,
            requeue,
            Vec::new(),
            rejected,
        )
    }

    fn settle_all(
        self: &Arc<Self>,
        who: (ConnId, u16, Option<&ShortStr>),
        settled: u32,
        requeue: impl IntoIterator<Item = QueuedMessage>,
        acked: Vec<QueuedMessage>,
        mut rejected: Vec<QueuedMessage>,
    ) -> DeadLetters {
        let dead = with_effects(|fx| {
            let mut inner = self.lock();
            inner
                .st
                .settle(fx, who, settled, requeue, &acked, &mut rejected);
            self.apply(&mut inner, fx, None);
            self.finish(inner, fx)
        });
        // The lock is gone: freeing the settled messages (often the last
        // reference to each) no longer holds up the queue.
        drop((acked, rejected));
        dead
    }

    /// Delivers what the consumers have room for.
    pub fn dispatch(self: &Arc<Self>) -> DeadLetters {
        with_effects(|fx| {
            let mut inner = self.lock();
            inner.st.dispatch(fx);
            self.apply(&mut inner, fx, None);
            self.finish(inner, fx)
        })
    }

    /// Takes the head message for `basic.get`, with the number left. A
    /// paged-out head is read back first (with the lock released); if that
    /// fails the message stays queued and this get finds nothing for now.
    /// `ack`: the connection and channel that must settle the message, or
    /// `None` for no-ack.
    pub fn get(
        self: &Arc<Self>,
        now: Instant,
        ack: Option<(ConnId, u16)>,
    ) -> (Option<(QueuedMessage, u32)>, DeadLetters) {
        with_effects(|fx| {
            let mut inner = self.lock();
            let mut got = inner.st.get(fx, now, ack);
            if got.is_none() && inner.st.head_is_paged() {
                inner.st.need_load = true;
                inner = self.load(inner, fx);
                got = inner.st.get(fx, now, ack);
            }
            self.apply(&mut inner, fx, None);
            let left = u32::try_from(inner.st.ready_len()).unwrap_or(u32::MAX);
            let dead = self.finish(inner, fx);
            (got.map(|m| (m, left)), dead)
        })
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        with_effects(|fx| {
            let mut inner = self.lock();
            let n = inner.st.purge(fx);
            self.apply(&mut inner, fx, None);
            n
        })
    }

    /// The broker's tick: expires what is due and retries failed reads;
    /// returns true if the queue itself has been unused for longer than
    /// `x-expires` and should be deleted.
    pub fn expire(self: &Arc<Self>, now: Instant) -> (bool, DeadLetters) {
        let may_expire = self.may_expire.load(Ordering::Relaxed);
        with_effects(|fx| {
            let mut inner = self.lock();
            let unused = inner.st.tick(fx, now, may_expire);
            self.apply(&mut inner, fx, None);
            (unused, self.finish(inner, fx))
        })
    }

    /// Marks the queue deleted, drops its messages and tells every consumer
    /// (`basic.cancel`). Returns the number of ready messages it had.
    pub fn delete(&self, vhost: &str) -> u32 {
        let mut inner = self.lock();
        if self.deleted.swap(true, Ordering::AcqRel) {
            return 0;
        }
        with_effects(|fx| {
            let Inner { st, sinks, .. } = &mut *inner;
            let n = st.delete(fx, vhost, &self.spec.name);
            for (i, channel, consumer_tag) in fx.cancel.drain(..) {
                if let Some(sink) = sinks.get(i) {
                    sink.push(Event::Cancelled {
                        channel,
                        consumer_tag,
                    });
                }
            }
            sinks.clear();
            self.apply(&mut inner, fx, None);
            n
        })
    }

    /// Whether the queue has no consumers (RabbitMQ's `if-unused`).
    pub fn is_unused(&self) -> bool {
        !self.lock().st.has_consumers()
    }

    /// Reads of stored messages that failed so far (each was retried).
    pub fn load_failures(&self) -> u64 {
        self.lock().st.load_failures
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
    use std::collections::{HashMap, VecDeque};
    use std::sync::Weak;
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::mailbox::NoWake;
    use crate::message::{Message, Properties};
    use crate::persist::{LoadError, PersistOp};

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
                && q.inner.try_lock().is_err()
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
            expires_at: None,
            delivery_count: 0,
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
        assert!(q.get(Instant::now(), None).0.is_none());
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
        let (m, left) = q.get(Instant::now(), None).0.unwrap();
        assert_eq!((&m.message.body[..], left), (&b"m1"[..], 1));
        let (m, left) = q.get(Instant::now(), None).0.unwrap();
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
