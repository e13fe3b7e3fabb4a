//! Opening many connections without overrunning the server: at most `pace` handshakes in
//! flight, each connection counted as established only once its first round trip came back
//! (which proves the server accepted it, not just that the kernel queued it).
//!
//! Dialing thousands at once would overflow the listener's SYN and accept queues; Linux then
//! drops SYNs and the client retries after a second, so the run would measure the retry
//! timer instead of the server.

use std::time::{Duration, Instant};

use crate::client::{Client, Next, Outcome};
use crate::error::BenchError;
use crate::failure::Tally;

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
/// Failures are counted in `tally`.
///
/// Refuses to go on ([`BenchError::NoConnection`], or [`BenchError::NoTlsSession`]) when not
/// one handshake succeeded, since then there is no server to measure; a server that accepts but answers wrongly is measured
/// (as errors).
pub fn establish(
    client: &mut Client,
    count: u64,
    pace: u64,
    tally: &mut Tally,
) -> Result<Established, BenchError> {
    let started = Instant::now();
    let (mut dialed, mut open, mut failed, mut in_flight) = (0u64, 0u64, 0u64, 0u64);
    while open + failed < count || in_flight > 0 {
        // Dial only between turns (see `Client::turn`).
        while dialed < count && in_flight < pace {
            dialed += 1;
            match client.dial() {
                Ok(_) => in_flight += 1,
                Err(failure) => {
                    failed += 1;
                    tally.record(&failure);
                }
            }
        }
        if in_flight == 0 {
            break;
        }
        client.turn(TURN, &mut |_, outcome| match outcome {
            Outcome::RoundTrip { .. } => {
                in_flight -= 1;
                open += 1;
                Next::Idle
            }
            Outcome::Failed { failure, first } => {
                tally.record(&failure);
                if first {
                    in_flight -= 1;
                    failed += 1;
                } else {
                    open -= 1; // an established connection the server dropped meanwhile
                }
                Next::Close
            }
        })?;
    }
    if open == 0 {
        if let Some(error) = BenchError::unreachable(client.target(), tally) {
            return Err(error);
        }
    }
    Ok(Established {
        open,
        failed,
        elapsed: started.elapsed(),
    })
}
