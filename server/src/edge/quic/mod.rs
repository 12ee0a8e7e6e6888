//! The QUIC edge: one UDP endpoint, one task per connection, one task per
//! subscription and per publish stream.
//!
//! - `control`: the connection's session, driven by its control stream
//!   (Hello/Welcome, Subscribe, Unsubscribe, Ping, GoAway).
//! - `publish`: client-opened uni streams (fire-and-forget) and bidi streams
//!   (acked) carrying Publish frames.
//! - `subscribe`: one server-opened uni stream per subscription, fed by a
//!   [`crate::subscription::Drain`] one batch (one write) at a time.

mod control;
mod publish;
mod subscribe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::limits::Limits;
use crate::registry::Registry;
use crate::subscription::BatchLimits;
use crate::ServerError;

/// State every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Arc<Registry>,
    pub(crate) limits: Limits,
    pub(crate) auth: Auth,
    pub(crate) server_name: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) drain: Duration,
    pub(crate) reconnect_after_ms: u32,
    pub(crate) batch: BatchLimits,
    /// The connection table (ids, admin listing and closing).
    pub(crate) connections: Arc<crate::connections::Connections>,
}

/// An application error code as a QUIC VarInt.
pub(crate) fn code(c: lapwing_proto::v1::ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(c as u32)
}

/// Binds the UDP socket with big buffers and creates the endpoint.
pub(crate) fn bind(
    addr: SocketAddr,
    udp_buffer_bytes: usize,
    crypto: Arc<quinn::crypto::rustls::QuicServerConfig>,
) -> Result<quinn::Endpoint, ServerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind_err = |source| ServerError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(bind_err)?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped traffic on `[::]` too, where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the OS caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(udp_buffer_bytes);
    let _ = socket.set_send_buffer_size(udp_buffer_bytes);
    let got_recv = socket.recv_buffer_size().unwrap_or(0);
    let got_send = socket.send_buffer_size().unwrap_or(0);
    // Linux reports twice the usable size (bookkeeping overhead included).
    if got_recv < udp_buffer_bytes {
        warn!(
            requested = udp_buffer_bytes,
            recv = got_recv,
            send = got_send,
            "UDP socket buffers are smaller than requested (raise net.core.rmem_max / wmem_max)"
        );
    } else {
        info!(recv = got_recv, send = got_send, "UDP socket buffers");
    }
    socket.bind(&addr.into()).map_err(bind_err)?;
    let socket: std::net::UdpSocket = socket.into();

    let mut transport = quinn::TransportConfig::default();
    // Client-opened streams: publish streams (uni) and acked publish
    // streams (bidi, plus the control stream).
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(256));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(64));
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    // Data written to a connection but not yet acknowledged is buffered
    // here, for every subscription stream of it together. quinn's default
    // (10 MB per connection) times a thousand slow subscribers is gigabytes;
    // a subscriber that cannot take more is what the ring and the resync are
    // for, so keep this to a few batches' worth per stream.
    transport.send_window(4 * 1024 * 1024);
    let mut server_config = quinn::ServerConfig::with_crypto(crypto);
    server_config.transport_config(Arc::new(transport));

    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)
}

/// Accepts connections until shutdown; each gets a task on `tracker`.
/// Connections over the cap are accepted only to be closed with
/// TOO_MANY_CONNECTIONS, so the client learns why.
pub(crate) async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, tracker: TaskTracker) {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = shared.shutdown.cancelled() => break,
        };
        let permit = permits.clone().try_acquire_owned().ok();
        tracker.spawn(control::handle_connection(incoming, permit, shared.clone()));
    }
    // Refuse new connections while the existing ones drain.
    endpoint.set_server_config(None);
}
