//! Policies and operator policies, as RabbitMQ has them: a name, a
//! pattern (an unanchored regular expression over queue or exchange
//! names), what they apply to, a priority and a definition. On each queue
//! and exchange the matching policy of highest priority applies, and so
//! does the matching operator policy of highest priority; they are
//! re-applied whenever policies change.
//!
//! Where a policy and a declare argument both set a key, RabbitMQ's rule
//! per key decides ([`merge`]): the lower number wins for `message-ttl`,
//! `expires`, `max-length`, `max-length-bytes`, `delivery-limit` and
//! `consumer-timeout`; the argument wins for `overflow`,
//! `dead-letter-exchange`, `dead-letter-routing-key`,
//! `dead-letter-strategy`, `queue-mode` and `alternate-exchange`; the
//! policy wins for the deduplication plugin's keys
//! (`x-message-deduplication`, `x-cache-size`, `x-cache-ttl`,
//! `x-cache-persistence`), as the plugin reads them.

use regex::Regex;
use warren_codec::{FieldTable, FieldValue, LongStr, ShortStr};

/// What a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Queues of every type.
    Queues,
    /// Exchanges.
    Exchanges,
    /// Both.
    All,
    /// Classic queues only.
    ClassicQueues,
    /// Quorum queues only.
    QuorumQueues,
}

impl ApplyTo {
    /// Parses RabbitMQ's `apply-to` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queues" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            _ => return None,
        })
    }

    /// RabbitMQ's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
        }
    }

    fn queues(self, quorum: bool) -> bool {
        match self {
            ApplyTo::Queues | ApplyTo::All => true,
            ApplyTo::ClassicQueues => !quorum,
            ApplyTo::QuorumQueues => quorum,
            ApplyTo::Exchanges => false,
        }
    }

    fn exchanges(self) -> bool {
        matches!(self, ApplyTo::Exchanges | ApplyTo::All)
    }
}

/// A policy (or an operator policy) of one vhost.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its vhost.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// The pattern, as given.
    pub pattern: String,
    regex: Regex,
    /// What it applies to.
    pub apply_to: ApplyTo,
    /// Higher wins.
    pub priority: i64,
    /// The keys it sets (`message-ttl`, `max-length`, ...).
    pub definition: FieldTable,
    /// An operator policy (set by operators, merged over user policies).
    pub operator: bool,
}

/// Keys a user policy may set, with how a value is checked.
const POLICY_KEYS: &[(&str, Check)] = &[
    ("message-ttl", Check::NonNegative),
    ("expires", Check::Positive),
    ("max-length", Check::NonNegative),
    ("max-length-bytes", Check::NonNegative),
    (
        "overflow",
        Check::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
    ),
    ("dead-letter-exchange", Check::Text),
    ("dead-letter-routing-key", Check::Text),
    ("alternate-exchange", Check::Text),
    ("delivery-limit", Check::NonNegative),
    // RabbitMQ 3.12's per-queue consumer timeout, in milliseconds.
    ("consumer-timeout", Check::NonNegative),
    (
        "dead-letter-strategy",
        Check::OneOf(&["at-most-once", "at-least-once"]),
    ),
    ("queue-mode", Check::OneOf(&["default", "lazy"])),
    ("max-in-memory-length", Check::NonNegative),
    ("max-in-memory-bytes", Check::NonNegative),
    // Mirroring settings: a single node has nothing to mirror to, so
    // they are accepted and change nothing, as on a one-node RabbitMQ.
    ("ha-mode", Check::OneOf(&["all", "exactly", "nodes"])),
    ("ha-params", Check::Any),
    ("ha-sync-mode", Check::OneOf(&["manual", "automatic"])),
    ("ha-sync-batch-size", Check::Positive),
    (
        "ha-promote-on-shutdown",
        Check::OneOf(&["always", "when-synced"]),
    ),
    (
        "ha-promote-on-failure",
        Check::OneOf(&["always", "when-synced"]),
    ),
    // The deduplication plugin's keys (v0.6.x registers them as policy
    // validators), with its own texts.
    ("x-message-deduplication", Check::Plugin),
    ("x-cache-size", Check::Plugin),
    ("x-cache-ttl", Check::Plugin),
    ("x-cache-persistence", Check::Plugin),
];

/// Keys an operator policy may set.
const OPERATOR_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "max-in-memory-length",
    "max-in-memory-bytes",
];

