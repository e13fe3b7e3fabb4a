//! Opening many connections without overrunning the server: at most `pace` handshakes in
//! flight, each connection counted as established only once its first round trip came back
//! (which proves the server accepted it, not just that the kernel queued it).
//!
//! Dialing thousands at once would overflow the listener's SYN and accept queues; Linux then
//! drops SYNs and the client retries after a second, so the run would measure the retry
//! timer instead of the server.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::echo::{Echo, Next};
use crate::error::BenchError;

/// How long one turn of the poller may wait while connecting: the pace of progress updates.
const TURN: Duration = Duration::from_millis(100);

/// What opening the connections achieved.
#[derive(Debug, Clone, Copy)]
pub struct Established {
    /// Connections up and idle now.
    pub open: u64,
    /// Connections that failed before their first round trip completed.
    pub failed: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Opens `count` connections through `client`, each left idle after its first round trip.
/// Failures are counted in its tally.
///
/// Refuses to go on ([`BenchError::NoConnection`], or [`BenchError::NoTlsSession`]) when not
/// one handshake succeeded, since then there is no server to measure; a server that accepts
/// but answers wrongly is measured (as errors).
pub fn establish(
    client: &mut Client<Echo>,
    count: u64,
    pace: u64,
) -> Result<Established, BenchError> {
    let started = Instant::now();
    client.scenario.then = Next::Idle;
    let mut dialed = 0u64;
    loop {
        // Dial only between turns (see `client.rs`).
        while dialed < count && in_flight(client) < pace {
            dialed += 1;
            client.dial();
        }
        if in_flight(client) == 0 {
            break;
        }
        client.turn(TURN)?;
    }
    client.reached()?;
    Ok(Established {
        open: client.established(),
        failed: client.scenario.failed_first,
        elapsed: started.elapsed(),
    })
}

/// Handshakes (and first round trips) under way.
fn in_flight(client: &Client<Echo>) -> u64 {
    client.open() as u64 - client.established()
}
