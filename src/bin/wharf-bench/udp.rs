//! `udp`: datagram round trips against a UDP echo server (RFC 862): each flow is one
//! connected, non-blocking socket with exactly one datagram in flight, all on one `mio::Poll`.
//!
//! UDP may drop a datagram, and then no answer ever comes: a flow waits at most the loss
//! timeout, counts the datagram lost and sends the next, so one loss never stalls a flow.
//! Every datagram carries its sequence number in its first 8 bytes (when it has 8), so the
//! echo of a datagram already given up on is told apart (`late`, not an error) from an echo
//! with wrong bytes (`mismatches`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::UdpSocket;
use mio::Interest;

use crate::cli::UdpArgs;
use crate::client::{nonblocking, After, Client, Key, Readiness, Scenario};
use crate::error::BenchError;
use crate::failure::Failure;
use crate::latency::Latencies;
use crate::limits::ensure_open_files;
use crate::progress::Progress;
use crate::report::{RunId, UdpReport};

/// Longest wait for events in one turn: how late the end of the run may be noticed.
const TURN: Duration = Duration::from_millis(10);

/// Bytes of the sequence number at the start of each datagram.
const SEQ_BYTES: usize = 8;

/// One socket and its datagram in flight.
struct Flow {
    socket: UdpSocket,
    seq: u64,
    /// Its bytes, as the echo must return them.
    expected: Vec<u8>,
    sent_at: Instant,
    /// Whether it went out (a failed send is retried at the loss timeout, not counted lost).
    sent: bool,
}

/// The flows' scenario on the client loop, and what a run has counted so far.
struct Flows {
    loss_timeout: Duration,
    /// The end of the measured interval: echoes after it are not timed, and nothing is sent.
    end: Instant,
    latencies: Latencies,
    lost: u64,
    late: u64,
    mismatches: u64,
    socket_errors: u64,
    first_error: Option<String>,
}

impl Flows {
    fn error(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    fn socket_error(&mut self, what: String) {
        self.socket_errors += 1;
        self.error(what);
    }
}

impl Scenario for Flows {
    type Conn = Flow;

    /// Every turn: the turn is short ([`TURN`]), and so the loss timeout is precise.
    const TICK: Option<Duration> = Some(Duration::ZERO);

    fn source(flow: &mut Flow) -> &mut dyn Source {
        &mut flow.socket
    }

    fn on_ready(
        &mut self,
        key: Key,
        flow: &mut Flow,
        _readiness: Readiness,
        scratch: &mut [u8],
    ) -> Result<After, Failure> {
        receive(self, flow, key, scratch);
        Ok(After::Stay)
    }

    /// A datagram without its echo for the loss timeout is lost: the flow sends the next.
    fn on_tick(&mut self, key: Key, flow: &mut Flow, now: Instant) -> Result<(), Failure> {
        if now.duration_since(flow.sent_at) >= self.loss_timeout {
            if flow.sent {
                self.lost += 1;
                self.error(format!(
                    "datagram {} of flow {key} not echoed within {:?}",
                    flow.seq, self.loss_timeout
                ));
            }
            send_next(self, flow, key, now);
        }
        Ok(())
    }

