//! One 64-byte slot and the two halves of the seqlock recipe that guard it.
//!
//! Everything in a slot is an atomic, so a reader racing a writer is not a
//! data race, only a stale or mixed read that the stamp re-check throws away.

use crate::sink::Sink;
use crate::sync::{fence, AtomicU64, Ordering};

pub(crate) const SLOT_BYTES: usize = 64;
/// Payload words per slot (the eighth word is the stamp).
pub(crate) const WORDS: usize = 7;
/// Bytes of payload in one arena chunk.
pub(crate) const CHUNK_BYTES: usize = WORDS * 8;
/// Payloads up to this size live in the header itself (`w0..w6`): the
/// length travels in the stamp's low bits, so all seven words are payload.
pub(crate) const INLINE_MAX: usize = WORDS * 8;
/// An arena message's header holds its length (`w0`), the arena position of
/// its first chunk (`w1`) and the first `PREFIX_BYTES` of the payload
/// (`w2..w6`), so a 64-byte message spans two cache lines, not three.
pub(crate) const PREFIX_BYTES: usize = (WORDS - 2) * 8;

/// Low bits of a stamp that carry a tag instead of the write phase: an
/// inline header's length (0..=56), `ARENA_TAG` for an arena message's
/// header, 0 for arena chunks. The phase (`2n+1` writing, `2n+2` done, 0
/// never written) is `stamp >> TAG_BITS`, so stamps still order like phases.
pub(crate) const TAG_BITS: u32 = 6;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// Tag of a header whose payload continues in the arena.
pub(crate) const ARENA_TAG: u64 = TAG_MASK;
const _: () = assert!(INLINE_MAX as u64 <= TAG_MASK && INLINE_MAX as u64 != ARENA_TAG);

/// A cache-line slot. Aligned so that two writers of neighbouring slots never
/// share a line, and a reader's stamp load brings the payload along with it.
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub(crate) stamp: AtomicU64,
    pub(crate) words: [AtomicU64; WORDS],
}

