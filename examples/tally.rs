//! Embedding wharf: a tiny line protocol in a few dozen lines of handler.
//!
//! Each line is an integer, added to the connection's own sum and to the server-wide total;
//! the reply is `<connection sum> <server total>`. Anything else gets an `ERR` line and the
//! connection stays open.
//!
//! ```text
//! cargo run --example tally -- 127.0.0.1:7001
//! printf '5\n7\nx\n' | nc -q1 127.0.0.1 7001     # 5 5 / 12 12 / ERR not an integer: x
//! ```

use std::net::SocketAddr;

use wharf::{Config, Context, Handler, ListenOptions, Listener, Reactor};

/// The server-wide total; each connection's sum is its session.
#[derive(Default)]
pub struct Tally {
    total: i64,
}

impl Handler for Tally {
    type Session = i64;

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) -> i64 {
        0
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, sum: &mut i64, input: &[u8]) -> usize {
        let mut consumed = 0;
        // Answer every complete line; a partial one stays buffered until its newline arrives.
        while let Some(len) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&input[consumed..consumed + len]);
            match line.trim().parse::<i64>() {
                Ok(n) => {
                    *sum = sum.saturating_add(n);
                    self.total = self.total.saturating_add(n);
                    ctx.write(format!("{sum} {}\n", self.total).as_bytes());
                }
                Err(_) => ctx.write(format!("ERR not an integer: {}\n", line.trim()).as_bytes()),
            }
            consumed += len + 1;
        }
        consumed
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".into())
        .parse()?;
    let listener = Listener::bind(addr, &ListenOptions::default())?;
    eprintln!("tally: listening on {}", listener.local_addr());
    let mut reactor = Reactor::new(Config::default(), Tally::default())?;
    reactor.add_listener(listener)?;
    reactor.run()?;
    Ok(())
}
