//! `lapwing-bench`: the load generator behind `bench/run`.
//!
//! `bench/run` installs and starts the servers, then calls `lapwing-bench run`
//! with their addresses and pids. The helper subcommands exist so the script
//! needs nothing but bash and this binary.
#![forbid(unsafe_code)]

use std::fs;
use std::io::IsTerminal;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lapwing_client::BufferOverflow;

use lapwing_bench::cluster;
use lapwing_bench::cpu;
use lapwing_bench::report::{self, Meta, Report};
use lapwing_bench::scenario::{self, Cell, Params};
use lapwing_bench::systems::{self, System, SystemKind};

#[derive(Debug, Parser)]
#[command(about = "Lapwing vs NATS vs Redis pub/sub load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the scenarios against the servers given.
    Run(Box<RunArgs>),
    /// Scenario `cluster`: fanout through 1-3 Lapwing nodes over one NATS
    /// JetStream backbone beside core NATS with routed servers (the nodes,
    /// the backbone and the routed servers are started by `bench/run`).
    Cluster(Box<ClusterArgs>),
    /// Write a self-signed certificate (cert.pem, key.pem) for localhost/127.0.0.1.
    GenCert {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print N free loopback ports (free for both TCP and UDP), one per line.
    FreePorts {
        /// How many.
        n: usize,
    },
}

