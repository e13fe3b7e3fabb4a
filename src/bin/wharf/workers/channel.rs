//! The stats channel: how the `--workers` parent asks each worker for its counters, over a
//! Unix socket pair of their own, in a format made for it, whatever `RUST_LOG` says.
//!
//! The parent makes one pair per worker when it starts it ([`pair`]); the worker inherits its
//! end under the same descriptor number, named by the hidden `--worker-stats-fd`.
//!
//! # Format
//!
//! Lines of ASCII, each ending in `\n`. The parent asks with the line
//!
//! ```text
//! stats
//! ```
//!
//! and the worker answers every request, in order, with one line: a version, then each
//! counter of [`wharf::Stats::fields`] as `name=value` (a decimal `u64`), in that order,
//! separated by single spaces:
//!
//! ```text
//! v1 accepted=3 active=1 rejected=0 closed=2 ... writes=9
//! ```
//!
//! or, when it has no counters to give (its reactor did not answer within [`REACTOR_WAIT`],
//! or the request is not one it knows), with `v1 error ` and a reason in words:
//!
//! ```text
//! v1 error the reactor did not answer within 1s
//! ```
//!
//! The version is there because a worker is the program file *as it is when the worker
//! starts*: after an upgrade in place, a replaced worker may be a newer build than its
//! parent. A parent ignores answers of a version it does not know (those workers count as
//! not answering), and sums counters by name, so a counter only one side knows is harmless.
//! A new version would be needed only if the framing changes.
//!
//! # Threads
//!
//! In a worker, [`answer_requests`] starts one thread, `stats`. It blocks on its socket and
//! reaches the reactor only through its [`wharf::Handle`], which asks the loop for a copy of
//! the counters between two polls; connections never leave the reactor thread, which
//! still does all the serving. Its cost to the loop is one flag check per iteration. (A second
//! thread does make glibc's `send` and `recv` take their multi-threaded path, which checks
//! for thread cancellation on every call: a small cost, not measured yet.) It ends when the parent's end is
//! closed (the parent is gone), or when the worker exits.
//!
//! In the parent, one reader thread per worker ([`start_reader`]) turns answers into
//! [`Event::Stats`] for the main thread, as the stderr relays do with lines; the main thread
//! only writes requests ([`ask`]), and never waits for the socket to take one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::relay::Event;
use super::stats::Counters;
use crate::sys;

/// The request line, without its `\n`.
const REQUEST: &str = "stats";

/// The first word of every answer.
const VERSION: &str = "v1";

/// How long a worker waits for its reactor's counters: less than the parent waits for the
/// answer (2 s), so that a slow answer still makes the round.
pub const REACTOR_WAIT: Duration = Duration::from_secs(1);

/// The longest request line a worker reads; a longer one closes the channel.
const MAX_REQUEST: u64 = 64;

/// The longest answer line the parent reads (a `v1` answer is about 600 bytes); a longer one
/// closes the channel.
const MAX_ANSWER: u64 = 64 * 1024;

/// A new channel: (the parent's end, the worker's end). The worker's end is never 0, 1 or 2,
/// so that it can be passed on under its own number (see [`sys::inherit_fd`]). Both ends
/// are close-on-exec, so no other worker inherits either.
pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
    let (parent, worker) = UnixStream::pair()?;
    let worker = UnixStream::from(sys::above_stdio(worker.into())?);
    Ok((parent, worker))
}

/// In the parent: asks the worker at the other end of `channel` for its counters. Never
/// blocks: a worker that has left so many requests unread that its socket is full is not
/// asked again until it has read some (`Err` of kind `WouldBlock`). Should the socket take
/// only part of the request, the channel is shut down, since it could no longer be read in
/// step: that worker gives no more counters until it is replaced.
pub fn ask(channel: &UnixStream) -> io::Result<()> {
    let request = format!("{REQUEST}\n");
    let sent = socket2::SockRef::from(channel)
        .send_with_flags(request.as_bytes(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)?;
    if sent < request.len() {
        let _ = channel.shutdown(Shutdown::Both);
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "its socket took part of a request: channel closed",
        ));
    }
    Ok(())
}

/// In the parent: reads the answers of worker `pid` on a thread of its own, and sends each
/// one with counters to the main thread. The thread ends when the worker's end is closed
/// (it exited).
pub fn start_reader(
    channel: UnixStream,
    pid: u32,
    events: Sender<Event>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("stats-{pid}"))
        .spawn(move || read_answers(channel, pid, &events))
}

fn read_answers(channel: UnixStream, pid: u32, events: &Sender<Event>) {
    let mut reader = BufReader::new(channel);
    let mut line = Vec::new();
    while let Some(answer) = read_line(&mut reader, &mut line, MAX_ANSWER) {
        let Ok(answer) = answer else {
            log::warn!("pid={pid}: its stats answer is too long: stats channel closed");
            break;
        };
        match parse_answer(answer) {
            Ok(counters) => {
                if events.send(Event::Stats { pid, counters }).is_err() {
                    break; // the parent is exiting
                }
            }
            Err(why) => log::debug!("pid={pid}: no counters in its stats answer: {why}"),
        }
    }
}

