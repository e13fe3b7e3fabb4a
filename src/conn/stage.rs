//! Where a connection is in its life: one [`Stage`] per connection, carrying the data that
//! stage needs (a deadline, a miss count, a discard count), and every move between stages
//! as a method here. `Conn` holds its stage privately and moves it only with these methods
//! (and gives a new connection its first stage).
//!
//! ```text
//!  accept ─┬─▶ Handshaking{by} ──handshake done──┬─▶ Authenticating{by, misses} ──AUTH ok──┐
//!          ├─────────────────────────────────────┘                                         │
//!          └──────────────────────────────────────────────────────────────────────────────┤
//!                                                                                          ▼
//!              output > high water               read() == 0 (peer FIN)                  Open
//!    ┌──────┐ ───────────────────▶ ┌───────────┐        ┌────────────┐  output empty
//!    │ Open │                      │ Throttled │        │ PeerClosed │ ─────────────▶ closed
//!    └──────┘ ◀─────────────────── └───────────┘        └────────────┘
//!       │  │    output <= low water                          ▲
//!       │  └─────────────────────────────────────────────────┘ read() == 0
//!       │ handler closes (or the door refuses)
//!       ▼                    output empty:                      read() == 0, error,
//!   ┌─────────┐  shutdown(Write) ┌───────────┐  or discard limit reached
//!   │ Closing │ ───────────────▶ │ Lingering │ ────────────────────────▶ closed
//!   └─────────┘                  └───────────┘
//! ```
//! On a listener that expects a PROXY protocol header, every connection starts in
//! `ProxyHeader{by}` instead, and moves from it (once the header is read and the client it
//! names admitted) to the stage it would have started in: `Handshaking`, `Authenticating`
//! or `Open`.
//!
//! A socket error in any stage closes the connection at once. Two more stages sit beside
//! `PeerClosed`: `Finishing` (the peer finished, but input it sent earlier is still being
//! handed to the handler a turn at a time; then `PeerClosed`) and `PeerTruncated` (a TLS
//! peer's end of stream without close_notify; like `PeerClosed`, closed as truncated).
//!
//! The handler hears of a connection when it leaves the door stages (`Handshaking`,
//! `Authenticating`) for `Open`: its session exists from then until the close
//! ([`crate::conn::Conn::open_session`]). A connection refused at the door goes to
//! `Closing` (or `PeerClosed`) without one. A transition called in a stage it does not
//! apply to leaves the stage as it is: nothing brings a closing connection back.

use crate::timer::{Tick, NEVER};

/// Where a connection is in its life. See the module diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Reading the PROXY protocol header a trusted load balancer sends first, until `by`.
    /// The connection is not admitted yet: the access rules apply to the client address
    /// the header carries.
    ProxyHeader { by: Tick },
    /// A TLS handshake in progress, to complete by `by`; the handler has not heard of it.
    Handshaking { by: Tick },
    /// Its `AUTH` line must come by `by`; `misses` other lines came first. The handler has
    /// not heard of it.
    Authenticating { by: Tick, misses: u8 },
    /// Reading and writing. `message_by`: by when the message the handler left unfinished (a
    /// partial line) must be complete ([`NEVER`]: none waits).
    Open { message_by: Tick },
    /// Unsent output is over the high-water mark: not reading until it drains below the
    /// low-water mark. The unfinished message's deadline still runs.
    Throttled { message_by: Tick },
    /// The peer finished sending, but input it sent before that is still being handed to
    /// the handler a turn at a time (it yielded, or its output was over the limit): no
    /// more reads; once the handler takes no more, `on_peer_closed` and `PeerClosed`. The
    /// unfinished message's deadline still runs. `backlogged`: the handler stopped because
    /// its output is over the limit, and goes on once the output drains to the low-water
    /// mark, however it drains (a writable event, or the flush of the pending list).
    Finishing { message_by: Tick, backlogged: bool },
    /// The peer shut down its sending side: write what is owed, then close.
    PeerClosed,
    /// Like `PeerClosed`, for a TLS peer that ended the TCP stream without close_notify:
    /// its unconsumed input was dropped (it may be cut short), and the close says so.
    PeerTruncated,
    /// The server closes it: write what is owed, then shut down writing and linger.
    Closing,
    /// Our side is shut down; reading and discarding (`discarded` bytes so far) until the
    /// peer's end of stream, so that closing does not reset the connection under data the
    /// peer has not read yet.
    Lingering { discarded: u32 },
}

