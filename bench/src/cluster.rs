//! Scenario `cluster` (issue 13): fanout through 1, 2 or 3 Lapwing nodes
//! over one NATS JetStream backbone, beside plain core NATS with two routed
//! servers, all on this machine.
//!
//! Every cell is the fanout engine of [`crate::scenario`] (the same
//! payload, loss accounting, latency histogram and CPU bookkeeping as
//! scenarios A and B) run against a [`ClusterSystem`]: N subscribers, each
//! its own connection, spread evenly over the nodes in use (subscriber `i`
//! on node `i mod k`), and one publisher on the first node. Server CPU is
//! the sum over the processes that serve the system (each Lapwing node in
//! use *and* the backbone's nats-server; each routed nats-server in use),
//! kept per process as well, so efficiency is delivered messages per
//! server CPU-second including the backbone.
//!
//! Systems (`family-k`, k = nodes in use):
//! - `lapwing-cluster-k`: the publisher publishes fire-and-forget over QUIC
//!   to node 1, which publishes each message to the backbone and waits for
//!   its acknowledgement; every node copies the topic's stream into its
//!   ring and fans out to its own subscribers.
//! - `lapwing-cluster-k-bbpub`: the same nodes and subscribers, but the
//!   publisher publishes straight to the topic's stream on the backbone
//!   (async-nats JetStream, up to [`BACKBONE_WINDOW`] acknowledgements in
//!   flight): the fanout side's capacity without node 1's publish path.
//! - `lapwing-single`: one lapwing-server without a backbone (the reference:
//!   what the backbone costs).
//! - `nats-routed-k`: core NATS (no JetStream), subscribers spread over k
//!   nats-servers joined by a cluster route, the publisher on the first
//!   (`nats-routed-1` uses one of the pair alone).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use serde::Serialize;

use crate::report::{summarize, CellSummary, Meta};
use crate::scenario::{Cell, FanoutRun};
use crate::stats::Spread;
use crate::systems::{BoxFut, Publisher, Subscription, System, SystemInfo};

/// Scenario name in [`Cell::scenario`] (and in the topic names).
pub const SCENARIO: &str = "cluster";

/// Backbone acknowledgements a `-bbpub` publisher keeps in flight.
pub const BACKBONE_WINDOW: usize = 256;

/// How long a routed NATS system waits after the last subscribe before it
/// publishes: a subscription on the second server reaches the first one's
/// interest table over the route asynchronously (sub-millisecond on
/// loopback; the wait leaves a wide margin, and a message published before
/// the interest arrived would show up as start loss in the tables).
const ROUTE_SETTLE: Duration = Duration::from_millis(300);

/// The kind of system, without its node count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    /// Lapwing nodes over the backbone; the publisher on node 1 (QUIC).
    LapwingCluster,
    /// Lapwing nodes over the backbone; the publisher on the backbone.
    LapwingBackbonePublish,
    /// One lapwing-server, no backbone.
    LapwingSingle,
    /// Core NATS, routed servers.
    NatsRouted,
}

impl Family {
    /// Every family, in table order.
    pub const ALL: [Family; 4] = [
        Family::LapwingCluster,
        Family::LapwingBackbonePublish,
        Family::LapwingSingle,
        Family::NatsRouted,
    ];

    /// Name on the command line (`--systems`).
    pub fn name(self) -> &'static str {
        match self {
            Family::LapwingCluster => "lapwing-cluster",
            Family::LapwingBackbonePublish => "lapwing-cluster-bbpub",
            Family::LapwingSingle => "lapwing-single",
            Family::NatsRouted => "nats-routed",
        }
    }

    /// The family of `name`.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// System id for `nodes` nodes.
    pub fn id(self, nodes: usize) -> String {
        match self {
            Family::LapwingCluster => format!("lapwing-cluster-{nodes}"),
            Family::LapwingBackbonePublish => format!("lapwing-cluster-{nodes}-bbpub"),
            Family::LapwingSingle => "lapwing-single".into(),
            Family::NatsRouted => format!("nats-routed-{nodes}"),
        }
    }
}

