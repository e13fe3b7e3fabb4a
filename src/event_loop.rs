//! The event loop, and only the loop: take what handles asked for, flush, poll until the
//! nearest deadline, dispatch each event by its token, serve the resume list, run what is
//! due. It owns the poller and the requests; every connection, listener, TLS session and
//! access rule belongs to the [`Server`] it drives.
//!
//! ```text
//! loop:
//!     take requests (stop, drain, stats, reload); return if stopped or drained
//!     flush: Handler::on_flush, then a slice of the pending list, one writev each
//!     poll(timeout = 0 with work waiting, else until the nearest deadline)
//!     read the clock (once per wakeup)
//!     for each event: waker -> nothing; listener -> accept; UDP -> serve; conn -> drive
//!     serve the resume list (sources cut short by a budget, or un-throttled)
//!     expire what is due (connection deadlines, accept retry, access sweep, log counts owed,
//!     stats line, the periodic report)
//! close every connection, the listeners, return
//! ```
//!
//! Edge-triggered readiness is reported once per change, not while it lasts, so every source
//! is drained until the operating system says `WouldBlock`, with two deliberate exceptions:
//! - a short read (fewer bytes than the buffer holds) means the socket is drained, and the
//!   next arrival raises a new edge, so the read that would only say `WouldBlock` is skipped;
//!   but not when the event also flagged the end of stream (which raises no new edge) or
//!   urgent data (at whose mark the kernel ends a read early), and not where the poller cannot
//!   flag urgent data at all (see [`crate::conn`]);
//! - a budget caps the work per event (bytes read per connection, accepts per listener,
//!   datagrams per socket) so that one busy source cannot starve the others. A source cut
//!   short by its budget goes on a resume list, served after the current batch; the loop
//!   then polls without sleeping.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::event::Event;

use crate::conn_id::Source;
use crate::handle::Request;
use crate::handler::Handler;
use crate::reactor::{Control, Reactor, Readiness, Server};
use crate::stats::Stats;
use crate::timer::{self, NEVER};

impl<H: Handler> Reactor<H> {
    /// Runs the loop until [`Handle::stop`](crate::Handle::stop) or
    /// [`Context::stop_reactor`](crate::Context::stop_reactor) is called, or a
    /// [`Handle::drain`](crate::Handle::drain) completes; then closes every connection and
    /// the listeners and returns. Errors only when the poller itself fails; a failing
    /// connection closes alone and never stops the loop.
    pub fn run(&mut self) -> io::Result<()> {
        let Reactor {
            poll,
            events,
            control,
            server,
        } = self;
        loop {
            control.take_requests(server);
            if control.finished(server) {
                break;
            }
            // What this iteration queued goes out now, one write per connection (up to the
            // flush budget; the rest after the next poll, which then does not sleep).
            server.flush_pending();
            let timeout = control.poll_timeout(server);
            match poll.poll(events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                    // epoll_wait is never restarted: without a fresh clock, the next timeout
                    // would be measured from before this wait, and a stream of signals (or
                    // stop/continue) could postpone every deadline.
                    server.clock.update();
                    control.on_time(server);
                    continue;
                }
                Err(error) => return Err(error),
            }
            server.clock.update();
            for event in events.iter() {
                dispatch(server, event);
            }
            serve_resumed(server);
            control.on_time(server);
        }
        server.shut_down();
        Ok(())
    }
}

/// Hands an event to the source its token names.
fn dispatch<H: Handler>(server: &mut Server<H>, event: &Event) {
    match Source::from_token(event.token()) {
        // Requests are flags read at the top of the loop.
        Source::Waker => {}
        Source::Listener(index) => server.accept(index),
        Source::Udp(index) => server.serve_udp(index),
        Source::Conn(id) => {
            if server.is_live(id) {
                server.drive(id, Readiness::from_event(event));
            }
            // else: a stale event for a connection closed earlier in this batch, whose
            // slab slot may already hold a new connection with another generation.
        }
    }
}

