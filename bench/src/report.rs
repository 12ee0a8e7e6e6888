//! Aggregates runs (median and spread per cell) and renders the JSON and
//! markdown results, including the target ratios of issue 7.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::{Cell, ConnRun, FanoutRun, SustainedRun};
use crate::stats::Spread;
use crate::systems::{SystemInfo, SystemKind};
use crate::track::LossCounts;

/// Facts about the run and the machine.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// `quick` or `full`.
    pub mode: String,
    /// Runs per cell.
    pub runs: usize,
    /// Seconds each publisher publishes per run.
    pub duration_s: f64,
    /// Cores online.
    pub cores: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg when the run started and ended.
    pub loadavg_start: String,
    /// See `loadavg_start`.
    pub loadavg_end: String,
    /// Mean whole-machine busy fraction over all measured windows.
    pub mean_machine_busy: f64,
    /// Component versions, as given by `bench/run`.
    pub versions: Vec<(String, String)>,
    /// The command line.
    pub command: String,
    /// Notes (skipped systems and why).
    pub notes: Vec<String>,
}

/// Everything a run produced: the JSON file is this, serialized.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Machine and run facts.
    pub meta: Meta,
    /// Systems measured.
    pub systems: Vec<SystemInfo>,
    /// Every fanout run (A, B, C), raw.
    pub fanout: Vec<FanoutRun>,
    /// Scenario D.
    pub connections: Vec<ConnRun>,
    /// Scenario S: the sustainable rate per system and cell.
    pub sustained: Vec<SustainedRun>,
    /// Per-cell medians.
    pub summary: Vec<CellSummary>,
    /// Target ratios.
    pub targets: Vec<Target>,
}

/// Median and spread of one cell for one system.
#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    /// System id.
    pub system: String,
    /// The cell.
    pub cell: Cell,
    /// Runs that completed.
    pub runs: usize,
    /// Errors of runs that did not.
    pub errors: Vec<String>,
    /// Published msgs/s.
    pub published_rate: Option<Spread>,
    /// Delivered msgs/s (fast subscribers).
    pub delivered_rate: Option<Spread>,
    /// Delivered msgs/s of the slowest / fastest fast subscriber (medians).
    pub per_sub_min_rate: Option<f64>,
    /// See `per_sub_min_rate`.
    pub per_sub_max_rate: Option<f64>,
    /// Delivered per server CPU second.
    pub efficiency: Option<Spread>,
    /// Server CPU as a fraction of one core over the window (median).
    pub server_cores: Option<f64>,
    /// Generator CPU as a fraction of one core (median).
    pub harness_cores: Option<f64>,
    /// Machine busy fraction (median).
    pub machine_busy: Option<f64>,
    /// p50/p90/p99/p99.9/max in µs (medians over runs).
    pub p50_us: Option<f64>,
    /// See `p50_us`.
    pub p90_us: Option<f64>,
    /// See `p50_us`.
    pub p99_us: Option<Spread>,
    /// See `p50_us`.
    pub p999_us: Option<f64>,
    /// See `p50_us`.
    pub max_us: Option<f64>,
    /// Loss accounting summed over all runs.
    pub loss: LossCounts,
    /// Disconnected fast subscribers, summed over runs.
    pub disconnects: u64,
    /// Client-library drop signals, summed over runs.
    pub client_drop_events: u64,
    /// Runs flagged generator-limited.
    pub generator_limited_runs: usize,
    /// Scenario C: the slow subscriber's accounting, summed over runs.
    pub slow_loss: LossCounts,
}

fn med(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    Spread::of(v).map(|s| s.median)
}

