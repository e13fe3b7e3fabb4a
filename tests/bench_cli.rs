//! Integration tests of the `wharf-bench` load generator over loopback: each subcommand runs
//! for a fraction of a second against a real `wharf` server (or a deliberately broken one)
//! and its JSON report is checked.
//!
//! Every wait is on a condition with a generous deadline (a `listening on` line, a process
//! exit); the deadlines only matter when something is broken.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use common::bench::{bench, json_report, number, run};
use common::limit_open_files;

/// How long a server may take to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A `wharf` server on a free loopback port, killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server is a process group (a shell and wharf): killed as a whole.
    group: bool,
}

impl Server {
    fn start(mode: &str) -> Server {
        Server::start_with(&[mode, "--listen", "127.0.0.1:0"], "")
    }

    /// Starts `wharf ARGS` and takes the address of its first `listening on` line whose
    /// rest contains `tag` (e.g. "(udp)"; "" for the first line).
    fn start_with(args: &[&str], tag: &str) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        command.args(args);
        Server::start_command(command, tag, false)
    }

    /// Starts `wharf echo` as the child of a shell, whose pid is the server's: a server of two
    /// processes, as a server with a worker process looks to `--server-pid`.
    fn start_with_a_child_process() -> Server {
        let mut command = Command::new("sh");
        command
            .args(["-c", "\"$0\" echo --listen 127.0.0.1:0 & wait"])
            .arg(env!("CARGO_BIN_EXE_wharf"))
            .process_group(0);
        Server::start_command(command, "", true)
    }

    fn start_command(mut command: Command, tag: &str, group: bool) -> Server {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wharf");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, received) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the address is known; keep draining the pipe.
                let _ = lines.send(line);
            }
        });
        let addr = loop {
            let line = received
                .recv_timeout(STARTUP_TIMEOUT)
                .expect("wharf printed no `listening on` line");
            if let Some(rest) = line
                .split("listening on ")
                .nth(1)
                .filter(|rest| rest.contains(tag))
            {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .expect("address after `listening on`");
                break addr.parse().expect("a socket address");
            }
        };
        Server { child, addr, group }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.group {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-9", "--", &group]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server that answers every chunk with the same bytes, each with one bit flipped.
fn start_corrupting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    buffer[..n].iter_mut().for_each(|byte| *byte ^= 1);
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A loopback address where nothing listens (a port just released).
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wharf-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn pingpong_against_wharf_counts_round_trips_and_no_errors() {
    let server = Server::start("echo");
    let output = run(bench().args([
        "pingpong",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "4",
        "-s",
        "100",
        "-d",
        "0.5",
        "--json",
        "--label",
        "wharf",
        "--server-pid",
        &server.pid(),
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(report["mode"], "pingpong");
    assert_eq!(report["label"], "wharf");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert_eq!(number(&report, "connects_established"), 4.0, "{report}");
    assert!(number(&report, "round_trips_per_s") > 0.0, "{report}");
    assert!(number(&report, "mb_per_s") > 0.0, "{report}");
    for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
        assert!(number(&report, key) > 0.0, "{key} in {report}");
    }
    for key in [
        "server_user_ns_per_op",
        "server_sys_ns_per_op",
        "server_rss_bytes",
    ] {
        number(&report, key); // measured, so a number rather than null
    }
}

#[test]
fn pingpong_line_mode_checks_lines_against_wharf_line() {
    let server = Server::start("line");
    let output = run(bench().args([
        "pingpong",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "3",
        "-s",
        "40",
        "--line",
        "-d",
        "0.3",
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(report["line"], true);
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
}

#[test]
fn a_server_that_returns_wrong_bytes_is_reported_as_mismatches() {
    let addr = start_corrupting_server();
    let output = run(bench().args([
        "pingpong",
        "--addr",
        &addr.to_string(),
        "-c",
        "2",
        "-d",
        "0.3",
        "--json",
    ]));
    assert_eq!(output.status.code(), Some(3), "errors counted: {output:?}");
    let report = json_report(&output);
    assert_eq!(number(&report, "round_trips"), 0.0, "{report}");
    assert_eq!(report["errors_by_kind"]["mismatches"], 2, "{report}");
    assert_eq!(number(&report, "errors"), 2.0, "{report}");
}

#[test]
fn hold_keeps_connections_from_several_sources_and_measures_server_memory() {
    let server = Server::start("echo");
    let output = run(bench().args([
        "hold",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "200",
        "-d",
        "0.3",
        "--src",
        "127.0.0.1-127.0.0.4",
        "--connect-pace",
        "16",
        "--server-pid",
        &server.pid(),
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(report["mode"], "hold");
    assert_eq!(number(&report, "established"), 200.0, "{report}");
    assert_eq!(number(&report, "connects_failed"), 0.0, "{report}");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    number(&report, "server_rss_per_conn_bytes");
    // Issue 16: 200 connections are too few for a memory figure per connection; it says so.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("200 connections are too few for a memory figure"),
        "{stderr}"
    );
}

#[test]
fn connect_reports_connections_per_second() {
    let server = Server::start("echo");
    let output = run(bench().args([
        "connect",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "4",
        "-d",
        "0.3",
        "--server-pid",
        &server.pid(),
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(report["mode"], "connect");
    assert!(number(&report, "connections") > 0.0, "{report}");
    assert!(number(&report, "connections_per_s") > 0.0, "{report}");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    number(&report, "server_sys_ns_per_op");
}

#[test]
fn sweep_writes_csv_json_and_an_svg_plot_that_plot_and_summary_can_combine() {
    let server = Server::start("echo");
    let dir = scratch_dir("sweep");
    let output = run(bench().args([
        "sweep",
        "--addr",
        &server.addr.to_string(),
        "--conns",
        "1,4",
        "-d",
        "0.3",
        "--label",
        "wharf",
        "--out",
        dir.to_str().expect("utf-8 temp path"),
    ]));
    assert!(output.status.success(), "{output:?}");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let csv = read("results.csv");
    assert_eq!(csv.lines().count(), 3, "header and two rows:\n{csv}");
    assert!(csv.starts_with("label,connections,"), "{csv}");
    let runs: Vec<Value> = serde_json::from_str(&read("results.json")).expect("JSON array");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["connections"], 4);
    assert!(read("plot.svg").contains("<svg"));

    // Two sweeps in one plot, and a summary table of JSON lines.
    let merged = dir.join("merged.svg");
    let results = dir.join("results.json");
    let output = run(bench()
        .args(["plot", "--out"])
        .arg(&merged)
        .arg(&results)
        .arg(&results));
    assert!(output.status.success(), "{output:?}");
    assert!(std::fs::read_to_string(&merged)
        .expect("merged plot")
        .contains("wharf"));
    summary_of_labelled_runs(&dir, &runs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `summary` turns runs labelled a and b into one table with the a/b ratio.
fn summary_of_labelled_runs(dir: &Path, runs: &[Value]) {
    let mut lines = String::new();
    for (label, run) in [("a", &runs[0]), ("b", &runs[0])] {
        let mut run = run.clone();
        run["label"] = label.into();
        run["scenario"] = "one".into();
        lines.push_str(&format!("{run}\n"));
    }
    let path = dir.join("runs.jsonl");
    std::fs::write(&path, lines).expect("write runs");
    let output = run(bench().arg("summary").arg(&path).args(["--ratio", "a/b"]));
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("| scenario | metric | a | b | a/b |"),
        "{table}"
    );
    assert!(table.contains("round trips/s"), "{table}");
    assert!(
        table.contains("| 1.00 |"),
        "equal runs give a ratio of 1:\n{table}"
    );
}

#[test]
fn too_few_open_files_is_explained_before_the_run() {
    let mut command = bench();
    command.args([
        "pingpong",
        "--addr",
        &closed_port().to_string(),
        "-c",
        "100",
    ]);
    limit_open_files(&mut command, 64);
    let output = run(&mut command);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ulimit -n is 64"), "{stderr}");
    assert!(stderr.contains("-c 100 needs"), "{stderr}");
    assert!(stderr.contains("--procs 2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn no_server_listening_is_one_clear_error() {
    let addr = closed_port();
    let output = run(bench().args(["pingpong", "--addr", &addr.to_string(), "-d", "0.2"]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("no connection to {addr} could be established")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
}

#[test]
fn chat_fans_every_line_out_to_every_other_client_in_order() {
    let server = Server::start("chat");
    let output = run(bench().args([
        "chat",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "8",
        "-d",
        "1",
        "--rate",
        "160",
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(report["mode"], "chat");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert_eq!(number(&report, "joined"), 8.0, "{report}");
    let sent = number(&report, "sent");
    assert!(sent > 0.0, "{report}");
    assert_eq!(number(&report, "unsent"), 0.0, "{report}");
    assert_eq!(number(&report, "expected"), sent * 7.0, "{report}");
    assert_eq!(number(&report, "received"), sent * 7.0, "{report}");
    assert_eq!(number(&report, "undelivered"), 0.0, "{report}");
    assert!(number(&report, "p99_us") > 0.0, "{report}");
    assert!(report["server_cpu_ns_per_delivery"].is_null(), "{report}");
}

#[test]
fn chat_with_silent_members_still_delivers_everything_to_the_readers() {
    let server = Server::start("chat");
    let output = run(bench().args([
        "chat",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "8",
        "--silent",
        "2",
        "-d",
        "1",
        "--rate",
        "160",
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(number(&report, "silent"), 2.0, "{report}");
    assert_eq!(number(&report, "joined"), 8.0, "{report}");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    // Nothing is expected of the silent members: the readers get every line.
    let sent = number(&report, "sent");
    assert_eq!(number(&report, "received"), sent * 7.0, "{report}");
}

#[test]
fn chat_open_loop_delivers_every_line_at_a_total_rate() {
    let server = Server::start("chat");
    let output = run(bench().args([
        "chat",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "20",
        "--rate",
        "200",
        "-d",
        "1",
        "--server-pid",
        &server.pid(),
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(number(&report, "conns"), 20.0, "{report}");
    // --rate is the total over all clients: 200 lines/s, each to the 19 others.
    assert_eq!(number(&report, "offered_lines_per_s"), 200.0, "{report}");
    assert_eq!(
        number(&report, "offered_deliveries_per_s"),
        3800.0,
        "{report}"
    );
    assert_eq!(number(&report, "delivered_fraction"), 1.0, "{report}");
    assert_eq!(number(&report, "out_of_order"), 0.0, "{report}");
    assert_eq!(number(&report, "undelivered"), 0.0, "{report}");
    assert_eq!(
        number(&report, "delivered_deliveries_per_s"),
        3800.0,
        "{report}"
    );
    assert!(number(&report, "join_secs") > 0.0, "{report}");
    assert!(
        number(&report, "max_us") >= number(&report, "p99_us"),
        "{report}"
    );
    assert!(
        number(&report, "server_cpu_ns_per_delivery") > 0.0,
        "{report}"
    );
}

#[test]
fn udp_round_trips_against_wharf_echo_udp() {
    let server = Server::start_with(
        &["echo", "--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        "(udp)",
    );
    let output = run(bench().args([
        "udp",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "4",
        "-s",
        "200",
        "-d",
        "1",
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(report["mode"], "udp");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert_eq!(number(&report, "lost"), 0.0, "{report}");
    assert_eq!(number(&report, "mismatches"), 0.0, "{report}");
    assert!(number(&report, "round_trips_per_s") > 0.0, "{report}");
    assert!(number(&report, "p99_us") > 0.0, "{report}");
}

#[test]
fn pingpong_over_two_processes_reports_their_connections_and_round_trips_as_one() {
    let server = Server::start("echo");
    let output = run(bench().args([
        "pingpong",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "7",
        "--procs",
        "2",
        "-d",
        "0.5",
        "--server-pid",
        &server.pid(),
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(number(&report, "client_procs"), 2.0, "{report}");
    assert_eq!(number(&report, "connections"), 7.0, "{report}");
    assert_eq!(
        number(&report, "connects_established"),
        7.0,
        "4 + 3: {report}"
    );
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
    assert!(number(&report, "round_trips_per_s") > 0.0, "{report}");
    for key in ["p50_us", "p99_us", "max_us"] {
        assert!(number(&report, key) > 0.0, "{key} in {report}");
    }
    assert_eq!(number(&report, "server_procs"), 1.0, "{report}");
    number(&report, "server_cpu_ns_per_op");
    assert!(
        report.get("latency_histogram").is_none(),
        "the children's histograms are merged, not passed on: {report}"
    );
}

#[test]
fn the_errors_of_every_client_process_are_added_up() {
    let addr = start_corrupting_server();
    let output = run(bench().args([
        "pingpong",
        "--addr",
        &addr.to_string(),
        "-c",
        "5",
        "--procs",
        "2",
        "-d",
        "0.3",
        "--json",
    ]));
    assert_eq!(output.status.code(), Some(3), "errors counted: {output:?}");
    let report = json_report(&output);
    assert_eq!(report["errors_by_kind"]["mismatches"], 5, "3 + 2: {report}");
    assert_eq!(number(&report, "errors"), 5.0, "{report}");
    assert_eq!(number(&report, "round_trips"), 0.0, "{report}");
}

#[test]
fn hold_over_two_processes_sums_the_memory_of_a_server_with_a_child_process() {
    let server = Server::start_with_a_child_process();
    let output = run(bench().args([
        "hold",
        "--addr",
        &server.addr.to_string(),
        "-c",
        "200",
        "--procs",
        "2",
        "-d",
        "0.3",
        "--src",
        "127.0.0.1-127.0.0.3",
        "--connect-pace",
        "16",
        "--server-pid",
        &server.pid(),
        "--json",
    ]));
    assert!(output.status.success(), "{output:?}");
    let report = json_report(&output);
    assert_eq!(number(&report, "established"), 200.0, "{report}");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert_eq!(number(&report, "client_procs"), 2.0, "{report}");
    assert_eq!(
        number(&report, "server_procs"),
        2.0,
        "shell and wharf: {report}"
    );
    number(&report, "server_rss_per_conn_bytes");
    assert!(
        number(&report, "kernel_slab_before_bytes") > 0.0,
        "{report}"
    );
    number(&report, "kernel_slab_per_conn_bytes");
}

#[test]
fn more_connections_than_one_process_may_open_are_spread_over_processes() {
    let server = Server::start("echo");
    let hold = |procs: &str| {
        let mut command = bench();
        command.args([
            "hold",
            "--addr",
            &server.addr.to_string(),
            "-c",
            "150",
            "--procs",
            procs,
            "-d",
            "0.2",
            "--connect-pace",
            "16",
            "--json",
        ]);
        limit_open_files(&mut command, 64);
        run(&mut command)
    };
    let alone = hold("1");
    assert_eq!(alone.status.code(), Some(1), "{alone:?}");
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--procs 3"), "{stderr}");

    let spread = hold("3");
    assert!(spread.status.success(), "{spread:?}");
    let report = json_report(&spread);
    assert_eq!(number(&report, "established"), 150.0, "{report}");
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
}

#[test]
fn procs_zero_is_a_bad_argument() {
    let output = run(bench().args(["hold", "--addr", &closed_port().to_string(), "--procs", "0"]));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn a_failing_client_process_fails_the_run_and_leaves_no_process_behind() {
    let addr = closed_port().to_string();
    let output = run(bench().args(["pingpong", "--addr", &addr, "-c", "4", "--procs", "2"]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("wharf-bench: error: client process"),
        "{stderr}"
    );
    assert!(
        stderr.contains("refused"),
        "the child's own error: {stderr}"
    );
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&addr) && cmdline.contains("--child"))
        .collect();
    assert!(left.is_empty(), "client processes left running: {left:?}");
}
