//! What the persistence thread needs from durable storage ([`Journal`]),
//! that over sled ([`warren_store::Store`]), and an in-memory journal
//! ([`MemJournal`]) that tests can make fail and crash at any step.
//!
//! The thread describes each atomic group of writes as a slice of
//! [`Write`]s in the order its ops came; the journal applies the group
//! all together or not at all, and [`Journal::flush`] makes every group
//! applied before it durable. That is the whole contract the group-commit
//! and confirm-after-flush logic in [`crate::persistence`] relies on, so
//! [`MemJournal`] checks that logic in milliseconds where sled takes a
//! data directory and fsyncs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use warren_codec::ShortStr;
use warren_core::Message;
use warren_core::access::VhostMeta;
use warren_core::access::{PermissionSpec, TopicPermissionSpec};
use warren_core::persist::{AdminOp, DedupRecordKey, DelayedRecordKey, EnqueueMeta};
use warren_store::{
    Batch, BindingRecord, DedupRecord, Definitions, DelayedRecord, ExchangeRecord, IndexEntry,
    IndexedMessage, MessageOp, MessageStore, PermissionRecord, PolicyRecord, QueueRecord, Store,
    StoreError, StoredMessage, TopicPermissionRecord, UserRecord, VhostRecord,
};

/// One write in an atomic group. Later writes to the same record replace
/// earlier ones, as in a [`warren_store::Batch`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Store message `id`'s record (once, however many queues hold it).
    PutMessage(u64, Arc<Message>),
    /// Delete message `id`'s record (no queue holds it any more).
    DeleteMessage(u64),
    /// Queue `queue` holds message `msg` at `seq`, not yet delivered.
    Enqueue {
        /// Queue store id.
        queue: u64,
        /// Position in the queue.
        seq: u64,
        /// Message store id.
        msg: u64,
        /// Size, priority and time to live.
        meta: EnqueueMeta,
    },
    /// The entry at `seq` was delivered (it comes back redelivered).
    Delivered {
        /// Queue store id.
        queue: u64,
        /// Position in the queue.
        seq: u64,
        /// Message store id.
        msg: u64,
        /// Deliveries so far.
        count: u32,
    },
    /// Queue `queue` no longer holds the entry at `seq`.
    Dequeue {
        /// Queue store id.
        queue: u64,
        /// Position in the queue.
        seq: u64,
        /// Message store id (not written; it lets the thread drop the
        /// writes of a message that lived and died within one batch).
        msg: u64,
    },
    /// A change to a definition: rare, so boxed to keep the message writes
    /// (most of every batch) small.
    Definition(Box<DefinitionWrite>),
    /// A message held by a delayed exchange, stored or removed; boxed for
    /// the same reason.
    Delayed(Box<DelayedWrite>),
    /// An id cached by a deduplication exchange with a disk cache, stored
    /// or removed; boxed for the same reason.
    Dedup(Box<DedupWrite>),
}

/// A write to the deduplication ids.
#[derive(Debug, Clone)]
pub enum DedupWrite {
    /// Store an id with its expiry (wall-clock ms; `None`: never) and
    /// insertion number.
    Put(DedupRecordKey, Option<u64>, u64),
    /// Remove it (evicted, expired, or its exchange deleted).
    Delete(DedupRecordKey),
}

/// A write to the delayed messages.
#[derive(Debug, Clone)]
pub enum DelayedWrite {
    /// Store a held message under its key.
    Put(DelayedRecordKey, Arc<Message>),
    /// Remove it (routed, or its exchange deleted).
    Delete(DelayedRecordKey),
}

/// A write to the definitions.
#[derive(Debug, Clone)]
pub enum DefinitionWrite {
    /// Store an exchange definition.
    PutExchange(ExchangeRecord),
    /// Delete an exchange definition.
    DeleteExchange {
        /// Vhost.
        vhost: String,
        /// Name.
        name: ShortStr,
    },
    /// Store a queue definition.
    PutQueue(QueueRecord),
    /// Delete a queue definition (its index goes with
    /// [`Journal::purge_queue_index`]).
    DeleteQueue {
        /// Vhost.
        vhost: String,
        /// Name.
        name: ShortStr,
    },
    /// Store a binding.
    PutBinding(BindingRecord),
    /// Delete a binding.
    DeleteBinding(BindingRecord),
    /// Users, permissions, vhosts.
    Admin(AdminOp),
}

