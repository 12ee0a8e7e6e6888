//! A connection's session, driven by its control stream.
//!
//! Order of a session: handshake (ALPN checked, `limits.handshake_timeout_ms`);
//! the first bidi stream is the control stream and its first frame must be
//! Hello (within the hello timeout, at most 64 KiB); version and token are
//! checked; the connection is admitted through the session layer's gate
//! (shared with the gRPC edge); Welcome. Only then are publish streams
//! accepted and requests served. What a request means is decided by
//! [`crate::session::Session::control`]; this module only reads frames,
//! runs subscription tasks and writes responses. Errors that concern one
//! request are answered with an Error frame and the session goes on; errors
//! that make the control stream unusable (undecodable frame, a frame left
//! incomplete past `limits.frame_timeout_ms`) or refuse the client
//! (version, token, connection cap) are answered with an Error frame and
//! the connection is closed with that code.
//!
//! Responses are written by one writer task fed by a channel, so
//! subscription and publish tasks can report errors on the control stream
//! without sharing the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use lapwing_proto::v1::{
    self, control_request, control_response, ControlRequest, ControlResponse, ErrorCode,
};
use lapwing_proto::{FrameError, PRE_HELLO_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use super::ingest::{self, Mover};
use super::{code, publish, subscription, Shared};
use crate::drain::StartAt;
use crate::error::RequestError;
use crate::partial::{classify, FrameProgress, MeteredFrames, ReadFailure};
use crate::permissions::Guard;
use crate::session::{Action, LiveSubscriptions, Session};
use crate::topic_publisher::TopicPublisher;
use crate::transport::Transport;

/// Time allowed for a final Error/GoAway to reach the client before close.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Responses queued for the control writer before senders wait.
const CONTROL_QUEUE: usize = 256;
/// Initial read buffer of the control stream.
const CONTROL_READ_BUFFER: usize = 512;

type ControlFrames = MeteredFrames<RecvStream, ControlRequest>;

/// Sends responses to the control stream's writer task. Boxed: tokio's
/// channel allocates its first block of 32 slots up front, and 32 inline
/// responses are ~8 KiB per idle connection; 32 pointers are 256 B.
pub(super) type ControlTx = mpsc::Sender<Box<ControlResponse>>;

pub(super) fn error_response(err: &RequestError, subscription_id: u64) -> ControlResponse {
    ControlResponse {
        kind: Some(control_response::Kind::Error(err.to_wire(subscription_id))),
    }
}

/// One incoming connection, from handshake to close. `handshake` is its
/// place among connections still in their handshake, given back once the
/// session is admitted or refused.
pub(super) async fn handle_connection(
    incoming: quinn::Incoming,
    handshake: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) {
    let remote = incoming.remote_address();
    // The driver quinn spawns for the connection, to move to the ingest
    // lane if it publishes.
    let (connecting, driver) = ingest::caught(|| {
        if super::is_loopback(remote) {
            incoming.accept_with(shared.loopback.clone())
        } else {
            incoming.accept()
        }
    });
    let connecting = match connecting {
        Ok(c) => c,
        Err(e) => {
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let done = tokio::time::timeout(shared.core.limits.handshake_timeout, connecting);
    let conn = match done.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "handshake timed out");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(lapwing_proto::ALPN) {
        // rustls already refuses a mismatching ALPN; this catches a client
        // that offered none at all.
        debug!(%remote, "connection without ALPN lapwing/1");
        conn.close(code(ErrorCode::Protocol), b"ALPN lapwing/1 required");
        return;
    }
    let span = tracing::info_span!("conn", %remote, id = tracing::field::Empty);
    run_session(conn, driver, handshake, shared)
        .instrument(span)
        .await;
}

async fn run_session(
    conn: Connection,
    driver: Option<Mover>,
    handshake: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) {
    let hello = hello(&conn, &shared).await;
    drop(handshake);
    let Some((send, mut frames, session, guard)) = hello else {
        return;
    };
    tracing::Span::current().record("id", session.id());
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let writer = tokio::spawn(write_control(send, rx));
    let cancel = shared.core.shutdown.child_token();
    let mut control = Control {
        conn: conn.clone(),
        shared: shared.clone(),
        tx,
        cancel: cancel.clone(),
        subs: Subs::default(),
        session,
        guard,
        driver,
    };
    let close = control.serve(&mut frames).await;
    // Stop every task of this connection, then let the writer flush what
    // is queued (a final Error or GoAway) before the connection closes.
    cancel.cancel();
    for (_, sub) in control.subs.0.drain() {
        sub.cancel.cancel();
    }
    drop(control);
    if let Some((close_code, reason)) = close {
        if let Ok(Ok(Some(send))) = tokio::time::timeout(FLUSH_TIMEOUT, writer).await {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
        }
        conn.close(close_code, reason.as_bytes());
    } else {
        writer.abort();
    }
    info!("disconnected");
}

/// What came first on a new connection's control stream.
enum First {
    Frame(Option<Result<ControlRequest, FrameError>>),
    TimedOut,
    EarlyStream,
}

/// Reads and checks Hello, admits the connection, answers Welcome. On
/// failure the client got an Error frame and the connection is closed.
async fn hello(
    conn: &Connection,
    shared: &Shared,
) -> Option<(SendStream, ControlFrames, Session, Guard)> {
    let core = &shared.core;
    let limits = &core.limits;
    let deadline = tokio::time::Instant::now() + limits.hello_timeout;
    let opened = tokio::select! {
        opened = conn.accept_bi() => opened,
        _ = conn.accept_uni() => {
            info!("publish stream opened before Hello");
            conn.close(code(ErrorCode::Protocol), b"stream opened before Hello/Welcome");
            return None;
        }
        _ = tokio::time::sleep_until(deadline) => {
            conn.close(code(ErrorCode::Timeout), b"no control stream in time");
            return None;
        }
    };
    let (send, recv) = match opened {
        Ok(streams) => streams,
        Err(e) => {
            debug!(error = %e, "closed before opening the control stream");
            return None;
        }
    };
    // Control frames are small, so the stream keeps the pre-Hello limit for
    // good; the buffer starts small and grows for a larger frame. (The
    // codec's 8 KiB default, per idle connection, is 80 MB at 10 000.)
    let progress = FrameProgress::new(&core.partial_frames, limits.frame_timeout);
    let mut frames = MeteredFrames::new(
        recv,
        PRE_HELLO_MAX_FRAME_BYTES,
        progress,
        CONTROL_READ_BUFFER,
    );
    // Before Welcome, any other stream is a protocol error.
    let early_stream = async {
        tokio::select! {
            _ = conn.accept_uni() => {}
            _ = conn.accept_bi() => {}
        }
    };
    let first = tokio::select! {
        first = tokio::time::timeout_at(deadline, frames.next()) => match first {
            Ok(frame) => First::Frame(frame),
            Err(_) => First::TimedOut,
        },
        _ = early_stream => First::EarlyStream,
    };
    let first = match first {
        First::TimedOut => Err(RequestError::Timeout("no Hello in time".into())),
        First::EarlyStream => Err(RequestError::Protocol(
            "a stream was opened before Welcome".into(),
        )),
        First::Frame(None) => return None,
        First::Frame(Some(Err(e))) => match classify(e) {
            ReadFailure::Refused(e) => Err(e),
            ReadFailure::Gone(e) => {
                debug!(error = %e, "control stream failed before Hello");
                return None;
            }
        },
        First::Frame(Some(Ok(ControlRequest {
            kind: Some(control_request::Kind::Hello(h)),
        }))) => Ok(h),
        First::Frame(Some(Ok(_))) => Err(RequestError::Protocol(
            "the first frame on the control stream must be Hello".into(),
        )),
    };
    let admitted = first.and_then(|h| {
        if h.version != PROTOCOL_VERSION {
            return Err(RequestError::UnsupportedVersion {
                got: h.version,
                supported: PROTOCOL_VERSION,
            });
        }
        let certificate = peer_certificate(conn);
        let guard = core.identify(certificate.as_deref(), &h.token)?;
        let session = core.admit(Transport::Quic, conn.remote_address(), &h.client_name)?;
        Ok((session, guard))
    });
    let mut send = send;
    match admitted {
        Ok((session, guard)) => {
            let welcome = ControlResponse {
                kind: Some(control_response::Kind::Welcome(v1::Welcome {
                    version: PROTOCOL_VERSION,
                    server_name: shared.server_name.clone(),
                    max_message_bytes: limits.max_message_bytes as u64,
                    max_frame_bytes: limits.max_frame_bytes as u64,
                    max_subscriptions: limits.max_subscriptions,
                    connection_id: session.id(),
                })),
            };
            let mut buf = BytesMut::new();
            lapwing_proto::encode_frame(&welcome, &mut buf);
            send.write_all(&buf).await.ok()?;
            info!(client = ?session.connection().info().client_name,
                principal = %guard.principal().name(), "connected");
            Some((send, frames, session, guard))
        }
        Err(err) => {
            info!(error = %err, "client refused");
            let mut buf = BytesMut::new();
            lapwing_proto::encode_frame(&error_response(&err, 0), &mut buf);
            if send.write_all(&buf).await.is_ok() && send.finish().is_ok() {
                let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
            }
            conn.close(code(err.code()), err.to_string().as_bytes());
            None
        }
    }
}

/// The leaf of the client certificate the handshake verified, if any
/// (only asked for with `tls.client_ca`).
fn peer_certificate(conn: &Connection) -> Option<Vec<u8>> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().map(|c| c.to_vec())
}

/// Writes queued responses, coalescing whatever is queued into one write.
/// Returns the stream (finished) so the session can wait for delivery.
async fn write_control(
    mut send: SendStream,
    mut rx: mpsc::Receiver<Box<ControlResponse>>,
) -> Option<SendStream> {
    // Allocated on the first response, not per idle connection up front.
    let mut buf = BytesMut::new();
    while let Some(msg) = rx.recv().await {
        lapwing_proto::encode_frame(&msg, &mut buf);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => lapwing_proto::encode_frame(&more, &mut buf),
                Err(_) => break,
            }
        }
        if send.write_all(&buf).await.is_err() {
            return None;
        }
        buf.clear();
    }
    send.finish().ok()?;
    Some(send)
}

