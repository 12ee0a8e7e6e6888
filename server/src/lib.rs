//! The Lapwing server: a topic registry of lossy rings behind a QUIC edge
//! and a gRPC edge, with one session layer between them and the topics.
//!
//! # Architecture
//!
//! A [`registry::Registry`] maps topic names to [`topic::Topic`]s. A topic
//! owns a `lapwing-ring` ring (multi-producer: any number of connections
//! publish into it without a lock), a random epoch, counters, and a
//! [`wakeup::Wakeup`] its idle subscribers park on. The edges own sockets,
//! streams and framing; what a request means is decided once, for both, by
//! the [`session`] layer: admission through one connection gate, tokens,
//! subscribe (caps, quota, the drain), publishers, the per-batch
//! bookkeeping, and one table from [`error::RequestError`] to wire codes.
//! The QUIC edge (`edge::quic`) runs one task per connection, driven by its
//! control stream; publish streams call `Topic::publish` (the payload is
//! copied once, into the ring, behind an 8-byte publish timestamp); every
//! subscription is a task with its own ring reader wrapped in a
//! [`drain::Drain`], which turns ring events (messages, laps) into
//! Deliveries (messages, resyncs with exact gap counts) independently of
//! the transport. Data flows one way: stream → `Topic::publish` → ring →
//! wake → drain → stream. Nothing on that path takes a lock; the registry's
//! lock is taken only to look a topic up, and publish streams cache the
//! topic they last used. The QUIC edge's receive path, the connections
//! that publish and their publish streams run on an ingest lane of their
//! own threads (`transport.ingest_threads`), so the fanout they cause
//! cannot starve them of CPU.
//!
//! In cluster mode ([`backbone`], `--backbone nats://…`) the topics in
//! `backbone.topics` go through a NATS JetStream backbone: a publish goes
//! to the topic's stream, each node with subscribers copies the stream
//! into its ring (its feed), and a resume older than the ring is replayed
//! from the stream through the drain's [`history::History`] seam, so every
//! node numbers a message alike.
//!
//! # Why memory is bounded the way it is
//!
//! Clients may be hostile, so everything one can make the server hold has a
//! bound, and the bounds that matter across clients are server-wide
//! [`budget::Budget`]s rather than per-connection guesses: ring memory
//! (reserved per ring, `limits.ring_memory_bytes`; rings are zeroed
//! allocations, resident only where written) and bytes of frames still
//! arriving ([`partial`], `limits.partial_frame_bytes`, with a deadline),
//! plus caps on connections (one gate for both edges, taken after the
//! handshake), streams, windows, topics per connection, and idle topics
//! reaped. A refusal is a typed error to that client only.
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
//! cost (measured with a fanout prototype before the server was written:
//! free at 10 streams per connection, 20-25 % fewer messages per second at
//! 800 streams in all) is acceptable for the
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
//! # The gRPC edge, admin API and metrics
//!
//! `edge::grpc` serves `lapwing.v1.Bus` (the same contract over HTTP/2:
//! each Subscribe is a `Drain` read only when HTTP/2 flow control lets the
//! stream take more, so a slow reader is lapped and resynced exactly like
//! a QUIC one), `lapwing.v1.Admin` (admin token), gRPC health and
//! reflection. Both edges register their connections and subscriptions in
//! [`connections::Connections`], which the admin API lists and closes, and
//! each subscription reports once per batch to [`metrics::Metrics`], which
//! [`http`] serves as `/metrics` next to `/healthz` and `/readyz`.
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
pub mod backbone;
pub mod budget;
pub mod config;
pub mod connections;
pub mod drain;
pub mod error;
pub mod history;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod partial;
pub mod permissions;
pub mod registry;
pub mod reload;
pub mod session;
pub mod shutdown;
pub mod tls;
pub mod topic;
pub mod topic_publisher;
pub mod transport;
pub mod wakeup;
pub mod wildcard;

mod edge;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

