//! The buffers subscription streams encode their batches into.
//!
//! A batch leaves as one `Bytes` that quinn keeps until the client has
//! acknowledged every packet of it. With 100 subscribers of a 1 KiB topic
//! the edge writes thousands of batches a second, so where those buffers
//! come from is on the hot path:
//!
//! - Grown in the subscription's own `BytesMut`, a batch of 1 KiB messages
//!   passed glibc's 64 KiB mmap threshold (which `lapwing-server` sets), so
//!   every write was a fresh mapping, page-faulted in and unmapped with a
//!   TLB shootdown once acknowledged.
//! - Kept under the threshold in heap blocks, they were fast, but the heap
//!   kept what killed clients' streams had held and RSS grew round after
//!   round (`e2e/tests/kills.rs`).
//!
//! So a large batch goes into a fixed-size block from a [`BlockPool`]
//! shared by the whole edge: the block comes back to the pool when quinn
//! drops the last reference to it, already mapped and faulted in. The
//! pool keeps what the edge cycles through and no more: every
//! [`BlockPool::TRIM_EVERY`] it gives back to the OS (as their own
//! mappings) the idle blocks no batch took since the last trim, and it
//! never holds more than [`BlockPool::KEEP`]. A small batch (a quiet topic,
//! a message now and then) stays in the subscription's own small buffer,
//! so ten thousand quiet subscribers do not pin a block each.
//!
//! Why a trim and not a smaller quota: with 100 subscribers of a 1 KiB
//! topic a few hundred blocks are out with quinn at once, so a quota of 64
//! freed and re-mapped blocks every round (page faults, the zeroing of
//! fresh pages, a TLB shootdown per unmap); 256 delivered 10–15 % more
//! per server CPU-second (BENCHMARKS.md, change 10). A fixed 256 would pin
//! 16 MiB after a burst for good; the trim gives it back within two
//! periods of its last use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::drain::{Deliver, DeliveryRef};

/// Idle batch blocks shared by every subscription of an edge.
#[derive(Debug)]
pub(crate) struct BlockPool {
    idle: Mutex<Idle>,
    block_bytes: usize,
}

#[derive(Debug, Default)]
struct Idle {
    blocks: Vec<BytesMut>,
    /// The fewest idle blocks there were since the last trim: that many
    /// sat in the pool the whole time, unused.
    low: usize,
}

impl BlockPool {
    /// Idle blocks the pool keeps at most (16 MiB of 64 KiB blocks): what
    /// a few hundred busy subscriptions cycle through.
    pub(crate) const KEEP: usize = 256;
    /// How often [`BlockPool::trim`] runs: an idle block is given back
    /// one to two periods after a batch last needed it.
    pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(1);

    /// A pool of blocks of `block_bytes` each: the size of a full batch's
    /// frames ([`crate::drain::BatchLimits::frame_bytes`]).
    pub(crate) fn new(block_bytes: usize) -> Arc<BlockPool> {
        Arc::new(BlockPool {
            idle: Mutex::new(Idle::default()),
            block_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty block: an idle one, or a new one.
    fn take(&self) -> BytesMut {
        let reused = {
            let mut idle = self.lock();
            let block = idle.blocks.pop();
            idle.low = idle.low.min(idle.blocks.len());
            block
        };
        reused.unwrap_or_else(|| BytesMut::with_capacity(self.block_bytes))
    }

    /// Takes a block back, unless the pool is full or the block grew past
    /// its size (a frame larger than a block reallocated it).
    fn give(&self, mut block: BytesMut) {
        block.clear();
        if block.capacity() != self.block_bytes {
            return;
        }
        let mut idle = self.lock();
        if idle.blocks.len() < Self::KEEP {
            idle.blocks.push(block);
        }
    }

    /// Gives back to the OS the idle blocks that no batch took since the
    /// last trim; returns how many.
    pub(crate) fn trim(&self) -> usize {
        let unused = {
            let mut idle = self.lock();
            let keep = idle.blocks.len() - idle.low.min(idle.blocks.len());
            let unused = idle.blocks.split_off(keep);
            idle.low = idle.blocks.len();
            unused
        };
        // Unmapped here, outside the lock.
        unused.len()
    }

    /// Trims every [`BlockPool::TRIM_EVERY`] until `stop`.
    pub(crate) async fn trim_until(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(Self::TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    self.trim();
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// Idle blocks held now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().blocks.len()
    }
}

/// A written block on its way to the client: goes back to its pool when
/// the last `Bytes` that points into it is dropped.
struct Lent {
    block: BytesMut,
    pool: Arc<BlockPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.block
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.block));
    }
}

/// One subscription's batch buffer: frames go into its own small buffer
/// until the batch outgrows [`BatchBuf::SMALL`], then into a pool block.
#[derive(Debug)]
pub(super) struct BatchBuf {
    /// Grows with the first batch and keeps its spare capacity; a
    /// subscription that never receives anything holds none.
    small: BytesMut,
    /// The block the current batch is in, if it went to one.
    block: Option<BytesMut>,
    pool: Arc<BlockPool>,
    /// The size of the last batch: one as large as this goes straight to a
    /// block, without passing through `small`.
    last: usize,
}

impl BatchBuf {
    /// Above this a batch moves to a block. Small enough for the heap to
    /// serve quiet subscriptions from its bins; large enough that moving
    /// a batch into a block costs a small part of what it then holds.
    const SMALL: usize = 8 * 1024;