/// Serves the sources cut short by a budget, or resumed after backpressure.
fn serve_resumed<H: Handler>(server: &mut Server<H>) {
    let mut work = std::mem::take(&mut server.resume);
    for source in work.drain(..) {
        match source {
            Source::Listener(index) => server.accept(index),
            Source::Udp(index) => server.serve_udp(index),
            Source::Conn(id) if server.is_live(id) => server.drive(id, Readiness::RESUME),
            _ => {}
        }
    }
    if server.resume.is_empty() {
        server.resume = work; // keep the allocation
    }
}

impl Control {
    /// Acts on what other threads (or signal handlers) asked for through a
    /// [`Handle`](crate::Handle).
    fn take_requests<H: Handler>(&mut self, server: &mut Server<H>) {
        if !self.requests.any() {
            return; // the common case: one load
        }
        let requests = Arc::clone(&self.requests);
        if requests.take(Request::LogStats) {
            self.report_stats(&server.stats);
        }
        if requests.take(Request::ReportStats) {
            if let Some(report) = self.stats_reporter.as_mut() {
                report(&server.stats);
            }
        }
        if requests.take(Request::Stats) {
            requests.answer_stats(&server.stats);
        }
        if requests.take(Request::Reload) {
            server.reload_tls();
        }
        // Read once, here: `finished` uses what was read, so a stop that arrives between
        // the two is logged (next time round) before the loop ends, never skipped.
        if !self.stop_requested && requests.made(Request::Stop) {
            self.stop_requested = true;
            let why = match requests.signal() {
                Some(_) if self.drain_until.is_some() => "second signal: ",
                _ => "",
            };
            log::info!(
                "{why}stopping now, closing {} connections",
                server.connections()
            );
        }
        if self.drain_until.is_none() && requests.made(Request::Drain) {
            server.clock.update();
            let ticks = timer::ticks(Some(self.drain_timeout)).unwrap_or(0);
            self.drain_until = Some(timer::after(server.clock.tick(), ticks));
            // Closing the listeners first: no new connections (or datagrams) while the
            // others finish.
            server.stop_listening();
            if let Some(hook) = self.on_drain.as_mut() {
                hook();
            }
            let received = match requests.signal() {
                Some(name) => format!("received {name}: "),
                None => String::new(),
            };
            log::info!(
                "{received}draining: listeners closed, {} connections have up to {:?} to finish",
                server.connections(),
                self.drain_timeout
            );
        }
    }

    /// Logs the stats line and hands the counters to the embedder's reporter, if any.
    fn report_stats(&mut self, stats: &Stats) {
        log::info!("stats: {stats}");
        if let Some(report) = self.stats_reporter.as_mut() {
            report(stats);
        }
    }

    /// Whether `run` should return now.
    fn finished<H: Handler>(&self, server: &Server<H>) -> bool {
        if server.stop_asked() || self.stop_requested {
            return true;
        }
        match self.drain_until {
            Some(until) => server.connections() == 0 || server.clock.tick() >= until,
            None => false,
        }
    }

    /// How long the poller may sleep: not at all while the server has work waiting (the
    /// resume list, output to flush, a batch a handler may hold), else until the nearest
    /// deadline.
    fn poll_timeout<H: Handler>(&self, server: &Server<H>) -> Option<Duration> {
        if server.has_work() {
            return Some(Duration::ZERO);
        }
        let next = [
            server.next_deadline(),
            self.next_stats_at,
            self.periodic.as_ref().map_or(NEVER, |(next, _, _)| *next),
            self.drain_until.unwrap_or(NEVER),
        ]
        .into_iter()
        .min()
        .unwrap_or(NEVER);
        (next != NEVER).then(|| server.clock.until(next))
    }

    /// Runs what is due: the server's deadlines, and the stats line.
    fn on_time<H: Handler>(&mut self, server: &mut Server<H>) {
        server.expire_timers();
        let now = server.clock.tick();
        if self.next_stats_at <= now {
            self.report_stats(&server.stats);
            // From the planned tick, not from now: the lines keep their rhythm.
            let every = self.stats_every.unwrap_or(NEVER);
            self.next_stats_at = self.next_stats_at.saturating_add(every).max(now + 1);
        }
        if let Some((next, every, report)) = self.periodic.as_mut() {
            if *next <= now {
                report(&server.stats);
                *next = next.saturating_add(*every).max(now + 1);
            }
        }
    }
}
