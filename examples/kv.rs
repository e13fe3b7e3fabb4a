//! Embedding wharf: a line-protocol key-value store in a few dozen lines of handler.
//!
//! ```text
//! SET key value...   ->  OK
//! GET key            ->  VALUE value...   or   NOT_FOUND
//! DEL key            ->  DELETED          or   NOT_FOUND
//! ```
//!
//! Keys and values are bytes (a value may hold spaces); every connection sees one store.
//!
//! ```text
//! cargo run --example kv -- 127.0.0.1:7002
//! printf 'SET greeting hello world\nGET greeting\n' | nc -q1 127.0.0.1 7002
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;

use wharf::{Config, Context, Handler, ListenOptions, Listener, Reactor};

/// The store, shared by every connection of the reactor.
#[derive(Default)]
pub struct Kv {
    store: HashMap<Vec<u8>, Vec<u8>>,
}

impl Kv {
    fn command(&mut self, line: &[u8]) -> Vec<u8> {
        let mut parts = line.splitn(3, |&b| b == b' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(b"SET"), Some(key), Some(value)) => {
                self.store.insert(key.to_vec(), value.to_vec());
                b"OK\n".to_vec()
            }
            (Some(b"GET"), Some(key), None) => match self.store.get(key) {
                Some(value) => [b"VALUE ", &value[..], b"\n"].concat(),
                None => b"NOT_FOUND\n".to_vec(),
            },
            (Some(b"DEL"), Some(key), None) => match self.store.remove(key) {
                Some(_) => b"DELETED\n".to_vec(),
                None => b"NOT_FOUND\n".to_vec(),
            },
            _ => b"ERR expected SET key value, GET key or DEL key\n".to_vec(),
        }
    }
}

impl Handler for Kv {
    type Session = ();

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        let mut consumed = 0;
        // Every complete line is a command; a partial one waits for its newline. (The
        // reactor's max_input bounds how long a line can grow.)
        while let Some(len) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = &input[consumed..consumed + len];
            let reply = self.command(line.strip_suffix(b"\r").unwrap_or(line));
            ctx.write(&reply);
            consumed += len + 1;
        }
        consumed
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7002".into())
        .parse()?;
    let listener = Listener::bind(addr, &ListenOptions::default())?;
    eprintln!("kv: listening on {}", listener.local_addr());
    let mut reactor = Reactor::new(Config::default(), Kv::default())?;
    reactor.add_listener(listener)?;
    reactor.handle().install_signal_handlers()?;
    reactor.run()?;
    Ok(())
}
