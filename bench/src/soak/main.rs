//! `lapwing-soak`: hours of churn against one server process, checking
//! that nothing is lost silently and nothing grows.
//!
//! It starts `lapwing-server` (its own process, so its RSS and descriptors
//! are its own), then for `--seconds`:
//! - holds `--subscribers` subscriptions (default 1 000) on both edges:
//!   QUIC clients of 20 subscriptions each and gRPC connections of 10
//!   Subscribe calls each, `--slow-percent` of them (default 10 %) reading
//!   10 events/s so they are lapped (slow QUIC clients take turns between
//!   lapping their own 32-event buffer and pushing back, so that the
//!   topic's ring laps them);
//! - publishes `--rate` msgs/s (default 500) over the stable topics, half
//!   over QUIC and half over gRPC, payloads from 16 B to 16 KiB;
//! - every second: one QUIC client and one gRPC connection leave and a new
//!   one joins; a child process (`lapwing-soak child`, QUIC or gRPC in
//!   turn) starts and the oldest beyond `--children` is killed with
//!   SIGKILL; a topic is created and one deleted through the Admin API;
//! - reports every `--report-every` seconds (and at the end) the server's
//!   RSS and open descriptors, connections, topics, and messages delivered,
//!   announced missed and silently lost.
//!
//! At the end the publishers stop and every subscription reads up to its
//! topic's head. Pass: 0 silent loss (and no duplicate, reordering or
//! unfinished subscription), RSS at the end within 10 % of its level at
//! minute 2 (runs of 4 minutes or more; a shorter run is still warming up,
//! so it reports the change since half-time without judging it),
//! descriptors flat (at most 16 more than at minute 2, or half-time). It exits 1 on failure and writes
//! `soak.json`, `soak.md` and `soak.svg` (RSS and throughput over time)
//! to `--out`.
#![forbid(unsafe_code)]

mod child;
mod server;
mod subscribers;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lapwing_bench::plot::{self, Series};
use lapwing_client::{BufferOverflow, Client, ClientConfig, Trust};
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{CreateTopicRequest, DeleteTopicRequest, GetTopicRequest, PublishRequest};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use lapwing_proto::exposition::sum as metric;
use server::Server;
use subscribers::{Control, Totals};

