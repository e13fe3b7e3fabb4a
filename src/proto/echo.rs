//! Echo (RFC 862): every byte received is sent back, in order, unchanged; over UDP, every
//! datagram back to its sender.
//!
//! The protocol has no framing and no state: whatever arrives is the reply. It is still a
//! sans-IO step like every other protocol (feed input, get the bytes to send and how much
//! input was used), and the same type is the [`Handler`] that `wharf echo` runs.

use std::net::SocketAddr;

use crate::handler::{Context, Handler};

/// The echo protocol (RFC 862), and its handler.
///
/// ```
/// use wharf::proto::echo::Echo;
/// use wharf::{Config, Reactor};
///
/// let step = Echo.on_input(b"any bytes\0\xff");
/// assert_eq!(step.reply, b"any bytes\0\xff");
/// assert_eq!(step.consumed, 11);
///
/// let reactor = Reactor::new(Config::default(), Echo)?; // `wharf echo`
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

/// What the echo protocol does with one piece of input.
#[derive(Debug, PartialEq, Eq)]
pub struct EchoStep<'a> {
    /// Bytes to send back: all of the input.
    pub reply: &'a [u8],
    /// Bytes of input used: all of it, so nothing is ever buffered.
    pub consumed: usize,
}

impl Echo {
    /// Returns the reply to `input`.
    pub fn on_input<'a>(&self, input: &'a [u8]) -> EchoStep<'a> {
        EchoStep {
            reply: input,
            consumed: input.len(),
        }
    }
}

impl Handler for Echo {
    type Session = ();

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, _session: &mut (), input: &[u8]) -> usize {
        let step = self.on_input(input);
        ctx.write(step.reply);
        step.consumed
    }

    /// UDP echo (RFC 862 over UDP): every datagram back to its sender, never a byte more
    /// than it brought (an echo must not amplify). Not to the ports of the other
    /// small services (echo 7, daytime 13, chargen 19, time 37): a datagram forged to come
    /// from one of them would start two servers answering each other forever.
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], reply: &mut Vec<u8>) -> bool {
        if LOOPING_PORTS.contains(&from.port()) {
            return false;
        }
        reply.extend_from_slice(self.on_input(data).reply);
        true // an empty datagram is echoed too
    }
}

/// Source ports UDP echo never answers: the small services that would answer back.
const LOOPING_PORTS: [u16; 4] = [7, 13, 19, 37];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_every_byte_in_order() {
        let input: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let step = Echo.on_input(&input);
        assert_eq!(step.reply, &input[..]);
        assert_eq!(step.consumed, input.len());
    }

    #[test]
    fn echo_of_nothing_is_nothing() {
        assert_eq!(
            Echo.on_input(b""),
            EchoStep {
                reply: b"",
                consumed: 0
            }
        );
    }

    #[test]
    fn udp_echo_answers_with_what_came_and_never_to_the_looping_ports() {
        let mut reply = Vec::new();
        let from: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert!(Echo.on_datagram(from, b"ping", &mut reply));
        assert_eq!(reply, b"ping");
        for port in [7, 13, 19, 37] {
            let mut reply = Vec::new();
            let from = SocketAddr::new(from.ip(), port);
            assert!(!Echo.on_datagram(from, b"loop?", &mut reply), "port {port}");
            assert!(reply.is_empty());
        }
    }
}
