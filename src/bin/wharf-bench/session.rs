//! What `pingpong` and `hold` share: open the connections, then a timed interval of round
//! trips back to back (pingpong) or of idle connections (hold), in this process or spread
//! over client processes (`--procs`, see `procs.rs`), whose shares are merged.
//!
//! Opening many connections does not overrun the server: at most `--connect-pace`
//! handshakes are in flight, each connection counted as established only once its first
//! round trip came back (which proves the server accepted it, not just that the kernel
//! queued it). Dialing thousands at once would overflow the listener's SYN and accept
//! queues; Linux then drops SYNs and the client retries after a second, so the run would
//! measure the retry timer instead of the server.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::Client;
use crate::dial::Dialer;
use crate::echo::{note_version, Echo, Next};
use crate::error::BenchError;
use crate::failure::Tally;
use crate::fleet;
use crate::latency::Latencies;
use crate::message::Message;
use crate::procs::{Plan, Role, Step};
use crate::progress::Progress;
use crate::stream::TlsConfig;

/// Longest wait for events in one turn: how late the end of the run (or of connecting) may
/// be noticed, and the pace of progress updates.
const TURN: Duration = Duration::from_millis(50);

/// What the connections of one process did over a pingpong or a hold, or, merged, those of
/// every client process of a `--procs` run. A client process's report carries these
/// figures (under the names of its mode's report), and the parent reads them back.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Share {
    /// The measured (or held) interval, in seconds; merged, the longest.
    #[serde(rename = "duration_s", alias = "hold_s")]
    pub seconds: f64,
    /// Round trips timed in the interval.
    pub round_trips: u64,
    /// Round trips per second. Merged, the sum: the processes timed their own intervals,
    /// side by side, so their rates add up.
    pub round_trips_per_s: f64,
    /// Connections whose first round trip came back.
    #[serde(rename = "connects_established")]
    pub up: u64,
    /// Connections still open at the end of the interval.
    #[serde(rename = "established")]
    pub open: u64,
    /// Connections that failed before their first round trip came back.
    pub connects_failed: u64,
    /// Time to open all connections, in seconds; merged, the longest.
    pub establish_s: f64,
    pub errors_by_kind: Tally,
    /// The TLS version the handshakes agreed on: one, "mixed", or none.
    pub tls_version: Option<String>,
    /// The round trips' latencies.
    #[serde(rename = "latency_histogram")]
    pub latencies: Latencies,
}

impl Share {
    /// The shares of every client process as one.
    fn merge(shares: Vec<Share>) -> Share {
        let mut all = Share::default();
        for share in shares {
            all.seconds = all.seconds.max(share.seconds);
            all.round_trips += share.round_trips;
            all.round_trips_per_s += share.round_trips_per_s;
            all.up += share.up;
            all.open += share.open;
            all.connects_failed += share.connects_failed;
            all.establish_s = all.establish_s.max(share.establish_s);
            all.errors_by_kind.add(&share.errors_by_kind);
            note_version(&mut all.tls_version, share.tls_version.as_deref());
            all.latencies.add(&share.latencies);
        }
        all
    }
}

/// Runs a pingpong (`then` is [`Next::Send`]) or a hold ([`Next::Idle`]) named `mode`, over
/// connections that each exchange `message`, as `plan` says. `at` is called when every
/// connection of every process is up, before the interval of `duration`, and after it,
/// while every connection is still open: where the server is read.
pub fn run(
    plan: Plan,
    message: Message,
    tls: Option<TlsConfig>,
    (mode, duration): (&str, Duration),
    then: Next,
    mut at: impl FnMut(Step) -> Result<(), BenchError>,
) -> Result<Share, BenchError> {
    let Plan {
        target,
        connections,
        role,
    } = plan;
    let mut parent = match role {
        Role::Parent(procs) => {
            let shares = fleet::spread(&target, connections, procs, (mode, duration), at)?;
            return Ok(Share::merge(shares));
        }
        Role::Alone => None,
        Role::Child(parent) => Some(parent),
    };
    let child = parent.is_some();
    let mut reach = |step| {
        at(step)?;
        parent.as_mut().map_or(Ok(()), |parent| parent.reach(step))
    };
    let dialer = Dialer::new(target.peer.addr, target.peer.src.as_ref());
    let mut client = Echo::new(dialer, message, target.timeout, tls)?;
    let established = Instant::now();
    establish(&mut client, connections, u64::from(target.connect_pace))?;
    let establish_s = established.elapsed().as_secs_f64();
    let up = client.established();
    reach(Step::Established)?;

    // A client process shows no bar: its parent shows one for all.
    let progress = if child {
        Progress::hidden()
    } else {
        Progress::new(mode, duration)
    };

    let start = Instant::now();
    client.scenario.then = then;
    if then == Next::Send {
        client.send_idle(start);
    }
    client.run_until(start + duration, |client, now| {
        let (echo, open) = (&client.scenario, client.open());
        let errors = echo.tally.total();
        match then {
            Next::Send => {
                let round_trips = echo.latencies.len();
                progress.rate(now - start, round_trips, "round trips", (errors, "errors"));
            }
            // Idle connections only raise events when the server drops them (or talks).
            _ => progress.update(now - start, || format!("{open} open, {errors} errors")),
        }
        (open > 0).then_some(TURN)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    reach(Step::Measured)?;
    progress.finish();
    let open = client.open() as u64;
    client.close_all();

    let echo = client.scenario;
    Ok(Share {
        seconds,
        round_trips: echo.latencies.len(),
        round_trips_per_s: echo.latencies.len() as f64 / seconds,
        up,
        open,
        connects_failed: echo.failed_first,
        establish_s,
        errors_by_kind: echo.tally,
        tls_version: echo.tls_version,
        latencies: echo.latencies,
    })
}

/// Opens `count` connections through `client`, at most `pace` handshakes at a time, each
/// left idle after its first round trip. Failures are counted in its tally.
///
/// Refuses to go on ([`BenchError::Unreachable`]) when not one handshake succeeded, since then there is no server to measure; a server that accepts
/// but answers wrongly is measured (as errors).
fn establish(client: &mut Client<Echo>, count: u64, pace: u64) -> Result<(), BenchError> {
    client.scenario.then = Next::Idle;
    let in_flight = |client: &Client<Echo>| client.open() as u64 - client.established();
    let mut dialed = 0u64;
    loop {
        // Dial only between turns (see `client.rs`).
        while dialed < count && in_flight(client) < pace {
            dialed += 1;
            client.dial();
        }
        if in_flight(client) == 0 {
            return client.reached();
        }
        client.turn(TURN)?;
    }
}
