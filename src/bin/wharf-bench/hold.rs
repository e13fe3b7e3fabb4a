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

use crate::cli::HoldArgs;
use crate::echo::Next;
use crate::error::BenchError;
use crate::kernel;
use crate::message::Message;
use crate::procs::{Plan, Step};
use crate::report::{HoldReport, RunId, TlsFigures};
use crate::server::{ServerProbe, ServerSample};
use crate::session;
use crate::stream::tls_config;

/// Runs `hold` as the command line asks: in this process, spread over client processes, or
/// as one of them. Memory is read before any connection is opened (before any client
/// process starts), and again once every connection of every process has been held for
/// the whole `--duration`, before any closes.
pub fn run(args: &HoldArgs) -> Result<HoldReport, BenchError> {
    // Read (and so checked) before any client process starts.
    let tls = tls_config(&args.tls, args.target.peer.addr)?;
    let plan = Plan::new(&args.spread, &args.target, u64::from(args.conns))?;
    let id = RunId::new("hold", plan.target.peer.addr, &args.target.output);
    let client_procs = plan.procs();
    let probe = ServerProbe::of(plan.target.peer.server_pid)?;
    let before = Memory::sample(probe.as_ref())?;
    let mut holding = Memory::default();
    let mode = ("hold", args.duration);
    let held = session::run(plan, Message::probe(), tls, mode, Next::Idle, |step| {
        if step == Step::Measured {
            // Read while every connection is still open: this is the figure the run is for.
            holding = Memory::sample(probe.as_ref())?;
        }
        Ok(())
    })?;
    let per_conn = |before: Option<u64>, holding: Option<u64>| match (before, holding) {
        (Some(before), Some(holding)) if held.open > 0 => {
            Some((holding as f64 - before as f64) / held.open as f64)
        }
        _ => None,
    };
    if probe.is_some() && held.open < MIN_MEMORY_SAMPLE {
        eprintln!(
            "wharf-bench: warning: {} connections are too few for a memory figure per \
             connection: memory moves in 4 KiB pages and allocator arenas, so hold at least \
             {MIN_MEMORY_SAMPLE} (10,000 for a figure good to a few bytes)",
            held.open
        );
    }
    if let (Some(before), Some(holding)) = (before.server, holding.server) {
        if before.processes != holding.processes {
            eprintln!(
                "wharf-bench: warning: the server had {} processes before the hold and {} \
                 during it, so its memory per connection compares different processes",
                before.processes, holding.processes
            );
        }
    }
    let rss = |memory: Memory| memory.server.map(|sample| sample.rss_bytes);
    Ok(HoldReport {
        id,
        connections: u64::from(args.conns),
        established: held.open,
        connects_failed: held.connects_failed,
        errors: held.errors_by_kind.total(),
        establish_s: held.establish_s,
        hold_s: held.seconds,
        errors_by_kind: held.errors_by_kind,
        client_procs,
        tls: TlsFigures {
            tls: args.tls.tls,
            tls_version: held.tls_version,
        },
        server_pid: probe.as_ref().map(ServerProbe::pid),
        server_procs: holding.server.map(|sample| sample.processes),
        server_rss_before_bytes: rss(before),
        server_rss_holding_bytes: rss(holding),
        server_rss_per_conn_bytes: per_conn(rss(before), rss(holding)),
        kernel_slab_before_bytes: before.slab_bytes,
        kernel_slab_holding_bytes: holding.slab_bytes,
        kernel_slab_per_conn_bytes: per_conn(before.slab_bytes, holding.slab_bytes),
    })
}

/// Fewer connections than this make a per-connection memory figure mostly page rounding.
const MIN_MEMORY_SAMPLE: u64 = 1000;

/// The memory a hold is about, at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    server: Option<ServerSample>,
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
