//! Publishing: one long-lived uni stream per [`Publisher`] handle, fed by a
//! task that batches whatever is queued into one write; and one bidi stream
//! per connection for acknowledged publishes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lapwing_proto::v1::{self, publish_result};
use lapwing_proto::{encode_frame, FrameCodec};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::shared::{ConnState, Handle, Shared};
use crate::ClientError;

/// The result of an acknowledged publish: where the message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// The topic's epoch (changes when the topic is recreated or the
    /// server restarts).
    pub epoch: u64,
    /// The message's sequence number in `epoch`.
    pub seq: u64,
}

/// Publishes queued per handle before `publish` waits.
const QUEUE: usize = 4096;
/// Stop adding frames to one write at about this many bytes.
const MAX_WRITE_BYTES: usize = 256 * 1024;
/// How long [`Publisher::finish`] waits for the server's receipt.
const RECEIPT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum PubCmd {
    Publish(v1::Publish),
    /// Reply once everything queued before has been written.
    Flush(oneshot::Sender<Result<(), ClientError>>),
    /// Finish the stream, wait until the server has it all, reply.
    Finish(oneshot::Sender<Result<(), ClientError>>),
}

/// Fire-and-forget bytes lost since the last flush or finish answered, and
/// why: reported once, by the next answer, so a caller that flushes learns
/// of every loss (at most once delivery, but never a silent one).
#[derive(Debug, Default)]
struct Dropped {
    bytes: usize,
    reason: Option<String>,
}

impl Dropped {
    fn add(&mut self, bytes: usize, reason: impl FnOnce() -> String) {
        self.bytes += bytes;
        if self.reason.is_none() {
            self.reason = Some(reason());
        }
    }

    /// The answer for one waiter; [`Dropped::reset`] after answering all.
    fn result(&self) -> Result<(), ClientError> {
        match &self.reason {
            None => Ok(()),
            Some(reason) => Err(ClientError::PublishesDropped {
                bytes: self.bytes,
                reason: reason.clone(),
            }),
        }
    }

    fn reset(&mut self) {
        *self = Dropped::default();
    }
}

/// Fire-and-forget streams finished and waiting for the server's
/// `PublishStreamDone`, by (connection, stream id). QUIC's acknowledgement
/// of a stream's bytes says only that they reached the server's QUIC stack,
/// not that the server read them before closing the connection; the
/// receipt says every frame was handled.
#[derive(Debug, Default)]
pub(crate) struct StreamReceipts {
    waiting: std::sync::Mutex<HashMap<(usize, u64), oneshot::Sender<()>>>,
}

impl StreamReceipts {
    /// Waits for the receipt of `stream` on `conn` (register before
    /// finishing the stream, so the receipt cannot come first).
    fn expect(&self, conn: &quinn::Connection, stream: &quinn::SendStream) -> Receipt<'_> {
        let key = (conn.stable_id(), u64::from(stream.id()));
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key, tx);
        Receipt {
            receipts: self,
            key,
            rx,
        }
    }

    /// A `PublishStreamDone` arrived on connection `conn`.
    pub(crate) fn done(&self, conn: usize, done: &v1::PublishStreamDone) {
        match self.lock().remove(&(conn, done.stream_id)) {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => tracing::debug!(?done, "receipt for a stream nobody waits on"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, u64), oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One awaited receipt; dropping it forgets the stream.
struct Receipt<'a> {
    receipts: &'a StreamReceipts,
    key: (usize, u64),
    rx: oneshot::Receiver<()>,
}

impl Drop for Receipt<'_> {
    fn drop(&mut self) {
        self.receipts.lock().remove(&self.key);
    }
}

/// A fire-and-forget publisher with its own QUIC stream.
///
/// Publishes through one handle (and its clones) reach the server in the
/// order they were made; separate handles are separate streams, with no
/// order between them and no head-of-line blocking. Delivery is at most
/// once: frames in flight when the connection breaks are lost; after a
/// reconnect the handle continues on a new stream.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<PubCmd>,
    handle: Handle,
}

