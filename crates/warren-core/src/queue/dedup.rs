//! Message deduplication as the community plugin
//! `rabbitmq-message-deduplication` (v0.6.x, the line for RabbitMQ before
//! 3.13) has it: a message's id is its `x-deduplication-header` header.
//!
//! # Layout
//! - [`DedupKey`]: a header value as the plugin compares it (Erlang term
//!   equality: every integer type is one integer, a long string and a byte
//!   array with the same bytes are one binary).
//! - [`DedupCache`]: the `x-message-deduplication` exchange's cache, at
//!   most `x-cache-size` ids, each for its time to live.
//! - [`DedupSet`]: a queue's ids, one per message it holds.
//!
//! Neither reads a clock: the cache is told the time by the broker's tick
//! ([`DedupCache::tick`]), the set by the command that carries it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren_codec::{FieldTable, FieldValue};

/// The header that carries a message's id.
pub const DEDUP_HEADER: &str = "x-deduplication-header";

/// The header (and exchange argument) giving an id's time to live, in ms.
pub const CACHE_TTL: &str = "x-cache-ttl";

/// A message id, compared as the plugin's cache compares Erlang terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// A long string or a byte array (both an Erlang binary).
    Binary(Bytes),
    /// Any integer type, or a timestamp (an integer in Erlang).
    Int(i128),
    /// A float or double, by the bits of its double value.
    Float(u64),
    /// `true` or `false`.
    Bool(bool),
    /// A void value (the plugin keys on `undefined`).
    Undefined,
    /// A decimal, array or table, by its wire form.
    Other(Bytes),
}

impl DedupKey {
    /// The id a header value gives. Copies the bytes: an id kept while its
    /// message waits in a queue must not pin the read buffer it came in.
    pub fn of(value: &FieldValue) -> Self {
        match value {
            FieldValue::LongStr(s) => DedupKey::Binary(Bytes::copy_from_slice(s.as_bytes())),
            FieldValue::Bytes(b) => DedupKey::Binary(Bytes::copy_from_slice(b)),
            FieldValue::Bool(b) => DedupKey::Bool(*b),
            FieldValue::I8(v) => DedupKey::Int((*v).into()),
            FieldValue::U8(v) => DedupKey::Int((*v).into()),
            FieldValue::I16(v) => DedupKey::Int((*v).into()),
            FieldValue::U16(v) => DedupKey::Int((*v).into()),
            FieldValue::I32(v) => DedupKey::Int((*v).into()),
            FieldValue::U32(v) => DedupKey::Int((*v).into()),
            FieldValue::I64(v) => DedupKey::Int((*v).into()),
            FieldValue::Timestamp(v) => DedupKey::Int((*v).into()),
            FieldValue::F32(v) => DedupKey::Float(f64::from(*v).to_bits()),
            FieldValue::F64(v) => DedupKey::Float(v.to_bits()),
            FieldValue::Void => DedupKey::Undefined,
            other => {
                let mut buf = bytes::BytesMut::new();
                warren_codec::types::put_value(&mut buf, other);
                DedupKey::Other(buf.freeze())
            }
        }
    }

    /// The id as a store keeps it: a tag byte, then the value (opaque to
    /// the store; [`DedupKey::from_bytes`] reads it back).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = bytes::BytesMut::new();
        match self {
            DedupKey::Binary(v) => {
                b.extend_from_slice(b"b");
                b.extend_from_slice(v);
            }
            DedupKey::Int(v) => {
                b.extend_from_slice(b"i");
                b.extend_from_slice(&v.to_be_bytes());
            }
            DedupKey::Float(v) => {
                b.extend_from_slice(b"f");
                b.extend_from_slice(&v.to_be_bytes());
            }
            DedupKey::Bool(v) => b.extend_from_slice(if *v { b"T" } else { b"F" }),
            DedupKey::Undefined => b.extend_from_slice(b"u"),
            DedupKey::Other(v) => {
                b.extend_from_slice(b"o");
                b.extend_from_slice(v);
            }
        }
        b.freeze()
    }

    /// Reads back what [`DedupKey::to_bytes`] wrote; `None` for anything
    /// else (a damaged record).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (tag, rest) = b.split_first()?;
        Some(match tag {
            b'b' => DedupKey::Binary(Bytes::copy_from_slice(rest)),
            b'i' => DedupKey::Int(i128::from_be_bytes(rest.try_into().ok()?)),
            b'f' => DedupKey::Float(u64::from_be_bytes(rest.try_into().ok()?)),
            b'T' if rest.is_empty() => DedupKey::Bool(true),
            b'F' if rest.is_empty() => DedupKey::Bool(false),
            b'u' if rest.is_empty() => DedupKey::Undefined,
            b'o' => DedupKey::Other(Bytes::copy_from_slice(rest)),
            _ => return None,
        })
    }

    /// The id of a message with these headers; `None` without the header
    /// (such a message is never checked against duplicates).
    pub fn from_headers(headers: Option<&FieldTable>) -> Option<Self> {
        headers.and_then(|h| h.get(DEDUP_HEADER)).map(Self::of)
    }
}

