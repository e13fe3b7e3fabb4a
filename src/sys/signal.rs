//! Signals turned into reactor requests inside the signal handler itself, with no thread.
//!
//! A thread that waits for signals would make the process multi-threaded, and glibc then
//! takes a slower path (cancellation-point bookkeeping) in every `read` and `write` of the
//! reactor. So the handlers do the request themselves. They store atomics and write to the
//! reactor's eventfd waker, which are async-signal-safe operations. The reactor logs what
//! happened when it acts on the request.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// What a signal asks of the reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// The first SIGINT or SIGTERM.
    Drain,
    /// Any later SIGINT or SIGTERM.
    Stop,
    /// SIGUSR1.
    LogStats,
    /// SIGUSR2.
    ReportStats,
    /// SIGHUP.
    Reload,
}

/// SIGINT and SIGTERM: the first drains, any later one stops. SIGUSR1: log the counters.
/// SIGUSR2: hand them to the stats reporter only. SIGHUP: reload the TLS certificates. `ask` runs inside the signal handler, with the
/// signal and what it asks: it must be async-signal-safe (atomics, a write to an eventfd;
/// no allocation, lock or log).
pub(crate) fn install<F>(ask: F) -> io::Result<()>
where
    F: Fn(i32, Asked) + Clone + Send + Sync + 'static,
{
    let terminations = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        let ask = ask.clone();
        let terminations = Arc::clone(&terminations);
        let action = move || {
            let asked = if terminations.fetch_add(1, Ordering::SeqCst) == 0 {
                Asked::Drain
            } else {
                Asked::Stop
            };
            ask(signal, asked);
        };
        // SAFETY: the action only updates atomics and calls `ask`, which the caller keeps
        // async-signal-safe; it allocates, locks and logs nothing.
        unsafe { signal_hook::low_level::register(signal, action) }?;
    }
    let others = [
        (SIGUSR1, Asked::LogStats),
        (SIGUSR2, Asked::ReportStats),
        (SIGHUP, Asked::Reload),
    ];
    for (signal, asked) in others {
        let ask = ask.clone();
        // SAFETY: as above.
        unsafe { signal_hook::low_level::register(signal, move || ask(signal, asked)) }?;
    }
    Ok(())
}

/// The name of a signal this module handles, for log lines.
pub(crate) fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}