/// `--lapwing-buffer-overflow`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Overflow {
    Lap,
    PushBack,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A few seconds per scenario, one run, small N.
    #[arg(long)]
    quick: bool,
    /// Output directory (results.json, results.md, *.svg).
    #[arg(long)]
    out: PathBuf,
    /// Runs per cell (default 1 in quick mode, 3 otherwise).
    #[arg(long)]
    runs: Option<usize>,
    /// Publish seconds per run (default 1 quick, 5 full).
    #[arg(long)]
    duration: Option<f64>,
    /// Scenarios to run, e.g. A,B,C,D. S (the sustainable rate: the
    /// highest fixed publish rate at which every subscriber receives 100 %,
    /// found by doubling and bisecting) runs only when named.
    #[arg(long, value_delimiter = ',', default_value = "A,B,C,D")]
    scenarios: Vec<String>,
    /// Scenario S: subscriber counts (default 10 quick; 10,100 full).
    #[arg(long, value_delimiter = ',')]
    s_subscribers: Option<Vec<usize>>,
    /// Scenario S: payload sizes (default 64 quick; 64,1024 full).
    #[arg(long, value_delimiter = ',')]
    s_payloads: Option<Vec<usize>>,
    /// Scenario S: publish seconds per probe (default 1 quick, 3 full).
    #[arg(long)]
    s_duration: Option<f64>,
    /// Systems to measure, by id (lapwing-quic, lapwing-grpc, nats,
    /// nats-tls, redis); default: every system whose address is given.
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Subscriber counts for scenario A (default 10,100 quick; 1,10,100,1000 full).
    #[arg(long, value_delimiter = ',')]
    a_subscribers: Option<Vec<usize>>,
    /// Payload sizes for scenario A (default 64 quick; 64,1024 full).
    #[arg(long, value_delimiter = ',')]
    a_payloads: Option<Vec<usize>>,
    /// Scenario D: connections to aim for (default 300 quick, 10000 full).
    #[arg(long)]
    conn_target: Option<usize>,
    /// Scenario D: seconds allowed for connecting (default 20 quick, 150 full).
    #[arg(long)]
    conn_budget: Option<f64>,
    /// Lapwing QUIC address (host:port).
    #[arg(long)]
    lapwing: Option<String>,
    /// Lapwing server certificate (PEM) to trust.
    #[arg(long)]
    lapwing_ca: Option<PathBuf>,
    /// What a lapwing-quic subscriber's full buffer does: `lap` (lap its
    /// oldest messages into a resync, the client's default) or `push-back`
    /// (stop reading, so the server's ring laps it).
    #[arg(long, value_enum, default_value_t = Overflow::Lap)]
    lapwing_buffer_overflow: Overflow,
    /// Lapwing gRPC address (host:port), plaintext HTTP/2.
    #[arg(long)]
    lapwing_grpc: Option<String>,
    /// lapwing-server pid: one process serves both lapwing-quic and
    /// lapwing-grpc, so both read their server CPU and RSS from it.
    #[arg(long)]
    lapwing_pid: Option<u32>,
    /// nats-server (plaintext) address.
    #[arg(long)]
    nats: Option<String>,
    /// nats-server (plaintext) pid.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// nats-server (TLS) address.
    #[arg(long)]
    nats_tls: Option<String>,
    /// CA certificate for nats-server TLS.
    #[arg(long)]
    nats_tls_ca: Option<PathBuf>,
    /// nats-server (TLS) pid.
    #[arg(long)]
    nats_tls_pid: Option<u32>,
    /// redis-server address.
    #[arg(long)]
    redis: Option<String>,
    /// redis-server pid.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// NAME=VERSION facts for the report (repeatable).
    #[arg(long = "version-info")]
    versions: Vec<String>,
    /// Free-text notes for the report (repeatable), e.g. why a system was skipped.
    #[arg(long)]
    note: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// One run per cell, 1 s of publishing, 64 B only.
    #[arg(long)]
    quick: bool,
    /// Output directory (cluster.json, cluster.md).
    #[arg(long)]
    out: PathBuf,
    /// Runs per cell (default 1 quick, 3 full).
    #[arg(long)]
    runs: Option<usize>,
    /// Publish seconds per run (default 1 quick, 3 full).
    #[arg(long)]
    duration: Option<f64>,
    /// Subscribers per cell, spread evenly over the nodes in use.
    #[arg(long, default_value_t = 60)]
    subscribers: usize,
    /// Payload sizes at full speed (default 64 quick; 64,1024 full).
    #[arg(long, value_delimiter = ',')]
    payloads: Option<Vec<usize>>,
    /// Fixed publish rates (msgs/s) of the 64 B cells at a set load
    /// (latency, and efficiency below saturation); the first also with one
    /// subscriber. Default 2000 quick; 2000,10000 full. 0: none.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Families to measure (lapwing-cluster, lapwing-cluster-bbpub,
    /// lapwing-single, nats-routed); default: all whose servers are given.
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Node counts to measure (default 1,2,3; capped by the nodes given).
    #[arg(long, value_delimiter = ',')]
    nodes: Option<Vec<usize>>,
    /// QUIC addresses of the Lapwing nodes (all on one backbone), in order.
    #[arg(long, value_delimiter = ',')]
    lapwing_nodes: Vec<String>,
    /// Their pids, in the same order.
    #[arg(long, value_delimiter = ',')]
    lapwing_pids: Vec<u32>,
    /// The certificate (PEM) every node serves, to trust.
    #[arg(long)]
    lapwing_ca: Option<PathBuf>,
    /// The backbone (nats-server -js) URL, for the -bbpub publisher.
    #[arg(long)]
    backbone_url: Option<String>,
    /// The backbone's pid.
    #[arg(long)]
    backbone_pid: Option<u32>,
    /// The nodes' backbone.subject_prefix.
    #[arg(long, default_value = "lapwing")]
    backbone_subject_prefix: String,
    /// The nodes' backbone.stream_prefix: streams with it are deleted after
    /// each cell (each cell has its own topic).
    #[arg(long, default_value = "LAPWING_")]
    backbone_stream_prefix: String,
    /// QUIC address of a lapwing-server without a backbone (reference).
    #[arg(long)]
    lapwing_single: Option<String>,
    /// Its pid.
    #[arg(long)]
    lapwing_single_pid: Option<u32>,
    /// Addresses of the routed nats-servers, in order.
    #[arg(long, value_delimiter = ',')]
    nats_nodes: Vec<String>,
    /// Their pids.
    #[arg(long, value_delimiter = ',')]
    nats_pids: Vec<u32>,
    /// How the processes were set up, one line each for the report.
    #[arg(long)]
    setup: Vec<String>,
    /// NAME=VERSION facts for the report (repeatable).
    #[arg(long = "version-info")]
    versions: Vec<String>,
    /// Free-text notes for the report (repeatable).
    #[arg(long)]
    note: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.cmd {
        Cmd::GenCert { dir } => gen_cert(&dir),
        Cmd::FreePorts { n } => free_ports(n),
        Cmd::Run(args) => runtime()?.block_on(run(*args)),
        Cmd::Cluster(args) => runtime()?.block_on(cluster(*args)),
    }
}

fn gen_cert(dir: &std::path::Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    Ok(())
}

fn free_ports(n: usize) -> anyhow::Result<()> {
    // Hold every socket until all are chosen so the ports differ.
    let mut held = Vec::new();
    while held.len() < n {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            held.push((tcp, udp));
            println!("{port}");
        }
    }
    Ok(())
}

