//! The metrics endpoint (`--metrics-listen`): `GET /metrics` in the Prometheus text format,
//! read here with a Prometheus text-format parser, counts what the clients did (and not the
//! scrapes), at any `RUST_LOG`; with `--workers` the parent serves the sum and each worker's
//! series; anything but a scrape gets its HTTP status and a close.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use prometheus_parse::{Scrape, Value};

/// The address of the server's `listening on ADDR (metrics)` line.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("(metrics)", STARTUP_TIMEOUT);
    parse_listening_line(&line).expect("a metrics address").0
}

/// Sends `request` and reads the whole response: (status line, head, body).
fn http(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send the request");
    let response = read_to_eof(&mut stream, IO_TIMEOUT);
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: wharf\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let lines = body.lines().map(|line| Ok(line.to_string()));
    Scrape::parse(lines).expect("a page in the Prometheus text format")
}

/// The value of the sample of `metric` with exactly `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape.samples.iter().find(|sample| {
        sample.metric == metric
            && sample.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
    })?;
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        _ => None,
    }
}

fn must(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, metric, labels)
        .unwrap_or_else(|| panic!("no sample {metric}{labels:?} in {:?}", scrape.samples))
}

/// Scrapes until `condition` holds: the counters move on the server's loop, a moment after
/// the clients saw what they count.
fn scrape_until(addr: SocketAddr, what: &str, condition: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    wait_until(Duration::from_secs(30), what, || {
        let page = scrape(addr);
        let done = condition(&page);
        last = Some(page);
        done
    });
    last.expect("a scrape")
}

/// Echoes `message` on a fresh connection, half-closes it and reads the echo to the end.
fn echo_once(addr: SocketAddr, message: &[u8]) {
    let echoed = send_and_half_close(addr, message);
    assert_bytes_eq("the echo", message, &echoed);
}

