//! Byte queues for a connection's unconsumed input and unsent output.
//!
//! A [`Buffer`] is appended at the back and consumed from the front. It owns no heap memory
//! while it is empty: the allocation is made on the first append and released as soon as the
//! last byte is consumed. That is what keeps an idle connection free of heap buffers; the cost
//! is one allocation per burst of leftover bytes, which only happens when a read leaves a
//! partial message or a write is partial (the common round trip goes through the reactor's
//! shared scratch buffers and never touches a connection's own `Buffer`).
//!
//! Output is an [`OutQueue`]: the same idea, plus chunks shared between connections.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Range;
use std::sync::Arc;

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
    /// `None` exactly while the buffer is empty: an idle connection's buffer is one word, not
    /// a `Vec` and an offset (8 bytes, not 32, in every slab entry).
    held: Option<Box<Held>>,
}

/// The bytes of a non-empty [`Buffer`].
#[derive(Debug)]
struct Held {
    bytes: Vec<u8>,
    /// Bytes before `start` are consumed; they are reclaimed lazily by [`Buffer::extend`].
    start: usize,
}

/// Allocations up to this size are kept as they are when partly consumed.
const SHRINK_FLOOR: usize = 4096;

impl Buffer {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Self {
        Buffer { held: None }
    }

    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.held
            .as_ref()
            .map_or(0, |held| held.bytes.len() - held.start)
    }

    /// True when there is nothing to consume.
    pub fn is_empty(&self) -> bool {
        self.held.is_none()
    }

    /// Bytes of heap memory currently held for the bytes themselves (0 while empty).
    pub fn capacity(&self) -> usize {
        self.held.as_ref().map_or(0, |held| held.bytes.capacity())
    }

    /// The unconsumed bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        self.held
            .as_ref()
            .map_or(&[][..], |held| &held.bytes[held.start..])
    }

    /// Appends `data` at the back.
    pub fn extend(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let held = self.held.get_or_insert_with(|| {
            Box::new(Held {
                bytes: Vec::new(),
                start: 0,
            })
        });
        // Reclaim the consumed prefix before growing, so a buffer that is drained and refilled
        // in turns (a slow reader) stays within about twice its peak backlog.
        if held.start > 0 && held.bytes.capacity() - held.bytes.len() < data.len() {
            held.bytes.drain(..held.start);
            held.start = 0;
        }
        held.bytes.extend_from_slice(data);
    }

    /// Drops the first `n` unconsumed bytes (all of them if `n >= len`). Releases the
    /// allocation when the buffer becomes empty.
    pub fn consume(&mut self, n: usize) {
        if n >= self.len() {
            return self.clear();
        }
        let Some(held) = self.held.as_mut() else {
            return;
        };
        held.start += n;
        // A small rest in a big allocation (a partial message after a large read) moves to
        // one of its own size: a connection that goes idle mid-message then holds what it
        // waits for, not the read it came in.
        let len = held.bytes.len() - held.start;
        if held.bytes.capacity() > 4 * len + SHRINK_FLOOR {
            held.bytes = held.bytes[held.start..].to_vec();
            held.start = 0;
        }
    }

    /// Drops everything and releases the allocation.
    pub fn clear(&mut self) {
        self.held = None;
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
    fn a_small_rest_of_a_big_read_keeps_only_its_own_bytes() {
        let mut buf = Buffer::new();
        buf.extend(&[b'x'; 64 * 1024]);
        buf.consume(64 * 1024 - 10);
        assert_eq!(buf.as_slice(), &[b'x'; 10]);
        assert!(
            buf.capacity() < 1024,
            "{} bytes held for 10",
            buf.capacity()
        );
    }

    #[test]
    fn extending_with_nothing_allocates_nothing() {
        let mut buf = Buffer::new();
        buf.extend(b"");
        assert_eq!(buf.capacity(), 0);
    }
}

