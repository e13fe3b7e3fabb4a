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

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::handle::{Handle, Request};

/// SIGINT and SIGTERM: the first drains, any later one stops. SIGUSR1: log the counters.
/// SIGHUP: reload the TLS certificates.
pub(crate) fn install(handle: &Handle) -> io::Result<()> {
    let terminations = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        let handle = handle.clone();
        let terminations = Arc::clone(&terminations);
        let action = move || {
            let request = if terminations.fetch_add(1, Ordering::SeqCst) == 0 {
                Request::Drain
            } else {
                Request::Stop
            };
            handle.request_from_signal(signal, request);
        };
        // SAFETY: the action only updates atomics and writes to mio's eventfd waker, all
        // async-signal-safe; it allocates, locks and logs nothing.
        unsafe { signal_hook::low_level::register(signal, action) }?;
    }
    let stats_handle = handle.clone();
    let action = move || stats_handle.request_from_signal(SIGUSR1, Request::LogStats);
    // SAFETY: as above.
    unsafe { signal_hook::low_level::register(SIGUSR1, action) }?;
    let handle = handle.clone();
    let action = move || handle.request_from_signal(SIGHUP, Request::Reload);
    // SAFETY: as above.
    unsafe { signal_hook::low_level::register(SIGHUP, action) }?;
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
