//! The session driver: one task per client that owns the connection for
//! the client's lifetime. It says Hello, (re)subscribes every subscription
//! from its resume position, answers the control stream, spawns a reader
//! per server-opened subscription stream, pings the server to notice a dead
//! path within [`crate::ClientConfig::liveness_timeout`], and when the
//! connection is lost reconnects with backoff (or after the server's
//! `GoAway` delay).
//!
//! All of its I/O goes through [`Transport`] and [`Connection`]: QUIC in
//! [`crate::transport`], and a scripted fake in this module's tests, which
//! drive reconnect, backoff, resume positions and GoAway under paused time.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use lapwing_proto::v1::{self, control_request, control_response};
use lapwing_proto::{encode_frame, ErrorCode, FrameCodec, FrameError};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::command::Cmd;
use crate::shared::Shared;
use crate::subscription::{read_subscription_stream, SubscriptionStream};
use crate::ClientError;

/// First wait before reconnecting after a loss (without a `GoAway` delay);
/// it doubles per failed attempt up to [`crate::ClientConfig::max_backoff`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Pause before a resubscribe refused with a retryable error is sent again.
const RESUBSCRIBE_RETRY: Duration = Duration::from_millis(250);
/// How long the end of a session waits for its stream readers to finish.
const READERS_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the connection's close reason after the server
/// finished the control stream.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(5);

/// How the driver reaches a server: one call per (re)connect attempt.
pub(crate) trait Transport: Send + Sync + 'static {
    /// One established connection.
    type Conn: Connection;

    /// Connects (QUIC + TLS); Hello/Welcome is the driver's part.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, ClientError>> + Send;
}

/// One connection, as the driver uses it.
pub(crate) trait Connection: Send + Sync + 'static {
    /// The control stream's sending half.
    type Send: AsyncWrite + Unpin + Send + 'static;
    /// Receiving halves: the control stream and subscription streams.
    type Recv: SubscriptionStream;

    /// Opens the control stream (the first bidirectional stream).
    fn open_control(
        &self,
    ) -> impl Future<Output = Result<(Self::Send, Self::Recv), ClientError>> + Send;
    /// The next subscription stream the server opens.
    fn accept_subscription(&self) -> impl Future<Output = Result<Self::Recv, ClientError>> + Send;
    /// Closes the connection with an application close code.
    fn close(&self, code: u32, reason: &'static [u8]);
    /// Why the connection ended, if it has.
    fn close_reason(&self) -> Option<ClientError>;
    /// Waits until the connection has ended, and says why.
    fn closed(&self) -> impl Future<Output = ClientError> + Send;
    /// The QUIC connection the publishers use (`None` under a test transport).
    fn quic(&self) -> Option<quinn::Connection>;
}

/// A connection after Hello/Welcome.
pub(crate) struct Session<C: Connection> {
    conn: C,
    ctrl_send: C::Send,
    ctrl_recv: FramedRead<C::Recv, FrameCodec<v1::ControlResponse>>,
}

/// Connect + Hello/Welcome; stores the Welcome's limits in `shared`.
pub(crate) async fn establish<T: Transport>(
    transport: &T,
    shared: &Shared,
) -> Result<Session<T::Conn>, ClientError> {
    let cfg = &shared.cfg;
    let conn = transport.connect().await?;
    let (mut ctrl_send, ctrl_recv) = conn.open_control().await?;
    let hello = v1::ControlRequest {
        kind: Some(control_request::Kind::Hello(v1::Hello {
            version: lapwing_proto::PROTOCOL_VERSION,
            token: cfg.token.clone().unwrap_or_default(),
            client_name: cfg.client_name.clone(),
        })),
    };
    let mut buf = BytesMut::new();
    encode_frame(&hello, &mut buf);
    ctrl_send
        .write_all(&buf)
        .await
        .map_err(|e| write_error(&conn, e))?;
    let mut ctrl_recv = FramedRead::new(
        ctrl_recv,
        FrameCodec::new(lapwing_proto::PRE_HELLO_MAX_FRAME_BYTES),
    );
    let welcome = match ctrl_recv.next().await {
        Some(Ok(v1::ControlResponse {
            kind: Some(control_response::Kind::Welcome(w)),
        })) => w,
        Some(Ok(v1::ControlResponse {
            kind: Some(control_response::Kind::Error(e)),
        })) => return Err(ClientError::server(e)),
        Some(Ok(other)) => {
            return Err(ClientError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )))
        }
        Some(Err(e)) => return Err(e.into()),
        None => return Err(conn.closed().await),
    };
    let max_frame = usize::try_from(welcome.max_frame_bytes).unwrap_or(usize::MAX);
    let max_message = usize::try_from(welcome.max_message_bytes).unwrap_or(usize::MAX);
    ctrl_recv.decoder_mut().set_max_frame_bytes(max_frame);
    shared.max_frame_bytes.store(max_frame, Ordering::Relaxed);
    shared
        .max_message_bytes
        .store(max_message, Ordering::Relaxed);
    tracing::debug!(?welcome, "connected");
    Ok(Session {
        conn,
        ctrl_send,
        ctrl_recv,
    })
}