#[test]
fn the_figures_are_what_the_clients_did_at_any_log_level() {
    let server = Server::start_with_env(
        "echo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-conns-per-ip",
            "2",
        ],
        &[("RUST_LOG", "warn")],
    );
    let metrics = metrics_addr(&server);
    let message = b"twelve bytes";
    // Two connections held open: three more from the same address are refused. The
    // scrapes come from that address too, and are not: the endpoint is exempt.
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(server.addr())).collect();
    for stream in &mut held {
        assert_eq!(round_trip(stream, message), message);
    }
    let refused_per_ip = |page: &Scrape| {
        value(
            page,
            "wharf_connections_refused_total",
            &[("reason", "per_ip")],
        )
    };
    for _ in 0..3 {
        // Closed at once, without a byte (a reset is as good as an end).
        let mut refused = connect(server.addr());
        refused.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        assert!(matches!(refused.read(&mut [0; 16]), Ok(0) | Err(_)));
    }
    scrape_until(metrics, "three refusals are counted", |page| {
        refused_per_ip(page) == Some(3.0)
    });
    for stream in held {
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut stream = stream;
        assert!(read_to_eof(&mut stream, IO_TIMEOUT).is_empty());
    }
    let page = scrape_until(metrics, "both connections are closed", |page| {
        value(page, "wharf_connections_active", &[]) == Some(0.0)
    });
    let bytes = 2.0 * message.len() as f64;
    assert_eq!(must(&page, "wharf_connections_accepted_total", &[]), 2.0);
    assert_eq!(
        must(
            &page,
            "wharf_connections_closed_total",
            &[("reason", "peer")]
        ),
        2.0
    );
    assert_eq!(must(&page, "wharf_received_bytes_total", &[]), bytes);
    assert_eq!(must(&page, "wharf_sent_bytes_total", &[]), bytes);
    assert!(must(&page, "wharf_metrics_scrapes_total", &[]) >= 2.0);
    if cfg!(target_os = "linux") {
        assert!(must(&page, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(must(&page, "process_open_fds", &[]) >= 3.0);
    }
    assert!(page.docs.contains_key("wharf_connections_closed_total"));
    // SIGUSR1 still logs the counters at RUST_LOG=warn (the reactor's own: the scrapes'
    // connections are in them).
    let line = server.request_stats();
    assert_eq!(stat(&line, "refused_per_ip"), 3, "{line}");
    assert!(stat(&line, "accepted") > 2, "{line}");
}

#[test]
fn workers_serve_their_sum_and_each_worker_apart() {
    let mut server = Server::start_with_env(
        "echo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "3",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "warn")],
    );
    let metrics = metrics_addr(&server);
    let message = b"0123456789";
    for _ in 0..9 {
        echo_once(server.addr(), message);
    }
    let page = scrape_until(metrics, "nine connections are counted, closed", |page| {
        value(
            page,
            "wharf_connections_closed_total",
            &[("reason", "peer")],
        ) == Some(9.0)
    });
    assert_eq!(must(&page, "wharf_connections_accepted_total", &[]), 9.0);
    assert_eq!(must(&page, "wharf_received_bytes_total", &[]), 90.0);
    let mut per_worker = 0.0;
    for worker in ["1", "2", "3"] {
        let labels = [("worker", worker)];
        per_worker += must(&page, "wharf_connections_accepted_total", &labels);
        if cfg!(target_os = "linux") {
            assert!(must(&page, "process_open_fds", &labels) >= 3.0);
        }
    }
    assert_eq!(per_worker, 9.0, "the workers' series add up to the sum");
    let peer = |worker| [("reason", "peer"), ("worker", worker)];
    let closed: f64 = ["1", "2", "3"]
        .into_iter()
        .map(|worker| must(&page, "wharf_connections_closed_total", &peer(worker)))
        .sum();
    assert_eq!(closed, 9.0);
    // Scrapes ask the workers with SIGUSR2: no stats lines in the log for them.
    assert!(
        server.log_lines("stats: ").is_empty(),
        "{}",
        server.stderr_text()
    );
    // The metrics thread does not keep the parent from exiting once its workers have.
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(EXIT_TIMEOUT);
    assert!(status.success(), "{status}: {}", server.stderr_text());
}

#[test]
fn anything_but_a_scrape_gets_its_status_and_a_close() {
    let server = Server::start(
        "line",
        &["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = metrics_addr(&server);
    let cases: [(&[u8], &str); 5] = [
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (b"hello there\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"HEAD /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
        (
            b"GET /metrics HTTP/1.1\r\nX: abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuv",
            "",
        ),
    ];
    for (request, expected) in cases {
        if expected.is_empty() {
            // An endless head: 431 once it passes the limit.
            let mut stream = connect(metrics);
            stream.write_all(request).expect("send");
            let filler = [b'a'; 1024];
            for _ in 0..8 {
                if stream.write_all(&filler).is_err() {
                    break;
                }
            }
            let response = read_to_eof(&mut stream, IO_TIMEOUT);
            let response = String::from_utf8_lossy(&response);
            assert!(
                response.starts_with("HTTP/1.1 431 "),
                "{}",
                preview(response.as_bytes())
            );
            continue;
        }
        let (status, head, body) = http(metrics, request);
        assert_eq!(status, expected, "{}", preview(request));
        assert!(head.contains("Connection: close"), "{head}");
        if request.starts_with(b"HEAD") {
            assert!(body.is_empty(), "a HEAD response has no body");
        }
    }
    // A request split into single bytes is read whole.
    let mut stream = connect(metrics);
    for byte in b"GET /metrics HTTP/1.1\r\n\r\n" {
        stream.write_all(&[*byte]).expect("send a byte");
        stream.flush().expect("flush");
    }
    let response = read_to_eof(&mut stream, IO_TIMEOUT);
    assert!(
        response.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        preview(&response)
    );
    // The service itself is untouched.
    let mut client = connect(server.addr());
    assert_eq!(round_trip(&mut client, b"still here\n"), b"still here\n");
}

#[test]
fn idle_scrapers_cannot_lock_the_endpoint_the_oldest_makes_way() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = metrics_addr(&server);
    // Sixteen scrapers that never send a request hold every place...
    // (The server accepts them in the order they connected: the first is the oldest.)
    let mut idle: Vec<TcpStream> = (0..16).map(|_| connect(metrics)).collect();
    // ...and a real scrape is still served: the oldest idle one makes way, with a reason.
    let page = scrape(metrics);
    assert!(page
        .samples
        .iter()
        .any(|s| s.metric == "wharf_connections_active"));
    let mut oldest = idle.remove(0);
    let mut response = Vec::new();
    oldest.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    oldest.read_to_end(&mut response).expect("a response");
    assert!(
        response.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"),
        "{}",
        preview(&response)
    );
    let mut client = connect(server.addr());
    assert_eq!(round_trip(&mut client, b"echo"), b"echo");
}

#[test]
fn scrapes_neither_take_nor_lose_a_place_under_max_conns() {
    let server = Server::start(
        "line",
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-conns",
            "2",
        ],
    );
    let metrics = metrics_addr(&server);
    // Ten scrapers waiting to send their request...
    let idle: Vec<TcpStream> = (0..10).map(|_| connect(metrics)).collect();
    // ...leave the service both its places,
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(server.addr())).collect();
    for (i, stream) in held.iter_mut().enumerate() {
        let line = format!("client {i}\n");
        assert_eq!(round_trip(stream, line.as_bytes()), line.as_bytes());
    }
    // and the service being full does not turn a scrape away.
    let mut third = connect(server.addr());
    assert!(read_line(&mut third).starts_with("ERR server full"));
    let page = scrape(metrics);
    assert_eq!(must(&page, "wharf_connections_active", &[]), 2.0);
    assert_eq!(
        must(
            &page,
            "wharf_connections_refused_total",
            &[("reason", "full")]
        ),
        1.0
    );
    drop(idle);
}
