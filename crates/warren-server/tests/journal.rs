//! The persistence thread (the real [`Persister`] and its loop) over the
//! in-memory [`MemJournal`], fed [`PersistOp`]s exactly as the core submits
//! them: its invariants (ARCHITECTURE.md) checked in milliseconds, with
//! failures injected and a crash after every step.
//!
//! # Layout
//! - [`Recorder`]: the [`Waiter`] every barrier here names. It records each
//!   release (ok or not, and how many journal steps had happened by then)
//!   and can hold the persistence thread inside a release (a gate).
//! - [`Harness`]: a persister over a journal. Gates make batches exact: the
//!   ops submitted while the thread is held in one gate's release form the
//!   next batch, closed by the next gate, so no test depends on timing and
//!   every wait is bounded.
//! - Targeted tests: confirm after flush, failed applies, flushes and
//!   purges, nothing written or confirmed after lost writes, reference
//!   counts, messages that never reach the store, queue deletion order,
//!   reads of unwritten messages, a restart.
//! - The model: random op sequences (publishes to several queues,
//!   deliveries, acks, no-ack consumption at publish, queue deletion and
//!   redeclaration, failed flushes, sometimes a failed apply, batch cuts
//!   anywhere, even inside a publish), then every crash point of the
//!   journal's history (after each step, keeping any prefix of the
//!   unflushed groups) checked against what the ops and the released
//!   confirms promise.
//! - Sled: the same ops over [`warren_store::Store`] and over [`MemJournal`]
//!   end in the same store, before and after a reopen.
//!
//! Documented, not an invariant: after a crash a message record can survive
//! without any index entry if the crash came before the group that deletes
//! it was flushed (its routing or consumption was still in flight, or the
//! crash fell between a deleted queue's index purge and that group).
//! Recovery counts references from the indexes only, so such a record is
//! never deleted. Likewise, after a failed purge a deleted queue's entries
//! stay in the store.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use warren_codec::{BasicProperties, FieldTable, ShortStr};
use warren_core::Message;
use warren_core::broker::{Alarm, Broker};
use warren_core::persist::{
    Awaited, Barrier, BindingTarget, DedupRecordKey, PersistOp, Persistence, Waiter,
};
use warren_server::Config;
use warren_server::journal::{
    DefinitionWrite, DiskJournal, Event, Fault, Image, Journal, MemJournal, Write, stored,
};
use warren_server::persistence::{Persister, RefCounts};
use warren_store::{IndexEntry, MessageStore, Store, StoredMessage};

/// Bound on every wait for the persistence thread.
const WAIT: Duration = Duration::from_secs(10);
/// The channel gate barriers use (publisher confirms use channel 1).
const GATE: u16 = u16::MAX;
const VHOST: &str = "/";

// ---------------------------------------------------------------------------
// The waiter.

/// How a barrier was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Release {
    ok: bool,
    /// Journal steps done when it was released (0 without a [`MemJournal`]).
    at: usize,
}

