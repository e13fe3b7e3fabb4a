//! `--listen` handling: IPv6, dual-stack, several listeners, and the error
//! paths (address in use, permission denied, unparsable address).

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn echo_works(addr: SocketAddr, what: &str) {
    let msg = format!("hello via {what} {addr}");
    let got = send_and_half_close(addr, msg.as_bytes());
    assert_bytes_eq(what, msg.as_bytes(), &got);
}

#[test]
fn listening_line_reports_actual_address_and_mode() {
    for mode in ["echo", "line"] {
        let server = Server::start(mode, &["--listen", "127.0.0.1:0"]);
        let (addr, printed_mode) =
            parse_listening_line(&server.listen_lines[0]).expect("parse listening line");
        assert!(
            server.listen_lines[0].starts_with("wharf: listening on "),
            "unexpected listening line {:?}",
            server.listen_lines[0]
        );
        assert_eq!(printed_mode, mode, "mode in {:?}", server.listen_lines[0]);
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0, "port 0 must be resolved to the real port");
    }
}

#[test]
fn ipv6_loopback_listener_serves_ipv6_clients() {
    if !ipv6_available() {
        eprintln!("skipping: this host cannot bind [::1]");
        return;
    }
    let server = Server::start("echo", &["--listen", "[::1]:0"]);
    let addr = server.addr();
    assert!(addr.is_ipv6(), "expected an IPv6 address, got {addr}");
    assert_eq!(addr.ip().to_string(), "::1");
    echo_works(addr, "IPv6 loopback");
}

#[test]
fn dual_stack_wildcard_serves_ipv4_and_ipv6_clients() {
    if !ipv6_available() {
        eprintln!("skipping: this host cannot bind [::1]");
        return;
    }
    let server = Server::start("line", &["--listen", "[::]:0"]);
    let addr = server.addr();
    assert!(
        addr.is_ipv6() && addr.ip().is_unspecified(),
        "expected [::]:PORT, got {addr}"
    );
    let port = addr.port();
    echo_works(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "IPv4 client on [::]",
    );
    echo_works(
        SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
        "IPv6 client on [::]",
    );
}

#[test]
fn several_listen_options_each_print_a_line_and_serve() {
    let mut args = vec!["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"];
    if ipv6_available() {
        args.extend(["--listen", "[::1]:0"]);
    }
    let server = Server::start("echo", &args);
    assert_eq!(
        server.addrs.len(),
        args.len() / 2,
        "listening lines: {:?}",
        server.listen_lines
    );
    let mut ports: Vec<u16> = server.addrs.iter().map(|a| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        server.addrs.len(),
        "ports must differ: {:?}",
        server.addrs
    );
    for (i, addr) in server.addrs.iter().enumerate() {
        echo_works(*addr, &format!("listener #{i}"));
    }
}

#[test]
fn backlog_option_is_accepted() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--backlog", "16"]);
    echo_works(server.addr(), "listener with --backlog 16");
}

#[test]
fn reuseport_lets_two_servers_share_a_port() {
    let first = Server::start("echo", &["--listen", "127.0.0.1:0", "--reuseport"]);
    let addr = first.addr().to_string();
    let second = Server::start("echo", &["--listen", &addr, "--reuseport"]);
    assert_eq!(second.addr(), first.addr());
    echo_works(first.addr(), "shared port");
}

#[test]
fn address_in_use_is_a_clean_error_with_ss_hint() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind a listener to occupy a port");
    let addr = holder.local_addr().expect("local_addr").to_string();
    let out = run_to_exit(wharf_command("echo", &["--listen", &addr]), EXIT_TIMEOUT);
    assert_no_panic(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status; stderr:\n{}",
        out.stderr
    );
    let error = error_line(&out.stderr);
    assert!(error.contains("already in use"), "error line: {error:?}");
    assert!(
        error.contains("ss -ltnp"),
        "missing hint in error line: {error:?}"
    );
    drop(holder);
}

