//! Accepted TCP connections of the gRPC listener: TLS and the HTTP/2
//! preface within a deadline, then admission through the session layer's
//! shared gate, then one connection-table entry each.
//!
//! Why the edge does the TLS handshake itself (instead of tonic): a
//! connection must not hold a slot of `limits.max_connections` before it
//! has proved it is a gRPC client, so the slot is taken only after the
//! handshake and the 24-byte HTTP/2 preface, both within
//! `limits.handshake_timeout_ms`. Sockets that stay silent are dropped at
//! the deadline and never count; handshakes in progress are bounded
//! separately (`Limits::max_handshakes`, at least 1024), so they cannot
//! pile up either, and a few hundred of them do not lock real clients out. Handshakes run on their own
//! tasks, so a slow one never holds up the accept loop.
//!
//! A connection over the cap is still served, briefly: every call on it
//! answers TOO_MANY_CONNECTIONS (gRPC `RESOURCE_EXHAUSTED`, with the
//! Lapwing code in metadata), so the client learns why, and the socket is
//! cut after [`CLOSE_GRACE`].
//!
//! tonic hands every request the accepted IO's `connect_info`; ours carries
//! the connection's session (or its refusal), so a call can authorize itself and a
//! Subscribe can register its subscription under the HTTP/2 connection it
//! came on. When an operator closes the connection, its streams end with
//! `UNAVAILABLE` (they watch the same token) and, a moment later so those
//! statuses can still be written, every read and write of the socket
//! fails, which makes hyper drop the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, warn};

use super::Shared;
use crate::error::RequestError;
use crate::session::Session;
use crate::transport::Transport;

/// Time between a close (by an operator, or of a refused connection) and
/// the socket being cut.
const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type Socket = Either<TcpStream, TlsStream<TcpStream>>;

/// What every request of a connection can see (`Request::extensions`):
/// the connection's session, or why the gate refused it (over the cap,
/// shutting down), which every call on it then gets.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    admission: Result<Arc<Session>, Arc<RequestError>>,
}

/// See the module docs.
pub(crate) struct GrpcIo {
    inner: Socket,
    /// The preface, read to check it, handed to hyper first.
    replay: Bytes,
    info: ConnInfo,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl GrpcIo {
    /// Whether the socket must fail now (closed, grace over).
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
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closed")
}

impl AsyncRead for GrpcIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.cut(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcIo {
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

impl tonic::transport::server::Connected for GrpcIo {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The session of the connection a request came on, or the status of its
/// refusal.
pub(crate) fn session_of<T>(request: &tonic::Request<T>) -> Result<Arc<Session>, tonic::Status> {
    match request.extensions().get::<ConnInfo>().map(|i| &i.admission) {
        Some(Ok(session)) => Ok(session.clone()),
        Some(Err(refused)) => Err(super::status(refused)),
        // Every connection comes through `incoming`; a request without
        // one would be a bug in how the server is wired.
        None => Err(super::status(&RequestError::Internal(
            "request without a connection".into(),
        ))),
    }
}

/// Accepted, handshaken, admitted connections, for tonic. Accept errors
/// (e.g. out of file descriptors) are logged and retried, never passed to
/// tonic, which would stop serving.
pub(crate) fn incoming(
    listener: TcpListener,
    shared: Arc<Shared>,
) -> impl Stream<Item = Result<GrpcIo, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, shared, tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|io| (Ok(io), rx))
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tx: mpsc::Sender<GrpcIo>) {
    let core = shared.core.clone();
    let handshakes = Arc::new(Semaphore::new(core.limits.max_handshakes()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = core.shutdown.cancelled() => return,
            _ = tx.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "gRPC accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            debug!(%peer, "gRPC connection dropped: too many handshakes in progress");
            continue;
        };
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let deadline = shared.core.limits.handshake_timeout;
            let prepared = tokio::time::timeout(deadline, prepare(stream, peer, &shared)).await;
            drop(handshake);
            match prepared {
                Ok(Ok(io)) => {
                    let _ = tx.send(io).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "gRPC handshake failed"),
                Err(_) => debug!(%peer, "gRPC handshake or preface timed out"),
            }
        });
    }
}

/// TLS (if on), the preface, then the gate.
async fn prepare(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> std::io::Result<GrpcIo> {
    let _ = stream.set_nodelay(true);
    let mut socket: Socket = match &shared.tls {
        Some(tls) => Either::Right(
            tokio_rustls::TlsAcceptor::from(tls.clone())
                .accept(stream)
                .await?,
        ),
        None => Either::Left(stream),
    };
    let certificate = match &socket {
        Either::Right(tls) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.to_vec()),
        Either::Left(_) => None,
    };
    let mut preface = [0u8; PREFACE.len()];
    socket.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/2 connection preface",
        ));
    }
    let admitted = shared
        .core
        .admit_with_certificate(Transport::Grpc, peer, "", certificate);
    let (admission, closing) = match admitted {
        Ok(session) => {
            debug!(id = session.id(), %peer, "gRPC connection");
            let closing = session.connection().close_requested().clone();
            (Ok(Arc::new(session)), closing)
        }
        Err(e) => {
            warn!(%peer, error = %e, "gRPC connection refused");
            // Answer its calls with the error, then cut it.
            let closing = CancellationToken::new();
            closing.cancel();
            (Err(Arc::new(e)), closing)
        }
    };
    Ok(GrpcIo {
        inner: socket,
        replay: Bytes::from_static(PREFACE),
        info: ConnInfo { admission },
        closing: Box::pin(closing.cancelled_owned()),
        grace: None,
    })
}
