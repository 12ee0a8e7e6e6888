//! The one frame the server writes once per message per subscriber: a
//! `Message` delivery, head and tail around a payload it copies itself.
//!
//! ```text
//! cargo bench -p lapwing-proto --bench frame -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! * `message-frame/{64B,1KiB}`: `MessageFrame::new` + `put_head`, the
//!   payload, `put_tail`, into a reused buffer, with a real publish time
//!   (a 9-byte varint) and a seq that grows as a subscriber's does. The
//!   loop spells out what `encode_message_frame` does rather than calling
//!   it, because the server's drain calls the pieces from another crate
//!   with its own copy in between, and whether they inline there is what
//!   this measures.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lapwing_proto::MessageFrame;

/// A publish time in nanoseconds since 1970 (late 2026).
const TIME: u64 = 1_796_000_000_000_000_000;
const EPOCH: u64 = 0x1234_5678_9abc_def0;
/// Frames per iteration: about one batch.
const BATCH: u64 = 64;

fn message_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("message-frame");
    group.throughput(Throughput::Elements(BATCH));
    for (name, len) in [("64B", 64usize), ("1KiB", 1024)] {
        let payload = vec![7u8; len];
        let mut out = BytesMut::with_capacity(BATCH as usize * (len + 64));
        let mut seq = 1_000_000u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for i in 0..BATCH {
                    seq += 1;
                    let frame = MessageFrame::new(seq, EPOCH, TIME + i * 977, "", payload.len());
                    out.reserve(frame.len());
                    frame.put_head(&mut out);
                    out.extend_from_slice(&payload);
                    frame.put_tail(&mut out);
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, message_frame);
criterion_main!(benches);