/// Backpressure limits, from [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watermarks {
    pub(crate) high: usize,
    pub(crate) low: usize,
}

/// What the reactor must do after [`Stage::settle`] moved a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing beyond updating the poller interest.
    Stay,
    /// Reading may resume: read now, because the edge that announced the waiting input was
    /// consumed while reading was paused, and edge-triggered polling will not repeat it.
    ResumeReading,
    /// Output is flushed and the server is closing: shut down writing, then
    /// [`Stage::linger`].
    ShutdownWrite,
    /// Everything owed was written to a peer that has finished: close.
    Close,
}

impl Stage {
    /// Whether the reactor reads (or, when lingering, discards) input in this stage.
    pub(crate) fn reads(self) -> bool {
        matches!(
            self,
            Stage::ProxyHeader { .. }
                | Stage::Handshaking { .. }
                | Stage::Authenticating { .. }
                | Stage::Open { .. }
                | Stage::Lingering { .. }
        )
    }

    /// Whether the handler has not heard of the connection yet: its TLS handshake or its
    /// `AUTH` line is still to come.
    pub(crate) fn before_open(self) -> bool {
        matches!(
            self,
            Stage::ProxyHeader { .. } | Stage::Handshaking { .. } | Stage::Authenticating { .. }
        )
    }

    /// Whether neither side has finished yet: the stages a close or the peer's end of
    /// stream moves on from (the others are already on their way out).
    fn before_the_end(self) -> bool {
        matches!(
            self,
            Stage::ProxyHeader { .. }
                | Stage::Handshaking { .. }
                | Stage::Authenticating { .. }
                | Stage::Open { .. }
                | Stage::Throttled { .. }
                | Stage::Finishing { .. }
        )
    }

    /// Whether new output may still be queued in this stage.
    pub(crate) fn accepts_output(self) -> bool {
        !matches!(self, Stage::Closing | Stage::Lingering { .. })
    }

    /// By when an unfinished message must complete ([`NEVER`]: none waits, or not open).
    pub(crate) fn message_by(self) -> Tick {
        match self {
            Stage::Open { message_by }
            | Stage::Throttled { message_by }
            | Stage::Finishing { message_by, .. } => message_by,
            _ => NEVER,
        }
    }

    /// Whether the handler's messages are still being taken in this stage, so that an
    /// unfinished one has a deadline.
    pub(crate) fn takes_messages(self) -> bool {
        matches!(
            self,
            Stage::Open { .. } | Stage::Throttled { .. } | Stage::Finishing { .. }
        )
    }

    /// The transition after output changed: given the memory unsent output holds
    /// ([`crate::buffer::OutQueue::held`], zero exactly when nothing is owed), the next stage
    /// and what the reactor must do.
    pub(crate) fn settle(self, pending: usize, water: Watermarks) -> (Stage, Next) {
        match self {
            Stage::Open { message_by } if pending > water.high => {
                (Stage::Throttled { message_by }, Next::Stay)
            }
            Stage::Throttled { message_by } if pending <= water.low => {
                (Stage::Open { message_by }, Next::ResumeReading)
            }
            Stage::Finishing {
                message_by,
                backlogged: true,
            } if pending <= water.low => (
                Stage::Finishing {
                    message_by,
                    backlogged: false,
                },
                Next::ResumeReading,
            ),
            Stage::PeerClosed | Stage::PeerTruncated if pending == 0 => (self, Next::Close),
            Stage::Closing if pending == 0 => (self, Next::ShutdownWrite),
            other => (other, Next::Stay),
        }
    }

    /// The handler heard of the connection: open, with no message waiting.
    pub(crate) fn open() -> Stage {
        Stage::Open { message_by: NEVER }
    }

    /// The PROXY header was read and its client admitted: on to `next`, the stage a
    /// connection without one starts in (`Handshaking`, `Authenticating` or `Open`).
    pub(crate) fn header_read(self, next: Stage) -> Stage {
        match (self, next) {
            (
                Stage::ProxyHeader { .. },
                Stage::Handshaking { .. } | Stage::Authenticating { .. } | Stage::Open { .. },
            ) => next,
            (other, _) => other,
        }
    }

