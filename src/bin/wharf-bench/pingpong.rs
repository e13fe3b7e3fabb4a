//! `pingpong`: every connection keeps exactly one message in flight; each reply is checked
//! byte for byte and timed.
//!
//! All connections are opened (and checked with one round trip) before the clock starts, so
//! the measured interval sees only round trips (with `--tls`, only round trips over
//! established sessions: every handshake is done by then), and the server's CPU counters are read at its
//! two ends. A connection that fails is counted and not replaced: the run goes on with the
//! others, and the report says how many failed and why.
//!
//! With `--procs N` the connections are spread over N client processes (see `procs.rs`),
//! which all start measuring once every connection of every process is up; the parent adds
//! up their round trips and merges their latency histograms.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cli::{Load, PingpongArgs, Target};
use crate::dial::Dialer;
use crate::echo::{Echo, Next};
use crate::error::BenchError;
use crate::establish::establish;
use crate::failure::Tally;
use crate::fleet;
use crate::latency::Latencies;
use crate::limits::{preflight, preflight_spread};
use crate::message::Message;
use crate::procs::{self, Parent, Role, Step, SLACK};
use crate::progress::Progress;
use crate::report::{PingpongReport, RunId, ServerFigures, TlsFigures};
use crate::server::ServerProbe;
use crate::stream::{tls_config, TlsConfig};

/// Longest wait for events in one turn: how late the end of the run may be noticed.
const TURN: Duration = Duration::from_millis(50);

/// Runs `pingpong` as the command line asks: in this process, spread over client processes,
/// or as one of them.
pub fn run(args: &PingpongArgs) -> Result<PingpongReport, BenchError> {
    let connections = u64::from(args.conns);
    // Read (and so checked) before any client process starts.
    let tls = tls_config(&args.tls, args.target.addr)?;
    match procs::role(&args.spread, connections) {
        Role::Alone => {
            preflight_spread(&args.target, connections, 1)?;
            measure(&args.target, connections, &args.load, tls, None)
        }
        Role::Parent { procs } => spread(args, procs),
        Role::Child(child) => {
            let target = child.target(&args.target);
            let share = child.share(connections);
            preflight(&target, share)?;
            measure(&target, share, &args.load, tls, Some(&mut Parent::new()))
        }
    }
}

/// Runs pingpong over `connections` connections to `target` in this process (the step of
/// `sweep`).
pub fn run_at(
    target: &Target,
    connections: u64,
    load: &Load,
) -> Result<PingpongReport, BenchError> {
    preflight(target, connections)?;
    measure(target, connections, load, None, None)
}

/// Pingpong in this process. As a client process of a `--procs` run (`parent`), it waits
/// for the parent before and after the measured interval, and its report carries its
/// latency histogram.
fn measure(
    target: &Target,
    connections: u64,
    load: &Load,
    tls: Option<TlsConfig>,
    mut parent: Option<&mut Parent>,
) -> Result<PingpongReport, BenchError> {
    let probe = target.server_pid.map(ServerProbe::new).transpose()?;
    let dialer = Dialer::new(target.addr, target.src.as_ref());
    let message = Message::new(load.size as usize, load.line);
    let mut client = Echo::new(dialer, message, target.timeout, tls)?;
    let established = establish(&mut client, connections, u64::from(target.connect_pace))?;

    if let Some(parent) = parent.as_deref_mut() {
        parent.reach(Step::Established)?;
    }

    let progress = match parent {
        Some(_) => Progress::hidden(),
        None => Progress::new("pingpong", load.duration),
    };
    let before = probe.as_ref().map(ServerProbe::sample).transpose()?;
    let start = Instant::now();
    client.scenario.then = Next::Send;
    client.send_idle(start);
    client.run_until(start + load.duration, |client, now| {
        let echo = &client.scenario;
        let errors = (echo.tally.total(), "errors");
        progress.rate(now - start, echo.latencies.len(), "round trips", errors);
        (client.open() > 0).then_some(TURN)
    })?;
    let elapsed = start.elapsed();
    let after = probe.as_ref().map(ServerProbe::sample).transpose()?;
    progress.finish();
    if let Some(parent) = parent.as_deref_mut() {
        parent.reach(Step::Measured)?;
    }
    client.close_all();

    let echo = client.scenario;
    let round_trips = echo.latencies.len();
    let seconds = elapsed.as_secs_f64();
    let size = echo.message().size() as u64;
    Ok(PingpongReport {
        id: RunId::new("pingpong", target),
        connections,
        size,
        line: load.line,
        duration_s: seconds,
        round_trips,
        round_trips_per_s: round_trips as f64 / seconds,
        mb_per_s: (round_trips * size) as f64 / seconds / 1e6,
        latency: echo.latencies.summary(),
        errors: echo.tally.total(),
        connects_established: established.open,
        connects_failed: established.failed,
        establish_s: established.elapsed.as_secs_f64(),
        tls: echo.tls_figures(),
        errors_by_kind: echo.tally,
        client_procs: 1,
        server: ServerFigures::between(probe.as_ref(), before, after, round_trips),
        latency_histogram: parent.is_some().then(|| echo.latencies.recorded()),
    })
}

