//! The persistence thread: applies the broker's [`PersistOp`]s to the
//! store in batches, flushes, and only then releases publisher confirms.
//!
//! Group commit: ops queue up in a channel while the thread is busy
//! flushing; each turn it takes everything waiting (up to a bound), applies
//! it as one atomic batch and flushes once, so one flush covers the confirms
//! of every publish that arrived meanwhile. A failed apply or flush nacks
//! every confirm in the batch; nothing is acked that is not on disk.
//!
//! A message record is written once however many durable queues hold it;
//! the thread counts references (enqueues minus dequeues) and deletes the
//! record when the last one goes. Until a record is written, reads of it
//! (paged-out messages delivered very soon after publishing) are served
//! from `pending`.
//!
//! The thread talks to storage through [`Journal`]: sled in the broker,
//! [`crate::journal::MemJournal`] in tests that crash it at every step.
//!
//! A failed apply loses writes that later ops build on, and leaves the
//! reference counts out of step with the store. So after one the thread
//! writes and confirms nothing more until a restart rebuilds the broker
//! from what is on disk: a later flush would confirm a publish whose
//! record was lost with an earlier batch, and a later write could delete
//! a record a queue still holds (a lost dequeue and the purge of its
//! queue both releasing one entry). sled itself fails every write after
//! its first I/O error, so with sled this only makes that explicit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use warren_core::fxhash::FxHashMap;

use dashmap::DashMap;
use warren_core::broker::AlarmCause;
use warren_core::persist::{Barrier, BindingTarget, LoadError, PersistOp, Persistence};
use warren_core::{Broker, Message};
use warren_store::{
    BindingRecord, Destination, ExchangeRecord, QueueRecord, StoreError, StoredMessage,
};

use crate::inbox::Inbox;
use crate::journal::{DedupWrite, DefinitionWrite, DelayedWrite, Journal, Write};

/// Counters for reports and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Flushes done.
    pub flushes: AtomicU64,
    /// Ops applied.
    pub ops: AtomicU64,
    /// Publisher confirms released by flushes.
    pub confirms: AtomicU64,
    /// Failed batches.
    pub failures: AtomicU64,
}

/// The broker's handle on the store: queues ops for the thread and reads
/// messages back.
#[derive(Debug)]
pub struct Persister {
    /// What connections hand the thread, in order (see [`Inbox`]).
    inbox: Arc<Inbox<Msg>>,
    journal: Arc<dyn Journal>,
    pending: DashMap<u64, Arc<Message>>,
    /// An apply failed: nothing more is written or confirmed (see the
    /// module docs).
    lost: std::sync::atomic::AtomicBool,
    /// The broker to raise the disk alarm on when writes fail.
    broker: std::sync::OnceLock<std::sync::Weak<Broker>>,
    /// Counters.
    pub stats: Stats,
}

impl Persistence for Persister {
    fn submit(&self, op: PersistOp) {
        if let PersistOp::Message { id, message } = &op {
            self.pending.insert(*id, Arc::clone(message));
        }
        // After shutdown the thread is gone and ops are dropped: nothing
        // is confirmed that was not written.
        let urgent = !lazy(&op);
        self.inbox.send(Msg::Op(op), urgent);
    }

    fn submit_all(&self, ops: Vec<PersistOp>) {
        for op in &ops {
            if let PersistOp::Message { id, message } = op {
                self.pending.insert(*id, Arc::clone(message));
            }
        }
        let urgent = !ops.iter().all(lazy);
        self.inbox.send(Msg::Ops(ops), urgent);
    }

    fn load(&self, id: u64) -> Result<Option<Arc<Message>>, LoadError> {
        if let Some(m) = self.pending.get(&id) {
            return Ok(Some(Arc::clone(m.value())));
        }
        loaded(id, self.journal.load_message(id))
    }

    fn load_many(&self, ids: &[u64]) -> Vec<Result<Option<Arc<Message>>, LoadError>> {
        // Messages not yet written come from `pending`; the rest in one
        // call, which merges reads of neighbouring records.
        let out: Vec<Option<Result<Option<Arc<Message>>, LoadError>>> = ids
            .iter()
            .map(|id| {
                self.pending
                    .get(id)
                    .map(|m| Ok(Some(Arc::clone(m.value()))))
            })
            .collect();
        let missing: Vec<u64> = ids
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut read = missing
            .iter()
            .zip(self.journal.load_messages(&missing))
            .map(|(id, r)| loaded(*id, r));
        out.into_iter()
            .map(|o| match o {
                Some(r) => r,
                None => read.next().unwrap_or(Ok(None)),
            })
            .collect()
    }
}

