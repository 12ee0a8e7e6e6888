//! Ring-core benchmarks, with tokio's broadcast channel and photon-ring side
//! by side in the same run so the ratios are comparable.
//!
//! ```text
//! cargo bench -p lapwing-ring --bench ring -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! * `publish/*`: cost of one publish with no reader keeping up (the ring is
//!   lapped continuously, which is the writer's steady state).
//! * `fanout/*`: one publisher thread and N reader threads. All three systems
//!   are lossy, and a publisher running flat out on 2 cores just laps its
//!   readers, which measures the scheduler, not the channel. So the harness
//!   (the same for all three) paces the publisher: it never gets more than
//!   `WINDOW` messages ahead of the slowest reader. Every message is then
//!   delivered to every reader (the table checks `missed == 0`), and the
//!   throughput criterion reports (elements = readers per published message)
//!   is delivered messages per second, summed over readers.
//! * `fanout/*-parked/64B`: the same with readers that park when idle and a
//!   publisher that unparks them every `WAKE_EVERY` messages, like the
//!   server's subscription tasks, instead of spinning readers.
//! * `read/*`: one reader draining retained messages in batches of 64, as a
//!   subscription task does, with no writer running: the cost of the
//!   validated copy out of the ring alone, per message (`lapwing-mp` with
//!   `read_batch`, `lapwing-mp-peek` with `peek` and `copy_into` after a
//!   frame head, as the QUIC edge reads).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use lapwing_ring::{Batch, BatchEvent, Ring, RingConfig, Start};

/// Ring budget: with 1 KiB max messages this gives 8192 headers and 8192
/// arena chunks (about 4096 messages of 64 B); the peers get 4096 slots.
const RING_BYTES: usize = 1 << 20;
const PEER_CAPACITY: usize = 4096;
/// How far the fanout publisher may run ahead of its slowest reader: well
/// inside every ring's capacity for the payload sizes used.
const WINDOW: u64 = 1024;
/// Parked fanout variant: the publisher wakes its readers every this many
/// messages (and at the end of a round).
const WAKE_EVERY: u64 = 16;

fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish");
    for size in [8usize, 56, 1024, 16 * 1024] {
        let payload = vec![0xA5u8; size];
        g.throughput(Throughput::Elements(1));
        // Hold PEER_CAPACITY messages of this size, like the peers: one
        // header (with a 40-byte prefix) plus ceil((size - 40) / 56) chunks
        // each when over 56 bytes.
        let slots_per_msg = if size <= 56 {
            1
        } else {
            1 + (size - 40).div_ceil(56)
        };
        let cfg = RingConfig::new(
            (PEER_CAPACITY * 64 * slots_per_msg).next_power_of_two(),
            size,
        );

        let (mut p, ring) = Ring::single_producer(cfg).unwrap();
        let _reader = ring.reader(Start::Latest);
        g.bench_function(BenchmarkId::new("lapwing-sp", size), |b| {
            b.iter(|| p.publish(black_box(&payload)).unwrap())
        });

        let (p, ring) = Ring::multi_producer(cfg).unwrap();
        let _reader = ring.reader(Start::Latest);
        g.bench_function(BenchmarkId::new("lapwing-mp", size), |b| {
            b.iter(|| p.publish(black_box(&payload)).unwrap())
        });

        let (tx, _rx) = tokio::sync::broadcast::channel::<Bytes>(PEER_CAPACITY);
        let bytes = Bytes::from(payload.clone());
        g.bench_function(BenchmarkId::new("tokio-broadcast-bytes", size), |b| {
            b.iter(|| tx.send(black_box(bytes.clone())).unwrap())
        });
    }

    let (mut p, subs) = photon_ring::channel::<u64>(PEER_CAPACITY);
    let _s = subs.subscribe();
    g.bench_function(BenchmarkId::new("photon-sp-u64", 8), |b| {
        b.iter(|| p.publish(black_box(42u64)))
    });
    let (mut p, subs) = photon_ring::channel::<[u8; 56]>(PEER_CAPACITY);
    let _s = subs.subscribe();
    g.bench_function(BenchmarkId::new("photon-sp-array", 56), |b| {
        b.iter(|| p.publish(black_box([0xA5u8; 56])))
    });
    let (p, subs) = photon_ring::channel_mpmc::<u64>(PEER_CAPACITY);
    let _s = subs.subscribe();
    g.bench_function(BenchmarkId::new("photon-mp-u64", 8), |b| {
        b.iter(|| p.publish(black_box(42u64)))
    });
    let (p, subs) = photon_ring::channel_mpmc::<[u8; 56]>(PEER_CAPACITY);
    let _s = subs.subscribe();
    g.bench_function(BenchmarkId::new("photon-mp-array", 56), |b| {
        b.iter(|| p.publish(black_box([0xA5u8; 56])))
    });
    g.finish();
}

