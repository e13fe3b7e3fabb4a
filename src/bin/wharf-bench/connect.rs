//! `connect`: connect, one round trip (the `\n` probe), close, as fast as possible with a
//! fixed number of connections in flight. Measures what a connection costs the server from
//! accept to close.
//!
//! With `--tls` every connection also makes a full TLS handshake (the client resumes no
//! session) and ends the session with close_notify, so connections per second are full
//! handshakes per second, and the server's CPU per connection is mostly the handshake's.
//!
//! The client closes first, so its side keeps each closed connection in TIME_WAIT for a
//! minute; at tens of thousands of connections a second one source address runs out of local
//! ports within seconds. Spread the load with `--src 127.0.0.1-127.0.0.16` on loopback.

use std::time::{Duration, Instant};

use crate::cli::ConnectArgs;
use crate::dial::Dialer;
use crate::echo::{Echo, Next};
use crate::error::BenchError;
use crate::limits::preflight;
use crate::message::Message;
use crate::progress::Progress;
use crate::report::{ConnectReport, RunId, TlsFigures};
use crate::server::{self, ServerProbe};
use crate::stream::tls_config;

/// Longest wait for events in one turn.
const TURN: Duration = Duration::from_millis(50);

pub fn run(args: &ConnectArgs) -> Result<ConnectReport, BenchError> {
    let target = &args.target;
    let concurrency = u64::from(args.concurrency);
    preflight(target, concurrency, None)?;
    let tls = tls_config(&args.tls, target.peer.addr)?;
    let probe = ServerProbe::of(target.peer.server_pid)?;
    let dialer = Dialer::new(target.peer.addr, target.peer.src.as_ref());
    let mut client = Echo::new(dialer, Message::probe(), target.timeout, tls)?;
    client.scenario.then = Next::Close;

    let progress = Progress::new("connect", args.duration);
    let before = probe.as_ref().map(ServerProbe::sample).transpose()?;
    let start = Instant::now();
    client.run_until(start + args.duration, |client, now| {
        // Refill the slots that closed. Dial only between turns (see `client.rs`).
        for _ in client.open() as u64..concurrency {
            client.dial();
        }
        let echo = &client.scenario;
        let errors = (echo.tally.total(), "errors");
        progress.rate(now - start, echo.latencies.len(), "connections", errors);
        Some(TURN)
    })?;
    let elapsed = start.elapsed();
    let after = probe.as_ref().map(ServerProbe::sample).transpose()?;
    progress.finish();
    client.close_all();
    client.reached()?;

    let echo = client.scenario;
    let connections = echo.latencies.len();
    Ok(ConnectReport {
        id: RunId::new("connect", target.peer.addr, &target.output),
        concurrency,
        duration_s: elapsed.as_secs_f64(),
        connections,
        connections_per_s: connections as f64 / elapsed.as_secs_f64(),
        latency: echo.latencies.summary(),
        errors: echo.tally.total(),
        connects_failed: echo.tally.connect_failed,
        tls: TlsFigures {
            tls: args.tls.tls,
            tls_version: echo.tls_version,
        },
        errors_by_kind: echo.tally,
        server: server::figures(probe.as_ref(), before, after, connections),
    })
}
