//! Listening sockets, built by hand so that every option is the caller's choice.
//!
//! `std::net::TcpListener::bind` hides the backlog (it always asks for 128) and offers no
//! SO_REUSEPORT and no control of IPV6_V6ONLY, and those are what an operator tunes. So the
//! socket is made step by step: `socket` (non-blocking, close-on-exec), `setsockopt`,
//! `bind`, `listen(fd, backlog)`, and only then handed to mio. The system calls themselves
//! are in [`crate::sys::socket`], the only place the crate calls libc for sockets.
//!
//! Defaults are conservative: SO_REUSEADDR on (a restarted server can bind while old
//! connections sit in TIME_WAIT), SO_REUSEPORT off (two servers on one port by accident would
//! silently split the traffic), and IPv6 sockets dual-stack so that `[::]:PORT` also serves
//! IPv4 clients.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::sys::socket;

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
        let fd = socket::stream(&addr).map_err(fail("socket"))?;
        socket::set_address_options(&fd, &addr, options.reuseport, options.v6only)
            .map_err(|(step, error)| fail(step)(error))?;
        // Set on the listening socket, these are inherited by every accepted socket on Linux,
        // which saves two or three system calls per connection; elsewhere they are set again
        // after accept (see `Listener::prepare`).
        socket::set_stream_options(fd.as_raw_fd(), options.nodelay, options.keepalive)
            .map_err(fail("setsockopt(TCP options)"))?;
        socket::bind(&fd, &addr).map_err(fail("bind"))?;
        warn_if_backlog_capped(options.backlog);
        socket::listen(&fd, options.backlog).map_err(fail("listen"))?;
        let socket = mio::net::TcpListener::from_std(StdListener::from(fd));
        let local_addr = socket.local_addr().map_err(fail("getsockname"))?;
        Ok(Listener {
            socket,
            local_addr,
            options: options.clone(),
        })
    }

    /// Takes a socket that is already listening (passed by systemd's socket activation,
    /// or by a parent process): made non-blocking, with `options`' per-connection settings
    /// (`nodelay`, `keepalive`) set on it; the backlog, SO_REUSEPORT and IPV6_V6ONLY are
    /// whatever its creator chose.
    ///
    /// ```
    /// use wharf::{ListenOptions, Listener};
    ///
    /// let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = std_listener.local_addr()?;
    /// let listener = Listener::from_std(std_listener, &ListenOptions::default())?;
    /// assert_eq!(listener.local_addr(), addr);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_std(listener: StdListener, options: &ListenOptions) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        socket::set_stream_options(listener.as_raw_fd(), options.nodelay, options.keepalive)?;
        let socket = mio::net::TcpListener::from_std(listener);
        let local_addr = socket.local_addr()?;
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
        let options = &self.options;
        socket::set_stream_options(stream.as_raw_fd(), options.nodelay, options.keepalive)
    }

    /// The address actually bound: with port 0 in the request, this holds the port chosen.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn socket_mut(&mut self) -> &mut mio::net::TcpListener {
        &mut self.socket
    }
}

/// Which of a reactor's listeners a connection came in on: [`crate::Reactor::add_listener`]
/// returns it, [`crate::Context::listener`] tells it, so one handler can serve different
/// things on different ports (a service and its metrics, a proxy's routes).
///
/// ```
/// # use wharf::{Config, ListenOptions, Listener, Reactor, service::Echo};
/// let mut reactor = Reactor::new(Config::default(), Echo)?;
/// let bind = || Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default());
/// let first = reactor.add_listener(bind()?)?;
/// let second = reactor.add_listener(bind()?)?;
/// assert_ne!(first, second);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u8);

impl ListenerId {
    /// Most listeners one reactor takes: the id is kept beside each connection's address,
    /// in a byte its padding left free.
    pub const MAX: usize = 256;

    pub(crate) const FIRST: ListenerId = ListenerId(0);

    pub(crate) fn new(index: usize) -> Option<ListenerId> {
        u8::try_from(index).ok().map(ListenerId)
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
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
        let fd = socket::stream(&addr).map_err(fail("socket"))?;
        socket::set_address_options(&fd, &addr, options.reuseport, options.v6only)
            .map_err(|(step, error)| fail(step)(error))?;
        socket::bind(&fd, &addr).map_err(fail("bind"))?;
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
        let get =
            |level, name| socket::get_int(stream.as_raw_fd(), level, name).expect("getsockopt");
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
