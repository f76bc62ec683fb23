//! Key layout of the store's single sled tree.
//!
//! The first byte of a key says what the record is, so one `sled::Batch` can
//! touch definitions, messages and queue indexes atomically, and a prefix
//! scan finds one kind. Integers are big-endian so that a range scan yields
//! them in numeric order. Variable-length parts are length-prefixed, so no
//! two different records can share a key.
//!
//! | key | value |
//! | --- | --- |
//! | `V` | the format version, one byte |
//! | `D v` + u32 len + vhost | a vhost |
//! | `D e` + u32 len + vhost + u8 len + name | an exchange |
//! | `D q` + u32 len + vhost + u8 len + name | a durable queue |
//! | `D b` + u32 len + vhost + source + dest kind + dest + routing key + arguments table | a binding |
//! | `D u` + u32 len + user | a user |
//! | `D p` + u32 len + vhost + u32 len + user | a user's permissions in a vhost |
//! | `D t` + u32 len + vhost + u32 len + user + u32 len + exchange | a user's topic permissions on an exchange |
//! | `D l` + u32 len + vhost + `u` or `o` + u32 len + name | a policy (`u`) or an operator policy (`o`) |
//! | `S` + u32 len + name | a setting |
//! | `M` + msg id u64 | a message |
//! | `Q` + queue id u64 + seq u64 | an index entry: msg id u64, flags u8 |
//! | `X` + u32 len + vhost + u8 len + exchange + deadline u64 + seq u64 | a delayed message (encoded as an `M` value) |
//! | `I` + u32 len + vhost + u8 len + exchange + id | a deduplication exchange's cached id: expiry u64 (0: never), insertion number u64 |
//!
//! Permissions, topic permissions and policies put the vhost first, like
//! exchanges and queues, so that everything of one vhost is one prefix scan
//! per kind (`vhost_scope`). Administration names (users, policies,
//! exchanges in topic permissions) come from the management API rather than
//! from a shortstr, so they get u32 lengths. Settings are not definitions:
//! their own first byte keeps them out of the definitions scan.

use bytes::{BufMut, BytesMut};
use warren_codec::ShortStr;
use warren_codec::types::put_table;

use crate::records::{BindingRecord, Destination};

/// The key of the format version record.
pub(crate) const VERSION: &[u8] = b"V";
/// A scratch record written and removed to test whether the disk takes
/// writes again.
pub(crate) const PROBE: &[u8] = b"P";
/// First byte of every definition key.
pub(crate) const DEFINITION: u8 = b'D';
/// First byte of every message key.
pub(crate) const MESSAGE: u8 = b'M';
/// First byte of every queue index key.
pub(crate) const INDEX: u8 = b'Q';
/// First byte of every delayed-message key.
pub(crate) const DELAYED: u8 = b'X';
/// First byte of every deduplication id key.
pub(crate) const DEDUP: u8 = b'I';
/// First byte of every setting key.
pub(crate) const SETTING: u8 = b'S';

/// Second byte of a vhost definition key.
pub(crate) const VHOST: u8 = b'v';
/// Second byte of an exchange definition key.
pub(crate) const EXCHANGE: u8 = b'e';
/// Second byte of a queue definition key.
pub(crate) const QUEUE: u8 = b'q';
/// Second byte of a binding definition key.
pub(crate) const BINDING: u8 = b'b';
/// Second byte of a user definition key.
pub(crate) const USER: u8 = b'u';
/// Second byte of a permission definition key.
pub(crate) const PERMISSION: u8 = b'p';
/// Second byte of a topic permission definition key.
pub(crate) const TOPIC_PERMISSION: u8 = b't';
/// Second byte of a policy definition key (po*l*icy: `p` is taken).
pub(crate) const POLICY: u8 = b'l';

/// Byte after the vhost in a policy key: a user policy.
const USER_POLICY: u8 = b'u';
/// Byte after the vhost in a policy key: an operator policy.
const OPERATOR_POLICY: u8 = b'o';

