//! One TLS connection, sans-IO: ciphertext in, plaintext out, and the reverse. The reactor
//! moves the bytes to and from the socket; this file never sees one.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

/// What one batch of received ciphertext came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// The handshake completed with this batch.
    pub(crate) handshake_done: bool,
    /// The peer sent close_notify: no more data will come.
    pub(crate) peer_closed: bool,
}

/// A TLS connection's state beside its socket.
pub(crate) struct TlsSession {
    conn: ServerConnection,
    /// close_notify has been queued, so nothing more may be sent.
    said_goodbye: bool,
}

impl TlsSession {
    pub(crate) fn new(config: &Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        Ok(TlsSession {
            conn: ServerConnection::new(Arc::clone(config))?,
            said_goodbye: false,
        })
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds received ciphertext; appends the plaintext it holds to `plain`, and whatever
    /// must be sent back (handshake messages, or the alert for an error) to `out`.
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Received, rustls::Error> {
        let was_handshaking = self.conn.is_handshaking();
        let mut received = Received::default();
        // read_tls takes at most one buffer's worth per call: loop until all is in.
        while !ciphertext.is_empty() {
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => break, // close_notify came: the rest is ignored
                Ok(_) => {}
                // Only "plaintext buffer full", which cannot happen: it is drained below.
                Err(_) => break,
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    self.queued(out); // the alert rustls prepared
                    return Err(error);
                }
            };
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plain.len();
                plain.resize(start + available, 0);
                // Exactly what process_new_packets reported: cannot fail.
                let _ = self.conn.reader().read_exact(&mut plain[start..]);
            }
            received.peer_closed |= state.peer_has_closed();
        }
        received.handshake_done = was_handshaking && !self.conn.is_handshaking();
        self.queued(out);
        Ok(received)
    }

    /// Encrypts `plaintext` for sending, into `out`.
    pub(crate) fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        if self.said_goodbye || plaintext.is_empty() {
            return;
        }
        // rustls buffers what it cannot encrypt yet; it is unbounded by default, and our
        // own backpressure bounds what the handler writes.
        let _ = self.conn.writer().write_all(plaintext);
        self.queued(out);
    }

    /// Sends nothing more, not even close_notify (after a protocol error, whose alert is the
    /// last word).
    pub(crate) fn refuse_more_output(&mut self) {
        self.said_goodbye = true;
    }

    /// Queues close_notify (once) into `out`. True if it was queued now.
    pub(crate) fn say_goodbye(&mut self, out: &mut Vec<u8>) -> bool {
        if self.said_goodbye {
            return false;
        }
        self.said_goodbye = true;
        self.conn.send_close_notify();
        self.queued(out);
        true
    }

    /// Moves the TLS records rustls has ready into `out`.
    fn queued(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// The negotiated protocol version, as `TLSv1.3` / `TLSv1.2`.
    pub(crate) fn version(&self) -> Option<&'static str> {
        match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            other => other.as_str(),
        }
    }

    /// The negotiated ALPN protocol.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The verified client certificate's subject: its first DNS name, else its common name.
    pub(crate) fn client_identity(&self) -> Option<String> {
        let cert = self.conn.peer_certificates()?.first()?;
        super::identity::subject_name(cert.as_ref())
    }
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}
