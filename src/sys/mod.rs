//! Operating-system glue that is not sockets (those are in `listener.rs`): everything here
//! talks to the OS through `unsafe` calls, each with its reason.

pub(crate) mod signal;