#[test]
fn privileged_port_without_privilege_is_permission_denied() {
    let Some(port) = privileged_port() else {
        return;
    };
    let addr = format!("127.0.0.1:{port}");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let cmd = if euid != 0 {
        wharf_command("echo", &["--listen", &addr])
    } else {
        let Some(cmd) = unprivileged_command(&["echo", "--listen", &addr]) else {
            return;
        };
        cmd
    };
    let out = run_to_exit(cmd, EXIT_TIMEOUT);
    if out.stderr.trim_start().starts_with("setpriv:") {
        eprintln!(
            "skipping: setpriv could not drop privileges: {}",
            out.stderr.trim()
        );
        return;
    }
    assert_no_panic(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status; stderr:\n{}",
        out.stderr
    );
    let error = error_line(&out.stderr);
    assert!(error.contains("permission denied"), "error line: {error:?}");
}

#[test]
fn unparsable_listen_addresses_are_usage_errors() {
    for (bad, why) in [
        ("nonsense", "'nonsense' is not a port number"),
        ("127.0.0.1", "'127.0.0.1' is not a port number"),
        ("1.2.3.4:99999", "port out of range: 99999"),
        (":99999", "port out of range: 99999"),
        ("::1:7000", "brackets"),
    ] {
        let out = run_to_exit(wharf_command("echo", &["--listen", bad]), EXIT_TIMEOUT);
        assert_no_panic(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--listen {bad:?}: expected a usage error (exit 2); stderr:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("invalid address") && out.stderr.contains(why),
            "--listen {bad:?}: stderr lacks `invalid address` and {why:?}:\n{}",
            out.stderr
        );
    }
}

/// Issue 16: addresses as people type them. A port alone is loopback; a host name is
/// resolved once, at start, to each of its addresses, and the server says so.
#[test]
fn listen_addresses_as_people_type_them() {
    let bare = Server::start("echo", &["--listen", ":0"]);
    assert!(bare.addr().ip().is_loopback(), "{}", bare.addr());
    let mut client = connect(bare.addr());
    assert_eq!(round_trip(&mut client, b"bare port\n"), b"bare port\n");

    let named = Server::start("echo", &["--listen", "localhost:0"]);
    assert!(named.addr().ip().is_loopback(), "{}", named.addr());
    let stderr = named.stderr_text();
    assert!(
        stderr.contains("--listen localhost:0 resolves to") && stderr.contains("127.0.0.1:0"),
        "{stderr}"
    );
    let mut client = connect(named.addr());
    assert_eq!(round_trip(&mut client, b"by name\n"), b"by name\n");
}

/// The single `wharf: error: ` line on stderr (panics if there is none).
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("wharf: error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one `wharf: error: ` line; stderr:\n{stderr}"
    );
    errors[0]
}

/// A port below the unprivileged-port threshold, or None (with a message)
/// when every port is unprivileged on this host.
fn privileged_port() -> Option<u16> {
    let path = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let start: u32 = match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().expect("parse ip_unprivileged_port_start"),
        Err(e) => {
            eprintln!("skipping: cannot read {path}: {e}");
            return None;
        }
    };
    if start <= 80 {
        eprintln!("skipping: {path} is {start}, so port 80 needs no privilege here");
        return None;
    }
    Some(80)
}

/// `setpriv` to uid/gid 65534 running the wharf binary, or None (with a
/// message) when that cannot work on this host.
fn unprivileged_command(args: &[&str]) -> Option<Command> {
    let Some(setpriv) = [
        "/usr/bin/setpriv",
        "/bin/setpriv",
        "/usr/sbin/setpriv",
        "/sbin/setpriv",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        eprintln!("skipping: running as root and `setpriv` is not installed");
        return None;
    };
    let bin_path = wharf_bin();
    let bin = Path::new(&bin_path);
    // uid 65534 must be able to reach and execute the binary: every
    // directory on the way needs o+x, the file itself o+rx.
    let file_mode = std::fs::metadata(bin)
        .expect("stat wharf binary")
        .permissions()
        .mode();
    if file_mode & 0o005 != 0o005 {
        eprintln!(
            "skipping: {} is not world-executable ({file_mode:o})",
            bin.display()
        );
        return None;
    }
    for dir in bin.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let mode = std::fs::metadata(dir)
            .expect("stat binary's directory")
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            eprintln!(
                "skipping: {} is not traversable by other users ({mode:o}), so uid 65534 \
                 cannot run {}",
                dir.display(),
                bin.display()
            );
            return None;
        }
    }
    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(args);
    Some(cmd)
}
