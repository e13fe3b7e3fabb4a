//! The door: the `AUTH` exchange of a connection before its handler hears of it, as a
//! sans-IO state machine. The reactor feeds it the input received so far, writes the
//! answers it makes, and performs its verdict (admit, refuse, wait); this file never sees
//! a socket or a clock.
//!
//! ```text
//! client: hello                  door: ERR auth required     (a miss; the 8th closes)
//! client: AUTH wrong             door: ERR auth failed       (refused: a failure toward lockout)
//! client: AUTH s3cret-a          door: OK alice              (admitted: the handler opens)
//! ```

use std::net::SocketAddr;

use super::line::{first_line, ok_line, AuthStep, AUTH_FAILED, AUTH_REQUIRED};
use super::tokens::Authenticator;
use crate::timer::Tick;

/// Lines other than `AUTH` answered before the connection is closed: each costs the server
/// a reply, and a stream of newlines would make 18 bytes out of each byte in.
pub(crate) const MAX_MISSES: u8 = 8;

/// What the door decided about the input so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No whole line yet: wait for more input.
    Wait,
    /// A line other than `AUTH` was answered; drop `consumed` bytes and look again.
    Missed { consumed: usize },
    /// Refused: send the answer and close. `failed`: a wrong token (or any token while the
    /// address is locked out), to count toward its lockout.
    Refuse { consumed: usize, failed: bool },
    /// A good token: admitted as `name`; drop `consumed` bytes (what follows is the
    /// handler's input).
    Admit { consumed: usize, name: String },
}

/// The `AUTH` exchange, with the [`Authenticator`] that checks tokens and how long a
/// connection has to get through it.
pub(crate) struct Door {
    authenticator: Box<dyn Authenticator>,
    /// `Config::auth_timeout`, in ticks.
    pub(crate) timeout: Tick,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Door {
    pub(crate) fn new(authenticator: Box<dyn Authenticator>, timeout: Tick) -> Door {
        Door {
            authenticator,
            timeout,
        }
    }

    /// Looks at the first line of `input` from `peer`, which has had `misses` other lines
    /// answered already; `locked`: its address is locked out now (a lockout that began after
    /// it connected still holds). Appends what to answer to `reply`.
    pub(crate) fn examine(
        &mut self,
        input: &[u8],
        misses: u8,
        peer: SocketAddr,
        locked: bool,
        reply: &mut Vec<u8>,
    ) -> Verdict {
        match first_line(input) {
            AuthStep::Incomplete => Verdict::Wait,
            AuthStep::NotAuth { consumed } => {
                reply.extend_from_slice(AUTH_REQUIRED);
                if misses.saturating_add(1) >= MAX_MISSES {
                    Verdict::Refuse {
                        consumed,
                        failed: false,
                    }
                } else {
                    Verdict::Missed { consumed }
                }
            }
            AuthStep::TooLong => {
                reply.extend_from_slice(AUTH_REQUIRED);
                Verdict::Refuse {
                    consumed: 0,
                    failed: false,
                }
            }
            AuthStep::Token { token, consumed } => {
                let name = match locked {
                    false => self.authenticator.authenticate(peer, token),
                    true => None,
                };
                match name {
                    Some(name) => {
                        reply.extend_from_slice(&ok_line(&name));
                        Verdict::Admit { consumed, name }
                    }
                    None => {
                        reply.extend_from_slice(AUTH_FAILED);
                        Verdict::Refuse {
                            consumed,
                            failed: true,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tokens;

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5555);

    fn door() -> Door {
        let tokens = Tokens::parse("alice:s3cret-0123456789\n").expect("tokens");
        Door::new(Box::new(tokens), 100)
    }

    #[test]
    fn a_good_token_admits_with_the_name_and_leaves_what_follows() {
        let mut reply = Vec::new();
        let input = b"AUTH s3cret-0123456789\r\nhello\n";
        let verdict = door().examine(input, 0, PEER, false, &mut reply);
        assert_eq!(
            verdict,
            Verdict::Admit {
                consumed: 24,
                name: "alice".into()
            }
        );
        assert_eq!(reply, b"OK alice\n");
        assert_eq!(&input[24..], b"hello\n");
    }

    #[test]
    fn a_wrong_token_is_refused_as_a_failure() {
        let mut reply = Vec::new();
        let verdict = door().examine(b"AUTH nope\n", 0, PEER, false, &mut reply);
        assert_eq!(
            verdict,
            Verdict::Refuse {
                consumed: 10,
                failed: true
            }
        );
        assert_eq!(reply, b"ERR auth failed\n");
    }

    #[test]
    fn a_locked_out_address_is_refused_even_with_a_good_token() {
        let mut reply = Vec::new();
        let input = b"AUTH s3cret-0123456789\n";
        let verdict = door().examine(input, 0, PEER, true, &mut reply);
        assert!(matches!(verdict, Verdict::Refuse { failed: true, .. }));
        assert_eq!(reply, b"ERR auth failed\n");
    }

    #[test]
    fn other_lines_are_answered_until_too_many() {
        let mut door = door();
        let mut reply = Vec::new();
        for misses in 0..MAX_MISSES - 1 {
            let verdict = door.examine(b"hello\n", misses, PEER, false, &mut reply);
            assert_eq!(verdict, Verdict::Missed { consumed: 6 });
        }
        let verdict = door.examine(b"hello\n", MAX_MISSES - 1, PEER, false, &mut reply);
        assert!(matches!(verdict, Verdict::Refuse { failed: false, .. }));
        assert_eq!(
            reply.len(),
            MAX_MISSES as usize * b"ERR auth required\n".len()
        );
    }

    #[test]
    fn half_a_line_waits_and_an_overlong_one_is_refused() {
        let mut reply = Vec::new();
        assert_eq!(
            door().examine(b"AUTH s3c", 0, PEER, false, &mut reply),
            Verdict::Wait
        );
        assert!(reply.is_empty());
        let long = vec![b'x'; crate::auth::line::MAX_AUTH_LINE + 1];
        let verdict = door().examine(&long, 0, PEER, false, &mut reply);
        assert!(matches!(verdict, Verdict::Refuse { failed: false, .. }));
    }
}
