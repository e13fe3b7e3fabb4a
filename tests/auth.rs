//! Authentication and the limits around it: `--auth-tokens`, `--auth-timeout`, the lockout
//! after failed attempts, protected mode for chat, and `--max-accept-rate`. Several
//! 127.0.0.x source addresses stand for different hosts.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKENS: &str = "# test users\nalice:tok-alice-000001\nbob:tok-bob-000000002\n";

/// A token file for one test, readable by its owner only (unless `mode` says otherwise).
fn token_file(test: &str, mode: u32) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wharf-tokens-{}-{test}", std::process::id()));
    std::fs::write(&path, TOKENS).expect("write the token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A server requiring tokens, with `extra` flags.
fn start(mode: &str, test: &str, extra: &[&str]) -> Server {
    let tokens = token_file(test, 0o600);
    let mut args = vec!["--listen", "127.0.0.1:0", "--auth-tokens"];
    args.push(tokens.to_str().expect("utf-8 temp path"));
    args.extend_from_slice(extra);
    Server::start(mode, &args)
}

/// Sends `text` and expects `reply` as the next line.
fn expect_reply(stream: &mut TcpStream, text: &str, reply: &str) {
    stream.write_all(text.as_bytes()).expect("write");
    assert_eq!(read_line(stream), reply, "after sending {text:?}");
}

/// Whether the server closed `stream` without a word (EOF or reset, nothing read).
fn closed_silently(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"AUTH tok-alice-000001\n");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => {
            assert_eq!(&buf[..n], b"OK alice\n", "unexpected reply");
            false
        }
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => true,
        Err(e) => panic!("read: {e}"),
    }
}

/// One failed attempt from `src`: `ERR auth failed`, then EOF.
fn fail_once(src: &str, addr: SocketAddr) {
    let mut stream = connect_from(src, addr);
    expect_reply(&mut stream, "AUTH wrong-token\n", "ERR auth failed\n");
    assert!(read_to_eof(&mut stream, IO_TIMEOUT).is_empty());
}

#[test]
fn the_right_token_is_answered_ok_name_and_then_served() {
    let server = start("line", "right", &[]);
    let mut client = connect(server.addr());
    expect_reply(&mut client, "AUTH tok-bob-000000002\n", "OK bob\n");
    expect_reply(&mut client, "hello\n", "hello\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_ok"), 1, "{line}");
    assert_eq!(stat(&line, "auth_failures"), 0, "{line}");
}

#[test]
fn a_wrong_token_is_answered_auth_failed_and_closed() {
    let server = start("echo", "wrong", &[]);
    fail_once("127.0.0.1", server.addr());
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_failures"), 1, "{line}");
    assert_eq!(stat(&line, "auth_ok"), 0, "{line}");
}

#[test]
fn data_before_auth_is_answered_auth_required_and_never_served() {
    let server = start("echo", "before", &[]);
    let mut client = connect(server.addr());
    // One write: the lines before AUTH, AUTH, and data after it.
    client
        .write_all(b"GET / HTTP/1.0\r\n\r\nAUTH tok-alice-000001\r\nafter")
        .expect("write");
    let expected = "ERR auth required\nERR auth required\nOK alice\nafter";
    let got = read_exactly(&mut client, expected.len(), IO_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[test]
fn an_overlong_first_line_is_refused_and_closed() {
    let server = start("echo", "overlong", &[]);
    let mut client = connect(server.addr());
    client.write_all(&[b'x'; 4096]).expect("write");
    assert_eq!(
        read_to_eof(&mut client, IO_TIMEOUT),
        b"ERR auth required\n",
        "the auth line is at most 512 bytes"
    );
}

#[test]
fn chat_names_come_from_tokens_and_nothing_is_relayed_before_auth() {
    let server = start("chat", "chat", &[]);
    let mut bob = connect(server.addr());
    expect_reply(&mut bob, "AUTH tok-bob-000000002\n", "OK bob\n");

    let mut alice = connect(server.addr());
    expect_reply(&mut alice, "secret before auth\n", "ERR auth required\n");
    expect_reply(&mut alice, "/nick eve\n", "ERR auth required\n");
    expect_reply(&mut alice, "AUTH tok-alice-000001\n", "OK alice\n");
    // Bob's next line is the join: nothing alice sent before authenticating reached him.
    assert_eq!(read_line(&mut bob), "* alice joined\n");
    alice.write_all(b"hi bob\n").expect("write");
    assert_eq!(read_line(&mut bob), "<alice> hi bob\n");
    expect_reply(
        &mut alice,
        "/nick eve\n",
        "ERR your name is alice, set by authentication\n",
    );
}

#[test]
fn a_client_that_never_authenticates_is_closed_at_the_auth_timeout() {
    let server = start("chat", "timeout", &["--auth-timeout", "1"]);
    let mut served = connect(server.addr());
    expect_reply(&mut served, "AUTH tok-bob-000000002\n", "OK bob\n");
    let opened = Instant::now();
    let mut silent = connect(server.addr());
    assert!(read_to_eof(&mut silent, Duration::from_secs(10)).is_empty());
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s auth timeout"
    );
    // The authenticated client is not subject to it.
    expect_reply(&mut served, "/who\n", "* online: bob\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_timeouts"), 1, "{line}");
}

