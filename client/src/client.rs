//! The connection: handshake, the driver task that owns the control stream,
//! and reconnect with resume.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lapwing_proto::v1::{self, control_request, control_response};
use lapwing_proto::{encode_frame, validate_topic, ErrorCode, FrameCodec, FrameError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;

use crate::publisher::{self, AckRequest, Publisher};
use crate::subscription::{
    read_subscription_stream, SubEntry, SubMap, SubscribeOptions, Subscription,
};
use crate::{transport, ClientConfig, ClientError, Start};

/// The result of an acknowledged publish: where the message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    pub epoch: u64,
    pub seq: u64,
}

/// The current connection, as the publishers see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnState {
    pub(crate) conn: Option<quinn::Connection>,
    /// Set once the client has given up for good.
    pub(crate) closed: Option<(Option<ErrorCode>, String)>,
}

/// State shared by the driver, the stream tasks and the user's handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: ClientConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) conn_tx: watch::Sender<ConnState>,
    pub(crate) subs: Arc<SubMap>,
    next_sub_id: AtomicU64,
    /// From the latest Welcome.
    pub(crate) max_message_bytes: AtomicUsize,
    pub(crate) max_frame_bytes: AtomicUsize,
    /// Errors the server reported for fire-and-forget publishes.
    pub(crate) async_errors: broadcast::Sender<(ErrorCode, String)>,
}