/// Bytes owed to a peer, in order: owned pieces and chunks shared with other connections
/// (a chat line broadcast to many is one `Arc<[u8]>`, queued by reference in every
/// recipient's queue, never copied per recipient).
///
/// Like [`Buffer`], it holds no heap memory while empty.
///
/// Besides the unwritten bytes ([`OutQueue::len`]) it keeps the memory it holds
/// ([`OutQueue::held`]): every piece's allocation, written part and spare capacity
/// included, a shared chunk counted whole (this queue keeps it alive), and
/// [`SLOT_COST`] per piece for the queue slot, the shared chunk's counts and the
/// allocator's header. The output limits compare against that, so a flood of tiny
/// messages cannot hold many times the limit in overhead.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Unwritten bytes in all chunks.
    len: usize,
    /// Memory held, as [`OutQueue::held`] says.
    held: usize,
}

/// What one queued piece costs beyond its bytes: its slot in the queue (32 bytes, and the
/// queue's spare slots), a shared chunk's reference counts (16), the allocator's header.
pub(crate) const SLOT_COST: usize = 64;

/// A queued piece. Each knows where its unwritten part starts, so the queue itself needs
/// no offset (which keeps an idle connection's `OutQueue` at 48 bytes).
#[derive(Debug)]
enum Chunk {
    /// Bytes of this connection's own, unwritten from the offset on.
    Owned(Vec<u8>, usize),
    /// A part of a chunk shared with other connections; the range shrinks as it is written.
    Shared(Arc<[u8]>, Range<usize>),
}

impl Chunk {
    /// The unwritten bytes.
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes, start) => &bytes[*start..],
            Chunk::Shared(bytes, range) => &bytes[range.clone()],
        }
    }

    /// Marks the first `n` unwritten bytes written.
    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Owned(_, start) => *start += n,
            Chunk::Shared(_, range) => range.start += n,
        }
    }

    /// The memory this piece holds while queued: a shared chunk counts whole, since the
    /// queue keeps all of it alive (a slow reader sent tiny parts of large chunks must not
    /// hold far more than the limit says).
    fn cost(&self) -> usize {
        SLOT_COST
            + match self {
                Chunk::Owned(bytes, _) => bytes.capacity(),
                Chunk::Shared(bytes, _) => bytes.len(),
            }
    }
}

/// Most chunks handed to one `writev`.
const MAX_IOVECS: usize = 32;

impl OutQueue {
    /// Unwritten bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Memory held by the queue: what the output limits count (see [`OutQueue`]).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Queues a copy of `data`, in the back owned piece when there is one to grow.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        // Append to the back piece, unless it is partly written (so the front): that one is
        // freed once written, and growing it would keep its written bytes alive for as long
        // as the queue never empties.
        match self.chunks.back_mut() {
            Some(Chunk::Owned(back, 0)) => {
                let before = back.capacity();
                back.extend_from_slice(data);
                self.held += back.capacity() - before;
            }
            _ => {
                let piece = Chunk::Owned(data.to_vec(), 0);
                self.held += piece.cost();
                self.chunks.push_back(piece);
            }
        }
    }

    /// Queues the `range` part of a shared chunk (the whole of it: `0..chunk.len()`).
    pub(crate) fn push_shared(&mut self, chunk: Arc<[u8]>, range: Range<usize>) {
        if range.is_empty() || range.end > chunk.len() {
            return;
        }
        self.len += range.len();
        // Another part of the chunk just queued (a chat member is sent a batch without its
        // own lines: the parts around them) holds no more memory than the first part did.
        let same =
            matches!(self.chunks.back(), Some(Chunk::Shared(back, _)) if Arc::ptr_eq(back, &chunk));
        let piece = Chunk::Shared(chunk, range);
        self.held += if same { SLOT_COST } else { piece.cost() };
        self.chunks.push_back(piece);
    }

    /// Writes queued bytes with `writev` until the writer takes no more. Returns the bytes
    /// written.
    pub(crate) fn write_to(&mut self, writer: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slice = IoSlice::new(chunk.bytes());
                count += 1;
            }
            match writer.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.consume(n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(total)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let unwritten = front.bytes().len();
            if n < unwritten {
                front.advance(n);
                return;
            }
            n -= unwritten;
            if let Some(piece) = self.chunks.pop_front() {
                let same = match (&piece, self.chunks.front()) {
                    (Chunk::Shared(chunk, _), Some(Chunk::Shared(next, _))) => {
                        Arc::ptr_eq(chunk, next)
                    }
                    _ => false,
                };
                // The next part of the same chunk takes over the count of its memory.
                self.held -= if same { SLOT_COST } else { piece.cost() };
            }
        }
        if self.is_empty() {
            self.clear();
        }
    }

    /// Drops everything and releases the memory.
    pub(crate) fn clear(&mut self) {
        *self = OutQueue::default();
    }
}

