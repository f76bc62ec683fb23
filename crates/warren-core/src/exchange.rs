//! Exchanges, their bindings and routing.
//!
//! Bindings are indexed by binding key, so a direct exchange routes with one
//! hash lookup; fanout takes every binding; topic and headers test each key
//! or binding once per message (topic patterns are pre-split into words).
//! Two plugin types route each message to one destination: `x-consistent-hash`
//! (RabbitMQ's bundled `rabbitmq_consistent_hash_exchange`: jump consistent
//! hashing over buckets, a binding's weight in buckets taken from its key)
//! and `x-random` (`rabbitmq_random_exchange`: any binding, at random).
//! `x-message-deduplication` (the community deduplication plugin) routes
//! as fanout, except a message whose `x-deduplication-header` it has seen
//! within the id's time to live (see [`crate::queue::dedup`]).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use warren_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};

use crate::error::Refusal;
use crate::persist::{DedupRecordKey, Durability, PersistOp};
use crate::queue::dedup::{self, CacheChange, DedupCache, DedupKey, StoredId};

/// What binding rules return.
type Result<T, E = Refusal> = std::result::Result<T, E>;
use crate::queue::Queue;

/// Exchange type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every bound destination.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Header matching with `x-match`.
    Headers,
    /// `x-consistent-hash`: one destination, chosen by a hash of the
    /// routing key (or a header, or a property), weighted by binding key.
    ConsistentHash,
    /// `x-random`: one destination, any binding with equal chance.
    Random,
    /// `x-delayed-message`: holds messages with a positive `x-delay`
    /// header until their time, then routes them as its `x-delayed-type`
    /// does (see [`Delayed`]).
    DelayedMessage,
    /// `x-message-deduplication`: every bound destination, unless the
    /// message's id was seen within its time to live.
    Deduplication,
}

impl ExchangeKind {
    /// Every type, in the order `/api/overview` lists them (by name).
    pub const ALL: [ExchangeKind; 8] = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Headers,
        ExchangeKind::Topic,
        ExchangeKind::ConsistentHash,
        ExchangeKind::DelayedMessage,
        ExchangeKind::Deduplication,
        ExchangeKind::Random,
    ];

    /// Parses the `type` argument of `exchange.declare`.
    pub fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"direct" => ExchangeKind::Direct,
            b"fanout" => ExchangeKind::Fanout,
            b"topic" => ExchangeKind::Topic,
            b"headers" => ExchangeKind::Headers,
            b"x-consistent-hash" => ExchangeKind::ConsistentHash,
            b"x-random" => ExchangeKind::Random,
            b"x-delayed-message" => ExchangeKind::DelayedMessage,
            b"x-message-deduplication" => ExchangeKind::Deduplication,
            _ => return None,
        })
    }

    /// The type name (also how the store records it).
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::Random => "x-random",
            ExchangeKind::DelayedMessage => "x-delayed-message",
            ExchangeKind::Deduplication => "x-message-deduplication",
        }
    }

    /// The description RabbitMQ's registry gives the type (the plugins'
    /// own words for theirs), as `/api/overview` shows it.
    pub fn description(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "AMQP direct exchange, as per the AMQP specification",
            ExchangeKind::Fanout => "AMQP fanout exchange, as per the AMQP specification",
            ExchangeKind::Topic => "AMQP topic exchange, as per the AMQP specification",
            ExchangeKind::Headers => "AMQP headers exchange, as per the AMQP specification",
            ExchangeKind::ConsistentHash => "Consistent Hashing Exchange",
            ExchangeKind::Random => "Randomly picks a binding (queue) to route via (to).",
            ExchangeKind::DelayedMessage => "Delayed Message Exchange.",
            ExchangeKind::Deduplication => "Message Deduplication Exchange.",
        }
    }

    /// Checks the declare arguments of a new exchange of this type, as the
    /// type's `validate` does in RabbitMQ (a redeclaration compares only
    /// `alternate-exchange`, so it is not checked again).
    pub fn validate(self, arguments: &FieldTable) -> Result<()> {
        if self == ExchangeKind::DelayedMessage {
            // The plugin's own check, then the inner type's.
            return delayed_type(arguments)?.validate(arguments);
        }
        if self == ExchangeKind::Deduplication {
            return validate_dedup(arguments);
        }
        if self != ExchangeKind::ConsistentHash {
            return Ok(());
        }
        match (
            string_arg(arguments, HASH_HEADER),
            string_arg(arguments, HASH_PROPERTY),
        ) {
            (Some(_), Some(_)) => Err(Refusal::BadExchangeArgs(
                "hash-header and hash-property are mutually exclusive".to_string(),
            )),
            (None, Some(p)) if HashProperty::parse(p).is_none() => Err(Refusal::BadExchangeArgs(
                format!("Unsupported property: {}", String::from_utf8_lossy(p)),
            )),
            _ => Ok(()),
        }
    }
}

/// The `x-delayed-message` argument naming the type it routes as.
const DELAYED_TYPE: &str = "x-delayed-type";

/// The type an `x-delayed-message` exchange routes as, checked as the
/// plugin's `validate` does: a string naming a known type other than its
/// own (an unknown name is RabbitMQ's 503 for unknown types).
fn delayed_type(arguments: &FieldTable) -> Result<ExchangeKind> {
    let name = match arguments.get(DELAYED_TYPE) {
        Some(FieldValue::LongStr(s)) => s.as_bytes(),
        _ => {
            return Err(Refusal::BadExchangeArgs(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type".to_string(),
            ));
        }
    };
    match ExchangeKind::parse(name) {
        Some(ExchangeKind::DelayedMessage) => Err(Refusal::BadExchangeArgs(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".to_string(),
        )),
        Some(kind) => Ok(kind),
        None => Err(Refusal::UnknownExchangeType(
            ShortStr::from_slice(name).unwrap_or_default(),
        )),
    }
}

/// `x-message-deduplication`'s arguments, as the plugin (v0.6.x) checks
/// them. Its texts are Elixir strings continued over a line break, so
/// they keep the next line's indentation: reproduced as clients see them.
fn validate_dedup(arguments: &FieldTable) -> Result<()> {
    let refuse = |text: &str| Err(Refusal::BadExchangeArgs(text.to_string()));
    match arguments.get(CACHE_SIZE) {
        Some(v) if v.as_i64().is_some_and(|n| n > 0) => {}
        Some(FieldValue::LongStr(s)) if erlang_integer_prefix(s.as_bytes()).is_some() => {}
        Some(FieldValue::LongStr(_)) => {
            return refuse(&format!(
                "Missing or invalid argument, {:22}'x-cache-size' must be an integer greater than 0",
                ""
            ));
        }
        _ => {
            return refuse(&format!(
                "Missing or invalid argument, {:10}'x-cache-size' must be an integer greater than 0",
                ""
            ));
        }
    }
    match arguments.get(dedup::CACHE_TTL) {
        None => {}
        Some(v) if v.as_i64().is_some_and(|n| n > 0) => {}
        Some(FieldValue::LongStr(s)) if erlang_integer_prefix(s.as_bytes()).is_some() => {}
        Some(FieldValue::LongStr(_)) => {
            return refuse(&format!(
                "Invalid argument, {:22}'x-cache-ttl' must be an integer greater than 0",
                ""
            ));
        }
        Some(_) => {
            return refuse(&format!(
                "Invalid argument, {:13}'x-cache-ttl' must be an integer greater than 0",
                ""
            ));
        }
    }
    match arguments.get(CACHE_PERSISTENCE) {
        None => Ok(()),
        Some(FieldValue::LongStr(s)) if matches!(s.as_bytes(), b"disk" | b"memory") => Ok(()),
        Some(_) => refuse(&format!(
            "Invalid argument, {:13}'x-cache-persistence' must be either 'disk' or 'memory'",
            ""
        )),
    }
}

/// `x-message-deduplication`'s bound on cached ids.
const CACHE_SIZE: &str = "x-cache-size";
/// `x-message-deduplication`'s `memory` (the default) or `disk`.
const CACHE_PERSISTENCE: &str = "x-cache-persistence";

