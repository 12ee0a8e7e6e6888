//! A reusable container for a drained run of events, so a subscriber can hand
//! one batch to its transport per wake-up without allocating per message.

use crate::reader::Lagged;

/// Events appended by [`Reader::read_batch`](crate::Reader::read_batch).
/// Payloads share one byte buffer; after the first few batches have grown it,
/// draining allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    entries: Vec<Entry>,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Message { seq: u64, start: usize, len: usize },
    Lagged(Lagged),
}

/// One event in a [`Batch`], borrowing its payload from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEvent<'a> {
    /// A delivered message.
    Message {
        /// Its sequence number.
        seq: u64,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The reader was lapped here; see [`Lagged`].
    Lagged(Lagged),
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch pre-sized for `events` events and `bytes` payload bytes.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Self {
            entries: Vec::with_capacity(events),
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    /// Number of events (messages and lag reports).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no events.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total payload bytes held.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The events, in the order the reader met them.
    pub fn iter(&self) -> impl Iterator<Item = BatchEvent<'_>> + '_ {
        self.entries.iter().map(|e| match *e {
            Entry::Message { seq, start, len } => BatchEvent::Message {
                seq,
                payload: &self.bytes[start..start + len],
            },
            Entry::Lagged(l) => BatchEvent::Lagged(l),
        })
    }

    /// The byte buffer a reader appends the next payload to.
    pub(crate) fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    pub(crate) fn push_message(&mut self, seq: u64, start: usize, len: usize) {
        self.entries.push(Entry::Message { seq, start, len });
    }

    pub(crate) fn push_lagged(&mut self, lagged: Lagged) {
        self.entries.push(Entry::Lagged(lagged));
    }
}