// ---- fanout -----------------------------------------------------------------

/// One reader of any of the three systems: drains what it can, reporting
/// (delivered, missed) so a round knows when each reader has accounted for
/// every published message.
trait Drain: Send + 'static {
    fn drain(&mut self) -> (u64, u64);
}

struct LapwingReader {
    reader: lapwing_ring::Reader,
    batch: Batch,
}

/// `n` readers of `ring` from its head, each with a 64-message batch.
fn lapwing_readers(ring: &Arc<Ring>, n: usize) -> Vec<LapwingReader> {
    (0..n)
        .map(|_| LapwingReader {
            reader: ring.reader(Start::Latest),
            batch: Batch::with_capacity(64, 64 * 1024),
        })
        .collect()
}

impl Drain for LapwingReader {
    fn drain(&mut self) -> (u64, u64) {
        self.batch.clear();
        self.reader.read_batch(&mut self.batch, 64, 64 * 1024);
        let (mut d, mut m) = (0, 0);
        for ev in self.batch.iter() {
            match ev {
                BatchEvent::Message { payload, .. } => {
                    black_box(payload);
                    d += 1;
                }
                BatchEvent::Lagged(l) => m += l.missed,
            }
        }
        (d, m)
    }
}

impl Drain for tokio::sync::broadcast::Receiver<Bytes> {
    fn drain(&mut self) -> (u64, u64) {
        use tokio::sync::broadcast::error::TryRecvError;
        let (mut d, mut m) = (0, 0);
        for _ in 0..64 {
            match self.try_recv() {
                Ok(b) => {
                    black_box(&b[..]);
                    d += 1;
                }
                Err(TryRecvError::Lagged(n)) => m += n,
                Err(_) => break,
            }
        }
        (d, m)
    }
}

impl<T: photon_ring::Pod> Drain for photon_ring::Subscriber<T> {
    fn drain(&mut self) -> (u64, u64) {
        use photon_ring::TryRecvError;
        let (mut d, mut m) = (0, 0);
        for _ in 0..64 {
            match self.try_recv() {
                Ok(v) => {
                    black_box(v);
                    d += 1;
                }
                Err(TryRecvError::Lagged { skipped }) => m += skipped,
                Err(_) => break,
            }
        }
        (d, m)
    }
}

/// Reader threads that live across rounds. A round: the publisher bumps
/// `round` and `target` (messages so far), publishes, and waits until every
/// reader has delivered-or-missed up to `target`.
struct Fanout {
    round: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    finished: Arc<AtomicUsize>,
    delivered: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    /// Per reader: messages accounted for (delivered or missed) so far.
    progress: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Readers park when they find nothing, and the publisher unparks them
    /// every `WAKE_EVERY` messages (as the server's subscription tasks sleep
    /// until a publish notifies them), instead of spinning and yielding.
    park: bool,
    published: u64,
    /// Totals over all measured rounds, for the delivered-rate table.
    total_delivered: u64,
    total_missed: u64,
    total_time: Duration,
}

