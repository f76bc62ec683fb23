//! The message store against an in-memory model: random batches with
//! maintenance (checkpoints, compaction) and reopens in between, a torn
//! log tail, and the space a backlog that never empties takes.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use support::{Rng, TempDir};

use std::collections::BTreeMap;
use std::path::PathBuf;

use warren_codec::{BasicProperties, ShortStr};
use warren_store::{IndexedMessage, MessageOp, MessageStore, Tuning};

const SMALL: Tuning = Tuning {
    segment_bytes: 8 << 10,
    checkpoint_bytes: 16 << 10,
    crash_after_compaction_copy: false,
};

/// What the store should hold.
#[derive(Default)]
struct Model {
    bodies: BTreeMap<u64, Vec<u8>>,
    queues: BTreeMap<u64, BTreeMap<u64, IndexedMessage>>,
    next_seq: BTreeMap<u64, u64>,
}

impl Model {
    fn refs(&self, msg: u64) -> usize {
        self.queues
            .values()
            .flat_map(|q| q.values())
            .filter(|e| e.msg == msg)
            .count()
    }
}

/// One batch's ops, owned (the store takes borrowed ones).
enum Owned {
    Put(u64, Vec<u8>),
    Forget(u64),
    Enq(u64, IndexedMessage),
    Deliv(u64, u64, u32),
    Deq(u64, u64),
}

fn apply(store: &MessageStore, ops: &[Owned]) {
    let ex = ShortStr::from_static("ex");
    let rk = ShortStr::from_static("rk");
    let props = BasicProperties::default();
    let borrowed: Vec<MessageOp<'_>> = ops
        .iter()
        .map(|o| match o {
            Owned::Put(id, body) => MessageOp::Put {
                id: *id,
                exchange: &ex,
                routing_key: &rk,
                properties: &props,
                body,
            },
            Owned::Forget(id) => MessageOp::Forget(*id),
            Owned::Enq(queue, entry) => MessageOp::Enqueue {
                queue: *queue,
                entry: *entry,
            },
            Owned::Deliv(queue, seq, count) => MessageOp::Delivered {
                queue: *queue,
                seq: *seq,
                count: *count,
            },
            Owned::Deq(queue, seq) => MessageOp::Dequeue {
                queue: *queue,
                seq: *seq,
            },
        })
        .collect();
    store.apply(&borrowed).unwrap();
}

/// A random batch, applied to the model as it is built.
fn batch(rng: &mut Rng, m: &mut Model, next_id: &mut u64) -> Vec<Owned> {
    let mut ops = Vec::new();
    for _ in 0..1 + rng.below(12) {
        match rng.below(10) {
            0..=4 => {
                let id = *next_id;
                *next_id += 1;
                let body: Vec<u8> = (0..rng.below(700)).map(|i| (i ^ id) as u8).collect();
                ops.push(Owned::Put(id, body.clone()));
                m.bodies.insert(id, body.clone());
                let fanout = 1 + rng.below(3);
                for q in 0..fanout {
                    let queue = 1 + (q + rng.below(4)) % 4;
                    let seq_slot = m.next_seq.entry(queue).or_insert(0);
                    // Sparse sequence numbers cross index file spans.
                    *seq_slot += 1 + rng.below(3000);
                    let e = IndexedMessage {
                        seq: *seq_slot,
                        msg: id,
                        bytes: body.len() as u32,
                        priority: (id % 3) as u8,
                        expires_ms: if id.is_multiple_of(5) { 1_000 + id } else { 0 },
                        delivery_count: 0,
                    };
                    m.queues.entry(queue).or_default().insert(e.seq, e);
                    ops.push(Owned::Enq(queue, e));
                }
                if m.refs(id) == 0 {
                    m.bodies.remove(&id);
                    ops.push(Owned::Forget(id));
                }
            }
            5 => {
                let queue = 1 + rng.below(4);
                if let Some(q) = m.queues.get_mut(&queue)
                    && let Some(seq) = q
                        .keys()
                        .nth(rng.below(q.len().max(1) as u64) as usize)
                        .copied()
                {
                    let e = q.get_mut(&seq).unwrap();
                    e.delivery_count += 1;
                    ops.push(Owned::Deliv(queue, seq, e.delivery_count));
                }
            }
            _ => {
                let queue = 1 + rng.below(4);
                // Mostly in order, sometimes from the middle.
                let pick = m.queues.get(&queue).and_then(|q| {
                    if rng.below(4) == 0 {
                        q.keys()
                            .nth(rng.below(q.len().max(1) as u64) as usize)
                            .copied()
                    } else {
                        q.keys().next().copied()
                    }
                });
                if let Some(seq) = pick {
                    let e = m.queues.get_mut(&queue).unwrap().remove(&seq).unwrap();
                    ops.push(Owned::Deq(queue, seq));
                    if m.refs(e.msg) == 0 {
                        m.bodies.remove(&e.msg);
                        ops.push(Owned::Forget(e.msg));
                    }
                }
            }
        }
    }
    ops
}

