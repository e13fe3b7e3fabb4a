//! The operating-system calls of the binary that std does not offer: sending a signal to a
//! worker, making a worker die with its parent, and raising the open-files limit. Every
//! `unsafe` block of the binary is here, each with its reason.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Sends `signal` to the worker `pid`.
///
/// `pid` must be a child of this process that has not been reaped yet (its `Child` has not
/// reported an exit). Until it is reaped, even a child that has exited keeps its pid as a
/// zombie, so the signal can never reach another process that reused the number.
pub fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes no pointers; the pid names our own unreaped child (see above).
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets up what a worker inherits between fork and exec:
///
/// - **It dies with its parent.** `PR_SET_PDEATHSIG` sends it SIGTERM (a drain, as if the
///   parent had passed one on) when the parent goes, even by SIGKILL, so no orphan serves the
///   port forever. The signal fires when the *thread* that forked the worker ends, so workers
///   must be spawned from a thread that lives as long as the parent: its main thread.
///   Should the parent already be gone by then, the worker is not started.
/// - **SIGHUP is ignored** until the worker installs a handler for it: the parent passes
///   SIGHUP on, and a worker must not die of it.
///
/// Linux only; elsewhere workers are not supported and this does nothing.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let parent = std::process::id();
        let setup = move || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only, and is async-signal-safe,
            // as the code between fork and exec must be.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then no signal would ever come.
            // (ESRCH, "no such process", because building any other error allocates.)
            if std::os::unix::process::parent_id() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // SAFETY: signal(2) with SIG_IGN installs no handler code; async-signal-safe.
            if unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) } == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: `setup` only makes async-signal-safe system calls and allocates nothing,
        // as pre_exec requires after a fork in a process that has other threads.
        unsafe {
            command.pre_exec(setup);
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = command;
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as far as no privilege is needed, and
/// returns the (soft, hard) limits now in force.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass and keeps no pointer to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass, for the duration of the call;
        // raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}