/// What the parent of a `--procs` run reads from the report of each client process.
#[derive(Debug, Deserialize)]
struct Share {
    duration_s: f64,
    round_trips: u64,
    round_trips_per_s: f64,
    connects_established: u64,
    connects_failed: u64,
    establish_s: f64,
    errors_by_kind: Tally,
    #[serde(default)]
    tls_version: Option<String>,
    latency_histogram: Vec<(u64, u64)>,
}

/// Pingpong over `procs` client processes. The server is sampled after every connection of
/// every process is up and before they start, and again once all of them have stopped, so
/// its CPU time is divided by the round trips of all of them over one interval.
fn spread(args: &PingpongArgs, procs: u32) -> Result<PingpongReport, BenchError> {
    let target = &args.target;
    let connections = u64::from(args.conns);
    preflight_spread(target, connections, procs)?;
    let probe = target.server_pid.map(ServerProbe::new).transpose()?;
    let (mut before, mut after) = (None, None);
    let mode = ("pingpong", args.load.duration);
    let shares: Vec<Share> = fleet::spread(target, connections, procs, mode, SLACK, |step| {
        let sample = probe.as_ref().map(ServerProbe::sample).transpose()?;
        match step {
            Step::Established => before = sample,
            Step::Measured => after = sample,
        }
        Ok(())
    })?;

    let mut latencies = Latencies::new();
    let mut tally = Tally::default();
    for share in &shares {
        latencies.add_recorded(&share.latency_histogram);
        tally.add(&share.errors_by_kind);
    }
    let max = |figure: fn(&Share) -> f64| shares.iter().map(figure).fold(0.0, f64::max);
    let round_trips = shares.iter().map(|share| share.round_trips).sum();
    // Each process timed its own interval; they ran side by side, so their rates add up.
    let round_trips_per_s: f64 = shares.iter().map(|share| share.round_trips_per_s).sum();
    let size = u64::from(args.load.size);
    Ok(PingpongReport {
        id: RunId::new("pingpong", target),
        connections,
        size,
        line: args.load.line,
        duration_s: max(|share| share.duration_s),
        round_trips,
        round_trips_per_s,
        mb_per_s: round_trips_per_s * size as f64 / 1e6,
        latency: latencies.summary(),
        errors: tally.total(),
        connects_established: shares.iter().map(|share| share.connects_established).sum(),
        connects_failed: shares.iter().map(|share| share.connects_failed).sum(),
        establish_s: max(|share| share.establish_s),
        errors_by_kind: tally,
        client_procs: procs,
        tls: TlsFigures::merged(
            args.tls.tls,
            shares.iter().map(|share| share.tls_version.as_deref()),
        ),
        server: ServerFigures::between(probe.as_ref(), before, after, round_trips),
        latency_histogram: None,
    })
}
