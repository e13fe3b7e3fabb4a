//! PROXY protocol listeners (`--proxy-listen`, `--proxy-from`): the client address a
//! trusted load balancer's header carries is the connection's address for the access rules
//! and the per-address limit; a source not trusted, or a connection without a valid header,
//! is closed with a logged reason. First with headers written by hand (v1 and v2, split,
//! LOCAL), then behind a real HAProxy with `send-proxy-v2` and `send-proxy`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use common::*;

/// The address of the `listening on ADDR (MODE, proxy)` line.
fn proxy_addr(server: &Server) -> SocketAddr {
    server
        .listen_lines
        .iter()
        .filter_map(|line| parse_listening_line(line))
        .find(|(_, mode)| mode.ends_with(", proxy"))
        .map(|(addr, _)| addr)
        .unwrap_or_else(|| panic!("no proxy listener among {:?}", server.listen_lines))
}

/// Whether the server closed `stream` without a byte (a reset is as good as an end).
fn closed_at_once(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    matches!(stream.read(&mut [0; 64]), Ok(0) | Err(_))
}

/// A v2 header: `command` (0x20 LOCAL, 0x21 PROXY), TCP over IPv4 from `client`.
fn v2_header(command: u8, client: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(client) = client else {
        panic!("IPv4 only")
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[command, 0x11, 0, 12]);
    header.extend_from_slice(&client.ip().octets());
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&7000u16.to_be_bytes());
    header
}

fn start_line_behind_proxy(extra: &[&str]) -> Server {
    let mut args = vec![
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-from",
        "127.0.0.1/32",
    ];
    args.extend_from_slice(extra);
    Server::start("line", &args)
}

#[test]
fn the_header_names_the_client_the_access_rules_see() {
    let server = start_line_behind_proxy(&["--allow", "198.51.100.0/24"]);
    let addr = proxy_addr(&server);
    // v1, split in the middle of an address, then a line in the same write as its end.
    let mut client = connect(addr);
    client.write_all(b"PROXY TCP4 198.51.100.7 127.0").unwrap();
    client.flush().unwrap();
    client
        .write_all(b".0.1 40000 7000\r\nhello\n")
        .expect("the rest of the header, and a line");
    assert_eq!(read_line(&mut client), "hello\n");
    // v2 from an allowed client; a byte at a time.
    let mut client = connect(addr);
    let header = v2_header(0x21, "198.51.100.8:40001".parse().unwrap());
    for byte in header.iter().chain(b"two\n") {
        client.write_all(&[*byte]).unwrap();
    }
    assert_eq!(read_line(&mut client), "two\n");
    // A client outside the allow-list, named by v1 or v2, is refused.
    let mut refused = connect(addr);
    refused
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 7000\r\n")
        .unwrap();
    assert!(closed_at_once(&mut refused));
    let mut refused = connect(addr);
    let header = v2_header(0x21, "203.0.113.9:40002".parse().unwrap());
    refused.write_all(&header).unwrap();
    assert!(closed_at_once(&mut refused));
    // LOCAL (a balancer's health check) keeps the connection's own address, 127.0.0.1,
    // which the allow-list refuses too.
    let mut local = connect(addr);
    local
        .write_all(&v2_header(0x20, "198.51.100.7:1".parse().unwrap()))
        .unwrap();
    assert!(closed_at_once(&mut local));
    let stats = server.wait_for_stats(IO_TIMEOUT, "three refusals", |line| {
        stat(line, "refused_not_allowed") == 3
    });
    assert_eq!(stat(&stats, "proxy_headers"), 5, "{stats}");
    assert_eq!(stat(&stats, "proxy_errors"), 0, "{stats}");
}

#[test]
fn untrusted_sources_and_missing_headers_are_closed_with_a_reason() {
    let server = Server::start(
        "line",
        &[
            "--proxy-listen",
            "127.0.0.1:0",
            "--proxy-from",
            "127.0.0.2/32",
        ],
    );
    let addr = proxy_addr(&server);
    // 127.0.0.1 is not trusted: closed at accept, header or not.
    let mut direct = connect(addr);
    let _ = direct.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 7000\r\nhi\n");
    assert!(closed_at_once(&mut direct));
    server.wait_for_log("refused: not a trusted proxy", IO_TIMEOUT);
    // A trusted source must send a header: a line instead is not one.
    let mut no_header = connect_from("127.0.0.2", addr);
    no_header.write_all(b"hello\n").unwrap();
    assert!(closed_at_once(&mut no_header));
    server.wait_for_log("no valid PROXY header", IO_TIMEOUT);
    // Nor is an end before a whole header.
    let mut cut = connect_from("127.0.0.2", addr);
    cut.write_all(b"PROXY TCP4 198.51").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_at_once(&mut cut));
    let stats = server.wait_for_stats(IO_TIMEOUT, "three PROXY errors", |line| {
        stat(line, "proxy_errors") == 3
    });
    assert_eq!(stat(&stats, "refused_not_allowed"), 1, "{stats}");
    assert_no_panic(&server.stderr_text());
}

