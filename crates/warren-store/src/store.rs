//! [`Store`] (the sled database) and [`Batch`] (one atomic group of writes).

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use bytes::Bytes;
use sled::IVec;
use warren_codec::ShortStr;

use crate::error::{StoreError, sled_error};
use crate::records::{
    self, BindingRecord, DedupRecord, Definitions, DelayedRecord, ExchangeRecord, Failure,
    IndexEntry, PermissionRecord, PolicyRecord, QueueRecord, StoredMessage, TopicPermissionRecord,
    UserRecord, VhostRecord,
};
use crate::{FORMAT_VERSION, keys};

/// sled's page cache bound. Messages are read back only at startup and on
/// paging, so a modest cache is enough, and it keeps a broker with a large
/// backlog from holding it all twice (queues in memory, pages in sled).
const CACHE_CAPACITY: u64 = 64 << 20;

/// How long [`Store::open`] waits for a just-closed database's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often [`Store::open`] retries the lock meanwhile.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Whether sled failed to open because another handle holds its file lock.
/// sled 0.34 reports it only as text inside an `Other` I/O error.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// One atomic group of writes, applied by [`Store::apply`].
///
/// Encoding happens when an operation is added, so building a batch can be
/// done on the thread that owns the data and applying it on the persistence
/// thread. Later operations on the same key replace earlier ones.
#[derive(Default)]
pub struct Batch {
    inner: sled::Batch,
    len: usize,
}

impl std::fmt::Debug for Batch {
    /// Prints the size only: the encoded values hold message bodies, which
    /// never go to logs above `trace`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("len", &self.len).finish()
    }
}

