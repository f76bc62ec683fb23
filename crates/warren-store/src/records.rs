//! The records the store keeps, and their value encoding.
//!
//! Every value starts with the format version byte ([`FORMAT_VERSION`]),
//! followed by AMQP wire encodings (shortstr, longstr, field table, the
//! `basic` content header properties) so that the codec's tested encoders do
//! the work and a stored message reads back exactly as it was published.

use bytes::{BufMut, Bytes, BytesMut};
use warren_codec::types::{put_shortstr, put_table};
use warren_codec::{BasicProperties, DecodeError, FieldTable, Reader, ShortStr};

use crate::FORMAT_VERSION;

/// A persistent message as published: where it was published to, its
/// properties and its body. Which queues hold it is in the queue indexes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredMessage {
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// Its content header properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}

/// A durable queue's definition (transient queues are never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRecord {
    /// The broker's id for the queue, the key of its index entries.
    pub id: u64,
    /// The vhost it lives in.
    pub vhost: String,
    /// Its name.
    pub name: ShortStr,
    /// Whether it is deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Its declare arguments (`x-message-ttl`, `x-max-length`, ...).
    pub arguments: FieldTable,
}

/// A durable exchange's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeRecord {
    /// The vhost it lives in.
    pub vhost: String,
    /// Its name.
    pub name: ShortStr,
    /// Its type: `direct`, `fanout`, `topic`, `headers`, ...
    pub kind: String,
    /// Whether it is deleted when its last binding goes.
    pub auto_delete: bool,
    /// Whether clients may not publish to it directly.
    pub internal: bool,
    /// Its declare arguments (`alternate-exchange`, ...).
    pub arguments: FieldTable,
}

/// What a binding routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A queue, by name (same vhost as the binding).
    Queue(ShortStr),
    /// An exchange, by name (exchange-to-exchange binding).
    Exchange(ShortStr),
}

/// A binding between two durable entities.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    /// The vhost of the source and the destination.
    pub vhost: String,
    /// The source exchange.
    pub source: ShortStr,
    /// The queue or exchange it routes to.
    pub destination: Destination,
    /// The binding key.
    pub routing_key: ShortStr,
    /// The binding arguments (matched by `headers` exchanges).
    pub arguments: FieldTable,
}

/// Everything the broker must recreate before it accepts connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// Vhost names.
    pub vhosts: Vec<String>,
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeRecord>,
    /// Durable queues.
    pub queues: Vec<QueueRecord>,
    /// Bindings between durable entities.
    pub bindings: Vec<BindingRecord>,
}

/// One message in one queue: the queue's `seq` orders it, `msg_id` finds
/// its [`StoredMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Position in the queue (ascending = delivery order).
    pub seq: u64,
    /// The message's id.
    pub msg_id: u64,
    /// Whether it was delivered at least once (the `redelivered` flag after
    /// a restart).
    pub delivered: bool,
}

/// Why a value did not decode; the store adds the key.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The record's version byte is newer than [`FORMAT_VERSION`].
    Newer(u8),
    /// Anything else, as text.
    Bad(String),
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Failure::Bad(e.to_string())
    }
}

/// Flag bit of an index entry: delivered at least once.
const DELIVERED: u8 = 1;
/// Flag bit of a queue or exchange: auto-delete.
const AUTO_DELETE: u8 = 1;
/// Flag bit of an exchange: internal.
const INTERNAL: u8 = 2;

fn start(capacity: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(capacity + 1);
    b.put_u8(FORMAT_VERSION);
    b
}

/// Writes a length-prefixed (u32) string or body.
fn put_long(b: &mut BytesMut, s: &[u8]) {
    // Frame and message size limits keep every value far below 4 GiB; a
    // saturated length would fail to decode rather than be misread.
    b.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    b.put_slice(s);
}

