//! The metrics endpoint, `--metrics-listen ADDR`: `GET /metrics` in the Prometheus text
//! format, served by the server's own reactor, on a listener of its own (see
//! docs/OPERATIONS.md, "Monitoring", for the metric list).
//!
//! [`WithMetrics`] wraps the service's handler: a connection on the metrics listener
//! ([`wharf::Context::listener`]) gets a [`Routed::Metrics`] session and never reaches the
//! service; every other connection is the service's, unchanged. The listener is exempt from
//! the service's rules ([`wharf::Reactor::exempt_from_rules`]: `AUTH`, the access rules,
//! `--max-conns`), so a scrape is answered when the service is full or a client is locked
//! out: the endpoint binds to loopback unless told otherwise, and bounds itself.
//!
//! The endpoint cannot starve the service: at most [`MAX_SCRAPERS`] metrics connections
//! wait for their request at once, a request head is at most [`http::MAX_REQUEST`] bytes,
//! each connection serves one request and closes, and a page is a few kilobytes rendered in
//! microseconds. Nor can idle connections starve the endpoint: a new scraper past the
//! limit is served, and the oldest of those still waiting is answered 503 and closed.
//!
//! With `--workers N` the parent serves the endpoint instead ([`crate::workers`]): it asks
//! every worker for its figures and serves their sum, with each worker's series beside it.

use std::net::SocketAddr;

use wharf::service::{Chat, Echo, Line};
use wharf::{CloseReason, ConnId, Context, Handler, ListenerId};

pub mod exposition;
pub mod http;
pub mod process;

/// Most metrics connections waiting for their request at once.
pub const MAX_SCRAPERS: usize = 16;

/// Figures a service keeps beyond the reactor's [`wharf::Stats`], by name (see
/// [`exposition`] for the names it knows).
pub trait ServiceFigures {
    fn figures(&self, out: &mut Vec<(String, u64)>) {
        let _ = out;
    }
}

impl ServiceFigures for Echo {}
impl ServiceFigures for Line {}

impl ServiceFigures for Chat {
    fn figures(&self, out: &mut Vec<(String, u64)>) {
        out.push(("chat_members".into(), self.members() as u64));
        out.push(("chat_lines".into(), self.lines()));
        out.push(("chat_deliveries".into(), self.deliveries()));
    }
}

/// Every figure of this process: the reactor's counters less the endpoint's own `scrapes`
/// ([`Scrapes`]), the service's figures and the process's.
pub fn gather(
    stats: &wharf::Stats,
    scrapes: &Scrapes,
    service: &impl ServiceFigures,
) -> Vec<(String, u64)> {
    let mut figures: Vec<(String, u64)> = stats
        .fields()
        .map(|(name, value)| {
            (
                name.to_string(),
                value.saturating_sub(scrapes.counted(name)),
            )
        })
        .collect();
    figures.push(("metrics_scrapes".into(), scrapes.served));
    service.figures(&mut figures);
    process::figures(&mut figures);
    figures
}

/// What the endpoint's own connections added to the reactor's counters, so that the
/// figures it serves are the service's: an operator graphing accepted connections or bytes
/// sees clients, not the scraper. The endpoint's traffic is counted by
/// `wharf_metrics_scrapes_total` instead.
#[derive(Debug, Default)]
pub struct Scrapes {
    /// Metrics connections open now.
    open: u64,
    accepted: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Closes, by the counter each counted toward ([`CloseReason::counter`]).
    closed: Vec<(&'static str, u64)>,
    /// Requests answered with the metrics.
    served: u64,
}

impl Scrapes {
    /// How much of the reactor's counter `name` is the endpoint's.
    fn counted(&self, name: &str) -> u64 {
        match name {
            "accepted" => self.accepted,
            "active" => self.open,
            "bytes_in" => self.bytes_in,
            "bytes_out" => self.bytes_out,
            "closed" => self.closed.iter().map(|(_, count)| count).sum(),
            name => (self.closed.iter())
                .find(|(counter, _)| *counter == name)
                .map_or(0, |(_, count)| *count),
        }
    }

