//! `wharf chat` under fan-out load (issue 13), over real loopback sockets: bursts from many
//! senders reach everyone exactly once and in order, a member that never reads cannot grow
//! the server or slow the room, control characters cannot forge lines or clear terminals,
//! names held by authenticated users have owners, thousands of members join and leave in
//! bounded time, and `/who` is rate-limited.
//!
//! Every wait is on a condition with a deadline; the deadlines only matter when something is
//! broken.

mod common;

use common::chat::*;
use common::*;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

fn chat_server(extra: &[&str]) -> Server {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start("chat", &args)
}

/// Join notices of a room filled one member at a time, as each member hears them: the server
/// names members `user1`, `user2`, ... in the order they join, and each member hears
/// `* userN joined` for every member who joins after it, in that order.
struct JoinTally {
    /// The number in the last notice each member heard (0: none yet), and how many it heard.
    last: Vec<u64>,
    count: Vec<u64>,
    total: u64,
}

impl JoinTally {
    fn new(members: usize) -> JoinTally {
        JoinTally {
            last: vec![0; members],
            count: vec![0; members],
            total: 0,
        }
    }

    fn add_member(&mut self) {
        self.last.push(0);
        self.count.push(0);
    }

    /// Counts `line` if it is a join notice, checking that it follows the member's previous
    /// one; returns false for any other line.
    fn take(&mut self, member: usize, line: &[u8]) -> bool {
        let Some(rest) = line.strip_prefix(b"* user") else {
            return false;
        };
        let Some((number, b" joined\n")) = parse_number(rest) else {
            return false;
        };
        let last = self.last[member];
        assert!(
            last == 0 || number == last + 1,
            "member {member}: join notices missing or out of order: user{number} after user{last}"
        );
        self.last[member] = number;
        self.count[member] += 1;
        self.total += 1;
        true
    }

    /// Notices a room of `n` sends while it fills: the k-th member to join hears of the n-k
    /// after it.
    fn expected_total(n: usize) -> u64 {
        (n * (n - 1) / 2) as u64
    }

    /// Each member heard of exactly the members who joined after it: the counts are
    /// 0, 1, ..., n-1, one member each, and every member's last notice names the last to join.
    /// With the order checked by `take`, that is every notice, once, in order.
    fn assert_complete(&self) {
        let n = self.count.len() as u64;
        let mut counts = self.count.clone();
        counts.sort_unstable();
        assert!(
            counts.iter().copied().eq(0..n),
            "members did not each hear of exactly the members who joined after them"
        );
        for (member, (&count, &last)) in self.count.iter().zip(&self.last).enumerate() {
            assert!(
                count == 0 || last == n,
                "member {member} heard {count} join notices, the last of user{last}, not user{n}"
            );
        }
    }
}

/// Pumps `crowd` until every member has heard of every member who joined after it, and
/// fails on any other line.
fn wait_for_joins(crowd: &mut Crowd, tally: &mut JoinTally, timeout: Duration) {
    let expected = JoinTally::expected_total(crowd.len());
    crowd.pump_until(
        tally,
        timeout,
        "everyone has heard every join",
        |tally, member, line| {
            assert!(
                tally.take(member, line),
                "member {member}: unexpected line while the room fills: {}",
                preview(line)
            );
        },
        |tally| tally.total == expected,
        |tally| format!("{} of {expected} join notices", tally.total),
    );
    tally.assert_complete();
}

// ---------------------------------------------------------------------------
// Bursts
// ---------------------------------------------------------------------------

const BURST_MEMBERS: usize = 200;
/// Every tenth member sends.
const BURST_SPREAD: usize = 10;
const BURST_SENDERS: usize = BURST_MEMBERS / BURST_SPREAD;
const BURST_LINES: u64 = 500;
/// How far the server's resident memory may grow over the bursts: every line of them is
/// about 0.1 MiB, fanned out to 199 members (20 MiB if each recipient held a copy of all).
const BURST_RSS_GROWTH_BOUND: u64 = 64 * MIB;