#[derive(Debug, Clone, Copy)]
enum Check {
    NonNegative,
    Positive,
    Text,
    OneOf(&'static [&'static str]),
    Any,
    /// Checked as the deduplication plugin checks it ([`plugin_check`]).
    Plugin,
}

/// The deduplication plugin's check of one of its policy keys, with its
/// text: `x-message-deduplication` a boolean, `x-cache-size` and
/// `x-cache-ttl` integers above 0 (not numeric strings, which its
/// exchange arguments take), `x-cache-persistence` `disk` or `memory`.
fn plugin_check(key: &str, v: &FieldValue) -> Result<(), String> {
    let (ok, must) = match key {
        "x-message-deduplication" => (matches!(v, FieldValue::Bool(_)), "must be a boolean"),
        "x-cache-size" | "x-cache-ttl" => (
            v.as_i64().is_some_and(|n| n > 0),
            "must be an integer greater than 0",
        ),
        _ => (
            matches!(v, FieldValue::LongStr(s) if matches!(s.as_bytes(), b"disk" | b"memory")),
            "must be either 'disk' or 'memory'",
        ),
    };
    if ok {
        return Ok(());
    }
    // The value as Erlang's `~p` prints it.
    let shown = match v {
        FieldValue::LongStr(s) => format!("<<\"{}\">>", s.to_lossy()),
        other => other.to_string(),
    };
    Err(format!(
        "Validation failed\n\n'{key}' {must}, got {shown}\n"
    ))
}

fn check_value(key: &str, check: Check, v: &FieldValue) -> Result<(), String> {
    let ok = match check {
        Check::NonNegative => v.as_i64().is_some_and(|n| n >= 0),
        Check::Positive => v.as_i64().is_some_and(|n| n >= 1),
        Check::Text => matches!(v, FieldValue::LongStr(_)),
        Check::OneOf(allowed) => match v {
            FieldValue::LongStr(s) => allowed.iter().any(|a| a.as_bytes() == s.as_bytes()),
            _ => false,
        },
        Check::Any => true,
        Check::Plugin => return plugin_check(key, v),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Validation failed\n\n{v} is not a valid value for {key}\n"
        ))
    }
}

impl Policy {
    /// A checked policy; RabbitMQ's validation text otherwise.
    pub fn new(
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: FieldTable,
        operator: bool,
    ) -> Result<Self, String> {
        let regex = Regex::new(pattern).map_err(|e| format!("Validation failed\n\n{e}\n"))?;
        let apply_to = ApplyTo::parse(apply_to).ok_or_else(|| {
            format!("Validation failed\n\n\"{apply_to}\" is not a valid apply-to value\n")
        })?;
        if definition.0.is_empty() {
            return Err("Validation failed\n\nno policy provided\n".to_string());
        }
        let mut unknown = Vec::new();
        for (k, v) in &definition.0 {
            let key = k.to_lossy();
            let known = POLICY_KEYS.iter().find(|(name, _)| *name == key);
            match known {
                Some((_, check)) if !operator || OPERATOR_KEYS.contains(&key.as_ref()) => {
                    check_value(&key, *check, v)?;
                }
                _ => unknown.push(format!("<<\"{key}\">>")),
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "Validation failed\n\n[{}] are not recognised policy settings\n",
                unknown.join(",")
            ));
        }
        Ok(Policy {
            vhost: vhost.to_string(),
            name: name.to_string(),
            pattern: pattern.to_string(),
            regex,
            apply_to,
            priority,
            definition,
            operator,
        })
    }

    /// Whether it applies to the queue `name` (a quorum queue or not).
    pub fn matches_queue(&self, name: &[u8], quorum: bool) -> bool {
        self.apply_to.queues(quorum) && self.regex.is_match(&String::from_utf8_lossy(name))
    }

    /// Whether it applies to the exchange `name`.
    pub fn matches_exchange(&self, name: &[u8]) -> bool {
        self.apply_to.exchanges() && self.regex.is_match(&String::from_utf8_lossy(name))
    }
}

