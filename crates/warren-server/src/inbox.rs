//! The persistence thread's inbox: what connections hand it, in the order
//! they handed it, in one FIFO.
//!
//! Unlike a channel, a sender may leave the thread asleep. An op that
//! nobody waits for (a delivery's mark, an ack's dequeue) waits in the
//! inbox for the next op that someone does wait for (a publish to confirm,
//! a commit), or for the thread's periodic wake-up, instead of costing a
//! wake-up of its own: a futex call and two context switches, which at a
//! real client's one message per write were a third of the broker's CPU
//! per persistent message. Being one FIFO, the inbox keeps the order the
//! store relies on (a queue's enqueue before its dequeue, a dequeue before
//! a later purge).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A FIFO of `T` with one consumer that sleeps until something urgent
/// arrives.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    state: Mutex<State<T>>,
    woken: Condvar,
}

#[derive(Debug)]
struct State<T> {
    items: Vec<T>,
    /// Something was sent that the consumer must see without delay.
    urgent: bool,
    /// The consumer waits on the condition variable.
    sleeping: bool,
    /// Closed: further sends are dropped.
    closed: bool,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox {
            state: Mutex::new(State {
                items: Vec::new(),
                urgent: false,
                sleeping: false,
                closed: false,
            }),
            woken: Condvar::new(),
        }
    }
}

impl<T> Inbox<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section is a push or a swap: a panic cannot leave
        // the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`; `urgent` wakes the consumer if it sleeps. After
    /// [`Inbox::close`] the item is dropped.
    pub(crate) fn send(&self, item: T, urgent: bool) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.items.push(item);
        if urgent {
            s.urgent = true;
            if s.sleeping {
                s.sleeping = false;
                drop(s);
                self.woken.notify_one();
            }
        }
    }

    /// Queues a last item (woken for at once); later sends are dropped.
    pub(crate) fn close(&self, last: T) {
        self.send(last, true);
        self.lock().closed = true;
    }

    /// Waits until an urgent item was sent or `timeout` passed, then
    /// moves everything queued into `out` (which the caller has emptied),
    /// in order.
    pub(crate) fn wait(&self, timeout: Duration, out: &mut Vec<T>) {
        let mut s = self.lock();
        if !s.urgent {
            s.sleeping = true;
            s = match self.woken.wait_timeout_while(s, timeout, |s| !s.urgent) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            s.sleeping = false;
        }
        s.urgent = false;
        std::mem::swap(&mut s.items, out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn items_keep_their_order_urgent_or_not() {
        let inbox = Inbox::default();
        for i in 0..10 {
            inbox.send(i, i % 3 == 0);
        }
        let mut out = Vec::new();
        inbox.wait(Duration::from_secs(5), &mut out);
        assert_eq!(out, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn only_urgent_items_wake_the_consumer() {
        let inbox = Arc::new(Inbox::default());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let consumer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                started_tx.send(()).unwrap();
                let t = Instant::now();
                inbox.wait(Duration::from_secs(30), &mut out);
                (out, t.elapsed())
            })
        };
        started_rx.recv().unwrap();
        // Wait until the consumer sleeps (bounded), so the lazy send below
        // meets a sleeping consumer.
        for _ in 0..10_000 {
            if inbox.lock().sleeping {
                break;
            }
            std::thread::yield_now();
        }
        inbox.send("lazy", false);
        inbox.send("urgent", true);
        let (out, waited) = consumer.join().unwrap();
        assert_eq!(out, ["lazy", "urgent"]);
        assert!(waited < Duration::from_secs(30));
    }

    #[test]
    fn lazy_items_wait_for_the_timeout() {
        let inbox = Inbox::default();
        inbox.send(1, false);
        let mut out = Vec::new();
        let t = Instant::now();
        inbox.wait(Duration::from_millis(20), &mut out);
        assert_eq!(out, [1]);
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_closed_inbox_drops_what_comes_after_its_last_item() {
        let inbox = Inbox::default();
        inbox.send(1, false);
        inbox.close(2);
        inbox.send(3, true);
        let mut out = Vec::new();
        inbox.wait(Duration::ZERO, &mut out);
        assert_eq!(out, [1, 2]);
    }
}
