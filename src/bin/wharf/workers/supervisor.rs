//! The `--workers` parent's main loop: it starts the workers, passes signals on, notices
//! deaths (SIGCHLD) and replaces the dead after a back-off, sums the workers' counters, and
//! decides when to exit. Events come from a signal thread, the stderr relays and the stats
//! channels' readers over one channel, so this state has one owner, the main thread, which is
//! also the only thread that starts workers.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use wharf::{ListenOptions, Reservation};

use super::backoff::Backoff;
use super::channel;
use super::relay::{self, Event};
use super::stats::{Counters, StatsRound};
use crate::cli::{Kind, Mode};
use crate::sys;
use crate::systemd::Role;
use std::net::TcpListener;

pub struct Supervisor {
    mode: &'static str,
    /// Held while the parent lives, so the ports stay taken while workers come and go; each
    /// with the kind of listener it is for.
    reservations: Vec<(Reservation, Kind)>,
    /// Socket activation: the listening sockets systemd passed, which every worker inherits
    /// and accepts on (instead of reservations and listeners of their own).
    activated: Vec<(TcpListener, Kind)>,
    /// This program, and the parent's own arguments, passed on to every worker.
    program: PathBuf,
    args: Vec<OsString>,
    arg0: OsString,
    workers: Vec<Worker>,
    events: Receiver<Event>,
    sender: Sender<Event>,
    /// The stderr relays and the stats channels' readers: each ends with its worker.
    relays: Vec<JoinHandle<()>>,
    /// Asked to stop (a signal, or a worker that could not start): no worker is replaced.
    stopping: bool,
    /// SIGTERMs and SIGINTs so far: the first drains, a later one stops at once.
    terminations: usize,
    /// Whether `listening on` has been said: every worker was ready once.
    announced: bool,
    /// A worker could not start, or did not stop cleanly: exit 1.
    failed: bool,
    stats_every: Option<Duration>,
    next_stats_at: Option<Instant>,
    /// The counters asked for and not all in yet.
    stats_round: Option<StatsRound>,
    /// The metrics endpoint's addresses (its threads serve them), and the scrapes served.
    metrics: Vec<std::net::SocketAddr>,
    scrapes: u64,
    /// Each running worker's last counters, by id: a page shows them for a worker that
    /// did not answer in time, so the sums never drop (a drop reads as a counter reset).
    last_answers: std::collections::BTreeMap<usize, Counters>,
}

struct Worker {
    id: usize,
    state: State,
    backoff: Backoff,
}

enum State {
    Running {
        child: Child,
        started: Instant,
        ready: bool,
        /// Its stderr has reached its end. Its exit is taken only then, so that the parent's
        /// line about it comes after the worker's own last lines.
        relayed: bool,
    },
    /// Died; a new one starts then.
    Restarting { at: Instant },
    /// Exited for good (the parent is stopping).
    Gone,
}

