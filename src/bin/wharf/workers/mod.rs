//! `wharf --workers N`: a parent process that runs N worker processes on one port.
//!
//! Each worker is this same binary, run again with the parent's arguments plus a hidden
//! `--worker-id` and the listen addresses the parent resolved. It is a complete
//! single-threaded server with its own listening socket on the shared port (SO_REUSEPORT: the
//! kernel spreads new connections over the workers by a hash of their addresses). The parent
//! serves no connection. It
//!
//! - reserves every listen address once ([`wharf::Reservation`]: bound, never listening), so that
//!   `IP:0` gives every worker the same real port and "address in use" is one line before
//!   any worker starts;
//! - says `listening on ADDR (MODE, N workers)` once every worker serves;
//! - passes SIGTERM, SIGINT, SIGHUP and SIGUSR1 on to every worker, and once asked to stop,
//!   exits when the last worker has drained: 0 if every one stopped cleanly;
//! - starts a new worker when one dies, after a back-off that doubles while workers keep
//!   dying young, so a crash loop cannot spin the CPU;
//! - relays each worker's stderr ([`relay`]);
//! - on SIGUSR1 and every `--stats-interval`, passes SIGUSR1 on to every ready worker, whose
//!   reactor writes its counters on a Unix socket of their own ([`channel`], a format of its
//!   own whatever `RUST_LOG` says), and sums the answers into one `stats:` line ([`stats`]).
//!
//! - serves the metrics endpoint (`--metrics-listen`): each scrape asks every worker for its
//!   counters, as SIGUSR1 does but with SIGUSR2 (no log lines), and gets their sum and each
//!   worker's figures ([`metrics`]).
//!
//! The parent uses threads: one for signals, one per metrics address, and per worker one
//! stderr relay and one reader of its stats channel. Workers never do: a worker's reactor writes its counters on the
//! channel from its loop thread ([`channel`]).
//! Workers are started from the main thread only, because the death signal that stops a
//! worker when its parent dies fires when the *thread* that started it ends.

use std::process::ExitCode;
use std::thread;

use crate::cli::{Mode, Workers};

mod backoff;
mod channel;
mod log;
mod metrics;
mod relay;
mod stats;
mod supervisor;

pub use channel::report_to;
pub use relay::announce_ready;

/// In a worker: the listening socket its parent passed on, from `--worker-socket FD:KIND`.
pub fn inherited_listener(
    passed: &str,
) -> Result<(std::net::TcpListener, crate::systemd::Role), String> {
    let invalid = || format!("--worker-socket {passed}: expected FD:KIND");
    let (fd, kind) = passed.split_once(':').ok_or_else(invalid)?;
    let fd = fd.parse().map_err(|_| invalid())?;
    let kind = crate::cli::Kind::named(kind).ok_or_else(invalid)?;
    let socket = crate::systemd::listening_tcp(fd)
        .map_err(|why| format!("--worker-socket {passed}: {why}"))?;
    Ok((socket, crate::systemd::Role::Service(kind)))
}

use supervisor::Supervisor;

/// How many servers the command line asks for: 1 runs the server in this process, as it
/// always did. `Err` is one line saying why the combination is refused.
pub fn count(mode: &Mode) -> Result<usize, String> {
    let asked = mode.server().workers;
    let (count, shown) = match asked {
        Workers::Count(n) => (n, n.to_string()),
        Workers::PerCpu => (
            thread::available_parallelism().map_or(1, |n| n.get()),
            "auto".to_string(),
        ),
    };
    // Refused even where `auto` means one CPU: the answer must not depend on the host.
    if matches!(mode, Mode::Chat { .. }) && asked != Workers::Count(1) {
        return Err(format!(
            "chat is one room per process, so it runs with one worker: drop --workers {shown}"
        ));
    }
    if count == 1 {
        return Ok(1);
    }
    if !mode.udp().is_empty() {
        return Err(format!(
            "--udp runs with one worker: drop --workers {shown} or --udp"
        ));
    }

    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return Err(
            "--workers needs Linux: elsewhere SO_REUSEPORT does not spread connections, and \
             workers cannot follow their parent's death"
                .to_string(),
        );
    }
    Ok(count)
}

/// The `--workers` parent: runs `count` workers until it is told to stop, and returns the
/// process's exit code.
pub fn supervise(mode: &Mode, count: usize) -> ExitCode {
    match Supervisor::start(mode, count) {
        Ok(supervisor) => {
            // The parent's pid: the one to signal. Removed when the parent exits.
            let _pidfile = match &mode.server().pidfile {
                Some(path) => match crate::pidfile::Pidfile::create(path) {
                    Ok(pidfile) => Some(pidfile),
                    Err(error) => {
                        let path = path.display();
                        eprintln!("wharf: error: cannot write the pid file {path}: {error}");
                        return supervisor.abandon();
                    }
                },
                None => None,
            };
            supervisor.run()
        }
        Err(error) => {
            eprintln!("wharf: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// In a worker: every log line says which worker wrote it, and none blocks it (see
/// [`log`]).
pub fn tag_log_lines(logger: &mut env_logger::Builder, id: usize) {
    use std::io::Write;
    if let Some(pipe) = log::NonBlockingLog::open() {
        logger.target(env_logger::Target::Pipe(Box::new(pipe)));
    }
    logger.format(move |out, record| {
        writeln!(
            out,
            "[{} {:<5} {}] worker={id} {}",
            out.timestamp(),
            record.level(),
            record.target(),
            record.args()
        )
    });
}
