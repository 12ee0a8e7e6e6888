//! The scenarios, written once for every system.
//!
//! - A (`fanout`): 1 publisher at full speed to N subscribers.
//! - B (`latency`): 1 publisher at a fixed rate; publish-to-deliver latency.
//! - C (`slow`): like A (and B) with N subscribers of which one reads at
//!   about 1 % speed; how the others fare and what the slow one learns. The
//!   publish window is at least [`Params::slow_min_duration`], long enough
//!   to overrun what the systems hold for one subscriber; after it the slow
//!   subscriber *catches up* at full speed, so what it was told (resyncs),
//!   what it silently lost and what it still got are all counted, not left
//!   queued somewhere when the run stops.
//! - D (`connections`): as many idle subscribed connections as fit in a time
//!   budget; server RSS per connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cpu::{rss_bytes, CpuSnapshot, CpuUsage};
use crate::payload::{self, now_ns, Header};
use crate::systems::{Event, Subscription, System};
use crate::track::{LossCounts, SeqTracker};

/// One cell of the matrix (without the system and the run index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Cell {
    /// "A", "B", "C-max" or "C-rate".
    pub scenario: String,
    /// Subscribers, each its own connection (including a slow one).
    pub subscribers: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Fixed publish rate in msgs/s; `None` = as fast as the system takes them.
    pub rate: Option<u64>,
    /// Whether subscriber 0 is the slow one.
    pub slow: bool,
}

/// Timing knobs (quick mode shrinks them).
#[derive(Debug, Clone)]
pub struct Params {
    /// How long the publisher publishes.
    pub duration: Duration,
    /// Longest wait, after the last publish, for subscribers to catch up.
    pub drain_timeout: Duration,
    /// The drain ends early when nothing arrived for this long.
    pub drain_stall: Duration,
    /// Time per message of the slow subscriber (10 ms = 100 msgs/s, 1 % of
    /// the 10 k msgs/s latency rate).
    pub slow_delay: Duration,
    /// Shortest publish window of a cell with a slow subscriber.
    pub slow_min_duration: Duration,
    /// Longest catch-up of the slow subscriber after the window.
    pub catch_up_timeout: Duration,
    /// Subscriber connections being set up at once.
    pub connect_concurrency: usize,
    /// Messages per `publish_batch` at full speed.
    pub batch: usize,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// What the slow subscriber experienced (scenario C).
#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    /// Its accounting (reported vs silent loss, resyncs).
    pub loss: LossCounts,
    /// Disconnections seen by its client library.
    pub disconnects: u64,
    /// Client-library drop signals (async-nats SlowConsumer events).
    pub client_drop_events: u64,
    /// Why its stream ended, if it did.
    pub closed: Option<String>,
    /// Messages published that it had neither received nor been told about
    /// when the run stopped, after the catch-up (still queued somewhere, or
    /// lost).
    pub unaccounted_at_stop: u64,
    /// Messages it had read when the publish window ended (at 1 % speed).
    pub delivered_in_window: u64,
    /// Seconds the catch-up took (reading at full speed until the last seq
    /// arrived, the stream ended or nothing moved for the drain stall).
    pub catch_up_s: f64,
}

/// The result of one run of one fanout cell (A, B, C) for one system.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRun {
    /// System id.
    pub system: String,
    /// The cell.
    pub cell: Cell,
    /// Run index (0-based).
    pub run: usize,
    /// Set when the run could not be carried out.
    pub error: Option<String>,
    /// Seconds to connect and subscribe every subscriber.
    pub setup_s: f64,
    /// Messages published.
    pub published: u64,
    /// Publish rate achieved (msgs/s).
    pub published_rate: f64,
    /// Messages delivered to the fast (non-slow) subscribers, all together.
    pub delivered: u64,
    /// Delivered msgs/s over the fast subscribers (first publish to last delivery).
    pub delivered_rate: f64,
    /// Slowest fast subscriber's delivered msgs/s.
    pub per_sub_min_rate: f64,
    /// Fastest subscriber's delivered msgs/s.
    pub per_sub_max_rate: f64,
    /// Loss accounting summed over the fast subscribers.
    pub loss: LossCounts,
    /// Fast subscribers whose stream ended or whose client saw a disconnect.
    pub disconnects: u64,
    /// Client-library drop signals over the fast subscribers.
    pub client_drop_events: u64,
    /// Publish-to-deliver latency over the fast subscribers.
    pub latency: Latency,
    /// CPU over the measured window (first publish to end of drain).
    pub cpu: CpuUsage,
    /// Wall seconds of the measured window.
    pub window_s: f64,
    /// Delivered messages per server CPU second.
    pub efficiency: Option<f64>,
    /// Machine saturated and the generator used at least as much CPU as the
    /// server: the number says as much about the generator as the server.
    pub generator_limited: bool,
    /// Scenario C: the slow subscriber.
    pub slow: Option<SlowReport>,
}