/// Groups runs by (cell, system) and takes medians; within a cell, systems
/// come in [`SystemKind`] order.
pub fn summarize(runs: &[FanoutRun]) -> Vec<CellSummary> {
    let mut groups: BTreeMap<(Cell, usize, String), Vec<&FanoutRun>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((
                r.cell.clone(),
                SystemKind::rank(&r.system),
                r.system.clone(),
            ))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((cell, _, system), rs)| {
            let ok: Vec<&FanoutRun> = rs.iter().copied().filter(|r| r.error.is_none()).collect();
            let mut loss = LossCounts::default();
            for r in &ok {
                loss.add(&r.loss);
            }
            let per_core = |f: fn(&FanoutRun) -> Option<f64>| {
                med(ok
                    .iter()
                    .filter_map(|r| f(r).map(|c| c / r.window_s.max(1e-9))))
            };
            CellSummary {
                system,
                cell,
                runs: ok.len(),
                errors: rs.iter().filter_map(|r| r.error.clone()).collect(),
                published_rate: Spread::of(ok.iter().map(|r| r.published_rate)),
                delivered_rate: Spread::of(ok.iter().map(|r| r.delivered_rate)),
                per_sub_min_rate: med(ok.iter().map(|r| r.per_sub_min_rate)),
                per_sub_max_rate: med(ok.iter().map(|r| r.per_sub_max_rate)),
                efficiency: Spread::of(ok.iter().filter_map(|r| r.efficiency)),
                server_cores: per_core(|r| r.cpu.server_cpu_s),
                harness_cores: per_core(|r| Some(r.cpu.harness_cpu_s)),
                machine_busy: med(ok.iter().map(|r| r.cpu.machine_busy)),
                p50_us: med(ok.iter().map(|r| r.latency.p50_us)),
                p90_us: med(ok.iter().map(|r| r.latency.p90_us)),
                p99_us: Spread::of(ok.iter().map(|r| r.latency.p99_us)),
                p999_us: med(ok.iter().map(|r| r.latency.p999_us)),
                max_us: med(ok.iter().map(|r| r.latency.max_us)),
                loss,
                disconnects: ok.iter().map(|r| r.disconnects).sum(),
                client_drop_events: ok.iter().map(|r| r.client_drop_events).sum(),
                generator_limited_runs: ok.iter().filter(|r| r.generator_limited).count(),
                slow_loss: ok.iter().filter_map(|r| r.slow.as_ref()).fold(
                    LossCounts::default(),
                    |mut acc, s| {
                        acc.add(&s.loss);
                        acc
                    },
                ),
            }
        })
        .collect()
}

/// One target of issue 7 and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The goal, e.g. ">= 1.5".
    pub goal: String,
    /// Measured value (ratio or absolute), if both sides were measured.
    pub measured: Option<f64>,
    /// Whether the goal was met.
    pub met: Option<bool>,
}

fn find<'a>(
    s: &'a [CellSummary],
    system: &str,
    f: impl Fn(&Cell) -> bool,
) -> Option<&'a CellSummary> {
    s.iter()
        .find(|c| c.system == system && f(&c.cell) && c.runs > 0)
}

fn rate_label(rate: Option<u64>) -> String {
    rate.map_or("full speed".into(), |r| format!("{} msgs/s", si(r as f64)))
}

fn fast_subs(c: &Cell) -> f64 {
    (c.subscribers - usize::from(c.slow)).max(1) as f64
}