/// A reader over `value` that has checked the version byte.
fn open(value: &Bytes) -> Result<Reader<'_>, Failure> {
    let mut r = Reader::new(value);
    match r.u8()? {
        FORMAT_VERSION => Ok(r),
        v if v > FORMAT_VERSION => Err(Failure::Newer(v)),
        v => Err(Failure::Bad(format!("unknown record version {v}"))),
    }
}

fn read_string(r: &mut Reader<'_>) -> Result<String, Failure> {
    let s = r.longstr()?;
    String::from_utf8(s.0.to_vec()).map_err(|_| Failure::Bad("a name is not UTF-8".to_owned()))
}

fn read_flags(r: &mut Reader<'_>, known: u8) -> Result<u8, Failure> {
    let f = r.u8()?;
    if f & !known != 0 {
        return Err(Failure::Bad(format!("unknown flags {f:#04x}")));
    }
    Ok(f)
}

pub(crate) fn encode_message(m: &StoredMessage) -> BytesMut {
    let mut b = start(m.exchange.len() + m.routing_key.len() + m.body.len() + 64);
    put_shortstr(&mut b, &m.exchange);
    put_shortstr(&mut b, &m.routing_key);
    m.properties.encode(&mut b);
    put_long(&mut b, &m.body);
    b
}

pub(crate) fn decode_message(value: &Bytes) -> Result<StoredMessage, Failure> {
    let mut r = open(value)?;
    let exchange = r.shortstr()?;
    let routing_key = r.shortstr()?;
    let properties = BasicProperties::decode(&mut r)?;
    let len = r.u32()?;
    let body = r.bytes(len as usize)?;
    r.finish()?;
    Ok(StoredMessage {
        exchange,
        routing_key,
        properties,
        body,
    })
}

pub(crate) fn encode_index(msg_id: u64, delivered: bool) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[0] = FORMAT_VERSION;
    b[1..9].copy_from_slice(&msg_id.to_be_bytes());
    b[9] = if delivered { DELIVERED } else { 0 };
    b
}

/// Decodes an index value into `(msg_id, delivered)`.
pub(crate) fn decode_index(value: &Bytes) -> Result<(u64, bool), Failure> {
    let mut r = open(value)?;
    let msg_id = r.u64()?;
    let flags = read_flags(&mut r, DELIVERED)?;
    r.finish()?;
    Ok((msg_id, flags & DELIVERED != 0))
}

pub(crate) fn encode_vhost(name: &str) -> BytesMut {
    let mut b = start(name.len() + 4);
    put_long(&mut b, name.as_bytes());
    b
}

pub(crate) fn decode_vhost(value: &Bytes) -> Result<String, Failure> {
    let mut r = open(value)?;
    let name = read_string(&mut r)?;
    r.finish()?;
    Ok(name)
}

pub(crate) fn encode_exchange(x: &ExchangeRecord) -> BytesMut {
    let mut b = start(64);
    put_long(&mut b, x.vhost.as_bytes());
    put_shortstr(&mut b, &x.name);
    put_long(&mut b, x.kind.as_bytes());
    let mut flags = 0;
    if x.auto_delete {
        flags |= AUTO_DELETE;
    }
    if x.internal {
        flags |= INTERNAL;
    }
    b.put_u8(flags);
    put_table(&mut b, &x.arguments);
    b
}

pub(crate) fn decode_exchange(value: &Bytes) -> Result<ExchangeRecord, Failure> {
    let mut r = open(value)?;
    let vhost = read_string(&mut r)?;
    let name = r.shortstr()?;
    let kind = read_string(&mut r)?;
    let flags = read_flags(&mut r, AUTO_DELETE | INTERNAL)?;
    let arguments = r.table()?;
    r.finish()?;
    Ok(ExchangeRecord {
        vhost,
        name,
        kind,
        auto_delete: flags & AUTO_DELETE != 0,
        internal: flags & INTERNAL != 0,
        arguments,
    })
}

