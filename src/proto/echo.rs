//! Echo (RFC 862): every byte received is sent back, in order, unchanged.
//!
//! The protocol has no framing and no state: whatever arrives is the reply. It is still a type
//! of its own so that the echo service reads like every other protocol: feed input, get the
//! bytes to send and how much input was used.

/// The echo protocol (RFC 862).
///
/// ```
/// use wharf::proto::echo::Echo;
///
/// let step = Echo.on_input(b"any bytes\0\xff");
/// assert_eq!(step.reply, b"any bytes\0\xff");
/// assert_eq!(step.consumed, 11);
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
}
