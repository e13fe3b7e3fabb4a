//! [`Transports`] with the `tls` feature: a rustls session per TLS connection, driven
//! sans-IO ([`crate::tls::session`]); this file keeps them and lends them the shared
//! buffers.

use std::io::Write;
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::{Handshake, Received};
use crate::tls::session::TlsSession;
use crate::tls::TlsConfig;

/// The TLS sessions of the connections that have one, and the TLS settings of the listeners.
#[derive(Debug, Default)]
pub(crate) struct Transports {
    /// Each listener's settings, by index (`None`: plain).
    listeners: Vec<Option<TlsConfig>>,
    /// Each connection's session, by slab key (`None`: plain).
    sessions: Vec<Option<Box<TlsSession>>>,
    /// Plaintext decrypted from one read.
    plain: Vec<u8>,
    /// Ciphertext for one write.
    sealed: Vec<u8>,
}

/// What a handler may ask about a connection's TLS.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TlsInfo<'a>(Option<&'a TlsSession>);

impl TlsInfo<'_> {
    pub(crate) fn is_tls(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn version(&self) -> Option<&'static str> {
        self.0.and_then(TlsSession::version)
    }

    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.0.and_then(TlsSession::alpn)
    }
}

impl Transports {
    pub(crate) fn new() -> Transports {
        Transports::default()
    }

    /// The next listener, plain unless [`Transports::secure_last_listener`] follows.
    pub(crate) fn add_listener(&mut self) {
        self.listeners.push(None);
    }

    /// The listener added last serves TLS with `tls`.
    pub(crate) fn secure_last_listener(&mut self, tls: TlsConfig) {
        if let Some(slot) = self.listeners.last_mut() {
            *slot = Some(tls);
        }
    }

    /// The listeners are closed (a drain, the end).
    pub(crate) fn close_listeners(&mut self) {
        self.listeners.clear();
    }

    pub(crate) fn is_tls_listener(&self, index: usize) -> bool {
        self.listeners.get(index).is_some_and(Option::is_some)
    }

    /// Gives connection `key`, accepted on listener `listener`, its TLS session if that is a
    /// TLS listener; the handshake starts when the ClientHello arrives.
    pub(crate) fn start(&mut self, key: usize, listener: usize) -> Result<(), String> {
        let Some(Some(tls)) = self.listeners.get(listener) else {
            return Ok(());
        };
        let session = TlsSession::new(tls.server_config()).map_err(|e| e.to_string())?;
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, || None);
        }
        self.sessions[key] = Some(Box::new(session));
        Ok(())
    }

    pub(crate) fn is_tls(&self, key: usize) -> bool {
        self.sessions.get(key).is_some_and(Option::is_some)
    }

    pub(crate) fn info(&self, key: usize) -> TlsInfo<'_> {
        TlsInfo(self.sessions.get(key).and_then(Option::as_deref))
    }

    /// Decrypts `ciphertext` (in place) for TLS connection `key`: the plaintext waits in
    /// [`Transports::take_plain`], what TLS answers in [`Transports::sealed`].
    pub(crate) fn receive(&mut self, key: usize, ciphertext: &mut [u8]) -> Received {
        self.plain.clear();
        self.sealed.clear();
        let Some(session) = self.sessions.get_mut(key).and_then(Option::as_deref_mut) else {
            return Received::default();
        };
        match session.receive(ciphertext, &mut self.plain, &mut self.sealed) {
            Ok(received) => Received {
                handshake_done: received.handshake_done,
                peer_closed: received.peer_closed,
                error: None,
            },
            Err(error) => {
                // The alert is in `sealed`; nothing more may follow it.
                session.refuse_more_output();
                Received {
                    error: Some(error.to_string()),
                    ..Received::default()
                }
            }
        }
    }

    /// The plaintext of the last [`Transports::receive`], lent out (give it back with
    /// [`Transports::restore_plain`] so that its allocation is reused).
    pub(crate) fn take_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plain)
    }

    pub(crate) fn restore_plain(&mut self, plain: Vec<u8>) {
        self.plain = plain;
    }

    /// What the last [`Transports::receive`] or [`Transports::seal`] made to send.
    pub(crate) fn sealed(&self) -> &[u8] {
        &self.sealed
    }

    /// Encrypts `data` for connection `key`; `None` for a plain connection (send `data`).
    pub(crate) fn seal(&mut self, key: usize, data: &[u8]) -> Option<&[u8]> {
        let session = self.sessions.get_mut(key).and_then(Option::as_deref_mut)?;
        self.sealed.clear();
        session.seal(data, &mut self.sealed);
        Some(&self.sealed)
    }

    /// close_notify for connection `key`, the first time it is asked for; `None` for a plain
    /// connection, or once it was made.
    pub(crate) fn close_notify(&mut self, key: usize) -> Option<&[u8]> {
        let session = self.sessions.get_mut(key).and_then(Option::as_deref_mut)?;
        self.sealed.clear();
        session
            .say_goodbye(&mut self.sealed)
            .then_some(&self.sealed[..])
    }

    /// What the completed handshake of connection `key` says about the peer.
    pub(crate) fn handshake(&self, key: usize) -> Handshake {
        let Some(session) = self.sessions.get(key).and_then(Option::as_deref) else {
            return Handshake::default();
        };
        Handshake {
            version: session.version(),
            identity: session.client_identity(),
        }
    }

    /// Connection `key` closes now: its session is dropped, after a last close_notify if
    /// `clean` (nothing owed is being dropped: after lost output it would tell the client the
    /// stream ended cleanly, a truncation attack's disguise), written if the socket takes it.
    pub(crate) fn close(&mut self, key: usize, stream: &TcpStream, clean: bool) {
        let Some(mut session) = self.sessions.get_mut(key).and_then(Option::take) else {
            return;
        };
        self.sealed.clear();
        if clean && session.say_goodbye(&mut self.sealed) {
            let _ = (&*stream).write(&self.sealed);
        }
    }

    /// Reads the TLS listeners' certificate files again; a broken pair is logged and the old
    /// one kept. `addr` names listener `index` in the log.
    pub(crate) fn reload(&mut self, addr: impl Fn(usize) -> Option<SocketAddr>) {
        if self.listeners.iter().all(Option::is_none) {
            return log::info!("reload requested: no TLS listener, nothing to reload");
        }
        for (index, tls) in self.listeners.iter_mut().enumerate() {
            let Some(tls) = tls else { continue };
            let addr = addr(index).map_or_else(String::new, |a| a.to_string());
            match tls.reload() {
                Ok(true) => log::info!("TLS listener {addr}: certificate reloaded"),
                Ok(false) => {}
                Err(error) => {
                    log::error!(
                        "TLS listener {addr}: reload failed, keeping the old certificate: {error}"
                    )
                }
            }
        }
    }
}
