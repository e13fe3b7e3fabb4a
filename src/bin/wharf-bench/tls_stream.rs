//! One client connection's TLS session, driven sans-IO over its non-blocking socket: rustls
//! never sees the socket on its own. Bytes from the socket go in with `read_tls` and
//! `process_new_packets`, plaintext comes out of `reader()`; plaintext goes in through
//! `writer()`, and records go out with `write_tls`. To `echo.rs` this is a `Read + Write` of
//! plaintext, with two additions: an explicit [`TlsStream::handshake`] step, and
//! [`TlsStream::drained`] to keep its short-read shortcut sound.
//!
//! Pitfalls this file exists to get right:
//!
//! - **Edge-triggered readiness.** A plaintext read shorter than the buffer does not mean the
//!   socket is drained, as it does for plain TCP: rustls reads at most about 4 KiB per
//!   `read_tls`, and one read can hold several records or part of one. What tells is whether
//!   the socket read took less than rustls offered, so that read is measured ([`Measured`]).
//! - **Output left behind.** `write_tls` may leave records in rustls when the socket is full;
//!   they must go out on the next writable event (`flush`), or an exchange waits forever. A
//!   handshake's last flight is deliberately left for the first write to take along, so the
//!   client's Finished and its first request leave in one `writev`.
//! - **Reads that must write.** Processing the server's handshake messages produces the
//!   client's, which are flushed at once; a failed `process_new_packets` queues an alert that
//!   tells the server why, which is sent if the socket takes it.
//!
//! Hot path: a round trip is one `write_tls` (one `writev`) and one `read_tls`, as a plain
//! round trip is one `write` and one `read`; rustls's buffers are the only copies.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;
use rustls::{ClientConnection, ProtocolVersion};

/// A TLS session over a connected socket.
#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    session: ClientConnection,
    /// Whether, in the current read, a socket read took less than rustls offered: the
    /// socket was empty then, and edge-triggered polling reports the next arrival.
    drained: bool,
}

impl TlsStream {
    pub fn new(tcp: TcpStream, session: ClientConnection) -> TlsStream {
        TlsStream {
            tcp,
            session,
            drained: false,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Whether the last [`Read::read`] left the socket drained (see the module docs).
    pub fn drained(&self) -> bool {
        self.drained
    }

    pub fn version(&self) -> Option<&'static str> {
        match self.session.protocol_version()? {
            ProtocolVersion::TLSv1_3 => Some("1.3"),
            ProtocolVersion::TLSv1_2 => Some("1.2"),
            _ => Some("other"),
        }
    }

    /// Moves the handshake on with what has arrived: `Ok(true)` once it is complete,
    /// `Ok(false)` while it waits for the server. Call it on every event after the ClientHello
    /// went out (with `flush`, when the TCP connect completed) until it says done. The last
    /// flight (the client's Finished) is left queued: the first write sends it along with the
    /// request.
    pub fn handshake(&mut self) -> io::Result<bool> {
        loop {
            if !self.session.is_handshaking() {
                return Ok(true);
            }
            if self.session.wants_write() {
                self.flush_tls()?;
            }
            match self.read_socket() {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => self.process()?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
            if !self.session.is_handshaking() {
                return Ok(true); // the last flight stays queued for the first write
            }
            if self.drained {
                // Nothing more to read until the server answers ours.
                self.flush_tls()?;
                return Ok(false);
            }
        }
    }

    /// Ends the session politely: close_notify, if the socket takes it now. For a
    /// connection about to be dropped; errors do not matter any more.
    pub fn close_notify(&mut self) {
        self.session.send_close_notify();
        let _ = self.flush_tls();
    }

    /// One socket read into rustls, noting whether it drained the socket.
    fn read_socket(&mut self) -> io::Result<usize> {
        let mut socket = Measured {
            tcp: &mut self.tcp,
            offered: 0,
            got: 0,
        };
        let n = self.session.read_tls(&mut socket)?;
        self.drained = socket.got < socket.offered;
        Ok(n)
    }

    /// Decrypts and handles what `read_socket` brought. What that produced (handshake
    /// messages, a key update) stays queued for the caller to flush.
    fn process(&mut self) -> io::Result<()> {
        if let Err(error) = self.session.process_new_packets() {
            // rustls queued an alert telling the server why: worth a try.
            let _ = self.flush_tls();
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        Ok(())
    }

    /// Writes queued records until none are left (`Ok(true)`) or the socket is full
    /// (`Ok(false)`).
    fn flush_tls(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Hands plaintext to rustls with `put`, then sends the records. Plaintext goes in before
    /// the flush so that it leaves with whatever was queued (the handshake's last flight) in
    /// one `writev`. `WouldBlock` only when rustls's buffer is full and the socket too.
    fn write_with(
        &mut self,
        mut put: impl FnMut(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut n = put(&mut self.session.writer())?;
        let all_sent = self.flush_tls()?;
        if n == 0 && all_sent {
            // The buffer was full of records the socket had refused; they are out now.
            n = put(&mut self.session.writer())?;
            self.flush_tls()?;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Read for TlsStream {
    /// Reads plaintext: what rustls holds, else what the socket brings once decrypted.
    /// `Ok(0)` is the end of the session, with or without the server's close_notify.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.drained = false;
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // A TCP close without close_notify: to a load generator, the server closed.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(error) => return Err(error),
            }
            if self.drained {
                // Records without plaintext (tickets, a partial record), and nothing more in
                // the socket: the next arrival raises a new edge.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.read_socket()? == 0 {
                return Ok(0);
            }
            self.process()?;
            if self.session.wants_write() {
                self.flush_tls()?;
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|writer| writer.write(buf))
    }

    /// Both slices go into one record.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(|writer| writer.write_vectored(bufs))
    }

    /// Sends records the socket refused before, as far as it takes them now.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().map(|_| ())
    }
}

/// The socket as rustls reads it, remembering how much rustls offered and how much came.
struct Measured<'a> {
    tcp: &'a mut TcpStream,
    offered: usize,
    got: usize,
}

impl Read for Measured<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.offered = buf.len();
        self.got = self.tcp.read(buf)?;
        Ok(self.got)
    }
}