fn check(store: &MessageStore, m: &Model, recovered: Option<&warren_store::Recovered>) {
    if let Some(r) = recovered {
        let want: BTreeMap<u64, Vec<IndexedMessage>> = m
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, q)| (*k, q.values().copied().collect()))
            .collect();
        assert_eq!(r.queues, want, "recovered queues");
    }
    let ids: Vec<u64> = m.bodies.keys().copied().collect();
    let got = store.load_many(&ids);
    for (id, g) in ids.iter().zip(got) {
        let g = g.unwrap().unwrap_or_else(|| panic!("message {id} missing"));
        assert_eq!(&g.body[..], &m.bodies[id][..], "message {id}");
    }
    assert_eq!(store.stats().messages, m.bodies.len());
}

#[test]
fn random_batches_with_maintenance_and_reopens_match_the_model() {
    for seed in 1..=6u64 {
        let dir = TempDir::new("model");
        let mut rng = Rng::new(seed);
        let mut m = Model::default();
        let mut next_id = 1;
        let (mut store, r) = MessageStore::open_tuned(&dir.0, SMALL).unwrap();
        assert!(r.queues.is_empty());
        let mut maintained = 0;
        let mut hinted = 0;
        for step in 0..400 {
            let ops = batch(&mut rng, &mut m, &mut next_id);
            apply(&store, &ops);
            if rng.below(3) == 0 {
                store.flush().unwrap();
            }
            // Maintenance runs repeatedly, as the thread runs it when idle.
            for _ in 0..3 {
                if !store.maintain().unwrap() {
                    break;
                }
                maintained += 1;
            }
            if rng.below(5) == 0 {
                let q = 1 + rng.below(4);
                let want: Vec<u64> = m
                    .queues
                    .get(&q)
                    .map(|x| x.values().map(|e| e.msg).collect())
                    .unwrap_or_default();
                if rng.below(8) == 0 {
                    let got = store.purge_queue(q).unwrap();
                    assert_eq!(got, want, "purge of queue {q} at step {step}");
                    m.queues.remove(&q);
                    let dead: Vec<u64> = want.into_iter().filter(|id| m.refs(*id) == 0).collect();
                    let mut forget = Vec::new();
                    for id in dead {
                        if m.bodies.remove(&id).is_some() {
                            forget.push(Owned::Forget(id));
                        }
                    }
                    apply(&store, &forget);
                }
            }
            if step % 37 == 36 {
                // A reopen without a flush first: every write was made, as
                // after kill -9.
                drop(store);
                // Hint files say where a sealed segment's messages are; a
                // damaged one is not trusted (the segment is read instead).
                let hints: Vec<PathBuf> = std::fs::read_dir(&dir.0)
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "hint"))
                    .collect();
                hinted += hints.len();
                if let Some(h) = hints.get(rng.below(hints.len().max(1) as u64 * 2) as usize) {
                    let mut b = std::fs::read(h).unwrap();
                    let i = 20 + rng.below(b.len() as u64 - 24) as usize;
                    b[i] ^= 0x40;
                    std::fs::write(h, b).unwrap();
                }
                let (s, r) = MessageStore::open_tuned(&dir.0, SMALL).unwrap();
                assert!(r.max_message < next_id);
                assert_eq!((r.dropped, r.cut), (0, 0));
                check(&s, &m, Some(&r));
                store = s;
            } else if step % 10 == 0 {
                check(&store, &m, None);
            }
        }
        store.flush().unwrap();
        // Space came back along the way: checkpoints, dead segments
        // deleted, live records moved.
        assert!(maintained > 20, "maintenance ran {maintained} times");
        assert!(hinted > 0, "no hint file was ever written");
        let stats = store.stats();
        assert!(
            stats.segment_bytes <= 2 * stats.live_bytes + 6 * SMALL.segment_bytes,
            "{stats:?}"
        );
        drop(store);
        let (s, r) = MessageStore::open_tuned(&dir.0, SMALL).unwrap();
        check(&s, &m, Some(&r));
    }
}