pub(crate) fn encode_queue(q: &QueueRecord) -> BytesMut {
    let mut b = start(64);
    b.put_u64(q.id);
    put_long(&mut b, q.vhost.as_bytes());
    put_shortstr(&mut b, &q.name);
    b.put_u8(if q.auto_delete { AUTO_DELETE } else { 0 });
    put_table(&mut b, &q.arguments);
    b
}

pub(crate) fn decode_queue(value: &Bytes) -> Result<QueueRecord, Failure> {
    let mut r = open(value)?;
    let id = r.u64()?;
    let vhost = read_string(&mut r)?;
    let name = r.shortstr()?;
    let flags = read_flags(&mut r, AUTO_DELETE)?;
    let arguments = r.table()?;
    r.finish()?;
    Ok(QueueRecord {
        id,
        vhost,
        name,
        auto_delete: flags & AUTO_DELETE != 0,
        arguments,
    })
}

pub(crate) fn encode_binding(x: &BindingRecord) -> BytesMut {
    let mut b = start(64);
    put_long(&mut b, x.vhost.as_bytes());
    put_shortstr(&mut b, &x.source);
    match &x.destination {
        Destination::Queue(q) => {
            b.put_u8(b'q');
            put_shortstr(&mut b, q);
        }
        Destination::Exchange(e) => {
            b.put_u8(b'e');
            put_shortstr(&mut b, e);
        }
    }
    put_shortstr(&mut b, &x.routing_key);
    put_table(&mut b, &x.arguments);
    b
}

