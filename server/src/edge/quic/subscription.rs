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

use std::sync::Arc;

use lapwing_proto::v1;
use quinn::Connection;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::blocks::{BatchBuf, BlockPool};
use super::control::{error_response, ControlTx};
use crate::drain::{BatchLimits, Step};
use crate::session::Subscription;

pub(super) async fn run(
    conn: Connection,
    mut sub: Subscription,
    cancel: CancellationToken,
    control: ControlTx,
    limits: BatchLimits,
    blocks: Arc<BlockPool>,
) {
    let id = sub.id();
    let opened = tokio::select! {
        opened = conn.open_uni() => opened,
        _ = cancel.cancelled() => return,
    };
    let Ok(mut send) = opened else { return };
    let mut buf = BatchBuf::new(blocks);
    lapwing_proto::encode_frame(
        &v1::SubscriptionStreamHeader {
            subscription_id: id,
        },
        buf.room(16),
    );
    let end = loop {
        // A busy subscription never waits, and `select!` picks at random
        // among ready branches: check here so a cancelled one stops at
        // once instead of draining on.
        if cancel.is_cancelled() {
            break None;
        }
        if let Some(e) = sub.revoked() {
            break Some(e);
        }
        let step = sub.deliver(limits, &mut buf);
        // One write per batch, handed to quinn without a copy.
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
