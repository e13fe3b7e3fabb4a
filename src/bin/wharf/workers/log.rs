//! A worker's log lines, written so that they never block it.
//!
//! A worker's stderr is a pipe its parent reads. A parent that stops reading (stopped with
//! SIGSTOP, or stuck) would fill the pipe, about 64 KiB, and every worker would then block in
//! `write` inside a log call and answer nothing. So a worker writes its log through a second
//! open file of the same pipe (`/proc/self/fd/2`: its own file status flags, so stderr itself
//! is left as it is), made non-blocking: a line the pipe cannot take is dropped and counted,
//! and the count is said once lines go through again. A line up to `PIPE_BUF` (4 KiB) goes
//! into a pipe whole or not at all, so the lines that are written are never torn.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

/// The worker's log output: non-blocking, dropping what the pipe cannot take.
pub struct NonBlockingLog {
    pipe: File,
    /// Lines dropped since the last one that went through.
    dropped: u64,
}

impl NonBlockingLog {
    /// Opens stderr again, non-blocking; `None` where that cannot be done (the log then goes
    /// to stderr as usual).
    pub fn open() -> Option<NonBlockingLog> {
        let pipe = OpenOptions::new()
            .write(true)
            .open("/proc/self/fd/2")
            .ok()?;
        crate::sys::set_nonblocking(&pipe).ok()?;
        Some(NonBlockingLog { pipe, dropped: 0 })
    }
}

impl Write for NonBlockingLog {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.dropped > 0 {
            let note = format!(
                "[wharf] {} log lines dropped: the parent was not reading\n",
                self.dropped
            );
            match self.pipe.write(note.as_bytes()) {
                Ok(_) => self.dropped = 0,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        match self.pipe.write(line) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // Taken as written: the logger must not retry, and the worker must not wait.
                self.dropped += 1;
                Ok(line.len())
            }
            result => result,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
