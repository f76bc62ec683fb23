//! What the broker asks of durable storage, without knowing how it is done.
//!
//! Core code describes every change to durable state as a [`PersistOp`]
//! and hands it to a [`Persistence`] sink, in order. Ops are submitted while
//! the state they describe is still locked (a queue's enqueue under that
//! queue's lock), so the sink sees them in an order consistent with what
//! clients can observe: a message's `Enqueue` always precedes its `Dequeue`.
//! The sink (in the server) applies them in batches and, once a flush covers
//! a [`PersistOp::Barrier`], tells the connection waiting on it.

use std::sync::Arc;

use warren_codec::{FieldTable, ShortStr};

use crate::message::Message;

/// Where a stored binding leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingTarget {
    /// A queue, by name.
    Queue(ShortStr),
    /// An exchange, by name.
    Exchange(ShortStr),
}

/// One change to durable state.
#[derive(Debug)]
pub enum PersistOp {
    /// Store a persistent message's record (once, however many queues).
    Message {
        /// Store id.
        id: u64,
        /// The message.
        message: Arc<Message>,
    },
    /// Every queue a stored message was routed to has had its `Enqueue`
    /// submitted; a record no queue took can go.
    Routed {
        /// Message store id.
        id: u64,
    },
    /// A durable queue holds the message at `seq`.
    Enqueue {
        /// Queue store id.
        queue: u64,
        /// Position in the queue.
        seq: u64,
        /// Message store id.
        msg: u64,
        /// What recovery needs of it without reading the body.
        meta: EnqueueMeta,
    },
    /// The message at `seq` was delivered (it comes back redelivered).
    Delivered {
        /// Queue store id.
        queue: u64,
        /// Position in the queue.
        seq: u64,
        /// Message store id.
        msg: u64,
        /// Deliveries so far, this one included (a quorum queue's
        /// `x-delivery-count` after a restart).
        count: u32,
    },
    /// The queue no longer holds the message at `seq` (acked, dropped,
    /// expired, purged). The record goes when no queue holds it.
    Dequeue {
        /// Queue store id.
        queue: u64,
        /// Position in the queue.
        seq: u64,
        /// Message store id.
        msg: u64,
    },
    /// Tell a connection once everything before is durable.
    Barrier(Barrier),
    /// A persistent message held by a durable `x-delayed-message` exchange
    /// until `deadline` (wall-clock milliseconds since the Unix epoch).
    /// Its publisher's confirm waits for the flush that covers this.
    DelayedAdd {
        /// Where it is held, and its place there.
        key: DelayedRecordKey,
        /// The message as published (its `x-delay` header unchanged).
        message: Arc<Message>,
    },
    /// A held message was routed (or its exchange deleted). Submitted
    /// after the ops that put its copies on durable queues, so the store
    /// never holds neither: a crash between them routes it twice at
    /// worst, never loses it.
    DelayedRemove {
        /// Where it was held, and its place there.
        key: DelayedRecordKey,
    },
    /// A durable `x-message-deduplication` exchange with
    /// `x-cache-persistence: disk` cached an id (or cached it anew). Its
    /// publisher's confirm waits for the flush that covers this.
    DedupPut {
        /// The exchange and the id.
        key: DedupRecordKey,
        /// When the id expires, in wall-clock milliseconds since the Unix
        /// epoch; `None`: never (it stays until evicted).
        expires_ms: Option<u64>,
        /// Its insertion number, which orders the cache's ids for its
        /// size bound after a restart.
        order: u64,
    },
    /// A stored id left its cache (evicted, expired, the exchange
    /// deleted, or its cache no longer stored).
    DedupRemove {
        /// The exchange and the id.
        key: DedupRecordKey,
    },
    /// A durable exchange was declared.
    DeclareExchange {
        /// Vhost.
        vhost: String,
        /// Name.
        name: ShortStr,
        /// Type name.
        kind: String,
        /// Auto-delete.
        auto_delete: bool,
        /// Internal.
        internal: bool,
        /// Arguments.
        arguments: FieldTable,
    },
    /// Runtime administration: a user, permission or vhost changed.
    Admin(AdminOp),
    /// A durable exchange was deleted.
    DeleteExchange {
        /// Vhost.
        vhost: String,
        /// Name.
        name: ShortStr,
    },
    /// A durable queue was declared.
    DeclareQueue {
        /// Vhost.
        vhost: String,
        /// Store id.
        id: u64,
        /// Name.
        name: ShortStr,
        /// Auto-delete.
        auto_delete: bool,
        /// Arguments.
        arguments: FieldTable,
    },
    /// A durable queue was deleted, with every message it held.
    DeleteQueue {
        /// Vhost.
        vhost: String,
        /// Name.
        name: ShortStr,
        /// Store id.
        id: u64,
    },
    /// A binding between durable ends was added.
    Bind {
        /// Vhost.
        vhost: String,
        /// Source exchange.
        source: ShortStr,
        /// Destination.
        destination: BindingTarget,
        /// Binding key.
        routing_key: ShortStr,
        /// Arguments.
        arguments: FieldTable,
    },
    /// A stored binding was removed.
    Unbind {
        /// Vhost.
        vhost: String,
        /// Source exchange.
        source: ShortStr,
        /// Destination.
        destination: BindingTarget,
        /// Binding key.
        routing_key: ShortStr,
        /// Arguments.
        arguments: FieldTable,
    },
}

