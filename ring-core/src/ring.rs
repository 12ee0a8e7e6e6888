//! The shared ring: slot arrays, counters, and the read-side probes that
//! readers and `oldest_retained` share.

use std::fmt;

use crate::config::{ConfigError, Geometry, RingConfig};
use crate::publisher::{MpPublisher, Publisher};
use crate::reader::Resume;
#[cfg(not(loom))]
use crate::reader::{Reader, Start};
use crate::sink::Sink;
use crate::slot::{
    begin_write, chunks_for, done, end_write, phase, still_stamped, store_bytes, tag, Slot,
    WordSource, ARENA_TAG, CHUNK_BYTES, INLINE_MAX, PREFIX_BYTES, WORDS,
};
use crate::slots::Slots;
use crate::sync::{Arc, AtomicU64, Ordering};

/// One topic's messages: a header ring and a chunk arena of stamped slots.
///
/// Shared as `Arc<Ring>` between its publisher(s) and any number of
/// [`Reader`]s. Holds no lock and no waker: whoever wants to sleep until a new
/// message arrives (the server's subscription tasks) polls
/// [`Reader::has_new`] after its own notification.
pub struct Ring {
    headers: Slots,
    arena: Slots,
    header_slots: u64,
    arena_slots: u64,
    max_message_bytes: usize,
    epoch: u64,
    /// Single producer: count of committed messages (stored after each
    /// commit). Multi producer: count of claimed sequence numbers.
    head: Padded,
    /// Multi producer only: count of claimed arena positions. The single
    /// producer keeps its arena position in the `Publisher`.
    arena_head: Padded,
    /// Every seq below this is gone or doomed (its header slot or arena
    /// positions claimed by a later lap): the end of some lag scan that
    /// began where that was already known. Lapped readers start their scan
    /// here instead of re-probing what another reader found gone. Written
    /// only by lag scans (`fetch_max`), never by a publisher.
    gone_below: Padded,
}

/// Keeps the counters (two hot, one written only on laps) off each other's
/// (and the slots') cache lines.
#[repr(align(128))]
struct Padded(AtomicU64);

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("head", &self.head())
            .field("header_slots", &self.header_slots)
            .field("arena_slots", &self.arena_slots)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

/// The result of reading a header slot for one particular seq.
pub(crate) enum Header {
    /// Not written yet for this seq (its slot still holds an older lap, or
    /// the writer is mid-way).
    NotYet,
    /// Overwritten by a later lap: this seq is gone.
    Gone,
    /// Committed and consistent: payload length and the loaded words
    /// (inline: the payload; arena: `words[0]` = arena position of the first
    /// chunk, `words[1..]` = the payload's first `PREFIX_BYTES`).
    Committed { len: usize, words: [u64; WORDS] },
}

/// How a lag scan judges one seq.
#[derive(PartialEq, Eq)]
enum Probe {
    Gone,
    Pending,
    Retained,
}

impl Ring {
    /// A ring with one single-producer publisher and a random epoch.
    pub fn single_producer(cfg: RingConfig) -> Result<(Publisher, Arc<Ring>), ConfigError> {
        Self::single_producer_with_epoch(cfg, random_epoch())
    }

    /// A ring whose publisher can be cloned across threads, with a random epoch.
    pub fn multi_producer(cfg: RingConfig) -> Result<(MpPublisher, Arc<Ring>), ConfigError> {
        Self::multi_producer_with_epoch(cfg, random_epoch())
    }

    /// As [`Ring::single_producer`], with a chosen epoch (tests, or a server
    /// restoring a known epoch).
    pub fn single_producer_with_epoch(
        cfg: RingConfig,
        epoch: u64,
    ) -> Result<(Publisher, Arc<Ring>), ConfigError> {
        let ring = Self::build(cfg.geometry()?, cfg.max_message_bytes, epoch)?;
        Ok((Publisher::new(ring.clone()), ring))
    }

    /// As [`Ring::multi_producer`], with a chosen epoch.
    pub fn multi_producer_with_epoch(
        cfg: RingConfig,
        epoch: u64,
    ) -> Result<(MpPublisher, Arc<Ring>), ConfigError> {
        let ring = Self::build(cfg.geometry()?, cfg.max_message_bytes, epoch)?;
        Ok((MpPublisher::new(ring.clone()), ring))
    }