#[test]
fn five_failures_lock_an_address_out_while_others_get_in_until_it_expires() {
    let server = start("line", "lockout", &["--lockout-secs", "2"]);
    let addr = server.addr();
    for _ in 0..5 {
        fail_once("127.0.0.2", addr);
    }
    server.wait_for_log("peer=127.0.0.2 locked out", IO_TIMEOUT);
    // Even the right token does not help now: closed right after accept, without a word.
    assert!(closed_silently(&mut connect_from("127.0.0.2", addr)));
    assert!(
        !closed_silently(&mut connect_from("127.0.0.3", addr)),
        "another address still gets in"
    );
    let line = server.request_stats();
    assert_eq!(stat(&line, "lockouts"), 1, "{line}");
    assert!(stat(&line, "refused_locked_out") >= 1, "{line}");
    assert_eq!(stat(&line, "auth_failures"), 5, "{line}");
    // The lockout ends after --lockout-secs.
    wait_until(Duration::from_secs(20), "the lockout to expire", || {
        !closed_silently(&mut connect_from("127.0.0.2", addr))
    });
}

/// Issue 16: --lockout-exempt networks fail as often as they like; others are still
/// locked out.
#[test]
fn an_exempt_network_is_never_locked_out() {
    let server = start(
        "line",
        "exempt",
        &["--lockout-exempt", "127.0.0.2/32", "--lockout-secs", "60"],
    );
    let addr = server.addr();
    for _ in 0..8 {
        fail_once("127.0.0.2", addr);
    }
    assert!(
        !closed_silently(&mut connect_from("127.0.0.2", addr)),
        "the exempt address still gets in"
    );
    for _ in 0..5 {
        fail_once("127.0.0.3", addr);
    }
    server.wait_for_log("peer=127.0.0.3 locked out", IO_TIMEOUT);
    let line = server.request_stats();
    assert_eq!(stat(&line, "lockouts"), 1, "{line}");
    assert_eq!(stat(&line, "auth_failures"), 13, "{line}");
}

#[test]
fn the_offender_table_stays_bounded_under_failures_from_many_addresses() {
    let server = start("echo", "bounded", &["--max-tracked-ips", "16"]);
    for host in 1..=64 {
        fail_once(&format!("127.0.1.{host}"), server.addr());
    }
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_failures"), 64, "{line}");
    let offenders = stat(&line, "offenders");
    assert!(
        (1..=16).contains(&offenders),
        "{offenders} offenders tracked, over --max-tracked-ips 16: {line}"
    );
}

#[test]
fn max_accept_rate_refuses_a_host_connecting_in_a_loop_but_not_others() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--max-accept-rate", "5"],
    );
    let addr = server.addr();
    let refused = (0..50)
        .filter(|_| {
            let mut stream = connect_from("127.0.0.2", addr);
            stream.write_all(b"x").is_err() || {
                let mut byte = [0u8; 1];
                !matches!(stream.read(&mut byte), Ok(1))
            }
        })
        .count();
    assert!(
        (1..=45).contains(&refused),
        "{refused} of 50 connections refused at 5 a second (a burst of 5 is allowed)"
    );
    let mut other = connect_from("127.0.0.3", addr);
    assert_eq!(round_trip(&mut other, b"ping"), b"ping", "another host");
    let line = server.request_stats();
    assert_eq!(
        stat(&line, "refused_rate_limited"),
        refused as u64,
        "{line}"
    );
}