    fn closed(&mut self, reason: CloseReason) {
        self.open -= 1;
        let counter = reason.counter();
        match self.closed.iter_mut().find(|(name, _)| *name == counter) {
            Some((_, count)) => *count += 1,
            None => self.closed.push((counter, 1)),
        }
    }
}

/// A service's handler, and the metrics endpoint on listener `metrics`.
pub struct WithMetrics<H> {
    service: H,
    metrics: Option<ListenerId>,
    scrapes: Scrapes,
    /// Metrics connections that have not sent a whole request yet, oldest first.
    waiting: Vec<ConnId>,
}

/// The session of a connection: the service's, or a scrape.
pub enum Routed<S> {
    Service(S),
    Metrics,
}

impl<H> WithMetrics<H> {
    /// `service`, with no metrics listener yet ([`WithMetrics::serve_metrics_on`]).
    pub fn new(service: H) -> WithMetrics<H> {
        WithMetrics {
            service,
            metrics: None,
            scrapes: Scrapes::default(),
            waiting: Vec::new(),
        }
    }

    /// Connections on `listener` are scrapes.
    pub fn serve_metrics_on(&mut self, listener: ListenerId) {
        self.metrics = Some(listener);
    }
}

impl<H: Handler + ServiceFigures> Handler for WithMetrics<H> {
    type Session = Routed<H::Session>;

    fn on_open(&mut self, ctx: &mut Context<'_>, peer: SocketAddr) -> Self::Session {
        if self.metrics.is_none() || ctx.listener() != self.metrics {
            return Routed::Service(self.service.on_open(ctx, peer));
        }
        self.scrapes.open += 1;
        self.scrapes.accepted += 1;
        if self.waiting.len() >= MAX_SCRAPERS {
            let oldest = self.waiting.remove(0);
            let busy = http::refusal(http::Status::Busy);
            self.scrapes.bytes_out += busy.len() as u64;
            ctx.write_to(oldest, &busy);
            ctx.close_conn(oldest);
        }
        self.waiting.push(ctx.id());
        Routed::Metrics
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        session: &mut Self::Session,
        input: &[u8],
    ) -> usize {
        let Routed::Service(session) = session else {
            return self.scrape(ctx, input);
        };
        self.service.on_data(ctx, session, input)
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_>, session: &mut Self::Session, rest: &[u8]) {
        match session {
            Routed::Service(session) => self.service.on_peer_closed(ctx, session, rest),
            Routed::Metrics => self.scrapes.bytes_in += rest.len() as u64, // an unfinished head
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, session: Self::Session, reason: CloseReason) {
        match session {
            Routed::Service(session) => self.service.on_close(ctx, session, reason),
            Routed::Metrics => {
                self.waiting.retain(|id| *id != ctx.id());
                self.scrapes.closed(reason);
            }
        }
    }

    fn on_flush(&mut self, ctx: &mut Context<'_>) {
        self.service.on_flush(ctx);
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], reply: &mut Vec<u8>) -> bool {
        self.service.on_datagram(from, data, reply)
    }
}

impl<H: Handler + ServiceFigures> WithMetrics<H> {
    /// Answers what a scraper sent, once its request head is complete; returns what it
    /// consumed. A partial head is left unconsumed, for the reactor to hold until the rest
    /// comes, so this keeps no state; bytes after a complete head go with the connection.
    fn scrape(&mut self, ctx: &mut Context<'_>, input: &[u8]) -> usize {
        let asked = http::examine(input);
        if asked == http::Asked::More {
            return 0; // its bytes are counted once it is whole
        }
        // Read by the reactor, and so in its counters: the endpoint's, not the service's.
        self.scrapes.bytes_in += input.len() as u64;
        let response = match asked {
            http::Asked::More => return 0,
            http::Asked::Metrics { head_only } => {
                self.scrapes.served += 1;
                let figures = gather(ctx.stats(), &self.scrapes, &self.service);
                http::metrics(&exposition::render(&figures, &[]), head_only)
            }
            http::Asked::Refuse(status) => http::refusal(status),
        };
        self.respond(ctx, response);
        input.len()
    }

    fn respond(&mut self, ctx: &mut Context<'_>, response: Vec<u8>) {
        self.waiting.retain(|id| *id != ctx.id());
        self.scrapes.bytes_out += response.len() as u64;
        ctx.write(&response);
        ctx.close();
    }
}
