//! The QUIC edge: one UDP endpoint, one task per connection, one task per
//! subscription and per publish stream.
//!
//! - `control`: the connection's session, driven by its control stream
//!   (Hello/Welcome, Subscribe, Unsubscribe, Ping, GoAway).
//! - `publish`: client-opened uni streams (fire-and-forget) and bidi streams
//!   (acked) carrying Publish frames.
//! - `subscription`: one server-opened uni stream per subscription, fed by
//!   a [`crate::drain::Drain`] one batch (one write) at a time.
//! - `blocks`: the pooled buffers large batches are encoded into.
//! - `ingest`: the lane of threads where datagrams are received and
//!   publishing connections run, apart from the fanout.

mod blocks;
mod control;
mod ingest;
mod publish;
mod subscription;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub(crate) use blocks::BlockPool;
pub(crate) use ingest::Ingest;

use crate::drain::BatchLimits;
use crate::limits::Limits;
use crate::session::Core;
use crate::ServerError;

/// State every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The session layer: registry, limits, auth, the connection gate.
    pub(crate) core: Arc<Core>,
    pub(crate) server_name: String,
    pub(crate) drain: Duration,
    pub(crate) reconnect_after_ms: u32,
    pub(crate) batch: BatchLimits,
    /// The blocks large batches are encoded into (`blocks`).
    pub(crate) blocks: Arc<BlockPool>,
    /// The ingest lane's runtime: publish tasks and the drivers of
    /// connections that publish run there (`ingest`).
    pub(crate) ingest: tokio::runtime::Handle,
    /// The server config for connections from a loopback address:
    /// path-MTU discovery up to [`LOOPBACK_UDP_PAYLOAD`] (see [`bind`]).
    pub(crate) loopback: Arc<quinn::ServerConfig>,
}

/// Bytes a client may have in flight to the server on one stream before
/// the server reads them: a few frames of ordinary size. A larger frame
/// still passes (the window opens as the server reads).
const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;
/// The same for all streams of one connection together: what one client
/// can make quinn buffer for it before the server's tasks read.
const CONNECTION_RECEIVE_WINDOW: u32 = 1024 * 1024;

/// The largest UDP payload path-MTU discovery tries with a peer on
/// loopback, whose MTU is 64 KiB. A datagram this size carries five 1 KiB
/// messages where an Ethernet-sized one carries one, and every datagram
/// costs a header, an AEAD setup, header protection, an acknowledgement
/// and a trip through both kernels' UDP paths: at 1 KiB with 32 KiB
/// batches, 1.6x the delivered messages per server CPU-second of 1452 B
/// datagrams (BENCHMARKS.md, "QUIC EFFICIENCY"). Why not larger: quinn
/// sends up to 10 datagrams per segmentation-offload (GSO) write, and one
/// write must stay within an IP packet's 64 KiB; without GSO, 8 KiB
/// datagrams measured slower than these with it.
pub(crate) const LOOPBACK_UDP_PAYLOAD: u16 = 6 * 1024;

/// The largest UDP payload path-MTU discovery tries on any other path:
/// quinn's default, Ethernet's 1500 B less the IPv6 and UDP headers.
/// Probes that are lost leave the path at what was acknowledged.
const UDP_PAYLOAD_UPPER_BOUND: u16 = 1452;

/// An application error code as a QUIC VarInt.
pub(crate) fn code(c: lapwing_proto::v1::ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(c as u32)
}

/// Binds the UDP socket with big buffers and creates the endpoint, whose
/// driver (the receive path) runs on `ingest`. Returns it with the server
/// config for loopback peers ([`Shared::loopback`]); the endpoint's own
/// config serves every other peer. Must be called within the server's
/// runtime, where connection drivers start.
pub(crate) fn bind(
    addr: SocketAddr,
    udp_buffer_bytes: usize,
    limits: &Limits,
    crypto: Arc<quinn::crypto::rustls::QuicServerConfig>,
    ingest: &Ingest,
) -> Result<(quinn::Endpoint, Arc<quinn::ServerConfig>), ServerError> {
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

    let mut server_config = quinn::ServerConfig::with_crypto(crypto);
    server_config.transport_config(Arc::new(transport_config(limits, false)));
    let mut loopback = server_config.clone();
    loopback.transport_config(Arc::new(transport_config(limits, true)));

    // What the server accepts from its peers: loopback's large datagrams
    // too (a client on loopback sends them; see the client's transport).
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(LOOPBACK_UDP_PAYLOAD)
        .expect("a valid UDP payload size");
    let lanes = Arc::new(ingest::Lanes::new(tokio::runtime::Handle::current()));
    // The socket registers with the ingest lane's reactor, so readiness
    // to receive is noticed there however busy the server's runtime is.
    let (endpoint, driver) = {
        let _lane = ingest.handle().enter();
        ingest::caught(|| quinn::Endpoint::new(endpoint_config, Some(server_config), socket, lanes))
    };
    let endpoint = endpoint.map_err(bind_err)?;
    if let Some(driver) = driver {
        driver.move_to(ingest.handle());
    }
    Ok((endpoint, Arc::new(loopback)))
}

/// The transport parameters of a connection; `loopback` for a peer on
/// this host (see [`LOOPBACK_UDP_PAYLOAD`]).
fn transport_config(limits: &Limits, loopback: bool) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // Client-opened streams: publish streams (uni) and acked publish
    // streams (bidi, plus the control stream). Each can hold one partial
    // frame, so these bound what one connection can start at once; the
    // client cannot open more (QUIC stream credit).
    let publish = limits.max_publish_streams;
    transport.max_concurrent_uni_streams(publish.into());
    transport.max_concurrent_bidi_streams((publish + 1).into());
    // quinn's defaults let one connection have megabytes in flight that
    // the server has not read yet; these bound it to what a publisher
    // needs for throughput.
    transport.stream_receive_window(STREAM_RECEIVE_WINDOW.into());
    transport.receive_window(CONNECTION_RECEIVE_WINDOW.into());
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    // Data written to a connection but not yet acknowledged is buffered
    // here, for every subscription stream of it together. quinn's default
    // (10 MB per connection) times a thousand slow subscribers is gigabytes;
    // a subscriber that cannot take more is what the ring and the resync are
    // for, so keep this to a few batches' worth per stream.
    transport.send_window(4 * 1024 * 1024);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(if loopback {
        LOOPBACK_UDP_PAYLOAD
    } else {
        UDP_PAYLOAD_UPPER_BOUND
    });
    transport.mtu_discovery_config(Some(mtu));
    transport
}

/// Whether `addr` is on this host's loopback, IPv4-mapped forms included.
pub(crate) fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Accepts connections until shutdown; each gets a task on `tracker`.
///
/// A connection takes a slot of the shared gate only once its handshake
/// and Hello are done (see `control`); one over the cap is then closed
/// with TOO_MANY_CONNECTIONS, so the client learns why. Connections still
/// in their handshake are bounded separately (`Limits::max_handshakes`),
/// so clients that never finish one cannot pile up either: beyond it new
/// ones are refused at once.
pub(crate) async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, tracker: TaskTracker) {
    let handshakes = Arc::new(Semaphore::new(shared.core.limits.max_handshakes()));
    let shutdown = shared.core.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            debug!(remote = %incoming.remote_address(), "refused: too many handshakes in progress");
            incoming.refuse();
            continue;
        };
        tracker.spawn(control::handle_connection(
            incoming,
            handshake,
            shared.clone(),
        ));
    }
    // Refuse new connections while the existing ones drain.
    endpoint.set_server_config(None);
}