/// Of `policies`, the one that applies: the highest priority among those
/// `matches` accepts (ties: the first by name).
pub fn pick<'a>(
    policies: impl IntoIterator<Item = &'a std::sync::Arc<Policy>>,
    matches: impl Fn(&Policy) -> bool,
) -> Option<std::sync::Arc<Policy>> {
    let mut best: Option<&std::sync::Arc<Policy>> = None;
    for p in policies {
        if !matches(p) {
            continue;
        }
        best = match best {
            Some(b)
                if b.priority > p.priority || (b.priority == p.priority && b.name <= p.name) =>
            {
                Some(b)
            }
            _ => Some(p),
        };
    }
    best.cloned()
}

/// Keys whose lower value wins wherever two sources set them.
const LOWER_WINS: &[&str] = &[
    "consumer-timeout",
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "max-in-memory-length",
    "max-in-memory-bytes",
];

/// Keys whose policy value wins over the declare argument: the
/// deduplication plugin reads a queue's policy before its arguments, and
/// applies an exchange's policy over its arguments.
const POLICY_WINS: &[&str] = &[
    "x-message-deduplication",
    "x-cache-size",
    "x-cache-ttl",
    "x-cache-persistence",
];

/// The effective definition of a user policy and an operator policy on one
/// object: the operator's value where only it sets a key, the lower number
/// where both do.
pub fn effective_definition(user: Option<&Policy>, op: Option<&Policy>) -> FieldTable {
    let mut out = user.map(|p| p.definition.clone()).unwrap_or_default();
    if let Some(op) = op {
        for (k, v) in &op.definition.0 {
            match out.0.iter_mut().find(|(ok, _)| ok == k) {
                Some((_, existing)) => {
                    if LOWER_WINS.contains(&k.to_lossy().as_ref())
                        && let (Some(a), Some(b)) = (existing.as_i64(), v.as_i64())
                        && b < a
                    {
                        *existing = v.clone();
                    }
                }
                None => out.insert(k.clone(), v.clone()),
            }
        }
    }
    out
}

/// A queue's (or exchange's) declare arguments with an effective policy
/// definition merged in, as `x-` arguments, by RabbitMQ's rule per key:
/// the lower number wins for limits and TTLs; the deduplication plugin's
/// keys (already named `x-...`) take the policy's value; the argument
/// wins for the rest.
pub fn merge(arguments: &FieldTable, definition: &FieldTable) -> FieldTable {
    let mut out = arguments.clone();
    for (k, v) in &definition.0 {
        let key = k.to_lossy();
        let arg = if key == "alternate-exchange" || key.starts_with("x-") {
            // The deduplication plugin's keys are named as its arguments.
            key.to_string()
        } else {
            format!("x-{key}")
        };
        let arg_key = ShortStr::truncating(&arg);
        match out.0.iter_mut().find(|(ok, _)| *ok == arg_key) {
            Some((_, existing)) => {
                if POLICY_WINS.contains(&key.as_ref()) {
                    *existing = v.clone();
                } else if LOWER_WINS.contains(&key.as_ref())
                    && let (Some(a), Some(b)) = (existing.as_i64(), v.as_i64())
                    && b < a
                {
                    *existing = v.clone();
                }
            }
            None => out.insert(arg_key, v.clone()),
        }
    }
    out
}

