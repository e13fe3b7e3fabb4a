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
//! up their round trips and merges their latency histograms (`session.rs`). The server is
//! sampled after every connection of every process is up and before they start, and again
//! once all of them have stopped, so its CPU time is divided by the round trips of all of
//! them over one interval.

use crate::cli::{Load, PingpongArgs, Target};
use crate::echo::Next;
use crate::error::BenchError;
use crate::limits::preflight;
use crate::message::Message;
use crate::procs::{Plan, Role, Step};
use crate::report::{PingpongReport, RunId, TlsFigures};
use crate::server::{self, ServerProbe};
use crate::session::{self, Share};
use crate::stream::{tls_config, TlsConfig};

/// Runs `pingpong` as the command line asks: in this process, spread over client processes,
/// or as one of them.
pub fn run(args: &PingpongArgs) -> Result<PingpongReport, BenchError> {
    // Read (and so checked) before any client process starts.
    let tls = tls_config(&args.tls, args.target.peer.addr)?;
    let plan = Plan::new(&args.spread, &args.target, u64::from(args.conns))?;
    measure(plan, &args.load, tls)
}

/// Runs pingpong over `connections` connections to `target` in this process (the step of
/// `sweep`).
pub fn run_at(
    target: &Target,
    connections: u64,
    load: &Load,
) -> Result<PingpongReport, BenchError> {
    preflight(target, connections, None)?;
    measure(
        Plan::here(target.clone(), connections, Role::Alone),
        load,
        None,
    )
}

/// Pingpong as `plan` says. A client process of a `--procs` run gives its latency histogram
/// in its report, for the parent to merge.
fn measure(plan: Plan, load: &Load, tls: Option<TlsConfig>) -> Result<PingpongReport, BenchError> {
    let id = RunId::new("pingpong", plan.target.peer.addr, &plan.target.output);
    let (connections, client_procs) = (plan.connections, plan.procs());
    let child = matches!(plan.role, Role::Child(_));
    let probe = ServerProbe::of(plan.target.peer.server_pid)?;
    let (mut before, mut after) = (None, None);
    let message = Message::new(load.size as usize, load.line);
    let size = message.size() as u64;
    let tls_asked = tls.is_some();
    let mode = ("pingpong", load.duration);
    let share: Share = session::run(plan, message, tls, mode, Next::Send, |step| {
        let sample = probe.as_ref().map(ServerProbe::sample).transpose()?;
        match step {
            Step::Established => before = sample,
            Step::Measured => after = sample,
        }
        Ok(())
    })?;
    let round_trips = share.round_trips;
    Ok(PingpongReport {
        id,
        connections,
        size,
        line: load.line,
        duration_s: share.seconds,
        round_trips,
        round_trips_per_s: share.round_trips_per_s,
        mb_per_s: share.round_trips_per_s * size as f64 / 1e6,
        latency: share.latencies.summary(),
        errors: share.errors_by_kind.total(),
        connects_established: share.up,
        connects_failed: share.connects_failed,
        establish_s: share.establish_s,
        tls: TlsFigures {
            tls: tls_asked,
            tls_version: share.tls_version,
        },
        errors_by_kind: share.errors_by_kind,
        client_procs,
        server: server::figures(probe.as_ref(), before, after, round_trips),
        latency_histogram: child.then(|| share.latencies.recorded()),
    })
}
