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
//!
//! Each `mutant-*` feature compiles one deliberate bug into the ring; with it
//! on, the real models are compiled out and the matching negative control
//! below must panic (`loom-check` runs one build per mutant).
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
        let before = reader.next_seq();
        match reader.try_read(&mut buf) {
            ReadOutcome::Message { seq } => {
                if let Some((last, _)) = delivered.last() {
                    assert!(seq > *last, "seqs must strictly increase");
                }
                delivered.push((seq, buf.clone()));
            }
            ReadOutcome::Lagged(l) => {
                assert!(
                    l.resume_seq > before && l.missed == l.resume_seq - before,
                    "lag must move the cursor forward by exactly missed"
                );
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
#[allow(dead_code)] // unused in some mutant builds
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

#[cfg(not(any(
    feature = "mutant-no-acquire-fence",
    feature = "mutant-lag-to-head",
    feature = "mutant-relaxed-claim-cas"
)))]
#[test]
fn single_producer_reader_lapped() {
    sp_reader_lapped();
}

/// Two producers each publish two messages into a 2-slot header ring: seqs
/// 2 and 3 reuse the slots of 0 and 1, possibly while those are still being
/// written by the other thread. The CAS guard must make the later writer wait;
/// a reader runs concurrently.
#[cfg(not(any(
    feature = "mutant-no-acquire-fence",
    feature = "mutant-lag-to-head",
    feature = "mutant-relaxed-claim-cas"
)))]
#[test]
fn two_producers_across_a_lap() {
    mp_across_a_lap();
}

#[allow(dead_code)] // unused in the mutant builds
fn mp_across_a_lap() {
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
            assert_eq!(
                p,
                &payload(tag_of[*seq as usize], 16),
                "torn payload after the writers finished, at {seq}"
            );
        }
    });
}

/// A single producer writes two 100-byte messages (a 40-byte prefix in the
/// header, two arena chunks each) into a 2-chunk arena, so the second
/// overwrites the first's chunks, while a reader copies. A reader must never see a half-written message: it gets the
/// full payload or a lag report.
#[cfg(not(any(
    feature = "mutant-no-acquire-fence",
    feature = "mutant-lag-to-head",
    feature = "mutant-relaxed-claim-cas"
)))]
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
                publisher.publish(&payload(seq, 100)).unwrap();
            }
        });
        let (delivered, _) = read_some(&mut reader, 2);
        writer.join().unwrap();
        for (seq, p) in &delivered {
            assert_eq!(p, &payload(*seq, 100), "half-written arena message {seq}");
        }
        let (rest, _) = read_some(&mut reader, 2);
        for (seq, p) in &rest {
            assert_eq!(p, &payload(*seq, 100));
        }
        assert_eq!(reader.next_seq(), 2);
    });
}