/// What each member of the burst test has received.
struct Fanout {
    /// Per member, the next sequence number expected from each sender.
    next: Vec<[u64; BURST_SENDERS]>,
    /// Per member, the burst lines received, and how many members have all theirs.
    received: Vec<u64>,
    complete: usize,
    /// Members that received the closing `end` line.
    ended: usize,
}

impl Fanout {
    fn expected(member: usize) -> u64 {
        let senders = BURST_SENDERS - usize::from(member % BURST_SPREAD == 0);
        senders as u64 * BURST_LINES
    }

    /// Takes one line: `<NAME> m<SENDER> <SEQ>` or `<NAME> end`; notices (`* ...`) are
    /// skipped.
    fn take(&mut self, member: usize, line: &[u8]) {
        if line.starts_with(b"* ") {
            return;
        }
        let text = line
            .iter()
            .position(|&b| b == b'>')
            .and_then(|end| line[end..].strip_prefix(b"> "))
            .unwrap_or_else(|| panic!("member {member}: not a chat line: {}", preview(line)));
        if text == b"end\n" {
            self.ended += 1;
            return;
        }
        let parsed = text
            .strip_prefix(b"m")
            .and_then(parse_number)
            .and_then(|(sender, rest)| {
                let (seq, rest) = parse_number(rest.strip_prefix(b" ")?)?;
                (rest == b"\n").then_some((sender as usize, seq))
            });
        let Some((sender, seq)) = parsed else {
            panic!("member {member}: unexpected line {}", preview(line));
        };
        assert_ne!(
            sender,
            member,
            "member {member} got its own line back: {}",
            preview(line)
        );
        assert_eq!(
            sender % BURST_SPREAD,
            0,
            "no such sender: {}",
            preview(line)
        );
        let next = &mut self.next[member][sender / BURST_SPREAD];
        assert_eq!(
            seq, *next,
            "member {member}: from sender {sender}, line {seq} where line {} was due \
             (lost, repeated or out of order)",
            *next
        );
        *next += 1;
        self.received[member] += 1;
        if self.received[member] == Fanout::expected(member) {
            self.complete += 1;
        }
    }
}

/// Splits `burst` at 1 to 4 random places: the sender writes it in 2 to 5 writes.
fn pieces<'a>(burst: &'a [u8], rng: &mut fastrand::Rng) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = (0..rng.usize(1..=4))
        .map(|_| rng.usize(1..burst.len()))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(burst.len());
    let mut from = 0;
    cuts.into_iter()
        .map(|cut| {
            let piece = &burst[from..cut];
            from = cut;
            piece
        })
        .collect()
}