    pub(super) fn new(pool: Arc<BlockPool>) -> BatchBuf {
        BatchBuf {
            small: BytesMut::new(),
            block: None,
            pool,
            last: 0,
        }
    }

    /// Where the next frame of the current batch goes, `need` its size
    /// (about: a frame may take a little more, and the buffer grows).
    pub(super) fn room(&mut self, need: usize) -> &mut BytesMut {
        if self.block.is_none() {
            let len = self.small.len();
            if (len == 0 && self.last > Self::SMALL) || len + need > Self::SMALL {
                // A frame larger than a block gets a buffer of its own size
                // (not a pool block that would be reallocated and lost).
                let mut block = if len + need > self.pool.block_bytes {
                    BytesMut::with_capacity(len + need)
                } else {
                    self.pool.take()
                };
                // What this batch encoded before it outgrew `small`.
                block.extend_from_slice(&self.small);
                self.small.clear();
                self.block = Some(block);
            }
        }
        match &mut self.block {
            Some(block) => block,
            None => &mut self.small,
        }
    }

    /// The batch encoded since the last call, if any.
    pub(super) fn take(&mut self) -> Option<Bytes> {
        let batch = match self.block.take() {
            Some(block) => Bytes::from_owner(Lent {
                block,
                pool: self.pool.clone(),
            }),
            // `split` keeps the spare capacity for the next batch.
            None if !self.small.is_empty() => self.small.split().freeze(),
            None => return None,
        };
        self.last = batch.len();
        Some(batch)
    }
}

/// A subscription's events become frames in its batch buffer; messages
/// are encoded by the drain, their payloads copied straight from the ring.
impl Deliver for BatchBuf {
    fn event(&mut self, event: DeliveryRef<'_>) {
        event.encode_frame(self.room(event.frame_len_hint()));
    }

