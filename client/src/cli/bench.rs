//! `lapwing bench`: one publisher, N subscribers (each on its own
//! connection), publish→deliver latency from a send timestamp in the
//! payload, and the accounting invariant checked for every subscriber.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{BufMut, BytesMut};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use super::{ConnArgs, Io};
use crate::{Client, Event, SubscribeOptions, Subscription};

/// The payload carries a send timestamp and an index: at least 16 bytes.
const MIN_SIZE: usize = 16;

/// `lapwing bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Topic to use (default: a fresh one per run).
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of subscribers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Payload size in bytes (at least 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100_000, conflicts_with = "duration")]
    pub count: u64,
    /// Publish for this many seconds instead of --count.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Publish at most this many messages per second (default: as fast as
    /// possible).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// How long subscribers may take to catch up after the last publish.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub drain_timeout: f64,
}

/// What one subscriber saw.
#[derive(Debug)]
struct SubReport {
    delivered: u64,
    missed: u64,
    resyncs: u64,
    /// Seqs covered (delivered or reported missed): `next - start`.
    window: u64,
    /// Events that did not continue exactly where the previous one ended.
    violations: u64,
    complete: bool,
    last_delivery: Option<Instant>,
    latency_ns: Histogram<u64>,
}

impl SubReport {
    fn accounting_ok(&self) -> bool {
        self.violations == 0 && self.delivered + self.missed == self.window
    }
}

pub(crate) async fn run(conn: &ConnArgs, args: BenchArgs, io: &mut Io<'_>) -> anyhow::Result<()> {
    if args.size < MIN_SIZE {
        bail!("--size must be at least {MIN_SIZE} bytes (timestamp + index)");
    }
    if args.subscribers == 0 {
        bail!("--subscribers must be at least 1");
    }
    let topic = args.topic.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("bench.{}-{nanos}", std::process::id())
    });
    lapwing_proto::validate_topic(&topic).with_context(|| format!("invalid topic {topic:?}"))?;
    let cfg = conn.client_config()?;
    let publisher = Client::connect(cfg.clone())
        .await
        .with_context(|| format!("cannot connect to {}", conn.server))?;
    if args.size > publisher.max_message_bytes() {
        bail!(
            "--size {} is over the server's limit of {} bytes",
            args.size,
            publisher.max_message_bytes()
        );
    }

    // Subscribers first, so that every one sees every message from its start.
    let clients =
        futures::future::try_join_all((0..args.subscribers).map(|_| Client::connect(cfg.clone())))
            .await
            .context("connecting subscribers")?;
    let subs = futures::future::try_join_all(
        clients
            .iter()
            .map(|c| c.subscribe(&topic, SubscribeOptions::default())),
    )
    .await
    .context("subscribing")?;

    let base = Instant::now();
    let delivered_total = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    // The number of messages published, once publishing is over.
    let (total_tx, total_rx) = watch::channel(None::<u64>);
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .map(|sub| {
            tokio::spawn(consume(
                sub,
                base,
                total_rx.clone(),
                drain,
                delivered_total.clone(),
            ))
        })
        .collect();

    writeln!(
        io.err,
        "bench: topic={topic} subscribers={} size={} {}{}",
        args.subscribers,
        args.size,
        match args.duration {
            Some(d) => format!("duration={d}s"),
            None => format!("count={}", args.count),
        },
        args.rate
            .map(|r| format!(" rate={r}/s"))
            .unwrap_or_default(),
    )?;

    let publish_task = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        args.clone(),
        base,
        published.clone(),
    ));
    let all_done = async {
        let publish_result = publish_task.await;
        let publish_secs = base.elapsed().as_secs_f64();
        let count = match &publish_result {
            Ok(Ok(())) => published.load(Ordering::Relaxed),
            _ => published.load(Ordering::Relaxed),
        };
        let _ = total_tx.send(Some(count));
        let mut reports = Vec::new();
        for t in sub_tasks {
            reports.push(t.await);
        }
        (publish_result, publish_secs, count, reports)
    };
    tokio::pin!(all_done);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (publish_result, publish_secs, count, reports) = loop {
        tokio::select! {
            done = &mut all_done => break done,
            _ = tick.tick() => {
                writeln!(
                    io.err,
                    "  {:>6.1}s published {} delivered {}",
                    base.elapsed().as_secs_f64(),
                    published.load(Ordering::Relaxed),
                    delivered_total.load(Ordering::Relaxed),
                )?;
            }
        }
    };
    publish_result
        .context("publisher task")?
        .context("publishing")?;
    let reports: Vec<SubReport> = reports
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("subscriber task")?
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut latency = Histogram::<u64>::new(3).expect("valid histogram");
    let (mut delivered, mut missed, mut resyncs) = (0u64, 0u64, 0u64);
    let mut last = base;
    for r in &reports {
        latency.add(&r.latency_ns).expect("same histogram bounds");
        delivered += r.delivered;
        missed += r.missed;
        resyncs += r.resyncs;
        last = last.max(r.last_delivery.unwrap_or(base));
    }
    let deliver_secs = (last - base).as_secs_f64().max(1e-9);
    let us = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let ok = reports.iter().filter(|r| r.accounting_ok()).count();
    let complete = reports.iter().filter(|r| r.complete).count();
    writeln!(
        io.out,
        "published   {count} msgs in {publish_secs:.3} s = {:.0} msgs/s",
        count as f64 / publish_secs.max(1e-9)
    )?;
    writeln!(
        io.out,
        "delivered   {delivered} msgs in {deliver_secs:.3} s = {:.0} msgs/s ({} subscribers)",
        delivered as f64 / deliver_secs,
        reports.len()
    )?;
    writeln!(
        io.out,
        "latency us  p50={:.0} p90={:.0} p99={:.0} p99.9={:.0} max={:.0}",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        latency.max() as f64 / 1000.0
    )?;
    writeln!(io.out, "resyncs     {resyncs} (missed {missed})")?;
    writeln!(
        io.out,
        "accounting  {ok}/{} subscribers: delivered + missed == published in window; {complete}/{} complete",
        reports.len(),
        reports.len()
    )?;
    // All at once: each close waits for the server's acknowledgement, and
    // a hundred of them one after another took a minute.
    futures::future::join_all(
        clients
            .into_iter()
            .chain(std::iter::once(publisher))
            .map(Client::close),
    )
    .await;
    if ok != reports.len() {
        bail!(
            "accounting invariant violated for {} subscriber(s)",
            reports.len() - ok
        );
    }
    if complete != reports.len() {
        bail!(
            "{} subscriber(s) did not reach the last message within --drain-timeout",
            reports.len() - complete
        );
    }
    Ok(())
}

