//! Byte queues for a connection's unconsumed input and unsent output.
//!
//! A [`Buffer`] is appended at the back and consumed from the front. It owns no heap memory
//! while it is empty: the allocation is made on the first append and released as soon as the
//! last byte is consumed. That is what keeps an idle connection free of heap buffers; the cost
//! is one allocation per burst of leftover bytes, which only happens when a read leaves a
//! partial message or a write is partial (the common round trip goes through the reactor's
//! shared scratch buffers and never touches a connection's own `Buffer`).

/// A FIFO byte queue that holds no allocation while it is empty.
///
/// ```
/// use wharf::Buffer;
///
/// let mut buf = Buffer::new();
/// assert_eq!(buf.capacity(), 0);
/// buf.extend(b"hello world");
/// buf.consume(6);
/// assert_eq!(buf.as_slice(), b"world");
/// buf.consume(5);
/// assert!(buf.is_empty());
/// assert_eq!(buf.capacity(), 0, "an empty buffer gives its memory back");
/// ```
#[derive(Debug, Default)]
pub struct Buffer {
    bytes: Vec<u8>,
    /// Bytes before `start` are consumed; they are reclaimed lazily by [`Buffer::extend`].
    start: usize,
}

impl Buffer {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Self {
        Buffer {
            bytes: Vec::new(),
            start: 0,
        }
    }

    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// True when there is nothing to consume.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of heap memory currently held (0 while empty).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The unconsumed bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Appends `data` at the back.
    pub fn extend(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // Reclaim the consumed prefix before growing, so a buffer that is drained and refilled
        // in turns (a slow reader) stays within about twice its peak backlog.
        if self.start > 0 && self.bytes.capacity() - self.bytes.len() < data.len() {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Drops the first `n` unconsumed bytes (all of them if `n >= len`). Releases the
    /// allocation when the buffer becomes empty.
    pub fn consume(&mut self, n: usize) {
        if n >= self.len() {
            self.clear();
        } else {
            self.start += n;
        }
    }

    /// Drops everything and releases the allocation.
    pub fn clear(&mut self) {
        self.bytes = Vec::new();
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_buffer_owns_no_heap() {
        let buf = Buffer::new();
        assert_eq!(buf.capacity(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn consume_keeps_order_and_frees_when_empty() {
        let mut buf = Buffer::new();
        buf.extend(b"abc");
        buf.extend(b"def");
        buf.consume(2);
        assert_eq!(buf.as_slice(), b"cdef");
        buf.extend(b"g");
        assert_eq!(buf.as_slice(), b"cdefg");
        buf.consume(100);
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn refilling_a_partly_consumed_buffer_reclaims_the_prefix() {
        let mut buf = Buffer::new();
        buf.extend(&[1u8; 1000]);
        let cap = buf.capacity();
        for round in 0..100u8 {
            buf.consume(900);
            buf.extend(&[round; 900]);
            assert_eq!(buf.len(), 1000);
        }
        assert!(
            buf.capacity() <= 2 * cap,
            "capacity grew to {}",
            buf.capacity()
        );
        assert_eq!(buf.as_slice()[999], 99);
    }

    #[test]
    fn extending_with_nothing_allocates_nothing() {
        let mut buf = Buffer::new();
        buf.extend(b"");
        assert_eq!(buf.capacity(), 0);
    }
}
