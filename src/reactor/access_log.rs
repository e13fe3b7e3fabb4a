//! The access log: one line per connection when it closes, at debug level under the log
//! target `wharf::access` (`RUST_LOG=info,wharf::access=debug` turns on only these), with
//! its client, how long it lasted, bytes each way and why it closed:
//!
//! ```text
//! peer=198.51.100.7:40000 duration=12.503s bytes_in=1200 bytes_out=1200 reason=peer closed
//! ```
//!
//! What it needs per connection (when it opened, bytes in and out: 32 bytes) is kept only
//! while that line is enabled, when the reactor starts: otherwise the table is never
//! allocated, and counting costs one branch per read or write.

use std::net::SocketAddr;
use std::time::Instant;

use crate::close_reason::CloseReason;

/// The log target of the access lines.
pub(crate) const TARGET: &str = "wharf::access";

#[derive(Debug, Clone, Copy)]
struct Entry {
    opened: Instant,
    bytes_in: u64,
    bytes_out: u64,
}

/// Each connection's figures for its access line, by slab key; `None` while the line is off.
#[derive(Debug, Default)]
pub(super) struct AccessLog {
    entries: Option<Vec<Option<Entry>>>,
}

impl AccessLog {
    /// On if the access line is enabled now.
    pub(super) fn new() -> AccessLog {
        let on = log::log_enabled!(target: TARGET, log::Level::Debug);
        AccessLog {
            entries: on.then(Vec::new),
        }
    }

    pub(super) fn opened(&mut self, key: usize, now: Instant) {
        if let Some(entries) = &mut self.entries {
            if entries.len() <= key {
                entries.resize(key + 1, None);
            }
            entries[key] = Some(Entry {
                opened: now,
                bytes_in: 0,
                bytes_out: 0,
            });
        }
    }

    pub(super) fn read(&mut self, key: usize, n: usize) {
        if let Some(Some(entry)) = self.entries.as_mut().and_then(|e| e.get_mut(key)) {
            entry.bytes_in += n as u64;
        }
    }

    pub(super) fn wrote(&mut self, key: usize, n: usize) {
        if let Some(Some(entry)) = self.entries.as_mut().and_then(|e| e.get_mut(key)) {
            entry.bytes_out += n as u64;
        }
    }

    /// Connection `key` (from `peer`) closed at `now`: its line.
    pub(super) fn closed(
        &mut self,
        key: usize,
        peer: SocketAddr,
        reason: CloseReason,
        now: Instant,
    ) {
        let Some(Some(entry)) = self
            .entries
            .as_mut()
            .and_then(|e| e.get_mut(key).map(Option::take))
        else {
            return;
        };
        log::debug!(
            target: TARGET,
            "peer={peer} duration={:.3}s bytes_in={} bytes_out={} reason={reason}",
            now.saturating_duration_since(entry.opened).as_secs_f64(),
            entry.bytes_in,
            entry.bytes_out
        );
    }
}