/// A text value for a definition, as JSON strings arrive.
pub fn text(s: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(pairs: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in pairs {
            t.insert(*k, v.clone());
        }
        t
    }

    #[test]
    fn unknown_and_invalid_keys_are_refused_with_rabbitmqs_words() {
        let e = Policy::new(
            "/",
            "p",
            ".*",
            "queues",
            0,
            def(&[("max-priority", FieldValue::I64(10))]),
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "Validation failed\n\n[<<\"max-priority\">>] are not recognised policy settings\n"
        );
        assert!(
            Policy::new(
                "/",
                "p",
                ".*",
                "queues",
                0,
                def(&[("message-ttl", FieldValue::I64(-1))]),
                false
            )
            .is_err()
        );
        assert!(
            Policy::new(
                "/",
                "p",
                ".*",
                "queues",
                0,
                def(&[("overflow", text("nope"))]),
                false
            )
            .is_err()
        );
        assert!(
            Policy::new(
                "/",
                "p",
                "(",
                "queues",
                0,
                def(&[("expires", FieldValue::I64(5))]),
                false
            )
            .is_err()
        );
        assert!(
            Policy::new(
                "/",
                "p",
                ".*",
                "widgets",
                0,
                def(&[("expires", FieldValue::I64(5))]),
                false
            )
            .is_err()
        );
        // Operator policies take only limits and TTLs.
        assert!(
            Policy::new(
                "/",
                "p",
                ".*",
                "queues",
                0,
                def(&[("dead-letter-exchange", text("x"))]),
                true
            )
            .is_err()
        );
        assert!(
            Policy::new(
                "/",
                "p",
                ".*",
                "queues",
                0,
                def(&[("max-length", FieldValue::I64(5))]),
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn the_deduplication_plugins_keys_are_checked_with_its_words() {
        let new = |k: &str, v: FieldValue| {
            Policy::new("/", "p", ".*", "all", 0, def(&[(k, v)]), false).map(|_| ())
        };
        assert!(new("x-message-deduplication", FieldValue::Bool(true)).is_ok());
        assert!(new("x-message-deduplication", FieldValue::Bool(false)).is_ok());
        assert_eq!(
            new("x-message-deduplication", text("true")).unwrap_err(),
            "Validation failed\n\n'x-message-deduplication' must be a boolean, got <<\"true\">>\n"
        );
        assert!(new("x-cache-size", FieldValue::I64(100)).is_ok());
        assert_eq!(
            new("x-cache-size", FieldValue::I64(0)).unwrap_err(),
            "Validation failed\n\n'x-cache-size' must be an integer greater than 0, got 0\n"
        );
        // Unlike its exchange arguments, a numeric string is refused.
        assert!(new("x-cache-size", text("100")).is_err());
        assert!(new("x-cache-ttl", FieldValue::I64(100)).is_ok());
        assert!(new("x-cache-ttl", FieldValue::I64(-1)).is_err());
        assert!(new("x-cache-persistence", text("disk")).is_ok());
        assert!(new("x-cache-persistence", text("memory")).is_ok());
        assert_eq!(
            new("x-cache-persistence", text("true")).unwrap_err(),
            "Validation failed\n\n'x-cache-persistence' must be either 'disk' or 'memory', got <<\"true\">>\n"
        );
        // Not operator policy keys.
        assert!(
            Policy::new(
                "/",
                "p",
                ".*",
                "all",
                0,
                def(&[("x-cache-size", FieldValue::I64(5))]),
                true
            )
            .is_err()
        );
        // Merged under their own names, the policy's value winning.
        let args = def(&[("x-message-deduplication", FieldValue::Bool(true))]);
        let m = merge(
            &args,
            &def(&[("x-message-deduplication", FieldValue::Bool(false))]),
        );
        assert_eq!(
            m.get("x-message-deduplication"),
            Some(&FieldValue::Bool(false))
        );
        assert_eq!(m.0.len(), 1);
    }

    #[test]
    fn arguments_and_policies_merge_by_key() {
        let args = def(&[
            ("x-message-ttl", FieldValue::I64(1000)),
            ("x-dead-letter-exchange", text("from-arg")),
        ]);
        let policy = def(&[
            ("message-ttl", FieldValue::I64(500)),
            ("dead-letter-exchange", text("from-policy")),
            ("max-length", FieldValue::I64(10)),
        ]);
        let m = merge(&args, &policy);
        assert_eq!(m.get("x-message-ttl"), Some(&FieldValue::I64(500)));
        assert_eq!(m.get("x-dead-letter-exchange"), Some(&text("from-arg")));
        assert_eq!(m.get("x-max-length"), Some(&FieldValue::I64(10)));
        // A larger policy value does not raise the argument's.
        let m = merge(&args, &def(&[("message-ttl", FieldValue::I64(5000))]));
        assert_eq!(m.get("x-message-ttl"), Some(&FieldValue::I64(1000)));
    }

    #[test]
    fn the_highest_priority_match_applies() {
        let p = |name: &str, pattern: &str, prio: i64| {
            std::sync::Arc::new(
                Policy::new(
                    "/",
                    name,
                    pattern,
                    "queues",
                    prio,
                    def(&[("max-length", FieldValue::I64(1))]),
                    false,
                )
                .unwrap(),
            )
        };
        let all = [p("low", ".*", 0), p("high", "^a", 5), p("other", "^b", 9)];
        let got = pick(&all, |x| x.matches_queue(b"abc", false)).unwrap();
        assert_eq!(got.name, "high");
        assert!(pick(&all, |x| x.matches_exchange(b"abc")).is_none());
    }
}
