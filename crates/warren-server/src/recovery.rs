//! Start-up from a data directory: open the store, rebuild durable
//! definitions and the messages of durable queues, start the persistence
//! thread.
//!
//! What comes back follows RabbitMQ: durable exchanges, queues and the
//! bindings between durable ends; persistent messages in durable queues, in
//! order, with `redelivered` set on those that had been delivered. Transient
//! and exclusive queues were never stored. Message bodies stay on disk until
//! delivered.

use std::sync::Arc;
use std::time::Instant;

use warren_codec::{FieldValue, ShortStr};
use warren_core::Broker;
use warren_core::access::VhostMeta;
use warren_core::access::{Account, PermissionSpec, TopicPermissionSpec};
use warren_core::exchange::{ExchangeKind, ExchangeSpec};
use warren_core::password::Password;
use warren_core::persist::{
    AdminOp, BindingTarget, DedupRecordKey, DelayedRecordKey, Durability, PersistOp, Persistence,
};
use warren_core::policy::Policy;
use warren_core::queue::dedup::{DedupKey, StoredId};
use warren_core::queue::{QueueSpec, QueueType, Recovered};
use warren_store::{
    Batch, Definitions, Destination, IndexedMessage, MessageOp, MessageStore, Store, StoreError,
};

use crate::journal;

use crate::config::Config;
use crate::persistence::{Persister, RefCounts};