    /// Flows never fail (their errors are counted, and the flow goes on) and are closed
    /// only at the end.
    fn on_closed(&mut self, _key: Key, _flow: &mut Flow, _failure: Option<Failure>) {}
}

pub fn run(args: &UdpArgs) -> Result<UdpReport, BenchError> {
    let flows = u64::from(args.flows);
    ensure_open_files(flows, None)?;
    let size = args.size as usize;
    let mut client = Client::new(Flows {
        loss_timeout: args.loss_timeout,
        end: Instant::now(),
        latencies: Latencies::new(),
        lost: 0,
        late: 0,
        mismatches: 0,
        socket_errors: 0,
        first_error: None,
    })?;
    for _ in 0..flows {
        let socket = open(args.addr).map_err(|error| {
            BenchError::io(format!("opening a UDP socket to {}", args.addr), error)
        })?;
        let flow = Flow {
            socket,
            seq: 0,
            expected: vec![0; size],
            sent_at: Instant::now(),
            sent: false,
        };
        client
            .add(flow, Interest::READABLE)
            .map_err(|error| BenchError::io("registering a UDP socket", error))?;
    }

    let progress = Progress::new("udp", args.duration);
    let start = Instant::now();
    client.scenario.end = start + args.duration;
    client.each(|flows, key, flow| {
        send_next(flows, flow, key, start);
        Ok(())
    });
    client.run_until(start + args.duration, |client, now| {
        let flows = &client.scenario;
        let lost = (flows.lost, "lost");
        progress.rate(now - start, flows.latencies.len(), "round trips", lost);
        Some(TURN)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();

    let counts = client.scenario;
    let round_trips = counts.latencies.len();
    Ok(UdpReport {
        id: RunId::new("udp", args.addr, &args.output),
        flows,
        size: size as u64,
        duration_s: seconds,
        round_trips,
        round_trips_per_s: round_trips as f64 / seconds,
        latency: counts.latencies.summary(),
        errors: counts.lost + counts.mismatches + counts.socket_errors,
        lost: counts.lost,
        late: counts.late,
        mismatches: counts.mismatches,
        socket_errors: counts.socket_errors,
        first_error: counts.first_error,
    })
}

/// A non-blocking UDP socket on an ephemeral port, connected to `addr` so that only its
/// datagrams are received and an ICMP "port unreachable" comes back as an error.
fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let any = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(addr)?;
    Ok(socket)
}

/// Sends the flow's next datagram, numbered one past the last.
fn send_next(counts: &mut Flows, flow: &mut Flow, index: usize, now: Instant) {
    flow.seq += 1;
    fill(&mut flow.expected, index, flow.seq);
    flow.sent_at = now;
    let failed = match flow.socket.send(&flow.expected) {
        Ok(n) if n == flow.expected.len() => None,
        Ok(n) => Some(format!("sent {n} of {} bytes", flow.expected.len())),
        Err(error) => Some(format!("send: {error}")),
    };
    flow.sent = failed.is_none();
    if let Some(what) = failed {
        counts.socket_error(what);
    }
}

/// Reads every datagram waiting on the flow's socket (readiness is edge-triggered), checks
/// each against the one in flight, and sends the next after an answer.
fn receive(counts: &mut Flows, flow: &mut Flow, index: usize, scratch: &mut [u8]) {
    loop {
        let n = match nonblocking(|| flow.socket.recv(scratch)) {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(error) => {
                // For example ECONNREFUSED from an ICMP port unreachable: the datagram in
                // flight is left to the loss timeout.
                counts.socket_error(format!("receive: {error}"));
                continue;
            }
        };
        let got = &scratch[..n];
        let now = Instant::now();
        if got == &flow.expected[..] {
            if now < counts.end {
                counts.latencies.record(now.duration_since(flow.sent_at));
            }
        } else if is_earlier(got, flow) {
            counts.late += 1;
            continue;
        } else {
            counts.mismatches += 1;
            let at = got
                .iter()
                .zip(&flow.expected)
                .position(|(a, b)| a != b)
                .unwrap_or(n.min(flow.expected.len()));
            counts.error(format!(
                "echo of flow {index} differs from byte {at} on ({n} bytes back, {} sent)",
                flow.expected.len()
            ));
        }
        if now < counts.end {
            send_next(counts, flow, index, now);
        }
    }
}

/// Whether `got` is the echo of an earlier datagram of this flow (one given up on as lost).
fn is_earlier(got: &[u8], flow: &Flow) -> bool {
    if got.len() != flow.expected.len() || got.len() < SEQ_BYTES {
        return false;
    }
    let mut seq = [0u8; SEQ_BYTES];
    seq.copy_from_slice(&got[..SEQ_BYTES]);
    let seq = u64::from_le_bytes(seq);
    seq < flow.seq
}

/// The bytes of datagram `seq` of flow `index`: the sequence number, then a pattern that
/// differs per flow and per datagram, so a misrouted or stale echo does not match.
fn fill(buffer: &mut [u8], index: usize, seq: u64) {
    let salt = (index as u8).wrapping_add((seq as u8).wrapping_mul(31));
    for (position, byte) in buffer.iter_mut().enumerate() {
        *byte = salt.wrapping_add((position as u8).wrapping_mul(7));
    }
    let head = buffer.len().min(SEQ_BYTES);
    buffer[..head].copy_from_slice(&seq.to_le_bytes()[..head]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_their_sequence_number_and_differ_per_flow() {
        let mut a = vec![0; 32];
        let mut b = vec![0; 32];
        fill(&mut a, 0, 5);
        fill(&mut b, 1, 5);
        assert_eq!(a[..8], 5u64.to_le_bytes());
        assert_ne!(a, b);
        let mut tiny = vec![0; 3];
        fill(&mut tiny, 0, 0x01_0203);
        assert_eq!(tiny, [3, 2, 1]);
    }
}