#[test]
fn a_missing_token_file_is_one_clear_error() {
    let finished = run_to_exit(
        wharf_command(
            "echo",
            &[
                "--listen",
                "127.0.0.1:0",
                "--auth-tokens",
                "/nonexistent/tokens",
            ],
        ),
        IO_TIMEOUT,
    );
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("/nonexistent/tokens: cannot read the token file: no such file"),
        "{}",
        finished.stderr
    );
}

/// Issue 16: a token shorter than 16 bytes stops the start, naming the file and the line.
#[test]
fn a_short_token_is_refused_at_start_naming_the_line() {
    let path = token_file("short-token", 0o600);
    std::fs::write(&path, "alice:tok-alice-000001\nbob:hunter2\n").expect("write");
    let finished = run_to_exit(
        wharf_command(
            "echo",
            &[
                "--listen",
                "127.0.0.1:0",
                "--auth-tokens",
                path.to_str().unwrap(),
            ],
        ),
        IO_TIMEOUT,
    );
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains(":2: the token is 7 bytes: it must be 16 to 256"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_token_file_others_can_read_gets_a_warning() {
    let tokens = token_file("readable", 0o644);
    let server = Server::start(
        "echo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--auth-tokens",
            tokens.to_str().unwrap(),
        ],
    );
    server.wait_for_log("is readable by other users", IO_TIMEOUT);
}

#[test]
fn protected_mode_refuses_chat_beyond_loopback_without_auth() {
    let finished = run_to_exit(
        wharf_command("chat", &["--listen", "0.0.0.0:0"]),
        IO_TIMEOUT,
    );
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    for needle in [
        "protected mode",
        "--listen 127.0.0.1:0",
        "--auth-tokens FILE",
        "--allow-unauthenticated",
    ] {
        assert!(
            finished.stderr.contains(needle),
            "{needle}: {}",
            finished.stderr
        );
    }
    assert!(
        !finished.stderr.contains("listening on"),
        "{}",
        finished.stderr
    );
}

#[test]
fn protected_mode_is_lifted_by_allow_unauthenticated_or_by_tokens() {
    let open = Server::start(
        "chat",
        &["--listen", "0.0.0.0:0", "--allow-unauthenticated"],
    );
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], open.addr().port())));
    expect_reply(&mut client, "/who\n", "* online: user1\n");

    let tokens = token_file("protected", 0o600);
    let authenticated = Server::start(
        "chat",
        &[
            "--listen",
            "0.0.0.0:0",
            "--auth-tokens",
            tokens.to_str().unwrap(),
        ],
    );
    let mut client = connect(SocketAddr::from((
        [127, 0, 0, 1],
        authenticated.addr().port(),
    )));
    expect_reply(&mut client, "AUTH tok-alice-000001\n", "OK alice\n");
}

#[test]
fn echo_beyond_loopback_without_auth_starts_with_a_warning() {
    let server = Server::start("echo", &["--listen", "0.0.0.0:0"]);
    server.wait_for_log("needs no authentication", IO_TIMEOUT);
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], server.addr().port())));
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
}

#[test]
fn connections_opened_before_a_lockout_get_no_more_guesses() {
    let server = start("line", "lockout-inflight", &[]);
    let src = "127.0.0.9";
    // An attacker opens many connections first (all admitted: nothing has failed yet), then
    // guesses on all but the last; the lockout begins at the fifth failure.
    let mut conns: Vec<TcpStream> = (0..20).map(|_| connect_from(src, server.addr())).collect();
    for conn in conns.iter_mut().take(19) {
        expect_reply(conn, "AUTH wrong-token\n", "ERR auth failed\n");
    }
    let line = server.request_stats();
    assert_eq!(stat(&line, "lockouts"), 1, "{line}");
    // The last connection, accepted before the lockout, is locked out too: even the right
    // token fails.
    let last = conns.last_mut().expect("a connection");
    expect_reply(last, "AUTH tok-alice-000001\n", "ERR auth failed\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_ok"), 0, "{line}");
}

#[test]
fn a_client_that_keeps_sending_lines_before_auth_is_closed_after_a_few() {
    let server = start("echo", "many-lines", &[]);
    let mut client = connect(server.addr());
    // 64 KiB of empty lines would be 1.1 MB of replies: a few are answered, then a close.
    let _ = client.write_all(&[b'\n'; 64 * 1024]);
    let reply = read_to_eof(&mut client, IO_TIMEOUT);
    let answers = reply.len() / "ERR auth required\n".len();
    assert!(
        (1..=8).contains(&answers) && reply.starts_with(b"ERR auth required\n"),
        "{answers} answers: {}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
}