async fn publish(
    client: Client,
    topic: String,
    args: BenchArgs,
    base: Instant,
    published: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let publisher = client.publisher();
    let deadline = args.duration.map(|d| base + Duration::from_secs_f64(d));
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let start = tokio::time::Instant::now();
    let filler = vec![b'.'; args.size - MIN_SIZE];
    let mut i = 0u64;
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if i >= args.count => break,
            _ => {}
        }
        if let Some(interval) = interval {
            tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        }
        let mut p = BytesMut::with_capacity(args.size);
        p.put_u64_le(base.elapsed().as_nanos() as u64);
        p.put_u64_le(i);
        p.put_slice(&filler);
        publisher.publish(&topic, p.freeze()).await?;
        i += 1;
        published.store(i, Ordering::Relaxed);
    }
    publisher.finish().await?;
    Ok(())
}

async fn consume(
    mut sub: Subscription,
    base: Instant,
    mut total: watch::Receiver<Option<u64>>,
    drain: Duration,
    delivered_total: Arc<AtomicU64>,
) -> anyhow::Result<SubReport> {
    let (_, start) = sub
        .started_at()
        .context("server did not report the start position")?;
    let mut next = start;
    let mut r = SubReport {
        delivered: 0,
        missed: 0,
        resyncs: 0,
        window: 0,
        violations: 0,
        complete: false,
        last_delivery: None,
        latency_ns: Histogram::new(3).expect("valid histogram"),
    };
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        if let Some(total) = *total.borrow() {
            if next >= start + total {
                r.complete = true;
                break;
            }
            drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + drain);
        }
        let timeout = async {
            match drain_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            event = sub.next() => match event {
                Some(Ok(Event::Message { seq, payload, .. })) => {
                    let now = base.elapsed().as_nanos() as u64;
                    if seq != next {
                        r.violations += 1;
                    }
                    next = seq + 1;
                    r.delivered += 1;
                    delivered_total.fetch_add(1, Ordering::Relaxed);
                    r.last_delivery = Some(Instant::now());
                    if let Some(sent) = payload.get(..8) {
                        let sent = u64::from_le_bytes(sent.try_into().expect("8 bytes"));
                        let _ = r.latency_ns.record(now.saturating_sub(sent).max(1));
                    }
                }
                Some(Ok(Event::Resync { missed, resume_seq, .. })) => {
                    if resume_seq != next + missed {
                        r.violations += 1;
                    }
                    r.missed += missed;
                    r.resyncs += 1;
                    next = resume_seq;
                }
                // Only a wildcard subscription joins topics.
                Some(Ok(Event::Joined { .. } | Event::Left { .. })) => r.violations += 1,
                Some(Err(e)) => return Err(e).context("subscription failed"),
                None => bail!("subscription ended"),
            },
            _ = total.changed() => {}
            _ = timeout => break,
        }
    }
    r.window = next - start;
    Ok(r)
}