    fn frames(&mut self, need: usize) -> Option<&mut BytesMut> {
        Some(self.room(need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 64 * 1024;

    fn fill(b: &mut BatchBuf, frames: usize, size: usize) -> Bytes {
        for i in 0..frames {
            b.room(size).extend_from_slice(&vec![i as u8; size]);
        }
        b.take().expect("a batch")
    }

    #[test]
    fn a_quiet_subscription_stays_in_its_small_buffer() {
        let pool = BlockPool::new(BLOCK);
        let mut b = BatchBuf::new(pool.clone());
        let batch = fill(&mut b, 1, 100);
        assert_eq!(batch.len(), 100);
        assert!(b.small.capacity() < 1024, "{}", b.small.capacity());
        drop(batch);
        assert_eq!(pool.idle(), 0, "no block was taken");
        assert!(b.take().is_none(), "nothing new");
    }

    #[test]
    fn a_batch_that_outgrows_the_small_buffer_moves_to_a_block_whole() {
        let pool = BlockPool::new(BLOCK);
        let mut b = BatchBuf::new(pool.clone());
        let batch = fill(&mut b, 40, 1000);
        assert_eq!(batch.len(), 40_000);
        for (i, frame) in batch.chunks(1000).enumerate() {
            assert!(frame.iter().all(|&x| x == i as u8), "frame {i} intact");
        }
        assert!(b.small.is_empty());
        assert_eq!(pool.idle(), 0, "the block is out with the batch");
        let half = batch.slice(0..20_000);
        drop(batch);
        assert_eq!(pool.idle(), 0, "a slice of it is still out");
        drop(half);
        assert_eq!(pool.idle(), 1, "back once the last reference is gone");
    }

    #[test]
    fn a_busy_subscription_reuses_the_same_blocks() {
        let pool = BlockPool::new(BLOCK);
        let mut b = BatchBuf::new(pool.clone());
        drop(fill(&mut b, 40, 1000));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let batch = fill(&mut b, 40, 1000);
            seen.insert(batch.as_ptr());
            drop(batch);
        }
        assert_eq!(seen.len(), 1, "one block serves every batch");
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn a_frame_larger_than_a_block_is_sent_and_its_buffer_not_kept() {
        let pool = BlockPool::new(BLOCK);
        drop(fill(&mut BatchBuf::new(pool.clone()), 20, 1000));
        assert_eq!(pool.idle(), 1, "a busy batch's block is back in the pool");
        let mut b = BatchBuf::new(pool.clone());
        b.room(10).extend_from_slice(&[1; 10]);
        b.room(100_000).extend_from_slice(&[2; 100_000]);
        let batch = b.take().expect("a batch");
        assert_eq!(batch.len(), 100_010);
        assert_eq!(&batch[..10], &[1; 10], "the batch so far was kept");
        drop(batch);
        assert_eq!(
            pool.idle(),
            1,
            "the pooled block was not taken, nor the outsized buffer kept"
        );
    }

    #[test]
    fn the_pool_keeps_at_most_its_quota_of_idle_blocks() {
        let pool = BlockPool::new(BLOCK);
        let mut bufs: Vec<BatchBuf> = (0..BlockPool::KEEP + 10)
            .map(|_| BatchBuf::new(pool.clone()))
            .collect();
        let batches: Vec<Bytes> = bufs.iter_mut().map(|b| fill(b, 20, 1000)).collect();
        drop(batches);
        assert_eq!(pool.idle(), BlockPool::KEEP);
    }

    /// `rounds` rounds of `busy` subscriptions each writing a batch that
    /// outgrows its small buffer, all out with quinn at once, then back.
    fn cycle(pool: &Arc<BlockPool>, busy: usize, rounds: usize) {
        let mut bufs: Vec<BatchBuf> = (0..busy).map(|_| BatchBuf::new(pool.clone())).collect();
        for _ in 0..rounds {
            let batches: Vec<Bytes> = bufs.iter_mut().map(|b| fill(b, 20, 1000)).collect();
            drop(batches);
        }
    }

    #[test]
    fn a_trim_gives_back_what_no_batch_took_and_keeps_what_the_edge_cycles() {
        let pool = BlockPool::new(BLOCK);
        cycle(&pool, 30, 1);
        assert_eq!(pool.idle(), 30);
        // A quieter period: 10 batches at a time.
        pool.trim();
        cycle(&pool, 10, 5);
        assert_eq!(pool.idle(), 30, "the surplus waits for the trim");
        assert_eq!(pool.trim(), 20, "20 blocks were never taken");
        assert_eq!(pool.idle(), 10);
        // The same load: the working set stays, nothing is given back.
        cycle(&pool, 10, 5);
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.idle(), 10);
        // Silence: all of it goes.
        assert_eq!(pool.trim(), 10);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn blocks_left_idle_go_back_within_two_periods() {
        let pool = BlockPool::new(BLOCK);
        let stop = CancellationToken::new();
        let trimmer = tokio::spawn(pool.clone().trim_until(stop.clone()));
        cycle(&pool, 30, 1);
        assert_eq!(pool.idle(), 30);
        tokio::time::sleep(2 * BlockPool::TRIM_EVERY + Duration::from_millis(1)).await;
        assert_eq!(pool.idle(), 0);
        stop.cancel();
        trimmer.await.expect("the trimmer stops when told");
    }
}
