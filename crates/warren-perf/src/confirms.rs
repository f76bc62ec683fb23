//! Publisher-confirm bookkeeping: which delivery tags are still unconfirmed.
//!
//! Tags are numbered from 1 in publish order. The broker may confirm one
//! tag or every tag up to one (`multiple`), as `basic.ack` or `basic.nack`,
//! and RabbitMQ may answer out of order across queues. The tracker keeps a
//! ring of flags for the open window only, so a window of N costs N bytes
//! and each confirm costs O(tags it settles).

use std::collections::VecDeque;

/// The unconfirmed window of one channel in confirm mode.
#[derive(Debug, Default)]
pub(crate) struct ConfirmTracker {
    /// Every tag below `low` is settled.
    low: u64,
    /// Settled flags for tags `low..low + window.len()`.
    window: VecDeque<bool>,
    /// Published and not yet settled.
    outstanding: u64,
}

impl ConfirmTracker {
    /// An empty tracker; the first published tag is 1.
    pub(crate) fn new() -> Self {
        ConfirmTracker {
            low: 1,
            window: VecDeque::new(),
            outstanding: 0,
        }
    }

    /// Notes `n` more publishes (the next `n` tags).
    pub(crate) fn published(&mut self, n: u64) {
        for _ in 0..n {
            self.window.push_back(false);
        }
        self.outstanding += n;
    }

    /// Tags published and not yet confirmed or nacked.
    pub(crate) fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Settles `tag`, or every tag up to it when `multiple`. Returns how many
    /// tags this settled; tags already settled or never published count 0.
    pub(crate) fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        let end = self.low + self.window.len() as u64;
        let mut settled = 0;
        if multiple {
            let upto = tag.min(end.saturating_sub(1));
            if upto >= self.low {
                for flag in self.window.iter_mut().take((upto - self.low + 1) as usize) {
                    if !*flag {
                        *flag = true;
                        settled += 1;
                    }
                }
            }
        } else if tag >= self.low && tag < end {
            let flag = &mut self.window[(tag - self.low) as usize];
            if !*flag {
                *flag = true;
                settled = 1;
            }
        }
        while self.window.front() == Some(&true) {
            self.window.pop_front();
            self.low += 1;
        }
        self.outstanding -= settled;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_settles_a_prefix() {
        let mut t = ConfirmTracker::new();
        t.published(10);
        assert_eq!(t.settle(4, true), 4);
        assert_eq!(t.outstanding(), 6);
        assert_eq!(t.settle(4, true), 0);
        assert_eq!(t.settle(10, true), 6);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn singles_out_of_order_then_multiple() {
        let mut t = ConfirmTracker::new();
        t.published(5);
        assert_eq!(t.settle(3, false), 1);
        assert_eq!(t.settle(5, false), 1);
        assert_eq!(t.outstanding(), 3);
        // 1, 2 and 4; 3 and 5 were settled already.
        assert_eq!(t.settle(4, true), 3);
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.settle(5, false), 0);
        assert_eq!(t.settle(5, true), 0);
    }

    #[test]
    fn unknown_tags_are_ignored() {
        let mut t = ConfirmTracker::new();
        t.published(2);
        assert_eq!(t.settle(0, false), 0);
        assert_eq!(t.settle(99, false), 0);
        assert_eq!(t.settle(99, true), 2);
        t.published(1);
        assert_eq!(t.settle(3, false), 1);
    }
}
