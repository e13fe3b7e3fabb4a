//! `hold`: open many connections, check each with one round trip, then hold them idle and
//! watch that none is dropped. With `--server-pid`, the server's resident memory before the
//! first connection and at the end of the hold gives its memory per idle connection.

use std::time::{Duration, Instant};

use crate::cli::HoldArgs;
use crate::client::{Client, Next, Outcome};
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::establish::establish;
use crate::failure::Tally;
use crate::limits::preflight;
use crate::message::Message;
use crate::progress::Progress;
use crate::report::{HoldReport, RunId};
use crate::server::ServerProbe;

/// Longest wait for events in one turn while holding.
const TURN: Duration = Duration::from_millis(100);

/// Runs `hold` as the command line asks.
pub fn run(args: &HoldArgs) -> Result<HoldReport, BenchError> {
    let target = &args.target;
    let connections = u64::from(args.conns);
    preflight(target, connections)?;
    let probe = target.server_pid.map(ServerProbe::new).transpose()?;
    let before = probe.as_ref().map(ServerProbe::sample).transpose()?;
    let dialer = Dialer::new(target.addr, target.src.as_ref());
    let mut client = Client::new(dialer, Message::probe(), target.timeout)?;
    let mut tally = Tally::default();
    let established = establish(
        &mut client,
        connections,
        u64::from(target.connect_pace),
        &mut tally,
    )?;

    let progress = Progress::new("hold", args.duration);
    let start = Instant::now();
    let end = start + args.duration;
    loop {
        let now = Instant::now();
        if now >= end || client.open() == 0 {
            break;
        }
        // Idle connections only raise events when the server drops them (or talks unasked).
        client.turn((end - now).min(TURN), &mut |_, outcome| {
            if let Outcome::Failed { failure, .. } = outcome {
                tally.record(&failure);
            }
            Next::Close
        })?;
        let open = client.open();
        progress.update(now - start, || {
            format!("{open} open, {} errors", tally.total())
        });
    }
    let held = start.elapsed();
    // Read while every connection is still open: this is the figure the run is for.
    let holding = probe.as_ref().map(ServerProbe::sample).transpose()?;
    progress.finish();
    let open = client.open() as u64;
    client.close_all();

    let rss_before = before.map(|sample| sample.rss_bytes);
    let rss_holding = holding.map(|sample| sample.rss_bytes);
    let per_conn = match (rss_before, rss_holding) {
        (Some(before), Some(holding)) if open > 0 => {
            Some((holding as f64 - before as f64) / open as f64)
        }
        _ => None,
    };
    Ok(HoldReport {
        id: RunId::new("hold", target),
        connections,
        established: open,
        connects_failed: established.failed,
        errors: tally.total(),
        establish_s: established.elapsed.as_secs_f64(),
        hold_s: held.as_secs_f64(),
        errors_by_kind: tally,
        server_pid: probe.as_ref().map(ServerProbe::pid),
        server_rss_before_bytes: rss_before,
        server_rss_holding_bytes: rss_holding,
        server_rss_per_conn_bytes: per_conn,
    })
}
