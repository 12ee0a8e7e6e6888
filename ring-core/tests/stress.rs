//! Several real threads hammering one ring: writers never wait, readers of
//! different speeds check every byte they get and the exact accounting.
//!
//! Each test runs for `LAPWING_STRESS_SECS` seconds (default 1.5) so the
//! default `cargo test` stays short; set it higher for a soak.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapwing_ring::{Batch, BatchEvent, ReadOutcome, Reader, Resume, Ring, RingConfig, Start};

const MAX: usize = 2000;

fn duration() -> Duration {
    let secs = std::env::var("LAPWING_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.5);
    Duration::from_secs_f64(secs)
}

/// Message length for a tag: mostly small, some inline edge cases, some
/// arena messages up to the maximum.
fn len_for(tag: u64) -> usize {
    let r = common::mix(tag ^ 0x5eed);
    match r % 16 {
        0 => 0,
        1 => 56,
        2 => 57,
        3 => MAX,
        4..=9 => (r >> 8) as usize % 57,
        _ => (r >> 8) as usize % (MAX + 1),
    }
}

/// How a reader behaves, so lapping happens at different rates.
#[derive(Clone, Copy, Debug)]
enum Pace {
    Fast,
    Batches,
    Slow,
}

/// What a reader saw, for the checks after the run.
#[derive(Default)]
struct Seen {
    start: u64,
    delivered: u64,
    missed: u64,
    /// (seq, FNV of payload) for the multi-producer check; empty otherwise.
    log: Vec<(u64, u64)>,
}

/// Reads until the writers are done and the cursor reached the final head.
/// `check(seq, payload)` validates each payload as it arrives.
fn read_all(
    mut reader: Reader,
    pace: Pace,
    done: &AtomicBool,
    mut check: impl FnMut(u64, &[u8]),
) -> Seen {
    let mut seen = Seen {
        start: reader.next_seq(),
        ..Seen::default()
    };
    let mut last: Option<u64> = None;
    let mut buf = Vec::new();
    let mut batch = Batch::with_capacity(64, 64 * 1024);
    let mut on_message = |seq: u64, payload: &[u8], seen: &mut Seen| {
        assert!(last.is_none_or(|l| seq > l), "seq {seq} after {last:?}");
        last = Some(seq);
        seen.delivered += 1;
        check(seq, payload);
        seen.log.push((seq, common::fnv(payload)));
    };
    let mut i = 0u64;
    loop {
        i += 1;
        let finished = done.load(Ordering::Acquire);
        let progressed = match pace {
            Pace::Batches => {
                batch.clear();
                let n = reader.read_batch(&mut batch, 32, 16 * 1024);
                for ev in batch.iter() {
                    match ev {
                        BatchEvent::Message { seq, payload } => on_message(seq, payload, &mut seen),
                        BatchEvent::Lagged(l) => seen.missed += l.missed,
                    }
                }
                n > 0
            }
            Pace::Fast | Pace::Slow => match reader.try_read(&mut buf) {
                ReadOutcome::Message { seq } => {
                    on_message(seq, &buf, &mut seen);
                    true
                }
                ReadOutcome::Lagged(l) => {
                    seen.missed += l.missed;
                    true
                }
                ReadOutcome::Empty => false,
            },
        };
        assert_eq!(seen.delivered + seen.missed, reader.next_seq() - seen.start);
        if !progressed {
            if finished && reader.next_seq() >= reader.ring().head() {
                break;
            }
            std::thread::yield_now();
        }
        if matches!(pace, Pace::Slow) && i % 64 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let s = reader.stats();
    assert_eq!((s.received, s.missed), (seen.delivered, seen.missed));
    assert_eq!(reader.next_seq(), reader.ring().head());
    if !matches!(pace, Pace::Slow) {
        // The logs are only needed by the multi-producer check.
    }
    seen
}

#[test]
fn single_producer_with_readers_of_every_speed() {
    let (mut publisher, ring) = Ring::single_producer(RingConfig::new(64 * 1024, MAX)).unwrap();
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + duration();
    let readers: Vec<(Reader, Pace)> = vec![
        (ring.reader(Start::Oldest), Pace::Fast),
        (ring.reader(Start::Latest), Pace::Batches),
        (ring.reader(Start::Oldest), Pace::Slow),
        (
            {
                let mut r = ring.reader(Start::Oldest);
                r.set_resume(Resume::Newest);
                r
            },
            Pace::Slow,
        ),
    ];
    let (published, seens) = std::thread::scope(|s| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|(reader, pace)| {
                let done = &done;
                s.spawn(move || {
                    read_all(reader, pace, done, |seq, p| {
                        assert_eq!(p.len(), len_for(seq), "length of {seq}");
                        assert!(common::matches(seq, p), "payload of {seq} is torn");
                    })
                })
            })
            .collect();
        let mut scratch = Vec::with_capacity(MAX);
        let mut seq = 0u64;
        while Instant::now() < deadline {
            for _ in 0..256 {
                scratch.clear();
                common::fill(seq, len_for(seq), &mut scratch);
                let (a, b) = scratch.split_at(scratch.len().min(8));
                assert_eq!(publisher.publish_parts(&[a, b]).unwrap(), seq);
                seq += 1;
            }
        }
        done.store(true, Ordering::Release);
        let seens: Vec<Seen> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (seq, seens)
    });
    assert_eq!(ring.head(), published);
    for (i, seen) in seens.iter().enumerate() {
        assert_eq!(
            seen.delivered + seen.missed,
            published - seen.start,
            "reader {i}"
        );
        eprintln!(
            "reader {i}: delivered {} missed {} of {}",
            seen.delivered,
            seen.missed,
            published - seen.start
        );
    }
    assert!(seens[0].delivered > 0);
}

