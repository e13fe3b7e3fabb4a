//! What the server process spends, read from `/proc/PID` (`--server-pid`): CPU time split
//! into user and system, and resident memory.
//!
//! User and system time come from `/proc/PID/stat` (`utime`, `stime`, all threads), which
//! the kernel reports in clock ticks (10 ms at USER_HZ = 100): a figure per operation is only
//! as good as the run is long, so measure for seconds, not milliseconds. The total CPU time
//! comes from `/proc/PID/task/*/schedstat`, which the scheduler keeps in nanoseconds.

use std::fs;
use std::path::PathBuf;

use crate::error::BenchError;
use crate::sys;

/// Reads the counters of one server process.
#[derive(Debug)]
pub struct ServerProbe {
    pid: u32,
    ticks_per_second: u64,
}

/// The server's counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ServerSample {
    user_ticks: u64,
    system_ticks: u64,
    /// On-CPU time of all threads in nanoseconds, when schedstat is available.
    runtime_ns: Option<u64>,
    /// Resident memory (VmRSS).
    pub rss_bytes: u64,
}

/// Server CPU time per operation between two samples, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct ServerCost {
    /// Time in user space (the server's own code), per operation.
    pub user_ns_per_op: f64,
    /// Time in the kernel on the server's behalf (its syscalls), per operation.
    pub sys_ns_per_op: f64,
    /// Total on-CPU time per operation, measured to the nanosecond.
    pub cpu_ns_per_op: Option<f64>,
}

impl ServerProbe {
    /// A probe of process `pid`; fails at once if there is no such process to read.
    pub fn new(pid: u32) -> Result<ServerProbe, BenchError> {
        let probe = ServerProbe {
            pid,
            ticks_per_second: sys::clock_ticks_per_second(),
        };
        probe.sample()?;
        Ok(probe)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads the counters now.
    pub fn sample(&self) -> Result<ServerSample, BenchError> {
        let stat = self.read("stat")?;
        let (user_ticks, system_ticks) = parse_cpu_ticks(&stat).ok_or_else(|| {
            BenchError::BadInput(format!("/proc/{}/stat has no utime/stime", self.pid))
        })?;
        let status = self.read("status")?;
        let rss_bytes = parse_rss_bytes(&status).ok_or_else(|| {
            BenchError::BadInput(format!("/proc/{}/status has no VmRSS", self.pid))
        })?;
        Ok(ServerSample {
            user_ticks,
            system_ticks,
            runtime_ns: self.runtime_ns(),
            rss_bytes,
        })
    }

    /// CPU time per operation between `before` and `after`, `ops` operations apart.
    pub fn cost(&self, before: &ServerSample, after: &ServerSample, ops: u64) -> ServerCost {
        let ops = ops.max(1) as f64;
        let ns_per_tick = 1e9 / self.ticks_per_second as f64;
        let per_op = |ticks: u64| ticks as f64 * ns_per_tick / ops;
        ServerCost {
            user_ns_per_op: per_op(after.user_ticks.saturating_sub(before.user_ticks)),
            sys_ns_per_op: per_op(after.system_ticks.saturating_sub(before.system_ticks)),
            cpu_ns_per_op: match (before.runtime_ns, after.runtime_ns) {
                (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / ops),
                _ => None,
            },
        }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/proc").join(self.pid.to_string())
    }

    fn read(&self, file: &str) -> Result<String, BenchError> {
        let path = self.path().join(file);
        fs::read_to_string(&path).map_err(|error| {
            BenchError::io(
                format!(
                    "reading {} (is --server-pid {} the server's process id?)",
                    path.display(),
                    self.pid
                ),
                error,
            )
        })
    }

    /// The sum of every thread's on-CPU nanoseconds (the first field of its schedstat).
    fn runtime_ns(&self) -> Option<u64> {
        let tasks = fs::read_dir(self.path().join("task")).ok()?;
        let mut total = 0u64;
        for task in tasks.flatten() {
            let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    }
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name in
/// field 2 may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11); // state is field 3
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// `VmRSS` of `/proc/PID/status`, in bytes.
fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_found_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    731 112 0 0 20 0 1 0 555 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some((731, 112)));
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\twharf\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t2\n";
        assert_eq!(parse_rss_bytes(status), Some(2048 * 1024));
    }

    #[test]
    fn this_process_can_be_probed() {
        let probe = ServerProbe::new(std::process::id()).expect("own /proc entry");
        let sample = probe.sample().expect("sample");
        assert!(sample.rss_bytes > 0);
    }
}