/// Computes the target ratios from the summaries.
pub fn targets(s: &[CellSummary], conns: &[ConnRun]) -> Vec<Target> {
    let mut out = Vec::new();
    let a100 = |c: &Cell| c.scenario == "A" && c.subscribers == 100 && c.payload == 64;
    let b10 = |c: &Cell| c.scenario == "B" && c.subscribers == 10;
    let ratio = |what: String, goal: &str, min: f64, a: Option<f64>, b: Option<f64>| {
        let measured = a.zip(b).map(|(a, b)| a / b);
        Target {
            what,
            goal: goal.into(),
            measured,
            met: measured.map(|m| m >= min),
        }
    };
    let lap_a = find(s, "lapwing-quic", a100);
    for (peer, goal, min) in [
        ("nats-tls", ">= 1.5", 1.5),
        ("nats", ">= 1.0", 1.0),
        ("redis", ">= 2.0", 2.0),
    ] {
        out.push(ratio(
            format!("A N=100 64 B: delivered/s lapwing-quic / {peer}"),
            goal,
            min,
            lap_a.and_then(|c| c.delivered_rate).map(|x| x.median),
            find(s, peer, a100)
                .and_then(|c| c.delivered_rate)
                .map(|x| x.median),
        ));
    }
    out.push(ratio(
        "A N=100 64 B: efficiency (delivered per server CPU-s) lapwing-quic / nats-tls".into(),
        ">= 1.5",
        1.5,
        lap_a.and_then(|c| c.efficiency).map(|x| x.median),
        find(s, "nats-tls", a100)
            .and_then(|c| c.efficiency)
            .map(|x| x.median),
    ));
    // Lower is better: nats-tls p99 / lapwing p99 >= 1.
    out.push(ratio(
        "B N=10 10k msgs/s: p99 nats-tls / lapwing-quic (>= 1 means Lapwing's p99 is not worse)"
            .into(),
        ">= 1.0",
        1.0,
        find(s, "nats-tls", b10)
            .and_then(|c| c.p99_us)
            .map(|x| x.median),
        find(s, "lapwing-quic", b10)
            .and_then(|c| c.p99_us)
            .map(|x| x.median),
    ));
    for c in s.iter().filter(|c| c.cell.slow && c.runs > 0) {
        let base = find(s, &c.system, |b| {
            !b.slow
                && b.subscribers == c.cell.subscribers
                && b.payload == c.cell.payload
                && b.rate == c.cell.rate
        });
        let per_sub = |x: &CellSummary| x.delivered_rate.map(|d| d.median / fast_subs(&x.cell));
        out.push(ratio(
            format!(
                "{} N={}: {} fast subscribers' per-subscriber delivered/s vs no slow consumer",
                c.cell.scenario, c.cell.subscribers, c.system
            ),
            ">= 0.9",
            0.9,
            per_sub(c),
            base.and_then(per_sub),
        ));
        // Both Lapwing edges promise the same accounting.
        if [SystemKind::LapwingQuic, SystemKind::LapwingGrpc]
            .iter()
            .any(|k| k.id() == c.system)
        {
            let l = &c.slow_loss;
            // After the catch-up every published seq must be delivered or
            // announced: a gap, a wrong count or a message still missing
            // all count against the contract.
            let wrong =
                l.resync_mismatches + l.silent_missing + l.start_missing + l.undelivered_at_stop;
            out.push(Target {
                what: format!(
                    "{} N={} {} {}: slow lapwing subscriber told exactly what it missed: resync mismatches + silent gaps + unaccounted after catch-up ({} resyncs announced {} missed{})",
                    c.cell.scenario,
                    c.cell.subscribers,
                    rate_label(c.cell.rate),
                    c.system,
                    l.resyncs,
                    l.reported_missing,
                    if l.resyncs == 0 { "; never lapped, so not exercised" } else { "" }
                ),
                goal: "0".into(),
                measured: Some(wrong as f64),
                met: (l.resyncs > 0).then_some(wrong == 0),
            });
        }
    }
    for d in conns.iter().filter(|d| d.system == "lapwing-quic") {
        out.push(Target {
            what: format!("D: idle QUIC connections established (target {})", d.target),
            goal: ">= 10000".into(),
            measured: Some(d.established as f64),
            met: Some(d.established >= 10_000),
        });
        out.push(Target {
            what: "D: server RSS with those connections (MiB)".into(),
            goal: "< 1024".into(),
            measured: d.rss_after.map(|b| b as f64 / (1024.0 * 1024.0)),
            met: d.rss_after.map(|b| b < 1 << 30),
        });
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

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "–".into(), f)
}

fn us(x: Option<f64>) -> String {
    opt(x, |v| {
        if v >= 10_000.0 {
            format!("{:.1} ms", v / 1000.0)
        } else {
            format!("{v:.0} µs")
        }
    })
}

fn pct(x: Option<f64>) -> String {
    opt(x, |v| format!("{:.0} %", v * 100.0))
}

fn loss_cell(l: &LossCounts) -> String {
    format!(
        "{} / {} / {} / {}",
        l.silent_total(),
        l.reported_missing,
        l.duplicates,
        l.reorders
    )
}

fn backlog_cell(l: &LossCounts) -> String {
    if l.delivered + l.undelivered_at_stop == 0 {
        return "–".into();
    }
    format!(
        "{:.1} %",
        100.0 * l.undelivered_at_stop as f64 / (l.delivered + l.undelivered_at_stop) as f64
    )
}

