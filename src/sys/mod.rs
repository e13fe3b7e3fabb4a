//! Operating-system glue: the socket system calls behind [`crate::Listener`], signals, and
//! file permissions. Every `unsafe` call of the library is here, each with its reason.

pub(crate) mod files;
pub(crate) mod signal;
pub(crate) mod socket;
