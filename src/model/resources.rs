//! What an agent uses: memory, CPU time and rate, tasks. From systemd's accounting where the
//! manager has it (cgroup v2 with the controllers delegated), else summed over the processes of
//! the unit's control group from `/proc` (hosts with cgroup v1 controllers); the answer says
//! which. Pure: the shell reads the properties and `/proc` and passes them in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// systemd's "not set" for the accounting properties (`[not set]` in `systemctl show`).
pub const NOT_SET: u64 = u64::MAX;

/// Where the figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// systemd's accounting (`MemoryCurrent`, `CPUUsageNSec`, `TasksCurrent`).
    Systemd,
    /// The sum over the processes of the unit's control group, read from `/proc`.
    Proc,
    /// Some figures from systemd, the others from `/proc`.
    Mixed,
}

/// An agent's resource use at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub source: Source,
    /// Memory in use, bytes (systemd: the cgroup's; `/proc`: the sum of VmRSS).
    pub memory_bytes: Option<u64>,
    /// CPU time used since the run started, ns.
    pub cpu_ns: Option<u64>,
    /// CPU rate in percent of one CPU: `top` from one refresh to the next; `show` and
    /// `list -o wide` the average since the run started.
    pub cpu_percent: Option<f64>,
    /// Tasks (threads) in the control group.
    pub tasks: Option<u64>,
    /// Processes the figures from `/proc` were summed over (null for systemd's alone).
    pub processes: Option<u32>,
}

/// systemd's accounting properties as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    pub memory_current: u64,
    pub cpu_usage_nsec: u64,
    pub tasks_current: u64,
}

/// The sum over a control group's processes, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSum {
    pub rss_bytes: u64,
    pub cpu_ns: u64,
    pub threads: u64,
    pub processes: u32,
}

/// One process's `VmRSS` (bytes) and `Threads` from `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(':')?.trim();
            v.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    (field("VmRSS").map(|kb| kb * 1024), field("Threads"))
}

/// `utime + stime` in clock ticks from `/proc/<pid>/stat` (fields 14 and 15, counted after the
/// command's closing parenthesis, which may itself hold spaces and parentheses).
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some(utime + stime)
}

/// systemd's figures where it has them, the `/proc` sum for the rest; `cpu_percent` the
/// average over `run_ms` (the time since the run started), when known.
pub fn combine(acct: Option<Accounting>, proc_sum: Option<ProcSum>, run_ms: Option<u64>) -> Resources {
    let set = |v: u64| (v != NOT_SET).then_some(v);
    let a = acct.unwrap_or(Accounting { memory_current: NOT_SET, cpu_usage_nsec: NOT_SET, tasks_current: NOT_SET });
    let (mem_s, cpu_s, tasks_s) = (set(a.memory_current), set(a.cpu_usage_nsec), set(a.tasks_current));
    let from_systemd = [mem_s.is_some(), cpu_s.is_some(), tasks_s.is_some()];
    let p = proc_sum;
    let memory_bytes = mem_s.or(p.map(|p| p.rss_bytes));
    let cpu_ns = cpu_s.or(p.map(|p| p.cpu_ns));
    let tasks = tasks_s.or(p.map(|p| p.threads));
    let source = match from_systemd {
        [true, true, true] => Source::Systemd,
        [false, false, false] => Source::Proc,
        _ => Source::Mixed,
    };
    let processes = if source == Source::Systemd { None } else { p.map(|p| p.processes) };
    let cpu_percent = match (cpu_ns, run_ms) {
        (Some(ns), Some(ms)) if ms > 0 => Some(round2(ns as f64 / 1e6 / ms as f64 * 100.0)),
        _ => None,
    };
    Resources { source, memory_bytes, cpu_ns, cpu_percent, tasks, processes }
}

/// CPU percent of one CPU between two samples `elapsed_ms` apart.
pub fn rate(before_ns: u64, after_ns: u64, elapsed_ms: u64) -> Option<f64> {
    (elapsed_ms > 0 && after_ns >= before_ns)
        .then(|| round2((after_ns - before_ns) as f64 / 1e6 / elapsed_ms as f64 * 100.0))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `1.5G`, `312.0M`, `48K`, `512B` (base 1024).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat() {
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status(status), (Some(2048 * 1024), Some(3)));
        let stat = "123 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(200));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn systemd_first_then_proc_and_the_source_says_which() {
        let acct = Accounting { memory_current: 100, cpu_usage_nsec: 2_000_000_000, tasks_current: 4 };
        let sum = ProcSum { rss_bytes: 7, cpu_ns: 9, threads: 1, processes: 1 };
        let r = combine(Some(acct), Some(sum), Some(10_000));
        assert_eq!((r.source, r.memory_bytes, r.tasks, r.processes), (Source::Systemd, Some(100), Some(4), None));
        assert_eq!(r.cpu_percent, Some(20.0));
        let unset = Accounting { memory_current: NOT_SET, cpu_usage_nsec: NOT_SET, tasks_current: NOT_SET };
        let r = combine(Some(unset), Some(sum), None);
        assert_eq!((r.source, r.memory_bytes, r.cpu_ns, r.processes), (Source::Proc, Some(7), Some(9), Some(1)));
        let half = Accounting { tasks_current: 2, ..unset };
        assert_eq!(combine(Some(half), Some(sum), None).source, Source::Mixed);
    }

    #[test]
    fn rates_and_sizes() {
        assert_eq!(rate(0, 500_000_000, 1000), Some(50.0));
        assert_eq!(rate(5, 1, 1000), None);
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5M");
    }
}
