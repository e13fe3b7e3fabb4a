//! Connection ids and the mio tokens derived from them.
//!
//! A connection lives in a `slab::Slab`, and slab keys are reused as soon as a connection
//! closes. An event already returned by the poller for the old connection can therefore name a
//! key that, a few microseconds later in the same batch, belongs to a new connection. To make
//! such a stale event harmless, every connection also gets a generation number at accept time,
//! and both travel in the token: an event (or a handler's [`ConnId`]) whose generation differs
//! from the slot's current one is ignored.
//!
//! Token layout (64-bit): bit 63 clear for connections, with the generation in bits 32..63
//! and the slab key in bits 0..32. Bit 63 set marks the reactor's own sources (listeners, UDP
//! sockets with bit 62 also set, and the waker), which can never collide with a connection
//! token.

#[cfg(not(target_pointer_width = "64"))]
compile_error!("wharf packs a slab key and a generation into one 64-bit mio Token");

use mio::Token;

const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
/// Generations use 31 bits so that bit 63 stays free for the reactor's own tokens.
const GENERATION_MASK: u32 = (1 << 31) - 1;
const RESERVED: usize = 1 << 63;
/// Among reserved tokens, marks a UDP socket (else a listener).
const UDP: usize = 1 << 62;

/// The largest number of connections a reactor can hold: slab keys must fit in 32 bits.
pub(crate) const MAX_KEY: usize = KEY_MASK;

/// Identifies one connection for as long as it is open, and never another one afterwards.
///
/// Handlers use it to write to or close any connection through [`crate::Context`]; an id
/// whose connection has closed simply refers to nothing.
///
/// ```
/// # use wharf::ConnId;
/// // Ids are opaque; they print as key/generation for logs.
/// fn log_line(id: ConnId) -> String { format!("conn={id}") }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    key: u32,
    generation: u32,
}

impl ConnId {
    /// An id no connection ever has (its generation is outside the 31 bits generations use).
    pub(crate) const NONE: ConnId = ConnId {
        key: u32::MAX,
        generation: u32::MAX,
    };

    pub(crate) fn new(key: usize, generation: u32) -> ConnId {
        debug_assert!(key <= MAX_KEY);
        ConnId {
            key: key as u32,
            generation: generation & GENERATION_MASK,
        }
    }

    /// The slab key of the connection.
    pub(crate) fn key(self) -> usize {
        self.key as usize
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }

    pub(crate) fn token(self) -> Token {
        Token(((self.generation as usize) << KEY_BITS) | self.key as usize)
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.key, self.generation)
    }
}

/// What a token returned by the poller stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Conn(ConnId),
    Listener(usize),
    Udp(usize),
    Waker,
}

const WAKER: usize = usize::MAX;

impl Source {
    pub(crate) fn token(self) -> Token {
        match self {
            Source::Conn(id) => id.token(),
            Source::Listener(index) => Token(RESERVED | index),
            Source::Udp(index) => Token(RESERVED | UDP | index),
            Source::Waker => Token(WAKER),
        }
    }

    pub(crate) fn from_token(token: Token) -> Source {
        let raw = token.0;
        if raw == WAKER {
            Source::Waker
        } else if raw & RESERVED != 0 && raw & UDP != 0 {
            Source::Udp(raw & !(RESERVED | UDP))
        } else if raw & RESERVED != 0 {
            Source::Listener(raw & !RESERVED)
        } else {
            Source::Conn(ConnId::new(raw & KEY_MASK, (raw >> KEY_BITS) as u32))
        }
    }
}

/// Hands out generations for new connections.
#[derive(Debug, Default)]
pub(crate) struct Generations {
    next: u32,
}

impl Generations {
    pub(crate) fn next(&mut self) -> u32 {
        let generation = self.next;
        self.next = self.next.wrapping_add(1) & GENERATION_MASK;
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for source in [
            Source::Conn(ConnId::new(0, 0)),
            Source::Conn(ConnId::new(MAX_KEY, GENERATION_MASK)),
            Source::Conn(ConnId::new(12345, 678)),
            Source::Listener(0),
            Source::Listener(7),
            Source::Udp(0),
            Source::Udp(3),
            Source::Waker,
        ] {
            assert_eq!(Source::from_token(source.token()), source);
        }
    }

    #[test]
    fn reused_key_gets_a_different_id() {
        let mut generations = Generations::default();
        let old = ConnId::new(5, generations.next());
        let new = ConnId::new(5, generations.next());
        assert_ne!(old, new);
        assert_ne!(old.token(), new.token());
        assert_eq!(old.key(), new.key());
    }

    #[test]
    fn generations_wrap_without_touching_the_reserved_bit() {
        let mut generations = Generations {
            next: GENERATION_MASK,
        };
        let last = ConnId::new(MAX_KEY, generations.next());
        assert_eq!(Source::from_token(last.token()), Source::Conn(last));
        assert_eq!(generations.next(), 0);
    }
}
