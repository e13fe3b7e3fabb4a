//! [`Handle`]: controlling a running reactor from other threads and from signal handlers.
//! Requests are flags the loop reads at the top of each iteration ([`Requests`]); a
//! [`mio::Waker`] wakes it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::stats::Stats;

/// A handle that controls a running [`Reactor`](crate::Reactor) from any thread: stop it, drain it, or ask
/// for a line of stats. Requests are flags read by the loop, which a [`mio::Waker`] wakes.
///
/// ```
/// # use wharf::{Config, Reactor, service::Echo};
/// let mut reactor = Reactor::new(Config::default(), Echo)?;
/// let handle = reactor.handle();
/// handle.stop(); // before or while it runs: `run` returns promptly
/// reactor.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) requests: Arc<Requests>,
}

/// What handles have asked of one reactor, read by its loop between polls: flags, the
/// signal that set them, and the waker that ends the loop's wait.
pub(crate) struct Requests {
    stop: AtomicBool,
    drain: AtomicBool,
    log_stats: AtomicBool,
    report_stats: AtomicBool,
    reload: AtomicBool,
    /// Someone waits in [`Handle::stats`] for a copy of the counters.
    stats: AtomicBool,
    stats_reply: Mutex<StatsReply>,
    /// Notified each time the loop puts a copy in `stats_reply`.
    stats_ready: Condvar,
    /// Some request was made since the loop last looked: one load per loop iteration
    /// when nothing was asked, instead of one per kind of request.
    pending: AtomicBool,
    /// The last signal that made a request (0: none), named in the reactor's log lines.
    signal: AtomicI32,
    waker: Waker,
}

/// The loop's answers to [`Handle::stats`]: requests are numbered, so that each caller waits
/// for a copy taken after it asked.
#[derive(Default)]
struct StatsReply {
    asked: u64,
    answered: u64,
    stats: Stats,
}

/// What a [`Handle`] can ask of the reactor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Request {
    Stop,
    Drain,
    LogStats,
    /// The counters to the stats reporter only, for [`Handle::report_stats`].
    ReportStats,
    Reload,
    /// A copy of the counters, for [`Handle::stats`].
    Stats,
}

impl Requests {
    pub(crate) fn new(waker: Waker) -> Requests {
        Requests {
            stop: AtomicBool::new(false),
            drain: AtomicBool::new(false),
            log_stats: AtomicBool::new(false),
            report_stats: AtomicBool::new(false),
            reload: AtomicBool::new(false),
            stats: AtomicBool::new(false),
            stats_reply: Mutex::default(),
            stats_ready: Condvar::new(),
            pending: AtomicBool::new(false),
            signal: AtomicI32::new(0),
            waker,
        }
    }

    fn flag(&self, request: Request) -> &AtomicBool {
        match request {
            Request::Stop => &self.stop,
            Request::Drain => &self.drain,
            Request::LogStats => &self.log_stats,
            Request::ReportStats => &self.report_stats,
            Request::Reload => &self.reload,
            Request::Stats => &self.stats,
        }
    }

    /// Whether any request was made since the last call: the loop looks at each kind only
    /// then. A request made while it looks sets this again, so none is missed.
    pub(crate) fn any(&self) -> bool {
        self.pending.load(Ordering::Acquire) && self.pending.swap(false, Ordering::AcqRel)
    }

    /// Whether `request` was made (it stays made: stop and drain).
    pub(crate) fn made(&self, request: Request) -> bool {
        self.flag(request).load(Ordering::Acquire)
    }

    /// Whether `request` was made since the last time it was taken (log stats, reload, a
    /// copy of the stats: each request is served once).
    pub(crate) fn take(&self, request: Request) -> bool {
        self.flag(request).swap(false, Ordering::AcqRel)
    }

    /// The name of the last signal that made a request, if one did.
    pub(crate) fn signal(&self) -> Option<&'static str> {
        match self.signal.load(Ordering::Acquire) {
            0 => None,
            signal => Some(crate::sys::signal::name(signal)),
        }
    }

    /// In the loop: answers every [`Handle::stats`] waiting, with `stats`.
    pub(crate) fn answer_stats(&self, stats: &Stats) {
        // A poisoned lock only means an asker panicked: the counters are still whole.
        let mut reply = self.stats_reply.lock().unwrap_or_else(|e| e.into_inner());
        reply.stats.clone_from(stats);
        reply.answered = reply.asked;
        self.stats_ready.notify_all();
    }

    /// Makes `request` and wakes the loop; only atomics and the waker's write, which are
    /// async-signal-safe, so signal handlers use it too. `signal`: the signal that made it
    /// (0: code did).
    fn make(&self, request: Request, signal: i32) -> io::Result<()> {
        if matches!(request, Request::Stop | Request::Drain) {
            self.signal.store(signal, Ordering::Release);
        }
        self.flag(request).store(true, Ordering::Release);
        self.pending.store(true, Ordering::Release);
        self.waker.wake()
    }
}

