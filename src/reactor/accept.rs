//! Accepting connections: the accept loop, its budget, and opening a connection.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::Core;
use crate::conn::{Conn, READ_INTEREST};
use crate::conn_id::{ConnId, Source, MAX_KEY};
use crate::handler::{Context, Handler};

impl<H: Handler> Core<H> {
    pub(super) fn accept(&mut self, index: usize) {
        for _ in 0..self.config.accept_budget {
            match self.listeners[index].socket_mut().accept() {
                Ok((stream, peer)) => self.open(stream, peer),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    // EMFILE and friends: the connection stays in the kernel's queue. Retrying
                    // now would spin; the next close frees a descriptor and resumes accepting.
                    self.accept_paused = true;
                    self.stats.accept_errors += 1;
                    if self.stats.accept_errors.is_power_of_two() {
                        log::warn!(
                            "accept failed: {error} ({} accept errors so far)",
                            self.stats.accept_errors
                        );
                    }
                    return;
                }
            }
        }
        self.resume.push(Source::Listener(index));
    }

    pub(super) fn open(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let entry = self.conns.vacant_entry();
        if entry.key() > MAX_KEY {
            return; // four billion connections: drop the new one rather than alias a token
        }
        if self.config.nodelay {
            if let Err(error) = stream.set_nodelay(true) {
                log::debug!("peer={peer} TCP_NODELAY failed: {error}");
            }
        }
        let id = ConnId::new(entry.key(), self.generations.next());
        // Data that arrived with the connection is reported by the poller once registered,
        // so there is no read here.
        if let Err(error) = self
            .registry
            .register(&mut stream, id.token(), READ_INTEREST)
        {
            log::warn!("peer={peer} cannot register connection: {error}");
            return;
        }
        self.stats.accepted += 1;
        self.stats.active += 1;
        self.outbox.begin(id, true);
        let session = self
            .handler
            .on_open(&mut Context::new(&mut self.outbox, &self.stats), peer);
        entry.insert(Conn::new(stream, id.generation(), session));
        log::trace!("conn={id} peer={peer} opened");
        self.finish_callback(id);
    }
}