impl Write {
    /// The message this write is about, if any.
    pub fn message(&self) -> Option<u64> {
        match self {
            Write::PutMessage(id, _) | Write::DeleteMessage(id) => Some(*id),
            Write::Enqueue { msg, .. }
            | Write::Delivered { msg, .. }
            | Write::Dequeue { msg, .. } => Some(*msg),
            Write::Definition(_) | Write::Delayed(_) | Write::Dedup(_) => None,
        }
    }
}

/// A message as the store keeps it (what [`Journal::load_message`] returns).
pub fn stored(m: &Message) -> StoredMessage {
    StoredMessage {
        exchange: m.exchange.clone(),
        routing_key: m.routing_key.clone(),
        properties: (*m.properties).clone(),
        body: m.body.clone(),
    }
}

/// A held message as the store keeps it.
pub fn delayed_record(k: &DelayedRecordKey, m: &Message) -> DelayedRecord {
    DelayedRecord {
        vhost: k.vhost.clone(),
        exchange: k.exchange.clone(),
        deadline: k.deadline,
        seq: k.seq,
        message: stored(m),
    }
}

/// A stored deduplication id as the store keeps it.
pub fn dedup_record(k: &DedupRecordKey, expires_ms: Option<u64>, order: u64) -> DedupRecord {
    DedupRecord {
        vhost: k.vhost.clone(),
        exchange: k.exchange.clone(),
        id: k.id.clone(),
        expires_ms,
        order,
    }
}

/// RabbitMQ's name for the hash [`warren_core::password::Password`] uses.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

fn user_record(op: &AdminOp) -> Option<UserRecord> {
    match op {
        AdminOp::PutUser {
            name,
            password_hash,
            tags,
        } => Some(UserRecord {
            name: name.clone(),
            password_hash: password_hash.clone(),
            hashing_algorithm: SHA256.to_string(),
            tags: tags.clone(),
        }),
        _ => None,
    }
}

fn permission_record(p: &PermissionSpec) -> PermissionRecord {
    PermissionRecord {
        user: p.user.clone(),
        vhost: p.vhost.clone(),
        configure: p.configure.clone(),
        write: p.write.clone(),
        read: p.read.clone(),
    }
}

fn topic_record(t: &TopicPermissionSpec) -> TopicPermissionRecord {
    TopicPermissionRecord {
        user: t.user.clone(),
        vhost: t.vhost.clone(),
        exchange: t.exchange.clone(),
        write: t.write.clone(),
        read: t.read.clone(),
    }
}

/// A vhost's metadata as the store keeps it.
pub fn vhost_record(m: &VhostMeta) -> VhostRecord {
    VhostRecord {
        name: m.name.clone(),
        description: m.description.clone(),
        tags: m.tags.clone(),
        default_queue_type: m.default_queue_type.clone(),
    }
}

/// Adds an administrative change to a store batch.
pub fn admin_to_batch(batch: &mut Batch, op: &AdminOp) {
    match op {
        AdminOp::PutUser { .. } => {
            if let Some(r) = user_record(op) {
                batch.put_user(&r);
            }
        }
        AdminOp::DeleteUser { name } => batch.delete_user(name),
        AdminOp::PutPermission(p) => batch.put_permission(&permission_record(p)),
        AdminOp::DeletePermission { user, vhost } => batch.delete_permission(user, vhost),
        AdminOp::PutTopicPermission(t) => batch.put_topic_permission(&topic_record(t)),
        AdminOp::DeleteTopicPermission {
            user,
            vhost,
            exchange,
        } => batch.delete_topic_permission(user, vhost, exchange),
        AdminOp::PutVhost(m) => batch.put_vhost_record(&vhost_record(m)),
        AdminOp::DeleteVhost { name } => batch.delete_vhost(name),
        AdminOp::PutPolicy { .. } => {
            if let Some(r) = policy_record(op) {
                batch.put_policy(&r);
            }
        }
        AdminOp::DeletePolicy {
            vhost,
            name,
            operator,
        } => batch.delete_policy(vhost, name, *operator),
        AdminOp::PutVhostLimits { vhost, limits } => {
            let text = limits_text(limits);
            if text.is_empty() {
                batch.delete_setting(&limits_setting(vhost));
            } else {
                batch.put_setting(&limits_setting(vhost), text.as_bytes());
            }
        }
        AdminOp::PutUserLimits { user, limits } => {
            if limits.is_empty() {
                batch.delete_setting(&user_limits_setting(user));
            } else {
                let text = user_limits_text(limits);
                batch.put_setting(&user_limits_setting(user), text.as_bytes());
            }
        }
    }
}

