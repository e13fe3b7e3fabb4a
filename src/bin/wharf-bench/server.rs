//! What the server spends, read from `/proc/PID` (`--server-pid`): CPU time split into user
//! and system, and resident memory, summed over the process and every process descended
//! from it, so a server with worker processes (`wharf --workers N`) is measured whole.
//!
//! User and system time come from `/proc/PID/stat` (`utime`, `stime`, all threads), which
//! the kernel reports in clock ticks (10 ms at USER_HZ = 100): a figure per operation is only
//! as good as the run is long, so measure for seconds, not milliseconds. The total CPU time
//! comes from `/proc/PID/task/*/schedstat`, which the scheduler keeps in nanoseconds.

use std::fs;
use std::path::PathBuf;

use crate::error::BenchError;
use crate::figures::ServerFigures;
use crate::kernel::kib_field;
use crate::sys;

/// Reads the counters of one server: a process and every process descended from it.
#[derive(Debug)]
pub struct ServerProbe {
    pid: u32,
    ticks_per_second: u64,
}

/// The server's counters at one moment, summed over its processes.
#[derive(Debug, Clone, Copy)]
pub struct ServerSample {
    user_ticks: u64,
    system_ticks: u64,
    /// On-CPU time of all threads in nanoseconds, when schedstat is available.
    runtime_ns: Option<u64>,
    /// Resident memory (VmRSS), summed. Pages that forked workers share with their parent
    /// count once in each, so the sum overstates what the server holds; the growth between
    /// two samples of the same processes does not, and that is what the reports use.
    pub rss_bytes: u64,
    /// Processes summed: the server's and its descendants'.
    pub processes: u32,
}

impl ServerProbe {
    /// A probe of process `pid` and its descendants; fails at once if there is no such
    /// process to read.
    pub fn new(pid: u32) -> Result<ServerProbe, BenchError> {
        let probe = ServerProbe {
            pid,
            ticks_per_second: sys::clock_ticks_per_second(),
        };
        probe.sample()?;
        Ok(probe)
    }

    pub fn of(pid: Option<u32>) -> Result<Option<ServerProbe>, BenchError> {
        pid.map(ServerProbe::new).transpose()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads the counters now, of the server process and of every process descended from it
    /// (a server with worker processes): one scan of `/proc`, so call it at the ends of an
    /// interval, not per operation.
    pub fn sample(&self) -> Result<ServerSample, BenchError> {
        let mut sample = self.process_sample(self.pid)?;
        for pid in descendants_of(self.pid) {
            // A worker that exits between the scan and the reading is left out.
            if let Ok(worker) = self.process_sample(pid) {
                sample.user_ticks += worker.user_ticks;
                sample.system_ticks += worker.system_ticks;
                sample.runtime_ns = sample.runtime_ns.zip(worker.runtime_ns).map(|(a, b)| a + b);
                sample.rss_bytes += worker.rss_bytes;
                sample.processes += 1;
            }
        }
        Ok(sample)
    }

    fn process_sample(&self, pid: u32) -> Result<ServerSample, BenchError> {
        let stat = self.read(pid, "stat")?;
        let (user_ticks, system_ticks) = parse_cpu_ticks(&stat)
            .ok_or_else(|| BenchError::BadInput(format!("/proc/{pid}/stat has no utime/stime")))?;
        let status = self.read(pid, "status")?;
        let rss_bytes = kib_field(&status, "VmRSS:")
            .ok_or_else(|| BenchError::BadInput(format!("/proc/{pid}/status has no VmRSS")))?;
        Ok(ServerSample {
            user_ticks,
            system_ticks,
            runtime_ns: runtime_ns(pid),
            rss_bytes,
            processes: 1,
        })
    }

    fn read(&self, pid: u32, file: &str) -> Result<String, BenchError> {
        let path = proc_path(pid).join(file);
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
}

/// The server's figures over an interval of `ops` operations, from `probe`'s samples at its
/// two ends: CPU time per operation (in user space, the server's own code; in the kernel on
/// its behalf, its syscalls; and in all, to the nanosecond), and its memory at the end. All
/// `null` without a probe.
pub fn figures(
    probe: Option<&ServerProbe>,
    before: Option<ServerSample>,
    after: Option<ServerSample>,
    ops: u64,
) -> ServerFigures {
    let (Some(probe), Some(before), Some(after)) = (probe, before, after) else {
        return ServerFigures::default();
    };
    let ops = ops.max(1) as f64;
    let ns_per_tick = 1e9 / probe.ticks_per_second as f64;
    let per_op = |ticks: u64| Some(ticks as f64 * ns_per_tick / ops);
    ServerFigures {
        server_pid: Some(probe.pid),
        server_procs: Some(after.processes),
        server_user_ns_per_op: per_op(after.user_ticks.saturating_sub(before.user_ticks)),
        server_sys_ns_per_op: per_op(after.system_ticks.saturating_sub(before.system_ticks)),
        server_cpu_ns_per_op: match (before.runtime_ns, after.runtime_ns) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / ops),
            _ => None,
        },
        server_rss_bytes: Some(after.rss_bytes),
    }
}