/// The `x-cache-ttl` header of a message, in ms: an integer the plugin
/// adds to the time; other types are ignored here (the plugin fails the
/// publish on them).
pub fn message_ttl(headers: Option<&FieldTable>) -> Option<Duration> {
    let ms = headers.and_then(|h| h.get(CACHE_TTL))?.as_i64()?;
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// When a cached id stops counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No time to live: until evicted.
    Never,
    /// At this wall-clock time (Unix milliseconds), as the plugin's
    /// `os:system_time` expiries.
    At(u64),
    /// Cached since the last tick, with this time to live in ms: it
    /// starts at the next tick.
    Pending(u64),
}

impl Expiry {
    /// The wall-clock expiry a store keeps (`None`: never, or not known
    /// yet).
    fn wall(self) -> Option<u64> {
        match self {
            Expiry::At(t) => Some(t),
            Expiry::Never | Expiry::Pending(_) => None,
        }
    }
}

/// What a cache change means for a store that mirrors the cache (an
/// exchange with `x-cache-persistence: disk`). Ids are given with their
/// insertion number, which orders them for the size bound after a
/// restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheChange<'a> {
    /// The id is cached (or cached anew), until `expires_ms` (wall-clock
    /// Unix milliseconds; `None`: until evicted).
    Added {
        /// The id.
        key: &'a DedupKey,
        /// When it expires.
        expires_ms: Option<u64>,
        /// Its insertion number.
        order: u64,
    },
    /// The id left (evicted, expired, or the cache emptied).
    Removed {
        /// The id.
        key: &'a DedupKey,
    },
}

/// An id read back from a store: its wall-clock expiry (`None`: never)
/// and insertion number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredId {
    /// The id.
    pub key: DedupKey,
    /// When it expires, in wall-clock Unix milliseconds.
    pub expires_ms: Option<u64>,
    /// Its insertion number.
    pub order: u64,
}

