//! A UDP relay that breaks the path between a QUIC client and the server
//! on purpose, for fault tests: loss, duplicates, reordering, delay and
//! jitter, a partition that heals, and a cut for good.
//!
//! The machine these tests run on has no `netem`, so the faults come from
//! userspace: the client talks to the relay's loopback address, and the
//! relay forwards every datagram to the server (and the server's answers
//! back to the one client it has seen), deciding for each one whether to
//! drop it, send it twice, or hold it back. Every decision comes from a
//! small deterministic generator seeded by [`Faults::seed`], so a failing
//! run can be replayed with the same seed (the timing of the packets still
//! varies from run to run; the fault pattern per packet index does not).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the relay does to each datagram, in each direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Fraction of datagrams dropped (0.0 ..= 1.0).
    pub drop: f64,
    /// Fraction of the datagrams passed that are sent twice.
    pub duplicate: f64,
    /// Fraction held back by an extra `reorder_delay`, so later ones
    /// overtake them.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Delay added to every datagram.
    pub delay: Duration,
    /// Up to this much more, uniformly, per datagram.
    pub jitter: Duration,
    /// Seed of the generator deciding each datagram's fate.
    pub seed: u64,
}

impl Faults {
    /// A perfect path.
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 1,
        }
    }
}

/// Datagrams the relay saw and what it did with them.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Received from either side.
    pub received: AtomicU64,
    /// Dropped by the fault plan (or the partition, or the cut).
    pub dropped: AtomicU64,
    /// Sent twice.
    pub duplicated: AtomicU64,
    /// Held back to be overtaken.
    pub reordered: AtomicU64,
}

#[derive(Debug, Default)]
struct Switches {
    partitioned: AtomicBool,
    cut: AtomicBool,
}

/// A running relay; dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    switches: Arc<Switches>,
    stats: Arc<RelayStats>,
    task: JoinHandle<()>,
}

impl Relay {
    /// A relay on a fresh loopback port in front of `server`, applying
    /// `faults` in both directions.
    pub async fn start(server: SocketAddr, faults: Faults) -> std::io::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(server).await?;
        let addr = front.local_addr()?;
        let switches = Arc::new(Switches::default());
        let stats = Arc::new(RelayStats::default());
        let task = tokio::spawn(run(front, back, faults, switches.clone(), stats.clone()));
        Ok(Relay {
            addr,
            switches,
            stats,
            task,
        })
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops everything, both ways, until [`Relay::heal`].
    pub fn partition(&self) {
        self.switches.partitioned.store(true, Ordering::Relaxed);
    }

    /// Ends a partition.
    pub fn heal(&self) {
        self.switches.partitioned.store(false, Ordering::Relaxed);
    }

    /// Drops everything from now on, for good.
    pub fn cut(&self) {
        self.switches.cut.store(true, Ordering::Relaxed);
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// xorshift64*: small, fast, deterministic; plenty for fault decisions.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy)]
enum Way {
    ToServer,
    ToClient,
}

/// What happens to one datagram.
#[derive(Debug, PartialEq)]
struct Fate {
    copies: usize,
    delay: Duration,
}

fn decide(rng: &mut Rng, f: &Faults, stats: &RelayStats) -> Fate {
    if rng.unit() < f.drop {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return Fate {
            copies: 0,
            delay: Duration::ZERO,
        };
    }
    let copies = if rng.unit() < f.duplicate {
        stats.duplicated.fetch_add(1, Ordering::Relaxed);
        2
    } else {
        1
    };
    let mut delay = f.delay + f.jitter.mul_f64(rng.unit());
    if rng.unit() < f.reorder {
        stats.reordered.fetch_add(1, Ordering::Relaxed);
        delay += f.reorder_delay;
    }
    Fate { copies, delay }
}

async fn run(
    front: UdpSocket,
    back: UdpSocket,
    faults: Faults,
    switches: Arc<Switches>,
    stats: Arc<RelayStats>,
) {
    let front = Arc::new(front);
    let back = Arc::new(back);
    // Delayed datagrams are sent by a task of their own, so one held back
    // never holds up the ones behind it (that is what lets them overtake).
    let (tx, mut rx) = mpsc::unbounded_channel::<(Way, Vec<u8>, SocketAddr, Duration)>();
    let sender = {
        let (front, back) = (front.clone(), back.clone());
        tokio::spawn(async move {
            while let Some((way, data, client, delay)) = rx.recv().await {
                let (front, back) = (front.clone(), back.clone());
                let send = async move {
                    let _ = match way {
                        Way::ToServer => back.send(&data).await,
                        Way::ToClient => front.send_to(&data, client).await,
                    };
                };
                if delay.is_zero() {
                    send.await;
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        send.await;
                    });
                }
            }
        })
    };
    let mut rng = Rng::new(faults.seed);
    let mut client: Option<SocketAddr> = None;
    let mut from_client = vec![0u8; 65_536];
    let mut from_server = vec![0u8; 65_536];
    loop {
        let (way, len) = tokio::select! {
            got = front.recv_from(&mut from_client) => match got {
                Ok((len, peer)) => {
                    client = Some(peer);
                    (Way::ToServer, len)
                }
                Err(_) => continue,
            },
            got = back.recv(&mut from_server) => match got {
                Ok(len) => (Way::ToClient, len),
                Err(_) => continue,
            },
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let Some(peer) = client else { continue };
        if switches.cut.load(Ordering::Relaxed) || switches.partitioned.load(Ordering::Relaxed) {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let fate = decide(&mut rng, &faults, &stats);
        let data = match way {
            Way::ToServer => &from_client[..len],
            Way::ToClient => &from_server[..len],
        };
        for _ in 0..fate.copies {
            if tx.send((way, data.to_vec(), peer, fate.delay)).is_err() {
                sender.abort();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let f = Faults {
            drop: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            reorder_delay: Duration::from_millis(5),
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(2),
            seed: 42,
        };
        let fates = |seed| {
            let mut rng = Rng::new(seed);
            let stats = RelayStats::default();
            (0..1000)
                .map(|_| decide(&mut rng, &f, &stats))
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(42), fates(42));
        assert_ne!(fates(42), fates(43));
        let dropped = fates(42).iter().filter(|f| f.copies == 0).count();
        assert!(
            (60..=140).contains(&dropped),
            "about 10 % of 1000: {dropped}"
        );
    }

    #[tokio::test]
    async fn datagrams_pass_both_ways_and_a_partition_heals() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::start(server.local_addr().unwrap(), Faults::none())
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(relay.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let step = Duration::from_secs(5);
        client.send(b"ping").await.unwrap();
        let (n, from) = tokio::time::timeout(step, server.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", from).await.unwrap();
        let n = tokio::time::timeout(step, client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"pong");

        relay.partition();
        client.send(b"lost").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), server.recv_from(&mut buf))
                .await
                .is_err(),
            "nothing crosses a partition"
        );
        relay.heal();
        client.send(b"again").await.unwrap();
        let (n, _) = tokio::time::timeout(step, server.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"again");
        assert_eq!(relay.stats().dropped.load(Ordering::Relaxed), 1);
    }
}
