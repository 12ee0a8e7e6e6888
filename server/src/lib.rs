//! The Lapwing server: a topic registry of lossy rings behind a QUIC edge.
//!
//! # Architecture
//!
//! A [`registry::Registry`] maps topic names to [`topic::Topic`]s. A topic
//! owns a `lapwing-ring` ring (multi-producer: any number of connections
//! publish into it without a lock), a random epoch, counters, and a
//! [`wakeup::Wakeup`] its idle subscribers park on. The QUIC edge
//! (`edge::quic`) runs one task per connection, driven by its control
//! stream; publish streams call `Topic::publish` (the payload is copied once,
//! into the ring, behind an 8-byte publish timestamp); every subscription is
//! a task with its own ring reader wrapped in a [`subscription::Drain`],
//! which turns ring events (messages, laps) into Deliveries (messages,
//! resyncs with exact gap counts) independently of the transport. Data
//! flows one way: stream → `Topic::publish` → ring → wake → drain → stream.
//! Nothing on that path takes a lock; the registry's lock is taken only to
//! look a topic up, and publish streams cache the topic they last used.
//!
//! # Why one stream per subscription
//!
//! QUIC flow control and retransmission are per stream. With all of a
//! connection's subscriptions multiplexed on one stream, a topic the
//! client reads slowly (or a lost packet of one topic) would stall every
//! other topic behind it. With a stream each, a slow subscription only
//! slows itself: its task waits on its own stream's flow control, the
//! ring laps it, and its next batch starts with a `Resync` that says
//! exactly what it missed, while the other subscriptions keep flowing. The
//! cost (measured in DESIGN.md) is ~20 % at 800 streams, acceptable for the
//! isolation. Each subscription task drains its ring in batches and hands
//! quinn one write per batch, which is what QUIC throughput depends on.
//!
//! # Why the wakeup is built the way it is
//!
//! Most publishes happen while every subscriber is busy writing, or when
//! nobody subscribes; waking must cost the publisher next to nothing then.
//! So [`wakeup::Wakeup`] keeps an atomic count of parked subscribers and
//! only touches `tokio::sync::Notify` (a mutex) when it is non-zero. A
//! subscriber registers its `Notified` future *before* it bumps the count
//! and re-checks the ring, and both sides separate their store from their
//! load with a SeqCst fence, so a publish can never fall between "ring looks
//! empty" and "parked" unseen (no lost wakeup).
//!
//! # Entry points
//!
//! [`spawn`] binds everything (port 0 works, for tests) and returns a
//! [`ServerHandle`]; [`run`] is spawn + wait for a shutdown future +
//! graceful shutdown (GoAway on every control stream, a short drain, close
//! with SHUTTING_DOWN). The `lapwing-server` binary adds config loading,
//! logging and signals.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod limits;
pub mod registry;
pub mod shutdown;
pub mod subscription;
pub mod tls;
pub mod topic;
pub mod wakeup;

mod edge;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

use crate::edge::quic;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid (every problem listed).
    #[error(transparent)]
    Config(#[from] config::ConfigErrors),
    /// Certificate or key problem.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A `[[topics]]` entry could not be created.
    #[error("cannot create configured topic: {0}")]
    Topic(#[from] registry::RegistryError),
}

/// A running server. Dropping it starts a graceful shutdown in the
/// background; [`ServerHandle::shutdown`] does it and waits.
#[derive(Debug)]
pub struct ServerHandle {
    quic_addr: SocketAddr,
    cert_path: PathBuf,
    fingerprint: String,
    registry: Arc<registry::Registry>,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    accept_task: Option<JoinHandle<()>>,
    drain: Duration,
}

impl ServerHandle {
    /// The bound QUIC (UDP) address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The certificate (PEM) clients can trust.
    pub fn cert_pem_path(&self) -> &Path {
        &self.cert_path
    }

    /// SHA-256 fingerprint of the certificate (lowercase hex).
    pub fn cert_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The epoch of a topic, if it exists (test helper).
    pub fn epoch_of(&self, topic: &str) -> Option<u64> {
        self.registry.get(topic).map(|t| t.epoch())
    }

    /// The topic registry (create, delete, list, stats).
    pub fn registry(&self) -> &Arc<registry::Registry> {
        &self.registry
    }

    /// Graceful shutdown: stop accepting, GoAway on every connection, let
    /// clients leave for up to `shutdown.drain_ms`, close the rest with
    /// SHUTTING_DOWN, wait (bounded) for the endpoint to go idle.
    pub async fn shutdown(mut self) {
        info!("shutting down");
        self.shutdown.cancel();
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        self.tracker.close();
        let grace = self.drain + Duration::from_secs(2);
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("connections still open after the drain; closing them");
        }
        self.endpoint.close(
            quic::code(lapwing_proto::v1::ErrorCode::ShuttingDown),
            b"server shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!("stopped");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a server from `config` and returns once it listens. Must be
/// called within a Tokio runtime.
pub fn spawn(config: Config) -> Result<ServerHandle, ServerError> {
    config.validate()?;
    let identity = tls::TlsIdentity::load_or_generate(&config)?;
    if identity.generated {
        info!(cert = %identity.cert_path.display(), fingerprint = %identity.fingerprint,
            "generated a self-signed certificate");
    } else {
        info!(cert = %identity.cert_path.display(), fingerprint = %identity.fingerprint,
            "using certificate");
    }
    let crypto = identity.quic_server_crypto()?;
    let limits = limits::Limits::from_config(&config);
    let registry = Arc::new(registry::Registry::from_config(&config)?);
    let auth = auth::Auth::new(&config.auth.tokens);
    let endpoint = quic::bind(
        config.listen.quic,
        config.transport.udp_buffer_bytes,
        crypto,
    )?;
    let quic_addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen.quic,
        source,
    })?;
    if !auth.required() && !quic_addr.ip().is_loopback() {
        warn!(addr = %quic_addr, "listening on a non-loopback address with no tokens configured: anyone who can reach it can publish and subscribe");
    }
    let shutdown = CancellationToken::new();
    let shared = Arc::new(quic::Shared {
        registry: registry.clone(),
        limits,
        auth,
        server_name: config.server_name.clone(),
        shutdown: shutdown.clone(),
        drain: Duration::from_millis(config.shutdown.drain_ms),
        reconnect_after_ms: config.shutdown.reconnect_after_ms,
        batch: subscription::BatchLimits::default(),
        next_connection_id: AtomicU64::new(1),
    });
    let tracker = TaskTracker::new();
    let accept_task = tokio::spawn(quic::serve(endpoint.clone(), shared, tracker.clone()));
    info!(quic = %quic_addr, auth = auth_label(&config), "lapwing server listening");
    Ok(ServerHandle {
        quic_addr,
        cert_path: identity.cert_path,
        fingerprint: identity.fingerprint,
        registry,
        endpoint,
        shutdown,
        tracker,
        accept_task: Some(accept_task),
        drain: Duration::from_millis(config.shutdown.drain_ms),
    })
}

fn auth_label(config: &Config) -> &'static str {
    if config.auth.tokens.is_empty() {
        "none"
    } else {
        "token"
    }
}

/// Runs a server until `shutdown` completes, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let handle = spawn(config)?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}
