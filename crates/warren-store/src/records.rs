//! The records the store keeps, and their value encoding.
//!
//! Every value starts with the format version byte ([`FORMAT_VERSION`]),
//! followed by AMQP wire encodings (shortstr, longstr, field table, the
//! `basic` content header properties) so that the codec's tested encoders do
//! the work and a stored message reads back exactly as it was published.
//! Administration strings (password hashes, regexes, descriptions, policy
//! definitions) are longstrs: they can be longer than a shortstr's 255
//! bytes.
//!
//! **Compatibility:** a record may gain optional trailing fields without a
//! new [`FORMAT_VERSION`]. The decoder reads them only when bytes remain
//! after the older fields, and the encoder leaves them out when they hold
//! their defaults, so a record without them is byte-for-byte what the
//! older build wrote and still reads. [`VhostRecord`]'s metadata is such a
//! group.

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

/// A persistent message held by a durable `x-delayed-message` exchange
/// until its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayedRecord {
    /// The vhost.
    pub vhost: String,
    /// The exchange holding it (also `message.exchange`).
    pub exchange: ShortStr,
    /// When it is routed, in wall-clock milliseconds since the Unix epoch.
    pub deadline: u64,
    /// Tells apart the messages of one exchange with one deadline.
    pub seq: u64,
    /// The message as published.
    pub message: StoredMessage,
}

/// An id cached by a durable `x-message-deduplication` exchange whose
/// `x-cache-persistence` is `disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRecord {
    /// The vhost.
    pub vhost: String,
    /// The exchange caching it.
    pub exchange: ShortStr,
    /// The id, as the broker encodes it (opaque here).
    pub id: Bytes,
    /// When it expires, in wall-clock milliseconds since the Unix epoch;
    /// `None`: never (it stays until evicted).
    pub expires_ms: Option<u64>,
    /// Its insertion number: the order of the cache's ids for its size
    /// bound.
    pub order: u64,
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

/// A vhost and its management metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhostRecord {
    /// Its name.
    pub name: String,
    /// Free text shown by the management API (empty when none).
    pub description: String,
    /// Free-form tags shown by the management API.
    pub tags: Vec<String>,
    /// The queue type for queues declared without `x-queue-type` (empty:
    /// the broker's default).
    pub default_queue_type: String,
}

impl VhostRecord {
    /// A vhost named `name` with no metadata, what [`crate::Batch::put_vhost`]
    /// stores.
    pub fn new(name: impl Into<String>) -> Self {
        VhostRecord {
            name: name.into(),
            ..VhostRecord::default()
        }
    }

    /// Whether every metadata field is empty (the record is its name only).
    fn has_no_metadata(&self) -> bool {
        self.description.is_empty() && self.tags.is_empty() && self.default_queue_type.is_empty()
    }
}

/// A broker user.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// Its name.
    pub name: String,
    /// The password hash as RabbitMQ's definitions carry it (base64 of the
    /// salt and the hash); empty for a user without a password.
    pub password_hash: String,
    /// How the hash was made, e.g. `rabbit_password_hashing_sha256`.
    pub hashing_algorithm: String,
    /// Its tags (`administrator`, `monitoring`, ...).
    pub tags: Vec<String>,
}

impl std::fmt::Debug for UserRecord {
    /// Leaves the password hash out: a hash in a log is an offline
    /// guessing target.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hash = if self.password_hash.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("password_hash", &hash)
            .field("hashing_algorithm", &self.hashing_algorithm)
            .field("tags", &self.tags)
            .finish()
    }
}

/// A user's permissions in a vhost: three regexes over resource names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionRecord {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// Which resources the user may declare and delete (a regex).
    pub configure: String,
    /// Which resources the user may publish or bind to (a regex).
    pub write: String,
    /// Which resources the user may consume or bind from (a regex).
    pub read: String,
}

/// A user's topic permissions on one topic exchange of a vhost: regexes
/// over routing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPermissionRecord {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The exchange.
    pub exchange: String,
    /// Which routing keys the user may publish with (a regex).
    pub write: String,
    /// Which binding keys the user may bind with (a regex).
    pub read: String,
}