/// An `x-message-deduplication` exchange's ids: at most `size`, each for
/// its time to live. When full, the oldest id leaves to make room (the
/// plugin removes an unspecified one; its author names FIFO as the
/// intent).
///
/// Times are wall-clock Unix milliseconds, told by the broker's tick, so
/// that a stored id keeps its expiry across a restart. Every change is
/// reported to a sink ([`CacheChange`]), which a disk-persisted cache
/// turns into store writes.
#[derive(Debug)]
pub struct DedupCache {
    size: usize,
    default_ttl: Option<u64>,
    /// Id -> (expiry, insertion number).
    entries: HashMap<DedupKey, (Expiry, u64)>,
    /// Ids in insertion order, with their insertion number; an id whose
    /// number no longer matches `entries` left early and is skipped.
    order: VecDeque<(DedupKey, u64)>,
    next: u64,
    /// The latest time the broker told the cache.
    clock: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DedupCache {
    /// A cache of at most `size` ids (at least one), each kept for
    /// `default_ttl` unless the message says otherwise.
    pub fn new(size: u64, default_ttl: Option<Duration>) -> Self {
        DedupCache {
            size: usize::try_from(size.max(1)).unwrap_or(usize::MAX),
            default_ttl: default_ttl.map(ms),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            clock: None,
        }
    }

    /// How many ids are cached (expired ones count until a tick drops
    /// them, as in the plugin).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no id is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bound on cached ids.
    pub fn size(&self) -> usize {
        self.size
    }

    /// About how many bytes of memory the cache takes: its map and its
    /// order queue as allocated (the plugin reports its table's memory).
    pub fn memory(&self) -> usize {
        use std::mem::size_of;
        self.entries.capacity() * (size_of::<(DedupKey, (Expiry, u64))>() + 1)
            + self.order.capacity() * size_of::<(DedupKey, u64)>()
    }

    fn live(&self, e: Expiry) -> bool {
        match (e, self.clock) {
            (Expiry::At(t), Some(now)) => t > now,
            _ => true,
        }
    }

    /// Drops the oldest ids until at most `keep` are left.
    fn evict_to(&mut self, keep: usize, sink: &mut dyn FnMut(CacheChange<'_>)) {
        while self.entries.len() > keep {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|&(_, m)| m == n) {
                self.entries.remove(&old);
                sink(CacheChange::Removed { key: &old });
            }
        }
    }

    /// Whether a message with id `key` (and its own `ttl`, if any) is a
    /// duplicate; if it is not, its id is cached from now on. Evictions
    /// and the new id go to `sink`.
    pub fn check_and_insert(
        &mut self,
        key: DedupKey,
        ttl: Option<Duration>,
        sink: &mut dyn FnMut(CacheChange<'_>),
    ) -> bool {
        if let Some(&(e, _)) = self.entries.get(&key) {
            if self.live(e) {
                return true;
            }
            // Cached anew below: its record is overwritten, not removed.
            self.entries.remove(&key);
        }
        self.evict_to(self.size - 1, sink);
        // The time to live starts at the next tick, so an id never counts
        // for less than it (the clock is the last tick's, up to one tick
        // behind the publish).
        let ttl = ttl.map(ms).or(self.default_ttl);
        let expiry = ttl.map_or(Expiry::Never, Expiry::Pending);
        let n = self.next;
        self.next += 1;
        // Stored now with the expiry the last tick's clock gives (none
        // before a first tick), and again with the exact one at the next
        // tick: a crash between the two keeps the id rather than losing
        // it.
        sink(CacheChange::Added {
            key: &key,
            expires_ms: match (ttl, self.clock) {
                (Some(d), Some(now)) => Some(now.saturating_add(d)),
                _ => None,
            },
            order: n,
        });
        self.entries.insert(key.clone(), (expiry, n));
        self.order.push_back((key, n));
        false
    }

    /// The broker's tick: the time from now on (wall-clock Unix
    /// milliseconds), and expired ids dropped.
    pub fn tick(&mut self, now_ms: u64, sink: &mut dyn FnMut(CacheChange<'_>)) {
        if self.clock.is_some_and(|c| c > now_ms) {
            return;
        }
        self.clock = Some(now_ms);
        self.entries.retain(|k, (e, n)| {
            if let Expiry::Pending(d) = *e {
                *e = Expiry::At(now_ms.saturating_add(d));
                sink(CacheChange::Added {
                    key: k,
                    expires_ms: e.wall(),
                    order: *n,
                });
            }
            let keep = !matches!(*e, Expiry::At(t) if t <= now_ms);
            if !keep {
                sink(CacheChange::Removed { key: k });
            }
            keep
        });
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, n)| entries.get(k).is_some_and(|&(_, m)| m == *n));
        }
    }