/// The integer a string starts with, as Elixir's `Integer.parse` reads
/// it (an optional sign, then digits; the rest is ignored).
fn erlang_integer_prefix(s: &[u8]) -> Option<i64> {
    let (negative, rest) = match s.split_first() {
        Some((b'-', r)) => (true, r),
        Some((b'+', r)) => (false, r),
        _ => (false, s),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n = rest[..digits].iter().fold(0i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if negative { -n } else { n })
}

/// A numeric `x-message-deduplication` argument: an integer, or a string
/// holding one.
fn dedup_number(arguments: &FieldTable, name: &str) -> Option<i64> {
    match arguments.get(name)? {
        FieldValue::LongStr(s) => erlang_integer_prefix(s.as_bytes()),
        v => v.as_i64(),
    }
}

/// The `x-consistent-hash` argument naming a header to hash.
const HASH_HEADER: &str = "hash-header";
/// The `x-consistent-hash` argument naming a property to hash.
const HASH_PROPERTY: &str = "hash-property";

/// A string-valued declare argument. The plugin reads only `longstr`
/// values; any other type counts as absent here (RabbitMQ fails the
/// declare with an internal error instead).
fn string_arg<'a>(arguments: &'a FieldTable, name: &str) -> Option<&'a [u8]> {
    match arguments.get(name) {
        Some(FieldValue::LongStr(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The message properties `hash-property` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashProperty {
    MessageId,
    CorrelationId,
    Timestamp,
}

impl HashProperty {
    fn parse(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"message_id" => HashProperty::MessageId,
            b"correlation_id" => HashProperty::CorrelationId,
            b"timestamp" => HashProperty::Timestamp,
            _ => return None,
        })
    }
}

/// What an `x-consistent-hash` exchange hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HashOn {
    RoutingKey,
    Header(String),
    Property(HashProperty),
}

impl HashOn {
    fn of(spec: &ExchangeSpec) -> Self {
        let header = string_arg(&spec.arguments, HASH_HEADER);
        let property = string_arg(&spec.arguments, HASH_PROPERTY).and_then(HashProperty::parse);
        match (header, property) {
            (Some(h), None) => HashOn::Header(String::from_utf8_lossy(h).into_owned()),
            (None, Some(p)) => HashOn::Property(p),
            _ => HashOn::RoutingKey,
        }
    }
}

/// What routing may look at besides the routing key: the headers, or all
/// the properties (which `x-consistent-hash` with `hash-property` needs).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageView<'a> {
    headers: Option<&'a FieldTable>,
    properties: Option<&'a BasicProperties>,
}

impl<'a> MessageView<'a> {
    /// A message whose headers are `headers` and whose other properties
    /// are those of `properties` (a dead letter, its headers rewritten).
    pub fn new(headers: Option<&'a FieldTable>, properties: &'a BasicProperties) -> Self {
        MessageView {
            headers,
            properties: Some(properties),
        }
    }

    /// The message's headers, if any.
    pub fn headers(&self) -> Option<&'a FieldTable> {
        self.headers
    }

    /// The message's properties, when the caller gave them.
    pub fn properties(&self) -> Option<&'a BasicProperties> {
        self.properties
    }
}

impl<'a> From<Option<&'a FieldTable>> for MessageView<'a> {
    fn from(headers: Option<&'a FieldTable>) -> Self {
        MessageView {
            headers,
            properties: None,
        }
    }
}

impl<'a> From<&'a BasicProperties> for MessageView<'a> {
    fn from(properties: &'a BasicProperties) -> Self {
        MessageView {
            headers: properties.headers.as_ref(),
            properties: Some(properties),
        }
    }
}

/// A binding's weight from its key, as the consistent-hash plugin reads
/// it: an optionally signed decimal integer (Erlang's `list_to_integer`),
/// at least 1. Weights above `u32::MAX` count as `u32::MAX` (the plugin
/// would allocate a bucket each and exhaust memory long before).
fn binding_weight(key: &ShortStr) -> Result<u64> {
    let bytes = key.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Refusal::BadBindingArgs(format!(
            "The binding key must be an integer: {}",
            erlang_binary(bytes)
        )));
    }
    let value = digits.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    if negative || value < 1 {
        return Err(Refusal::BadBindingArgs(
            "The binding key must be greater than 0".to_string(),
        ));
    }
    Ok(value.min(u64::from(u32::MAX)))
}

/// A binary as Erlang's `~p` prints it: `<<"text">>` when every byte is
/// printable Latin-1, else `<<1,2,3>>`.
fn erlang_binary(bytes: &[u8]) -> String {
    let printable =
        |b: u8| matches!(b, 32..=126 | 160..=255 | b'\n' | b'\r' | b'\t' | 8 | 11 | 12 | 27);
    if bytes.is_empty() {
        return "<<>>".to_string();
    }
    if !bytes.iter().all(|&b| printable(b)) {
        let list: Vec<String> = bytes.iter().map(u8::to_string).collect();
        return format!("<<{}>>", list.join(","));
    }
    let mut s = String::from("<<\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            8 => s.push_str("\\b"),
            11 => s.push_str("\\v"),
            12 => s.push_str("\\f"),
            27 => s.push_str("\\e"),
            _ => s.push(char::from(b)),
        }
    }
    s.push_str("\">>");
    s
}

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finaliser so every
/// input bit reaches the high bits jump hashing reads). Stable across
/// processes and builds, unlike std's hashers, so a key keeps its
/// destination across restarts while the ring is the same.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Jump consistent hashing (Lamping and Veach, 2014): a bucket in
/// `0..buckets` for `key`; going from n to n + 1 buckets moves only the
/// keys that land in the new bucket, about 1/(n + 1) of them.
fn jump_hash(mut key: u64, buckets: u64) -> u64 {
    let (mut b, mut j): (u64, u64) = (0, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // (b + 1) * 2^31 / ((key >> 33) + 1), in floating point as the
        // paper has it; the quotient is at most 2^31 * (b + 1).
        let jump = (b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64);
        j = if jump >= u64::MAX as f64 {
            u64::MAX
        } else {
            jump as u64
        };
    }
    b
}

/// Tags that keep the hashed forms of different inputs apart.
const TAG_STRING: &[u8] = b"s";
const TAG_HEADER: &[u8] = b"h";
const TAG_MISSING: &[u8] = b"u";

/// The buckets of an `x-consistent-hash` exchange: each binding owns as
/// many consecutive buckets as its weight, in the order bindings were
/// added (after a restart, the order the store lists them). Removing a
/// binding closes the gap, as the plugin renumbers its buckets.
#[derive(Debug, Default)]
struct HashRing {
    /// (bucket end, exclusive; the binding's destination, key, arguments).
    segments: Vec<(u64, Destination, ShortStr, FieldTable)>,
}

impl HashRing {
    fn total(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.0)
    }

    fn push(&mut self, weight: u64, destination: Destination, key: ShortStr, args: FieldTable) {
        let end = self.total().saturating_add(weight);
        self.segments.push((end, destination, key, args));
    }

    /// Keeps the segments `keep` accepts, renumbering the buckets.
    fn retain(&mut self, mut keep: impl FnMut(&Destination, &ShortStr, &FieldTable) -> bool) {
        let mut end = 0u64;
        let mut start = 0u64;
        self.segments.retain_mut(|(e, d, k, a)| {
            let weight = *e - start;
            start = *e;
            if !keep(d, k, a) {
                return false;
            }
            end += weight;
            *e = end;
            true
        });
    }

    /// The destination owning the bucket `hash` jumps to.
    fn pick(&self, hash: u64) -> Option<&Destination> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let bucket = jump_hash(hash, total);
        let i = self.segments.partition_point(|s| s.0 <= bucket);
        self.segments.get(i).map(|s| &s.1)
    }
}

/// Declared properties of an exchange.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    /// The name ("" is the default exchange).
    pub name: ShortStr,
    /// The type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding (as source) goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Declare arguments, as given.
    pub arguments: FieldTable,
}

/// Where a binding leads.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A queue.
    Queue(Arc<Queue>),
    /// Another exchange (exchange-to-exchange binding), by name.
    Exchange(ShortStr),
}

impl Destination {
    /// The stored form.
    pub fn target(&self) -> crate::persist::BindingTarget {
        match self {
            Destination::Queue(q) => crate::persist::BindingTarget::Queue(q.name().clone()),
            Destination::Exchange(e) => crate::persist::BindingTarget::Exchange(e.clone()),
        }
    }

    /// Whether two destinations name the same thing.
    pub fn same(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => a.name() == b.name(),
            (Destination::Exchange(a), Destination::Exchange(b)) => a == b,
            _ => false,
        }
    }

    /// The destination's name.
    pub fn name(&self) -> &ShortStr {
        match self {
            Destination::Queue(q) => q.name(),
            Destination::Exchange(e) => e,
        }
    }
}

/// `x-match` of a headers binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