#[test]
fn bursts_from_many_senders_reach_every_other_member_once_in_order() {
    let started = Instant::now();
    let server = chat_server(&[]);
    let mut crowd = Crowd::join(server.addr(), BURST_MEMBERS);
    let mut tally = JoinTally::new(BURST_MEMBERS);
    wait_for_joins(&mut crowd, &mut tally, Duration::from_secs(60));
    let joined = started.elapsed();
    let baseline = rss_bytes(server.pid());

    // Every sender bursts all its lines at once, in a few large writes.
    let mut rng = seeded_rng("bursts_from_many_senders");
    for sender in (0..BURST_MEMBERS).step_by(BURST_SPREAD) {
        let burst: Vec<u8> = (0..BURST_LINES)
            .flat_map(|seq| format!("m{sender} {seq}\n").into_bytes())
            .collect();
        for piece in pieces(&burst, &mut rng) {
            crowd.send(sender, piece);
        }
    }
    let mut fanout = Fanout {
        next: vec![[0; BURST_SENDERS]; BURST_MEMBERS],
        received: vec![0; BURST_MEMBERS],
        complete: 0,
        ended: 0,
    };
    let mut peak = baseline;
    let mut sampled = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while fanout.complete < BURST_MEMBERS {
        assert!(
            Instant::now() < deadline,
            "after 90 s only {} of {BURST_MEMBERS} members have all their lines ({} of {} \
             deliveries); members disconnected: {} ({})",
            fanout.complete,
            fanout.received.iter().sum::<u64>(),
            (0..BURST_MEMBERS).map(Fanout::expected).sum::<u64>(),
            crowd.gone(),
            crowd.describe_gone()
        );
        crowd.pump(Duration::from_millis(50), |member, line| {
            fanout.take(member, line)
        });
        if sampled.elapsed() >= Duration::from_millis(10) {
            peak = peak.max(rss_bytes(server.pid()));
            sampled = Instant::now();
        }
    }
    let delivered = started.elapsed() - joined;
    peak = peak.max(rss_bytes(server.pid()));

    // Exactly once: a last line sent after the bursts is the next chat line everyone else
    // gets (a repeat of a burst line would arrive before it and fail its sequence check).
    crowd.send(1, b"end\n");
    crowd.pump_until(
        &mut fanout,
        Duration::from_secs(30),
        "everyone else has the end line",
        |fanout, member, line| {
            assert_ne!(member, 1, "the end line came back to its sender");
            fanout.take(member, line);
        },
        |fanout| fanout.ended == BURST_MEMBERS - 1,
        |fanout| format!("{} have it", fanout.ended),
    );
    assert_eq!(crowd.gone(), 0, "{}", crowd.describe_gone());

    let deliveries: u64 = (0..BURST_MEMBERS).map(Fanout::expected).sum();
    eprintln!(
        "{BURST_MEMBERS} members joined in {joined:?}; {deliveries} deliveries in \
         {delivered:?}; server RSS {} KiB before the bursts, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        peak < baseline + BURST_RSS_GROWTH_BOUND,
        "server RSS grew from {baseline} to {peak} bytes over the bursts (bound: \
         {BURST_RSS_GROWTH_BOUND})"
    );
    assert_no_panic(&server.stderr_text());
}

// ---------------------------------------------------------------------------
// A member that never reads
// ---------------------------------------------------------------------------

const SILENT_ROOM: usize = 500;
/// The bound: the flood must not turn into queued replies (a room of 500 answers
/// each `/who` with about 4 KiB: 13,000 of them would be 50 MiB), nor into a copy of the
/// broadcast per recipient.
const SILENT_RSS_GROWTH_BOUND: u64 = 64 * MIB;
/// Round trips measured after the flood's writer stopped, and at least in all.
const ROUND_TRIPS_AFTER: usize = 50;
const ROUND_TRIPS_MIN: usize = 100;
/// A measuring window after the writer stopped, for what the server still holds of the
/// flood (not a synchronisation: the test waits on round trips, never on this alone).
const AFTER_FLOOD_WINDOW: Duration = Duration::from_secs(2);
/// A write that makes no progress for this long means the server stopped reading.
const STALL: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum FloodEnd {
    /// Everything was written (the kernel's buffers may hold some of it).
    Finished,
    /// No write progress for `STALL`: the server stopped reading (throttled).
    Stalled,
    /// The connection failed: the server dropped it.
    Failed(ErrorKind),
}

/// Writes 64 KiB of `/who` lines, then 64 KiB of empty lines, on a thread; never reads.
fn start_flood(silent: &TcpStream) -> mpsc::Receiver<(FloodEnd, usize)> {
    let mut writer = silent
        .try_clone()
        .expect("clone the silent member's socket");
    writer
        .set_write_timeout(Some(STALL))
        .expect("set write timeout");
    let (done, outcome) = mpsc::channel();
    thread::spawn(move || {
        let who = "/who\n".repeat(64 * 1024 / 5 + 1);
        let empty = "\n".repeat(64 * 1024);
        let mut total = 0;
        let end = 'flood: {
            for payload in [who.as_bytes(), empty.as_bytes()] {
                let mut sent = 0;
                while sent < payload.len() {
                    match writer.write(&payload[sent..]) {
                        Ok(0) => break 'flood FloodEnd::Failed(ErrorKind::WriteZero),
                        Ok(n) => {
                            sent += n;
                            total += n;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            break 'flood FloodEnd::Stalled
                        }
                        Err(e) => break 'flood FloodEnd::Failed(e.kind()),
                    }
                }
            }
            FloodEnd::Finished
        };
        let _ = done.send((end, total));
    });
    outcome
}

