//! `lapwing-ring`: the lossy, seqlock-stamped byte ring behind every Lapwing
//! topic.
//!
//! A publisher never waits for readers; a reader that falls a whole ring
//! behind is told exactly how many messages it lost and where it resumes.
//! That trade (lossy but *accounted*) is what lets one slow subscriber never
//! slow down a topic, while still never losing data silently.
//!
//! ```
//! use lapwing_ring::{ReadOutcome, Ring, RingConfig, Start};
//!
//! let (mut publisher, ring) = Ring::single_producer(RingConfig::new(4096, 1024))?;
//! let mut reader = ring.reader(Start::Latest);
//! let seq = publisher.publish(b"hello")?;
//! let mut buf = Vec::new();
//! assert_eq!(reader.try_read(&mut buf), ReadOutcome::Message { seq });
//! assert_eq!(buf, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! Two arrays of 64-byte slots, each one `AtomicU64` stamp plus seven
//! `AtomicU64` payload words. Message `seq` has its header in header slot
//! `seq mod H`: either the payload itself (up to 56 bytes, all seven words; the
//! length rides in the stamp's low bits) or, for a bigger payload, its length,
//! the arena position of its first 56-byte chunk and its first 40 bytes, so a
//! 64-byte message spans two slots. The rest occupies consecutive arena
//! positions (`pos mod C`). Fixed-size slots keep the
//! protocol per-slot, which is what the loom and TLA+ models check; the arena
//! lets a 4 KiB ring carry messages of a kilobyte without making every header
//! that large. See [`RingConfig`] for how a byte budget becomes `H` and `C`.
//!
//! # Stamps
//!
//! The slot holding message (or arena position) `n` is stamped with phase
//! `2n+1` while being written and `2n+2` when done; `0` means never written.
//! The phase sits above 6 tag bits (`stamp = phase << 6 | tag`): a done
//! header's tag is its inline length (0..=56) or 63 for an arena message,
//! chunks carry tag 0, so stamps order like phases. Because the
//! stamp names the occupant, not just "busy/free", a reader can tell "not yet
//! written" (`< 2n+2`), "mine" (`== 2n+2`) and "overwritten by a later lap"
//! (`> 2n+2`) from one load, and no ABA is possible.
//!
//! * **Write**: stamp := odd (plain store for the single producer; for the
//!   multi-producer a CAS from the previous lap's done phase, so two writers
//!   never share a slot even across laps), `fence(Release)`, payload words
//!   (Relaxed), stamp := even (Release).
//! * **Commit order**: a message's arena chunks are done before its header is
//!   begun, so a committed header means a complete message.
//! * **Read** (Boehm, "Can seqlocks get along with programming language
//!   memory models?"): stamp (Acquire), payload words (Relaxed),
//!   `fence(Acquire)`, stamp again (Relaxed), compare. Every word is an
//!   atomic, so a racing read is never a data race, only a mixed read that the
//!   re-check rejects. The protocol therefore needs no `unsafe`; the one
//!   `unsafe` in the crate allocates a ring's slots as zeroed memory
//!   (`slots.rs`), so an unused ring costs no resident memory.
//!
//! # Lag accounting
//!
//! When a reader's next seq is gone it scans forward from
//! `max(next+1, floor)` for the first seq that is still held (or not yet
//! written), and reports `Lagged { missed: resume - next, resume_seq: resume }`.
//! The floor is `max(head-H, gone_below)`: below `head-H` every header slot
//! is claimed by a later lap, and `gone_below` is where an earlier scan that
//! itself began at the floor stopped, so everything below it is gone or
//! doomed (stamps and claim counters only grow, so that stays true). Lapped
//! readers thus mostly probe each gone seq once between them, instead of
//! each re-probing up to `H` of them: with 1 KiB messages a 4 MiB ring
//! holds ~1 800 messages in its arena but has 32 768 header slots. A scan
//! that began at `next+1` does not raise the floor: with several producers
//! the arena order can differ from the seq order, so a seq below `next`
//! may still be held although `next` is gone.
//! If that message is overwritten before it is read, the next read reports
//! another `Lagged` from there. So for every reader, delivered messages plus
//! the sum of `missed` equals the seqs its cursor passed, exactly.
//!
//! # Reading in two steps
//!
//! [`Reader::try_read`] and [`Reader::read_batch`] copy whole payloads into
//! a `Vec`. A caller that wraps each payload in something of its own (a
//! network frame) can instead [`Reader::peek`]: the header is read and
//! checked, and the [`Pending`] message tells its seq, its length and its
//! first word without copying anything. The caller writes what goes
//! before the payload, then [`Pending::copy_into`] copies the payload (from
//! any byte on) straight after it into any [`Sink`]. A copy the stamps
//! reject is rolled back: the sink is truncated to where it was, and the
//! lag is reported as a lapped read would report it. Both reads are the
//! same code (`try_read` is `peek` and `copy_into`), so the loom models and
//! the TLA+ correspondence cover the path a server runs.
//!
//! # Publishers
//!
//! [`Publisher`] (`&mut self`) is the only writer of its ring, so it needs no
//! read-modify-write at all. [`MpPublisher`] (`Clone + Send + Sync`) claims a
//! seq and an arena range with `fetch_add` and takes each slot with the CAS
//! above; it can wait only for an *older* writer of the same slot, so there is
//! no wait cycle, and never for a reader.
//!
//! # What is deliberately not here
//!
//! No waking (the server pairs [`Reader::has_new`] with its own notifier), no
//! I/O, no clock, no allocation per message (readers copy into a caller's
//! [`Sink`] or a reusable [`Batch`]), and no panics on any length or seq a client
//! could send: sizes are checked and refused with [`PublishError`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod config;
mod publisher;
mod reader;
mod ring;
mod sink;
mod slot;
mod slots;
mod sync;

pub use batch::{Batch, BatchEvent};
pub use config::{ConfigError, Geometry, RingConfig, MAX_CAPACITY_BYTES, MIN_CAPACITY_BYTES};
pub use publisher::{MpPublisher, PublishError, Publisher};
pub use reader::{
    Lagged, Peek, Pending, ReadOutcome, Reader, ReaderStats, Resume, Start, MAX_START_SEQ,
};
pub use ring::Ring;
pub use sink::Sink;
