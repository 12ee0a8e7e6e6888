//! Property tests against an exact model. Single-threaded, so which messages
//! a ring still holds is fully determined: every read outcome, every lag gap
//! and every payload byte is compared with the model, not just sanity-checked.

mod common;

use lapwing_ring::{
    Batch, BatchEvent, Geometry, Lagged, MpPublisher, Publisher, ReadOutcome, Reader, Resume, Ring,
    Start,
};
use proptest::prelude::*;

enum Pub {
    Sp(Publisher),
    Mp(MpPublisher),
}

impl Pub {
    fn publish_parts(&mut self, parts: &[&[u8]]) -> u64 {
        match self {
            Pub::Sp(p) => p.publish_parts(parts).unwrap(),
            Pub::Mp(p) => p.publish_parts(parts).unwrap(),
        }
    }
}

/// What the ring must hold, computed from the published lengths alone.
struct Model {
    h: u64,
    c: u64,
    lens: Vec<usize>,
    /// First arena position of each message (None if inline).
    pos: Vec<Option<u64>>,
    arena_head: u64,
}

impl Model {
    fn head(&self) -> u64 {
        self.lens.len() as u64
    }

    fn publish(&mut self, len: usize) {
        self.lens.push(len);
        if len > 56 {
            self.pos.push(Some(self.arena_head));
            self.arena_head += (len - 40).div_ceil(56) as u64;
        } else {
            self.pos.push(None);
        }
    }

    fn retained(&self, s: u64) -> bool {
        s < self.head()
            && s + self.h >= self.head()
            && self.pos[s as usize].is_none_or(|q| q + self.c >= self.arena_head)
    }

    /// What reading at `next` must produce.
    fn expect(&self, next: u64, resume: Resume) -> ReadOutcome {
        if next >= self.head() {
            return ReadOutcome::Empty;
        }
        if self.retained(next) {
            return ReadOutcome::Message { seq: next };
        }
        let from = (next + 1).max(self.head().saturating_sub(self.h));
        let to = self.head().max(from);
        let resume_seq = match resume {
            Resume::Oldest => (from..to).find(|&s| self.retained(s)),
            Resume::Newest => (from..to).rev().find(|&s| self.retained(s)),
        }
        .unwrap_or(to);
        ReadOutcome::Lagged(Lagged {
            missed: resume_seq - next,
            resume_seq,
        })
    }

    fn oldest(&self) -> u64 {
        let from = self.head().saturating_sub(self.h);
        (from..self.head())
            .find(|&s| self.retained(s))
            .unwrap_or(self.head())
    }
}

struct Tracked {
    reader: Reader,
    resume: Resume,
    start: u64,
    delivered: u64,
    missed: u64,
    last: Option<u64>,
}

impl Tracked {
    fn new(ring: &std::sync::Arc<Ring>, start: Start, resume: Resume) -> Self {
        let mut reader = ring.reader(start);
        reader.set_resume(resume);
        Tracked {
            start: reader.next_seq(),
            reader,
            resume,
            delivered: 0,
            missed: 0,
            last: None,
        }
    }

    fn check_accounting(&self) {
        assert_eq!(
            self.delivered + self.missed,
            self.reader.next_seq() - self.start,
            "delivered + missed must equal the seqs passed"
        );
        let s = self.reader.stats();
        assert_eq!((s.received, s.missed), (self.delivered, self.missed));
    }

    fn saw_message(&mut self, seq: u64) {
        assert!(self.last.is_none_or(|l| seq > l), "seqs strictly increase");
        self.last = Some(seq);
        self.delivered += 1;
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish a message of this length, split into this many parts.
    Publish(usize, usize),
    /// Reader `i % readers` does `n` try_reads.
    Read(usize, u8),
    /// Reader `i % readers` drains a batch with these limits.
    Batch(usize, usize, usize),
    /// A new reader joins.
    AddReader(StartKind, bool),
}

#[derive(Debug, Clone, Copy)]
enum StartKind {
    Latest,
    Oldest,
    /// Head minus this many (so possibly gone), or beyond head if negative.
    Back(i64),
}

fn len_strategy(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        1usize..=56,
        Just(56usize.min(max)),
        Just(57usize.min(max)),
        Just(96usize.min(max)),
        Just(97usize.min(max)),
        0..=max,
        Just(max),
    ]
    .prop_map(move |l| l.min(max))
}

