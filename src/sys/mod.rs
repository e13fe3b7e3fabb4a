//! Operating-system glue that is not sockets (those are in `listener.rs`): signals, which
//! talk to the OS through `unsafe` calls, each with its reason, and file permissions.

pub(crate) mod files;
pub(crate) mod signal;