/// The setting a user's limits are stored under.
pub fn user_limits_setting(user: &str) -> String {
    format!("user-limits/{user}")
}

/// A user's limits as stored: `name=value` lines, RabbitMQ's names.
pub fn user_limits_text(l: &warren_core::access::UserLimits) -> String {
    l.entries()
        .iter()
        .map(|(name, n)| format!("{name}={n}\n"))
        .collect()
}

/// Reads [`user_limits_text`] back (unknown lines are ignored).
pub fn parse_user_limits(text: &str) -> warren_core::access::UserLimits {
    let mut l = warren_core::access::UserLimits::default();
    for line in text.lines() {
        if let Some((name, v)) = line.split_once('=')
            && let Some(slot) = l.get_mut(name)
        {
            *slot = v.trim().parse().ok();
        }
    }
    l
}

/// The setting a vhost's limits are stored under.
pub fn limits_setting(vhost: &str) -> String {
    format!("vhost-limits/{vhost}")
}

/// A vhost's limits as stored: `name=value` lines.
pub fn limits_text(l: &warren_core::access::VhostLimits) -> String {
    let mut out = String::new();
    if let Some(n) = l.max_connections {
        out.push_str(&format!("max-connections={n}\n"));
    }
    if let Some(n) = l.max_queues {
        out.push_str(&format!("max-queues={n}\n"));
    }
    out
}

/// Reads [`limits_text`] back (unknown lines are ignored).
pub fn parse_limits(text: &str) -> warren_core::access::VhostLimits {
    let mut l = warren_core::access::VhostLimits::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("max-connections", v)) => l.max_connections = v.trim().parse().ok(),
            Some(("max-queues", v)) => l.max_queues = v.trim().parse().ok(),
            _ => {}
        }
    }
    l
}

/// A policy as the store keeps it: its definition as RabbitMQ's JSON.
fn policy_record(op: &AdminOp) -> Option<PolicyRecord> {
    match op {
        AdminOp::PutPolicy {
            vhost,
            name,
            pattern,
            apply_to,
            priority,
            definition,
            operator,
        } => Some(PolicyRecord {
            vhost: vhost.clone(),
            name: name.clone(),
            pattern: pattern.clone(),
            apply_to: apply_to.clone(),
            priority: *priority,
            definition: warren_management::json::table_to_json(definition).to_string(),
            operator: *operator,
        }),
        _ => None,
    }
}

