//! One 64-byte slot and the two halves of the seqlock recipe that guard it.
//!
//! Everything in a slot is an atomic, so a reader racing a writer is not a
//! data race, only a stale or mixed read that the stamp re-check throws away.

use crate::sync::{fence, AtomicU64, Ordering};

pub(crate) const SLOT_BYTES: usize = 64;
/// Payload words per slot (the eighth word is the stamp).
pub(crate) const WORDS: usize = 7;
/// Bytes of payload in one arena chunk.
pub(crate) const CHUNK_BYTES: usize = WORDS * 8;
/// Payloads up to this size live in the header itself (`w1..w6`).
pub(crate) const INLINE_MAX: usize = (WORDS - 1) * 8;

/// A cache-line slot. Aligned so that two writers of neighbouring slots never
/// share a line, and a reader's stamp load brings the payload along with it.
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub(crate) stamp: AtomicU64,
    pub(crate) words: [AtomicU64; WORDS],
}

impl Slot {
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
    2 * n + 1
}

/// Stamp of a slot once message (or chunk) `n` is complete.
#[inline]
pub(crate) fn done(n: u64) -> u64 {
    2 * n + 2
}

/// The stamp a slot must carry before `n` may be written into it: the done
/// stamp of the previous lap's occupant, or 0 on the first lap.
#[inline]
pub(crate) fn prev_done(n: u64, slots: u64) -> u64 {
    if n >= slots {
        done(n - slots)
    } else {
        0
    }
}

/// Number of arena chunks a payload of `len` bytes occupies (0 if inline).
#[inline]
pub(crate) fn chunks_for(len: usize) -> usize {
    if len <= INLINE_MAX {
        0
    } else {
        len.div_ceil(CHUNK_BYTES)
    }
}

/// Claims a slot for writing. `owned` is the single-producer case, where the
/// caller wrote the previous lap itself and so knows the slot is free; the
/// multi-producer case must win a CAS from the previous lap's done stamp,
/// waiting while an older writer of this slot has not finished. The Acquire on
/// that CAS orders our payload stores after the older writer's in every
/// word's modification order, so a reader can never see theirs "after" ours.
#[inline]
pub(crate) fn begin_write(slot: &Slot, n: u64, slots: u64, owned: bool) {
    let odd = writing(n);
    if owned {
        slot.stamp.store(odd, Ordering::Relaxed);
    } else {
        let prev = prev_done(n, slots);
        let mut spins = 0;
        while slot
            .stamp
            .compare_exchange(prev, odd, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            crate::sync::backoff(&mut spins);
        }
    }
    // Pairs with the reader's fence(Acquire): a reader that sees any payload
    // word stored below also sees the odd stamp on its re-check.
    fence(Ordering::Release);
}

/// Publishes a slot: every payload store above happens-before any reader's
/// Acquire load that sees this stamp.
#[inline]
pub(crate) fn end_write(slot: &Slot, n: u64) {
    slot.stamp.store(done(n), Ordering::Release);
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

/// Streams the concatenation of several byte slices as little-endian words,
/// so `publish_parts` never copies the parts into a temporary buffer.
pub(crate) struct WordSource<'a> {
    cur: &'a [u8],
    rest: &'a [&'a [u8]],
}

impl<'a> WordSource<'a> {
    pub(crate) fn new(parts: &'a [&'a [u8]]) -> Self {
        Self {
            cur: &[],
            rest: parts,
        }
    }

    /// The next 8 bytes (zero-padded past the end).
    #[inline]
    pub(crate) fn next_word(&mut self) -> u64 {
        if let Some((w, tail)) = self.cur.split_first_chunk::<8>() {
            self.cur = tail;
            return u64::from_le_bytes(*w);
        }
        let mut bytes = [0u8; 8];
        let mut filled = 0;
        while filled < 8 {
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
            let take = (8 - filled).min(self.cur.len());
            bytes[filled..filled + take].copy_from_slice(&self.cur[..take]);
            self.cur = &self.cur[take..];
            filled += take;
        }
        u64::from_le_bytes(bytes)
    }
}

/// Appends the first `len` bytes of `words` (little-endian) to `out`.
#[inline]
pub(crate) fn append_words(out: &mut Vec<u8>, words: &[u64], len: usize) {
    let mut bytes = [0u8; CHUNK_BYTES];
    for (dst, w) in bytes.chunks_exact_mut(8).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&bytes[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_source_concatenates_parts_across_word_boundaries() {
        let parts: [&[u8]; 4] = [b"abc", b"", b"defghijklm", b"n"];
        let mut src = WordSource::new(&parts);
        let mut out = Vec::new();
        for _ in 0..3 {
            out.extend_from_slice(&src.next_word().to_le_bytes());
        }
        assert_eq!(&out[..14], b"abcdefghijklmn");
        assert!(out[14..].iter().all(|&b| b == 0));
    }

    #[test]
    fn stamps_of_consecutive_laps_are_ordered() {
        assert_eq!(prev_done(5, 4), done(1));
        assert_eq!(prev_done(3, 4), 0);
        assert!(done(1) < writing(5) && writing(5) < done(5));
    }
}
