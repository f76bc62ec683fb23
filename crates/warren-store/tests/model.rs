//! The store against an in-memory model: random operations with reopens in
//! between (the shape of sled's own `fuzz_model`), plus a space test and a
//! timing note. Only the public API is used, so these tests also show that
//! it is enough to rebuild a broker's state.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use support::{Rng, TempDir};

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use warren_codec::{BasicProperties, FieldTable, FieldValue, LongStr, ShortStr};
use warren_store::{
    Batch, BindingRecord, Destination, ExchangeRecord, IndexEntry, PermissionRecord, PolicyRecord,
    QueueRecord, Store, StoredMessage, TopicPermissionRecord, UserRecord, VhostRecord,
};

const VHOSTS: [&str; 3] = ["/", "prod", "a/b"];
const NAMES: [&str; 4] = ["", "q1", "orders", "amq.gen-x"];
/// User, policy and setting names: empty, a separator, unicode.
const ADMIN_NAMES: [&str; 4] = ["", "guest", "a/b", "ünï"];

fn pick_string(rng: &mut Rng, items: &[&str]) -> String {
    rng.pick(items).to_string()
}

fn tags(rng: &mut Rng) -> Vec<String> {
    (0..rng.below(3))
        .map(|_| pick_string(rng, &["", "administrator", "eu/west"]))
        .collect()
}

fn short(rng: &mut Rng) -> ShortStr {
    ShortStr::from(*rng.pick(&NAMES))
}

fn table(rng: &mut Rng, depth: u32) -> FieldTable {
    let mut t = FieldTable::new();
    for _ in 0..rng.below(4) {
        let v = match rng.below(if depth < 2 { 7 } else { 5 }) {
            0 => FieldValue::Bool(rng.chance(2)),
            1 => FieldValue::I64(rng.next() as i64),
            2 => FieldValue::LongStr(LongStr::from(format!("s{}", rng.below(100)))),
            3 => FieldValue::Bytes(Bytes::from(rng.next().to_be_bytes().to_vec())),
            4 => FieldValue::Timestamp(rng.next()),
            5 => FieldValue::Table(table(rng, depth + 1)),
            _ => FieldValue::Array(vec![
                FieldValue::Table(table(rng, depth + 1)),
                FieldValue::Void,
            ]),
        };
        t.insert(
            *rng.pick(&["k", "x-max-length", "x-dead-letter-exchange"]),
            v,
        );
    }
    t
}

fn opt<T>(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if rng.chance(2) { Some(f(rng)) } else { None }
}

fn message(rng: &mut Rng) -> StoredMessage {
    let properties = BasicProperties {
        content_type: opt(rng, short),
        content_encoding: opt(rng, short),
        headers: opt(rng, |r| table(r, 0)),
        delivery_mode: opt(rng, |r| r.below(3) as u8),
        priority: opt(rng, |r| r.below(10) as u8),
        correlation_id: opt(rng, short),
        reply_to: opt(rng, short),
        expiration: opt(rng, |r| ShortStr::from(format!("{}", r.below(100_000)))),
        message_id: opt(rng, short),
        timestamp: opt(rng, Rng::next),
        kind: opt(rng, short),
        user_id: opt(rng, short),
        app_id: opt(rng, short),
        cluster_id: opt(rng, short),
    };
    let len = if rng.chance(10) {
        3000
    } else {
        rng.below(64) as usize
    };
    let fill = rng.next() as u8;
    StoredMessage {
        exchange: short(rng),
        routing_key: short(rng),
        properties,
        body: Bytes::from(vec![fill; len]),
    }
}

/// What the store should hold.
#[derive(Default)]
struct Model {
    messages: BTreeMap<u64, StoredMessage>,
    index: BTreeMap<(u64, u64), (u64, bool)>,
    vhosts: BTreeMap<String, VhostRecord>,
    exchanges: BTreeMap<(String, ShortStr), ExchangeRecord>,
    queues: BTreeMap<(String, ShortStr), QueueRecord>,
    bindings: Vec<BindingRecord>,
    users: BTreeMap<String, UserRecord>,
    /// Keyed by (vhost, user).
    permissions: BTreeMap<(String, String), PermissionRecord>,
    /// Keyed by (vhost, user, exchange).
    topic_permissions: BTreeMap<(String, String, String), TopicPermissionRecord>,
    /// Keyed by (vhost, operator, name).
    policies: BTreeMap<(String, bool, String), PolicyRecord>,
    settings: BTreeMap<String, Vec<u8>>,
}