/// A stored message as the broker holds it.
fn loaded(
    id: u64,
    r: Result<Option<StoredMessage>, StoreError>,
) -> Result<Option<Arc<Message>>, LoadError> {
    match r {
        Ok(Some(m)) => Ok(Some(Arc::new(Message {
            exchange: m.exchange,
            routing_key: m.routing_key,
            properties: m.properties.into(),
            body: m.body,
            store_id: Some(id),
            gauge: None,
        }))),
        Ok(None) => Ok(None),
        Err(e) => Err(LoadError(e.to_string())),
    }
}

impl Persister {
    /// Starts the persistence thread over `journal` (a
    /// [`warren_store::Store`] in the broker). `refs` holds the reference
    /// counts of recovered messages.
    pub fn start<J: Journal + 'static>(
        journal: Arc<J>,
        refs: RefCounts,
    ) -> (Arc<Persister>, std::thread::JoinHandle<()>) {
        // One virtual call per journal step; nothing per op.
        let journal: Arc<dyn Journal> = journal;
        let inbox = Arc::new(Inbox::default());
        let persister = Arc::new(Persister {
            inbox: Arc::clone(&inbox),
            journal,
            pending: DashMap::new(),
            broker: std::sync::OnceLock::new(),
            lost: std::sync::atomic::AtomicBool::new(false),
            stats: Stats::default(),
        });
        let p = Arc::clone(&persister);
        let handle = std::thread::Builder::new()
            .name("warren-persist".into())
            .spawn(move || run(&p, &inbox, refs))
            .unwrap_or_else(|e| panic!("cannot start the persistence thread: {e}"));
        (persister, handle)
    }

    /// Stops accepting ops; the thread writes and flushes what it has, then
    /// exits.
    pub fn close(&self) {
        self.inbox.close(Msg::Stop);
    }

    /// Connects the broker whose disk alarm failed writes raise.
    pub fn attach(&self, broker: &Arc<Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    /// Refuses every write once one was lost.
    fn writable(&self) -> Result<(), StoreError> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(StoreError::Io(
                "an earlier write was lost; nothing is written before a restart".into(),
            ));
        }
        Ok(())
    }

    /// Sets or clears the disk alarm's write-failure cause (the free-space
    /// check is another cause, kept by the resource monitor).
    fn disk_alarm(&self, on: bool) {
        if let Some(b) = self.broker.get().and_then(std::sync::Weak::upgrade) {
            b.set_alarm_cause(AlarmCause::StoreWriteFailed, on);
        }
    }

    /// While a write failure holds the disk alarm publishers are blocked,
    /// so no write would ever show the disk is usable again: probe it
    /// instead.
    fn retry_disk(&self, retry: &mut Retry) {
        let raised = self
            .broker
            .get()
            .and_then(std::sync::Weak::upgrade)
            .is_some_and(|b| b.cause_raised(AlarmCause::StoreWriteFailed));
        // After lost writes the store may take writes again, but nothing
        // will be written before a restart: publishers stay blocked.
        if !raised || self.lost.load(Ordering::Relaxed) {
            return;
        }
        // The writes a full disk refused are the probe: once they are
        // written and flushed, nothing is owed any more.
        let written = if retry.writes.is_empty() {
            self.journal.probe()
        } else {
            self.journal
                .apply(&retry.writes)
                .and_then(|()| self.journal.flush())
        };
        match written {
            Ok(()) => {
                for id in retry.written.drain(..) {
                    self.pending.remove(&id);
                }
                retry.writes.clear();
                tracing::info!("the store takes writes again");
                self.disk_alarm(false);
            }
            Err(e) if !retry.writes.is_empty() && !self.journal.retryable() => {
                self.lose(&e);
            }
            Err(_) => {}
        }
    }

    /// Writes were lost: from now on nothing is written or confirmed.
    fn lose(&self, e: &StoreError) {
        if !self.lost.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error = %e,
                "store writes lost: nothing more is written or confirmed before a restart"
            );
        }
    }

    /// Whether writes were lost (nothing is written or confirmed before a
    /// restart).
    pub fn writes_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The storage the thread writes to.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        if self.journal.poisoned() {
            // Keep the store alive: its drop would hang (see
            // `Journal::poisoned`).
            std::mem::forget(Arc::clone(&self.journal));
        }
    }
}