fn proc_path(pid: u32) -> PathBuf {
    PathBuf::from("/proc").join(pid.to_string())
}

/// The soft "Max open files" of process `pid`, from `/proc/PID/limits`.
pub fn open_files_soft_limit(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(proc_path(pid).join("limits")).ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok() // "unlimited" does not parse, and needs no warning
}

/// The sum of every thread's on-CPU nanoseconds (the first field of its schedstat).
fn runtime_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(proc_path(pid).join("task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Every process descended from `pid` (a server's workers), from a scan of `/proc`.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    descendants(pid, &process_parents())
}

/// (pid, parent pid) of every process, from `/proc/*/stat`. Kernels without
/// CONFIG_PROC_CHILDREN have no `/proc/PID/task/*/children`, so the tree is built from the
/// parent links, which every kernel has.
fn process_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((pid, parse_parent(&stat)?))
        })
        .collect()
}

/// Every process descended from `root` (children, their children, ...), given the
/// (pid, parent pid) pairs of all processes.
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = Vec::new();
    let mut unvisited = vec![root];
    while let Some(parent) = unvisited.pop() {
        for &(pid, ppid) in parents {
            if ppid == parent && pid != root {
                found.push(pid);
                unvisited.push(pid);
            }
        }
    }
    found
}

/// The parent pid (field 4) of a `/proc/PID/stat` line.
fn parse_parent(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
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
        assert_eq!(kib_field(status, "VmRSS:"), Some(2048 * 1024));
    }

    #[test]
    fn the_parent_pid_is_found_after_an_odd_name() {
        let stat = "4243 (a) b) S 4242 4243 4243 0 -1 4194560 100 0 0 0 731 112";
        assert_eq!(parse_parent(stat), Some(4242));
    }

    #[test]
    fn descendants_are_children_and_their_children_only() {
        // 10 has workers 11 and 12; 12 has a helper 13; 20 is unrelated, 1 is init.
        let parents = [
            (1, 0),
            (10, 1),
            (11, 10),
            (12, 10),
            (13, 12),
            (20, 1),
            (21, 20),
        ];
        let mut found = descendants(10, &parents);
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13]);
        assert!(descendants(11, &parents).is_empty());
    }

    #[test]
    fn this_process_can_be_probed() {
        let probe = ServerProbe::new(std::process::id()).expect("own /proc entry");
        let sample = probe.sample().expect("sample");
        assert!(sample.rss_bytes > 0);
    }

    #[test]
    fn a_child_process_is_summed_with_its_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let sample = ServerProbe::new(std::process::id()).and_then(|probe| probe.sample());
        let _ = child.kill();
        let _ = child.wait();
        assert!(sample.expect("sample").processes >= 2);
    }
}
