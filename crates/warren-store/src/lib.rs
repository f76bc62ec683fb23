//! Warren's durable store: definitions (vhosts, durable exchanges and
//! queues, bindings), the administration records (users, permissions,
//! topic permissions, policies, small settings) and persistent messages,
//! in one sled database.
//!
//! # Layout
//! - [`Store`] opens the data directory, applies [`Batch`]es atomically,
//!   flushes them to disk, and reads everything back at startup.
//! - [`Batch`] is one group of writes (messages, queue index entries,
//!   definitions) that lands all together or not at all.
//! - The record types ([`StoredMessage`], [`QueueRecord`],
//!   [`ExchangeRecord`], [`BindingRecord`], [`IndexEntry`], [`VhostRecord`],
//!   [`UserRecord`], [`PermissionRecord`], [`TopicPermissionRecord`],
//!   [`PolicyRecord`], [`Definitions`]) are what callers read and write;
//!   sled's types never appear in this API. Settings are plain bytes under
//!   a name ([`Batch::put_setting`], [`Store::setting`]).
//! - `keys` lays out the single sled tree (one key prefix per record kind,
//!   big-endian integers so scans come out ordered), `records` encodes the
//!   values with the AMQP codec, `error` holds [`StoreError`].
//!
//! A message is stored once (`M` + id) however many queues hold it; each
//! queue has its own ordered index (`Q` + queue id + seq) pointing at
//! message ids. Acking a message removes its index entry; the caller
//! deletes the message when no queue refers to it any more.
//!
//! A message held by a durable delayed exchange is its own record
//! (`X` + vhost + exchange + deadline + seq, [`DelayedRecord`]); routing
//! it stores the message again as an `M` record for the queues it reaches.
//! An id cached by a durable deduplication exchange with a disk cache is
//! its own record too (`I` + vhost + exchange + id, [`DedupRecord`]).
//!
//! **Architecture Invariant:** this crate knows nothing of channels,
//! connections, tokio or `warren-core`; it depends on `warren-codec` only.
//! Every call blocks, so the server runs it on a dedicated persistence
//! thread.
//!
//! **Durability:** [`Store::apply`] makes writes visible and atomic, not
//! durable. [`Store::flush`] makes every earlier apply durable; a publisher
//! confirm waits for the flush that covers its message.

mod error;
mod keys;
mod locmap;
mod msgstore;
mod qindex;
mod records;
mod store;

pub use error::StoreError;
pub use msgstore::{MessageOp, MessageStore, Recovered, SEGMENT_BYTES, StoreStats, Tuning};
pub use qindex::IndexedMessage;
pub use records::{
    BindingRecord, DedupRecord, Definitions, DelayedRecord, Destination, ExchangeRecord,
    IndexEntry, PermissionRecord, PolicyRecord, QueueRecord, StoredMessage, TopicPermissionRecord,
    UserRecord, VhostRecord,
};
pub use store::{Batch, Store};

/// The on-disk format this build writes and the newest it reads. Every
/// record value starts with it, and the `V` record holds it for the whole
/// directory.
pub const FORMAT_VERSION: u8 = 1;
