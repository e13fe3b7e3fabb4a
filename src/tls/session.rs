//! One TLS connection, sans-IO: ciphertext in, plaintext out, and the reverse. The reactor
//! moves the bytes to and from the socket; this file never sees one.
//!
//! It drives rustls's *unbuffered* connection, a state machine that works in the caller's
//! buffers, rather than the buffered `ServerConnection`, which copies every record into and
//! out of queues of its own. Records are decrypted in place where they were read (the
//! reactor's shared read buffer), and sealed straight into the buffer given for output. The
//! price is a contract this file keeps: bytes rustls has not yet discarded (a partial record,
//! or the fragments of a handshake message it joins in place) must be handed back to it,
//! unchanged and first, on the next call. Those are kept in `pending`, which is freed as soon
//! as it empties, so an idle connection holds no receive buffer at all.
//!
//! What is left of rustls's own copying (0.23): it still moves each decrypted record into a
//! `Vec` before handing it out, and seals each outgoing record into one before copying it
//! into ours.

use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::ServerConfig;

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
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not discarded yet (see the module docs); empty and
    /// unallocated whenever reads end on a record boundary, which is the common case.
    pending: Vec<u8>,
    /// close_notify has been queued, so nothing more may be sent.
    said_goodbye: bool,
}

/// At most this much received ciphertext is kept between reads. rustls itself bounds what it
/// must keep (a handshake message of up to 64 KiB, plus a partial record), so only a bug
/// reaches this; it stands in for the buffered connection's own limit.
const MAX_PENDING: usize = 128 * 1024;

/// Room reserved per record when sealing: the 5-byte header, and at most 8 bytes of explicit
/// nonce (TLS 1.2) or 1 of content type (TLS 1.3), and a 16-byte tag. A guess only: rustls
/// says how much it needs if that is not enough.
const RECORD_OVERHEAD: usize = 32;

/// The most plaintext one record carries.
const MAX_FRAGMENT: usize = 16 * 1024;

impl TlsSession {
    pub(crate) fn new(config: &Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(Arc::clone(config))?,
            pending: Vec::new(),
            said_goodbye: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds received ciphertext, which is decrypted in place (its contents are garbage
    /// afterwards); appends the plaintext it holds to `plain`, and whatever must be sent back
    /// (handshake messages, session tickets, or the alert for an error) to `out`.
    pub(crate) fn receive(
        &mut self,
        ciphertext: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Received, rustls::Error> {
        let was_handshaking = self.conn.is_handshaking();
        let mut received = Received::default();
        // Bytes left over from an earlier read come first: then the new ones join them (one
        // copy). Otherwise rustls works in the caller's buffer and copies nothing.
        let mut pending = std::mem::take(&mut self.pending);
        let joined = !pending.is_empty();
        if joined {
            pending.extend_from_slice(ciphertext);
        }
        let input: &mut [u8] = if joined { &mut pending } else { ciphertext };
        let used = self.absorb(input, plain, out, &mut received)?;
        // After close_notify rustls reads nothing more: whatever follows is dropped.
        if !received.peer_closed {
            let mut left = if joined {
                pending.drain(..used);
                pending // dropped here, freeing it, if it emptied
            } else {
                ciphertext[used..].to_vec()
            };
            // A partial record left after a big read keeps its own bytes, not the read's
            // allocation: a connection that goes idle mid-record held up to 128 KiB.
            if left.capacity() > 2 * left.len() + 4096 {
                left.shrink_to_fit();
            }
            if left.len() > MAX_PENDING {
                return Err(rustls::Error::General(format!(
                    "{} bytes of TLS input that make no whole record",
                    left.len()
                )));
            }
            if !left.is_empty() {
                self.pending = left;
            }
        }
        received.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(received)
    }

    /// Runs rustls over `input` until it needs more; returns how many bytes it is done with
    /// (from the front). On an error, the alert for it is appended to `out`.
    fn absorb(
        &mut self,
        input: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        received: &mut Received,
    ) -> Result<usize, rustls::Error> {
        let mut used = 0;
        loop {
            // rustls must see the not-yet-discarded bytes at the front: the slice after
            // `used` is that buffer with the discarded bytes removed.
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut input[used..]);
            let mut read = false;
            let failed = match state {
                Ok(ConnectionState::ReadTraffic(mut traffic)) => loop {
                    match traffic.next_record() {
                        Some(Ok(record)) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Some(Err(error)) => break Some(error),
                        None => {
                            read = true;
                            break None;
                        }
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, out);
                    None
                }
                // What was encoded is in `out`, which the caller queues in order before
                // anything else is sent: as good as sent.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    received.peer_closed = true;
                    None
                }
                // 0-RTT data, only if an embedder's config accepts it: wharf never hands it
                // to the handler (it can be replayed), as with the buffered connection.
                Ok(ConnectionState::ReadEarlyData(mut early)) => {
                    while early.next_record().is_some() {}
                    None
                }
                // BlockedHandshake, WriteTraffic, Closed: nothing more to do with the input.
                Ok(_) => return Ok(used + discard),
                Err(error) => Some(error),
            };
            if let Some(error) = failed {
                self.queue_alert(out);
                return Err(error);
            }
            used += discard;
            // Application data used the input up and rustls has nothing to send: another
            // call could only say so (WriteTraffic), which saves a trip through rustls per
            // read. Only after application data: after other states rustls may hold back an
            // edge-triggered one (PeerClosed behind TransmitTlsData) that must be seen here.
            if read && used == input.len() && !self.conn.wants_write() {
                return Ok(used);
            }
        }
    }

    /// After an error, appends the alert rustls queued for it (if it has one to send).
    fn queue_alert(&mut self, out: &mut Vec<u8>) {
        // Only while records are queued, which rustls hands out before it reads any input:
        // with none, it would go on to read past the bad record, and the empty slice is
        // never read.
        while self.conn.wants_write() {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => encode(&mut data, out),
                _ => break,
            }
        }
    }

