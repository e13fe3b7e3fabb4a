//! UDP sockets on the same reactor: each datagram goes to [`Handler::on_datagram`], and its
//! reply goes back to the sender.
//!
//! A reply the socket cannot take now (its send buffer is full) waits in a queue of at most
//! [`MAX_QUEUED_REPLIES`]; beyond that replies are dropped and counted. UDP may lose
//! datagrams anyway, and a bounded queue keeps a flood from growing memory. Datagrams are
//! read with a budget per wakeup, like TCP bytes, so a UDP flood cannot starve TCP service.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::Interest;

use super::Core;
use crate::conn_id::Source;
use crate::handler::Handler;

/// Replies kept per socket while it cannot send.
pub(crate) const MAX_QUEUED_REPLIES: usize = 1024;

/// Datagrams read per socket per wakeup before others get their turn.
const DATAGRAM_BUDGET: usize = 256;

/// Largest UDP payload over IPv4 (65535 - 8 - 20); longer replies are cut to it.
const MAX_DATAGRAM: usize = 65_507;

/// One UDP socket and its unsent replies.
#[derive(Debug)]
pub(crate) struct UdpEndpoint {
    socket: UdpSocket,
    queue: VecDeque<(SocketAddr, Box<[u8]>)>,
    /// Whether WRITABLE is registered (only while replies wait).
    writable: bool,
}

impl UdpEndpoint {
    pub(crate) fn new(socket: UdpSocket) -> UdpEndpoint {
        UdpEndpoint {
            socket,
            queue: VecDeque::new(),
            writable: false,
        }
    }

    pub(crate) fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
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

impl<H: Handler> Core<H> {
    /// Serves a readiness event of UDP socket `index`.
    pub(super) fn serve_udp(&mut self, index: usize) {
        if index >= self.udp.len() {
            return; // closed by a drain since it was put on the resume list
        }
        self.flush_udp(index);
        let mut reply = std::mem::take(&mut self.datagram_reply);
        for _ in 0..DATAGRAM_BUDGET {
            let endpoint = &mut self.udp[index];
            let (n, from) = match endpoint.socket.recv_from(&mut self.scratch) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.datagram_reply = reply;
                    return self.udp_interest(index);
                }
                // ECONNREFUSED and the like report an earlier send; keep reading.
                Err(_) => continue,
            };
            self.stats.datagrams_in += 1;
            reply.clear();
            if !self
                .handler
                .on_datagram(from, &self.scratch[..n], &mut reply)
            {
                continue;
            }
            let endpoint = &mut self.udp[index];
            let sent = if endpoint.queue.is_empty() {
                send(&endpoint.socket, &reply, from)
            } else {
                Sent::WouldBlock // keep the order of replies
            };
            match sent {
                Sent::Yes => self.stats.datagrams_out += 1,
                Sent::Lost => self.stats.datagrams_dropped += 1,
                Sent::WouldBlock if endpoint.queue.len() < MAX_QUEUED_REPLIES => {
                    endpoint.queue.push_back((from, reply.as_slice().into()));
                }
                Sent::WouldBlock => self.stats.datagrams_dropped += 1,
            }
        }
        self.datagram_reply = reply;
        // Budget spent: more datagrams may wait, and no new edge will say so.
        self.resume.push(Source::Udp(index));
        self.udp_interest(index);
    }

    /// Sends queued replies until the socket is full again.
    fn flush_udp(&mut self, index: usize) {
        let endpoint = &mut self.udp[index];
        while let Some((to, data)) = endpoint.queue.front() {
            match send(&endpoint.socket, data, *to) {
                Sent::Yes => self.stats.datagrams_out += 1,
                Sent::Lost => self.stats.datagrams_dropped += 1,
                Sent::WouldBlock => return,
            }
            endpoint.queue.pop_front();
        }
    }

    /// WRITABLE only while replies wait, as for connections.
    fn udp_interest(&mut self, index: usize) {
        let endpoint = &mut self.udp[index];
        let want = !endpoint.queue.is_empty();
        if want == endpoint.writable {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let token = Source::Udp(index).token();
        match self
            .registry
            .reregister(&mut endpoint.socket, token, interest)
        {
            Ok(()) => endpoint.writable = want,
            Err(error) => log::warn!("udp socket {index}: cannot change interest: {error}"),
        }
    }
}