pub(crate) fn decode_binding(value: &Bytes) -> Result<BindingRecord, Failure> {
    let mut r = open(value)?;
    let vhost = read_string(&mut r)?;
    let source = r.shortstr()?;
    let destination = match r.u8()? {
        b'q' => Destination::Queue(r.shortstr()?),
        b'e' => Destination::Exchange(r.shortstr()?),
        other => {
            return Err(Failure::Bad(format!(
                "unknown destination kind {other:#04x}"
            )));
        }
    };
    let routing_key = r.shortstr()?;
    let arguments = r.table()?;
    r.finish()?;
    Ok(BindingRecord {
        vhost,
        source,
        destination,
        routing_key,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::{Decimal, FieldValue, LongStr};

    /// A table with every field value type, a nested table and an array.
    pub(crate) fn rich_table() -> FieldTable {
        let inner = FieldTable::new()
            .with(
                "deep",
                FieldValue::Table(FieldTable::new().with("n", FieldValue::I64(-1))),
            )
            .with("s", FieldValue::LongStr(LongStr::from("inner")));
        FieldTable::new()
            .with("t", FieldValue::Bool(true))
            .with("b", FieldValue::I8(-8))
            .with("B", FieldValue::U8(8))
            .with("s", FieldValue::I16(-16))
            .with("u", FieldValue::U16(16))
            .with("I", FieldValue::I32(-32))
            .with("i", FieldValue::U32(32))
            .with("l", FieldValue::I64(-64))
            .with("f", FieldValue::F32(1.5))
            .with("d", FieldValue::F64(-2.25))
            .with(
                "D",
                FieldValue::Decimal(Decimal {
                    scale: 2,
                    value: 12345,
                }),
            )
            .with("S", FieldValue::LongStr(LongStr::from("long string")))
            .with("x", FieldValue::Bytes(Bytes::from_static(&[0, 1, 2, 255])))
            .with(
                "A",
                FieldValue::Array(vec![
                    FieldValue::I32(1),
                    FieldValue::Table(inner.clone()),
                    FieldValue::Array(vec![FieldValue::Void]),
                ]),
            )
            .with("T", FieldValue::Timestamp(1_700_000_000))
            .with("F", FieldValue::Table(inner))
            .with("V", FieldValue::Void)
            .with("t", FieldValue::Bool(false))
    }

    pub(crate) fn full_properties() -> BasicProperties {
        BasicProperties {
            content_type: Some(ShortStr::from("application/json")),
            content_encoding: Some(ShortStr::from("gzip")),
            headers: Some(rich_table()),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some(ShortStr::from("corr")),
            reply_to: Some(ShortStr::from("amq.rabbitmq.reply-to")),
            expiration: Some(ShortStr::from("60000")),
            message_id: Some(ShortStr::from("id-1")),
            timestamp: Some(1_700_000_001),
            kind: Some(ShortStr::from("order.created")),
            user_id: Some(ShortStr::from("guest")),
            app_id: Some(ShortStr::from("warren-test")),
            cluster_id: Some(ShortStr::from("c1")),
        }
    }

    fn ok<T>(r: Result<T, Failure>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("decode failed: {e:?}"),
        }
    }

    #[test]
    fn message_round_trips_with_every_property() {
        let m = StoredMessage {
            exchange: ShortStr::from("amq.topic"),
            routing_key: ShortStr::from("a.b.c"),
            properties: full_properties(),
            body: Bytes::from((0..=255u8).cycle().take(5000).collect::<Vec<u8>>()),
        };
        assert_eq!(ok(decode_message(&encode_message(&m).freeze())), m);
        // And with no properties, empty names and an empty body.
        let empty = StoredMessage::default();
        assert_eq!(ok(decode_message(&encode_message(&empty).freeze())), empty);
    }

    #[test]
    fn index_entry_round_trips() {
        for (id, d) in [(0, false), (u64::MAX, true), (42, true)] {
            let v = Bytes::copy_from_slice(&encode_index(id, d));
            assert_eq!(ok(decode_index(&v)), (id, d));
        }
    }

    #[test]
    fn definitions_round_trip() {
        let v = "vhost/with/slashes";
        assert_eq!(ok(decode_vhost(&encode_vhost(v).freeze())), v);
        for (auto_delete, internal) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let x = ExchangeRecord {
                vhost: "/".to_owned(),
                name: ShortStr::from("ex"),
                kind: "x-consistent-hash".to_owned(),
                auto_delete,
                internal,
                arguments: rich_table(),
            };
            assert_eq!(ok(decode_exchange(&encode_exchange(&x).freeze())), x);
        }
        for auto_delete in [false, true] {
            let q = QueueRecord {
                id: u64::MAX - 1,
                vhost: "prod".to_owned(),
                name: ShortStr::from("orders"),
                auto_delete,
                arguments: rich_table(),
            };
            assert_eq!(ok(decode_queue(&encode_queue(&q).freeze())), q);
        }
        for destination in [
            Destination::Queue(ShortStr::from("q")),
            Destination::Exchange(ShortStr::from("x2")),
        ] {
            let b = BindingRecord {
                vhost: "/".to_owned(),
                source: ShortStr::from("amq.headers"),
                destination,
                routing_key: ShortStr::from("#"),
                arguments: rich_table(),
            };
            assert_eq!(ok(decode_binding(&encode_binding(&b).freeze())), b);
        }
    }

    #[test]
    fn bad_values_are_failures_not_panics() {
        let m = encode_message(&StoredMessage::default()).freeze();
        // Every truncation of a valid value fails cleanly.
        for n in 0..m.len() {
            assert!(matches!(
                decode_message(&m.slice(..n)),
                Err(Failure::Bad(_))
            ));
        }
        let mut trailing = BytesMut::from(&m[..]);
        trailing.put_u8(0);
        assert!(matches!(
            decode_message(&trailing.freeze()),
            Err(Failure::Bad(_))
        ));
        let newer = Bytes::from_static(&[2, 0, 0]);
        assert!(matches!(decode_message(&newer), Err(Failure::Newer(2))));
        let zero = Bytes::from_static(&[0, 0, 0]);
        assert!(matches!(decode_message(&zero), Err(Failure::Bad(_))));
        let flags = Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0, 7, 0x80]);
        assert!(matches!(decode_index(&flags), Err(Failure::Bad(_))));
    }
}