impl Slot {
    #[cfg(any(loom, test))]
    pub(crate) fn new() -> Self {
        Self {
            stamp: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Stamp of a slot while the message (or chunk) `n` is being written.
#[inline]
pub(crate) fn writing(n: u64) -> u64 {
    (2 * n + 1) << TAG_BITS
}

/// Stamp of a slot once message (or chunk) `n` is complete, with tag 0 (an
/// arena chunk). A header's done stamp adds its tag: `done(n) | tag`.
#[inline]
pub(crate) fn done(n: u64) -> u64 {
    (2 * n + 2) << TAG_BITS
}

/// The write phase of a stamp, without its tag: compare this, not the raw
/// stamp, against `done(n)` when the tag is not known.
#[inline]
pub(crate) fn phase(stamp: u64) -> u64 {
    stamp & !TAG_MASK
}

/// The tag of a stamp (see `TAG_BITS`).
#[inline]
pub(crate) fn tag(stamp: u64) -> u64 {
    stamp & TAG_MASK
}

/// The phase a slot must be in before `n` may be written into it: the done
/// phase of the previous lap's occupant, or 0 on the first lap.
#[inline]
pub(crate) fn prev_done(n: u64, slots: u64) -> u64 {
    if n >= slots {
        done(n - slots)
    } else {
        0
    }
}

/// Number of arena chunks a payload of `len` bytes occupies (0 if inline;
/// an arena message keeps its first `PREFIX_BYTES` in the header).
#[inline]
pub(crate) fn chunks_for(len: usize) -> usize {
    if len <= INLINE_MAX {
        0
    } else {
        (len - PREFIX_BYTES).div_ceil(CHUNK_BYTES)
    }
}

/// Claims a slot for writing. `owned` is the single-producer case, where the
/// caller wrote the previous lap itself and so knows the slot is free; the
/// multi-producer case must win a CAS from the previous lap's done stamp,
/// waiting while an older writer of this slot has not finished. The Acquire on
/// that CAS orders our payload stores after the older writer's in every
/// word's modification order, so a reader can never see theirs "after" ours.
/// The previous done stamp's tag is not known in advance (it is the previous
/// occupant's length): the CAS first expects tag 0, and a failure that shows
/// the right phase with another tag retries at once with that exact value.
#[inline]
pub(crate) fn begin_write(slot: &Slot, n: u64, slots: u64, owned: bool) {
    let odd = writing(n);
    if owned {
        slot.stamp.store(odd, Ordering::Relaxed);
    } else {
        let mut prev = prev_done(n, slots);
        // The `mutant-relaxed-claim-cas` feature (tests only) weakens the
        // success ordering so that the loom models can prove they notice.
        #[cfg(not(feature = "mutant-relaxed-claim-cas"))]
        let success = Ordering::Acquire;
        #[cfg(feature = "mutant-relaxed-claim-cas")]
        let success = Ordering::Relaxed;
        let want = prev;
        let mut spins = 0;
        while let Err(actual) = slot
            .stamp
            .compare_exchange(prev, odd, success, Ordering::Relaxed)
        {
            if phase(actual) == want {
                prev = actual;
            } else {
                crate::sync::backoff(&mut spins);
            }
        }
    }
    // Pairs with the reader's fence(Acquire): a reader that sees any payload
    // word stored below also sees the odd stamp on its re-check.
    fence(Ordering::Release);
}

/// Publishes a slot with its tag: every payload store above happens-before
/// any reader's Acquire load that sees this stamp.
#[inline]
pub(crate) fn end_write(slot: &Slot, n: u64, tag: u64) {
    slot.stamp.store(done(n) | tag, Ordering::Release);
}

/// The reader's half (Boehm): after Relaxed payload loads, an Acquire fence
/// and a re-load of the stamp. True if the stamp is still `expected`, i.e. the
/// loads saw no store of a later writer. The `mutant-no-acquire-fence` feature
/// removes the fence so the loom models can prove they notice.
#[inline]
pub(crate) fn still_stamped(slot: &Slot, expected: u64) -> bool {
    #[cfg(not(feature = "mutant-no-acquire-fence"))]
    fence(Ordering::Acquire);
    slot.stamp.load(Ordering::Relaxed) == expected
}

/// Streams the concatenation of several byte slices a slot's worth at a
/// time, so `publish_parts` never copies the parts into a temporary buffer
/// and the common single-slice case is one fixed-size copy per slot.
pub(crate) struct WordSource<'a> {
    cur: &'a [u8],
    rest: &'a [&'a [u8]],
}

impl<'a> WordSource<'a> {
    pub(crate) fn new(parts: &'a [&'a [u8]]) -> Self {
        match parts.split_first() {
            Some((first, rest)) => Self { cur: first, rest },
            None => Self {
                cur: &[],
                rest: &[],
            },
        }
    }

    /// The next `n <= 56` bytes: borrowed straight from the caller's slice
    /// when they are contiguous (the common case), else gathered into
    /// `scratch`.
    #[inline]
    pub(crate) fn take<'b>(&'b mut self, n: usize, scratch: &'b mut [u8; CHUNK_BYTES]) -> &'b [u8] {
        if self.cur.len() >= n {
            let (head, tail) = self.cur.split_at(n);
            self.cur = tail;
            head
        } else {
            self.take_slow(&mut scratch[..n]);
            &scratch[..n]
        }
    }

    /// `take` across part boundaries.
    #[cold]
    fn take_slow(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            if self.cur.is_empty() {
                match self.rest.split_first() {
                    Some((first, rest)) => {
                        self.cur = first;
                        self.rest = rest;
                        continue;
                    }
                    None => break,
                }
            }
            let take = (out.len() - filled).min(self.cur.len());
            out[filled..filled + take].copy_from_slice(&self.cur[..take]);
            self.cur = &self.cur[take..];
            filled += take;
        }
    }
}