    /// The TLS handshake completed and an `AUTH` line is still required, by `by`.
    pub(crate) fn authenticate_by(self, by: Tick) -> Stage {
        match self {
            Stage::Handshaking { .. } => Stage::Authenticating { by, misses: 0 },
            other => other,
        }
    }

    /// Lines other than `AUTH` answered at the door so far.
    pub(crate) fn auth_misses(self) -> u8 {
        match self {
            Stage::Authenticating { misses, .. } => misses,
            _ => 0,
        }
    }

    /// A line other than `AUTH` came to a connection at the door; returns how many have.
    pub(crate) fn missed_auth(&mut self) -> u8 {
        match self {
            Stage::Authenticating { misses, .. } => {
                *misses = misses.saturating_add(1);
                *misses
            }
            _ => 0,
        }
    }

    /// The unfinished message must now complete by `by` ([`NEVER`]: none waits). Only an
    /// open connection has one.
    pub(crate) fn wait_for_message(&mut self, by: Tick) {
        if let Stage::Open { message_by }
        | Stage::Throttled { message_by }
        | Stage::Finishing { message_by, .. } = self
        {
            *message_by = by;
        }
    }

    /// The server closes it: what is owed is still written, then writing shuts down and
    /// the connection lingers. A connection already on its way out (the peer finished, or
    /// lingering) keeps its stage.
    pub(crate) fn close(self) -> Stage {
        if self.before_the_end() {
            Stage::Closing
        } else {
            self
        }
    }

    /// The peer finished sending, with input the handler has not taken yet: that is handed
    /// over a turn at a time first.
    pub(crate) fn finish(self) -> Stage {
        match self {
            Stage::Open { message_by } | Stage::Throttled { message_by } => Stage::Finishing {
                message_by,
                backlogged: false,
            },
            other => other,
        }
    }

    /// A finishing connection's handler stopped because its output is over the limit: it
    /// goes on once the output drains ([`Stage::settle`] says when).
    pub(crate) fn wait_for_output(self) -> Stage {
        match self {
            Stage::Finishing { message_by, .. } => Stage::Finishing {
                message_by,
                backlogged: true,
            },
            other => other,
        }
    }

    /// The peer finished sending, and the handler has been told (if it had heard of it).
    pub(crate) fn peer_closed(self) -> Stage {
        if self.before_the_end() {
            Stage::PeerClosed
        } else {
            self
        }
    }

    /// The handler heard of the connection: it is open, from the door (or at once when there
    /// is no door). A connection already on its way out keeps its stage.
    pub(crate) fn opened(self) -> Stage {
        match self {
            Stage::Handshaking { .. } | Stage::Authenticating { .. } | Stage::Open { .. } => {
                Stage::open()
            }
            other => other,
        }
    }

    /// A TLS peer's stream ended without close_notify.
    pub(crate) fn truncated(self) -> Stage {
        match self {
            Stage::PeerClosed => Stage::PeerTruncated,
            other => other,
        }
    }

    /// Writing was shut down: read and discard until the peer's end of stream.
    pub(crate) fn linger(self) -> Stage {
        match self {
            Stage::Closing => Stage::Lingering { discarded: 0 },
            other => other,
        }
    }