fn idle(spins: &mut u32) {
    *spins += 1;
    if *spins < 32 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Fanout {
    fn new<D: Drain>(readers: Vec<D>) -> Self {
        Self::with_wait(readers, false)
    }

    fn parked<D: Drain>(readers: Vec<D>) -> Self {
        Self::with_wait(readers, true)
    }

    fn with_wait<D: Drain>(readers: Vec<D>, park: bool) -> Self {
        let round = Arc::new(AtomicU64::new(0));
        let target = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let delivered = Arc::new(AtomicU64::new(0));
        let missed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Vec<Arc<AtomicU64>> = readers
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let threads = readers
            .into_iter()
            .zip(progress.iter().cloned())
            .map(|(mut r, progress)| {
                let (round, target, finished, delivered, missed, stop) = (
                    round.clone(),
                    target.clone(),
                    finished.clone(),
                    delivered.clone(),
                    missed.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let mut seen_round = 0;
                    let mut accounted = 0u64;
                    loop {
                        // Wait for a round (sleeping, so idle readers do not
                        // steal the CPU from other benchmarks).
                        while round.load(Ordering::Acquire) == seen_round {
                            if stop.load(Ordering::Acquire) {
                                return;
                            }
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        seen_round = round.load(Ordering::Acquire);
                        let (mut mine, mut lost) = (0, 0);
                        let mut spins = 0;
                        while accounted < target.load(Ordering::Acquire) {
                            let (d, m) = r.drain();
                            if d + m == 0 {
                                if park {
                                    std::thread::park_timeout(Duration::from_micros(200));
                                } else {
                                    idle(&mut spins);
                                }
                            } else {
                                spins = 0;
                                accounted += d + m;
                                progress.store(accounted, Ordering::Release);
                            }
                            mine += d;
                            lost += m;
                        }
                        delivered.fetch_add(mine, Ordering::AcqRel);
                        missed.fetch_add(lost, Ordering::AcqRel);
                        finished.fetch_add(1, Ordering::AcqRel);
                    }
                })
            })
            .collect();
        Self {
            park,
            round,
            target,
            finished,
            delivered,
            missed,
            progress,
            stop,
            threads,
            published: 0,
            total_delivered: 0,
            total_missed: 0,
            total_time: Duration::ZERO,
        }
    }

    /// Publishes `n` messages with `publish` and waits for every reader to
    /// account for them. Returns the elapsed time.
    fn round(&mut self, n: u64, mut publish: impl FnMut()) -> Duration {
        let readers = self.threads.len();
        self.finished.store(0, Ordering::Release);
        self.delivered.store(0, Ordering::Release);
        self.missed.store(0, Ordering::Release);
        // Readers stop once they have accounted for `target`; it is set to
        // the final count up front (they cannot overtake the publisher).
        self.target.store(self.published + n, Ordering::Release);
        let start = Instant::now();
        self.round.fetch_add(1, Ordering::AcqRel);
        for i in 0..n {
            if i % 32 == 0 {
                // Pace: stay within WINDOW of the slowest reader.
                let mut spins = 0;
                while self.published + i
                    > self
                        .progress
                        .iter()
                        .map(|p| p.load(Ordering::Acquire))
                        .min()
                        .unwrap_or(u64::MAX)
                        .saturating_add(WINDOW)
                {
                    idle(&mut spins);
                }
            }
            publish();
            if self.park && (i % WAKE_EVERY == WAKE_EVERY - 1 || i + 1 == n) {
                for t in &self.threads {
                    t.thread().unpark();
                }
            }
        }
        self.published += n;
        let mut spins = 0;
        while self.finished.load(Ordering::Acquire) < readers {
            idle(&mut spins);
        }
        let t = start.elapsed();
        self.total_delivered += self.delivered.load(Ordering::Acquire);
        self.total_missed += self.missed.load(Ordering::Acquire);
        self.total_time += t;
        t
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

type Row = (String, usize, f64, f64, u64);
static TABLE: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn record(name: &str, readers: usize, f: &Fanout) {
    let secs = f.total_time.as_secs_f64();
    if secs > 0.0 {
        let delivered = f.total_delivered as f64 / secs;
        let published = f.published as f64 / secs;
        TABLE.lock().unwrap().push((
            name.to_string(),
            readers,
            delivered,
            published,
            f.total_missed,
        ));
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for readers in [1usize, 4, 16] {
        g.throughput(Throughput::Elements(readers as u64));
        for size in [64usize, 1024] {
            let payload = vec![0x5Au8; size];
            // Room for well over WINDOW messages of this size (1 KiB
            // messages take 19 arena chunks each).
            let ring_bytes = if size > 64 {
                16 * RING_BYTES
            } else {
                RING_BYTES
            };
            let cfg = RingConfig::new(ring_bytes, 1024);

            let (mut p, ring) = Ring::single_producer(cfg).unwrap();
            let mut f = Fanout::new(lapwing_readers(&ring, readers));
            let name = format!("lapwing-sp/{size}B");
            g.bench_function(BenchmarkId::new(&name, readers), |b| {
                b.iter_custom(|n| {
                    f.round(n, || {
                        black_box(p.publish(&payload).unwrap());
                    })
                })
            });
            record(&name, readers, &f);
            drop(f);

            let (p, ring) = Ring::multi_producer(cfg).unwrap();
            let mut f = Fanout::new(lapwing_readers(&ring, readers));
            let name = format!("lapwing-mp/{size}B");
            g.bench_function(BenchmarkId::new(&name, readers), |b| {
                b.iter_custom(|n| {
                    f.round(n, || {
                        black_box(p.publish(&payload).unwrap());
                    })
                })
            });
            record(&name, readers, &f);
            drop(f);

            let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(PEER_CAPACITY);
            let mut f = Fanout::new((0..readers).map(|_| tx.subscribe()).collect());
            let bytes = Bytes::from(payload.clone());
            let name = format!("tokio-broadcast/{size}B");
            g.bench_function(BenchmarkId::new(&name, readers), |b| {
                b.iter_custom(|n| f.round(n, || drop(tx.send(bytes.clone()))))
            });
            record(&name, readers, &f);
            drop(f);

            if size == 64 {
                // Parked readers: what a server with more subscribers than
                // cores does, so the scheduler matters less than the ring.
                let (mut p, ring) = Ring::single_producer(cfg).unwrap();
                let mut f = Fanout::parked(lapwing_readers(&ring, readers));
                let name = format!("lapwing-sp-parked/{size}B");
                g.bench_function(BenchmarkId::new(&name, readers), |b| {
                    b.iter_custom(|n| {
                        f.round(n, || {
                            black_box(p.publish(&payload).unwrap());
                        })
                    })
                });
                record(&name, readers, &f);
                drop(f);

                let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(PEER_CAPACITY);
                let mut f = Fanout::parked((0..readers).map(|_| tx.subscribe()).collect());
                let name = format!("tokio-broadcast-parked/{size}B");
                g.bench_function(BenchmarkId::new(&name, readers), |b| {
                    b.iter_custom(|n| f.round(n, || drop(tx.send(bytes.clone()))))
                });
                record(&name, readers, &f);
                drop(f);
            }
        }
        let (mut p, subs) = photon_ring::channel::<[u8; 56]>(PEER_CAPACITY);
        let mut f = Fanout::new((0..readers).map(|_| subs.subscribe()).collect());
        let name = "photon-sp/56B-array".to_string();
        g.bench_function(BenchmarkId::new(&name, readers), |b| {
            b.iter_custom(|n| f.round(n, || p.publish([0x5Au8; 56])))
        });
        record(&name, readers, &f);
        drop(f);
    }
    g.finish();
}

/// Messages kept in the ring for `read/*`: well inside its capacity.
const READ_BACKLOG: u64 = 2048;

/// Reads batches (`batch` returns how many messages it read) until `n`
/// messages were read, starting over from seq 0 at the end of the
/// backlog; the time per message, scaled to `n`.
fn per_message(
    ring: &Arc<Ring>,
    n: u64,
    mut batch: impl FnMut(&mut lapwing_ring::Reader) -> u64,
) -> Duration {
    let mut reader = ring.reader(Start::At(0));
    let mut read = 0;
    let t = Instant::now();
    while read < n {
        let got = batch(&mut reader);
        if got == 0 {
            reader = ring.reader(Start::At(0));
        }
        read += got;
    }
    let elapsed = t.elapsed();
    assert_eq!(reader.stats().missed, 0, "read/* must not lap");
    elapsed.mul_f64(n as f64 / read as f64)
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    for size in [64usize, 1024] {
        let cfg = RingConfig::new(16 * RING_BYTES, 1024);
        let (p, ring) = Ring::multi_producer(cfg).unwrap();
        let payload = vec![0x5Au8; size];
        for _ in 0..READ_BACKLOG {
            p.publish(&payload).unwrap();
        }
        let mut batch = Batch::with_capacity(64, 64 * 1024);
        g.bench_function(BenchmarkId::new("lapwing-mp", size), |b| {
            b.iter_custom(|n| {
                per_message(&ring, n, |reader| {
                    batch.clear();
                    let got = reader.read_batch(&mut batch, 64, 64 * 1024);
                    black_box(batch.payload_bytes());
                    got as u64
                })
            })
        });
        // The QUIC edge's path: a 16-byte frame head, then the payload
        // from byte 8 on (the server's publish time stays behind),
        // appended into one buffer per 64 messages.
        let mut frames: Vec<u8> = Vec::with_capacity(64 * 1024 + 64 * 16);
        g.bench_function(BenchmarkId::new("lapwing-mp-peek", size), |b| {
            b.iter_custom(|n| {
                per_message(&ring, n, |reader| {
                    frames.clear();
                    let mut got = 0;
                    while got < 64 {
                        let lapwing_ring::Peek::Message(m) = reader.peek() else {
                            break;
                        };
                        frames.extend_from_slice(&[0u8; 16]);
                        m.copy_into(8, &mut frames).unwrap();
                        got += 1;
                    }
                    black_box(frames.len());
                    got
                })
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    publish(&mut c);
    read(&mut c);
    fanout(&mut c);
    c.final_summary();
    let table = TABLE.lock().unwrap();
    if !table.is_empty() {
        println!("\nfanout: delivered msgs/s summed over readers, published/s, missed");
        println!(
            "{:<24} {:>7} {:>14} {:>14} {:>8}",
            "system", "readers", "delivered/s", "published/s", "missed"
        );
        for (name, readers, delivered, published, missed) in table.iter() {
            println!("{name:<24} {readers:>7} {delivered:>14.0} {published:>14.0} {missed:>8}");
        }
    }
}
