//! An embedded reactor for the library tests: a `Reactor` serving a handler on 127.0.0.1:0 on
//! a thread of its own, and state a handler shares with the test thread.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wharf::{Config, Handle, Handler, ListenOptions, Listener, Reactor, Stats};

/// The longest a test waits for a reply or for shared state to change.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A reactor serving `handler` on 127.0.0.1:0 on its own thread; stopped on drop.
pub struct Embedded {
    pub addr: SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<(std::io::Result<()>, Stats)>>,
}

impl Embedded {
    pub fn start<H>(config: Config, handler: H) -> Embedded
    where
        H: Handler + Send + 'static,
        H::Session: Send,
    {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default())
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr();
        let mut reactor = Reactor::new(config, handler).expect("create reactor");
        reactor.add_listener(listener).expect("register listener");
        let handle = reactor.handle();
        let thread = std::thread::spawn(move || {
            let result = reactor.run();
            (result, reactor.stats().clone())
        });
        Embedded {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// A client with TCP_NODELAY and a read timeout of [`DEADLINE`].
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        stream
    }

    /// Stops the reactor and returns its counters once `run` has returned (and returned
    /// `Ok`).
    pub fn stop(&mut self) -> Stats {
        self.handle.stop();
        let (result, stats) = self
            .thread
            .take()
            .expect("a reactor thread")
            .join()
            .expect("reactor thread panicked");
        result.expect("run failed");
        stats
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// State shared between a handler (on the reactor thread) and the test.
#[derive(Default)]
pub struct Shared<T> {
    pub value: Mutex<T>,
    changed: Condvar,
}

impl<T> Shared<T> {
    pub fn update(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.value.lock().unwrap());
        self.changed.notify_all();
    }

    pub fn get<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.value.lock().unwrap())
    }

    /// Waits until `ready` holds, for at most [`DEADLINE`].
    pub fn wait_until(&self, what: &str, ready: impl Fn(&T) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        let mut value = self.value.lock().unwrap();
        while !ready(&value) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out waiting for {what}"));
            value = self.changed.wait_timeout(value, left).unwrap().0;
        }
    }
}