/// The server's path: two `MpPublisher`s publish with `publish_parts` (an
/// 8-byte timestamp part plus a body, as the server does) into 2 header slots
/// and a 2-chunk arena; one message is inline, three take an arena chunk
/// each, so the header ring laps twice and the arena once, with both rings
/// claimed by both producers in either order. A reader reads concurrently and
/// may be lapped; afterwards a late reader must find the retained messages
/// intact and an early one must finish with exact accounting.
#[allow(dead_code)] // unused in some mutant builds
fn mp_mixed_lapped() {
    // inline: 8 + 8 bytes; arena: 8 + 56 = 64 bytes, a 40-byte prefix in
    // the header and the other 24 bytes in one 56-byte chunk
    const INLINE_BODY: usize = 8;
    const ARENA_BODY: usize = 56;
    loom::model(|| {
        let geometry = Geometry {
            header_slots: 2,
            arena_slots: 2,
        };
        let (publisher, ring) = Ring::multi_producer_with_geometry(geometry, 64, 1).unwrap();
        let mut reader = Reader::new(ring.clone(), Start::Oldest);
        let plan: [&[(u64, usize)]; 2] = [
            &[(0, INLINE_BODY), (1, ARENA_BODY)],
            &[(10, ARENA_BODY), (11, ARENA_BODY)],
        ];
        let writers: Vec<_> = plan
            .into_iter()
            .map(|msgs| {
                let publisher = publisher.clone();
                thread::spawn(move || {
                    msgs.iter()
                        .map(|&(tag, len)| {
                            let body = payload(tag, len);
                            let ts = tag.to_le_bytes();
                            let seq = publisher.publish_parts(&[&ts, &body]).unwrap();
                            (seq, tag, len)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let (delivered, missed) = read_some(&mut reader, 2);
        if missed > 0 {
            LAPPED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut want: [Option<Vec<u8>>; 4] = [None, None, None, None];
        for w in writers {
            for (seq, tag, len) in w.join().unwrap() {
                let slot = &mut want[seq as usize];
                assert!(slot.is_none(), "seq claimed twice");
                let mut m = tag.to_le_bytes().to_vec();
                m.extend_from_slice(&payload(tag, len));
                *slot = Some(m);
            }
        }
        let want = want.map(|m| m.expect("every seq claimed"));
        for (seq, p) in &delivered {
            assert_eq!(p, &want[*seq as usize], "torn or stale payload at {seq}");
        }
        // The early reader finishes exactly once the writers are done.
        let (rest, _) = read_some(&mut reader, 3);
        for (seq, p) in &rest {
            assert_eq!(p, &want[*seq as usize], "torn or stale payload at {seq}");
        }
        assert_eq!(reader.next_seq(), 4);
        // What the ring still holds (at most seqs 2 and 3) is intact.
        let mut late = Reader::new(ring.clone(), Start::Oldest);
        let (held, _) = read_some(&mut late, 3);
        for (seq, p) in &held {
            assert_eq!(
                p, &want[*seq as usize],
                "torn payload after the writers finished, at {seq}"
            );
        }
        assert_eq!(late.next_seq(), 4);
    });
    assert!(
        LAPPED.load(std::sync::atomic::Ordering::Relaxed),
        "no explored execution lapped the concurrent reader"
    );
}

/// Set (outside loom's bookkeeping) when an execution of `mp_mixed_lapped`
/// lapped its concurrent reader, so the model can show it covers that case.
static LAPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(not(any(
    feature = "mutant-no-acquire-fence",
    feature = "mutant-lag-to-head",
    feature = "mutant-relaxed-claim-cas"
)))]
#[test]
fn mp_mixed_inline_and_arena_reader_lapped() {
    mp_mixed_lapped();
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

/// Negative control: without `head.max(from)` in the lag scan, a reader that
/// sees a later lap's odd stamp but loads an older `head` resumes at or
/// behind its own cursor. Only the single producer can show it: its odd
/// stamp is a plain Relaxed store, so nothing orders the reader's `head`
/// load after it. With `MpPublisher` the odd stamp is written by the claim
/// CAS, which continues the release sequence of the previous occupant's done
/// stamp; the reader's Acquire load then synchronises with the writer of its
/// own `next`, which had claimed `next`, so it loads `head >= next + 1` and
/// the guard never fires (`mp_mixed_lapped` passes with this mutant).
#[cfg(feature = "mutant-lag-to-head")]
#[test]
#[should_panic(expected = "lag must move the cursor forward")]
fn mutant_lag_to_head_is_caught() {
    sp_reader_lapped();
}

/// Negative control: with a `Relaxed` claim CAS a later writer's payload
/// stores are not ordered after the older writer's in each word's
/// modification order, so a slot can hold the older message's words under
/// the newer one's done stamp. Caught on the server's path.
#[cfg(feature = "mutant-relaxed-claim-cas")]
#[test]
#[should_panic(expected = "torn")]
fn mutant_relaxed_claim_cas_is_caught() {
    mp_mixed_lapped();
}
