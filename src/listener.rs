//! Listening sockets, built with libc so that every option is the caller's choice.
//!
//! `std::net::TcpListener::bind` hides the backlog (it always asks for 128) and offers no
//! SO_REUSEPORT and no control of IPV6_V6ONLY, and those are what an operator tunes. So the
//! socket is made by hand: `socket` (non-blocking, close-on-exec), `setsockopt`, `bind`,
//! `listen(fd, backlog)`, and only then handed to mio. This file and nothing else in the crate
//! calls libc for sockets; every `unsafe` block says why it holds.
//!
//! Defaults are conservative: SO_REUSEADDR on (a restarted server can bind while old
//! connections sit in TIME_WAIT), SO_REUSEPORT off (two servers on one port by accident would
//! silently split the traffic), and IPv6 sockets dual-stack so that `[::]:PORT` also serves
//! IPv4 clients.

use std::fmt;
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// How a listening socket is set up.
///
/// ```
/// let options = wharf::ListenOptions { backlog: 4096, ..Default::default() };
/// assert!(!options.reuseport);
/// ```
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Length of the accept queue passed to `listen(2)`. The kernel silently caps it at
    /// `net.core.somaxconn`; [`Listener::bind`] logs a warning when that happens.
    /// Default: 1024.
    pub backlog: u32,
    /// Set SO_REUSEPORT, so several sockets (processes or threads) can listen on one port and
    /// the kernel spreads new connections among them. Default: off.
    pub reuseport: bool,
    /// For IPv6 addresses, set IPV6_V6ONLY: accept IPv6 clients only, so that `[::]:PORT`
    /// and `0.0.0.0:PORT` can be two separate listeners. Default: off, so `[::]:PORT`
    /// serves IPv4 clients too (as IPv4-mapped addresses).
    pub v6only: bool,
    /// Set TCP_NODELAY on accepted connections: send small writes at once instead of
    /// coalescing them (Nagle's algorithm). Default: off.
    pub nodelay: bool,
    /// Set SO_KEEPALIVE on accepted connections, with the first probe after this much
    /// silence (TCP_KEEPIDLE), so connections to vanished hosts are found and closed.
    /// `None`: no keepalive. Default: 300 s.
    pub keepalive: Option<Duration>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            reuseport: false,
            v6only: false,
            nodelay: false,
            keepalive: Some(Duration::from_secs(300)),
        }
    }
}

/// A bound, listening, non-blocking TCP socket, ready to be given to a [`crate::Reactor`].
///
/// ```
/// use wharf::{ListenOptions, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default())?;
/// assert_ne!(listener.local_addr().port(), 0, "port 0 picks a free port");
/// # Ok::<(), wharf::ListenError>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    socket: mio::net::TcpListener,
    local_addr: SocketAddr,
    options: ListenOptions,
}

impl Listener {
    /// Creates a socket listening on `addr` with `options`.
    ///
    /// Errors name the address and say what to do about it; see [`ListenError`].
    pub fn bind(addr: SocketAddr, options: &ListenOptions) -> Result<Listener, ListenError> {
        let fail = |step: &'static str| move |error| ListenError::from_os(addr, step, error);
        let fd = new_socket(&addr).map_err(fail("socket"))?;
        set_address_options(&fd, &addr, options).map_err(|(step, error)| fail(step)(error))?;
        // Set on the listening socket, these are inherited by every accepted socket on Linux,
        // which saves two or three system calls per connection; elsewhere they are set again
        // after accept (see `Listener::prepare`).
        set_stream_options(fd.as_raw_fd(), options).map_err(fail("setsockopt(TCP options)"))?;
        bind(&fd, &addr).map_err(fail("bind"))?;
        warn_if_backlog_capped(options.backlog);
        let backlog = options.backlog.min(i32::MAX as u32) as i32;
        // SAFETY: `fd` is a valid, bound socket we own; listen takes no pointers.
        if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
            return Err(fail("listen")(io::Error::last_os_error()));
        }
        let socket = mio::net::TcpListener::from_std(StdListener::from(fd));
        let local_addr = socket.local_addr().map_err(fail("getsockname"))?;
        Ok(Listener {
            socket,
            local_addr,
            options: options.clone(),
        })
    }

    /// Applies the per-connection options to an accepted socket where the operating system
    /// does not inherit them from the listening socket.
    pub(crate) fn prepare(&self, stream: &mio::net::TcpStream) -> io::Result<()> {
        if cfg!(any(target_os = "linux", target_os = "android")) {
            return Ok(()); // inherited from the listening socket
        }
        set_stream_options(stream.as_raw_fd(), &self.options)
    }

    /// The address actually bound: with port 0 in the request, this holds the port chosen.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn socket_mut(&mut self) -> &mut mio::net::TcpListener {
        &mut self.socket
    }
}

