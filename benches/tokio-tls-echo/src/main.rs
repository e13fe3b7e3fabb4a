//! `tokio-tls-echo`: the idiomatic tokio + tokio-rustls echo server, the TLS peer wharf is
//! measured against (`benches/compare-tls.sh`).
//!
//! Written the way a tokio user writes it, with nothing tuned, and otherwise the same server as
//! `benches/tokio-echo`: a current-thread runtime (one thread, like wharf's reactor), one task
//! per connection. Each task completes the handshake with a `tokio_rustls::TlsAcceptor`, then
//! reads into a 4 KiB buffer it owns, `write_all`s it back and `flush`es. The flush is what a
//! tokio-rustls user must add: `write_all` may leave encrypted bytes inside rustls when the
//! socket is full, and only a flush (or the next write) sends them. When the client ends the
//! session with close_notify, the task answers with its own (`shutdown`) and closes; a client
//! that just drops the TCP connection gets nothing more.
//!
//! One difference from tokio-echo: TCP_NODELAY is set on every connection. A TLS 1.3 server
//! sends its session tickets when the handshake completes, and `accept` flushes them before the
//! task reads the first request, so the first reply is a second small write behind unacked
//! data. Nagle's algorithm holds it until the client's delayed ACK of the tickets, 40 ms on
//! Linux, and a connect-and-echo client would see 25 handshakes a second. A tokio user who
//! measured that would set TCP_NODELAY, as TLS servers commonly do.
//!
//! TLS is rustls 0.23 with the ring provider, as in wharf: TLS 1.2 and 1.3 unless one is
//! forced, rustls's default cipher suites and key exchange groups, and its default session
//! handling (a stateful cache, two TLS 1.3 tickets after each full handshake). `--client-ca`
//! asks every client for a certificate signed by that CA (mTLS). Like wharf it announces
//! `tokio-tls-echo: listening on ADDR (echo, tls)` on stderr.
//!
//! ```text
//! tokio-tls-echo --cert FILE --key FILE [--listen 127.0.0.1:7443] [--tls13-only|--tls12-only]
//!                [--client-ca FILE]
//! ```

use std::env;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Bytes each echo task reads at a time (the buffer every connection owns).
const ECHO_BUFFER: usize = 4096;

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

const USAGE: &str = "usage: tokio-tls-echo --cert FILE --key FILE [--listen IP:PORT] \
                     [--tls13-only|--tls12-only] [--client-ca FILE]";

/// What the command line asks for.
struct Options {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    versions: &'static [&'static SupportedProtocolVersion],
}

fn main() -> ExitCode {
    let options = match parse(env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("tokio-tls-echo: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match server_config(&options) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("tokio-tls-echo: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tokio-tls-echo: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options.listen, TlsAcceptor::from(Arc::new(config)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tokio-tls-echo: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 7443));
    let (mut cert, mut key, mut client_ca) = (None, None, None);
    let mut versions = rustls::DEFAULT_VERSIONS;
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let addr = value("--listen")?;
                listen = addr
                    .parse()
                    .map_err(|_| format!("invalid listen address '{addr}': expected IP:PORT"))?;
            }
            "--cert" => cert = Some(PathBuf::from(value("--cert")?)),
            "--key" => key = Some(PathBuf::from(value("--key")?)),
            "--client-ca" => client_ca = Some(PathBuf::from(value("--client-ca")?)),
            "--tls13-only" => versions = TLS13_ONLY,
            "--tls12-only" => versions = TLS12_ONLY,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Options {
        listen,
        cert: cert.ok_or("--cert FILE is required")?,
        key: key.ok_or("--key FILE is required")?,
        client_ca,
        versions,
    })
}

/// The rustls server configuration: ring, the versions asked for, the certificate chain and
/// key, and a client certificate verifier with `--client-ca`.
fn server_config(options: &Options) -> Result<ServerConfig, String> {
    let read = |path: &PathBuf| format!("cannot read {}", path.display());
    let chain = CertificateDer::pem_file_iter(&options.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("{}: {error}", read(&options.cert)))?;
    let key = PrivateKeyDer::from_pem_file(&options.key)
        .map_err(|error| format!("{}: {error}", read(&options.key)))?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(options.versions)
        .map_err(|error| format!("TLS versions: {error}"))?;
    let builder = match &options.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|error| format!("{}: {error}", read(path)))?
            {
                let cert = cert.map_err(|error| format!("{}: {error}", read(path)))?;
                roots
                    .add(cert)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("{}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|error| format!("certificate and key: {error}"))
}

async fn serve(listen: SocketAddr, acceptor: TlsAcceptor) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "tokio-tls-echo: listening on {} (echo, tls)",
        listener.local_addr()?
    );
    loop {
        // Accept errors (EMFILE under a connection storm) must not end the server.
        let Ok((socket, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(echo(acceptor.clone(), socket));
    }
}

/// Completes the handshake, then echoes every byte until the client ends the session.
async fn echo(acceptor: TlsAcceptor, socket: TcpStream) {
    // A failed handshake (a client that distrusts the certificate, a port scanner) ends
    // only this task.
    let Ok(mut stream) = acceptor.accept(socket).await else {
        return;
    };
    let mut buffer = vec![0u8; ECHO_BUFFER];
    loop {
        let n = match stream.read(&mut buffer).await {
            // close_notify: answer with ours, then close.
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(n) => n,
            // Includes a TCP close without close_notify.
            Err(_) => return,
        };
        if stream.write_all(&buffer[..n]).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}