/// What the store keeps of a queue entry beside its message id, so that
/// recovery restores the queue's byte count, priorities and message
/// deadlines without reading a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnqueueMeta {
    /// Body size in bytes.
    pub bytes: u32,
    /// Priority property (0 when none).
    pub priority: u8,
    /// Time to live in this queue from now, in milliseconds (`u32::MAX`
    /// for longer); `None` when the message does not expire.
    pub ttl_ms: Option<u32>,
}

/// Where a stored delayed message is held: the key of its record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DelayedRecordKey {
    /// Vhost.
    pub vhost: String,
    /// The `x-delayed-message` exchange.
    pub exchange: ShortStr,
    /// When it is routed, in wall-clock milliseconds since the Unix epoch.
    pub deadline: u64,
    /// Unique within the exchange.
    pub seq: u64,
}

/// A stored deduplication id: the key of its record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DedupRecordKey {
    /// Vhost.
    pub vhost: String,
    /// The `x-message-deduplication` exchange.
    pub exchange: ShortStr,
    /// The id, as `DedupKey::to_bytes` writes it (opaque to the store).
    pub id: bytes::Bytes,
}

/// The durable store as the broker sees it.
pub trait Persistence: Send + Sync + std::fmt::Debug {
    /// Queues an op; never blocks.
    fn submit(&self, op: PersistOp);
    /// Queues several ops, in order (one queue command's); never blocks.
    fn submit_all(&self, ops: Vec<PersistOp>) {
        for op in ops {
            self.submit(op);
        }
    }
    /// Reads a stored message back (for messages paged out of memory):
    /// `Ok(None)` only when the store knows it does not hold the message;
    /// an error says nothing about whether it does. Called with no lock
    /// held.
    fn load(&self, id: u64) -> Result<Option<Arc<Message>>, LoadError>;
    /// Reads several stored messages (the head of a paged-out backlog),
    /// in the order asked; the store may merge reads of records that lie
    /// together. Called with no lock held.
    fn load_many(&self, ids: &[u64]) -> Vec<Result<Option<Arc<Message>>, LoadError>> {
        ids.iter().map(|id| self.load(*id)).collect()
    }
}

/// A failed read of a stored message (an IO or decode error): the message
/// may well still be there, so it is kept queued and read again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// A connection waiting for flushes: told when one covering its barrier
/// has finished (the mailbox implements it; the store knows no more of
/// connections than this).
pub trait Waiter: Send + Sync + std::fmt::Debug {
    /// The flush covering `barrier` finished; `ok`: it was written.
    fn flushed(self: Arc<Self>, channel: u16, what: Awaited, ok: bool);
}

