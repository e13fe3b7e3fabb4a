//! The built-in protocols, each in one file with its handler: [`echo`], [`line`](mod@line) (line
//! echo and the line framing others use) and [`chat`]. The protocol is a sans-IO state
//! machine (fed bytes, asked for bytes, never a socket), and the handler wires it to a
//! reactor's [`Context`](crate::Context); [`crate::service`] names the handlers.
//!
//! Nothing in this module imports mio or performs I/O: the reactor is the only code that
//! touches sockets. That keeps every protocol testable with plain byte slices, fast and
//! deterministic.

pub mod chat;
pub mod echo;
pub mod line;