impl Shared {
    /// Waits for a live connection; fails once the client has given up.
    pub(crate) async fn connection(
        &self,
        rx: &mut watch::Receiver<ConnState>,
    ) -> Result<quinn::Connection, ClientError> {
        let state = rx
            .wait_for(|s| {
                s.closed.is_some() || s.conn.as_ref().is_some_and(|c| c.close_reason().is_none())
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        match (&state.conn, &state.closed) {
            (_, Some((Some(code), message))) => Err(ClientError::Server {
                code: *code,
                message: message.clone(),
            }),
            (_, Some((None, _))) => Err(ClientError::Closed),
            (Some(conn), None) => Ok(conn.clone()),
            (None, None) => Err(ClientError::Closed),
        }
    }

    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) enum Cmd {
    Subscribe(u64),
    Unsubscribe(u64),
    Close(oneshot::Sender<()>),
}

/// What every user-facing handle holds: while one exists, the connection
/// stays up.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd_tx: mpsc::UnboundedSender<Cmd>,
}

/// A connection to a Lapwing server. Cheap to clone; all clones share one
/// QUIC connection.
#[derive(Debug, Clone)]
pub struct Client {
    handle: Handle,
    default_publisher: Publisher,
    acked_tx: mpsc::Sender<AckRequest>,
}

struct Session {
    conn: quinn::Connection,
    ctrl_send: quinn::SendStream,
    ctrl_recv: FramedRead<quinn::RecvStream, FrameCodec<v1::ControlResponse>>,
}

impl Client {
    /// Connects, says Hello and waits for Welcome. Fails at once (no retry)
    /// when the server cannot be reached or refuses the client.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        cfg.validate()?;
        let client_config = crate::tls::quic_client_config(&cfg.trust)?;
        let mut client_config = client_config;
        client_config.transport_config(transport::transport_config(cfg.stream_receive_window));
        let addr = transport::resolve(&cfg.server).await?;
        let endpoint = transport::endpoint(addr, client_config)?;
        let (conn_tx, _) = watch::channel(ConnState::default());
        let shared = Arc::new(Shared {
            addr,
            endpoint,
            conn_tx,
            subs: Arc::new(Mutex::new(HashMap::new())),
            next_sub_id: AtomicU64::new(1),
            max_message_bytes: AtomicUsize::new(usize::MAX),
            max_frame_bytes: AtomicUsize::new(lapwing_proto::PRE_HELLO_MAX_FRAME_BYTES),
            async_errors: broadcast::channel(64).0,
            cfg,
        });
        let session = tokio::time::timeout(shared.cfg.connect_timeout, establish(&shared))
            .await
            .map_err(|_| ClientError::Timeout("connecting to the server"))??;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(shared.clone(), session, cmd_rx));
        let handle = Handle { shared, cmd_tx };
        let (acked_tx, acked_rx) = mpsc::channel(1024);
        tokio::spawn(publisher::run_acked(handle.shared.clone(), acked_rx));
        Ok(Client {
            default_publisher: Publisher::new(handle.clone()),
            handle,
            acked_tx,
        })
    }

    /// Publishes without waiting for the server (at most once: a message
    /// in flight when the connection breaks is lost). Topic and size are
    /// checked here; errors the server finds later arrive on
    /// [`Client::async_errors`]. Uses the client's default [`Publisher`].
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.default_publisher.publish(topic, payload).await
    }

    /// Publishes and waits for the server's `{epoch, seq}`.
    pub async fn publish_acked(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, ClientError> {
        let publish = self.handle.checked_publish(topic, payload.into())?;
        let (reply, rx) = oneshot::channel();
        self.acked_tx
            .send(AckRequest { publish, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// A new publisher with its own stream: publishes through one handle
    /// keep their order; different handles are independent (and run in
    /// parallel).
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.handle.clone())
    }

    /// Subscribes to `topic`. Returns once the server has accepted the
    /// subscription (or refused it).
    pub async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        validate_topic(topic)?;
        let shared = &self.handle.shared;
        let id = shared.next_sub_id.fetch_add(1, Ordering::Relaxed);
        let topic: Arc<str> = topic.into();
        let (_, batches) = crate::subscription::buffer_shape(shared.cfg.subscription_buffer_events);
        let (tx, rx) = mpsc::channel(batches);
        let (ok_tx, ok_rx) = oneshot::channel();
        let terminal = Arc::new(Mutex::new(None));
        let first_ok = Arc::new(Mutex::new(None));
        let (epoch, next) = match options.start {
            Start::After { epoch, seq } => (Some(epoch), Some(seq.saturating_add(1))),
            Start::Latest | Start::Oldest => (None, None),
        };
        shared.subs.lock().expect("subs lock").insert(
            id,
            SubEntry {
                topic: topic.clone(),
                options,
                tx,
                epoch,
                next,
                first_ok: first_ok.clone(),
                pending_ok: Some(ok_tx),
                sent_generation: None,
                from_zero: None,
                terminal: terminal.clone(),
            },
        );
        let subscription = Subscription {
            id,
            topic,
            rx,
            batch: Vec::new().into_iter(),
            terminal,
            first_ok,
            handle: self.handle.clone(),
        };
        self.handle
            .cmd_tx
            .send(Cmd::Subscribe(id))
            .map_err(|_| ClientError::Closed)?;
        match ok_rx.await {
            Ok(Ok(())) => Ok(subscription),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Errors the server reported about fire-and-forget publishes.
    pub fn async_errors(&self) -> broadcast::Receiver<(ErrorCode, String)> {
        self.handle.shared.async_errors.subscribe()
    }

    /// The server's limit on a payload (from Welcome).
    pub fn max_message_bytes(&self) -> usize {
        self.handle.shared.max_message_bytes.load(Ordering::Relaxed)
    }

    /// Waits until everything published through the default publisher has
    /// been written to the connection.
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.default_publisher.flush().await
    }

    /// Flushes the default publisher, waits (briefly) until the server has
    /// received it, and closes the connection normally.
    pub async fn close(self) -> Result<(), ClientError> {
        let flushed = self.default_publisher.finish().await;
        let (tx, rx) = oneshot::channel();
        if self.handle.cmd_tx.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.handle.shared.endpoint.wait_idle(),
        )
        .await;
        flushed
    }
}

