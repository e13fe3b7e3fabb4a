//! The [`Outbox`] behind [`Context`](crate::Context): where one callback's effects wait
//! until the reactor performs them (its reply, its mail to other connections, closes, a
//! stop). One per reactor, reused for every callback so that its buffers keep their
//! capacity.

use std::ops::Range;
use std::sync::Arc;

use crate::conn_id::ConnId;

/// One write to another connection.
#[derive(Debug)]
pub(crate) enum Letter {
    /// The next this many bytes of `Outbox::mail_bytes`.
    Bytes(usize),
    /// Part of a chunk shared with other recipients.
    Shared(Arc<[u8]>, Range<usize>),
}

/// Where a callback's effects wait until the reactor performs them. One per reactor, reused
/// for every callback so that its buffers keep their capacity.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) current: ConnId,
    /// False while the current connection is already closed (in `on_close`).
    pub(crate) current_open: bool,
    /// Memory the current connection's queued output held when the callback began.
    pub(crate) current_held: usize,
    /// `Config::high_water`, for [`Context::backlogged`].
    pub(crate) high_water: usize,
    /// Output for the current connection.
    pub(crate) reply: Vec<u8>,
    pub(crate) close_current: bool,
    /// The handler asked for the rest of its input later ([`Context::yield_rest`]).
    pub(crate) yield_rest: bool,
    /// Writes to other connections, in order.
    pub(crate) mail: Vec<(ConnId, Letter)>,
    pub(crate) mail_bytes: Vec<u8>,
    pub(crate) closes: Vec<ConnId>,
    pub(crate) stop: bool,
    /// A callback ran since the last [`Handler::on_flush`]: the handler may hold batched
    /// work, so the loop must call it again before it sleeps.
    pub(crate) unflushed: bool,
}

impl Outbox {
    pub(crate) fn new(high_water: usize) -> Outbox {
        Outbox {
            current: ConnId::NONE,
            current_open: false,
            current_held: 0,
            high_water,
            reply: Vec::new(),
            close_current: false,
            yield_rest: false,
            mail: Vec::new(),
            mail_bytes: Vec::new(),
            closes: Vec::new(),
            stop: false,
            unflushed: false,
        }
    }

    /// Starts a callback about connection `id`, open or not, whose queued output holds
    /// `held` bytes of memory.
    pub(crate) fn begin(&mut self, id: ConnId, open: bool, held: usize) {
        debug_assert!(
            self.reply.is_empty(),
            "reply left over from a previous callback"
        );
        self.current = id;
        self.current_open = open;
        self.current_held = held;
        self.close_current = false;
        self.yield_rest = false;
        self.unflushed = true;
    }

    /// Starts a callback about no connection ([`Handler::on_flush`]).
    pub(crate) fn begin_unattached(&mut self) {
        self.begin(ConnId::NONE, false, 0);
    }

    /// Gives back the memory of buffers a spike grew (one callback that wrote megabytes,
    /// a broadcast to a crowd): once empty, they keep a working size and no more.
    pub(crate) fn shrink_after_spike(&mut self) {
        const KEEP_BYTES: usize = 64 * 1024;
        const KEEP_LETTERS: usize = 4096;
        if self.reply.is_empty() && self.reply.capacity() > 4 * KEEP_BYTES {
            self.reply.shrink_to(KEEP_BYTES);
        }
        if self.mail_bytes.is_empty() && self.mail_bytes.capacity() > 4 * KEEP_BYTES {
            self.mail_bytes.shrink_to(KEEP_BYTES);
        }
        if self.mail.is_empty() && self.mail.capacity() > 4 * KEEP_LETTERS {
            self.mail.shrink_to(KEEP_LETTERS);
        }
    }

    pub(crate) fn has_mail(&self) -> bool {
        !self.mail.is_empty() || !self.closes.is_empty()
    }
}