/// Records barrier releases; holds the persistence thread in gates.
#[derive(Debug)]
struct Recorder {
    journal: Option<Arc<MemJournal>>,
    // A std Mutex: the persistence thread holds it to record a release, and
    // while held in a gate it waits on the condvar, which lets it go.
    state: Mutex<Recorded>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Recorded {
    releases: Vec<(u16, Awaited, Release)>,
    open: HashSet<u64>,
    all_open: bool,
    /// A gate was never opened (the test failed elsewhere).
    stuck: bool,
}

impl Waiter for Recorder {
    fn flushed(self: Arc<Self>, channel: u16, what: Awaited, ok: bool) {
        let at = self.journal.as_ref().map_or(0, |j| j.events());
        let mut st = self.lock();
        st.releases.push((channel, what, Release { ok, at }));
        self.changed.notify_all();
        if let (GATE, Awaited::Confirm(gate)) = (channel, what) {
            // Held here, the thread has finished its batch and takes nothing
            // new: what the test submits meanwhile is the next batch.
            let deadline = Instant::now() + WAIT;
            while !st.all_open && !st.open.contains(&gate) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    st.stuck = true;
                    return;
                }
                st = self
                    .changed
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

impl Recorder {
    fn new(journal: Option<Arc<MemJournal>>) -> Arc<Self> {
        Arc::new(Recorder {
            journal,
            state: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (bounded) for the release of `what` on `channel`.
    fn released(&self, channel: u16, what: Awaited) -> Release {
        let deadline = Instant::now() + WAIT;
        let mut st = self.lock();
        loop {
            if let Some((_, _, r)) = st
                .releases
                .iter()
                .find(|(c, w, _)| *c == channel && *w == what)
            {
                return *r;
            }
            assert!(!st.stuck, "a gate was never opened");
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no release of {what:?} on channel {channel} within {WAIT:?}"
            );
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn releases(&self) -> Vec<(u16, Awaited, Release)> {
        self.lock().releases.clone()
    }

    fn open(&self, gate: u64) {
        self.lock().open.insert(gate);
        self.changed.notify_all();
    }

    fn open_all(&self) {
        self.lock().all_open = true;
        self.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------
// Ops, as the core submits them.

/// A [`PersistOp`] in a form tests can keep, compare and replay.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Message(u64),
    Routed(u64),
    Enqueue {
        queue: u64,
        seq: u64,
        msg: u64,
    },
    Delivered {
        queue: u64,
        seq: u64,
        msg: u64,
    },
    Dequeue {
        queue: u64,
        seq: u64,
        msg: u64,
    },
    DeclareQueue(u64),
    DeleteQueue(u64),
    DeclareExchange(&'static str),
    DeleteExchange(&'static str),
    Bind {
        exchange: &'static str,
        queue: u64,
        key: &'static str,
    },
    Unbind {
        exchange: &'static str,
        queue: u64,
        key: &'static str,
    },
    /// A deduplication exchange's disk cache stored the id (order 0).
    DedupPut(&'static str),
    /// ... and removed it.
    DedupRemove(&'static str),
    /// A publisher confirm for publish `seq` on channel 1.
    Confirm(u64),
    /// A gate barrier (see [`Recorder`]).
    Gate(u64),
}

fn queue_name(id: u64) -> ShortStr {
    ShortStr::from(format!("q{id}"))
}

/// Message `id` as published (each id has its own body).
fn message(id: u64) -> Arc<Message> {
    Arc::new(Message {
        exchange: ShortStr::from("amq.direct"),
        routing_key: ShortStr::from(format!("rk{id}")),
        properties: BasicProperties {
            delivery_mode: Some(2),
            ..BasicProperties::default()
        }
        .into(),
        body: Bytes::from(format!("body of message {id}")),
        store_id: Some(id),
        gauge: None,
    })
}

/// The record key of id `id` cached by the exchange `dx`.
fn dedup_key(id: &str) -> DedupRecordKey {
    DedupRecordKey {
        vhost: VHOST.into(),
        exchange: ShortStr::from("dx"),
        id: Bytes::copy_from_slice(id.as_bytes()),
    }
}

fn record(id: u64) -> StoredMessage {
    stored(&message(id))
}

impl Op {
    fn to_persist(&self, rec: &Arc<Recorder>) -> PersistOp {
        let barrier = |channel, what| {
            PersistOp::Barrier(Barrier {
                waiter: Arc::clone(rec) as Arc<dyn Waiter>,
                channel,
                what,
            })
        };
        match *self {
            Op::Message(id) => PersistOp::Message {
                id,
                message: message(id),
            },
            Op::Routed(id) => PersistOp::Routed { id },
            Op::Enqueue { queue, seq, msg } => PersistOp::Enqueue {
                queue,
                seq,
                msg,
                meta: Default::default(),
            },
            Op::Delivered { queue, seq, msg } => PersistOp::Delivered {
                queue,
                seq,
                msg,
                count: 1,
            },
            Op::Dequeue { queue, seq, msg } => PersistOp::Dequeue { queue, seq, msg },
            Op::DeclareQueue(id) => PersistOp::DeclareQueue {
                vhost: VHOST.into(),
                id,
                name: queue_name(id),
                auto_delete: false,
                arguments: FieldTable::new(),
            },
            Op::DeleteQueue(id) => PersistOp::DeleteQueue {
                vhost: VHOST.into(),
                name: queue_name(id),
                id,
            },
            Op::DeclareExchange(name) => PersistOp::DeclareExchange {
                vhost: VHOST.into(),
                name: ShortStr::from(name),
                kind: "direct".into(),
                auto_delete: false,
                internal: false,
                arguments: FieldTable::new(),
            },
            Op::DeleteExchange(name) => PersistOp::DeleteExchange {
                vhost: VHOST.into(),
                name: ShortStr::from(name),
            },
            Op::Bind {
                exchange,
                queue,
                key,
            } => PersistOp::Bind {
                vhost: VHOST.into(),
                source: ShortStr::from(exchange),
                destination: BindingTarget::Queue(queue_name(queue)),
                routing_key: ShortStr::from(key),
                arguments: FieldTable::new(),
            },
            Op::Unbind {
                exchange,
                queue,
                key,
            } => PersistOp::Unbind {
                vhost: VHOST.into(),
                source: ShortStr::from(exchange),
                destination: BindingTarget::Queue(queue_name(queue)),
                routing_key: ShortStr::from(key),
                arguments: FieldTable::new(),
            },
            Op::DedupPut(id) => PersistOp::DedupPut {
                key: dedup_key(id),
                expires_ms: Some(1_000),
                order: 0,
            },
            Op::DedupRemove(id) => PersistOp::DedupRemove { key: dedup_key(id) },
            Op::Confirm(seq) => barrier(1, Awaited::Confirm(seq)),
            Op::Gate(n) => barrier(GATE, Awaited::Confirm(n)),
        }
    }

    /// The barrier this op is, as [`Recorder`] records it.
    fn barrier(&self) -> Option<(u16, Awaited)> {
        match *self {
            Op::Confirm(seq) => Some((1, Awaited::Confirm(seq))),
            Op::Gate(n) => Some((GATE, Awaited::Confirm(n))),
            _ => None,
        }
    }
}

/// A publish as the core submits it: the record, one enqueue per queue
/// (seqs given), the end of routing and a confirm barrier.
fn publish(msg: u64, entries: &[(u64, u64)]) -> Vec<Op> {
    let mut ops = vec![Op::Message(msg)];
    for &(queue, seq) in entries {
        ops.push(Op::Enqueue { queue, seq, msg });
    }
    ops.push(Op::Routed(msg));
    ops.push(Op::Confirm(msg));
    ops
}

// ---------------------------------------------------------------------------
// The harness.

/// An op as submitted.
#[derive(Debug, Clone)]
struct Submitted {
    op: Op,
    /// Journal steps done before it was submitted: it can only be in a
    /// later one.
    stamp: usize,
}

/// A persister over a journal, fed in exact batches.
struct Harness {
    mem: Option<Arc<MemJournal>>,
    persister: Arc<Persister>,
    thread: Option<std::thread::JoinHandle<()>>,
    rec: Arc<Recorder>,
    /// The gate the thread is held in.
    held: u64,
    subs: Vec<Submitted>,
}

impl Harness {
    /// A persister over a fresh [`MemJournal`].
    fn mem() -> Harness {
        let mem = Arc::new(MemJournal::new());
        Harness::start(Arc::clone(&mem), Some(mem), Default::default())
    }

    fn start<J: Journal + 'static>(
        journal: Arc<J>,
        mem: Option<Arc<MemJournal>>,
        refs: RefCounts,
    ) -> Harness {
        let (persister, thread) = Persister::start(journal, refs);
        let rec = Recorder::new(mem.clone());
        let mut h = Harness {
            mem,
            persister,
            thread: Some(thread),
            rec,
            held: 0,
            subs: Vec::new(),
        };
        // The thread is idle: a lone first gate is a batch of its own.
        h.submit(Op::Gate(0));
        h.rec.released(GATE, Awaited::Confirm(0));
        h
    }

    fn journal(&self) -> &Arc<MemJournal> {
        self.mem.as_ref().unwrap()
    }

    fn submit(&mut self, op: Op) {
        let stamp = self.mem.as_ref().map_or(0, |m| m.events());
        self.persister.submit(op.to_persist(&self.rec));
        self.subs.push(Submitted { op, stamp });
    }

    /// Ends the batch: everything submitted since the last cut is taken
    /// by the thread at once, applied, flushed and released.
    fn cut(&mut self) {
        let next = self.held + 1;
        self.submit(Op::Gate(next));
        self.rec.open(self.held);
        self.rec.released(GATE, Awaited::Confirm(next));
        self.held = next;
    }

    /// Submits `ops` as exactly one batch.
    fn batch(&mut self, ops: impl IntoIterator<Item = Op>) {
        for op in ops {
            self.submit(op);
        }
        self.cut();
    }

    fn confirm(&self, msg: u64) -> Release {
        self.rec.released(1, Awaited::Confirm(msg))
    }

    /// Lets the thread go, stops it and waits (bounded) for it to end.
    fn finish(&mut self) {
        self.rec.open_all();
        self.persister.close();
        if let Some(t) = self.thread.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(t.join().is_ok());
            });
            assert_eq!(
                rx.recv_timeout(WAIT),
                Ok(true),
                "the persistence thread did not stop cleanly"
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // After a failed assertion: never leave the thread held in a gate.
        self.rec.open_all();
        self.persister.close();
    }
}

/// Reference counts from the indexes of the defined queues, as recovery
/// builds them.
fn refs_like_recovery(image: &Image) -> RefCounts {
    let mut refs = RefCounts::default();
    for q in image.queues.values() {
        for e in image.queue_index(q.id) {
            refs.add(e.msg_id);
        }
    }
    refs
}

/// Every write in the history, in order.
fn writes(history: &[Event]) -> Vec<Write> {
    history
        .iter()
        .flat_map(|e| match e {
            Event::Apply(ws) => ws.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn mentions(history: &[Event], msg: u64) -> Vec<Write> {
    writes(history)
        .into_iter()
        .filter(|w| w.message() == Some(msg))
        .collect()
}

// ---------------------------------------------------------------------------
// Checks shared by the targeted tests and the model.

/// Replays the journal's history and checks the order of its writes: no
/// dequeue or delivery before the enqueue it is about, no entry enqueued
/// twice, a record written at most once and deleted only while it exists,
/// and after every atomic group, no index entry whose record is missing.
fn check_history(history: &[Event]) -> Result<(), String> {
    let mut image = Image::default();
    let mut put = HashSet::new();
    for (i, e) in history.iter().enumerate() {
        match e {
            Event::Apply(ws) => {
                for w in ws {
                    if let Write::PutMessage(id, _) = w
                        && !put.insert(*id)
                    {
                        return Err(format!("step {i}: message {id} written twice"));
                    }
                    match w {
                        Write::DeleteMessage(id) if !image.messages.contains_key(id) => {
                            return Err(format!("step {i}: message {id} deleted, never written"));
                        }
                        Write::Enqueue { queue, seq, .. }
                            if image.index.contains_key(&(*queue, *seq)) =>
                        {
                            return Err(format!(
                                "step {i}: queue {queue} seq {seq} enqueued twice"
                            ));
                        }
                        Write::Delivered {
                            queue, seq, msg, ..
                        }
                        | Write::Dequeue { queue, seq, msg } => {
                            match image.index.get(&(*queue, *seq)) {
                                Some(e) if e.msg_id == *msg => {}
                                other => {
                                    return Err(format!(
                                        "step {i}: {w:?} applied before its enqueue ({other:?})"
                                    ));
                                }
                            }
                        }
                        _ => {}
                    }
                    image.apply(w);
                }
            }
            Event::Purge { queue, removed } => {
                if image.queue_index(*queue) != *removed {
                    return Err(format!(
                        "step {i}: purge of queue {queue} removed {removed:?}"
                    ));
                }
                for r in removed {
                    image.apply(&Write::Dequeue {
                        queue: *queue,
                        seq: r.seq,
                        msg: r.msg_id,
                    });
                }
            }
            Event::Flush => {}
        }
        for ((q, s), entry) in &image.index {
            if !image.messages.contains_key(&entry.msg_id) {
                return Err(format!(
                    "after step {i}: queue {q} seq {s} refers to message {} which is not stored",
                    entry.msg_id
                ));
            }
        }
    }
    Ok(())
}

/// What the submitted ops say about each stored thing.
#[derive(Default)]
struct Facts {
    /// (queue, seq) -> (msg, position and stamp of the enqueue).
    enqueues: BTreeMap<(u64, u64), (u64, usize, usize)>,
    /// (queue, seq) -> position and stamp of the first op removing it (its
    /// dequeue, or its queue's deletion).
    removals: HashMap<(u64, u64), (usize, usize)>,
    /// (queue, seq) -> stamp of the first delivery.
    deliveries: HashMap<(u64, u64), usize>,
    /// msg -> stamp of its record op.
    messages: HashMap<u64, usize>,
    /// msg -> position of its end of routing.
    routed: HashMap<u64, usize>,
    /// queue -> position and stamp of its declaration and deletion.
    declared: HashMap<u64, (usize, usize)>,
    deleted: HashMap<u64, (usize, usize)>,
    /// Barriers released ok: (release step, position).
    covering: Vec<(usize, usize)>,
}

impl Facts {
    fn new(subs: &[Submitted], releases: &[(u16, Awaited, Release)]) -> Facts {
        let mut f = Facts::default();
        // Awaited is not Hash: look releases up by scanning (few of them).
        let released = |key: (u16, Awaited)| {
            releases
                .iter()
                .find(|(c, w, _)| (*c, *w) == key)
                .map(|(_, _, r)| *r)
        };
        for (pos, s) in subs.iter().enumerate() {
            let at = (pos, s.stamp);
            match s.op {
                Op::Message(m) => {
                    f.messages.insert(m, s.stamp);
                }
                Op::Routed(m) => {
                    f.routed.insert(m, pos);
                }
                Op::Enqueue { queue, seq, msg } => {
                    f.enqueues.insert((queue, seq), (msg, pos, s.stamp));
                }
                Op::Delivered { queue, seq, .. } => {
                    f.deliveries.entry((queue, seq)).or_insert(s.stamp);
                }
                Op::Dequeue { queue, seq, .. } => {
                    f.removals.entry((queue, seq)).or_insert(at);
                }
                Op::DeclareQueue(q) => {
                    f.declared.insert(q, at);
                }
                Op::DeleteQueue(q) => {
                    f.deleted.insert(q, at);
                    for (&(eq, seq), _) in f.enqueues.range((q, 0)..=(q, u64::MAX)) {
                        f.removals.entry((eq, seq)).or_insert(at);
                    }
                }
                _ => {}
            }
            if let Some(key) = s.op.barrier()
                && let Some(r) = released(key)
                && r.ok
            {
                f.covering.push((r.at, pos));
            }
        }
        f
    }

    /// Ops before this position are covered by a flush among the first
    /// `k` journal steps (a barrier after them was released ok by then).
    fn covered(&self, k: usize) -> usize {
        self.covering
            .iter()
            .filter(|(at, _)| *at <= k)
            .map(|(_, pos)| *pos)
            .max()
            .unwrap_or(0)
    }
}

/// Checks what a restart would find after every crash point of the
/// journal's history: after each step, keeping any prefix of the groups
/// applied since the last flush.
fn check_crash_points(
    journal: &MemJournal,
    subs: &[Submitted],
    releases: &[(u16, Awaited, Release)],
) -> Result<(), String> {
    let facts = Facts::new(subs, releases);
    for k in 0..=journal.events() {
        let covered = facts.covered(k);
        for keep in 0..=journal.unflushed_after(k) {
            let image = journal.image_after(k, keep);
            check_image(&facts, &image, k, covered)
                .map_err(|e| format!("crash after step {k}, keeping {keep} unflushed: {e}"))?;
        }
    }
    Ok(())
}

fn check_image(f: &Facts, image: &Image, k: usize, covered: usize) -> Result<(), String> {
    // Everything a released confirm covered is there, unless its removal
    // may have been applied by then.
    for (&(q, s), &(msg, pos, _)) in &f.enqueues {
        if pos >= covered {
            continue;
        }
        match f.removals.get(&(q, s)) {
            Some(&(rpos, _)) if rpos < covered => {
                if image.index.contains_key(&(q, s)) {
                    return Err(format!(
                        "queue {q} seq {s} is back after its flushed removal"
                    ));
                }
            }
            Some(&(_, rstamp)) if rstamp < k => {}
            _ => {
                match image.index.get(&(q, s)) {
                    Some(e) if e.msg_id == msg => {}
                    other => {
                        return Err(format!(
                            "confirmed message {msg} is not at queue {q} seq {s}: {other:?}"
                        ));
                    }
                }
                if image.messages.get(&msg) != Some(&record(msg)) {
                    return Err(format!(
                        "confirmed message {msg}'s record is missing or wrong"
                    ));
                }
            }
        }
    }
    // Nothing is there that was not submitted by then, and no entry
    // points at a missing record.
    for (&(q, s), e) in &image.index {
        match f.enqueues.get(&(q, s)) {
            Some(&(msg, _, stamp)) if msg == e.msg_id && stamp < k => {}
            other => {
                return Err(format!(
                    "queue {q} seq {s} holds {} but was never enqueued so: {other:?}",
                    e.msg_id
                ));
            }
        }
        if e.delivered && f.deliveries.get(&(q, s)).is_none_or(|&st| st >= k) {
            return Err(format!("queue {q} seq {s} is marked delivered but was not"));
        }
        if !image.messages.contains_key(&e.msg_id) {
            return Err(format!(
                "queue {q} seq {s} refers to message {} which is not stored",
                e.msg_id
            ));
        }
    }
    for (&m, r) in &image.messages {
        if f.messages.get(&m).is_none_or(|&st| st >= k) {
            return Err(format!(
                "message {m} is stored but was never published by then"
            ));
        }
        if *r != record(m) {
            return Err(format!("message {m}'s record is not what was published"));
        }
        // Once its routing and every removal are flushed, the record is
        // gone: only the documented crash windows leave records behind.
        let routed = f.routed.get(&m).is_some_and(|&p| p < covered);
        let released = f
            .enqueues
            .iter()
            .filter(|(_, (msg, _, _))| *msg == m)
            .all(|(key, _)| f.removals.get(key).is_some_and(|&(p, _)| p < covered));
        if routed && released {
            return Err(format!(
                "message {m} is stored after every queue let go of it, flushed"
            ));
        }
    }
    for (&q, &(dpos, _)) in &f.declared {
        let present = image
            .queues
            .contains_key(&(VHOST.to_string(), queue_name(q)));
        let deleted = f.deleted.get(&q);
        if deleted.is_some_and(|&(xpos, _)| xpos < covered) {
            if present || !image.queue_index(q).is_empty() {
                return Err(format!("queue {q} survives its flushed deletion"));
            }
        } else if deleted.is_none_or(|&(_, xstamp)| xstamp >= k) && dpos < covered && !present {
            return Err(format!("declared queue {q} is missing"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Targeted tests.

#[test]
fn a_confirm_is_released_only_after_the_flush_covering_it() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1)]);
    h.batch(publish(1, &[(1, 1)]));
    let r = h.confirm(1);
    assert!(r.ok);
    let history = h.journal().history();
    let puts_1 = |ws: &[Write]| ws.iter().any(|w| matches!(w, Write::PutMessage(1, _)));
    let written = history
        .iter()
        .position(|e| matches!(e, Event::Apply(ws) if puts_1(ws)))
        .unwrap();
    assert!(
        history[written..r.at]
            .iter()
            .any(|e| matches!(e, Event::Flush)),
        "confirm released at step {} with no flush after the write at step {written}: {history:?}",
        r.at
    );
    // The image a crash right at the release keeps holds the message.
    let image = h.journal().image_after(r.at, 0);
    assert_eq!(image.queue_index(1).len(), 1);
    assert_eq!(image.messages.get(&1), Some(&record(1)));
    h.finish();
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

#[test]
fn a_confirmed_deduplication_id_survives_a_crash_and_its_removal_too() {
    let mut h = Harness::mem();
    // A transient message routed by a disk-cached deduplication exchange:
    // no message record, only the id, then the confirm.
    h.batch([Op::DedupPut("a"), Op::Confirm(1)]);
    let r = h.confirm(1);
    assert!(r.ok);
    // A crash right at the release keeps the id.
    let image = h.journal().image_after(r.at, 0);
    assert_eq!(image.dedup.get(&dedup_key("a")), Some(&(Some(1_000), 0)));
    h.batch([Op::DedupRemove("a"), Op::Confirm(2)]);
    let r = h.confirm(2);
    assert!(h.journal().image_after(r.at, 0).dedup.is_empty());
    h.finish();
    check_history(&h.journal().history()).unwrap();
}

#[test]
fn a_failed_apply_nacks_every_confirm_in_its_batch_and_raises_the_disk_alarm() {
    let mut h = Harness::mem();
    let broker = Broker::new(Config::default().broker_config());
    h.persister.attach(&broker);
    h.batch([Op::DeclareQueue(1)]);
    assert!(!broker.alarm_raised(Alarm::Disk));
    h.journal().inject(Fault::Apply, 1);
    let mut ops = publish(1, &[(1, 1)]);
    ops.extend(publish(2, &[(1, 2)]));
    h.batch(ops);
    assert!(!h.confirm(1).ok);
    assert!(!h.confirm(2).ok);
    assert!(broker.alarm_raised(Alarm::Disk));
    assert_eq!(
        h.persister
            .stats
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Nothing of the failed batch was applied.
    assert!(h.journal().applied().messages.is_empty());
    assert!(h.journal().applied().queue_index(1).is_empty());
    h.finish();
    let acked: Vec<_> = h
        .rec
        .releases()
        .into_iter()
        .filter(|(c, _, r)| *c == 1 && r.ok)
        .collect();
    assert!(acked.is_empty(), "{acked:?}");
}

/// A full disk: the batch it refused is nacked, its writes kept, and
/// applied ahead of the next batch, whose confirms then cover them too;
/// nothing the broker holds is missing from the store afterwards.
#[test]
fn writes_a_full_disk_refused_are_applied_with_the_next_batch() {
    let mut h = Harness::mem();
    let broker = Broker::new(Config::default().broker_config());
    h.persister.attach(&broker);
    h.batch([Op::DeclareQueue(1)]);
    h.journal().inject(Fault::Apply, 1);
    h.batch(publish(1, &[(1, 1)]));
    assert!(!h.confirm(1).ok);
    assert!(broker.alarm_raised(Alarm::Disk));
    assert!(h.journal().applied().messages.is_empty());
    // A publish straddling the failure: its record was refused, its
    // enqueue comes after; the confirm comes once both are written.
    h.journal().inject(Fault::Apply, 1);
    h.batch([Op::Message(2)]);
    h.batch([
        Op::Enqueue {
            queue: 1,
            seq: 2,
            msg: 2,
        },
        Op::Routed(2),
        Op::Confirm(2),
    ]);
    assert!(h.confirm(2).ok);
    assert!(!broker.alarm_raised(Alarm::Disk));
    let image = h.journal().applied();
    assert!(image.messages.contains_key(&1) && image.messages.contains_key(&2));
    assert_eq!(image.queue_index(1).len(), 2);
    h.batch(publish(3, &[(1, 3)]));
    assert!(h.confirm(3).ok);
    h.finish();
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

/// A publish whose ops straddle a failed batch: its record was lost with
/// that batch, so the flush of the next one must not confirm it. (Before
/// the persister stopped after lost writes, this confirm came back ok for
/// a message that was nowhere in the store.)
#[test]
fn after_lost_writes_nothing_is_written_or_confirmed() {
    let mut h = Harness::mem();
    let broker = Broker::new(Config::default().broker_config());
    h.persister.attach(&broker);
    h.batch([Op::DeclareQueue(1)]);
    let steps = h.journal().events();
    h.journal().inject(Fault::ApplyLost, 1);
    h.batch([Op::Message(1)]);
    h.batch([
        Op::Enqueue {
            queue: 1,
            seq: 1,
            msg: 1,
        },
        Op::Routed(1),
        Op::Confirm(1),
    ]);
    assert!(!h.journal().applied().messages.contains_key(&1));
    assert!(
        !h.confirm(1).ok,
        "confirmed a message whose record was lost"
    );
    // A batch with nothing to write confirms nothing either: this
    // barrier's publish was written (or not) by the batch before.
    h.batch([
        Op::Message(2),
        Op::Enqueue {
            queue: 1,
            seq: 2,
            msg: 2,
        },
        Op::Routed(2),
    ]);
    h.batch([Op::Confirm(2)]);
    assert!(!h.confirm(2).ok);
    // Publishers stay blocked: nothing will be confirmed before a restart.
    h.batch(publish(3, &[(1, 3)]));
    assert!(!h.confirm(3).ok);
    assert!(broker.alarm_raised(Alarm::Disk));
    let history = h.journal().history();
    assert!(
        history[steps..].iter().all(|e| matches!(e, Event::Flush)),
        "written after the loss: {:?}",
        &history[steps..]
    );
    h.finish();
}

/// A failed apply holding a dequeue, then the purge of that dequeue's
/// queue in the same batch: both would release the one entry, and the
/// record another queue still holds would be deleted. (Before the
/// persister stopped after lost writes, it was.)
#[test]
fn a_lost_dequeue_does_not_make_a_purge_delete_a_held_record() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1), Op::DeclareQueue(2)]);
    h.batch(publish(1, &[(1, 1), (2, 1)]));
    assert!(h.confirm(1).ok);
    h.journal().inject(Fault::Apply, 1);
    h.batch([
        Op::Dequeue {
            queue: 1,
            seq: 1,
            msg: 1,
        },
        Op::DeleteQueue(1),
    ]);
    h.finish();
    for image in [h.journal().applied(), h.journal().durable()] {
        assert_eq!(image.queue_index(2).len(), 1);
        assert!(image.messages.contains_key(&1), "{image:?}");
    }
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

/// A failed purge removes nothing and releases nothing: its batch is
/// nacked, later ones are confirmed, and the deleted queue's entries (and
/// the records only they hold) stay behind in the store, unread by
/// recovery, which reads the indexes of defined queues only.
#[test]
fn a_failed_purge_nacks_its_batch_and_leaves_the_entries_behind() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1), Op::DeclareQueue(2)]);
    h.batch(publish(1, &[(1, 1)]));
    h.journal().inject(Fault::Purge, 1);
    let mut ops = vec![Op::DeleteQueue(1)];
    ops.extend(publish(2, &[(2, 1)]));
    h.batch(ops);
    assert!(!h.confirm(2).ok);
    h.batch(publish(3, &[(2, 2)]));
    assert!(h.confirm(3).ok);
    let image = h.journal().durable();
    assert!(
        !image
            .queues
            .contains_key(&(VHOST.to_string(), queue_name(1)))
    );
    assert_eq!(image.queue_index(1).len(), 1);
    assert!(image.messages.contains_key(&1));
    h.finish();
    check_history(&h.journal().history()).unwrap();
}

#[test]
fn a_failed_flush_nacks_its_batch_and_the_next_flush_covers_it() {
    let mut h = Harness::mem();
    let broker = Broker::new(Config::default().broker_config());
    h.persister.attach(&broker);
    h.batch([Op::DeclareQueue(1)]);
    h.journal().inject(Fault::Flush, 1);
    h.batch(publish(1, &[(1, 1)]));
    assert!(!h.confirm(1).ok);
    assert!(broker.alarm_raised(Alarm::Disk));
    // Applied, so readable, but not durable.
    assert!(h.journal().applied().messages.contains_key(&1));
    assert!(!h.journal().durable().messages.contains_key(&1));
    h.batch(publish(2, &[(1, 2)]));
    assert!(h.confirm(2).ok);
    assert!(
        !broker.alarm_raised(Alarm::Disk),
        "a good write lowers the alarm"
    );
    let durable = h.journal().durable();
    assert!(durable.messages.contains_key(&1) && durable.messages.contains_key(&2));
    h.finish();
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

#[test]
fn a_message_record_is_written_once_and_deleted_after_its_last_dequeue() {
    let mut h = Harness::mem();
    h.batch([
        Op::DeclareQueue(1),
        Op::DeclareQueue(2),
        Op::DeclareQueue(3),
    ]);
    h.batch(publish(7, &[(1, 1), (2, 1), (3, 1)]));
    assert!(h.confirm(7).ok);
    let puts = |h: &Harness| {
        mentions(&h.journal().history(), 7)
            .iter()
            .filter(|w| matches!(w, Write::PutMessage(..)))
            .count()
    };
    assert_eq!(puts(&h), 1, "one record for three queues");
    h.batch([Op::Dequeue {
        queue: 1,
        seq: 1,
        msg: 7,
    }]);
    assert!(h.journal().applied().messages.contains_key(&7));
    h.batch([
        Op::Delivered {
            queue: 2,
            seq: 1,
            msg: 7,
        },
        Op::Dequeue {
            queue: 2,
            seq: 1,
            msg: 7,
        },
    ]);
    assert!(h.journal().applied().messages.contains_key(&7));
    let before = h.journal().events();
    h.batch([Op::Dequeue {
        queue: 3,
        seq: 1,
        msg: 7,
    }]);
    let history = h.journal().history();
    assert!(
        matches!(&history[before], Event::Apply(ws)
            if matches!(ws[..], [Write::Dequeue { queue: 3, .. }, Write::DeleteMessage(7)])),
        "the last dequeue and the delete go in one group: {:?}",
        &history[before..]
    );
    assert!(h.journal().durable().messages.is_empty());
    h.finish();
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

#[test]
fn a_message_gone_within_its_batch_is_never_written() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1), Op::DeclareQueue(2)]);
    let mut ops = Vec::new();
    // Delivered and acked within the batch.
    ops.extend(publish(1, &[(1, 1)]));
    ops.extend([
        Op::Delivered {
            queue: 1,
            seq: 1,
            msg: 1,
        },
        Op::Dequeue {
            queue: 1,
            seq: 1,
            msg: 1,
        },
    ]);
    // Taken by a no-ack consumer while it was still being routed.
    ops.extend([
        Op::Message(2),
        Op::Enqueue {
            queue: 1,
            seq: 2,
            msg: 2,
        },
        Op::Dequeue {
            queue: 1,
            seq: 2,
            msg: 2,
        },
        Op::Enqueue {
            queue: 2,
            seq: 1,
            msg: 2,
        },
        Op::Dequeue {
            queue: 2,
            seq: 1,
            msg: 2,
        },
        Op::Routed(2),
        Op::Confirm(2),
    ]);
    // Refused by every queue.
    ops.extend([Op::Message(3), Op::Routed(3), Op::Confirm(3)]);
    h.batch(ops);
    for m in 1..=3 {
        assert!(h.confirm(m).ok);
        let w = mentions(&h.journal().history(), m);
        assert!(w.is_empty(), "message {m} was written: {w:?}");
    }
    // The same publish split over two batches is written, then deleted.
    h.batch([Op::Message(4)]);
    h.batch([Op::Routed(4)]);
    let kinds: Vec<_> = mentions(&h.journal().history(), 4)
        .iter()
        .map(|w| matches!(w, Write::PutMessage(..)))
        .collect();
    assert_eq!(kinds, [true, false]);
    h.finish();
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

/// A queue deletion inside a batch: what came before is applied first, the
/// index purged in its own atomic group, the records it released deleted in
/// the group after. A crash between the two leaves a record without an
/// index entry (documented above).
#[test]
fn a_deleted_queue_is_purged_after_what_came_before_it() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1), Op::DeclareQueue(2)]);
    let start = h.journal().events();
    let mut ops = publish(1, &[(1, 1), (2, 1)]);
    ops.extend(publish(2, &[(1, 2)]));
    ops.extend([
        Op::DeleteQueue(1),
        Op::Dequeue {
            queue: 2,
            seq: 1,
            msg: 1,
        },
    ]);
    h.batch(ops);
    assert!(h.confirm(1).ok && h.confirm(2).ok);
    let history = h.journal().history();
    let [
        Event::Apply(first),
        Event::Purge { queue: 1, removed },
        Event::Apply(last),
        Event::Flush,
    ] = &history[start..]
    else {
        panic!(
            "expected apply, purge, apply, flush: {:#?}",
            &history[start..]
        );
    };
    let is_queue_deletion = |w: &Write| match w {
        Write::Definition(d) => matches!(**d, DefinitionWrite::DeleteQueue { .. }),
        _ => false,
    };
    assert!(
        matches!(first.last(), Some(w) if is_queue_deletion(w)),
        "{first:?}"
    );
    assert!(first.iter().any(|w| matches!(w, Write::PutMessage(2, _))));
    let purged: Vec<u64> = removed.iter().map(|e| e.msg_id).collect();
    assert_eq!(purged, [1, 2]);
    assert!(
        matches!(
            last[..],
            [
                Write::DeleteMessage(2),
                Write::Dequeue {
                    queue: 2,
                    seq: 1,
                    msg: 1
                },
                Write::DeleteMessage(1)
            ]
        ),
        "{last:?}"
    );
    // The documented window: crash after the purge, before the deletes.
    let image = h.journal().image_after(start + 2, 2);
    assert!(image.index.values().all(|e| e.msg_id != 2));
    assert!(image.messages.contains_key(&2));
    let image = h.journal().durable();
    assert!(image.messages.is_empty() && image.index.is_empty());
    assert_eq!(image.queues.len(), 1);
    h.finish();
    check_history(&h.journal().history()).unwrap();
    check_crash_points(h.journal(), &h.subs, &h.rec.releases()).unwrap();
}

#[test]
fn a_message_not_yet_written_is_read_from_memory() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1)]);
    // The thread is held: this op waits in its channel.
    h.submit(Op::Message(5));
    let loaded = h.persister.load(5).unwrap().unwrap();
    assert_eq!(loaded.body, message(5).body);
    assert!(h.journal().applied().messages.is_empty());
    for op in [
        Op::Enqueue {
            queue: 1,
            seq: 1,
            msg: 5,
        },
        Op::Routed(5),
    ] {
        h.submit(op);
    }
    h.cut();
    let loaded = h.persister.load(5).unwrap().unwrap();
    assert_eq!(loaded.body, message(5).body);
    assert_eq!(loaded.store_id, Some(5));
    h.batch([Op::Dequeue {
        queue: 1,
        seq: 1,
        msg: 5,
    }]);
    assert!(h.persister.load(5).unwrap().is_none());
    assert!(h.persister.load(6).unwrap().is_none());
    h.finish();
}

#[test]
fn a_restart_counts_references_from_the_durable_indexes() {
    let mut h = Harness::mem();
    h.batch([Op::DeclareQueue(1), Op::DeclareQueue(2)]);
    let mut ops = publish(1, &[(1, 1), (2, 1)]);
    ops.extend(publish(2, &[(1, 2)]));
    h.batch(ops);
    h.batch([Op::Dequeue {
        queue: 1,
        seq: 1,
        msg: 1,
    }]);
    // Unflushed at the crash: lost.
    h.submit(Op::Dequeue {
        queue: 2,
        seq: 1,
        msg: 1,
    });
    let crashed = Arc::new(h.journal().crash(0));
    h.finish();
    let image = crashed.durable();
    assert_eq!(image.queue_index(2).len(), 1);
    let mut h = Harness::start(
        Arc::clone(&crashed),
        Some(Arc::clone(&crashed)),
        refs_like_recovery(&image),
    );
    h.batch([Op::Dequeue {
        queue: 2,
        seq: 1,
        msg: 1,
    }]);
    assert!(!h.journal().durable().messages.contains_key(&1));
    h.batch([Op::Dequeue {
        queue: 1,
        seq: 2,
        msg: 2,
    }]);
    let image = h.journal().durable();
    assert!(
        image.messages.is_empty() && image.index.is_empty(),
        "{image:?}"
    );
    h.finish();
}

// ---------------------------------------------------------------------------
// The model.

/// What a test script does next.
#[derive(Debug, Clone)]
enum Action {
    /// Publish to the queues in `to` (a bit per slot); those in `take`
    /// hand it at once to a no-ack consumer; cut the batch before op
    /// `split` of the publish if it is inside it.
    Publish {
        to: u8,
        take: u8,
        confirm: bool,
        split: u8,
    },
    Deliver {
        slot: usize,
        pick: usize,
    },
    Ack {
        slot: usize,
        pick: usize,
    },
    DeleteQueue {
        slot: usize,
    },
    DeclareQueue {
        slot: usize,
    },
    /// End the batch here.
    Cut,
    /// The flush of this batch fails.
    FailFlush,
}

const SLOTS: usize = 3;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0u8..8, 0u8..8, any::<bool>(), 0u8..10).prop_map(|(to, take, confirm, split)| {
            Action::Publish { to, take: take & to, confirm, split }
        }),
        2 => (0..SLOTS, any::<usize>()).prop_map(|(slot, pick)| Action::Deliver { slot, pick }),
        3 => (0..SLOTS, any::<usize>()).prop_map(|(slot, pick)| Action::Ack { slot, pick }),
        1 => (0..SLOTS).prop_map(|slot| Action::DeleteQueue { slot }),
        1 => (0..SLOTS).prop_map(|slot| Action::DeclareQueue { slot }),
        3 => Just(Action::Cut),
        1 => Just(Action::FailFlush),
    ]
}

