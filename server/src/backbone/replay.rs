//! One subscription's replay of a backbone topic from its stream: what a
//! resume asks for that the node's ring no longer (or never) held.
//!
//! It reads the stream's state first: seqs before the stream's first
//! retained one are gone, and reported at once as one `NOT_RETAINED` gap
//! with its exact count. Then an ordered consumer delivers from there, and
//! each message goes to the drain with its topic seq (stream seq − 1); a
//! seq the stream dropped while the replay ran is a gap too. The channel
//! is bounded, so a replay is never further ahead of its subscriber than
//! [`REPLAY_AHEAD`] events; the drain drops the receiver once it reaches
//! what the ring holds, which ends the replay.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{current_stream, read_from, Counters, StreamError};
use crate::history::Replayed;
use crate::topic::Topic;

/// Events a replay may hold for its subscriber.
pub(super) const REPLAY_AHEAD: usize = 64;

/// Starts replaying `topic` (stream `stream_name`) from topic seq `next`.
pub(super) fn start(
    js: jetstream::Context,
    stream_name: String,
    topic: Arc<Topic>,
    next: u64,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> mpsc::Receiver<Replayed> {
    let (tx, rx) = mpsc::channel(REPLAY_AHEAD);
    tokio::spawn(async move {
        let wake = topic.clone();
        let send = |event: Replayed| {
            let tx = tx.clone();
            let wake = wake.clone();
            async move {
                let sent = tx.send(event).await.is_ok();
                wake.wakeup().wake();
                sent
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tx.closed() => {}
            failed = run(&js, &stream_name, &topic, next, &send) => {
                if let Err(why) = failed {
                    counters.replays_failed.fetch_add(1, Ordering::Relaxed);
                    send(Replayed::Failed(why)).await;
                }
            }
        }
    });
    rx
}

async fn run<F, Fut>(
    js: &jetstream::Context,
    stream_name: &str,
    topic: &Topic,
    mut next: u64,
    send: &F,
) -> Result<(), String>
where
    F: Fn(Replayed) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let stream = match current_stream(js, stream_name, topic.epoch()).await {
        Ok(s) => s,
        Err(StreamError::Gone) => {
            return Err(format!(
                "topic `{}`'s backbone stream is gone or was replaced; resubscribe",
                topic.name()
            ))
        }
        Err(StreamError::Failed(e)) => {
            return Err(format!("the backbone is unreachable: {e}; retry"))
        }
    };
    // Stream seq `first` is topic seq `first - 1`; an empty stream's
    // `first` is one past its last.
    let first = stream.cached_info().state.first_sequence.saturating_sub(1);
    if next < first {
        let gap = Replayed::NotRetained {
            missed: first - next,
            resume_seq: first,
        };
        if !send(gap).await {
            return Ok(());
        }
        next = first;
    }
    let mut messages = read_from(&stream, next + 1)
        .await
        .map_err(|e| format!("cannot replay from the backbone: {e}; retry"))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("the backbone replay failed: {e}; retry"))?;
        let seq = message.stream_seq.saturating_sub(1);
        if seq < next {
            continue;
        }
        if seq > next {
            let gap = Replayed::NotRetained {
                missed: seq - next,
                resume_seq: seq,
            };
            if !send(gap).await {
                return Ok(());
            }
        }
        let event = Replayed::Message {
            seq,
            publish_time_unix_nanos: message.published,
            payload: message.payload,
        };
        if !send(event).await {
            return Ok(());
        }
        next = seq + 1;
    }
    Err("the backbone replay ended early; retry".into())
}
