//! A connection's transport: plain TCP, or TLS over it. The reactor calls this module the
//! same way with or without the `tls` feature; the feature gate lives here (and in
//! [`crate::tls`], the rustls side), nowhere in the loop.
//!
//! [`Transports`] keeps the TLS session of each connection that has one, by slab key, and
//! the TLS settings of each listener. A plain connection costs nothing here: no entry, and
//! one check (`is_tls`) on its way in and out. Without the feature, `Transports` holds
//! nothing and `is_tls` is always false, so the compiler drops the TLS paths of the reactor
//! whole.
//!
//! The shared buffers (plaintext decrypted from one read, ciphertext for one write) belong
//! to `Transports`, not to connections, so an idle TLS connection holds only its rustls
//! state.

#[cfg(not(feature = "tls"))]
mod none;
#[cfg(feature = "tls")]
mod tls;

#[cfg(not(feature = "tls"))]
pub(crate) use none::{TlsInfo, Transports};
#[cfg(feature = "tls")]
pub(crate) use tls::{TlsInfo, Transports};

/// What one read of ciphertext came to. Decrypted bytes wait in
/// [`Transports::take_plain`]; what TLS answers (handshake messages, tickets, an alert) in
/// [`Transports::sealed`].
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The handshake completed with this read.
    pub(crate) handshake_done: bool,
    /// The peer sent close_notify: its stream ended cleanly.
    pub(crate) peer_closed: bool,
    /// A TLS error (plaintext to a TLS port, a corrupt record, a failed handshake): the
    /// connection must close after the alert in the sealed buffer.
    pub(crate) error: Option<String>,
}

/// What a completed handshake tells about the peer.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    /// The protocol version (`"TLSv1.3"`).
    pub(crate) version: Option<&'static str>,
    /// The verified client certificate's subject, if one was required and given.
    pub(crate) identity: Option<String>,
}
