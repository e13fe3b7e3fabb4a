//! Protocols as sans-IO state machines: fed bytes, asked for bytes, never a socket.
//!
//! Nothing in this module imports mio or performs I/O; the reactor (through the services in
//! [`crate::service`]) is the only code that touches sockets. That keeps every protocol
//! testable with plain byte slices, fast and deterministic.

pub mod chat;
pub mod echo;
pub mod line;