/// The counters of an answer line (without its `\n`), or why there are none.
pub fn parse_answer(line: &str) -> Result<Counters, String> {
    let Some(rest) = line.strip_prefix(VERSION).and_then(|r| r.strip_prefix(' ')) else {
        return Err(format!("not a {VERSION} answer: {line:?}"));
    };
    if let Some(why) = rest.strip_prefix("error ") {
        return Err(why.to_string());
    }
    let counters = rest
        .split(' ')
        .map(|field| {
            let (name, value) = field.split_once('=')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect::<Option<Counters>>()
        .filter(|counters| !counters.is_empty());
    counters.ok_or_else(|| format!("a malformed answer: {line:?}"))
}

/// The answer line for `stats`, with its `\n`.
pub fn format_answer(stats: &wharf::Stats) -> String {
    let mut line = VERSION.to_string();
    for (name, value) in stats.fields() {
        line.push_str(&format!(" {name}={value}"));
    }
    line.push('\n');
    line
}

/// In a worker: answers the parent's requests on `channel` from a thread of its own (see the
/// module docs), with the counters `handle`'s reactor gives.
pub fn answer_requests(channel: UnixStream, handle: wharf::Handle) -> io::Result<()> {
    thread::Builder::new()
        .name("stats".into())
        .spawn(move || answer(channel, &handle))
        .map(drop)
}

fn answer(channel: UnixStream, handle: &wharf::Handle) {
    let mut reader = BufReader::new(&channel);
    let mut writer = &channel;
    let mut line = Vec::new();
    // Ends at the end of the stream (the parent is gone), or on a request too long to be one.
    while let Some(Ok(request)) = read_line(&mut reader, &mut line, MAX_REQUEST) {
        let answer = if request == REQUEST {
            match handle.stats(REACTOR_WAIT) {
                Some(stats) => format_answer(&stats),
                None => {
                    log::warn!("stats: the reactor did not answer within {REACTOR_WAIT:?}");
                    format!("{VERSION} error the reactor did not answer within {REACTOR_WAIT:?}\n")
                }
            }
        } else {
            format!("{VERSION} error unknown request\n")
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            break; // the parent is gone
        }
    }
}

/// The next line of `reader` without its `\n` (read into `buf`), at most `max` bytes long:
/// `None` at the end of the stream or on an error, `Some(Err(()))` for a longer line (or
/// one that is not UTF-8), where the stream can no longer be trusted.
fn read_line<'a>(
    reader: &mut impl BufRead,
    buf: &'a mut Vec<u8>,
    max: u64,
) -> Option<Result<&'a str, ()>> {
    buf.clear();
    match reader.take(max + 1).read_until(b'\n', buf) {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let Some(line) = buf.strip_suffix(b"\n") else {
        // Longer than `max`, or the stream ended inside a line.
        return (buf.len() as u64 > max).then_some(Err(()));
    };
    Some(std::str::from_utf8(line).map_err(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_every_counter_by_name_in_order() {
        let stats = wharf::Stats::default();
        let line = format_answer(&stats);
        assert!(line.starts_with("v1 accepted=0 active=0 "), "{line}");
        let counters = parse_answer(line.trim_end()).expect("counters");
        let names: Vec<&str> = stats.fields().map(|(name, _)| name).collect();
        let parsed: Vec<&str> = counters.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(parsed, names);
        assert!(counters.iter().all(|(_, value)| *value == 0));
    }

    #[test]
    fn errors_other_versions_and_garbage_give_no_counters() {
        assert_eq!(
            parse_answer("v1 error the reactor did not answer within 1s"),
            Err("the reactor did not answer within 1s".to_string())
        );
        for line in [
            "v2 accepted=1",
            "v1",
            "v1 ",
            "v1 accepted=x",
            "v1 accepted=1  active=2",
            "accepted=1",
            "[t INFO  wharf::reactor] worker=1 stats: accepted=3 active=1",
        ] {
            assert!(parse_answer(line).is_err(), "{line:?}");
        }
        assert_eq!(
            parse_answer("v1 accepted=3 active=1"),
            Ok(vec![("accepted".into(), 3), ("active".into(), 1)])
        );
    }

    #[test]
    fn lines_are_read_whole_and_bounded() {
        let mut input = io::Cursor::new(b"stats\n0123456789\nstats\ntail".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, &mut buf, 10), Some(Ok("stats")));
        assert_eq!(read_line(&mut input, &mut buf, 10), Some(Ok("0123456789")));
        assert_eq!(read_line(&mut input, &mut buf, 10), Some(Ok("stats")));
        assert_eq!(read_line(&mut input, &mut buf, 10), None); // ends inside a line
        let mut input = io::Cursor::new(b"01234567890\nstats\n".to_vec());
        assert_eq!(read_line(&mut input, &mut buf, 10), Some(Err(())));
    }

    #[test]
    fn a_worker_answers_over_its_end_until_the_parent_closes_its_own() {
        let (parent, worker) = pair().expect("a socket pair");
        let mut reactor =
            wharf::Reactor::new(wharf::Config::default(), wharf::service::Echo).expect("reactor");
        let handle = reactor.handle();
        let stopper = handle.clone();
        let runner = thread::spawn(move || reactor.run().map_err(|e| e.to_string()));
        answer_requests(worker, handle).expect("the stats thread");
        let mut answers = BufReader::new(parent.try_clone().expect("clone"));
        for _ in 0..2 {
            ask(&parent).expect("ask");
            let mut line = String::new();
            answers.read_line(&mut line).expect("an answer");
            let counters = parse_answer(line.trim_end()).expect("counters");
            assert_eq!(counters[0], ("accepted".to_string(), 0));
        }
        (&parent).write_all(b"what\n").expect("write");
        let mut line = String::new();
        answers.read_line(&mut line).expect("an answer");
        assert_eq!(line, "v1 error unknown request\n");
        parent.shutdown(Shutdown::Write).expect("shutdown");
        // The stats thread ends at the end of the stream, closing its end.
        line.clear();
        assert_eq!(answers.read_line(&mut line).expect("the end"), 0);
        stopper.stop();
        runner.join().expect("join").expect("run");
    }
}
