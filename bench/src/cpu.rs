//! CPU bookkeeping from /proc: a server's CPU seconds (`/proc/<pid>/stat`),
//! this process's (`/proc/self/stat`), the machine's busy fraction
//! (`/proc/stat`) and a server's resident memory (`/proc/<pid>/status`).
//! On a 2-core machine the generator competes with the server, so every
//! rate is reported next to who used the CPU.

use std::fs;

use serde::Serialize;

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on Linux x86-64 and arm64).
pub const CLK_TCK: f64 = 100.0;

/// CPU seconds (user + system) used so far by `pid` ("self" for this process).
pub fn process_cpu_secs(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Machine-wide CPU counters (all cores) from /proc/stat, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    busy: u64,
    total: u64,
}

impl MachineTicks {
    /// Reads the aggregate `cpu` line.
    pub fn now() -> MachineTicks {
        let text = fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineTicks::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        // idle + iowait are not busy.
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        MachineTicks {
            busy: total - idle,
            total,
        }
    }

    /// Fraction of all cores busy between `self` and `later` (0..=1).
    pub fn busy_fraction_until(&self, later: &MachineTicks) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// Number of online cores (from /proc/stat's cpuN lines).
pub fn cores() -> usize {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
        .max(1)
}

/// A snapshot to diff: server CPU (one process, or several summed: a
/// cluster's nodes and its backbone), own CPU, machine ticks.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    server: Option<f64>,
    /// Each server process's CPU seconds, when there is more than one.
    processes: Vec<Option<f64>>,
    harness: Option<f64>,
    machine: MachineTicks,
}

/// CPU used over an interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUsage {
    /// Server process CPU seconds (user + system); `None` without a pid.
    pub server_cpu_s: Option<f64>,
    /// This load generator's CPU seconds.
    pub harness_cpu_s: f64,
    /// Fraction of all cores busy, whole machine (0..=1).
    pub machine_busy: f64,
    /// With several server processes (a cluster): each one's CPU seconds,
    /// in the order their pids were given; `server_cpu_s` is their sum.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes_cpu_s: Vec<Option<f64>>,
}

impl CpuSnapshot {
    /// Takes a snapshot; `server_pid` is the server being measured.
    pub fn take(server_pid: Option<u32>) -> CpuSnapshot {
        CpuSnapshot::take_all(&server_pid.into_iter().collect::<Vec<_>>())
    }

    /// Takes a snapshot of several server processes (their CPU is summed;
    /// unknown when any of them cannot be read).
    pub fn take_all(server_pids: &[u32]) -> CpuSnapshot {
        let each: Vec<Option<f64>> = server_pids
            .iter()
            .map(|p| process_cpu_secs(&p.to_string()))
            .collect();
        let server = if each.is_empty() {
            None
        } else {
            each.iter().copied().sum::<Option<f64>>()
        };
        CpuSnapshot {
            server,
            processes: if each.len() > 1 { each } else { Vec::new() },
            harness: process_cpu_secs("self"),
            machine: MachineTicks::now(),
        }
    }

    /// Usage from `self` to `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUsage {
        CpuUsage {
            server_cpu_s: match (self.server, later.server) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            harness_cpu_s: match (self.harness, later.harness) {
                (Some(a), Some(b)) => b - a,
                _ => 0.0,
            },
            machine_busy: self.machine.busy_fraction_until(&later.machine),
            processes_cpu_s: self
                .processes
                .iter()
                .zip(&later.processes)
                .map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        assert!(process_cpu_secs("self").is_some());
        assert!(rss_bytes("self").unwrap() > 0);
        assert!(cores() >= 1);
        let a = MachineTicks::now();
        let b = MachineTicks::now();
        let f = a.busy_fraction_until(&b);
        assert!((0.0..=1.0).contains(&f));
    }

    #[test]
    fn several_processes_are_summed_and_kept_apart() {
        let me = std::process::id();
        let one = CpuSnapshot::take(Some(me));
        assert!(one.processes.is_empty());
        let two = CpuSnapshot::take_all(&[me, me]);
        let (a, b) = (two.processes[0].unwrap(), two.processes[1].unwrap());
        assert!((two.server.unwrap() - (a + b)).abs() < 0.05);
        let usage = two.until(&CpuSnapshot::take_all(&[me, me]));
        assert_eq!(usage.processes_cpu_s.len(), 2);
        // A pid that cannot be read makes the sum unknown, not smaller.
        assert!(CpuSnapshot::take_all(&[me, u32::MAX]).server.is_none());
    }
}