/// Whether nobody waits for `op`: a delivery's mark or an ack's dequeue.
/// Those wait in the inbox for the next op someone waits for (or the
/// thread's next periodic wake-up, at most [`MAINTAIN_EVERY`] later):
/// after a crash in between, an acked message comes back (marked
/// redelivered if its mark was written), as RabbitMQ's queue index, which
/// writes acks lazily too, allows.
fn lazy(op: &PersistOp) -> bool {
    matches!(op, PersistOp::Delivered { .. } | PersistOp::Dequeue { .. })
}

/// What the thread receives.
#[derive(Debug)]
enum Msg {
    Op(PersistOp),
    /// Several, in order.
    Ops(Vec<PersistOp>),
    /// Write and flush what came before, then exit.
    Stop,
}

/// How often the thread considers compacting sled and retries a full disk.
const COMPACTION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the message store's housekeeping runs (checkpoints, dead
/// segments, compaction).
const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes a failed batch left behind (the disk was full): applied again
/// ahead of the next batch, or by the disk probe, so nothing the broker
/// holds is missing from the store once the disk takes writes again.
#[derive(Debug, Default)]
struct Retry {
    writes: Vec<Write>,
    /// Message records among them (served from `pending` until written).
    written: Vec<u64>,
}
/// Compact sled only when its files hold at least this much.
const COMPACT_ABOVE: u64 = 16 << 20;

/// Gives sled's disk space back: sled reuses freed space but never returns
/// it, so once its files (definitions and delayed messages; message bodies
/// live in the message store, which gives its space back as it goes) have
/// grown past 16 MiB and twice their size after the last compaction, the
/// live records are copied into fresh files. `last`: that size.
fn maybe_compact(p: &Persister, last: &mut u64) {
    match p.journal.size_on_disk() {
        Ok(size) if size > COMPACT_ABOVE.max(2 * *last) => match p.journal.compact() {
            Ok((before, after)) => {
                *last = after;
                tracing::info!(before, after, "definitions store compacted");
            }
            Err(e) => tracing::error!(error = %e, "store compaction failed"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot measure the store"),
    }
}

fn run(p: &Persister, inbox: &Inbox<Msg>, mut refs: RefCounts) {
    let mut ops = Vec::with_capacity(1024);
    let mut msgs = Vec::with_capacity(1024);
    let mut stopping = false;
    let mut retry = Retry::default();
    let mut last_compaction_check = Instant::now();
    let mut compacted_size = 0;
    let mut last_maintain = Instant::now();
    while !stopping {
        if last_compaction_check.elapsed() >= COMPACTION_CHECK {
            last_compaction_check = Instant::now();
            p.retry_disk(&mut retry);
            maybe_compact(p, &mut compacted_size);
        }
        if last_maintain.elapsed() >= MAINTAIN_EVERY {
            last_maintain = Instant::now();
            maintain(p);
        }
        // Lazy ops (marks and dequeues) that arrived while the thread
        // slept come with the next urgent one, or with this timeout.
        inbox.wait(MAINTAIN_EVERY, &mut msgs);
        for m in msgs.drain(..) {
            match m {
                Msg::Op(op) => ops.push(op),
                Msg::Ops(mut more) => ops.append(&mut more),
                Msg::Stop => {
                    stopping = true;
                    break;
                }
            }
        }
        if ops.is_empty() {
            continue;
        }
        let started = Instant::now();
        let n = ops.len();
        let (result, barriers, written) = apply(p, &mut ops, &mut refs, &mut retry);
        let ok = result.and_then(|()| p.journal.flush()).map_err(|e| {
            p.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, ops = n, "store write failed: nacking the publishes in this batch");
        });
        // Once writes were lost, a flush no longer covers everything
        // before a barrier.
        let ok = ok.is_ok() && !p.lost.load(Ordering::Relaxed);
        // A failed write blocks publishers (connection.blocked) until a
        // later write succeeds.
        p.disk_alarm(!ok);
        for id in written {
            p.pending.remove(&id);
        }
        p.stats.flushes.fetch_add(1, Ordering::Relaxed);
        p.stats.ops.fetch_add(n as u64, Ordering::Relaxed);
        let confirms = barriers.len() as u64;
        p.stats.confirms.fetch_add(confirms, Ordering::Relaxed);
        for b in barriers {
            b.release(ok);
        }
        tracing::trace!(ops = n, confirms, elapsed = ?started.elapsed(), "batch flushed");
    }
    // What a full disk refused is tried once more before the thread ends.
    if !retry.writes.is_empty() && !p.lost.load(Ordering::Relaxed) {
        let _ = p
            .journal
            .apply(&retry.writes)
            .and_then(|()| p.journal.flush());
    }
    // Everything received before the stop has been applied and flushed.
    tracing::debug!("persistence thread stopped");
}

/// The message store's housekeeping; a failure is logged and tried again
/// next time (nothing it does is needed for correctness).
fn maintain(p: &Persister) {
    if p.lost.load(Ordering::Relaxed) {
        return;
    }
    for _ in 0..4 {
        match p.journal.maintain() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "message store housekeeping failed");
                break;
            }
        }
    }
}