/// One batch of the script.
#[derive(Debug, Default, Clone)]
struct Chunk {
    ops: Vec<Op>,
    fail_flush: bool,
    /// The apply of this batch fails (its writes are lost).
    fail_apply: bool,
}

/// A live queue of the simulated core.
#[derive(Debug)]
struct SimQueue {
    id: u64,
    next_seq: u64,
    /// (seq, msg, delivered), in order.
    entries: Vec<(u64, u64, bool)>,
}

/// Turns actions into the ops the core would submit, cut into batches.
fn script(actions: &[Action]) -> Vec<Chunk> {
    let mut slots: Vec<Option<SimQueue>> = Vec::new();
    let mut chunks = vec![Chunk::default()];
    for id in 1..=SLOTS as u64 {
        slots.push(Some(SimQueue {
            id,
            next_seq: 1,
            entries: Vec::new(),
        }));
        chunks[0].ops.push(Op::DeclareQueue(id));
    }
    let mut next_queue = SLOTS as u64 + 1;
    let mut next_msg = 1;
    let mut cur = Chunk::default();
    let cut = |cur: &mut Chunk, chunks: &mut Vec<Chunk>| {
        if !cur.ops.is_empty() || cur.fail_flush || cur.fail_apply {
            chunks.push(std::mem::take(cur));
        }
    };
    for a in actions {
        match *a {
            Action::Publish {
                to,
                take,
                confirm,
                split,
            } => {
                let msg = next_msg;
                next_msg += 1;
                let mut ops = vec![Op::Message(msg)];
                for (i, slot) in slots.iter_mut().enumerate() {
                    let Some(q) = slot else { continue };
                    if to & (1 << i) == 0 {
                        continue;
                    }
                    let seq = q.next_seq;
                    q.next_seq += 1;
                    ops.push(Op::Enqueue {
                        queue: q.id,
                        seq,
                        msg,
                    });
                    if take & (1 << i) != 0 {
                        ops.push(Op::Dequeue {
                            queue: q.id,
                            seq,
                            msg,
                        });
                    } else {
                        q.entries.push((seq, msg, false));
                    }
                }
                ops.push(Op::Routed(msg));
                if confirm {
                    ops.push(Op::Confirm(msg));
                }
                for (i, op) in ops.into_iter().enumerate() {
                    if i > 0 && i == usize::from(split) {
                        cut(&mut cur, &mut chunks);
                    }
                    cur.ops.push(op);
                }
            }
            Action::Deliver { slot, pick } => {
                let Some(q) = &mut slots[slot] else { continue };
                let fresh: Vec<usize> = (0..q.entries.len()).filter(|&i| !q.entries[i].2).collect();
                if fresh.is_empty() {
                    continue;
                }
                let i = fresh[pick % fresh.len()];
                q.entries[i].2 = true;
                let (seq, msg, _) = q.entries[i];
                cur.ops.push(Op::Delivered {
                    queue: q.id,
                    seq,
                    msg,
                });
            }
            Action::Ack { slot, pick } => {
                let Some(q) = &mut slots[slot] else { continue };
                if q.entries.is_empty() {
                    continue;
                }
                let (seq, msg, _) = q.entries.remove(pick % q.entries.len());
                cur.ops.push(Op::Dequeue {
                    queue: q.id,
                    seq,
                    msg,
                });
            }
            Action::DeleteQueue { slot } => {
                if let Some(q) = slots[slot].take() {
                    cur.ops.push(Op::DeleteQueue(q.id));
                }
            }
            Action::DeclareQueue { slot } => {
                if slots[slot].is_none() {
                    slots[slot] = Some(SimQueue {
                        id: next_queue,
                        next_seq: 1,
                        entries: Vec::new(),
                    });
                    cur.ops.push(Op::DeclareQueue(next_queue));
                    next_queue += 1;
                }
            }
            Action::Cut => cut(&mut cur, &mut chunks),
            Action::FailFlush => cur.fail_flush = true,
        }
    }
    cut(&mut cur, &mut chunks);
    chunks
}