impl Handle {
    /// Stops the reactor now: [`Reactor::run`](crate::Reactor::run) closes every connection and returns.
    pub fn stop(&self) {
        self.request(Request::Stop);
    }

    /// Stops the reactor gracefully: the listeners close at once, connections get up to
    /// `Config::drain_timeout` to finish (everything received is still answered, half-closed
    /// connections are flushed and closed), then the rest are closed and [`Reactor::run`](crate::Reactor::run)
    /// returns. It returns sooner when the last connection closes.
    pub fn drain(&self) {
        self.request(Request::Drain);
    }

    /// Asks the reactor to log one line of [`Stats`](crate::Stats) (at info level).
    pub fn log_stats(&self) {
        self.request(Request::LogStats);
    }

    /// Asks the reactor to hand its counters to its stats reporter
    /// ([`Reactor::set_stats_reporter`](crate::Reactor::set_stats_reporter)) without logging
    /// them: for a reporter that feeds something polled often (a metrics scrape), where a
    /// log line each time would be noise. Without a reporter it does nothing.
    pub fn report_stats(&self) {
        self.request(Request::ReportStats);
    }

    /// A copy of the reactor's [`Stats`], taken by the loop between two polls; `None` if the
    /// loop did not answer within `timeout` (it is not running, or has stopped). Another
    /// thread (a metrics exporter, a test, a supervisor) waits here; the loop
    /// pays one flag check per iteration and a copy per request. Never call it from the
    /// loop's own thread (a handler's callback): the loop cannot answer while it waits, so
    /// it would block for `timeout` and return `None`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use wharf::{Config, Reactor, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// let handle = reactor.handle();
    /// let asker = std::thread::spawn(move || {
    ///     let stats = handle.stats(Duration::from_secs(10));
    ///     handle.stop();
    ///     stats
    /// });
    /// reactor.run()?;
    /// assert_eq!(asker.join().unwrap().map(|s| s.accepted), Some(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stats(&self, timeout: Duration) -> Option<Stats> {
        let deadline = Instant::now() + timeout;
        let requests = &self.requests;
        let mut reply = requests
            .stats_reply
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        reply.asked += 1;
        let ticket = reply.asked;
        self.request(Request::Stats);
        while reply.answered < ticket {
            let left = deadline.checked_duration_since(Instant::now())?;
            reply = match requests.stats_ready.wait_timeout(reply, left) {
                Ok((reply, _)) => reply,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Some(reply.stats.clone())
    }

    /// Asks the reactor to read its TLS listeners' certificate and key files again
    /// ([`TlsConfig::from_pem_files`](crate::TlsConfig::from_pem_files)): handshakes after
    /// the reload use the new pair, established connections keep theirs, and a pair that
    /// does not load is logged and the old one kept.
    pub fn reload_tls(&self) {
        self.request(Request::Reload);
    }

    /// Installs process-wide signal handlers that drive this reactor: the first SIGINT or
    /// SIGTERM [drains](Handle::drain) it, a second one [stops](Handle::stop) it, SIGUSR1
    /// [logs its stats](Handle::log_stats), SIGUSR2
    /// [reports them without logging](Handle::report_stats), and SIGHUP
    /// [reloads its TLS certificates](Handle::reload_tls). The handlers make the requests themselves, so
    /// no thread is started and the process stays single-threaded. Call it once, before
    /// [`Reactor::run`](crate::Reactor::run): the handlers stay installed for the life of the process (a second
    /// call adds a second set), so this is for a program whose main loop is this reactor.
    pub fn install_signal_handlers(&self) -> io::Result<()> {
        use crate::sys::signal::{self, Asked};
        let handle = self.clone();
        signal::install(move |signal, asked| {
            let request = match asked {
                Asked::Drain => Request::Drain,
                Asked::Stop => Request::Stop,
                Asked::LogStats => Request::LogStats,
                Asked::ReportStats => Request::ReportStats,
                Asked::Reload => Request::Reload,
            };
            handle.request_from_signal(signal, request);
        })
    }

    fn request(&self, request: Request) {
        if let Err(error) = self.requests.make(request, 0) {
            log::error!("cannot wake the reactor: {error}");
        }
    }

    /// [`Handle::request`] for signal handlers: async-signal-safe, and no logging.
    pub(crate) fn request_from_signal(&self, signal: i32, request: Request) {
        let _ = self.requests.make(request, signal);
    }
}