/// A sends `rt I`, B reads up to it: returns how long that took.
fn chat_round_trip(a: &mut ChatMember, b: &mut ChatMember, i: usize) -> Duration {
    let mark = format!("> rt {i}\n");
    let started = Instant::now();
    a.say(&format!("rt {i}"));
    b.line_where(&format!("ending with {mark:?}"), |line| {
        line.ends_with(mark.as_bytes())
    });
    started.elapsed()
}

fn silent_member_floods_the_room(max_outbuf: Option<&str>) {
    let mut args = vec![];
    if let Some(limit) = max_outbuf {
        args.extend(["--max-outbuf", limit]);
    }
    let mut server = chat_server(&args);
    // A and B do round trips; the others only read; the last never reads. A small receive
    // buffer makes the silent member's side of the kernel fill quickly.
    let mut a = ChatMember::join(server.addr());
    let mut b = ChatMember::join(server.addr());
    let mut readers = Crowd::join(server.addr(), SILENT_ROOM - 3);
    let silent =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    silent.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    silent.connect(&server.addr().into()).expect("connect");
    let silent: TcpStream = silent.into();
    // A was first in: once it has heard of the other 499, everyone is in.
    for _ in 1..SILENT_ROOM {
        let line = a.line();
        assert!(
            line.ends_with(" joined\n"),
            "A got {line:?} while the room filled"
        );
    }

    // A's input and the readers' are drained on threads for the rest of the test.
    let a_drain = Drain::start(a.socket());
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let readers_thread = thread::spawn(move || {
        let mut bytes = 0u64;
        while !stopping.load(Ordering::SeqCst) {
            bytes += readers.pump_discard(Duration::from_millis(50));
        }
        (readers, bytes)
    });

    for i in 0..10 {
        chat_round_trip(&mut a, &mut b, i); // warm-up
    }
    let baseline = rss_bytes(server.pid());
    let started = Instant::now();
    let flood = start_flood(&silent);
    let mut peak = baseline;
    let mut trips = Vec::new();
    let mut flood_end = None;
    let mut after = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let window_open = |end: &Option<(FloodEnd, usize, Instant)>| match end {
        None => true,
        Some((_, _, at)) => at.elapsed() < AFTER_FLOOD_WINDOW,
    };
    while trips.len() < ROUND_TRIPS_MIN || after < ROUND_TRIPS_AFTER || window_open(&flood_end) {
        assert!(
            Instant::now() < deadline,
            "the flood's writer did not finish or stall within 60 s ({} round trips)",
            trips.len()
        );
        trips.push(chat_round_trip(&mut a, &mut b, 10 + trips.len()));
        peak = peak.max(rss_bytes(server.pid()));
        match &flood_end {
            None => {
                if let Ok((end, written)) = flood.try_recv() {
                    flood_end = Some((end, written, Instant::now()));
                }
            }
            Some(_) => after += 1,
        }
    }
    let measured = started.elapsed();

    // The room is still served, and nobody who reads was dropped.
    chat_round_trip(&mut a, &mut b, usize::MAX);
    server.assert_running();
    stop.store(true, Ordering::SeqCst);
    let (readers, reader_bytes) = readers_thread.join().expect("readers thread");
    let a_end = a_drain.finish();
    // The readers are still connected: the counters show who was dropped.
    let stats = server.request_stats();
    let (readers_gone, which) = (readers.gone(), readers.describe_gone());
    drop(readers);
    let (end, written, _) = flood_end.expect("the flood ended");

    trips.sort_unstable();
    let p90 = trips[trips.len() * 9 / 10];
    let max = *trips.last().expect("round trips");
    eprintln!(
        "--max-outbuf {}: the silent member wrote {written} bytes ({end:?}); {} round trips \
         in {measured:?}: p50 {:?} p90 {p90:?} max {max:?}; server RSS {} KiB -> peak {} \
         KiB; the readers got {} MiB; {stats}",
        max_outbuf.unwrap_or("default"),
        trips.len(),
        trips[trips.len() / 2],
        baseline / 1024,
        peak / 1024,
        reader_bytes / MIB,
    );
    assert!(
        peak < baseline + SILENT_RSS_GROWTH_BOUND,
        "server RSS grew from {baseline} to {peak} bytes (bound: {SILENT_RSS_GROWTH_BOUND})"
    );
    // How fast the round trips are next to the silent member (the 100 ms) is a
    // benchmark's question, not a test's: on a loaded 2-core machine a timed bound here
    // failed now and then with nothing wrong. The test asserts that every round trip
    // completes (each within the read deadline), and prints their percentiles above.
    if let FloodEnd::Failed(kind) = end {
        assert!(
            matches!(kind, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            "the silent member's writes failed with {kind:?}, not a drop"
        );
    }
    assert_eq!(readers_gone, 0, "members that read were dropped: {which}");
    assert!(!a_end.closed_by_server, "A was disconnected");
    // Only the silent member may have been dropped (as a slow reader); otherwise it is
    // throttled: still in the room, its input no longer read.
    assert!(stat(&stats, "slow_readers") <= 1, "{stats}");
    assert!(stat(&stats, "active") >= SILENT_ROOM as u64 - 1, "{stats}");
    assert_no_panic(&server.stderr_text());
    drop(silent);
}

#[test]
fn a_member_that_never_reads_cannot_grow_the_server_or_slow_the_room() {
    silent_member_floods_the_room(None);
}

#[test]
fn a_member_that_never_reads_is_held_at_a_small_max_outbuf() {
    silent_member_floods_the_room(Some("262144"));
}

// ---------------------------------------------------------------------------
// Control characters
// ---------------------------------------------------------------------------

#[test]
fn control_characters_reach_others_escaped_in_caret_notation() {
    let server = chat_server(&[]);
    let mut sender = ChatMember::join(server.addr());
    let mut other = ChatMember::join(server.addr());
    sender.line_starting("* user2 joined");

    // A CR that would return the cursor to print a forged `<admin>` line, a clear-screen
    // sequence, a bell, a NUL and a DEL; the TAB is ordinary text.
    sender.send(b"a\rb<admin> x\x1b[2J\x07\x00z\tq\x7f\n");
    let line = other.line_bytes().to_vec();
    let body = &line[..line.len() - 1];
    for (byte, name) in [
        (b'\r', "CR"),
        (0x1b, "ESC"),
        (0x07, "BEL"),
        (0x00, "NUL"),
        (0x7f, "DEL"),
    ] {
        assert!(
            !body.contains(&byte),
            "{name} reached another member raw: {}",
            preview(&line)
        );
    }
    assert_bytes_eq(
        "the line as delivered (caret notation, as `cat -v` shows it)",
        b"<user1> a^Mb<admin> x^[[2J^G^@z\tq^?\n",
        &line,
    );

    // The CR of a CRLF line ending is still dropped, not escaped.
    sender.send(b"from a crlf client\r\n");
    assert_eq!(other.line(), "<user1> from a crlf client\n");
    sender.send(b"two\r\r\n");
    assert_eq!(
        other.line(),
        "<user1> two^M\n",
        "only the last CR ends the line"
    );
}

// ---------------------------------------------------------------------------
// Names have owners
// ---------------------------------------------------------------------------

/// Asserts that a `/who` answer is sorted and lists each name once.
#[cfg(feature = "tls")]
#[track_caller]
fn assert_each_name_once(names: &[String]) {
    assert!(
        names.windows(2).all(|pair| pair[0] < pair[1]),
        "/who lists a name twice, or is not sorted: {names:?}"
    );
}

#[cfg(feature = "tls")]
#[test]
fn an_authenticated_member_takes_its_name_back_and_who_lists_it_once() {
    use common::certs::{arg, make_test_pki};

    let pki = make_test_pki("chat-name-owners");
    let server = chat_server(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        arg(&pki.server_cert),
        "--tls-key",
        arg(&pki.server_key),
        "--tls-client-ca",
        arg(&pki.ca),
    ]);
    // The certificate's subject, and so its holder's chat name.
    let owner = pki.client_name.as_str();
    let join_owner = || {
        join_tls(
            server.tls_addr(),
            &pki.ca,
            &pki.client_cert,
            &pki.client_key,
        )
    };

    let mut squatter = ChatMember::join(server.addr());
    let mut watcher = ChatMember::join(server.addr());
    squatter.line_starting("* user2 joined");
    // While its owner is away, anyone may use the name.
    squatter.say(&format!("/nick {owner}"));
    assert_eq!(squatter.line(), format!("* user1 is now {owner}\n"));
    assert_eq!(watcher.line(), format!("* user1 is now {owner}\n"));

    // The owner joins under its name.
    let mut owner_conn = join_owner();
    watcher.line_starting(&format!("* {owner} joined"));
    owner_conn.say("hello");
    watcher.line_starting(&format!("<{owner}> hello"));
    // Everything the owner's arrival made the server say comes before this line.
    watcher.say("sync");
    let seen = squatter.lines_through("<user2> sync");
    let told = seen
        .iter()
        .find(|line| line.starts_with(&format!("* {owner} is now user")))
        .unwrap_or_else(|| {
            panic!("the squatter was not renamed and told when the owner joined; it got {seen:?}")
        });
    let new_name = renamed_to(told).expect("a new name").to_string();

    let names = watcher.who();
    assert_each_name_once(&names);
    let mut expected = vec![owner.to_string(), new_name.clone(), "user2".to_string()];
    expected.sort();
    assert_eq!(names, expected);

    // The name is taken back for good while its owner is here.
    squatter.say(&format!("/nick {owner}"));
    let refusal = squatter.line_starting("ERR");
    assert!(
        refusal.starts_with(&format!("ERR name {owner} is taken")),
        "{refusal:?}"
    );

    // A second connection of the same user shares the name; /who still lists it once.
    let mut second = join_owner();
    let names = second.who();
    assert_each_name_once(&names);
    assert_eq!(names, expected);
    assert_no_panic(&server.stderr_text());
}

