//! The gRPC edge: `lapwing.v1.Bus`, `lapwing.v1.Admin`, `grpc.health.v1.Health`
//! and server reflection on one TCP listener (HTTP/2, tonic).
//!
//! - `bus`: Publish / PublishStream / Subscribe with the QUIC edge's
//!   delivery contract. A subscription is a [`crate::subscription::Drain`]
//!   behind a pull-based stream: the ring is read only when tonic asks for
//!   the next item, which it does only when HTTP/2 flow control lets it
//!   send. A client that reads slowly therefore holds back the reads, the
//!   ring laps it, and its next item is a `Resync` with the exact count.
//!   The server buffers at most one batch per subscription, never more.
//! - `admin`: the operator API; every call needs the admin token.
//! - `auth`: `authorization: Bearer <token>` metadata for both.
//! - `io`: the accepted TCP connections, wrapped so each HTTP/2 connection
//!   is one entry in the connection table and an operator can close it.
//!
//! Errors are gRPC statuses: the code is mapped from the Lapwing
//! [`ErrorCode`] (see PROTOCOL.md, "gRPC") and the exact Lapwing code rides
//! along in the `lapwing-error-code` trailer.

mod admin;
mod auth;
mod bus;
mod io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use lapwing_proto::v1::admin_server::AdminServer;
use lapwing_proto::v1::bus_server::BusServer;
use lapwing_proto::v1::ErrorCode;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::Status;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::connections::Connections;
use crate::http::Readiness;
use crate::limits::{Limits, RequestError};
use crate::metrics::Metrics;
use crate::registry::Registry;
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
    pub(crate) registry: Arc<Registry>,
    pub(crate) limits: Limits,
    pub(crate) auth: Auth,
    pub(crate) admin: AdminAuth,
    pub(crate) connections: Arc<Connections>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) facts: ServerFacts,
}

/// A bound gRPC listener, not yet serving.
#[derive(Debug)]
pub(crate) struct Bound {
    listener: tokio::net::TcpListener,
    tls: Option<ServerTlsConfig>,
}

/// Binds the listener (port 0 works) and prepares TLS if enabled.
pub(crate) fn bind(
    addr: SocketAddr,
    tls: Option<(&[u8], &[u8])>,
) -> Result<(Bound, SocketAddr), ServerError> {
    let bind_err = |source| ServerError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let tls = tls.map(|(cert, key)| ServerTlsConfig::new().identity(Identity::from_pem(cert, key)));
    Ok((Bound { listener, tls }, local))
}

/// Serves until `shared.shutdown`; then lets open calls end (subscription
/// streams end themselves with UNAVAILABLE) and returns.
pub(crate) async fn serve(bound: Bound, shared: Arc<Shared>, ready: Arc<Readiness>) {
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
    let max_decode = lapwing_proto::frame_limit_for(shared.limits.max_message_bytes);
    let bus = BusServer::new(bus::BusService::new(shared.clone()))
        .max_decoding_message_size(max_decode)
        .max_encoding_message_size(max_decode);
    let admin = admin_served.then(|| AdminServer::new(admin::AdminService::new(shared.clone())));

    let mut builder = Server::builder()
        // Subscription streams are long-lived: detect dead peers.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .tcp_nodelay(true);
    if let Some(tls) = bound.tls {
        builder = match builder.tls_config(tls) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "gRPC TLS setup failed; the gRPC edge is not serving");
                return;
            }
        };
    }
    let router = builder
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(bus)
        .add_optional_service(admin);
    let incoming = io::incoming(bound.listener, shared.clone());
    let shutdown = shared.shutdown.clone();
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
    }
}

/// A status with the mapped gRPC code and the Lapwing code in metadata.
pub(crate) fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let mut status = Status::new(grpc_code(code), message);
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from(code as i32),
    );
    status
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        status(e.code(), e.to_string())
    }
}
