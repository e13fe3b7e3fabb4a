//! The byte stream of one client connection: the TCP socket itself, or (feature `tls`) a TLS
//! session over it (`tls_stream.rs`). `echo.rs` reads and writes plaintext through it and
//! cannot tell which it has, except for the handshake step TLS adds after the TCP one.
//!
//! This file is also the one place that knows whether the build has TLS: [`TlsConfig`] is
//! the run's TLS client settings, or a type with no values in a build without the feature,
//! so that every other file takes an `Option<TlsConfig>` and needs no `cfg` of its own.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::cli::TlsArgs;
use crate::error::BenchError;
#[cfg(feature = "tls")]
use crate::tls_stream::TlsStream;

/// The TLS client settings of a run (`tls.rs`).
#[cfg(feature = "tls")]
pub type TlsConfig = crate::tls::TlsClient;

/// Without the `tls` feature there are no TLS settings: no value of this type exists.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub enum TlsConfig {}

/// The TLS settings `args` ask for (none without `--tls`), to reach the server at `addr`.
pub fn tls_config(args: &TlsArgs, addr: SocketAddr) -> Result<Option<TlsConfig>, BenchError> {
    if !args.tls {
        return Ok(None);
    }
    #[cfg(feature = "tls")]
    return crate::tls::TlsClient::from_args(args, addr).map(Some);
    #[cfg(not(feature = "tls"))]
    {
        let _ = addr;
        Err(BenchError::Usage(
            "--tls: this wharf-bench was built without the `tls` feature".into(),
        ))
    }
}

/// A connection's bytes, in the clear or through TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// TLS over TCP. Boxed: a rustls session is a kilobyte or so, and plain connections
    /// should not pay for the room.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The stream of a connection whose TCP connect has started on `tcp`: TLS when `tls`
    /// says so. A new TLS session has its ClientHello queued; `flush` sends it.
    pub fn new(tcp: TcpStream, tls: Option<&TlsConfig>) -> io::Result<Stream> {
        match tls {
            None => Ok(Stream::Plain(tcp)),
            #[cfg(feature = "tls")]
            Some(tls) => {
                let session = tls
                    .session()
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                Ok(Stream::Tls(Box::new(TlsStream::new(tcp, session))))
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.tcp(),
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.tcp_mut(),
        }
    }

    /// Whether a handshake follows the TCP one.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Moves the TLS handshake on: `Ok(true)` once it is complete (at once for plain TCP).
    pub fn handshake(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.handshake(),
        }
    }

    /// Whether the last read that returned fewer bytes than asked for left the socket
    /// drained, so that edge-triggered polling will report the next arrival. Always so for
    /// plain TCP; for TLS see `tls_stream.rs`.
    pub fn drained(&self) -> bool {
        match self {
            Stream::Plain(_) => true,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.drained(),
        }
    }

    /// The negotiated TLS version ("1.3", "1.2"), once the handshake is done.
    pub fn tls_version(&self) -> Option<&'static str> {
        match self {
            Stream::Plain(_) => None,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.version(),
        }
    }

    /// Ends a TLS session with close_notify, as far as the socket takes it now; the
    /// connection is about to be closed. Nothing to do for plain TCP.
    pub fn goodbye(&mut self) {
        match self {
            Stream::Plain(_) => {}
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.close_notify(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    /// Sends what the socket refused before (TLS records); nothing to do for plain TCP.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.flush(),
        }
    }
}
