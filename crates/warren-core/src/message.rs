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

#[cfg(test)]
mod tests {
    use warren_codec::BasicProperties;

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
}