/// The key of message `id`.
pub(crate) fn message(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = MESSAGE;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The key of the index entry `seq` of queue `queue`.
pub(crate) fn index(queue: u64, seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&index_prefix(queue));
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The prefix shared by every index entry of `queue`.
pub(crate) fn index_prefix(queue: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = INDEX;
    k[1..].copy_from_slice(&queue.to_be_bytes());
    k
}

/// The start of a definition key: `D`, `kind`, then `first` (the vhost,
/// or the user name for users), length-prefixed.
fn definition(kind: u8, first: &str) -> BytesMut {
    let mut k = BytesMut::with_capacity(64);
    k.put_u8(DEFINITION);
    k.put_u8(kind);
    put_u32_prefixed(&mut k, first.as_bytes());
    k
}

fn put_u32_prefixed(k: &mut BytesMut, b: &[u8]) {
    // Names come from connection.open (a shortstr), the configuration or
    // the management API; all are far below 4 GiB.
    k.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    k.put_slice(b);
}

fn put_short(k: &mut BytesMut, s: &ShortStr) {
    // ShortStr guarantees at most 255 bytes.
    k.put_u8(s.len() as u8);
    k.put_slice(s.as_bytes());
}

/// The key of vhost `name`.
pub(crate) fn vhost(name: &str) -> BytesMut {
    definition(VHOST, name)
}

/// The key of exchange `name` in `vhost`.
pub(crate) fn exchange(vhost: &str, name: &ShortStr) -> BytesMut {
    let mut k = definition(EXCHANGE, vhost);
    put_short(&mut k, name);
    k
}

/// The key of queue `name` in `vhost`.
pub(crate) fn queue(vhost: &str, name: &ShortStr) -> BytesMut {
    let mut k = definition(QUEUE, vhost);
    put_short(&mut k, name);
    k
}

/// The key of a binding: every field, arguments included, so that two
/// bindings differing only in their arguments are two records, as in AMQP.
pub(crate) fn binding(r: &BindingRecord) -> BytesMut {
    let mut k = definition(BINDING, &r.vhost);
    put_short(&mut k, &r.source);
    match &r.destination {
        Destination::Queue(q) => {
            k.put_u8(b'q');
            put_short(&mut k, q);
        }
        Destination::Exchange(e) => {
            k.put_u8(b'e');
            put_short(&mut k, e);
        }
    }
    put_short(&mut k, &r.routing_key);
    put_table(&mut k, &r.arguments);
    k
}

/// The key of user `name`.
pub(crate) fn user(name: &str) -> BytesMut {
    definition(USER, name)
}

/// The key of `user`'s permissions in `vhost`.
pub(crate) fn permission(vhost: &str, user: &str) -> BytesMut {
    let mut k = definition(PERMISSION, vhost);
    put_u32_prefixed(&mut k, user.as_bytes());
    k
}

/// The key of `user`'s topic permissions on `exchange` in `vhost`.
pub(crate) fn topic_permission(vhost: &str, user: &str, exchange: &str) -> BytesMut {
    let mut k = definition(TOPIC_PERMISSION, vhost);
    put_u32_prefixed(&mut k, user.as_bytes());
    put_u32_prefixed(&mut k, exchange.as_bytes());
    k
}

/// The key of policy `name` in `vhost`; operator policies and user
/// policies are separate namespaces.
pub(crate) fn policy(vhost: &str, name: &str, operator: bool) -> BytesMut {
    let mut k = definition(POLICY, vhost);
    k.put_u8(if operator {
        OPERATOR_POLICY
    } else {
        USER_POLICY
    });
    put_u32_prefixed(&mut k, name.as_bytes());
    k
}

/// The prefix shared by every `kind` definition of `vhost` (and of no
/// other vhost: the length in the prefix keeps `a` from matching `ab`).
pub(crate) fn vhost_scope(kind: u8, vhost: &str) -> BytesMut {
    definition(kind, vhost)
}

/// The key of setting `name`.
pub(crate) fn setting(name: &str) -> BytesMut {
    let mut k = BytesMut::with_capacity(name.len() + 5);
    k.put_u8(SETTING);
    put_u32_prefixed(&mut k, name.as_bytes());
    k
}

/// A readable name for `key`, for error messages.
pub(crate) fn describe(key: &[u8]) -> String {
    match key {
        [SETTING, _, _, _, _, name @ ..] => {
            format!("setting \"{}\"", name.escape_ascii())
        }
        [MESSAGE, id @ ..] if id.len() == 8 => {
            format!("message {}", be_u64(id))
        }
        [INDEX, rest @ ..] if rest.len() == 16 => {
            format!(
                "index entry of queue {} seq {}",
                be_u64(&rest[..8]),
                be_u64(&rest[8..])
            )
        }
        b"V" => "format version record".to_owned(),
        _ => format!("key \"{}\"", key.escape_ascii()),
    }
}

/// The key of a message held by the delayed exchange `exchange` of
/// `vhost` until `deadline` (Unix milliseconds), `seq` telling apart those
/// with one deadline.
pub(crate) fn delayed(vhost: &str, exchange: &ShortStr, deadline: u64, seq: u64) -> BytesMut {
    let mut k = BytesMut::with_capacity(32 + vhost.len() + exchange.len());
    k.put_u8(DELAYED);
    put_u32_prefixed(&mut k, vhost.as_bytes());
    put_short(&mut k, exchange);
    k.put_u64(deadline);
    k.put_u64(seq);
    k
}

/// Splits a delayed-message key into (vhost, exchange, deadline, seq);
/// `None` when it is not one.
pub(crate) fn parse_delayed(k: &[u8]) -> Option<(String, ShortStr, u64, u64)> {
    let (vhost, exchange, tail) = parse_vhost_exchange(k.strip_prefix(&[DELAYED])?)?;
    if tail.len() != 16 {
        return None;
    }
    Some((vhost, exchange, be_u64(&tail[..8]), be_u64(&tail[8..])))
}

/// The key of the id `id` cached by the deduplication exchange
/// `exchange` of `vhost` (the id last: the rest is its length).
pub(crate) fn dedup(vhost: &str, exchange: &ShortStr, id: &[u8]) -> BytesMut {
    let mut k = BytesMut::with_capacity(6 + vhost.len() + exchange.len() + id.len());
    k.put_u8(DEDUP);
    put_u32_prefixed(&mut k, vhost.as_bytes());
    put_short(&mut k, exchange);
    k.put_slice(id);
    k
}

/// Splits a deduplication id key into (vhost, exchange, id); `None` when
/// it is not one.
pub(crate) fn parse_dedup(k: &[u8]) -> Option<(String, ShortStr, &[u8])> {
    parse_vhost_exchange(k.strip_prefix(&[DEDUP])?)
}

/// Reads the vhost and exchange a key starts with (after its first byte,
/// as [`put_u32_prefixed`] and [`put_short`] wrote them): (vhost,
/// exchange, the rest).
fn parse_vhost_exchange(k: &[u8]) -> Option<(String, ShortStr, &[u8])> {
    let len = u32::from_be_bytes(k.get(..4)?.try_into().ok()?) as usize;
    let vhost = String::from_utf8(k.get(4..4 + len)?.to_vec()).ok()?;
    let rest = k.get(4 + len..)?;
    let xlen = *rest.first()? as usize;
    let exchange = ShortStr::from_slice(rest.get(1..1 + xlen)?)?;
    Some((vhost, exchange, rest.get(1 + xlen..)?))
}

/// Reads a big-endian u64 from exactly eight bytes (callers check the length).
pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::FieldTable;

    #[test]
    fn integer_keys_sort_numerically() {
        assert!(message(255) < message(256));
        assert!(index(1, u64::MAX) < index(2, 0));
        assert!(index(7, 9).starts_with(&index_prefix(7)));
    }

    #[test]
    fn binding_keys_differ_in_every_field() {
        let base = BindingRecord {
            vhost: "/".to_owned(),
            source: ShortStr::from("x"),
            destination: Destination::Queue(ShortStr::from("q")),
            routing_key: ShortStr::from("rk"),
            arguments: FieldTable::new(),
        };
        let mut as_exchange = base.clone();
        as_exchange.destination = Destination::Exchange(ShortStr::from("q"));
        let mut with_args = base.clone();
        with_args
            .arguments
            .insert("a", warren_codec::FieldValue::Bool(true));
        // "x" + "q" must not collide with "xq" + "": lengths are in the key.
        let mut shifted = base.clone();
        shifted.source = ShortStr::from("xq");
        let keys = [&base, &as_exchange, &with_args, &shifted].map(binding);
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn administration_keys_do_not_collide() {
        let keys = [
            user("a"),
            user("ab"),
            user(""),
            permission("a", "b"),
            permission("ab", ""),
            permission("", "ab"),
            permission("b", "a"),
            topic_permission("a", "b", "c"),
            topic_permission("a", "bc", ""),
            topic_permission("a", "", "bc"),
            topic_permission("ab", "c", ""),
            policy("a", "p", false),
            policy("a", "p", true),
            policy("ap", "", false),
            policy("a/", "p", false),
            policy("a", "/p", false),
            setting("a"),
            setting(""),
            vhost("a"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_vhost_scope_holds_that_vhost_only() {
        let scope = vhost_scope(PERMISSION, "a");
        assert!(permission("a", "u").starts_with(&scope));
        assert!(!permission("ab", "u").starts_with(&scope));
        assert!(!permission("", "au").starts_with(&scope));
        let scope = vhost_scope(POLICY, "a");
        assert!(policy("a", "p", false).starts_with(&scope));
        assert!(policy("a", "p", true).starts_with(&scope));
        assert!(!policy("a/b", "p", true).starts_with(&scope));
        let scope = vhost_scope(TOPIC_PERMISSION, "/");
        assert!(topic_permission("/", "u", "x").starts_with(&scope));
        assert!(!permission("/", "u").starts_with(&scope));
    }

    #[test]
    fn describe_names_messages_and_index_entries() {
        assert_eq!(describe(&message(42)), "message 42");
        assert_eq!(describe(&index(3, 17)), "index entry of queue 3 seq 17");
        assert_eq!(
            describe(&queue("/", &ShortStr::from("q"))),
            "key \"Dq\\x00\\x00\\x00\\x01/\\x01q\""
        );
        assert_eq!(
            describe(&setting("seeded/ü")),
            "setting \"seeded/\\xc3\\xbc\""
        );
    }
}
