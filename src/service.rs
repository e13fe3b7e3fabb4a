//! The built-in services: the sans-IO protocols of [`crate::proto`] wired to the reactor as
//! [`Handler`]s. These are what `wharf echo` and `wharf line` run.

use std::net::SocketAddr;
use std::time::Instant;

use crate::handler::{Context, Handler};
use crate::log_limit::LogLimit;
use crate::proto::echo::Echo as EchoProtocol;
use crate::proto::line::{LineCursor, LineEcho, LineStep};

/// Echo (RFC 862): every byte back, in order.
///
/// ```
/// # use wharf::{Config, Reactor, service::Echo};
/// let reactor = Reactor::new(Config::default(), Echo)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type Session = ();

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, _session: &mut (), input: &[u8]) -> usize {
        let step = EchoProtocol.on_input(input);
        ctx.write(step.reply);
        step.consumed
    }
}

/// Line echo: complete lines back byte-exact; an overlong line gets an error and a close.
///
/// ```
/// # use wharf::{Config, Reactor, service::Line};
/// let reactor = Reactor::new(Config::default(), Line::new(1024))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Line {
    protocol: LineEcho,
    /// Overlong lines are a client's doing: at most one log line per second about them.
    overlong_log: LogLimit,
}

impl Line {
    /// Line echo that accepts lines of at most `max_line` bytes before the `\n`.
    pub fn new(max_line: usize) -> Line {
        Line {
            protocol: LineEcho::new(max_line),
            overlong_log: LogLimit::per_second(),
        }
    }
}

impl Default for Line {
    fn default() -> Line {
        Line::new(crate::proto::line::DEFAULT_MAX_LINE)
    }
}

impl Handler for Line {
    type Session = LineCursor;

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) -> LineCursor {
        LineCursor::default()
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, cursor: &mut LineCursor, input: &[u8]) -> usize {
        match self.protocol.on_input(cursor, input) {
            LineStep::Echo(lines) => {
                ctx.write(lines);
                lines.len()
            }
            LineStep::TooLong { lines } => {
                ctx.write(lines);
                ctx.write(self.protocol.error_line());
                ctx.close();
                if let Some(count) = self.overlong_log.hit(Instant::now()) {
                    log::info!(
                        "conn={} closing: line longer than {} bytes ({count} such in the last \
                         second)",
                        ctx.id(),
                        self.protocol.max_line()
                    );
                }
                input.len()
            }
        }
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_>, _: &mut LineCursor, unconsumed: &[u8]) {
        ctx.write(self.protocol.on_peer_closed(unconsumed));
    }
}
