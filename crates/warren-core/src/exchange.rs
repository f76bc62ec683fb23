//! Exchanges, their bindings and routing.
//!
//! Bindings are indexed by binding key, so a direct exchange routes with one
//! hash lookup; fanout takes every binding; topic and headers test each key
//! or binding once per message (topic patterns are pre-split into words).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use warren_codec::{FieldTable, FieldValue, ShortStr};

use crate::error::Refusal;

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
}

impl ExchangeKind {
    /// Parses the `type` argument of `exchange.declare`.
    pub fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"direct" => ExchangeKind::Direct,
            b"fanout" => ExchangeKind::Fanout,
            b"topic" => ExchangeKind::Topic,
            b"headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    /// The type name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
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
        let topics = (spec.kind == ExchangeKind::Topic).then(TopicTrie::default);
        Arc::new(Exchange {
            spec,
            bindings: RwLock::new(Table {
                by_key: HashMap::new(),
                topics,
            }),
            policy: RwLock::new(None),
        })
    }

    /// Sets the policy applying to the exchange (or none).
    pub fn set_policy(&self, policy: Option<Arc<crate::policy::Policy>>) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
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

    /// Checks binding arguments the way RabbitMQ does at bind time.
    fn parse_xmatch(&self, arguments: &FieldTable) -> Result<XMatch> {
        if self.spec.kind != ExchangeKind::Headers {
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
        let mut table = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        let Table { by_key, topics } = &mut *table;
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
        let removed = entry.bindings.len() != before;
        if entry.bindings.is_empty() {
            table.drop_key(key);
        }
        removed
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

    /// Calls `f` with each destination a message with this key and these
    /// headers goes to (possibly twice; the caller removes duplicates).
    /// Nothing is allocated for direct and fanout exchanges.
    pub fn route(
        &self,
        routing_key: &ShortStr,
        headers: Option<&FieldTable>,
        f: &mut dyn FnMut(&Destination),
    ) {
        let table = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        let map = &table.by_key;
        match self.spec.kind {
            ExchangeKind::Direct => {
                if let Some(e) = map.get(routing_key) {
                    e.bindings.iter().for_each(|b| f(&b.destination));
                }
            }
            ExchangeKind::Fanout => {
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