/// Durable storage as the persistence thread uses it. Every method blocks;
/// only the persistence thread writes, [`Journal::load_message`] is also
/// called from connection tasks (with no lock held).
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Applies `writes` in order, atomically: after a crash either all of
    /// them are there or none. Visible to reads at once, durable only after
    /// the next [`Journal::flush`]; a crash before it keeps a prefix of the
    /// groups applied since the last flush (purges included), never a
    /// later group without an earlier one. An empty slice writes nothing.
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError>;
    /// Returns once everything applied before the call is durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Removes every index entry of `queue` in one atomic write and returns
    /// their message ids in seq order.
    fn purge_queue_index(&self, queue: u64) -> Result<Vec<u64>, StoreError>;
    /// Reads message `id`: `Ok(None)` only when it is certainly absent.
    fn load_message(&self, id: u64) -> Result<Option<StoredMessage>, StoreError>;
    /// Reads several messages, in the order asked.
    fn load_messages(&self, ids: &[u64]) -> Vec<Result<Option<StoredMessage>, StoreError>> {
        ids.iter().map(|id| self.load_message(*id)).collect()
    }
    /// Whether the last failed [`Journal::apply`] left nothing applied,
    /// so that the same writes can be applied again (a full disk). When
    /// false, part of the group was applied and the rest is lost.
    fn retryable(&self) -> bool {
        true
    }
    /// Whether a write to sled failed: sled 0.34 then retries its final
    /// flush forever when dropped, so the store must be leaked instead.
    fn poisoned(&self) -> bool {
        false
    }
    /// Housekeeping between batches (checkpoints, giving space back);
    /// whether it did anything.
    fn maintain(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Whether the storage takes writes again (after a full disk was freed).
    /// It may flush.
    fn probe(&self) -> Result<(), StoreError>;
    /// Bytes of the part of the storage [`Journal::compact`] rewrites.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Gives that part's space back; returns its size before and after.
    fn compact(&self) -> Result<(u64, u64), StoreError>;
}

/// The broker's storage: message bodies and queue indexes in the
/// segment-file [`MessageStore`], definitions, administration records and
/// delayed messages in sled ([`Store`]).
///
/// A group's message writes go to the log before its definition writes
/// go to sled, and a flush syncs the log before sled: sled may write its
/// buffer out at any time, so a record it holds never depends on a log
/// write not yet made (a delayed message's removal after its copies were
/// enqueued).
#[derive(Debug)]
pub struct DiskJournal {
    /// Definitions and the rest.
    pub defs: Arc<Store>,
    /// Messages and queue indexes.
    pub messages: MessageStore,
    /// sled has writes not yet flushed.
    defs_dirty: std::sync::atomic::AtomicBool,
    /// The last failed apply wrote the messages but not the definitions.
    partial: std::sync::atomic::AtomicBool,
    /// A sled write or flush failed.
    poisoned: std::sync::atomic::AtomicBool,
}