#[test]
fn a_header_that_does_not_come_in_time_closes_the_connection() {
    let server = start_line_behind_proxy(&["--proxy-timeout", "300ms"]);
    let addr = proxy_addr(&server);
    let mut slow = connect(addr);
    slow.write_all(b"PROXY TCP4 198.51").unwrap(); // and nothing more
    assert!(
        closed_at_once(&mut slow),
        "closed once the header is overdue"
    );
    server.wait_for_log("no complete PROXY header within", IO_TIMEOUT);
    let stats = server.wait_for_stats(IO_TIMEOUT, "the timeout is counted", |line| {
        stat(line, "proxy_timeouts") == 1
    });
    assert_eq!(stat(&stats, "proxy_errors"), 1, "{stats}");
}

#[test]
fn the_per_address_limit_counts_each_client_behind_the_balancer() {
    let server = start_line_behind_proxy(&["--max-conns-per-ip", "1"]);
    let addr = proxy_addr(&server);
    let open = |client: &str| {
        let mut stream = connect(addr);
        let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 7000\r\n");
        stream.write_all(header.as_bytes()).unwrap();
        stream
    };
    let mut first = open("198.51.100.1");
    assert_eq!(round_trip(&mut first, b"one\n"), b"one\n");
    let mut other = open("198.51.100.2");
    assert_eq!(round_trip(&mut other, b"two\n"), b"two\n");
    let mut again = open("198.51.100.1");
    assert!(closed_at_once(&mut again), "a second from 198.51.100.1");
    drop(first);
    // Once its first is gone, the client may connect again.
    wait_until(IO_TIMEOUT, "198.51.100.1 is served again", || {
        let mut retry = open("198.51.100.1");
        retry.write_all(b"three\n").is_ok() && {
            retry.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut buf = [0; 6];
            retry.read_exact(&mut buf).is_ok() && &buf == b"three\n"
        }
    });
}

// ---------------------------------------------------------------------------
// Behind a real HAProxy.

/// A real `haproxy` in TCP mode on a free port of 127.0.0.1, in front of `backend`, with
/// `send` (`send-proxy-v2` or `send-proxy`). Killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Haproxy {
    fn start(backend: SocketAddr, send: &str) -> Haproxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!("wharf-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the config");
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 256\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
                 timeout server 30s\n\
                 frontend front\n  bind {addr}\n  default_backend wharf\n\
                 backend wharf\n  server w {backend} {send}\n"
            ),
        )
        .expect("write the config");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy must be installed (apt-get install haproxy; .ci/run does)");
        let haproxy = Haproxy {
            child,
            addr,
            _dir: TempDir(dir),
        };
        wait_until(STARTUP_TIMEOUT, "haproxy listens", || {
            TcpStream::connect(addr).is_ok()
        });
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a client at `source` gets its line echoed through `front`.
fn served_through(source: &str, front: SocketAddr) -> bool {
    let mut client = connect_from(source, front);
    if client.write_all(b"through\n").is_err() {
        return false;
    }
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut echoed = Vec::new();
    let mut buf = [0; 64];
    while !echoed.ends_with(b"\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
        }
    }
    echoed == b"through\n"
}

#[test]
fn behind_haproxy_the_allow_list_applies_to_each_real_client() {
    for send in ["send-proxy-v2", "send-proxy"] {
        let server = start_line_behind_proxy(&["--allow", "127.0.0.2/32"]);
        let haproxy = Haproxy::start(proxy_addr(&server), send);
        assert!(
            served_through("127.0.0.2", haproxy.addr),
            "{send}: 127.0.0.2"
        );
        assert!(
            !served_through("127.0.0.3", haproxy.addr),
            "{send}: 127.0.0.3"
        );
        let stats = server.wait_for_stats(IO_TIMEOUT, "the refusal is counted", |line| {
            stat(line, "refused_not_allowed") >= 1
        });
        assert!(stat(&stats, "proxy_headers") >= 2, "{send}: {stats}");
        assert_eq!(stat(&stats, "proxy_errors"), 0, "{send}: {stats}");
    }
}

#[test]
fn behind_haproxy_the_per_address_limit_counts_each_real_client() {
    let server = start_line_behind_proxy(&["--max-conns-per-ip", "1"]);
    let haproxy = Haproxy::start(proxy_addr(&server), "send-proxy-v2");
    // 127.0.0.2 holds its one connection...
    let mut held = connect_from("127.0.0.2", haproxy.addr);
    assert_eq!(round_trip(&mut held, b"held\n"), b"held\n");
    // ...so its second is refused, while 127.0.0.3, through the same balancer, is served.
    assert!(!served_through("127.0.0.2", haproxy.addr));
    assert!(served_through("127.0.0.3", haproxy.addr));
    let stats = server.wait_for_stats(IO_TIMEOUT, "one per-address refusal", |line| {
        stat(line, "refused_per_ip") == 1
    });
    assert_eq!(stat(&stats, "proxy_errors"), 0, "{stats}");
}