impl FanoutRun {
    fn failed(system: &str, cell: &Cell, run: usize, error: String) -> FanoutRun {
        FanoutRun {
            system: system.into(),
            cell: cell.clone(),
            run,
            error: Some(error),
            setup_s: 0.0,
            published: 0,
            published_rate: 0.0,
            delivered: 0,
            delivered_rate: 0.0,
            per_sub_min_rate: 0.0,
            per_sub_max_rate: 0.0,
            loss: LossCounts::default(),
            disconnects: 0,
            client_drop_events: 0,
            latency: Latency::default(),
            cpu: CpuUsage::default(),
            window_s: 0.0,
            efficiency: None,
            generator_limited: false,
            slow: None,
        }
    }
}

/// Live counters a subscriber task updates and the coordinator polls.
#[derive(Debug, Default)]
struct Live {
    delivered: AtomicU64,
    /// Highest seq seen + 1.
    next_seq: AtomicU64,
    closed: AtomicU64,
    /// A slow subscriber reads at full speed from now on.
    hurry: AtomicBool,
}

#[derive(Debug)]
struct SubOutcome {
    tracker: SeqTracker,
    hist: Histogram<u64>,
    last_recv_ns: u64,
    closed: Option<String>,
    disconnects: u64,
    client_drop_events: u64,
    slow: bool,
}

async fn subscriber_task(
    mut sub: Subscription,
    live: Arc<Live>,
    slow: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut tracker = SeqTracker::new();
    let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let mut last_recv_ns = 0;
    let mut closed = None;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = sub.events.next() => event,
        };
        match event {
            Some(Event::Message(p)) => {
                let now = now_ns();
                last_recv_ns = now;
                if let Some(Header { seq, sent_ns, .. }) = payload::decode(&p) {
                    tracker.message(seq);
                    // Auto-resizing histogram: record cannot fail for a u64.
                    let _ = hist.record(now.saturating_sub(sent_ns).max(1));
                    live.next_seq.fetch_max(seq + 1, Ordering::Relaxed);
                }
                live.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(delay) = slow.filter(|_| !live.hurry.load(Ordering::Relaxed)) {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            Some(Event::Resync { missed }) => tracker.resync(missed),
            Some(Event::Closed(why)) => {
                closed = Some(why);
                break;
            }
            None => {
                closed = Some("stream ended".into());
                break;
            }
        }
    }
    if closed.is_some() {
        live.closed.store(1, Ordering::Relaxed);
    }
    SubOutcome {
        tracker,
        hist,
        last_recv_ns,
        closed,
        disconnects: sub.side.disconnects.load(Ordering::Relaxed),
        client_drop_events: sub.side.client_drop_events.load(Ordering::Relaxed),
        slow: slow.is_some(),
    }
}