// ---------------------------------------------------------------------------
// Thousands joining and leaving
// ---------------------------------------------------------------------------

const CHURN_MEMBERS: usize = 2_000;
const OBSERVERS: usize = 2;
/// Members connected at a time: the next wave starts once the server has announced the last.
const CHURN_WAVE: usize = 200;
/// Far above the target (10,000 joins in under 5 s of server CPU), so a loaded machine and a
/// debug build pass; a server paying O(members) writes per join and leave does not.
const CHURN_BOUND: Duration = Duration::from_secs(60);
/// Server CPU for all the joins and leaves: the budget for 10,000 joins, spent here
/// on 2,000 by a debug build. Unlike the wall-clock bound it does not grow with the load of
/// a shared machine, so it is the one that catches O(members) writes per join (13 s of CPU
/// in a debug build before issue 13; about 0.3 s after).
const CHURN_CPU_BOUND: Duration = Duration::from_secs(5);

/// What the observers hear while the crowd leaves.
struct Leaves {
    /// Per observer, which `userN` it heard leave.
    seen: [Vec<bool>; OBSERVERS],
    count: [usize; OBSERVERS],
    who: Option<String>,
}

#[test]
fn two_thousand_members_join_and_leave_in_bounded_time() {
    let total = CHURN_MEMBERS + OBSERVERS;
    // The test holds a socket per member, and so does the server, which inherits the limit.
    let nofile = raise_open_files_limit(2 * total as u64 + 256);
    assert!(nofile > total as u64 + 64, "open files limit {nofile}");
    let server = chat_server(&[]);
    let started = Instant::now();
    let cpu_before = cpu_time(server.pid());

    let mut crowd = Crowd::new();
    let mut tally = JoinTally::new(0);
    while crowd.len() < total {
        let wave = CHURN_WAVE.min(total - crowd.len());
        for _ in 0..wave {
            crowd.add(server.addr());
            tally.add_member();
        }
        // The first observer hears of everyone after it: once it has heard of this wave's
        // last member, the wave is in.
        let expected = crowd.len() as u64 - 1;
        crowd.pump_until(
            &mut tally,
            CHURN_BOUND,
            "the first observer has heard the wave join",
            |tally, member, line| {
                assert!(
                    tally.take(member, line),
                    "member {member}: unexpected line while the room fills: {}",
                    preview(line)
                );
            },
            |tally| tally.count[0] == expected,
            |tally| format!("it heard {} of {expected}", tally.count[0]),
        );
    }
    wait_for_joins(&mut crowd, &mut tally, CHURN_BOUND);
    let joined = started.elapsed();

    // Everyone but the observers leaves at once.
    for member in OBSERVERS..total {
        crowd.close(member);
    }
    let mut leaves = Leaves {
        seen: std::array::from_fn(|_| vec![false; total + 1]),
        count: [0; OBSERVERS],
        who: None,
    };
    let on_line = |leaves: &mut Leaves, member: usize, line: &[u8]| {
        assert!(member < OBSERVERS, "a closed member was read");
        if line.starts_with(b"* online:") {
            leaves.who = Some(String::from_utf8_lossy(line).into_owned());
            return;
        }
        let left = line
            .strip_prefix(b"* user")
            .and_then(parse_number)
            .filter(|(_, rest)| *rest == b" left\n")
            .map(|(number, _)| number as usize)
            .filter(|number| (OBSERVERS + 1..=total).contains(number));
        let Some(number) = left else {
            panic!("observer {member}: unexpected line {}", preview(line));
        };
        assert!(
            !std::mem::replace(&mut leaves.seen[member][number], true),
            "observer {member} heard user{number} leave twice"
        );
        leaves.count[member] += 1;
    };
    let bound = CHURN_BOUND.saturating_sub(started.elapsed());
    crowd.pump_until(
        &mut leaves,
        bound,
        "both observers have heard everyone leave",
        on_line,
        |leaves| leaves.count.iter().all(|&n| n == CHURN_MEMBERS),
        |leaves| format!("they heard {:?} of {CHURN_MEMBERS}", leaves.count),
    );
    let left = started.elapsed() - joined;

    crowd.send(0, b"/who\n");
    crowd.pump_until(
        &mut leaves,
        Duration::from_secs(30),
        "the first observer has its /who answer",
        on_line,
        |leaves| leaves.who.is_some(),
        |_| String::new(),
    );
    let elapsed = started.elapsed();
    let cpu = cpu_time(server.pid()) - cpu_before;
    eprintln!(
        "{CHURN_MEMBERS} members (+{OBSERVERS} observers) joined in {joined:?}, left in \
         {left:?}; {elapsed:?} in all, server CPU {cpu:?}"
    );
    assert_eq!(leaves.who.as_deref(), Some("* online: user1 user2\n"));
    assert_eq!(crowd.gone(), 0, "{}", crowd.describe_gone());
    assert!(
        elapsed < CHURN_BOUND,
        "{CHURN_MEMBERS} joins and leaves took {elapsed:?} (bound {CHURN_BOUND:?})"
    );
    assert!(
        cpu < CHURN_CPU_BOUND,
        "{CHURN_MEMBERS} joins and leaves took {cpu:?} of server CPU (bound \
         {CHURN_CPU_BOUND:?})"
    );
    assert_no_panic(&server.stderr_text());
}

