//! Opening client connections: a non-blocking socket with TCP_NODELAY, bound to the next
//! source address in turn when there are several, and a `connect` that does not wait.
//!
//! Several source addresses get past the ephemeral port range: a local port only has to be
//! unique per (source address, server address) pair, so each source address brings a whole
//! range of ports. On Linux every 127.x.y.z is a loopback address without any setup.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sources::Sources;
use crate::sys;

#[derive(Debug)]
pub struct Dialer {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    next_source: usize,
}

impl Dialer {
    /// A dialer for `target`. With no `sources` the kernel picks the source address.
    pub fn new(target: SocketAddr, sources: Option<&Sources>) -> Dialer {
        Dialer {
            target,
            sources: sources.map(|sources| sources.0.clone()).unwrap_or_default(),
            next_source: 0,
        }
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Starts a connection. It completes (or fails) later: the poller reports the socket
    /// writable, and `TcpStream::take_error` tells which.
    pub fn dial(&mut self) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(self.target),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        // One small message in flight at a time: Nagle's algorithm could only add delay.
        socket.set_nodelay(true)?;
        if let Some(&source) = self.sources.get(self.next_source) {
            self.next_source = (self.next_source + 1) % self.sources.len();
            if source.is_ipv4() {
                sys::bind_address_no_port(&socket)?;
            }
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        match socket.connect(&self.target.into()) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(error) => return Err(error),
        }
        Ok(TcpStream::from_std(socket.into()))
    }
}

/// Whether a non-blocking connect has completed: `Ok(false)` while it is still under way.
pub fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(error) = stream.take_error()? {
        return Err(error);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(error) => Err(error),
    }
}
