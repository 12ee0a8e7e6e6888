//! The HTTP listener: `/metrics` (Prometheus text format), `/healthz`
//! (liveness: the process answers) and `/readyz` (every listener is up and
//! the server is not shutting down), for load balancers and orchestrators.
//! Plaintext HTTP/1.1 on `listen.http`, default `127.0.0.1:7402`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::connections::Connections;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::ServerError;

/// A listener's up/down state.
#[derive(Debug, Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// Sets it.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Release);
    }

    /// Reads it.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What `/readyz` checks.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The QUIC endpoint accepts connections.
    pub quic: Flag,
    /// The gRPC server is serving.
    pub grpc: Flag,
    /// The HTTP server is serving (it answers `/readyz` itself, but a
    /// handle may ask too).
    pub http: Flag,
    /// Set when a graceful shutdown starts: not ready any more.
    pub shutting_down: Flag,
    /// Cluster mode: the backbone, which must be reachable.
    pub backbone: std::sync::OnceLock<Arc<crate::backbone::Backbone>>,
}

impl Readiness {
    /// Listeners that are not up, or `["shutting down"]`; empty when ready.
    pub fn not_ready(&self) -> Vec<&'static str> {
        if self.shutting_down.get() {
            return vec!["shutting down"];
        }
        let mut missing: Vec<&'static str> = [
            ("quic", &self.quic),
            ("grpc", &self.grpc),
            ("http", &self.http),
        ]
        .into_iter()
        .filter(|(_, f)| !f.get())
        .map(|(name, _)| name)
        .collect();
        match self.backbone.get() {
            Some(b) if !b.is_up() => missing.push("backbone (unreachable)"),
            Some(b) if !b.is_ready() => missing.push("backbone (JetStream not answering)"),
            _ => {}
        }
        missing
    }
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) partial_frames: Arc<crate::budget::Budget>,
    pub(crate) denials: Arc<crate::permissions::Denials>,
    pub(crate) ready: Arc<Readiness>,
}

/// Binds the listener (port 0 works).
pub(crate) fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let bind_err = |source| ServerError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// Serves until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) {
    let ready = state.ready.clone();
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    ready.http.set(true);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    ready.http.set(false);
    if let Err(e) = result {
        warn!(error = %e, "HTTP listener stopped");
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let body = s.metrics.render(
        &s.registry,
        s.connections.counts(),
        &s.partial_frames,
        &s.denials,
        s.ready.backbone.get().map(|b| b.stats()),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let missing = s.ready.not_ready();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join(", ")),
        )
    }
}
