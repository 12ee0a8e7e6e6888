//! What a frame in progress may cost the server: bytes from the server-wide
//! partial-frame budget, and time.
//!
//! A client can start a frame (QUIC) or a gRPC message, announce a large
//! length and stall. Without a bound, each such stream pins what it sent
//! for as long as the connection lives, and a few hundred streams pin
//! gigabytes. [`FrameProgress`] is the one piece of code both edges use to
//! stop that: every byte received for an incomplete frame is charged to
//! [`crate::session::Core::partial_frames`] (`limits.partial_frame_bytes`),
//! and a frame that started must complete within `limits.frame_timeout_ms`.
//! Breaking either ends that stream with RESOURCE_EXHAUSTED or TIMEOUT;
//! the connection and every other client carry on.
//!
//! [`Metered`] applies it to a QUIC receive stream read through a
//! `FramedRead`; the gRPC edge applies it to request bodies
//! (`edge::grpc::limit`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use lapwing_proto::{FrameCodec, FrameError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::FramedRead;

use crate::budget::{Budget, Reservation};
use crate::error::{Exhausted, RequestError};

/// See the module docs.
///
/// Cheap on the hot path: a frame that completes within one read costs no
/// budget operation, the clock is read once per read (not per frame: the
/// frames one read brings all arrived then), and the timer is armed only
/// when a read has to wait with a frame in progress (a busy stream never
/// touches the timer).
#[derive(Debug)]
pub struct FrameProgress {
    held: Reservation,
    timeout: Duration,
    /// When the frame now in progress started arriving (None: none is).
    since: Option<Instant>,
    /// When the last bytes arrived: a frame that starts in them started
    /// then.
    last_arrival: Option<Instant>,
    /// Armed only while a read waits with a frame in progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl FrameProgress {
    /// Nothing held yet; frames must complete within `timeout`.
    pub fn new(budget: &Arc<Budget>, timeout: Duration) -> FrameProgress {
        FrameProgress {
            held: budget.empty(),
            timeout,
            since: None,
            last_arrival: None,
            timer: None,
        }
    }

    /// `n` more bytes of an incomplete frame arrived at `now`.
    pub fn arrived(&mut self, n: usize, now: Instant) -> Result<(), RequestError> {
        if n == 0 {
            return Ok(());
        }
        if !self.held.grow(n) {
            return Err(Exhausted::PartialFrames {
                limit: self.held.budget_limit(),
            }
            .into());
        }
        self.since.get_or_insert(now);
        self.last_arrival = Some(now);
        Ok(())
    }

    /// Frames completed; `buffered` bytes of the next one are held now.
    /// That frame's deadline runs from the arrival its first bytes came
    /// in, the last one (they follow the completed frame's bytes).
    pub fn settle(&mut self, buffered: usize) {
        let buffered = buffered.min(self.held.bytes());
        if buffered != self.held.bytes() {
            // Shrinking never fails.
            self.held.set(buffered);
        }
        self.since = self.last_arrival.filter(|_| buffered > 0);
    }

    /// The error for a frame in progress that is late at `now` (checked
    /// when data arrives, so a client trickling bytes cannot hold a frame
    /// open past its deadline).
    pub fn late(&self, now: Instant) -> Option<RequestError> {
        let since = self.since?;
        (now.saturating_duration_since(since) >= self.timeout).then(|| self.timed_out())
    }

    /// For a read that has to wait: ready with an error once the frame in
    /// progress is late; registers the waker otherwise.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<RequestError> {
        let Some(since) = self.since else {
            return Poll::Pending;
        };
        let at = since + self.timeout;
        let timer = match &mut self.timer {
            Some(t) => {
                if t.deadline() != at {
                    t.as_mut().reset(at);
                }
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(self.timed_out()),
            Poll::Pending => Poll::Pending,
        }
    }

    fn timed_out(&self) -> RequestError {
        RequestError::Timeout(format!(
            "a frame was started and not completed within {} ms (limits.frame_timeout_ms)",
            self.timeout.as_millis()
        ))
    }
}

