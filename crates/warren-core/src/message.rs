//! A published message as queues hold it.

use bytes::Bytes;
use warren_codec::{BasicProperties, ShortStr};

/// A message after routing. Shared by every queue it was routed to; the body
/// is the zero-copy slice of the publisher's read buffer (or one contiguous
/// copy when it came in several frames).
#[derive(Debug)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Content properties.
    pub properties: BasicProperties,
    /// The body.
    pub body: Bytes,
    /// Id in the durable store, if it is persistent and was routed to at
    /// least one durable queue.
    pub store_id: Option<u64>,
}

impl Message {
    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode == Some(2)
    }
}
