//! `--procs N`: one run spread over N client processes, because one process may only hold as
//! many connections as its open-files limit allows (20000 on our machines, and only root can
//! raise the hard limit).
//!
//! The parent starts N copies of this program with the same arguments and `--child I/N`. Each
//! child takes its share of the connections and of `--connect-pace`, measures nothing on the
//! server, and talks to the parent over its stdin and stdout, one word a line:
//!
//! ```text
//! child                         parent
//!   establish its connections
//!   "established"           ->    waits for every child; samples the server (pingpong)
//!                           <-    "go"
//!   measure (pingpong) or hold, for --duration
//!   "measured"              ->    waits for every child; samples the server while every
//!                                 connection is still open
//!                           <-    "release"
//!   close its connections
//!   its report, one JSON line ->  merges the reports (totals, one latency histogram)
//!   exit: 0, or 3 if it counted errors
//! ```
//!
//! So every connection of every child is up before the clock starts, and still up when the
//! server's memory is read. Failures stop the whole run: a child that exits early, says
//! something else, or misses a step's deadline ends the run with an error naming it, and
//! the parent kills and reaps the rest (on drop). Children die with the parent
//! (PR_SET_PDEATHSIG), and a child whose stdin closes gives up, so no child outlives a killed
//! parent. Children write their own errors to the shared stderr, prefixed `client I/N`.
//!
//! This file holds the roles, each child's target and the child's side ([`Parent`]); the
//! flags and the split are `spread.rs`, the parent's side is `fleet.rs`.
//!
//! **Source addresses.** Every child uses every `--src` address, starting at its own offset
//! in the list. The kernel picks a local port per (source, server) pair for all processes
//! alike, so what can run out is the ports of one source address over all children; spread
//! this way, each address carries connections/addresses of them, as in one process. Giving
//! each child a sub-range instead would tie its share of connections to its share of
//! addresses, which breaks when they do not divide evenly (3 addresses, 2 children) or when
//! there are fewer addresses than children.

use std::io::{self, BufRead, StdinLock, Write};
use std::time::Duration;

use crate::cli::Target;
use crate::error::BenchError;
use crate::limits::preflight;
use crate::spread::{ChildOf, Spread};

/// How much longer than its own schedule a child may take to reach a step before the run is
/// called off. Generous: a loaded two-core machine can stall a process for seconds, and
/// closing twenty thousand sockets takes a while.
pub const SLACK: Duration = Duration::from_secs(30);

/// The longest any wait for the children may be, whatever the flags say.
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How this process takes part in a run.
pub enum Role {
    /// One process does everything (`--procs 1`, the default).
    Alone,
    /// This process starts this many client processes and merges what they report.
    Parent(u32),
    /// This process is one of the client processes of a parent, and answers to it.
    Child(Parent),
}

/// A run of `--procs`-capable mode, as this process takes part in it: what it connects to,
/// how many connections (its share, in a client process), and its role.
pub struct Plan {
    pub target: Target,
    pub connections: u64,
    pub role: Role,
}

impl Plan {
    /// The plan for `connections` connections to `target` spread as `spread` says, after the
    /// checks before a run ([`preflight`], whose refusal in the process that splits the run
    /// says how many processes would do). A process per connection is the most
    /// that makes sense, so `--procs` is cut down to `-c`.
    pub fn new(spread: &Spread, target: &Target, connections: u64) -> Result<Plan, BenchError> {
        if let Some(child) = spread.child {
            let (target, connections) = (child_target(child, target), child.share(connections));
            preflight(&target, connections, None)?;
            let role = Role::Child(Parent::new());
            return Ok(Plan::here(target, connections, role));
        }
        let procs = u64::from(spread.procs).min(connections) as u32;
        preflight(target, connections, Some(procs))?;
        let role = if procs > 1 {
            Role::Parent(procs)
        } else {
            Role::Alone
        };
        Ok(Plan::here(target.clone(), connections, role))
    }

    /// The plan of a run already checked.
    pub fn here(target: Target, connections: u64, role: Role) -> Plan {
        Plan {
            target,
            connections,
            role,
        }
    }

    /// Client processes in the run: 1 unless this process is their parent.
    pub fn procs(&self) -> u32 {
        match self.role {
            Role::Parent(procs) => procs,
            _ => 1,
        }
    }
}

