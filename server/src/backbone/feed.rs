//! A node's feed of one backbone topic: the topic's stream, copied in
//! order into the topic's ring, from the seq the node began to follow it
//! (its `base`) for as long as the topic lives here.
//!
//! The invariant is the ring's seqs staying the stream's: the ring's seq
//! `r` holds stream seq `base + 1 + r`. The feed keeps `next`, the stream
//! seq it writes next; a message the consumer delivers past `next` (the
//! stream dropped the ones between before the feed got to them) is
//! preceded by one hole per missing seq, and one before `next` (a consumer
//! restarted over what was already written) is skipped. When the consumer
//! fails (the backbone went away, or came back: every reconnection restarts
//! it at once) the feed starts a new one at `next`. When the stream itself
//! was replaced (another epoch) or deleted, the topic is removed from this
//! node: its subscriptions end, and a resume lands in the new epoch with
//! `EPOCH_CHANGED`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::{debug, warn};

use super::{current_stream, read_from, Backbone, StreamError};
use crate::topic::Topic;

/// Longest wait between two attempts to restart a failed consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How one run of a consumer ended.
enum Ended {
    /// The consumer failed; start another at `next`.
    Failed(String),
    /// The stream is gone or replaced: stop following the topic.
    StreamGone,
    /// The backbone reconnected: start another consumer at once.
    Reconnected,
}

/// Runs `topic`'s feed from stream seq `next` until the topic is deleted
/// or the server stops.
pub(super) async fn run(backbone: Arc<Backbone>, topic: Arc<Topic>, mut next: u64) {
    let mut failures = 0u32;
    let mut connected = backbone.connected.clone();
    connected.mark_unchanged();
    loop {
        let ended = tokio::select! {
            _ = topic.deleted() => return,
            _ = backbone.stop.cancelled() => return,
            ended = follow(&backbone, &topic, &mut next) => ended,
            _ = connected.changed() => Ended::Reconnected,
        };
        match ended {
            Ended::StreamGone => {
                warn!(topic = topic.name(), "the topic's backbone stream is gone or was replaced; its subscriptions end here");
                backbone.forget(topic.name());
                backbone.registry.remove_if_current(&topic);
                return;
            }
            Ended::Reconnected => {
                failures = 0;
                debug!(
                    topic = topic.name(),
                    next, "backbone reconnected; restarting the feed"
                );
            }
            Ended::Failed(why) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(20u64 << failures.min(6)).min(MAX_BACKOFF);
                debug!(topic = topic.name(), next, %why, ?wait, "feed consumer failed; restarting");
                tokio::select! {
                    _ = topic.deleted() => return,
                    _ = backbone.stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    _ = connected.changed() => {}
                }
            }
        }
    }
}

/// One consumer's run: copies what it delivers into the ring, advancing
/// `next`, until it fails.
async fn follow(backbone: &Backbone, topic: &Topic, next: &mut u64) -> Ended {
    let name = backbone.stream_name(topic.name());
    let stream = match current_stream(&backbone.js, &name, topic.epoch()).await {
        Ok(s) => s,
        Err(StreamError::Gone) => return Ended::StreamGone,
        Err(StreamError::Failed(e)) => return Ended::Failed(e),
    };
    let mut messages = match read_from(&stream, *next).await {
        Ok(m) => m,
        Err(e) => return Ended::Failed(e),
    };
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => return Ended::Failed(e),
        };
        let seq = message.stream_seq;
        if seq < *next {
            continue;
        }
        let c = &backbone.counters;
        if seq > *next {
            c.holes.fetch_add(seq - *next, Ordering::Relaxed);
        }
        c.fed.fetch_add(1, Ordering::Relaxed);
        let written = topic
            .write_holes(seq - *next)
            .and_then(|()| topic.write_from_backbone(message.published, &message.payload));
        if let Err(e) = written {
            // The ring exists (allocated before the feed started) and the
            // stream's messages fit the topic's maximum, so this is a bug
            // or a stream written by something else: skip the message as
            // a hole rather than let the seqs drift.
            warn!(topic = topic.name(), seq, error = %e, "cannot write a backbone message into the ring; counted as missed");
            if topic.write_holes(1).is_err() {
                return Ended::StreamGone;
            }
        }
        *next = seq + 1;
    }
    Ended::Failed("the consumer ended".into())
}