impl Model {
    /// What [`Store::vhost_keys_to_delete`] removes.
    fn delete_vhost_admin(&mut self, vhost: &str) {
        self.vhosts.remove(vhost);
        self.permissions.retain(|(v, _), _| v != vhost);
        self.topic_permissions.retain(|(v, _, _), _| v != vhost);
        self.policies.retain(|(v, _, _), _| v != vhost);
    }
}

/// Ids small enough that operations often hit existing records.
const QUEUES: u64 = 4;

/// Adds one random operation to `batch` and to `model`.
fn random_op(rng: &mut Rng, model: &mut Model, batch: &mut Batch, next_msg: &mut u64) {
    match rng.below(19) {
        0..=2 => {
            let id = if rng.chance(8) && !model.messages.is_empty() {
                // Overwrite an existing message.
                *rng.pick(&model.messages.keys().copied().collect::<Vec<_>>())
            } else {
                *next_msg += 1;
                *next_msg
            };
            let m = message(rng);
            batch.put_message(id, &m);
            model.messages.insert(id, m);
        }
        3 => {
            let id = rng.below(*next_msg + 2);
            batch.delete_message(id);
            model.messages.remove(&id);
        }
        4..=5 => {
            let (q, seq, msg) = (rng.below(QUEUES), rng.below(32), rng.below(*next_msg + 1));
            batch.enqueue(q, seq, msg);
            model.index.insert((q, seq), (msg, false));
        }
        6 => {
            // Mostly on an existing entry, as the broker does.
            let entry = model
                .index
                .iter()
                .nth(rng.below(model.index.len() as u64 + 1) as usize);
            let (q, seq, msg) = match entry {
                Some((&(q, seq), &(msg, _))) => (q, seq, msg),
                None => (rng.below(QUEUES), rng.below(32), rng.below(100)),
            };
            batch.mark_delivered(q, seq, msg);
            model.index.insert((q, seq), (msg, true));
        }
        7 => {
            let (q, seq) = (rng.below(QUEUES), rng.below(32));
            batch.dequeue(q, seq);
            model.index.remove(&(q, seq));
        }
        8 => {
            let v = rng.pick(&VHOSTS).to_string();
            if rng.chance(3) {
                batch.delete_vhost(&v);
                model.vhosts.remove(&v);
            } else if rng.chance(2) {
                batch.put_vhost(&v);
                model.vhosts.insert(v.clone(), VhostRecord::new(v));
            } else {
                let r = VhostRecord {
                    name: v.clone(),
                    description: pick_string(rng, &["", "production", "ü/x"]),
                    tags: tags(rng),
                    default_queue_type: pick_string(rng, &["", "classic", "quorum"]),
                };
                batch.put_vhost_record(&r);
                model.vhosts.insert(v, r);
            }
        }
        9 => {
            let (vhost, name) = (rng.pick(&VHOSTS).to_string(), short(rng));
            if rng.chance(3) {
                batch.delete_exchange(&vhost, &name);
                model.exchanges.remove(&(vhost, name));
            } else {
                let r = ExchangeRecord {
                    vhost: vhost.clone(),
                    name: name.clone(),
                    kind: rng.pick(&["direct", "topic", "x-custom"]).to_string(),
                    auto_delete: rng.chance(2),
                    internal: rng.chance(2),
                    arguments: table(rng, 0),
                };
                batch.put_exchange(&r);
                model.exchanges.insert((vhost, name), r);
            }
        }
        10 => {
            let (vhost, name) = (rng.pick(&VHOSTS).to_string(), short(rng));
            if rng.chance(3) {
                batch.delete_queue(&vhost, &name);
                model.queues.remove(&(vhost, name));
            } else {
                let r = QueueRecord {
                    id: rng.below(QUEUES + 2),
                    vhost: vhost.clone(),
                    name: name.clone(),
                    auto_delete: rng.chance(2),
                    arguments: table(rng, 0),
                };
                batch.put_queue(&r);
                model.queues.insert((vhost, name), r);
            }
        }
        14 => {
            let name = pick_string(rng, &ADMIN_NAMES);
            if rng.chance(3) {
                batch.delete_user(&name);
                model.users.remove(&name);
            } else {
                let r = UserRecord {
                    name: name.clone(),
                    password_hash: pick_string(rng, &["", "c2FsdA==", &"h".repeat(300)]),
                    hashing_algorithm: "rabbit_password_hashing_sha256".to_owned(),
                    tags: tags(rng),
                };
                batch.put_user(&r);
                model.users.insert(name, r);
            }
        }
        15 => {
            let (vhost, user) = (pick_string(rng, &VHOSTS), pick_string(rng, &ADMIN_NAMES));
            if rng.chance(3) {
                batch.delete_permission(&user, &vhost);
                model.permissions.remove(&(vhost, user));
            } else {
                let r = PermissionRecord {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    configure: pick_string(rng, &["", ".*", "^amq\\.gen"]),
                    write: pick_string(rng, &["", ".*"]),
                    read: pick_string(rng, &["", ".*"]),
                };
                batch.put_permission(&r);
                model.permissions.insert((vhost, user), r);
            }
        }
        16 => {
            let (vhost, user) = (pick_string(rng, &VHOSTS), pick_string(rng, &ADMIN_NAMES));
            let exchange = pick_string(rng, &["", "amq.topic", "a/b"]);
            if rng.chance(3) {
                batch.delete_topic_permission(&user, &vhost, &exchange);
                model.topic_permissions.remove(&(vhost, user, exchange));
            } else {
                let r = TopicPermissionRecord {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    exchange: exchange.clone(),
                    write: pick_string(rng, &["", "^a\\."]),
                    read: pick_string(rng, &["", ".*"]),
                };
                batch.put_topic_permission(&r);
                model.topic_permissions.insert((vhost, user, exchange), r);
            }
        }
        17 => {
            let (vhost, name) = (pick_string(rng, &VHOSTS), pick_string(rng, &ADMIN_NAMES));
            let operator = rng.chance(2);
            if rng.chance(3) {
                batch.delete_policy(&vhost, &name, operator);
                model.policies.remove(&(vhost, operator, name));
            } else {
                let r = PolicyRecord {
                    vhost: vhost.clone(),
                    name: name.clone(),
                    pattern: pick_string(rng, &["", "^orders$", ".*"]),
                    apply_to: pick_string(rng, &["queues", "exchanges", "all"]),
                    priority: rng.next() as i64,
                    definition: format!(r#"{{"max-length":{}}}"#, rng.below(100)),
                    operator,
                };
                batch.put_policy(&r);
                model.policies.insert((vhost, operator, name), r);
            }
        }
        18 => {
            let name = pick_string(rng, &ADMIN_NAMES);
            if rng.chance(3) {
                batch.delete_setting(&name);
                model.settings.remove(&name);
            } else {
                let value = rng.next().to_be_bytes()[..rng.below(9) as usize].to_vec();
                batch.put_setting(&name, &value);
                model.settings.insert(name, value);
            }
        }
        _ => {
            let delete_existing = rng.chance(3) && !model.bindings.is_empty();
            let r = if delete_existing {
                rng.pick(&model.bindings).clone()
            } else {
                let name = short(rng);
                BindingRecord {
                    vhost: rng.pick(&VHOSTS).to_string(),
                    source: short(rng),
                    destination: if rng.chance(2) {
                        Destination::Queue(name)
                    } else {
                        Destination::Exchange(name)
                    },
                    routing_key: ShortStr::from(*rng.pick(&["", "a.*", "#"])),
                    // A small pool of argument tables, so equal bindings recur.
                    arguments: if rng.chance(2) {
                        FieldTable::new()
                    } else {
                        FieldTable::new().with("x-match", FieldValue::LongStr(LongStr::from("all")))
                    },
                }
            };
            if delete_existing || rng.chance(4) {
                batch.delete_binding(&r);
                model.bindings.retain(|b| *b != r);
            } else {
                batch.put_binding(&r);
                if !model.bindings.contains(&r) {
                    model.bindings.push(r);
                }
            }
        }
    }
}

/// Checks every record the model holds, and that the store holds no more.
fn check(store: &Store, model: &Model, case: u64) {
    let defs = store.definitions().unwrap();
    let vhosts: BTreeMap<String, VhostRecord> = defs
        .vhosts
        .iter()
        .map(|v| (v.name.clone(), v.clone()))
        .collect();
    assert_eq!(
        vhosts.len(),
        defs.vhosts.len(),
        "case {case}: duplicate vhosts"
    );
    assert_eq!(vhosts, model.vhosts, "case {case}");
    let users: BTreeMap<_, _> = defs
        .users
        .iter()
        .map(|u| (u.name.clone(), u.clone()))
        .collect();
    assert_eq!(users.len(), defs.users.len(), "case {case}");
    assert_eq!(users, model.users, "case {case}");
    let permissions: BTreeMap<_, _> = defs
        .permissions
        .iter()
        .map(|p| ((p.vhost.clone(), p.user.clone()), p.clone()))
        .collect();
    assert_eq!(permissions.len(), defs.permissions.len(), "case {case}");
    assert_eq!(permissions, model.permissions, "case {case}");
    let topic_permissions: BTreeMap<_, _> = defs
        .topic_permissions
        .iter()
        .map(|p| {
            (
                (p.vhost.clone(), p.user.clone(), p.exchange.clone()),
                p.clone(),
            )
        })
        .collect();
    assert_eq!(
        topic_permissions.len(),
        defs.topic_permissions.len(),
        "case {case}"
    );
    assert_eq!(topic_permissions, model.topic_permissions, "case {case}");
    let policies: BTreeMap<_, _> = defs
        .policies
        .iter()
        .map(|p| ((p.vhost.clone(), p.operator, p.name.clone()), p.clone()))
        .collect();
    assert_eq!(policies.len(), defs.policies.len(), "case {case}");
    assert_eq!(policies, model.policies, "case {case}");
    for name in ADMIN_NAMES {
        assert_eq!(
            store.setting(name).unwrap().as_ref(),
            model.settings.get(name),
            "case {case} setting {name:?}"
        );
    }
    let exchanges: BTreeMap<_, _> = defs
        .exchanges
        .iter()
        .map(|x| ((x.vhost.clone(), x.name.clone()), x.clone()))
        .collect();
    assert_eq!(exchanges.len(), defs.exchanges.len(), "case {case}");
    assert_eq!(exchanges, model.exchanges, "case {case}");
    let queues: BTreeMap<_, _> = defs
        .queues
        .iter()
        .map(|q| ((q.vhost.clone(), q.name.clone()), q.clone()))
        .collect();
    assert_eq!(queues.len(), defs.queues.len(), "case {case}");
    assert_eq!(queues, model.queues, "case {case}");
    assert_eq!(defs.bindings.len(), model.bindings.len(), "case {case}");
    for b in &model.bindings {
        assert!(defs.bindings.contains(b), "case {case}: missing {b:?}");
    }

    for q in 0..QUEUES + 1 {
        let expected: Vec<IndexEntry> = model
            .index
            .range((q, 0)..(q + 1, 0))
            .map(|(&(_, seq), &(msg_id, delivered))| IndexEntry {
                seq,
                msg_id,
                delivered,
            })
            .collect();
        assert_eq!(
            store.queue_index(q).unwrap(),
            expected,
            "case {case} queue {q}"
        );
    }
    let max_msg = model.messages.keys().next_back().copied().unwrap_or(0);
    for id in 0..=max_msg + 1 {
        assert_eq!(
            store.load_message(id).unwrap().as_ref(),
            model.messages.get(&id),
            "case {case} message {id}"
        );
    }
    assert_eq!(
        store.message_count().unwrap(),
        model.messages.len() as u64,
        "case {case}"
    );
    let max_queue = model
        .index
        .keys()
        .map(|&(q, _)| q)
        .chain(model.queues.values().map(|q| q.id))
        .max()
        .unwrap_or(0);
    assert_eq!(
        store.max_ids().unwrap(),
        (max_msg, max_queue),
        "case {case}"
    );
}

#[test]
fn random_operations_with_reopens_match_the_model() {
    const CASES: u64 = 240;
    let dir = TempDir::new("model");
    let started = Instant::now();
    let mut reopens = 0;
    let mut in_open = std::time::Duration::ZERO;
    for case in 0..CASES {
        let _ = std::fs::remove_dir_all(&dir.0);
        let mut rng = Rng::new(case + 1);
        let mut model = Model::default();
        let mut next_msg = 0;
        let mut store = Store::open(&dir.0).unwrap();
        for _ in 0..rng.below(24) + 1 {
            let mut batch = Batch::default();
            for _ in 0..rng.below(8) + 1 {
                random_op(&mut rng, &mut model, &mut batch, &mut next_msg);
            }
            store.apply(batch).unwrap();
            if rng.chance(12) {
                let q = rng.below(QUEUES);
                let expected: Vec<u64> = model
                    .index
                    .range((q, 0)..(q + 1, 0))
                    .map(|(_, &(msg, _))| msg)
                    .collect();
                assert_eq!(store.purge_queue_index(q).unwrap(), expected, "case {case}");
                model.index.retain(|&(iq, _), _| iq != q);
            }
            if rng.chance(15) {
                let v = pick_string(&mut rng, &VHOSTS);
                store
                    .apply(store.vhost_keys_to_delete(&v).unwrap())
                    .unwrap();
                model.delete_vhost_admin(&v);
            }
            if rng.chance(6) {
                store.flush().unwrap();
                // Close the database (sled releases its file lock on drop)
                // and read everything back from disk.
                drop(store);
                let t = Instant::now();
                store = Store::open(&dir.0).unwrap();
                in_open += t.elapsed();
                reopens += 1;
                check(&store, &model, case);
            }
        }
        store.flush().unwrap();
        drop(store);
        let store = Store::open(&dir.0).unwrap();
        reopens += 1;
        check(&store, &model, case);
    }
    println!(
        "model: {CASES} cases, {reopens} reopens in {:?} ({in_open:?} in mid-case reopens)",
        started.elapsed()
    );
}

/// 1 KiB messages put and deleted in batches of 1000, as a broker that
/// keeps up with its consumers would.
#[test]
fn deleted_messages_are_gone_and_space_is_reported() {
    const N: u64 = 100_000;
    const PER_BATCH: u64 = 1000;
    let dir = TempDir::new("space");
    let store = Store::open(&dir.0).unwrap();
    let m = StoredMessage {
        exchange: ShortStr::from("x"),
        routing_key: ShortStr::from("rk"),
        properties: BasicProperties::default(),
        body: Bytes::from(vec![7u8; 1024]),
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let started = Instant::now();
    for start in (0..N).step_by(PER_BATCH as usize) {
        let mut batch = Batch::default();
        for id in start..start + PER_BATCH {
            batch.put_message(id, &m);
        }
        store.apply(batch).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.message_count().unwrap(), N);
    println!(
        "space: after {N} x 1 KiB puts: {:.1} MiB on disk ({:?})",
        mib(store.size_on_disk().unwrap()),
        started.elapsed()
    );
    for start in (0..N).step_by(PER_BATCH as usize) {
        let mut batch = Batch::default();
        for id in start..start + PER_BATCH {
            batch.delete_message(id);
        }
        store.apply(batch).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.message_count().unwrap(), 0);
    println!(
        "space: after deleting them all and flushing: {:.1} MiB",
        mib(store.size_on_disk().unwrap())
    );
    drop(store);
    let store = Store::open(&dir.0).unwrap();
    assert_eq!(store.message_count().unwrap(), 0);
    println!(
        "space: after a reopen: {:.1} MiB",
        mib(store.size_on_disk().unwrap())
    );
}

/// Churn after a large backlog: whether sled reuses the space that deletes
/// free. Slow in debug builds: `cargo test -p warren-store --release --test
/// model -- --ignored --nocapture space`.
#[test]
#[ignore = "space note; run by hand in release mode"]
fn space_is_reused_after_deletes() {
    const N: u64 = 100_000;
    const PER_BATCH: u64 = 1000;
    let dir = TempDir::new("reuse");
    let store = Store::open(&dir.0).unwrap();
    let m = StoredMessage {
        body: Bytes::from(vec![7u8; 1024]),
        ..StoredMessage::default()
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for round in 0..4u64 {
        // A backlog of N messages, then all of it consumed.
        for start in (0..N).step_by(PER_BATCH as usize) {
            let mut batch = Batch::default();
            for id in start..start + PER_BATCH {
                batch.put_message(round * N + id, &m);
            }
            store.apply(batch).unwrap();
        }
        store.flush().unwrap();
        let full = store.size_on_disk().unwrap();
        for start in (0..N).step_by(PER_BATCH as usize) {
            let mut batch = Batch::default();
            for id in start..start + PER_BATCH {
                batch.delete_message(round * N + id);
            }
            store.apply(batch).unwrap();
        }
        store.flush().unwrap();
        println!(
            "reuse: round {round}: {:.1} MiB with the backlog, {:.1} MiB after consuming it",
            mib(full),
            mib(store.size_on_disk().unwrap())
        );
    }
    // Steady state: each message put and deleted within a few batches.
    for start in (0..N).step_by(PER_BATCH as usize) {
        let mut batch = Batch::default();
        for id in start..start + PER_BATCH {
            batch.put_message(10 * N + id, &m);
        }
        store.apply(batch).unwrap();
        let mut batch = Batch::default();
        for id in start..start + PER_BATCH {
            batch.delete_message(10 * N + id);
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
    }
    println!(
        "reuse: after {N} more puts and deletes with a flush per batch: {:.1} MiB",
        mib(store.size_on_disk().unwrap())
    );
    assert_eq!(store.message_count().unwrap(), 0);
}
