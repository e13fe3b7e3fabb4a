//! systemd: socket activation and readiness notification (`sd-notify` crate), and how the
//! `--workers` parent hands activated sockets on to its workers.
//!
//! **Socket activation.** When systemd (or `systemd-socket-activate`) starts wharf with
//! listening sockets (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), wharf serves on them
//! instead of binding `--listen` and its kin. Each socket's name
//! (`FileDescriptorName=` in the `.socket` unit) says what it is for: `tls`, `proxy`,
//! `proxy-tls`, `metrics`, or `service`, `plain` or systemd's default (the unit's name) for
//! the plain service; any other name is refused. The checks that flags ask for still apply (`--proxy-from` for `proxy`,
//! `--tls-cert` for `tls`).
//!
//! **Notification.** With `NOTIFY_SOCKET` set (`Type=notify`), wharf says `READY=1` once
//! it serves, `STOPPING=1` when a drain begins, and `STATUS=` with its connection count
//! every few seconds. Workers never notify: their parent speaks for them.

use std::net::TcpListener;
use std::os::fd::RawFd;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::cli::Kind;
use crate::sys;

/// How often `STATUS=` is updated.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What one activated socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Service(Kind),
    Metrics,
}

impl Role {
    /// The role of a socket named `name` (`FileDescriptorName=`): a role's name; `service`,
    /// or a name systemd gives by default (the unit's, `NAME.socket`; `unknown`), for the
    /// plain service. Anything else is refused: a typo (`TLS`, `proxy_tls`) must not
    /// quietly make a plaintext port.
    fn of(name: &str) -> Result<Role, String> {
        match name {
            "metrics" => Ok(Role::Metrics),
            "" | "service" | "unknown" => Ok(Role::Service(Kind::PLAIN)),
            name if name.ends_with(".socket") => Ok(Role::Service(Kind::PLAIN)),
            name => Kind::named(name).map(Role::Service).ok_or_else(|| {
                format!(
                    "socket activation: a socket named {name:?}: FileDescriptorName must be \
                     service (or the unit's name), plain, tls, proxy, proxy-tls or metrics"
                )
            }),
        }
    }
}

/// The listening sockets systemd passed, each with its role; empty when not socket
/// activated. Reads and unsets `LISTEN_*`, so workers and other children never take them
/// for their own. Call it once, first thing.
pub fn activated_sockets() -> Result<Vec<(TcpListener, Role)>, String> {
    let passed = sd_notify::listen_fds_with_names(true)
        .map_err(|e| format!("cannot use the sockets systemd passed (LISTEN_FDS): {e}"))?;
    let mut sockets = Vec::new();
    for (fd, name) in passed {
        let listener = listening_tcp(fd).map_err(|why| {
            format!("socket activation: descriptor {fd} ({name}) is not usable: {why}")
        })?;
        sockets.push((listener, Role::of(&name)?));
    }
    Ok(sockets)
}

/// Takes `fd`, which must be a listening TCP socket this process owns, with nothing else in
/// it using the number (passed by systemd, or by a worker's parent).
pub fn listening_tcp(fd: RawFd) -> Result<TcpListener, String> {
    let socket = socket2::Socket::from(sys::passed_socket(fd).map_err(|e| e.to_string())?);
    let stream = socket.r#type().map_err(|e| e.to_string())? == socket2::Type::STREAM;
    let listening = socket.is_listener().map_err(|e| e.to_string())?;
    let inet = socket
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .is_some();
    if !(stream && listening && inet) {
        return Err("not a listening TCP socket".into());
    }
    Ok(TcpListener::from(socket))
}

/// Whether systemd waits for notifications from this process.
pub fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// `READY=1`, with a first status.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`: a drain began.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// `STATUS=...`, shown by `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Sends `states`, if systemd listens. Never fatal: a notification that cannot be sent is
/// logged and the server goes on.
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        log::warn!("cannot notify systemd (NOTIFY_SOCKET): {error}");
    }
}