    /// A new bound (a policy changed it): the oldest ids beyond it leave
    /// at once.
    pub fn resize(&mut self, size: u64, sink: &mut dyn FnMut(CacheChange<'_>)) {
        self.size = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
        self.evict_to(self.size, sink);
    }

    /// A new default time to live, for ids cached from now on (those
    /// cached keep theirs, as in the plugin).
    pub fn set_default_ttl(&mut self, ttl: Option<Duration>) {
        self.default_ttl = ttl.map(ms);
    }

    /// Calls `f` with every cached id, its wall-clock expiry (`None`:
    /// never, or not known yet) and its insertion number, oldest first (to
    /// store or unstore them all).
    pub fn for_each_id(&self, mut f: impl FnMut(&DedupKey, Option<u64>, u64)) {
        for (k, n) in &self.order {
            if let Some(&(e, m)) = self.entries.get(k)
                && m == *n
            {
                f(k, e.wall(), m);
            }
        }
    }

    /// Forgets every id, reporting each as removed (the exchange is
    /// deleted, or its cache stops being stored).
    pub fn clear(&mut self, sink: &mut dyn FnMut(CacheChange<'_>)) {
        for k in self.entries.keys() {
            sink(CacheChange::Removed { key: k });
        }
        self.entries.clear();
        self.order.clear();
    }

    /// Puts back ids read from a store at start-up, at wall-clock time
    /// `now_ms`: expired ones are reported removed, the rest cached in
    /// their insertion order, and the oldest beyond the bound evicted.
    pub fn restore(
        &mut self,
        mut ids: Vec<StoredId>,
        now_ms: u64,
        sink: &mut dyn FnMut(CacheChange<'_>),
    ) {
        if self.clock.is_none_or(|c| c < now_ms) {
            self.clock = Some(now_ms);
        }
        ids.sort_by_key(|i| i.order);
        for id in ids {
            if self.entries.contains_key(&id.key) {
                // Cached since start-up: its record is already the newer.
                continue;
            }
            if id.expires_ms.is_some_and(|t| t <= now_ms) {
                sink(CacheChange::Removed { key: &id.key });
                continue;
            }
            let expiry = id.expires_ms.map_or(Expiry::Never, Expiry::At);
            self.next = self.next.max(id.order.saturating_add(1));
            self.entries.insert(id.key.clone(), (expiry, id.order));
            self.order.push_back((id.key, id.order));
        }
        // Restored after ids cached since start-up: keep insertion order.
        self.order.make_contiguous().sort_by_key(|(_, n)| *n);
        self.evict_to(self.size, sink);
    }
}

/// A deduplicating queue's ids: one per message it holds that has one
/// (ready or delivered and not yet settled), with the message's sequence
/// number and the end of its time to live.
#[derive(Debug, Default)]
pub(crate) struct DedupSet {
    ids: HashMap<DedupKey, (u64, Option<Instant>)>,
    seqs: HashMap<u64, DedupKey>,
}

impl DedupSet {
    /// Whether a message with id `key` is in the queue (and alive) now.
    pub(crate) fn contains(&self, key: &DedupKey, now: Instant) -> bool {
        self.ids
            .get(key)
            .is_some_and(|&(_, exp)| exp.is_none_or(|e| e > now))
    }

    /// The message at `seq` holds id `key`.
    pub(crate) fn insert(&mut self, key: DedupKey, seq: u64, expires: Option<Instant>) {
        if let Some((old, _)) = self.ids.insert(key.clone(), (seq, expires)) {
            self.seqs.remove(&old);
        }
        self.seqs.insert(seq, key);
    }

    /// The message at `seq` left the queue.
    pub(crate) fn forget(&mut self, seq: u64) {
        if let Some(key) = self.seqs.remove(&seq)
            && self.ids.get(&key).is_some_and(|&(s, _)| s == seq)
        {
            self.ids.remove(&key);
        }
    }

    /// Forgets every id (`queue.purge`, as the plugin flushes its cache).
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.seqs.clear();
    }

    /// How many ids are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> DedupKey {
        DedupKey::of(&FieldValue::LongStr(s.into()))
    }

    #[test]
    fn ids_compare_as_erlang_terms() {
        assert_eq!(
            DedupKey::of(&FieldValue::I8(7)),
            DedupKey::of(&FieldValue::I64(7))
        );
        assert_eq!(
            DedupKey::of(&FieldValue::Timestamp(7)),
            DedupKey::of(&FieldValue::U16(7))
        );
        assert_eq!(
            key("ab"),
            DedupKey::of(&FieldValue::Bytes(Bytes::from_static(b"ab")))
        );
        assert_ne!(key("7"), DedupKey::of(&FieldValue::I32(7)));
        assert_ne!(
            DedupKey::of(&FieldValue::F64(7.0)),
            DedupKey::of(&FieldValue::I32(7))
        );
        let h = FieldTable::new().with(DEDUP_HEADER, FieldValue::LongStr("x".into()));
        assert_eq!(DedupKey::from_headers(Some(&h)), Some(key("x")));
        assert_eq!(DedupKey::from_headers(Some(&FieldTable::new())), None);
        assert_eq!(DedupKey::from_headers(None), None);
    }

    /// A cache driven with a sink that records the store writes it asks
    /// for, as a model of what a disk-persisted cache's store holds.
    #[derive(Default)]
    struct Model(std::collections::BTreeMap<Vec<u8>, (Option<u64>, u64)>);

    impl Model {
        fn sink(&mut self) -> impl FnMut(CacheChange<'_>) + '_ {
            |c| match c {
                CacheChange::Added {
                    key,
                    expires_ms,
                    order,
                } => {
                    self.0.insert(key.to_bytes().to_vec(), (expires_ms, order));
                }
                CacheChange::Removed { key } => {
                    self.0.remove(&key.to_bytes()[..]);
                }
            }
        }

        fn stored(&self) -> Vec<StoredId> {
            self.0
                .iter()
                .map(|(k, &(expires_ms, order))| StoredId {
                    key: DedupKey::from_bytes(k).unwrap(),
                    expires_ms,
                    order,
                })
                .collect()
        }
    }

    /// A sink that ignores every change (a cache kept in memory only).
    fn no_store(_: CacheChange<'_>) {}

    fn insert(c: &mut DedupCache, id: &str) -> bool {
        c.check_and_insert(key(id), None, &mut no_store)
    }

    #[test]
    fn the_cache_holds_at_most_its_size_and_evicts_the_oldest() {
        let mut c = DedupCache::new(3, None);
        for id in ["a", "b", "c"] {
            assert!(!insert(&mut c, id));
        }
        assert!(insert(&mut c, "a"));
        assert_eq!(c.len(), 3);
        // A fourth id pushes out the oldest, "a".
        assert!(!insert(&mut c, "d"));
        assert_eq!(c.len(), 3);
        assert!(!insert(&mut c, "a"));
        // ... and "a" coming back pushed out "b".
        assert!(!insert(&mut c, "b"));
        assert!(insert(&mut c, "d"));
        assert!(insert(&mut c, "a"));
        // Many more ids: the bound holds and the order stays compact.
        for i in 0..1000 {
            insert(&mut c, &i.to_string());
        }
        assert_eq!(c.len(), 3);
        assert!(c.order.len() <= 1003);
    }

    #[test]
    fn the_cache_forgets_ids_after_their_ttl() {
        let t0 = 1_700_000_000_000u64;
        let ms = Duration::from_millis;
        let mut c = DedupCache::new(100, Some(ms(1000)));
        c.tick(t0, &mut no_store);
        assert!(!insert(&mut c, "a"));
        // The message's own x-cache-ttl overrides the exchange's.
        assert!(!c.check_and_insert(key("short"), Some(ms(100)), &mut no_store));
        assert!(!c.check_and_insert(key("long"), Some(ms(5000)), &mut no_store));
        // Times to live start at the next tick.
        c.tick(t0 + 10, &mut no_store);
        c.tick(t0 + 109, &mut no_store);
        assert!(insert(&mut c, "short"));
        // Expiry is at that tick + ttl exactly (the plugin's `<=`).
        c.tick(t0 + 110, &mut no_store);
        assert!(!insert(&mut c, "short"));
        c.tick(t0 + 1009, &mut no_store);
        assert!(insert(&mut c, "a"));
        c.tick(t0 + 1010, &mut no_store);
        assert!(!insert(&mut c, "a"));
        assert!(insert(&mut c, "long"));
        c.tick(t0 + 5010, &mut no_store);
        assert!(!insert(&mut c, "long"));
        // Ticks drop what expired.
        c.tick(t0 + 60_000, &mut no_store);
        c.tick(t0 + 70_000, &mut no_store);
        assert!(c.is_empty());
    }

    #[test]
    fn ids_cached_before_the_first_tick_start_their_ttl_then() {
        let t0 = 1_700_000_000_000u64;
        let mut m = Model::default();
        let mut c = DedupCache::new(10, Some(Duration::from_millis(100)));
        assert!(!c.check_and_insert(key("a"), None, &mut m.sink()));
        assert!(insert(&mut c, "a"));
        // Stored without an expiry until the first tick gives it one.
        assert_eq!(m.stored()[0].expires_ms, None);
        c.tick(t0, &mut m.sink());
        assert_eq!(m.stored()[0].expires_ms, Some(t0 + 100));
        c.tick(t0 + 99, &mut m.sink());
        assert!(insert(&mut c, "a"));
        c.tick(t0 + 100, &mut m.sink());
        assert!(m.0.is_empty());
        assert!(!insert(&mut c, "a"));
        // Without any ttl an id stays until evicted.
        let mut c = DedupCache::new(10, None);
        c.tick(t0, &mut no_store);
        insert(&mut c, "a");
        c.tick(t0 + 86_400_000, &mut no_store);
        assert!(insert(&mut c, "a"));
    }

    #[test]
    fn ids_round_trip_through_their_stored_form() {
        let values = [
            FieldValue::LongStr("x".into()),
            FieldValue::Bytes(Bytes::new()),
            FieldValue::I64(-7),
            FieldValue::F64(1.5),
            FieldValue::Bool(true),
            FieldValue::Bool(false),
            FieldValue::Void,
            FieldValue::Table(FieldTable::new().with("k", FieldValue::I8(1))),
        ];
        for v in &values {
            let k = DedupKey::of(v);
            assert_eq!(DedupKey::from_bytes(&k.to_bytes()), Some(k));
        }
        assert_eq!(DedupKey::from_bytes(b""), None);
        assert_eq!(DedupKey::from_bytes(b"i\x01"), None);
        assert_eq!(DedupKey::from_bytes(b"Tx"), None);
    }

    #[test]
    fn a_stored_cache_mirrors_its_ids_and_comes_back_in_order() {
        let t0 = 1_700_000_000_000u64;
        let mut m = Model::default();
        let mut c = DedupCache::new(3, Some(Duration::from_millis(1000)));
        c.tick(t0, &mut m.sink());
        for id in ["a", "b", "c", "d"] {
            c.check_and_insert(key(id), None, &mut m.sink());
        }
        // "a" was evicted, in the store too.
        assert_eq!(m.0.len(), 3);
        c.check_and_insert(key("e"), Some(Duration::from_millis(10)), &mut m.sink());
        c.tick(t0 + 10, &mut m.sink());
        c.tick(t0 + 20, &mut m.sink());
        // "b" was evicted by "e", and "e" expired.
        assert_eq!(
            m.stored().into_iter().map(|s| s.key).collect::<Vec<_>>(),
            vec![key("c"), key("d")]
        );
        // A restart: the ids come back with their expiry and order, so
        // the next eviction takes the oldest.
        let mut back = DedupCache::new(3, Some(Duration::from_millis(1000)));
        back.restore(m.stored(), t0 + 30, &mut m.sink());
        assert!(insert(&mut back, "c"));
        assert!(insert(&mut back, "d"));
        back.check_and_insert(key("f"), None, &mut m.sink());
        back.check_and_insert(key("g"), None, &mut m.sink());
        assert!(!back.check_and_insert(key("c"), None, &mut m.sink()));
        assert_eq!(m.0.len(), 3);
        // Ids past their expiry at restore are dropped, from the store too.
        let mut late = DedupCache::new(3, None);
        late.restore(m.stored(), t0 + 5000, &mut m.sink());
        assert!(late.is_empty());
        assert!(m.0.is_empty());
        // A smaller bound (a policy) evicts at once; clearing empties the
        // store.
        let mut c = DedupCache::new(5, None);
        for id in ["a", "b", "c", "d"] {
            c.check_and_insert(key(id), None, &mut m.sink());
        }
        c.resize(2, &mut m.sink());
        assert_eq!(c.len(), 2);
        assert_eq!(m.0.len(), 2);
        assert!(insert(&mut c, "d"));
        c.clear(&mut m.sink());
        assert!(c.is_empty() && m.0.is_empty());
    }

    #[test]
    fn a_queue_set_forgets_by_sequence_number() {
        let t0 = Instant::now();
        let mut s = DedupSet::default();
        s.insert(key("a"), 1, None);
        s.insert(key("b"), 2, Some(t0 + Duration::from_millis(10)));
        assert!(s.contains(&key("a"), t0));
        assert!(s.contains(&key("b"), t0));
        assert!(!s.contains(&key("b"), t0 + Duration::from_millis(10)));
        // An expired id is replaced by the new message's: forgetting the
        // old message then leaves the new one's id in place.
        s.insert(key("b"), 3, None);
        s.forget(2);
        assert!(s.contains(&key("b"), t0));
        s.forget(3);
        s.forget(1);
        assert_eq!(s.len(), 0);
        s.insert(key("c"), 4, None);
        s.clear();
        assert!(!s.contains(&key("c"), t0));
    }
}