/// Why the broker cannot start from its data directory.
#[derive(Debug)]
pub enum RecoveryError {
    /// The directory cannot be created or used.
    DataDir(String),
    /// The store refused (newer format, corrupt record, IO error).
    Store(StoreError),
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::DataDir(e) => write!(f, "data directory: {e}"),
            RecoveryError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for RecoveryError {}

impl From<StoreError> for RecoveryError {
    fn from(e: StoreError) -> Self {
        RecoveryError::Store(e)
    }
}

/// What recovery hands the server: the broker, its store handle and the
/// persistence thread.
pub type Opened = (Arc<Broker>, Arc<Persister>, std::thread::JoinHandle<()>);

/// Opens the store and rebuilds the broker from it.
pub fn open(config: &Config) -> Result<Opened, RecoveryError> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| RecoveryError::DataDir(format!("{}: {e}", config.data_dir.display())))?;
    let store = Arc::new(Store::open(&config.data_dir)?);
    if store.setting(SEEDED)?.is_none() {
        seed(&store, config)?;
    }
    let defs = store.definitions()?;
    let (messages, mut held) = MessageStore::open(&config.data_dir.join("messages"))?;
    migrate_from_sled(&store, &messages, &defs, &mut held)?;
    let (max_sled, mut max_queue) = store.max_ids()?;
    let max_msg = max_sled.max(held.max_message);
    max_queue = max_queue.max(held.queues.keys().next_back().copied().unwrap_or(0));
    // Indexes of queues no definition names (deleted while a crash cut
    // the purge short) go now.
    let defined: std::collections::HashSet<u64> = defs.queues.iter().map(|q| q.id).collect();
    let orphans: Vec<u64> = held
        .queues
        .keys()
        .filter(|id| !defined.contains(id))
        .copied()
        .collect();
    for id in orphans {
        held.queues.remove(&id);
        messages.purge_queue(id)?;
    }
    let mut refs = RefCounts::default();
    for e in held.queues.values().flatten() {
        refs.add(e.msg);
    }
    let journal = Arc::new(journal::DiskJournal::new(Arc::clone(&store), messages));
    let (persister, thread) = Persister::start(journal, refs);
    let store_handle: Arc<dyn Persistence> = persister.clone();
    let durability = Durability::new(store_handle, max_msg, max_queue);
    // Users, permissions and vhosts come from the store (the configuration
    // seeded it on first boot); only `loopback_users` stays configuration.
    let mut seedless = config.broker_config();
    let loopback: Vec<String> = seedless
        .users
        .iter()
        .filter(|u| u.loopback_only)
        .map(|u| u.name.clone())
        .collect();
    seedless.users.clear();
    seedless.vhosts.clear();
    let broker = Broker::with_durability(seedless, Some(durability));
    broker.access.set_loopback_users(loopback);
    persister.attach(&broker);
    restore_access(&broker, &defs);
    for vh in broker.vhosts() {
        if let Some(raw) = store.setting(&journal::limits_setting(&vh.name))? {
            vh.set_limits(journal::parse_limits(&String::from_utf8_lossy(&raw)));
        }
    }
    for u in broker.access.users() {
        if let Some(raw) = store.setting(&journal::user_limits_setting(&u.name))? {
            let limits = journal::parse_user_limits(&String::from_utf8_lossy(&raw));
            broker.access.set_user_limits(&u.name, limits);
        }
    }

    let known = |vhost: &str| broker.vhost(vhost).is_some();
    for e in defs.exchanges {
        if !known(&e.vhost) {
            // Left behind by a vhost deleted while its connections were
            // still declaring: goes now.
            persister.submit(PersistOp::DeleteExchange {
                vhost: e.vhost,
                name: e.name,
            });
            continue;
        }
        let Some(kind) = ExchangeKind::parse(e.kind.as_bytes()) else {
            tracing::error!(vhost = %e.vhost, exchange = %e.name, kind = %e.kind, "stored exchange has an unknown type; skipped");
            continue;
        };
        broker
            .vhost_or_create(&e.vhost)
            .restore_exchange(ExchangeSpec {
                name: e.name,
                kind,
                durable: true,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments,
            });
    }
    let mut messages = 0usize;
    let now_ms = journal::wall_ms();
    let now = std::time::Instant::now();
    for q in defs.queues {
        let index = held.queues.remove(&q.id).unwrap_or_default();
        if !known(&q.vhost) {
            persister.submit(PersistOp::DeleteQueue {
                vhost: q.vhost,
                name: q.name,
                id: q.id,
            });
            continue;
        }
        let kind = match q.arguments.get("x-queue-type") {
            Some(FieldValue::LongStr(t)) if t.as_bytes() == b"quorum" => QueueType::Quorum,
            _ => QueueType::Classic,
        };
        let vh = broker.vhost_or_create(&q.vhost);
        let queue = vh.restore_queue(QueueSpec {
            name: q.name,
            durable: true,
            exclusive_owner: None,
            auto_delete: q.auto_delete,
            arguments: q.arguments,
            kind,
            store_id: Some(q.id),
        });
        messages += index.len();
        // The index holds each message's size, priority and deadline: no
        // body is read here.
        queue.recover(index.into_iter().map(|e| Recovered {
            seq: e.seq,
            msg: e.msg,
            delivered: e.delivery_count > 0,
            bytes: e.bytes,
            priority: e.priority,
            expires_at: (e.expires_ms != 0).then(|| {
                now + std::time::Duration::from_millis(e.expires_ms.saturating_sub(now_ms))
            }),
            delivery_count: e.delivery_count,
        }));
    }
    for b in defs.bindings {
        let target = match b.destination {
            Destination::Queue(q) => BindingTarget::Queue(q),
            Destination::Exchange(e) => BindingTarget::Exchange(e),
        };
        let Some(vh) = broker.vhost(&b.vhost) else {
            continue;
        };
        if !vh.restore_binding(&b.source, &target, b.routing_key, b.arguments) {
            tracing::warn!(vhost = %b.vhost, source = %b.source, "stored binding refers to a missing exchange or queue; skipped");
        }
    }
    // Messages held by delayed exchanges come back with their wall-clock
    // deadlines: those that passed while the broker was down are routed
    // by the first run of the delayed timer.
    let mut delayed = 0usize;
    for r in store.delayed_messages()? {
        let key = DelayedRecordKey {
            vhost: r.vhost,
            exchange: r.exchange,
            deadline: r.deadline,
            seq: r.seq,
        };
        let m = r.message;
        let message =
            warren_core::Message::new(m.exchange, m.routing_key, m.properties.into(), m.body);
        let restored = broker
            .vhost(&key.vhost)
            .is_some_and(|vh| vh.restore_delayed(&key.exchange, (key.deadline, key.seq), message));
        if restored {
            delayed += 1;
        } else {
            // Its exchange (or vhost) was deleted without the record.
            persister.submit(PersistOp::DelayedRemove { key });
        }
    }
    // Ids cached by deduplication exchanges with a disk cache come back
    // with their wall-clock expiries and insertion order; expired ones,
    // and those of an exchange that no longer stores them, are removed.
    // Each id with its record's key bytes, to remove it by if its
    // exchange does not take it back.
    let mut ids: std::collections::BTreeMap<(String, ShortStr), Vec<(bytes::Bytes, StoredId)>> =
        std::collections::BTreeMap::new();
    let mut stale = Vec::new();
    for r in store.dedup_ids()? {
        match DedupKey::from_bytes(&r.id) {
            Some(key) => ids.entry((r.vhost, r.exchange)).or_default().push((
                r.id,
                StoredId {
                    key,
                    expires_ms: r.expires_ms,
                    order: r.order,
                },
            )),
            None => stale.push(DedupRecordKey {
                vhost: r.vhost,
                exchange: r.exchange,
                id: r.id,
            }),
        }
    }
    let mut dedup_ids = 0usize;
    for ((vhost, exchange), list) in ids {
        let n = list.len();
        let (raw, list): (Vec<bytes::Bytes>, Vec<StoredId>) = list.into_iter().unzip();
        let restored = broker
            .vhost(&vhost)
            .is_some_and(|vh| vh.restore_dedup(&exchange, list, now_ms));
        if restored {
            dedup_ids += n;
        } else {
            stale.extend(raw.into_iter().map(|id| DedupRecordKey {
                vhost: vhost.clone(),
                exchange: exchange.clone(),
                id,
            }));
        }
    }
    for key in stale {
        persister.submit(PersistOp::DedupRemove { key });
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        messages,
        delayed,
        dedup_ids,
        elapsed = ?started.elapsed(),
        "recovered durable state"
    );
    Ok((broker, persister, thread))
}

