//! The bytes each round trip sends, and the check of every byte that comes back.
//!
//! All messages are windows into one pattern built once per run, so sending and verifying
//! allocate and copy nothing. Round trip `seq` starts at offset `seq % PERIOD`, so two
//! consecutive messages of a connection differ from their first byte: a server that replays
//! an old message, drops one or answers out of turn is caught as a mismatch.

/// Distinct windows into the pattern. Prime, so it shares no period with the pattern itself.
const PERIOD: usize = 251;

/// What a connection sends per round trip: `size` bytes, in line mode `size - 1` bytes without
/// a newline followed by `\n`.
#[derive(Debug)]
pub struct Message {
    /// `size + PERIOD` pattern bytes; message `seq` is a `size`-byte window of it.
    pattern: Box<[u8]>,
    size: usize,
    line: bool,
}

impl Message {
    /// A message of `size` bytes (at least 1). In `line` mode the last byte is `\n` and no other
    /// byte is; otherwise every byte value occurs, to check that the server is 8-bit clean.
    pub fn new(size: usize, line: bool) -> Message {
        let size = size.max(1);
        let pattern = (0..size + PERIOD)
            .map(|i| {
                if line {
                    // Printable ASCII from '!' to '~': no newline, readable in a packet capture.
                    b'!' + (i % 94) as u8
                } else {
                    (i % 256) as u8
                }
            })
            .collect();
        Message {
            pattern,
            size,
            line,
        }
    }

    /// The one-byte message `\n`, which echo and line-echo servers both answer unchanged: the
    /// probe that `hold` and `connect` send to see that the server has taken a connection.
    pub fn probe() -> Message {
        Message::new(1, true)
    }

    /// Bytes per message, each way.
    pub fn size(&self) -> usize {
        self.size
    }

    /// What remains to send of message `seq` after its first `sent` bytes, as two slices
    /// (payload, then the `\n` in line mode) for one vectored write.
    pub fn unsent(&self, seq: u32, sent: usize) -> (&[u8], &[u8]) {
        let body = self.body(seq);
        let tail = self.tail();
        let body_sent = sent.min(body.len());
        let tail_sent = sent.saturating_sub(body.len()).min(tail.len());
        (&body[body_sent..], &tail[tail_sent..])
    }

    /// Whether `chunk` is exactly what message `seq` holds from byte `at` on. Bytes past the
    /// end of the message (a server that sends more than it got) do not match.
    pub fn matches(&self, seq: u32, at: usize, chunk: &[u8]) -> bool {
        if at.saturating_add(chunk.len()) > self.size {
            return false;
        }
        let (body, tail) = self.unsent(seq, at);
        let (chunk_body, chunk_tail) = chunk.split_at(body.len().min(chunk.len()));
        chunk_body == &body[..chunk_body.len()] && chunk_tail == &tail[..chunk_tail.len()]
    }

    /// The payload of message `seq`: all of it, or in line mode all but the `\n`.
    fn body(&self, seq: u32) -> &[u8] {
        let start = seq as usize % PERIOD;
        &self.pattern[start..start + self.size - usize::from(self.line)]
    }

    fn tail(&self) -> &'static [u8] {
        if self.line {
            b"\n"
        } else {
            b""
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(message: &Message, seq: u32) -> Vec<u8> {
        let (body, tail) = message.unsent(seq, 0);
        [body, tail].concat()
    }

    #[test]
    fn line_messages_end_with_their_only_newline() {
        let message = Message::new(64, true);
        let bytes = whole(&message, 7);
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn consecutive_messages_differ_from_the_first_byte() {
        let message = Message::new(64, false);
        assert_ne!(whole(&message, 3)[0], whole(&message, 4)[0]);
    }

    #[test]
    fn a_message_matches_itself_in_any_split() {
        let message = Message::new(10, true);
        let bytes = whole(&message, 42);
        for cut in 0..=bytes.len() {
            assert!(message.matches(42, 0, &bytes[..cut]));
            assert!(message.matches(42, cut, &bytes[cut..]));
        }
    }

    #[test]
    fn wrong_extra_or_replayed_bytes_do_not_match() {
        let message = Message::new(8, false);
        let mut bytes = whole(&message, 1);
        assert!(
            !message.matches(2, 0, &bytes),
            "an earlier message replayed"
        );
        bytes.push(0);
        assert!(!message.matches(1, 0, &bytes), "one byte too many");
        bytes.pop();
        bytes[5] ^= 1;
        assert!(!message.matches(1, 0, &bytes), "one bit flipped");
    }

    #[test]
    fn unsent_skips_what_was_written() {
        let message = Message::new(4, true);
        let (body, tail) = message.unsent(0, 3);
        assert!(body.is_empty());
        assert_eq!(tail, b"\n");
        let (body, tail) = message.unsent(0, 4);
        assert!(body.is_empty() && tail.is_empty());
    }

    #[test]
    fn the_probe_is_a_lone_newline() {
        assert_eq!(whole(&Message::probe(), 99), b"\n");
    }
}
