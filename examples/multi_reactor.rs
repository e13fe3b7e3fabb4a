//! Several reactors in one process: one thread each, on one port.
//!
//! Every thread runs a `Reactor` of its own, single-threaded as always, with its own listening
//! socket on the shared port (SO_REUSEPORT); the kernel spreads new connections over the
//! sockets by a hash of their addresses, and a connection stays with the reactor that
//! accepted it. Nothing is shared between the threads but the port.
//!
//! Threads share one table of file descriptors, so all the reactors together hold at most
//! `ulimit -n` connections. That suits deployments that raise `nofile`; where the limit is
//! fixed, `wharf --workers N` runs the reactors in processes instead, each with a table of
//! its own.
//!
//! ```text
//! cargo run --example multi_reactor -- 127.0.0.1:7002 4    # 4 echo reactors on port 7002
//! ```
//!
//! SIGINT or SIGTERM drains every reactor; each one's counters are printed at the end.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use wharf::{Config, Handle, Handler, ListenOptions, Listener, Reactor, Stats};

/// Reactors on threads of their own, sharing one port.
pub struct Reactors {
    addr: SocketAddr,
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<io::Result<Stats>>>,
}

impl Reactors {
    /// Starts `count` reactors on `addr`, each with a handler made by `handler`. With port 0,
    /// the first listener picks the port and the others join it.
    pub fn start<H, F>(
        addr: SocketAddr,
        count: usize,
        config: Config,
        handler: F,
    ) -> Result<Reactors, Box<dyn Error>>
    where
        H: Handler + Send + 'static,
        F: Fn() -> H,
    {
        let options = ListenOptions {
            reuseport: true,
            ..ListenOptions::default()
        };
        let first = Listener::bind(addr, &options)?;
        let addr = first.local_addr();
        let mut listeners = vec![first];
        for _ in 1..count {
            listeners.push(Listener::bind(addr, &options)?);
        }
        let mut reactors = Reactors {
            addr,
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for (index, listener) in listeners.into_iter().enumerate() {
            let (config, handler) = (config.clone(), handler());
            // The reactor is made on its own thread, so its connections' sessions never
            // cross threads (they need not be Send); only its Handle comes back.
            let (handle_tx, handle_rx) = mpsc::channel();
            let thread = thread::Builder::new()
                .name(format!("reactor-{}", index + 1))
                .spawn(move || {
                    let mut reactor = Reactor::new(config, handler)?;
                    reactor.add_listener(listener)?;
                    let _ = handle_tx.send(reactor.handle());
                    reactor.run()?;
                    Ok(reactor.stats().clone())
                })?;
            match handle_rx.recv() {
                Ok(handle) => reactors.handles.push(handle),
                // The thread ended before sending its handle: it failed to start.
                Err(_) => {
                    let error = match thread.join() {
                        Ok(Err(error)) => error,
                        _ => io::Error::other("a reactor thread ended while starting"),
                    };
                    reactors.stop();
                    let _ = reactors.join();
                    return Err(error.into());
                }
            }
            reactors.threads.push(thread);
        }
        Ok(reactors)
    }

    /// The port they share.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One handle per reactor.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Drains every reactor: listeners close, connections finish.
    pub fn drain(&self) {
        self.handles.iter().for_each(Handle::drain);
    }

    /// Stops every reactor now.
    pub fn stop(&self) {
        self.handles.iter().for_each(Handle::stop);
    }

    /// Waits for every reactor to return, and gives each one's counters, in order.
    pub fn join(self) -> io::Result<Vec<Stats>> {
        self.threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")))
            })
            .collect()
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7002").parse()?;
    let count = match args.next() {
        Some(count) => count.parse()?,
        None => thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let reactors = Reactors::start(addr, count, Config::default(), || wharf::service::Echo)?;
    // One set of handlers per reactor: a signal drains them all.
    for handle in reactors.handles() {
        handle.install_signal_handlers()?;
    }
    eprintln!(
        "multi_reactor: listening on {} (echo, {count} reactors)",
        reactors.addr()
    );
    for (index, stats) in reactors.join()?.iter().enumerate() {
        eprintln!("multi_reactor: reactor {}: {stats}", index + 1);
    }
    Ok(())
}