    /// `n` more bytes discarded while lingering; false once past `limit` (then close).
    pub(crate) fn discard(&mut self, n: usize, limit: u32) -> bool {
        match self {
            Stage::Lingering { discarded } => {
                *discarded = discarded.saturating_add(n.min(u32::MAX as usize) as u32);
                *discarded <= limit
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATER: Watermarks = Watermarks { high: 100, low: 10 };
    const OPEN: Stage = Stage::Open { message_by: NEVER };
    const THROTTLED: Stage = Stage::Throttled { message_by: NEVER };

    #[test]
    fn output_over_high_water_throttles_reading() {
        assert_eq!(OPEN.settle(100, WATER), (OPEN, Next::Stay));
        assert_eq!(OPEN.settle(101, WATER), (THROTTLED, Next::Stay));
    }

    #[test]
    fn throttled_resumes_reading_only_below_low_water() {
        assert_eq!(THROTTLED.settle(50, WATER), (THROTTLED, Next::Stay));
        assert_eq!(THROTTLED.settle(10, WATER), (OPEN, Next::ResumeReading));
    }

    #[test]
    fn throttling_keeps_the_unfinished_message_deadline() {
        let open = Stage::Open { message_by: 77 };
        let (throttled, _) = open.settle(101, WATER);
        assert_eq!(throttled.message_by(), 77);
        assert_eq!(throttled.settle(0, WATER).0, open);
    }

    #[test]
    fn half_closed_peer_is_closed_once_output_is_flushed() {
        assert_eq!(
            Stage::PeerClosed.settle(1, WATER),
            (Stage::PeerClosed, Next::Stay)
        );
        assert_eq!(
            Stage::PeerClosed.settle(0, WATER),
            (Stage::PeerClosed, Next::Close)
        );
    }

    #[test]
    fn server_close_flushes_then_shuts_down_and_lingers() {
        assert_eq!(
            Stage::Closing.settle(5, WATER),
            (Stage::Closing, Next::Stay)
        );
        assert_eq!(
            Stage::Closing.settle(0, WATER),
            (Stage::Closing, Next::ShutdownWrite)
        );
        let lingering = Stage::Closing.linger();
        assert_eq!(lingering, Stage::Lingering { discarded: 0 });
        assert_eq!(lingering.settle(0, WATER), (lingering, Next::Stay));
    }

    #[test]
    fn only_open_door_and_lingering_stages_read() {
        for stage in [
            OPEN,
            Stage::Handshaking { by: 1 },
            Stage::Authenticating { by: 1, misses: 0 },
            Stage::Lingering { discarded: 0 },
        ] {
            assert!(stage.reads(), "{stage:?}");
        }
        for stage in [
            THROTTLED,
            Stage::Finishing {
                message_by: NEVER,
                backlogged: false,
            },
            Stage::PeerClosed,
            Stage::PeerTruncated,
            Stage::Closing,
        ] {
            assert!(!stage.reads(), "{stage:?}");
        }
    }

    #[test]
    fn closing_keeps_a_connection_already_on_its_way_out() {
        assert_eq!(OPEN.close(), Stage::Closing);
        assert_eq!(
            Stage::Authenticating { by: 5, misses: 2 }.close(),
            Stage::Closing
        );
        assert_eq!(Stage::PeerClosed.close(), Stage::PeerClosed);
        let lingering = Stage::Lingering { discarded: 9 };
        assert_eq!(lingering.close(), lingering);
    }

    #[test]
    fn the_door_counts_misses_and_hands_its_deadline_on() {
        let mut stage = Stage::Handshaking { by: 10 }.authenticate_by(20);
        assert_eq!(stage, Stage::Authenticating { by: 20, misses: 0 });
        assert_eq!(stage.missed_auth(), 1);
        assert_eq!(stage.missed_auth(), 2);
        assert!(stage.before_open());
        assert!(!Stage::open().before_open());
    }

    #[test]
    fn a_finishing_connection_keeps_its_message_deadline_and_goes_on_once_output_drains() {
        let finishing = Stage::Throttled { message_by: 42 }.finish();
        assert_eq!(finishing.message_by(), 42);
        assert_eq!(finishing.settle(0, WATER), (finishing, Next::Stay));
        let waiting = finishing.wait_for_output();
        assert_eq!(waiting.settle(50, WATER), (waiting, Next::Stay));
        assert_eq!(waiting.settle(10, WATER), (finishing, Next::ResumeReading));
    }

    #[test]
    fn nothing_brings_a_closing_connection_back() {
        for stage in [Stage::Closing, Stage::Lingering { discarded: 3 }] {
            assert_eq!(stage.finish(), stage);
            assert_eq!(stage.peer_closed(), stage);
            assert_eq!(stage.opened(), stage);
        }
        assert_eq!(Stage::PeerClosed.finish(), Stage::PeerClosed);
    }

    #[test]
    fn lingering_discards_up_to_the_limit() {
        let mut stage = Stage::Lingering { discarded: 0 };
        assert!(stage.discard(10, 15));
        assert!(!stage.discard(10, 15));
    }

    #[test]
    fn only_an_open_connection_waits_for_a_message() {
        let mut stage = OPEN;
        stage.wait_for_message(42);
        assert_eq!(stage.message_by(), 42);
        let mut closing = Stage::Closing;
        closing.wait_for_message(42);
        assert_eq!(closing.message_by(), NEVER);
    }
}
