//! What the reactor knows of each connection beyond its [`Conn`](crate::conn::Conn): the
//! address accept gave (so `peer_addr` needs no system call, and the per-address count is
//! released at the close), and its identity: the name it authenticated as, or its TLS
//! client certificate's subject. Side tables by slab key, so that the slab entry stays
//! small.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};

use crate::handler::ConnView;
use crate::listener::ListenerId;
use crate::transport::Transports;

#[derive(Debug, Default)]
pub(super) struct Peers {
    /// Each connection's peer, by slab key, in pages of [`PAGE`] that never move: a table
    /// grown as one `Vec` would leave every outgrown copy behind in the allocator (measured:
    /// +15 B of RSS per idle connection at 19,000 with doubling, +28 with finer steps).
    pages: Vec<Box<[Peer; PAGE]>>,
    identities: Vec<Option<Box<str>>>,
}

/// Peers per page: 24 KiB.
const PAGE: usize = 1024;

/// A peer's address and the listener it came in on, in 24 bytes, not a `SocketAddr`'s 32:
/// every connection has one, and the IPv6 flow label, which is all it leaves out, says
/// nothing about a peer. The listener takes a byte the padding left free.
#[derive(Debug, Clone, Copy)]
struct Peer {
    ip: IpAddr,
    port: u16,
    /// The IPv6 scope (a link-local peer's interface); 0 otherwise.
    scope_id: u32,
    listener: ListenerId,
}

impl Peer {
    fn of(addr: SocketAddr, listener: ListenerId) -> Peer {
        let scope_id = match addr {
            SocketAddr::V6(v6) => v6.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        Peer {
            ip: addr.ip(),
            port: addr.port(),
            scope_id,
            listener,
        }
    }

    fn addr(self) -> SocketAddr {
        match self.ip {
            IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, self.port, 0, self.scope_id)),
            ip => SocketAddr::new(ip, self.port),
        }
    }
}

/// The peer of a slot no connection has used yet (never read: every connection sets its own).
const NO_PEER: Peer = Peer {
    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    port: 0,
    scope_id: 0,
    listener: ListenerId::FIRST,
};

impl Peers {
    /// Connection `key` was accepted from `peer` on `listener`.
    pub(super) fn opened(&mut self, key: usize, peer: SocketAddr, listener: ListenerId) {
        let (page, slot) = (key / PAGE, key % PAGE);
        while self.pages.len() <= page {
            self.pages.push(Box::new([NO_PEER; PAGE]));
        }
        self.pages[page][slot] = Peer::of(peer, listener);
    }

    /// Connection `key`'s peer is `peer` after all: the client its PROXY header named.
    pub(super) fn moved(&mut self, key: usize, peer: SocketAddr) {
        if let Some(page) = self.pages.get_mut(key / PAGE) {
            let listener = page[key % PAGE].listener;
            page[key % PAGE] = Peer::of(peer, listener);
        }
    }

    fn get(&self, key: usize) -> Peer {
        let peer = self.pages.get(key / PAGE).map(|page| page[key % PAGE]);
        peer.unwrap_or(NO_PEER)
    }

    pub(super) fn peer(&self, key: usize) -> SocketAddr {
        self.get(key).addr()
    }

    /// The listener connection `key` came in on.
    pub(super) fn listener(&self, key: usize) -> ListenerId {
        self.get(key).listener
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
    let peer = peers.get(key);
    ConnView {
        identity: peers.identities.get(key).and_then(Option::as_deref),
        peer: Some(peer.addr()),
        listener: Some(peer.listener),
        tls: transports.info(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_takes_24_bytes_and_comes_back_whole() {
        assert_eq!(std::mem::size_of::<Peer>(), 24);
        let mut peers = Peers::default();
        let v4: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let v6: SocketAddr = "[fe80::1%3]:443".parse().unwrap();
        let second = ListenerId::new(1).unwrap();
        peers.opened(2, v4, ListenerId::FIRST);
        peers.opened(0, v6, second);
        peers.opened(5000, v4, ListenerId::FIRST);
        assert_eq!(peers.peer(2), v4);
        assert_eq!(peers.peer(0), v6);
        assert_eq!(peers.peer(5000), v4);
        assert_eq!(peers.pages.len(), 5);
        assert_eq!(peers.listener(0), second);
        assert_eq!(peers.listener(2), ListenerId::FIRST);
        if let SocketAddr::V6(v6) = peers.peer(0) {
            assert_eq!(v6.scope_id(), 3);
        }
    }
}