impl Supervisor {
    pub fn start(mode: &Mode, count: usize) -> Result<Supervisor, String> {
        let server = mode.server();
        // SO_REUSEPORT on the reservation only with --reuseport, when the operator means to
        // share the port with other servers: without it, a second `wharf --workers` on this
        // port is refused while these workers listen (see Reservation).
        let options: ListenOptions = server.listen_options(false);
        let mut activated = Vec::new();
        let mut metrics_activated = Vec::new();
        for (socket, role) in &server.activated {
            let socket = socket
                .try_clone()
                .and_then(|socket| Ok(TcpListener::from(sys::above_stdio(socket.into())?)))
                .map_err(|e| format!("cannot pass on an activated socket: {e}"))?;
            match role {
                Role::Service(kind) => activated.push((socket, *kind)),
                Role::Metrics => metrics_activated.push(socket),
            }
        }
        let reservations = match activated.is_empty() {
            true => (server.listeners().into_iter())
                .map(|point| Reservation::bind(point.addr, &options).map(|r| (r, point.kind)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| error.to_string())?,
            false => Vec::new(),
        };
        // Files every worker needs are checked once, here: a bad one is one line, not one
        // per worker.
        crate::tls::settings(server).map_err(|error| error.to_string())?;
        crate::protect::tokens(server).map_err(|error| error.to_string())?;
        let (sender, events) = mpsc::channel();
        // Before any worker exists, so that no SIGCHLD is missed.
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD])
            .map_err(|e| format!("cannot catch signals: {e}"))?;
        let signal_events = sender.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal_events.send(Event::Signal(signal)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
        let program =
            std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "wharf".into());
        let stats_every = server.stats_interval();
        let mut supervisor = Supervisor {
            mode: mode.name(),
            reservations,
            activated,
            program,
            args: args.collect(),
            arg0,
            workers: (1..=count)
                .map(|id| Worker {
                    id,
                    state: State::Gone,
                    backoff: Backoff::new(),
                })
                .collect(),
            events,
            sender,
            relays: Vec::new(),
            stopping: false,
            terminations: 0,
            announced: false,
            failed: false,
            stats_every,
            next_stats_at: stats_every.map(|every| Instant::now() + every),
            stats_round: None,
            metrics: Vec::new(),
            scrapes: 0,
            last_answers: std::collections::BTreeMap::new(),
        };
        let metrics_bound = match metrics_activated.is_empty() {
            true => (server.metrics_addrs.iter())
                .map(|addr| {
                    TcpListener::bind(addr)
                        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            false => metrics_activated,
        };
        for listener in metrics_bound {
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            // The thread accepts in blocking mode; systemd's sockets may be non-blocking.
            listener.set_nonblocking(false).map_err(|e| e.to_string())?;
            supervisor.metrics.push(addr);
            // Not joined: it waits in accept until the process exits.
            super::metrics::serve(listener, supervisor.sender.clone())
                .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        }
        for index in 0..count {
            if supervisor.stopping {
                break; // one could not start: neither can the server
            }
            supervisor.spawn(index);
        }
        Ok(supervisor)
    }

    pub fn run(mut self) -> ExitCode {
        // Until stopping, and the last worker is gone.
        while !self.stopping || self.workers.iter().any(Worker::is_running) {
            let event = match self.next_deadline() {
                Some(at) => self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                    .map_err(|e| e == RecvTimeoutError::Disconnected),
                None => self.events.recv().map_err(|_| true),
            };
            match event {
                Ok(Event::Signal(SIGCHLD)) => self.reap(),
                Ok(Event::Closed { pid }) => {
                    self.relayed(pid);
                    self.reap();
                }
                Ok(Event::Signal(signal @ (SIGTERM | SIGINT))) => self.terminate(signal),
                Ok(Event::Signal(SIGHUP)) => {
                    log::info!(
                        "received SIGHUP: passing it on to {} workers",
                        self.running().count()
                    );
                    self.forward(SIGHUP, false);
                }
                Ok(Event::Signal(SIGUSR1)) => self.ask_for_stats(None),
                Ok(Event::Scrape(reply)) => self.ask_for_stats(Some(reply)),
                Ok(Event::Signal(_)) => {}
                Ok(Event::Ready { pid }) => self.ready(pid),
                Ok(Event::Stats { pid, counters }) => self.collect(pid, counters),
                Err(false) => {} // a deadline
                Err(true) => unreachable!("the supervisor holds a sender of its own channel"),
            }
            self.on_time();
        }
        // Every worker is gone, so every relay reaches the end of its pipe (and every reader
        // the end of its channel): joining them puts the workers' last lines on stderr before
        // the parent exits.
        drop(self.sender);
        for relay in self.relays {
            let _ = relay.join();
        }
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    /// The worker command line: this program, with the parent's arguments, the worker's id,
    /// its end of the stats channel (`stats_fd`, which it inherits) and the reserved
    /// addresses. (Not `/proc/self/exe`, which would survive an upgrade in place, but names
    /// every worker `exe` for `ps`, `pgrep` and `ss -p`.)
    fn command(&self, id: usize, stats_fd: RawFd) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg0(&self.arg0)
            .args(&self.args)
            .arg("--worker-id")
            .arg(id.to_string())
            .arg("--worker-stats-fd")
            .arg(stats_fd.to_string());
        for (reservation, kind) in &self.reservations {
            let flag = kind.flag().replacen("--", "--worker-", 1);
            command.arg(flag).arg(reservation.local_addr().to_string());
        }
        for (socket, kind) in &self.activated {
            sys::inherit_fd(&mut command, socket.as_raw_fd());
            let passed = format!("{}:{}", socket.as_raw_fd(), kind.name());
            command.arg("--worker-socket").arg(passed);
        }
        // The parent speaks to systemd for them all.
        command.env_remove("NOTIFY_SOCKET");
        // Its own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches
        // the parent alone, which passes it on once. Reaching the workers too, it would count
        // as their second signal and stop them without a drain.
        command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        sys::die_with_parent(&mut command);
        sys::inherit_fd(&mut command, stats_fd);
        command
    }

    /// Starts worker `index`. A worker that cannot be started counts as one that died.
    fn spawn(&mut self, index: usize) {
        let id = self.workers[index].id;
        let (channel, workers_end) = match channel::pair() {
            Ok(pair) => pair,
            Err(error) => {
                log::error!("worker={id}: cannot make its stats channel: {error}");
                return self.lost(index, Duration::ZERO);
            }
        };
        let spawned = self.command(id, workers_end.as_raw_fd()).spawn();
        // The worker has its own copy now; the parent keeps only its end, so that the reader
        // sees the end of the stream when the worker exits.
        drop(workers_end);
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                log::error!("worker={id}: cannot start it: {error}");
                return self.lost(index, Duration::ZERO);
            }
        };
        let pid = child.id();
        let relayed = match child
            .stderr
            .take()
            .map(|stderr| relay::start(stderr, pid, self.sender.clone()))
        {
            Some(Ok(relay)) => {
                self.relays.push(relay);
                false
            }
            None => true, // nothing to relay
            Some(Err(error)) => {
                log::error!("worker={id} pid={pid}: cannot relay its stderr: {error}");
                let _ = child.kill();
                let _ = child.wait();
                return self.lost(index, Duration::ZERO);
            }
        };
        // The reader owns the parent's end: the parent writes nothing on it.
        match channel::start_reader(channel, pid, self.sender.clone()) {
            Ok(reader) => self.relays.push(reader),
            Err(error) => {
                log::error!("worker={id} pid={pid}: cannot read its stats channel: {error}");
                let _ = child.kill();
                let _ = child.wait();
                return self.lost(index, Duration::ZERO);
            }
        }
        // Finished relays are not kept: a crash loop must not grow the list.
        self.relays.retain(|relay| !relay.is_finished());
        self.workers[index].state = State::Running {
            child,
            started: Instant::now(),
            ready: false,
            relayed,
        };
    }

    fn relayed(&mut self, pid: u32) {
        for worker in &mut self.workers {
            if let State::Running { child, relayed, .. } = &mut worker.state {
                if child.id() == pid {
                    *relayed = true;
                }
            }
        }
    }

    /// Looks for an exit of every running worker whose stderr has ended.
    fn reap(&mut self) {
        for index in 0..self.workers.len() {
            let State::Running {
                child,
                started,
                relayed: true,
                ..
            } = &mut self.workers[index].state
            else {
                continue;
            };
            let pid = child.id();
            let lived = started.elapsed();
            match child.try_wait() {
                Ok(Some(status)) => self.exited(index, pid, status, lived),
                Ok(None) => {}
                Err(error) => log::error!(
                    "worker={} pid={pid}: cannot wait for it: {error}",
                    self.workers[index].id
                ),
            }
        }
    }

    fn exited(&mut self, index: usize, pid: u32, status: ExitStatus, lived: Duration) {
        let id = self.workers[index].id;
        if let Some(round) = &mut self.stats_round {
            round.gone(pid);
        }
        if self.stopping {
            self.workers[index].state = State::Gone;
            // Killed by the signal passed on (before its handlers were in place) is a stop too.
            let stopped = status.success() || matches!(status.signal(), Some(SIGTERM | SIGINT));
            if stopped {
                log::info!("worker={id} pid={pid} stopped");
            } else {
                log::error!("worker={id} pid={pid} did not stop cleanly: {status}");
                self.failed = true;
            }
            return;
        }
        log::error!("worker={id} pid={pid} died: {status}");
        self.lost(index, lived);
    }

    /// Worker `index` died (or could not start) after serving for `lived`. Before every
    /// worker was ready once, the server cannot start: stop. Afterwards, start a new one
    /// after a back-off.
    fn lost(&mut self, index: usize, lived: Duration) {
        let worker = &mut self.workers[index];
        worker.state = State::Gone;
        if !self.announced {
            eprintln!(
                "wharf: error: worker {} could not start; stopping the others",
                worker.id
            );
            self.failed = true;
            self.stopping = true;
            self.forward(SIGTERM, false);
            return;
        }
        let pause = worker.backoff.after_death(lived);
        worker.state = State::Restarting {
            at: Instant::now() + pause,
        };
        log::warn!("worker={}: starting a new one in {pause:?}", worker.id);
    }

    /// Stops the workers just started (the parent cannot go on: its pid file could not be
    /// written), waits for them, and returns exit status 1.
    pub fn abandon(mut self) -> ExitCode {
        self.failed = true;
        self.terminate(SIGTERM);
        self.run()
    }

    fn terminate(&mut self, signal: i32) {
        if self.terminations == 0 {
            crate::systemd::stopping();
        }
        self.terminations += 1;
        self.stopping = true;
        for worker in &mut self.workers {
            if matches!(worker.state, State::Restarting { .. }) {
                worker.state = State::Gone;
            }
        }
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        let running = self.running().count();
        if self.terminations == 1 {
            log::info!("received {name}: draining {running} workers");
        } else {
            log::info!("received {name} again: stopping {running} workers now");
        }
        self.forward(signal, false);
    }

    /// Sends `signal` to every running worker, or only to the ready ones: a worker that has
    /// not installed its handlers yet would die of SIGUSR1.
    fn forward(&self, signal: i32, ready_only: bool) {
        for (worker, child, ready) in self.running() {
            if ready || !ready_only {
                if let Err(error) = sys::kill(child.id(), signal) {
                    log::error!(
                        "worker={} pid={}: cannot send it signal {signal}: {error}",
                        worker.id,
                        child.id()
                    );
                }
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = (&Worker, &Child, bool)> {
        self.workers
            .iter()
            .filter_map(|worker| match &worker.state {
                State::Running { child, ready, .. } => Some((worker, child, *ready)),
                _ => None,
            })
    }

    fn ready(&mut self, pid: u32) {
        for worker in &mut self.workers {
            if let State::Running { child, ready, .. } = &mut worker.state {
                if child.id() == pid {
                    *ready = true;
                    log::info!("worker={} pid={pid} ready", worker.id);
                }
            }
        }
        let all_ready = self
            .workers
            .iter()
            .all(|w| matches!(w.state, State::Running { ready: true, .. }));
        if all_ready && !self.announced && !self.stopping {
            self.announced = true;
            let reserved = (self.reservations.iter()).map(|(r, kind)| (Some(r.local_addr()), kind));
            let activated = (self.activated.iter()).map(|(s, kind)| (s.local_addr().ok(), kind));
            for (addr, kind) in reserved.chain(activated) {
                let addr = addr.map_or("?".to_string(), |addr| addr.to_string());
                eprintln!(
                    "wharf: listening on {addr} ({}{}, {} workers)",
                    self.mode,
                    kind.suffix(),
                    self.workers.len()
                );
            }
            crate::systemd::ready(&format!("{} workers serving", self.workers.len()));
            for addr in &self.metrics {
                eprintln!("wharf: listening on {addr} (metrics)");
            }
        }
    }

    /// SIGUSR1 or the stats interval (`scrape` is `None`), or a scrape of the metrics
    /// endpoint: the signal goes on to every ready worker, whose reactor writes its counters
    /// on its stats channel whatever the log level; the parent sums them when all are in,
    /// and logs the sum or serves it. SIGUSR1 also makes each worker log its own `stats:`
    /// line (at info level); a scrape sends SIGUSR2, which does not, so scrapes add nothing
    /// to the logs.
    fn ask_for_stats(&mut self, scrape: Option<Sender<String>>) {
        let asked: BTreeSet<u32> = self
            .running()
            .filter(|(_, _, ready)| *ready)
            .map(|(_, child, _)| child.id())
            .collect();
        if asked.is_empty() && scrape.is_none() {
            log::info!("stats: workers=0 (none is serving)");
            return;
        }
        self.forward(if scrape.is_some() { SIGUSR2 } else { SIGUSR1 }, true);
        let round = match &mut self.stats_round {
            Some(round) => {
                round.ask(asked);
                round
            }
            None => self.stats_round.insert(StatsRound::new(asked)),
        };
        match scrape {
            Some(reply) => {
                self.scrapes += 1;
                round.serve_to(reply);
            }
            None => round.log_it(),
        }
    }

    fn collect(&mut self, pid: u32, counters: Counters) {
        let Some(id) = self
            .running()
            .find_map(|(worker, child, _)| (child.id() == pid).then_some(worker.id))
        else {
            return;
        };
        if let Some(round) = &mut self.stats_round {
            round.answer(pid, id, counters);
        }
    }

    /// Replaces workers whose back-off is over, sums stats that are in (or overdue), and asks
    /// for them on the stats interval.
    fn on_time(&mut self) {
        let now = Instant::now();
        for index in 0..self.workers.len() {
            if let State::Restarting { at } = self.workers[index].state {
                if at <= now && !self.stopping {
                    self.spawn(index);
                }
            }
        }
        if self.stats_round.as_ref().is_some_and(|r| r.is_over(now)) {
            if let Some(round) = self.stats_round.take() {
                let running: BTreeSet<usize> = self.running().map(|(w, _, _)| w.id).collect();
                self.last_answers.retain(|id, _| running.contains(id));
                let own = vec![("metrics_scrapes".to_string(), self.scrapes)];
                round.finish(&own, &mut self.last_answers);
            }
        }
        if let (Some(at), Some(every)) = (self.next_stats_at, self.stats_every) {
            if at <= now {
                // After a stall, the next line is one interval from now, not a burst.
                let next = at + every;
                self.next_stats_at = Some(if next <= now { now + every } else { next });
                self.ask_for_stats(None);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let restarts = self.workers.iter().filter_map(|w| match w.state {
            State::Restarting { at } => Some(at),
            _ => None,
        });
        let stats = self.stats_round.as_ref().map(StatsRound::deadline);
        restarts.chain(stats).chain(self.next_stats_at).min()
    }
}

impl Worker {
    fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}
