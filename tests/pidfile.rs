//! `--pidfile PATH`: the server's pid in a file once it serves, removed when it exits; with
//! `--workers`, the parent's pid.

mod common;

use common::*;
use std::path::PathBuf;

/// A fresh directory for one test's pid file.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wharf-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn pid_in(path: &PathBuf) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn the_pid_file_names_the_server_while_it_serves_and_goes_with_it() {
    let dir = scratch_dir("pidfile-one");
    let path = dir.join("wharf.pid");
    let arg = path.to_str().expect("utf-8 path").to_string();
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0", "--pidfile", &arg]);
    // `listening on` is said after the file is written.
    assert_eq!(
        pid_in(&path),
        Some(server.pid()),
        "the pid file holds the server's pid"
    );
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr_text());
    assert!(!path.exists(), "the pid file is removed on exit");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg(target_os = "linux")]
fn with_workers_the_pid_file_names_the_parent() {
    let dir = scratch_dir("pidfile-workers");
    let path = dir.join("wharf.pid");
    let arg = path.to_str().expect("utf-8 path").to_string();
    let mut server = Server::start(
        "echo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--pidfile",
            &arg,
        ],
    );
    wait_until(IO_TIMEOUT, "the parent writes the pid file", || {
        pid_in(&path).is_some()
    });
    assert_eq!(
        pid_in(&path),
        Some(server.pid()),
        "the parent's pid, not a worker's"
    );
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr_text());
    assert!(
        !path.exists(),
        "the pid file is removed when the parent exits"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pid_file_that_cannot_be_written_is_one_clear_error() {
    let dir = scratch_dir("pidfile-missing");
    let path = dir.join("no-such-dir").join("wharf.pid");
    let arg = path.to_str().expect("utf-8 path").to_string();
    let finished = run_to_exit(
        wharf_command("echo", &["--listen", "127.0.0.1:0", "--pidfile", &arg]),
        EXIT_TIMEOUT,
    );
    assert_eq!(
        finished.status.code(),
        Some(1),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("cannot write the pid file"),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("listening on"), "it never served");
    let _ = std::fs::remove_dir_all(&dir);
}
