//! The stats channel: how each worker of a `--workers` parent gives its parent its counters,
//! over a Unix socket pair of their own, in a format made for it, whatever `RUST_LOG` says.
//!
//! The parent makes one pair per worker when it starts it ([`pair`]); the worker inherits its
//! end under the same descriptor number, named by the hidden `--worker-stats-fd`.
//!
//! # Asking
//!
//! The channel goes one way, worker to parent. The parent asks by passing SIGUSR1 on to its
//! ready workers, as it does on its own SIGUSR1 and on its `--stats-interval` timer. A
//! worker's reactor then logs its `stats:` line (at info level) and, whatever the log level,
//! calls its stats reporter ([`wharf::Reactor::set_stats_reporter`]), which writes the
//! counters on the channel ([`report_to`]). Two requests that reach a worker before its loop
//! takes the first give one answer: the parent waits for one answer per worker and round. A
//! line no round waits for (SIGUSR1 sent to a worker directly, or a late answer) is ignored.
//!
//! # Format
//!
//! Lines of ASCII, each ending in `\n`: a version, then each counter of
//! [`wharf::Stats::fields`] as `name=value` (a decimal `u64`), in that order, then the
//! worker process's own figures (resident memory, open descriptors, CPU time), separated by
//! single spaces:
//!
//! ```text
//! v1 accepted=3 active=1 rejected=0 closed=2 ... writes=9 process_open_fds=12 ...
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
//! A worker runs on exactly one thread, its reactor's (docs/ARCHITECTURE.md, "Signals": a
//! second thread would put every `send` and `recv` on glibc's cancellation-aware path). The
//! reporter runs on that thread, inside the loop, so it never waits: the worker's end is
//! non-blocking, and a line the socket cannot take now (it is full: the parent has stopped
//! reading, for example because it is stopped) is dropped, and that worker counts as not
//! answering that round. A line is written whole or not at all: should the socket take only
//! part of one, the worker shuts the channel down rather than leave a torn line for the
//! parent to read, and gives no more counters until it is replaced.
//!
//! In the parent, one reader thread per worker ([`start_reader`]) turns answers into
//! [`Event::Stats`] for the main thread, as the stderr relays do with lines.

use std::io::{self, BufRead, BufReader, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};

use super::relay::Event;
use super::stats::Counters;
use crate::sys;

/// The first word of every answer.
const VERSION: &str = "v1";

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

/// In the parent: reads the answers of worker `pid` on a thread of its own, and sends each
/// one with counters to the main thread. The thread ends when the worker's end is closed
/// (it exited, or shut the channel down).
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

/// The answer line for `stats`, with its `\n`: the reactor's counters, then this process's
/// own figures ([`crate::metrics::process`]), for the parent's metrics endpoint.
pub fn format_answer(stats: &wharf::Stats) -> String {
    use std::fmt::Write;
    let mut process = Vec::new();
    crate::metrics::process::figures(&mut process);
    let mut line = VERSION.to_string();
    for (name, value) in stats.fields() {
        let _ = write!(line, " {name}={value}");
    }
    for (name, value) in &process {
        let _ = write!(line, " {name}={value}");
    }
    line.push('\n');
    line
}

/// In a worker: the stats reporter for its reactor ([`wharf::Reactor::set_stats_reporter`]),
/// which writes the counters on `channel`, its end of the stats channel, without ever
/// blocking (see the module docs). `Err` if the socket cannot be made non-blocking.
pub fn report_to(channel: UnixStream) -> io::Result<impl FnMut(&wharf::Stats) + Send + 'static> {
    let mut reporter = Reporter::new(channel)?;
    Ok(move |stats: &wharf::Stats| {
        reporter.report(stats);
    })
}

/// A worker's end of the stats channel, while it is still in use.
struct Reporter {
    /// `None` once shut down or broken: the worker reports no more.
    channel: Option<UnixStream>,
}

/// What became of one answer line.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Written whole.
    Whole,
    /// Not written: the socket is full (the parent does not read). The next may go through.
    Dropped,
    /// Not written, and no line will be: the channel is shut down or broken.
    Closed,
}

impl Reporter {
    fn new(channel: UnixStream) -> io::Result<Reporter> {
        channel.set_nonblocking(true)?;
        Ok(Reporter {
            channel: Some(channel),
        })
    }