#[test]
fn multi_producer_with_readers_of_every_speed() {
    const WRITERS: u64 = 3;
    // Rounds bound the writer and reader logs; each round is a fresh ring.
    const PER_ROUND: u64 = 20_000;
    let deadline = Instant::now() + duration();
    let mut rounds = 0;
    while rounds == 0 || Instant::now() < deadline {
        rounds += 1;
        let (publisher, ring) = Ring::multi_producer(RingConfig::new(64 * 1024, MAX)).unwrap();
        let ring: Arc<Ring> = ring;
        let done = AtomicBool::new(false);
        let paces = [Pace::Fast, Pace::Batches, Pace::Slow];
        let (writer_logs, seens) = std::thread::scope(|s| {
            let readers: Vec<_> = paces
                .iter()
                .map(|&pace| {
                    let reader = ring.reader(Start::Oldest);
                    let done = &done;
                    s.spawn(move || {
                        // Per writer, counters must increase along the stream.
                        let mut last_counter = vec![None::<u64>; WRITERS as usize];
                        read_all(reader, pace, done, move |_seq, p| {
                            if let Some(tag) = common::self_check(p) {
                                let (w, c) = ((tag >> 32) as usize, tag & 0xffff_ffff);
                                assert_eq!(p.len(), len_for(tag));
                                assert!(last_counter[w].is_none_or(|l| c > l));
                                last_counter[w] = Some(c);
                            } else {
                                assert!(p.len() < 16, "payload failed its checksum");
                            }
                        })
                    })
                })
                .collect();
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let publisher = publisher.clone();
                    s.spawn(move || {
                        let mut seqs = Vec::with_capacity(PER_ROUND as usize);
                        let mut scratch = Vec::with_capacity(MAX);
                        for c in 0..PER_ROUND {
                            let tag = (w << 32) | c;
                            scratch.clear();
                            common::fill(tag, len_for(tag), &mut scratch);
                            seqs.push(publisher.publish(&scratch).unwrap());
                        }
                        seqs
                    })
                })
                .collect();
            let logs: Vec<Vec<u64>> = writers.into_iter().map(|h| h.join().unwrap()).collect();
            done.store(true, Ordering::Release);
            let seens: Vec<Seen> = readers.into_iter().map(|h| h.join().unwrap()).collect();
            (logs, seens)
        });
        // Every seq was claimed exactly once, and per writer in order.
        let total = WRITERS * PER_ROUND;
        assert_eq!(ring.head(), total);
        let mut tag_of = vec![u64::MAX; total as usize];
        for (w, seqs) in writer_logs.iter().enumerate() {
            assert!(seqs.windows(2).all(|p| p[0] < p[1]));
            for (c, &seq) in seqs.iter().enumerate() {
                assert_eq!(tag_of[seq as usize], u64::MAX, "seq {seq} claimed twice");
                tag_of[seq as usize] = ((w as u64) << 32) | c as u64;
            }
        }
        // Every delivered payload is byte for byte what was published there.
        for (i, seen) in seens.iter().enumerate() {
            assert_eq!(
                seen.delivered + seen.missed,
                total - seen.start,
                "reader {i}"
            );
            for &(seq, hash) in &seen.log {
                let tag = tag_of[seq as usize];
                let expected = common::payload(tag, len_for(tag));
                assert_eq!(hash, common::fnv(&expected), "payload at seq {seq}");
            }
            if rounds == 1 {
                eprintln!(
                    "round 1 reader {i}: delivered {} missed {} of {total}",
                    seen.delivered, seen.missed
                );
            }
        }
    }
    eprintln!("{rounds} rounds");
}
