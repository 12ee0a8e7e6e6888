//! A TCP relay that breaks the path between a gRPC client and the server on
//! purpose: it can **stall** (stop moving bytes both ways while every
//! connection stays open, as a dead middlebox or a frozen peer does) and
//! **reset** (abort every connection it carries with a TCP RST to both
//! ends, as a crashed NAT or a load balancer restart does).
//!
//! The UDP [`relay`](crate::relay) covers QUIC's faults packet by packet;
//! over TCP the kernel already retransmits, reorders and deduplicates, so
//! what a gRPC client and the server can see of a bad network is exactly
//! these two: bytes that stop arriving, and a connection that dies.
//!
//! While stalled the relay reads nothing, so the kernel buffers on both
//! sides fill and the peers' flow control closes, just as it would over a
//! real path that stopped delivering. New connections are still accepted
//! (their bytes stall too).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every connection of the relay does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Control {
    stalled: bool,
    /// Bumped by every [`TcpRelay::reset`]: a connection accepted before
    /// the bump aborts.
    resets: u64,
}

/// Connections and bytes the relay carried.
#[derive(Debug, Default)]
pub struct TcpRelayStats {
    /// Connections accepted from clients.
    pub accepted: AtomicU64,
    /// Connections aborted by [`TcpRelay::reset`].
    pub reset: AtomicU64,
    /// Bytes forwarded, both ways.
    pub bytes: AtomicU64,
}

/// A running relay; dropping it stops accepting (connections already
/// carried run until they end or a reset).
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    control: watch::Sender<Control>,
    stats: Arc<TcpRelayStats>,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// A relay on a fresh loopback port in front of `server`.
    pub async fn start(server: SocketAddr) -> std::io::Result<TcpRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (control, _) = watch::channel(Control::default());
        let stats = Arc::new(TcpRelayStats::default());
        let task = tokio::spawn(accept(listener, server, control.clone(), stats.clone()));
        Ok(TcpRelay {
            addr,
            control,
            stats,
            task,
        })
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops moving bytes, both ways, on every connection, until
    /// [`TcpRelay::resume`] or [`TcpRelay::reset`].
    pub fn stall(&self) {
        self.control.send_modify(|c| c.stalled = true);
    }

    /// Moves bytes again.
    pub fn resume(&self) {
        self.control.send_modify(|c| c.stalled = false);
    }

    /// Aborts every connection carried so far with a reset to both ends
    /// (bytes held in a stall are lost, as on a real path), and lifts the
    /// stall for connections made from now on.
    pub fn reset(&self) {
        self.control.send_modify(|c| {
            c.stalled = false;
            c.resets += 1;
        });
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &TcpRelayStats {
        &self.stats
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    server: SocketAddr,
    control: watch::Sender<Control>,
    stats: Arc<TcpRelayStats>,
) {
    while let Ok((client, _)) = listener.accept().await {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let ctl = control.subscribe();
        let stats = stats.clone();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(server).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let born = ctl.borrow().resets;
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = upstream.into_split();
            let up = pump(
                &mut client_read,
                &mut server_write,
                ctl.clone(),
                born,
                &stats,
            );
            let down = pump(&mut server_read, &mut client_write, ctl, born, &stats);
            if let (Ended::Reset, _) | (_, Ended::Reset) = tokio::join!(up, down) {
                // SO_LINGER 0: closing sends an RST instead of a FIN; and
                // the write halves must not send their FIN on drop first.
                let _ = client_read.as_ref().set_zero_linger();
                let _ = server_read.as_ref().set_zero_linger();
                client_write.forget();
                server_write.forget();
                // Counted before the sockets close, so whoever sees the
                // RST sees the count.
                stats.reset.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// How one direction of a connection ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The sender closed (or failed); its end was passed on.
    Closed,
    /// Aborted by a reset: both sockets are to close with an RST.
    Reset,
}

/// Copies `from` to `to` while the relay is not stalled, until either end
/// closes or a reset aborts the connection born at reset count `born`.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut ctl: watch::Receiver<Control>,
    born: u64,
    stats: &TcpRelayStats,
) -> Ended {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes read but not yet written on: held through a stall.
    let (mut start, mut end) = (0, 0);
    loop {
        let now = *ctl.borrow_and_update();
        if now.resets != born {
            return Ended::Reset;
        }
        if now.stalled {
            if ctl.changed().await.is_err() {
                return Ended::Closed;
            }
            continue;
        }
        if start < end {
            tokio::select! {
                wrote = to.write(&buf[start..end]) => match wrote {
                    Ok(n) if n > 0 => {
                        start += n;
                        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    _ => return Ended::Closed,
                },
                _ = ctl.changed() => {}
            }
        } else {
            tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(n) if n > 0 => (start, end) = (0, n),
                    _ => {
                        let _ = to.shutdown().await;
                        return Ended::Closed;
                    }
                },
                _ = ctl.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    const STEP: Duration = Duration::from_secs(5);

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(s: &mut TcpStream, what: &[u8]) -> Vec<u8> {
        s.write_all(what).await.unwrap();
        let mut got = vec![0u8; what.len()];
        tokio::time::timeout(STEP, s.read_exact(&mut got))
            .await
            .expect("echo within the step")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn bytes_pass_a_stall_holds_them_and_a_reset_aborts() {
        let relay = TcpRelay::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(echo(&mut s, b"ping").await, b"ping");

        relay.stall();
        s.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut got))
                .await
                .is_err(),
            "nothing crosses a stall"
        );
        relay.resume();
        tokio::time::timeout(STEP, s.read_exact(&mut got))
            .await
            .expect("held bytes arrive after the stall")
            .unwrap();
        assert_eq!(&got, b"held");

        relay.stall();
        relay.reset();
        let mut rest = Vec::new();
        let err = tokio::time::timeout(STEP, s.read_to_end(&mut rest))
            .await
            .expect("the reset reaches the client")
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(relay.stats().reset.load(Ordering::Relaxed), 1);

        // A connection made after the reset flows again.
        let mut again = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(echo(&mut again, b"again").await, b"again");
        assert_eq!(relay.stats().accepted.load(Ordering::Relaxed), 2);
    }
}