/// Messages whose whole life (record, every enqueue and removal, end of
/// routing) lies inside one batch with no queue deletion in between: the
/// thread must never write them.
fn never_written(chunks: &[Chunk]) -> Vec<u64> {
    let mut out = Vec::new();
    for chunk in chunks {
        let ops = &chunk.ops;
        for (start, op) in ops.iter().enumerate() {
            let Op::Message(m) = *op else { continue };
            let mut open: HashSet<(u64, u64)> = HashSet::new();
            let mut routed = false;
            let mut gone = false;
            for op in &ops[start + 1..] {
                match *op {
                    // A deletion applies what came before it.
                    Op::DeleteQueue(_) => break,
                    Op::Enqueue { queue, seq, msg } if msg == m => {
                        open.insert((queue, seq));
                    }
                    Op::Dequeue { queue, seq, msg } if msg == m => {
                        open.remove(&(queue, seq));
                    }
                    Op::Routed(msg) if msg == m => routed = true,
                    _ => continue,
                }
                if routed && open.is_empty() {
                    gone = true;
                    break;
                }
            }
            if gone {
                out.push(m);
            }
        }
    }
    out
}

/// Runs a script through the persister over a [`MemJournal`] and checks
/// every crash point.
fn run_model(chunks: &[Chunk]) -> Result<(), String> {
    let mut h = Harness::mem();
    // The first journal step of the batch whose apply failed.
    let mut lost_from = None;
    for chunk in chunks {
        if chunk.fail_flush {
            h.journal().inject(Fault::Flush, 1);
        }
        if chunk.fail_apply {
            h.journal().inject(Fault::Apply, 1);
        }
        let failed = (
            h.journal().failures(Fault::Apply),
            h.journal().failures(Fault::Flush),
        );
        let start = h.journal().events();
        let first = h.subs.len();
        h.batch(chunk.ops.iter().cloned());
        // A batch without writes never applies; one whose apply failed
        // never flushes: disarm what did not fire.
        h.journal().inject(Fault::Apply, 0);
        h.journal().inject(Fault::Flush, 0);
        let apply_failed = h.journal().failures(Fault::Apply) > failed.0;
        let flush_failed = h.journal().failures(Fault::Flush) > failed.1;
        // A failed apply is retried with the next batch (a full disk),
        // unless it cut a queue's deletion short: then writes are lost
        // and nothing is confirmed any more.
        if h.persister.writes_lost() && lost_from.is_none() {
            lost_from = Some(start);
        }
        let expect = lost_from.is_none() && !flush_failed && !apply_failed;
        for s in &h.subs[first..] {
            if let Op::Confirm(m) = s.op {
                let r = h.confirm(m);
                if r.ok != expect {
                    return Err(format!(
                        "confirm {m} released {} (apply failed: {apply_failed}, flush failed: \
                         {flush_failed}, writes lost: {})",
                        r.ok,
                        lost_from.is_some()
                    ));
                }
            }
        }
    }
    h.finish();
    let history = h.journal().history();
    check_history(&history)?;
    for m in never_written(chunks) {
        let w = mentions(&history, m);
        if !w.is_empty() {
            return Err(format!(
                "message {m} lived within one batch but was written: {w:?}"
            ));
        }
    }
    check_crash_points(h.journal(), &h.subs, &h.rec.releases())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the ops, wherever batches are cut and whichever applies
    /// and flushes fail, a crash after any journal step keeps every
    /// confirmed message where it was enqueued (unless its removal may have
    /// been applied), holds nothing that was never enqueued, and no record
    /// a flushed batch let go of.
    #[test]
    fn a_crash_at_any_step_keeps_what_was_confirmed(
        actions in prop::collection::vec(action(), 1..64),
        fail_apply in prop::option::weighted(0.25, any::<prop::sample::Index>()),
    ) {
        let mut chunks = script(&actions);
        if let Some(i) = fail_apply
            && chunks.len() > 1
        {
            // Not the declarations: every later check builds on them.
            let n = chunks.len() - 1;
            chunks[1 + i.index(n)].fail_apply = true;
        }
        run_model(&chunks).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// Sled.

/// A path for a store's files (`.0`, not created: the store makes it)
/// inside a fresh temporary directory, removed with it on drop.
struct TempDir(
    std::path::PathBuf,
    #[expect(dead_code, reason = "held: removed on drop")] tempfile::TempDir,
);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("warren-journal-test-{name}-"))
            .tempdir()
            .expect("a temporary directory");
        TempDir(dir.path().join("data"), dir)
    }
}