    /// Test constructor with explicit slot counts, so loom and unit tests can
    /// use rings of 2 or 4 slots. Not part of the stable API.
    #[doc(hidden)]
    pub fn single_producer_with_geometry(
        geometry: Geometry,
        max_message_bytes: usize,
        epoch: u64,
    ) -> Result<(Publisher, Arc<Ring>), ConfigError> {
        geometry.check(max_message_bytes)?;
        let ring = Self::build(geometry, max_message_bytes, epoch)?;
        Ok((Publisher::new(ring.clone()), ring))
    }

    /// Multi-producer twin of [`Ring::single_producer_with_geometry`].
    #[doc(hidden)]
    pub fn multi_producer_with_geometry(
        geometry: Geometry,
        max_message_bytes: usize,
        epoch: u64,
    ) -> Result<(MpPublisher, Arc<Ring>), ConfigError> {
        geometry.check(max_message_bytes)?;
        let ring = Self::build(geometry, max_message_bytes, epoch)?;
        Ok((MpPublisher::new(ring.clone()), ring))
    }

    fn build(
        geometry: Geometry,
        max_message_bytes: usize,
        epoch: u64,
    ) -> Result<Arc<Ring>, ConfigError> {
        let alloc = |n: usize| -> Result<Slots, ConfigError> {
            crate::slots::zeroed(n).ok_or(ConfigError::OutOfMemory {
                bytes: geometry.memory_bytes(),
            })
        };
        Ok(Arc::new(Ring {
            headers: alloc(geometry.header_slots)?,
            arena: alloc(geometry.arena_slots)?,
            header_slots: geometry.header_slots as u64,
            arena_slots: geometry.arena_slots as u64,
            max_message_bytes,
            epoch,
            head: Padded(AtomicU64::new(0)),
            arena_head: Padded(AtomicU64::new(0)),
            gone_below: Padded(AtomicU64::new(0)),
        }))
    }

    /// The ring's incarnation: random per ring, so a client resuming by seq
    /// can tell "same stream" from "restarted stream with reused seqs".
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The seq the next message will get. With several producers some seqs
    /// below it may still be mid-write.
    pub fn head(&self) -> u64 {
        self.head.0.load(Ordering::Acquire)
    }

    /// Seq of the oldest message a reader could still get (or `head()` if
    /// none). Racy by nature: a publish may overwrite it right after.
    pub fn oldest_retained(&self) -> u64 {
        let head = self.head();
        let floor = self.floor(head);
        self.first_retained(floor, head.max(floor), true)
    }

    /// The largest payload `publish` accepts.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Bytes allocated for slots (at most the configured `capacity_bytes`).
    pub fn memory_bytes(&self) -> usize {
        self.geometry().memory_bytes()
    }