/// An address held for listeners bound later: a TCP socket bound to it but not listening.
///
/// It learns the real port of `IP:0` and proves the address free (or says who holds it, as
/// [`Listener::bind`] would) once, before listeners with SO_REUSEPORT are bound on the real
/// address, in this process or in others. It never receives a connection: on Linux only
/// *listening* sockets join a port's SO_REUSEPORT group, so the kernel spreads connections
/// over the listeners alone. It has SO_REUSEADDR, which lets listeners bind beside a socket
/// that is not listening, and SO_REUSEPORT only if `options.reuseport` says so. Without it,
/// another reservation of the address fails while its listeners are up, so two groups of
/// servers cannot share a port by accident.
///
/// ```
/// use wharf::{ListenOptions, Listener, Reservation};
///
/// let reservation = Reservation::bind("127.0.0.1:0".parse()?, &ListenOptions::default())?;
/// let addr = reservation.local_addr();
/// let shared = ListenOptions { reuseport: true, ..Default::default() };
/// let first = Listener::bind(addr, &shared)?;
/// let second = Listener::bind(addr, &shared)?; // another thread's or process's share
/// assert_eq!(first.local_addr(), second.local_addr());
/// if cfg!(target_os = "linux") {
///     assert!(Reservation::bind(addr, &ListenOptions::default()).is_err(), "held");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Reservation {
    _socket: OwnedFd,
    local_addr: SocketAddr,
}

impl Reservation {
    /// Binds a socket to `addr` without listening. Of `options`, only `reuseport` and
    /// `v6only` matter.
    pub fn bind(addr: SocketAddr, options: &ListenOptions) -> Result<Reservation, ListenError> {
        let fail = |step: &'static str| move |error| ListenError::from_os(addr, step, error);
        let fd = new_socket(&addr).map_err(fail("socket"))?;
        set_address_options(&fd, &addr, options).map_err(|(step, error)| fail(step)(error))?;
        bind(&fd, &addr).map_err(fail("bind"))?;
        // std's listener type only to ask for the address: this socket never listens.
        let socket = StdListener::from(fd);
        let local_addr = socket.local_addr().map_err(fail("getsockname"))?;
        Ok(Reservation {
            _socket: OwnedFd::from(socket),
            local_addr,
        })
    }

    /// The address bound: with port 0 in the request, this holds the port chosen.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A UDP socket bound to `addr` (`[::]:PORT` also takes IPv4 where the system's default
/// allows it, as on Linux), with the same clear errors as [`Listener::bind`].
///
/// ```
/// let socket = wharf::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// assert_ne!(socket.local_addr()?.port(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, ListenError> {
    std::net::UdpSocket::bind(addr).map_err(|error| {
        match ListenError::from_os(addr, "bind", error) {
            ListenError::AddrInUse(addr) => ListenError::UdpAddrInUse(addr),
            other => other,
        }
    })
}

