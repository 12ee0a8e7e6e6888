//! loom models of the real ring code under the C11 memory model.
//!
//! Run with `ring-core/loom-check` (which sets the preemption bound and also
//! runs the mutant), or by hand:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p lapwing-ring --release --test loom
//! ```
//!
//! The rings are tiny (2 headers, 0 or 2 arena chunks) so that a handful of
//! messages already laps them, and payloads are derived from a tag so that
//! any mixed or stale read fails an assertion.
#![cfg(loom)]

use lapwing_ring::{Geometry, ReadOutcome, Reader, Ring, Start};
use loom::thread;

/// A payload of `len` bytes whose every word names `tag`.
fn payload(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(31) as u8) ^ (i as u8).wrapping_mul(7) ^ 0x5a)
        .collect()
}

/// Reads at most `attempts` times, checking every outcome. Returns
/// (delivered (seq, payload), total missed).
fn read_some(reader: &mut Reader, attempts: usize) -> (Vec<(u64, Vec<u8>)>, u64) {
    let start = reader.next_seq();
    let mut delivered = Vec::new();
    let mut missed = 0;
    let mut buf = Vec::new();
    for _ in 0..attempts {
        match reader.try_read(&mut buf) {
            ReadOutcome::Message { seq } => {
                if let Some((last, _)) = delivered.last() {
                    assert!(seq > *last, "seqs must strictly increase");
                }
                delivered.push((seq, buf.clone()));
            }
            ReadOutcome::Lagged(l) => {
                assert!(l.missed >= 1);
                missed += l.missed;
            }
            ReadOutcome::Empty => {}
        }
        assert_eq!(
            delivered.len() as u64 + missed,
            reader.next_seq() - start,
            "accounting"
        );
    }
    (delivered, missed)
}

/// One producer publishes three 16-byte messages into a 2-slot header ring
/// (so seq 2 overwrites seq 0) while a reader reads. Every delivered payload
/// must be exactly seq's; a lap must be reported with the exact gap.
fn sp_reader_lapped() {
    loom::model(|| {
        let geometry = Geometry {
            header_slots: 2,
            arena_slots: 0,
        };
        let (mut publisher, ring) = Ring::single_producer_with_geometry(geometry, 48, 1).unwrap();
        let mut reader = Reader::new(ring.clone(), Start::Oldest);
        let writer = thread::spawn(move || {
            for seq in 0..3 {
                assert_eq!(publisher.publish(&payload(seq, 16)).unwrap(), seq);
            }
        });
        let (delivered, _) = read_some(&mut reader, 3);
        writer.join().unwrap();
        for (seq, p) in &delivered {
            assert_eq!(p, &payload(*seq, 16), "torn or stale payload at {seq}");
        }
        // After the writer is done the reader can always finish exactly.
        let (rest, _) = read_some(&mut reader, 3);
        for (seq, p) in &rest {
            assert_eq!(p, &payload(*seq, 16));
        }
        assert_eq!(reader.next_seq(), 3);
    });
}

#[cfg(not(feature = "mutant-no-acquire-fence"))]
#[test]
fn single_producer_reader_lapped() {
    sp_reader_lapped();
}

/// Two producers each publish two messages into a 2-slot header ring: seqs
/// 2 and 3 reuse the slots of 0 and 1, possibly while those are still being
/// written by the other thread. The CAS guard must make the later writer wait;
/// a reader runs concurrently.
#[cfg(not(feature = "mutant-no-acquire-fence"))]
#[test]
fn two_producers_across_a_lap() {
    loom::model(|| {
        let geometry = Geometry {
            header_slots: 2,
            arena_slots: 0,
        };
        let (publisher, ring) = Ring::multi_producer_with_geometry(geometry, 48, 1).unwrap();
        let mut reader = Reader::new(ring.clone(), Start::Oldest);
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let publisher = publisher.clone();
                thread::spawn(move || {
                    (0..2u64)
                        .map(|i| {
                            let tag = 10 * w + i;
                            (publisher.publish(&payload(tag, 16)).unwrap(), tag)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let (delivered, _) = read_some(&mut reader, 2);
        let mut tag_of = [u64::MAX; 4];
        for w in writers {
            for (seq, tag) in w.join().unwrap() {
                assert_eq!(tag_of[seq as usize], u64::MAX, "seq claimed twice");
                tag_of[seq as usize] = tag;
            }
        }
        for (seq, p) in &delivered {
            assert_eq!(p, &payload(tag_of[*seq as usize], 16), "payload at {seq}");
        }
        // The ring now holds exactly seqs 2 and 3, each intact.
        let mut late = Reader::new(ring.clone(), Start::Oldest);
        let (held, missed) = read_some(&mut late, 3);
        assert_eq!(missed, 0);
        assert_eq!(held.len(), 2);
        for (seq, p) in &held {
            assert_eq!(p, &payload(tag_of[*seq as usize], 16));
        }
    });
}

/// A single producer writes two 64-byte messages (two arena chunks each) into
/// a 2-chunk arena, so the second overwrites the first's chunks, while a
/// reader copies. A reader must never see a half-written message: it gets the
/// full payload or a lag report.
#[cfg(not(feature = "mutant-no-acquire-fence"))]
#[test]
fn arena_message_read_while_written() {
    loom::model(|| {
        let geometry = Geometry {
            header_slots: 2,
            arena_slots: 2,
        };
        let (mut publisher, ring) = Ring::single_producer_with_geometry(geometry, 112, 1).unwrap();
        let mut reader = Reader::new(ring.clone(), Start::Oldest);
        let writer = thread::spawn(move || {
            for seq in 0..2 {
                publisher.publish(&payload(seq, 64)).unwrap();
            }
        });
        let (delivered, _) = read_some(&mut reader, 2);
        writer.join().unwrap();
        for (seq, p) in &delivered {
            assert_eq!(p, &payload(*seq, 64), "half-written arena message {seq}");
        }
        let (rest, _) = read_some(&mut reader, 2);
        for (seq, p) in &rest {
            assert_eq!(p, &payload(*seq, 64));
        }
        assert_eq!(reader.next_seq(), 2);
    });
}

/// Negative control: with the reader's acquire fence compiled out, loom must
/// find an execution where a stale stamp re-check accepts a payload that is
/// being overwritten. `loom-check` fails if this test does *not* panic.
#[cfg(feature = "mutant-no-acquire-fence")]
#[test]
#[should_panic(expected = "torn or stale payload")]
fn mutant_without_acquire_fence_is_caught() {
    sp_reader_lapped();
}