impl Batch {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.inner.insert(key, value);
        self.len += 1;
    }

    fn remove(&mut self, key: &[u8]) {
        self.inner.remove(key);
        self.len += 1;
    }

    /// Stores message `id` (replacing any message with that id).
    pub fn put_message(&mut self, id: u64, m: &StoredMessage) {
        self.put(&keys::message(id), &records::encode_message(m));
    }

    /// Deletes message `id`; its index entries are the caller's to remove.
    pub fn delete_message(&mut self, id: u64) {
        self.remove(&keys::message(id));
    }

    /// Adds message `msg_id` to queue `queue` at position `seq`, not yet
    /// delivered.
    pub fn enqueue(&mut self, queue: u64, seq: u64, msg_id: u64) {
        self.put(
            &keys::index(queue, seq),
            &records::encode_index(msg_id, false),
        );
    }

    /// Records that the message at `seq` in `queue` (message `msg_id`) was
    /// delivered, so that it comes back `redelivered` after a restart.
    pub fn mark_delivered(&mut self, queue: u64, seq: u64, msg_id: u64) {
        self.put(
            &keys::index(queue, seq),
            &records::encode_index(msg_id, true),
        );
    }

    /// Stores a message held by a delayed exchange (replacing any record
    /// with that key).
    pub fn put_delayed(&mut self, r: &DelayedRecord) {
        self.put(
            &keys::delayed(&r.vhost, &r.exchange, r.deadline, r.seq),
            &records::encode_message(&r.message),
        );
    }

    /// Deletes a delayed message's record.
    pub fn delete_delayed(&mut self, vhost: &str, exchange: &ShortStr, deadline: u64, seq: u64) {
        self.remove(&keys::delayed(vhost, exchange, deadline, seq));
    }

    /// Stores an id cached by a deduplication exchange (replacing any
    /// record of it).
    pub fn put_dedup(&mut self, r: &DedupRecord) {
        self.put(
            &keys::dedup(&r.vhost, &r.exchange, &r.id),
            &records::encode_dedup(r.expires_ms, r.order),
        );
    }

    /// Deletes a cached id's record.
    pub fn delete_dedup(&mut self, vhost: &str, exchange: &ShortStr, id: &[u8]) {
        self.remove(&keys::dedup(vhost, exchange, id));
    }

    /// Removes position `seq` from queue `queue` (acked, or dropped).
    pub fn dequeue(&mut self, queue: u64, seq: u64) {
        self.remove(&keys::index(queue, seq));
    }

    /// Stores vhost `name` with no metadata, replacing any record of it
    /// (metadata included).
    pub fn put_vhost(&mut self, name: &str) {
        self.put_vhost_record(&VhostRecord::new(name));
    }

    /// Stores a vhost with its metadata, replacing any record of it.
    pub fn put_vhost_record(&mut self, r: &VhostRecord) {
        self.put(&keys::vhost(&r.name), &records::encode_vhost(r));
    }

    /// Deletes vhost `name`. Its exchanges, queues and bindings, and its
    /// permissions, topic permissions and policies, are the caller's to
    /// delete too; [`Store::vhost_keys_to_delete`] builds the batch for the
    /// administration records.
    pub fn delete_vhost(&mut self, name: &str) {
        self.remove(&keys::vhost(name));
    }

    /// Stores a user, replacing one with the same name.
    pub fn put_user(&mut self, r: &UserRecord) {
        self.put(&keys::user(&r.name), &records::encode_user(r));
    }

    /// Deletes user `name` (its permissions and topic permissions are the
    /// caller's to delete).
    pub fn delete_user(&mut self, name: &str) {
        self.remove(&keys::user(name));
    }

    /// Stores a user's permissions in a vhost, replacing earlier ones.
    pub fn put_permission(&mut self, r: &PermissionRecord) {
        self.put(
            &keys::permission(&r.vhost, &r.user),
            &records::encode_permission(r),
        );
    }

    /// Deletes `user`'s permissions in `vhost`.
    pub fn delete_permission(&mut self, user: &str, vhost: &str) {
        self.remove(&keys::permission(vhost, user));
    }

    /// Stores a user's topic permissions on an exchange, replacing earlier
    /// ones for the same user, vhost and exchange.
    pub fn put_topic_permission(&mut self, r: &TopicPermissionRecord) {
        self.put(
            &keys::topic_permission(&r.vhost, &r.user, &r.exchange),
            &records::encode_topic_permission(r),
        );
    }

    /// Deletes `user`'s topic permissions on `exchange` in `vhost`.
    pub fn delete_topic_permission(&mut self, user: &str, vhost: &str, exchange: &str) {
        self.remove(&keys::topic_permission(vhost, user, exchange));
    }

    /// Stores a policy, replacing the one of the same kind (operator or
    /// user) with the same vhost and name.
    pub fn put_policy(&mut self, r: &PolicyRecord) {
        self.put(
            &keys::policy(&r.vhost, &r.name, r.operator),
            &records::encode_policy(r),
        );
    }

    /// Deletes policy `name` in `vhost`: the operator policy if `operator`,
    /// else the user policy.
    pub fn delete_policy(&mut self, vhost: &str, name: &str, operator: bool) {
        self.remove(&keys::policy(vhost, name, operator));
    }

    /// Stores setting `name` (a small opaque value, such as a marker that
    /// users were seeded from the configuration file).
    pub fn put_setting(&mut self, name: &str, value: &[u8]) {
        self.put(&keys::setting(name), &records::encode_setting(value));
    }

    /// Deletes setting `name`.
    pub fn delete_setting(&mut self, name: &str) {
        self.remove(&keys::setting(name));
    }

    /// Stores an exchange, replacing one with the same vhost and name.
    pub fn put_exchange(&mut self, r: &ExchangeRecord) {
        self.put(
            &keys::exchange(&r.vhost, &r.name),
            &records::encode_exchange(r),
        );
    }

    /// Deletes exchange `name` in `vhost`.
    pub fn delete_exchange(&mut self, vhost: &str, name: &ShortStr) {
        self.remove(&keys::exchange(vhost, name));
    }

    /// Stores a queue definition, replacing one with the same vhost and name.
    pub fn put_queue(&mut self, r: &QueueRecord) {
        self.put(&keys::queue(&r.vhost, &r.name), &records::encode_queue(r));
    }

    /// Deletes the definition of queue `name` in `vhost`; its index entries
    /// are removed with [`Store::purge_queue_index`].
    pub fn delete_queue(&mut self, vhost: &str, name: &ShortStr) {
        self.remove(&keys::queue(vhost, name));
    }

    /// Stores a binding (storing the same binding twice keeps one).
    pub fn put_binding(&mut self, r: &BindingRecord) {
        self.put(&keys::binding(r), &records::encode_binding(r));
    }

    /// Deletes the binding equal to `r`, arguments included.
    pub fn delete_binding(&mut self, r: &BindingRecord) {
        self.remove(&keys::binding(r));
    }

    /// Number of operations added (an overwritten key counts each time).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The durable store: one sled database in one directory.
///
/// All methods take `&self` and may be called from several threads; the
/// server calls them from its persistence thread. Writes become visible to
/// reads at [`Store::apply`] and durable at the next [`Store::flush`].
/// Dropping the store also flushes (sled does it on drop).
pub struct Store {
    // An RwLock so that `compact` can swap in a fresh database; every other
    // method only reads the handle. Never held across anything that waits
    // on another lock.
    db: RwLock<sled::Db>,
    dir: PathBuf,
}