/// What a connection waits for a flush to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The publisher confirm for publish `seq`.
    Confirm(u64),
    /// `tx.commit-ok`.
    TxCommit,
}

/// Who waits for a flush, and what to tell them once it is done.
#[derive(Debug)]
pub struct Barrier {
    /// The waiting connection.
    pub waiter: Arc<dyn Waiter>,
    /// Its channel.
    pub channel: u16,
    /// What it will send.
    pub what: Awaited,
}

impl Barrier {
    /// The flush covering this barrier finished; `ok`: it was written.
    pub fn release(self, ok: bool) {
        self.waiter.flushed(self.channel, self.what, ok);
    }
}

/// A broker's durable store and the id counters for what it stores.
#[derive(Debug)]
pub struct Durability {
    store: Arc<dyn Persistence>,
    next_message: std::sync::atomic::AtomicU64,
    next_queue: std::sync::atomic::AtomicU64,
}

impl Durability {
    /// Wraps a store whose highest used ids are `max_message` and `max_queue`.
    pub fn new(store: Arc<dyn Persistence>, max_message: u64, max_queue: u64) -> Arc<Self> {
        Arc::new(Durability {
            store,
            next_message: std::sync::atomic::AtomicU64::new(max_message + 1),
            next_queue: std::sync::atomic::AtomicU64::new(max_queue + 1),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Persistence> {
        &self.store
    }

    /// A fresh message id.
    pub fn message_id(&self) -> u64 {
        self.next_message
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A fresh queue id.
    pub fn queue_id(&self) -> u64 {
        self.next_queue
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Submits an op.
    pub fn submit(&self, op: PersistOp) {
        self.store.submit(op);
    }
}

/// A change to users, permissions or vhosts, to be stored in order with
/// everything else.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminOp {
    /// A user was created or changed.
    PutUser {
        /// Name.
        name: String,
        /// RabbitMQ's `password_hash` (salted SHA-256, base64); empty for
        /// no password.
        password_hash: String,
        /// Tags.
        tags: Vec<String>,
    },
    /// A user was deleted (with its permissions).
    DeleteUser {
        /// Name.
        name: String,
    },
    /// A user's permissions in a vhost were set.
    PutPermission(crate::access::PermissionSpec),
    /// A user's permissions in a vhost were cleared.
    DeletePermission {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
    },
    /// A user's topic permissions for an exchange were set.
    PutTopicPermission(crate::access::TopicPermissionSpec),
    /// A user's topic permissions for an exchange were cleared.
    DeleteTopicPermission {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
        /// Exchange.
        exchange: String,
    },
    /// A vhost was created or its metadata changed.
    PutVhost(crate::access::VhostMeta),
    /// A policy (or operator policy) was set.
    PutPolicy {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
        /// Pattern.
        pattern: String,
        /// `apply-to`.
        apply_to: String,
        /// Priority.
        priority: i64,
        /// Definition.
        definition: warren_codec::FieldTable,
        /// An operator policy.
        operator: bool,
    },
    /// A vhost's limits were set (none left: all cleared).
    PutVhostLimits {
        /// Vhost.
        vhost: String,
        /// The limits.
        limits: crate::access::VhostLimits,
    },
    /// A user's limits were set (none left: all cleared, or the user was
    /// deleted).
    PutUserLimits {
        /// The user.
        user: String,
        /// The limits.
        limits: crate::access::UserLimits,
    },
    /// A policy was deleted.
    DeletePolicy {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
        /// An operator policy.
        operator: bool,
    },
    /// A vhost was deleted (its queues, exchanges and bindings are
    /// deleted by their own ops before this one).
    DeleteVhost {
        /// Name.
        name: String,
    },
}