impl Handle {
    /// Checks a publish locally (topic rules, the server's size limit) so
    /// that a bad one fails here, with a clear error, instead of later.
    pub(crate) fn checked_publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> Result<v1::Publish, ClientError> {
        validate_topic(topic)?;
        let max = self.shared.max_message_bytes.load(Ordering::Relaxed);
        if payload.len() > max {
            return Err(ClientError::MessageTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(v1::Publish {
            topic: topic.to_owned(),
            payload,
        })
    }
}

/// Connect + Hello/Welcome.
async fn establish(shared: &Shared) -> Result<Session, ClientError> {
    let cfg = &shared.cfg;
    // The name is resolved again on every (re)connect: a server that comes
    // back under the same name may have a new address (containers do). The
    // endpoint's socket fixes the address family.
    let addr = match transport::resolve(&cfg.server).await {
        Ok(a) if a.is_ipv4() == shared.addr.is_ipv4() => a,
        _ => shared.addr,
    };
    let connecting = shared
        .endpoint
        .connect(addr, &cfg.server_name)
        .map_err(|e| ClientError::Connect {
            addr: cfg.server.clone(),
            reason: e.to_string(),
        })?;
    let conn = connecting.await.map_err(|e| match e {
        quinn::ConnectionError::ApplicationClosed(_) => ClientError::Connection(e),
        other => ClientError::Connect {
            addr: cfg.server.clone(),
            reason: other.to_string(),
        },
    })?;
    let (mut ctrl_send, ctrl_recv) = conn.open_bi().await?;
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
        None => return Err(ClientError::Connection(conn.closed().await)),
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
pub(crate) fn write_error(conn: &quinn::Connection, e: quinn::WriteError) -> ClientError {
    match conn.close_reason() {
        Some(reason) => ClientError::Connection(reason),
        None => ClientError::Protocol(format!("control stream write failed: {e}")),
    }
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
    ClosedByUser(Option<oneshot::Sender<()>>),
    Lost {
        error: ClientError,
        reconnect_after: Option<Duration>,
    },
}

/// Owns the connection for the client's lifetime: runs sessions, and
/// between them reconnects with backoff.
async fn drive(
    shared: Arc<Shared>,
    mut session: Session,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut generation = 0u64;
    loop {
        generation += 1;
        let end = run_session(&shared, session, generation, &mut cmd_rx).await;
        let (error, reconnect_after) = match end {
            SessionEnd::ClosedByUser(done) => {
                give_up(&shared, None, "closed by the client".into());
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
            give_up(&shared, error.code(), error.to_string());
            fail_all(&shared, &error);
            return;
        }
        tracing::info!(%error, "connection lost; reconnecting");
        let mut delay = reconnect_after.unwrap_or(Duration::from_millis(100));
        session = loop {
            let sleep = tokio::time::sleep(jitter(delay));
            tokio::pin!(sleep);
            // Keep serving commands while down: Close must not wait.
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = cmd_rx.recv() => match cmd {
                        Some(Cmd::Close(done)) => {
                            give_up(&shared, None, "closed by the client".into());
                            let _ = done.send(());
                            return;
                        }
                        None => {
                            give_up(&shared, None, "closed by the client".into());
                            return;
                        }
                        // Sent on the next session.
                        Some(Cmd::Subscribe(_) | Cmd::Unsubscribe(_)) => {}
                    },
                }
            }
            match tokio::time::timeout(shared.cfg.connect_timeout, establish(&shared)).await {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) if is_fatal(&e) => {
                    tracing::warn!(error = %e, "reconnect refused; giving up");
                    give_up(&shared, e.code(), e.to_string());
                    fail_all(&shared, &e);
                    return;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "reconnect failed"),
                Err(_) => tracing::debug!("reconnect timed out"),
            }
            delay = (delay * 2).clamp(Duration::from_millis(100), shared.cfg.max_backoff);
        };
    }
}

fn give_up(shared: &Shared, code: Option<ErrorCode>, message: String) {
    shared.conn_tx.send_modify(|s| {
        s.conn = None;
        s.closed = Some((code, message));
    });
}

/// Ends every subscription with a copy of `error`.
fn fail_all(shared: &Shared, error: &ClientError) {
    let entries: Vec<SubEntry> = shared
        .subs
        .lock()
        .expect("subs lock")
        .drain()
        .map(|(_, e)| e)
        .collect();
    for entry in entries {
        let err = match error.code() {
            Some(code) => ClientError::Server {
                code,
                message: error.to_string(),
            },
            None => ClientError::Protocol(format!("connection lost: {error}")),
        };
        entry.fail(err);
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

async fn run_session(
    shared: &Arc<Shared>,
    session: Session,
    generation: u64,
    cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>,
) -> SessionEnd {
    let Session {
        conn,
        mut ctrl_send,
        mut ctrl_recv,
    } = session;
    shared.conn_tx.send_modify(|s| s.conn = Some(conn.clone()));
    let max_frame = shared.max_frame_bytes();
    let mut readers = JoinSet::new();
    // Cancelled when this session ends: readers stop waiting for room in a
    // paused consumer's buffer (what they hold is asked for again).
    let session_over = tokio_util::sync::CancellationToken::new();
    let _cancel_readers = session_over.clone().drop_guard();
    let mut go_away: Option<Duration> = None;

    // (Re)subscribe everything not yet sent on this connection, in one write.
    let mut buf = BytesMut::new();
    {
        let mut subs = shared.subs.lock().expect("subs lock");
        for (id, entry) in subs.iter_mut() {
            if entry.sent_generation != Some(generation) {
                encode_frame(&entry.subscribe_frame(*id, generation), &mut buf);
            }
        }
    }
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
                    Some(Ok(resp)) => handle_control(shared, resp, &mut go_away),
                    Some(Err(FrameError::Io(e))) => {
                        // The connection went away (server stopped, network
                        // lost): the ordinary reason to reconnect, not a bad frame.
                        tracing::info!(error = %e, "connection lost");
                        break SessionEnd::Lost { error: FrameError::Io(e).into(), reconnect_after: go_away };
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "bad frame on the control stream");
                        conn.close(ErrorCode::Protocol.close_code().into(), b"bad control frame");
                        break SessionEnd::Lost { error: e.into(), reconnect_after: go_away };
                    }
                    None => {
                        let error = tokio::time::timeout(Duration::from_secs(5), conn.closed())
                            .await
                            .map(ClientError::Connection)
                            .unwrap_or(ClientError::Protocol("server finished the control stream".into()));
                        break SessionEnd::Lost { error, reconnect_after: go_away };
                    }
                },
                uni = conn.accept_uni() => match uni {
                    Ok(recv) => {
                        let (batch, _) = crate::subscription::buffer_shape(shared.cfg.subscription_buffer_events);
                        readers.spawn(read_subscription_stream(shared.subs.clone(), recv, max_frame, batch, session_over.clone()));
                    }
                    Err(e) => break SessionEnd::Lost { error: e.into(), reconnect_after: go_away },
                },
                cmd = cmd_rx.recv() => {
                    let frame = match cmd {
                        Some(Cmd::Subscribe(id)) => shared
                            .subs
                            .lock()
                            .expect("subs lock")
                            .get_mut(&id)
                            .filter(|e| e.sent_generation != Some(generation))
                            .map(|e| e.subscribe_frame(id, generation)),
                        Some(Cmd::Unsubscribe(id)) => Some(v1::ControlRequest {
                            kind: Some(control_request::Kind::Unsubscribe(v1::Unsubscribe {
                                subscription_id: id,
                            })),
                        }),
                        Some(Cmd::Close(done)) => {
                            conn.close(0u32.into(), b"bye");
                            break SessionEnd::ClosedByUser(Some(done));
                        }
                        None => {
                            conn.close(0u32.into(), b"bye");
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
            }
        },
    };
    shared.conn_tx.send_modify(|s| s.conn = None);
    session_over.cancel();
    // Let the readers record their last position before anything resumes.
    let drain = async { while readers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        readers.abort_all();
    }
    if let SessionEnd::Lost { .. } = end {
        let mut subs = shared.subs.lock().expect("subs lock");
        for entry in subs.values_mut() {
            entry.sent_generation = None;
        }
    }
    end
}

fn handle_control(shared: &Shared, resp: v1::ControlResponse, go_away: &mut Option<Duration>) {
    use control_response::Kind;
    match resp.kind {
        Some(Kind::SubscribeOk(ok)) => {
            let mut subs = shared.subs.lock().expect("subs lock");
            if let Some(entry) = subs.get_mut(&ok.subscription_id) {
                if let Some(tx) = entry.pending_ok.take() {
                    *entry.first_ok.lock().expect("first_ok lock") = Some((ok.epoch, ok.start_seq));
                    let _ = tx.send(Ok(()));
                }
                if entry.epoch.is_none() {
                    entry.epoch = Some(ok.epoch);
                }
                if entry.next.is_none() {
                    entry.next = Some(ok.start_seq);
                }
            }
        }
        Some(Kind::Error(e)) if e.subscription_id != 0 => {
            let entry = shared
                .subs
                .lock()
                .expect("subs lock")
                .remove(&e.subscription_id);
            tracing::debug!(error = ?e, "subscription error");
            if let Some(entry) = entry {
                entry.fail(ClientError::server(e));
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
        Some(Kind::Unsubscribed(_) | Kind::Pong(_)) | None => {}
        Some(Kind::Welcome(w)) => tracing::warn!(?w, "unexpected second Welcome"),
    }
}
