//! [`Transports`] without the `tls` feature: every connection is plain, so it holds nothing
//! and `is_tls` is always false. The reactor's TLS paths still compile (there is one code
//! path, not two) and the optimiser removes them.

use std::net::SocketAddr;

use mio::net::TcpStream;

use super::{Handshake, Received};

/// No TLS: nothing to keep.
#[derive(Debug, Default)]
pub(crate) struct Transports;

/// What a handler may ask about a connection's TLS: there is none.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TlsInfo<'a>(std::marker::PhantomData<&'a ()>);

impl TlsInfo<'_> {
    pub(crate) fn is_tls(&self) -> bool {
        false
    }

    pub(crate) fn version(&self) -> Option<&'static str> {
        None
    }

    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        None
    }
}

impl Transports {
    pub(crate) fn new() -> Transports {
        Transports
    }

    pub(crate) fn add_listener(&mut self) {}

    pub(crate) fn close_listeners(&mut self) {}

    pub(crate) fn is_tls_listener(&self, _: usize) -> bool {
        false
    }

    pub(crate) fn start(&mut self, _: usize, _: usize) -> Result<(), String> {
        Ok(())
    }

    pub(crate) fn is_tls(&self, _: usize) -> bool {
        false
    }

    pub(crate) fn info(&self, _: usize) -> TlsInfo<'_> {
        TlsInfo::default()
    }

    pub(crate) fn receive(&mut self, _: usize, _: &mut [u8]) -> Received {
        Received::default()
    }

    pub(crate) fn take_plain(&mut self) -> Vec<u8> {
        Vec::new()
    }

    pub(crate) fn restore_plain(&mut self, _: Vec<u8>) {}

    pub(crate) fn sealed(&self) -> &[u8] {
        &[]
    }

    pub(crate) fn seal(&mut self, _: usize, _: &[u8]) -> Option<&[u8]> {
        None
    }

    pub(crate) fn close_notify(&mut self, _: usize) -> Option<&[u8]> {
        None
    }

    pub(crate) fn handshake(&self, _: usize) -> Handshake {
        Handshake::default()
    }

    pub(crate) fn close(&mut self, _: usize, _: &TcpStream, _: bool) {}

    pub(crate) fn reload(&mut self, _: impl Fn(usize) -> Option<SocketAddr>) {
        log::info!("reload requested: no TLS listener, nothing to reload");
    }
}
