//! A published message as queues hold it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use warren_codec::ShortStr;

/// A message after routing. Shared by every queue it was routed to; the body
/// is the zero-copy slice of the publisher's read buffer (or one contiguous
/// copy when it came in several frames).
#[derive(Debug)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Content properties (no allocation when none are set).
    pub properties: Properties,
    /// The body.
    pub body: Bytes,
    /// Id in the durable store, if it is persistent and was routed to at
    /// least one durable queue.
    pub store_id: Option<u64>,
    /// The broker's count of message bytes held in memory; set by
    /// [`crate::VHost::prepare`], given back when the message is dropped.
    pub gauge: Option<&'static Gauge>,
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Some(g) = self.gauge.take() {
            g.add(-(self.body.len() as i64));
        }
    }
}

/// A message in a queue, or delivered from one and not yet settled.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue; requeues go back here.
    pub seq: u64,
    /// The shared message.
    pub message: Arc<Message>,
    /// Whether it has been delivered before.
    pub redelivered: bool,
    /// How often it came back to its queue after reaching a client
    /// (quorum queues' `x-delivery-count`); kept per queue, not in the
    /// shared message.
    pub delivery_count: u32,
    /// When it expires (queue TTL or the message's `expiration`).
    pub expires_at: Option<Instant>,
}

/// Which queue a delivery came from, so that it can be settled there: a
/// name to find the queue by and an id that tells it from a later queue of
/// the same name. Deliveries carry this, not the queue itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRef {
    /// Unique among the queues of this process.
    pub id: u64,
    /// The queue's name in its vhost.
    pub name: ShortStr,
}

/// Content properties as a message keeps them: nothing but a null pointer
/// when the publisher set none (see [`warren_codec::Properties`]).
pub use warren_codec::Properties;

/// Bytes of message bodies held in memory, broker-wide: what the memory
/// alarm watches.
///
/// Every message adds on the publisher's thread and subtracts on the
/// consumer's. One shared counter (and an `Arc` count beside it) bounced
/// its cache line between the cores twice per message; instead each
/// thread counts into its own shard, and a reader sums them. A gauge
/// lives as long as the process ([`Gauge::leak`]): messages refer to it
/// without counting references.
#[derive(Debug, Default)]
pub struct Gauge {
    shards: [Shard; SHARDS],
}

const SHARDS: usize = 16;

/// One thread's part, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicI64);

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Gauge {
    /// A gauge for the rest of the process: one per broker (a few hundred
    /// bytes, never freed).
    pub fn leak() -> &'static Gauge {
        Box::leak(Box::default())
    }

    /// Current total.
    pub fn bytes(&self) -> u64 {
        let sum: i64 = self
            .shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum();
        u64::try_from(sum).unwrap_or(0)
    }

    fn add(&self, n: i64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Starts counting `message`.
    pub fn track(&'static self, message: &mut Message) {
        if message.gauge.is_none() {
            self.add(message.body.len() as i64);
            message.gauge = Some(self);
        }
    }
}

impl Message {
    /// A message as published: not stored, not yet counted.
    pub fn new(
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: Properties,
        body: Bytes,
    ) -> Self {
        Message {
            exchange,
            routing_key,
            properties,
            body,
            store_id: None,
            gauge: None,
        }
    }

    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode == Some(2)
    }
}