/// The run facts every report starts with; `busy` is each measured
/// window's whole-machine busy fraction.
fn run_meta(
    quick: bool,
    runs: usize,
    duration: Duration,
    loadavg_start: String,
    busy: &[f64],
    versions: &[String],
    notes: Vec<String>,
) -> Meta {
    Meta {
        mode: if quick { "quick" } else { "full" }.into(),
        runs,
        duration_s: duration.as_secs_f64(),
        cores: cpu::cores(),
        cpu_model: cpu_model(),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        loadavg_start,
        loadavg_end: read_trim("/proc/loadavg"),
        mean_machine_busy: busy.iter().sum::<f64>() / busy.len().max(1) as f64,
        versions: versions
            .iter()
            .map(|v| {
                let (k, val) = v.split_once('=').unwrap_or((v, ""));
                (k.to_string(), val.to_string())
            })
            .collect(),
        command: std::env::var("LAPWING_BENCH_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
        notes,
    }
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown CPU".into(), |s| s.trim().to_string())
}

fn build_systems(a: &RunArgs, notes: &mut Vec<String>) -> anyhow::Result<Vec<Box<dyn System>>> {
    if let Some(ids) = &a.systems {
        for id in ids {
            if SystemKind::from_id(id).is_none() {
                let known: Vec<&str> = SystemKind::ALL.iter().map(|k| k.id()).collect();
                anyhow::bail!(
                    "unknown system `{id}` in --systems (known: {})",
                    known.join(", ")
                );
            }
        }
    }
    let wanted = |k: SystemKind| {
        a.systems
            .as_ref()
            .is_none_or(|v| v.iter().any(|s| s == k.id()))
    };
    let mut v: Vec<Box<dyn System>> = Vec::new();
    let mut add = |kind: SystemKind, system: Option<Box<dyn System>>, missing: &str| match system {
        _ if !wanted(kind) => notes.push(format!("{} not measured: not in --systems", kind.id())),
        Some(s) => v.push(s),
        None => notes.push(format!("{} not measured: no {missing} given", kind.id())),
    };
    add(
        SystemKind::LapwingQuic,
        a.lapwing
            .clone()
            .zip(a.lapwing_ca.clone())
            .map(|(addr, ca)| {
                Box::new(systems::lapwing::Lapwing {
                    addr,
                    ca,
                    pid: a.lapwing_pid,
                    overflow: match a.lapwing_buffer_overflow {
                        Overflow::Lap => BufferOverflow::LapOldest,
                        Overflow::PushBack => BufferOverflow::PushBack,
                    },
                }) as Box<dyn System>
            }),
        "--lapwing/--lapwing-ca",
    );
    add(
        SystemKind::LapwingGrpc,
        a.lapwing_grpc.clone().map(|addr| {
            Box::new(systems::lapwing_grpc::LapwingGrpc {
                addr,
                pid: a.lapwing_pid,
            }) as Box<dyn System>
        }),
        "--lapwing-grpc",
    );
    add(
        SystemKind::Nats,
        a.nats.clone().map(|addr| {
            Box::new(systems::nats::Nats {
                addr,
                tls_ca: None,
                pid: a.nats_pid,
            }) as Box<dyn System>
        }),
        "--nats",
    );
    add(
        SystemKind::NatsTls,
        a.nats_tls
            .clone()
            .zip(a.nats_tls_ca.clone())
            .map(|(addr, ca)| {
                Box::new(systems::nats::Nats {
                    addr,
                    tls_ca: Some(ca),
                    pid: a.nats_tls_pid,
                }) as Box<dyn System>
            }),
        "--nats-tls/--nats-tls-ca",
    );
    add(
        SystemKind::Redis,
        a.redis.clone().map(|addr| {
            Box::new(systems::redis::Redis {
                addr,
                pid: a.redis_pid,
            }) as Box<dyn System>
        }),
        "--redis",
    );
    Ok(v)
}

fn cells(a: &RunArgs) -> Vec<Cell> {
    let has = |s: &str| a.scenarios.iter().any(|x| x.eq_ignore_ascii_case(s));
    let mut v = Vec::new();
    let cell = |scenario: &str, subscribers, payload, rate, slow| Cell {
        scenario: scenario.into(),
        subscribers,
        payload,
        rate,
        slow,
    };
    let a_subs = a.a_subscribers.clone().unwrap_or(if a.quick {
        vec![10, 100]
    } else {
        vec![1, 10, 100, 1000]
    });
    let a_payloads =
        a.a_payloads
            .clone()
            .unwrap_or(if a.quick { vec![64] } else { vec![64, 1024] });
    // The slow-consumer cells are compared with A N=100 and B N=100, so those
    // baselines always run when C does.
    let mut a_subs_all = a_subs.clone();
    if has("C") && !a_subs_all.contains(&100) {
        a_subs_all.push(100);
    }
    if has("A") || has("C") {
        for &payload in &a_payloads {
            for &n in &a_subs_all {
                if has("A") || (n == 100 && payload == 64) {
                    v.push(cell("A", n, payload, None, false));
                }
            }
        }
    }
    if has("B") || has("C") {
        let bs: &[usize] = if a.quick { &[10] } else { &[10, 100] };
        for &n in bs {
            v.push(cell("B", n, 64, Some(10_000), false));
        }
        if has("C") && !bs.contains(&100) {
            v.push(cell("B", 100, 64, Some(10_000), false));
        }
    }
    if has("C") {
        v.push(cell("C", 100, 64, None, true));
        v.push(cell("C", 100, 64, Some(10_000), true));
    }
    v
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let loadavg_start = read_trim("/proc/loadavg");
    let mut notes = a.note.clone();
    let systems = build_systems(&a, &mut notes)?;
    let runs = a.runs.unwrap_or(if a.quick { 1 } else { 3 });
    let duration = Duration::from_secs_f64(a.duration.unwrap_or(if a.quick { 1.0 } else { 5.0 }));
    let params = Params {
        duration,
        drain_timeout: if a.quick {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(4)
        },
        drain_stall: Duration::from_millis(750),
        slow_delay: Duration::from_millis(10),
        // Long enough, at 10 k msgs/s, to overrun everything Lapwing holds
        // for one subscriber (the 4 MiB default ring holds ~16 k messages of
        // 64 B, plus the stream window and the client buffer) and, in the
        // full run, async-nats' 65 536-message subscription queue.
        slow_min_duration: Duration::from_secs(if a.quick { 4 } else { 8 }),
        catch_up_timeout: Duration::from_secs(30),
        connect_concurrency: 16,
        batch: 64,
    };
    let cells = cells(&a);
    let with_d = a.scenarios.iter().any(|s| s.eq_ignore_ascii_case("D"));
    let s_cells = sustainable_cells(&a);
    let total = ((cells.len() * runs + usize::from(with_d) + s_cells.len()) * systems.len()) as u64;
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let tty = std::io::stderr().is_terminal();
    let say = |pb: &ProgressBar, msg: String| {
        if tty {
            pb.set_message(msg);
        } else {
            eprintln!("[{}/{}] {msg}", pb.position() + 1, total);
        }
    };

    // D first, on servers that have held no rings or lagging buffers yet:
    // an allocator keeps freed memory, so after the fanout cells the RSS
    // would be the high-water mark of those and not what connections cost.
    let mut connections = Vec::new();
    if with_d {
        let target = a.conn_target.unwrap_or(if a.quick { 300 } else { 10_000 });
        let budget =
            Duration::from_secs_f64(a.conn_budget.unwrap_or(if a.quick { 20.0 } else { 150.0 }));
        for sys in &systems {
            let id = sys.info().id;
            say(&pb, format!("D {id}: up to {target} connections"));
            let d = scenario::run_connections(sys.as_ref(), target, budget, 64).await;
            let line = format!(
                "D {id}: {} of {} connections in {:.1} s, {} live, RSS/conn {} B, stopped by {}",
                d.established,
                d.target,
                d.connect_s,
                d.live,
                d.rss_per_conn.map_or("?".into(), |v| format!("{v:.0}")),
                d.limited_by.as_deref().unwrap_or("target")
            );
            if tty {
                pb.println(line);
            } else {
                eprintln!("    {line}");
            }
            connections.push(d);
            pb.inc(1);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut fanout = Vec::new();
    // Run-major, system-minor: every system sees the same machine state
    // within one pass, so the ratios compare like with like.
    for run in 0..runs {
        for cell in &cells {
            for sys in &systems {
                let id = sys.info().id;
                let label = cell_label(cell);
                say(&pb, format!("run {}/{runs} {label} {id}", run + 1));
                let r = scenario::run_fanout(sys.as_ref(), cell, &params, run).await;
                let line = match &r.error {
                    Some(e) => format!("{label} {id}: ERROR {e}"),
                    None => format!(
                        "{label} {id}: published {:.0}/s delivered {:.0}/s p99 {:.0} µs silent {} reported {}",
                        r.published_rate,
                        r.delivered_rate,
                        r.latency.p99_us,
                        r.loss.silent_total(),
                        r.loss.reported_missing
                    ),
                };
                if tty {
                    pb.println(line);
                } else {
                    eprintln!("    {line}");
                }
                fanout.push(r);
                pb.inc(1);
                // Let the server close the old connections before the next cell.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    // S last: each probe is a short fixed-rate run; the search takes a
    // dozen of them per system and cell.
    let mut sustained = Vec::new();
    if !s_cells.is_empty() {
        let s_params = Params {
            duration: Duration::from_secs_f64(a.s_duration.unwrap_or(if a.quick {
                1.0
            } else {
                3.0
            })),
            ..params.clone()
        };
        let search = scenario::Search {
            start: 1000,
            max: 16_000_000,
            bisect: if a.quick { 2 } else { 4 },
            max_drain: Duration::from_secs(1),
        };
        for &(n, payload) in &s_cells {
            for sys in &systems {
                let id = sys.info().id;
                say(&pb, format!("S N={n} {payload} B {id}: searching"));
                let s =
                    scenario::run_sustainable(sys.as_ref(), n, payload, &s_params, &search).await;
                let line = format!(
                    "S N={n} {payload} B {id}: sustained {} msgs/s ({} probes)",
                    s.sustained_rate,
                    s.probes.len()
                );
                if tty {
                    pb.println(line);
                } else {
                    eprintln!("    {line}");
                }
                sustained.push(s);
                pb.inc(1);
            }
        }
    }

    pb.finish_and_clear();

    let ok: Vec<f64> = fanout
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.cpu.machine_busy)
        .collect();
    let summary = report::summarize(&fanout);
    let targets = report::targets(&summary, &connections);
    let report = Report {
        meta: run_meta(
            a.quick,
            runs,
            duration,
            loadavg_start,
            &ok,
            &a.versions,
            notes,
        ),
        systems: systems.iter().map(|s| s.info()).collect(),
        fanout,
        connections,
        sustained,
        summary,
        targets,
    };
    fs::write(
        a.out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = report::markdown(&report);
    fs::write(a.out.join("results.md"), &md)?;
    lapwing_bench::plot::throughput(&report.summary, &a.out.join("throughput.svg"))?;
    lapwing_bench::plot::latency(&report.summary, &a.out.join("latency.svg"))?;
    println!("{md}");
    eprintln!("results in {}", a.out.display());
    Ok(())
}

fn cluster_systems(
    a: &ClusterArgs,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<cluster::ClusterSystem>> {
    use cluster::{ClusterSystem, Family, PublishVia};
    use std::sync::Arc;
    let families: Vec<Family> = match &a.systems {
        Some(names) => names
            .iter()
            .map(|n| {
                Family::from_name(n).with_context(|| {
                    let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                    format!(
                        "unknown system `{n}` in --systems (known: {})",
                        known.join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
        None => Family::ALL.to_vec(),
    };
    let counts = a.nodes.clone().unwrap_or_else(|| vec![1, 2, 3]);
    anyhow::ensure!(
        a.lapwing_pids.is_empty() || a.lapwing_pids.len() == a.lapwing_nodes.len(),
        "--lapwing-pids: one per --lapwing-nodes address"
    );
    anyhow::ensure!(
        a.nats_pids.is_empty() || a.nats_pids.len() == a.nats_nodes.len(),
        "--nats-pids: one per --nats-nodes address"
    );
    let lapwing_node = |i: usize, addr: &str, ca: &PathBuf| -> Arc<dyn System> {
        Arc::new(systems::lapwing::Lapwing {
            addr: addr.to_owned(),
            ca: ca.clone(),
            pid: a.lapwing_pids.get(i).copied(),
            overflow: BufferOverflow::LapOldest,
        })
    };
    let mut v = Vec::new();
    for family in families {
        match family {
            Family::LapwingCluster | Family::LapwingBackbonePublish => {
                let Some(ca) = &a.lapwing_ca else {
                    notes.push(format!("{} not measured: no --lapwing-ca", family.name()));
                    continue;
                };
                let publish = if family == Family::LapwingCluster {
                    PublishVia::FirstNode
                } else if let Some(url) = &a.backbone_url {
                    PublishVia::Backbone {
                        url: url.clone(),
                        subject_prefix: a.backbone_subject_prefix.clone(),
                    }
                } else {
                    notes.push(format!("{} not measured: no --backbone-url", family.name()));
                    continue;
                };
                for &k in &counts {
                    if k == 0 || k > a.lapwing_nodes.len() {
                        notes.push(format!(
                            "{} not measured: {} Lapwing node(s) given",
                            family.id(k),
                            a.lapwing_nodes.len()
                        ));
                        continue;
                    }
                    let nodes = a.lapwing_nodes[..k]
                        .iter()
                        .enumerate()
                        .map(|(i, addr)| lapwing_node(i, addr, ca))
                        .collect();
                    let mut processes: Vec<(String, u32)> = a
                        .lapwing_pids
                        .iter()
                        .take(k)
                        .enumerate()
                        .map(|(i, &p)| (format!("node{}", i + 1), p))
                        .collect();
                    processes.extend(a.backbone_pid.map(|p| ("backbone".to_string(), p)));
                    v.push(ClusterSystem::new(
                        family,
                        nodes,
                        publish.clone(),
                        processes,
                    ));
                }
            }
            Family::LapwingSingle => {
                let (Some(addr), Some(ca)) = (&a.lapwing_single, &a.lapwing_ca) else {
                    notes.push(format!(
                        "{} not measured: no --lapwing-single/--lapwing-ca",
                        family.name()
                    ));
                    continue;
                };
                let node: Arc<dyn System> = Arc::new(systems::lapwing::Lapwing {
                    addr: addr.clone(),
                    ca: ca.clone(),
                    pid: a.lapwing_single_pid,
                    overflow: BufferOverflow::LapOldest,
                });
                let processes = a
                    .lapwing_single_pid
                    .map(|p| ("lapwing".to_string(), p))
                    .into_iter()
                    .collect();
                v.push(ClusterSystem::new(
                    family,
                    vec![node],
                    PublishVia::FirstNode,
                    processes,
                ));
            }
            Family::NatsRouted => {
                for &k in &counts {
                    if k == 0 || k > a.nats_nodes.len() {
                        if k <= 2 {
                            notes.push(format!(
                                "{} not measured: {} routed nats-server(s) given",
                                family.id(k),
                                a.nats_nodes.len()
                            ));
                        }
                        continue;
                    }
                    let nodes = a.nats_nodes[..k]
                        .iter()
                        .enumerate()
                        .map(|(i, addr)| {
                            Arc::new(systems::nats::Nats {
                                addr: addr.clone(),
                                tls_ca: None,
                                pid: a.nats_pids.get(i).copied(),
                            }) as Arc<dyn System>
                        })
                        .collect();
                    let processes = a
                        .nats_pids
                        .iter()
                        .take(k)
                        .enumerate()
                        .map(|(i, &p)| (format!("nats{}", i + 1), p))
                        .collect();
                    v.push(ClusterSystem::new(
                        family,
                        nodes,
                        PublishVia::FirstNode,
                        processes,
                    ));
                }
            }
        }
    }
    Ok(v)
}

async fn cluster(a: ClusterArgs) -> anyhow::Result<()> {
    fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let loadavg_start = read_trim("/proc/loadavg");
    let mut notes = a.note.clone();
    let systems = cluster_systems(&a, &mut notes)?;
    anyhow::ensure!(
        !systems.is_empty(),
        "no cluster system to measure: {}",
        notes.join("; ")
    );
    let runs = a.runs.unwrap_or(if a.quick { 1 } else { 3 });
    let duration = Duration::from_secs_f64(a.duration.unwrap_or(if a.quick { 1.0 } else { 3.0 }));
    let params = Params {
        duration,
        drain_timeout: Duration::from_secs(if a.quick { 3 } else { 4 }),
        drain_stall: Duration::from_millis(750),
        slow_delay: Duration::from_millis(10),
        slow_min_duration: duration,
        catch_up_timeout: Duration::from_secs(5),
        connect_concurrency: 16,
        batch: 64,
    };
    let payloads = a
        .payloads
        .clone()
        .unwrap_or(if a.quick { vec![64] } else { vec![64, 1024] });
    let rates: Vec<u64> = a
        .rates
        .clone()
        .unwrap_or(if a.quick {
            vec![2000]
        } else {
            vec![2000, 10_000]
        })
        .into_iter()
        .filter(|&r| r > 0)
        .collect();
    let cells = cluster::cells(a.subscribers, &payloads, &rates);
    let total = runs
        * cells
            .iter()
            .map(|c| {
                systems
                    .iter()
                    .filter(|s| cluster::runs_on(c, s.node_count()))
                    .count()
            })
            .sum::<usize>();
    let mut done = 0;
    let mut fanout = Vec::new();
    // Run-major, system-minor, as `run`: one pass sees one machine state.
    for run in 0..runs {
        for cell in &cells {
            for sys in systems
                .iter()
                .filter(|s| cluster::runs_on(cell, s.node_count()))
            {
                let id = sys.info().id;
                let label = cell_label(cell);
                done += 1;
                let r = scenario::run_fanout(sys, cell, &params, run).await;
                let line = match &r.error {
                    Some(e) => format!("{label} {id}: ERROR {e}"),
                    None => format!(
                        "{label} {id}: published {:.0}/s delivered {:.0}/s p50 {:.0} µs p99 {:.0} µs server CPU {:.2} s generator CPU {:.2} s silent {}",
                        r.published_rate,
                        r.delivered_rate,
                        r.latency.p50_us,
                        r.latency.p99_us,
                        r.cpu.server_cpu_s.unwrap_or(f64::NAN),
                        r.cpu.harness_cpu_s,
                        r.loss.silent_total(),
                    ),
                };
                eprintln!("[{done}/{total}] run {}/{runs} {line}", run + 1);
                fanout.push(r);
                let on_backbone = matches!(
                    sys.family,
                    cluster::Family::LapwingCluster | cluster::Family::LapwingBackbonePublish
                );
                if let (true, Some(url)) = (on_backbone, &a.backbone_url) {
                    // Outside the measured window: the cell's stream goes.
                    if let Err(e) = cluster::delete_streams(url, &a.backbone_stream_prefix).await {
                        eprintln!("    could not delete the cell's backbone stream: {e:#}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    let busy: Vec<f64> = fanout
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.cpu.machine_busy)
        .collect();
    let infos: Vec<cluster::ClusterSystemInfo> = systems
        .iter()
        .map(|s| {
            let i = s.info();
            cluster::ClusterSystemInfo {
                id: i.id,
                family: s.family.name(),
                nodes: s.node_count(),
                processes: s.processes.iter().map(|p| p.0.clone()).collect(),
                transport: i.transport,
                client: i.client,
            }
        })
        .collect();
    let summary = cluster::summarize_cluster(&fanout, &infos);
    let ratios = cluster::ratios(&summary);
    let report = cluster::ClusterReport {
        meta: run_meta(
            a.quick,
            runs,
            duration,
            loadavg_start,
            &busy,
            &a.versions,
            notes,
        ),
        subscribers: a.subscribers,
        setup: a.setup.clone(),
        systems: infos,
        runs: fanout,
        summary,
        ratios,
    };
    fs::write(
        a.out.join("cluster.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = cluster::markdown(&report);
    fs::write(a.out.join("cluster.md"), &md)?;
    println!("{md}");
    eprintln!("cluster results in {}", a.out.display());
    Ok(())
}

/// Scenario S's (subscribers, payload) pairs, if S was asked for.
fn sustainable_cells(a: &RunArgs) -> Vec<(usize, usize)> {
    if !a.scenarios.iter().any(|s| s.eq_ignore_ascii_case("S")) {
        return Vec::new();
    }
    let subs = a
        .s_subscribers
        .clone()
        .unwrap_or(if a.quick { vec![10] } else { vec![10, 100] });
    let payloads = a
        .s_payloads
        .clone()
        .unwrap_or(if a.quick { vec![64] } else { vec![64, 1024] });
    payloads
        .iter()
        .flat_map(|&p| subs.iter().map(move |&n| (n, p)))
        .collect()
}

fn cell_label(c: &Cell) -> String {
    format!(
        "{} N={} {} B {}{}",
        c.scenario,
        c.subscribers,
        c.payload,
        c.rate.map_or("full speed".into(), |r| format!("{r}/s")),
        if c.slow { " +1 slow" } else { "" }
    )
}
