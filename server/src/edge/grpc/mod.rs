//! The gRPC edge: `lapwing.v1.Bus`, `lapwing.v1.Admin`, `grpc.health.v1.Health`
//! and server reflection on one TCP listener (HTTP/2, tonic).
//!
//! - `bus`: Publish / PublishStream / Subscribe with the QUIC edge's
//!   delivery contract. A subscription is a [`crate::drain::Drain`]
//!   behind a pull-based stream: the ring is read only when tonic asks for
//!   the next item, which it does only when HTTP/2 flow control lets it
//!   send. A client that reads slowly therefore holds back the reads, the
//!   ring laps it, and its next item is a `Resync` with the exact count.
//!   The server buffers at most one batch per subscription, never more.
//! - `admin`: the operator API; every call needs the admin token.
//! - `auth`: `authorization: Bearer <token>` metadata for both.
//! - `io`: the accepted TCP connections: TLS and the HTTP/2 preface within
//!   the handshake deadline, then the session layer's shared gate; each
//!   HTTP/2 connection is one entry in the connection table and an operator
//!   can close it.
//! - `limit`: request bodies charged to the partial-frame budget, with the
//!   frame deadline, like QUIC streams.
//!
//! Errors are gRPC statuses built by one function, [`status`]: the code is
//! mapped from the Lapwing [`ErrorCode`] (see PROTOCOL.md, "gRPC") and the
//! exact Lapwing code rides along in the `lapwing-error-code` metadata.

mod admin;
mod auth;
mod bus;
mod io;
mod limit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapwing_proto::v1::admin_server::AdminServer;
use lapwing_proto::v1::bus_server::BusServer;
use lapwing_proto::v1::ErrorCode;
use tonic::transport::Server;
use tonic::Status;
use tracing::{info, warn};

use crate::error::RequestError;
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::session::Core;
use crate::ServerError;

pub(crate) use auth::AdminAuth;

/// Metadata key of the Lapwing error code on every error status.
pub(crate) const ERROR_CODE_KEY: &str = "lapwing-error-code";

/// What the server reports about itself (`Admin.ServerInfo`).
#[derive(Debug, Clone)]
pub(crate) struct ServerFacts {
    pub(crate) quic_listen: SocketAddr,
    pub(crate) grpc_listen: SocketAddr,
    pub(crate) http_listen: SocketAddr,
    pub(crate) fingerprint: String,
    pub(crate) default_ring_bytes: usize,
    pub(crate) started: Instant,
    pub(crate) grpc_tls: bool,
    pub(crate) server_name: String,
}

/// State shared by every gRPC call.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The session layer: registry, limits, auth, the connection gate.
    pub(crate) core: Arc<Core>,
    pub(crate) admin: AdminAuth,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) facts: ServerFacts,
    /// Reloads the principals (`Admin.ReloadPrincipals`).
    pub(crate) reloader: Arc<crate::reload::Reloader>,
    /// TLS, done by `io` before a connection is admitted (None: plaintext).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// HTTP/2 flow-control windows the server grants: per stream (what a
/// streaming call may have in flight unread) and per connection. hyper's
/// defaults are far larger; a publisher does not need more for throughput
/// on loopback or a LAN, and a connection that stalls holds no more.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Calls beyond the subscriptions and publish streams a connection may
/// hold: admin, health and reflection calls.
const SPARE_STREAMS: u32 = 16;

/// Binds the listener (port 0 works).
pub(crate) fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let bind_err = |source| ServerError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// Serves until shutdown; then lets open calls end (subscription streams
/// end themselves with UNAVAILABLE) and returns.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    ready: Arc<Readiness>,
) {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<BusServer<bus::BusService>>()
        .await;
    let admin_served = shared.admin.served();
    if admin_served {
        health_reporter
            .set_serving::<AdminServer<admin::AdminService>>()
            .await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(lapwing_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1 for current tools, v1alpha for older ones (and grpcio-reflection).
    let (reflection_v1, reflection_v1alpha) =
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(a), Ok(b)) => (Some(a), Some(b)),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "gRPC reflection disabled: descriptor set not usable");
                (None, None)
            }
        };
    let limits = &shared.core.limits;
    let max_decode = lapwing_proto::frame_limit_for(limits.max_message_bytes);
    let bus = BusServer::new(bus::BusService::new(shared.clone()))
        .max_decoding_message_size(max_decode)
        .max_encoding_message_size(max_decode);
    let admin = admin_served.then(|| AdminServer::new(admin::AdminService::new(shared.clone())));

    let router = Server::builder()
        // Subscription streams are long-lived: detect dead peers.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        // tonic would otherwise leave HTTP/2 streams per connection
        // unbounded; each can hold a partial message (metered by `limit`).
        .max_concurrent_streams(Some(
            limits.max_subscriptions + limits.max_publish_streams + SPARE_STREAMS,
        ))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .layer(limit::MeterBodies::new(
            shared.core.partial_frames.clone(),
            limits.frame_timeout,
            max_decode,
        ))
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(bus)
        .add_optional_service(admin);
    let incoming = io::incoming(listener, shared.clone());
    let shutdown = shared.core.shutdown.clone();
    ready.grpc.set(true);
    let result = router
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    ready.grpc.set(false);
    if let Err(e) = result {
        warn!(error = %e, "gRPC edge stopped");
    } else {
        info!("gRPC edge stopped");
    }
}

/// The gRPC status code for a Lapwing error code (PROTOCOL.md, "gRPC").
pub(crate) fn grpc_code(code: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match code {
        ErrorCode::Unspecified => Code::Unknown,
        ErrorCode::Protocol => Code::InvalidArgument,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::UnsupportedVersion => Code::FailedPrecondition,
        ErrorCode::FrameTooLarge => Code::ResourceExhausted,
        ErrorCode::MessageTooLarge => Code::InvalidArgument,
        ErrorCode::InvalidTopic => Code::InvalidArgument,
        ErrorCode::TooManySubscriptions => Code::ResourceExhausted,
        ErrorCode::TooManyConnections => Code::ResourceExhausted,
        ErrorCode::InvalidSubscription => Code::InvalidArgument,
        ErrorCode::Lagged => Code::Aborted,
        ErrorCode::ShuttingDown => Code::Unavailable,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::TopicNotFound => Code::NotFound,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::TopicExists => Code::AlreadyExists,
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::Unavailable => Code::Unavailable,
    }
}

/// The one builder of error statuses: the mapped gRPC code, the message,
/// and the Lapwing code in metadata.
pub(crate) fn status(e: &RequestError) -> Status {
    let code = e.code();
    let mut status = Status::new(grpc_code(code), e.to_string());
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from(code as i32),
    );
    status
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        status(&e)
    }
}