/// Renders the markdown tables.
pub fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let m = &r.meta;
    let _ = writeln!(md, "# Lapwing bench results ({} mode)\n", m.mode);
    let _ = writeln!(md, "- command: `{}`", m.command);
    let _ = writeln!(
        md,
        "- machine: {} cores, {}, Linux {}",
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
        "- runs per cell: {}, publish time per run: {:.1} s",
        m.runs, m.duration_s
    );
    for (k, v) in &m.versions {
        let _ = writeln!(md, "- {k}: {v}");
    }
    for n in &m.notes {
        let _ = writeln!(md, "- note: {n}");
    }
    let _ = writeln!(
        md,
        "\n| system | transport | encrypted | client library |\n|---|---|---|---|"
    );
    for s in &r.systems {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            s.id,
            s.transport,
            if s.tls { "yes" } else { "no" },
            s.client
        );
    }

    let _ = writeln!(
        md,
        "\n## Targets\n\n| target | goal | measured | met |\n|---|---|---|---|"
    );
    for t in &r.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            opt(t.measured, |v| format!("{v:.2}")),
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "see C table",
            }
        );
    }

    let _ = writeln!(
        md,
        "\n## A: fanout throughput (1 publisher, full speed)\n\n\
         Rates are medians over runs, (min–max) in brackets. Loss columns: silent / reported (resync) / duplicates / reorders, summed over runs and subscribers; \"not delivered at stop\" is the share of messages still on their way when the drain wait ended (queued, not lost). \
         CPU columns are cores used over the measured window. GL = runs where the machine was ≥ 90 % busy and the generator used at least as much CPU as the server.\n\n\
         | N | payload | system | published/s | delivered/s | per-sub min–max | delivered per server CPU-s | server cores | generator cores | machine busy | loss s/r/d/o | not delivered at stop | disconnects | GL |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in r.summary.iter().filter(|c| c.cell.scenario == "A") {
        let _ = writeln!(
            md,
            "| {} | {} B | {} | {} | {} | {}–{} | {} | {} | {} | {} | {} | {} | {} | {}/{} |{}",
            c.cell.subscribers,
            c.cell.payload,
            c.system,
            spread(c.published_rate),
            spread(c.delivered_rate),
            opt(c.per_sub_min_rate, si),
            opt(c.per_sub_max_rate, si),
            spread(c.efficiency),
            opt(c.server_cores, |v| format!("{v:.2}")),
            opt(c.harness_cores, |v| format!("{v:.2}")),
            pct(c.machine_busy),
            loss_cell(&c.loss),
            backlog_cell(&c.loss),
            c.disconnects,
            c.generator_limited_runs,
            c.runs,
            errors_note(c),
        );
    }

    let _ = writeln!(
        md,
        "\n## B: latency at a fixed rate (publish-to-deliver, one clock)\n\n\
         | N | rate | system | p50 | p90 | p99 (min–max) | p99.9 | max | delivered/s | server cores | loss s/r/d/o |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in r.summary.iter().filter(|c| c.cell.scenario == "B") {
        let p99 = c.p99_us.map_or("–".into(), |s| {
            format!(
                "{} ({}–{})",
                us(Some(s.median)),
                us(Some(s.min)),
                us(Some(s.max))
            )
        });
        let _ = writeln!(
            md,
            "| {} | {}/s | {} | {} | {} | {} | {} | {} | {} | {} | {} |{}",
            c.cell.subscribers,
            si(c.cell.rate.unwrap_or(0) as f64),
            c.system,
            us(c.p50_us),
            us(c.p90_us),
            p99,
            us(c.p999_us),
            us(c.max_us),
            spread(c.delivered_rate),
            opt(c.server_cores, |v| format!("{v:.2}")),
            loss_cell(&c.loss),
            errors_note(c),
        );
    }

    let _ = writeln!(
        md,
        "\n## C: one slow subscriber (reads one message per slow delay) among N\n\n\
         Fast = the other N−1 subscribers, compared per subscriber with the same cell without a slow one. \
         After the publish window the slow subscriber catches up at full speed (longest catch-up shown); \
         \"in window\" is what it had read at 1 % speed when publishing stopped. Sums over runs.\n\n\
         | cell | system | fast delivered/s per sub | vs no slow one | fast p99 | fast loss s/r/d/o | slow: delivered (in window) | slow: told missed (resyncs) | slow: silent loss | slow: resync mismatches | slow: disconnects / client drops | slow: stream end | slow: catch-up | slow: unaccounted after it |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in r.summary.iter().filter(|c| c.cell.slow) {
        let base = find(&r.summary, &c.system, |b| {
            !b.slow
                && b.subscribers == c.cell.subscribers
                && b.payload == c.cell.payload
                && b.rate == c.cell.rate
        });
        let per = |x: &CellSummary| x.delivered_rate.map(|d| d.median / fast_subs(&x.cell));
        let vs = per(c).zip(base.and_then(per)).map(|(a, b)| a / b);
        let slows: Vec<_> = r
            .fanout
            .iter()
            .filter(|f| f.system == c.system && f.cell == c.cell)
            .filter_map(|f| f.slow.clone())
            .collect();
        let sum = |f: fn(&crate::scenario::SlowReport) -> u64| slows.iter().map(f).sum::<u64>();
        let ends: Vec<String> = slows.iter().filter_map(|s| s.closed.clone()).collect();
        let _ =
            writeln!(
            md,
            "| {} N={} {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {} / {} | {} | {:.1} s | {} |",
            c.cell.scenario,
            c.cell.subscribers,
            c.cell.rate.map_or("full speed".into(), |r| format!("{}/s", si(r as f64))),
            c.system,
            opt(per(c), si),
            pct(vs),
            us(c.p99_us.map(|s| s.median)),
            loss_cell(&c.loss),
            sum(|s| s.loss.delivered),
            sum(|s| s.delivered_in_window),
            sum(|s| s.loss.reported_missing),
            sum(|s| s.loss.resyncs),
            sum(|s| s.loss.silent_missing + s.loss.start_missing),
            sum(|s| s.loss.resync_mismatches),
            sum(|s| s.disconnects),
            sum(|s| s.client_drop_events),
            if ends.is_empty() { "stayed open".into() } else { ends.join("; ") },
            slows.iter().map(|s| s.catch_up_s).fold(0.0, f64::max),
            sum(|s| s.unaccounted_at_stop),
        );
    }

    if !r.connections.is_empty() {
        let _ = writeln!(
            md,
            "\n## D: idle subscribed connections\n\n\
             | system | target | established | connect time | server RSS before → after | RSS per connection | received a test message | open-file limit | stopped by |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for d in &r.connections {
            let mib =
                |b: Option<u64>| opt(b.map(|b| b as f64), |v| format!("{:.0} MiB", v / 1048576.0));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} s | {} → {} | {} | {} | {} | {} |",
                d.system,
                d.target,
                d.established,
                d.connect_s,
                mib(d.rss_before),
                mib(d.rss_after),
                opt(d.rss_per_conn, |v| format!("{:.1} KiB", v / 1024.0)),
                d.live,
                d.fd_limit.map_or("–".into(), |v| v.to_string()),
                d.limited_by
                    .clone()
                    .unwrap_or_else(|| "reached target".into()),
            );
        }
    }
    sustained_section(&mut md, &r.sustained);
    md
}