/// A data directory from before the message store kept messages in
/// segment files holds them in sled: move them over (written and synced
/// there before they are deleted here), once.
fn migrate_from_sled(
    store: &Store,
    messages: &MessageStore,
    defs: &Definitions,
    held: &mut warren_store::Recovered,
) -> Result<(), StoreError> {
    let mut moved = 0usize;
    // A message several queues hold is moved once; sled's copies go only
    // once every queue's entries are in the message store.
    let mut put = std::collections::HashSet::new();
    let mut batch = Batch::default();
    for q in &defs.queues {
        let index = store.queue_index(q.id)?;
        if index.is_empty() {
            continue;
        }
        for chunk in index.chunks(4096) {
            let mut bodies = Vec::with_capacity(chunk.len());
            for e in chunk {
                bodies.push(store.load_message(e.msg_id)?);
            }
            let mut ops = Vec::with_capacity(chunk.len() * 2);
            for (e, m) in chunk.iter().zip(&bodies) {
                let Some(m) = m else { continue };
                if put.insert(e.msg_id) {
                    ops.push(MessageOp::Put {
                        id: e.msg_id,
                        exchange: &m.exchange,
                        routing_key: &m.routing_key,
                        properties: &m.properties,
                        body: &m.body,
                    });
                }
                let entry = IndexedMessage {
                    seq: e.seq,
                    msg: e.msg_id,
                    bytes: u32::try_from(m.body.len()).unwrap_or(u32::MAX),
                    priority: m.properties.priority.unwrap_or(0),
                    expires_ms: 0,
                    delivery_count: u32::from(e.delivered),
                };
                ops.push(MessageOp::Enqueue { queue: q.id, entry });
                held.queues.entry(q.id).or_default().push(entry);
                held.max_message = held.max_message.max(e.msg_id);
                moved += 1;
            }
            messages.apply(&ops)?;
            for e in chunk {
                batch.dequeue(q.id, e.seq);
            }
        }
    }
    if moved > 0 {
        for id in put {
            batch.delete_message(id);
        }
        messages.flush()?;
        store.apply(batch)?;
        store.flush()?;
        tracing::info!(
            entries = moved,
            "moved stored messages from sled to the message store"
        );
    }
    Ok(())
}