/// A write failed: prefer the connection's close reason, which says why.
fn write_error(conn: &impl Connection, e: std::io::Error) -> ClientError {
    conn.close_reason()
        .unwrap_or_else(|| ClientError::Protocol(format!("control stream write failed: {e}")))
}

/// Errors after which reconnecting cannot help.
fn is_fatal(e: &ClientError) -> bool {
    match e.code() {
        Some(code) => !code.is_retryable() && code.closes_connection(),
        None => matches!(
            e,
            ClientError::Tls(_) | ClientError::Fingerprint(_) | ClientError::Closed
        ),
    }
}

enum SessionEnd {
    ClosedByUser(Option<tokio::sync::oneshot::Sender<()>>),
    Lost {
        error: ClientError,
        /// The server's `GoAway` delay, if it sent one.
        reconnect_after: Option<Duration>,
    },
}

/// Owns the connection for the client's lifetime: runs sessions, and
/// between them reconnects with backoff.
pub(crate) async fn drive<T: Transport>(
    shared: Arc<Shared>,
    transport: T,
    mut session: Session<T::Conn>,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut generation = 0u64;
    loop {
        generation += 1;
        let end = run_session(&shared, session, generation, &mut cmd_rx).await;
        let (error, reconnect_after) = match end {
            SessionEnd::ClosedByUser(done) => {
                shared.give_up(None, "closed by the client".into());
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            SessionEnd::Lost {
                error,
                reconnect_after,
            } => (error, reconnect_after),
        };
        if !shared.cfg.reconnect || is_fatal(&error) {
            tracing::warn!(%error, "connection lost; not reconnecting");
            give_up_for_good(&shared, &error);
            return;
        }
        tracing::info!(%error, "connection lost; reconnecting");
        let mut delay = reconnect_after.unwrap_or(FIRST_BACKOFF);
        session = loop {
            let sleep = tokio::time::sleep(jitter(delay));
            tokio::pin!(sleep);
            // Keep serving commands while down: Close must not wait.
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = cmd_rx.recv() => match cmd {
                        Some(Cmd::Close(done)) => {
                            shared.give_up(None, "closed by the client".into());
                            let _ = done.send(());
                            return;
                        }
                        None => {
                            shared.give_up(None, "closed by the client".into());
                            return;
                        }
                        // Sent on the next session.
                        Some(Cmd::Subscribe(_) | Cmd::Unsubscribe(_)) => {}
                    },
                }
            }
            match tokio::time::timeout(attempt_timeout(&shared.cfg), establish(&transport, &shared))
                .await
            {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) if is_fatal(&e) => {
                    tracing::warn!(error = %e, "reconnect refused; giving up");
                    give_up_for_good(&shared, &e);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    delay = (delay * 2).clamp(FIRST_BACKOFF, shared.cfg.max_backoff);
                }
                Err(_) => {
                    // Nothing answered: the attempt itself waited, so the
                    // next one starts soon (a fresh handshake, not quinn's
                    // backed-off retransmission of the old one).
                    tracing::debug!("reconnect timed out");
                    delay = FIRST_BACKOFF;
                }
            }
        };
    }
}

/// Stops for good after `error`: publishers fail, and every subscription
/// ends with a copy of `error`.
fn give_up_for_good(shared: &Shared, error: &ClientError) {
    shared.give_up(error.code(), error.to_string());
    shared.subs.fail_all(|| match error.code() {
        Some(code) => ClientError::Server {
            code,
            message: error.to_string(),
        },
        None => ClientError::Protocol(format!("connection lost: {error}")),
    });
}

/// How long one reconnect attempt (connect + Hello/Welcome) may take: the
/// liveness timeout when there is one (a path that heals is then found by
/// the next short attempt), never more than `connect_timeout`.
fn attempt_timeout(cfg: &crate::ClientConfig) -> Duration {
    cfg.liveness_timeout
        .map_or(cfg.connect_timeout, |l| l.min(cfg.connect_timeout))
}

/// The liveness check of one session: a `Ping` every half of
/// [`crate::ClientConfig::liveness_timeout`] while none is outstanding; an
/// outstanding one older than the timeout means the connection is dead.
struct Liveness {
    timeout: Duration,
    /// The nonce of the outstanding Ping, if one is.
    awaiting: Option<u64>,
    nonce: u64,
    /// When to act next: send a Ping, or (one outstanding) give up.
    at: tokio::time::Instant,
}

impl Liveness {
    fn new(timeout: Duration) -> Self {
        Liveness {
            timeout,
            awaiting: None,
            nonce: 0,
            at: tokio::time::Instant::now() + timeout / 2,
        }
    }

    /// The deadline passed: a Ping to send, or `Err` when the outstanding
    /// one was not answered in time.
    fn due(&mut self) -> Result<v1::ControlRequest, ClientError> {
        if self.awaiting.is_some() {
            return Err(ClientError::Unresponsive(self.timeout));
        }
        self.nonce += 1;
        self.awaiting = Some(self.nonce);
        self.at = tokio::time::Instant::now() + self.timeout;
        Ok(v1::ControlRequest {
            kind: Some(control_request::Kind::Ping(v1::Ping { nonce: self.nonce })),
        })
    }

