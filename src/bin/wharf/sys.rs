//! The operating-system calls of the binary that std does not offer: sending a signal to a
//! worker, making a worker die with its parent, passing a worker a socket (its end of the
//! stats channel, a socket systemd passed) and taking one passed, raising the open-files
//! limit, and the process's CPU time and page size for the metrics. Every `unsafe` block of the binary is here,
//! each with its reason.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
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

/// Lets the worker started by `command` inherit the descriptor `fd` under the same number:
/// its close-on-exec flag is cleared in the child only, between fork and exec, so the
/// parent's copy (and any other child's) keeps the flag. `fd` must be above 2, where the
/// child's stdin, stdout and stderr are put, and stay open until the child is spawned.
pub fn inherit_fd(command: &mut Command, fd: RawFd) {
    let setup = move || {
        // SAFETY: fcntl(F_GETFD/F_SETFD) takes integers only and is async-signal-safe; after
        // the fork, `fd` is the child's own copy of the parent's open descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: `setup` only makes async-signal-safe system calls and allocates nothing, as
    // pre_exec requires after a fork in a process that has other threads.
    unsafe {
        command.pre_exec(setup);
    }
}

/// `fd` again under a number above 2 (with close-on-exec), if it is one of 0, 1 and 2: a
/// parent started with stdin closed gets 0 for its next socket, and a descriptor passed on
/// under that number would be replaced by the child's stdin.
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC takes integers only, and `fd` is open (we own it).
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a descriptor the fcntl just opened for us and nothing else holds.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// In a worker: takes the socket its parent passed on under the number `fd` (see
/// [`inherit_fd`]; `--worker-stats-fd`). See [`passed_socket`].
pub fn inherited_socket(fd: RawFd) -> io::Result<UnixStream> {
    passed_socket(fd).map(UnixStream::from)
}

/// Takes the socket passed to this process under the number `fd` (by its parent, or by
/// systemd's socket activation) and marks it close-on-exec. Checked first: `fd` must be
/// above 2 (0, 1 and 2 are stdio), open, and a socket. Call it once per number: the socket
/// is then owned by what this returns, and nothing else in the process knows the number.
pub fn passed_socket(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 {
        let error = format!("descriptor {fd} is stdin, stdout or stderr, not a passed socket");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, error));
    }
    // SAFETY: all-zero bytes are a valid `stat` (integers only); fstat fills it in.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into the struct we pass and keeps no pointer to it; a
    // number that is not open fails with EBADF and touches nothing.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: fcntl(F_SETFD) takes integers only; `fd` is open (fstat said so).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open socket that this process was passed and that nothing else in
    // it uses or closes (see above), so the OwnedFd may own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `file` non-blocking: its writes fail with `WouldBlock` instead of waiting.
pub fn set_nonblocking(file: &std::fs::File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` owns, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// User and system CPU time this process has used, in microseconds.
pub fn cpu_micros() -> io::Result<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage(2) writes one `rusage` through the pointer, which is valid for it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getrusage returned 0, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Ok(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// The size of a memory page, in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf(3) takes an integer and returns one.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}
