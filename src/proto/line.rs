//! Line echo: each complete `\n`-terminated line is sent back byte-exact, terminator included.
//!
//! Lines are bytes, not text: `\r\n`, empty lines, NUL and invalid UTF-8 pass through
//! untouched. A line's length is the number of bytes before its `\n`; a line longer than the
//! limit is refused with one error line and the connection is closed after it. The limit is
//! enforced as soon as more than `max_line` bytes are waiting without a newline, so a peer can
//! never make the server buffer more than `max_line` bytes of a line (plus one read).
//!
//! Complete lines are never copied one by one: consecutive good lines form one prefix of the
//! input, which is echoed with one write. Each byte is searched for a newline once, however a
//! line is split across reads: a per-connection [`LineCursor`] remembers how much of the
//! waiting partial line has been searched already (otherwise a 64 KiB line arriving a byte at
//! a time would cost gigabytes of scanning).

use std::net::SocketAddr;
use std::time::Instant;

use memchr::memchr_iter;

use crate::handler::{Context, Handler};
use crate::log_limit::LogLimit;

/// The line-echo protocol.
///
/// ```
/// use wharf::proto::line::{LineCursor, LineEcho, LineStep};
///
/// let proto = LineEcho::new(8);
/// let mut cursor = LineCursor::default(); // one per connection
/// // Two complete lines and the start of a third: the complete ones are echoed (and the
/// // caller consumes them, keeping "hal").
/// assert_eq!(proto.on_input(&mut cursor, b"a\r\n\nhal"), LineStep::Echo(b"a\r\n\n"));
/// // More bytes arrived after "hal": more than 8 without a newline: refuse and close.
/// assert_eq!(proto.on_input(&mut cursor, b"half a line"), LineStep::TooLong { lines: b"" });
/// assert_eq!(proto.error_line(), b"ERR line too long (max 8 bytes)\n");
/// // At end of input, the unterminated rest is echoed as it is.
/// assert_eq!(proto.on_peer_closed(b"tail"), b"tail");
/// ```
#[derive(Debug, Clone)]
pub struct LineEcho {
    max_line: usize,
    error_line: Box<[u8]>,
}

/// How far one connection's waiting partial line has been searched for a newline.
///
/// Keep one per connection, pass it to every [`LineEcho::on_input`] call with all the
/// unconsumed input, and consume exactly the lines each call returns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineCursor {
    /// Bytes at the start of the next input known to contain no newline.
    searched: usize,
}

/// What the line protocol does with the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum LineStep<'a> {
    /// Send these complete lines back and consume them (a prefix of the input, possibly
    /// empty); keep the rest until more input arrives.
    Echo(&'a [u8]),
    /// A line is over the limit: send `lines` (the complete lines before it), then
    /// [`LineEcho::error_line`], then close the connection.
    TooLong {
        /// Complete, acceptable lines that precede the overlong one.
        lines: &'a [u8],
    },
}

/// The default line limit, in bytes before the `\n`.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

impl LineEcho {
    /// A line protocol that accepts lines of at most `max_line` bytes before the `\n`.
    pub fn new(max_line: usize) -> Self {
        let error_line = format!("ERR line too long (max {max_line} bytes)\n").into_bytes();
        LineEcho {
            max_line,
            error_line: error_line.into_boxed_slice(),
        }
    }

    /// The longest line accepted, in bytes before the `\n`.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The line sent to a peer whose line is too long.
    pub fn error_line(&self) -> &[u8] {
        &self.error_line
    }

    /// Decides what to do with `input`, all the bytes received and not yet consumed, and
    /// advances `cursor` past what it searched.
    pub fn on_input<'a>(&self, cursor: &mut LineCursor, input: &'a [u8]) -> LineStep<'a> {
        let skip = cursor.searched.min(input.len());
        let mut line_start = 0;
        for newline in memchr_iter(b'\n', &input[skip..]).map(|at| at + skip) {
            if newline - line_start > self.max_line {
                *cursor = LineCursor::default();
                return LineStep::TooLong {
                    lines: &input[..line_start],
                };
            }
            line_start = newline + 1;
        }
        let partial = input.len() - line_start;
        if partial > self.max_line {
            *cursor = LineCursor::default();
            return LineStep::TooLong {
                lines: &input[..line_start],
            };
        }
        // Once the complete lines are consumed, the partial line starts the next input.
        cursor.searched = partial;
        LineStep::Echo(&input[..line_start])
    }

    /// The reply when the peer has finished sending: `rest` (an unterminated final line,
    /// never longer than the limit because [`LineEcho::on_input`] saw it first) is echoed as
    /// it is.
    pub fn on_peer_closed<'a>(&self, rest: &'a [u8]) -> &'a [u8] {
        rest
    }
}