#[test]
fn a_torn_log_tail_is_cut_and_what_came_before_is_served() {
    let dir = TempDir::new("torn");
    let (store, _) = MessageStore::open(&dir.0).unwrap();
    let mut m = Model::default();
    let mut ops = Vec::new();
    for id in 1..=3u64 {
        let body = vec![id as u8; 100];
        m.bodies.insert(id, body.clone());
        ops.push(Owned::Put(id, body));
        let e = IndexedMessage {
            seq: id,
            msg: id,
            bytes: 100,
            priority: 0,
            expires_ms: 0,
            delivery_count: 0,
        };
        ops.push(Owned::Enq(7, e));
        m.queues.entry(7).or_default().insert(id, e);
    }
    apply(&store, &ops);
    store.flush().unwrap();
    // A fourth message whose write was cut short by a crash.
    let e4 = IndexedMessage {
        seq: 4,
        msg: 4,
        bytes: 100,
        priority: 0,
        expires_ms: 0,
        delivery_count: 0,
    };
    apply(&store, &[Owned::Put(4, vec![4; 100]), Owned::Enq(7, e4)]);
    drop(store);
    let mut segs: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let head = segs.last().unwrap();
    let len = std::fs::metadata(head).unwrap().len();
    // Cut into the middle of message 4's record: it may not be served.
    let f = std::fs::OpenOptions::new().write(true).open(head).unwrap();
    f.set_len(len - 80).unwrap();
    drop(f);
    let (s, r) = MessageStore::open(&dir.0).unwrap();
    assert!(r.cut > 0);
    // The index file held the fourth enqueue, but its message is gone.
    assert_eq!(r.dropped, 1);
    check(&s, &m, Some(&r));
    assert!(s.load(4).unwrap().is_none());
}

