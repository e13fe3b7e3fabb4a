//! A worker's stderr, relayed by its `--workers` parent on a thread per worker: every line
//! goes on to the parent's stderr as it is, except the worker's ready line, which only the
//! parent needs, and which becomes an [`Event`] for the parent's main thread. (Counters come
//! over the stats channel, [`super::channel`], not from the workers' `stats:` log lines.)

use std::io::{self, BufRead, BufReader, Write};
use std::process::ChildStderr;
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};

use super::stats::Counters;

/// What a worker prints on stderr once it serves: its listeners are added and its signal
/// handlers installed.
const READY_LINE: &str = "wharf: worker ready";

/// What the parent's main thread hears about.
pub enum Event {
    Signal(i32),
    /// The worker with this pid serves.
    Ready {
        pid: u32,
    },
    /// The worker with this pid wrote its counters on its stats channel.
    Stats {
        pid: u32,
        counters: Counters,
    },
    /// A scrape of the metrics endpoint waits for the page on this channel.
    Scrape(std::sync::mpsc::Sender<String>),
    /// The stderr of the worker with this pid reached its end: it is exiting, and every
    /// line it wrote has been relayed.
    Closed {
        pid: u32,
    },
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
        if line.trim_ascii_end() == READY_LINE.as_bytes() {
            let _ = events.send(Event::Ready { pid });
        } else {
            // A whole line at a time, so lines of different workers never interleave. No
            // stderr (a closed terminal) is no reason to stop relaying the events.
            let mut out = io::stderr().lock();
            let _ = out.write_all(&line);
            if !line.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
        }
    }
    let _ = events.send(Event::Closed { pid });
}