/// Scenario S: one row per cell and system, with the ratio to NATS-TLS and
/// NATS in the same cell.
fn sustained_section(md: &mut String, runs: &[SustainedRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## S: sustainable rate (highest fixed publish rate at which every subscriber receives 100 %)\n\n\
         A probe passes when every subscriber received every message (no resync, no silent loss, no disconnect), \
         the publisher kept 95 % of the rate, and every subscriber had everything within 1 s of the last publish. \
         The rate doubles from 1 000 msgs/s while probes pass, then bisects.\n\n\
         | N | payload | system | sustained msgs/s | ÷ NATS-TLS | ÷ NATS | probes (rate: ok/fail) |\n\
         |---|---|---|---|---|---|---|"
    );
    let rate_of = |sys: &str, s: &SustainedRun| {
        runs.iter()
            .find(|o| o.system == sys && o.subscribers == s.subscribers && o.payload == s.payload)
            .map(|o| o.sustained_rate)
    };
    let ratio = |a: u64, b: Option<u64>| match b {
        Some(b) if b > 0 => format!("{:.2}", a as f64 / b as f64),
        _ => "–".into(),
    };
    for s in runs {
        let probes: Vec<String> = s
            .probes
            .iter()
            .map(|p| format!("{}: {}", p.rate, if p.ok { "ok" } else { "fail" }))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} B | {} | {} | {} | {} | {} |",
            s.subscribers,
            s.payload,
            s.system,
            s.sustained_rate,
            ratio(s.sustained_rate, rate_of("nats-tls", s)),
            ratio(s.sustained_rate, rate_of("nats", s)),
            probes.join(", ")
        );
    }
}