impl Publisher {
    pub(crate) fn new(handle: Handle) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run_publisher(handle.shared.clone(), rx));
        Publisher { tx, handle }
    }

    /// Queues one message. Waits only when the queue is full (the
    /// connection is slower than the caller, or reconnecting).
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        let publish = self.handle.checked_publish(topic, payload.into())?;
        self.tx
            .send(PubCmd::Publish(publish))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Waits until everything queued so far is written to the connection.
    ///
    /// Fails with [`ClientError::PublishesDropped`] when a failed write (a
    /// lost connection, or no connection left) dropped publishes since the
    /// previous `flush` or `finish` answered; each loss is reported once.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(PubCmd::Flush(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Flushes, ends the stream and waits (at most 10 s) until
    /// the server confirms it handled every frame on it. The handle keeps
    /// working afterwards (on a new stream).
    ///
    /// Fails like [`Publisher::flush`], and also when the connection broke,
    /// the server stopped the stream, or no confirmation came in time: the
    /// publishes since the last answer are then not known to be published.
    pub async fn finish(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(PubCmd::Finish(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

async fn run_publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<PubCmd>) {
    let mut conn_rx = shared.conn_tx.subscribe();
    let mut stream: Option<(quinn::Connection, quinn::SendStream)> = None;
    let mut buf = BytesMut::new();
    let mut replies = Vec::new();
    let mut finish = None;
    let mut dropped = Dropped::default();
    while let Some(first) = rx.recv().await {
        // Take everything already queued, up to one write's worth.
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                PubCmd::Publish(p) => encode_frame(&p, &mut buf),
                PubCmd::Flush(reply) => replies.push(reply),
                PubCmd::Finish(reply) => {
                    finish = Some(reply);
                    break;
                }
            }
            if buf.len() < MAX_WRITE_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if stream.is_none() {
                stream = open_stream(&shared, &mut conn_rx).await;
            }
            match &mut stream {
                Some((_, s)) => {
                    if let Err(e) = s.write_all(&buf).await {
                        tracing::debug!(error = %e, dropped_bytes = buf.len(), "publish stream lost");
                        dropped.add(buf.len(), || format!("publish stream write failed: {e}"));
                        stream = None;
                    }
                }
                None => {
                    tracing::debug!(
                        dropped_bytes = buf.len(),
                        "no connection; publishes dropped"
                    );
                    dropped.add(buf.len(), || "the client has no connection".into());
                }
            }
            buf.clear();
        }
        if finish.is_some() {
            if let Some((conn, s)) = stream.take() {
                if let Err(reason) = confirm(&shared.receipts, &conn, s).await {
                    dropped.add(0, || reason);
                }
            }
        }
        // A drop is reported to whoever waits now, or kept for the next
        // flush or finish: a publish written on its own (no waiter in its
        // batch) must not lose its drop to the reset.
        let mut answered = false;
        for reply in replies.drain(..).chain(finish.take()) {
            let _ = reply.send(dropped.result());
            answered = true;
        }
        if answered {
            dropped.reset();
        }
    }
    if let Some((_, mut s)) = stream {
        let _ = s.finish();
    }
}

/// Finishes `stream` and waits for the server's receipt of it: `Err` says
/// why its publishes are not known to be published.
async fn confirm(
    receipts: &StreamReceipts,
    conn: &quinn::Connection,
    mut stream: quinn::SendStream,
) -> Result<(), String> {
    let mut receipt = receipts.expect(conn, &stream);
    if let Err(e) = stream.finish() {
        // quinn forgets a stream when its connection closes, so a stream
        // that still took writes may be gone by now.
        return Err(format!(
            "the publish stream closed before it was finished: {e}"
        ));
    }
    let stopped = async {
        match stream.stopped().await {
            // Every byte acknowledged by QUIC: now the receipt decides.
            Ok(None) => std::future::pending().await,
            Ok(Some(code)) => format!("the server stopped the publish stream (code {code})"),
            Err(e) => format!("the publish stream ended before the server confirmed it: {e}"),
        }
    };
    let waited = tokio::time::timeout(RECEIPT_WAIT, async {
        tokio::select! {
            got = &mut receipt.rx => got.map_err(|_| "the receipt was dropped".to_owned()),
            reason = stopped => Err(reason),
            e = conn.closed() => Err(format!("the connection ended before the server confirmed the publish stream: {e}")),
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the server did not confirm the publish stream within {RECEIPT_WAIT:?}"
        )),
    }
}

