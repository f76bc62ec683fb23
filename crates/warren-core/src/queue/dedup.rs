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
    At(Instant),
    /// Cached before the cache first learnt the time: the time to live
    /// starts at the first tick.
    Pending(Duration),
}

/// An `x-message-deduplication` exchange's ids: at most `size`, each for
/// its time to live. When full, the oldest id leaves to make room (the
/// plugin removes an unspecified one; its author names FIFO as the
/// intent).
#[derive(Debug)]
pub struct DedupCache {
    size: usize,
    default_ttl: Option<Duration>,
    /// Id -> (expiry, insertion number).
    entries: HashMap<DedupKey, (Expiry, u64)>,
    /// Ids in insertion order, with their insertion number; an id whose
    /// number no longer matches `entries` left early and is skipped.
    order: VecDeque<(DedupKey, u64)>,
    next: u64,
    /// The latest time the broker told the cache.
    clock: Option<Instant>,
}

impl DedupCache {
    /// A cache of at most `size` ids (at least one), each kept for
    /// `default_ttl` unless the message says otherwise.
    pub fn new(size: u64, default_ttl: Option<Duration>) -> Self {
        DedupCache {
            size: usize::try_from(size.max(1)).unwrap_or(usize::MAX),
            default_ttl,
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

    fn live(&self, e: Expiry) -> bool {
        match (e, self.clock) {
            (Expiry::At(t), Some(now)) => t > now,
            _ => true,
        }
    }

    /// Whether a message with id `key` (and its own `ttl`, if any) is a
    /// duplicate; if it is not, its id is cached from now on.
    pub fn check_and_insert(&mut self, key: DedupKey, ttl: Option<Duration>) -> bool {
        if let Some(&(e, _)) = self.entries.get(&key) {
            if self.live(e) {
                return true;
            }
            self.entries.remove(&key);
        }
        while self.entries.len() >= self.size {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|&(_, m)| m == n) {
                self.entries.remove(&old);
            }
        }
        let expiry = match (ttl.or(self.default_ttl), self.clock) {
            (None, _) => Expiry::Never,
            (Some(d), Some(now)) => Expiry::At(now + d),
            (Some(d), None) => Expiry::Pending(d),
        };
        let n = self.next;
        self.next += 1;
        self.entries.insert(key.clone(), (expiry, n));
        self.order.push_back((key, n));
        false
    }

    /// The broker's tick: the time from now on, and expired ids dropped.
    pub fn tick(&mut self, now: Instant) {
        if self.clock.is_some_and(|c| c > now) {
            return;
        }
        self.clock = Some(now);
        self.entries.retain(|_, (e, _)| {
            if let Expiry::Pending(d) = *e {
                *e = Expiry::At(now + d);
            }
            !matches!(*e, Expiry::At(t) if t <= now)
        });
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, n)| entries.get(k).is_some_and(|&(_, m)| m == *n));
        }
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

    #[test]
    fn the_cache_holds_at_most_its_size_and_evicts_the_oldest() {
        let mut c = DedupCache::new(3, None);
        for id in ["a", "b", "c"] {
            assert!(!c.check_and_insert(key(id), None));
        }
        assert!(c.check_and_insert(key("a"), None));
        assert_eq!(c.len(), 3);
        // A fourth id pushes out the oldest, "a".
        assert!(!c.check_and_insert(key("d"), None));
        assert_eq!(c.len(), 3);
        assert!(!c.check_and_insert(key("a"), None));
        // ... and "a" coming back pushed out "b".
        assert!(!c.check_and_insert(key("b"), None));
        assert!(c.check_and_insert(key("d"), None));
        assert!(c.check_and_insert(key("a"), None));
        // Many more ids: the bound holds and the order stays compact.
        for i in 0..1000 {
            c.check_and_insert(key(&i.to_string()), None);
        }
        assert_eq!(c.len(), 3);
        assert!(c.order.len() <= 1003);
    }

    #[test]
    fn the_cache_forgets_ids_after_their_ttl() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = DedupCache::new(100, Some(ms(1000)));
        c.tick(t0);
        assert!(!c.check_and_insert(key("a"), None));
        // The message's own x-cache-ttl overrides the exchange's.
        assert!(!c.check_and_insert(key("short"), Some(ms(100))));
        assert!(!c.check_and_insert(key("long"), Some(ms(5000))));
        c.tick(t0 + ms(99));
        assert!(c.check_and_insert(key("short"), None));
        // Expiry is at insertion + ttl exactly (the plugin's `<=`).
        c.tick(t0 + ms(100));
        assert!(!c.check_and_insert(key("short"), None));
        c.tick(t0 + ms(999));
        assert!(c.check_and_insert(key("a"), None));
        c.tick(t0 + ms(1000));
        assert!(!c.check_and_insert(key("a"), None));
        assert!(c.check_and_insert(key("long"), None));
        c.tick(t0 + ms(5000));
        assert!(!c.check_and_insert(key("long"), None));
        // Ticks drop what expired.
        c.tick(t0 + ms(60_000));
        assert!(c.is_empty());
    }

    #[test]
    fn ids_cached_before_the_first_tick_start_their_ttl_then() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = DedupCache::new(10, Some(ms(100)));
        assert!(!c.check_and_insert(key("a"), None));
        assert!(c.check_and_insert(key("a"), None));
        c.tick(t0);
        c.tick(t0 + ms(99));
        assert!(c.check_and_insert(key("a"), None));
        c.tick(t0 + ms(100));
        assert!(!c.check_and_insert(key("a"), None));
        // Without any ttl an id stays until evicted.
        let mut c = DedupCache::new(10, None);
        c.tick(t0);
        c.check_and_insert(key("a"), None);
        c.tick(t0 + Duration::from_secs(86_400));
        assert!(c.check_and_insert(key("a"), None));
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
