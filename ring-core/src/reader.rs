//! A reader: one cursor into a ring. The only shared word it writes is the
//! ring's lag floor, and only when it is lapped (crate docs, "Lag
//! accounting"); that word has a cache line of its own, so any number of
//! readers cost the publishers nothing.

use crate::batch::Batch;
use crate::ring::{Header, Ring};
use crate::sink::Sink;
use crate::slot::{append_words, INLINE_MAX, WORDS};
use crate::sync::Arc;

/// Seqs at or above this are clamped to it by `Start::At`. No ring gets
/// there (2^56 messages), and it keeps every stamp (`(2 seq + 2) << 6`, see
/// the crate docs) in range whatever a client asks for.
pub const MAX_START_SEQ: u64 = 1 << 56;

/// Where a new reader begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next message published (`ring.head()`).
    Latest,
    /// With the oldest message the ring still holds.
    Oldest,
    /// With this seq. If it is already gone the first read reports
    /// `Lagged { missed: oldest - seq, resume_seq: oldest }`; if it is in the
    /// future the reader waits for it.
    At(u64),
}

/// What a lapped reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Continue with the oldest message still held: lose as little as possible.
    #[default]
    Oldest,
    /// Jump to the newest message (conflation: only the latest value matters).
    Newest,
}

/// The reader fell behind and messages were overwritten before it read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    /// Exactly how many seqs the reader skips and will never see.
    pub missed: u64,
    /// The seq the reader continues from (`previous cursor + missed`).
    pub resume_seq: u64,
}

/// Result of [`Reader::try_read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The payload of message `seq` is in the caller's buffer.
    Message {
        /// Its sequence number.
        seq: u64,
    },
    /// The reader was lapped; its cursor moved to `resume_seq`.
    Lagged(Lagged),
    /// Nothing new yet.
    Empty,
}

/// Result of [`Reader::peek`].
#[derive(Debug)]
pub enum Peek<'r> {
    /// A message is at the cursor; nothing is copied or consumed yet.
    Message(Pending<'r>),
    /// The reader was lapped; its cursor moved to `resume_seq`.
    Lagged(Lagged),
    /// Nothing new yet.
    Empty,
}

/// The message at a reader's cursor, read as far as its header: its seq,
/// its length and its first bytes, before the payload is copied anywhere.
/// Lets the caller decide where the payload goes (a frame whose head it
/// writes first) and read a header of its own from the first word.
/// Dropping it leaves the cursor where it was.
#[derive(Debug)]
pub struct Pending<'r> {
    reader: &'r mut Reader,
    seq: u64,
    len: usize,
    words: [u64; WORDS],
}

impl Pending<'_> {
    /// The message's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message's first 8 bytes as a little-endian `u64`, the bytes past
    /// its end read as zero. From the header's consistent snapshot: no
    /// payload is copied, and a later torn copy does not make it wrong (the
    /// header was this message's when it was read).
    pub fn first_word(&self) -> u64 {
        let w = if self.len <= INLINE_MAX {
            self.words[0]
        } else {
            self.words[1]
        };
        match self.len {
            0 => 0,
            1..=7 => w & ((1u64 << (8 * self.len)) - 1),
            _ => w,
        }
    }

    /// Appends the message from byte `skip` on to `out` (`skip` is clamped
    /// to its length) and moves the cursor past it. If the message was
    /// overwritten while it was copied, `out` is truncated to what it held
    /// before this call and the lag is reported instead, exactly as a
    /// lapped read would be.
    pub fn copy_into<S: Sink + ?Sized>(self, skip: usize, out: &mut S) -> Result<(), Lagged> {
        let Pending {
            reader,
            seq,
            len,
            words,
        } = self;
        let skip = skip.min(len);
        if len <= INLINE_MAX {
            append_words(out, &words, skip, len);
        } else if !reader.ring.copy_arena(&words, len, skip, out) {
            return Err(reader.lag());
        }
        reader.next = seq + 1;
        reader.stats.received += 1;
        Ok(())
    }
}

/// Counters for one reader, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Messages delivered.
    pub received: u64,
    /// Lag events reported.
    pub lagged_events: u64,
    /// Sum of `missed` over those events.
    pub missed: u64,
}

/// One cursor into a ring. `Send`, not shared: give each subscription its own.
#[derive(Debug)]
pub struct Reader {
    ring: Arc<Ring>,
    next: u64,
    resume: Resume,
    stats: ReaderStats,
}