/// A policy (or operator policy) of a vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRecord {
    /// The vhost.
    pub vhost: String,
    /// Its name, unique among the vhost's policies of the same kind.
    pub name: String,
    /// Which queues or exchanges it applies to (a regex over names).
    pub pattern: String,
    /// `queues`, `exchanges`, `all`, ... as the management API gave it.
    pub apply_to: String,
    /// Higher wins when several policies match.
    pub priority: i64,
    /// The policy's definition, a JSON object, stored as given.
    pub definition: String,
    /// An operator policy rather than a user policy: a separate namespace,
    /// so the same name may exist once as each.
    pub operator: bool,
}

/// Everything the broker must recreate before it accepts connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// Vhosts, with their metadata.
    pub vhosts: Vec<VhostRecord>,
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeRecord>,
    /// Durable queues.
    pub queues: Vec<QueueRecord>,
    /// Bindings between durable entities.
    pub bindings: Vec<BindingRecord>,
    /// Users.
    pub users: Vec<UserRecord>,
    /// Users' permissions in vhosts.
    pub permissions: Vec<PermissionRecord>,
    /// Users' topic permissions.
    pub topic_permissions: Vec<TopicPermissionRecord>,
    /// Policies and operator policies.
    pub policies: Vec<PolicyRecord>,
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
/// Flag bit of a policy: an operator policy.
const OPERATOR: u8 = 1;

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

/// Writes a list of strings: a u32 count, then each as a longstr.
fn put_strings(b: &mut BytesMut, items: &[String]) {
    // Tag lists are a handful of words; a saturated count would fail to
    // decode rather than be misread.
    b.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
    for s in items {
        put_long(b, s.as_bytes());
    }
}

fn read_strings(r: &mut Reader<'_>) -> Result<Vec<String>, Failure> {
    let n = r.u32()?;
    // Nothing is reserved from the count read from disk: a corrupt count
    // fails at the first missing string instead of allocating.
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(read_string(r)?);
    }
    Ok(out)
}

fn read_flags(r: &mut Reader<'_>, known: u8) -> Result<u8, Failure> {
    let f = r.u8()?;
    if f & !known != 0 {
        return Err(Failure::Bad(format!("unknown flags {f:#04x}")));
    }
    Ok(f)
}

pub(crate) fn encode_message(m: &StoredMessage) -> BytesMut {
    let mut b = BytesMut::with_capacity(m.exchange.len() + m.routing_key.len() + m.body.len() + 65);
    encode_message_into(&mut b, &m.exchange, &m.routing_key, &m.properties, &m.body);
    b
}