/// One binding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Where it leads.
    pub destination: Destination,
    /// Binding key.
    pub key: ShortStr,
    /// Binding arguments.
    pub arguments: FieldTable,
    xmatch: XMatch,
}

/// The bindings that share a key.
#[derive(Debug)]
struct KeyBindings {
    bindings: Vec<Binding>,
}

/// An exchange's bindings: by key, and for a topic exchange the keys as a
/// trie of words as well.
#[derive(Debug, Default)]
struct Table {
    by_key: HashMap<ShortStr, KeyBindings>,
    topics: Option<TopicTrie>,
    /// For `x-consistent-hash`, the buckets.
    ring: Option<HashRing>,
    /// How many bindings `by_key` holds (an `x-random` pick indexes them).
    count: usize,
}

impl Table {
    /// Forgets a key that has no binding left.
    fn drop_key(&mut self, key: &ShortStr) {
        self.by_key.remove(key);
        if let Some(t) = &mut self.topics {
            t.remove(key);
        }
    }
}

/// Topic binding keys as a trie of words: routing visits only the patterns
/// a key can match, instead of matching the key against every binding.
/// Equivalent to [`topic_matches`] (a test compares them exhaustively).
#[derive(Debug, Default)]
struct TopicTrie {
    root: TopicNode,
}

#[derive(Debug, Default)]
struct TopicNode {
    words: HashMap<ShortStr, TopicNode>,
    star: Option<Box<TopicNode>>,
    hash: Option<Box<TopicNode>>,
    /// The binding key of the pattern that ends here.
    end: Option<ShortStr>,
}

impl TopicNode {
    fn is_empty(&self) -> bool {
        self.end.is_none() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    fn child_mut(&mut self, word: &ShortStr) -> &mut TopicNode {
        match word.as_bytes() {
            b"*" => self.star.get_or_insert_with(Box::default),
            b"#" => self.hash.get_or_insert_with(Box::default),
            _ => self.words.entry(word.clone()).or_default(),
        }
    }

    /// Removes the pattern `words` below this node, pruning what empties.
    fn remove(&mut self, words: &[ShortStr]) {
        let Some((first, rest)) = words.split_first() else {
            self.end = None;
            return;
        };
        let slot = match first.as_bytes() {
            b"*" => &mut self.star,
            b"#" => &mut self.hash,
            _ => {
                if let Some(c) = self.words.get_mut(first) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.words.remove(first);
                    }
                }
                return;
            }
        };
        if let Some(c) = slot {
            c.remove(rest);
            if c.is_empty() {
                *slot = None;
            }
        }
    }
}

impl TopicTrie {
    fn insert(&mut self, key: &ShortStr) {
        let mut node = &mut self.root;
        for w in split_words(key) {
            node = node.child_mut(&w);
        }
        node.end = Some(key.clone());
    }

    fn remove(&mut self, key: &ShortStr) {
        self.root.remove(&split_words(key));
    }

    /// Calls `f` once with the binding key of every pattern `key` (split
    /// into words) matches. A state is a node, a position in the key and
    /// whether we are inside the node's `#` edge; each is visited once, so
    /// the work is bounded by nodes x words even for patterns of many `#`.
    fn matches(&self, key: &[&[u8]], f: &mut dyn FnMut(&ShortStr)) {
        let n = key.len();
        let mut seen: HashSet<(usize, usize, bool)> = HashSet::new();
        let mut stack: Vec<(&TopicNode, usize, bool)> = vec![(&self.root, 0, false)];
        while let Some((node, i, in_hash)) = stack.pop() {
            if !seen.insert((std::ptr::from_ref(node) as usize, i, in_hash)) {
                continue;
            }
            if in_hash {
                // Inside this node's '#': stop consuming, or take one more word.
                if let Some(h) = &node.hash {
                    stack.push((h, i, false));
                }
                if i < n {
                    stack.push((node, i + 1, true));
                }
                continue;
            }
            if i == n {
                if let Some(k) = &node.end {
                    f(k);
                }
            } else {
                if let Some(c) = node.words.get(key[i]) {
                    stack.push((c, i + 1, false));
                }
                if let Some(c) = &node.star {
                    stack.push((c, i + 1, false));
                }
            }
            if node.hash.is_some() {
                stack.push((node, i, true));
            }
        }
    }
}

/// An exchange.
#[derive(Debug)]
pub struct Exchange {
    /// What it was declared with.
    pub spec: ExchangeSpec,
    // An RwLock: routing (every publish) only reads; binds and unbinds are
    // rare. Never held across an await or while taking another lock.
    bindings: RwLock<Table>,
    /// The policy applying now (read only for unroutable messages).
    policy: RwLock<Option<Arc<crate::policy::Policy>>>,
    /// What an `x-consistent-hash` exchange hashes (from its arguments).
    hash_on: HashOn,
    /// The type whose rules route: the declared type, or an
    /// `x-delayed-message` exchange's `x-delayed-type`.
    routing: ExchangeKind,
    // A Mutex: publishers add and the timer takes, both briefly; never
    // held while routing or taking another lock. `None` unless the type
    // is `x-delayed-message`.
    delayed: Option<std::sync::Mutex<crate::delayed::Delayed>>,
    /// `x-random`'s source of picks: a counter hashed with keys chosen at
    /// random when the exchange is made (as `Broker::generate_name` does),
    /// so core needs no random-number generator.
    picks: AtomicU64,
    seed: RandomState,
    // A Mutex: every publish to an `x-message-deduplication` exchange
    // checks and inserts in one step, briefly, and takes no other lock
    // while holding it (its store ops are submitted under it, so the store
    // sees a cache's changes in their order). `None` for every other type.
    dedup: Option<Mutex<Dedup>>,
}

/// Where a durable `x-message-deduplication` exchange's ids are stored
/// when its `x-cache-persistence` is `disk`: the broker's store and the
/// exchange's vhost.
#[derive(Debug, Clone)]
pub struct DedupStore {
    /// The store.
    pub durability: Arc<Durability>,
    /// The exchange's vhost.
    pub vhost: String,
}

/// An `x-message-deduplication` exchange's cache, the options in effect
/// (its arguments, or the applying policy's, which win as in the plugin),
/// and where the cache is stored.
#[derive(Debug)]
struct Dedup {
    cache: DedupCache,
    /// Set (by the vhost) for a durable exchange of a broker that stores
    /// durable state.
    store: Option<DedupStore>,
    /// `x-cache-persistence` in effect is `disk`.
    disk: bool,
}

/// The options an `x-message-deduplication` exchange runs with: its
/// arguments, each overridden by the policy's key if it sets one (the
/// plugin's `policy_changed` resets the cache to the arguments, then
/// applies the policy's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DedupOptions {
    size: u64,
    ttl: Option<std::time::Duration>,
    disk: bool,
}

impl DedupOptions {
    fn of(arguments: &FieldTable, policy: Option<&FieldTable>) -> Self {
        let number = |name: &str| {
            policy
                .and_then(|p| p.get(name))
                .and_then(FieldValue::as_i64)
                .or_else(|| dedup_number(arguments, name))
                .and_then(|n| u64::try_from(n).ok())
                .filter(|&n| n > 0)
        };
        let persistence = policy
            .and_then(|p| string_arg(p, CACHE_PERSISTENCE))
            .or_else(|| string_arg(arguments, CACHE_PERSISTENCE));
        DedupOptions {
            size: number(CACHE_SIZE).unwrap_or(1),
            ttl: number(dedup::CACHE_TTL).map(std::time::Duration::from_millis),
            disk: persistence.is_some_and(|p| p == b"disk"),
        }
    }
}

impl Dedup {
    /// Whether the cache's changes go to the store.
    fn stored(&self) -> bool {
        self.disk && self.store.is_some()
    }