/// Stores `bytes` (at most 56) into consecutive payload words, little-endian,
/// the last word zero-padded. Word-by-word atomic stores straight from the
/// source: no staging buffer, and nothing the compiler can turn into a
/// `memcpy` call.
#[inline(always)]
pub(crate) fn store_bytes(dst: &[AtomicU64], bytes: &[u8]) {
    // A whole slot's worth (a 56-byte inline payload, every full arena
    // chunk): a fixed count of loads and stores the compiler unrolls.
    if let (Ok(full), Some(words)) = (
        <&[u8; CHUNK_BYTES]>::try_from(bytes),
        dst.first_chunk::<WORDS>(),
    ) {
        for (i, w) in words.iter().enumerate() {
            let word: [u8; 8] = std::array::from_fn(|b| full[8 * i + b]);
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        return;
    }
    let mut chunks = bytes.chunks_exact(8);
    for (w, c) in dst.iter().zip(&mut chunks) {
        w.store(
            u64::from_le_bytes(c.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let last = rem
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &b)| acc | (b as u64) << (8 * i));
        if let Some(w) = dst.get(bytes.len() / 8) {
            w.store(last, Ordering::Relaxed);
        }
    }
}

/// Appends bytes `from..to` of the little-endian byte string `words` holds
/// to `out`. Whole words are stored and the tail trimmed, so every copy
/// has a fixed size (a variable-length one would be a `memcpy` call per
/// message); a `from` inside a word costs a move of the rest.
#[inline]
pub(crate) fn append_words<S: Sink + ?Sized>(out: &mut S, words: &[u64], from: usize, to: usize) {
    if from >= to {
        return;
    }
    let start = out.len();
    let src = &words[from / 8..to.div_ceil(8)];
    let dst = out.grow(src.len() * 8);
    for (d, w) in dst.chunks_exact_mut(8).zip(src) {
        d.copy_from_slice(&w.to_le_bytes());
    }
    if from % 8 != 0 {
        dst.copy_within(from % 8.., 0);
    }
    out.truncate(start + (to - from));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_source_concatenates_parts_across_word_boundaries() {
        let parts: [&[u8]; 4] = [b"abc", b"", b"defghijklm", b"n"];
        let mut src = WordSource::new(&parts);
        let mut scratch = [0u8; CHUNK_BYTES];
        let slot = Slot::new();
        store_bytes(&slot.words, src.take(11, &mut scratch));
        let words: Vec<u64> = slot
            .words
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        let mut out = Vec::new();
        append_words(&mut out, &words, 0, 11);
        assert_eq!(out, b"abcdefghijk");
        for from in 0..=11 {
            let mut out = b"xy".to_vec();
            append_words(&mut out, &words, from, 11);
            assert_eq!(&out[2..], &b"abcdefghijk"[from..], "from {from}");
        }
        assert_eq!(src.take(3, &mut scratch), b"lmn");
        assert_eq!(src.take(0, &mut scratch), b"");
    }

    #[test]
    fn stamps_of_consecutive_laps_are_ordered() {
        assert_eq!(prev_done(5, 4), done(1));
        assert_eq!(prev_done(3, 4), 0);
        assert!(done(1) < writing(5) && writing(5) < done(5));
        // A tag never lifts a stamp into the next phase.
        assert!(done(1) | ARENA_TAG < writing(5));
        assert_eq!(phase(done(7) | 56), done(7));
        assert_eq!(tag(done(7) | 56), 56);
    }

    #[test]
    fn claim_cas_takes_a_tagged_previous_stamp() {
        let slot = Slot::new();
        slot.stamp.store(done(1) | 40, Ordering::Relaxed);
        begin_write(&slot, 3, 2, false);
        assert_eq!(slot.stamp.load(Ordering::Relaxed), writing(3));
    }

    #[test]
    fn sixty_four_bytes_take_one_chunk() {
        assert_eq!(chunks_for(56), 0);
        assert_eq!(chunks_for(57), 1);
        assert_eq!(chunks_for(64), 1);
        assert_eq!(chunks_for(PREFIX_BYTES + CHUNK_BYTES), 1);
        assert_eq!(chunks_for(PREFIX_BYTES + CHUNK_BYTES + 1), 2);
    }
}