impl DiskJournal {
    /// Both stores, opened.
    pub fn new(defs: Arc<Store>, messages: MessageStore) -> Self {
        DiskJournal {
            defs,
            messages,
            defs_dirty: std::sync::atomic::AtomicBool::new(false),
            partial: std::sync::atomic::AtomicBool::new(false),
            poisoned: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Journal for DiskJournal {
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let now = wall_ms();
        let mut ops: Vec<MessageOp<'_>> = Vec::with_capacity(writes.len());
        let mut batch = Batch::default();
        for w in writes {
            match w {
                Write::PutMessage(id, m) => ops.push(MessageOp::Put {
                    id: *id,
                    exchange: &m.exchange,
                    routing_key: &m.routing_key,
                    properties: &m.properties,
                    body: &m.body,
                }),
                Write::DeleteMessage(id) => ops.push(MessageOp::Forget(*id)),
                Write::Enqueue {
                    queue,
                    seq,
                    msg,
                    meta,
                } => ops.push(MessageOp::Enqueue {
                    queue: *queue,
                    entry: IndexedMessage {
                        seq: *seq,
                        msg: *msg,
                        bytes: meta.bytes,
                        priority: meta.priority,
                        expires_ms: meta
                            .ttl_ms
                            .map_or(0, |t| now.saturating_add(u64::from(t)).max(1)),
                        delivery_count: 0,
                    },
                }),
                Write::Delivered {
                    queue, seq, count, ..
                } => ops.push(MessageOp::Delivered {
                    queue: *queue,
                    seq: *seq,
                    count: *count,
                }),
                Write::Dequeue { queue, seq, .. } => ops.push(MessageOp::Dequeue {
                    queue: *queue,
                    seq: *seq,
                }),
                Write::Delayed(d) => match &**d {
                    DelayedWrite::Put(k, m) => batch.put_delayed(&delayed_record(k, m)),
                    DelayedWrite::Delete(k) => {
                        batch.delete_delayed(&k.vhost, &k.exchange, k.deadline, k.seq)
                    }
                },
                Write::Dedup(d) => match &**d {
                    DedupWrite::Put(k, expires_ms, order) => {
                        batch.put_dedup(&dedup_record(k, *expires_ms, *order))
                    }
                    DedupWrite::Delete(k) => batch.delete_dedup(&k.vhost, &k.exchange, &k.id),
                },
                Write::Definition(d) => match &**d {
                    DefinitionWrite::PutExchange(r) => batch.put_exchange(r),
                    DefinitionWrite::DeleteExchange { vhost, name } => {
                        batch.delete_exchange(vhost, name)
                    }
                    DefinitionWrite::PutQueue(r) => batch.put_queue(r),
                    DefinitionWrite::DeleteQueue { vhost, name } => batch.delete_queue(vhost, name),
                    DefinitionWrite::PutBinding(r) => batch.put_binding(r),
                    DefinitionWrite::DeleteBinding(r) => batch.delete_binding(r),
                    DefinitionWrite::Admin(op) => admin_to_batch(&mut batch, op),
                },
            }
        }
        self.partial.store(false, Ordering::Relaxed);
        self.messages.apply(&ops)?;
        if !batch.is_empty() {
            self.defs_dirty.store(true, Ordering::Relaxed);
            if let Err(e) = Store::apply(&self.defs, batch) {
                self.partial.store(true, Ordering::Relaxed);
                self.poisoned.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.messages.flush()?;
        if self
            .defs_dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Err(e) = Store::flush(&self.defs)
        {
            self.defs_dirty
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.poisoned
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn purge_queue_index(&self, queue: u64) -> Result<Vec<u64>, StoreError> {
        self.messages.purge_queue(queue)
    }

    fn load_message(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        self.messages.load(id)
    }

    fn load_messages(&self, ids: &[u64]) -> Vec<Result<Option<StoredMessage>, StoreError>> {
        self.messages.load_many(ids)
    }

    fn retryable(&self) -> bool {
        !self.partial.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn poisoned(&self) -> bool {
        self.poisoned.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn maintain(&self) -> Result<bool, StoreError> {
        self.messages.maintain()
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.messages.probe()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        // The message store gives its space back as it goes
        // ([`Journal::maintain`]); compaction is sled's.
        Store::size_on_disk(&self.defs)
    }

    fn compact(&self) -> Result<(u64, u64), StoreError> {
        Store::compact(&self.defs)
    }
}

/// Everything a store holds at one moment, as recovery reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image {
    /// Message records by id.
    pub messages: BTreeMap<u64, StoredMessage>,
    /// Queue index entries by (queue id, seq).
    pub index: BTreeMap<(u64, u64), IndexEntry>,
    /// Queue definitions by (vhost, name).
    pub queues: BTreeMap<(String, ShortStr), QueueRecord>,
    /// Exchange definitions by (vhost, name).
    pub exchanges: BTreeMap<(String, ShortStr), ExchangeRecord>,
    /// Bindings (equal ones are stored once).
    pub bindings: Vec<BindingRecord>,
    /// Vhosts by name.
    pub vhosts: BTreeMap<String, VhostRecord>,
    /// Users by name.
    pub users: BTreeMap<String, UserRecord>,
    /// Permissions by (user, vhost).
    pub permissions: BTreeMap<(String, String), PermissionRecord>,
    /// Topic permissions by (user, vhost, exchange).
    pub topic_permissions: BTreeMap<(String, String, String), TopicPermissionRecord>,
    /// Policies by (vhost, name, operator).
    pub policies: BTreeMap<(String, String, bool), PolicyRecord>,
    /// Messages held by delayed exchanges, by key.
    pub delayed: BTreeMap<DelayedRecordKey, StoredMessage>,
    /// Ids cached by deduplication exchanges with a disk cache: (expiry,
    /// insertion number) by key.
    pub dedup: BTreeMap<DedupRecordKey, (Option<u64>, u64)>,
}

impl Image {
    /// Applies one write, as sled applies its encoding.
    pub fn apply(&mut self, w: &Write) {
        match w {
            Write::PutMessage(id, m) => {
                self.messages.insert(*id, stored(m));
            }
            Write::DeleteMessage(id) => {
                self.messages.remove(id);
            }
            Write::Enqueue {
                queue, seq, msg, ..
            }
            | Write::Delivered {
                queue, seq, msg, ..
            } => {
                let delivered = matches!(w, Write::Delivered { .. });
                self.index.insert(
                    (*queue, *seq),
                    IndexEntry {
                        seq: *seq,
                        msg_id: *msg,
                        delivered,
                    },
                );
            }
            Write::Dequeue { queue, seq, .. } => {
                self.index.remove(&(*queue, *seq));
            }
            Write::Definition(d) => self.apply_definition(d),
            Write::Delayed(d) => match &**d {
                DelayedWrite::Put(k, m) => {
                    self.delayed.insert(k.clone(), stored(m));
                }
                DelayedWrite::Delete(k) => {
                    self.delayed.remove(k);
                }
            },
            Write::Dedup(d) => match &**d {
                DedupWrite::Put(k, expires_ms, order) => {
                    self.dedup.insert(k.clone(), (*expires_ms, *order));
                }
                DedupWrite::Delete(k) => {
                    self.dedup.remove(k);
                }
            },
        }
    }

    fn apply_definition(&mut self, d: &DefinitionWrite) {
        match d {
            DefinitionWrite::PutExchange(r) => {
                self.exchanges
                    .insert((r.vhost.clone(), r.name.clone()), r.clone());
            }
            DefinitionWrite::DeleteExchange { vhost, name } => {
                self.exchanges.remove(&(vhost.clone(), name.clone()));
            }
            DefinitionWrite::PutQueue(r) => {
                self.queues
                    .insert((r.vhost.clone(), r.name.clone()), r.clone());
            }
            DefinitionWrite::DeleteQueue { vhost, name } => {
                self.queues.remove(&(vhost.clone(), name.clone()));
            }
            DefinitionWrite::PutBinding(r) => {
                if !self.bindings.contains(r) {
                    self.bindings.push(r.clone());
                }
            }
            DefinitionWrite::DeleteBinding(r) => self.bindings.retain(|b| b != r),
            DefinitionWrite::Admin(op) => self.apply_admin(op),
        }
    }

    fn apply_admin(&mut self, op: &AdminOp) {
        match op {
            AdminOp::PutUser { .. } => {
                if let Some(r) = user_record(op) {
                    self.users.insert(r.name.clone(), r);
                }
            }
            AdminOp::DeleteUser { name } => {
                self.users.remove(name);
            }
            AdminOp::PutPermission(p) => {
                self.permissions
                    .insert((p.user.clone(), p.vhost.clone()), permission_record(p));
            }
            AdminOp::DeletePermission { user, vhost } => {
                self.permissions.remove(&(user.clone(), vhost.clone()));
            }
            AdminOp::PutTopicPermission(t) => {
                self.topic_permissions.insert(
                    (t.user.clone(), t.vhost.clone(), t.exchange.clone()),
                    topic_record(t),
                );
            }
            AdminOp::DeleteTopicPermission {
                user,
                vhost,
                exchange,
            } => {
                self.topic_permissions
                    .remove(&(user.clone(), vhost.clone(), exchange.clone()));
            }
            AdminOp::PutVhost(m) => {
                self.vhosts.insert(m.name.clone(), vhost_record(m));
            }
            AdminOp::DeleteVhost { name } => {
                self.vhosts.remove(name);
            }
            AdminOp::PutPolicy { .. } => {
                if let Some(r) = policy_record(op) {
                    self.policies
                        .insert((r.vhost.clone(), r.name.clone(), r.operator), r);
                }
            }
            AdminOp::DeletePolicy {
                vhost,
                name,
                operator,
            } => {
                self.policies
                    .remove(&(vhost.clone(), name.clone(), *operator));
            }
            // Settings are not part of definitions.
            AdminOp::PutVhostLimits { .. } | AdminOp::PutUserLimits { .. } => {}
        }
    }

    /// The index entries of `queue`, in seq order.
    pub fn queue_index(&self, queue: u64) -> Vec<IndexEntry> {
        self.index
            .range((queue, 0)..=(queue, u64::MAX))
            .map(|(_, e)| *e)
            .collect()
    }

    /// The definitions, as [`Store::definitions`] returns them (no vhost
    /// records: the persistence thread writes none).
    pub fn definitions(&self) -> Definitions {
        Definitions {
            vhosts: self.vhosts.values().cloned().collect(),
            exchanges: self.exchanges.values().cloned().collect(),
            queues: self.queues.values().cloned().collect(),
            bindings: self.bindings.clone(),
            users: self.users.values().cloned().collect(),
            permissions: self.permissions.values().cloned().collect(),
            topic_permissions: self.topic_permissions.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
        }
    }

    /// Removes `queue`'s index; returns what it held, in seq order.
    fn purge(&mut self, queue: u64) -> Vec<IndexEntry> {
        let removed = self.queue_index(queue);
        for e in &removed {
            self.index.remove(&(queue, e.seq));
        }
        removed
    }
}

/// One step a [`MemJournal`] took, in order: what a crash can cut short.
#[derive(Debug, Clone)]
pub enum Event {
    /// An atomic group of writes was applied.
    Apply(Vec<Write>),
    /// A queue's index was purged in one atomic write.
    Purge {
        /// The queue.
        queue: u64,
        /// The entries removed, in seq order.
        removed: Vec<IndexEntry>,
    },
    /// Everything applied before became durable.
    Flush,
}

/// A failure [`MemJournal::inject`] arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// [`Journal::apply`] fails, applying nothing: the same writes can be
    /// applied again (a full disk).
    Apply,
    /// [`Journal::apply`] fails and its writes are lost: not retryable,
    /// as when a store applied part of a group.
    ApplyLost,
    /// [`Journal::flush`] fails; what was applied stays applied and the
    /// next successful flush makes it durable.
    Flush,
    /// [`Journal::purge_queue_index`] fails, removing nothing.
    Purge,
    /// [`Journal::probe`] fails.
    Probe,
}

/// An in-memory [`Journal`] with two layers: what is applied (what reads
/// see) and what is durable (what a crash keeps). It logs every step
/// ([`Event`]), so a test can ask what a restart would have found had the
/// process died after any of them ([`MemJournal::image_after`]).
///
/// A crash loses everything applied since the last flush, except that
/// the groups applied since then may have reached the disk in part: any
/// prefix of them, each whole (sled writes its log in order and applies a
/// batch atomically).
#[derive(Debug, Default)]
pub struct MemJournal {
    // A std Mutex: held only for the length of one call, never across a
    // wait. The persistence thread is the only writer; loads and test
    // reads come from other threads.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// What the journal held when it was made (a restart's image).
    base: Image,
    applied: Image,
    log: Vec<Event>,
    /// Per kind: how many more calls fail, and how many failed so far.
    faults: Vec<(Fault, u32, u32)>,
    /// The last failed apply was [`Fault::ApplyLost`].
    lost: bool,
}

impl Inner {
    /// Consumes one armed failure of kind `f`, if any.
    fn trip(&mut self, f: Fault) -> Result<(), StoreError> {
        if let Some((_, armed, fired)) = self.faults.iter_mut().find(|(k, n, _)| *k == f && *n > 0)
        {
            *armed -= 1;
            *fired += 1;
            return Err(StoreError::Io(format!("injected {f:?} failure")));
        }
        Ok(())
    }
}

impl MemJournal {
    /// An empty journal.
    pub fn new() -> Self {
        MemJournal::default()
    }

    /// A journal that starts out holding `image`, durable: the store a
    /// restart after a crash opens.
    pub fn recovered(image: Image) -> Self {
        MemJournal {
            inner: Mutex::new(Inner {
                base: image.clone(),
                applied: image,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not hide what the journal holds.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `times` calls of kind `fault` fail (0 disarms).
    pub fn inject(&self, fault: Fault, times: u32) {
        let mut inner = self.lock();
        match inner.faults.iter_mut().find(|(k, _, _)| *k == fault) {
            Some((_, armed, _)) => *armed = times,
            None => inner.faults.push((fault, times, 0)),
        }
    }

    /// How many calls of kind `fault` failed so far.
    pub fn failures(&self, fault: Fault) -> u32 {
        let inner = self.lock();
        inner
            .faults
            .iter()
            .find(|(k, _, _)| *k == fault)
            .map_or(0, |(_, _, fired)| *fired)
    }

    /// Number of steps taken so far (the length of [`MemJournal::history`]).
    pub fn events(&self) -> usize {
        self.lock().log.len()
    }

    /// Every step taken so far.
    pub fn history(&self) -> Vec<Event> {
        self.lock().log.clone()
    }

    /// What reads see now.
    pub fn applied(&self) -> Image {
        self.lock().applied.clone()
    }

    /// What a crash now would keep at the least.
    pub fn durable(&self) -> Image {
        let events = self.events();
        self.image_after(events, 0)
    }

    /// How many atomic groups (applies and purges) among the first
    /// `events` steps came after the last flush among them: what a crash
    /// right after those steps may keep a prefix of.
    pub fn unflushed_after(&self, events: usize) -> usize {
        let inner = self.lock();
        let log = &inner.log[..events.min(inner.log.len())];
        log.iter()
            .rev()
            .take_while(|e| !matches!(e, Event::Flush))
            .count()
    }

    /// What a restart would find had the process died right after the
    /// first `events` steps, with the first `keep` groups applied after
    /// the last flush among them having reached the disk too.
    pub fn image_after(&self, events: usize, keep: usize) -> Image {
        let inner = self.lock();
        let log = &inner.log[..events.min(inner.log.len())];
        let flushed = log
            .iter()
            .rposition(|e| matches!(e, Event::Flush))
            .map_or(0, |i| i + 1);
        let mut image = inner.base.clone();
        for e in log[..flushed]
            .iter()
            .chain(log[flushed..].iter().take(keep))
        {
            match e {
                Event::Apply(writes) => writes.iter().for_each(|w| image.apply(w)),
                Event::Purge { queue, .. } => {
                    image.purge(*queue);
                }
                Event::Flush => {}
            }
        }
        image
    }

    /// A crash now: the journal a restart opens, holding what was durable
    /// plus the first `keep` groups applied since the last flush.
    pub fn crash(&self, keep: usize) -> MemJournal {
        let events = self.events();
        MemJournal::recovered(self.image_after(events, keep))
    }
}

impl Journal for MemJournal {
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.lost = false;
        if let Err(e) = inner.trip(Fault::ApplyLost) {
            inner.lost = true;
            return Err(e);
        }
        inner.trip(Fault::Apply)?;
        if writes.is_empty() {
            return Ok(());
        }
        for w in writes {
            inner.applied.apply(w);
        }
        inner.log.push(Event::Apply(writes.to_vec()));
        Ok(())
    }

    fn retryable(&self) -> bool {
        !self.lock().lost
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.trip(Fault::Flush)?;
        inner.log.push(Event::Flush);
        Ok(())
    }

    fn purge_queue_index(&self, queue: u64) -> Result<Vec<u64>, StoreError> {
        let mut inner = self.lock();
        inner.trip(Fault::Purge)?;
        let removed = inner.applied.purge(queue);
        let ids = removed.iter().map(|e| e.msg_id).collect();
        inner.log.push(Event::Purge { queue, removed });
        Ok(ids)
    }

    fn load_message(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.lock().applied.messages.get(&id).cloned())
    }

    fn probe(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.trip(Fault::Probe)?;
        // sled's probe flushes its scratch record, and with it everything
        // applied before.
        inner.log.push(Event::Flush);
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        let bodies: usize = inner.applied.messages.values().map(|m| m.body.len()).sum();
        Ok(bodies as u64)
    }

    fn compact(&self) -> Result<(u64, u64), StoreError> {
        // Nothing to give back: memory is freed as records go.
        let size = self.size_on_disk()?;
        Ok((size, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch holds up to 16 Ki writes, nearly all about messages: they
    /// stay six words at most.
    #[test]
    fn a_write_is_four_words() {
        assert!(std::mem::size_of::<Write>() <= 48);
    }
}