    /// Runs `f` on the cache with where its changes go: store ops for
    /// `exchange` when the ids are stored, nowhere otherwise.
    fn with_sink<R>(
        &mut self,
        exchange: &ShortStr,
        f: impl FnOnce(&mut DedupCache, &mut dyn FnMut(CacheChange<'_>)) -> R,
    ) -> R {
        let mut sink = dedup_sink(self.store.as_ref().filter(|_| self.disk), exchange);
        f(&mut self.cache, &mut sink)
    }
}

/// Turns cache changes into store ops for `exchange` (nothing when
/// `store` is `None`: a cache kept in memory).
fn dedup_sink<'a>(
    store: Option<&'a DedupStore>,
    exchange: &'a ShortStr,
) -> impl FnMut(CacheChange<'_>) + 'a {
    move |change| {
        let Some(s) = store else {
            return;
        };
        let key = |id: &DedupKey| DedupRecordKey {
            vhost: s.vhost.clone(),
            exchange: exchange.clone(),
            id: id.to_bytes(),
        };
        s.durability.submit(match change {
            CacheChange::Added {
                key: id,
                expires_ms,
                order,
            } => PersistOp::DedupPut {
                key: key(id),
                expires_ms,
                order,
            },
            CacheChange::Removed { key: id } => PersistOp::DedupRemove { key: key(id) },
        });
    }
}

fn split_words(key: &ShortStr) -> Vec<ShortStr> {
    key.as_bytes()
        .split(|&c| c == b'.')
        .map(|w| ShortStr::from_slice(w).unwrap_or_default())
        .collect()
}

/// Whether a topic routing key matches a pattern (both split into words).
/// `*` matches exactly one word, `#` zero or more. Dynamic programming over
/// (pattern word, key word): at most 128 x 128 steps for 255-byte keys.
pub fn topic_matches(pattern: &[ShortStr], key: &[&[u8]]) -> bool {
    // reach[j]: the first i pattern words can match the first j key words.
    let mut reach = vec![false; key.len() + 1];
    reach[0] = true;
    for p in pattern {
        let pb = p.as_bytes();
        if pb == b"#" {
            // '#' extends any reachable prefix by any number of words.
            for j in 1..=key.len() {
                reach[j] = reach[j] || reach[j - 1];
            }
        } else {
            for j in (1..=key.len()).rev() {
                reach[j] = reach[j - 1] && (pb == b"*" || pb == key[j - 1]);
            }
            reach[0] = false;
        }
    }
    reach[key.len()]
}

fn headers_match(binding: &Binding, headers: Option<&FieldTable>) -> bool {
    let with_x = matches!(binding.xmatch, XMatch::AllWithX | XMatch::AnyWithX);
    let all = matches!(binding.xmatch, XMatch::All | XMatch::AllWithX);
    let mut any_hit = false;
    for (k, v) in binding.arguments.iter() {
        if k.as_bytes() == b"x-match" || (!with_x && k.starts_with(b"x-")) {
            continue;
        }
        let hit = match headers.and_then(|h| h.get(&k.to_lossy())) {
            // A void value in the binding asks only for the key's presence.
            Some(mv) => matches!(v, FieldValue::Void) || mv == v,
            None => false,
        };
        if all && !hit {
            return false;
        }
        any_hit |= hit;
    }
    all || any_hit
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(spec: ExchangeSpec) -> Arc<Self> {
        // A stored `x-delayed-message` exchange was validated when it was
        // declared; a missing inner type can only come from a damaged
        // record, and routes as direct.
        let routing = match spec.kind {
            ExchangeKind::DelayedMessage => {
                delayed_type(&spec.arguments).unwrap_or(ExchangeKind::Direct)
            }
            kind => kind,
        };
        let delayed = (spec.kind == ExchangeKind::DelayedMessage).then(std::sync::Mutex::default);
        let topics = (routing == ExchangeKind::Topic).then(TopicTrie::default);
        let ring = (routing == ExchangeKind::ConsistentHash).then(HashRing::default);
        let hash_on = HashOn::of(&spec);
        let dedup = (spec.kind == ExchangeKind::Deduplication).then(|| {
            let o = DedupOptions::of(&spec.arguments, None);
            Mutex::new(Dedup {
                cache: DedupCache::new(o.size, o.ttl),
                store: None,
                disk: o.disk,
            })
        });
        Arc::new(Exchange {
            spec,
            bindings: RwLock::new(Table {
                by_key: HashMap::new(),
                topics,
                ring,
                count: 0,
            }),
            policy: RwLock::new(None),
            hash_on,
            routing,
            delayed,
            picks: AtomicU64::new(0),
            seed: RandomState::new(),
            dedup,
        })
    }

    /// Sets the policy applying to the exchange (or none). An
    /// `x-message-deduplication` exchange's cache follows it at once, as
    /// the plugin's `policy_changed` has it: a smaller `x-cache-size`
    /// evicts the oldest ids, a new `x-cache-ttl` holds for ids cached
    /// from now on, and `x-cache-persistence` starts or stops storing the
    /// ids (which stay cached).
    pub fn set_policy(&self, policy: Option<Arc<crate::policy::Policy>>) {
        if let Some(mut d) = self.dedup() {
            let o = DedupOptions::of(&self.spec.arguments, policy.as_ref().map(|p| &p.definition));
            let was_stored = d.stored();
            d.disk = o.disk;
            let stored = d.stored();
            let name = &self.spec.name;
            if stored != was_stored {
                // Storing starts with every id held, or stops without any.
                let mut sink = dedup_sink(d.store.as_ref(), name);
                d.cache.for_each_id(|key, expires_ms, order| {
                    sink(if stored {
                        CacheChange::Added {
                            key,
                            expires_ms,
                            order,
                        }
                    } else {
                        CacheChange::Removed { key }
                    });
                });
            }
            d.with_sink(name, |cache, sink| cache.resize(o.size, sink));
            d.cache.set_default_ttl(o.ttl);
        }
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Tells a durable `x-message-deduplication` exchange where its ids
    /// are stored (when its `x-cache-persistence` is, or becomes, `disk`).
    /// Set once, before it is published to; other exchanges ignore it.
    pub fn set_dedup_store(&self, store: DedupStore) {
        if let Some(mut d) = self.dedup() {
            d.store = Some(store);
        }
    }

    /// Whether the exchange stores the ids it caches (durable, in a broker
    /// that stores durable state, with `disk` persistence in effect): a
    /// publish's confirm then waits for the store's flush.
    pub fn stores_dedup_ids(&self) -> bool {
        self.dedup().is_some_and(|d| d.stored())
    }

    /// Puts back the ids a stored cache held, read at start-up at
    /// wall-clock time `now_ms` (expired ones are removed from the store).
    /// False if the exchange does not store its ids (its records are
    /// stale: the caller removes them).
    pub fn restore_dedup(&self, ids: Vec<StoredId>, now_ms: u64) -> bool {
        let Some(mut d) = self.dedup().filter(|d| d.stored()) else {
            return false;
        };
        d.with_sink(&self.spec.name, |cache, sink| {
            cache.restore(ids, now_ms, sink);
        });
        true
    }

    /// The exchange is deleted: a stored cache's records go.
    pub fn forget_dedup_ids(&self) {
        if let Some(mut d) = self.dedup() {
            d.with_sink(&self.spec.name, |cache, sink| cache.clear(sink));
        }
    }

    /// The policy applying now.
    pub fn policy(&self) -> Option<Arc<crate::policy::Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where unroutable messages go: the `alternate-exchange` argument, or
    /// else the applying policy's (the argument wins, as in RabbitMQ).
    pub fn alternate(&self) -> Option<ShortStr> {
        let text = |v: Option<&FieldValue>| match v {
            Some(FieldValue::LongStr(ae)) => ShortStr::from_slice(ae.as_bytes()),
            _ => None,
        };
        text(self.spec.arguments.get("alternate-exchange")).or_else(|| {
            self.policy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|p| text(p.definition.get("alternate-exchange")))
        })
    }

    /// The name.
    pub fn name(&self) -> &ShortStr {
        &self.spec.name
    }

    /// The messages an `x-delayed-message` exchange holds (`None` for
    /// other types). Hold the guard briefly: publishers and the timer
    /// share it.
    pub fn delayed(&self) -> Option<std::sync::MutexGuard<'_, crate::delayed::Delayed>> {
        self.delayed
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many messages an `x-delayed-message` exchange holds (the
    /// plugin's `messages_delayed`); `None` for other types.
    pub fn messages_delayed(&self) -> Option<usize> {
        self.delayed().map(|d| d.len())
    }

    /// Checks binding arguments the way RabbitMQ does at bind time.
    fn parse_xmatch(&self, arguments: &FieldTable) -> Result<XMatch> {
        if self.routing != ExchangeKind::Headers {
            return Ok(XMatch::All);
        }
        match arguments.get("x-match") {
            None => Ok(XMatch::All),
            Some(FieldValue::LongStr(s)) => match s.as_bytes() {
                b"all" => Ok(XMatch::All),
                b"any" => Ok(XMatch::Any),
                b"all-with-x" => Ok(XMatch::AllWithX),
                b"any-with-x" => Ok(XMatch::AnyWithX),
                other => Err(Refusal::BadBindingArgs(format!(
                    "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                    String::from_utf8_lossy(other)
                ))),
            },
            Some(other) => Err(Refusal::BadBindingArgs(format!(
                "Invalid x-match field type {}; expected longstr",
                other.type_name()
            ))),
        }
    }

    /// Adds a binding; a duplicate (same destination, key and arguments) is
    /// ignored, as in RabbitMQ.
    pub fn bind(
        &self,
        destination: Destination,
        key: ShortStr,
        arguments: FieldTable,
    ) -> Result<()> {
        let xmatch = self.parse_xmatch(&arguments)?;
        let weight = match self.routing {
            ExchangeKind::ConsistentHash => binding_weight(&key)?,
            _ => 0,
        };
        let mut table = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        let Table {
            by_key,
            topics,
            ring,
            count,
        } = &mut *table;
        let entry = by_key.entry(key.clone()).or_insert_with(|| {
            if let Some(t) = topics {
                t.insert(&key);
            }
            KeyBindings {
                bindings: Vec::new(),
            }
        });
        if !entry
            .bindings
            .iter()
            .any(|b| b.destination.same(&destination) && b.arguments == arguments)
        {
            if let Some(ring) = ring {
                ring.push(weight, destination.clone(), key.clone(), arguments.clone());
            }
            *count += 1;
            entry.bindings.push(Binding {
                destination,
                key,
                arguments,
                xmatch,
            });
        }
        Ok(())
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(
        &self,
        destination: &Destination,
        key: &ShortStr,
        arguments: &FieldTable,
    ) -> bool {
        let mut table = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = table.by_key.get_mut(key) else {
            return false;
        };
        let before = entry.bindings.len();
        entry
            .bindings
            .retain(|b| !(b.destination.same(destination) && &b.arguments == arguments));
        let removed = before - entry.bindings.len();
        if entry.bindings.is_empty() {
            table.drop_key(key);
        }
        table.count -= removed;
        if let Some(ring) = &mut table.ring {
            ring.retain(|d, k, a| !(d.same(destination) && k == key && a == arguments));
        }
        removed > 0
    }

    /// Removes every binding to `destination`; returns them.
    pub fn unbind_all_to(&self, destination: &Destination) -> Vec<Binding> {
        let mut table = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        let mut removed = Vec::new();
        let mut emptied = Vec::new();
        for (key, entry) in &mut table.by_key {
            entry.bindings.retain(|b| {
                let keep = !b.destination.same(destination);
                if !keep {
                    removed.push(b.clone());
                }
                keep
            });
            if entry.bindings.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in &emptied {
            table.drop_key(key);
        }
        table.count -= removed.len();
        if let Some(ring) = &mut table.ring {
            ring.retain(|d, _, _| !d.same(destination));
        }
        removed
    }

    /// Whether the exchange has no bindings as a source.
    pub fn has_no_bindings(&self) -> bool {
        self.bindings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .is_empty()
    }

    /// Every binding, for listing.
    pub fn bindings(&self) -> Vec<Binding> {
        let table = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        table
            .by_key
            .values()
            .flat_map(|e| e.bindings.iter().cloned())
            .collect()
    }

    /// Whether routing depends only on the routing key and the bindings
    /// (so a route may be reused for the same key): not for headers, not
    /// for `x-random`, not for `x-message-deduplication` (a duplicate goes
    /// nowhere), and not for `x-consistent-hash` hashing a header or a
    /// property.
    pub fn routes_by_key(&self) -> bool {
        match self.routing {
            ExchangeKind::Headers | ExchangeKind::Random | ExchangeKind::Deduplication => false,
            ExchangeKind::ConsistentHash => self.hash_on == HashOn::RoutingKey,
            _ => true,
        }
    }

    /// Whether the exchange routes each message once, by its first
    /// routing key only (`CC`/`BCC` keys are not routed separately), as
    /// the plugin types do: one destination for `x-consistent-hash` and
    /// `x-random`, one duplicate check for `x-message-deduplication`.
    pub fn routes_once(&self) -> bool {
        matches!(
            self.routing,
            ExchangeKind::ConsistentHash | ExchangeKind::Random | ExchangeKind::Deduplication
        )
    }

    /// For `x-message-deduplication`: whether the message is a duplicate
    /// (its id cached and alive); if not, its id is cached from now on.
    /// A message without the header is never one.
    fn is_duplicate(&self, message: MessageView<'_>) -> bool {
        if self.dedup.is_none() {
            return false;
        }
        let headers = message.headers();
        let Some(key) = DedupKey::from_headers(headers) else {
            return false;
        };
        let ttl = dedup::message_ttl(headers);
        self.dedup().is_some_and(|mut d| {
            d.with_sink(&self.spec.name, |cache, sink| {
                cache.check_and_insert(key, ttl, sink)
            })
        })
    }

    /// The broker's tick at wall-clock time `now_ms` (Unix milliseconds):
    /// an `x-message-deduplication` exchange learns the time (its ids'
    /// times to live run by it) and drops expired ids.
    pub fn tick(&self, now_ms: u64) {
        if let Some(mut d) = self.dedup() {
            d.with_sink(&self.spec.name, |cache, sink| cache.tick(now_ms, sink));
        }
    }

    /// An `x-message-deduplication` exchange's cache, locked; `None` for
    /// other types.
    fn dedup(&self) -> Option<std::sync::MutexGuard<'_, Dedup>> {
        self.dedup
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// An `x-message-deduplication` exchange's cache as the plugin's
    /// `cache_info` reports it: (ids held, bytes of memory, the size
    /// bound); `None` for other types.
    pub fn dedup_cache_info(&self) -> Option<(usize, usize, usize)> {
        self.dedup()
            .map(|d| (d.cache.len(), d.cache.memory(), d.cache.size()))
    }

    /// How many ids an `x-message-deduplication` exchange holds (`None`
    /// for other types).
    pub fn dedup_cache_len(&self) -> Option<usize> {
        self.dedup().map(|d| d.cache.len())
    }

    /// The hash an `x-consistent-hash` exchange routes this message by.
    /// Messages without the header or property all share one hash, so
    /// they go to one (arbitrary) destination, as with the plugin.
    fn message_hash(&self, routing_key: &ShortStr, message: MessageView<'_>) -> u64 {
        match &self.hash_on {
            HashOn::RoutingKey => stable_hash(&[TAG_STRING, routing_key.as_bytes()]),
            HashOn::Header(name) => match message.headers().and_then(|h| h.get(name)) {
                // A string without a buffer; other types by their wire form
                // (type tag first, so equal text of two types differs).
                Some(FieldValue::LongStr(s)) => stable_hash(&[TAG_HEADER, b"S", s.as_bytes()]),
                Some(v) => {
                    let mut buf = bytes::BytesMut::new();
                    warren_codec::types::put_value(&mut buf, v);
                    stable_hash(&[TAG_HEADER, &buf])
                }
                None => stable_hash(&[TAG_MISSING]),
            },
            HashOn::Property(p) => {
                let props = message.properties();
                let timestamp;
                let value: Option<&[u8]> = match p {
                    HashProperty::MessageId => props
                        .and_then(|p| p.message_id.as_ref())
                        .map(ShortStr::as_bytes),
                    HashProperty::CorrelationId => props
                        .and_then(|p| p.correlation_id.as_ref())
                        .map(ShortStr::as_bytes),
                    HashProperty::Timestamp => {
                        // The plugin hashes the timestamp as decimal text.
                        timestamp = props.and_then(|p| p.timestamp).map(|t| t.to_string());
                        timestamp.as_deref().map(str::as_bytes)
                    }
                };
                match value {
                    Some(v) => stable_hash(&[TAG_STRING, v]),
                    None => stable_hash(&[TAG_MISSING]),
                }
            }
        }
    }

    /// Calls `f` with each destination a message with this key and these
    /// headers (or properties) goes to (possibly twice; the caller removes
    /// duplicates). Nothing is allocated for direct and fanout exchanges.
    pub fn route<'m>(
        &self,
        routing_key: &ShortStr,
        message: impl Into<MessageView<'m>>,
        f: &mut dyn FnMut(&Destination),
    ) {
        let message = message.into();
        let headers = message.headers();
        // Checked before the bindings are read: the cache's lock is never
        // held with another.
        if self.spec.kind == ExchangeKind::Deduplication && self.is_duplicate(message) {
            return;
        }
        let table = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        let map = &table.by_key;
        match self.routing {
            ExchangeKind::Direct => {
                if let Some(e) = map.get(routing_key) {
                    e.bindings.iter().for_each(|b| f(&b.destination));
                }
            }
            ExchangeKind::Fanout | ExchangeKind::Deduplication => {
                for e in map.values() {
                    e.bindings.iter().for_each(|b| f(&b.destination));
                }
            }
            ExchangeKind::Topic => {
                let Some(trie) = &table.topics else { return };
                let key: Vec<&[u8]> = routing_key.as_bytes().split(|&c| c == b'.').collect();
                trie.matches(&key, &mut |pattern| {
                    if let Some(e) = map.get(pattern) {
                        e.bindings.iter().for_each(|b| f(&b.destination));
                    }
                });
            }
            ExchangeKind::Headers => {
                for e in map.values() {
                    for b in &e.bindings {
                        if headers_match(b, headers) {
                            f(&b.destination);
                        }
                    }
                }
            }
            ExchangeKind::ConsistentHash => {
                let hash = self.message_hash(routing_key, message);
                if let Some(d) = table.ring.as_ref().and_then(|r| r.pick(hash)) {
                    f(d);
                }
            }
            // Never the routing type: `routing` holds the inner type.
            ExchangeKind::DelayedMessage => {}
            ExchangeKind::Random => {
                if table.count == 0 {
                    return;
                }
                let mut h = self.seed.build_hasher();
                h.write_u64(self.picks.fetch_add(1, Ordering::Relaxed));
                // Multiply-shift maps the hash onto 0..count evenly.
                let n = table.count as u128;
                let pick = ((u128::from(h.finish()) * n) >> 64) as usize;
                if let Some(b) = map.values().flat_map(|e| e.bindings.iter()).nth(pick) {
                    f(&b.destination);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        let words = split_words(&ShortStr::from(pattern));
        let key: Vec<&[u8]> = key.as_bytes().split(|&c| c == b'.').collect();
        topic_matches(&words, &key)
    }

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        // Observed on RabbitMQ 3.10 (see the behaviour reference, section 3).
        assert!(m("a.*.c.#", "a.b.c"));
        assert!(m("a.*.c.#", "a.b.c.d.e"));
        assert!(m("a.*.c.#", "a..c"));
        assert!(!m("a.*.c.#", "a.c"));
        assert!(!m("a.*.c.#", "a.b.b.c"));
        assert!(m("#", ""));
        assert!(m("#", "a.b"));
        assert!(m("*.orange.*", "quick.orange.rabbit"));
        assert!(!m("*.orange.*", "quick.orange.male.rabbit"));
        assert!(m("lazy.#", "lazy"));
        assert!(m("#.rabbit", "rabbit"));
        assert!(m("a.#.b", "a.b"));
        assert!(m("a.#.b", "a.x.y.b"));
        assert!(!m("a.#.b", "a.x.y.c"));
        assert!(m("*", ""));
        assert!(!m("*", "a.b"));
    }

    /// Every pattern of up to four words from `a b * # ""` and every key of
    /// up to four words from `a b ""`: the trie finds exactly the patterns
    /// the reference matcher accepts, each once, also after removals.
    #[test]
    fn the_topic_trie_agrees_with_the_matcher_exhaustively() {
        fn all(tokens: &[&str], max: usize) -> Vec<String> {
            let mut out: Vec<Vec<&str>> = vec![vec![]];
            let mut level: Vec<Vec<&str>> = vec![vec![]];
            for _ in 0..max {
                let next: Vec<Vec<&str>> = level
                    .iter()
                    .flat_map(|p| {
                        tokens.iter().map(move |t| {
                            let mut q = p.clone();
                            q.push(t);
                            q
                        })
                    })
                    .collect();
                out.extend(next.iter().cloned());
                level = next;
            }
            // The empty word list and [""] are both the key "".
            let mut s: Vec<String> = out.iter().map(|w| w.join(".")).collect();
            s.sort();
            s.dedup();
            s
        }
        let patterns = all(&["a", "b", "*", "#", ""], 4);
        let keys = all(&["a", "b", ""], 4);
        let mut trie = TopicTrie::default();
        for p in &patterns {
            trie.insert(&ShortStr::from(p.as_str()));
        }
        let check = |trie: &TopicTrie, live: &dyn Fn(&str) -> bool| {
            for k in &keys {
                let words: Vec<&[u8]> = k.as_bytes().split(|&c| c == b'.').collect();
                let mut found = Vec::new();
                trie.matches(&words, &mut |p| found.push(p.to_string()));
                let n = found.len();
                found.sort();
                found.dedup();
                assert_eq!(n, found.len(), "a pattern reported twice for {k:?}");
                let expected: Vec<String> = patterns
                    .iter()
                    .filter(|p| live(p) && m(p, k))
                    .cloned()
                    .collect();
                assert_eq!(found, expected, "key {k:?}");
            }
        };
        check(&trie, &|_| true);
        // Remove every pattern holding a '#': the rest still match, the
        // removed never do, and the trie prunes down to the others.
        for p in patterns.iter().filter(|p| p.contains('#')) {
            trie.remove(&ShortStr::from(p.as_str()));
        }
        check(&trie, &|p| !p.contains('#'));
        for p in &patterns {
            trie.remove(&ShortStr::from(p.as_str()));
        }
        assert!(trie.root.is_empty());
    }

    fn plugin_exchange(kind: ExchangeKind, arguments: FieldTable) -> Arc<Exchange> {
        Exchange::new(ExchangeSpec {
            name: ShortStr::from("x"),
            kind,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments,
        })
    }

    fn dest(name: &str) -> Destination {
        Destination::Exchange(ShortStr::from(name))
    }

    fn bind_weighted(ex: &Exchange, name: &str, weight: &str) {
        ex.bind(dest(name), ShortStr::from(weight), FieldTable::new())
            .unwrap();
    }

    /// The destinations a message goes to, by name.
    fn routed<'m>(ex: &Exchange, key: &str, message: impl Into<MessageView<'m>>) -> Vec<String> {
        let mut out = Vec::new();
        ex.route(&ShortStr::from(key), message, &mut |d| {
            out.push(d.name().to_string());
        });
        out
    }

    /// Where each of `keys` goes (exactly one destination each).
    fn assignment(ex: &Exchange, keys: &[String]) -> Vec<String> {
        keys.iter()
            .map(|k| {
                let mut to = routed(ex, k, None);
                assert_eq!(to.len(), 1, "key {k} went to {to:?}");
                to.remove(0)
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("key-{i}")).collect()
    }

    fn counts(assigned: &[String]) -> HashMap<String, usize> {
        let mut c = HashMap::new();
        for a in assigned {
            *c.entry(a.clone()).or_insert(0) += 1;
        }
        c
    }

    fn ten_queues() -> Arc<Exchange> {
        let ex = plugin_exchange(ExchangeKind::ConsistentHash, FieldTable::new());
        for i in 0..10 {
            bind_weighted(&ex, &format!("q{i}"), "1");
        }
        ex
    }

    #[test]
    fn consistent_hash_sends_a_key_to_one_destination_always() {
        let ex = ten_queues();
        let ks = keys(1000);
        let first = assignment(&ex, &ks);
        assert_eq!(assignment(&ex, &ks), first);
        // The same bindings made again in the same order (a restart) give
        // the same assignment: the hash is stable, not seeded per process.
        assert_eq!(assignment(&ten_queues(), &ks), first);
        // No bindings: nothing.
        let empty = plugin_exchange(ExchangeKind::ConsistentHash, FieldTable::new());
        assert!(routed(&empty, "a", None).is_empty());
    }

    /// 100,000 distinct keys over 10 equal bindings. The figures are in
    /// docs/compatibility.md; the bound is a property of the hash.
    #[test]
    fn consistent_hash_spreads_100000_keys_evenly_over_10_destinations() {
        let ex = ten_queues();
        let c = counts(&assignment(&ex, &keys(100_000)));
        assert_eq!(c.len(), 10);
        let v: Vec<f64> = c.values().map(|&n| n as f64).collect();
        let mean = v.iter().sum::<f64>() / 10.0;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 10.0).sqrt();
        let (min, max) = (
            v.iter().copied().fold(f64::MAX, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        );
        println!("spread of 100000 keys over 10: min {min} max {max} stddev {sd:.1}");
        assert!(min >= 9_000.0 && max <= 11_000.0, "min {min} max {max}");
        assert!(sd < 300.0, "stddev {sd}");
    }

    #[test]
    fn consistent_hash_moves_only_a_share_of_keys_when_bindings_change() {
        let ks = keys(20_000);
        let ex = ten_queues();
        let before = assignment(&ex, &ks);
        // An eleventh binding takes about 1/11 of the keys, and only keys
        // that now go to it move.
        bind_weighted(&ex, "q10", "1");
        let grown = assignment(&ex, &ks);
        let moved: Vec<usize> = (0..ks.len()).filter(|&i| before[i] != grown[i]).collect();
        assert!(moved.iter().all(|&i| grown[i] == "q10"));
        let share = moved.len() as f64 / ks.len() as f64;
        assert!((share - 1.0 / 11.0).abs() < 0.01, "moved {share}");
        // Removing it again restores the first assignment exactly.
        assert!(ex.unbind(&dest("q10"), &ShortStr::from("1"), &FieldTable::new()));
        assert_eq!(assignment(&ex, &ks), before);
        // Removing the last-bound of the ten moves only the keys it had.
        assert!(ex.unbind(&dest("q9"), &ShortStr::from("1"), &FieldTable::new()));
        let shrunk = assignment(&ex, &ks);
        for i in 0..ks.len() {
            if before[i] != "q9" {
                assert_eq!(shrunk[i], before[i]);
            } else {
                assert_ne!(shrunk[i], "q9");
            }
        }
        // Removing one bound earlier renumbers the buckets after it, as the
        // plugin does: its keys move, and so do some others.
        let ex = ten_queues();
        ex.unbind_all_to(&dest("q3"));
        let gap = assignment(&ex, &ks);
        assert!((0..ks.len()).all(|i| gap[i] != "q3"));
        let moved = (0..ks.len()).filter(|&i| gap[i] != before[i]).count();
        println!(
            "removing the 4th of 10 bindings moved {:.1}% of keys",
            100.0 * moved as f64 / ks.len() as f64
        );
        assert_eq!(counts(&gap).len(), 9);
    }

    #[test]
    fn consistent_hash_weights_come_from_binding_keys() {
        let ex = plugin_exchange(ExchangeKind::ConsistentHash, FieldTable::new());
        bind_weighted(&ex, "light", "1");
        bind_weighted(&ex, "heavy", "2");
        let c = counts(&assignment(&ex, &keys(30_000)));
        let ratio = c["heavy"] as f64 / c["light"] as f64;
        assert!((ratio - 2.0).abs() < 0.1, "ratio {ratio}");
        // Erlang's list_to_integer: a sign and leading zeros are fine.
        bind_weighted(&ex, "plus", "+3");
        bind_weighted(&ex, "zeros", "007");
        assert_eq!(ex.bindings().len(), 4);
    }

    #[test]
    fn consistent_hash_refuses_binding_keys_that_are_not_positive_integers() {
        let ex = plugin_exchange(ExchangeKind::ConsistentHash, FieldTable::new());
        let refused = |key: &str| {
            ex.bind(dest("q"), ShortStr::from(key), FieldTable::new())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused("abc"),
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>"
        );
        assert_eq!(
            refused(""),
            "PRECONDITION_FAILED - The binding key must be an integer: <<>>"
        );
        assert_eq!(
            refused("1.5"),
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"1.5\">>"
        );
        assert_eq!(
            refused(" 1"),
            "PRECONDITION_FAILED - The binding key must be an integer: <<\" 1\">>"
        );
        for key in ["0", "-1", "-0"] {
            assert_eq!(
                refused(key),
                "PRECONDITION_FAILED - The binding key must be greater than 0"
            );
        }
        assert!(ex.has_no_bindings());
        assert_eq!(erlang_binary(b"a\"b\\c"), r#"<<"a\"b\\c">>"#);
        assert_eq!(erlang_binary(&[1, 200]), "<<1,200>>");
        assert_eq!(
            binding_weight(&ShortStr::from("99999999999999999999999")).unwrap(),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn consistent_hash_validates_its_arguments_as_the_plugin() {
        let kind = ExchangeKind::ConsistentHash;
        let s = |v: &str| FieldValue::LongStr(v.into());
        let args = FieldTable::new()
            .with("hash-header", s("h"))
            .with("hash-property", s("message_id"));
        assert_eq!(
            kind.validate(&args).unwrap_err().to_string(),
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"
        );
        let args = FieldTable::new().with("hash-property", s("app_id"));
        assert_eq!(
            kind.validate(&args).unwrap_err().to_string(),
            "PRECONDITION_FAILED - Unsupported property: app_id"
        );
        for p in ["message_id", "correlation_id", "timestamp"] {
            kind.validate(&FieldTable::new().with("hash-property", s(p)))
                .unwrap();
        }
        kind.validate(&FieldTable::new().with("hash-header", s("h")))
            .unwrap();
        // Other types ignore these arguments.
        ExchangeKind::Direct.validate(&args).unwrap();
        ExchangeKind::Random.validate(&args).unwrap();
    }

    #[test]
    fn consistent_hash_on_a_header_or_a_property() {
        let s = |v: &str| FieldValue::LongStr(v.into());
        let by_header = plugin_exchange(
            ExchangeKind::ConsistentHash,
            FieldTable::new().with("hash-header", s("user")),
        );
        let by_id = plugin_exchange(
            ExchangeKind::ConsistentHash,
            FieldTable::new().with("hash-property", s("message_id")),
        );
        let by_time = plugin_exchange(
            ExchangeKind::ConsistentHash,
            FieldTable::new().with("hash-property", s("timestamp")),
        );
        for ex in [&by_header, &by_id, &by_time] {
            for i in 0..10 {
                bind_weighted(ex, &format!("q{i}"), "1");
            }
            assert!(!ex.routes_by_key());
        }
        assert!(ten_queues().routes_by_key());
        let mut seen_header = HashSet::new();
        let mut seen_id = HashSet::new();
        let mut seen_time = HashSet::new();
        for i in 0..200 {
            // The routing key varies too, and does not matter.
            let rk = format!("rk{i}");
            let headers = FieldTable::new().with("user", s(&format!("u{}", i % 50)));
            let to = routed(&by_header, &rk, Some(&headers));
            assert_eq!(to, routed(&by_header, "other", Some(&headers)));
            seen_header.insert(to[0].clone());
            let props = BasicProperties {
                message_id: Some(ShortStr::from(format!("m{}", i % 50))),
                timestamp: Some(1_700_000_000 + (i % 50) as u64),
                ..BasicProperties::default()
            };
            let to = routed(&by_id, &rk, &props);
            assert_eq!(to, routed(&by_id, "other", &props));
            seen_id.insert(to[0].clone());
            let to = routed(&by_time, &rk, &props);
            assert_eq!(to, routed(&by_time, "other", &props));
            seen_time.insert(to[0].clone());
        }
        assert!(seen_header.len() > 5 && seen_id.len() > 5 && seen_time.len() > 5);
        // A message id hashes as the same text in a routing key does.
        let props = BasicProperties {
            message_id: Some(ShortStr::from("order-7")),
            ..BasicProperties::default()
        };
        assert_eq!(
            routed(&by_id, "", &props),
            routed(&ten_queues(), "order-7", None)
        );
        // Without the header or the property, every message goes to one
        // destination.
        let missing: HashSet<Vec<String>> = (0..100)
            .map(|i| routed(&by_header, &format!("k{i}"), None))
            .chain((0..100).map(|i| routed(&by_id, &format!("k{i}"), &BasicProperties::default())))
            .collect();
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn random_picks_one_binding_of_any_key() {
        let ex = plugin_exchange(ExchangeKind::Random, FieldTable::new());
        assert!(routed(&ex, "k", None).is_empty());
        for (q, key) in [("a", "x"), ("b", "y"), ("c", "")] {
            ex.bind(dest(q), ShortStr::from(key), FieldTable::new())
                .unwrap();
        }
        assert!(!ex.routes_by_key() && ex.routes_once());
        let mut c: HashMap<String, usize> = HashMap::new();
        for i in 0..30_000 {
            let to = routed(&ex, &format!("k{}", i % 3), None);
            assert_eq!(to.len(), 1);
            *c.entry(to[0].clone()).or_insert(0) += 1;
        }
        assert_eq!(c.len(), 3);
        assert!(c.values().all(|&n| (9_000..=11_000).contains(&n)), "{c:?}");
        ex.unbind_all_to(&dest("a"));
        assert!((0..100).all(|_| routed(&ex, "x", None) != vec!["a".to_string()]));
        ex.unbind(&dest("b"), &ShortStr::from("y"), &FieldTable::new());
        assert!((0..100).all(|_| routed(&ex, "x", None) == vec!["c".to_string()]));
    }

    #[test]
    fn plugin_types_parse_and_describe_themselves() {
        for kind in ExchangeKind::ALL {
            assert_eq!(ExchangeKind::parse(kind.as_str().as_bytes()), Some(kind));
            assert!(!kind.description().is_empty());
        }
        assert_eq!(ExchangeKind::parse(b"x-bogus"), None);
    }

    fn dedup_exchange(args: FieldTable) -> Arc<Exchange> {
        let ex = plugin_exchange(ExchangeKind::Deduplication, args);
        for q in ["q1", "q2"] {
            ex.bind(dest(q), ShortStr::from(q), FieldTable::new())
                .unwrap();
        }
        ex
    }

    fn with_id(id: &str) -> FieldTable {
        FieldTable::new().with("x-deduplication-header", FieldValue::LongStr(id.into()))
    }

    #[test]
    fn dedup_routes_as_fanout_once_per_id() {
        let ex = dedup_exchange(FieldTable::new().with("x-cache-size", FieldValue::I64(10)));
        assert!(!ex.routes_by_key() && ex.routes_once());
        let mut to = routed(&ex, "any", Some(&with_id("a")));
        to.sort();
        assert_eq!(to, ["q1", "q2"]);
        assert!(routed(&ex, "other", Some(&with_id("a"))).is_empty());
        assert_eq!(routed(&ex, "k", Some(&with_id("b"))).len(), 2);
        // Without the header: always routed, never cached.
        for _ in 0..3 {
            assert_eq!(routed(&ex, "k", None).len(), 2);
        }
        assert_eq!(ex.dedup_cache_len(), Some(2));
        assert_eq!(ten_queues().dedup_cache_len(), None);
    }

    #[test]
    fn dedup_ids_expire_by_the_ticks_clock() {
        let t0 = 1_700_000_000_000u64;
        let ms = |n: u64| n;
        let ex = dedup_exchange(
            FieldTable::new()
                .with("x-cache-size", FieldValue::I64(10))
                .with("x-cache-ttl", FieldValue::I32(1000)),
        );
        ex.tick(t0);
        assert_eq!(routed(&ex, "", Some(&with_id("a"))).len(), 2);
        let short = with_id("s").with("x-cache-ttl", FieldValue::I64(100));
        assert_eq!(routed(&ex, "", Some(&short)).len(), 2);
        // Times to live run from the next tick.
        ex.tick(t0 + ms(1));
        ex.tick(t0 + ms(100));
        assert!(routed(&ex, "", Some(&short)).is_empty());
        ex.tick(t0 + ms(101));
        assert_eq!(routed(&ex, "", Some(&short)).len(), 2);
        ex.tick(t0 + ms(1000));
        assert!(routed(&ex, "", Some(&with_id("a"))).is_empty());
        ex.tick(t0 + ms(1001));
        assert_eq!(routed(&ex, "", Some(&with_id("a"))).len(), 2);
    }

    #[test]
    fn a_policy_overrides_a_dedup_exchanges_arguments_and_follows_changes() {
        let ex = dedup_exchange(
            FieldTable::new()
                .with("x-cache-size", FieldValue::I64(10))
                .with("x-cache-ttl", FieldValue::I64(1000)),
        );
        let t0 = 1_700_000_000_000u64;
        ex.tick(t0);
        for id in ["a", "b", "c"] {
            assert_eq!(routed(&ex, "", Some(&with_id(id))).len(), 2);
        }
        let policy = |pairs: &[(&str, FieldValue)]| {
            let mut def = FieldTable::new();
            for (k, v) in pairs {
                def.insert(*k, v.clone());
            }
            Some(Arc::new(
                crate::policy::Policy::new("/", "p", ".*", "exchanges", 0, def, false).unwrap(),
            ))
        };
        // A smaller size evicts the oldest ids at once.
        ex.set_policy(policy(&[
            ("x-cache-size", FieldValue::I64(2)),
            ("x-cache-ttl", FieldValue::I64(50)),
        ]));
        assert_eq!(ex.dedup_cache_len(), Some(2));
        assert_eq!(routed(&ex, "", Some(&with_id("a"))).len(), 2);
        assert!(routed(&ex, "", Some(&with_id("a"))).is_empty());
        // The policy's ttl holds for ids cached from now on ("a" was).
        ex.tick(t0 + 1);
        ex.tick(t0 + 51);
        assert_eq!(routed(&ex, "", Some(&with_id("a"))).len(), 2);
        // Cleared, the arguments hold again.
        ex.set_policy(None);
        for id in ["d", "e", "f"] {
            assert_eq!(routed(&ex, "", Some(&with_id(id))).len(), 2);
        }
        assert_eq!(ex.dedup_cache_len(), Some(5));
        // Without a store, disk persistence changes nothing here.
        ex.set_policy(policy(&[(
            "x-cache-persistence",
            crate::policy::text("disk"),
        )]));
        assert!(!ex.stores_dedup_ids());
    }

    #[test]
    fn dedup_cache_size_bounds_the_ids_kept() {
        let ex = dedup_exchange(FieldTable::new().with("x-cache-size", FieldValue::I64(1)));
        // The plugin's own overflow test: this, that, this: all routed.
        for id in ["this", "that", "this"] {
            assert_eq!(routed(&ex, "", Some(&with_id(id))).len(), 2, "{id}");
        }
        assert_eq!(ex.dedup_cache_len(), Some(1));
        // A size given as a string, as the plugin takes it.
        let ex =
            dedup_exchange(FieldTable::new().with("x-cache-size", FieldValue::LongStr("2".into())));
        for id in ["a", "b"] {
            routed(&ex, "", Some(&with_id(id)));
        }
        assert!(routed(&ex, "", Some(&with_id("a"))).is_empty());
        assert!(routed(&ex, "", Some(&with_id("b"))).is_empty());
    }

    #[test]
    fn dedup_validates_its_arguments_as_the_plugin() {
        let kind = ExchangeKind::Deduplication;
        let refused = |args: FieldTable| kind.validate(&args).unwrap_err().to_string();
        let size = |v: FieldValue| FieldTable::new().with("x-cache-size", v);
        let pad = |n: usize| " ".repeat(n);
        let size_text = |n: usize| {
            format!(
                "PRECONDITION_FAILED - Missing or invalid argument, {}'x-cache-size' must be an integer greater than 0",
                pad(n)
            )
        };
        assert_eq!(refused(FieldTable::new()), size_text(10));
        assert_eq!(refused(size(FieldValue::I64(0))), size_text(10));
        assert_eq!(refused(size(FieldValue::Bool(true))), size_text(10));
        assert_eq!(
            refused(size(FieldValue::LongStr("foo".into()))),
            size_text(22)
        );
        for ok in [
            FieldValue::I16(10),
            FieldValue::I64(10),
            FieldValue::U32(10),
            FieldValue::LongStr("10".into()),
        ] {
            kind.validate(&size(ok)).unwrap();
        }
        let ttl = |v: FieldValue| size(FieldValue::I64(5)).with("x-cache-ttl", v);
        let ttl_text = |n: usize| {
            format!(
                "PRECONDITION_FAILED - Invalid argument, {}'x-cache-ttl' must be an integer greater than 0",
                pad(n)
            )
        };
        assert_eq!(refused(ttl(FieldValue::I64(-1))), ttl_text(13));
        assert_eq!(
            refused(ttl(FieldValue::LongStr("bar".into()))),
            ttl_text(22)
        );
        kind.validate(&ttl(FieldValue::LongStr("1000".into())))
            .unwrap();
        let persistence = |v: &str| {
            size(FieldValue::I64(5)).with("x-cache-persistence", FieldValue::LongStr(v.into()))
        };
        kind.validate(&persistence("disk")).unwrap();
        kind.validate(&persistence("memory")).unwrap();
        assert_eq!(
            refused(persistence("tape")),
            format!(
                "PRECONDITION_FAILED - Invalid argument, {}'x-cache-persistence' must be either 'disk' or 'memory'",
                pad(13)
            )
        );
    }

    #[test]
    fn topic_matching_is_bounded_on_hostile_patterns() {
        let pattern = vec!["#"; 127].join(".");
        let key = vec!["a"; 127].join(".");
        assert!(m(&pattern, &key));
        assert!(!m(&format!("{pattern}.z"), &key));
        let mut trie = TopicTrie::default();
        trie.insert(&ShortStr::from(pattern.as_str()));
        trie.insert(&ShortStr::from(format!("{pattern}.z").as_str()));
        let words: Vec<&[u8]> = key.as_bytes().split(|&c| c == b'.').collect();
        let mut found = Vec::new();
        trie.matches(&words, &mut |p| found.push(p.clone()));
        assert_eq!(found, vec![ShortStr::from(pattern.as_str())]);
    }
}