#[derive(Debug)]
struct SubHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The live subscription tasks of one connection.
#[derive(Debug, Default)]
struct Subs(HashMap<u64, SubHandle>);

impl LiveSubscriptions for Subs {
    fn contains(&self, id: u64) -> bool {
        self.0.contains_key(&id)
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

struct Control {
    conn: Connection,
    shared: Arc<Shared>,
    tx: ControlTx,
    cancel: CancellationToken,
    subs: Subs,
    session: Session,
    /// The principal Hello's token named, and its permission checks.
    guard: Guard,
    /// The connection's driver until it moves to the ingest lane, which it
    /// does with the first publish stream.
    driver: Option<Mover>,
}

impl Control {
    /// Serves until the connection ends; returns the close code and reason
    /// when the server is the one closing.
    async fn serve(&mut self, frames: &mut ControlFrames) -> Option<(quinn::VarInt, String)> {
        let shutdown = self.shared.core.shutdown.clone();
        let close_requested = self.session.connection().close_requested().clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Some(Box::pin(self.go_away()).await),
                _ = close_requested.cancelled() => {
                    // An operator closed it (admin API): a normal close, so
                    // clients reconnect as after any connection loss.
                    let reason = self.session.connection().close_reason();
                    info!(%reason, "closed by an operator");
                    return Some((code(ErrorCode::Unspecified), reason));
                }
                frame = frames.next() => match frame {
                    // Boxed: a request's future (a subscribe's lookups
                    // and replies, several KiB) exists only while it is
                    // handled, not in every idle connection's task.
                    Some(Ok(request)) => Box::pin(self.handle(request)).await,
                    None => {
                        debug!("client finished the control stream");
                        return Some((quinn::VarInt::from_u32(0), "bye".into()));
                    }
                    Some(Err(e)) => match classify(e) {
                        ReadFailure::Gone(e) => {
                            debug!(error = %e, "control stream ended");
                            return None;
                        }
                        ReadFailure::Refused(err) => {
                            // The stream is out of frame sync, late or over
                            // budget: nothing after this can be trusted.
                            // Tell the client why, then close.
                            info!(error = %err, "bad frame on the control stream");
                            let _ = self.tx.send(Box::new(error_response(&err, 0))).await;
                            return Some((code(err.code()), err.to_string()));
                        }
                    },
                },
                stream = self.conn.accept_uni() => match stream {
                    Ok(recv) => self.spawn_publish(|shared, tx, cancel, publisher, progress| {
                        publish::fire_and_forget(recv, shared, tx, cancel, publisher, progress)
                    }),
                    Err(e) => {
                        debug!(error = %e, "connection ended");
                        return None;
                    }
                },
                stream = self.conn.accept_bi() => match stream {
                    Ok((send, recv)) => self.spawn_publish(|shared, tx, cancel, publisher, progress| {
                        publish::acked(send, recv, shared, tx, cancel, publisher, progress)
                    }),
                    Err(e) => {
                        debug!(error = %e, "connection ended");
                        return None;
                    }
                },
            }
        }
    }