/// Where a cluster system's publisher publishes.
#[derive(Debug, Clone)]
pub enum PublishVia {
    /// Through the first node's own publish path.
    FirstNode,
    /// Straight to the backbone: `<subject_prefix>.<topic>` on `url`.
    Backbone {
        /// NATS URL of the backbone.
        url: String,
        /// The nodes' `backbone.subject_prefix`.
        subject_prefix: String,
    },
}

/// A set of nodes measured as one system (see the module docs).
#[derive(Debug)]
pub struct ClusterSystem {
    /// Family and node count.
    pub family: Family,
    /// The nodes in use, in order (subscriber `i` goes to `i mod len`).
    pub nodes: Vec<Arc<dyn System>>,
    /// The publisher's way in.
    pub publish: PublishVia,
    /// Server processes counted, with a label each (nodes, then backbone).
    pub processes: Vec<(String, u32)>,
    /// Transport text for the report.
    pub transport: String,
    /// Client text for the report.
    pub client: String,
    /// Encrypted between client and node.
    pub tls: bool,
    next: Mutex<HashMap<String, usize>>,
}

impl ClusterSystem {
    /// A system of `nodes` (in use, in order).
    pub fn new(
        family: Family,
        nodes: Vec<Arc<dyn System>>,
        publish: PublishVia,
        processes: Vec<(String, u32)>,
    ) -> ClusterSystem {
        let (transport, client, tls) = match family {
            Family::NatsRouted => (
                "TCP, plaintext; servers joined by a cluster route",
                "async-nats 0.46",
                false,
            ),
            Family::LapwingSingle => (
                "QUIC (TLS 1.3); no backbone",
                "lapwing-client (this repo)",
                true,
            ),
            Family::LapwingCluster => (
                "QUIC (TLS 1.3) to the nodes; nodes to nats-server -js over TCP",
                "lapwing-client (this repo)",
                true,
            ),
            Family::LapwingBackbonePublish => (
                "subscribers QUIC (TLS 1.3) to the nodes; publisher JetStream (TCP) to the backbone",
                "lapwing-client; async-nats 0.46 (publisher)",
                true,
            ),
        };
        ClusterSystem {
            family,
            nodes,
            publish,
            processes,
            transport: transport.into(),
            client: client.into(),
            tls,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Nodes in use.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn node_for(&self, topic: &str) -> usize {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: one entry per cell; forget them all rather than grow.
        if next.len() > 1000 {
            next.clear();
        }
        let i = next.entry(topic.to_owned()).or_insert(0);
        let node = *i % self.nodes.len().max(1);
        *i += 1;
        node
    }
}

impl System for ClusterSystem {
    fn info(&self) -> SystemInfo {
        SystemInfo {
            id: self.family.id(self.nodes.len()),
            transport: self.transport.clone(),
            tls: self.tls,
            client: self.client.clone(),
        }
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>> {
        let node = self.node_for(topic);
        self.nodes[node].subscribe(topic)
    }

    fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>> {
        Box::pin(async move {
            match &self.publish {
                PublishVia::FirstNode => {
                    if self.family == Family::NatsRouted && self.nodes.len() > 1 {
                        tokio::time::sleep(ROUTE_SETTLE).await;
                    }
                    self.nodes[0].publisher().await
                }
                PublishVia::Backbone {
                    url,
                    subject_prefix,
                } => {
                    let client = async_nats::ConnectOptions::new()
                        .name("lapwing-bench backbone publisher")
                        .connect(url.as_str())
                        .await?;
                    let js = jetstream::new(client);
                    Ok(Box::new(BackbonePublisher {
                        js,
                        subject_prefix: subject_prefix.clone(),
                        pending: VecDeque::with_capacity(BACKBONE_WINDOW + 1),
                    }) as Box<dyn Publisher>)
                }
            }
        })
    }

    fn server_pid(&self) -> Option<u32> {
        self.processes.first().map(|p| p.1)
    }

    fn server_pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.1).collect()
    }
}

/// Publishes to a Lapwing topic's backbone stream directly, with up to
/// [`BACKBONE_WINDOW`] acknowledgements outstanding (each one checked).
struct BackbonePublisher {
    js: jetstream::Context,
    subject_prefix: String,
    pending: VecDeque<jetstream::context::PublishAckFuture>,
}

impl std::fmt::Debug for BackbonePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackbonePublisher")
            .field("subject_prefix", &self.subject_prefix)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Publisher for BackbonePublisher {
    fn publish_batch<'a>(
        &'a mut self,
        topic: &'a str,
        payloads: &'a [Bytes],
    ) -> BoxFut<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let subject = format!("{}.{topic}", self.subject_prefix);
            for p in payloads {
                let ack = self.js.publish(subject.clone(), p.clone()).await?;
                self.pending.push_back(ack);
                while self.pending.len() > BACKBONE_WINDOW {
                    if let Some(ack) = self.pending.pop_front() {
                        ack.await?;
                    }
                }
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFut<'_, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(ack) = self.pending.pop_front() {
                ack.await?;
            }
            Ok(())
        })
    }
}

