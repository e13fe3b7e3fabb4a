//! Token authentication: the [`Authenticator`] a reactor asks about each `AUTH` line, and
//! [`Tokens`], the one `wharf --auth-tokens FILE` uses.
//!
//! With an authenticator installed ([`crate::Reactor::set_authenticator`]), a connection must
//! send `AUTH <token>` as its first line before the handler hears of it: the reactor answers
//! `OK <NAME>` and only then calls [`crate::Handler::on_open`], with the name available as
//! [`crate::Context::identity`]. The wire protocol is [`crate::auth::line`]; what happens
//! to failures (lockout) is [`crate::Config`]'s business.
//!
//! Tokens are compared in constant time: the time a comparison takes depends neither on how
//! many leading bytes of a guess are right nor on which token it is closest to, so timing
//! cannot be used to guess a token byte by byte.

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use subtle::{Choice, ConstantTimeEq};

/// Decides whether a token is good, and whose it is.
///
/// The reactor calls it on its own thread for every `AUTH` line (it is `Send` so that a
/// reactor can be moved to the thread that runs it), so it must be quick: look
/// the token up, do not block on a network service.
///
/// ```
/// use std::net::SocketAddr;
/// use wharf::Authenticator;
///
/// /// Lets in one user, `admin`, and only from loopback.
/// struct LocalAdmin;
///
/// impl Authenticator for LocalAdmin {
///     fn authenticate(&mut self, peer: SocketAddr, token: &[u8]) -> Option<String> {
///         (peer.ip().is_loopback() && token == b"let-me-in").then(|| "admin".to_string())
///     }
/// }
/// ```
pub trait Authenticator: Send {
    /// The name of whoever `token` belongs to, or `None` for a wrong token. `peer` is the
    /// connection's address, for checks that depend on it.
    fn authenticate(&mut self, peer: SocketAddr, token: &[u8]) -> Option<String>;
}

/// Longest token accepted, in bytes. Every comparison looks at this many bytes.
pub const MAX_TOKEN: usize = 256;

/// Shortest token accepted: 16 bytes. Shorter ones can be guessed within a lockout's
/// budget of tries, or are placeholders someone forgot to replace.
pub const MIN_TOKEN: usize = 16;

/// A set of named tokens, from a file of `NAME:TOKEN` lines.
///
/// ```
/// use wharf::{Authenticator, Tokens};
///
/// let mut tokens = Tokens::parse("# who may chat\nalice:s3cret-0123456789-a\nbob:s3cret-0123456789-b\n")?;
/// let peer = "127.0.0.1:5000".parse().unwrap();
/// assert_eq!(tokens.authenticate(peer, b"s3cret-0123456789-b").as_deref(), Some("bob"));
/// assert_eq!(tokens.authenticate(peer, b"s3cret-0123456789-c"), None);
/// # Ok::<(), wharf::TokensError>(())
/// ```
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    name: String,
    /// The token, zero-padded to `MAX_TOKEN` bytes, so every comparison has one length.
    padded: Box<[u8; MAX_TOKEN]>,
    len: usize,
}

/// Why a token file could not be used: the file, the line, what is wrong.
#[derive(Debug)]
pub struct TokensError {
    path: Option<PathBuf>,
    line: usize,
    message: String,
}

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(path), 0) => write!(f, "{}: {}", path.display(), self.message),
            (Some(path), line) => write!(f, "{}:{line}: {}", path.display(), self.message),
            (None, 0) => f.write_str(&self.message),
            (None, line) => write!(f, "line {line}: {}", self.message),
        }
    }
}

impl std::error::Error for TokensError {}

impl Tokens {
    /// Reads a token file: one `NAME:TOKEN` per line; empty lines and lines starting with
    /// `#` are skipped. A NAME is 1 to 32 of `A-Z a-z 0-9 _ -` (it becomes the chat name); a
    /// TOKEN is 1 to [`MAX_TOKEN`] bytes with no space or control character, and no two
    /// entries share one. Logs a warning when other users may read the file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let in_file = |mut error: TokensError| {
            error.path = Some(path.to_path_buf());
            error
        };
        let text = fs::read_to_string(path).map_err(|error| {
            in_file(TokensError {
                path: None,
                line: 0,
                message: format!("cannot read the token file: {}", describe(&error)),
            })
        })?;
        if crate::sys::files::readable_by_others(path) {
            log::warn!(
                "token file {} is readable by other users: `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        Tokens::parse(&text).map_err(in_file)
    }

    /// Parses the text of a token file; see [`Tokens::load`].
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let error = |message: String| TokensError {
                path: None,
                line: index + 1,
                message,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = line
                .split_once(':')
                .ok_or_else(|| error("expected NAME:TOKEN".to_string()))?;
            if crate::proto::chat::valid_name(name.as_bytes()).is_none() {
                return Err(error(format!(
                    "invalid name '{name}': use 1 to 32 of A-Z a-z 0-9 _ -"
                )));
            }
            let token = token.as_bytes();
            if token.len() < MIN_TOKEN || token.len() > MAX_TOKEN {
                return Err(error(format!(
                    "the token is {} bytes: it must be {MIN_TOKEN} to {MAX_TOKEN} (make one \
                     with `openssl rand -hex 16`)",
                    token.len()
                )));
            }
            if token
                .iter()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(error(
                    "the token contains a space or a control character".into(),
                ));
            }
            let entry = Entry::new(name, token);
            if entries.iter().any(|other| bool::from(other.matches(token))) {
                return Err(error(format!("{name} has the same token as another entry")));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(TokensError {
                path: None,
                line: 0,
                message: "no NAME:TOKEN entries".to_string(),
            });
        }
        Ok(Tokens { entries })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: tokens must not end up in logs.
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Authenticator for Tokens {
    fn authenticate(&mut self, _peer: SocketAddr, token: &[u8]) -> Option<String> {
        // Every entry is compared, even after a match, so the time does not say which
        // entry matched or how far down the list it is.
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.matches(token)) {
                found = found.or(Some(entry));
            }
        }
        found.map(|entry| entry.name.clone())
    }
}