#[derive(Debug, Parser)]
#[command(about = "Soak: churn against one lapwing-server, checking loss and growth")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A client process the soak kills (internal).
    Child(child::ChildArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// How long the churn runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds between two report lines.
    #[arg(long, default_value_t = 60)]
    report_every: u64,
    /// Subscriptions held (QUIC and gRPC together).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Share of them reading slowly, in percent.
    #[arg(long, default_value_t = 10)]
    slow_percent: usize,
    /// Share of them on the gRPC edge, in percent.
    #[arg(long, default_value_t = 20)]
    grpc_percent: usize,
    /// Stable topics the subscribers spread over.
    #[arg(long, default_value_t = 20)]
    topics: usize,
    /// Messages published per second, over all stable topics.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Child processes alive at once (one more starts, and the oldest is
    /// SIGKILLed, every second).
    #[arg(long, default_value_t = 4)]
    children: usize,
    /// Where soak.json, soak.md and soak.svg go.
    #[arg(long, default_value = "bench/results/soak-latest")]
    out: PathBuf,
    /// The server binary (default: `lapwing-server` next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// QUIC clients hold this many subscriptions each, gRPC connections half.
const PER_QUIC_CLIENT: usize = 20;
const PER_GRPC_CONN: usize = 10;
/// Longest the end may take for every subscription to reach its head.
const FINISH_WITHIN: Duration = Duration::from_secs(180);
/// Topics created by the churn live this many seconds.
const CHURN_TOPIC_LIFE: u64 = 5;
/// Descriptors the end may have over the baseline (connections in churn).
const FD_SLACK: usize = 16;

#[derive(Debug, Clone, Serialize)]
struct Sample {
    t: f64,
    rss_bytes: u64,
    fds: usize,
    delivered: u64,
    missed: u64,
    silent: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    t: f64,
    rss_mib: f64,
    fds: usize,
    connections: f64,
    subscriptions: f64,
    topics: f64,
    delivered: u64,
    missed: u64,
    silent: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = match cli.cmd {
        Some(Cmd::Child(a)) => rt.block_on(child::run(a)).map(|()| true),
        None => rt.block_on(soak(cli.run)),
    };
    // Tasks still winding down (clients closing) must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lapwing-soak: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// One group of subscriptions that leaves and joins as a unit.
struct Slot {
    grpc: bool,
    slow: bool,
    topics: Vec<String>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

struct Ctx {
    server: Server,
    totals: Arc<Totals>,
    finish: watch::Receiver<Option<Arc<HashMap<String, u64>>>>,
    joined: u64,
}

impl Ctx {
    fn spawn(&mut self, grpc: bool, slow: bool, topics: Vec<String>) -> Slot {
        self.joined += 1;
        let stop = CancellationToken::new();
        let ctl = Control {
            stop: stop.clone(),
            finish: self.finish.clone(),
        };
        let totals = self.totals.clone();
        let task = if grpc {
            tokio::spawn(subscribers::grpc_client(
                self.server.grpc,
                topics.clone(),
                slow,
                ctl,
                totals,
            ))
        } else {
            // Slow QUIC clients take turns: one whose full buffer laps its
            // oldest messages (the client's default), one that pushes back
            // so the server's ring laps it.
            let overflow = if self.joined % 2 == 0 {
                BufferOverflow::PushBack
            } else {
                BufferOverflow::LapOldest
            };
            let kind = match (slow, overflow) {
                (false, _) => "fast",
                (true, BufferOverflow::LapOldest) => "slow-lap",
                (true, BufferOverflow::PushBack) => "slow-pushback",
            };
            tokio::spawn(subscribers::quic_client(
                self.server.quic.to_string(),
                self.server.cert.clone(),
                format!("soak-{kind}-{}", self.joined),
                topics.clone(),
                slow.then_some(overflow),
                ctl,
                totals,
            ))
        };
        Slot {
            grpc,
            slow,
            topics,
            stop,
            task,
        }
    }
}

/// A child process, SIGKILLed when dropped.
struct ChildProc(Child);

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Payload sizes: mostly small, some large (1 in 32 is 16 KiB).
fn payload(i: u64) -> Vec<u8> {
    let len = match i % 32 {
        0 => 16 * 1024,
        1..=3 => 4096,
        4..=11 => 1024,
        12..=19 => 256,
        _ => 16 + (i % 48) as usize,
    };
    vec![(i % 251) as u8; len]
}

async fn soak(a: RunArgs) -> anyhow::Result<bool> {
    let server_bin = match &a.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .join("lapwing-server"),
    };
    std::fs::create_dir_all(&a.out)?;
    let server = Server::start(&server_bin)?;
    println!(
        "soak: server pid {} (QUIC {}, gRPC {}); {} s, {} subscriptions ({} % slow, {} % gRPC), \
         {} topics, {} msgs/s",
        server.pid(),
        server.quic,
        server.grpc,
        a.seconds,
        a.subscribers,
        a.slow_percent,
        a.grpc_percent,
        a.topics,
        a.rate
    );
    let topics: Vec<String> = (0..a.topics).map(|i| format!("soak.t{i}")).collect();
    let totals = Arc::new(Totals::default());
    let (finish_tx, finish) = watch::channel(None);
    let mut ctx = Ctx {
        server,
        totals: totals.clone(),
        finish,
        joined: 0,
    };

    // Subscriptions: QUIC clients of 20 and gRPC connections of 10, each
    // spread over the topics; `slow_percent` of the groups of each edge
    // (rounded up) are slow.
    let grpc_subs = a.subscribers * a.grpc_percent / 100;
    let quic_groups = (a.subscribers - grpc_subs).div_ceil(PER_QUIC_CLIENT);
    let grpc_groups = grpc_subs.div_ceil(PER_GRPC_CONN);
    let mut slots = Vec::new();
    for (grpc, groups, per) in [
        (false, quic_groups, PER_QUIC_CLIENT),
        (true, grpc_groups, PER_GRPC_CONN),
    ] {
        for g in 0..groups {
            let ts: Vec<String> = (0..per)
                .map(|j| topics[(g * per + j) % topics.len()].clone())
                .collect();
            // The last groups of each edge are the slow ones.
            let slow = g >= groups - (groups * a.slow_percent).div_ceil(100).min(groups);
            slots.push(ctx.spawn(grpc, slow, ts));
        }
    }
    let slow_subs: usize = slots
        .iter()
        .filter(|s| s.slow)
        .map(|s| s.topics.len())
        .sum();
    let all_subs: usize = slots.iter().map(|s| s.topics.len()).sum();
    println!(
        "soak: {all_subs} subscriptions ({slow_subs} slow) in {quic_groups} QUIC clients and \
         {grpc_groups} gRPC connections"
    );

    // Publishers: half the topics over QUIC, half over gRPC.
    let mut cfg = ClientConfig::new(
        ctx.server.quic.to_string(),
        Trust::CaFile(ctx.server.cert.clone()),
    );
    cfg.client_name = "soak-publisher".into();
    let quic_pub = Arc::new(Client::connect(cfg).await?);
    let grpc_pub = BusClient::new(ctx.server.channel().await?);
    let publishing = CancellationToken::new();
    let per_tick = (a.rate / 100).max(1);
    let half = topics.len().div_ceil(2);
    let publishers = {
        let (quic_topics, grpc_topics) = topics.split_at(half);
        let quic = {
            let (client, stop, ts) = (quic_pub.clone(), publishing.clone(), quic_topics.to_vec());
            tokio::spawn(async move {
                let stream = client.publisher();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    for _ in 0..per_tick.div_ceil(2) {
                        stream
                            .publish(&ts[i as usize % ts.len()], payload(i))
                            .await?;
                        i += 1;
                    }
                }
                stream.finish().await?;
                anyhow::Ok(i)
            })
        };
        let grpc = {
            let (mut bus, stop, ts) = (grpc_pub.clone(), publishing.clone(), grpc_topics.to_vec());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut i = 0u64;
                while !stop.is_cancelled() && !ts.is_empty() {
                    tick.tick().await;
                    for _ in 0..per_tick / 2 {
                        bus.publish(PublishRequest {
                            topic: ts[i as usize % ts.len()].clone(),
                            payload: payload(i).into(),
                        })
                        .await?;
                        i += 1;
                    }
                }
                anyhow::Ok(i)
            })
        };
        [quic, grpc]
    };

    let started = Instant::now();
    let mut admin = ctx.server.admin().await?;
    let mut samples: Vec<Sample> = Vec::new();
    let mut reports: Vec<Report> = Vec::new();
    let mut children: VecDeque<ChildProc> = VecDeque::new();
    let (mut killed, mut left, mut topics_created, mut topics_deleted) = (0u64, 0u64, 0u64, 0u64);
    let exe = std::env::current_exe()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures: Vec<String> = Vec::new();
    for second in 1..=a.seconds {
        tick.tick().await;
        if !ctx.server.alive() {
            failures.push(format!("the server exited at {second} s"));
            break;
        }
        // Connection churn: one QUIC client and one gRPC connection leave
        // (their accounting is checked as they go) and new ones join.
        for grpc in [false, true] {
            let candidates: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].grpc == grpc)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let i = candidates[second as usize % candidates.len()];
            let (slow, ts) = (slots[i].slow, slots[i].topics.clone());
            let fresh = ctx.spawn(grpc, slow, ts);
            let old = std::mem::replace(&mut slots[i], fresh);
            old.stop.cancel();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(30), old.task).await {
                    Ok(Ok(Ok(()))) => {}
                    other => eprintln!("soak: a leaving client: {other:?}"),
                }
            });
            left += 1;
        }
        // Process churn: a new child, and SIGKILL for the oldest.
        let edge = if second % 2 == 0 { "quic" } else { "grpc" };
        let child = Command::new(&exe)
            .args(["child", "--edge", edge])
            .args(["--quic", &ctx.server.quic.to_string()])
            .args(["--grpc", &ctx.server.grpc.to_string()])
            .arg("--cert")
            .arg(&ctx.server.cert)
            .args(["--topics", &topics[..topics.len().min(3)].join(",")])
            .args(["--publish-topic", "soak.child"])
            .args(["--seconds", "120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn a child")?;
        children.push_back(ChildProc(child));
        while children.len() > a.children {
            drop(children.pop_front());
            killed += 1;
        }
        // Topic churn through Admin.
        let name = format!("soak.churn.{second}");
        admin
            .create_topic(CreateTopicRequest {
                name: name.clone(),
                ring_bytes: 64 * 1024,
                max_message_bytes: 4096,
            })
            .await
            .context("create a topic")?;
        topics_created += 1;
        for j in 0..10u64 {
            quic_pub.publish(&name, payload(j * 7 + 5)).await?;
        }
        if second > CHURN_TOPIC_LIFE {
            let old = format!("soak.churn.{}", second - CHURN_TOPIC_LIFE);
            admin
                .delete_topic(DeleteTopicRequest { name: old })
                .await
                .context("delete a topic")?;
            topics_deleted += 1;
        }

        let sample = Sample {
            t: started.elapsed().as_secs_f64(),
            rss_bytes: ctx.server.rss_bytes()?,
            fds: ctx.server.fds()?,
            delivered: Totals::get(&totals.delivered),
            missed: Totals::get(&totals.missed),
            silent: Totals::get(&totals.silent),
        };
        samples.push(sample.clone());
        if second % a.report_every == 0 || second == a.seconds {
            let m = ctx.server.metrics().await?;
            let r = Report {
                t: sample.t,
                rss_mib: sample.rss_bytes as f64 / 1048576.0,
                fds: sample.fds,
                connections: metric(&m, "lapwing_connections"),
                subscriptions: metric(&m, "lapwing_subscriptions"),
                topics: metric(&m, "lapwing_topics"),
                delivered: sample.delivered,
                missed: sample.missed,
                silent: sample.silent,
            };
            println!(
                "soak: t={:>5.0}s rss={:.1} MiB fds={} connections={} subscriptions={} topics={} \
                 delivered={} announced_missed={} silent_lost={} (left {left}, killed {killed}, \
                 topics +{topics_created}/-{topics_deleted})",
                r.t,
                r.rss_mib,
                r.fds,
                r.connections,
                r.subscriptions,
                r.topics,
                r.delivered,
                r.missed,
                r.silent
            );
            reports.push(r);
        }
    }

    // The end: publishers stop, children die, every subscription reads up
    // to its topic's head.
    publishing.cancel();
    let mut published = 0;
    for p in publishers {
        published += p.await.context("publisher task")?.context("publisher")?;
    }
    children.clear();
    let mut heads = HashMap::new();
    for t in &topics {
        let info = admin
            .get_topic(GetTopicRequest { name: t.clone() })
            .await
            .with_context(|| format!("get {t}"))?
            .into_inner();
        heads.insert(t.clone(), info.head_seq);
    }
    let end_sample = samples.last().cloned();
    finish_tx.send_replace(Some(Arc::new(heads)));
    let finish_started = Instant::now();
    for s in slots {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(finish_started + FINISH_WITHIN),
            s.task,
        )
        .await
        {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push(format!("a subscriber group failed: {e:#}")),
            Ok(Err(e)) => failures.push(format!("a subscriber group panicked: {e}")),
            Err(_) => {
                failures.push(format!(
                    "subscribers did not reach their topics' heads within {FINISH_WITHIN:?}"
                ));
                s.stop.cancel();
            }
        }
    }
    let caught_up = finish_started.elapsed();

    // Verdict.
    let silent = Totals::get(&totals.silent);
    let disorder = Totals::get(&totals.disorder);
    let unfinished = Totals::get(&totals.unfinished);
    let errors = Totals::get(&totals.errors);
    if silent > 0 {
        failures.push(format!("{silent} messages lost silently"));
    }
    if disorder > 0 {
        failures.push(format!("{disorder} duplicates or reorderings"));
    }
    if unfinished > 0 {
        failures.push(format!(
            "{unfinished} subscriptions short of their topic's head"
        ));
    }
    if errors > 0 {
        failures.push(format!("{errors} subscriptions ended with an error"));
    }
    // RSS is judged against its level at minute 2, once the rings are full
    // and every group of subscribers has been replaced at least once; a
    // run too short to have a minute 2 worth comparing with (under 4 min)
    // reports the change since half-time but does not judge it.
    let judge_rss = a.seconds >= 240;
    let base_at = if judge_rss {
        120.0
    } else {
        a.seconds as f64 / 2.0
    };
    let baseline = samples.iter().find(|s| s.t >= base_at).cloned();
    let mut rss_change = None;
    if let (Some(base), Some(end)) = (&baseline, &end_sample) {
        let growth = end.rss_bytes as f64 / base.rss_bytes as f64 - 1.0;
        rss_change = Some(growth);
        if judge_rss && growth.abs() > 0.10 {
            failures.push(format!(
                "RSS {:.1} MiB at the end, {:.1} MiB at {:.0} s: {:+.1} % (bound ±10 %)",
                end.rss_bytes as f64 / 1048576.0,
                base.rss_bytes as f64 / 1048576.0,
                base.t,
                growth * 100.0
            ));
        }
        if end.fds > base.fds + FD_SLACK {
            failures.push(format!(
                "{} descriptors at the end, {} at {:.0} s (slack {FD_SLACK})",
                end.fds, base.fds, base.t
            ));
        }
    } else {
        failures.push("too short a run to compare descriptors".into());
    }

    let passed = failures.is_empty();
    let summary = serde_json::json!({
        "seconds": a.seconds,
        "subscribers": all_subs,
        "slow_subscribers": slow_subs,
        "quic_clients": quic_groups,
        "grpc_connections": grpc_groups,
        "topics": a.topics,
        "rate": a.rate,
        "published": published,
        "delivered": Totals::get(&totals.delivered),
        "announced_missed": Totals::get(&totals.missed),
        "resyncs": Totals::get(&totals.resyncs),
        "silent_lost": silent,
        "duplicates_or_reorders": disorder,
        "unfinished": unfinished,
        "subscription_errors": errors,
        "subscriptions_retired": Totals::get(&totals.retired),
        "clients_left": left,
        "children_killed": killed,
        "topics_created": topics_created,
        "topics_deleted": topics_deleted,
        "baseline": baseline,
        "end": end_sample,
        "rss_change": rss_change,
        "rss_judged": judge_rss,
        "catch_up_seconds": caught_up.as_secs_f64(),
        "passed": passed,
        "failures": failures,
        "reports": reports,
        "samples": samples,
    });
    std::fs::write(
        a.out.join("soak.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.t, s.rss_bytes as f64 / 1048576.0))
        .collect();
    let rate: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| {
            (
                w[1].t,
                (w[1].delivered - w[0].delivered) as f64 / (w[1].t - w[0].t),
            )
        })
        .collect();
    let fds: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.fds as f64)).collect();
    plot::timeline(
        &format!(
            "lapwing soak: {} s, {all_subs} subscriptions ({slow_subs} slow), QUIC + gRPC, churn",
            a.seconds
        ),
        &[
            Series {
                title: "server RSS".into(),
                unit: "MiB".into(),
                points: rss,
            },
            Series {
                title: "delivered messages per second (all subscriptions)".into(),
                unit: "msgs/s".into(),
                points: rate,
            },
            Series {
                title: "server open file descriptors".into(),
                unit: "descriptors".into(),
                points: fds,
            },
        ],
        &a.out.join("soak.svg"),
    )?;
    let mut md = String::new();
    md.push_str(&format!(
        "# lapwing soak, {} s\n\n{all_subs} subscriptions ({slow_subs} slow; {quic_groups} QUIC \
         clients, {grpc_groups} gRPC connections), {} topics at {} msgs/s; every second one QUIC \
         client and one gRPC connection replaced, a child process SIGKILLed, a topic created and \
         one deleted.\n\n| t (s) | RSS (MiB) | fds | connections | subscriptions | topics | \
         delivered | announced missed | silently lost |\n|---|---|---|---|---|---|---|---|---|\n",
        a.seconds, a.topics, a.rate
    ));
    for r in &reports {
        md.push_str(&format!(
            "| {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.t,
            r.rss_mib,
            r.fds,
            r.connections,
            r.subscriptions,
            r.topics,
            r.delivered,
            r.missed,
            r.silent
        ));
    }
    md.push_str(&format!(
        "\npublished {published} on the stable topics; after the end every subscription reached \
         its topic's head in {:.1} s: {} delivered, {} announced missed in {} resyncs, {silent} \
         silently lost, {disorder} duplicates/reorders, {unfinished} unfinished, {errors} errors; \
         {left} clients left and joined, {killed} children SIGKILLed, {topics_created} topics \
         created and {topics_deleted} deleted. RSS at the end vs {:.0} s: {}{}.\n\n**{}**{}\n",
        caught_up.as_secs_f64(),
        Totals::get(&totals.delivered),
        Totals::get(&totals.missed),
        Totals::get(&totals.resyncs),
        base_at,
        rss_change.map_or("n/a".to_string(), |g| format!("{:+.1} %", g * 100.0)),
        if judge_rss {
            " (bound ±10 %)"
        } else {
            " (not judged: under 4 min)"
        },
        if passed { "PASS" } else { "FAIL" },
        if passed {
            String::new()
        } else {
            format!(": {}", failures.join("; "))
        }
    ));
    std::fs::write(a.out.join("soak.md"), &md)?;
    println!(
        "soak: {}: {} delivered, {} announced missed, {silent} silently lost; results in {}",
        if passed { "PASS" } else { "FAIL" },
        Totals::get(&totals.delivered),
        Totals::get(&totals.missed),
        a.out.display()
    );
    for f in &failures {
        println!("soak: FAIL: {f}");
    }
    Ok(passed)
}
