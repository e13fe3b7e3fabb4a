//! This machine's kernel memory, from `/proc/meminfo`: the slab caches, where the kernel
//! keeps its socket structures (`TCP`, `sock_inode_cache`, the `epitem` of each registered
//! socket, ...), so their growth over a `hold` is what the connections cost the kernel.
//!
//! The figure is machine-wide. On loopback it counts both ends of every connection (the
//! client's socket and the server's), and anything else the machine does meanwhile: read it
//! on a quiet machine, over many connections.

use std::fs;

/// `Slab:` of `/proc/meminfo` in bytes, or `None` where there is no such file (not Linux).
pub fn slab_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&meminfo, "Slab:")
}

/// The value of a `Key:   1234 kB` line, in bytes: the format of `/proc/meminfo` and of
/// `/proc/PID/status`.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_in_bytes_by_exact_key() {
        let meminfo = "MemTotal:       24000000 kB\nSlabby:   1 kB\nSlab:             261552 kB\n\
                       SReclaimable:     226312 kB\n";
        assert_eq!(kib_field(meminfo, "Slab:"), Some(261_552 * 1024));
        assert_eq!(kib_field(meminfo, "Nope:"), None);
    }

    #[test]
    fn this_machine_has_slab_memory() {
        assert!(slab_bytes().is_some_and(|bytes| bytes > 0));
    }
}