/// The writes of one batch, held back until the batch is built so that a
/// message published and consumed within one batch is never written.
#[derive(Default)]
struct Writes {
    writes: Vec<Write>,
    /// Messages whose record is put by `writes` (not yet in the store).
    fresh: std::collections::HashSet<u64>,
    /// Fresh messages already gone again: none of their writes are needed.
    dead: std::collections::HashSet<u64>,
    /// Where this batch marked an entry delivered, by (queue, seq).
    delivered: FxHashMap<(u64, u64), usize>,
    /// Writes made needless later in the batch (an entry marked delivered
    /// and then dequeued: a consumer's ack arriving within one batch).
    needless: Vec<usize>,
}

impl Writes {
    /// The last queue let go of `msg`: delete its record, or, if the record
    /// was never written, write nothing about it at all.
    fn forget(&mut self, msg: u64) {
        if self.fresh.contains(&msg) {
            self.dead.insert(msg);
        } else {
            self.writes.push(Write::DeleteMessage(msg));
        }
    }

    /// Adds a write to the definitions.
    fn define(&mut self, d: DefinitionWrite) {
        self.writes.push(Write::Definition(Box::new(d)));
    }

    /// Applies the surviving writes as one atomic group and starts afresh.
    /// A failure marks the persister's writes lost, unless `retry` may
    /// take them and the journal applied none of them: then they are
    /// kept there, to be applied again.
    fn apply_to(&mut self, p: &Persister, retry: Option<&mut Retry>) -> Result<(), StoreError> {
        if !self.needless.is_empty() {
            self.needless.sort_unstable();
            let mut at = 0;
            let mut next = self.needless.iter().peekable();
            self.writes.retain(|_| {
                let skip = next.peek().is_some_and(|&&i| i == at);
                if skip {
                    next.next();
                }
                at += 1;
                !skip
            });
            self.needless.clear();
        }
        self.delivered.clear();
        if !self.dead.is_empty() {
            let dead = &self.dead;
            self.writes
                .retain(|w| w.message().is_none_or(|m| !dead.contains(&m)));
        }
        let result = if self.writes.is_empty() {
            Ok(())
        } else {
            p.writable().and_then(|()| p.journal.apply(&self.writes))
        };
        self.fresh.clear();
        self.dead.clear();
        if let Err(e) = &result {
            match retry {
                Some(r) if p.journal.retryable() => {
                    r.writes = std::mem::take(&mut self.writes);
                }
                _ => p.lose(e),
            }
        }
        self.writes.clear();
        result
    }
}