/// An `AsyncRead` whose bytes are charged to a [`FrameProgress`] until a
/// frame completes (see [`MeteredFrames`]).
#[derive(Debug)]
pub struct Metered<R> {
    inner: R,
    progress: FrameProgress,
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                if let Some(e) = this.progress.late(now) {
                    return Poll::Ready(Err(into_io(e)));
                }
                let n = buf.filled().len() - before;
                Poll::Ready(this.progress.arrived(n, now).map_err(into_io))
            }
            Poll::Pending => match this.progress.poll_deadline(cx) {
                Poll::Ready(e) => Poll::Ready(Err(into_io(e))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

/// The request error a metered read failed with, carried through the
/// codec's `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Refused(RequestError);

fn into_io(e: RequestError) -> std::io::Error {
    std::io::Error::other(Refused(e))
}

/// What a failed frame read means.
#[derive(Debug)]
pub enum ReadFailure {
    /// The peer broke a rule (malformed or oversize frame, over the
    /// partial-frame budget, too slow): answer with this error.
    Refused(RequestError),
    /// The stream or connection itself failed: nobody to answer.
    Gone(std::io::Error),
}

/// Sorts a frame error into [`ReadFailure`]; a metered refusal keeps its
/// own code.
pub fn classify(e: FrameError) -> ReadFailure {
    match e {
        FrameError::Io(io) => match io.downcast::<Refused>() {
            Ok(Refused(e)) => ReadFailure::Refused(e),
            Err(io) => ReadFailure::Gone(io),
        },
        other => ReadFailure::Refused(RequestError::from(other)),
    }
}

/// Frames of type `M` read from `R`, with every incomplete frame metered.
#[derive(Debug)]
pub struct MeteredFrames<R, M> {
    frames: FramedRead<Metered<R>, FrameCodec<M>>,
}

impl<R: AsyncRead + Unpin, M: prost::Message + Default> MeteredFrames<R, M> {
    /// Frames of at most `max_frame_bytes`, metered by `progress`;
    /// `capacity` is the initial read buffer.
    pub fn new(inner: R, max_frame_bytes: usize, progress: FrameProgress, capacity: usize) -> Self {
        MeteredFrames {
            frames: FramedRead::with_capacity(
                Metered { inner, progress },
                FrameCodec::new(max_frame_bytes),
                capacity,
            ),
        }
    }

    /// The next frame (cancel-safe); `None` at a clean end of stream. A
    /// refusal by the meter is a [`FrameError::Io`] that [`classify`]
    /// turns back into its error.
    pub async fn next(&mut self) -> Option<Result<M, FrameError>> {
        let frame = self.frames.next().await;
        if let Some(Ok(_)) = &frame {
            let buffered = self.frames.read_buffer().len();
            self.frames.get_mut().progress.settle(buffered);
        }
        frame
    }

    /// Changes the largest accepted frame.
    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.frames.decoder_mut().set_max_frame_bytes(max);
    }

    /// The underlying reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.frames.get_mut().inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapwing_proto::v1;
    use tokio::io::AsyncWriteExt;

    fn refused(e: FrameError) -> RequestError {
        match classify(e) {
            ReadFailure::Refused(e) => e,
            ReadFailure::Gone(e) => panic!("expected a refusal, got {e}"),
        }
    }

    /// A client end, and the server's metered frames of a publish stream
    /// with a 30 s frame deadline.
    fn metered_stream(
        budget: &Arc<Budget>,
    ) -> (
        tokio::io::DuplexStream,
        MeteredFrames<tokio::io::DuplexStream, v1::Publish>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let progress = FrameProgress::new(budget, Duration::from_secs(30));
        (client, MeteredFrames::new(server, 1 << 20, progress, 512))
    }

    fn publish(topic: &str, len: usize) -> bytes::BytesMut {
        let mut buf = bytes::BytesMut::new();
        lapwing_proto::encode_frame(
            &v1::Publish {
                topic: topic.into(),
                payload: vec![1; len].into(),
            },
            &mut buf,
        );
        buf
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_frame_times_out_and_complete_frames_release_their_bytes() {
        let budget = Budget::new(1 << 20);
        let (mut client, mut frames) = metered_stream(&budget);
        client.write_all(&publish("a", 1000)).await.unwrap();
        let first = frames.next().await.unwrap().unwrap();
        assert_eq!(first.payload.len(), 1000);
        assert_eq!(budget.used(), 0, "a complete frame holds nothing");
        let half = publish("b", 4000);
        client.write_all(&half[..2000]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = refused(frames.next().await.unwrap().unwrap_err());
        assert_eq!(err.code(), lapwing_proto::v1::ErrorCode::Timeout, "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(frames);
        assert_eq!(budget.used(), 0, "given back when the stream goes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_arrived_behind_others_is_late_from_when_it_arrived() {
        // One read brings two whole frames and the start of a third; the
        // third's deadline runs from that read, however long the server
        // takes over the first two.
        let budget = Budget::new(1 << 20);
        let (mut client, mut frames) = metered_stream(&budget);
        let mut wire = publish("a", 100);
        wire.extend_from_slice(&publish("b", 100));
        let third = publish("c", 4000);
        wire.extend_from_slice(&third[..1000]);
        client.write_all(&wire).await.unwrap();
        let arrived = tokio::time::Instant::now();
        assert_eq!(frames.next().await.unwrap().unwrap().topic, "a");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(frames.next().await.unwrap().unwrap().topic, "b");
        assert!(budget.used() > 0, "the third frame's start is held");
        let err = refused(frames.next().await.unwrap().unwrap_err());
        assert_eq!(err.code(), lapwing_proto::v1::ErrorCode::Timeout, "{err}");
        assert_eq!(arrived.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_trickled_byte_by_byte_still_times_out() {
        let budget = Budget::new(1 << 20);
        let (mut client, mut frames) = metered_stream(&budget);
        let frame = publish("a", 100);
        let started = tokio::time::Instant::now();
        let reader = tokio::spawn(async move { frames.next().await });
        for byte in frame.iter().take(10) {
            if client.write_all(&[*byte]).await.is_err() {
                break; // the reader gave up and dropped the stream
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let err = refused(reader.await.unwrap().unwrap().unwrap_err());
        assert_eq!(err.code(), lapwing_proto::v1::ErrorCode::Timeout, "{err}");
        assert!(
            started.elapsed() <= Duration::from_secs(40),
            "{:?}",
            started.elapsed()
        );
        drop(client);
    }

    #[tokio::test]
    async fn partial_frames_share_one_budget() {
        let budget = Budget::new(3000);
        let (mut c1, s1) = tokio::io::duplex(1 << 16);
        let (mut c2, s2) = tokio::io::duplex(1 << 16);
        let timeout = Duration::from_secs(30);
        let mut a = MeteredFrames::<_, v1::Publish>::new(
            s1,
            1 << 20,
            FrameProgress::new(&budget, timeout),
            512,
        );
        let mut b = MeteredFrames::<_, v1::Publish>::new(
            s2,
            1 << 20,
            FrameProgress::new(&budget, timeout),
            512,
        );
        let big = publish("a", 10_000);
        c1.write_all(&big[..2000]).await.unwrap();
        c2.write_all(&big[..2000]).await.unwrap();
        let poll_once =
            |f: &mut MeteredFrames<_, v1::Publish>| futures::FutureExt::now_or_never(f.next());
        assert!(poll_once(&mut a).is_none(), "2000 bytes held, waiting");
        let err = match poll_once(&mut b) {
            Some(Some(Err(e))) => refused(e),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            err.code(),
            lapwing_proto::v1::ErrorCode::ResourceExhausted,
            "{err}"
        );
        assert!(err.to_string().contains("limits.partial_frame_bytes"));
        drop(b);
        assert_eq!(
            budget.used(),
            2000,
            "the refused stream gave back what it held"
        );
    }
}
