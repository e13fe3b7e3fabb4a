//! Fuzzes the line framer the way the reactor drives it: arbitrary bytes, an arbitrary line
//! limit, arbitrary read sizes, a cursor carried across reads.
//!
//! Oracle (independent of how the framer works): the output is the input stream cut at a
//! line boundary, followed by the error line only if the next line really is too long, and
//! the whole stream when no line is.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::proto::line::{LineCursor, LineEcho, LineStep};

fuzz_target!(|data: &[u8]| {
    let [limit, split_seed, stream @ ..] = data else {
        return;
    };
    let proto = LineEcho::new(usize::from(*limit));
    let mut pending = Vec::new();
    let mut echoed = Vec::new();
    let mut cursor = LineCursor::default();
    let mut refused = false;
    // Read sizes from 1 to 16 bytes, varied by the seed.
    let mut pieces = stream.chunks(usize::from(split_seed % 16) + 1);
    for piece in pieces.by_ref() {
        pending.extend_from_slice(piece);
        match proto.on_input(&mut cursor, &pending) {
            LineStep::Echo(lines) => {
                assert!(lines.is_empty() || lines.ends_with(b"\n"));
                let n = lines.len();
                echoed.extend_from_slice(lines);
                pending.drain(..n);
            }
            LineStep::TooLong { lines } => {
                echoed.extend_from_slice(lines);
                refused = true;
                break;
            }
        }
    }
    if !refused {
        echoed.extend_from_slice(proto.on_peer_closed(&pending));
        assert_eq!(echoed, stream, "without an overlong line, every byte comes back");
        return;
    }
    // Refused: what came back is whole lines, and the next line is over the limit.
    assert!(stream.starts_with(&echoed));
    assert!(echoed.is_empty() || echoed.ends_with(b"\n"));
    let rest = &stream[echoed.len()..];
    let next_line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    assert!(next_line.len() > proto.max_line(), "refused a line within the limit");
});
