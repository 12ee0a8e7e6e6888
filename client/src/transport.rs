//! The QUIC side of the client: the UDP socket, the endpoint, the transport
//! parameters, and [`QuicTransport`], the [`Transport`] the session driver
//! uses outside tests.
//!
//! What is tuned, and why:
//! - **UDP socket buffers**: 4 MiB asked for (the OS caps it at
//!   `net.core.rmem_max` / `wmem_max`). quinn does not size them, and the
//!   OS default (208 KiB on Linux) dropped packets under load; each loss
//!   costs a retransmission and a smaller congestion window. Best effort:
//!   a smaller buffer only costs throughput.
//! - **Streams**: the server opens one unidirectional stream per
//!   subscription, so the client allows 16 Ki concurrent uni streams; bidi
//!   streams are only the control stream and the acked-publish stream, so
//!   16 is plenty.
//! - **Stream receive window**: [`ClientConfig::stream_receive_window`]
//!   per subscription stream; with the subscription's event buffer it
//!   bounds how far a slow consumer falls behind before the server's ring
//!   laps it (and it gets a resync), and what the server buffers for it.
//! - **Liveness**: keep-alives every 3 s and a 10 s idle timeout, so a
//!   server that vanished without closing is noticed within 10 s, and the
//!   driver reconnects and resumes.
//! - **Datagram size**: with a server on loopback, path-MTU discovery
//!   goes up to [`LOOPBACK_UDP_PAYLOAD`] and the endpoint accepts datagrams
//!   that large; the server does the same for a client on loopback, so one
//!   datagram carries five 1 KiB messages, not one. Elsewhere, quinn's
//!   default (discovery up to 1452 B).
//!
//! The server side makes the matching choices in `server/src/edge/quic/`;
//! `proto/PROTOCOL.md` ("Transport") is the wire-level contract.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::driver::{Connection, Transport};
use crate::subscription::SubscriptionStream;
use crate::{ClientConfig, ClientError};

/// UDP socket buffer size asked for (the OS caps it at `net.core.rmem_max`):
/// quinn does not size them, and the default 208 KiB dropped packets.
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The largest UDP payload used with a server on loopback (whose MTU is
/// 64 KiB): the server's `LOOPBACK_UDP_PAYLOAD`, for the same reasons (ten
/// of them, one segmentation-offload write, fit one 64 KiB IP packet).
const LOOPBACK_UDP_PAYLOAD: u16 = 6 * 1024;

/// Whether `addr` is on this host's loopback, IPv4-mapped forms included.
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Resolves `host:port`, preferring IPv4 (the server's default listen
/// address is 127.0.0.1).
pub(crate) async fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(server)
        .await
        .map_err(|e| ClientError::InvalidAddress {
            addr: server.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ClientError::InvalidAddress {
            addr: server.to_owned(),
            reason: "resolves to no address".into(),
        })
}

/// A client endpoint bound to an ephemeral port of `peer`'s address family.
pub(crate) fn endpoint(
    peer: SocketAddr,
    client_config: quinn::ClientConfig,
) -> Result<quinn::Endpoint, ClientError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(ClientError::Socket)?;
    // Best effort: a smaller buffer only costs throughput.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.set_nonblocking(true).map_err(ClientError::Socket)?;
    socket.bind(&bind.into()).map_err(ClientError::Socket)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| ClientError::Socket(std::io::Error::other("no async runtime")))?;
    // The largest datagram this endpoint accepts: raised for a server on
    // loopback only, since quinn's receive buffer grows with it.
    let mut endpoint_config = quinn::EndpointConfig::default();
    if is_loopback(peer) {
        endpoint_config
            .max_udp_payload_size(LOOPBACK_UDP_PAYLOAD)
            .expect("a valid UDP payload size");
    }
    let mut endpoint = quinn::Endpoint::new(endpoint_config, None, socket.into(), runtime)
        .map_err(ClientError::Socket)?;
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// Transport parameters: room for many subscription streams, keep-alives
/// so a dead server is noticed, the subscription stream window, and the
/// datagram size (`loopback`: the server is on this host).
pub(crate) fn transport_config(
    stream_receive_window: u32,
    loopback: bool,
) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(16 * 1024))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(16))
        .stream_receive_window(quinn::VarInt::from_u32(stream_receive_window))
        // A server that vanished without closing (killed, host lost) is
        // noticed within 10 s, and the client reconnects and resumes.
        .keep_alive_interval(Some(Duration::from_secs(3)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(10)).expect("10 s is a valid timeout"),
        ));
    if loopback {
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(LOOPBACK_UDP_PAYLOAD);
        t.mtu_discovery_config(Some(mtu));
    }
    Arc::new(t)
}