#[cfg(test)]
mod out_queue {
    use super::*;

    /// A writer that takes at most `room` bytes, then would block.
    struct Narrow {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Narrow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(data)])
        }
        fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(self.room - n);
                self.taken.extend_from_slice(&slice[..take]);
                n += take;
            }
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn owned_and_shared_chunks_go_out_in_order_across_partial_writes() {
        let shared: Arc<[u8]> = Arc::from(&b"<bob> hi\n"[..]);
        let mut queue = OutQueue::default();
        queue.push(b"one ");
        queue.push(b"two ");
        queue.push_shared(Arc::clone(&shared), 0..shared.len());
        queue.push(b"three");
        assert_eq!(queue.len(), 8 + 9 + 5);
        let mut out = Narrow {
            taken: Vec::new(),
            room: 5,
        };
        assert_eq!(queue.write_to(&mut out).unwrap(), 5);
        out.room = 7;
        assert_eq!(queue.write_to(&mut out).unwrap(), 7);
        out.room = 100;
        queue.write_to(&mut out).unwrap();
        assert_eq!(out.taken, b"one two <bob> hi\nthree");
        assert!(queue.is_empty());
        assert_eq!(
            Arc::strong_count(&shared),
            1,
            "the queue let go of the shared chunk"
        );
    }

    #[test]
    fn parts_of_a_shared_chunk_go_out_and_count_its_memory_once() {
        let mut queue = OutQueue::default();
        let chunk: Arc<[u8]> = Arc::from(&b"abcdef"[..]);
        queue.push_shared(Arc::clone(&chunk), 0..1);
        queue.push_shared(Arc::clone(&chunk), 4..6);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.held(), 6 + 2 * SLOT_COST);
        let mut out = Narrow {
            taken: Vec::new(),
            room: 100,
        };
        queue.write_to(&mut out).unwrap();
        assert_eq!(out.taken, b"aef");
        assert_eq!(queue.held(), 0);
    }

    #[test]
    fn a_queue_that_never_empties_does_not_keep_what_it_sent() {
        // A reader that stays just behind: the queue never drains, yet must not hold on
        // to the bytes already written.
        let mut queue = OutQueue::default();
        queue.push(&[7; 2000]);
        let mut out = Narrow {
            taken: Vec::new(),
            room: 0,
        };
        for _ in 0..10_000 {
            queue.push(&[7; 1000]);
            out.room = 1000;
            queue.write_to(&mut out).unwrap();
            out.taken.clear();
        }
        assert_eq!(queue.len(), 2000);
        let held: usize = queue
            .chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::Owned(bytes, _) => bytes.capacity(),
                Chunk::Shared(bytes, _) => bytes.len(),
            })
            .sum();
        assert!(
            held < 16_000,
            "the queue holds {held} bytes for 2000 pending"
        );
        assert_eq!(queue.held(), held + queue.chunks.len() * SLOT_COST);
    }

    #[test]
    fn tiny_shared_chunks_count_their_overhead_against_the_limit() {
        // A flood of one-byte messages holds far more than one byte each: the limit must see it.
        let mut queue = OutQueue::default();
        for _ in 0..1000 {
            queue.push_shared(Arc::from(&b"."[..]), 0..1);
        }
        assert_eq!(queue.len(), 1000);
        assert_eq!(queue.held(), 1000 * (1 + SLOT_COST));
        let mut out = Narrow {
            taken: Vec::new(),
            room: 999,
        };
        queue.write_to(&mut out).unwrap();
        assert_eq!(queue.held(), 1 + SLOT_COST);
        out.room = 1;
        queue.write_to(&mut out).unwrap();
        assert_eq!(queue.held(), 0);
    }

    #[test]
    fn an_empty_queue_holds_no_memory() {
        let mut queue = OutQueue::default();
        queue.push(&[1; 1000]);
        let mut out = Narrow {
            taken: Vec::new(),
            room: 1000,
        };
        queue.write_to(&mut out).unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.chunks.capacity(), 0);
    }
}
