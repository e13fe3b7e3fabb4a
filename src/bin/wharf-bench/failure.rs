//! How a connection failed, and the tally of failures a run reports.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// The kinds of failure a report counts separately, in the order of [`Tally`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handshake failed: refused, reset, timed out, or no local port or descriptor.
    ConnectFailed,
    /// An established connection was reset (ECONNRESET, EPIPE, ECONNABORTED).
    Reset,
    /// The server closed the connection before the whole reply came back.
    Closed,
    /// A reply byte differed from what was sent, or more came back than was sent.
    Mismatch,
    /// No whole reply within the timeout.
    Timeout,
    /// TLS failed: the server's certificate was refused, the server sent an alert, a record
    /// did not decrypt, or the server hung up during the handshake.
    Tls,
    /// Any other socket error on an established connection.
    Other,
}

/// Reply bytes quoted in a mismatch: enough to recognise an error message from the server.
const QUOTED_BYTES: usize = 60;

/// One connection's failure, with the error behind it when there is one.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// The socket error, if the failure came from one.
    pub error: Option<io::Error>,
    /// For a mismatch: where, and the start of what came back.
    detail: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, error: Option<io::Error>) -> Failure {
        Failure {
            kind,
            error,
            detail: None,
        }
    }

    /// A reply that differs from the message from byte `at` on, where `got` came back. The
    /// quote tells a wrong echo from, say, a server's `ERR server full` line.
    pub fn mismatch(at: usize, got: &[u8]) -> Failure {
        let quoted: String = got
            .iter()
            .take(QUOTED_BYTES)
            .flat_map(|&byte| std::ascii::escape_default(byte))
            .map(char::from)
            .collect();
        let more = if got.len() > QUOTED_BYTES { "..." } else { "" };
        Failure {
            kind: FailureKind::Mismatch,
            error: None,
            detail: Some(format!(
                "from byte {at} on, the server sent \"{quoted}\"{more}"
            )),
        }
    }

    /// Classifies an error of a TLS handshake: a close before it completed is a TLS failure
    /// (a server that does not speak TLS on that port, or refused the client's certificate),
    /// not an early close of a reply.
    pub fn handshake(error: io::Error) -> Failure {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            let error = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the handshake",
            );
            return Failure::new(FailureKind::Tls, Some(error));
        }
        Failure::from_io(error)
    }

    pub fn from_io(error: io::Error) -> Failure {
        // A rustls error, as `tls_stream.rs` wraps it.
        #[cfg(feature = "tls")]
        if error
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return Failure::new(FailureKind::Tls, Some(error));
        }
        let kind = match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailureKind::Reset,
            io::ErrorKind::TimedOut => FailureKind::Timeout,
            _ => FailureKind::Other,
        };
        Failure::new(kind, Some(error))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FailureKind::ConnectFailed => "connect failed",
            FailureKind::Reset => "connection reset",
            FailureKind::Closed => "server closed the connection mid-reply",
            FailureKind::Mismatch => "reply differs from what was sent",
            FailureKind::Timeout => "timed out",
            FailureKind::Tls => "TLS error",
            FailureKind::Other => "socket error",
        };
        match (&self.error, &self.detail) {
            (Some(error), _) => write!(f, "{what}: {error}"),
            (None, Some(detail)) => write!(f, "{what}: {detail}"),
            (None, None) => f.write_str(what),
        }
    }
}

/// Failures counted over a run, one counter per [`FailureKind`] in its order. Serialised
/// as the report's `errors_by_kind`, and read back from the reports of the client processes
/// of a `--procs` run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Tally {
    pub connect_failed: u64,
    pub resets: u64,
    pub closed: u64,
    pub mismatches: u64,
    pub timeouts: u64,
    #[serde(default)]
    pub tls_errors: u64,
    pub other: u64,
    /// The first failure, word for word, to tell the user what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

impl Tally {
    /// The counters, in [`FailureKind`] order.
    fn counters(&mut self) -> [&mut u64; 7] {
        [
            &mut self.connect_failed,
            &mut self.resets,
            &mut self.closed,
            &mut self.mismatches,
            &mut self.timeouts,
            &mut self.tls_errors,
            &mut self.other,
        ]
    }

    pub fn record(&mut self, failure: &Failure) {
        let counter = match failure.kind {
            FailureKind::ConnectFailed => &mut self.connect_failed,
            FailureKind::Reset => &mut self.resets,
            FailureKind::Closed => &mut self.closed,
            FailureKind::Mismatch => &mut self.mismatches,
            FailureKind::Timeout => &mut self.timeouts,
            FailureKind::Tls => &mut self.tls_errors,
            FailureKind::Other => &mut self.other,
        };
        *counter += 1;
        if self.first.is_none() {
            self.first = Some(failure.to_string());
        }
    }

    /// Adds the counts of `other`; its first failure is kept only if this tally has none.
    pub fn add(&mut self, other: &Tally) {
        for (mine, theirs) in self.counters().into_iter().zip(other.counts()) {
            *mine += theirs;
        }
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }

    /// Every failure counted, failed handshakes included: zero means a clean run.
    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }

    fn counts(&self) -> [u64; 7] {
        Tally {
            first: None,
            ..*self
        }
        .counters()
        .map(|count| *count)
    }
}
