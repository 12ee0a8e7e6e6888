//! The two ways to write into a ring. Both validate the length before
//! claiming anything: a claimed seq that is never written would stall every
//! reader and every later writer of that slot.

use crate::ring::Ring;
use crate::slot::chunks_for;
use crate::sync::Arc;

/// Why a publish was refused. Nothing was written and no seq was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The payload is longer than the ring's `max_message_bytes`.
    #[error("message of {len} bytes is larger than this ring's maximum of {max} bytes")]
    TooLarge {
        /// Payload length (saturated at `usize::MAX` if the parts overflow).
        len: usize,
        /// The ring's `max_message_bytes`.
        max: usize,
    },
}

#[inline]
fn checked_len(parts: &[&[u8]], max: usize) -> Result<usize, PublishError> {
    let len = parts
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
        .unwrap_or(usize::MAX);
    if len > max {
        Err(PublishError::TooLarge { len, max })
    } else {
        Ok(len)
    }
}

/// The only writer of its ring. Needs `&mut self`, so the type system proves
/// there is one; in exchange each publish is plain stores plus the stamps,
/// with no read-modify-write at all.
#[derive(Debug)]
pub struct Publisher {
    ring: Arc<Ring>,
    next_seq: u64,
    next_pos: u64,
}

impl Publisher {
    pub(crate) fn new(ring: Arc<Ring>) -> Self {
        Self {
            ring,
            next_seq: 0,
            next_pos: 0,
        }
    }

    /// Publishes one message and returns its seq. Never waits for readers.
    #[inline]
    pub fn publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        self.publish_parts(&[payload])
    }

    /// Publishes the concatenation of `parts` as one message (so a caller can
    /// prepend a header without copying the body). Returns its seq.
    #[inline]
    pub fn publish_parts(&mut self, parts: &[&[u8]]) -> Result<u64, PublishError> {
        let len = checked_len(parts, self.ring.max_message_bytes())?;
        let seq = self.next_seq;
        let pos = self.next_pos;
        self.ring.write(seq, pos, len, parts, true);
        self.next_seq = seq + 1;
        self.next_pos = pos + chunks_for(len) as u64;
        self.ring.publish_head(seq + 1);
        Ok(seq)
    }

    /// The ring this publisher writes to.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }
}

/// A writer that may be cloned and shared between threads. Each publish
/// claims a seq and an arena range with `fetch_add`, then takes each slot with
/// a CAS from the previous lap's done stamp, so it waits only for an older
/// writer of the same slot (never for a reader, never in a cycle).
#[derive(Debug, Clone)]
pub struct MpPublisher {
    ring: Arc<Ring>,
}

impl MpPublisher {
    pub(crate) fn new(ring: Arc<Ring>) -> Self {
        Self { ring }
    }

    /// Publishes one message and returns its seq. Never waits for readers.
    #[inline]
    pub fn publish(&self, payload: &[u8]) -> Result<u64, PublishError> {
        self.publish_parts(&[payload])
    }

    /// Publishes the concatenation of `parts` as one message. Returns its seq.
    #[inline]
    pub fn publish_parts(&self, parts: &[&[u8]]) -> Result<u64, PublishError> {
        let len = checked_len(parts, self.ring.max_message_bytes())?;
        let (seq, pos) = self.ring.claim(chunks_for(len));
        self.ring.write(seq, pos, len, parts, false);
        Ok(seq)
    }

    /// The ring this publisher writes to.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }
}