    /// The slot counts this ring was built with.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            header_slots: self.headers.len(),
            arena_slots: self.arena.len(),
        }
    }

    /// A new reader with its own cursor. See [`Start`] for where it begins.
    #[cfg(not(loom))]
    pub fn reader(self: &Arc<Self>, start: Start) -> Reader {
        Reader::new(self.clone(), start)
    }

    #[inline]
    fn header_slot(&self, seq: u64) -> &Slot {
        &self.headers[(seq & (self.header_slots - 1)) as usize]
    }

    #[inline]
    fn arena_slot(&self, pos: u64) -> &Slot {
        &self.arena[(pos & (self.arena_slots - 1)) as usize]
    }

    // ---- write side -------------------------------------------------------

    /// Writes message `seq` whose chunks start at arena position `pos`.
    /// Chunks first, header last: a committed header implies a complete
    /// message. `owned` is true for the single producer (see `begin_write`).
    /// The caller has checked `len <= max_message_bytes`.
    ///
    /// Always inlined, so an inline message from one slice (the hot case)
    /// is a handful of stores in the caller: no call, no staging buffer.
    #[inline(always)]
    pub(crate) fn write(&self, seq: u64, pos: u64, len: usize, parts: &[&[u8]], owned: bool) {
        if len > INLINE_MAX {
            return self.write_arena(seq, pos, len, parts, owned);
        }
        // One slot: the payload fills w0..w6, the length rides in the stamp.
        let slot = self.header_slot(seq);
        begin_write(slot, seq, self.header_slots, owned);
        match parts {
            [one] => store_bytes(&slot.words, one),
            _ => {
                let mut scratch = [0u8; CHUNK_BYTES];
                store_bytes(&slot.words, WordSource::new(parts).take(len, &mut scratch));
            }
        }
        end_write(slot, seq, len as u64);
    }

    /// `write` for a message over `INLINE_MAX`: its chunks, then its header.
    fn write_arena(&self, seq: u64, pos: u64, len: usize, parts: &[&[u8]], owned: bool) {
        let mut src = WordSource::new(parts);
        let mut scratch = [0u8; CHUNK_BYTES];
        let slot = self.header_slot(seq);
        // The prefix goes into the header, which is committed last; keep it
        // aside while the rest streams into the chunks.
        let mut prefix = [0u8; CHUNK_BYTES];
        prefix[..PREFIX_BYTES].copy_from_slice(src.take(PREFIX_BYTES, &mut scratch));
        let mut left = len - PREFIX_BYTES;
        for i in 0..chunks_for(len) as u64 {
            let chunk = self.arena_slot(pos + i);
            begin_write(chunk, pos + i, self.arena_slots, owned);
            let n = left.min(CHUNK_BYTES);
            store_bytes(&chunk.words, src.take(n, &mut scratch));
            left -= n;
            end_write(chunk, pos + i, 0);
        }
        begin_write(slot, seq, self.header_slots, owned);
        slot.words[0].store(len as u64, Ordering::Relaxed);
        slot.words[1].store(pos, Ordering::Relaxed);
        store_bytes(&slot.words[2..], &prefix[..PREFIX_BYTES]);
        end_write(slot, seq, ARENA_TAG);
    }

    /// Single producer: makes `seq` visible to `head()` readers.
    #[inline]
    pub(crate) fn publish_head(&self, next: u64) {
        self.head.0.store(next, Ordering::Release);
    }

    /// Multi producer: claims the next seq and `chunks` arena positions.
    #[inline]
    pub(crate) fn claim(&self, chunks: usize) -> (u64, u64) {
        let seq = self.head.0.fetch_add(1, Ordering::Relaxed);
        let pos = if chunks == 0 {
            0
        } else {
            self.arena_head
                .0
                .fetch_add(chunks as u64, Ordering::Relaxed)
        };
        (seq, pos)
    }

    // ---- read side --------------------------------------------------------

    /// Reads the header of `seq` with the seqlock recipe. The stamp's tag
    /// says inline (its length) or arena; loads only the words in use.
    #[inline]
    pub(crate) fn read_header(&self, seq: u64) -> Header {
        let slot = self.header_slot(seq);
        let want = done(seq);
        let stamp = slot.stamp.load(Ordering::Acquire);
        let at = phase(stamp);
        if at < want {
            return Header::NotYet;
        }
        if at > want {
            return Header::Gone;
        }
        let mut words = [0u64; WORDS];
        let len = if tag(stamp) == ARENA_TAG {
            // w0 = len, w1 = pos, w2.. = prefix. A torn `len` is harmless:
            // the re-check below rejects the whole read.
            let len = slot.words[0].load(Ordering::Relaxed);
            words[0] = slot.words[1].load(Ordering::Relaxed);
            for (dst, w) in words[1..].iter_mut().zip(&slot.words[2..]) {
                *dst = w.load(Ordering::Relaxed);
            }
            len
        } else {
            // The length came with the stamp, in the same load.
            let len = tag(stamp);
            let used = (len as usize).div_ceil(8);
            for (dst, w) in words.iter_mut().zip(&slot.words).take(used) {
                *dst = w.load(Ordering::Relaxed);
            }
            len
        };
        if !still_stamped(slot, stamp) {
            return Header::Gone;
        }
        match usize::try_from(len) {
            // A consistent header always has len <= max; anything else would
            // be a bug, and is reported as a loss rather than trusted. (An
            // arena header always has len > INLINE_MAX, an inline one not.)
            Ok(len)
                if len <= self.max_message_bytes
                    && (tag(stamp) == ARENA_TAG) == (len > INLINE_MAX) =>
            {
                Header::Committed { len, words }
            }
            _ => Header::Gone,
        }
    }

    /// Appends the payload of a committed arena message to `out`, from
    /// byte `skip` on: the prefix from its header's `words`, then the
    /// chunks. Each chunk
    /// is read with the recipe and must carry exactly its own done stamp:
    /// arena position `pos` is written by one writer only, ever, so an exact
    /// stamp before and after proves the bytes are that message's. (No header
    /// re-check is needed afterwards.) False if any chunk was overwritten;
    /// `out` is then truncated to what it held before. `skip <= len`.
    ///
    /// The message is stored as whole words (`PREFIX_BYTES` and
    /// `CHUNK_BYTES` are multiples of 8): word `i` of the payload is copied
    /// to word `i - skip / 8` of one region grown once, straight from the
    /// slot's atomic loads, and the region is trimmed at the end.
    #[inline]
    pub(crate) fn copy_arena<S: Sink + ?Sized>(
        &self,
        header: &[u64; WORDS],
        len: usize,
        skip: usize,
        out: &mut S,
    ) -> bool {
        const PREFIX_WORDS: usize = PREFIX_BYTES / 8;
        const _: () = assert!(PREFIX_BYTES % 8 == 0 && CHUNK_BYTES % 8 == 0);
        let start = out.len();
        let first = skip / 8;
        let dst = out.grow((len.div_ceil(8) - first) * 8);
        let mut dst_words = dst.chunks_exact_mut(8);
        for w in header[1..=PREFIX_WORDS].iter().skip(first) {
            if let Some(d) = dst_words.next() {
                d.copy_from_slice(&w.to_le_bytes());
            }
        }
        let pos = header[0];
        let mut word = PREFIX_WORDS;
        let mut left = len - PREFIX_BYTES;
        for i in 0..chunks_for(len) as u64 {
            let slot = self.arena_slot(pos + i);
            let want = done(pos + i);
            if slot.stamp.load(Ordering::Acquire) != want {
                out.truncate(start);
                return false;
            }
            let n = left.min(CHUNK_BYTES);
            for w in &slot.words[..n.div_ceil(8)] {
                let w = w.load(Ordering::Relaxed);
                if word >= first {
                    if let Some(d) = dst_words.next() {
                        d.copy_from_slice(&w.to_le_bytes());
                    }
                }
                word += 1;
            }
            if !still_stamped(slot, want) {
                out.truncate(start);
                return false;
            }
            left -= n;
        }
        if skip % 8 != 0 {
            dst.copy_within(skip % 8.., 0);
        }
        out.truncate(start + (len - skip));
        true
    }

    /// Whether `seq` could still be read, without copying it. For arena
    /// messages only the first chunk is checked: chunks are overwritten in
    /// position order, so the first is the first to go. (A later chunk lost
    /// to a concurrent writer just makes the subsequent read report a lag.)
    #[inline]
    fn probe(&self, seq: u64) -> Probe {
        match self.read_header(seq) {
            Header::NotYet => Probe::Pending,
            Header::Gone => Probe::Gone,
            Header::Committed { len, .. } if len <= INLINE_MAX => Probe::Retained,
            Header::Committed { words, .. } => {
                let pos = words[0];
                if self.arena_slot(pos).stamp.load(Ordering::Acquire) == done(pos) {
                    Probe::Retained
                } else {
                    Probe::Gone
                }
            }
        }
    }

    /// Below this every seq is known gone or doomed: everything below
    /// `head - H` (its header slot is claimed by a later lap), and
    /// everything below `gone_below`.
    #[inline]
    fn floor(&self, head: u64) -> u64 {
        head.saturating_sub(self.header_slots)
            .max(self.gone_below.0.load(Ordering::Acquire))
    }

    /// First seq in `[from, to)` that is not gone (retained, or not yet
    /// written so a reader can wait for it), else `to`. `from_floor` says
    /// every seq below `from` is gone or doomed; then so is every seq below
    /// the answer, and `gone_below` learns it. (Gone and doomed are for
    /// good: stamps and claim counters only grow.)
    fn first_retained(&self, from: u64, to: u64, from_floor: bool) -> u64 {
        let found = (from..to)
            .find(|&s| self.probe(s) != Probe::Gone)
            .unwrap_or(to);
        if from_floor && found > from {
            self.gone_below.0.fetch_max(found, Ordering::Release);
        }
        found
    }

    /// Where a reader lapped at `next` continues. Always `> next`, so the
    /// reported `missed = resume - next` is at least 1 and the cursor moves.
    pub(crate) fn resume_after_lap(&self, next: u64, policy: Resume) -> u64 {
        let head = self.head();
        // Everything below the floor is gone or doomed (`floor`).
        let floor = self.floor(head);
        let from = (next + 1).max(floor);
        // `head` may be stale relative to the stamp we saw (a Relaxed odd
        // stamp, or the claim CAS, carries no Release): never go back. The
        // `mutant-lag-to-head` feature (tests only) drops the guard so that
        // the loom models can prove they notice.
        #[cfg(not(feature = "mutant-lag-to-head"))]
        let to = head.max(from);
        #[cfg(feature = "mutant-lag-to-head")]
        let to = head;
        match policy {
            Resume::Oldest => self.first_retained(from, to, from == floor),
            Resume::Newest => (from..to)
                .rev()
                .find(|&s| self.probe(s) == Probe::Retained)
                .unwrap_or(to),
        }
    }

    /// Where `Start::Oldest` begins.
    pub(crate) fn start_oldest(&self) -> u64 {
        self.oldest_retained()
    }

    /// Cheap "anything for `seq`?": one Acquire load. True when committed or
    /// when the slot has moved past `seq` (the reader was lapped).
    #[inline]
    pub(crate) fn has(&self, seq: u64) -> bool {
        phase(self.header_slot(seq).stamp.load(Ordering::Acquire)) >= done(seq)
    }
}