impl Entry {
    fn new(name: &str, token: &[u8]) -> Entry {
        let mut padded = Box::new([0u8; MAX_TOKEN]);
        padded[..token.len()].copy_from_slice(token);
        Entry {
            name: name.to_string(),
            padded,
            len: token.len(),
        }
    }

    fn matches(&self, guess: &[u8]) -> Choice {
        tokens_equal(&self.padded, self.len, guess, |a, b| a.ct_eq(b))
    }
}

/// Compares a padded token of `len` bytes with `guess`, in constant time: all `MAX_TOKEN`
/// bytes are compared, whatever the guess, through `byte_eq` (a parameter so that a test can
/// count the comparisons). A guess longer than `MAX_TOKEN` never matches, after the same work.
fn tokens_equal(
    padded: &[u8; MAX_TOKEN],
    len: usize,
    guess: &[u8],
    mut byte_eq: impl FnMut(&u8, &u8) -> Choice,
) -> Choice {
    let mut same = (len as u64).ct_eq(&(guess.len() as u64));
    for (index, expected) in padded.iter().enumerate() {
        let got = guess.get(index).copied().unwrap_or(0);
        same &= byte_eq(expected, &got);
    }
    same
}

/// An I/O error as a user reads it.
fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn the_right_token_gives_its_name_and_others_nothing() {
        let a = "a".repeat(16);
        let text = format!(
            "alice:{a}\nbob:{}\n\n# comment\ncarol:{}\r\n",
            "b".repeat(16),
            "c".repeat(16)
        );
        let mut tokens = Tokens::parse(&text).expect("a valid file");
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens
                .authenticate(peer(), "c".repeat(16).as_bytes())
                .as_deref(),
            Some("carol")
        );
        assert_eq!(
            tokens.authenticate(peer(), a.as_bytes()).as_deref(),
            Some("alice")
        );
        for wrong in [
            &a.as_bytes()[1..],
            "a".repeat(17).as_bytes(),
            b"",
            "A".repeat(16).as_bytes(),
            &[b'a'; 300],
        ] {
            assert_eq!(tokens.authenticate(peer(), wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        let cases = [
            ("alice\n", "line 1: expected NAME:TOKEN"),
            (
                "alice:xxxxxxxxxxxxxxxx\nb@d:yyyyyyyyyyyyyyyy\n",
                "line 2: invalid name 'b@d'",
            ),
            (
                "alice:\n",
                "line 1: the token is 0 bytes: it must be 16 to 256",
            ),
            (
                "alice:hunter2\n",
                "line 1: the token is 7 bytes: it must be 16 to 256",
            ),
            (
                "alice:a bbbbbbbbbbbbbbbb\n",
                "line 1: the token contains a space",
            ),
            (
                "alice:samesamesamesame\nbob:samesamesamesame\n",
                "line 2: bob has the same token",
            ),
            ("# nothing\n", "no NAME:TOKEN entries"),
        ];
        for (text, expected) in cases {
            let error = Tokens::parse(text).expect_err(text).to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let tokens = Tokens::parse("alice:hunter2-hunter2-hunter2\n").unwrap();
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    /// The comparison must not stop at the first differing byte: the same number of byte
    /// comparisons, whatever the guess.
    #[test]
    fn token_comparison_does_the_same_work_wherever_the_first_difference_is() {
        let token = [b'x'; 40];
        let entry = Entry::new("alice", &token);
        let count = |guess: &[u8]| {
            let mut compared = 0;
            let same = tokens_equal(&entry.padded, entry.len, guess, |a, b| {
                compared += 1;
                a.ct_eq(b)
            });
            (bool::from(same), compared)
        };
        let mut first_wrong = token;
        first_wrong[0] = b'y';
        let mut last_wrong = token;
        last_wrong[39] = b'y';
        assert_eq!(count(&token), (true, MAX_TOKEN));
        assert_eq!(count(&first_wrong), (false, MAX_TOKEN));
        assert_eq!(count(&last_wrong), (false, MAX_TOKEN));
        assert_eq!(count(b"x"), (false, MAX_TOKEN), "a short guess");
        assert_eq!(count(&[b'x'; 1000]), (false, MAX_TOKEN), "a long guess");
    }
}