/// Marks a compacted copy as complete (written and flushed).
const COMPLETE: &str = "WARREN-COMPACT-COMPLETE";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Finishes or undoes a compaction that a crash interrupted, so `dir` holds
/// exactly one complete database.
fn settle_compaction(dir: &Path) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
    let tmp = sibling(dir, ".compact");
    let old = sibling(dir, ".old");
    if !dir.exists() {
        if tmp.join(COMPLETE).exists() {
            // Crashed between moving the old database away and the new one in.
            std::fs::rename(&tmp, dir).map_err(|e| io("finishing an interrupted compaction", e))?;
        } else if old.exists() {
            std::fs::rename(&old, dir).map_err(|e| io("undoing an interrupted compaction", e))?;
        }
    }
    if dir.exists() {
        for leftover in [&tmp, &old] {
            if leftover.exists() {
                std::fs::remove_dir_all(leftover)
                    .map_err(|e| io("removing compaction leftovers", e))?;
            }
        }
        let marker = dir.join(COMPLETE);
        if marker.exists() {
            std::fs::remove_file(marker).map_err(|e| io("removing the compaction marker", e))?;
        }
    }
    Ok(())
}

fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_CAPACITY)
        // Durability comes only from our flushes, which the server
        // times to cover publisher confirms; a background flusher would
        // only add fsyncs.
        .flush_every_ms(None);
    let mut waited = Duration::ZERO;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            // sled 0.34 releases its file lock only when its last
            // internal handle goes, which can be shortly after the `Db`
            // that was just dropped (spacejam/sled#1234). Wait that out;
            // a lock held by a live broker lasts far longer and is
            // reported after the wait.
            Err(e) if is_lock_contention(&e) && waited < LOCK_WAIT => {
                std::thread::sleep(LOCK_RETRY);
                waited += LOCK_RETRY;
            }
            Err(e) => return Err(sled_error(|| format!("opening {}", dir.display()))(e)),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Turns a value's decode failure into a [`StoreError`] naming `key`.
fn failure(key: &[u8]) -> impl FnOnce(Failure) -> StoreError + '_ {
    move |f| match f {
        Failure::Newer(found) => StoreError::NewerFormat {
            found,
            supported: FORMAT_VERSION,
        },
        Failure::Bad(why) => StoreError::Corrupt {
            what: format!("{}: {why}", keys::describe(key)),
        },
    }
}

/// Copies a sled value into a [`Bytes`] that decoded names and bodies can
/// slice without further copies.
fn bytes(v: &IVec) -> Bytes {
    Bytes::copy_from_slice(v)
}

