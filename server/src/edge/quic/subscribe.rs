//! One subscription: a server-opened uni stream fed by a `Drain`.
//!
//! Each subscription has its own stream so a slow topic (or a client slow
//! to read one topic) never blocks another topic of the same connection:
//! QUIC flow control is per stream. When flow control holds this stream
//! back, the task waits in `write_chunk` while the ring moves on; if the
//! ring laps it meanwhile, its next batch starts with the lag, which the
//! drain turns into a Resync (or, under the disconnect policy, the end of
//! the subscription with Error LAGGED).

use bytes::BytesMut;
use lapwing_proto::v1::{self, control_response, ControlResponse, ErrorCode};
use quinn::Connection;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::control::ControlTx;
use crate::connections::{BatchTally, SubscriptionGuard};
use crate::subscription::{BatchLimits, Drain, Step};

pub(super) async fn run(
    conn: Connection,
    id: u64,
    mut drain: Drain,
    meter: SubscriptionGuard,
    cancel: CancellationToken,
    control: ControlTx,
    limits: BatchLimits,
) {
    let opened = tokio::select! {
        opened = conn.open_uni() => opened,
        _ = cancel.cancelled() => return,
    };
    let Ok(mut send) = opened else { return };
    // Grows with the first batch and keeps its spare capacity after that;
    // a subscription that never receives anything holds no buffer.
    let mut buf = BytesMut::new();
    lapwing_proto::encode_frame(
        &v1::SubscriptionStreamHeader {
            subscription_id: id,
        },
        &mut buf,
    );
    let end = loop {
        let mut tally = BatchTally::default();
        let step = drain.next_batch(limits, |d| {
            tally.see(&d);
            d.encode_frame(&mut buf);
        });
        meter.meter().record(&drain, &tally, step);
        if !buf.is_empty() {
            // One write per batch; `split` hands quinn the bytes without a
            // copy and keeps the spare capacity for the next batch.
            let chunk = buf.split().freeze();
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
                    _ = drain.wait() => {}
                    _ = cancel.cancelled() => break None,
                }
            }
            Step::Lagged { missed } => {
                break Some((
                    ErrorCode::Lagged,
                    format!("subscription lagged ({missed} messages overwritten) and its lag policy is disconnect"),
                ))
            }
            Step::TopicDeleted => {
                break Some((ErrorCode::TopicNotFound, "topic was deleted".to_owned()))
            }
        }
    };
    let stats = drain.stats();
    debug!(
        subscription = id,
        delivered = stats.delivered,
        missed = stats.missed,
        "subscription ended"
    );
    let _ = send.finish();
    if let Some((code, message)) = end {
        let error = ControlResponse {
            kind: Some(control_response::Kind::Error(v1::Error {
                code: code as i32,
                message,
                subscription_id: id,
            })),
        };
        let _ = control.send(error).await;
    }
}