/// Applies `ops` (draining it). Returns the outcome, the barriers to
/// release, and the ids of message records written.
fn apply(
    p: &Persister,
    ops: &mut Vec<PersistOp>,
    refs: &mut RefCounts,
    retry: &mut Retry,
) -> (Result<(), StoreError>, Vec<Barrier>, Vec<u64>) {
    let mut w = Writes::default();
    let mut barriers = Vec::new();
    // What a failed batch left comes first, in its order.
    let mut written = std::mem::take(&mut retry.written);
    w.writes = std::mem::take(&mut retry.writes);
    for wr in &w.writes {
        if let Write::PutMessage(id, _) = wr {
            w.fresh.insert(*id);
        }
    }
    let mut result = Ok(());
    for op in ops.drain(..) {
        match op {
            PersistOp::Message { id, message } => {
                refs.insert(
                    id,
                    Refs {
                        count: 0,
                        routed: false,
                    },
                );
                w.fresh.insert(id);
                w.writes.push(Write::PutMessage(id, message));
                written.push(id);
            }
            PersistOp::Routed { id } => {
                if let Some(mut r) = refs.get(id) {
                    r.routed = true;
                    // A record no queue took (all refused it, or it was
                    // already consumed from every queue) is not kept.
                    if r.count == 0 {
                        refs.remove(id);
                        w.forget(id);
                    } else {
                        refs.insert(id, r);
                    }
                }
            }
            PersistOp::Enqueue {
                queue,
                seq,
                msg,
                meta,
            } => {
                refs.add(msg);
                w.writes.push(Write::Enqueue {
                    queue,
                    seq,
                    msg,
                    meta,
                });
            }
            PersistOp::Delivered {
                queue,
                seq,
                msg,
                count,
            } => {
                w.delivered.insert((queue, seq), w.writes.len());
                w.writes.push(Write::Delivered {
                    queue,
                    seq,
                    msg,
                    count,
                });
            }
            PersistOp::Dequeue { queue, seq, msg } => {
                if let Some(i) = w.delivered.remove(&(queue, seq)) {
                    w.needless.push(i);
                }
                w.writes.push(Write::Dequeue { queue, seq, msg });
                if release(refs, msg) {
                    w.forget(msg);
                }
            }
            PersistOp::Barrier(b) => barriers.push(b),
            PersistOp::DelayedAdd { key, message } => w
                .writes
                .push(Write::Delayed(Box::new(DelayedWrite::Put(key, message)))),
            PersistOp::DelayedRemove { key } => w
                .writes
                .push(Write::Delayed(Box::new(DelayedWrite::Delete(key)))),
            PersistOp::DedupPut {
                key,
                expires_ms,
                order,
            } => w.writes.push(Write::Dedup(Box::new(DedupWrite::Put(
                key, expires_ms, order,
            )))),
            PersistOp::DedupRemove { key } => w
                .writes
                .push(Write::Dedup(Box::new(DedupWrite::Delete(key)))),
            PersistOp::DeclareExchange {
                vhost,
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                w.define(DefinitionWrite::PutExchange(ExchangeRecord {
                    vhost,
                    name,
                    kind,
                    auto_delete,
                    internal,
                    arguments,
                }));
            }
            PersistOp::DeleteExchange { vhost, name } => {
                w.define(DefinitionWrite::DeleteExchange { vhost, name })
            }
            PersistOp::Admin(op) => w.define(DefinitionWrite::Admin(op)),
            PersistOp::DeclareQueue {
                vhost,
                id,
                name,
                auto_delete,
                arguments,
            } => {
                w.define(DefinitionWrite::PutQueue(QueueRecord {
                    id,
                    vhost,
                    name,
                    auto_delete,
                    arguments,
                }));
            }
            PersistOp::DeleteQueue { vhost, name, id } => {
                w.define(DefinitionWrite::DeleteQueue { vhost, name });
                // The queue's index entries must be gone with what came
                // before them applied first.
                if let Err(e) = w.apply_to(p, None) {
                    result = Err(e);
                }
                // A failed purge removes nothing and releases nothing, so
                // it leaves the counts in step (the entries stay behind).
                match p.writable().and_then(|()| p.journal.purge_queue_index(id)) {
                    Ok(ids) => {
                        for msg in ids {
                            if release(refs, msg) {
                                w.forget(msg);
                            }
                        }
                    }
                    Err(e) => result = Err(e),
                }
            }
            PersistOp::Bind {
                vhost,
                source,
                destination,
                routing_key,
                arguments,
            } => {
                w.define(DefinitionWrite::PutBinding(binding(
                    vhost,
                    source,
                    destination,
                    routing_key,
                    arguments,
                )));
            }
            PersistOp::Unbind {
                vhost,
                source,
                destination,
                routing_key,
                arguments,
            } => {
                w.define(DefinitionWrite::DeleteBinding(binding(
                    vhost,
                    source,
                    destination,
                    routing_key,
                    arguments,
                )));
            }
        }
    }
    let kept = result.is_ok();
    if let Err(e) = w.apply_to(p, kept.then_some(&mut *retry)) {
        if !retry.writes.is_empty() {
            // Kept for later: still unwritten, still served from `pending`.
            retry.written = written;
            return (Err(e), barriers, Vec::new());
        }
        result = Err(e);
    }
    (result, barriers, written)
}

/// How many queues hold a stored message, and whether routing it has
/// finished (until then more enqueues may come, so a count of zero does not
/// mean the record can go).
#[derive(Debug, Clone, Copy)]
pub struct Refs {
    /// Queues holding it.
    pub count: u32,
    /// All its enqueues have been seen.
    pub routed: bool,
}

