//! `pingpong`: every connection keeps exactly one message in flight; each reply is checked
//! byte for byte and timed.
//!
//! All connections are opened (and checked with one round trip) before the clock starts, so
//! the measured interval sees only round trips, and the server's CPU counters are read at its
//! two ends. A connection that fails is counted and not replaced: the run goes on with the
//! others, and the report says how many failed and why.

use std::time::{Duration, Instant};

use crate::cli::{Load, PingpongArgs, Target};
use crate::client::{Client, Next, Outcome};
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::establish::establish;
use crate::failure::Tally;
use crate::latency::Latencies;
use crate::limits::preflight;
use crate::message::Message;
use crate::progress::Progress;
use crate::report::{PingpongReport, RunId, ServerFigures};
use crate::server::ServerProbe;

/// Longest wait for events in one turn: how late the end of the run may be noticed.
const TURN: Duration = Duration::from_millis(50);

/// Runs `pingpong` as the command line asks.
pub fn run(args: &PingpongArgs) -> Result<PingpongReport, BenchError> {
    run_at(&args.target, u64::from(args.conns), &args.load)
}

/// Runs pingpong over `connections` connections to `target` (also the step of `sweep`).
pub fn run_at(
    target: &Target,
    connections: u64,
    load: &Load,
) -> Result<PingpongReport, BenchError> {
    preflight(target, connections)?;
    let probe = target.server_pid.map(ServerProbe::new).transpose()?;
    let dialer = Dialer::new(target.addr, target.src.as_ref());
    let message = Message::new(load.size as usize, load.line);
    let mut client = Client::new(dialer, message, target.timeout)?;
    let mut tally = Tally::default();
    let established = establish(
        &mut client,
        connections,
        u64::from(target.connect_pace),
        &mut tally,
    )?;

    let mut latencies = Latencies::new();
    let progress = Progress::new("pingpong", load.duration);
    let before = probe.as_ref().map(ServerProbe::sample).transpose()?;
    let start = Instant::now();
    let end = start + load.duration;
    client.send_idle(start);
    loop {
        let now = Instant::now();
        if now >= end || client.open() == 0 {
            break;
        }
        client.turn((end - now).min(TURN), &mut |_, outcome| match outcome {
            Outcome::RoundTrip { latency, .. } => {
                latencies.record(latency);
                Next::Send
            }
            Outcome::Failed { failure, .. } => {
                tally.record(&failure);
                Next::Close
            }
        })?;
        let elapsed = now - start;
        progress.update(elapsed, || {
            let rate = latencies.len() as f64 / elapsed.as_secs_f64().max(1e-3);
            format!("{rate:.0} round trips/s, {} errors", tally.total())
        });
    }
    let elapsed = start.elapsed();
    let after = probe.as_ref().map(ServerProbe::sample).transpose()?;
    progress.finish();
    client.close_all();

    let round_trips = latencies.len();
    let seconds = elapsed.as_secs_f64();
    let size = client.message().size() as u64;
    let server = match (&probe, before, after) {
        (Some(probe), Some(before), Some(after)) => ServerFigures::measured(
            probe.pid(),
            probe.cost(&before, &after, round_trips),
            after.rss_bytes,
        ),
        _ => ServerFigures::default(),
    };
    Ok(PingpongReport {
        id: RunId::new("pingpong", target),
        connections,
        size,
        line: load.line,
        duration_s: seconds,
        round_trips,
        round_trips_per_s: round_trips as f64 / seconds,
        mb_per_s: (round_trips * size) as f64 / seconds / 1e6,
        latency: latencies.summary(),
        errors: tally.total(),
        connects_established: established.open,
        connects_failed: established.failed,
        establish_s: established.elapsed.as_secs_f64(),
        errors_by_kind: tally,
        server,
    })
}
