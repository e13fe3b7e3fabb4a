//! The few libc calls the load generator needs that neither std, mio nor socket2 offers:
//! the open-files limit, IP_BIND_ADDRESS_NO_PORT and the kernel's clock tick.
//!
//! Every `unsafe` block of wharf-bench is in this file.

use std::io;
use std::os::fd::AsRawFd;

/// The process's RLIMIT_NOFILE: the soft limit in force and the hard ceiling it may rise to.
#[derive(Debug, Clone, Copy)]
pub struct OpenFilesLimit {
    /// The limit in force (`ulimit -n`).
    pub soft: u64,
    /// The most an unprivileged process may raise `soft` to (`ulimit -Hn`).
    pub hard: u64,
}

/// Reads this process's open-files limit.
pub fn open_files_limit() -> io::Result<OpenFilesLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass and keeps no pointer to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFilesLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Sets this process's soft open-files limit, keeping the hard limit as it is.
pub fn set_open_files_soft_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass, for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to pick the local port at `connect` rather than at `bind`
/// (IP_BIND_ADDRESS_NO_PORT, Linux 4.2+).
///
/// Binding to `(ip, 0)` otherwise reserves a port for that source address against every
/// destination, so one source address could hold only as many connections as the ephemeral
/// range has ports, and each bind searches the port table. With the option the port only has
/// to be unique per (source, destination) pair. Elsewhere this does nothing.
pub fn bind_address_no_port(socket: &impl AsRawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: the fd is an open socket owned by the caller; setsockopt reads `on` (an int,
        // the size we pass) only during the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// Clock ticks per second: the unit of the CPU times in `/proc/PID/stat` (USER_HZ).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every Linux architecture; fall back to it if sysconf cannot say.
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}
