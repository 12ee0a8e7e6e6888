//! A connection's session, driven by its control stream.
//!
//! Order of a session: handshake (ALPN checked), connection permit, the
//! first bidi stream is the control stream and its first frame must be
//! Hello (within the hello timeout, at most 64 KiB); version and token are
//! checked; Welcome. Only then are publish streams accepted and requests
//! served. Errors that concern one request are answered with an Error frame
//! and the session goes on; errors that make the control stream unusable
//! (undecodable frame) or refuse the client (version, token) are answered
//! with an Error frame and the connection is closed with that code.
//!
//! Responses are written by one writer task fed by a channel, so
//! subscription and publish tasks can report errors on the control stream
//! without sharing the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use lapwing_proto::v1::{
    self, control_request, control_response, ControlRequest, ControlResponse, ErrorCode, LagPolicy,
};
use lapwing_proto::{FrameCodec, FrameError, PRE_HELLO_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{code, publish, subscribe, Shared};
use crate::auth::AuthError;
use crate::connections::{Tracked, Transport};
use crate::limits::RequestError;
use crate::subscription::{Drain, StartAt};

/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a final Error/GoAway to reach the client before close.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Responses queued for the control writer before senders wait.
const CONTROL_QUEUE: usize = 256;
/// Initial read buffer of the control stream.
const CONTROL_READ_BUFFER: usize = 512;

type ControlFrames = FramedRead<RecvStream, FrameCodec<ControlRequest>>;

/// Sends responses to the control stream's writer task.
pub(super) type ControlTx = mpsc::Sender<ControlResponse>;

pub(super) fn error_response(err: &RequestError, subscription_id: u64) -> ControlResponse {
    ControlResponse {
        kind: Some(control_response::Kind::Error(err.to_wire(subscription_id))),
    }
}

pub(super) async fn handle_connection(
    incoming: quinn::Incoming,
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
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
    let Some(_permit) = permit else {
        warn!(%remote, limit = shared.limits.max_connections, "connection refused: too many connections");
        conn.close(code(ErrorCode::TooManyConnections), b"too many connections");
        return;
    };
    let id = shared.connections.allocate_id();
    let span = tracing::info_span!("conn", id, %remote);
    run_session(conn, id, shared).instrument(span).await;
}

async fn run_session(conn: Connection, id: u64, shared: Arc<Shared>) {
    let Some((send, mut frames, client_name)) = hello(&conn, id, &shared).await else {
        return;
    };
    info!(client = %client_name, "connected");
    let tracked = shared
        .connections
        .open(id, Transport::Quic, conn.remote_address(), &client_name);
    frames
        .decoder_mut()
        .set_max_frame_bytes(shared.limits.max_frame_bytes);
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let writer = tokio::spawn(write_control(send, rx));
    let cancel = shared.shutdown.child_token();
    let mut session = Session {
        conn: conn.clone(),
        shared: shared.clone(),
        tx,
        cancel: cancel.clone(),
        subs: HashMap::new(),
        tracked,
    };
    let close = session.serve(&mut frames).await;
    // Stop every task of this connection, then let the writer flush what
    // is queued (a final Error or GoAway) before the connection closes.
    cancel.cancel();
    for (_, sub) in session.subs.drain() {
        sub.cancel.cancel();
    }
    drop(session);
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

/// Reads and checks Hello, answers Welcome. On failure the client got an
/// Error frame and the connection is closed.
async fn hello(
    conn: &Connection,
    id: u64,
    shared: &Shared,
) -> Option<(SendStream, ControlFrames, String)> {
    let limits = &shared.limits;
    let deadline = tokio::time::Instant::now() + limits.hello_timeout;
    let opened = tokio::select! {
        opened = conn.accept_bi() => opened,
        _ = conn.accept_uni() => {
            info!("publish stream opened before Hello");
            conn.close(code(ErrorCode::Protocol), b"stream opened before Hello/Welcome");
            return None;
        }
        _ = tokio::time::sleep_until(deadline) => {
            conn.close(code(ErrorCode::Protocol), b"no control stream in time");
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
    // Control frames are small; the buffer grows for a larger one. (The
    // codec's 8 KiB default, per idle connection, is 80 MB at 10 000.)
    let mut frames = FramedRead::with_capacity(
        recv,
        FrameCodec::new(PRE_HELLO_MAX_FRAME_BYTES),
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
        First::TimedOut => Err(RequestError::Protocol("no Hello in time".into())),
        First::EarlyStream => Err(RequestError::Protocol(
            "a stream was opened before Welcome".into(),
        )),
        First::Frame(None) => return None,
        First::Frame(Some(Err(FrameError::Io(e)))) => {
            debug!(error = %e, "control stream failed before Hello");
            return None;
        }
        First::Frame(Some(Err(e))) => Err(RequestError::from(e)),
        First::Frame(Some(Ok(ControlRequest {
            kind: Some(control_request::Kind::Hello(h)),
        }))) => Ok(h),
        First::Frame(Some(Ok(_))) => Err(RequestError::Protocol(
            "the first frame on the control stream must be Hello".into(),
        )),
    };
    let checked = first.and_then(|h| {
        if h.version != PROTOCOL_VERSION {
            return Err(RequestError::UnsupportedVersion {
                got: h.version,
                supported: PROTOCOL_VERSION,
            });
        }
        match shared.auth.check(&h.token) {
            Ok(()) => Ok(h),
            Err(AuthError::Missing) => Err(RequestError::Unauthenticated(
                "this server requires a token",
            )),
            Err(AuthError::Rejected) => Err(RequestError::Unauthenticated("token not accepted")),
        }
    });
    let mut send = send;
    match checked {
        Ok(h) => {
            let welcome = ControlResponse {
                kind: Some(control_response::Kind::Welcome(v1::Welcome {
                    version: PROTOCOL_VERSION,
                    server_name: shared.server_name.clone(),
                    max_message_bytes: limits.max_message_bytes as u64,
                    max_frame_bytes: limits.max_frame_bytes as u64,
                    max_subscriptions: limits.max_subscriptions,
                    connection_id: id,
                })),
            };
            let mut buf = BytesMut::new();
            lapwing_proto::encode_frame(&welcome, &mut buf);
            send.write_all(&buf).await.ok()?;
            Some((send, frames, h.client_name))
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

/// Writes queued responses, coalescing whatever is queued into one write.
/// Returns the stream (finished) so the session can wait for delivery.
async fn write_control(
    mut send: SendStream,
    mut rx: mpsc::Receiver<ControlResponse>,
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

struct Session {
    conn: Connection,
    shared: Arc<Shared>,
    tx: ControlTx,
    cancel: CancellationToken,
    subs: HashMap<u64, SubHandle>,
    /// This connection's entry in the admin API's connection table.
    tracked: Tracked,
}

impl Session {
    /// Serves until the connection ends; returns the close code and reason
    /// when the server is the one closing.
    async fn serve(&mut self, frames: &mut ControlFrames) -> Option<(quinn::VarInt, String)> {
        let shutdown = self.shared.shutdown.clone();
        let close_requested = self.tracked.close_requested().clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Some(self.go_away().await),
                _ = close_requested.cancelled() => {
                    // An operator closed it (admin API): a normal close, so
                    // clients reconnect as after any connection loss.
                    let reason = self.tracked.close_reason();
                    info!(%reason, "closed by an operator");
                    return Some((code(ErrorCode::Unspecified), reason));
                }
                frame = frames.next() => match frame {
                    Some(Ok(request)) => self.handle(request).await,
                    None => {
                        debug!("client finished the control stream");
                        return Some((quinn::VarInt::from_u32(0), "bye".into()));
                    }
                    Some(Err(FrameError::Io(e))) => {
                        debug!(error = %e, "control stream ended");
                        return None;
                    }
                    Some(Err(e)) => {
                        // The stream is out of frame sync: nothing after this
                        // can be trusted. Tell the client why, then close.
                        let err = RequestError::from(e);
                        info!(error = %err, "bad frame on the control stream");
                        let _ = self.tx.send(error_response(&err, 0)).await;
                        return Some((code(err.code()), err.to_string()));
                    }
                },
                stream = self.conn.accept_uni() => match stream {
                    Ok(recv) => {
                        tokio::spawn(publish::fire_and_forget(
                            recv,
                            self.shared.clone(),
                            self.tx.clone(),
                            self.cancel.clone(),
                        ).in_current_span());
                    }
                    Err(e) => {
                        debug!(error = %e, "connection ended");
                        return None;
                    }
                },
                stream = self.conn.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        tokio::spawn(publish::acked(
                            send,
                            recv,
                            self.shared.clone(),
                            self.tx.clone(),
                            self.cancel.clone(),
                        ).in_current_span());
                    }
                    Err(e) => {
                        debug!(error = %e, "connection ended");
                        return None;
                    }
                },
            }
        }
    }

    async fn go_away(&mut self) -> (quinn::VarInt, String) {
        let go_away = ControlResponse {
            kind: Some(control_response::Kind::GoAway(v1::GoAway {
                reason: "server shutting down".into(),
                reconnect_after_ms: self.shared.reconnect_after_ms,
            })),
        };
        let _ = self.tx.send(go_away).await;
        // Let clients leave on their own (they close after GoAway), up to
        // the drain time.
        let _ = tokio::time::timeout(self.shared.drain, self.conn.closed()).await;
        (code(ErrorCode::ShuttingDown), "server shutting down".into())
    }

    async fn respond(&self, kind: control_response::Kind) {
        let _ = self.tx.send(ControlResponse { kind: Some(kind) }).await;
    }

    async fn handle(&mut self, request: ControlRequest) {
        use control_request::Kind;
        match request.kind {
            Some(Kind::Subscribe(s)) => {
                let id = s.subscription_id;
                if let Err(err) = self.subscribe(s).await {
                    debug!(error = %err, subscription = id, "subscribe refused");
                    self.respond(control_response::Kind::Error(err.to_wire(id)))
                        .await;
                }
            }
            Some(Kind::Unsubscribe(u)) => {
                let id = u.subscription_id;
                match self.subs.remove(&id) {
                    Some(sub) => {
                        sub.cancel.cancel();
                        self.respond(control_response::Kind::Unsubscribed(v1::Unsubscribed {
                            subscription_id: id,
                        }))
                        .await;
                    }
                    None => {
                        let err = RequestError::InvalidSubscription(format!(
                            "no live subscription with id {id}"
                        ));
                        self.respond(control_response::Kind::Error(err.to_wire(id)))
                            .await;
                    }
                }
            }
            Some(Kind::Ping(p)) => {
                self.respond(control_response::Kind::Pong(v1::Pong { nonce: p.nonce }))
                    .await
            }
            Some(Kind::Hello(_)) => {
                let err = RequestError::Protocol("Hello was already received".into());
                self.respond(control_response::Kind::Error(err.to_wire(0)))
                    .await;
            }
            None => {
                let err = RequestError::Protocol("empty control request".into());
                self.respond(control_response::Kind::Error(err.to_wire(0)))
                    .await;
            }
        }
    }

    async fn subscribe(&mut self, s: v1::Subscribe) -> Result<(), RequestError> {
        let id = s.subscription_id;
        // Subscriptions that ended on their own (lagged, topic deleted)
        // free their id and their place.
        self.subs.retain(|_, sub| !sub.task.is_finished());
        if self.subs.contains_key(&id) {
            return Err(RequestError::InvalidSubscription(format!(
                "subscription id {id} is already in use"
            )));
        }
        let max = self.shared.limits.max_subscriptions;
        if self.subs.len() >= max as usize {
            return Err(RequestError::TooManySubscriptions(max));
        }
        let policy = LagPolicy::try_from(s.lag_policy)
            .map_err(|_| RequestError::Protocol(format!("unknown lag policy {}", s.lag_policy)))?;
        let topic = self.shared.registry.get_or_create(&s.topic)?;
        let drain = Drain::new(topic, StartAt::from_proto(s.start.as_ref()), policy);
        let ok = v1::SubscribeOk {
            subscription_id: id,
            epoch: drain.epoch(),
            start_seq: drain.start_seq(),
        };
        debug!(subscription = id, topic = %s.topic, start_seq = ok.start_seq, "subscribed");
        let cancel = self.cancel.child_token();
        let meter = self.tracked.entry().add_subscription(id, &drain);
        let task = tokio::spawn(
            subscribe::run(
                self.conn.clone(),
                id,
                drain,
                meter,
                cancel.clone(),
                self.tx.clone(),
                self.shared.batch,
            )
            .in_current_span(),
        );
        self.subs.insert(id, SubHandle { cancel, task });
        self.respond(control_response::Kind::SubscribeOk(ok)).await;
        Ok(())
    }
}
