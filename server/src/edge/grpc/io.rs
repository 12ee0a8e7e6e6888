//! Accepted TCP connections of the gRPC listener, one connection-table
//! entry each.
//!
//! tonic hands every request the accepted IO's `connect_info`; ours carries
//! the connection's table entry, so a Subscribe call can register its
//! subscription under the HTTP/2 connection it came on. When an operator
//! closes the connection, its streams end with `UNAVAILABLE` (they watch
//! the same token) and, a moment later so those statuses can still be
//! written, every read and write of the socket fails, which makes hyper
//! drop the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{debug, warn};

use super::Shared;
use crate::connections::{Connection, Tracked, Transport};

/// Time between an operator's close and the socket being cut.
const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// What every request of a connection can see (`Request::extensions`).
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) conn: Arc<Connection>,
}

/// See the module docs.
pub(crate) struct TrackedIo {
    inner: TcpStream,
    info: ConnInfo,
    _tracked: Tracked,
    _permit: OwnedSemaphorePermit,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TrackedIo {
    /// Whether the socket must fail now (closed by an operator, grace over).
    fn cut(&mut self, cx: &mut Context<'_>) -> bool {
        if self.grace.is_none() {
            if self.closing.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        }
        self.grace
            .as_mut()
            .is_some_and(|g| g.as_mut().poll(cx).is_ready())
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by an operator",
    )
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.cut(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.cut(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.cut(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TrackedIo {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The connection a request came on (plaintext or TLS).
pub(crate) fn conn_of<T>(request: &tonic::Request<T>) -> Option<Arc<Connection>> {
    let ext = request.extensions();
    ext.get::<ConnInfo>()
        .or_else(|| {
            ext.get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
                .map(|t| t.get_ref())
        })
        .map(|i| i.conn.clone())
}

/// Accepted connections, each registered in the connection table. Over
/// `limits.max_connections` gRPC connections, new ones are closed at once.
/// Accept errors (e.g. out of file descriptors) are logged and retried,
/// never passed to tonic, which would stop serving.
pub(crate) fn incoming(
    listener: TcpListener,
    shared: Arc<Shared>,
) -> impl Stream<Item = Result<TrackedIo, std::io::Error>> {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    futures::stream::unfold(
        (listener, shared, permits),
        |(listener, shared, permits)| async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "gRPC accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    warn!(%peer, limit = shared.limits.max_connections,
                        "gRPC connection refused: too many connections");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let id = shared.connections.allocate_id();
                let tracked = shared.connections.open(id, Transport::Grpc, peer, "");
                debug!(id, %peer, "gRPC connection");
                let io = TrackedIo {
                    inner: stream,
                    info: ConnInfo {
                        conn: tracked.entry().clone(),
                    },
                    closing: Box::pin(tracked.close_requested().clone().cancelled_owned()),
                    grace: None,
                    _tracked: tracked,
                    _permit: permit,
                };
                return Some((Ok(io), (listener, shared, permits)));
            }
        },
    )
}
