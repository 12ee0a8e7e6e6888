//! What a backbone topic held before this node's ring: the seam between a
//! `Drain` and the backbone that replays it.
//!
//! A subscription that resumes at a seq older than the ring's oldest asks
//! the topic's [`History`] for everything from that seq on. The replay
//! arrives, in order, on a bounded channel: messages, and gaps for seqs the
//! backbone no longer retains (exact counts). The drain reads it until its
//! position reaches what the ring holds, then drops the receiver (which
//! ends the replay) and reads the ring from there.

use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::topic::Topic;

/// One event of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// The message at `seq`.
    Message {
        /// Its topic seq.
        seq: u64,
        /// Backbone clock at publish (Unix nanos).
        publish_time_unix_nanos: u64,
        /// The payload.
        payload: Bytes,
    },
    /// `missed` seqs the backbone no longer retains; the replay goes on at
    /// `resume_seq`.
    NotRetained {
        /// How many.
        missed: u64,
        /// The next seq.
        resume_seq: u64,
    },
    /// The replay cannot go on (the backbone is unreachable, or the
    /// topic's stream is gone); the subscription ends with this reason.
    Failed(String),
}

/// Replays a backbone topic from a seq on.
pub trait History: Debug + Send + Sync {
    /// Starts replaying `topic` from seq `next` on. The replay stops when
    /// the receiver is dropped; after each event it wakes the topic's
    /// subscribers.
    fn replay(&self, topic: &Arc<Topic>, next: u64) -> mpsc::Receiver<Replayed>;
}
