//! Where a reader copies a payload to.
//!
//! A read copies the payload out of the ring (the writer may reuse the slot
//! at any moment) and only then learns, from the stamps, whether the copy is
//! the message's. So the destination must be able to take the bytes back:
//! [`Sink::truncate`] to where it was. A `Vec<u8>` is one; with the `bytes`
//! feature so is a `BytesMut`, which lets a network edge copy a payload
//! straight into the frame it sends, between a frame head it wrote first and
//! a tail it writes after ([`Pending::copy_into`](crate::Pending::copy_into)).

/// A growable byte buffer a reader appends to and may roll back.
pub trait Sink {
    /// Bytes held.
    fn len(&self) -> usize;

    /// True if no bytes are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `n` bytes (zeroed: the reader overwrites them) and returns
    /// them. One call per message: the reader then stores whole words
    /// into the slice, with no capacity check per word.
    fn grow(&mut self, n: usize) -> &mut [u8];

    /// Shortens to `len` bytes (no effect if already shorter).
    fn truncate(&mut self, len: usize);
}

impl Sink for Vec<u8> {
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }

    #[inline]
    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = Vec::len(self);
        self.resize(start + n, 0);
        &mut self[start..]
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len)
    }
}

#[cfg(feature = "bytes")]
impl Sink for bytes::BytesMut {
    #[inline]
    fn len(&self) -> usize {
        bytes::BytesMut::len(self)
    }

    #[inline]
    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = bytes::BytesMut::len(self);
        self.resize(start + n, 0);
        &mut self[start..]
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        bytes::BytesMut::truncate(self, len)
    }
}