impl Default for LineEcho {
    fn default() -> Self {
        LineEcho::new(DEFAULT_MAX_LINE)
    }
}

/// Line echo: complete lines back byte-exact; an overlong line gets an error and a close.
///
/// ```
/// # use wharf::{Config, Reactor, service::Line};
/// let reactor = Reactor::new(Config::default(), Line::new(1024))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Line {
    protocol: LineEcho,
    /// Overlong lines are a client's doing: at most one log line per second about them.
    overlong_log: LogLimit,
}

impl Line {
    /// Line echo that accepts lines of at most `max_line` bytes before the `\n`.
    pub fn new(max_line: usize) -> Line {
        Line {
            protocol: LineEcho::new(max_line),
            overlong_log: LogLimit::per_second(module_path!(), log::Level::Info, "overlong lines"),
        }
    }
}

impl Default for Line {
    fn default() -> Line {
        Line::new(DEFAULT_MAX_LINE)
    }
}

impl Handler for Line {
    type Session = LineCursor;

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) -> LineCursor {
        LineCursor::default()
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, cursor: &mut LineCursor, input: &[u8]) -> usize {
        match self.protocol.on_input(cursor, input) {
            LineStep::Echo(lines) => {
                ctx.write(lines);
                lines.len()
            }
            LineStep::TooLong { lines } => {
                ctx.write(lines);
                refuse_overlong_line(ctx, &self.protocol, &mut self.overlong_log);
                input.len()
            }
        }
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_>, _: &mut LineCursor, unconsumed: &[u8]) {
        ctx.write(self.protocol.on_peer_closed(unconsumed));
    }
}