fn errors_note(c: &CellSummary) -> String {
    if c.errors.is_empty() {
        String::new()
    } else {
        format!(" errors: {}", c.errors.join("; ").replace('|', "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuUsage;
    use crate::scenario::Latency;

    fn run(system: &str, scenario: &str, n: usize, rate: f64, p99: f64) -> FanoutRun {
        FanoutRun {
            system: system.into(),
            cell: Cell {
                scenario: scenario.into(),
                subscribers: n,
                payload: 64,
                rate: (scenario == "B").then_some(10_000),
                slow: false,
            },
            run: 0,
            error: None,
            setup_s: 0.1,
            published: 10,
            published_rate: rate / n as f64,
            delivered: 10,
            delivered_rate: rate,
            per_sub_min_rate: rate / n as f64,
            per_sub_max_rate: rate / n as f64,
            loss: LossCounts::default(),
            disconnects: 0,
            client_drop_events: 0,
            latency: Latency {
                p99_us: p99,
                ..Default::default()
            },
            cpu: CpuUsage {
                server_cpu_s: Some(1.0),
                harness_cpu_s: 1.0,
                machine_busy: 0.5,
                processes_cpu_s: Vec::new(),
            },
            window_s: 1.0,
            efficiency: Some(rate),
            generator_limited: false,
            slow: None,
        }
    }

    #[test]
    fn targets_are_ratios_of_medians() {
        let runs = vec![
            run("lapwing-quic", "A", 100, 3e6, 0.0),
            run("lapwing-quic", "A", 100, 1e6, 0.0),
            run("lapwing-quic", "A", 100, 2e6, 0.0),
            run("nats-tls", "A", 100, 1e6, 0.0),
            run("lapwing-quic", "B", 10, 1e4, 400.0),
            run("nats-tls", "B", 10, 1e4, 800.0),
        ];
        let s = summarize(&runs);
        let t = targets(&s, &[]);
        assert_eq!(t[0].measured, Some(2.0));
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].measured, None, "nats plaintext not measured");
        let b = t.iter().find(|t| t.what.starts_with("B N=10")).unwrap();
        assert_eq!(b.measured, Some(2.0));
        let md = markdown(&Report {
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
            systems: vec![],
            fanout: runs,
            connections: vec![],
            sustained: vec![
                sustained("lapwing-quic", 64_000, &[(64_000, true), (128_000, false)]),
                sustained("nats-tls", 32_000, &[(32_000, true), (64_000, false)]),
            ],
            summary: s,
            targets: t,
        });
        assert!(md.contains("| 100 | 64 B | lapwing-quic |"));
        assert!(md.contains("2.00 M (1.00 M–3.00 M)"));
        assert!(
            md.contains(
                "| 10 | 64 B | lapwing-quic | 64000 | 2.00 | – | 64000: ok, 128000: fail |"
            ),
            "{md}"
        );
    }

    fn sustained(system: &str, rate: u64, probes: &[(u64, bool)]) -> SustainedRun {
        SustainedRun {
            system: system.into(),
            subscribers: 10,
            payload: 64,
            sustained_rate: rate,
            probes: probes
                .iter()
                .map(|&(rate, ok)| crate::scenario::Probe {
                    rate,
                    published_rate: rate as f64,
                    delivered_fraction: if ok { 1.0 } else { 0.5 },
                    lost: 0,
                    drain_s: 0.1,
                    ok,
                    error: None,
                })
                .collect(),
        }
    }

    #[test]
    fn systems_listed_in_kind_order_within_a_cell() {
        let runs = vec![
            run("redis", "A", 10, 1e5, 0.0),
            run("lapwing-grpc", "A", 10, 1e5, 0.0),
            run("nats", "A", 10, 1e5, 0.0),
            run("lapwing-quic", "A", 10, 1e5, 0.0),
        ];
        let order: Vec<String> = summarize(&runs).into_iter().map(|c| c.system).collect();
        assert_eq!(order, ["lapwing-quic", "lapwing-grpc", "nats", "redis"]);
    }
}