/// Opens `n` subscriptions, `concurrency` at a time.
async fn subscribe_all(
    sys: &dyn System,
    topic: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Subscription>> {
    futures::stream::iter(0..n)
        .map(|_| sys.subscribe(topic))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

fn make_batch(buf: &mut BytesMut, size: usize, first_seq: u64, count: usize) -> Vec<Bytes> {
    (0..count as u64)
        .map(|i| {
            payload::encode(
                buf,
                size,
                Header {
                    publisher: 0,
                    seq: first_seq + i,
                    sent_ns: now_ns(),
                },
            )
        })
        .collect()
}

/// Waits until every subscriber in `lives` has seen seq `published - 1` (or
/// its stream ended), nothing arrived for `stall`, or `timeout` passed.
async fn drain(lives: &[Arc<Live>], published: u64, timeout: Duration, stall: Duration) {
    let start = Instant::now();
    let mut last_total = u64::MAX;
    let mut last_progress = Instant::now();
    while start.elapsed() < timeout {
        let done = lives.iter().all(|l| {
            l.next_seq.load(Ordering::Relaxed) >= published || l.closed.load(Ordering::Relaxed) != 0
        });
        if done {
            return;
        }
        let total: u64 = lives
            .iter()
            .map(|l| l.delivered.load(Ordering::Relaxed))
            .sum();
        if total != last_total {
            last_total = total;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= stall {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one fanout cell (A, B or C) once against `sys`.
pub async fn run_fanout(sys: &dyn System, cell: &Cell, p: &Params, run: usize) -> FanoutRun {
    let id = sys.info().id;
    match fanout_inner(sys, &id, cell, p, run).await {
        Ok(r) => r,
        Err(e) => FanoutRun::failed(&id, cell, run, format!("{e:#}")),
    }
}

/// The publisher's own thread and runtime. The generator drives N
/// subscriber connections too; on its shared runtime the publisher's
/// connection task queued behind theirs, and with 200 subscribers that held
/// the publisher under 1 % of its publish-only rate against any server: a
/// limit of the rig, not of the system measured. One worker runs the
/// client's connection task; the publish loop runs on the thread that
/// calls [`PublisherLane::block_on`], as it did on the bench's main thread.
struct PublisherLane(Option<tokio::runtime::Runtime>);

impl PublisherLane {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-publisher")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `fut` on the lane from a thread of its own, blocking the
    /// caller: the bench's main thread, which drives only the top-level
    /// future (the subscribers' tasks go on on the shared runtime's
    /// workers meanwhile).
    fn block_on<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        let runtime = self.0.as_ref().expect("the runtime lives until drop");
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(fut))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for PublisherLane {
    fn drop(&mut self) {
        // Dropped inside the bench's runtime, where a blocking drop panics.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

async fn fanout_inner(
    sys: &dyn System,
    id: &str,
    cell: &Cell,
    p: &Params,
    run: usize,
) -> anyhow::Result<FanoutRun> {
    let topic = format!(
        "bench.{}.{}.n{}.b{}.r{}.t{}",
        cell.scenario.to_lowercase(),
        id,
        cell.subscribers,
        cell.payload,
        run,
        now_ns()
    );
    let setup_start = Instant::now();
    let subs = subscribe_all(sys, &topic, cell.subscribers, p.connect_concurrency).await?;
    let setup_s = setup_start.elapsed().as_secs_f64();
    let lane = PublisherLane::new()?;
    let mut publisher = lane.block_on(sys.publisher())?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut lives = Vec::with_capacity(subs.len());
    let mut slow_live = None;
    for (i, sub) in subs.into_iter().enumerate() {
        let live = Arc::new(Live::default());
        let slow = (cell.slow && i == 0).then_some(p.slow_delay);
        if slow.is_none() {
            lives.push(live.clone());
        } else {
            slow_live = Some(live.clone());
        }
        tasks.spawn(subscriber_task(sub, live, slow, stop_rx.clone()));
    }

    let before = CpuSnapshot::take_all(&sys.server_pids());
    let t0 = now_ns();
    let start = Instant::now();
    let duration = if cell.slow {
        p.duration.max(p.slow_min_duration)
    } else {
        p.duration
    };
    let published = lane.block_on(async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut published: u64 = 0;
        match cell.rate {
            None => {
                while start.elapsed() < duration {
                    let batch = make_batch(&mut buf, cell.payload, published, p.batch);
                    publisher.publish_batch(&topic, &batch).await?;
                    published += batch.len() as u64;
                }
            }
            Some(rate) => {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while start.elapsed() < duration {
                    tick.tick().await;
                    let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                    let count = due.saturating_sub(published).min(10_000) as usize;
                    if count == 0 {
                        continue;
                    }
                    let batch = make_batch(&mut buf, cell.payload, published, count);
                    publisher.publish_batch(&topic, &batch).await?;
                    published += count as u64;
                }
            }
        }
        publisher.flush().await?;
        anyhow::Ok(published)
    })?;
    let publish_s = start.elapsed().as_secs_f64();

    // Drain: wait until every fast subscriber has seen the last seq, or
    // nothing moves any more, or the timeout.
    let slow_in_window = slow_live
        .as_ref()
        .map_or(0, |l| l.delivered.load(Ordering::Relaxed));
    drain(&lives, published, p.drain_timeout, p.drain_stall).await;
    let after = CpuSnapshot::take_all(&sys.server_pids());
    let window_end = now_ns();
    // Then the slow subscriber catches up, outside the measured window.
    let catch_up_start = Instant::now();
    if let Some(l) = &slow_live {
        l.hurry.store(true, Ordering::Relaxed);
        drain(
            std::slice::from_ref(l),
            published,
            p.catch_up_timeout,
            p.drain_stall,
        )
        .await;
    }
    let catch_up_s = catch_up_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    lane.block_on(async move { drop(publisher) });

    let mut loss = LossCounts::default();
    let mut hist = Histogram::<u64>::new(3).expect("valid");
    let mut last_recv = t0;
    let mut disconnects = 0;
    let mut client_drop_events = 0;
    let mut per_sub = Vec::new();
    let mut slow = None;
    while let Some(outcome) = tasks.join_next().await {
        let mut o = outcome?;
        let counts = o.tracker.finish(published);
        if o.slow {
            slow = Some(SlowReport {
                loss: counts,
                disconnects: o.disconnects,
                client_drop_events: o.client_drop_events,
                closed: o.closed.clone(),
                unaccounted_at_stop: counts.undelivered_at_stop,
                delivered_in_window: slow_in_window,
                catch_up_s,
            });
            continue;
        }
        loss.add(&counts);
        hist.add(&o.hist).expect("same-shaped histograms");
        last_recv = last_recv.max(o.last_recv_ns);
        disconnects += u64::from(o.closed.is_some() || o.disconnects > 0);
        client_drop_events += o.client_drop_events;
        per_sub.push(counts.delivered);
    }
    let delivered = loss.delivered;
    let delivery_s = (last_recv.max(t0 + 1) - t0) as f64 / 1e9;
    let cpu = before.until(&after);
    let server_cpu_s = cpu.server_cpu_s;
    let window_s = (window_end - t0) as f64 / 1e9;
    let rate_of = |d: u64| d as f64 / delivery_s;
    let generator_limited =
        cpu.machine_busy >= 0.9 && cpu.server_cpu_s.is_some_and(|s| cpu.harness_cpu_s >= s);
    Ok(FanoutRun {
        system: id.into(),
        cell: cell.clone(),
        run,
        error: None,
        setup_s,
        published,
        published_rate: published as f64 / publish_s,
        delivered,
        delivered_rate: rate_of(delivered),
        per_sub_min_rate: per_sub.iter().copied().min().map_or(0.0, rate_of),
        per_sub_max_rate: per_sub.iter().copied().max().map_or(0.0, rate_of),
        loss,
        disconnects,
        client_drop_events,
        latency: Latency::of(&hist),
        cpu,
        window_s,
        efficiency: server_cpu_s
            .filter(|s| *s > 0.0)
            .map(|s| delivered as f64 / s),
        generator_limited,
        slow,
    })
}

/// Result of scenario D for one system.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRun {
    /// System id.
    pub system: String,
    /// Connections asked for.
    pub target: usize,
    /// Subscribed connections established.
    pub established: usize,
    /// Seconds spent connecting.
    pub connect_s: f64,
    /// Why it stopped short of the target (first error, or the time budget).
    pub limited_by: Option<String>,
    /// Server RSS before connecting.
    pub rss_before: Option<u64>,
    /// Server RSS with every connection idle and subscribed.
    pub rss_after: Option<u64>,
    /// (after - before) / established.
    pub rss_per_conn: Option<f64>,
    /// Connections that received one message published at the end: proof
    /// they were really subscribed.
    pub live: usize,
    /// This process's open-file limit.
    pub fd_limit: Option<u64>,
}

fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Scenario D: opens up to `target` idle subscribed connections within
/// `budget`, measures the server's RSS, then checks each one still works.
pub async fn run_connections(
    sys: &dyn System,
    target: usize,
    budget: Duration,
    concurrency: usize,
) -> ConnRun {
    let id = sys.info().id;
    let pid = sys.server_pid().map(|p| p.to_string());
    let rss = || pid.as_deref().and_then(rss_bytes);
    let topic = format!("bench.d.{id}.t{}", now_ns());
    let rss_before = rss();
    let start = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut established = 0;
    let mut limited_by = None;
    let mut errors = 0;
    {
        let mut pending = futures::stream::iter(0..target)
            .map(|_| tokio::time::timeout(Duration::from_secs(10), sys.subscribe(&topic)))
            .buffer_unordered(concurrency.max(1));
        while let Some(res) = pending.next().await {
            match res {
                Ok(Ok(mut sub)) => {
                    established += 1;
                    let received = received.clone();
                    let mut stop = stop_rx.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = stop.changed() => {}
                            ev = sub.events.next() => {
                                if matches!(ev, Some(Event::Message(_))) {
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                                // Hold the connection until the end.
                                let _ = stop.changed().await;
                            }
                        }
                        drop(sub);
                    });
                }
                Ok(Err(e)) => {
                    errors += 1;
                    limited_by.get_or_insert_with(|| format!("{e:#}"));
                }
                Err(_) => {
                    errors += 1;
                    limited_by.get_or_insert_with(|| "connect timed out (10 s)".into());
                }
            }
            if errors >= 20 {
                break;
            }
            if start.elapsed() >= budget {
                limited_by.get_or_insert_with(|| format!("time budget ({budget:?})"));
                break;
            }
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    // Let the server settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss();
    let mut live = 0;
    if let Ok(mut publisher) = sys.publisher().await {
        let mut buf = BytesMut::new();
        let batch = make_batch(&mut buf, 64, 0, 1);
        if publisher.publish_batch(&topic, &batch).await.is_ok() {
            let _ = publisher.flush().await;
            let wait = Instant::now();
            while wait.elapsed() < Duration::from_secs(10)
                && (received.load(Ordering::Relaxed) as usize) < established
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        live = received.load(Ordering::Relaxed) as usize;
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let rss_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if established > 0 => Some((a as f64 - b as f64) / established as f64),
        _ => None,
    };
    ConnRun {
        system: id,
        target,
        established,
        connect_s,
        limited_by,
        rss_before,
        rss_after,
        rss_per_conn,
        live,
        fd_limit: fd_limit(),
    }
}

/// Scenario S: how the rate search ends a probe, and where it starts.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    /// First rate tried (msgs/s).
    pub start: u64,
    /// The doubling stops here.
    pub max: u64,
    /// Bisection steps after the first failure.
    pub bisect: usize,
    /// A probe passes only if every subscriber has everything within this
    /// long after the last publish: no backlog was building up.
    pub max_drain: Duration,
}

/// One probe of scenario S: a fixed rate, and whether every subscriber
/// received all of it.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Rate asked for (msgs/s).
    pub rate: u64,
    /// Rate the publisher achieved.
    pub published_rate: f64,
    /// Delivered / (published × subscribers).
    pub delivered_fraction: f64,
    /// Messages announced lost (resyncs) or silently lost.
    pub lost: u64,
    /// Seconds from the last publish until every subscriber had everything.
    pub drain_s: f64,
    /// Every subscriber received 100 %, the publisher kept the rate (95 %),
    /// and no backlog was left (drain within [`Search::max_drain`]).
    pub ok: bool,
    /// Set when the probe could not be carried out.
    pub error: Option<String>,
}

/// Scenario S for one system and cell: the highest fixed publish rate at
/// which every subscriber receives 100 %.
#[derive(Debug, Clone, Serialize)]
pub struct SustainedRun {
    /// System id.
    pub system: String,
    /// Subscribers.
    pub subscribers: usize,
    /// Payload bytes.
    pub payload: usize,
    /// The highest rate that passed (0: not even the first).
    pub sustained_rate: u64,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
}

/// Scenario S: doubles the rate from `search.start` while probes pass, then
/// bisects between the last pass and the first failure.
pub async fn run_sustainable(
    sys: &dyn System,
    subscribers: usize,
    payload: usize,
    p: &Params,
    search: &Search,
) -> SustainedRun {
    let probe_at = |rate: u64| {
        let cell = Cell {
            scenario: "S".into(),
            subscribers,
            payload,
            rate: Some(rate),
            slow: false,
        };
        async move {
            let r = run_fanout(sys, &cell, p, 0).await;
            let expected = r.published.saturating_mul(subscribers as u64);
            let publish_s = r.published as f64 / r.published_rate.max(1e-9);
            let drain_s = (r.window_s - publish_s).max(0.0);
            let lost = r.loss.reported_missing + r.loss.silent_total();
            let ok = r.error.is_none()
                && expected > 0
                && r.delivered == expected
                && lost == 0
                && r.disconnects == 0
                && r.published_rate >= 0.95 * rate as f64
                && drain_s <= search.max_drain.as_secs_f64();
            Probe {
                rate,
                published_rate: r.published_rate,
                delivered_fraction: r.delivered as f64 / expected.max(1) as f64,
                lost,
                drain_s,
                ok,
                error: r.error,
            }
        }
    };
    let (sustained_rate, probes) = search_rate(search, probe_at).await;
    SustainedRun {
        system: sys.info().id,
        subscribers,
        payload,
        sustained_rate,
        probes,
    }
}

/// The search of scenario S over any probe: returns the highest rate that
/// passed (0 if the first failed) and every probe in order.
pub async fn search_rate<F, Fut>(search: &Search, mut probe_at: F) -> (u64, Vec<Probe>)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Probe>,
{
    let mut probes = Vec::new();
    let mut passed = 0;
    let mut failed = None;
    let mut rate = search.start.max(1);
    while rate <= search.max {
        let probe = probe_at(rate).await;
        let ok = probe.ok;
        probes.push(probe);
        if !ok {
            failed = Some(rate);
            break;
        }
        passed = rate;
        rate = rate.saturating_mul(2);
    }
    if let Some(mut hi) = failed {
        let mut lo = passed;
        for _ in 0..search.bisect {
            let mid = lo + (hi - lo) / 2;
            if mid == lo || mid == hi {
                break;
            }
            let probe = probe_at(mid).await;
            if probe.ok {
                lo = mid;
            } else {
                hi = mid;
            }
            probes.push(probe);
        }
        passed = lo;
    }
    (passed, probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(limit: u64) -> impl FnMut(u64) -> std::future::Ready<Probe> {
        move |rate| {
            std::future::ready(Probe {
                rate,
                published_rate: rate as f64,
                delivered_fraction: if rate <= limit { 1.0 } else { 0.9 },
                lost: 0,
                drain_s: 0.0,
                ok: rate <= limit,
                error: None,
            })
        }
    }

    fn search(bisect: usize) -> Search {
        Search {
            start: 1000,
            max: 1 << 30,
            bisect,
            max_drain: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn the_search_brackets_the_limit() {
        // 1000, 2000, ... 32000 pass, 64000 fails; then 48000 fails,
        // 40000 fails, 36000 passes, 38000 fails.
        let (rate, probes) = search_rate(&search(4), fake(37_000)).await;
        assert_eq!(rate, 36_000);
        let tried: Vec<u64> = probes.iter().map(|p| p.rate).collect();
        assert_eq!(
            tried,
            [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 48_000, 40_000, 36_000, 38_000]
        );
        // More bisection steps get closer, never past the limit.
        let (fine, _) = search_rate(&search(20), fake(37_000)).await;
        assert!((36_900..=37_000).contains(&fine), "{fine}");
    }

    #[tokio::test]
    async fn a_failing_first_probe_is_zero_and_the_cap_ends_the_doubling() {
        let (rate, probes) = search_rate(&search(3), fake(10)).await;
        assert_eq!(rate, 0);
        assert_eq!(probes.first().map(|p| p.rate), Some(1000));
        let capped = Search {
            max: 4000,
            ..search(3)
        };
        let (rate, probes) = search_rate(&capped, fake(u64::MAX)).await;
        assert_eq!(
            (rate, probes.len()),
            (4000, 3),
            "1000, 2000, 4000, then the cap"
        );
    }
}