    /// A Pong arrived.
    fn pong(&mut self, nonce: u64) {
        if self.awaiting == Some(nonce) {
            self.awaiting = None;
            self.at = tokio::time::Instant::now() + self.timeout / 2;
        }
    }
}

/// ±25 % so that many clients do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

/// Runs one connection until it is lost or the user closes the client.
async fn run_session<C: Connection>(
    shared: &Arc<Shared>,
    session: Session<C>,
    generation: u64,
    cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>,
) -> SessionEnd {
    let Session {
        conn,
        mut ctrl_send,
        mut ctrl_recv,
    } = session;
    shared.conn_tx.send_modify(|s| s.conn = conn.quic());
    let quic_id = conn.quic().map(|c| c.stable_id());
    let max_frame = shared.max_frame_bytes();
    let mut readers = JoinSet::new();
    let mut go_away: Option<Duration> = None;
    // Cancelled when this session ends: readers stop waiting for room in a
    // paused consumer's buffer (what they hold is asked for again).
    // The guard covers the driver task being dropped mid-session.
    let session_over = CancellationToken::new();
    let _cancel_readers = session_over.clone().drop_guard();

    // (Re)subscribe everything not yet sent on this connection, in one write.
    let mut buf = BytesMut::new();
    shared.subs.encode_unsent(generation, &mut buf);
    let mut liveness = shared.cfg.liveness_timeout.map(Liveness::new);
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let probe = tokio::time::sleep_until(liveness.as_ref().map_or_else(far, |l| l.at));
    tokio::pin!(probe);
    let mut end = None;
    if !buf.is_empty() {
        if let Err(e) = ctrl_send.write_all(&buf).await {
            end = Some(SessionEnd::Lost {
                error: write_error(&conn, e),
                reconnect_after: None,
            });
        }
    }

    let end = match end {
        Some(end) => end,
        None => loop {
            tokio::select! {
                frame = ctrl_recv.next() => match frame {
                    Some(Ok(v1::ControlResponse { kind: Some(control_response::Kind::Pong(p)) })) => {
                        if let Some(l) = liveness.as_mut() {
                            l.pong(p.nonce);
                            probe.as_mut().reset(l.at);
                        }
                    }
                    Some(Ok(resp)) => handle_control(shared, quic_id, resp, &mut go_away),
                    Some(Err(FrameError::Io(e))) => {
                        // The connection went away (server stopped, network
                        // lost): the ordinary reason to reconnect, not a bad frame.
                        tracing::info!(error = %e, "connection lost");
                        break SessionEnd::Lost { error: FrameError::Io(e).into(), reconnect_after: go_away };
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "bad frame on the control stream");
                        conn.close(ErrorCode::Protocol.close_code(), b"bad control frame");
                        break SessionEnd::Lost { error: e.into(), reconnect_after: go_away };
                    }
                    None => {
                        let error = tokio::time::timeout(CLOSE_REASON_WAIT, conn.closed())
                            .await
                            .unwrap_or(ClientError::Protocol("server finished the control stream".into()));
                        break SessionEnd::Lost { error, reconnect_after: go_away };
                    }
                },
                sub = conn.accept_subscription() => match sub {
                    Ok(recv) => {
                        readers.spawn(read_subscription_stream(
                            shared.subs.clone(),
                            recv,
                            max_frame,
                            session_over.clone(),
                        ));
                    }
                    Err(error) => break SessionEnd::Lost { error, reconnect_after: go_away },
                },
                cmd = cmd_rx.recv() => {
                    let frame = match cmd {
                        Some(Cmd::Subscribe(id)) => shared.subs.subscribe_frame(id, generation),
                        Some(Cmd::Unsubscribe(id)) => Some(v1::ControlRequest {
                            kind: Some(control_request::Kind::Unsubscribe(v1::Unsubscribe {
                                subscription_id: id,
                            })),
                        }),
                        Some(Cmd::Close(done)) => {
                            conn.close(0, b"bye");
                            break SessionEnd::ClosedByUser(Some(done));
                        }
                        None => {
                            conn.close(0, b"bye");
                            break SessionEnd::ClosedByUser(None);
                        }
                    };
                    if let Some(frame) = frame {
                        let mut buf = BytesMut::new();
                        encode_frame(&frame, &mut buf);
                        if let Err(e) = ctrl_send.write_all(&buf).await {
                            break SessionEnd::Lost { error: write_error(&conn, e), reconnect_after: go_away };
                        }
                    }
                },
                Some(_) = readers.join_next(), if !readers.is_empty() => {}
                () = &mut probe, if liveness.is_some() => {
                    let Some(l) = liveness.as_mut() else { continue };
                    match l.due() {
                        Ok(ping) => {
                            probe.as_mut().reset(l.at);
                            let mut buf = BytesMut::new();
                            encode_frame(&ping, &mut buf);
                            if let Err(e) = ctrl_send.write_all(&buf).await {
                                break SessionEnd::Lost { error: write_error(&conn, e), reconnect_after: go_away };
                            }
                        }
                        Err(error) => {
                            tracing::info!(%error, "connection unresponsive; reconnecting");
                            conn.close(ErrorCode::Timeout.close_code(), b"unresponsive");
                            break SessionEnd::Lost { error, reconnect_after: go_away };
                        }
                    }
                }
            }
        },
    };
    shared.conn_tx.send_modify(|s| s.conn = None);
    session_over.cancel();
    // Let the readers record their last position before anything resumes.
    let drain = async { while readers.join_next().await.is_some() {} };
    if tokio::time::timeout(READERS_GRACE, drain).await.is_err() {
        readers.abort_all();
    }
    if let SessionEnd::Lost { .. } = end {
        shared.subs.session_lost();
    }
    end
}