/// A message in one allocation: exchange, routing key, encoded properties
/// and body, for a long backlog of small messages that no other queue
/// shares. An [`Arc<Message>`] of a 16-byte message costs some 160 bytes
/// of its own plus its body; packed it is its encoding, about 30.
///
/// Layout: priority, exchange (a length byte, then its bytes), routing key
/// (likewise), the properties as a content header encodes them (a 2-byte
/// length, then flags and fields; 0 for none), the body.
#[derive(Debug)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `message` (its store id and gauge are not kept: only an
    /// unstored message is packed, and its bytes are counted again when it
    /// is unpacked); `None` when its encoded properties do not fit the
    /// 2-byte length (a content header may be longer than 64 KiB).
    pub fn pack(message: &Message) -> Option<Packed> {
        let mut props = bytes::BytesMut::new();
        if !message.properties.is_empty() {
            message.properties.encode(&mut props);
        }
        let plen = u16::try_from(props.len()).ok()?;
        let ex = message.exchange.as_bytes();
        let rk = message.routing_key.as_bytes();
        let len = 1 + 1 + ex.len() + 1 + rk.len() + 2 + props.len() + message.body.len();
        let mut v = Vec::with_capacity(len);
        v.push(message.properties.priority.unwrap_or(0));
        // Short strings are at most 255 bytes long.
        v.push(u8::try_from(ex.len()).ok()?);
        v.extend_from_slice(ex);
        v.push(u8::try_from(rk.len()).ok()?);
        v.extend_from_slice(rk);
        v.extend_from_slice(&plen.to_be_bytes());
        v.extend_from_slice(&props);
        v.extend_from_slice(&message.body);
        Some(Packed(v.into_boxed_slice()))
    }

    /// The message's priority property (0 if none).
    pub fn priority(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }

    /// Where the parts start: routing key, properties, body.
    fn offsets(&self) -> (usize, usize, usize) {
        let b = &self.0;
        let rk = 2 + usize::from(b.get(1).copied().unwrap_or(0));
        let props = rk + 1 + usize::from(b.get(rk).copied().unwrap_or(0));
        let plen = b
            .get(props..props + 2)
            .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
        (rk, props, props + 2 + plen)
    }

    /// The body's length.
    pub fn body_len(&self) -> usize {
        self.0.len().saturating_sub(self.offsets().2)
    }

    /// The message again: a new allocation for the message, the body a
    /// slice of this one's (no copy).
    pub fn unpack(self) -> Message {
        let (rk, props, body) = self.offsets();
        let b = &self.0;
        let name = |at: usize| {
            let len = usize::from(b.get(at).copied().unwrap_or(0));
            b.get(at + 1..at + 1 + len)
                .and_then(ShortStr::from_slice)
                .unwrap_or_default()
        };
        let exchange = name(1);
        let routing_key = name(rk);
        let properties = match b.get(props + 2..body) {
            Some(p) if !p.is_empty() => {
                let mut r = warren_codec::Reader::new(p);
                let mut decoded = warren_codec::BasicProperties::default();
                match decoded.decode_into(&mut r).and_then(|()| r.finish()) {
                    Ok(()) => Properties::from(decoded),
                    Err(e) => {
                        // Written by `pack` from decoded properties.
                        debug_assert!(false, "packed properties: {e}");
                        Properties::default()
                    }
                }
            }
            _ => Properties::default(),
        };
        let body = body.min(self.0.len());
        let mut data = Bytes::from(self.0);
        bytes::Buf::advance(&mut data, body);
        Message::new(exchange, routing_key, properties, data)
    }
}

#[cfg(test)]
mod tests {
    use warren_codec::{BasicProperties, FieldTable, FieldValue};

    use super::*;

    #[test]
    fn the_gauge_counts_across_threads() {
        let g = Gauge::leak();
        let mut m = Message::new(
            ShortStr::empty(),
            ShortStr::empty(),
            Properties::default(),
            Bytes::from_static(&[0; 100]),
        );
        g.track(&mut m);
        g.track(&mut m);
        assert_eq!(g.bytes(), 100);
        // Dropped on another thread: its shard goes negative, the sum is 0.
        std::thread::spawn(move || drop(m)).join().unwrap();
        assert_eq!(g.bytes(), 0);
    }

    #[test]
    fn small_messages_stay_small() {
        // A queued message costs this plus its body; the backlog memory
        // targets depend on it (1M small messages in a few hundred MiB).
        let size = std::mem::size_of::<Message>();
        assert!(size <= 160, "Message grew to {size} bytes");
        assert!(Properties::from(BasicProperties::default()).is_empty());
        let p = Properties::from(BasicProperties {
            priority: Some(3),
            ..Default::default()
        });
        assert_eq!(p.priority, Some(3));
    }

    #[test]
    fn packing_keeps_every_part() {
        let long = "x".repeat(200);
        let cases = [
            (
                ShortStr::empty(),
                ShortStr::empty(),
                BasicProperties::default(),
                Bytes::new(),
            ),
            (
                ShortStr::from(long.as_str()),
                ShortStr::from(format!("{long}.key")),
                BasicProperties {
                    priority: Some(7),
                    delivery_mode: Some(1),
                    headers: Some(FieldTable::new().with("k", FieldValue::LongStr("v".into()))),
                    ..Default::default()
                },
                Bytes::from(vec![7u8; 512]),
            ),
        ];
        for (exchange, routing_key, props, body) in cases {
            let m = Message::new(
                exchange.clone(),
                routing_key.clone(),
                Properties::from(props.clone()),
                body.clone(),
            );
            let p = Packed::pack(&m).unwrap();
            assert_eq!(p.priority(), props.priority.unwrap_or(0));
            assert_eq!(p.body_len(), body.len());
            let back = p.unpack();
            assert_eq!(back.exchange, exchange);
            assert_eq!(back.routing_key, routing_key);
            assert_eq!(*back.properties, props);
            assert_eq!(
                back.properties.is_empty(),
                props == BasicProperties::default()
            );
            assert_eq!(back.body, body);
            assert_eq!(back.store_id, None);
        }
    }

    #[test]
    fn properties_too_long_for_a_packed_message_stay_unpacked() {
        let big = FieldTable::new().with(
            "big",
            FieldValue::LongStr("a".repeat(70_000).as_str().into()),
        );
        let m = Message::new(
            ShortStr::empty(),
            ShortStr::empty(),
            Properties::from(BasicProperties {
                headers: Some(big),
                ..Default::default()
            }),
            Bytes::new(),
        );
        assert!(Packed::pack(&m).is_none());
    }
}
