//! The binary's TLS flags: the certificate files become a `TlsConfig` once, at start-up, so a
//! bad file is one line and a non-zero exit before anything listens.

use std::error::Error;

use wharf::{Handler, Listener, ListenerId, Reactor};

use crate::cli::ServerArgs;

/// The TLS settings the flags ask for (`None` without `--tls-listen`).
#[cfg(feature = "tls")]
pub type Settings = Option<wharf::TlsConfig>;
#[cfg(not(feature = "tls"))]
pub type Settings = Option<NoTls>;

/// Stands for TLS settings in a build without TLS; never made.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub struct NoTls;

#[cfg(feature = "tls")]
pub fn settings(args: &ServerArgs) -> Result<Settings, Box<dyn Error>> {
    if !args.listeners().iter().any(|point| point.kind.tls) {
        if args.tls_cert.is_some() {
            log::warn!("--tls-cert is set but there is no --tls-listen address: no TLS port");
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Err("--tls-listen needs --tls-cert FILE and --tls-key FILE".into());
    };
    let config = wharf::TlsConfig::from_pem_files(cert, key, args.tls_client_ca.clone())?;
    Ok(Some(config))
}

#[cfg(not(feature = "tls"))]
pub fn settings(args: &ServerArgs) -> Result<Settings, Box<dyn Error>> {
    if !args.listeners().iter().any(|point| point.kind.tls) {
        return Ok(None);
    }
    Err(
        "this wharf was built without TLS (the `tls` feature): --tls-listen is not available"
            .into(),
    )
}

#[cfg(feature = "tls")]
pub fn add_listener<H: Handler>(
    reactor: &mut Reactor<H>,
    listener: Listener,
    settings: Settings,
) -> Result<ListenerId, Box<dyn Error>> {
    let tls = settings.ok_or("no TLS settings")?;
    Ok(reactor.add_tls_listener(listener, tls)?)
}

#[cfg(not(feature = "tls"))]
pub fn add_listener<H: Handler>(
    _reactor: &mut Reactor<H>,
    _listener: Listener,
    _settings: Settings,
) -> Result<ListenerId, Box<dyn Error>> {
    Err("this wharf was built without TLS".into())
}
