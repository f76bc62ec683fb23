//! The per-connection inbox through which queues hand over deliveries and
//! server-initiated cancels, and the wake-up hook the IO driver supplies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use warren_codec::ShortStr;

use crate::queue::{Queue, QueuedMessage};

/// Wakes the task that drives a connection. The server implements it over
/// its runtime's notification primitive; tests use a no-op.
pub trait Wake: Send + Sync {
    /// Called when the mailbox goes from empty to non-empty.
    fn wake(&self);
}

/// A wake-up that does nothing, for tests that poll by hand.
#[derive(Debug, Default)]
pub struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

/// Something a queue sends to a connection.
#[derive(Debug)]
pub enum Event {
    /// A message for one of the connection's consumers.
    Deliver {
        /// Channel of the consumer.
        channel: u16,
        /// The consumer's tag.
        consumer_tag: ShortStr,
        /// Whether the consumer acknowledges (false: no-ack).
        ack: bool,
        /// The queue it came from (to ack or requeue it).
        queue: Arc<Queue>,
        /// The message.
        message: QueuedMessage,
    },
    /// The store settled publish `seq` (confirm mode).
    Confirmed {
        /// The publisher's channel.
        channel: u16,
        /// Publish sequence number.
        seq: u64,
        /// Written (ack) or failed (nack).
        ok: bool,
    },
    /// The store flushed a transaction's messages (or failed to).
    TxCommitted {
        /// The channel.
        channel: u16,
        /// Written.
        ok: bool,
    },
    /// A reply for this connection's direct reply-to consumer.
    DirectReply {
        /// The consumer's channel.
        channel: u16,
        /// Its tag.
        consumer_tag: ShortStr,
        /// The reply.
        message: Arc<crate::message::Message>,
    },
    /// The broker's resource alarms changed: re-check whether publishing
    /// is blocked.
    Alarm,
    /// The queue went away under the consumer: send `basic.cancel`.
    Cancelled {
        /// Channel of the consumer.
        channel: u16,
        /// The consumer's tag.
        consumer_tag: ShortStr,
    },
}

/// A connection's inbox.
pub struct Mailbox {
    // A std Mutex: held only to push or swap the deque, never across an
    // await or another lock acquisition (queues push while holding their
    // own lock; the connection never takes a queue lock while holding this).
    events: Mutex<VecDeque<Event>>,
    waker: Box<dyn Wake>,
    /// Queues currently holding this (publishing) connection back.
    throttles: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Mailbox {
    /// A mailbox that calls `waker` when it becomes non-empty.
    pub fn new(waker: Box<dyn Wake>) -> Arc<Self> {
        Arc::new(Mailbox {
            events: Mutex::new(VecDeque::new()),
            waker,
            throttles: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Adds an event, waking the connection if it was idle.
    pub fn push(&self, event: Event) {
        let was_empty = {
            let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = q.is_empty();
            q.push_back(event);
            was_empty
        };
        if was_empty {
            self.waker.wake();
        }
    }

    /// Moves every pending event into `out`.
    pub fn drain_into(&self, out: &mut VecDeque<Event>) {
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if out.is_empty() {
            std::mem::swap(&mut *q, out);
        } else {
            out.extend(q.drain(..));
        }
    }

    /// Whether congested queues hold this connection's publishing back.
    pub fn is_throttled(&self) -> bool {
        self.throttles.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// A queue holds this connection back (called once per queue).
    pub(crate) fn throttle(&self) {
        self.throttles
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// A queue lets this connection go again; wakes it.
    pub(crate) fn release_throttle(&self) {
        self.throttles
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.push(Event::Alarm);
    }

    /// Whether events are waiting.
    pub fn is_empty(&self) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}
