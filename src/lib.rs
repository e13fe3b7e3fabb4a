//! wharf: a hand-rolled, single-threaded event-loop TCP server.
//!
//! One thread runs one [`Reactor`]: a `mio::Poll` (epoll on Linux, kqueue on the BSDs and
//! macOS) over non-blocking [`Listener`]s and a slab of connections, each an explicit state
//! machine (its stage, its input [`Buffer`] and its queue of output), with backpressure
//! and half-close handling.
//! The protocol is a [`Handler`] that never touches a socket; the built-in ones are in
//! [`service`], over the sans-IO protocol cores in [`proto`].
//!
//! # Embedding
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wharf::{Config, Context, Handler, ListenOptions, Listener, Reactor};
//!
//! /// Counts the bytes each connection sends and reports the total when it half-closes.
//! struct Count;
//!
//! impl Handler for Count {
//!     type Session = u64;
//!     fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) -> u64 { 0 }
//!     fn on_data(&mut self, _: &mut Context<'_>, total: &mut u64, input: &[u8]) -> usize {
//!         *total += input.len() as u64;
//!         input.len()
//!     }
//!     fn on_peer_closed(&mut self, ctx: &mut Context<'_>, total: &mut u64, _: &[u8]) {
//!         ctx.write(format!("{total}\n").as_bytes());
//!     }
//! }
//!
//! let mut reactor = Reactor::new(Config::default(), Count)?;
//! reactor.add_listener(Listener::bind("127.0.0.1:7000".parse()?, &ListenOptions::default())?)?;
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Several reactors
//!
//! A reactor is single-threaded and shares nothing, so a process may run several, one per
//! thread, each with its own [`Listener`] on one port: with [`ListenOptions::reuseport`] the
//! kernel spreads new connections over them (on Linux), and a connection stays with the
//! reactor that accepted it. `examples/multi_reactor.rs` shows it. The threads share one
//! table of file descriptors; where `ulimit -n` cannot be raised, run the reactors in
//! processes instead, as `wharf --workers` does, with a [`Reservation`] to hold the port.
//!
//! See `docs/ARCHITECTURE.md` for how the loop, the connection states and the buffers fit.

#![warn(missing_docs)]

mod acceptor;
mod access;
mod addr;
pub mod auth;
mod buffer;
mod close_reason;
mod config;
mod conn;
mod conn_id;
mod event_loop;
mod handle;
mod handler;
mod listener;
mod log_limit;
mod outbox;
mod output;
pub mod proto;
pub mod proxy;
mod reactor;
pub mod service;
mod stats;
mod sys;
mod timer;
#[cfg(feature = "tls")]
mod tls;
mod transport;
mod udp;

pub use addr::{AddrError, HostPort};
pub use auth::{Authenticator, Tokens, TokensError, MAX_TOKEN, MIN_TOKEN};
pub use buffer::Buffer;
pub use close_reason::CloseReason;
pub use config::Config;
pub use conn_id::ConnId;
pub use handle::Handle;
pub use handler::{Context, Handler};
pub use listener::{bind_udp, ListenError, ListenOptions, Listener, ListenerId, Reservation};
pub use reactor::Reactor;
#[cfg(feature = "tls")]
pub use rustls;
pub use stats::Stats;
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError};
