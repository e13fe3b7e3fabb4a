//! `wharf-bench`: a load generator for echo and line-echo TCP servers, any of them.
//!
//! One thread drives every connection through one edge-triggered `mio::Poll`, so the client
//! costs as little CPU as the server it measures: a round trip is one write and one read,
//! with no allocation. Subcommands: `pingpong` (throughput and latency), `hold` (idle
//! connections and the server's memory per connection), `connect` (connections per second),
//! `sweep` (pingpong over connection counts, with a plot), `plot` and `summary` to
//! combine the results of several servers, `chat` (fan-out through a chat room) and `udp`
//! (datagram round trips).
//!
//! Files, bottom up: each depends only on its own layer and the ones before it.
//! - plain data several files share, depending on nothing above them: `sources` (the
//!   `--src` addresses), `spread` (`--procs` and `--child`), `output` (`--json`, `--label`,
//!   `--scenario`), `figures` (latency percentiles and the server's figures), `failure`
//!   (a connection's failure and the run's tally), `error`, `sys` (the only unsafe code);
//! - `cli`, the flags, built from those;
//! - `report`, every format of the results, kept apart from measuring and from the command
//!   line: each report's text and JSON, `sweep`'s table, CSV and plot, and `summary`;
//! - measuring: `limits` (checks before a run), `server` (/proc of the server), `kernel`
//!   (its slab memory), `latency`, `progress`, `dial` (sockets), and `client`, the one
//!   event loop every scenario runs on, through its `Scenario` trait:
//!   - `echo`, the round trips of `pingpong`, `hold` and `connect` and each connection's
//!     I/O, with `stream` (plain TCP or TLS under it), `tls` (the client's TLS
//!     settings) and `tls_stream` (one TLS session, sans-IO; both feature `tls`), `message`
//!     (the bytes and their check) and `session` (paced connecting, then the measured
//!     interval of `pingpong` and `hold`, here or over client processes: `procs` and
//!     `fleet`);
//!   - `chat/room` (the chat clients; `chat/line` their lines, sans-IO);
//!   - `udp` (the datagram flows);
//! - one file per subcommand (`pingpong`, `hold`, `connect`, `sweep`, `chat`, `udp`), which
//!   runs the loop and fills its report.

mod chat;
mod cli;
mod client;
mod connect;
mod dial;
mod echo;
mod error;
mod failure;
mod figures;
mod fleet;
mod hold;
mod kernel;
mod latency;
mod limits;
mod message;
mod output;
mod pingpong;
mod procs;
mod progress;
mod report;
mod server;
mod session;
mod sources;
mod spread;
mod stream;
mod sweep;
mod sys;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_stream;
mod udp;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{BenchError, EXIT_ERRORS_COUNTED};
use crate::report::{plot, print, summary, Report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(not(feature = "tls"))]
    cli::refuse_tls(&cli);
    match execute(&cli.command) {
        Ok(errors) if errors > 0 => ExitCode::from(EXIT_ERRORS_COUNTED),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            match child_of(&cli.command) {
                Some(child) => eprintln!("wharf-bench: client {child}: error: {error}"),
                None => eprintln!("wharf-bench: error: {error}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Which client process of a `--procs` run this is, if it is one: its errors say so.
fn child_of(command: &Command) -> Option<spread::ChildOf> {
    match command {
        Command::Pingpong(args) => args.spread.child,
        Command::Hold(args) => args.spread.child,
        _ => None,
    }
}

/// Runs the subcommand; returns the number of failures its runs counted.
fn execute(command: &Command) -> Result<u64, BenchError> {
    match command {
        // A client process of a `--procs` run reports to its parent, in JSON.
        Command::Pingpong(args) => print(
            &pingpong::run(args)?,
            args.target.output.json || args.spread.child.is_some(),
        ),
        Command::Hold(args) => print(
            &hold::run(args)?,
            args.target.output.json || args.spread.child.is_some(),
        ),
        Command::Connect(args) => print(&connect::run(args)?, args.target.output.json),
        Command::Sweep(args) => Ok(sweep::run(args)?.iter().map(Report::errors).sum()),
        Command::Plot(args) => plot::run(&args.inputs, &args.title, &args.out).map(|()| 0),
        Command::Summary(args) => summary::run(&args.runs, args.ratio.as_deref()).map(|()| 0),
        Command::Chat(args) => print(&chat::run(args)?, args.output.json),
        Command::Udp(args) => print(&udp::run(args)?, args.output.json),
    }
}
