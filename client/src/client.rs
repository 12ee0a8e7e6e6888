//! The public API: [`Client`]. It builds the shared state, connects once
//! (failing fast), then hands the connection to the session driver
//! ([`crate::driver`]) and the publish tasks ([`crate::publisher`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lapwing_proto::pattern::Pattern;
use lapwing_proto::ErrorCode;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::command::Cmd;
use crate::driver::{self, Transport};
use crate::publisher::{self, AckRequest, PublishAck, Publisher};
use crate::shared::{Handle, Shared};
use crate::transport::QuicTransport;
use crate::{ClientConfig, ClientError, SubscribeOptions, Subscription};

/// How long [`Client::close`] waits for the driver to close the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long [`Client::close`] then waits for the endpoint to go idle (the
/// close reaching the server).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A connection to a Lapwing server. Cheap to clone; all clones share one
/// QUIC connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) handle: Handle,
    default_publisher: Publisher,
    acked_tx: mpsc::Sender<AckRequest>,
    /// `None` under a test transport.
    endpoint: Option<quinn::Endpoint>,
}

impl Client {
    /// Connects, says Hello and waits for Welcome. Fails at once (no retry)
    /// when the config is invalid ([`ClientConfig::validate`]), or the
    /// server cannot be reached or refuses the client.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        cfg.validate()?;
        let transport = QuicTransport::new(&cfg).await?;
        let endpoint = transport.endpoint().clone();
        let mut client = Client::start(cfg, transport).await?;
        client.endpoint = Some(endpoint);
        Ok(client)
    }

    /// Connects over `transport` and starts the driver and publish tasks.
    pub(crate) async fn start<T: Transport>(
        cfg: ClientConfig,
        transport: T,
    ) -> Result<Client, ClientError> {
        let shared = Arc::new(Shared::new(cfg));
        let session = tokio::time::timeout(
            shared.cfg.connect_timeout,
            driver::establish(&transport, &shared),
        )
        .await
        .map_err(|_| ClientError::Timeout("connecting to the server"))??;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let _ = shared.later.set(cmd_tx.downgrade());
        tokio::spawn(driver::drive(shared.clone(), transport, session, cmd_rx));
        let handle = Handle { shared, cmd_tx };
        let (acked_tx, acked_rx) = mpsc::channel(1024);
        tokio::spawn(publisher::run_acked(handle.shared.clone(), acked_rx));
        Ok(Client {
            default_publisher: Publisher::new(handle.clone()),
            handle,
            acked_tx,
            endpoint: None,
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
    ///
    /// `topic` may be a pattern (`prices.*`: one token, `prices.>`: the
    /// rest): the subscription then follows every matching topic, the ones
    /// that exist and the ones created later, with the contract kept per
    /// topic. Each topic is announced by an [`Event::Joined`](crate::Event::Joined)
    /// and events carry their topic; `options.start` must be latest or
    /// oldest. After a reconnect every topic resumes after its own last
    /// event.
    pub async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        Pattern::parse(topic)?;
        let (subscription, verdict) =
            self.handle
                .shared
                .subs
                .register(topic, options, self.handle.cmd_tx.clone());
        self.handle
            .cmd_tx
            .send(Cmd::Subscribe(subscription.id()))
            .map_err(|_| ClientError::Closed)?;
        match verdict.await {
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
    /// been written to the connection; fails like [`Publisher::flush`].
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.default_publisher.flush().await
    }

    /// Flushes the default publisher, waits (at most 10 s) until the server
    /// confirms it published all of it, and closes the connection normally. Fails like
    /// [`Publisher::finish`] when fire-and-forget publishes were dropped.
    pub async fn close(self) -> Result<(), ClientError> {
        let flushed = self.default_publisher.finish().await;
        let (tx, rx) = oneshot::channel();
        if self.handle.cmd_tx.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(CLOSE_WAIT, rx).await;
        }
        if let Some(endpoint) = &self.endpoint {
            let _ = tokio::time::timeout(IDLE_WAIT, endpoint.wait_idle()).await;
        }
        flushed
    }
}