/// A random, non-zero epoch without extra dependencies: std's `RandomState`
/// is seeded from the OS once per thread and varied per instance; the
/// counter separates rings created in the same instant on the same thread.
fn random_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish().max(1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The shared floor (`gone_below`), driven claim by claim so that the
    //! two producers' seq and arena orders disagree, as they may under load.
    use super::*;
    use crate::reader::{ReadOutcome, Reader, Start};

    /// 40 prefix bytes in the header, 24 in one arena chunk.
    const LEN: usize = 64;

    fn body(seq: u64) -> Vec<u8> {
        (0..LEN)
            .map(|i| (seq as u8).wrapping_mul(17) ^ i as u8)
            .collect()
    }

    fn write(ring: &Ring, seq: u64, pos: u64) {
        ring.write(seq, pos, LEN, &[&body(seq)], false);
    }

    /// A multi-producer ring of 8 header slots and 2 arena chunks: only the
    /// two newest arena messages are retained.
    fn ring() -> Arc<Ring> {
        let geometry = Geometry {
            header_slots: 8,
            arena_slots: 2,
        };
        Ring::multi_producer_with_geometry(geometry, LEN, 1)
            .unwrap()
            .1
    }

    fn lag(ring: &Arc<Ring>, at: u64) -> (u64, u64) {
        let mut reader = Reader::new(ring.clone(), Start::At(at));
        match reader.try_read(&mut Vec::new()) {
            ReadOutcome::Lagged(l) => (l.missed, l.resume_seq),
            other => panic!("a reader at {at} should be lapped, got {other:?}"),
        }
    }

    /// Seq 1 takes its arena position after seqs 2 and 3 took theirs (its
    /// producer stalled between the two claims). Then seqs 2 and 3 are gone
    /// while seq 1 is intact, and a reader lapped at seq 2 must not tell the
    /// floor that everything below 4 is gone: a reader lapped at seq 0 would
    /// then skip seq 1, which it can still read.
    #[test]
    fn a_scan_from_the_cursor_leaves_the_floor_alone() {
        let ring = ring();
        let (s0, p0) = ring.claim(1);
        write(&ring, s0, p0);
        let s1 = ring.head.0.fetch_add(1, Ordering::Relaxed);
        let (s2, p2) = ring.claim(1);
        write(&ring, s2, p2);
        let (s3, p3) = ring.claim(1);
        write(&ring, s3, p3);
        let p1 = ring.arena_head.0.fetch_add(1, Ordering::Relaxed);
        write(&ring, s1, p1);
        let (s4, p4) = ring.claim(1);
        write(&ring, s4, p4);
        assert_eq!((s1, p1, s2, p2, s3, p3), (1, 3, 2, 1, 3, 2));

        assert_eq!(lag(&ring, 2), (2, 4), "seqs 2 and 3 are gone");
        assert_eq!(ring.gone_below.0.load(Ordering::Relaxed), 0);
        let mut reader = Reader::new(ring.clone(), Start::At(0));
        let mut buf = Vec::new();
        assert_eq!(
            reader.try_read(&mut buf),
            ReadOutcome::Lagged(crate::reader::Lagged {
                missed: 1,
                resume_seq: 1
            }),
            "only seq 0 is gone below seq 2"
        );
        assert_eq!(reader.try_read(&mut buf), ReadOutcome::Message { seq: 1 });
        assert_eq!(buf, body(1));
    }

    /// A scan that begins at the floor (here `head - H`) raises it to where
    /// it stopped, and the next lapped reader and `oldest_retained` start
    /// there.
    #[test]
    fn a_scan_from_the_floor_raises_it_for_the_next_reader() {
        let ring = ring();
        for _ in 0..13 {
            let (seq, pos) = ring.claim(1);
            write(&ring, seq, pos);
        }
        // head 13, H 8: everything below 5 is doomed by the header ring,
        // and only the last two messages (11, 12) still hold their chunks.
        assert_eq!(ring.gone_below.0.load(Ordering::Relaxed), 0);
        assert_eq!(lag(&ring, 1), (10, 11));
        assert_eq!(ring.gone_below.0.load(Ordering::Relaxed), 11);
        assert_eq!(lag(&ring, 3), (8, 11));
        assert_eq!(ring.oldest_retained(), 11);
    }
}
