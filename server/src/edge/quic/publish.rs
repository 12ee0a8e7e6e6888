//! Publish streams opened by the client.
//!
//! Uni streams are fire-and-forget: errors come back as Error frames on
//! the control stream, and so does a PublishStreamDone once the client has
//! finished a stream and every frame in it is handled. Bidi streams (after
//! the control stream) are acked: one PublishResult per Publish, in order.
//! A message-level error (too large, bad topic, a budget used up) refuses
//! that one message and the stream goes on; a frame-level error
//! (undecodable, length over the limit, a frame left incomplete past
//! `limits.frame_timeout_ms` or over the partial-frame budget) loses frame
//! sync, so the stream is stopped with the code. The connection stays up
//! either way, and every message accepted before the error stays
//! published.

use std::sync::Arc;

use bytes::BytesMut;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use lapwing_proto::v1::{
    self, control_response, publish_result, ControlResponse, Publish, PublishResult,
};
use lapwing_proto::FrameError;
use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::control::{error_response, ControlTx};
use super::{code, Shared};
use crate::error::RequestError;
use crate::partial::{classify, FrameProgress, MeteredFrames, ReadFailure};
use crate::topic_publisher::{Submitted, TopicPublisher};

/// Publish frames handled per write on an acked stream.
const ACK_BATCH: usize = 64;
/// Backbone publishes (cluster mode) a fire-and-forget stream keeps in
/// flight, their acknowledgements pending: the round trips overlap, and
/// the stream is read no further ahead than this.
const IN_FLIGHT: usize = 256;
/// Initial read buffer of a publish stream (it grows with the frames).
const PUBLISH_READ_BUFFER: usize = 8 * 1024;

type PublishFrames = MeteredFrames<RecvStream, Publish>;

fn frames(recv: RecvStream, shared: &Shared, progress: FrameProgress) -> PublishFrames {
    MeteredFrames::new(
        recv,
        shared.core.limits.max_frame_bytes,
        progress,
        PUBLISH_READ_BUFFER,
    )
}

fn report(control: &ControlTx, err: &RequestError) {
    // Never wait on the control stream from a publish stream: if the
    // client does not read its errors, they are dropped, not queued.
    if control.try_send(Box::new(error_response(err, 0))).is_err() {
        debug!(error = %err, "error report dropped (control queue full)");
    }
}

/// What a read returned, sorted: a frame, the end, or a refusal that
/// stops the stream.
enum Read {
    Frame(Publish),
    End,
    Stop(RequestError),
}

fn sort(frame: Option<Result<Publish, FrameError>>) -> Read {
    match frame {
        None => Read::End,
        Some(Ok(p)) => Read::Frame(p),
        Some(Err(e)) => match classify(e) {
            ReadFailure::Gone(e) => {
                debug!(error = %e, "publish stream ended");
                Read::End
            }
            ReadFailure::Refused(e) => Read::Stop(e),
        },
    }
}

/// A uni publish stream.
pub(super) async fn fire_and_forget(
    recv: RecvStream,
    shared: Arc<Shared>,
    control: ControlTx,
    cancel: CancellationToken,
    mut publisher: TopicPublisher,
    progress: FrameProgress,
) {
    let stream_id = u64::from(recv.id());
    let mut frames = frames(recv, &shared, progress);
    let mut handled = 0;
    // Backbone publishes whose acknowledgement is still to come (a local
    // topic's publish is done when `submit` returns).
    let mut in_flight = FuturesOrdered::new();
    loop {
        let frame = tokio::select! {
            frame = frames.next(), if in_flight.len() < IN_FLIGHT => frame,
            Some(acked) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(err) = acked {
                    report(&control, &err);
                }
                continue;
            }
            _ = cancel.cancelled() => return,
        };
        match sort(frame) {
            Read::End => {
                // The receipt says every frame is handled: every
                // acknowledgement first.
                while let Some(acked) = tokio::select! {
                    acked = in_flight.next() => acked,
                    _ = cancel.cancelled() => return,
                } {
                    if let Err(err) = acked {
                        report(&control, &err);
                    }
                }
                // Unlike an error report this waits for room on the control
                // stream: the client's `finish` counts on it, and the stream
                // is over, so waiting holds up nothing else.
                let done = ControlResponse {
                    kind: Some(control_response::Kind::PublishStreamDone(
                        v1::PublishStreamDone {
                            stream_id,
                            frames: handled,
                        },
                    )),
                };
                tokio::select! {
                    _ = control.send(Box::new(done)) => {}
                    _ = cancel.cancelled() => {}
                }
                return;
            }
            Read::Frame(p) => {
                handled += 1;
                match publisher.submit(&p.topic, &p.payload).await {
                    Ok(Submitted::Done(_)) => {}
                    Ok(pending) => in_flight.push_back(pending.ack()),
                    Err(err) => {
                        debug!(error = %err, "publish refused");
                        report(&control, &err);
                    }
                }
            }
            Read::Stop(err) => {
                debug!(error = %err, "bad frame on a publish stream; stopping it");
                let _ = frames.get_mut().stop(code(err.code()));
                report(&control, &err);
                return;
            }
        }
    }
}

/// A bidi (acked) publish stream.
pub(super) async fn acked(
    mut send: SendStream,
    recv: RecvStream,
    shared: Arc<Shared>,
    control: ControlTx,
    cancel: CancellationToken,
    mut publisher: TopicPublisher,
    progress: FrameProgress,
) {
    let mut frames = frames(recv, &shared, progress);
    let mut out = BytesMut::new();
    // Reused batch after batch: no allocation per batch once it has grown.
    let mut submitted = Vec::with_capacity(ACK_BATCH);
    loop {
        let first = tokio::select! {
            frame = frames.next() => frame,
            _ = cancel.cancelled() => return,
        };
        let mut next = Some(first);
        let mut fatal = None;
        let mut ended = false;
        // Submit every frame already received (backbone publishes then
        // wait for their acknowledgements together), answer them in
        // order, then write once.
        while let Some(frame) = next.take() {
            match sort(frame) {
                Read::End => ended = true,
                Read::Frame(p) => {
                    submitted.push(publisher.submit(&p.topic, &p.payload).await);
                    if submitted.len() < ACK_BATCH {
                        next = frames.next().now_or_never();
                    }
                }
                Read::Stop(err) => fatal = Some(err),
            }
        }
        for s in submitted.drain(..) {
            let acked = match s {
                Ok(s) => s.ack().await,
                Err(err) => Err(err),
            };
            let kind = match acked {
                Ok(ack) => publish_result::Kind::Ack(ack),
                Err(err) => {
                    debug!(error = %err, "acked publish refused");
                    publish_result::Kind::Error(err.to_wire(0))
                }
            };
            lapwing_proto::encode_frame(&PublishResult { kind: Some(kind) }, &mut out);
        }
        if let Some(err) = &fatal {
            let result = PublishResult {
                kind: Some(publish_result::Kind::Error(err.to_wire(0))),
            };
            lapwing_proto::encode_frame(&result, &mut out);
        }
        if !out.is_empty() && send.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if let Some(err) = fatal {
            debug!(error = %err, "bad frame on an acked publish stream; stopping it");
            let _ = frames.get_mut().stop(code(err.code()));
            let _ = send.finish();
            report(&control, &err);
            return;
        }
        if ended {
            let _ = send.finish();
            return;
        }
    }
}
