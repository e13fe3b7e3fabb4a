//! systemd: socket activation with the real `systemd-socket-activate` (one process, and
//! `--workers 2` sharing the passed socket), readiness notification to a `NOTIFY_SOCKET`
//! the test binds, and the units in docs/systemd/ checked by `systemd-analyze verify`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::*;

/// A port free on 127.0.0.1 a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// `systemd-socket-activate` listening on `addrs` (named `names`), which execs wharf with
/// `args` on the first connection. Killed on drop; its stderr lines arrive on `lines`.
struct Activator {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Activator {
    fn start(addrs: &[SocketAddr], names: &str, args: &[&str]) -> Activator {
        let mut command = Command::new("systemd-socket-activate");
        for addr in addrs {
            command.arg("-l").arg(addr.to_string());
        }
        let mut child = command
            .arg(format!("--fdname={names}"))
            .arg(wharf_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate must be installed (Debian: systemd; .ci/run does)");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let activator = Activator { child, lines };
        let listening = addrs.len();
        let mut seen = 0;
        while seen < listening {
            let line = activator.next_line("systemd-socket-activate listens");
            seen += usize::from(line.starts_with("Listening on"));
        }
        activator
    }

    fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(STARTUP_TIMEOUT)
            .unwrap_or_else(|_| panic!("no stderr line while waiting until {what}"))
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self.next_line(needle);
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to the activated socket");
    round_trip(&mut stream, message)
}

#[test]
fn an_activated_server_serves_on_the_socket_systemd_passed() {
    let addr = free_addr();
    let activator = Activator::start(&[addr], "service", &["echo", "--listen", "127.0.0.1:1"]);
    // The first connection makes it exec wharf, which then serves that very connection.
    assert_eq!(echo(addr, b"first"), b"first");
    let line = activator.wait_for("listening on");
    assert_eq!(
        line,
        format!("wharf: listening on {addr} (echo)"),
        "--listen is not bound"
    );
    assert_eq!(echo(addr, b"second"), b"second");
}

#[test]
fn activated_workers_share_the_passed_socket_and_the_parent_serves_metrics() {
    let (service, metrics) = (free_addr(), free_addr());
    let activator = Activator::start(
        &[metrics, service],
        "metrics:service",
        &["echo", "--workers", "2"],
    );
    assert_eq!(echo(service, b"wake"), b"wake");
    activator.wait_for(&format!("listening on {service} (echo, 2 workers)"));
    activator.wait_for(&format!("listening on {metrics} (metrics)"));
    for i in 0..8 {
        let message = format!("message {i}");
        assert_eq!(echo(service, message.as_bytes()), message.as_bytes());
    }
    wait_until(IO_TIMEOUT, "the metrics count nine connections", || {
        let mut stream = TcpStream::connect(metrics).expect("metrics");
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let page = String::from_utf8(read_to_eof(&mut stream, IO_TIMEOUT)).unwrap();
        page.contains("\nwharf_connections_accepted_total 9\n")
            && page.contains("wharf_connections_accepted_total{worker=\"2\"}")
    });
}

/// A `NOTIFY_SOCKET` of the test's own, and what arrives on it.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    fn bind(test: &str) -> Notifications {
        let path = std::env::temp_dir().join(format!("wharf-notify-{}-{test}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind a notify socket");
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Notifications { socket, path }
    }

    /// Waits for a datagram holding the line `state`, and returns it.
    fn wait_for(&self, state: &str) -> String {
        let mut buf = [0; 4096];
        loop {
            let n = (self.socket.recv(&mut buf))
                .unwrap_or_else(|e| panic!("no {state} notification within {IO_TIMEOUT:?}: {e}"));
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            if message.lines().any(|line| line == state) {
                return message;
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn systemd_hears_ready_once_it_serves_and_stopping_when_it_drains() {
    for workers in ["1", "2"] {
        let notifications = Notifications::bind(&format!("workers-{workers}"));
        let socket = notifications.path().to_str().unwrap().to_string();
        let mut server = Server::start_with_env(
            "echo",
            &["--listen", "127.0.0.1:0", "--workers", workers],
            &[("NOTIFY_SOCKET", socket.as_str())],
        );
        let ready = notifications.wait_for("READY=1");
        assert!(ready.contains("STATUS="), "{ready}");
        // Ready means serving.
        let mut client = connect(server.addr());
        assert_eq!(round_trip(&mut client, b"ready"), b"ready");
        drop(client);
        server.signal(libc::SIGTERM);
        notifications.wait_for("STOPPING=1");
        assert!(server.wait_for_exit(EXIT_TIMEOUT).success());
    }
}

#[test]
fn the_units_in_docs_pass_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("wharf-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The service names the installed binary; verify checks that it exists.
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/systemd");
    for unit in ["wharf.service", "wharf.socket", "wharf-metrics.socket"] {
        let text = std::fs::read_to_string(units.join(unit)).expect("a unit in docs/systemd/");
        let text = text.replace("/usr/local/bin/wharf", &wharf_bin());
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(["wharf.socket", "wharf-metrics.socket", "wharf.service"].map(|u| dir.join(u)))
        .current_dir(&dir)
        .output()
        .expect("systemd-analyze must be installed (Debian: systemd; .ci/run does)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It exits 0 on many complaints, which it prints: none is allowed.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}
