//! `tokio-chat`: the chat room a Rust user would write with tokio, the peer `wharf chat` is
//! measured against (benches/compare-chat.sh, beside `ncat --chat`).
//!
//! Written the way a competent tokio user writes it, with nothing tuned past the obvious: a
//! task per client reads its lines; the room is a `Mutex` around the members, each with an
//! unbounded channel of `Arc<[u8]>`, so a message is built once and shared by its recipients;
//! a writer task per client waits for a message, takes everything else already queued
//! (`try_recv`) into one buffer and writes it with one `write_all`. TCP_NODELAY is set on every
//! connection, and the listen backlog is wharf's (1024), not `TcpListener::bind`'s 128. A
//! client that never reads is never dropped: its channel grows without bound, the usual price
//! of this design.
//!
//! It speaks `wharf chat`'s protocol (src/proto/chat.rs): a member is named `userN` (N from 1)
//! and the others get `* userN joined`; each line (ending in `\n`, a `\r` before it dropped)
//! goes to every other member as `<userN> line`, never back to its sender; `/who` answers the
//! sender `* online: NAME NAME ...`; any other `/` line gets `ERR unknown command` (there is
//! no `/nick`); on leaving, the others get `* userN left`. A line over 64 KiB closes the client.
//!
//! `--threads 1` runs a current-thread runtime (one thread, like wharf's reactor); the default
//! is tokio's multi-thread runtime with a worker per CPU. Like wharf it announces
//! `tokio-chat: listening on ADDR` on stderr.
//!
//! ```text
//! tokio-chat [--listen 127.0.0.1:7000] [--threads N]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::{env, io};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

/// Longest line accepted, in bytes before the `\n` (wharf's default --max-line).
const MAX_LINE: usize = 64 * 1024;

/// Connections waiting to be accepted: wharf's default (`--backlog`).
const LISTEN_BACKLOG: u32 = 1024;

/// One line of output, shared by every recipient.
type Message = Arc<[u8]>;

/// The members, by a number that is also their name's.
#[derive(Default)]
struct Room {
    members: HashMap<u64, Member>,
    next_user: u64,
}

struct Member {
    name: String,
    mail: UnboundedSender<Message>,
}

impl Room {
    /// Queues `message` for every member but `except`; a member whose writer has gone is
    /// skipped (its reader is about to remove it).
    fn broadcast(&self, except: u64, message: Message) {
        for (id, member) in &self.members {
            if *id != except {
                let _ = member.mail.send(message.clone());
            }
        }
    }
}

fn main() -> ExitCode {
    let (listen, threads) = match parse(env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("tokio-chat: {message}\nusage: tokio-chat [--listen IP:PORT] [--threads N]");
            return ExitCode::from(2);
        }
    };
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(threads) = threads {
        builder.worker_threads(threads); // ignored by the current-thread runtime
    }
    let result = match builder.enable_io().build() {
        Ok(runtime) => runtime.block_on(serve(listen)),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tokio-chat: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen IP:PORT` (default 127.0.0.1:7000) and `--threads N` (default: tokio's choice).
fn parse(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, Option<usize>), String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 7000));
    let mut threads = None;
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let addr = value?;
                listen = addr
                    .parse()
                    .map_err(|_| format!("invalid listen address '{addr}': expected IP:PORT"))?;
            }
            "--threads" => {
                let n = value?;
                let n = n.parse().ok().filter(|n| *n > 0);
                threads = Some(n.ok_or("--threads needs a number of at least 1")?);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok((listen, threads))
}

async fn serve(listen: SocketAddr) -> io::Result<()> {
    // Not `TcpListener::bind`: it asks for a backlog of 128, which 10,000 clients joining
    // overflow while the server is busy announcing them, and a client that only listens never
    // repeats a handshake the server dropped (after a SYN cookie), so it never gets in.
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    eprintln!("tokio-chat: listening on {} (chat)", listener.local_addr()?);
    let room = Arc::new(Mutex::new(Room::default()));
    loop {
        // Accept errors (EMFILE under a connection storm) must not end the server.
        let Ok((socket, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(client(room.clone(), socket));
    }
}

/// A panic elsewhere must not take the room down with it.
fn lock(room: &Mutex<Room>) -> MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One member, from join to leave: its writer runs beside it until its channel closes.
async fn client(room: Arc<Mutex<Room>>, socket: TcpStream) {
    let (reader, writer) = socket.into_split();
    let (mail, inbox) = mpsc::unbounded_channel();
    tokio::spawn(write_mail(writer, inbox));
    let (id, name) = {
        let mut room = lock(&room);
        room.next_user += 1;
        let id = room.next_user;
        let name = format!("user{id}");
        room.broadcast(id, format!("* {name} joined\n").into_bytes().into());
        let member = Member {
            name: name.clone(),
            mail: mail.clone(),
        };
        room.members.insert(id, member);
        (id, name)
    };
    read_lines(&room, id, &name, &mail, reader).await;
    let mut room = lock(&room);
    room.members.remove(&id);
    room.broadcast(id, format!("* {name} left\n").into_bytes().into());
}

/// Serves the member's lines until it closes, fails, or sends a line over [`MAX_LINE`].
async fn read_lines(
    room: &Mutex<Room>,
    id: u64,
    name: &str,
    mail: &UnboundedSender<Message>,
    reader: OwnedReadHalf,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        // `take` bounds what one line may buffer: MAX_LINE bytes, then the `\n`.
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // No `\n`: the line is too long, or the client closed in the middle of one.
        let Some(text) = line.strip_suffix(b"\n") else {
            return;
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text == b"/who" {
            let room = lock(room);
            let mut names: Vec<&str> = room.members.values().map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            let _ = mail.send(
                format!("* online: {}\n", names.join(" "))
                    .into_bytes()
                    .into(),
            );
        } else if text.starts_with(b"/") {
            let _ = mail.send(Arc::from(&b"ERR unknown command (try /who)\n"[..]));
        } else {
            let mut message = Vec::with_capacity(name.len() + text.len() + 4);
            message.push(b'<');
            message.extend_from_slice(name.as_bytes());
            message.extend_from_slice(b"> ");
            message.extend_from_slice(text);
            message.push(b'\n');
            lock(room).broadcast(id, message.into());
        }
    }
}

/// Writes the member's mail: everything queued by the time it wakes goes out in one write.
async fn write_mail(mut writer: OwnedWriteHalf, mut inbox: UnboundedReceiver<Message>) {
    let mut buffer = Vec::new();
    while let Some(message) = inbox.recv().await {
        buffer.clear();
        buffer.extend_from_slice(&message);
        while let Ok(message) = inbox.try_recv() {
            buffer.extend_from_slice(&message);
        }
        if writer.write_all(&buffer).await.is_err() {
            return;
        }
    }
}