impl Store {
    /// Opens the store in `dir`, creating it if missing.
    ///
    /// A new store gets the [`FORMAT_VERSION`] record (flushed before this
    /// returns). A store written in a newer format is refused with
    /// [`StoreError::NewerFormat`] and left untouched.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        settle_compaction(dir)?;
        let db = open_db(dir)?;
        let store = Store {
            db: RwLock::new(db),
            dir: dir.to_path_buf(),
        };
        store.check_version()?;
        Ok(store)
    }

    /// The database handle (a read lock: many at once, only `compact`
    /// waits for them).
    fn db(&self) -> std::sync::RwLockReadGuard<'_, sled::Db> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Rewrites the database into fresh files holding only live records,
    /// then swaps it in, crash-safely: sled reuses the space of deleted
    /// records but never gives it back, so after a large backlog is drained
    /// this is what returns the disk space. Returns the size on disk before
    /// and after. Blocks readers while it runs; the server calls it only
    /// when no message is stored, so the copy is small.
    pub fn compact(&self) -> Result<(u64, u64), StoreError> {
        let io = |what: &str, e: std::io::Error| StoreError::Io(format!("compacting: {what}: {e}"));
        let mut guard = self.db.write().unwrap_or_else(|e| e.into_inner());
        let before = guard
            .size_on_disk()
            .map_err(sled_error(|| "measuring".to_owned()))?;
        let tmp = sibling(&self.dir, ".compact");
        let old = sibling(&self.dir, ".old");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io("clearing the work directory", e))?;
        }
        {
            let fresh = open_db(&tmp)?;
            for item in guard.iter() {
                let (k, v) = item.map_err(sled_error(|| "reading".to_owned()))?;
                fresh
                    .insert(k, v)
                    .map_err(sled_error(|| "copying".to_owned()))?;
            }
            fresh
                .flush()
                .map_err(sled_error(|| "flushing the copy".to_owned()))?;
        }
        let marker = tmp.join(COMPLETE);
        std::fs::write(&marker, b"").map_err(|e| io("marking the copy complete", e))?;
        std::fs::File::open(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("syncing the marker", e))?;
        guard
            .flush()
            .map_err(sled_error(|| "flushing".to_owned()))?;
        // From here a crash leaves either the old directory in place, or the
        // complete copy to be moved in by `settle_compaction`.
        std::fs::rename(&self.dir, &old).map_err(|e| io("moving the old database away", e))?;
        std::fs::rename(&tmp, &self.dir).map_err(|e| io("moving the copy in", e))?;
        let reopened = open_db(&self.dir)?;
        let stale = std::mem::replace(&mut *guard, reopened);
        drop(stale);
        let _ = std::fs::remove_file(self.dir.join(COMPLETE));
        let _ = std::fs::remove_dir_all(&old);
        let after = guard
            .size_on_disk()
            .map_err(sled_error(|| "measuring".to_owned()))?;
        Ok((before, after))
    }

    fn check_version(&self) -> Result<(), StoreError> {
        let ctx = || format!("reading the format version in {}", self.dir.display());
        match self.db().get(keys::VERSION).map_err(sled_error(ctx))? {
            Some(v) => match v.as_ref() {
                [found] if *found == FORMAT_VERSION => Ok(()),
                [found] if *found > FORMAT_VERSION => Err(StoreError::NewerFormat {
                    found: *found,
                    supported: FORMAT_VERSION,
                }),
                other => Err(StoreError::Corrupt {
                    what: format!(
                        "{}: unknown value \"{}\"",
                        keys::describe(keys::VERSION),
                        other.escape_ascii()
                    ),
                }),
            },
            None => {
                let first = self
                    .db()
                    .iter()
                    .next()
                    .transpose()
                    .map_err(sled_error(ctx))?;
                if let Some((k, _)) = first {
                    return Err(StoreError::Corrupt {
                        what: format!(
                            "{} holds {} but no format version record",
                            self.dir.display(),
                            keys::describe(&k)
                        ),
                    });
                }
                self.db()
                    .insert(keys::VERSION, &[FORMAT_VERSION])
                    .map_err(sled_error(ctx))?;
                self.flush()?;
                Ok(())
            }
        }
    }

    /// Applies `batch` atomically: after a crash either all of it or none of
    /// it is there. It is visible to reads at once but durable only after
    /// the next [`Store::flush`].
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len;
        self.db()
            .apply_batch(batch.inner)
            .map_err(sled_error(|| format!("applying a batch of {n} writes")))
    }

    /// Blocks until every earlier [`Store::apply`] is on disk (written and
    /// fsynced). Returns the number of bytes written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        self.db()
            .flush()
            .map_err(sled_error(|| format!("flushing {}", self.dir.display())))
    }

    /// Removes every index entry of `queue` in one atomic write and returns
    /// their message ids in seq order. Deleting the messages no other queue
    /// holds is the caller's decision. Entries enqueued concurrently by
    /// another thread may survive; the server purges from the persistence
    /// thread, which serialises them.
    pub fn purge_queue_index(&self, queue: u64) -> Result<Vec<u64>, StoreError> {
        let entries = self.queue_index(queue)?;
        let mut batch = sled::Batch::default();
        for e in &entries {
            batch.remove(&keys::index(queue, e.seq));
        }
        self.db()
            .apply_batch(batch)
            .map_err(sled_error(|| format!("purging the index of queue {queue}")))?;
        Ok(entries.into_iter().map(|e| e.msg_id).collect())
    }

    /// A batch deleting vhost `vhost`'s record and its permissions, topic
    /// permissions and policies (user and operator), as stored now. Its
    /// exchanges, queues and bindings are not in it: the caller deletes
    /// them as it deletes each entity, and may add those deletions to the
    /// returned batch to apply it all at once. Records written between this
    /// call and the apply survive it; the server builds and applies it on
    /// its persistence thread, which serialises them.
    pub fn vhost_keys_to_delete(&self, vhost: &str) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        for kind in [keys::PERMISSION, keys::TOPIC_PERMISSION, keys::POLICY] {
            for item in self.db().scan_prefix(keys::vhost_scope(kind, vhost)).keys() {
                let k = item.map_err(sled_error(|| {
                    format!("reading the administration records of vhost {vhost:?}")
                }))?;
                batch.remove(&k);
            }
        }
        batch.delete_vhost(vhost);
        Ok(batch)
    }

    /// Reads setting `name`, if it is stored.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = keys::setting(name);
        let Some(v) = self
            .db()
            .get(&k)
            .map_err(sled_error(|| format!("reading setting {name:?}")))?
        else {
            return Ok(None);
        };
        records::decode_setting(&bytes(&v))
            .map(Some)
            .map_err(failure(&k))
    }

    /// Reads every definition (vhosts, exchanges, queues, bindings, users,
    /// permissions, topic permissions, policies), each kind in key order.
    /// Key order is not alphabetical: names are length-prefixed, so a
    /// shorter vhost or user comes first; sort for display.
    pub fn definitions(&self) -> Result<Definitions, StoreError> {
        let mut defs = Definitions::default();
        for item in self.db().scan_prefix([keys::DEFINITION]) {
            let (k, v) = item.map_err(sled_error(|| "reading definitions".to_owned()))?;
            let v = bytes(&v);
            match k.get(1).copied() {
                Some(keys::VHOST) => defs
                    .vhosts
                    .push(records::decode_vhost(&v).map_err(failure(&k))?),
                Some(keys::EXCHANGE) => defs
                    .exchanges
                    .push(records::decode_exchange(&v).map_err(failure(&k))?),
                Some(keys::QUEUE) => defs
                    .queues
                    .push(records::decode_queue(&v).map_err(failure(&k))?),
                Some(keys::BINDING) => defs
                    .bindings
                    .push(records::decode_binding(&v).map_err(failure(&k))?),
                Some(keys::USER) => defs
                    .users
                    .push(records::decode_user(&v).map_err(failure(&k))?),
                Some(keys::PERMISSION) => defs
                    .permissions
                    .push(records::decode_permission(&v).map_err(failure(&k))?),
                Some(keys::TOPIC_PERMISSION) => defs
                    .topic_permissions
                    .push(records::decode_topic_permission(&v).map_err(failure(&k))?),
                Some(keys::POLICY) => defs
                    .policies
                    .push(records::decode_policy(&v).map_err(failure(&k))?),
                _ => {
                    return Err(StoreError::Corrupt {
                        what: format!("{}: unknown definition kind", keys::describe(&k)),
                    });
                }
            }
        }
        Ok(defs)
    }

    /// The index entries of `queue`, in seq order.
    pub fn queue_index(&self, queue: u64) -> Result<Vec<IndexEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.db().scan_prefix(keys::index_prefix(queue)) {
            let (k, v) =
                item.map_err(sled_error(|| format!("reading the index of queue {queue}")))?;
            if k.len() != 17 {
                return Err(StoreError::Corrupt {
                    what: format!("{}: not an index key", keys::describe(&k)),
                });
            }
            let (msg_id, delivered) = records::decode_index(&bytes(&v)).map_err(failure(&k))?;
            out.push(IndexEntry {
                seq: keys::be_u64(&k[9..]),
                msg_id,
                delivered,
            });
        }
        Ok(out)
    }

    /// Every delayed message, by vhost, exchange, then deadline.
    pub fn delayed_messages(&self) -> Result<Vec<DelayedRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.db().scan_prefix([keys::DELAYED]) {
            let (k, v) = item.map_err(sled_error(|| "reading delayed messages".to_owned()))?;
            let Some((vhost, exchange, deadline, seq)) = keys::parse_delayed(&k) else {
                return Err(StoreError::Corrupt {
                    what: format!("{}: not a delayed-message key", keys::describe(&k)),
                });
            };
            let message = records::decode_message(&bytes(&v)).map_err(failure(&k))?;
            out.push(DelayedRecord {
                vhost,
                exchange,
                deadline,
                seq,
                message,
            });
        }
        Ok(out)
    }

    /// Every id cached by a deduplication exchange with a disk cache, by
    /// vhost and exchange.
    pub fn dedup_ids(&self) -> Result<Vec<DedupRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.db().scan_prefix([keys::DEDUP]) {
            let (k, v) = item.map_err(sled_error(|| "reading deduplication ids".to_owned()))?;
            let Some((vhost, exchange, id)) = keys::parse_dedup(&k) else {
                return Err(StoreError::Corrupt {
                    what: format!("{}: not a deduplication id key", keys::describe(&k)),
                });
            };
            let (expires_ms, order) = records::decode_dedup(&bytes(&v)).map_err(failure(&k))?;
            out.push(DedupRecord {
                vhost,
                exchange,
                id: Bytes::copy_from_slice(id),
                expires_ms,
                order,
            });
        }
        Ok(out)
    }

    /// Reads message `id`, if it is stored.
    pub fn load_message(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        let k = keys::message(id);
        let Some(v) = self
            .db()
            .get(k)
            .map_err(sled_error(|| format!("reading message {id}")))?
        else {
            return Ok(None);
        };
        records::decode_message(&bytes(&v))
            .map(Some)
            .map_err(failure(&k))
    }

    /// The largest message id and the largest queue id in use (0 when
    /// none), to seed the id counters after a restart. Queue ids come from
    /// both queue definitions and index entries.
    pub fn max_ids(&self) -> Result<(u64, u64), StoreError> {
        let ctx = || "reading the largest ids".to_owned();
        let max_msg = match self.db().scan_prefix([keys::MESSAGE]).next_back() {
            Some(item) => {
                let (k, _) = item.map_err(sled_error(ctx))?;
                id_after_prefix(&k)?
            }
            None => 0,
        };
        let mut max_queue = match self.db().scan_prefix([keys::INDEX]).next_back() {
            Some(item) => {
                let (k, _) = item.map_err(sled_error(ctx))?;
                id_after_prefix(&k)?
            }
            None => 0,
        };
        for q in self.definitions()?.queues {
            max_queue = max_queue.max(q.id);
        }
        Ok((max_msg, max_queue))
    }

    /// Writes, flushes and removes a scratch record: whether the disk takes
    /// writes (after a full disk was freed, say).
    pub fn probe(&self) -> Result<(), StoreError> {
        let db = self.db();
        db.insert(keys::PROBE, &[FORMAT_VERSION][..])
            .map_err(sled_error(|| "probing the disk".to_owned()))?;
        db.flush()
            .map_err(sled_error(|| "probing the disk".to_owned()))?;
        db.remove(keys::PROBE)
            .map_err(sled_error(|| "probing the disk".to_owned()))?;
        db.flush()
            .map_err(sled_error(|| "probing the disk".to_owned()))?;
        Ok(())
    }

    /// Bytes the database's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db()
            .size_on_disk()
            .map_err(sled_error(|| format!("measuring {}", self.dir.display())))
    }

    /// Number of stored messages (a full key scan; for tests and reports).
    pub fn message_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.db().scan_prefix([keys::MESSAGE]).keys() {
            item.map_err(sled_error(|| "counting messages".to_owned()))?;
            n += 1;
        }
        Ok(n)
    }
}

