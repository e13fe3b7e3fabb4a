//! `tokio-echo`: the idiomatic tokio echo server, the peer wharf is measured against.
//!
//! Written the way the tokio tutorial writes it, with nothing tuned: a current-thread
//! runtime (one thread, like wharf's reactor), one task per connection; echo mode reads into
//! a 4 KiB buffer owned by the task and `write_all`s it back, line mode reads lines through a
//! `BufReader` and writes each back. TCP_NODELAY is set in line mode only, as `wharf line`
//! does. Like wharf it announces `tokio-echo: listening on ADDR` on stderr.
//!
//! ```text
//! tokio-echo [--listen 127.0.0.1:7000] [--line]
//! ```

use std::env;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bytes each echo task reads at a time (the buffer every connection owns).
const ECHO_BUFFER: usize = 4096;

/// What the command line asks for.
struct Options {
    listen: SocketAddr,
    line: bool,
}

fn main() -> ExitCode {
    let options = match parse(env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("tokio-echo: {message}\nusage: tokio-echo [--listen IP:PORT] [--line]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tokio-echo: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tokio-echo: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
        line: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--line" => options.line = true,
            "--listen" => {
                let addr = args.next().ok_or("--listen needs an address")?;
                options.listen = addr
                    .parse()
                    .map_err(|_| format!("invalid listen address '{addr}': expected IP:PORT"))?;
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(options)
}

async fn serve(options: Options) -> io::Result<()> {
    let listener = TcpListener::bind(options.listen).await?;
    let mode = if options.line { "line" } else { "echo" };
    eprintln!(
        "tokio-echo: listening on {} ({mode})",
        listener.local_addr()?
    );
    loop {
        // Accept errors (EMFILE under a connection storm) must not end the server.
        let Ok((socket, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        if options.line {
            let _ = socket.set_nodelay(true);
            tokio::spawn(line_echo(socket));
        } else {
            tokio::spawn(echo(socket));
        }
    }
}

/// Echoes every byte until the peer closes.
async fn echo(mut socket: TcpStream) {
    let mut buffer = vec![0u8; ECHO_BUFFER];
    loop {
        let n = match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if socket.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Echoes each line (terminator included); a last line without `\n` is echoed at the end.
async fn line_echo(mut socket: TcpStream) {
    let (reader, mut writer) = socket.split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if writer.write_all(&line).await.is_err() {
                    return;
                }
            }
        }
    }
}