    /// Encrypts `plaintext` for sending, into `out`.
    pub(crate) fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        if self.said_goodbye || plaintext.is_empty() {
            return;
        }
        let records = plaintext.len().div_ceil(MAX_FRAGMENT);
        let guess = plaintext.len() + records * RECORD_OVERHEAD;
        // Only before the handshake completes could this fail, and the handler does not
        // hear of the connection before that; then the output is dropped.
        self.write_traffic(out, guess, |traffic, room| traffic.encrypt(plaintext, room));
    }

    /// Sends nothing more, not even close_notify (after a protocol error, whose alert is the
    /// last word).
    pub(crate) fn refuse_more_output(&mut self) {
        self.said_goodbye = true;
    }

    /// Queues close_notify (once) into `out`. True if it was queued now; not during the
    /// handshake, when rustls's unbuffered connection has no way to send one (the connection
    /// then just closes: nothing was said on it yet).
    pub(crate) fn say_goodbye(&mut self, out: &mut Vec<u8>) -> bool {
        if self.said_goodbye {
            return false;
        }
        self.said_goodbye = true;
        self.write_traffic(out, RECORD_OVERHEAD, |traffic, room| {
            traffic.queue_close_notify(room)
        })
    }

    /// Lets `write` encrypt into `out` once rustls allows it, after appending whatever rustls
    /// has queued to send first (a key update, say). False if it does not allow it (the
    /// handshake is not done, the connection failed or is closed).
    fn write_traffic(
        &mut self,
        out: &mut Vec<u8>,
        guess: usize,
        mut write: impl FnMut(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> bool {
        loop {
            // The kept bytes go along, as the contract wants; `receive` left no whole record
            // in them, so rustls reads nothing from them here.
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.pending);
            let done = match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    Some(append(out, guess, |room| {
                        write(&mut traffic, room).map_err(|error| match error {
                            EncryptError::InsufficientSize(size) => Some(size.required_size),
                            // Keys used up: rustls refuses; the output is lost with them.
                            _ => None,
                        })
                    }))
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, out);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                // `receive` sees this edge-triggered state first, always: here it would be
                // lost, and with it the peer's end of stream.
                Ok(ConnectionState::PeerClosed) => {
                    debug_assert!(false, "PeerClosed left for sealing");
                    None
                }
                _ => Some(false),
            };
            if discard > 0 {
                self.pending.drain(..discard);
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
            }
            if let Some(done) = done {
                return done;
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

/// Appends a handshake record (or alert) rustls has ready.
fn encode(data: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    // No room at first: rustls says exactly how much it needs, and the refusal costs nothing.
    append(out, 0, |room| {
        data.encode(room).map_err(|error| match error {
            EncodeError::InsufficientSize(size) => Some(size.required_size),
            _ => None,
        })
    });
}

/// Lets rustls write at the end of `out`: into `guess` bytes of room, or, if it says it needs
/// more (`Err(Some(needed))`), into that much. False if it wrote nothing.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> bool {
    let start = out.len();
    let mut room = guess;
    loop {
        // The room is zeroed first: a few bytes past the records, cheap next to sealing them.
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return true;
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => {
                out.truncate(start);
                return false;
            }
        }
    }
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