/// The u64 after the one-byte prefix of a message or index key.
fn id_after_prefix(k: &[u8]) -> Result<u64, StoreError> {
    if k.len() < 9 {
        return Err(StoreError::Corrupt {
            what: format!("{}: key too short", keys::describe(k)),
        });
    }
    Ok(keys::be_u64(&k[1..9]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Destination;
    use warren_codec::{BasicProperties, FieldTable, FieldValue};

    /// A path for a store's files (`.0`, not created: the store makes it)
    /// inside a fresh temporary directory, removed with it on drop.
    struct TempDir(
        PathBuf,
        #[expect(dead_code, reason = "held: removed on drop")] tempfile::TempDir,
    );

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = tempfile::Builder::new()
                .prefix(&format!("warren-store-unit-{name}-"))
                .tempdir()
                .expect("a temporary directory");
            TempDir(dir.path().join("data"), dir)
        }
    }

    fn message(body: &'static [u8]) -> StoredMessage {
        StoredMessage {
            exchange: ShortStr::from("x"),
            routing_key: ShortStr::from("rk"),
            properties: BasicProperties {
                delivery_mode: Some(2),
                headers: Some(FieldTable::new().with(
                    "nested",
                    FieldValue::Table(FieldTable::new().with("n", FieldValue::I32(1))),
                )),
                ..BasicProperties::default()
            },
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn compaction_gives_space_back_and_keeps_live_records() {
        let dir = TempDir::new("compact");
        let store = Store::open(&dir.0).unwrap();
        let body: &'static [u8] = Box::leak(vec![7u8; 1024].into_boxed_slice());
        for chunk in 0..20u64 {
            let mut b = Batch::default();
            for i in 0..500 {
                b.put_message(chunk * 500 + i, &message(body));
            }
            store.apply(b).unwrap();
        }
        let mut b = Batch::default();
        b.put_vhost("kept");
        b.put_message(1_000_000, &message(b"live"));
        store.apply(b).unwrap();
        let mut b = Batch::default();
        for id in 0..10_000 {
            b.delete_message(id);
        }
        store.apply(b).unwrap();
        store.flush().unwrap();
        let (before, after) = store.compact().unwrap();
        assert!(after < before / 2, "before {before} after {after}");
        assert_eq!(store.message_count().unwrap(), 1);
        assert!(store.load_message(1_000_000).unwrap().is_some());
        // The compacted store is the one that opens next time.
        drop(store);
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(
            store.definitions().unwrap().vhosts,
            vec![VhostRecord::new("kept")]
        );
        assert_eq!(store.message_count().unwrap(), 1);
        assert!(!sibling(&dir.0, ".old").exists() && !sibling(&dir.0, ".compact").exists());
    }

    #[test]
    fn an_interrupted_compaction_is_finished_or_undone_at_open() {
        // Crash after the old database moved away but before the copy moved in.
        let dir = TempDir::new("interrupted");
        let tmp = sibling(&dir.0, ".compact");
        let old = sibling(&dir.0, ".old");
        {
            let copy = Store::open(&tmp).unwrap();
            let mut b = Batch::default();
            b.put_vhost("from-copy");
            copy.apply(b).unwrap();
            copy.flush().unwrap();
        }
        std::fs::write(tmp.join(COMPLETE), b"").unwrap();
        std::fs::create_dir_all(&old).unwrap();
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(
            store.definitions().unwrap().vhosts,
            vec![VhostRecord::new("from-copy")]
        );
        drop(store);
        assert!(!old.exists() && !tmp.exists());
        // An incomplete copy next to an intact database is discarded.
        std::fs::create_dir_all(&tmp).unwrap();
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(
            store.definitions().unwrap().vhosts,
            vec![VhostRecord::new("from-copy")]
        );
        assert!(!tmp.exists());
        drop(store);
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = TempDir::new("reopen");
        let m = message(b"hello");
        let queue = QueueRecord {
            id: 7,
            vhost: "/".to_owned(),
            name: ShortStr::from("q"),
            auto_delete: false,
            arguments: FieldTable::new().with("x-max-length", FieldValue::I64(10)),
        };
        let exchange = ExchangeRecord {
            vhost: "/".to_owned(),
            name: ShortStr::from("x"),
            kind: "topic".to_owned(),
            auto_delete: false,
            internal: true,
            arguments: FieldTable::new(),
        };
        let binding = BindingRecord {
            vhost: "/".to_owned(),
            source: ShortStr::from("x"),
            destination: Destination::Queue(ShortStr::from("q")),
            routing_key: ShortStr::from("a.*"),
            arguments: FieldTable::new(),
        };
        {
            let store = Store::open(&dir.0).unwrap();
            let mut b = Batch::default();
            assert!(b.is_empty());
            b.put_vhost("/");
            b.put_exchange(&exchange);
            b.put_queue(&queue);
            b.put_binding(&binding);
            b.put_binding(&binding);
            b.put_message(3, &m);
            b.enqueue(7, 1, 3);
            b.enqueue(7, 2, 3);
            b.mark_delivered(7, 1, 3);
            assert_eq!(b.len(), 9);
            store.apply(b).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&dir.0).unwrap();
        let defs = store.definitions().unwrap();
        assert_eq!(defs.vhosts, [VhostRecord::new("/")]);
        assert_eq!(defs.exchanges, [exchange]);
        assert_eq!(defs.queues, [queue]);
        assert_eq!(defs.bindings, std::slice::from_ref(&binding));
        assert_eq!(store.load_message(3).unwrap(), Some(m));
        assert_eq!(store.load_message(4).unwrap(), None);
        assert_eq!(
            store.queue_index(7).unwrap(),
            [
                IndexEntry {
                    seq: 1,
                    msg_id: 3,
                    delivered: true
                },
                IndexEntry {
                    seq: 2,
                    msg_id: 3,
                    delivered: false
                },
            ]
        );
        assert_eq!(store.max_ids().unwrap(), (3, 7));
        assert_eq!(store.message_count().unwrap(), 1);
        assert_eq!(store.purge_queue_index(7).unwrap(), [3, 3]);
        assert!(store.queue_index(7).unwrap().is_empty());
        let mut b = Batch::default();
        b.delete_binding(&binding);
        b.delete_message(3);
        store.apply(b).unwrap();
        assert!(store.definitions().unwrap().bindings.is_empty());
        assert_eq!(store.message_count().unwrap(), 0);
        // The queue definition still carries id 7.
        assert_eq!(store.max_ids().unwrap(), (0, 7));
    }

    #[test]
    fn refuses_a_newer_format() {
        let dir = TempDir::new("newer");
        {
            let store = Store::open(&dir.0).unwrap();
            store
                .db()
                .insert(keys::VERSION, &[FORMAT_VERSION + 1])
                .unwrap();
            store.flush().unwrap();
        }
        match Store::open(&dir.0) {
            Err(StoreError::NewerFormat { found, supported }) => {
                assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
            }
            other => panic!("expected NewerFormat, got {other:?}"),
        }
        // Refusing wrote nothing: the version is still the newer one.
        match Store::open(&dir.0) {
            Err(StoreError::NewerFormat { .. }) => {}
            other => panic!("expected NewerFormat again, got {other:?}"),
        }
    }

    #[test]
    fn refuses_data_without_a_version() {
        let dir = TempDir::new("noversion");
        {
            let store = Store::open(&dir.0).unwrap();
            store.db().remove(keys::VERSION).unwrap();
            store.db().insert(keys::message(1), &[1u8][..]).unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(&dir.0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("message 1"), "{err}");
    }

    fn corrupt_text(r: Result<impl std::fmt::Debug, StoreError>) -> String {
        match r {
            Err(e @ StoreError::Corrupt { .. }) => e.to_string(),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_records_are_errors_naming_the_key() {
        let dir = TempDir::new("corrupt");
        let store = Store::open(&dir.0).unwrap();
        store
            .db()
            .insert(keys::message(5), &[FORMAT_VERSION, 9, 9][..])
            .unwrap();
        let text = corrupt_text(store.load_message(5));
        assert!(text.contains("message 5"), "{text}");

        store
            .db()
            .insert(keys::index(3, 9), &[FORMAT_VERSION, 0][..])
            .unwrap();
        let text = corrupt_text(store.queue_index(3));
        assert!(text.contains("queue 3 seq 9"), "{text}");
        let text = corrupt_text(store.purge_queue_index(3));
        assert!(text.contains("queue 3 seq 9"), "{text}");

        let key = keys::queue("/", &ShortStr::from("broken"));
        store.db().insert(&key[..], &[FORMAT_VERSION][..]).unwrap();
        let text = corrupt_text(store.definitions());
        assert!(text.contains("broken"), "{text}");

        // A record in a newer format reads as NewerFormat, not as garbage.
        store
            .db()
            .insert(keys::message(6), &[FORMAT_VERSION + 1][..])
            .unwrap();
        assert!(matches!(
            store.load_message(6),
            Err(StoreError::NewerFormat { .. })
        ));
    }

    #[test]
    fn name_only_vhost_records_on_disk_still_read() {
        // A data directory as earlier builds left it: the version record
        // and vhosts holding only their names (bytes spelled out, not
        // produced by today's encoder).
        let dir = TempDir::new("oldvhost");
        {
            let store = Store::open(&dir.0).unwrap();
            for name in ["/", "prod"] {
                let mut key = vec![keys::DEFINITION, keys::VHOST];
                key.extend_from_slice(&(name.len() as u32).to_be_bytes());
                key.extend_from_slice(name.as_bytes());
                let mut value = vec![1u8];
                value.extend_from_slice(&(name.len() as u32).to_be_bytes());
                value.extend_from_slice(name.as_bytes());
                store.db().insert(key, value).unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(
            store.definitions().unwrap().vhosts,
            [VhostRecord::new("/"), VhostRecord::new("prod")]
        );
        // Adding metadata later rewrites the record in place.
        let mut b = Batch::default();
        b.put_vhost_record(&VhostRecord {
            description: "production".to_owned(),
            ..VhostRecord::new("prod")
        });
        store.apply(b).unwrap();
        let vhosts = store.definitions().unwrap().vhosts;
        assert_eq!(vhosts.len(), 2);
        assert_eq!(vhosts[1].description, "production");
    }

    #[test]
    fn corrupt_administration_records_are_errors_naming_the_key() {
        let dir = TempDir::new("corruptadmin");
        let store = Store::open(&dir.0).unwrap();
        store
            .db()
            .insert(&keys::setting("marker")[..], &[FORMAT_VERSION, 0][..])
            .unwrap();
        let text = corrupt_text(store.setting("marker"));
        assert!(text.contains("setting \"marker\""), "{text}");
        store
            .db()
            .insert(&keys::user("mallory")[..], &[FORMAT_VERSION, 0][..])
            .unwrap();
        let text = corrupt_text(store.definitions());
        assert!(text.contains("mallory"), "{text}");
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_an_error() {
        let dir = TempDir::new("locked");
        let _store = Store::open(&dir.0).unwrap();
        let err = Store::open(&dir.0).unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
    }

    #[test]
    fn delayed_messages_round_trip_in_deadline_order() {
        let dir = TempDir::new("delayed");
        let store = Store::open(&dir.0).unwrap();
        let rec = |deadline, seq, body: &'static [u8]| DelayedRecord {
            vhost: "/".into(),
            exchange: ShortStr::from("dx"),
            deadline,
            seq,
            message: StoredMessage {
                exchange: ShortStr::from("dx"),
                routing_key: ShortStr::from("k"),
                body: Bytes::from_static(body),
                ..Default::default()
            },
        };
        let mut b = Batch::default();
        b.put_delayed(&rec(2_000, 0, b"late"));
        b.put_delayed(&rec(1_000, 1, b"early"));
        b.put_delayed(&rec(1_000, 2, b"gone"));
        store.apply(b).unwrap();
        let mut b = Batch::default();
        b.delete_delayed("/", &ShortStr::from("dx"), 1_000, 2);
        store.apply(b).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(
            store.delayed_messages().unwrap(),
            vec![rec(1_000, 1, b"early"), rec(2_000, 0, b"late")]
        );
        assert_eq!(store.message_count().unwrap(), 0, "no M record");
    }

    #[test]
    fn deduplication_ids_round_trip_and_are_removed_one_by_one() {
        let dir = TempDir::new("dedup");
        let store = Store::open(&dir.0).unwrap();
        let rec = |exchange: &str, id: &'static [u8], expires_ms, order| DedupRecord {
            vhost: "/".into(),
            exchange: ShortStr::from(exchange),
            id: Bytes::from_static(id),
            expires_ms,
            order,
        };
        let mut b = Batch::default();
        b.put_dedup(&rec("dx", b"ba", Some(1_000), 0));
        b.put_dedup(&rec("dx", b"bb", None, 1));
        // An exchange whose name is the other's plus the id's first byte
        // does not share its keys.
        b.put_dedup(&rec("dxb", b"a", None, 0));
        store.apply(b).unwrap();
        let mut b = Batch::default();
        b.delete_dedup("/", &ShortStr::from("dx"), b"ba");
        b.put_dedup(&rec("dx", b"bb", Some(5), 2));
        store.apply(b).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(
            store.dedup_ids().unwrap(),
            vec![rec("dx", b"bb", Some(5), 2), rec("dxb", b"a", None, 0)]
        );
        assert!(store.definitions().unwrap().exchanges.is_empty());
    }
}
