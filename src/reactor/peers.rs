//! What the reactor knows of each connection beyond its [`Conn`](crate::conn::Conn): the
//! address accept gave (so `peer_addr` needs no system call, and the per-address count is
//! released at the close), and its identity: the name it authenticated as, or its TLS
//! client certificate's subject. Side tables by slab key, so that the slab entry stays
//! small.

use std::net::{Ipv4Addr, SocketAddr};

use crate::handler::ConnView;
use crate::transport::Transports;

#[derive(Debug, Default)]
pub(super) struct Peers {
    peers: Vec<SocketAddr>,
    identities: Vec<Option<Box<str>>>,
}

/// The peer of a slot no connection has used yet (never read: every connection sets its own).
const NO_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

impl Peers {
    /// Connection `key` was accepted from `peer`.
    pub(super) fn opened(&mut self, key: usize, peer: SocketAddr) {
        if self.peers.len() <= key {
            self.peers.resize(key + 1, NO_PEER);
        }
        self.peers[key] = peer;
    }

    pub(super) fn peer(&self, key: usize) -> SocketAddr {
        self.peers.get(key).copied().unwrap_or(NO_PEER)
    }

    pub(super) fn set_identity(&mut self, key: usize, name: String) {
        if self.identities.len() <= key {
            self.identities.resize_with(key + 1, || None);
        }
        self.identities[key] = Some(name.into_boxed_str());
    }

    /// Forgets connection `key`, which closed; returns its identity (for `on_close`).
    pub(super) fn forget(&mut self, key: usize) -> Option<Box<str>> {
        self.identities.get_mut(key).and_then(Option::take)
    }
}

/// What a handler may ask about open connection `key`.
pub(super) fn view<'a>(peers: &'a Peers, transports: &'a Transports, key: usize) -> ConnView<'a> {
    ConnView {
        identity: peers.identities.get(key).and_then(Option::as_deref),
        peer: Some(peers.peer(key)),
        tls: transports.info(key),
    }
}
