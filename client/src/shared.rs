//! State shared by the session driver, the publish tasks and the user's
//! handles: the current connection (as a `watch`), the subscription
//! registry, the limits from the latest Welcome, and the publish streams
//! waiting for the server's receipt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lapwing_proto::v1;
use lapwing_proto::{validate_topic, ErrorCode};
use tokio::sync::{broadcast, mpsc, watch};

use crate::command::Cmd;
use crate::publisher::StreamReceipts;
use crate::subscription::Subscriptions;
use crate::{ClientConfig, ClientError};

/// The current connection, as the publishers see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnState {
    /// The live QUIC connection, if any (always `None` under a test
    /// transport: the publishers are not part of the driver's tests).
    pub(crate) conn: Option<quinn::Connection>,
    /// Set once the client has given up for good.
    pub(crate) closed: Option<(Option<ErrorCode>, String)>,
}

/// State shared by the driver, the stream tasks and the user's handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: ClientConfig,
    pub(crate) conn_tx: watch::Sender<ConnState>,
    pub(crate) subs: Arc<Subscriptions>,
    /// From the latest Welcome.
    pub(crate) max_message_bytes: AtomicUsize,
    pub(crate) max_frame_bytes: AtomicUsize,
    /// Errors the server reported for fire-and-forget publishes.
    pub(crate) async_errors: broadcast::Sender<(ErrorCode, String)>,
    /// Finished publish streams waiting for the server's receipt.
    pub(crate) receipts: StreamReceipts,
    /// The driver's own way to ask itself for a resubscribe later (weak:
    /// it must not keep the client alive once every handle is gone).
    pub(crate) later: std::sync::OnceLock<mpsc::WeakUnboundedSender<Cmd>>,
}

impl Shared {
    /// Fresh state for a client that has not connected yet.
    pub(crate) fn new(cfg: ClientConfig) -> Self {
        Shared {
            conn_tx: watch::channel(ConnState::default()).0,
            subs: Arc::new(Subscriptions::new(
                cfg.subscription_buffer_events,
                cfg.buffer_overflow,
            )),
            max_message_bytes: AtomicUsize::new(usize::MAX),
            max_frame_bytes: AtomicUsize::new(lapwing_proto::PRE_HELLO_MAX_FRAME_BYTES),
            async_errors: broadcast::channel(64).0,
            receipts: StreamReceipts::default(),
            later: std::sync::OnceLock::new(),
            cfg,
        }
    }

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

    /// Marks the client as given up for good: waiting publishers fail.
    pub(crate) fn give_up(&self, code: Option<ErrorCode>, message: String) {
        self.conn_tx.send_modify(|s| {
            s.conn = None;
            s.closed = Some((code, message));
        });
    }
}

/// What every user-facing handle holds: while one exists, the connection
/// stays up (see [`Cmd`]).
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd_tx: mpsc::UnboundedSender<Cmd>,
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
