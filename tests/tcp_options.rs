//! TCP options on accepted sockets. `--keepalive SECS` (SO_KEEPALIVE with TCP_KEEPIDLE) shows
//! from outside the process as a keepalive timer on the server's end of the connection, in
//! `ss -o`. TCP_NODELAY (`--nodelay`, `--no-nodelay`) cannot be observed from the client; the
//! option itself is unit-tested in src/listener.rs, and here the flags only have to be
//! accepted and the server to serve.

mod common;

use common::*;
use std::process::Command;

/// The `ss` rows (with timers) of the established connections whose local port is `port`:
/// the server's ends. None if `ss` cannot be run here.
fn server_ends(port: u16) -> Option<Vec<String>> {
    let output = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "ss failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// The keepalive timer of the one server end of a connection to a `wharf echo` started with
/// `args`, as `ss` shows it (`timer:(keepalive,4min59sec,0)` gives `4min59sec`), or None
/// without a keepalive timer. Err(()) if `ss` is not available.
fn keepalive_timer(args: &[&str]) -> Result<Option<String>, ()> {
    let mut full = vec!["--listen", "127.0.0.1:0"];
    full.extend_from_slice(args);
    let server = Server::start("echo", &full);
    let mut client = connect(server.addr());
    assert_eq!(round_trip(&mut client, b"alive?"), b"alive?");
    let rows = server_ends(server.addr().port()).ok_or(())?;
    assert_eq!(
        rows.len(),
        1,
        "expected one server end on port {}: {rows:?}",
        server.addr().port()
    );
    Ok(rows[0].split_once("timer:(keepalive,").map(|(_, rest)| {
        rest.split(',')
            .next()
            .expect("the timer's remaining time")
            .to_string()
    }))
}

#[test]
fn keepalive_sets_a_keepalive_timer_on_accepted_sockets() {
    let Ok(default) = keepalive_timer(&[]) else {
        eprintln!("SKIPPED: `ss` (iproute2) is not available to look at the server's sockets");
        return;
    };
    let default =
        default.expect("no keepalive timer on the server's end with the default --keepalive 300");
    // TCP_KEEPIDLE took effect: 300 s shows as 5 minutes, or 4 and some seconds, where the
    // kernel's own default (net.ipv4.tcp_keepalive_time, usually 2 hours) would not.
    assert!(
        default.starts_with("4min") || default.starts_with("5min"),
        "keepalive timer {default:?} with --keepalive 300"
    );

    let short = keepalive_timer(&["--keepalive", "7"])
        .expect("ss")
        .expect("no keepalive timer on the server's end with --keepalive 7");
    assert!(
        !short.contains("min") && !short.contains('h') && !short.contains('d'),
        "keepalive timer {short:?} with --keepalive 7: more than a minute left"
    );
}

#[test]
fn keepalive_zero_sets_no_keepalive_timer() {
    let Ok(timer) = keepalive_timer(&["--keepalive", "0"]) else {
        eprintln!("SKIPPED: `ss` (iproute2) is not available to look at the server's sockets");
        return;
    };
    assert_eq!(timer, None, "a keepalive timer with --keepalive 0");
}

#[test]
fn nodelay_flags_are_accepted_and_the_server_serves() {
    for mode in ["echo", "line"] {
        for flags in [
            &[][..],
            &["--nodelay"][..],
            &["--no-nodelay"][..],
            &["--nodelay", "--no-nodelay"][..], // the last one wins
        ] {
            let mut args = vec!["--listen", "127.0.0.1:0"];
            args.extend_from_slice(flags);
            let server = Server::start(mode, &args);
            let mut client = connect(server.addr());
            // Small interactive round trips: with or without Nagle, each one completes.
            for i in 0..20 {
                let message = format!("{mode} {flags:?} {i}\n");
                assert_bytes_eq(
                    &message,
                    message.as_bytes(),
                    &round_trip(&mut client, message.as_bytes()),
                );
            }
            drop(client);
            assert_no_panic(&server.stderr_text());
        }
    }
}
