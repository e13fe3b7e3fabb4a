//! Limits that would make a run fail half-way, checked and explained before it starts.
//!
//! A load generator that dies with `EMFILE` after 1021 connections teaches nothing. So before
//! a run the client raises its own soft open-files limit to the hard limit, and refuses to
//! start, with the number it needs and how to get it, when that is still too low or when the
//! ephemeral port range cannot give every connection a local port.

use std::fs;
use std::path::Path;

use crate::cli::Target;
use crate::error::BenchError;
use crate::sys;

/// Open files the client uses besides its connections when `/proc/self/fd` cannot be read:
/// stdin, stdout, stderr.
const FALLBACK_OPEN_FILES: u64 = 3;

/// Every check before a run of `connections` connections to `target`: open files, local
/// ports, matching address families, and (a warning only) the server's own open-files limit.
pub fn preflight(target: &Target, connections: u64) -> Result<(), BenchError> {
    let sources = target
        .src
        .as_ref()
        .map_or(&[][..], |sources| &sources.0[..]);
    if let Some(source) = sources
        .iter()
        .find(|source| source.is_ipv4() != target.addr.is_ipv4())
    {
        return Err(BenchError::Usage(format!(
            "source address {source} and server address {} are of different IP versions",
            target.addr
        )));
    }
    ensure_open_files(connections)?;
    ensure_ports(connections, sources.len())?;
    if let Some(pid) = target.server_pid {
        warn_if_server_limited(pid, connections);
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard limit, then checks that `connections`
/// sockets fit.
///
/// Needed: one descriptor per connection, one for the poller, and the ones already open.
pub fn ensure_open_files(connections: u64) -> Result<(), BenchError> {
    let limit = sys::open_files_limit()
        .map_err(|error| BenchError::io("reading the open-files limit (getrlimit)", error))?;
    let already_open = count_open_files().unwrap_or(FALLBACK_OPEN_FILES);
    let needed = connections + already_open + 1;
    let mut soft = limit.soft;
    if soft < limit.hard {
        // Raising the soft limit up to the hard one needs no privilege; if it fails anyway,
        // the check below explains the limit we are left with.
        if sys::set_open_files_soft_limit(limit.hard, limit.hard).is_ok() {
            soft = limit.hard;
        }
    }
    if soft >= needed {
        return Ok(());
    }
    Err(BenchError::Limit(format!(
        "ulimit -n is {soft} (hard limit {hard}); -c {connections} needs {needed} open files \
         (one per connection, one for the poller and the {already_open} already open). \
         Raise it with `ulimit -n {needed}` (above the hard limit only as root, or with \
         nofile in /etc/security/limits.conf), or lower -c",
        hard = limit.hard,
    )))
}

/// Checks that `connections` to one server address can each get a local port from
/// `sources` source addresses (one when the kernel chooses).
pub fn ensure_ports(connections: u64, sources: usize) -> Result<(), BenchError> {
    let Some((low, high)) = ephemeral_port_range() else {
        return Ok(()); // not Linux, or /proc unreadable: let connect() report it
    };
    let per_source = u64::from(high.saturating_sub(low)) + 1;
    let sources = sources.max(1) as u64;
    if connections <= per_source * sources {
        return Ok(());
    }
    let needed_sources = connections.div_ceil(per_source);
    Err(BenchError::Limit(format!(
        "the ephemeral port range {low}-{high} (net.ipv4.ip_local_port_range) gives \
         {per_source} local ports per source address; -c {connections} to one server address \
         needs at least {needed_sources} source addresses, and {sources} {was} given. \
         Spread the connections with --src 127.0.0.1-127.0.0.{needed_sources} (every 127.x.y.z \
         is loopback), or widen the range with `sysctl -w net.ipv4.ip_local_port_range=...`",
        was = if sources == 1 { "is" } else { "are" },
    )))
}

/// Warns (without refusing) when the server process's own open-files limit is below what
/// `connections` need: the run goes on, and the failures it will count are explained.
pub fn warn_if_server_limited(pid: u32, connections: u64) {
    let Some(server_soft) = server_open_files_soft_limit(pid) else {
        return;
    };
    // A server needs a handful of descriptors of its own (listener, poller, stdio).
    let needed = connections + 8;
    if server_soft < needed {
        eprintln!(
            "wharf-bench: warning: the server (pid {pid}) may open at most {server_soft} files \
             (its ulimit -n); {connections} connections need about {needed} there, so expect \
             refused or timed-out connections"
        );
    }
}

/// Files this process has open now (entries of `/proc/self/fd`, less the directory's own).
fn count_open_files() -> Option<u64> {
    let entries = fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// `net.ipv4.ip_local_port_range`, the ports the kernel hands out to outgoing connections.
fn ephemeral_port_range() -> Option<(u16, u16)> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    let low = fields.next()?.ok()?;
    let high = fields.next()?.ok()?;
    (low <= high).then_some((low, high))
}

/// The soft "Max open files" of another process, from `/proc/PID/limits`.
fn server_open_files_soft_limit(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("limits")).ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok() // "unlimited" does not parse, and needs no warning
}