    /// Starts a publish stream's task. How many run at once is bounded by
    /// QUIC's stream credit (`limits.max_publish_streams_per_connection`,
    /// see `super::bind`): a client cannot open more. The task runs on the
    /// ingest lane, and the connection's driver moves there with the first.
    fn spawn_publish<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(Arc<Shared>, ControlTx, CancellationToken, TopicPublisher, FrameProgress) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let core = &self.shared.core;
        let progress = FrameProgress::new(&core.partial_frames, core.limits.frame_timeout);
        let fut = task(
            self.shared.clone(),
            self.tx.clone(),
            self.cancel.clone(),
            self.session.publisher(self.guard.clone()),
            progress,
        );
        if let Some(driver) = self.driver.take() {
            driver.move_to(&self.shared.ingest);
        }
        self.shared.ingest.spawn(fut.in_current_span());
    }

    async fn go_away(&mut self) -> (quinn::VarInt, String) {
        let go_away = ControlResponse {
            kind: Some(control_response::Kind::GoAway(v1::GoAway {
                reason: "server shutting down".into(),
                reconnect_after_ms: self.shared.reconnect_after_ms,
            })),
        };
        let _ = self.tx.send(Box::new(go_away)).await;
        // Let clients leave on their own (they close after GoAway), up to
        // the drain time.
        let _ = tokio::time::timeout(self.shared.drain, self.conn.closed()).await;
        (code(ErrorCode::ShuttingDown), "server shutting down".into())
    }

    async fn handle(&mut self, request: ControlRequest) {
        // Subscriptions that ended on their own (lagged, topic deleted)
        // free their id and their place.
        self.subs.0.retain(|_, sub| !sub.task.is_finished());
        if let Some(control_request::Kind::Subscribe(s)) = &request.kind {
            let start = StartAt::from_proto(s.start.as_ref());
            if let Err(e) = self
                .session
                .prepare_subscribe(&self.guard, &s.topic, start)
                .await
            {
                debug!(code = ?e.code(), error = %e, subscription = s.subscription_id, "subscribe refused");
                let _ = self
                    .tx
                    .send(Box::new(error_response(&e, s.subscription_id)))
                    .await;
                return;
            }
        }
        let reply = self.session.control(&self.guard, request, &self.subs);
        match reply.action {
            Some(Action::Start(sub)) => {
                let id = sub.id();
                debug!(subscription = id, topic = %sub.target(),
                    start_seq = sub.ok().start_seq, "subscribed");
                let cancel = self.cancel.child_token();
                let task = tokio::spawn(
                    subscription::run(
                        self.conn.clone(),
                        *sub,
                        cancel.clone(),
                        self.tx.clone(),
                        self.shared.batch,
                        self.shared.blocks.clone(),
                    )
                    .in_current_span(),
                );
                self.subs.0.insert(id, SubHandle { cancel, task });
            }
            Some(Action::Stop(id)) => {
                if let Some(sub) = self.subs.0.remove(&id) {
                    sub.cancel.cancel();
                }
            }
            None => {}
        }
        if let Some(control_response::Kind::Error(e)) = &reply.response.kind {
            debug!(code = e.code, message = %e.message, subscription = e.subscription_id, "request refused");
        }
        let _ = self.tx.send(Box::new(reply.response)).await;
    }
}
