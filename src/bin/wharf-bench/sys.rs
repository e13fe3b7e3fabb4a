//! The few libc calls the load generator needs that neither std, mio nor socket2 offers:
//! the open-files limit, IP_BIND_ADDRESS_NO_PORT, the kernel's clock tick and
//! PR_SET_PDEATHSIG for the client processes of `--procs`.
//!
//! Every `unsafe` block of wharf-bench is in this file.

use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

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

/// Makes the process `command` starts die (SIGKILL) when this thread ends, so that the client
/// processes of a killed `--procs` run do not go on connecting (PR_SET_PDEATHSIG, Linux).
///
/// The signal follows the *thread* that started the child, not the process: start children
/// from a thread that lives as long as they should (wharf-bench starts them from main).
/// Elsewhere this does nothing, and children still give up when their stdin closes.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid)
        // and builds an io::Error from an errno, which does not allocate. It touches no
        // memory of the parent.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then no signal will come.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}