fn handle_control(
    shared: &Shared,
    quic_id: Option<usize>,
    resp: v1::ControlResponse,
    go_away: &mut Option<Duration>,
) {
    use control_response::Kind;
    match resp.kind {
        Some(Kind::PublishStreamDone(done)) => {
            if let Some(conn) = quic_id {
                shared.receipts.done(conn, &done);
            }
        }
        Some(Kind::SubscribeOk(ok)) => shared.subs.accepted(&ok),
        Some(Kind::Error(e)) if e.subscription_id != 0 => {
            let id = e.subscription_id;
            if e.code().is_retryable() && shared.subs.retry_later(id) {
                // A resume refused for now (in cluster mode: the node's
                // backbone is unreachable): the subscription lives on and
                // asks again, from where it is, after a pause.
                tracing::info!(code = ?e.code(), message = %e.message, subscription = id,
                    "resubscribe refused for now; retrying");
                let later = shared.later.get().cloned();
                tokio::spawn(async move {
                    tokio::time::sleep(RESUBSCRIBE_RETRY).await;
                    if let Some(tx) = later.and_then(|w| w.upgrade()) {
                        let _ = tx.send(Cmd::Subscribe(id));
                    }
                });
            } else {
                tracing::debug!(error = ?e, "subscription error");
                shared.subs.fail(id, ClientError::server(e));
            }
        }
        Some(Kind::Error(e)) => {
            tracing::warn!(code = ?e.code(), message = %e.message, "server error");
            let _ = shared.async_errors.send((e.code(), e.message));
        }
        Some(Kind::GoAway(g)) => {
            tracing::info!(reason = %g.reason, after_ms = g.reconnect_after_ms, "server going away");
            *go_away = Some(Duration::from_millis(u64::from(g.reconnect_after_ms)));
        }
        // Pongs are the liveness check's, in `run_session`.
        Some(Kind::Unsubscribed(_) | Kind::Pong(_)) | None => {}
        Some(Kind::Welcome(w)) => tracing::warn!(?w, "unexpected second Welcome"),
    }
}

#[cfg(test)]
mod tests {
    //! The driver against a scripted server, under paused time: every
    //! connect attempt is handed to the test, which answers it with a fake
    //! connection (in-memory pipes) or an error, and plays the server's
    //! side of the control and subscription streams.

    use super::*;
    use crate::{ClientConfig, Event, Start, SubscribeOptions, Subscription, Trust};
    use bytes::Bytes;
    use lapwing_proto::v1::{delivery, start_position};
    use std::sync::Mutex;
    use tokio::io::DuplexStream;
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    const PIPE_BYTES: usize = 64 * 1024;
    const EPOCH: u64 = 7;

    /// A connect attempt, as the test sees it: when, and where to answer.
    struct Attempt {
        at: Instant,
        reply: oneshot::Sender<Result<FakeConn, ClientError>>,
    }

    struct FakeTransport {
        attempts: mpsc::UnboundedSender<Attempt>,
    }

    impl Transport for FakeTransport {
        type Conn = FakeConn;

        async fn connect(&self) -> Result<FakeConn, ClientError> {
            let (reply, answer) = oneshot::channel();
            let attempt = Attempt {
                at: Instant::now(),
                reply,
            };
            self.attempts
                .send(attempt)
                .map_err(|_| ClientError::Closed)?;
            answer.await.map_err(|_| ClientError::Closed)?
        }
    }

    /// A subscription or control stream's receiving half. Like a QUIC
    /// stream, it fails as soon as its connection is closed (by either side).
    struct FakeRecv {
        pipe: DuplexStream,
        gone: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    }

    impl FakeRecv {
        fn new(pipe: DuplexStream, gone: &CancellationToken) -> Self {
            FakeRecv {
                pipe,
                gone: Box::pin(gone.clone().cancelled_owned()),
            }
        }
    }