/// The setting that says the configuration's vhosts and users were stored.
const SEEDED: &str = "seeded-from-config";

/// First boot (or a data directory from before users were stored): the
/// configuration's vhosts, users and permissions go into the store, once.
/// Passwords given in clear are stored hashed.
fn seed(store: &Store, config: &Config) -> Result<(), StoreError> {
    let bc = config.broker_config();
    let mut batch = Batch::default();
    for v in &bc.vhosts {
        batch.put_vhost(v);
    }
    for u in &bc.users {
        let password = u.password.clone().hashed();
        journal::admin_to_batch(
            &mut batch,
            &AdminOp::PutUser {
                name: u.name.clone(),
                password_hash: password.to_rabbitmq_hash().unwrap_or_default(),
                tags: u.tags.clone(),
            },
        );
        for p in &u.permissions {
            journal::admin_to_batch(&mut batch, &AdminOp::PutPermission(p.clone()));
        }
    }
    batch.put_setting(SEEDED, b"1");
    store.apply(batch)?;
    store.flush()?;
    tracing::info!(
        users = bc.users.len(),
        vhosts = bc.vhosts.len(),
        "seeded users and vhosts from the configuration"
    );
    Ok(())
}

/// Puts the stored vhosts, users and permissions into the broker.
fn restore_access(broker: &Broker, defs: &warren_store::Definitions) {
    for v in &defs.vhosts {
        broker.vhost_or_create(&v.name).set_meta(VhostMeta {
            limits: Default::default(),
            name: v.name.clone(),
            description: v.description.clone(),
            tags: v.tags.clone(),
            default_queue_type: v.default_queue_type.clone(),
        });
    }
    for u in &defs.users {
        let password = if u.password_hash.is_empty() {
            None
        } else {
            let p = Password::from_rabbitmq_hash(&u.password_hash);
            if p.is_none() {
                tracing::error!(user = %u.name, "stored password hash is unreadable; the user cannot log in");
            }
            p
        };
        broker.access.put_user(Account {
            name: u.name.clone(),
            password,
            tags: u.tags.clone(),
        });
    }
    for p in &defs.permissions {
        let spec = PermissionSpec {
            user: p.user.clone(),
            vhost: p.vhost.clone(),
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        };
        if let Err(e) = broker.access.put_permissions(spec) {
            tracing::error!(user = %p.user, vhost = %p.vhost, "stored permissions: {e}");
        }
    }
    for p in &defs.policies {
        let Some(vh) = broker.vhost(&p.vhost) else {
            continue;
        };
        let definition = serde_json::from_str::<serde_json::Value>(&p.definition)
            .ok()
            .and_then(|v| warren_management::json::json_to_table(&v).ok());
        let policy = definition
            .ok_or_else(|| "unreadable definition".to_string())
            .and_then(|d| {
                Policy::new(
                    &p.vhost,
                    &p.name,
                    &p.pattern,
                    &p.apply_to,
                    p.priority,
                    d,
                    p.operator,
                )
            });
        match policy {
            Ok(policy) => {
                vh.put_policy(policy);
            }
            Err(e) => {
                tracing::error!(vhost = %p.vhost, policy = %p.name, "stored policy skipped: {e}");
            }
        }
    }
    for t in &defs.topic_permissions {
        let spec = TopicPermissionSpec {
            user: t.user.clone(),
            vhost: t.vhost.clone(),
            exchange: t.exchange.clone(),
            write: t.write.clone(),
            read: t.read.clone(),
        };
        if let Err(e) = broker.access.put_topic_permissions(spec) {
            tracing::error!(user = %t.user, vhost = %t.vhost, "stored topic permissions: {e}");
        }
    }
}