/// Line mode's rule for a line over the limit, shared by line echo and chat: the error line,
/// a close once it is sent, and a log line at most once a second (a client can trigger it
/// at will).
pub(crate) fn refuse_overlong_line(ctx: &mut Context<'_>, framing: &LineEcho, log: &mut LogLimit) {
    ctx.write(framing.error_line());
    ctx.close();
    if let Some(count) = log.hit(Instant::now()) {
        log::info!(
            "conn={} closing: line longer than {} bytes ({count} such in the last second)",
            ctx.id(),
            framing.max_line()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `stream` in pieces of `split` bytes the way the reactor does (unconsumed bytes
    /// stay buffered) and returns everything sent back, and whether the error ended it.
    fn run(proto: &LineEcho, stream: &[u8], split: usize) -> (Vec<u8>, bool) {
        run_split(proto, stream, &[split.max(1)])
    }

    #[test]
    fn lines_pass_through_byte_exact() {
        let stream = b"plain\ncrlf\r\n\n\0nul\0\n\xff\xfe not utf-8\nlast no newline";
        for split in [1, 2, 3, 7, 64] {
            let (out, failed) = run(&LineEcho::default(), stream, split);
            assert!(!failed);
            assert_eq!(out, stream, "split {split}");
        }
    }

    /// One `on_input` call with a fresh cursor.
    fn once<'a>(proto: &LineEcho, input: &'a [u8]) -> LineStep<'a> {
        proto.on_input(&mut LineCursor::default(), input)
    }

    #[test]
    fn incomplete_line_is_kept_until_its_newline() {
        let proto = LineEcho::new(100);
        let mut cursor = LineCursor::default();
        assert_eq!(proto.on_input(&mut cursor, b"par"), LineStep::Echo(b""));
        assert_eq!(
            proto.on_input(&mut cursor, b"partial\nnext"),
            LineStep::Echo(b"partial\n")
        );
    }

    #[test]
    fn cursor_skips_what_was_already_searched() {
        let proto = LineEcho::new(100);
        let mut cursor = LineCursor::default();
        assert_eq!(proto.on_input(&mut cursor, b"abc"), LineStep::Echo(b""));
        assert_eq!(cursor, LineCursor { searched: 3 });
        // The cursor trusts that the first 3 bytes hold no newline: it never looks again.
        assert_eq!(
            proto.on_input(&mut cursor, b"\n\n\nd\n"),
            LineStep::Echo(b"\n\n\nd\n")
        );
        assert_eq!(cursor, LineCursor { searched: 0 });
        assert_eq!(
            proto.on_input(&mut cursor, b"ef\ngh"),
            LineStep::Echo(b"ef\n")
        );
        assert_eq!(cursor, LineCursor { searched: 2 });
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let proto = LineEcho::new(4);
        assert_eq!(once(&proto, b"abcd\n"), LineStep::Echo(b"abcd\n"));
        assert_eq!(once(&proto, b"abcd"), LineStep::Echo(b""));
    }

    #[test]
    fn overlong_complete_line_is_refused_after_the_good_ones() {
        let proto = LineEcho::new(4);
        assert_eq!(
            once(&proto, b"ok\nabcde\nlater\n"),
            LineStep::TooLong { lines: b"ok\n" }
        );
    }

    #[test]
    fn overlong_partial_line_is_refused_without_waiting_for_newline() {
        let proto = LineEcho::new(4);
        assert_eq!(once(&proto, b"abcde"), LineStep::TooLong { lines: b"" });
        let (out, failed) = run(&proto, b"ok\nabcdefgh", 1);
        assert!(failed);
        assert_eq!(out, b"ok\nERR line too long (max 4 bytes)\n");
    }

    #[test]
    fn carriage_return_counts_toward_the_limit() {
        let proto = LineEcho::new(4);
        assert_eq!(once(&proto, b"abc\r\n"), LineStep::Echo(b"abc\r\n"));
        assert_eq!(once(&proto, b"abcd\r\n"), LineStep::TooLong { lines: b"" });
    }

    /// The reference: the same stream cut into lines in one go, without cursors or splits.
    fn reference(proto: &LineEcho, stream: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for line in stream.split_inclusive(|&b| b == b'\n') {
            let content = line.len() - usize::from(line.ends_with(b"\n"));
            if content > proto.max_line() {
                out.extend_from_slice(proto.error_line());
                return (out, true);
            }
            out.extend_from_slice(line);
        }
        (out, false)
    }

    /// Feeds `stream` in the pieces given by `splits` (cycled), like the reactor does.
    fn run_split(proto: &LineEcho, stream: &[u8], splits: &[usize]) -> (Vec<u8>, bool) {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut cursor = LineCursor::default();
        let mut at = 0;
        for &split in splits.iter().cycle() {
            if at >= stream.len() {
                break;
            }
            let end = (at + split).min(stream.len());
            pending.extend_from_slice(&stream[at..end]);
            at = end;
            match proto.on_input(&mut cursor, &pending) {
                LineStep::Echo(lines) => {
                    out.extend_from_slice(lines);
                    let n = lines.len();
                    pending.drain(..n);
                }
                LineStep::TooLong { lines } => {
                    out.extend_from_slice(lines);
                    out.extend_from_slice(proto.error_line());
                    return (out, true);
                }
            }
        }
        out.extend_from_slice(proto.on_peer_closed(&pending));
        (out, false)
    }

    /// Bytes that matter to the framer, mixed with arbitrary ones.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => Just(b'\n'),
                1 => Just(b'\r'),
                1 => Just(0u8),
                6 => any::<u8>(),
            ],
            0..1000,
        )
    }

    proptest! {
        #[test]
        fn any_split_of_any_stream_matches_the_reference(
            stream in stream_bytes(),
            max_line in 0usize..80,
            splits in proptest::collection::vec(1usize..200, 1..20),
        ) {
            let proto = LineEcho::new(max_line);
            prop_assert_eq!(run_split(&proto, &stream, &splits), reference(&proto, &stream));
        }
    }
}
