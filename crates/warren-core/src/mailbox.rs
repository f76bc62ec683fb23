//! The per-connection inbox through which queues hand over deliveries and
//! server-initiated cancels, and the wake-up hook the IO driver supplies.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use warren_codec::ShortStr;

use crate::message::{QueueRef, QueuedMessage};
use crate::persist::{Awaited, Waiter};

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
    /// Messages for one of the connection's consumers, in order.
    Deliver {
        /// Channel of the consumer.
        channel: u16,
        /// The consumer's tag.
        consumer_tag: ShortStr,
        /// Whether the consumer acknowledges (false: no-ack).
        ack: bool,
        /// The queue they came from (to ack or requeue them).
        queue: QueueRef,
        /// The messages.
        messages: Vec<QueuedMessage>,
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
    /// An operator closes the connection (320 CONNECTION_FORCED, `text`).
    ForceClose {
        /// The reply text.
        text: String,
    },
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

    /// Adds an event, waking the connection if it was idle (or, inside
    /// [`defer_wakes`] on this thread, when the guard drops).
    pub fn push(self: &Arc<Self>, event: Event) {
        self.add(|q| q.push_back(event));
    }

    /// Changes the queue under the lock, then wakes the connection if the
    /// queue was empty before (now, or when this thread's
    /// [`defer_wakes`] guard drops).
    fn add(self: &Arc<Self>, f: impl FnOnce(&mut VecDeque<Event>)) {
        let was_empty = {
            let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = q.is_empty();
            f(&mut q);
            was_empty
        };
        if was_empty && !defer(self) {
            self.waker.wake();
        }
    }

    /// Adds a run of deliveries to one consumer under one lock: appended
    /// to the last event if that one is for the same consumer of the same
    /// queue. A queue's executor hands over all of one command's
    /// deliveries to a consumer this way.
    pub(crate) fn deliver_run(
        self: &Arc<Self>,
        channel: u16,
        consumer_tag: &ShortStr,
        ack: bool,
        queue: &QueueRef,
        messages: impl Iterator<Item = QueuedMessage>,
    ) {
        self.add(|q| {
            let same = matches!(
                q.back(),
                Some(Event::Deliver { channel: c, consumer_tag: t, ack: a, queue: qu, .. })
                    if *c == channel && *a == ack && qu.id == queue.id && t == consumer_tag
            );
            if !same {
                q.push_back(Event::Deliver {
                    channel,
                    consumer_tag: consumer_tag.clone(),
                    ack,
                    queue: queue.clone(),
                    messages: Vec::new(),
                });
            }
            if let Some(Event::Deliver { messages: m, .. }) = q.back_mut() {
                m.extend(messages);
            }
        });
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
    pub(crate) fn release_throttle(self: &Arc<Self>) {
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

thread_local! {
    /// Mailboxes to wake when this thread's [`DeferWakes`] guard drops.
    static DEFERRED: RefCell<Option<Vec<Arc<Mailbox>>>> = const { RefCell::new(None) };
}

/// Records a wake-up for later if this thread defers them.
fn defer(mailbox: &Arc<Mailbox>) -> bool {
    DEFERRED.with(|d| match &mut *d.borrow_mut() {
        Some(list) => {
            if !list.iter().any(|m| Arc::ptr_eq(m, mailbox)) {
                list.push(Arc::clone(mailbox));
            }
            true
        }
        None => false,
    })
}

/// Holds back the wake-ups that events pushed on this thread cause until
/// the guard drops, then gives each mailbox one. A connection handling a
/// read full of publishes thus wakes its consumers once per read, not
/// once per message. Nested guards defer to the outermost.
pub fn defer_wakes() -> DeferWakes {
    let outer = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_some() {
            return false;
        }
        *d = Some(Vec::new());
        true
    });
    DeferWakes { outer }
}

/// The guard [`defer_wakes`] returns.
#[derive(Debug)]
#[must_use = "wake-ups are deferred only while the guard lives"]
pub struct DeferWakes {
    outer: bool,
}

impl Drop for DeferWakes {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let list = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for m in list {
            m.waker.wake();
        }
    }
}

/// The store tells a publisher's connection, through its mailbox, that a
/// flush covering its confirm or commit has finished.
impl Waiter for Mailbox {
    fn flushed(self: Arc<Self>, channel: u16, what: Awaited, ok: bool) {
        match what {
            Awaited::Confirm(seq) => self.push(Event::Confirmed { channel, seq, ok }),
            Awaited::TxCommit => self.push(Event::TxCommitted { channel, ok }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Default)]
    struct Count(Arc<AtomicU32>);

    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn mailbox() -> (Arc<Mailbox>, Arc<AtomicU32>) {
        let n = Arc::new(AtomicU32::new(0));
        (Mailbox::new(Box::new(Count(Arc::clone(&n)))), n)
    }

    #[test]
    fn wakes_once_when_it_becomes_non_empty() {
        let (m, n) = mailbox();
        m.push(Event::Alarm);
        m.push(Event::Alarm);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let mut out = VecDeque::new();
        m.drain_into(&mut out);
        assert_eq!(out.len(), 2);
        m.push(Event::Alarm);
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn deferred_wakes_happen_once_when_the_outer_guard_drops() {
        let (a, na) = mailbox();
        let (b, nb) = mailbox();
        {
            let _outer = defer_wakes();
            a.push(Event::Alarm);
            {
                let _inner = defer_wakes();
                b.push(Event::Alarm);
                let mut out = VecDeque::new();
                a.drain_into(&mut out);
                a.push(Event::Alarm);
            }
            assert_eq!(
                (na.load(Ordering::SeqCst), nb.load(Ordering::SeqCst)),
                (0, 0)
            );
        }
        assert_eq!(
            (na.load(Ordering::SeqCst), nb.load(Ordering::SeqCst)),
            (1, 1)
        );
        // Outside a guard, at once again.
        let mut out = VecDeque::new();
        b.drain_into(&mut out);
        b.push(Event::Alarm);
        assert_eq!(nb.load(Ordering::SeqCst), 2);
    }
}
