//! TLS termination with rustls, driven sans-IO by the reactor (feature `tls`).
//!
//! A TLS connection's socket carries ciphertext; the reactor hands what it reads to the
//! connection's [`session::TlsSession`], gives the plaintext to the handler as for any
//! connection, and encrypts what the handler writes before it is queued for the socket.
//! Handlers do not change. Backpressure (`Config::high_water`) counts the encrypted bytes
//! queued.
//! The handshake runs before the handler hears of the connection, within
//! `Config::tls_handshake_timeout`.
//!
//! Three places say TLS, one job each: this module is the rustls side (certificates,
//! [`TlsConfig`], the sans-IO session); `src/transport/` keeps the sessions by connection
//! behind the interface the reactor calls with or without the feature; `src/reactor/tls.rs`
//! applies what a session says to a connection.

mod config;
mod identity;
pub(crate) mod session;

pub use config::{TlsConfig, TlsError};
