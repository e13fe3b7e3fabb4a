//! The pending list of the output path: which connections have output queued and not yet
//! written, in order, and which handlers wait for it to be written before their next turn.
//!
//! Mail (what a callback writes to other connections) is queued on the recipient and the
//! recipient goes on this list once; before the loop polls again the reactor writes the
//! oldest of them, a slice at a time, each with one `writev` (Redis's pending-writes list).
//! A handler that yielded ([`crate::Context::yield_rest`]) is resumed only once the list is
//! empty, so it cannot refill the queues faster than they drain. See docs/ARCHITECTURE.md,
//! "The output path". This file keeps the lists; `reactor/flush.rs` does the writing.

use std::collections::VecDeque;

use crate::conn_id::ConnId;

/// Connections to flush, and handlers waiting for the flush.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Connections with output queued and not yet flushed, oldest first; each is on it once
    /// (its `Conn::flush_pending` says whether it is).
    pending: VecDeque<ConnId>,
    /// Connections whose handler yielded: resumed once `pending` is empty.
    yielded: Vec<ConnId>,
    /// Connections written per flush at least (`Config::flush_budget`).
    budget: usize,
    /// True while mail is being delivered, so that a close inside delivery (which can create
    /// more mail) adds to the queue instead of recursing.
    delivering: bool,
}

impl Output {
    pub(crate) fn new(flush_budget: usize) -> Output {
        Output {
            budget: flush_budget.max(1),
            ..Output::default()
        }
    }

    /// Puts `id` on the list, unless `on_list` says it is there already (and sets it).
    pub(crate) fn mark(&mut self, id: ConnId, on_list: &mut bool) {
        if !*on_list {
            *on_list = true;
            self.pending.push_back(id);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many connections this flush writes: `flush_budget`, or a quarter of those
    /// waiting if that is more (a long list then takes about four turns, and lines read in
    /// between join the batch of members not written yet).
    pub(crate) fn slice(&self) -> usize {
        self.budget.max(self.pending.len() / 4)
    }

    /// The oldest connection on the list, taken off it.
    pub(crate) fn next(&mut self) -> Option<ConnId> {
        self.pending.pop_front()
    }

    /// `id`'s handler yielded: its next turn comes once everything queued is written.
    pub(crate) fn wait_for_flush(&mut self, id: ConnId) {
        self.yielded.push(id);
    }

    /// Once the list is empty, the handlers that yielded, for their next turn.
    pub(crate) fn resumed(&mut self) -> impl Iterator<Item = ConnId> + '_ {
        let ready = if self.pending.is_empty() {
            self.yielded.len()
        } else {
            0
        };
        self.yielded.drain(..ready)
    }

    /// Starts delivering mail; false if a delivery is already under way (the outer one
    /// picks up what is added).
    pub(crate) fn begin_delivery(&mut self) -> bool {
        !std::mem::replace(&mut self.delivering, true)
    }

    pub(crate) fn end_delivery(&mut self) {
        self.delivering = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: usize) -> ConnId {
        ConnId::new(key, 1)
    }

    #[test]
    fn a_connection_is_on_the_list_once_and_in_order() {
        let mut output = Output::new(32);
        let mut flags = [false; 3];
        for key in [2, 0, 2, 1, 0] {
            output.mark(id(key), &mut flags[key]);
        }
        let order: Vec<ConnId> = std::iter::from_fn(|| output.next()).collect();
        assert_eq!(order, [id(2), id(0), id(1)]);
    }

    #[test]
    fn a_flush_writes_the_budget_or_a_quarter_of_the_list() {
        let mut output = Output::new(32);
        let mut flags = vec![false; 1000];
        for (key, flag) in flags.iter_mut().enumerate().take(100) {
            output.mark(id(key), flag);
        }
        assert_eq!(output.slice(), 32);
        for (key, flag) in flags.iter_mut().enumerate().skip(100) {
            output.mark(id(key), flag);
        }
        assert_eq!(output.slice(), 250);
    }

    #[test]
    fn yielded_handlers_resume_only_once_everything_is_written() {
        let mut output = Output::new(1);
        let mut flag = false;
        output.mark(id(7), &mut flag);
        output.wait_for_flush(id(3));
        assert_eq!(output.resumed().count(), 0, "output still pending");
        assert_eq!(output.next(), Some(id(7)));
        assert_eq!(output.resumed().collect::<Vec<_>>(), [id(3)]);
        assert_eq!(output.resumed().count(), 0, "resumed once");
    }

    #[test]
    fn delivery_does_not_nest() {
        let mut output = Output::new(1);
        assert!(output.begin_delivery());
        assert!(!output.begin_delivery());
        output.end_delivery();
        assert!(output.begin_delivery());
    }
}