fn op_strategy(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (len_strategy(max), 1usize..4).prop_map(|(l, p)| Op::Publish(l, p)),
        3 => (any::<usize>(), 1u8..6).prop_map(|(i, n)| Op::Read(i, n)),
        1 => (any::<usize>(), 1usize..8, prop_oneof![Just(0usize), 0..300usize, Just(usize::MAX)])
            .prop_map(|(i, m, b)| Op::Batch(i, m, b)),
        1 => (
            prop_oneof![
                Just(StartKind::Latest),
                Just(StartKind::Oldest),
                (-3i64..40).prop_map(StartKind::Back)
            ],
            any::<bool>()
        )
            .prop_map(|(s, n)| Op::AddReader(s, n)),
    ]
}

fn geometry_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    (1u32..5, prop_oneof![Just(0u32), 1u32..6]).prop_flat_map(|(hb, cb)| {
        let h = 1usize << hb;
        let c = if cb == 0 { 0 } else { 1usize << cb };
        let limit = if c == 0 { 56 } else { 40 + c * 56 };
        (Just(h), Just(c), prop_oneof![Just(limit), 0..=limit])
    })
}

fn run(h: usize, c: usize, max: usize, multi: bool, ops: Vec<Op>) {
    let geometry = Geometry {
        header_slots: h,
        arena_slots: c,
    };
    let (mut publisher, ring) = if multi {
        let (p, r) = Ring::multi_producer_with_geometry(geometry, max, 1).unwrap();
        (Pub::Mp(p), r)
    } else {
        let (p, r) = Ring::single_producer_with_geometry(geometry, max, 1).unwrap();
        (Pub::Sp(p), r)
    };
    let mut model = Model {
        h: h as u64,
        c: c as u64,
        lens: Vec::new(),
        pos: Vec::new(),
        arena_head: 0,
    };
    let mut readers = vec![Tracked::new(&ring, Start::Oldest, Resume::Oldest)];
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    for op in ops {
        match op {
            Op::Publish(len, nparts) => {
                let seq = model.head();
                scratch.clear();
                common::fill(seq, len, &mut scratch);
                let cut1 = len / nparts.max(1);
                let cut2 = (2 * len / 3).max(cut1);
                let parts: Vec<&[u8]> = match nparts {
                    1 => vec![&scratch],
                    2 => vec![&scratch[..cut1], &scratch[cut1..]],
                    _ => vec![
                        &scratch[..cut1],
                        &[],
                        &scratch[cut1..cut2],
                        &scratch[cut2..],
                    ],
                };
                assert_eq!(publisher.publish_parts(&parts), seq);
                model.publish(len);
                assert_eq!(ring.head(), model.head());
                assert_eq!(ring.oldest_retained(), model.oldest());
            }
            Op::Read(i, n) => {
                let n_readers = readers.len();
                let t = &mut readers[i % n_readers];
                for _ in 0..n {
                    let next = t.reader.next_seq();
                    let resume = t.resume;
                    let want = model.expect(next, resume);
                    assert_eq!(t.reader.has_new(), want != ReadOutcome::Empty);
                    let got = t.reader.try_read(&mut buf);
                    assert_eq!(got, want, "reader at {next}");
                    match got {
                        ReadOutcome::Message { seq } => {
                            assert_eq!(buf.len(), model.lens[seq as usize]);
                            assert!(common::matches(seq, &buf), "payload of {seq} differs");
                            t.saw_message(seq);
                        }
                        ReadOutcome::Lagged(l) => t.missed += l.missed,
                        ReadOutcome::Empty => assert!(buf.is_empty()),
                    }
                    t.check_accounting();
                }
            }
            Op::Batch(i, max_messages, max_bytes) => {
                let n_readers = readers.len();
                let t = &mut readers[i % n_readers];
                // Replay the model over the events the batch should hold.
                let resume = t.resume;
                let mut batch = Batch::new();
                let n = t.reader.read_batch(&mut batch, max_messages, max_bytes);
                assert_eq!(n, batch.len());
                assert!(n <= max_messages);
                let mut next = t.start + t.delivered + t.missed;
                let mut bytes = 0usize;
                let mut took = false;
                for ev in batch.iter() {
                    let want = model.expect(next, resume);
                    match ev {
                        BatchEvent::Message { seq, payload } => {
                            assert_eq!(want, ReadOutcome::Message { seq });
                            assert!(common::matches(seq, payload));
                            assert_eq!(payload.len(), model.lens[seq as usize]);
                            if took {
                                bytes += payload.len();
                                assert!(bytes <= max_bytes, "batch over its byte budget");
                            } else {
                                bytes = payload.len();
                            }
                            took = true;
                            t.saw_message(seq);
                            next = seq + 1;
                        }
                        BatchEvent::Lagged(l) => {
                            assert_eq!(want, ReadOutcome::Lagged(l));
                            t.missed += l.missed;
                            next = l.resume_seq;
                        }
                    }
                }
                assert_eq!(next, t.reader.next_seq());
                // It stopped for a reason: limit reached, empty, or budget.
                if n < max_messages {
                    let exhausted = took && bytes >= max_bytes;
                    match model.expect(next, resume) {
                        ReadOutcome::Empty => {}
                        ReadOutcome::Message { seq } => assert!(
                            took && (exhausted || bytes + model.lens[seq as usize] > max_bytes),
                            "batch stopped early"
                        ),
                        // The budget is checked on the header's length
                        // before the arena is copied, so a message whose
                        // chunks are gone can also stop the batch; the lag
                        // is then reported by the next read.
                        ReadOutcome::Lagged(_) => assert!(
                            exhausted || (took && bytes + model.lens[next as usize] > max_bytes),
                            "stopped before a lag"
                        ),
                    }
                }
                t.check_accounting();
            }
            Op::AddReader(kind, newest) => {
                let start = match kind {
                    StartKind::Latest => Start::Latest,
                    StartKind::Oldest => Start::Oldest,
                    StartKind::Back(b) => Start::At((model.head() as i64 - b).max(0) as u64),
                };
                let expected_next = match start {
                    Start::Latest => model.head(),
                    Start::Oldest => model.oldest(),
                    Start::At(s) => s,
                };
                let resume = if newest {
                    Resume::Newest
                } else {
                    Resume::Oldest
                };
                readers.push(Tracked::new(&ring, start, resume));
                assert_eq!(readers.last().unwrap().reader.next_seq(), expected_next);
            }
        }
    }
    // Drain everyone at the end: the accounting must close over the whole run.
    for t in &mut readers {
        loop {
            let next = t.reader.next_seq();
            let want = model.expect(next, t.resume);
            let got = t.reader.try_read(&mut buf);
            assert_eq!(got, want);
            match got {
                ReadOutcome::Message { seq } => {
                    assert!(common::matches(seq, &buf));
                    t.saw_message(seq);
                }
                ReadOutcome::Lagged(l) => t.missed += l.missed,
                ReadOutcome::Empty => break,
            }
        }
        t.check_accounting();
        if t.start <= model.head() {
            assert_eq!(t.reader.next_seq(), model.head());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn single_producer_matches_the_model(
        (h, c, max) in geometry_strategy(),
        ops in prop::collection::vec(op_strategy(16 * 56), 1..120),
    ) {
        let ops = clamp(ops, max);
        run(h, c, max, false, ops);
    }

    #[test]
    fn multi_producer_matches_the_model(
        (h, c, max) in geometry_strategy(),
        ops in prop::collection::vec(op_strategy(16 * 56), 1..120),
    ) {
        let ops = clamp(ops, max);
        run(h, c, max, true, ops);
    }
}

/// Lengths are drawn for the largest geometry; fold them into this one's max.
fn clamp(ops: Vec<Op>, max: usize) -> Vec<Op> {
    ops.into_iter()
        .map(|op| match op {
            Op::Publish(l, p) if l > max => {
                Op::Publish(if l == 16 * 56 { max } else { l % (max + 1) }, p)
            }
            op => op,
        })
        .collect()
}