use crate::edge::{grpc, quic};
use crate::transport::Transport;

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
    /// The principals could not be built (a bug: validate checks them).
    #[error("cannot load principals: {0}")]
    Auth(String),
    /// A `[[topics]]` entry could not be created.
    #[error("cannot create configured topic: {0}")]
    Topic(#[from] registry::RegistryError),
    /// Cluster mode could not start.
    #[error(transparent)]
    Backbone(#[from] backbone::BackboneError),
    /// The QUIC ingest lane's threads could not be started.
    #[error("cannot start the ingest lane's {threads} threads: {source}")]
    IngestLane {
        /// How many were asked for (`transport.ingest_threads`, resolved).
        threads: usize,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server. Dropping it starts a graceful shutdown in the
/// background; [`ServerHandle::shutdown`] does it and waits.
#[derive(Debug)]
pub struct ServerHandle {
    quic_addr: SocketAddr,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    connections: Arc<connections::Connections>,
    ready: Arc<http::Readiness>,
    grpc_task: Option<JoinHandle<()>>,
    http_task: Option<JoinHandle<()>>,
    reaper_task: Option<JoinHandle<()>>,
    reloader: Arc<reload::Reloader>,
    cert_path: PathBuf,
    fingerprint: String,
    registry: Arc<registry::Registry>,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    accept_task: Option<JoinHandle<()>>,
    drain: Duration,
    /// Held for its drop, which stops the lane; last, because the
    /// endpoint's receive path runs on it.
    _ingest: quic::Ingest,
}

/// How long a step of the graceful shutdown may take beyond the configured
/// drain: the QUIC connection tasks finishing, the endpoint going idle,
/// the gRPC and HTTP servers returning. Bounded so a stuck peer cannot
/// hold a shutdown forever.
const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

impl ServerHandle {
    /// The bound QUIC (UDP) address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound gRPC (TCP) address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP (metrics, health) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Live connections of both edges.
    pub fn connections(&self) -> &Arc<connections::Connections> {
        &self.connections
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

    /// What `/readyz` reports: every listener up and, in cluster mode, the
    /// backbone reachable (not while shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.not_ready().is_empty()
    }

    /// Reads `[[principals]]` from the config file again and puts them in
    /// force (what SIGHUP does); see [`reload`].
    pub fn reload_principals(&self) -> Result<usize, reload::ReloadError> {
        self.reloader.reload()
    }

    /// Graceful shutdown: stop accepting, GoAway on every connection, let
    /// clients leave for up to `shutdown.drain_ms`, close the rest with
    /// SHUTTING_DOWN, wait (bounded) for the endpoint to go idle.
    pub async fn shutdown(mut self) {
        info!("shutting down");
        self.ready.shutting_down.set(true);
        self.shutdown.cancel();
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        self.tracker.close();
        let grace = self.drain + SHUTDOWN_STEP;
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
        let _ = tokio::time::timeout(SHUTDOWN_STEP, self.endpoint.wait_idle()).await;
        if let Some(mut task) = self.grpc_task.take() {
            // Calls end themselves on the shutdown signal; a connection
            // whose client stopped reading cannot take its final status, so
            // after the drain every gRPC socket is cut.
            if tokio::time::timeout(self.drain, &mut task).await.is_err() {
                for conn in self.connections.list() {
                    if conn.transport() == Transport::Grpc {
                        self.connections.close(conn.id(), "server shutting down");
                    }
                }
                if tokio::time::timeout(SHUTDOWN_STEP, &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
        }
        for task in [self.http_task.take(), self.reaper_task.take()]
            .into_iter()
            .flatten()
        {
            finish_or_abort(task).await;
        }
        info!("stopped");
    }
}

/// Waits up to [`SHUTDOWN_STEP`] for a task that watches the shutdown
/// signal, then aborts it.
async fn finish_or_abort(mut task: JoinHandle<()>) {
    if tokio::time::timeout(SHUTDOWN_STEP, &mut task)
        .await
        .is_err()
    {
        task.abort();
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
    let state = if identity.generated {
        "generated a self-signed certificate"
    } else {
        "using certificate"
    };
    info!(cert = %identity.cert_path.display(), fingerprint = %identity.fingerprint, "{state}");
    let limits = limits::Limits::from_config(&config);
    let registry = Arc::new(registry::Registry::from_config(&config)?);
    let metrics = Arc::new(metrics::Metrics::new());
    let connections = Arc::new(connections::Connections::new(metrics.clone()));
    let ready = Arc::new(http::Readiness::default());
    let shutdown = CancellationToken::new();
    let backbone = if config.backbone.enabled() {
        let b = backbone::Backbone::start(&config.backbone, registry.clone(), shutdown.clone())?;
        let _ = ready.backbone.set(b.clone());
        info!(url = %config.backbone.url, topics = ?config.backbone.topics, "cluster mode: topics go through the backbone");
        Some(b)
    } else {
        None
    };
    let core = session::Core::new(
        registry.clone(),
        limits,
        auth::Auth::from_config(&config).map_err(ServerError::Auth)?,
        connections.clone(),
        config.limits.partial_frame_bytes,
        shutdown.clone(),
        backbone,
    );

    let ingest_threads = match config.transport.ingest_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let ingest = quic::Ingest::start(ingest_threads).map_err(|source| ServerError::IngestLane {
        threads: ingest_threads,
        source,
    })?;
    let (endpoint, loopback) = quic::bind(
        config.listen.quic,
        config.transport.udp_buffer_bytes,
        &core.limits,
        identity.quic_server_crypto()?,
        &ingest,
    )?;
    let quic_addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen.quic,
        source,
    })?;
    let tracker = TaskTracker::new();
    let batch = drain::BatchLimits::default();
    let blocks = quic::BlockPool::new(batch.frame_bytes());
    tokio::spawn(blocks.clone().trim_until(shutdown.clone()));
    let accept_task = tokio::spawn(quic::serve(
        endpoint.clone(),
        Arc::new(quic::Shared {
            core: core.clone(),
            server_name: config.server_name.clone(),
            drain: Duration::from_millis(config.shutdown.drain_ms),
            reconnect_after_ms: config.shutdown.reconnect_after_ms,
            batch,
            blocks,
            ingest: ingest.handle().clone(),
            loopback,
        }),
        tracker.clone(),
    ));
    ready.quic.set(true);

    let grpc_tls = config.tls.grpc.enabled_for(config.listen.grpc);
    let (grpc_listener, grpc_addr) = grpc::bind(config.listen.grpc)?;
    let (http_listener, http_addr) = http::bind(config.listen.http)?;
    let admin = grpc::AdminAuth::new(
        config.auth.admin_token.as_deref(),
        grpc_addr.ip().is_loopback(),
        &core.directory.current(),
    );
    for p in config.principals.iter().filter(|p| p.token.is_some()) {
        warn!(principal = %p.name, "principal has its token in clear in the config; prefer token_sha256 (`lapwing auth hash`)");
    }
    warn_about_exposure(&config, &core, &admin, quic_addr, grpc_addr);
    let reloader = Arc::new(reload::Reloader::new(&config, core.directory.clone()));
    let grpc_shared = Arc::new(grpc::Shared {
        core: core.clone(),
        reloader: reloader.clone(),
        admin,
        metrics: metrics.clone(),
        tls: grpc_tls
            .then(|| identity.grpc_server_crypto())
            .transpose()?,
        facts: grpc::ServerFacts {
            quic_listen: quic_addr,
            grpc_listen: grpc_addr,
            http_listen: http_addr,
            fingerprint: identity.fingerprint.clone(),
            default_ring_bytes: config.topic_defaults.ring_bytes,
            started: std::time::Instant::now(),
            grpc_tls,
            server_name: config.server_name.clone(),
        },
    });
    let grpc_task = tokio::spawn(grpc::serve(grpc_listener, grpc_shared, ready.clone()));
    let http_task = tokio::spawn(http::serve(
        http_listener,
        http::HttpState {
            metrics: metrics.clone(),
            registry: registry.clone(),
            connections: connections.clone(),
            partial_frames: core.partial_frames.clone(),
            denials: core.denials.clone(),
            ready: ready.clone(),
        },
        shutdown.clone(),
    ));
    let reaper_task = config.idle_topic_ttl().map(|ttl| {
        tokio::spawn(reap_idle_topics(
            registry.clone(),
            metrics,
            ttl,
            shutdown.clone(),
        ))
    });
    info!(quic = %quic_addr, grpc = %grpc_addr, grpc_tls, http = %http_addr,
        auth = if core.directory.current().required() { "token" } else { "none" },
        "lapwing server listening");
    Ok(ServerHandle {
        quic_addr,
        grpc_addr,
        http_addr,
        connections,
        ready,
        grpc_task: Some(grpc_task),
        http_task: Some(http_task),
        reaper_task,
        reloader,
        cert_path: identity.cert_path,
        fingerprint: identity.fingerprint,
        registry,
        endpoint,
        shutdown,
        tracker,
        accept_task: Some(accept_task),
        drain: Duration::from_millis(config.shutdown.drain_ms),
        _ingest: ingest,
    })
}

/// Logs, once at start, who can reach what: a listener off loopback with
/// no data tokens, and how Admin is protected.
fn warn_about_exposure(
    config: &Config,
    core: &session::Core,
    admin: &grpc::AdminAuth,
    quic_addr: SocketAddr,
    grpc_addr: SocketAddr,
) {
    if !core.directory.current().required() {
        for (edge, addr) in [("QUIC", quic_addr), ("gRPC", grpc_addr)] {
            if !addr.ip().is_loopback() {
                warn!(%addr, "{edge} listens on a non-loopback address with no tokens configured: anyone who can reach it can publish and subscribe (set auth.tokens / LAPWING_TOKENS)");
            }
        }
    }
    match (admin.token_required(), admin.served()) {
        (true, _) => info!("gRPC Admin requires the admin token"),
        (false, true) => {
            info!(grpc = %grpc_addr, "no admin token configured: gRPC Admin is served on this loopback listener to anyone who can reach it")
        }
        (false, false) if !config.auth.tokens.is_empty() => {
            warn!(grpc = %grpc_addr, "data tokens are configured but no admin token: gRPC Admin is not served (set auth.admin_token / LAPWING_ADMIN_TOKEN)")
        }
        (false, false) => {
            warn!(grpc = %grpc_addr, "no admin token configured and the gRPC listener is not loopback: gRPC Admin is not served (set auth.admin_token / LAPWING_ADMIN_TOKEN)")
        }
    }
}

/// Deletes auto-created topics idle for `ttl` (see `Registry::reap_idle`),
/// looking a few times per TTL so a topic lives at most about 1.25 TTL
/// after its last use.
async fn reap_idle_topics(
    registry: Arc<registry::Registry>,
    metrics: Arc<metrics::Metrics>,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let period = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for topic in registry.reap_idle(ttl) {
            metrics.retire_topic(&topic.stats());
            info!(topic = %topic.name(), "idle topic reaped");
        }
    }
}

/// Runs a server until `shutdown` completes, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let handle = spawn(config)?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}
