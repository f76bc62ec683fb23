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
//! | `M` + msg id u64 | a message |
//! | `Q` + queue id u64 + seq u64 | an index entry: msg id u64, flags u8 |

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

/// Second byte of a vhost definition key.
pub(crate) const VHOST: u8 = b'v';
/// Second byte of an exchange definition key.
pub(crate) const EXCHANGE: u8 = b'e';
/// Second byte of a queue definition key.
pub(crate) const QUEUE: u8 = b'q';
/// Second byte of a binding definition key.
pub(crate) const BINDING: u8 = b'b';

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

fn definition(kind: u8, vhost: &str) -> BytesMut {
    let mut k = BytesMut::with_capacity(64);
    k.put_u8(DEFINITION);
    k.put_u8(kind);
    put_u32_prefixed(&mut k, vhost.as_bytes());
    k
}

fn put_u32_prefixed(k: &mut BytesMut, b: &[u8]) {
    // Vhost names come from connection.open (a shortstr) or the
    // configuration; either is far below 4 GiB.
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

/// A readable name for `key`, for error messages.
pub(crate) fn describe(key: &[u8]) -> String {
    match key {
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
    fn describe_names_messages_and_index_entries() {
        assert_eq!(describe(&message(42)), "message 42");
        assert_eq!(describe(&index(3, 17)), "index entry of queue 3 seq 17");
        assert_eq!(
            describe(&queue("/", &ShortStr::from("q"))),
            "key \"Dq\\x00\\x00\\x00\\x01/\\x01q\""
        );
    }
}
