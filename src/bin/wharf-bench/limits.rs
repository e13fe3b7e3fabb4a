//! Limits that would make a run fail half-way, checked and explained before it starts.
//!
//! A load generator that dies with `EMFILE` after 1021 connections teaches nothing. So before
//! a run the client raises its own soft open-files limit to the hard limit, and refuses to
//! start, with the number it needs and how to get it, when that is still too low or when the
//! ephemeral port range cannot give every connection a local port.

use std::fs;

use crate::cli::Target;
use crate::error::BenchError;
use crate::server;
use crate::sys;

/// Open files the client uses besides its connections when `/proc/self/fd` cannot be read:
/// stdin, stdout, stderr.
const FALLBACK_OPEN_FILES: u64 = 3;

/// Every check before a run of `connections` connections to `target`: matching address
/// families, open files, local ports and (a warning only) the server's own open-files limit.
/// With `procs`, the process that splits a `--procs` run: each of `procs` client processes
/// must hold its share under its own open-files limit, and a refusal says how many would do.
pub fn preflight(target: &Target, connections: u64, procs: Option<u32>) -> Result<(), BenchError> {
    let peer = &target.peer;
    if let Some(source) = peer
        .sources()
        .iter()
        .find(|source| source.is_ipv4() != peer.addr.is_ipv4())
    {
        return Err(BenchError::Usage(format!(
            "source address {source} and server address {} are of different IP versions",
            peer.addr
        )));
    }
    ensure_open_files(connections, procs)?;
    // Ports are checked for all the connections together: the kernel hands out local ports
    // per (source, server) pair to every process alike.
    ensure_ports(connections, peer.sources().len())?;
    if let Some(pid) = peer.server_pid {
        warn_if_server_limited(pid, connections);
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard limit, then checks that `connections`
/// sockets fit (in each of `procs` processes, when they are shared).
pub fn ensure_open_files(connections: u64, procs: Option<u32>) -> Result<(), BenchError> {
    let open_files = OpenFiles::now()?;
    let limit = format!(
        "ulimit -n is {} (hard limit {})",
        open_files.limit.soft, open_files.limit.hard
    );
    let Some(procs) = procs else {
        let Some(needed) = open_files.short_of(connections) else {
            return Ok(());
        };
        return Err(BenchError::Limit(format!(
            "{limit}; -c {connections} needs {needed} open files (one per connection, one for \
             the poller and the {} already open). Raise it with `ulimit -n {needed}` (above the \
             hard limit only as root, or with nofile in /etc/security/limits.conf), or lower -c",
            open_files.already_open,
        )));
    };
    let per_process = connections.div_ceil(u64::from(procs.max(1)));
    let Some(needed) = open_files.short_of(per_process) else {
        return Ok(());
    };
    let procs_needed = connections.div_ceil(open_files.room().max(1));
    let asked = if procs > 1 {
        format!("-c {connections} over {procs} client processes is {per_process} each, which")
    } else {
        format!("-c {connections}")
    };
    Err(BenchError::Limit(format!(
        "{limit}; {asked} needs {needed} open files per process. Spread the connections over \
         more client processes, each with a limit of its own: --procs {procs_needed}; or raise \
         the limit (`ulimit -n {needed}`, above the hard limit only as root), or lower -c"
    )))
}

/// This process's open-files limit, raised as far as it goes, and the files open now.
struct OpenFiles {
    limit: sys::OpenFilesLimit,
    already_open: u64,
}

impl OpenFiles {
    /// Raises the soft limit to the hard one, which needs no privilege; if that fails
    /// anyway, the limit left in force is the one the checks explain.
    fn now() -> Result<OpenFiles, BenchError> {
        let mut limit = sys::open_files_limit()
            .map_err(|error| BenchError::io("reading the open-files limit (getrlimit)", error))?;
        if limit.soft < limit.hard && sys::set_open_files_soft_limit(limit.hard, limit.hard).is_ok()
        {
            limit.soft = limit.hard;
        }
        Ok(OpenFiles {
            limit,
            already_open: count_open_files().unwrap_or(FALLBACK_OPEN_FILES),
        })
    }

    /// Connections that fit: one descriptor each, besides the poller and the files open now.
    fn room(&self) -> u64 {
        self.limit.soft.saturating_sub(self.already_open + 1)
    }

    /// The open files `connections` need, if that is more than the limit.
    fn short_of(&self, connections: u64) -> Option<u64> {
        (connections > self.room()).then_some(connections + self.already_open + 1)
    }
}

/// Checks that `connections` to one server address can each get a local port from
/// `sources` source addresses (one when the kernel chooses).
fn ensure_ports(connections: u64, sources: usize) -> Result<(), BenchError> {
    let Some((low, high)) = ephemeral_port_range() else {
        return Ok(()); // not Linux, or /proc unreadable: let connect() report it
    };
    let per_source = u64::from(high.saturating_sub(low)) + 1;
    let sources = sources.max(1) as u64;
    if connections <= per_source * sources {
        if let Some(comfortable) = crowded(connections, sources, per_source) {
            eprintln!(
                "wharf-bench: warning: {connections} connections over {sources} source \
                 address(es) fill more than half of each one's {per_source} local ports, \
                 where the kernel's port search slows down and connects may time out; \
                 give --src at least {comfortable} addresses (127.0.0.1-127.0.0.{comfortable})"
            );
        }
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

/// The source addresses to give when `connections` would fill more than half of each of
/// `sources` ranges of `per_source` ports: the kernel's search for a free port slows as a
/// range fills (905,000 connections over 64 sources, half of each range, stalled the
/// clients). `None` when there is room enough.
fn crowded(connections: u64, sources: u64, per_source: u64) -> Option<u64> {
    (connections > per_source * sources / 2).then(|| connections.div_ceil((per_source / 2).max(1)))
}

/// Warns (without refusing) when the server process's own open-files limit is below what
/// `connections` need: the run goes on, and the failures it will count are explained.
fn warn_if_server_limited(pid: u32, connections: u64) {
    // A server with worker processes accepts in the workers, each under its own limit.
    let workers = server::descendants_of(pid);
    let serving = if workers.is_empty() {
        vec![pid]
    } else {
        workers
    };
    let limits: Option<Vec<u64>> = serving
        .iter()
        .map(|&pid| server::open_files_soft_limit(pid))
        .collect();
    let Some(server_soft) = limits.map(|limits| limits.iter().sum::<u64>()) else {
        return;
    };
    // Each process needs a handful of descriptors of its own (listener, poller, stdio).
    let needed = connections + 8 * serving.len() as u64;
    if server_soft < needed {
        let whose = if serving.len() > 1 {
            format!(
                "the {} worker processes of the server (pid {pid})",
                serving.len()
            )
        } else {
            format!("the server (pid {pid})")
        };
        eprintln!(
            "wharf-bench: warning: {whose} may open at most {server_soft} files (ulimit -n); \
             {connections} connections need about {needed} there, so expect refused or \
             timed-out connections"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_half_of_the_port_ranges_asks_for_more_sources() {
        // A million connections over 250 sources of 28,232 ports: 14 % each, fine.
        assert_eq!(crowded(1_000_000, 250, 28_232), None);
        // Over 64 sources: 55 % of each range; 71 sources keep each under half.
        assert_eq!(crowded(1_000_000, 64, 28_232), Some(71));
        assert_eq!(crowded(20_000, 1, 28_232), Some(2));
    }
}