#[test]
fn a_backlog_that_never_empties_keeps_the_files_within_twice_its_size() {
    let dir = TempDir::new("space");
    let tuning = Tuning {
        segment_bytes: 64 << 10,
        checkpoint_bytes: 64 << 10,
        crash_after_compaction_copy: false,
    };
    let (store, _) = MessageStore::open_tuned(&dir.0, tuning).unwrap();
    let body = vec![7u8; 1000];
    let mut rng = Rng::new(9);
    let (mut next, mut head) = (1u64, 1u64);
    let mut worst: f64 = 0.0;
    let mut stragglers = std::collections::VecDeque::new();
    for round in 0..3000u64 {
        let mut ops = Vec::new();
        // Bursty consumers: the backlog swings between ~200 and ~1000.
        for _ in 0..5 {
            ops.push(Owned::Put(next, body.clone()));
            ops.push(Owned::Enq(
                1,
                IndexedMessage {
                    seq: next,
                    msg: next,
                    bytes: 1000,
                    priority: 0,
                    expires_ms: 0,
                    delivery_count: 0,
                },
            ));
            next += 1;
        }
        let backlog = next - head;
        let take = if backlog > 1000 {
            10
        } else if backlog < 200 {
            0
        } else {
            rng.below(11)
        };
        for _ in 0..take {
            // One message in fifty is left behind for a while (unacked by
            // a slow consumer) and acked 300 rounds later.
            if head.is_multiple_of(50) {
                stragglers.push_back((round + 300, head));
            } else {
                ops.push(Owned::Deq(1, head));
                ops.push(Owned::Forget(head));
            }
            head += 1;
        }
        while let Some(&(due, seq)) = stragglers.front()
            && due <= round
        {
            stragglers.pop_front();
            ops.push(Owned::Deq(1, seq));
            ops.push(Owned::Forget(seq));
        }
        apply(&store, &ops);
        store.flush().unwrap();
        while store.maintain().unwrap() {}
        let s = store.stats();
        if round > 200 {
            let over = s.segment_bytes as f64 - 2.0 * s.live_bytes as f64;
            worst = worst.max(over);
        }
    }
    let s = store.stats();
    // Twice the live bytes plus the head, the segments since the last
    // checkpoint and one being compacted.
    let fixed = 4.0 * tuning.segment_bytes as f64;
    assert!(
        worst <= fixed,
        "files exceeded twice the live bytes by {worst} (fixed allowance {fixed}); last {s:?}"
    );
    assert!(s.index_bytes < 2 << 20, "{s:?}");
}

#[test]
fn a_crash_in_the_middle_of_a_compaction_loses_nothing_and_serves_one_copy() {
    let dir = TempDir::new("compaction-crash");
    let crashing = Tuning {
        crash_after_compaction_copy: true,
        ..SMALL
    };
    let (store, _) = MessageStore::open_tuned(&dir.0, crashing).unwrap();
    let mut m = Model::default();
    let body = vec![3u8; 500];
    // Fill several segments, then ack all but every tenth message: the
    // files then hold far more than twice the live bytes.
    let mut ops = Vec::new();
    for id in 1..=200u64 {
        ops.push(Owned::Put(id, body.clone()));
        let e = IndexedMessage {
            seq: id,
            msg: id,
            bytes: 500,
            priority: 0,
            expires_ms: 0,
            delivery_count: 0,
        };
        ops.push(Owned::Enq(1, e));
        if id % 10 == 0 {
            m.bodies.insert(id, body.clone());
            m.queues.entry(1).or_default().insert(id, e);
        }
        if ops.len() > 20 {
            apply(&store, &ops);
            ops.clear();
        }
    }
    apply(&store, &ops);
    let mut acks = Vec::new();
    for id in 1..=200u64 {
        if id % 10 != 0 {
            acks.push(Owned::Deq(1, id));
            acks.push(Owned::Forget(id));
        }
    }
    apply(&store, &acks);
    store.flush().unwrap();
    // Checkpoints pass, then the compaction copies and "crashes".
    let mut crashed = false;
    for _ in 0..50 {
        match store.maintain() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                assert!(e.to_string().contains("crash injected"), "{e}");
                crashed = true;
                break;
            }
        }
    }
    assert!(crashed, "no compaction ran: {:?}", store.stats());
    drop(store);
    // Both copies of the moved messages are on disk now; each is served
    // once, and the old segment's space comes back.
    let (s, r) = MessageStore::open_tuned(&dir.0, SMALL).unwrap();
    assert_eq!((r.dropped, r.cut), (0, 0));
    check(&s, &m, Some(&r));
    for _ in 0..50 {
        if !s.maintain().unwrap() {
            break;
        }
    }
    let stats = s.stats();
    assert_eq!(stats.messages, 20);
    assert!(
        stats.segment_bytes <= 2 * stats.live_bytes + 4 * SMALL.segment_bytes,
        "{stats:?}"
    );
}
