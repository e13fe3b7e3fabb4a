//! `chat`: open-loop fan-out through a line chat room: `wharf chat`, the tokio peer, `ncat
//! --chat`, or any server that delivers each line a client sends to every other client, with
//! a prefix of its own before it.
//!
//! A run has three phases, on one thread and the client loop (`client.rs`, the clients'
//! scenario in [`room`]):
//! 1. **Join.** CONNS clients connect, at most `--join-concurrency` at a time. Then a barrier
//!    that does not depend on how a server announces joins (wharf may batch its notices,
//!    ncat words them differently): one client sends `sync <k>` every [`SYNC_EVERY`] until
//!    every client has received one (the last sender gets one from another at once). A
//!    client that received one is in the room, and whatever it read before (join notices
//!    included) is behind it: only measured lines are counted, and none is sent before the
//!    barrier. `join_secs` runs from the first connect to the barrier.
//! 2. **Measure.** Open loop: line k of the run is due at start + k / `--rate` and goes out
//!    from client k mod CONNS, whether or not anything came back. A client that falls
//!    behind sends everything due at once (nothing is skipped); a line the sender's socket
//!    and its bounded queue cannot take is *unsent*, counted apart. Each line carries its
//!    send time ([`mod@line`]), and every other client times its arrival.
//! 3. **Drain.** Lines still on their way get up to [`DRAIN`] to arrive; what has not
//!    arrived then is *undelivered*.
//!
//! With `--server-pid` the server's CPU time is read at the start of phase 2 and the end of
//! phase 3, and divided by the deliveries received: the work of fanning out the window's
//! lines, wherever it fell.

mod line;
mod room;

use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::cli::ChatArgs;
use crate::client::Client;
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::limits::preflight;
use crate::progress::Progress;
use crate::report::{ChatReport, RunId};
use crate::server::{self, ServerProbe};

use self::line::Line;
use self::room::{Census, Room, Sent};

/// Longest wait for events in one turn, when no line is due sooner.
const TURN: Duration = Duration::from_millis(50);

/// How often the barrier's sender repeats its line while clients are still joining.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// After the window, how long the lines still on their way may take to arrive.
const DRAIN: Duration = Duration::from_secs(2);

/// What the senders did in the window.
#[derive(Debug, Default)]
struct Sending {
    /// Lines due: the offered load.
    due: u64,
    /// Lines the sockets took at once.
    written: u64,
    /// Lines (or their ends) that waited in a client's queue first.
    queued: u64,
    /// Lines due that could not be sent: the queue was full, or the sender was gone.
    unsent: u64,
    /// Deliveries the lines sent should make: the clients in the room besides the sender.
    expected: u64,
    /// The latest a line went out after it was due, in nanoseconds.
    max_lag_ns: u64,
}

pub fn run(args: &ChatArgs) -> Result<ChatReport, BenchError> {
    let target = args.target();
    let conns = args.conns as usize;
    preflight(&target, conns as u64 + u64::from(args.silent), None)?;
    let probe = ServerProbe::of(args.peer.server_pid)?;
    let mut room = Room::new(Dialer::new(args.peer.addr, args.peer.src.as_ref()), conns)?;

    // In first, so that their joining is announced while the others join, not in the window.
    let silent = join_silent(args)?;
    let join_secs = join(&mut room, args)?;
    let joined = room.scenario.census().ready;

    let before = probe.as_ref().map(ServerProbe::sample).transpose()?;
    let sending = measure(&mut room, args)?;
    let drain_secs = drain(&mut room, sending.expected)?;
    let after = probe.as_ref().map(ServerProbe::sample).transpose()?;
    drop(silent);

    let Room {
        deliveries, tally, ..
    } = room.scenario;
    let seconds = args.duration.as_secs_f64();
    let server = server::figures(probe.as_ref(), before, after, deliveries.received);
    let undelivered = sending.expected.saturating_sub(deliveries.received);
    let connection_errors = tally.total();
    Ok(ChatReport {
        id: RunId::new("chat", args.peer.addr, &args.output),
        conns: conns as u64,
        joined: joined as u64,
        silent: u64::from(args.silent),
        join_secs,
        rate: args.rate,
        duration_s: seconds,
        offered_lines_per_s: sending.due as f64 / seconds,
        offered_deliveries_per_s: (sending.due * (conns as u64 - 1)) as f64 / seconds,
        sent: sending.written + sending.queued,
        queued: sending.queued,
        unsent: sending.unsent,
        max_send_lag_us: sending.max_lag_ns as f64 / 1000.0,
        expected: sending.expected,
        received: deliveries.received,
        delivered_deliveries_per_s: deliveries.received as f64 / seconds,
        delivered_fraction: if sending.expected == 0 {
            0.0
        } else {
            deliveries.received as f64 / sending.expected as f64
        },
        undelivered,
        out_of_order: deliveries.out_of_order,
        echoed: deliveries.echoed,
        drain_secs,
        latency: deliveries.latencies.summary(),
        server_cpu_ns_per_delivery: server
            .server_cpu_ns_per_op
            .or_else(|| Some(server.server_user_ns_per_op? + server.server_sys_ns_per_op?)),
        server,
        connection_errors,
        errors: undelivered + deliveries.out_of_order + sending.unsent + connection_errors,
        errors_by_kind: tally,
    })
}

