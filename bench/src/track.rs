//! Per-subscriber accounting of what arrived: gaps, duplicates, reorders, and
//! how much of the loss the system itself reported (Lapwing's resyncs).
//!
//! The rule the report applies: a gap that a resync announced *exactly* is
//! reported loss; any other gap is silent loss, whatever the system.

use serde::Serialize;

const WINDOW: u64 = 4096;

/// Tracks one publisher's sequence as seen by one subscriber.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    max: Option<u64>,
    seen: Box<[u64; (WINDOW / 64) as usize]>,
    pending_reported: u64,
    /// Running totals.
    pub counts: LossCounts,
}

/// What one subscriber saw of one publisher's stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossCounts {
    /// Messages delivered (including duplicates).
    pub delivered: u64,
    /// Messages missing between the first seq the subscriber should have
    /// seen and its first delivery.
    pub start_missing: u64,
    /// Gaps no one announced.
    pub silent_missing: u64,
    /// Gaps a resync announced with the exact count.
    pub reported_missing: u64,
    /// Resync events received.
    pub resyncs: u64,
    /// Resyncs whose `missed` did not equal the gap that followed.
    pub resync_mismatches: u64,
    /// The same seq delivered twice.
    pub duplicates: u64,
    /// A seq delivered after a higher one.
    pub reorders: u64,
    /// Messages after the last one seen that had not arrived when the run
    /// stopped (after the drain wait). Not counted as loss: they may still
    /// be queued in the server or the client (NATS buffers megabytes per
    /// subscriber). A large number means the system fell behind.
    pub undelivered_at_stop: u64,
}

impl LossCounts {
    /// Every message lost without being told: silent gaps and a missing start.
    pub fn silent_total(&self) -> u64 {
        self.silent_missing + self.start_missing
    }

    /// Adds another subscriber's counts.
    pub fn add(&mut self, o: &LossCounts) {
        self.delivered += o.delivered;
        self.start_missing += o.start_missing;
        self.silent_missing += o.silent_missing;
        self.reported_missing += o.reported_missing;
        self.resyncs += o.resyncs;
        self.resync_mismatches += o.resync_mismatches;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.undelivered_at_stop += o.undelivered_at_stop;
    }
}

impl Default for SeqTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqTracker {
    /// A tracker expecting the stream to start at seq 0.
    pub fn new() -> Self {
        Self {
            max: None,
            seen: Box::new([0; (WINDOW / 64) as usize]),
            pending_reported: 0,
            counts: LossCounts::default(),
        }
    }

    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % WINDOW;
        (&mut self.seen[(i / 64) as usize], 1u64 << (i % 64))
    }

    /// The system announced `missed` lost messages before the next delivery.
    pub fn resync(&mut self, missed: u64) {
        self.counts.resyncs += 1;
        self.pending_reported += missed;
    }

    /// A message with `seq` arrived.
    pub fn message(&mut self, seq: u64) {
        self.counts.delivered += 1;
        let expected = self.max.map_or(0, |m| m + 1);
        if seq >= expected {
            let jump = seq - expected;
            if self.pending_reported > 0 || jump > 0 {
                if self.pending_reported != jump {
                    self.counts.resync_mismatches += u64::from(self.pending_reported > 0);
                }
                let covered = self.pending_reported.min(jump);
                self.counts.reported_missing += covered;
                let silent = jump - covered;
                if self.max.is_none() {
                    self.counts.start_missing += silent;
                } else {
                    self.counts.silent_missing += silent;
                }
                self.pending_reported = 0;
            }
            // Clear the window bits of the seqs we jumped over, then mark.
            if jump + 1 >= WINDOW {
                self.seen.fill(0);
            } else {
                for s in expected..seq {
                    let (w, b) = self.bit(s);
                    *w &= !b;
                }
            }
            let (w, b) = self.bit(seq);
            *w |= b;
            self.max = Some(seq);
            return;
        }
        let max = self.max.unwrap_or(0);
        if max - seq < WINDOW {
            let (w, b) = self.bit(seq);
            if *w & b != 0 {
                self.counts.duplicates += 1;
                return;
            }
            *w |= b;
        }
        // Late arrival: it was counted as missing when we jumped past it.
        self.counts.reorders += 1;
        if self.counts.silent_missing > 0 {
            self.counts.silent_missing -= 1;
        } else if self.counts.start_missing > 0 {
            self.counts.start_missing -= 1;
        }
    }

    /// Highest seq seen.
    pub fn max_seen(&self) -> Option<u64> {
        self.max
    }

    /// Closes the books: `published` messages were sent (seqs `0..published`).
    pub fn finish(&mut self, published: u64) -> LossCounts {
        let next = self.max.map_or(0, |m| m + 1);
        let tail = published.saturating_sub(next);
        let covered = self.pending_reported.min(tail);
        self.counts.reported_missing += covered;
        self.counts.undelivered_at_stop += tail - covered;
        self.pending_reported = 0;
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::new();
        for &s in seqs {
            t.message(s);
        }
        t
    }

    #[test]
    fn clean_stream_has_no_loss() {
        let mut t = feed(&[0, 1, 2, 3]);
        assert_eq!(
            t.finish(4),
            LossCounts {
                delivered: 4,
                ..Default::default()
            }
        );
    }

    #[test]
    fn gaps_duplicates_and_reorders_are_told_apart() {
        let mut t = feed(&[0, 1, 4, 4, 2, 5]);
        let c = t.finish(8);
        assert_eq!(c.delivered, 6);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.reorders, 1);
        // 3 never arrived, 2 arrived late; 6 and 7 are the tail.
        assert_eq!(c.silent_missing, 1);
        assert_eq!(c.undelivered_at_stop, 2);
    }

    #[test]
    fn announced_gap_is_reported_not_silent() {
        let mut t = SeqTracker::new();
        t.message(0);
        t.resync(9);
        t.message(10);
        let c = t.finish(11);
        assert_eq!(c.reported_missing, 9);
        assert_eq!(c.silent_missing, 0);
        assert_eq!(c.resync_mismatches, 0);
    }

    #[test]
    fn resync_with_wrong_count_is_a_mismatch() {
        let mut t = SeqTracker::new();
        t.message(0);
        t.resync(5);
        t.message(10);
        let c = t.finish(11);
        assert_eq!(c.reported_missing, 5);
        assert_eq!(c.silent_missing, 4);
        assert_eq!(c.resync_mismatches, 1);
    }

    #[test]
    fn late_start_is_silent_and_tail_is_undelivered() {
        let mut t = feed(&[3, 4]);
        let c = t.finish(10);
        assert_eq!(c.start_missing, 3);
        assert_eq!(c.undelivered_at_stop, 5);
        assert_eq!(c.silent_total(), 3);
    }

    #[test]
    fn huge_jump_clears_window() {
        let mut t = feed(&[0, 10_000, 10_001]);
        let c = t.finish(10_002);
        assert_eq!(c.silent_missing, 9_999);
        assert_eq!(c.duplicates, 0);
    }
}