/// Why a listening socket could not be created.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenError {
    /// Another socket already listens on this address.
    AddrInUse(SocketAddr),
    /// Another socket is already bound to this UDP address.
    UdpAddrInUse(SocketAddr),
    /// The port is privileged (below 1024) and the process may not bind it.
    PermissionDenied(SocketAddr),
    /// No interface of this machine has this IP address.
    AddrNotAvailable(SocketAddr),
    /// Any other failure, with the system call that failed.
    Os {
        /// The address being set up.
        addr: SocketAddr,
        /// The call that failed, e.g. `listen`.
        step: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl ListenError {
    fn from_os(addr: SocketAddr, step: &'static str, source: io::Error) -> ListenError {
        match source.raw_os_error() {
            Some(libc::EADDRINUSE) => ListenError::AddrInUse(addr),
            Some(libc::EACCES | libc::EPERM) if step == "bind" => {
                ListenError::PermissionDenied(addr)
            }
            Some(libc::EADDRNOTAVAIL) => ListenError::AddrNotAvailable(addr),
            _ => ListenError::Os { addr, step, source },
        }
    }
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::AddrInUse(addr) => write!(
                f,
                "address {addr} is already in use: is another server running? \
                 see `ss -ltnp 'sport = :{}'`",
                addr.port()
            ),
            ListenError::UdpAddrInUse(addr) => write!(
                f,
                "UDP address {addr} is already in use: is another server running? \
                 see `ss -lunp 'sport = :{}'`",
                addr.port()
            ),
            ListenError::PermissionDenied(addr) => write!(
                f,
                "permission denied binding {addr}: ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE; pick a port of 1024 or above"
            ),
            ListenError::AddrNotAvailable(addr) => write!(
                f,
                "cannot listen on {addr}: no network interface of this machine has address {}",
                addr.ip()
            ),
            ListenError::Os { addr, step, source } => {
                write!(f, "cannot listen on {addr}: {step} failed: {source}")
            }
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The flags `socket(2)` takes in its type argument on this system, to make the socket
/// non-blocking and close-on-exec as it is created; 0 where it takes none (macOS), and
/// `fcntl` sets both right after.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const SOCKET_FLAGS: libc::c_int = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
const SOCKET_FLAGS: libc::c_int = 0;

/// A new non-blocking, close-on-exec stream socket for `addr`'s family.
fn new_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
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

/// SO_REUSEADDR always, SO_REUSEPORT and IPV6_V6ONLY as `options` ask: what decides who else
/// may bind the address.
/// Fails with the option that could not be set.
fn set_address_options(
    fd: &OwnedFd,
    addr: &SocketAddr,
    options: &ListenOptions,
) -> Result<(), (&'static str, io::Error)> {
    set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, true)
        .map_err(|e| ("setsockopt(SO_REUSEADDR)", e))?;
    if options.reuseport {
        set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, true)
            .map_err(|e| ("setsockopt(SO_REUSEPORT)", e))?;
    }
    if addr.is_ipv6() {
        set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, options.v6only)
            .map_err(|e| ("setsockopt(IPV6_V6ONLY)", e))?;
    }
    Ok(())
}

