//! Start-up from a data directory: open the store, rebuild durable
//! definitions and the messages of durable queues, start the persistence
//! thread.
//!
//! What comes back follows RabbitMQ: durable exchanges, queues and the
//! bindings between durable ends; persistent messages in durable queues, in
//! order, with `redelivered` set on those that had been delivered. Transient
//! and exclusive queues were never stored. Message bodies stay on disk until
//! delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use warren_codec::FieldValue;
use warren_core::Broker;
use warren_core::exchange::{ExchangeKind, ExchangeSpec};
use warren_core::persist::{BindingTarget, Durability, Persistence};
use warren_core::queue::{QueueSpec, QueueType, Recovered};
use warren_store::{Destination, Store, StoreError};

use crate::config::Config;
use crate::persistence::{Persister, Refs};

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
    let defs = store.definitions()?;
    let (max_msg, max_queue) = store.max_ids()?;

    let mut indexes = Vec::with_capacity(defs.queues.len());
    let mut refs: HashMap<u64, Refs> = HashMap::new();
    for q in &defs.queues {
        let index = store.queue_index(q.id)?;
        for e in &index {
            refs.entry(e.msg_id)
                .or_insert(Refs {
                    count: 0,
                    routed: true,
                })
                .count += 1;
        }
        indexes.push(index);
    }
    let (persister, thread) = Persister::start(Arc::clone(&store), refs);
    let store_handle: Arc<dyn Persistence> = persister.clone();
    let durability = Durability::new(store_handle, max_msg, max_queue);
    let broker = Broker::with_durability(config.broker_config(), Some(durability));
    persister.attach(&broker);

    for v in &defs.vhosts {
        broker.vhost_or_create(v);
    }
    for e in defs.exchanges {
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
    for (q, index) in defs.queues.into_iter().zip(indexes) {
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
        let priority_queue = queue.args.max_priority > 0;
        messages += index.len();
        queue.recover(index.into_iter().map(|e| {
            // Priority queues need each message's priority to place it;
            // ordinary ones recover without reading a single body.
            let priority = if priority_queue {
                // A record that cannot be read here is read again on
                // delivery; it is placed at priority 0 meanwhile.
                persister
                    .load(e.msg_id)
                    .ok()
                    .flatten()
                    .and_then(|m| m.properties.priority)
                    .unwrap_or(0)
            } else {
                0
            };
            Recovered {
                seq: e.seq,
                msg: e.msg_id,
                delivered: e.delivered,
                bytes: 0,
                priority,
            }
        }));
    }
    for b in defs.bindings {
        let target = match b.destination {
            Destination::Queue(q) => BindingTarget::Queue(q),
            Destination::Exchange(e) => BindingTarget::Exchange(e),
        };
        let vh = broker.vhost_or_create(&b.vhost);
        if !vh.restore_binding(&b.source, &target, b.routing_key, b.arguments) {
            tracing::warn!(vhost = %b.vhost, source = %b.source, "stored binding refers to a missing exchange or queue; skipped");
        }
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        messages,
        elapsed = ?started.elapsed(),
        "recovered durable state"
    );
    Ok((broker, persister, thread))
}