// ---------------------------------------------------------------------------
// /who
// ---------------------------------------------------------------------------

#[test]
fn who_is_answered_at_most_once_a_second_per_member() {
    let server = chat_server(&[]);
    let mut asker = ChatMember::join(server.addr());
    asker.send(b"/who\n/who\n");
    assert_eq!(asker.line(), "* online: user1\n");
    let refused = asker.line();
    assert!(
        refused.starts_with("ERR /who"),
        "a second /who within the second got {refused:?}"
    );
    // A rate, not a ban: a later /who is answered again. Asking every 200 ms paces the
    // retries; the deadline only matters if it is never answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "/who not answered again within 10 s"
        );
        thread::sleep(Duration::from_millis(200));
        asker.say("/who");
        let line = asker.line();
        if line == "* online: user1\n" {
            break;
        }
        assert!(line.starts_with("ERR /who"), "{line:?}");
    }
}

// ---------------------------------------------------------------------------
// A burst, then the end of the sender's stream
// ---------------------------------------------------------------------------

const FINISH_MEMBERS: usize = 100;
const FINISH_LINES: usize = 5000;

/// Found by review: a member that sends thousands of lines and shuts down its sending side
/// in the same breath. The room takes a bounded share of its lines per turn, so most are
/// still waiting when the end of stream arrives; they must still reach everyone one by one,
/// in order (not as one "last line" with every newline escaped), and the unterminated tail
/// after them as a line of its own.
#[test]
fn lines_sent_just_before_a_half_close_arrive_one_by_one() {
    let server = chat_server(&[]);
    let mut sender = ChatMember::join(server.addr());
    let mut crowd = Crowd::join(server.addr(), FINISH_MEMBERS);
    // The sender was first in: once it has heard of everyone, all are in.
    for _ in 0..FINISH_MEMBERS {
        sender.line_starting("* ");
    }
    let mut burst: Vec<u8> = (0..FINISH_LINES)
        .flat_map(|i| format!("h{i}\n").into_bytes())
        .collect();
    burst.extend_from_slice(b"tail");
    let socket = sender.socket();
    (&socket).write_all(&burst).expect("the burst");
    socket
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");

    // Per member: the next line number expected, and whether the tail came.
    let mut state = (vec![0usize; FINISH_MEMBERS], vec![false; FINISH_MEMBERS]);
    crowd.pump_until(
        &mut state,
        Duration::from_secs(60),
        "every member has every line and the tail",
        |(next, tailed), member, line| {
            let text = String::from_utf8_lossy(line);
            if text.starts_with("* ") {
                return; // joins of later members, and the sender's leave
            }
            assert!(
                !text.contains("^J"),
                "member {member}: lines merged: {text:.120}"
            );
            let said = text
                .split_once("> ")
                .map(|(_, said)| said.trim_end_matches('\n'))
                .unwrap_or_else(|| panic!("member {member}: not a chat line: {text:?}"));
            if said == "tail" {
                assert_eq!(
                    next[member], FINISH_LINES,
                    "member {member}: tail too early"
                );
                tailed[member] = true;
                return;
            }
            assert_eq!(
                said,
                format!("h{}", next[member]),
                "member {member}: out of order"
            );
            next[member] += 1;
        },
        |(_, tailed)| tailed.iter().all(|t| *t),
        |(next, tailed)| {
            format!(
                "{} members have the tail; fewest lines {}",
                tailed.iter().filter(|t| **t).count(),
                next.iter().min().unwrap_or(&0)
            )
        },
    );
}