/// The real [`Transport`]: QUIC over one UDP endpoint, to one server or,
/// for failover in cluster mode, to one of several (`server` is then a
/// comma-separated list).
#[derive(Debug)]
pub(crate) struct QuicTransport {
    endpoint: quinn::Endpoint,
    /// The address of the first server at the first connect; fixes the
    /// endpoint's family.
    addr: SocketAddr,
    servers: Vec<String>,
    /// Connect attempts so far: attempt `k` goes to `servers[k % n]`. A
    /// failed attempt moves on to the next server, and so does the first
    /// attempt after a lost connection: resuming is exact on any node of
    /// a cluster, and the one that was lost may be gone.
    attempt: AtomicUsize,
    server_name: String,
    /// The client config for a server on loopback (the endpoint's default
    /// serves every other server).
    loopback: quinn::ClientConfig,
}

/// The servers of a `server` setting: `host:port`, or several,
/// comma-separated.
pub(crate) fn servers(server: &str) -> Vec<String> {
    server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl QuicTransport {
    /// Resolves the server and binds the endpoint, configured from `cfg`.
    pub(crate) async fn new(cfg: &ClientConfig) -> Result<Self, ClientError> {
        let mut client_config =
            crate::tls::quic_client_config(&cfg.trust, cfg.client_certificate.as_ref())?;
        let mut loopback = client_config.clone();
        client_config.transport_config(transport_config(cfg.stream_receive_window, false));
        loopback.transport_config(transport_config(cfg.stream_receive_window, true));
        let servers = servers(&cfg.server);
        let first = servers.first().ok_or_else(|| ClientError::Connect {
            addr: cfg.server.clone(),
            reason: "no server address".into(),
        })?;
        let addr = resolve(first).await?;
        Ok(QuicTransport {
            endpoint: endpoint(addr, client_config)?,
            addr,
            servers,
            attempt: AtomicUsize::new(0),
            server_name: cfg.server_name.clone(),
            loopback,
        })
    }

    /// The endpoint, for waiting until it is idle at close.
    pub(crate) fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }
}

impl Transport for QuicTransport {
    type Conn = quinn::Connection;

    async fn connect(&self) -> Result<quinn::Connection, ClientError> {
        let k = self.attempt.fetch_add(1, Ordering::Relaxed) % self.servers.len();
        let server = &self.servers[k];
        // The name is resolved again on every (re)connect: a server that
        // comes back under the same name may have a new address (containers
        // do). The endpoint's socket fixes the address family.
        let addr = match resolve(server).await {
            Ok(a) if a.is_ipv4() == self.addr.is_ipv4() => a,
            _ if k == 0 => self.addr,
            Ok(a) => {
                return Err(ClientError::Connect {
                    addr: server.clone(),
                    reason: format!("{a} is not in the address family of the first server"),
                })
            }
            Err(e) => return Err(e),
        };
        let connecting = if is_loopback(addr) {
            self.endpoint
                .connect_with(self.loopback.clone(), addr, &self.server_name)
        } else {
            self.endpoint.connect(addr, &self.server_name)
        };
        let connecting = connecting.map_err(|e| ClientError::Connect {
            addr: server.clone(),
            reason: e.to_string(),
        })?;
        let connected = connecting.await.map_err(|e| match e {
            quinn::ConnectionError::ApplicationClosed(_) => ClientError::Connection(e),
            other => ClientError::Connect {
                addr: server.clone(),
                reason: other.to_string(),
            },
        });
        if connected.is_ok() && self.servers.len() > 1 {
            tracing::info!(server = %server, "connected");
        }
        connected
    }
}

impl Connection for quinn::Connection {
    type Send = quinn::SendStream;
    type Recv = quinn::RecvStream;

    async fn open_control(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        Ok(self.open_bi().await?)
    }

    async fn accept_subscription(&self) -> Result<quinn::RecvStream, ClientError> {
        Ok(self.accept_uni().await?)
    }

    fn close(&self, code: u32, reason: &'static [u8]) {
        quinn::Connection::close(self, code.into(), reason);
    }

    fn close_reason(&self) -> Option<ClientError> {
        quinn::Connection::close_reason(self).map(ClientError::Connection)
    }

    async fn closed(&self) -> ClientError {
        ClientError::Connection(quinn::Connection::closed(self).await)
    }

    fn quic(&self) -> Option<quinn::Connection> {
        Some(self.clone())
    }
}

impl SubscriptionStream for quinn::RecvStream {
    fn stop(&mut self) {
        let _ = quinn::RecvStream::stop(self, quinn::VarInt::from_u32(0));
    }
}
