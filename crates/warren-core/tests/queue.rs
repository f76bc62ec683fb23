//! A queue on its own, without a broker, a vhost or a connection: each
//! test is a table of steps (publish, consume, settle, let time pass) and
//! the effects each must have (deliveries to which consumer, dead letters
//! with their reasons, store ops, counts). A property test runs random
//! sequences against a reference model of a queue.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use warren_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};
use warren_core::mailbox::Event;
use warren_core::message::{Message, Properties};
use warren_core::persist::{LoadError, PersistOp, Persistence};
use warren_core::queue::{
    Consumer, Credit, DeadLetters, Queue, QueueSpec, QueueType, QueuedMessage,
};
use warren_core::{Mailbox, NoWake};

/// Records what the queue asks of the store, in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);

impl Persistence for Recorder {
    fn submit(&self, op: PersistOp) {
        let line = match op {
            PersistOp::Enqueue { seq, msg, .. } => format!("enqueue {seq} m{msg}"),
            PersistOp::Delivered { seq, msg, .. } => format!("delivered {seq} m{msg}"),
            PersistOp::Dequeue { seq, msg, .. } => format!("dequeue {seq} m{msg}"),
            PersistOp::DeleteQueue { .. } => "delete queue".to_string(),
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().push(line);
    }

    fn load(&self, _id: u64) -> Result<Option<Arc<Message>>, LoadError> {
        Ok(None)
    }
}

/// One step of a table and what it must cause.
#[derive(Debug, Clone)]
enum Step {
    /// Publish a body (accepted).
    Pub(&'static str),
    /// Publish with a priority.
    PubPrio(&'static str, u8),
    /// Publish with a per-message `expiration` in ms.
    PubTtl(&'static str, u64),
    /// Publish, and expect a length limit to refuse it.
    Refused(&'static str),
    /// Add an acknowledging consumer: tag, prefetch (0: none), priority.
    Consume(&'static str, u32, i64),
    /// Add a no-ack consumer.
    ConsumeNoAck(&'static str),
    /// Remove a consumer.
    Cancel(&'static str),
    /// Expect exactly these bodies delivered to the consumer since the last
    /// look (with `*` after a body: redelivered).
    Got(&'static str, &'static [&'static str]),
    /// Ack these bodies held by a consumer.
    Ack(&'static str, &'static [&'static str]),
    /// Nack with requeue.
    Requeue(&'static str, &'static [&'static str]),
    /// Reject without requeue.
    Reject(&'static str, &'static [&'static str]),
    /// Expect these dead letters (body, reason) since the last look.
    Dead(&'static [(&'static str, &'static str)]),
    /// Let time pass and run the broker's tick.
    Tick(u64),
    /// Expect this many ready messages.
    Ready(u32),
    /// Expect this many deliveries unacknowledged.
    Unacked(u32),
    /// basic.get with no-ack: expect this body, or nothing.
    Get(Option<&'static str>),
    /// Expect the tick to find the queue unused for longer than x-expires.
    Unused(bool),
    /// Purge; expect this many dropped.
    Purge(u32),
    /// Delete; expect these consumers to hear basic.cancel.
    Delete(&'static [&'static str]),
}

struct Harness {
    q: Arc<Queue>,
    now: Instant,
    mailboxes: HashMap<&'static str, Arc<Mailbox>>,
    /// Deliveries not yet settled, per consumer, by body.
    held: HashMap<&'static str, Vec<QueuedMessage>>,
    dead: Vec<(String, &'static str)>,
    last_unused: bool,
    credit: Arc<Credit>,
}

fn body(m: &QueuedMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

impl Harness {
    fn new(args: &[(&str, FieldValue)], store: Option<Arc<Recorder>>) -> Self {
        let mut t = FieldTable::new();
        for (k, v) in args {
            t.insert(*k, v.clone());
        }
        let quorum = t.get("x-queue-type") == Some(&FieldValue::LongStr("quorum".into()));
        let spec = QueueSpec {
            name: "q".into(),
            durable: store.is_some(),
            exclusive_owner: None,
            auto_delete: false,
            arguments: t,
            kind: if quorum {
                QueueType::Quorum
            } else {
                QueueType::Classic
            },
            store_id: store.as_ref().map(|_| 1),
        };
        Harness {
            q: Queue::new(spec, store.map(|s| s as Arc<dyn Persistence>)),
            now: Instant::now(),
            mailboxes: HashMap::new(),
            held: HashMap::new(),
            dead: Vec::new(),
            last_unused: false,
            credit: Arc::new(Credit::default()),
        }
    }

    fn take_dead(&mut self, d: DeadLetters) {
        for (m, why) in d.messages {
            self.dead.push((body(&m), why.as_str()));
        }
    }

    fn publish(&mut self, b: &'static str, props: BasicProperties, store_id: Option<u64>) -> bool {
        let mut m = Message::new(
            ShortStr::empty(),
            "q".into(),
            Properties::from(props),
            Bytes::from_static(b.as_bytes()),
        );
        m.store_id = store_id;
        let (ok, dead) = self.q.publish(Arc::new(m), self.now, None);
        self.take_dead(dead);
        ok
    }

    fn consume(&mut self, tag: &'static str, ack: bool, prefetch: u32, priority: i64) {
        let mb = Mailbox::new(Box::new(NoWake));
        let c = Consumer::new(
            tag.into(),
            1,
            1,
            Arc::clone(&mb),
            ack,
            prefetch,
            Arc::clone(&self.credit),
            false,
            priority,
        );
        self.mailboxes.insert(tag, mb);
        let dead = self.q.add_consumer(c).unwrap();
        self.take_dead(dead);
    }

    /// Bodies delivered to `tag` since the last look; keeps acking ones.
    fn delivered(&mut self, tag: &'static str) -> Vec<String> {
        let mut events = VecDeque::new();
        self.mailboxes[tag].drain_into(&mut events);
        let mut out = Vec::new();
        for e in events {
            if let Event::Deliver { messages, ack, .. } = e {
                for m in messages {
                    out.push(format!(
                        "{}{}",
                        body(&m),
                        if m.redelivered { "*" } else { "" }
                    ));
                    if ack {
                        self.held.entry(tag).or_default().push(m);
                    } else {
                        // A no-ack delivery written out frees its window.
                        let dead = self.q.settle(1, 1, Some(&tag.into()), 1, []);
                        self.take_dead(dead);
                    }
                }
            }
        }
        out
    }

    fn take_held(&mut self, tag: &'static str, bodies: &[&str]) -> Vec<QueuedMessage> {
        let held = self.held.entry(tag).or_default();
        bodies
            .iter()
            .map(|b| {
                let i = held
                    .iter()
                    .position(|m| body(m) == *b)
                    .unwrap_or_else(|| panic!("{tag} does not hold {b}"));
                held.remove(i)
            })
            .collect()
    }

    fn run(&mut self, steps: &[Step]) {
        for (i, step) in steps.iter().enumerate() {
            let at = format!("step {i}: {step:?}");
            match step.clone() {
                Step::Pub(b) => assert!(self.publish(b, Default::default(), None), "{at}"),
                Step::PubPrio(b, p) => {
                    let props = BasicProperties {
                        priority: Some(p),
                        ..Default::default()
                    };
                    assert!(self.publish(b, props, None), "{at}");
                }
                Step::PubTtl(b, ms) => {
                    let props = BasicProperties {
                        expiration: Some(ms.to_string().as_str().into()),
                        ..Default::default()
                    };
                    assert!(self.publish(b, props, None), "{at}");
                }
                Step::Refused(b) => assert!(!self.publish(b, Default::default(), None), "{at}"),
                Step::Consume(tag, prefetch, prio) => self.consume(tag, true, prefetch, prio),
                Step::ConsumeNoAck(tag) => self.consume(tag, false, 0, 0),
                Step::Cancel(tag) => {
                    let removed = self.q.remove_consumer(1, 1, &tag.into());
                    assert!(removed.found, "{at}");
                    self.take_dead(removed.dead);
                }
                Step::Got(tag, want) => {
                    let got = self.delivered(tag);
                    assert_eq!(got, want, "{at}");
                }
                Step::Ack(tag, bodies) => {
                    let ms = self.take_held(tag, bodies);
                    let dead = self.q.ack(1, 1, Some(&tag.into()), ms);
                    self.take_dead(dead);
                }
                Step::Requeue(tag, bodies) => {
                    let mut ms = self.take_held(tag, bodies);
                    let n = ms.len() as u32;
                    for m in &mut ms {
                        m.redelivered = true;
                        // As the channel counts a return from its client.
                        m.delivery_count += 1;
                    }
                    let dead = self.q.settle(1, 1, Some(&tag.into()), n, ms);
                    self.take_dead(dead);
                }
                Step::Reject(tag, bodies) => {
                    let ms = self.take_held(tag, bodies);
                    let n = ms.len() as u32;
                    let dead = self.q.settle_with_dead(1, 1, Some(&tag.into()), n, [], ms);
                    self.take_dead(dead);
                }
                Step::Dead(want) => {
                    let got: Vec<(String, &str)> = std::mem::take(&mut self.dead);
                    let want: Vec<(String, &str)> =
                        want.iter().map(|(b, r)| (b.to_string(), *r)).collect();
                    assert_eq!(got, want, "{at}");
                }
                Step::Tick(ms) => {
                    self.now += Duration::from_millis(ms);
                    let (unused, dead) = self.q.expire(self.now);
                    self.last_unused = unused;
                    self.take_dead(dead);
                }
                Step::Ready(n) => assert_eq!(self.q.message_count(), n, "{at}"),
                Step::Unacked(n) => assert_eq!(self.q.unacked_count(), n, "{at}"),
                Step::Get(want) => {
                    let (got, dead) = self.q.get(self.now, None);
                    self.take_dead(dead);
                    assert_eq!(got.map(|(m, _)| body(&m)).as_deref(), want, "{at}");
                }
                Step::Unused(want) => assert_eq!(self.last_unused, want, "{at}"),
                Step::Purge(n) => assert_eq!(self.q.purge(), n, "{at}"),
                Step::Delete(cancelled) => {
                    self.q.delete("/");
                    for tag in cancelled {
                        let mut events = VecDeque::new();
                        self.mailboxes[tag].drain_into(&mut events);
                        assert!(
                            events.iter().any(|e| matches!(e, Event::Cancelled { consumer_tag, .. } if consumer_tag == *tag)),
                            "{at}: no basic.cancel for {tag}"
                        );
                    }
                }
            }
        }
        assert!(
            self.dead.is_empty(),
            "unchecked dead letters: {:?}",
            self.dead
        );
    }
}

fn table(args: &[(&str, FieldValue)], steps: &[Step]) {
    Harness::new(args, None).run(steps);
}

fn int(n: i64) -> FieldValue {
    FieldValue::I64(n)
}

fn text(s: &str) -> FieldValue {
    FieldValue::LongStr(s.into())
}

fn dlx() -> (&'static str, FieldValue) {
    ("x-dead-letter-exchange", text("dlx"))
}

use Step::*;

#[test]
fn fifo_and_prefetch() {
    table(
        &[],
        &[
            Pub("a"),
            Pub("b"),
            Pub("c"),
            Consume("c1", 2, 0),
            Got("c1", &["a", "b"]),
            Ready(1),
            Ack("c1", &["a"]),
            Got("c1", &["c"]),
            Ready(0),
        ],
    );
}

#[test]
fn requeue_goes_back_to_its_place_redelivered() {
    table(
        &[],
        &[
            Pub("a"),
            Pub("b"),
            Pub("c"),
            Consume("c1", 1, 0),
            Got("c1", &["a"]),
            Unacked(1),
            Requeue("c1", &["a"]),
            Got("c1", &["a*"]),
            Ack("c1", &["a"]),
            Got("c1", &["b"]),
            // Cancelling leaves "b" with the channel, unacked...
            Cancel("c1"),
            Ready(1),
            Unacked(1),
            Get(Some("c")),
            Get(None),
            // ...until the channel requeues it.
            Requeue("c1", &["b"]),
            Unacked(0),
            Get(Some("b")),
            Get(None),
        ],
    );
}

#[test]
fn round_robin_and_consumer_priorities() {
    table(
        &[],
        &[
            Consume("c1", 0, 0),
            Consume("c2", 0, 0),
            Pub("a"),
            Pub("b"),
            Pub("c"),
            Got("c1", &["a", "c"]),
            Got("c2", &["b"]),
            // A higher-priority consumer takes everything while it has room.
            Consume("hi", 1, 5),
            Pub("d"),
            Pub("e"),
            Got("hi", &["d"]),
            Got("c1", &["e"]),
            Got("c2", &[]),
        ],
    );
}

#[test]
fn single_active_consumer_takes_everything_until_it_leaves() {
    table(
        &[("x-single-active-consumer", FieldValue::Bool(true))],
        &[
            Consume("c1", 1, 0),
            Consume("c2", 0, 0),
            Pub("a"),
            Pub("b"),
            Got("c1", &["a"]),
            Got("c2", &[]),
            Cancel("c1"),
            // The unacked "a" is the channel's to requeue; c2 takes "b".
            Got("c2", &["b"]),
        ],
    );
}

#[test]
fn priority_queues_deliver_high_first_and_fifo_within_a_level() {
    table(
        &[("x-max-priority", int(5))],
        &[
            PubPrio("low1", 1),
            PubPrio("high", 5),
            PubPrio("low2", 1),
            PubPrio("over", 9),
            Pub("none"),
            Get(Some("high")),
            // Above x-max-priority counts as the maximum.
            Get(Some("over")),
            Get(Some("low1")),
            Get(Some("low2")),
            Get(Some("none")),
        ],
    );
}

#[test]
fn ttl_expires_at_the_head_into_dead_letters() {
    table(
        &[("x-message-ttl", int(1000)), dlx()],
        &[
            Pub("a"),
            Tick(500),
            Pub("b"),
            Tick(501),
            Dead(&[("a", "expired")]),
            Ready(1),
            Tick(500),
            Dead(&[("b", "expired")]),
            Ready(0),
        ],
    );
    // Per-message expiration, and the shorter of the two wins.
    table(
        &[("x-message-ttl", int(1000)), dlx()],
        &[
            PubTtl("short", 10),
            PubTtl("long", 60_000),
            Tick(11),
            Dead(&[("short", "expired")]),
            Tick(1000),
            Dead(&[("long", "expired")]),
        ],
    );
    // Without a dead-letter exchange nothing is handed back.
    table(&[("x-message-ttl", int(0))], &[Pub("a"), Tick(1), Ready(0)]);
}

#[test]
fn length_limits_with_each_overflow() {
    table(
        &[("x-max-length", int(2)), dlx()],
        &[
            Pub("a"),
            Pub("b"),
            Pub("c"),
            Dead(&[("a", "maxlen")]),
            Ready(2),
        ],
    );
    table(
        &[
            ("x-max-length", int(2)),
            ("x-overflow", text("reject-publish")),
            dlx(),
        ],
        &[
            Pub("a"),
            Pub("b"),
            Refused("c"),
            Ready(2),
            Get(Some("a")),
            Pub("d"),
        ],
    );
    table(
        &[
            ("x-max-length", int(1)),
            ("x-overflow", text("reject-publish-dlx")),
            dlx(),
        ],
        &[Pub("a"), Refused("b"), Dead(&[("b", "maxlen")]), Ready(1)],
    );
    table(
        &[("x-max-length-bytes", int(5)), dlx()],
        &[
            Pub("aa"),
            Pub("bb"),
            Pub("cc"),
            Dead(&[("aa", "maxlen")]),
            Ready(2),
        ],
    );
}

#[test]
fn rejected_messages_die_with_reason_rejected() {
    table(
        &[dlx()],
        &[
            Pub("a"),
            Pub("b"),
            Consume("c1", 0, 0),
            Got("c1", &["a", "b"]),
            Reject("c1", &["b"]),
            Dead(&[("b", "rejected")]),
            Ack("c1", &["a"]),
            Ready(0),
        ],
    );
}

#[test]
fn a_quorum_queue_dead_letters_past_its_delivery_limit() {
    let quorum = ("x-queue-type", text("quorum"));
    // Limit 1: two deliveries, then the second return kills it; the other
    // message keeps its place and its own count.
    table(
        &[quorum.clone(), ("x-delivery-limit", int(1)), dlx()],
        &[
            Pub("a"),
            Pub("b"),
            Consume("c1", 1, 0),
            Got("c1", &["a"]),
            Requeue("c1", &["a"]),
            Got("c1", &["a*"]),
            Requeue("c1", &["a"]),
            Dead(&[("a", "delivery_limit")]),
            Got("c1", &["b"]),
            Requeue("c1", &["b"]),
            Got("c1", &["b*"]),
            Ack("c1", &["b"]),
            Ready(0),
            Unacked(0),
        ],
    );
    // Without a dead-letter exchange it is dropped.
    table(
        &[quorum, ("x-delivery-limit", int(0))],
        &[
            Pub("a"),
            Consume("c1", 0, 0),
            Got("c1", &["a"]),
            Requeue("c1", &["a"]),
            Dead(&[]),
            Ready(0),
            Unacked(0),
        ],
    );
    // A classic queue has no delivery limit.
    table(
        &[("x-delivery-limit", int(0)), dlx()],
        &[
            Pub("a"),
            Consume("c1", 0, 0),
            Got("c1", &["a"]),
            Requeue("c1", &["a"]),
            Got("c1", &["a*"]),
            Requeue("c1", &["a"]),
            Got("c1", &["a*"]),
            Ack("c1", &["a"]),
        ],
    );
}

#[test]
fn no_ack_consumers_take_a_bounded_window() {
    let mut steps = vec![ConsumeNoAck("c1")];
    for _ in 0..3 {
        steps.push(Pub("m"));
    }
    steps.push(Got("c1", &["m", "m", "m"]));
    steps.push(Ready(0));
    table(&[], &steps);
}

#[test]
fn an_unused_queue_expires() {
    table(
        &[("x-expires", int(1000))],
        &[
            Pub("a"),
            Tick(999),
            Unused(false),
            Consume("c1", 0, 0),
            Got("c1", &["a"]),
            Tick(5000),
            Unused(false),
            Cancel("c1"),
            Tick(1000),
            Unused(true),
        ],
    );
}

#[test]
fn purge_and_delete() {
    table(
        &[],
        &[
            Pub("a"),
            Pub("b"),
            Consume("c1", 1, 0),
            Got("c1", &["a"]),
            // Purge drops the ready, not the unacked.
            Purge(1),
            Ready(0),
            Delete(&["c1"]),
            // A deleted queue takes nothing.
            Pub("late"),
            Ready(0),
        ],
    );
}

#[test]
fn the_store_sees_enqueue_before_delivery_and_dequeue() {
    let store = Arc::new(Recorder::default());
    let mut h = Harness::new(&[], Some(Arc::clone(&store)));
    assert!(h.publish("a", Default::default(), Some(7)));
    assert!(h.publish("b", Default::default(), Some(8)));
    h.run(&[
        Consume("c1", 0, 0),
        Got("c1", &["a", "b"]),
        Ack("c1", &["a"]),
    ]);
    h.run(&[Requeue("c1", &["b"]), Got("c1", &["b*"]), Ack("c1", &["b"])]);
    assert_eq!(
        *store.0.lock().unwrap(),
        [
            "enqueue 0 m7",
            "enqueue 1 m8",
            "delivered 0 m7",
            "delivered 1 m8",
            "dequeue 0 m7",
            "delivered 1 m8",
            "dequeue 1 m8",
        ]
    );
}

#[test]
fn global_qos_is_shared_by_the_channels_consumers() {
    let mut h = Harness::new(&[], None);
    h.credit.set_limit(2);
    h.run(&[
        Consume("c1", 0, 0),
        Consume("c2", 0, 0),
        Pub("a"),
        Pub("b"),
        Pub("c"),
        Got("c1", &["a"]),
        Got("c2", &["b"]),
        Ready(1),
    ]);
    // Freeing one unit of the channel's window lets one more through.
    h.credit.release(1);
    let dead = h.q.dispatch();
    assert!(dead.is_empty());
    h.run(&[Got("c1", &["c"])]);
}

// ---------------------------------------------------------------- property test

/// What a queue with one acknowledging consumer must do, as a model: ready
/// messages in sequence order, at most `prefetch` delivered and unsettled,
/// a requeued message back in its place and marked redelivered, and every
/// unsettled delivery counted as unacknowledged, whether it went to the
/// consumer, to `basic.get`, or to a consumer cancelled since (whose tag a
/// new consumer on the same channel may reuse).
#[derive(Debug, Clone)]
enum Op {
    Publish,
    AckOldest,
    RequeueNewest,
    Get {
        ack: bool,
    },
    /// Settle the oldest delivery nobody consumes any more.
    SettleLeftover {
        requeue: bool,
    },
    Cancel,
    Prefetch(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Publish),
        2 => Just(Op::AckOldest),
        2 => Just(Op::RequeueNewest),
        1 => any::<bool>().prop_map(|ack| Op::Get { ack }),
        1 => any::<bool>().prop_map(|requeue| Op::SettleLeftover { requeue }),
        1 => Just(Op::Cancel),
        1 => (1u32..4).prop_map(Op::Prefetch),
    ]
}

fn number(m: &QueuedMessage) -> u32 {
    String::from_utf8_lossy(&m.message.body).parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_queue_behaves_like_its_model(ops in prop::collection::vec(op(), 1..80)) {
        let q = Queue::new(
            QueueSpec {
                name: "q".into(),
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::new(),
                kind: QueueType::Classic,
                store_id: None,
            },
            None,
        );
        let now = Instant::now();
        let tag: ShortStr = "c".into();
        let mut next = 0u32;
        // The model: ready (body, redelivered) in order; the consumer's
        // unacked in order of delivery.
        let mut ready: VecDeque<(u32, bool)> = VecDeque::new();
        let mut unacked: Vec<(u32, bool)> = Vec::new();
        // What the client holds: the consumer's deliveries, and the ones
        // left over (from basic.get, with no consumer tag, or from a
        // cancelled consumer, with its tag).
        let mut held: Vec<QueuedMessage> = Vec::new();
        let mut leftover: Vec<(QueuedMessage, bool)> = Vec::new();
        let mut prefetch = 0u32;
        let mut consumer: Option<Arc<Mailbox>> = None;
        let back_in_place = |ready: &mut VecDeque<(u32, bool)>, n: u32| {
            let pos = ready.iter().position(|(r, _)| *r > n).unwrap_or(ready.len());
            ready.insert(pos, (n, true));
        };
        for op in ops {
            match op {
                Op::Prefetch(p) if consumer.is_none() => {
                    prefetch = p;
                    let mb = Mailbox::new(Box::new(NoWake));
                    let c = Consumer::new(tag.clone(), 1, 1, Arc::clone(&mb), true, p, Arc::new(Credit::default()), false, 0);
                    prop_assert!(q.add_consumer(c).unwrap().is_empty());
                    consumer = Some(mb);
                }
                Op::Prefetch(_) => {}
                Op::Publish => {
                    let m = Message::new(ShortStr::empty(), "q".into(), Properties::default(), Bytes::from(next.to_string()));
                    prop_assert!(q.publish(Arc::new(m), now, None).0);
                    ready.push_back((next, false));
                    next += 1;
                }
                Op::AckOldest if !held.is_empty() => {
                    let m = held.remove(0);
                    unacked.remove(0);
                    prop_assert!(q.ack(1, 1, Some(&tag), vec![m]).is_empty());
                }
                Op::RequeueNewest if !held.is_empty() => {
                    let mut m = held.pop().unwrap();
                    let (n, _) = unacked.pop().unwrap();
                    m.redelivered = true;
                    back_in_place(&mut ready, n);
                    prop_assert!(q.settle(1, 1, Some(&tag), 1, [m]).is_empty());
                }
                Op::AckOldest | Op::RequeueNewest => {}
                Op::Get { ack } => {
                    let (got, _) = q.get(now, ack.then_some((1, 1)));
                    let want = if consumer.is_some() && (prefetch as usize) > unacked.len() {
                        // The consumer would have taken it already.
                        None
                    } else {
                        ready.pop_front()
                    };
                    let seen = got.as_ref().map(|(m, _)| (number(m), m.redelivered));
                    prop_assert_eq!(seen, want);
                    if let Some((m, _)) = got.filter(|_| ack) {
                        leftover.push((m, false));
                    }
                }
                Op::SettleLeftover { requeue } if !leftover.is_empty() => {
                    let (mut m, from_consumer) = leftover.remove(0);
                    // As the channel settles: with the consumer's tag and
                    // one unit of its window, or as a get.
                    let (who, units) = if from_consumer { (Some(&tag), 1) } else { (None, 0) };
                    let dead = if requeue {
                        m.redelivered = true;
                        back_in_place(&mut ready, number(&m));
                        q.settle(1, 1, who, units, [m])
                    } else {
                        q.ack(1, 1, who, vec![m])
                    };
                    prop_assert!(dead.is_empty());
                }
                Op::SettleLeftover { .. } => {}
                Op::Cancel => {
                    if consumer.take().is_some() {
                        let removed = q.remove_consumer(1, 1, &tag);
                        prop_assert!(removed.found);
                        leftover.extend(held.drain(..).map(|m| (m, true)));
                        unacked.clear();
                        prefetch = 0;
                    }
                }
            }
            // The consumer takes the head while it has room.
            if let Some(mb) = &consumer {
                while (unacked.len() as u32) < prefetch {
                    let Some(m) = ready.pop_front() else { break };
                    unacked.push(m);
                }
                let mut events = VecDeque::new();
                mb.drain_into(&mut events);
                for e in events {
                    if let Event::Deliver { messages, .. } = e {
                        held.extend(messages);
                    }
                }
                let seen: Vec<(u32, bool)> = held.iter().map(|m| (number(m), m.redelivered)).collect();
                prop_assert_eq!(&seen, &unacked);
            }
            prop_assert_eq!(q.message_count() as usize, ready.len());
            prop_assert_eq!(q.unacked_count() as usize, unacked.len() + leftover.len());
        }
    }
}

/// `x-message-deduplication` (the community plugin's queue level): the
/// properties of a message with this `x-deduplication-header` id, and
/// optionally an `expiration`.
fn with_id(id: &str, expiration: Option<u64>) -> BasicProperties {
    BasicProperties {
        headers: Some(FieldTable::new().with("x-deduplication-header", text(id))),
        expiration: expiration.map(|ms| ms.to_string().as_str().into()),
        ..Default::default()
    }
}

fn dedup_on() -> (&'static str, FieldValue) {
    ("x-message-deduplication", FieldValue::Bool(true))
}

#[test]
fn a_deduplicating_queue_refuses_an_id_it_holds_until_the_message_leaves() {
    let mut h = Harness::new(&[dedup_on()], None);
    assert!(h.publish("a", with_id("1", None), None));
    // Refused (a publisher in confirm mode gets basic.nack).
    assert!(!h.publish("a-again", with_id("1", None), None));
    // No header: never checked.
    assert!(h.publish("plain", Default::default(), None));
    assert!(h.publish("plain", Default::default(), None));
    assert!(h.publish("b", with_id("2", None), None));
    h.run(&[
        Ready(4),
        Consume("c1", 0, 0),
        Got("c1", &["a", "plain", "plain", "b"]),
    ]);
    // Delivered but unsettled: still in the queue.
    assert!(!h.publish("a-again", with_id("1", None), None));
    // A requeued message keeps its id.
    h.run(&[Requeue("c1", &["a"]), Got("c1", &["a*"])]);
    assert!(!h.publish("a-again", with_id("1", None), None));
    // Acked: the id is free.
    h.run(&[Ack("c1", &["a"])]);
    assert!(h.publish("a2", with_id("1", None), None));
    // Rejected without requeue: free too.
    h.run(&[Reject("c1", &["b"])]);
    assert!(h.publish("b2", with_id("2", None), None));
    h.run(&[
        Got("c1", &["a2", "b2"]),
        Ack("c1", &["a2", "b2", "plain", "plain"]),
    ]);
}

#[test]
fn a_policy_turns_deduplication_on_and_off_and_wins_over_the_argument() {
    let policy = |on: bool| {
        let def = FieldTable::new().with("x-message-deduplication", FieldValue::Bool(on));
        Some(Arc::new(
            warren_core::policy::Policy::new("/", "dedup", "^q$", "queues", 0, def, false).unwrap(),
        ))
    };
    let mut h = Harness::new(&[], None);
    assert!(h.publish("a", with_id("1", None), None));
    assert!(h.publish("a", with_id("1", None), None));
    assert!(h.q.apply_policies(policy(true), None).is_empty());
    assert!(h.publish("b", with_id("2", None), None));
    assert!(!h.publish("b-again", with_id("2", None), None));
    // Off by policy, though the queue was declared with it on.
    let mut h = Harness::new(&[dedup_on()], None);
    assert!(h.q.apply_policies(policy(false), None).is_empty());
    assert!(h.publish("c", with_id("3", None), None));
    assert!(h.publish("c-again", with_id("3", None), None));
    // The policy cleared: the argument stands again.
    assert!(h.q.apply_policies(None, None).is_empty());
    assert!(h.publish("d", with_id("4", None), None));
    assert!(!h.publish("d-again", with_id("4", None), None));
}

#[test]
fn a_deduplicating_queue_frees_ids_on_expiry_dead_letters_gets_and_purge() {
    let mut h = Harness::new(&[dedup_on(), dlx()], None);
    // Expiry.
    assert!(h.publish("t", with_id("t", Some(100)), None));
    assert!(!h.publish("t", with_id("t", None), None));
    h.run(&[Tick(101), Dead(&[("t", "expired")])]);
    assert!(h.publish("t2", with_id("t", None), None));
    // basic.get with no-ack takes it out at once.
    h.run(&[Get(Some("t2"))]);
    assert!(h.publish("t3", with_id("t", None), None));
    // Purge forgets every id, also those of delivered messages.
    h.run(&[Consume("c1", 1, 0), Got("c1", &["t3"])]);
    assert!(h.publish("u", with_id("u", None), None));
    assert!(!h.publish("t", with_id("t", None), None));
    h.run(&[Purge(1)]);
    assert!(h.publish("t4", with_id("t", None), None));
    assert!(h.publish("u2", with_id("u", None), None));
    // Dead-lettered by a rejection: free.
    h.run(&[
        Reject("c1", &["t3"]),
        Dead(&[("t3", "rejected")]),
        Got("c1", &["t4"]),
    ]);
    h.run(&[
        Reject("c1", &["t4"]),
        Dead(&[("t4", "rejected")]),
        Got("c1", &["u2"]),
    ]);
    assert!(h.publish("t5", with_id("t", None), None));
    h.run(&[Ack("c1", &["u2"]), Got("c1", &["t5"]), Ack("c1", &["t5"])]);
}

#[test]
fn a_deduplicating_queue_frees_the_id_of_a_message_a_length_limit_drops() {
    let mut h = Harness::new(&[dedup_on(), ("x-max-length", int(1))], None);
    assert!(h.publish("a", with_id("a", None), None));
    assert!(h.publish("b", with_id("b", None), None));
    // "a" was dropped from the head: its id is free, "b"'s is not.
    assert!(h.publish("a2", with_id("a", None), None));
    assert!(h.publish("b2", with_id("b", None), None));
    assert!(!h.publish("b3", with_id("b", None), None));
    // A no-ack consumer takes the id with the message.
    h.run(&[ConsumeNoAck("c"), Got("c", &["b2"])]);
    assert!(h.publish("b4", with_id("b", None), None));
    h.run(&[Got("c", &["b4"])]);
}

#[test]
fn queues_without_deduplication_take_duplicates() {
    for args in [
        vec![],
        vec![("x-message-deduplication", FieldValue::Bool(false))],
        // The plugin deduplicates classic queues only.
        vec![dedup_on(), ("x-queue-type", text("quorum"))],
    ] {
        let mut h = Harness::new(&args, None);
        assert!(h.publish("a", with_id("1", None), None));
        assert!(h.publish("a", with_id("1", None), None));
        h.run(&[Ready(2)]);
    }
    // Any value but false turns it on, as the plugin reads it.
    let mut h = Harness::new(&[("x-message-deduplication", text("yes"))], None);
    assert!(h.publish("a", with_id("1", None), None));
    assert!(!h.publish("a", with_id("1", None), None));
}

/// A store holding messages, for recovery.
#[derive(Debug, Default)]
struct Held(Mutex<HashMap<u64, Arc<Message>>>);

impl Persistence for Held {
    fn submit(&self, _op: PersistOp) {}

    fn load(&self, id: u64) -> Result<Option<Arc<Message>>, LoadError> {
        if id == 666 {
            return Err(LoadError("disk on fire".into()));
        }
        Ok(self.0.lock().unwrap().get(&id).cloned())
    }
}

#[test]
fn a_recovered_deduplicating_queue_knows_the_ids_of_its_messages() {
    let store = Arc::new(Held::default());
    for (id, dedup) in [(1, Some("x")), (2, None), (3, Some("y"))] {
        let props = dedup.map_or_else(BasicProperties::default, |d| with_id(d, None));
        let mut m = Message::new(
            ShortStr::empty(),
            "q".into(),
            Properties::from(props),
            Bytes::from_static(b"m"),
        );
        m.store_id = Some(id);
        store.0.lock().unwrap().insert(id, Arc::new(m));
    }
    let spec = QueueSpec {
        name: "q".into(),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::new().with("x-message-deduplication", FieldValue::Bool(true)),
        kind: QueueType::Classic,
        store_id: Some(1),
    };
    let q = Queue::new(spec, Some(Arc::clone(&store) as Arc<dyn Persistence>));
    // A record that cannot be read comes back without its id.
    q.recover([1, 2, 3, 666].into_iter().enumerate().map(|(seq, msg)| {
        warren_core::queue::Recovered {
            seq: seq as u64,
            msg,
            delivered: false,
            bytes: 0,
            priority: 0,
            expires_at: None,
            delivery_count: 0,
        }
    }));
    let now = Instant::now();
    let publish = |id: &str| {
        let m = Message::new(
            ShortStr::empty(),
            "q".into(),
            Properties::from(with_id(id, None)),
            Bytes::from_static(b"new"),
        );
        q.publish(Arc::new(m), now, None).0
    };
    assert!(!publish("x"));
    assert!(!publish("y"));
    assert!(publish("z"));
    assert_eq!(q.message_count(), 5);
}
