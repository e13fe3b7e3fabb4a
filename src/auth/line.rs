//! The authentication handshake, sans-IO: before anything else, a client sends one line,
//! `AUTH <token>`.
//!
//! ```text
//! client: AUTH s3cret-a          server: OK alice        (then the service, as alice)
//! client: hello                  server: ERR auth required   (and keeps waiting)
//! client: AUTH wrong             server: ERR auth failed     (and closes)
//! ```
//! Lines end with `\n` (a `\r` before it is dropped); the command is case-insensitive and
//! the token is what follows it, without surrounding spaces. A line longer than
//! [`MAX_AUTH_LINE`] is answered `ERR auth required` and the connection is closed, so an
//! unauthenticated client can make the server hold no more than that.
//!
//! This module parses; it does not decide whether a token is good
//! ([`crate::Authenticator`]) or keep any state: the reactor feeds it the bytes received
//! so far.

/// Longest line accepted before authentication, in bytes before the `\n`.
pub const MAX_AUTH_LINE: usize = 512;

/// The answer to anything but `AUTH <token>` before authentication.
pub const AUTH_REQUIRED: &[u8] = b"ERR auth required\n";

/// The answer to a wrong token; the connection is closed after it.
pub const AUTH_FAILED: &[u8] = b"ERR auth failed\n";

/// What the bytes received so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStep<'a> {
    /// No complete line yet: wait for more.
    Incomplete,
    /// A line that is not an `AUTH` command, `consumed` bytes long with its `\n`: answer
    /// [`AUTH_REQUIRED`], drop it, and keep waiting.
    NotAuth {
        /// Length of the line, `\n` included.
        consumed: usize,
    },
    /// An `AUTH` command, `consumed` bytes long with its `\n`: check `token`.
    Token {
        /// The token (possibly empty, which no authenticator should accept).
        token: &'a [u8],
        /// Length of the line, `\n` included.
        consumed: usize,
    },
    /// Over [`MAX_AUTH_LINE`] bytes without a `\n`: answer [`AUTH_REQUIRED`] and close.
    TooLong,
}

/// Reads the first line of `input`, the bytes received and not yet consumed.
///
/// ```
/// use wharf::auth::line::{first_line, AuthStep};
///
/// assert_eq!(first_line(b"AUTH s3cret\r\nhello"), AuthStep::Token { token: b"s3cret", consumed: 13 });
/// assert_eq!(first_line(b"hello\n"), AuthStep::NotAuth { consumed: 6 });
/// assert_eq!(first_line(b"AUTH s3c"), AuthStep::Incomplete);
/// ```
pub fn first_line(input: &[u8]) -> AuthStep<'_> {
    let window = &input[..input.len().min(MAX_AUTH_LINE + 1)];
    let Some(end) = memchr::memchr(b'\n', window) else {
        return if input.len() > MAX_AUTH_LINE {
            AuthStep::TooLong
        } else {
            AuthStep::Incomplete
        };
    };
    let consumed = end + 1;
    let line = &input[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let is_auth = line.len() >= 4
        && line[..4].eq_ignore_ascii_case(b"AUTH")
        && line.get(4).is_none_or(|b| *b == b' ');
    if !is_auth {
        return AuthStep::NotAuth { consumed };
    }
    AuthStep::Token {
        token: line[4..].trim_ascii(),
        consumed,
    }
}

/// The answer to a good token: `OK <name>\n`.
pub fn ok_line(name: &str) -> Vec<u8> {
    format!("OK {name}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_lines_give_their_token() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"AUTH abc\n", b"abc"),
            (b"auth abc\r\n", b"abc"),
            (b"AUTH   abc  \n", b"abc"),
            (b"AUTH\n", b""),
            (b"AUTH \n", b""),
        ];
        for (input, token) in cases {
            assert_eq!(
                first_line(input),
                AuthStep::Token {
                    token,
                    consumed: input.len()
                },
                "{input:?}"
            );
        }
    }

    #[test]
    fn other_lines_are_not_auth() {
        for input in [
            &b"hello\n"[..],
            b"\n",
            b"AUTHX abc\n",
            b"AUT\n",
            b" AUTH abc\n",
        ] {
            assert_eq!(
                first_line(input),
                AuthStep::NotAuth {
                    consumed: input.len()
                },
                "{input:?}"
            );
        }
    }

    #[test]
    fn only_the_first_line_is_read() {
        assert_eq!(
            first_line(b"hi\nAUTH abc\n"),
            AuthStep::NotAuth { consumed: 3 }
        );
    }

    #[test]
    fn a_partial_line_waits_and_an_overlong_one_is_refused() {
        assert_eq!(first_line(b""), AuthStep::Incomplete);
        assert_eq!(first_line(&[b'a'; MAX_AUTH_LINE]), AuthStep::Incomplete);
        assert_eq!(first_line(&[b'a'; MAX_AUTH_LINE + 1]), AuthStep::TooLong);
        let mut longest = vec![b'a'; MAX_AUTH_LINE];
        longest.push(b'\n');
        assert_eq!(
            first_line(&longest),
            AuthStep::NotAuth {
                consumed: MAX_AUTH_LINE + 1
            }
        );
    }
}
