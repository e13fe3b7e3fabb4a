//! What some connections have beyond their [`Conn`](crate::conn::Conn): the name they
//! authenticated as, and their TLS session. Kept in side tables by slab key, filled only for
//! the connections that have them, so a plain connection pays nothing for either feature.

use mio::net::TcpStream;

use crate::handler::ConnView;
#[cfg(feature = "tls")]
use crate::tls::session::TlsSession;

#[derive(Debug, Default)]
pub(super) struct Extras {
    identities: Vec<Option<Box<str>>>,
    #[cfg(feature = "tls")]
    tls: Vec<Option<Box<TlsSession>>>,
}

fn slot<T>(table: &mut Vec<Option<T>>, key: usize) -> &mut Option<T> {
    if table.len() <= key {
        table.resize_with(key + 1, || None);
    }
    &mut table[key]
}

impl Extras {
    pub(super) fn set_identity(&mut self, key: usize, name: String) {
        *slot(&mut self.identities, key) = Some(name.into_boxed_str());
    }

    pub(super) fn identity(&self, key: usize) -> Option<&str> {
        self.identities.get(key).and_then(Option::as_deref)
    }

    /// What a handler may ask about connection `key` (`stream`: its socket, while open).
    pub(super) fn view<'a>(&'a self, key: usize, stream: Option<&'a TcpStream>) -> ConnView<'a> {
        ConnView {
            identity: self.identity(key),
            stream,
            #[cfg(feature = "tls")]
            tls: self.tls(key),
        }
    }

    /// Forgets connection `key`, which closed; returns its identity (for `on_close`) and its
    /// TLS session (for a last close_notify).
    pub(super) fn forget(&mut self, key: usize) -> Forgotten {
        Forgotten {
            identity: self.identities.get_mut(key).and_then(Option::take),
            #[cfg(feature = "tls")]
            tls: self.tls.get_mut(key).and_then(Option::take),
        }
    }

    #[cfg(feature = "tls")]
    pub(super) fn set_tls(&mut self, key: usize, session: TlsSession) {
        *slot(&mut self.tls, key) = Some(Box::new(session));
    }

    #[cfg(feature = "tls")]
    pub(super) fn tls(&self, key: usize) -> Option<&TlsSession> {
        self.tls.get(key).and_then(Option::as_deref)
    }

    #[cfg(feature = "tls")]
    pub(super) fn tls_mut(&mut self, key: usize) -> Option<&mut TlsSession> {
        self.tls.get_mut(key).and_then(Option::as_deref_mut)
    }

    pub(super) fn is_tls(&self, key: usize) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.get(key).is_some_and(Option::is_some);
        #[cfg(not(feature = "tls"))]
        {
            let _ = key;
            false
        }
    }
}

/// What [`Extras::forget`] hands back.
pub(super) struct Forgotten {
    pub(super) identity: Option<Box<str>>,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<Box<TlsSession>>,
}