async fn open_stream(
    shared: &Shared,
    conn_rx: &mut tokio::sync::watch::Receiver<ConnState>,
) -> Option<(quinn::Connection, quinn::SendStream)> {
    // A stream can fail to open only when the connection just broke; the
    // driver then installs a new one, so try a few times.
    for _ in 0..3 {
        let conn = shared.connection(conn_rx).await.ok()?;
        match conn.open_uni().await {
            Ok(s) => return Some((conn, s)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot open a publish stream");
                conn_rx.mark_changed();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
            }
        }
    }
    None
}

/// One acknowledged publish waiting for its result.
#[derive(Debug)]
pub(crate) struct AckRequest {
    pub(crate) publish: v1::Publish,
    pub(crate) reply: oneshot::Sender<Result<PublishAck, ClientError>>,
}

/// Runs the acked publish stream: writes requests as they come (batched),
/// matches results to requests in order, and on a broken connection fails
/// what was in flight and continues on the next connection.
pub(crate) async fn run_acked(shared: Arc<Shared>, mut rx: mpsc::Receiver<AckRequest>) {
    let mut conn_rx = shared.conn_tx.subscribe();
    let mut queued: Option<AckRequest> = None;
    loop {
        let first = match queued.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let conn = match shared.connection(&mut conn_rx).await {
            Ok(c) => c,
            Err(e) => {
                let _ = first.reply.send(Err(e));
                // Fail everything else the same way, then stop.
                rx.close();
                while let Some(r) = rx.recv().await {
                    let _ = r.reply.send(Err(ClientError::Closed));
                }
                return;
            }
        };
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                let _ = first.reply.send(Err(ClientError::Connection(e)));
                continue;
            }
        };
        let mut results = FramedRead::new(
            recv,
            FrameCodec::<v1::PublishResult>::new(shared.max_frame_bytes()),
        );
        let mut inflight: VecDeque<oneshot::Sender<Result<PublishAck, ClientError>>> =
            VecDeque::new();
        let mut buf = BytesMut::new();
        let mut next = Some(first);
        let mut input_open = true;
        'stream: loop {
            if let Some(r) = next.take() {
                encode_frame(&r.publish, &mut buf);
                inflight.push_back(r.reply);
                while buf.len() < MAX_WRITE_BYTES {
                    match rx.try_recv() {
                        Ok(r) => {
                            encode_frame(&r.publish, &mut buf);
                            inflight.push_back(r.reply);
                        }
                        Err(_) => break,
                    }
                }
                let written = send.write_all(&buf).await;
                buf.clear();
                if written.is_err() {
                    break 'stream;
                }
            }
            if !input_open && inflight.is_empty() {
                let _ = send.finish();
                return;
            }
            tokio::select! {
                r = rx.recv(), if input_open => match r {
                    Some(r) => next = Some(r),
                    None => input_open = false,
                },
                res = results.next() => match res {
                    Some(Ok(result)) => {
                        let Some(reply) = inflight.pop_front() else {
                            tracing::warn!("publish result without a request");
                            continue;
                        };
                        let answer = match result.kind {
                            Some(publish_result::Kind::Ack(a)) => Ok(PublishAck { epoch: a.epoch, seq: a.seq }),
                            Some(publish_result::Kind::Error(e)) => Err(ClientError::server(e)),
                            None => Err(ClientError::Protocol("empty PublishResult".into())),
                        };
                        let _ = reply.send(answer);
                    }
                    Some(Err(_)) | None => break 'stream,
                },
            }
        }
        for reply in inflight.drain(..) {
            let _ = reply.send(Err(ClientError::ConnectionLost));
        }
        if !input_open {
            return;
        }
        // Wait for the driver to replace the broken connection.
        conn_rx.mark_changed();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    }
}