/// `--silent`: members that connect and never read, with a receive buffer of 4 KiB so that
/// the kernel's side fills at once and the server's output to them backs up.
fn join_silent(args: &ChatArgs) -> Result<Vec<std::net::TcpStream>, BenchError> {
    let addr = args.peer.addr;
    (0..args.silent)
        .map(|_| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_recv_buffer_size(4096)?;
            socket.connect_timeout(&addr.into(), args.timeout)?;
            Ok(socket.into())
        })
        .collect::<std::io::Result<_>>()
        .map_err(|error| {
            BenchError::Unreachable(format!(
                "a --silent member cannot connect to {addr}: {error}"
            ))
        })
}

/// Phase 1: connects every client and passes the barrier; returns the seconds it took.
/// Clients not in the room by `--timeout` are dropped and counted as timeouts.
fn join(room: &mut Client<Room>, args: &ChatArgs) -> Result<f64, BenchError> {
    let conns = args.conns as usize;
    let start = Instant::now();
    let mut next_sync = start;
    let mut syncs = 0;
    let all_connected = |census: Census| census.dialed == conns && census.connecting == 0;
    let all_in = |census: Census| all_connected(census) && census.waiting == 0 && census.ready >= 2;
    room.run_until(start + args.timeout, |room, now| {
        room.dial_more(args.join_concurrency as usize);
        let census = room.scenario.census();
        if all_in(census) || (all_connected(census) && census.alive() < 2) {
            return None;
        }
        if !all_connected(census) {
            return Some(TURN);
        }
        if now >= next_sync || room.only_the_syncer_waits() {
            room.send_sync(syncs);
            syncs += 1;
            next_sync = now + SYNC_EVERY;
        }
        Some(next_sync.saturating_duration_since(now))
    })?;
    if !all_in(room.scenario.census()) {
        room.drop_unready("not in the room (no barrier line received) within --timeout");
    }
    let census = room.scenario.census();
    if census.ready < 2 {
        let first = room
            .scenario
            .tally
            .first
            .as_deref()
            .unwrap_or("no failure seen");
        return Err(BenchError::Unreachable(format!(
            "no chat room formed at {addr}: {ready} of {conns} clients got into it (first \
             failure: {first}). Is a line chat server listening there, e.g. `wharf chat \
             --listen {addr}`? If clients were still joining, raise --timeout (now {secs} s)",
            addr = args.peer.addr,
            ready = census.ready,
            secs = args.timeout.as_secs_f64(),
        )));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Phase 2: sends on the schedule for `--duration`, reading all the while.
fn measure(room: &mut Client<Room>, args: &ChatArgs) -> Result<Sending, BenchError> {
    let progress = Progress::new("chat", args.duration);
    let start = Instant::now();
    let schedule = Schedule::new(room.scenario.now_ns(), args);
    let mut sending = Sending::default();
    room.run_until(start + args.duration, |room, _| {
        let now_ns = schedule.send_due(room, &mut sending);
        let elapsed = Duration::from_nanos(now_ns - schedule.start_ns);
        let room = &room.scenario;
        let errors = (room.tally.total(), "errors");
        progress.rate(elapsed, room.deliveries.received, "deliveries", errors);
        let wait_ns = schedule.due_ns(sending.due).saturating_sub(now_ns);
        Some(Duration::from_nanos(wait_ns).min(TURN))
    })?;
    // The lines that fell due during the last turn.
    schedule.send_due(room, &mut sending);
    progress.finish();
    Ok(sending)
}

/// When each line of the window is due, and from which client.
struct Schedule {
    conns: u64,
    start_ns: u64,
    end_ns: u64,
    interval_ns: f64,
}

impl Schedule {
    /// The schedule of a window starting at `start_ns` on the room's clock.
    fn new(start_ns: u64, args: &ChatArgs) -> Schedule {
        let window_ns = u64::try_from(args.duration.as_nanos()).unwrap_or(u64::MAX);
        Schedule {
            conns: u64::from(args.conns),
            start_ns,
            end_ns: start_ns.saturating_add(window_ns),
            interval_ns: 1e9 / args.rate,
        }
    }

    /// When line `k` of the run is due.
    fn due_ns(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.interval_ns) as u64
    }

    /// Sends every line of the window due by now, however late: an open loop does not skip.
    /// Returns the time now.
    fn send_due(&self, room: &mut Client<Room>, sending: &mut Sending) -> u64 {
        let mut now_ns = room.scenario.now_ns();
        loop {
            let due_ns = self.due_ns(sending.due);
            if due_ns > now_ns || due_ns >= self.end_ns {
                return now_ns;
            }
            let k = sending.due;
            sending.due += 1;
            let sender = k % self.conns;
            now_ns = room.scenario.now_ns();
            let line = Line::measured(sender, k / self.conns, now_ns);
            match room.send(sender as usize, &line) {
                Sent::Written => sending.written += 1,
                Sent::Queued => sending.queued += 1,
                Sent::Dropped => {
                    sending.unsent += 1;
                    continue;
                }
            }
            sending.expected += room.scenario.census().ready.saturating_sub(1) as u64;
            sending.max_lag_ns = sending.max_lag_ns.max(now_ns - due_ns);
        }
    }
}

/// Phase 3: reads until every expected delivery is in or [`DRAIN`] has passed; returns the
/// seconds it took.
fn drain(room: &mut Client<Room>, expected: u64) -> Result<f64, BenchError> {
    let start = Instant::now();
    room.run_until(start + DRAIN, |room, _| {
        let room = &room.scenario;
        (room.deliveries.received < expected && room.census().alive() > 0).then_some(TURN)
    })?;
    Ok(start.elapsed().as_secs_f64())
}