/// Sorted for comparison (the two stores order definitions by their own
/// keys).
fn sorted<T: std::fmt::Debug>(v: Vec<T>) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    out.sort();
    out
}

fn assert_same(journal: &DiskJournal, image: &Image, queues: u64, messages: u64) {
    let defs = journal.defs.definitions().unwrap();
    let mine = image.definitions();
    assert_eq!(sorted(defs.exchanges), sorted(mine.exchanges));
    assert_eq!(sorted(defs.queues), sorted(mine.queues));
    assert_eq!(sorted(defs.bindings), sorted(mine.bindings));
    for m in 1..=messages {
        assert_eq!(
            journal.messages.load(m).unwrap().as_ref(),
            image.messages.get(&m),
            "message {m}"
        );
    }
    let _ = queues;
}

/// The queue indexes a reopened message store holds, as the memory
/// journal keeps them.
fn assert_same_indexes(held: &warren_store::Recovered, image: &Image, queues: u64) {
    for q in 1..=queues {
        let got: Vec<IndexEntry> = held
            .queues
            .get(&q)
            .map(|v| {
                v.iter()
                    .map(|e| IndexEntry {
                        seq: e.seq,
                        msg_id: e.msg,
                        delivered: e.delivery_count > 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got, image.queue_index(q), "queue {q}");
    }
}

#[test]
fn sled_and_the_memory_journal_end_up_alike() {
    // A varied script from the model's generator, fixed seed.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let actions = prop::collection::vec(action(), 60)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let mut chunks = script(&actions);
    for c in &mut chunks {
        // sled cannot be made to fail on demand.
        c.fail_flush = false;
    }
    chunks.push(Chunk {
        ops: vec![
            Op::DeclareExchange("x"),
            Op::DeclareExchange("y"),
            Op::Bind {
                exchange: "x",
                queue: 1,
                key: "a",
            },
            Op::Bind {
                exchange: "x",
                queue: 1,
                key: "a",
            },
            Op::Bind {
                exchange: "y",
                queue: 2,
                key: "b",
            },
        ],
        ..Chunk::default()
    });
    chunks.push(Chunk {
        ops: vec![
            Op::Unbind {
                exchange: "y",
                queue: 2,
                key: "b",
            },
            Op::DeleteExchange("y"),
        ],
        ..Chunk::default()
    });
    let queues = 1 + chunks
        .iter()
        .flat_map(|c| &c.ops)
        .filter(|o| matches!(o, Op::DeclareQueue(_)))
        .count() as u64;
    let messages = chunks
        .iter()
        .flat_map(|c| &c.ops)
        .filter(|o| matches!(o, Op::Message(_)))
        .count() as u64;

    let mut h = Harness::mem();
    for c in &chunks {
        h.batch(c.ops.iter().cloned());
    }
    h.finish();
    let image = h.journal().applied();
    assert_eq!(image, h.journal().durable());

    let dir = TempDir::new("parity");
    let open = || {
        let store = Arc::new(Store::open(&dir.0).unwrap());
        let (messages, held) = MessageStore::open(&dir.0.join("messages")).unwrap();
        (Arc::new(DiskJournal::new(store, messages)), held)
    };
    let (journal, _) = open();
    let mut s = Harness::start(Arc::clone(&journal), None, Default::default());
    for c in &chunks {
        s.batch(c.ops.iter().cloned());
    }
    s.finish();
    for (c, w, r) in s.rec.releases() {
        assert!(r.ok, "the disk journal nacked {w:?} on channel {c}");
    }
    assert_same(&journal, &image, queues, messages);
    // What is on disk after a reopen is what the memory journal made
    // durable.
    drop(s);
    drop(journal);
    let (journal, held) = open();
    assert_same(&journal, &image, queues, messages);
    assert_same_indexes(&held, &image, queues);
}
