//! Authentication: who a connection is before the handler hears of it.
//!
//! - `tokens`: the [`Authenticator`] trait a reactor asks about each token, and
//!   [`Tokens`], the token file `wharf --auth-tokens FILE` uses (constant-time comparison).
//! - [`line`](mod@line): the `AUTH <token>` line, parsed sans-IO.
//! - `door`: the exchange before the handler, sans-IO: given a connection's input so far,
//!   what to answer and whether to admit it, refuse it or wait. The reactor performs what
//!   it decides, so handlers never see an unauthenticated peer.

mod door;
pub mod line;
mod tokens;

pub(crate) use door::{Door, Verdict};
pub use tokens::{Authenticator, Tokens, TokensError, MAX_TOKEN, MIN_TOKEN};