/// One step of the read loop.
enum Step {
    Message {
        seq: u64,
        len: usize,
    },
    Lagged(Lagged),
    Empty,
    /// The next message would exceed the caller's byte budget; not consumed.
    OverBudget,
}

impl Reader {
    /// A reader of `ring` positioned by `start`.
    pub fn new(ring: Arc<Ring>, start: Start) -> Self {
        let next = match start {
            Start::Latest => ring.head(),
            Start::Oldest => ring.start_oldest(),
            Start::At(seq) => seq.min(MAX_START_SEQ),
        };
        Self {
            ring,
            next,
            resume: Resume::default(),
            stats: ReaderStats::default(),
        }
    }

    /// Chooses what happens when this reader is lapped.
    pub fn set_resume(&mut self, resume: Resume) {
        self.resume = resume;
    }

    /// Reads the next message into `buf` (cleared first). Copying out is the
    /// price of never holding a slot: the writer may reuse it at any moment.
    pub fn try_read(&mut self, buf: &mut Vec<u8>) -> ReadOutcome {
        buf.clear();
        match self.step(buf, None) {
            Step::Message { seq, .. } => ReadOutcome::Message { seq },
            Step::Lagged(l) => ReadOutcome::Lagged(l),
            Step::Empty | Step::OverBudget => ReadOutcome::Empty,
        }
    }

    /// Drains into `batch` (appending) until the ring is empty, `max_messages`
    /// events were appended (a lag report counts as one), the payload bytes
    /// appended by this call reach `max_bytes`, or the next message would
    /// take them over it. The first message is always taken whatever its
    /// size, so a batch always makes progress. Returns the number of events
    /// appended.
    pub fn read_batch(
        &mut self,
        batch: &mut Batch,
        max_messages: usize,
        max_bytes: usize,
    ) -> usize {
        let mut events = 0;
        let mut bytes = 0usize;
        let mut took_message = false;
        while events < max_messages {
            let budget = match took_message {
                false => None,
                true if bytes >= max_bytes => break,
                true => Some(max_bytes - bytes),
            };
            let start = batch.bytes_mut().len();
            match self.step(batch.bytes_mut(), budget) {
                Step::Message { seq, len } => {
                    batch.push_message(seq, start, len);
                    bytes += len;
                    took_message = true;
                }
                Step::Lagged(l) => batch.push_lagged(l),
                Step::Empty | Step::OverBudget => break,
            }
            events += 1;
        }
        events
    }

    /// True if a read would not return `Empty` (a message, or a lag report).
    /// One Acquire load of the next header's stamp: cheap enough to poll.
    pub fn has_new(&self) -> bool {
        self.ring.has(self.next)
    }

    /// The seq the next read will deliver (or report a lag at).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// How many seqs this reader is behind the head (0 if caught up).
    pub fn backlog(&self) -> u64 {
        self.ring.head().saturating_sub(self.next)
    }

    /// The ring's epoch.
    pub fn epoch(&self) -> u64 {
        self.ring.epoch()
    }

    /// Counters since this reader was created.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The ring this reader reads.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Reads the header of the message at the cursor: a [`Pending`]
    /// message to copy where the caller chooses, a lag (the cursor has
    /// moved), or nothing yet.
    #[inline]
    pub fn peek(&mut self) -> Peek<'_> {
        let seq = self.next;
        match self.ring.read_header(seq) {
            Header::NotYet => Peek::Empty,
            Header::Gone => Peek::Lagged(self.lag()),
            Header::Committed { len, words } => Peek::Message(Pending {
                reader: self,
                seq,
                len,
                words,
            }),
        }
    }

    /// Reads the message at the cursor, appending its payload to `out`.
    /// On anything but a delivered message `out` is left as it was.
    #[inline]
    fn step<S: Sink + ?Sized>(&mut self, out: &mut S, budget: Option<usize>) -> Step {
        match self.peek() {
            Peek::Empty => Step::Empty,
            Peek::Lagged(l) => Step::Lagged(l),
            Peek::Message(m) if budget.is_some_and(|b| m.len > b) => Step::OverBudget,
            Peek::Message(m) => {
                let (seq, len) = (m.seq, m.len);
                match m.copy_into(0, out) {
                    Ok(()) => Step::Message { seq, len },
                    Err(l) => Step::Lagged(l),
                }
            }
        }
    }

    fn lag(&mut self) -> Lagged {
        let resume_seq = self.ring.resume_after_lap(self.next, self.resume);
        let missed = resume_seq - self.next;
        self.next = resume_seq;
        self.stats.lagged_events += 1;
        self.stats.missed += missed;
        Lagged { missed, resume_seq }
    }
}
