//! Queues: ready messages in order, consumers with credit, and dispatch.
//!
//! A queue's mutable state sits behind one short `std::sync::Mutex`. It is
//! taken by whichever task publishes to, acks on, or consumes from the
//! queue, never across an await, and the only lock taken while holding it is
//! a consumer connection's [`Mailbox`] (lock order: queue, then mailbox).
//!
//! Messages carry a per-queue sequence number, so a requeued message goes
//! back to its original place rather than to the tail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use warren_codec::{FieldTable, ShortStr};

use crate::mailbox::{Event, Mailbox};
use crate::message::Message;

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

/// A message in a queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue; requeues go back here.
    pub seq: u64,
    /// The shared message.
    pub message: Arc<Message>,
    /// Whether it has been delivered before.
    pub redelivered: bool,
}

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
        !self.ack || self.prefetch == 0 || self.in_flight < self.prefetch
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
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// What it was declared with.
    pub spec: QueueSpec,
    deleted: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<QueuedMessage>,
    next_seq: u64,
    consumers: Vec<Consumer>,
    /// Index to start the next round-robin scan at.
    cursor: usize,
    /// Set once a consumer has ever subscribed (auto-delete waits for that).
    had_consumer: bool,
}

/// Result of removing a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Whether a consumer was found.
    pub found: bool,
    /// The queue is auto-delete and has just lost its last consumer.
    pub auto_delete_now: bool,
}

impl Queue {
    /// A new, empty queue.
    pub fn new(spec: QueueSpec) -> Arc<Self> {
        Arc::new(Queue {
            spec,
            deleted: AtomicBool::new(false),
            state: Mutex::new(State::default()),
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

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Whether `conn` may use this queue (405 otherwise).
    pub fn accessible_by(&self, conn: ConnId) -> bool {
        self.spec.exclusive_owner.is_none_or(|owner| owner == conn)
    }

    /// Appends a message and delivers what consumers can take.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.ready.push_back(QueuedMessage {
            seq,
            message,
            redelivered: false,
        });
        Self::dispatch_locked(self, &mut st);
    }

    /// Ready messages (not counting unacknowledged ones), as `declare-ok`
    /// reports them.
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.lock().ready.len()).unwrap_or(u32::MAX)
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.lock().consumers.len()).unwrap_or(u32::MAX)
    }

    /// Ready messages and consumers in one look.
    pub fn counts(&self) -> (u32, u32) {
        let st = self.lock();
        (
            u32::try_from(st.ready.len()).unwrap_or(u32::MAX),
            u32::try_from(st.consumers.len()).unwrap_or(u32::MAX),
        )
    }

    /// Adds a consumer and starts delivering to it.
    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), ConsumeRefused> {
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
        Self::dispatch_locked(self, &mut st);
        Ok(())
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
        // Others may now get what the removed consumer could not take.
        Self::dispatch_locked(self, &mut st);
        Removed {
            found,
            auto_delete_now: found && self.spec.auto_delete && st.consumers.is_empty(),
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
    ) {
        let mut st = self.lock();
        if let Some(tag) = consumer
            && let Some(c) = st.consumers.iter_mut().find(|c| c.is(conn, channel, tag))
        {
            c.in_flight = c.in_flight.saturating_sub(settled);
        }
        let mut any = false;
        for m in requeue {
            if self.is_deleted() {
                break;
            }
            // Requeued messages are usually older than everything ready.
            let pos = st.ready.partition_point(|r| r.seq < m.seq);
            st.ready.insert(pos, m);
            any = true;
        }
        if any || settled > 0 {
            Self::dispatch_locked(self, &mut st);
        }
    }

    /// Delivers what the consumers have room for.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.lock();
        Self::dispatch_locked(self, &mut st);
    }

    fn dispatch_locked(this: &Arc<Queue>, st: &mut State) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(i) = Self::pick(st) else { break };
            let Some(message) = st.ready.pop_front() else {
                break;
            };
            let c = &mut st.consumers[i];
            if c.ack {
                c.in_flight += 1;
            }
            c.mailbox.push(Event::Deliver {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
                ack: c.ack,
                queue: Arc::clone(this),
                message,
            });
            st.cursor = i + 1;
        }
    }

    /// Picks the next consumer with room: the highest priority first,
    /// round-robin among equals. Takes channel credit for the one chosen.
    fn pick(st: &mut State) -> Option<usize> {
        let n = st.consumers.len();
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
    pub fn get(&self) -> Option<(QueuedMessage, u32)> {
        let mut st = self.lock();
        let m = st.ready.pop_front()?;
        Some((m, u32::try_from(st.ready.len()).unwrap_or(u32::MAX)))
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let n = st.ready.len();
        st.ready.clear();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Marks the queue deleted, drops its messages and tells every consumer
    /// (`basic.cancel`). Returns the number of ready messages it had.
    pub fn delete(&self) -> u32 {
        let mut st = self.lock();
        self.deleted.store(true, Ordering::Release);
        let n = u32::try_from(st.ready.len()).unwrap_or(u32::MAX);
        st.ready.clear();
        for c in st.consumers.drain(..) {
            c.mailbox.push(Event::Cancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
        n
    }

    /// Whether consumers other than on `conn`'s channel exist is irrelevant
    /// to RabbitMQ's `if-unused`: any consumer makes the queue used.
    pub fn is_unused(&self) -> bool {
        self.lock().consumers.is_empty()
    }
}
