//! Socket system calls for [`crate::listener`]: creating a stream socket non-blocking and
//! close-on-exec, its options, `bind`, `listen`. Every `unsafe` block says why it holds.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The flags `socket(2)` takes in its type argument, to make the socket non-blocking and
/// close-on-exec as it is created; Apple's systems take none, and `fcntl` sets both right
/// after (the same split as the keepalive option below).
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const SOCKET_FLAGS: libc::c_int = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
#[cfg(any(target_os = "macos", target_os = "ios"))]
const SOCKET_FLAGS: libc::c_int = 0;

/// A new non-blocking, close-on-exec stream socket for `addr`'s family.
pub(crate) fn stream(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let kind = libc::SOCK_STREAM | SOCKET_FLAGS;
    // SAFETY: socket takes no pointers; a non-negative result is a new fd we now own.
    let fd = unsafe { libc::socket(domain, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if SOCKET_FLAGS == 0 {
        // No SOCK_NONBLOCK/SOCK_CLOEXEC (macOS): set both flags right after creation.
        // SAFETY: fcntl on an fd we own, with integer arguments only.
        let ok = unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) == 0
                && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// SO_REUSEADDR always, SO_REUSEPORT and IPV6_V6ONLY as asked: what decides who else
/// may bind the address.
/// Fails with the option that could not be set.
pub(crate) fn set_address_options(
    fd: &OwnedFd,
    addr: &SocketAddr,
    reuseport: bool,
    v6only: bool,
) -> Result<(), (&'static str, io::Error)> {
    set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, true)
        .map_err(|e| ("setsockopt(SO_REUSEADDR)", e))?;
    if reuseport {
        set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, true)
            .map_err(|e| ("setsockopt(SO_REUSEPORT)", e))?;
    }
    if addr.is_ipv6() {
        set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only)
            .map_err(|e| ("setsockopt(IPV6_V6ONLY)", e))?;
    }
    Ok(())
}

/// TCP_NODELAY and keepalive after `keepalive` idle time, as asked (nothing is set for what
/// is off).
pub(crate) fn set_stream_options(
    fd: RawFd,
    nodelay: bool,
    keepalive: Option<Duration>,
) -> io::Result<()> {
    if nodelay {
        set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    if let Some(idle) = keepalive {
        set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        // Linux refuses TCP_KEEPIDLE above 32767 s (MAX_TCP_KEEPIDLE); nine hours is as
        // good as "rarely" for a keepalive.
        let seconds = idle.as_secs().clamp(1, 32767) as libc::c_int;
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPALIVE, seconds)?;
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, seconds)?;
    }
    Ok(())
}

fn set_flag(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, on: bool) -> io::Result<()> {
    set_int(fd.as_raw_fd(), level, name, on.into())
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, a live c_int, for the whole call; a
    // bad descriptor makes setsockopt fail with EBADF, nothing worse.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds `fd` to `addr`.
pub(crate) fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr type.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a sockaddr of the family and length given, alive for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts listening on bound socket `fd` with an accept queue of `backlog`.
pub(crate) fn listen(fd: &OwnedFd, backlog: u32) -> io::Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    // SAFETY: `fd` is a valid, bound socket we own; listen takes no pointers.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An integer socket option of `fd` (tests check what was set).
#[cfg(test)]
pub(crate) fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live locals of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}
