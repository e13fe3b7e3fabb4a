//! `wharf`: the server binary. Parses the command line into a [`Config`] and listeners, and
//! runs one reactor on this, its only, thread. Signals become requests to the reactor
//! ([`wharf::Handle::install_signal_handlers`]): SIGINT or SIGTERM drains (a second one stops
//! at once), SIGUSR1 logs the counters, SIGHUP reloads the TLS certificate. With
//! `--workers N`, this process is the parent of N such servers, each in a process of its own
//! ([`workers`]) and on one thread too: on SIGUSR1 (and, for a metrics scrape, SIGUSR2,
//! which logs nothing) a worker's reactor writes its counters to the parent, from its loop.
//! Under systemd it takes its listeners from socket activation and notifies readiness
//! ([`systemd`]); `--metrics-listen` serves the counters ([`metrics`]).

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use wharf::service::{Chat, Echo, Line};
use wharf::{bind_udp, Config, Handler, ListenOptions, Listener, Reactor};

mod cli;
mod limits;
mod metrics;
mod pidfile;
mod protect;
mod sys;
mod systemd;
mod tls;
mod workers;

use cli::{Cli, Mode, ServerArgs};
use metrics::{ServiceFigures, WithMetrics};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // First, before this process opens anything: the sockets systemd passed, or in a
    // worker those its parent passed on.
    let server = cli.mode.server_mut();
    let activated = match server.worker_id {
        None => systemd::activated_sockets(),
        Some(_) => (server.worker_socket.iter())
            .map(|passed| workers::inherited_listener(passed))
            .collect(),
    };
    let serves = |sockets: &[(std::net::TcpListener, systemd::Role)]| {
        sockets.is_empty()
            || sockets
                .iter()
                .any(|(_, role)| *role != systemd::Role::Metrics)
    };
    match activated {
        Ok(sockets) if !serves(&sockets) => {
            eprintln!(
                "wharf: error: socket activation passed only metrics sockets: name the \
                 service's socket anything but `metrics` (FileDescriptorName=)"
            );
            return ExitCode::from(2);
        }
        Ok(sockets) => {
            if !sockets.is_empty() && server.worker_id.is_none() {
                eprintln!(
                    "wharf: socket activated: serving on the {} sockets systemd passed \
                     (addresses given on the command line are not bound)",
                    sockets.len()
                );
            }
            server.activated = sockets;
        }
        Err(refusal) => {
            eprintln!("wharf: error: {refusal}");
            return ExitCode::from(2);
        }
    }
    // Host names are looked up once, by the parent: workers get its addresses.
    if cli.mode.server().worker_id.is_none() {
        if let Err(refusal) = cli.mode.resolve() {
            eprintln!("wharf: error: {refusal}");
            return ExitCode::from(2);
        }
    }
    let worker_id = cli.mode.server().worker_id;
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(id) = worker_id {
        workers::tag_log_lines(&mut logger, id);
    }
    logger.init();
    if worker_id.is_none() {
        let args = cli.mode.server();
        if let Err(refusal) = limits::check_listener_overlap(args) {
            eprintln!("wharf: error: {refusal}");
            return ExitCode::from(2);
        }
        // Workers inherit the raised limit; the parent (or the only server) warns once.
        limits::check_open_files(args);
        limits::note_exposed_defaults(args);
    }
    if worker_id.is_none() {
        match workers::count(&cli.mode) {
            Ok(1) => {}
            Ok(count) => return workers::supervise(&cli.mode, count),
            Err(refusal) => {
                eprintln!("wharf: error: {refusal}");
                return ExitCode::from(2); // a usage error, as clap's own
            }
        }
    }
    let result = match cli.mode {
        Mode::Echo { server, udp, .. } => {
            serve("echo", Echo, &server, &udp, false, server.config())
        }
        // Line replies are small and interactive: send them at once (nodelay).
        Mode::Line { server, max_line } => {
            let config = server.line_config(max_line);
            serve("line", Line::new(max_line), &server, &[], true, config)
        }
        Mode::Chat { server, max_line } => {
            let config = server.line_config(max_line);
            serve("chat", Chat::new(max_line), &server, &[], true, config)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(protect::Refused(why)) = error.downcast_ref() {
                eprintln!("wharf: {why}");
                return ExitCode::from(2);
            }
            eprintln!("wharf: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the reactor's own `stats:` log line is shown at this `RUST_LOG`.
fn stats_logged() -> bool {
    log::log_enabled!(target: "wharf::event_loop", log::Level::Info)
}

/// Shows a stats line the operator asked for: through the log when `RUST_LOG` shows info,
/// else straight on stderr, since a stats line is an answer, not chatter.
pub fn stats_line(line: &str) {
    if log::log_enabled!(log::Level::Info) {
        log::info!("{line}");
    } else {
        eprintln!("wharf: {line}");
    }
}

fn serve<H: Handler + ServiceFigures>(
    mode: &str,
    handler: H,
    args: &ServerArgs,
    udp: &[SocketAddr],
    nodelay_by_default: bool,
    config: Config,
) -> Result<(), Box<dyn Error>> {
    // Taken first, before this process opens anything of its own.
    let stats_channel = args
        .worker_stats_fd
        .map(sys::inherited_socket)
        .transpose()
        .map_err(|e| format!("cannot use the stats channel from the parent: {e}"))?;
    let tokens = protect::tokens(args)?;
    protect::check(mode, args, tokens.is_some())?;
    let options = args.listen_options(nodelay_by_default);
    let tls = tls::settings(args)?;
    let mut listeners = Vec::new();
    let mut metrics_activated = Vec::new();
    for (socket, role) in args.activated.iter() {
        let socket = socket.try_clone()?;
        match role {
            systemd::Role::Service(kind) => {
                listeners.push((Listener::from_std(socket, &options)?, *kind))
            }
            systemd::Role::Metrics => metrics_activated.push(socket),
        }
    }
    if args.activated.is_empty() {
        for point in args.listeners() {
            listeners.push((Listener::bind(point.addr, &options)?, point.kind));
        }
    }
    // A worker's parent serves the metrics of all its workers.
    let metrics_options = ListenOptions {
        nodelay: true,
        ..ListenOptions::default()
    };
    let metrics_listeners = match args.worker_id {
        None if !metrics_activated.is_empty() => (metrics_activated.into_iter())
            .map(|socket| Listener::from_std(socket, &metrics_options))
            .collect::<Result<Vec<_>, _>>()?,
        None => (args.metrics_addrs.iter())
            .map(|addr| Listener::bind(*addr, &metrics_options))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => Vec::new(),
    };
    let udp_sockets = udp
        .iter()
        .map(|addr| bind_udp(*addr))
        .collect::<Result<Vec<_>, _>>()?;
    let mut reactor = Reactor::new(config, WithMetrics::new(handler))
        .map_err(|e| format!("cannot create the poller: {e}"))?;
    if let Some(tokens) = tokens {
        reactor.set_authenticator(tokens);
    }

    // Signals are caught before anything is announced, so a script that signals as soon as it
    // reads "listening on" gets a clean stop and exit code 0.
    reactor
        .handle()
        .install_signal_handlers()
        .map_err(|e| format!("cannot catch signals: {e}"))?;

    // Before `listening on`: a script that reads that line finds the file. Removed when this
    // returns, however it returns.
    let _pidfile = match (&args.pidfile, args.worker_id) {
        (Some(path), None) => Some(
            pidfile::Pidfile::create(path)
                .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))?,
        ),
        _ => None,
    };
    for (listener, kind) in listeners {
        let addr = listener.local_addr();
        let id = match kind.tls {
            true => tls::add_listener(&mut reactor, listener, tls.clone())?,
            false => reactor.add_listener(listener)?,
        };
        if kind.proxy {
            reactor.expect_proxy_header(id, args.proxy_from.clone());
        }
        if args.worker_id.is_none() {
            eprintln!("wharf: listening on {addr} ({mode}{})", kind.suffix());
        }
    }
    for listener in metrics_listeners {
        let addr = listener.local_addr();
        let id = reactor.add_listener(listener)?;
        reactor.exempt_from_rules(id);
        reactor.handler_mut().serve_metrics_on(id);
        eprintln!("wharf: listening on {addr} (metrics)");
    }
    for socket in udp_sockets {
        let addr = reactor.add_udp(socket)?;
        eprintln!("wharf: listening on {addr} (udp)");
    }
    if let Some(channel) = stats_channel {
        let reporter = workers::report_to(channel)
            .map_err(|e| format!("cannot use the stats channel from the parent: {e}"))?;
        reactor.set_stats_reporter(reporter);
    } else if !stats_logged() {
        // The operator asked for a stats line (SIGUSR1, --stats-interval): it comes whatever
        // RUST_LOG hides. A worker's goes to its parent instead, which prints the sum.
        reactor.set_stats_reporter(|stats| eprintln!("wharf: stats: {stats}"));
    }
    if args.worker_id.is_some() {
        workers::announce_ready(); // the parent says `listening on` once all workers serve
    } else if systemd::notifying() {
        reactor.on_drain(systemd::stopping);
        reactor.report_every(systemd::STATUS_EVERY, |stats| {
            systemd::status(&format!("serving {} connections", stats.active));
        });
        systemd::ready("serving 0 connections");
    }
    reactor.run()?;
    log::info!("stopped: {}", reactor.stats());
    Ok(())
}
