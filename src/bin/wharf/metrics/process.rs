//! The process's own figures, for a scrape: resident memory, open descriptors, CPU time.
//! Each is read where it is cheap; one the system does not give is left out.

use crate::sys;

/// Adds this process's figures to `out`.
pub fn figures(out: &mut Vec<(String, u64)>) {
    // /proc/self/statm: size, then resident, in pages (Linux).
    let statm = std::fs::read_to_string("/proc/self/statm").ok();
    let resident = statm.as_deref().and_then(|statm| {
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * sys::page_size())
    });
    if let Some(bytes) = resident {
        out.push(("process_resident_memory_bytes".into(), bytes));
    }
    // One directory entry per descriptor, less the one reading the directory holds.
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let open = entries.count().saturating_sub(1);
        out.push(("process_open_fds".into(), open as u64));
    }
    if let Ok(micros) = sys::cpu_micros() {
        out.push(("process_cpu_micros".into(), micros));
    }
}
