//! Why a run could not start or finish: one enum, with messages a user can act on.
//!
//! Failures of single connections (refused, reset, a wrong byte) are not errors of the run:
//! they are counted in its report. These are the failures that leave nothing to report.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::failure::Tally;

/// Exit status of a run that finished but counted failures (one that could not run exits 1).
pub const EXIT_ERRORS_COUNTED: u8 = 3;

/// A run that could not be carried out. Each text says what went wrong and what to do.
#[derive(Debug)]
pub enum BenchError {
    /// A limit of this machine would make the run fail.
    Limit(String),
    /// Flags that cannot work together, e.g. an IPv4 source for an IPv6 server.
    Usage(String),
    /// No server to measure: not one connection (or TLS session, or chat room) came up.
    Unreachable(String),
    /// A local operation (the poller, a file, /proc) failed while doing `context`.
    Io { context: String, error: io::Error },
    /// An input file (a results.json or a JSON-lines file) is not what was expected.
    BadInput(String),
    /// A client process of a `--procs` run failed, or its parent went away.
    ClientProcess(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Limit(text)
            | BenchError::Usage(text)
            | BenchError::Unreachable(text)
            | BenchError::BadInput(text)
            | BenchError::ClientProcess(text) => f.write_str(text),
            BenchError::Io { context, error } => write!(f, "{context}: {error}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl BenchError {
    /// The error of a run in which no connection came up, when that is because connects (or
    /// TLS handshakes) failed; `None` when the server was reached but answered wrongly, since
    /// such a server is measured, errors and all.
    pub fn unreachable(addr: SocketAddr, tally: &Tally) -> Option<BenchError> {
        let total = tally.total();
        if total == 0 || total != tally.connect_failed + tally.tls_errors {
            return None;
        }
        let first = tally.first.as_deref().unwrap_or("connect failed");
        Some(BenchError::Unreachable(if tally.tls_errors > 0 {
            format!(
                "no TLS session with {addr} could be established ({first}): does the server \
                 speak TLS there? Does its certificate chain to --tls-ca (--insecure accepts \
                 any) and name --tls-server-name (by default the IP address of --addr)? If it \
                 asks for a client certificate, do --tls-cert and --tls-key give one it trusts?"
            )
        } else {
            format!(
                "no connection to {addr} could be established ({first}): is an echo server \
                 listening there? e.g. `wharf echo --listen {addr}`"
            )
        }))
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, error: io::Error) -> BenchError {
        BenchError::Io {
            context: context.into(),
            error,
        }
    }
}