/// The cells of the scenario, in order:
/// - the publish path: 1 subscriber, 64 B, at full speed and at the first
///   fixed rate (1-node systems only, see [`runs_on`]): what one publisher
///   gets through a node into the backbone and back out, with almost no
///   fanout;
/// - fanout: `subscribers` subscribers at full speed, at each payload;
/// - latency and efficiency under a set load: `subscribers` subscribers,
///   64 B at each fixed rate.
pub fn cells(subscribers: usize, payloads: &[usize], rates: &[u64]) -> Vec<Cell> {
    let cell = |subscribers, payload, rate| Cell {
        scenario: SCENARIO.into(),
        subscribers,
        payload,
        rate,
        slow: false,
    };
    let mut v = vec![cell(1, 64, None)];
    v.extend(rates.first().map(|&r| cell(1, 64, Some(r))));
    v.extend(
        payloads
            .iter()
            .map(|&payload| cell(subscribers, payload, None)),
    );
    v.extend(rates.iter().map(|&r| cell(subscribers, 64, Some(r))));
    let mut seen = Vec::new();
    v.retain(|c| {
        let new = !seen.contains(c);
        seen.push(c.clone());
        new
    });
    v
}

/// Deletes every stream on the backbone at `url` whose name starts with
/// `prefix` (the nodes' `backbone.stream_prefix`); returns how many. Run
/// after each cell: every cell has a topic of its own, and each stream
/// reserves its `max_bytes` of JetStream's file store, so without this a
/// full run fills the store (JetStream error 10047) and later cells fail.
/// A node whose followed stream is deleted drops the topic.
pub async fn delete_streams(url: &str, prefix: &str) -> anyhow::Result<usize> {
    use futures::TryStreamExt;
    let client = async_nats::ConnectOptions::new()
        .name("lapwing-bench cleanup")
        .connect(url)
        .await?;
    let js = jetstream::new(client);
    let names: Vec<String> = js.stream_names().try_collect().await?;
    let mut deleted = 0;
    for name in names.iter().filter(|n| n.starts_with(prefix)) {
        js.delete_stream(name).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Whether `cell` is run on a system of `nodes` nodes: not when there are
/// fewer subscribers than nodes (a node without subscribers follows
/// nothing, so it would only repeat the smaller system).
pub fn runs_on(cell: &Cell, nodes: usize) -> bool {
    cell.subscribers >= nodes
}

/// One system's row facts beside its runs.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSystemInfo {
    /// System id.
    pub id: String,
    /// Family name.
    pub family: &'static str,
    /// Nodes in use.
    pub nodes: usize,
    /// Labels of the server processes counted, in the order of
    /// `cpu.processes_cpu_s` in each run.
    pub processes: Vec<String>,
    /// Transport.
    pub transport: String,
    /// Client library.
    pub client: String,
}

/// Medians of one cell for one system, with the per-process CPU.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    /// The engine's summary of the cell (rates, latency, loss, CPU).
    #[serde(flatten)]
    pub cell: CellSummary,
    /// Nodes in use.
    pub nodes: usize,
    /// Per server process: label and median CPU seconds over the window.
    pub process_cpu_s: Vec<(String, Option<f64>)>,
    /// Median measured window (s).
    pub window_s: Option<f64>,
    /// Delivered messages per CPU-second of the load generator: where it
    /// saturates (at one core, this many msgs/s; at two, twice as many
    /// with nothing left for the servers).
    pub generator_efficiency: Option<Spread>,
}