    /// Writes `stats` as one answer line, whole or not at all, and never waits.
    fn report(&mut self, stats: &wharf::Stats) -> Sent {
        let Some(channel) = &self.channel else {
            return Sent::Closed;
        };
        let line = format_answer(stats);
        // Non-blocking twice over: the socket is, and so is this call. No SIGPIPE either,
        // should the parent be gone.
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let sent = loop {
            match socket2::SockRef::from(channel).send_with_flags(line.as_bytes(), flags) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                sent => break sent,
            }
        };
        match sent {
            Ok(n) if n == line.len() => Sent::Whole,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                log::warn!("stats: the parent is not reading its stats channel: counters dropped");
                Sent::Dropped
            }
            Ok(n) => {
                // The parent would read the rest of this line with the start of the next:
                // no more lines rather than a wrong one.
                let _ = channel.shutdown(Shutdown::Both);
                log::warn!(
                    "stats: the stats channel took {n} of {} bytes of a line: channel closed, \
                     the parent gets no more counters from this worker",
                    line.len()
                );
                self.channel = None;
                Sent::Closed
            }
            Err(error) => {
                // EPIPE: the parent is gone (this worker gets SIGTERM for that).
                if error.kind() != io::ErrorKind::BrokenPipe {
                    log::warn!("stats: cannot write on the stats channel: {error}: channel closed");
                }
                self.channel = None;
                Sent::Closed
            }
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
        assert_eq!(parsed[..names.len()], names);
        assert!(counters[..names.len()].iter().all(|(_, value)| *value == 0));
        if cfg!(target_os = "linux") {
            assert!(parsed[names.len()..].contains(&"process_resident_memory_bytes"));
        }
    }

    #[test]
    fn other_versions_and_garbage_give_no_counters() {
        for line in [
            "v2 accepted=1",
            "v1",
            "v1 ",
            "v1 accepted=x",
            "v1 accepted=1  active=2",
            "v1 error the reactor did not answer",
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
    fn the_reactor_writes_a_line_each_time_it_logs_its_stats_on_its_own_thread() {
        let (parent, worker) = pair().expect("a socket pair");
        let mut reactor =
            wharf::Reactor::new(wharf::Config::default(), wharf::service::Echo).expect("reactor");
        reactor.set_stats_reporter(report_to(worker).expect("the reporter"));
        let handle = reactor.handle();
        handle.log_stats();
        handle.stop();
        // On this thread: the reporter needs no other.
        reactor.run().expect("run");
        let mut answers = BufReader::new(parent);
        let mut line = String::new();
        answers.read_line(&mut line).expect("an answer");
        let counters = parse_answer(line.trim_end()).expect("counters");
        assert_eq!(counters[0], ("accepted".to_string(), 0));
        // The reactor owns the reporter and so the worker's end: once it is gone, nothing
        // more comes.
        drop(reactor);
        line.clear();
        assert_eq!(answers.read_line(&mut line).expect("the end"), 0);
    }

    #[test]
    fn a_full_channel_drops_whole_lines_and_never_blocks() {
        let (parent, worker) = pair().expect("a socket pair");
        let mut reporter = Reporter::new(worker).expect("the reporter");
        let mut stats = wharf::Stats::default();
        // The parent reads nothing: sooner or later the socket is full. Each call returns at
        // once (a blocking one would hang this test).
        let mut whole = 0_u64;
        let outcome = loop {
            stats.accepted = whole;
            match reporter.report(&stats) {
                Sent::Whole => whole += 1,
                other => break other,
            }
            assert!(whole < 1_000_000, "the socket never filled up");
        };
        assert!(whole > 0);
        // Dropped (the usual case) or, had the socket taken part of a line, shut down.
        if outcome == Sent::Closed {
            assert_eq!(reporter.report(&stats), Sent::Closed);
        }
        // Every line the parent gets is whole, and in order.
        parent.set_nonblocking(true).expect("non-blocking");
        let mut received = Vec::new();
        let _ = (&parent).read_to_end(&mut received);
        let text = String::from_utf8(received).expect("ASCII");
        let mut lines = text.split_inclusive('\n');
        for expected in 0..whole {
            let line = lines.next().expect("a line");
            let counters = parse_answer(line.strip_suffix('\n').expect("whole")).expect("counters");
            assert_eq!(counters[0], ("accepted".to_string(), expected));
        }
        if outcome == Sent::Dropped {
            assert_eq!(lines.next(), None, "a line that was dropped arrived");
        }
    }
}
