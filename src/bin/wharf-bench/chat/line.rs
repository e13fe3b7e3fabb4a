//! The chat job's lines, sans-IO: what a client sends, how a line received is recognised
//! whatever the server put before it, and what receivers count. No socket, no clock: the
//! caller passes the time.
//!
//! A measured line is `b <sender> <seq> <nanos>`: the sending client's index, its own sequence
//! number and the send time in nanoseconds since the run began (one process, one monotonic
//! clock, so a receiver can subtract). The barrier's line is `sync <k>`.
//!
//! Servers deliver a line with the sender's name before it, each in a format of its own
//! (`<user5> b 3 17 123456` from `wharf chat`, the tokio peer and `ncat --chat`), so a
//! receiver reads the payload from the *end* of the line backwards and never parses the
//! prefix. Lines that end otherwise (join notices, ncat's `<announce>` lines) are the
//! server's own and are ignored.
//!
//! Hot path: at millions of lines a second each line is parsed in place, without
//! allocating, and counted in a table and a histogram sized up front.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use memchr::memchr_iter;

use crate::latency::Latencies;

/// Room for the longest line built here: `b `, three 20-digit numbers, two spaces and `\n`
/// (though a receiver reads at most 19 digits: nanoseconds since the run began never need
/// more, nor do client indices and sequence numbers).
const LINE_BYTES: usize = 72;

/// Bytes of an unfinished line kept between reads. Only a line's end is ever parsed, so an
/// overlong line (a long list of names, say) is cut from the front, never stored whole.
const KEPT_TAIL: usize = 256;

/// A line to send, formatted on the stack: sending allocates nothing.
pub struct Line {
    bytes: [u8; LINE_BYTES],
    len: usize,
}

impl Line {
    /// `b <sender> <seq> <nanos>\n`.
    pub fn measured(sender: u64, seq: u64, nanos: u64) -> Line {
        Line::format(format_args!("b {sender} {seq} {nanos}\n"))
    }