/// A ratio of medians, Lapwing over NATS, in one cell.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRatio {
    /// The cell (payload and rate).
    pub cell: Cell,
    /// Lapwing system.
    pub lapwing: String,
    /// The NATS system it is compared with.
    pub nats: String,
    /// Delivered msgs/s, Lapwing ÷ NATS.
    pub delivered: Option<f64>,
    /// Delivered per server CPU-second, Lapwing ÷ NATS.
    pub efficiency: Option<f64>,
    /// p50, NATS ÷ Lapwing (above 1: Lapwing is faster).
    pub p50: Option<f64>,
    /// p99, NATS ÷ Lapwing (above 1: Lapwing is faster).
    pub p99: Option<f64>,
}

/// What `cluster.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Machine and run facts.
    pub meta: Meta,
    /// Subscribers per cell.
    pub subscribers: usize,
    /// How the processes were set up (backbone storage, routes).
    pub setup: Vec<String>,
    /// The systems.
    pub systems: Vec<ClusterSystemInfo>,
    /// Every run, raw.
    pub runs: Vec<FanoutRun>,
    /// Per cell and system.
    pub summary: Vec<ClusterSummary>,
    /// Lapwing ÷ NATS routed, per cell.
    pub ratios: Vec<ClusterRatio>,
}

/// Table order of a system id: family, then node count.
fn order(id: &str, systems: &[ClusterSystemInfo]) -> (usize, usize) {
    systems
        .iter()
        .find(|s| s.id == id)
        .map_or((usize::MAX, 0), |s| {
            let fam = Family::ALL
                .iter()
                .position(|f| f.name() == s.family)
                .unwrap_or(usize::MAX);
            (fam, s.nodes)
        })
}

/// Summaries in table order (cell, then family, then nodes).
pub fn summarize_cluster(runs: &[FanoutRun], systems: &[ClusterSystemInfo]) -> Vec<ClusterSummary> {
    let mut out: Vec<ClusterSummary> = summarize(runs)
        .into_iter()
        .map(|c| {
            let info = systems.iter().find(|s| s.id == c.system);
            let mine: Vec<&FanoutRun> = runs
                .iter()
                .filter(|r| r.system == c.system && r.cell == c.cell && r.error.is_none())
                .collect();
            let process_cpu_s = info
                .map(|i| {
                    i.processes
                        .iter()
                        .enumerate()
                        .map(|(k, label)| {
                            let v = mine.iter().filter_map(|r| {
                                if r.cpu.processes_cpu_s.is_empty() && k == 0 {
                                    r.cpu.server_cpu_s
                                } else {
                                    r.cpu.processes_cpu_s.get(k).copied().flatten()
                                }
                            });
                            (label.clone(), Spread::of(v).map(|s| s.median))
                        })
                        .collect()
                })
                .unwrap_or_default();
            ClusterSummary {
                nodes: info.map_or(0, |i| i.nodes),
                process_cpu_s,
                window_s: Spread::of(mine.iter().map(|r| r.window_s)).map(|s| s.median),
                generator_efficiency: Spread::of(
                    mine.iter()
                        .filter(|r| r.cpu.harness_cpu_s > 0.0)
                        .map(|r| r.delivered as f64 / r.cpu.harness_cpu_s),
                ),
                cell: c,
            }
        })
        .collect();
    // Cells as `cells` lists them: by subscribers, full speed before the
    // fixed rate, then by payload.
    let key = |s: &ClusterSummary| {
        let c = &s.cell.cell;
        (
            c.subscribers,
            c.rate.is_some(),
            c.payload,
            c.rate,
            order(&s.cell.system, systems),
        )
    };
    out.sort_by_key(key);
    out
}