/// Appends a message record's value (as [`encode_message`] makes it) to
/// `b`, from the message's parts.
pub(crate) fn encode_message_into(
    b: &mut BytesMut,
    exchange: &ShortStr,
    routing_key: &ShortStr,
    properties: &BasicProperties,
    body: &[u8],
) {
    b.put_u8(FORMAT_VERSION);
    put_shortstr(b, exchange);
    put_shortstr(b, routing_key);
    properties.encode(b);
    put_long(b, body);
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

/// A deduplication id's value: expiry (0: never) and insertion number.
pub(crate) fn encode_dedup(expires_ms: Option<u64>, order: u64) -> [u8; 17] {
    let mut b = [0u8; 17];
    b[0] = FORMAT_VERSION;
    b[1..9].copy_from_slice(&expires_ms.unwrap_or(0).to_be_bytes());
    b[9..].copy_from_slice(&order.to_be_bytes());
    b
}

pub(crate) fn decode_dedup(value: &Bytes) -> Result<(Option<u64>, u64), Failure> {
    let mut r = open(value)?;
    let expires = r.u64()?;
    let order = r.u64()?;
    r.finish()?;
    Ok(((expires != 0).then_some(expires), order))
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

/// Encodes a vhost: its name, then its metadata only when there is some,
/// so that a vhost without metadata is exactly the name-only record of
/// earlier builds (which they can still read).
pub(crate) fn encode_vhost(v: &VhostRecord) -> BytesMut {
    let mut b = start(v.name.len() + 4);
    put_long(&mut b, v.name.as_bytes());
    if !v.has_no_metadata() {
        put_long(&mut b, v.description.as_bytes());
        put_strings(&mut b, &v.tags);
        put_long(&mut b, v.default_queue_type.as_bytes());
    }
    b
}

/// Decodes a vhost, with or without the optional metadata group.
pub(crate) fn decode_vhost(value: &Bytes) -> Result<VhostRecord, Failure> {
    let mut r = open(value)?;
    let mut v = VhostRecord::new(read_string(&mut r)?);
    if r.remaining() > 0 {
        v.description = read_string(&mut r)?;
        v.tags = read_strings(&mut r)?;
        v.default_queue_type = read_string(&mut r)?;
    }
    r.finish()?;
    Ok(v)
}

pub(crate) fn encode_user(u: &UserRecord) -> BytesMut {
    let mut b = start(u.name.len() + u.password_hash.len() + 64);
    put_long(&mut b, u.name.as_bytes());
    put_long(&mut b, u.password_hash.as_bytes());
    put_long(&mut b, u.hashing_algorithm.as_bytes());
    put_strings(&mut b, &u.tags);
    b
}

pub(crate) fn decode_user(value: &Bytes) -> Result<UserRecord, Failure> {
    let mut r = open(value)?;
    let name = read_string(&mut r)?;
    let password_hash = read_string(&mut r)?;
    let hashing_algorithm = read_string(&mut r)?;
    let tags = read_strings(&mut r)?;
    r.finish()?;
    Ok(UserRecord {
        name,
        password_hash,
        hashing_algorithm,
        tags,
    })
}

pub(crate) fn encode_permission(p: &PermissionRecord) -> BytesMut {
    let mut b = start(64);
    put_long(&mut b, p.user.as_bytes());
    put_long(&mut b, p.vhost.as_bytes());
    put_long(&mut b, p.configure.as_bytes());
    put_long(&mut b, p.write.as_bytes());
    put_long(&mut b, p.read.as_bytes());
    b
}

pub(crate) fn decode_permission(value: &Bytes) -> Result<PermissionRecord, Failure> {
    let mut r = open(value)?;
    let user = read_string(&mut r)?;
    let vhost = read_string(&mut r)?;
    let configure = read_string(&mut r)?;
    let write = read_string(&mut r)?;
    let read = read_string(&mut r)?;
    r.finish()?;
    Ok(PermissionRecord {
        user,
        vhost,
        configure,
        write,
        read,
    })
}

pub(crate) fn encode_topic_permission(p: &TopicPermissionRecord) -> BytesMut {
    let mut b = start(64);
    put_long(&mut b, p.user.as_bytes());
    put_long(&mut b, p.vhost.as_bytes());
    put_long(&mut b, p.exchange.as_bytes());
    put_long(&mut b, p.write.as_bytes());
    put_long(&mut b, p.read.as_bytes());
    b
}

pub(crate) fn decode_topic_permission(value: &Bytes) -> Result<TopicPermissionRecord, Failure> {
    let mut r = open(value)?;
    let user = read_string(&mut r)?;
    let vhost = read_string(&mut r)?;
    let exchange = read_string(&mut r)?;
    let write = read_string(&mut r)?;
    let read = read_string(&mut r)?;
    r.finish()?;
    Ok(TopicPermissionRecord {
        user,
        vhost,
        exchange,
        write,
        read,
    })
}

pub(crate) fn encode_policy(p: &PolicyRecord) -> BytesMut {
    let mut b = start(p.definition.len() + 64);
    put_long(&mut b, p.vhost.as_bytes());
    put_long(&mut b, p.name.as_bytes());
    b.put_u8(if p.operator { OPERATOR } else { 0 });
    put_long(&mut b, p.pattern.as_bytes());
    put_long(&mut b, p.apply_to.as_bytes());
    b.put_i64(p.priority);
    put_long(&mut b, p.definition.as_bytes());
    b
}

pub(crate) fn decode_policy(value: &Bytes) -> Result<PolicyRecord, Failure> {
    let mut r = open(value)?;
    let vhost = read_string(&mut r)?;
    let name = read_string(&mut r)?;
    let flags = read_flags(&mut r, OPERATOR)?;
    let pattern = read_string(&mut r)?;
    let apply_to = read_string(&mut r)?;
    // Written with put_i64: the same eight bytes, two's complement.
    let priority = r.u64()? as i64;
    let definition = read_string(&mut r)?;
    r.finish()?;
    Ok(PolicyRecord {
        vhost,
        name,
        pattern,
        apply_to,
        priority,
        definition,
        operator: flags & OPERATOR != 0,
    })
}

pub(crate) fn encode_setting(value: &[u8]) -> BytesMut {
    let mut b = start(value.len() + 4);
    put_long(&mut b, value);
    b
}

pub(crate) fn decode_setting(value: &Bytes) -> Result<Vec<u8>, Failure> {
    let mut r = open(value)?;
    let v = r.longstr()?;
    r.finish()?;
    Ok(v.0.to_vec())
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
        let v = VhostRecord::new("vhost/with/slashes");
        assert_eq!(ok(decode_vhost(&encode_vhost(&v).freeze())), v);
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

    /// A vhost record with every metadata field set.
    fn full_vhost() -> VhostRecord {
        VhostRecord {
            name: "prod/é".to_owned(),
            description: "d".repeat(300),
            tags: vec!["a".to_owned(), String::new(), "ü/x".to_owned()],
            default_queue_type: "quorum".to_owned(),
        }
    }

    fn full_user() -> UserRecord {
        UserRecord {
            name: "ünï/cødé".to_owned(),
            // Longer than a shortstr, as a sha512 hash's base64 is close to.
            password_hash: "h".repeat(400),
            hashing_algorithm: "rabbit_password_hashing_sha256".to_owned(),
            tags: vec!["administrator".to_owned(), "monitoring".to_owned()],
        }
    }

    fn full_policy(operator: bool) -> PolicyRecord {
        PolicyRecord {
            vhost: "/".to_owned(),
            name: "ha/all".to_owned(),
            pattern: format!("^({})$", "x|".repeat(200)),
            apply_to: "queues".to_owned(),
            priority: -7,
            definition: r#"{"max-length":10,"overflow":"reject-publish"}"#.to_owned(),
            operator,
        }
    }

    #[test]
    fn vhost_metadata_round_trips() {
        let v = full_vhost();
        assert_eq!(ok(decode_vhost(&encode_vhost(&v).freeze())), v);
        // Each metadata field alone is enough to write the group.
        let only_tags = VhostRecord {
            tags: vec![String::new()],
            ..VhostRecord::new("t")
        };
        let only_type = VhostRecord {
            default_queue_type: "classic".to_owned(),
            ..VhostRecord::new("q")
        };
        for v in [only_tags, only_type, VhostRecord::new("")] {
            assert_eq!(ok(decode_vhost(&encode_vhost(&v).freeze())), v);
        }
    }

    #[test]
    fn name_only_vhost_records_of_earlier_builds_still_decode() {
        // What format 1 wrote before vhosts had metadata: the version byte
        // and the name as a longstr, nothing after it.
        let old = Bytes::from_static(&[1, 0, 0, 0, 4, b'p', b'r', b'o', b'd']);
        assert_eq!(ok(decode_vhost(&old)), VhostRecord::new("prod"));
        // And a vhost without metadata is still written exactly so, so an
        // earlier build reads it too.
        assert_eq!(&encode_vhost(&VhostRecord::new("prod"))[..], &old[..]);
    }

    #[test]
    fn administration_records_round_trip() {
        let u = full_user();
        assert_eq!(ok(decode_user(&encode_user(&u).freeze())), u);
        let nobody = UserRecord::default();
        assert_eq!(ok(decode_user(&encode_user(&nobody).freeze())), nobody);

        let p = PermissionRecord {
            user: "guest".to_owned(),
            vhost: "/".to_owned(),
            configure: ".*".to_owned(),
            write: String::new(),
            read: format!("^amq\\.gen-{}", ".".repeat(300)),
        };
        assert_eq!(ok(decode_permission(&encode_permission(&p).freeze())), p);

        let t = TopicPermissionRecord {
            user: "guest".to_owned(),
            vhost: "a/b".to_owned(),
            exchange: "amq.topic".to_owned(),
            write: "^orders\\.".to_owned(),
            read: ".*".to_owned(),
        };
        assert_eq!(
            ok(decode_topic_permission(
                &encode_topic_permission(&t).freeze()
            )),
            t
        );

        for operator in [false, true] {
            let p = full_policy(operator);
            assert_eq!(ok(decode_policy(&encode_policy(&p).freeze())), p);
        }
        for priority in [i64::MIN, -1, 0, i64::MAX] {
            let p = PolicyRecord {
                priority,
                ..PolicyRecord::default()
            };
            assert_eq!(ok(decode_policy(&encode_policy(&p).freeze())), p);
        }

        for value in [&b""[..], b"seeded", &[0, 255, 1][..]] {
            assert_eq!(ok(decode_setting(&encode_setting(value).freeze())), value);
        }
    }

    #[test]
    fn user_debug_leaves_the_password_hash_out() {
        let text = format!("{:?}", full_user());
        assert!(!text.contains("hhhh"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("administrator"));
    }

    #[test]
    fn bad_administration_values_are_failures_not_panics() {
        let values = [
            encode_vhost(&full_vhost()).freeze(),
            encode_user(&full_user()).freeze(),
            encode_permission(&PermissionRecord::default()).freeze(),
            encode_topic_permission(&TopicPermissionRecord::default()).freeze(),
            encode_policy(&full_policy(true)).freeze(),
            encode_setting(b"x").freeze(),
        ];
        // Each decoder with its result dropped, so that one loop checks all.
        type Decode = fn(&Bytes) -> Result<(), Failure>;
        let decoders: [Decode; 6] = [
            |v| decode_vhost(v).map(drop),
            |v| decode_user(v).map(drop),
            |v| decode_permission(v).map(drop),
            |v| decode_topic_permission(v).map(drop),
            |v| decode_policy(v).map(drop),
            |v| decode_setting(v).map(drop),
        ];
        for (i, (value, decode)) in values.iter().zip(decoders).enumerate() {
            ok(decode(value));
            let mut trailing = BytesMut::from(&value[..]);
            trailing.put_u8(0);
            assert!(matches!(decode(&trailing.freeze()), Err(Failure::Bad(_))));
            let mut newer = BytesMut::from(&value[..]);
            newer[0] = FORMAT_VERSION + 1;
            assert!(matches!(decode(&newer.freeze()), Err(Failure::Newer(_))));
            for n in 0..value.len() {
                // A vhost cut right after its name is a valid old record.
                if i == 0 && n == 1 + 4 + full_vhost().name.len() {
                    continue;
                }
                assert!(
                    matches!(decode(&value.slice(..n)), Err(Failure::Bad(_))),
                    "{n} of {value:?}"
                );
            }
        }
        // Unknown policy flags and non-UTF-8 strings are refused.
        let mut flags = BytesMut::from(&encode_policy(&PolicyRecord::default())[..]);
        flags[9] = 0x80;
        assert!(matches!(
            decode_policy(&flags.freeze()),
            Err(Failure::Bad(_))
        ));
        let bad_utf8 = Bytes::from_static(&[1, 0, 0, 0, 1, 0xff]);
        assert!(matches!(decode_vhost(&bad_utf8), Err(Failure::Bad(_))));
        // A corrupt tag count fails without reserving memory for it.
        let mut huge = BytesMut::from(&encode_user(&UserRecord::default())[..]);
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_user(&huge.freeze()), Err(Failure::Bad(_))));
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
