//! `wharf`: the server binary. Parses the command line into a [`Config`] and listeners, runs
//! one reactor on this thread, and stops it on SIGINT or SIGTERM.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;

use clap::{Args, Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wharf::proto::line::DEFAULT_MAX_LINE;
use wharf::service::{Echo, Line};
use wharf::{Config, Handler, ListenOptions, Listener, Reactor};

/// A single-threaded event-loop TCP server: echo and line echo, for testing clients,
/// proxies and firewalls.
#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    after_help = "Examples:\n  \
        wharf echo                                  # echo on 127.0.0.1:7000\n  \
        wharf line --listen '[::]:7000'             # line echo, IPv4 and IPv6, all interfaces\n  \
        wharf echo --listen 127.0.0.1:0             # any free port; the real one is printed\n\n\
        Logging goes to stderr; set RUST_LOG (error, warn, info, debug, trace), default info."
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Echo every byte back, in order (RFC 862).
    Echo {
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Echo each complete line back byte-exact, terminator included.
    ///
    /// Lines end with \n; \r\n, empty lines, NUL and non-UTF-8 bytes pass through. A final
    /// line without \n is echoed when the client half-closes. A line longer than --max-line
    /// gets `ERR line too long (max N bytes)` and the connection is closed.
    Line {
        #[command(flatten)]
        listen: ListenArgs,
        /// Longest line accepted, in bytes before the \n.
        #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE)]
        max_line: usize,
    },
}

#[derive(Args)]
struct ListenArgs {
    /// Address to listen on, IP:PORT; repeat for several. `[::]:PORT` also accepts IPv4.
    /// Port 0 picks a free port.
    #[arg(
        long = "listen",
        value_name = "ADDR",
        default_value = "127.0.0.1:7000",
        value_parser = parse_listen_addr
    )]
    addrs: Vec<SocketAddr>,
    /// Length of the queue of connections waiting to be accepted (capped by the kernel at
    /// net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = ListenOptions::default().backlog)]
    backlog: u32,
    /// Set SO_REUSEPORT, so several servers can share the port.
    #[arg(long)]
    reuseport: bool,
    /// Make IPv6 listeners IPv6-only (IPV6_V6ONLY), so `[::]:PORT` and `0.0.0.0:PORT` can
    /// be given as two listeners.
    #[arg(long)]
    v6only: bool,
}

fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid listen address '{text}': expected IP:PORT, \
             e.g. 127.0.0.1:7000, [::1]:7000 or [::]:7000"
        )
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Echo { listen } => serve("echo", Echo, Config::default(), &listen),
        Mode::Line { listen, max_line } => {
            // Line replies are small and interactive: send them at once.
            let config = Config {
                nodelay: true,
                // The line protocol refuses longer lines itself, with an error line.
                max_input: Config::default().max_input.max(max_line.saturating_add(1)),
                ..Config::default()
            };
            serve("line", Line::new(max_line), config, &listen)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wharf: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve<H: Handler>(
    mode: &str,
    handler: H,
    config: Config,
    args: &ListenArgs,
) -> Result<(), Box<dyn Error>> {
    let options = ListenOptions {
        backlog: args.backlog,
        reuseport: args.reuseport,
        v6only: args.v6only,
    };
    let listeners = args
        .addrs
        .iter()
        .map(|addr| Listener::bind(*addr, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut reactor =
        Reactor::new(config, handler).map_err(|e| format!("cannot create the poller: {e}"))?;

    // Signals are caught before anything is announced, so a script that signals as soon as it
    // reads "listening on" gets a clean stop and exit code 0.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot catch signals: {e}"))?;
    let stopper = reactor.handle();
    thread::Builder::new()
        .name("wharf-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                log::info!("received {name}, stopping");
                stopper.stop();
            }
        })?;

    for listener in listeners {
        let addr = listener.local_addr();
        reactor.add_listener(listener)?;
        eprintln!("wharf: listening on {addr} ({mode})");
    }
    reactor.run()?;
    let stats = reactor.stats();
    log::info!(
        "stopped: accepted={} bytes_in={} bytes_out={}",
        stats.accepted,
        stats.bytes_in,
        stats.bytes_out
    );
    Ok(())
}