/// Every Lapwing system ÷ the routed NATS with as many servers (or, for
/// more nodes than NATS was measured with, the largest routed NATS), per
/// cell.
pub fn ratios(summary: &[ClusterSummary]) -> Vec<ClusterRatio> {
    let mut out = Vec::new();
    let mut cells: Vec<&Cell> = summary.iter().map(|s| &s.cell.cell).collect();
    cells.dedup();
    for cell in cells {
        let here: Vec<&ClusterSummary> = summary
            .iter()
            .filter(|s| &s.cell.cell == cell && s.cell.runs > 0)
            .collect();
        let routed: Vec<&&ClusterSummary> = here
            .iter()
            .filter(|s| s.cell.system.starts_with("nats-routed-"))
            .collect();
        for l in here.iter().filter(|s| s.cell.system.starts_with("lapwing")) {
            let nats = routed
                .iter()
                .filter(|n| n.nodes <= l.nodes)
                .max_by_key(|n| n.nodes)
                .or_else(|| routed.iter().min_by_key(|n| n.nodes));
            let Some(nats) = nats else { continue };
            let div = |a: Option<f64>, b: Option<f64>| {
                a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
            };
            let med = |s: Option<Spread>| s.map(|s| s.median);
            out.push(ClusterRatio {
                cell: cell.clone(),
                lapwing: l.cell.system.clone(),
                nats: nats.cell.system.clone(),
                delivered: div(med(l.cell.delivered_rate), med(nats.cell.delivered_rate)),
                efficiency: div(med(l.cell.efficiency), med(nats.cell.efficiency)),
                p50: div(nats.cell.p50_us, l.cell.p50_us),
                p99: div(med(nats.cell.p99_us), med(l.cell.p99_us)),
            });
        }
    }
    out
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn spread(s: Option<Spread>) -> String {
    match s {
        Some(s) if s.min != s.max => format!("{} ({}–{})", si(s.median), si(s.min), si(s.max)),
        Some(s) => si(s.median),
        None => "–".into(),
    }
}

fn us(x: Option<f64>) -> String {
    x.map_or_else(
        || "–".into(),
        |v| {
            if v >= 10_000.0 {
                format!("{:.1} ms", v / 1000.0)
            } else {
                format!("{v:.0} µs")
            }
        },
    )
}

fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn cell_title(c: &Cell) -> String {
    format!(
        "N={}, {} B, {}",
        c.subscribers,
        c.payload,
        c.rate.map_or("full speed".into(), |r| format!(
            "{} msgs/s (latency)",
            si(r as f64)
        ))
    )
}

/// Renders `cluster.md`.
pub fn markdown(r: &ClusterReport) -> String {
    let mut md = String::new();
    let m = &r.meta;
    let _ = writeln!(md, "# Lapwing bench: cluster mode ({} mode)\n", m.mode);
    let _ = writeln!(md, "- command: `{}`", m.command);
    let _ = writeln!(
        md,
        "- machine: {} cores, {}, Linux {}; every process on this machine, traffic on loopback",
        m.cores, m.cpu_model, m.kernel
    );
    let _ = writeln!(
        md,
        "- load average at start: {}; at end: {}; mean machine busy over measured windows: {:.0} %",
        m.loadavg_start,
        m.loadavg_end,
        m.mean_machine_busy * 100.0
    );
    let _ = writeln!(
        md,
        "- {} subscribers per cell (each its own connection, spread evenly over the nodes in use), 1 publisher on the first node; runs per cell: {}, publish time per run: {:.1} s",
        r.subscribers, m.runs, m.duration_s
    );
    for s in &r.setup {
        let _ = writeln!(md, "- {s}");
    }
    for (k, v) in &m.versions {
        let _ = writeln!(md, "- {k}: {v}");
    }
    for n in &m.notes {
        let _ = writeln!(md, "- note: {n}");
    }
    let _ = writeln!(
        md,
        "\n| system | nodes | server processes counted | transport | client library |\n|---|---|---|---|---|"
    );
    for s in &r.systems {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            s.id,
            s.nodes,
            s.processes.join(", "),
            s.transport,
            s.client
        );
    }

    let _ = writeln!(
        md,
        "\nRates are medians over runs, (min–max) in brackets. \"server CPU-s\" is each counted process's CPU seconds over the measured window \
         (first publish to the end of the drain; median window in its own column); efficiency is delivered messages per server CPU-second, \
         all counted processes together (the backbone's nats-server included). Generator cores = the load generator's own CPU over the window, \
         and delivered per generator CPU-s is where it saturates (a generator at one full core delivers that many msgs/s; on 2 cores it then \
         leaves one core for every server process together). The 1-subscriber cells are the publish path (1-node systems only); \
         p50/p99 at full speed are mostly time queued behind the bottleneck, the fixed-rate cell is the latency measurement. GL = runs where the machine was ≥ 90 % busy and the generator used at \
         least as much CPU as all counted servers together. Loss: silent / reported (resync) / duplicates / reorders, summed over runs."
    );
    let mut cells: Vec<&Cell> = r.summary.iter().map(|s| &s.cell.cell).collect();
    cells.dedup();
    for cell in cells {
        let _ = writeln!(
            md,
            "\n## {}\n\n\
             | system | nodes | published/s | delivered/s | server CPU-s (window) | window | server cores | generator cores | machine busy | delivered per server CPU-s | delivered per generator CPU-s | p50 | p99 (min–max) | loss s/r/d/o | not delivered at stop | GL |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            cell_title(cell)
        );
        for s in r.summary.iter().filter(|s| &s.cell.cell == cell) {
            let c = &s.cell;
            let cpu: Vec<String> = s
                .process_cpu_s
                .iter()
                .map(|(l, v)| format!("{l} {}", v.map_or("?".into(), |v| format!("{v:.2}"))))
                .collect();
            let p99 = c.p99_us.map_or("–".into(), |p| {
                if p.min == p.max {
                    us(Some(p.median))
                } else {
                    format!(
                        "{} ({}–{})",
                        us(Some(p.median)),
                        us(Some(p.min)),
                        us(Some(p.max))
                    )
                }
            });
            let backlog = if c.loss.delivered + c.loss.undelivered_at_stop == 0 {
                "–".into()
            } else {
                format!(
                    "{:.1} %",
                    100.0 * c.loss.undelivered_at_stop as f64
                        / (c.loss.delivered + c.loss.undelivered_at_stop) as f64
                )
            };
            let f2 = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} | {}/{} |{}",
                c.system,
                s.nodes,
                spread(c.published_rate),
                spread(c.delivered_rate),
                cpu.join(" · "),
                s.window_s.map_or("–".into(), |w| format!("{w:.1} s")),
                f2(c.server_cores),
                f2(c.harness_cores),
                c.machine_busy.map_or("–".into(), |v| format!("{:.0} %", v * 100.0)),
                spread(c.efficiency),
                spread(s.generator_efficiency),
                us(c.p50_us),
                p99,
                c.loss.silent_total(),
                c.loss.reported_missing,
                c.loss.duplicates,
                c.loss.reorders,
                backlog,
                c.generator_limited_runs,
                c.runs,
                if c.errors.is_empty() {
                    String::new()
                } else {
                    format!(" errors: {}", c.errors.join("; ").replace('|', "/"))
                }
            );
        }
    }

    if !r.ratios.is_empty() {
        let _ = writeln!(
            md,
            "\n## Lapwing ÷ NATS routed (ratios of medians, same run)\n\n\
             delivered and efficiency: Lapwing ÷ NATS (above 1: Lapwing does more); p50 and p99: NATS ÷ Lapwing (above 1: Lapwing is faster).\n\n\
             | cell | Lapwing system | NATS system | delivered/s | delivered per server CPU-s | p50 | p99 |\n\
             |---|---|---|---|---|---|---|"
        );
        for x in &r.ratios {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell_title(&x.cell),
                x.lapwing,
                x.nats,
                ratio(x.delivered),
                ratio(x.efficiency),
                ratio(x.p50),
                ratio(x.p99),
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuUsage;
    use crate::scenario::Latency;
    use crate::track::LossCounts;

    /// A stand-in node that only counts who subscribed where.
    #[derive(Debug)]
    struct Node(usize, Arc<Mutex<Vec<usize>>>);

    impl System for Node {
        fn info(&self) -> SystemInfo {
            SystemInfo {
                id: "node".into(),
                transport: String::new(),
                tls: false,
                client: String::new(),
            }
        }
        fn subscribe<'a>(&'a self, _: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>> {
            self.1.lock().unwrap().push(self.0);
            Box::pin(async { anyhow::bail!("stand-in") })
        }
        fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>> {
            Box::pin(async { anyhow::bail!("stand-in") })
        }
        fn server_pid(&self) -> Option<u32> {
            None
        }
    }

    #[tokio::test]
    async fn subscribers_are_spread_evenly_per_topic() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let nodes: Vec<Arc<dyn System>> = (0..3)
            .map(|i| Arc::new(Node(i, seen.clone())) as Arc<dyn System>)
            .collect();
        let sys = ClusterSystem::new(
            Family::LapwingCluster,
            nodes,
            PublishVia::FirstNode,
            vec![("node1".into(), 1), ("backbone".into(), 2)],
        );
        assert_eq!(sys.info().id, "lapwing-cluster-3");
        assert_eq!(sys.server_pids(), [1, 2]);
        for _ in 0..6 {
            let _ = sys.subscribe("t").await;
        }
        // A new topic (the next cell) starts again at the first node.
        let _ = sys.subscribe("u").await;
        assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 0, 1, 2, 0]);
    }

    fn run(
        system: &str,
        payload: usize,
        delivered: f64,
        eff: f64,
        p99: f64,
        cpu: &[f64],
    ) -> FanoutRun {
        FanoutRun {
            system: system.into(),
            cell: cells(60, &[payload], &[]).remove(1),
            run: 0,
            error: None,
            setup_s: 0.1,
            published: 10,
            published_rate: delivered / 60.0,
            delivered: 600,
            delivered_rate: delivered,
            per_sub_min_rate: 0.0,
            per_sub_max_rate: 0.0,
            loss: LossCounts::default(),
            disconnects: 0,
            client_drop_events: 0,
            latency: Latency {
                p50_us: p99 / 2.0,
                p99_us: p99,
                ..Default::default()
            },
            cpu: CpuUsage {
                server_cpu_s: Some(cpu.iter().sum()),
                harness_cpu_s: 1.0,
                machine_busy: 0.9,
                processes_cpu_s: cpu.iter().map(|&c| Some(c)).collect(),
            },
            window_s: 2.0,
            efficiency: Some(eff),
            generator_limited: false,
            slow: None,
        }
    }

    fn info(family: Family, nodes: usize, processes: &[&str]) -> ClusterSystemInfo {
        ClusterSystemInfo {
            id: family.id(nodes),
            family: family.name(),
            nodes,
            processes: processes.iter().map(|s| s.to_string()).collect(),
            transport: String::new(),
            client: String::new(),
        }
    }

    #[test]
    fn the_publish_path_cell_runs_on_one_node_only() {
        let c = cells(60, &[64, 1024], &[2000, 10_000]);
        let shape: Vec<(usize, usize, Option<u64>)> = c
            .iter()
            .map(|c| (c.subscribers, c.payload, c.rate))
            .collect();
        assert_eq!(
            shape,
            [
                (1, 64, None),
                (1, 64, Some(2000)),
                (60, 64, None),
                (60, 1024, None),
                (60, 64, Some(2000)),
                (60, 64, Some(10_000))
            ]
        );
        assert!(runs_on(&c[0], 1) && !runs_on(&c[0], 2) && !runs_on(&c[1], 2));
        assert!(runs_on(&c[2], 3));
        // One subscriber asked for: the fanout cells are the publish path's.
        assert_eq!(cells(1, &[64], &[2000]).len(), 2);
    }

    #[test]
    fn summaries_keep_each_process_and_ratios_divide_by_two_routed_servers() {
        let systems = vec![
            info(Family::LapwingCluster, 2, &["node1", "node2", "backbone"]),
            info(Family::NatsRouted, 1, &["nats1"]),
            info(Family::NatsRouted, 2, &["nats1", "nats2"]),
        ];
        let runs = vec![
            run("nats-routed-2", 64, 1e6, 2e6, 1000.0, &[0.3, 0.2]),
            run("lapwing-cluster-2", 64, 5e5, 1e6, 4000.0, &[0.5, 0.4, 0.3]),
            run("lapwing-cluster-2", 64, 7e5, 1e6, 2000.0, &[0.7, 0.4, 0.3]),
            run("lapwing-cluster-2", 64, 6e5, 1e6, 3000.0, &[0.6, 0.4, 0.3]),
            run("nats-routed-1", 64, 3e6, 4e6, 10.0, &[0.5]),
        ];
        let s = summarize_cluster(&runs, &systems);
        let ids: Vec<&str> = s.iter().map(|c| c.cell.system.as_str()).collect();
        assert_eq!(ids, ["lapwing-cluster-2", "nats-routed-1", "nats-routed-2"]);
        assert_eq!(
            s[0].process_cpu_s,
            [
                ("node1".to_string(), Some(0.6)),
                ("node2".to_string(), Some(0.4)),
                ("backbone".to_string(), Some(0.3))
            ]
        );
        assert_eq!(s[1].process_cpu_s, [("nats1".to_string(), Some(0.5))]);
        assert_eq!(s[0].generator_efficiency.map(|g| g.median), Some(600.0));
        let r = ratios(&s);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].nats, "nats-routed-2", "two routed servers, not one");
        assert_eq!(r[0].delivered, Some(0.6));
        assert_eq!(r[0].efficiency, Some(0.5));
        assert_eq!(r[0].p99, Some(1000.0 / 3000.0));
        let md = markdown(&ClusterReport {
            meta: Meta {
                mode: "test".into(),
                runs: 3,
                duration_s: 1.0,
                cores: 2,
                cpu_model: "x".into(),
                kernel: "y".into(),
                loadavg_start: "0".into(),
                loadavg_end: "0".into(),
                mean_machine_busy: 0.5,
                versions: vec![],
                command: "c".into(),
                notes: vec![],
            },
            subscribers: 60,
            setup: vec![],
            systems,
            runs,
            summary: s,
            ratios: r,
        });
        assert!(md.contains("## N=60, 64 B, full speed"), "{md}");
        assert!(
            md.contains("node1 0.60 · node2 0.40 · backbone 0.30"),
            "{md}"
        );
        assert!(md.contains("| N=60, 64 B, full speed | lapwing-cluster-2 | nats-routed-2 | 0.60 | 0.50 | 0.33 | 0.33 |"), "{md}");
    }
}
