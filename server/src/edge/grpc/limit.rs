//! Request bodies charged to the partial-frame budget, as QUIC streams are
//! (see `crate::partial`).
//!
//! tonic buffers a gRPC message until it is complete, up to the decoding
//! limit. Without this layer a client could open many streaming calls,
//! start a large message on each and stall, pinning hundreds of megabytes.
//! Each request body is wrapped in a [`MeteredBody`] that follows the gRPC
//! framing (a 5-byte header: flag and big-endian length) as DATA frames
//! pass through, charges the bytes of the message in progress to the
//! shared budget, gives them back when the message is complete, and fails
//! the body with a Lapwing status when the budget is used up, a message is
//! late (`limits.frame_timeout_ms`), or a header announces more than the
//! decoding limit (FRAME_TOO_LARGE, where tonic would say `OUT_OF_RANGE`
//! without a Lapwing code). tonic hands a body error that is a `Status` to
//! the call as is.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::budget::Budget;
use crate::error::RequestError;
use crate::partial::FrameProgress;

/// Length of a gRPC message header: compression flag + u32 length.
const HEADER: usize = 5;

/// The tower layer; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct MeterBodies {
    budget: Arc<Budget>,
    timeout: Duration,
    max_message: usize,
}

impl MeterBodies {
    pub(crate) fn new(budget: Arc<Budget>, timeout: Duration, max_message: usize) -> MeterBodies {
        MeterBodies {
            budget,
            timeout,
            max_message,
        }
    }
}

impl<S> tower::Layer<S> for MeterBodies {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            meter: self.clone(),
        }
    }
}

type Req = http::Request<tonic::body::Body>;

/// The service [`MeterBodies`] wraps around tonic's router.
#[derive(Debug, Clone)]
pub(crate) struct Metered<S> {
    inner: S,
    meter: MeterBodies,
}

impl<S: tower::Service<Req>> tower::Service<Req> for Metered<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        let meter = &self.meter;
        self.inner
            .call(req.map(|body| tonic::body::Body::new(MeteredBody::new(body, meter))))
    }
}

/// One request body, metered; see the module docs.
pub(crate) struct MeteredBody {
    inner: tonic::body::Body,
    progress: FrameProgress,
    framing: Framing,
    max_message: usize,
    failed: bool,
}

impl MeteredBody {
    fn new(inner: tonic::body::Body, meter: &MeterBodies) -> MeteredBody {
        MeteredBody {
            inner,
            progress: FrameProgress::new(&meter.budget, meter.timeout),
            framing: Framing::default(),
            max_message: meter.max_message,
            failed: false,
        }
    }

    /// Follows the framing through one DATA chunk, charging and releasing.
    fn account(&mut self, mut chunk: &[u8], now: Instant) -> Result<(), RequestError> {
        while !chunk.is_empty() {
            let took = self.framing.take(chunk);
            chunk = &chunk[took..];
            if let Some(len) = self.framing.announced() {
                if len > self.max_message {
                    return Err(RequestError::FrameTooLarge {
                        len: len as u64,
                        max: self.max_message,
                    });
                }
            }
            if self.framing.complete() {
                self.framing = Framing::default();
                self.progress.settle(0);
            } else {
                self.progress.arrived(took, now)?;
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: RequestError) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.failed = true;
        self.progress.settle(0);
        Poll::Ready(Some(Err(super::status(&e))))
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                if let Some(e) = self.progress.late(now) {
                    return self.fail(e);
                }
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    if let Err(e) = self.account(&data, now) {
                        return self.fail(e);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.progress.poll_deadline(cx) {
                Poll::Ready(e) => self.fail(e),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a body is in the gRPC framing.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; HEADER],
    header_len: usize,
    /// Body bytes of the current message still to come (valid once the
    /// header is complete).
    remaining: usize,
}

impl Framing {
    /// Consumes the start of `chunk` that belongs to the current message;
    /// returns how many bytes.
    fn take(&mut self, chunk: &[u8]) -> usize {
        if self.header_len < HEADER {
            let n = (HEADER - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[..n]);
            self.header_len += n;
            if self.header_len == HEADER {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = len as usize;
            }
            return n;
        }
        let n = self.remaining.min(chunk.len());
        self.remaining -= n;
        n
    }

    /// The announced length, once the header is complete.
    fn announced(&self) -> Option<usize> {
        (self.header_len == HEADER).then(|| {
            u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize
        })
    }

    fn complete(&self) -> bool {
        self.header_len == HEADER && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    fn body(budget: &Arc<Budget>, max: usize) -> MeteredBody {
        MeteredBody::new(
            tonic::body::Body::empty(),
            &MeterBodies::new(budget.clone(), Duration::from_secs(30), max),
        )
    }

    #[tokio::test]
    async fn messages_split_anywhere_hold_only_the_message_in_progress() {
        let budget = Budget::new(1 << 20);
        let mut b = body(&budget, 1 << 20);
        let mut wire = message(100);
        wire.extend(message(0));
        wire.extend(message(300));
        for chunk in wire.chunks(7) {
            b.account(chunk, Instant::now()).unwrap();
        }
        assert_eq!(budget.used(), 0, "all three complete");
        let next = message(1000);
        b.account(&next[..400], Instant::now()).unwrap();
        assert_eq!(budget.used(), 400);
        b.account(&next[400..], Instant::now()).unwrap();
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn over_budget_and_oversize_are_typed() {
        let budget = Budget::new(1000);
        let mut a = body(&budget, 1 << 20);
        let mut b = body(&budget, 1 << 20);
        a.account(&message(5000)[..800], Instant::now()).unwrap();
        let e = b
            .account(&message(5000)[..800], Instant::now())
            .unwrap_err();
        assert_eq!(e.code(), lapwing_proto::v1::ErrorCode::ResourceExhausted);
        let mut c = body(&Budget::new(1 << 20), 100);
        let e = c.account(&message(101)[..10], Instant::now()).unwrap_err();
        assert_eq!(e.code(), lapwing_proto::v1::ErrorCode::FrameTooLarge);
    }
}
