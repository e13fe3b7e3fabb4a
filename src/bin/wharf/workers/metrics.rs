//! The `--workers` parent's metrics endpoint: one thread per address, serving one scrape at
//! a time. The parent has no reactor, and its figures come from its workers, whose answers
//! take a moment, so a plain blocking server is the simple fit: the thread reads the request
//! (the same sans-IO [`http`] as a worker's endpoint), asks the main thread for the page
//! ([`Event::Scrape`]) and waits for it, then writes it. One deadline bounds reading the
//! request and another writing the page, however the client trickles its bytes, so a
//! client that stalls holds this thread for seconds at most and never holds the workers,
//! which serve the clients, at all.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::relay::Event;
use crate::metrics::http;

/// How long a scraper may take to send its whole request, and to read the whole response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a scrape waits for the page: the workers get 2 s to answer (see
/// [`super::stats`]), so this is a backstop.
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes on `listener` on a thread of its own, until the parent exits.
pub fn serve(listener: TcpListener, events: Sender<Event>) -> io::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    thread::Builder::new()
        .name(format!("metrics-{addr}"))
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(error) = scrape(stream, &events) {
                            log::debug!("metrics: a scrape failed: {error}");
                        }
                    }
                    // Out of descriptors, or a connection reset before it was taken.
                    Err(error) => {
                        log::warn!("metrics: accept failed: {error}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

/// Reads one request from `stream` and answers it.
fn scrape(mut stream: TcpStream, events: &Sender<Event>) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut request = Vec::new();
    let mut buffer = [0; 1024];
    let asked = loop {
        match http::examine(&request) {
            http::Asked::More => {}
            asked => break asked,
        }
        // What is left of the deadline, for this read: never zero, which means "no timeout".
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request took too long",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Ok(()); // gone before the request was whole
        }
        request.extend_from_slice(&buffer[..n]);
    };
    let response = match asked {
        http::Asked::Metrics { head_only } => {
            let (reply, page) = mpsc::channel();
            if events.send(Event::Scrape(reply)).is_err() {
                return Ok(()); // the parent is exiting
            }
            match page.recv_timeout(PAGE_TIMEOUT) {
                Ok(page) => http::metrics(&page, head_only),
                Err(_) => http::refusal(http::Status::Busy),
            }
        }
        http::Asked::Refuse(status) => http::refusal(status),
        http::Asked::More => unreachable!("the loop ends on a whole request"),
    };
    // A page is a few kilobytes: the socket's buffer takes it in one write, unless the
    // client stopped reading long ago; then this write waits at most the timeout.
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(&response)
}
