//! UDP sockets on the same reactor: each datagram goes to [`Handler::on_datagram`], and its
//! reply goes back to the sender. [`UdpSockets`] owns the sockets, their unsent replies and
//! the reply buffer.
//!
//! A reply the socket cannot take now (its send buffer is full) waits in a queue of at most
//! [`MAX_QUEUED_REPLIES`] replies and [`MAX_QUEUED_BYTES`] bytes; beyond that replies are
//! dropped and counted. UDP may lose
//! datagrams anyway, and a bounded queue keeps a flood from growing memory. Datagrams are
//! read with a budget per wakeup, like TCP bytes, so a UDP flood cannot starve TCP service.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::Interest;

use mio::{Registry, Token};

use crate::handler::Handler;
use crate::stats::Stats;

/// Replies kept per socket while it cannot send.
pub(crate) const MAX_QUEUED_REPLIES: usize = 1024;

/// Bytes of replies kept per socket while it cannot send: without it, 1,024 replies of
/// 64 KiB would be 64 MiB.
pub(crate) const MAX_QUEUED_BYTES: usize = 1 << 20;

/// Datagrams read per socket per wakeup before others get their turn.
const DATAGRAM_BUDGET: usize = 256;

/// Largest UDP payload over IPv4 (65535 - 8 - 20); longer replies are cut to it.
const MAX_DATAGRAM: usize = 65_507;

/// One UDP socket and its unsent replies.
#[derive(Debug)]
struct UdpEndpoint {
    socket: UdpSocket,
    queue: VecDeque<(SocketAddr, Box<[u8]>)>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// Whether WRITABLE is registered (only while replies wait).
    writable: bool,
}

/// The reactor's UDP sockets.
#[derive(Debug, Default)]
pub(crate) struct UdpSockets {
    endpoints: Vec<UdpEndpoint>,
    /// The reply buffer handed to `Handler::on_datagram`, reused.
    reply: Vec<u8>,
}

/// What sending a datagram came to.
enum Sent {
    Yes,
    WouldBlock,
    /// Lost (an ICMP error for an earlier datagram, a too-large reply, ...): UDP gives no
    /// more guarantee than that, so it is counted and forgotten.
    Lost,
}

fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> Sent {
    match socket.send_to(&data[..data.len().min(MAX_DATAGRAM)], to) {
        Ok(_) => Sent::Yes,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Sent::WouldBlock,
        Err(_) => Sent::Lost,
    }
}

impl UdpSockets {
    /// Serves datagrams on `socket` (bound and non-blocking), registered with `token(index)`;
    /// returns its address.
    pub(crate) fn add(
        &mut self,
        socket: UdpSocket,
        registry: &Registry,
        token: impl FnOnce(usize) -> Token,
    ) -> io::Result<SocketAddr> {
        let mut endpoint = UdpEndpoint {
            socket,
            queue: VecDeque::new(),
            queued_bytes: 0,
            writable: false,
        };
        let addr = endpoint.socket.local_addr()?;
        let index = self.endpoints.len();
        registry.register(&mut endpoint.socket, token(index), Interest::READABLE)?;
        self.endpoints.push(endpoint);
        Ok(addr)
    }

    /// Closes every socket (a drain, or the end).
    pub(crate) fn close(&mut self) {
        self.endpoints.clear();
    }

    /// Serves a readiness event of socket `index`: queued replies first, then datagrams
    /// read into `scratch`, each handed to `handler`, up to a budget. True if the budget ran
    /// out (more may wait, and no new edge will say so: resume it).
    pub(crate) fn serve<H: Handler>(
        &mut self,
        index: usize,
        handler: &mut H,
        scratch: &mut [u8],
        stats: &mut Stats,
        registry: &Registry,
        token: Token,
    ) -> bool {
        let Some(endpoint) = self.endpoints.get_mut(index) else {
            return false; // closed by a drain since it was put on the resume list
        };
        flush(endpoint, stats);
        let reply = &mut self.reply;
        let mut budget_spent = true;
        for _ in 0..DATAGRAM_BUDGET {
            let (n, from) = match endpoint.socket.recv_from(scratch) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    budget_spent = false;
                    break;
                }
                // ECONNREFUSED and the like report an earlier send; keep reading.
                Err(_) => continue,
            };
            stats.datagrams_in += 1;
            reply.clear();
            if !handler.on_datagram(from, &scratch[..n], reply) {
                continue;
            }
            let sent = if endpoint.queue.is_empty() {
                send(&endpoint.socket, reply, from)
            } else {
                Sent::WouldBlock // keep the order of replies
            };
            match sent {
                Sent::Yes => stats.datagrams_out += 1,
                Sent::Lost => stats.datagrams_dropped += 1,
                Sent::WouldBlock
                    if fits(endpoint.queue.len(), endpoint.queued_bytes, reply.len()) =>
                {
                    endpoint.queued_bytes += reply.len();
                    endpoint.queue.push_back((from, reply.as_slice().into()));
                }
                Sent::WouldBlock => stats.datagrams_dropped += 1,
            }
        }
        set_interest(endpoint, index, registry, token);
        budget_spent
    }
}

/// Sends queued replies until the socket is full again.
fn flush(endpoint: &mut UdpEndpoint, stats: &mut Stats) {
    while let Some((to, data)) = endpoint.queue.front() {
        match send(&endpoint.socket, data, *to) {
            Sent::Yes => stats.datagrams_out += 1,
            Sent::Lost => stats.datagrams_dropped += 1,
            Sent::WouldBlock => return,
        }
        if let Some((_, sent)) = endpoint.queue.pop_front() {
            endpoint.queued_bytes -= sent.len();
        }
    }
}

/// Whether one more reply of `len` bytes may wait in a queue that holds `replies` replies
/// of `bytes` bytes: at most [`MAX_QUEUED_REPLIES`] replies and [`MAX_QUEUED_BYTES`].
fn fits(replies: usize, bytes: usize, len: usize) -> bool {
    replies < MAX_QUEUED_REPLIES && bytes + len <= MAX_QUEUED_BYTES
}

/// WRITABLE only while replies wait, as for connections.
fn set_interest(endpoint: &mut UdpEndpoint, index: usize, registry: &Registry, token: Token) {
    let want = !endpoint.queue.is_empty();
    if want == endpoint.writable {
        return;
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match registry.reregister(&mut endpoint.socket, token, interest) {
        Ok(()) => endpoint.writable = want,
        Err(error) => log::warn!("udp socket {index}: cannot change interest: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_queue_is_bounded_in_replies_and_in_bytes() {
        assert!(fits(0, 0, 65_507));
        assert!(!fits(MAX_QUEUED_REPLIES, 0, 1), "the count bound");
        assert!(
            fits(15, 15 * 65_507, 65_507),
            "16 full-size replies fit in 1 MiB"
        );
        assert!(!fits(16, 16 * 65_507, 65_507), "a 17th does not");
        assert!(fits(1000, 1000, 24), "small replies up to the count");
    }
}
