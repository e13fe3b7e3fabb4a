//! Who may use the server: the token file, and protected mode, which keeps a chat room from
//! being opened to the network by accident (after Redis's protected mode).

use std::error::Error;
use std::net::SocketAddr;

use wharf::Tokens;

use crate::cli::ServerArgs;

/// Why the server refuses to start in this configuration (exit code 2, like a usage error).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Refused {}

/// Loads the token file, if one was given.
pub fn tokens(args: &ServerArgs) -> Result<Option<Tokens>, Box<dyn Error>> {
    let Some(path) = &args.auth_tokens else {
        return Ok(None);
    };
    let tokens = Tokens::load(path)?;
    log::info!(
        "authentication required: {} tokens from {}",
        tokens.len(),
        path.display()
    );
    Ok(Some(tokens))
}

/// Protected mode: a relay between people (`chat`) must not listen beyond loopback with no
/// authentication unless told to; other modes only warn. Tokens protect every listener; TLS
/// client certificates (`--tls-client-ca`) protect the TLS ones.
pub fn check(mode: &str, args: &ServerArgs, tokens: bool) -> Result<(), Refused> {
    if tokens || args.allow_unauthenticated {
        return Ok(());
    }
    // Client certificates protect the TLS listeners.
    let certified = |tls: bool| tls && args.tls_client_ca.is_some();
    let exposed: Vec<SocketAddr> = (args.listeners().iter())
        .filter(|point| !certified(point.kind.tls))
        .map(|point| point.addr)
        .filter(|addr| !addr.ip().is_loopback())
        .collect();
    let Some(first) = exposed.first() else {
        return Ok(());
    };
    if mode != "chat" {
        log::warn!(
            "{first} is beyond loopback and needs no authentication: anyone who can reach it \
             may use it (--auth-tokens FILE turns authentication on)"
        );
        return Ok(());
    }
    Err(Refused(format!(
        "protected mode: refusing to serve chat on {first}, beyond loopback, without \
         authentication: anyone who can reach it could read and post. Either bind to \
         loopback (--listen 127.0.0.1:{port}), turn on authentication (--auth-tokens FILE, \
         or --tls-client-ca FILE on a --tls-listen port), \
         or pass --allow-unauthenticated if every client that can reach it is trusted",
        port = first.port()
    )))
}