/// TCP_NODELAY and keepalive, as `options` ask (nothing is set for what is off).
fn set_stream_options(fd: RawFd, options: &ListenOptions) -> io::Result<()> {
    if options.nodelay {
        set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    if let Some(idle) = options.keepalive {
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

fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
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

/// The kernel shortens the accept queue to net.core.somaxconn without telling anyone; say so,
/// because a too-short queue shows up only as dropped SYNs under load.
fn warn_if_backlog_capped(backlog: u32) {
    #[cfg(target_os = "linux")]
    if let Some(max) = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    {
        if backlog > max {
            log::warn!(
                "backlog {backlog} exceeds net.core.somaxconn={max}: the kernel caps it at \
                 {max} (raise it with `sysctl -w net.core.somaxconn={backlog}`)"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = backlog;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_ephemeral_port_and_accepts() {
        let listener =
            Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        std::net::TcpStream::connect(addr).expect("connect to the new listener");
    }

    #[test]
    fn second_bind_of_the_same_address_says_in_use() {
        let first =
            Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        let error = Listener::bind(first.local_addr(), &ListenOptions::default()).unwrap_err();
        assert!(matches!(error, ListenError::AddrInUse(_)), "{error:?}");
        assert!(error.to_string().contains("ss -ltnp"), "{error}");
    }

    #[test]
    fn reuseport_lets_two_sockets_share_a_port() {
        let options = ListenOptions {
            reuseport: true,
            ..Default::default()
        };
        let first = Listener::bind("127.0.0.1:0".parse().unwrap(), &options).unwrap();
        Listener::bind(first.local_addr(), &options).expect("second SO_REUSEPORT socket");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_reservation_holds_the_port_but_takes_no_connections() {
        let reservation =
            Reservation::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        let addr = reservation.local_addr();
        assert_ne!(addr.port(), 0);
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        // SO_REUSEPORT listeners bind beside it, and then get the connections.
        let shared = ListenOptions {
            reuseport: true,
            ..Default::default()
        };
        let _first = Listener::bind(addr, &shared).expect("a listener beside the reservation");
        let _second = Listener::bind(addr, &shared).expect("a second one");
        std::net::TcpStream::connect(addr).expect("served by the listeners");
        // A server that does not share, or a second reservation, is refused.
        let error = Listener::bind(addr, &ListenOptions::default()).unwrap_err();
        assert!(matches!(error, ListenError::AddrInUse(_)), "{error:?}");
        let error = Reservation::bind(addr, &ListenOptions::default()).unwrap_err();
        assert!(matches!(error, ListenError::AddrInUse(_)), "{error:?}");
    }

    #[test]
    fn v6only_lets_ipv4_and_ipv6_wildcards_share_a_port() {
        let any6: SocketAddr = "[::]:0".parse().unwrap();
        let dual = match Listener::bind(any6, &ListenOptions::default()) {
            Ok(listener) => listener,
            Err(error) => return eprintln!("skipped: no IPv6 here ({error})"),
        };
        // Dual-stack by default: the IPv6 wildcard also holds the IPv4 side of its port.
        let v4_same_port = SocketAddr::from(([0, 0, 0, 0], dual.local_addr().port()));
        let error = Listener::bind(v4_same_port, &ListenOptions::default()).unwrap_err();
        assert!(matches!(error, ListenError::AddrInUse(_)), "{error:?}");

        let v6only = ListenOptions {
            v6only: true,
            ..Default::default()
        };
        // The port the kernel picks for the IPv6-only socket may be held on IPv4 by another
        // process (that is the point of IPv6-only), so a few ports are tried; without
        // v6only, every try fails, on the socket's own port.
        let mut last_error = None;
        for _ in 0..20 {
            let only6 = Listener::bind(any6, &v6only).expect("IPv6-only wildcard");
            let v4_same_port = SocketAddr::from(([0, 0, 0, 0], only6.local_addr().port()));
            match Listener::bind(v4_same_port, &ListenOptions::default()) {
                Ok(_) => return,
                Err(error) => last_error = Some(error),
            }
        }
        panic!("no IPv4 wildcard beside an IPv6-only one: {last_error:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn accepted_sockets_get_nodelay_and_keepalive() {
        let options = ListenOptions {
            nodelay: true,
            keepalive: Some(Duration::from_secs(123)),
            ..Default::default()
        };
        let mut listener = Listener::bind("127.0.0.1:0".parse().unwrap(), &options).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let accepted = loop {
            match listener.socket_mut().accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        listener.prepare(&accepted).unwrap();
        let socket = socket_options(&accepted);
        assert_eq!(socket, (true, true, 123));
    }

    /// (TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE) of a socket.
    #[cfg(target_os = "linux")]
    fn socket_options(stream: &mio::net::TcpStream) -> (bool, bool, libc::c_int) {
        let get = |level, name| {
            let mut value: libc::c_int = 0;
            let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: value and len are live locals of the sizes given.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    level,
                    name,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
            value
        };
        (
            get(libc::IPPROTO_TCP, libc::TCP_NODELAY) != 0,
            get(libc::SOL_SOCKET, libc::SO_KEEPALIVE) != 0,
            get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        )
    }

    #[test]
    fn foreign_address_is_not_available() {
        // 192.0.2.0/24 is TEST-NET-1: never assigned to a real interface.
        let error =
            Listener::bind("192.0.2.1:0".parse().unwrap(), &ListenOptions::default()).unwrap_err();
        assert!(
            matches!(error, ListenError::AddrNotAvailable(_)),
            "{error:?}"
        );
    }
}
