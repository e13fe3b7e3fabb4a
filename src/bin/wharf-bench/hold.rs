//! `hold`: open many connections, check each with one round trip, then hold them idle and
//! watch that none is dropped. Memory is read before the first connection and at the end of
//! the hold, while every connection is still open: the server's resident memory (with
//! `--server-pid`, summed over its processes) and the kernel's slab memory, each divided by
//! the connections held.
//!
//! With `--tls` each connection completes a full TLS handshake before its check, so the
//! memory per connection is that of an idle TLS session (the server's buffers and session
//! state), not of a bare socket.
//!
//! With `--procs N` the connections are spread over N client processes (see `procs.rs`), all
//! holding theirs when the memory is read, so a run can hold more connections than one
//! process may open files.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cli::{HoldArgs, Target};
use crate::dial::Dialer;
use crate::echo::Echo;
use crate::error::BenchError;
use crate::establish::establish;
use crate::failure::Tally;
use crate::fleet;
use crate::kernel;
use crate::limits::{preflight, preflight_spread};
use crate::message::Message;
use crate::procs::{self, Parent, Role, Step};
use crate::progress::Progress;
use crate::report::{HoldReport, RunId, TlsFigures};
use crate::server::{ServerProbe, ServerSample};
use crate::stream::{tls_config, TlsConfig};

/// Longest wait for events in one turn while holding.
const TURN: Duration = Duration::from_millis(100);

/// Runs `hold` as the command line asks: in this process, spread over client processes, or
/// as one of them.
pub fn run(args: &HoldArgs) -> Result<HoldReport, BenchError> {
    let connections = u64::from(args.conns);
    // Read (and so checked) before any client process starts.
    let tls = tls_config(&args.tls, args.target.addr)?;
    match procs::role(&args.spread, connections) {
        Role::Alone => {
            let target = &args.target;
            preflight_spread(target, connections, 1)?;
            let probe = target.server_pid.map(ServerProbe::new).transpose()?;
            let before = Memory::sample(probe.as_ref())?;
            let held = hold(
                target,
                connections,
                args.duration,
                tls,
                probe.as_ref(),
                None,
            )?;
            Ok(report(target, connections, &held, probe.as_ref(), before))
        }
        Role::Parent { procs } => spread(args, procs),
        Role::Child(child) => {
            let target = child.target(&args.target);
            let share = child.share(connections);
            preflight(&target, share)?;
            let parent = &mut Parent::new();
            let held = hold(&target, share, args.duration, tls, None, Some(parent))?;
            Ok(report(&target, share, &held, None, Memory::default()))
        }
    }
}

/// What the connections of one process did over a hold (or, added up, of all of them); a
/// client process's report gives these figures to its parent.
#[derive(Debug, Deserialize)]
struct Held {
    /// Connections up and still open at the end of the hold.
    established: u64,
    connects_failed: u64,
    establish_s: f64,
    hold_s: f64,
    errors_by_kind: Tally,
    /// Client processes that held them.
    client_procs: u32,
    /// Whether they spoke TLS, and the version.
    #[serde(flatten)]
    tls: TlsFigures,
    /// The memory read while they were all open.
    #[serde(skip)]
    holding: Memory,
}

/// The memory a hold is about, at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    /// The server's processes (`--server-pid`).
    server: Option<ServerSample>,
    /// The kernel's slab caches, machine-wide.
    slab_bytes: Option<u64>,
}

impl Memory {
    fn sample(probe: Option<&ServerProbe>) -> Result<Memory, BenchError> {
        Ok(Memory {
            server: probe.map(ServerProbe::sample).transpose()?,
            slab_bytes: kernel::slab_bytes(),
        })
    }
}

/// Opens and holds `connections` connections to `target` in this process, and reads the
/// memory (of the server `probe` reads, and the kernel's) at the end of the hold. As a client
/// process of a `--procs` run (`parent`), it waits for the parent before and after the hold
/// instead, and the parent reads the memory.
fn hold(
    target: &Target,
    connections: u64,
    duration: Duration,
    tls: Option<TlsConfig>,
    probe: Option<&ServerProbe>,
    mut parent: Option<&mut Parent>,
) -> Result<Held, BenchError> {
    let dialer = Dialer::new(target.addr, target.src.as_ref());
    let mut client = Echo::new(dialer, Message::probe(), target.timeout, tls)?;
    let established = establish(&mut client, connections, u64::from(target.connect_pace))?;
    if let Some(parent) = parent.as_deref_mut() {
        parent.reach(Step::Established)?;
    }

    let progress = match parent {
        Some(_) => Progress::hidden(),
        None => Progress::new("hold", duration),
    };
    let start = Instant::now();
    // Idle connections only raise events when the server drops them (or talks unasked).
    client.run_until(start + duration, |client, now| {
        let open = client.open();
        progress.update(now - start, || {
            format!("{open} open, {} errors", client.scenario.tally.total())
        });
        (open > 0).then_some(TURN)
    })?;
    let hold_s = start.elapsed().as_secs_f64();
    // Read while every connection is still open: this is the figure the run is for.
    let holding = match parent {
        Some(parent) => {
            parent.reach(Step::Measured)?;
            Memory::default()
        }
        None => Memory::sample(probe)?,
    };
    progress.finish();
    let open = client.open() as u64;
    client.close_all();
    Ok(Held {
        established: open,
        connects_failed: established.failed,
        establish_s: established.elapsed.as_secs_f64(),
        hold_s,
        tls: client.scenario.tls_figures(),
        errors_by_kind: client.scenario.tally,
        client_procs: 1,
        holding,
    })
}

