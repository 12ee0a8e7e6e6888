//! One subscription: a server-opened uni stream fed by a session-layer
//! [`Subscription`].
//!
//! Each subscription has its own stream so a slow topic (or a client slow
//! to read one topic) never blocks another topic of the same connection:
//! QUIC flow control is per stream. When flow control holds this stream
//! back, the task waits in `write_chunk` while the ring moves on; if the
//! ring laps it meanwhile, its next batch starts with the lag, which the
//! drain turns into a Resync (or, under the disconnect policy, the end of
//! the subscription with Error LAGGED). A reload of the principals that
//! withdraws its permission ends it with PERMISSION_DENIED.

use bytes::{Bytes, BytesMut};
use lapwing_proto::v1;
use quinn::Connection;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::control::{error_response, ControlTx};
use crate::drain::{BatchLimits, Step};
use crate::session::Subscription;

pub(super) async fn run(
    conn: Connection,
    mut sub: Subscription,
    cancel: CancellationToken,
    control: ControlTx,
    limits: BatchLimits,
) {
    let id = sub.id();
    let opened = tokio::select! {
        opened = conn.open_uni() => opened,
        _ = cancel.cancelled() => return,
    };
    let Ok(mut send) = opened else { return };
    let mut buf = BatchBuf::default();
    lapwing_proto::encode_frame(
        &v1::SubscriptionStreamHeader {
            subscription_id: id,
        },
        &mut buf.bytes,
    );
    let end = loop {
        if let Some(e) = sub.revoked() {
            break Some(e);
        }
        let step = sub.next_batch(limits, |d| {
            d.encode_frame(buf.room(d.frame_len_hint(), limits.frame_bytes()))
        });
        if let Some(chunk) = buf.take() {
            tokio::select! {
                written = send.write_chunk(chunk) => {
                    if written.is_err() {
                        // Connection gone or the client stopped the stream.
                        return;
                    }
                }
                _ = cancel.cancelled() => break None,
            }
        }
        match step {
            Step::Delivered { .. } => {}
            Step::Idle => {
                buf.release();
                tokio::select! {
                    _ = sub.wait() => {}
                    _ = cancel.cancelled() => break None,
                }
            }
            Step::Lagged { .. }
            | Step::TopicDeleted
            | Step::TooManyTopics { .. }
            | Step::HistoryFailed => break sub.end(step),
        }
    };
    let stats = sub.stats();
    debug!(
        subscription = id,
        delivered = stats.delivered,
        missed = stats.missed,
        "subscription ended"
    );
    let _ = send.finish();
    if let Some(err) = end {
        let _ = control.send(Box::new(error_response(&err, id))).await;
    }
}

/// The buffer a subscription encodes its batches into; each batch leaves
/// as one `Bytes` that quinn keeps until the client acknowledges it.
///
/// Its allocations are sized, not grown by doubling: a new block holds
/// twice the last batch, at most [`BatchLimits::frame_bytes`] (which stays
/// under the 64 KiB above which glibc maps and unmaps every allocation),
/// and at least what the next frame needs. So a busy subscription writes
/// from one block per batch or less, while one that gets a message now
/// and then allocates about that message, not a full batch: ten thousand
/// subscribers of a quiet topic do not pin 48 KiB each while their frames
/// are in flight.
#[derive(Debug, Default)]
struct BatchBuf {
    bytes: BytesMut,
    /// The size of the last batch taken.
    last: usize,
}

impl BatchBuf {
    /// The buffer, with room for `need` more bytes. A batch's first frame
    /// also asks for room for as much as the last batch held, so a steady
    /// stream of batches gets one block each and no copies.
    fn room(&mut self, need: usize, max_block: usize) -> &mut BytesMut {
        let len = self.bytes.len();
        let want = if len == 0 {
            need.max(self.last.min(max_block))
        } else {
            need
        };
        if self.bytes.capacity() - len < want {
            let size = (2 * self.last.max(len)).min(max_block).max(len + need);
            let mut block = BytesMut::with_capacity(size);
            // What this batch has encoded so far (nothing, unless it
            // outgrew the last one).
            block.extend_from_slice(&self.bytes);
            self.bytes = block;
        }
        &mut self.bytes
    }

    /// The batch encoded since the last call, if any; the rest of the block
    /// serves the next batch.
    fn take(&mut self) -> Option<Bytes> {
        if self.bytes.is_empty() {
            return None;
        }
        let chunk = self.bytes.split().freeze();
        self.last = chunk.len();
        Some(chunk)
    }

    /// Gives the block back (once quinn has dropped its batches): an idle
    /// subscription holds no buffer.
    fn release(&mut self) {
        self.bytes = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_subscription_allocates_about_its_message() {
        let mut b = BatchBuf::default();
        b.room(100, 48 * 1024).extend_from_slice(&[1; 100]);
        assert!(b.bytes.capacity() < 256, "{}", b.bytes.capacity());
        assert_eq!(b.take().unwrap().len(), 100);
        b.release();
        assert_eq!(b.bytes.capacity(), 0);
    }

    #[test]
    fn a_busy_subscription_writes_from_blocks_no_larger_than_the_cap() {
        let max = 48 * 1024;
        let mut b = BatchBuf::default();
        let mut blocks = 0;
        for _ in 0..20 {
            for _ in 0..32 {
                let before = b.bytes.as_ptr();
                b.room(1100, max).extend_from_slice(&[7; 1100]);
                if before != b.bytes.as_ptr() {
                    blocks += 1;
                    assert!(b.bytes.capacity() <= max, "{}", b.bytes.capacity());
                }
            }
            assert_eq!(b.take().unwrap().len(), 32 * 1100);
        }
        // Doubling within the first batch reaches the cap in a few blocks;
        // after that one block per batch, never one per frame.
        assert!(
            (20..=27).contains(&blocks),
            "{blocks} blocks for 20 batches"
        );
    }

    #[test]
    fn a_frame_larger_than_the_cap_gets_a_block_of_its_own_size() {
        let mut b = BatchBuf::default();
        b.room(10, 1024).extend_from_slice(&[1; 10]);
        b.room(100_000, 1024).extend_from_slice(&[2; 100_000]);
        let chunk = b.take().unwrap();
        assert_eq!(chunk.len(), 100_010);
        assert_eq!(&chunk[..10], &[1; 10], "the batch so far was kept");
    }
}