    /// `sync <k>\n`: the barrier's line.
    pub fn sync(k: u64) -> Line {
        Line::format(format_args!("sync {k}\n"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn format(text: fmt::Arguments<'_>) -> Line {
        let mut bytes = [0; LINE_BYTES];
        let mut rest = &mut bytes[..];
        rest.write_fmt(text)
            .expect("LINE_BYTES holds the longest line");
        let len = LINE_BYTES - rest.len();
        Line { bytes, len }
    }
}

/// What a received line is, read from its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A measured line from client `sender`.
    Measured { sender: u64, seq: u64, sent_ns: u64 },
    /// A barrier line.
    Sync,
    /// Anything else: the server's own notices.
    Other,
}

/// Reads a line (without its `\n`) from its end: `... b <sender> <seq> <nanos>` or
/// `... sync <k>`, whatever comes before.
pub fn classify(line: &[u8]) -> Received {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some((rest, last)) = last_number(line) else {
        return Received::Other;
    };
    if word_at_end(rest, b"sync") {
        return Received::Sync;
    }
    let measured = last_number(rest).and_then(|(rest, seq)| {
        let (rest, sender) = last_number(rest)?;
        word_at_end(rest, b"b").then_some((sender, seq))
    });
    match measured {
        Some((sender, seq)) => Received::Measured {
            sender,
            seq,
            sent_ns: last,
        },
        None => Received::Other,
    }
}

/// ` <digits>` at the end of `bytes`: what comes before the space, and the number. One
/// backward pass, and no overflow checks: 19 digits always fit in a u64, so more are refused.
fn last_number(bytes: &[u8]) -> Option<(&[u8], u64)> {
    const MAX_DIGITS: usize = 19;
    let mut at = bytes.len();
    let (mut number, mut scale) = (0u64, 1u64);
    while at > 0 && bytes[at - 1].is_ascii_digit() {
        if bytes.len() - at == MAX_DIGITS {
            return None;
        }
        at -= 1;
        number += u64::from(bytes[at] - b'0') * scale;
        scale *= 10;
    }
    if at == bytes.len() {
        return None;
    }
    Some((bytes[..at].strip_suffix(b" ")?, number))
}

/// Whether `bytes` ends with `word` standing alone: at the start or after a space.
fn word_at_end(bytes: &[u8], word: &[u8]) -> bool {
    bytes
        .strip_suffix(word)
        .is_some_and(|before| before.is_empty() || before.ends_with(b" "))
}

/// What the receivers count: lines of the measured window that arrived, their order per
/// sender, their fan-out latency.
pub struct Deliveries {
    conns: usize,
    /// Per (receiver, sender), the sequence number expected next, modulo 256. A byte, not a
    /// u64: at 10,000 clients the table has 10^8 cells (100 MB, zero pages until touched).
    /// A line counts out of order when its number is up to 128 behind; one up to 127 ahead
    /// is a gap (lines missing, counted as undelivered), after which order resumes there.
    next_seq: Vec<u8>,
    /// Measured lines that reached a client other than their sender, in order or not.
    pub received: u64,
    /// Of those, lines behind one already received from the same sender (or repeated).
    pub out_of_order: u64,
    /// Lines received by their own sender: a server that echoes.
    pub echoed: u64,
    /// Send to arrival, per delivery.
    pub latencies: Latencies,
}

impl Deliveries {
    /// Counts for a room of `conns` clients.
    pub fn new(conns: usize) -> Deliveries {
        Deliveries {
            conns,
            next_seq: vec![0; conns * conns],
            received: 0,
            out_of_order: 0,
            echoed: 0,
            latencies: Latencies::new(),
        }
    }

    /// Takes the bytes `data` that client `receiver` read at `now_ns`, after the unfinished
    /// line `partial` it had: counts every whole line, leaves the tail of the last unfinished
    /// one in `partial`. Returns whether a barrier line was among them.
    pub fn take(
        &mut self,
        receiver: usize,
        partial: &mut Vec<u8>,
        data: &[u8],
        now_ns: u64,
    ) -> bool {
        let mut synced = false;
        let mut start = 0;
        for end in memchr_iter(b'\n', data) {
            let line = &data[start..end];
            synced |= if partial.is_empty() {
                self.line(receiver, line, now_ns)
            } else {
                partial.extend_from_slice(line);
                let whole = self.line(receiver, partial, now_ns);
                partial.clear();
                whole
            };
            start = end + 1;
        }
        let rest = &data[start..];
        if rest.len() >= KEPT_TAIL {
            partial.clear();
            partial.extend_from_slice(&rest[rest.len() - KEPT_TAIL..]);
        } else {
            partial.extend_from_slice(rest);
            if partial.len() > 2 * KEPT_TAIL {
                partial.drain(..partial.len() - KEPT_TAIL);
            }
        }
        synced
    }

    /// Counts one line client `receiver` read at `now_ns`; true for a barrier line.
    fn line(&mut self, receiver: usize, line: &[u8], now_ns: u64) -> bool {
        match classify(line) {
            Received::Sync => true,
            Received::Other => false,
            Received::Measured {
                sender,
                seq,
                sent_ns,
            } => {
                self.delivery(receiver, sender, seq, sent_ns, now_ns);
                false
            }
        }
    }

    fn delivery(&mut self, receiver: usize, sender: u64, seq: u64, sent_ns: u64, now_ns: u64) {
        let Some(sender) = usize::try_from(sender).ok().filter(|&s| s < self.conns) else {
            return; // not one of ours
        };
        if sender == receiver {
            self.echoed += 1;
            return;
        }
        self.received += 1;
        let next = &mut self.next_seq[receiver * self.conns + sender];
        let behind = next.wrapping_sub(seq as u8);
        if (1..=128).contains(&behind) {
            self.out_of_order += 1;
        } else {
            *next = (seq as u8).wrapping_add(1);
        }
        self.latencies
            .record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_from_their_end_whatever_the_prefix() {
        let line = Line::measured(3, 17, 123_456);
        assert_eq!(line.as_bytes(), b"b 3 17 123456\n");
        let measured = Received::Measured {
            sender: 3,
            seq: 17,
            sent_ns: 123_456,
        };
        assert_eq!(classify(b"<user5> b 3 17 123456"), measured);
        assert_eq!(classify(b"<user5> b 3 17 123456\r"), measured);
        assert_eq!(classify(b"[alice]: b 3 17 123456"), measured);
        assert_eq!(classify(b"b 3 17 123456"), measured);
        assert_eq!(classify(b"<user5> sync 4"), Received::Sync);
        assert_eq!(Line::sync(4).as_bytes(), b"sync 4\n");
        for other in [
            &b"* user4 joined"[..],
            b"<announce> 127.0.0.1 is connected as <user4>.",
            b"<user5> ab 3 17 123456",
            b"<user5> b 3 17",
            b"<user5> b 3 17 99999999999999999999999",
            b"",
        ] {
            assert_eq!(classify(other), Received::Other, "{other:?}");
        }
    }

    #[test]
    fn lines_split_across_reads_are_joined_and_counted_per_sender() {
        let mut deliveries = Deliveries::new(3);
        let mut partial = Vec::new();
        let stream = concat!(
            "* user3 joined\n",
            "<user2> sync 0\n",
            "<user1> b 0 0 10\n",
            "<user1> b 0 2 10\n",
            "<user1> b 0 1 10\n", // behind seq 2
            "<user3> b 2 0 10\n",
            "<user2> b 1 0 10\n", // the receiver's own line, echoed
        )
        .as_bytes();
        let mut synced = false;
        for chunk in stream.chunks(7) {
            synced |= deliveries.take(1, &mut partial, chunk, 30);
        }
        assert!(synced);
        assert!(partial.is_empty());
        assert_eq!(deliveries.received, 4);
        assert_eq!(deliveries.out_of_order, 1, "seq 1 after seq 2");
        assert_eq!(deliveries.echoed, 1);
        assert_eq!(deliveries.latencies.len(), 4);
        assert_eq!(deliveries.latencies.summary().max_us, 0.02);
    }

    #[test]
    fn an_overlong_line_keeps_only_its_end() {
        let mut deliveries = Deliveries::new(2);
        let mut partial = Vec::new();
        let long = vec![b'x'; 10_000];
        deliveries.take(1, &mut partial, b"<", 0);
        deliveries.take(1, &mut partial, &long, 0);
        assert!(partial.len() <= 2 * KEPT_TAIL);
        deliveries.take(1, &mut partial, b"> b 0 0 5\n", 9);
        assert_eq!(deliveries.received, 1);
        assert!(partial.is_empty());
    }
}
