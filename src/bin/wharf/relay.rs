//! A worker's stderr, relayed by its `--workers` parent: every line goes on to the parent's
//! stderr as it is, except the worker's ready line, which only the parent needs. The ready
//! line and `stats:` lines also become [`Event`]s for the parent's main thread, which sums the
//! workers' counters.

use std::io::{self, BufRead, BufReader, Write};
use std::process::ChildStderr;
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};

/// What a worker prints on stderr once it serves: its listeners are added and its signal
/// handlers installed.
const READY_LINE: &str = "wharf: worker ready";

/// The counters of one `stats:` line, in the order printed.
pub type Counters = Vec<(String, u64)>;

/// What the parent's main thread hears about.
pub enum Event {
    Signal(i32),
    /// The worker with this pid serves.
    Ready {
        pid: u32,
    },
    /// The worker with this pid logged a `stats:` line.
    Stats {
        pid: u32,
        counters: Counters,
    },
    /// A worker's stderr reached its end: the worker is exiting.
    Closed,
}

/// In a worker: says it is ready. An error (the parent is gone) is no reason to stop serving.
pub fn announce_ready() {
    let _ = writeln!(io::stderr(), "{READY_LINE}");
}

/// Relays the stderr of worker `pid` on a thread of its own, which ends with the pipe.
pub fn start(stderr: ChildStderr, pid: u32, events: Sender<Event>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("relay-{pid}"))
        .spawn(move || relay(stderr, pid, &events))
}

fn relay(stderr: ChildStderr, pid: u32, events: &Sender<Event>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let event = if text.trim_end() == READY_LINE {
            Some(Event::Ready { pid })
        } else {
            // A whole line at a time, so lines of different workers never interleave. No
            // stderr (a closed terminal) is no reason to stop relaying the events.
            let mut out = io::stderr().lock();
            let _ = out.write_all(&line);
            if !line.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
            parse_stats(&text).map(|counters| Event::Stats { pid, counters })
        };
        if let Some(event) = event {
            let _ = events.send(event);
        }
    }
    let _ = events.send(Event::Closed);
}

/// The counters of a log line `... stats: accepted=1 active=0 ...`, if it is one.
pub fn parse_stats(line: &str) -> Option<Counters> {
    let (_, fields) = line.split_once("stats: ")?;
    fields
        .split_whitespace()
        .map(|field| {
            let (name, value) = field.split_once('=')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect::<Option<Counters>>()
        .filter(|counters| !counters.is_empty())
}

/// The counters summed field by field, as `name=sum ...` in the order of the first line.
pub fn sum<'a>(lines: impl IntoIterator<Item = &'a Counters>) -> String {
    let mut total: Counters = Vec::new();
    for line in lines {
        for (name, value) in line {
            match total.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum = sum.saturating_add(*value),
                None => total.push((name.clone(), *value)),
            }
        }
    }
    total
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_of_two_workers_sum_field_by_field() {
        let one = parse_stats("[t INFO  wharf::reactor] worker=1 stats: accepted=3 active=1")
            .expect("a stats line");
        let two = parse_stats("[t INFO  wharf::reactor] worker=2 stats: accepted=4 active=0")
            .expect("a stats line");
        assert_eq!(sum([&one, &two]), "accepted=7 active=1");
    }

    #[test]
    fn other_lines_are_not_stats() {
        assert!(parse_stats("worker=1 stopped: accepted=3").is_none());
        assert!(parse_stats("stats: workers=2 (none is serving)").is_none());
        assert!(parse_stats("stats: ").is_none());
    }
}
