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
use crate::client::{Client, Next, Outcome};
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::failure::Tally;
use crate::latency::Latencies;
use crate::limits::preflight;
use crate::message::Message;
use crate::progress::Progress;
use crate::report::{ConnectReport, RunId, ServerFigures, TlsFigures};
use crate::server::ServerProbe;
use crate::stream::tls_config;

/// Longest wait for events in one turn.
const TURN: Duration = Duration::from_millis(50);

/// Runs `connect` as the command line asks.
pub fn run(args: &ConnectArgs) -> Result<ConnectReport, BenchError> {
    let target = &args.target;
    let concurrency = u64::from(args.concurrency);
    preflight(target, concurrency)?;
    let tls = tls_config(&args.tls, target.addr)?;
    let probe = target.server_pid.map(ServerProbe::new).transpose()?;
    let dialer = Dialer::new(target.addr, target.src.as_ref());
    let mut client = Client::new(dialer, Message::probe(), target.timeout, tls)?;
    let mut tally = Tally::default();
    let mut latencies = Latencies::new();

    let progress = Progress::new("connect", args.duration);
    let before = probe.as_ref().map(ServerProbe::sample).transpose()?;
    let start = Instant::now();
    let end = start + args.duration;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Refill the slots that closed. Dial only between turns (see `Client::turn`).
        for _ in client.open() as u64..concurrency {
            if let Err(failure) = client.dial() {
                tally.record(&failure);
            }
        }
        client.turn((end - now).min(TURN), &mut |_, outcome| {
            match outcome {
                Outcome::RoundTrip { latency, .. } => latencies.record(latency),
                Outcome::Failed { failure, .. } => tally.record(&failure),
            }
            Next::Close
        })?;
        let elapsed = now - start;
        progress.update(elapsed, || {
            let rate = latencies.len() as f64 / elapsed.as_secs_f64().max(1e-3);
            format!("{rate:.0} connections/s, {} errors", tally.total())
        });
    }
    let elapsed = start.elapsed();
    let after = probe.as_ref().map(ServerProbe::sample).transpose()?;
    progress.finish();
    client.close_all();

    let connections = latencies.len();
    if connections == 0 {
        if let Some(error) = BenchError::unreachable(target.addr, &tally) {
            return Err(error);
        }
    }
    let server = match (&probe, before, after) {
        (Some(probe), Some(before), Some(after)) => ServerFigures::measured(
            probe.pid(),
            probe.cost(&before, &after, connections),
            &after,
        ),
        _ => ServerFigures::default(),
    };
    Ok(ConnectReport {
        id: RunId::new("connect", target),
        concurrency,
        duration_s: elapsed.as_secs_f64(),
        connections,
        connections_per_s: connections as f64 / elapsed.as_secs_f64(),
        latency: latencies.summary(),
        errors: tally.total(),
        connects_failed: tally.connect_failed,
        errors_by_kind: tally,
        tls: TlsFigures::of(&client),
        server,
    })
}