    impl tokio::io::AsyncRead for FakeRecv {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.gone.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
            }
            std::pin::Pin::new(&mut self.pipe).poll_read(cx, buf)
        }
    }

    impl SubscriptionStream for FakeRecv {
        fn stop(&mut self) {}
    }

    struct FakeConn {
        control: Mutex<Option<(DuplexStream, FakeRecv)>>,
        streams: tokio::sync::Mutex<mpsc::UnboundedReceiver<FakeRecv>>,
        gone: CancellationToken,
    }

    fn lost() -> ClientError {
        ClientError::Connection(quinn::ConnectionError::Reset)
    }

    impl Connection for FakeConn {
        type Send = DuplexStream;
        type Recv = FakeRecv;

        async fn open_control(&self) -> Result<(DuplexStream, FakeRecv), ClientError> {
            self.control.lock().unwrap().take().ok_or_else(lost)
        }

        async fn accept_subscription(&self) -> Result<FakeRecv, ClientError> {
            let mut streams = self.streams.lock().await;
            tokio::select! {
                s = streams.recv() => s.ok_or_else(lost),
                () = self.gone.cancelled() => Err(lost()),
            }
        }

        fn close(&self, _code: u32, _reason: &'static [u8]) {
            self.gone.cancel();
        }

        fn close_reason(&self) -> Option<ClientError> {
            self.gone.is_cancelled().then(lost)
        }

        async fn closed(&self) -> ClientError {
            self.gone.cancelled().await;
            lost()
        }

        fn quic(&self) -> Option<quinn::Connection> {
            None
        }
    }

    /// The server's side of one fake connection.
    struct FakeServer {
        requests: FramedRead<DuplexStream, FrameCodec<v1::ControlRequest>>,
        responses: DuplexStream,
        streams: mpsc::UnboundedSender<FakeRecv>,
        /// The server's ends of the subscription streams it opened.
        open: Vec<DuplexStream>,
        gone: CancellationToken,
    }

    impl FakeServer {
        /// Answers `attempt` with a new connection and says Welcome.
        async fn accept(attempt: Attempt) -> FakeServer {
            let (client_send, server_recv) = tokio::io::duplex(PIPE_BYTES);
            let (server_send, client_recv) = tokio::io::duplex(PIPE_BYTES);
            let (streams_tx, streams_rx) = mpsc::unbounded_channel();
            let gone = CancellationToken::new();
            let conn = FakeConn {
                control: Mutex::new(Some((client_send, FakeRecv::new(client_recv, &gone)))),
                streams: tokio::sync::Mutex::new(streams_rx),
                gone: gone.clone(),
            };
            assert!(attempt.reply.send(Ok(conn)).is_ok(), "driver waits");
            let mut server = FakeServer {
                requests: FramedRead::new(server_recv, FrameCodec::new(PIPE_BYTES)),
                responses: server_send,
                streams: streams_tx,
                open: Vec::new(),
                gone,
            };
            match server.request().await {
                control_request::Kind::Hello(h) => assert_eq!(h.client_name, "driver-test"),
                other => panic!("expected Hello, got {other:?}"),
            }
            server
                .respond(control_response::Kind::Welcome(v1::Welcome {
                    version: lapwing_proto::PROTOCOL_VERSION,
                    max_message_bytes: 1024,
                    max_frame_bytes: PIPE_BYTES as u64,
                    ..Default::default()
                }))
                .await;
            server
        }

        async fn request(&mut self) -> control_request::Kind {
            let frame = self.requests.next().await.expect("a request").unwrap();
            frame.kind.expect("a request kind")
        }

        async fn respond(&mut self, kind: control_response::Kind) {
            let mut buf = BytesMut::new();
            encode_frame(&v1::ControlResponse { kind: Some(kind) }, &mut buf);
            self.responses.write_all(&buf).await.unwrap();
        }

        /// Reads one Subscribe: `(id, start)`.
        async fn subscribe_request(&mut self) -> (u64, Start) {
            match self.request().await {
                control_request::Kind::Subscribe(s) => (s.subscription_id, start_of(&s)),
                other => panic!("expected Subscribe, got {other:?}"),
            }
        }

        async fn subscribe_ok(&mut self, id: u64, start_seq: u64) {
            self.respond(control_response::Kind::SubscribeOk(v1::SubscribeOk {
                subscription_id: id,
                epoch: EPOCH,
                start_seq,
                ..Default::default()
            }))
            .await;
        }

        /// Opens subscription `id`'s stream and sends `seqs` on it.
        async fn stream(&mut self, id: u64, seqs: std::ops::Range<u64>) {
            let (mut server, client) = tokio::io::duplex(PIPE_BYTES);
            let mut buf = BytesMut::new();
            encode_frame(
                &v1::SubscriptionStreamHeader {
                    subscription_id: id,
                },
                &mut buf,
            );
            for seq in seqs {
                let message = v1::Message {
                    seq,
                    payload: Bytes::from(seq.to_string()),
                    publish_time_unix_nanos: 0,
                    epoch: EPOCH,
                    ..Default::default()
                };
                let delivery = v1::Delivery {
                    kind: Some(delivery::Kind::Message(message)),
                };
                encode_frame(&delivery, &mut buf);
            }
            server.write_all(&buf).await.unwrap();
            self.streams
                .send(FakeRecv::new(client, &self.gone))
                .unwrap();
            self.open.push(server);
        }

        /// The connection breaks: every stream ends, as QUIC ends them.
        fn vanish(self) {
            self.gone.cancel();
        }
    }

    fn start_of(s: &v1::Subscribe) -> Start {
        match s.start.as_ref().and_then(|s| s.kind.as_ref()) {
            Some(start_position::Kind::After(a)) => Start::After {
                epoch: a.epoch,
                seq: a.seq,
            },
            Some(start_position::Kind::Oldest(_)) => Start::Oldest,
            Some(start_position::Kind::Latest(_)) | None => Start::Latest,
        }
    }

    fn config() -> ClientConfig {
        let mut cfg = ClientConfig::new("fake:1", Trust::Insecure);
        cfg.client_name = "driver-test".into();
        cfg.max_backoff = Duration::from_millis(500);
        // The scripted server answers only what a test expects; the
        // liveness tests turn the check on themselves.
        cfg.liveness_timeout = None;
        cfg
    }

    /// `config()` with the liveness check on, at `timeout`.
    fn lively(timeout: Duration) -> ClientConfig {
        let mut cfg = config();
        cfg.liveness_timeout = Some(timeout);
        cfg
    }

    /// A client on the fake transport, and the test's end of its attempts.
    async fn start(cfg: ClientConfig) -> (crate::Client, FakeServer, Attempts) {
        let (tx, mut attempts) = mpsc::unbounded_channel();
        let transport = FakeTransport { attempts: tx };
        let server = async {
            let first = attempts.recv().await.expect("first attempt");
            FakeServer::accept(first).await
        };
        let (client, server) = tokio::join!(crate::Client::start(cfg, transport), server);
        (client.expect("client starts"), server, Attempts(attempts))
    }

    struct Attempts(mpsc::UnboundedReceiver<Attempt>);

    impl Attempts {
        async fn next(&mut self) -> Attempt {
            self.0.recv().await.expect("another attempt")
        }
    }

    /// Subscribes through `client` while `server` answers with `start_seq`.
    async fn subscribe(
        client: &crate::Client,
        server: &mut FakeServer,
        start: Start,
        start_seq: u64,
    ) -> Subscription {
        let options = SubscribeOptions {
            start,
            ..Default::default()
        };
        let serve = async {
            let (id, asked) = server.subscribe_request().await;
            assert_eq!(asked, start);
            server.subscribe_ok(id, start_seq).await;
        };
        let (sub, ()) = tokio::join!(client.subscribe("t", options), serve);
        sub.expect("subscribed")
    }

    async fn next_seq(sub: &mut Subscription) -> u64 {
        match sub.next().await {
            Some(Ok(Event::Message { seq, .. })) => seq,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Asserts `d` is `nominal` ± the driver's 25 % jitter.
    fn assert_jittered(d: Duration, nominal: Duration) {
        assert!(
            d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25),
            "waited {d:?}, expected {nominal:?} ± 25 %"
        );
    }

    /// Lost connection: the driver retries after 100, 200, 400 ms and then
    /// at most `max_backoff` (500 ms), and on success resubscribes every
    /// subscription right after the last event its consumer has.
    #[tokio::test(start_paused = true)]
    async fn reconnects_with_backoff_and_resumes_every_subscription() {
        let (client, mut server, mut attempts) = start(config()).await;
        let mut a = subscribe(&client, &mut server, Start::Latest, 10).await;
        let mut b = subscribe(&client, &mut server, Start::Oldest, 0).await;
        let quiet = subscribe(&client, &mut server, Start::Latest, 3).await;
        server.stream(a.id(), 10..13).await;
        server.stream(b.id(), 0..5).await;
        for want in 10..13 {
            assert_eq!(next_seq(&mut a).await, want);
        }
        for want in 0..5 {
            assert_eq!(next_seq(&mut b).await, want);
        }

        let lost_at = Instant::now();
        server.vanish();
        let mut previous = lost_at;
        for nominal_ms in [100, 200, 400, 500] {
            let attempt = attempts.next().await;
            assert_jittered(attempt.at - previous, Duration::from_millis(nominal_ms));
            previous = attempt.at;
            if nominal_ms < 500 {
                let refused = ClientError::Connect {
                    addr: "fake:1".into(),
                    reason: "refused".into(),
                };
                attempt.reply.send(Err(refused)).ok().unwrap();
                continue;
            }
            let mut server = FakeServer::accept(attempt).await;
            let mut resumed = std::collections::HashMap::new();
            for _ in 0..3 {
                let (id, start) = server.subscribe_request().await;
                resumed.insert(id, start);
            }
            assert_eq!(
                resumed[&a.id()],
                Start::After {
                    epoch: EPOCH,
                    seq: 12
                }
            );
            assert_eq!(
                resumed[&b.id()],
                Start::After {
                    epoch: EPOCH,
                    seq: 4
                }
            );
            assert_eq!(
                resumed[&quiet.id()],
                Start::After {
                    epoch: EPOCH,
                    seq: 2
                }
            );
            // The stream continues where it left off.
            server.stream(a.id(), 13..14).await;
            assert_eq!(next_seq(&mut a).await, 13);
        }
    }

    /// A GoAway's `reconnect_after_ms` replaces the first backoff step.
    #[tokio::test(start_paused = true)]
    async fn go_away_sets_the_reconnect_delay() {
        let (client, mut server, mut attempts) = start(config()).await;
        let sub = subscribe(&client, &mut server, Start::Latest, 0).await;
        server
            .respond(control_response::Kind::GoAway(v1::GoAway {
                reason: "restarting".into(),
                reconnect_after_ms: 3000,
            }))
            .await;
        let lost_at = Instant::now();
        // Let the driver read the GoAway before the connection goes.
        tokio::time::sleep(Duration::from_millis(1)).await;
        server.vanish();
        let attempt = attempts.next().await;
        assert_jittered(attempt.at - lost_at, Duration::from_secs(3));
        let mut server = FakeServer::accept(attempt).await;
        let (id, start) = server.subscribe_request().await;
        assert_eq!(id, sub.id());
        // Nothing was delivered: from seq 0 of the epoch, which `after`
        // cannot name, so `oldest` (the reader reports any gap).
        assert_eq!(start, Start::Oldest);
    }

    /// The contract: a consumer that is not reading holds seq 0 in its
    /// buffer of 1, which pushes back; the reader holds seq 1, waiting for
    /// room. The connection is lost. The next Subscribe must ask for seq 1
    /// again (not seq 3), and the reconnect must not wait for the stuck
    /// reader.
    #[tokio::test(start_paused = true)]
    async fn a_batch_the_consumer_has_not_taken_is_asked_for_again() {
        let mut cfg = config();
        cfg.subscription_buffer_events = 1;
        cfg.buffer_overflow = crate::BufferOverflow::PushBack;
        let (client, mut server, mut attempts) = start(cfg).await;
        let mut sub = subscribe(&client, &mut server, Start::Latest, 0).await;
        server.stream(sub.id(), 0..3).await;
        // Paused time moves only when every task waits: the reader has read
        // all it can.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            client.handle.shared.subs.resume_start(sub.id()),
            Some(Start::After {
                epoch: EPOCH,
                seq: 0
            })
        );
        let lost_at = Instant::now();
        server.vanish();
        let attempt = attempts.next().await;
        assert_jittered(attempt.at - lost_at, FIRST_BACKOFF);
        let mut server = FakeServer::accept(attempt).await;
        let (id, start) = server.subscribe_request().await;
        assert_eq!(
            (id, start),
            (
                sub.id(),
                Start::After {
                    epoch: EPOCH,
                    seq: 0
                }
            )
        );
        server.stream(sub.id(), 1..3).await;
        for want in 0..3 {
            assert_eq!(next_seq(&mut sub).await, want, "no gap, no duplicate");
        }
    }

    /// A resume refused with a retryable error (a cluster node whose
    /// backbone is down says UNAVAILABLE) keeps the subscription: it is
    /// asked for again, from the same position, after a pause, and goes on
    /// without a gap. A first subscribe refused that way fails for its
    /// caller instead.
    #[tokio::test(start_paused = true)]
    async fn a_resume_refused_for_now_is_asked_for_again() {
        let (client, mut server, mut attempts) = start(config()).await;
        let mut sub = subscribe(&client, &mut server, Start::Latest, 0).await;
        server.stream(sub.id(), 0..3).await;
        for want in 0..3 {
            assert_eq!(next_seq(&mut sub).await, want);
        }
        server.vanish();
        let mut server = FakeServer::accept(attempts.next().await).await;
        let resume = Start::After {
            epoch: EPOCH,
            seq: 2,
        };
        let unavailable = |id| {
            control_response::Kind::Error(v1::Error {
                code: ErrorCode::Unavailable as i32,
                message: "backbone unreachable".into(),
                subscription_id: id,
            })
        };
        for _ in 0..2 {
            let (id, start) = server.subscribe_request().await;
            assert_eq!((id, start), (sub.id(), resume));
            let refused_at = Instant::now();
            server.respond(unavailable(id)).await;
            let (again, start) = server.subscribe_request().await;
            assert_eq!((again, start), (sub.id(), resume));
            assert!(Instant::now() - refused_at >= RESUBSCRIBE_RETRY);
            server.respond(unavailable(id)).await;
        }
        let (id, _) = server.subscribe_request().await;
        server.subscribe_ok(id, 3).await;
        server.stream(id, 3..5).await;
        for want in 3..5 {
            assert_eq!(next_seq(&mut sub).await, want, "no gap, no duplicate");
        }
        let options = SubscribeOptions::default();
        let refuse = async {
            let (id, _) = server.subscribe_request().await;
            server.respond(unavailable(id)).await;
        };
        let (first, ()) = tokio::join!(client.subscribe("u", options), refuse);
        match first {
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::Unavailable)),
            Ok(_) => panic!("a first subscribe refused for now is the caller's error"),
        }
    }

    /// Closing while the connection is down does not wait for a reconnect:
    /// the driver stops at once and makes no further attempt.
    #[tokio::test(start_paused = true)]
    async fn close_while_reconnecting_stops_at_once() {
        let (client, server, mut attempts) = start(config()).await;
        server.vanish();
        // The first retry is refused, so the driver is in its backoff.
        let attempt = attempts.next().await;
        let refused = ClientError::Connect {
            addr: "fake:1".into(),
            reason: "refused".into(),
        };
        attempt.reply.send(Err(refused)).ok().unwrap();
        let before = Instant::now();
        client.close().await.unwrap();
        assert!(
            Instant::now() - before < FIRST_BACKOFF,
            "close waited for the backoff"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(attempts.0.try_recv().is_err(), "no attempt after close");
    }

    /// A refusal that reconnecting cannot cure ends every subscription with
    /// that error, and the driver stops trying.
    #[tokio::test(start_paused = true)]
    async fn a_fatal_refusal_ends_every_subscription() {
        let (client, mut server, mut attempts) = start(config()).await;
        let mut sub = subscribe(&client, &mut server, Start::Latest, 0).await;
        server.vanish();
        let attempt = attempts.next().await;
        let refused = ClientError::Server {
            code: ErrorCode::Unauthenticated,
            message: "token revoked".into(),
        };
        attempt.reply.send(Err(refused)).ok().unwrap();
        match sub.next().await {
            Some(Err(e)) => assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{e}"),
            other => panic!("expected the refusal, got {other:?}"),
        }
        assert!(sub.next().await.is_none());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            attempts.0.try_recv().is_err(),
            "no attempt after a fatal refusal"
        );
        assert!(matches!(
            client.publish_acked("t", "x").await,
            Err(ClientError::Server {
                code: ErrorCode::Unauthenticated,
                ..
            })
        ));
    }

    /// The liveness check: a server that stops answering (the path is
    /// partitioned: nothing is closed, nothing arrives) is declared dead
    /// `liveness_timeout` after the unanswered Ping, not after QUIC's idle
    /// timeout; the driver reconnects at once and resumes after the last
    /// event, and the new session pings again.
    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_ends_the_session_and_the_client_resumes() {
        let timeout = Duration::from_secs(2);
        let (client, mut server, mut attempts) = start(lively(timeout)).await;
        let mut sub = subscribe(&client, &mut server, Start::Latest, 0).await;
        server.stream(sub.id(), 0..3).await;
        for want in 0..3 {
            assert_eq!(next_seq(&mut sub).await, want);
        }
        // Answer two Pings: the connection lives on.
        for _ in 0..2 {
            match server.request().await {
                control_request::Kind::Ping(p) => {
                    server
                        .respond(control_response::Kind::Pong(v1::Pong { nonce: p.nonce }))
                        .await;
                }
                other => panic!("expected Ping, got {other:?}"),
            }
        }
        // The third goes unanswered.
        let unanswered = match server.request().await {
            control_request::Kind::Ping(_) => Instant::now(),
            other => panic!("expected Ping, got {other:?}"),
        };
        let attempt = attempts.next().await;
        let waited = attempt.at - unanswered;
        assert!(
            waited >= timeout && waited <= timeout + FIRST_BACKOFF.mul_f64(1.25),
            "reconnected {waited:?} after the unanswered Ping (timeout {timeout:?})"
        );
        assert!(server.gone.is_cancelled(), "the dead connection was closed");
        let mut server = FakeServer::accept(attempt).await;
        let (id, start) = server.subscribe_request().await;
        assert_eq!(
            (id, start),
            (
                sub.id(),
                Start::After {
                    epoch: EPOCH,
                    seq: 2
                }
            )
        );
        assert!(
            matches!(server.request().await, control_request::Kind::Ping(_)),
            "the new session pings too"
        );
    }

    /// Pings that are answered never end a session, however long it idles.
    #[tokio::test(start_paused = true)]
    async fn answered_pings_keep_an_idle_session() {
        let (_client, mut server, mut attempts) = start(lively(Duration::from_secs(2))).await;
        let began = Instant::now();
        let mut pings = 0;
        while Instant::now() - began < Duration::from_secs(60) {
            match server.request().await {
                control_request::Kind::Ping(p) => {
                    pings += 1;
                    server
                        .respond(control_response::Kind::Pong(v1::Pong { nonce: p.nonce }))
                        .await;
                }
                other => panic!("expected Ping, got {other:?}"),
            }
        }
        assert!(
            (55..=65).contains(&pings),
            "one Ping a second (half the timeout): {pings} in 60 s"
        );
        assert!(attempts.0.try_recv().is_err(), "no reconnect");
    }

    /// A reconnect attempt nobody answers (the path is still partitioned)
    /// is given up after the liveness timeout, and the next starts about
    /// 100 ms later instead of after a growing backoff: one succeeds soon
    /// after the path heals.
    #[tokio::test(start_paused = true)]
    async fn silent_reconnect_attempts_are_short_and_repeated() {
        let timeout = Duration::from_secs(2);
        let mut cfg = lively(timeout);
        cfg.max_backoff = Duration::from_secs(5);
        let (_client, server, mut attempts) = start(cfg).await;
        server.vanish();
        let mut unanswered = Vec::new();
        let mut previous = attempts.next().await;
        for _ in 0..4 {
            let attempt = attempts.next().await;
            assert_jittered(attempt.at - previous.at - timeout, FIRST_BACKOFF);
            // Kept, not dropped: the attempt stays unanswered.
            unanswered.push(std::mem::replace(&mut previous, attempt));
        }
        let server = FakeServer::accept(previous).await;
        drop((server, unanswered));
    }
}