/// The longest the children of a run of `connections` to `target` over `procs` processes may
/// take to establish them: a handshake that fails does so within `--timeout`, so each
/// round of `--connect-pace` handshakes takes at most that long. A bound for when something
/// is broken; a working run takes a small part of it.
pub fn establish_within(target: &Target, connections: u64, procs: u32) -> Duration {
    let first = ChildOf { index: 1, procs };
    let pace = first.share(u64::from(target.connect_pace)).max(1);
    let rounds = u32::try_from(first.share(connections).div_ceil(pace) + 1).unwrap_or(u32::MAX);
    let bound = target.timeout.checked_mul(rounds).unwrap_or(LONGEST_WAIT);
    bound.saturating_add(SLACK).min(LONGEST_WAIT)
}

/// The longest the children may take to close `connections` connections and report: closing
/// is work too (a million sockets, and the server's side of each, take tens of seconds on
/// two cores), so the bound grows with the count: [`SLACK`] and 100 µs a connection.
pub fn close_within(connections: u64) -> Duration {
    SLACK
        .saturating_add(
            Duration::from_micros(100)
                .saturating_mul(u32::try_from(connections).unwrap_or(u32::MAX)),
        )
        .min(LONGEST_WAIT)
}

/// What child `child` connects to and how: its share of the handshake pace (so the server
/// sees the pace asked for), every source address from its own offset on (see the module
/// docs), and no server to probe (the parent does that).
fn child_target(child: ChildOf, target: &Target) -> Target {
    let mut target = target.clone();
    target.connect_pace = child.share(u64::from(target.connect_pace)).max(1) as u32;
    if let Some(sources) = &mut target.peer.src {
        let count = sources.0.len();
        let offset = (child.index - 1) as usize * count / child.procs as usize;
        sources.0.rotate_left(offset);
    }
    target.peer.server_pid = None;
    target
}

/// The two points where a run's processes wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A child's connections are all up (or failed); the measurement has not started.
    Established,
    /// A child's measured interval is over; its connections are still open.
    Measured,
}

impl Step {
    pub fn said(self) -> &'static str {
        match self {
            Step::Established => "established",
            Step::Measured => "measured",
        }
    }

    pub fn answer(self) -> &'static str {
        match self {
            Step::Established => "go",
            Step::Measured => "release",
        }
    }
}

/// The child side: its stdin and stdout, the pipes to the parent.
pub struct Parent {
    answers: StdinLock<'static>,
}

impl Parent {
    pub fn new() -> Parent {
        Parent {
            answers: io::stdin().lock(),
        }
    }

    /// Tells the parent this child reached `step`, and waits until it says go on. Never
    /// longer than the parent lives: its end closes the pipe, and the read returns.
    pub fn reach(&mut self, step: Step) -> Result<(), BenchError> {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", step.said())
            .and_then(|()| out.flush())
            .map_err(|error| BenchError::io("telling the parent process", error))?;
        let mut line = String::new();
        let read = self
            .answers
            .read_line(&mut line)
            .map_err(|error| BenchError::io("reading from the parent process", error))?;
        if read == 0 {
            return Err(BenchError::ClientProcess(
                "the parent process went away".into(),
            ));
        }
        if line.trim_end() != step.answer() {
            return Err(BenchError::ClientProcess(format!(
                "the parent process said {:?} where \"{}\" was expected",
                line.trim_end(),
                step.answer()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_child_starts_at_its_own_source_and_takes_its_share_of_the_pace() {
        let cli = <crate::cli::Cli as clap::Parser>::parse_from([
            "wharf-bench",
            "hold",
            "--src",
            "127.0.0.1-127.0.0.4",
            "--connect-pace",
            "5",
            "--server-pid",
            "1",
        ]);
        let crate::cli::Command::Hold(args) = cli.command else {
            unreachable!("parsed a hold")
        };
        let second = child_target(ChildOf { index: 2, procs: 2 }, &args.target);
        let sources = second.peer.src.expect("sources").0;
        assert_eq!(sources.len(), 4, "every child uses every address");
        assert_eq!(sources[0].to_string(), "127.0.0.3");
        assert_eq!(second.connect_pace, 2, "5 = 3 + 2");
        assert_eq!(
            second.peer.server_pid, None,
            "only the parent probes the server"
        );
    }
}