/// One queue let go of `msg`; true when it was the last (delete it).
fn release(refs: &mut RefCounts, msg: u64) -> bool {
    if let Some(mut r) = refs.get(msg) {
        r.count = r.count.saturating_sub(1);
        if r.count == 0 && r.routed {
            refs.remove(msg);
            return true;
        }
        refs.insert(msg, r);
    }
    false
}

/// Ids per [`RefCounts`] chunk.
const REF_CHUNK: u64 = 1024;
/// A slot holds a message.
const PRESENT: u32 = 1 << 31;
/// Its routing has finished.
const ROUTED: u32 = 1 << 30;
/// The count's bits.
const COUNT: u32 = ROUTED - 1;

/// [`Refs`] of every stored message, by id: four bytes a message in
/// chunks of consecutive ids (ids come from one counter), a chunk freed
/// with its last message. A hash map of them took some 28 bytes a message,
/// 280 MB for a backlog of ten million.
#[derive(Debug, Default)]
pub struct RefCounts {
    chunks: FxHashMap<u64, (Box<[u32; REF_CHUNK as usize]>, u32)>,
    len: usize,
}

impl RefCounts {
    /// Message `id`'s counts, if it is stored.
    pub fn get(&self, id: u64) -> Option<Refs> {
        let (slots, _) = self.chunks.get(&(id / REF_CHUNK))?;
        let v = slots[(id % REF_CHUNK) as usize];
        (v & PRESENT != 0).then_some(Refs {
            count: v & COUNT,
            routed: v & ROUTED != 0,
        })
    }

    /// Sets message `id`'s counts (a count past 2^30 - 1 saturates).
    pub fn insert(&mut self, id: u64, r: Refs) {
        let (slots, live) = self
            .chunks
            .entry(id / REF_CHUNK)
            .or_insert_with(|| (Box::new([0; REF_CHUNK as usize]), 0));
        let slot = &mut slots[(id % REF_CHUNK) as usize];
        if *slot & PRESENT == 0 {
            *live += 1;
            self.len += 1;
        }
        *slot = PRESENT | if r.routed { ROUTED } else { 0 } | r.count.min(COUNT);
    }

    /// One more queue holds `id` (a recovered or re-routed message with
    /// no record of its own counts is taken as routed).
    pub fn add(&mut self, id: u64) {
        let mut r = self.get(id).unwrap_or(Refs {
            count: 0,
            routed: true,
        });
        r.count = r.count.saturating_add(1);
        self.insert(id, r);
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: u64) {
        let key = id / REF_CHUNK;
        let Some((slots, live)) = self.chunks.get_mut(&key) else {
            return;
        };
        let slot = &mut slots[(id % REF_CHUNK) as usize];
        if *slot & PRESENT != 0 {
            *slot = 0;
            *live -= 1;
            self.len -= 1;
            if *live == 0 {
                self.chunks.remove(&key);
            }
        }
    }

    /// Messages counted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn binding(
    vhost: String,
    source: warren_codec::ShortStr,
    destination: BindingTarget,
    routing_key: warren_codec::ShortStr,
    arguments: warren_codec::FieldTable,
) -> BindingRecord {
    let destination = match destination {
        BindingTarget::Queue(q) => Destination::Queue(q),
        BindingTarget::Exchange(e) => Destination::Exchange(e),
    };
    BindingRecord {
        vhost,
        source,
        destination,
        routing_key,
        arguments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_counts_live_in_chunks_freed_with_their_last_message() {
        let mut r = RefCounts::default();
        r.insert(
            5,
            Refs {
                count: 0,
                routed: false,
            },
        );
        r.add(5);
        r.add(5000);
        let five = r.get(5).unwrap();
        assert_eq!((five.count, five.routed), (1, false));
        let other = r.get(5000).unwrap();
        assert_eq!((other.count, other.routed), (1, true));
        assert!(r.get(6).is_none());
        assert_eq!(r.len(), 2);
        assert!(release(&mut r, 5000));
        assert!(r.get(5000).is_none());
        // Not routed yet: a count of zero keeps it.
        assert!(!release(&mut r, 5));
        assert_eq!(r.get(5).unwrap().count, 0);
        r.remove(5);
        assert!(r.is_empty());
        assert!(r.chunks.is_empty());
    }
}