/// A hold over `procs` client processes: memory is read before any of them starts, and
/// again once every one has held its connections for the whole `--duration`, before any
/// closes one.
fn spread(args: &HoldArgs, procs: u32) -> Result<HoldReport, BenchError> {
    let target = &args.target;
    let connections = u64::from(args.conns);
    preflight_spread(target, connections, procs)?;
    let probe = target.server_pid.map(ServerProbe::new).transpose()?;
    let before = Memory::sample(probe.as_ref())?;
    let mut holding = Memory::default();
    let mode = ("hold", args.duration);
    let within = procs::close_within(connections);
    let shares: Vec<Held> = fleet::spread(target, connections, procs, mode, within, |step| {
        if step == Step::Measured {
            holding = Memory::sample(probe.as_ref())?;
        }
        Ok(())
    })?;

    let mut held = Held {
        established: 0,
        connects_failed: 0,
        establish_s: 0.0,
        hold_s: 0.0,
        errors_by_kind: Tally::default(),
        client_procs: procs,
        tls: TlsFigures::merged(
            args.tls.tls,
            shares.iter().map(|share| share.tls.tls_version.as_deref()),
        ),
        holding,
    };
    for share in &shares {
        held.established += share.established;
        held.connects_failed += share.connects_failed;
        held.establish_s = held.establish_s.max(share.establish_s);
        held.hold_s = held.hold_s.max(share.hold_s);
        held.errors_by_kind.add(&share.errors_by_kind);
    }
    Ok(report(target, connections, &held, probe.as_ref(), before))
}

/// Fewer connections than this make a per-connection memory figure mostly page rounding.
const MIN_MEMORY_SAMPLE: u64 = 1000;

/// The report of a hold of `connections` to `target`, with the memory `before` it.
fn report(
    target: &Target,
    connections: u64,
    held: &Held,
    probe: Option<&ServerProbe>,
    before: Memory,
) -> HoldReport {
    let per_conn = |before: Option<u64>, holding: Option<u64>| match (before, holding) {
        (Some(before), Some(holding)) if held.established > 0 => {
            Some((holding as f64 - before as f64) / held.established as f64)
        }
        _ => None,
    };
    if probe.is_some() && held.established < MIN_MEMORY_SAMPLE {
        eprintln!(
            "wharf-bench: warning: {} connections are too few for a memory figure per \
             connection: memory moves in 4 KiB pages and allocator arenas, so hold at least \
             {MIN_MEMORY_SAMPLE} (10,000 for a figure good to a few bytes)",
            held.established
        );
    }
    let rss_before = before.server.map(|sample| sample.rss_bytes);
    let rss_holding = held.holding.server.map(|sample| sample.rss_bytes);
    let slab_before = before.slab_bytes;
    let slab_holding = held.holding.slab_bytes;
    if let (Some(before), Some(holding)) = (before.server, held.holding.server) {
        if before.processes != holding.processes {
            eprintln!(
                "wharf-bench: warning: the server had {} processes before the hold and {} \
                 during it, so its memory per connection compares different processes",
                before.processes, holding.processes
            );
        }
    }
    HoldReport {
        id: RunId::new("hold", target),
        connections,
        established: held.established,
        connects_failed: held.connects_failed,
        errors: held.errors_by_kind.total(),
        establish_s: held.establish_s,
        hold_s: held.hold_s,
        errors_by_kind: held.errors_by_kind.clone(),
        client_procs: held.client_procs,
        tls: held.tls.clone(),
        server_pid: probe.map(ServerProbe::pid),
        server_procs: held.holding.server.map(|sample| sample.processes),
        server_rss_before_bytes: rss_before,
        server_rss_holding_bytes: rss_holding,
        server_rss_per_conn_bytes: per_conn(rss_before, rss_holding),
        kernel_slab_before_bytes: slab_before,
        kernel_slab_holding_bytes: slab_holding,
        kernel_slab_per_conn_bytes: per_conn(slab_before, slab_holding),
    }
}
