//! Spawn admission: how many spawns may be starting at once, and whether the host has room for
//! one more (usable memory, load per CPU, memory pressure). The orchestrator's gate
//! (`host-admission.ts`: 2 slots, 512 MB usable, load ≤ 4 per CPU, 60 s queue), with the kernel's
//! pressure stall information as one more reason to hold a spawn back. Pure: the shell reads
//! `/proc` and the clock and passes the facts in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The orchestrator's defaults.
pub const DEFAULT_MAX_CONCURRENT_SPAWNS: u32 = 2;
pub const DEFAULT_MIN_FREE_MEM_MB: u64 = 512;
pub const DEFAULT_MAX_LOAD_PER_CPU: f64 = 4.0;
pub const DEFAULT_MAX_WAIT_MS: u64 = 60_000;
pub const DEFAULT_POLL_MS: u64 = 2_000;
/// `full avg10` of `/proc/pressure/memory` above this (percent of the last 10 s in which every
/// non-idle task stalled on memory) holds spawns back: the host is thrashing, whatever
/// `MemAvailable` says.
pub const DEFAULT_MAX_MEMORY_PRESSURE: f64 = 10.0;
/// At most this many slots: more is no gate at all.
pub const MAX_CONCURRENT_SPAWNS_LIMIT: u32 = 256;

/// The orchestrator's marker for a spawn that waited out its queue (`HOST_HEADROOM_TIMEOUT_REASON`).
pub const HOST_HEADROOM_TIMEOUT: &str = "host-headroom-timeout";
/// Ours for a spawn that waited out its queue behind busy slots or earlier spawns.
pub const SPAWN_SLOTS_TIMEOUT: &str = "spawn-slots-timeout";

/// The gate's settings (config keys and the orchestrator's environment variables).
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    pub max_concurrent_spawns: u32,
    pub min_free_mem_mb: u64,
    pub max_load_per_cpu: f64,
    pub max_memory_pressure: f64,
    pub max_wait_ms: u64,
    pub poll_ms: u64,
    pub disabled: bool,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_concurrent_spawns: DEFAULT_MAX_CONCURRENT_SPAWNS,
            min_free_mem_mb: DEFAULT_MIN_FREE_MEM_MB,
            max_load_per_cpu: DEFAULT_MAX_LOAD_PER_CPU,
            max_memory_pressure: DEFAULT_MAX_MEMORY_PRESSURE,
            max_wait_ms: DEFAULT_MAX_WAIT_MS,
            poll_ms: DEFAULT_POLL_MS,
            disabled: false,
        }
    }
}

/// What the host offers now, as `/proc` says.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Headroom {
    /// `MemAvailable` (else `MemFree`), MiB.
    pub usable_mem_mb: u64,
    /// The 1-minute load average divided by the CPUs this process may run on.
    pub load_per_cpu: f64,
    /// `full avg10` of `/proc/pressure/memory`; `None` where the kernel has no PSI.
    pub memory_pressure: Option<f64>,
}

/// Whether one more spawn fits; `Err` is the reason it does not (the orchestrator's wording).
pub fn check(h: &Headroom, cfg: &AdmissionConfig) -> Result<(), String> {
    if h.usable_mem_mb < cfg.min_free_mem_mb {
        return Err(format!(
            "usable memory {}MB is below the {}MB minimum required to admit another agent",
            h.usable_mem_mb, cfg.min_free_mem_mb
        ));
    }
    if h.load_per_cpu > cfg.max_load_per_cpu {
        return Err(format!(
            "load average {:.2} per CPU exceeds the {} max allowed to admit another agent",
            h.load_per_cpu, cfg.max_load_per_cpu
        ));
    }
    if let Some(p) = h.memory_pressure.filter(|p| *p > cfg.max_memory_pressure) {
        return Err(format!(
            "memory pressure {p:.2}% (full avg10) exceeds the {}% max allowed to admit another agent",
            cfg.max_memory_pressure
        ));
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo` in MiB (kernels before 3.14: `MemFree`).
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb = rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
            Some(kb / 1024)
        })
    };
    field("MemAvailable").or_else(|| field("MemFree"))
}

/// The 1-minute load average of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// `full avg10` of `/proc/pressure/memory` (`some …` then `full avg10=0.00 avg60=… total=…`).
pub fn parse_memory_pressure(text: &str) -> Option<f64> {
    let full = text.lines().find(|l| l.starts_with("full "))?;
    full.split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// What a waiting spawn writes about itself, for `list` and `watch` to show it queued. Its file
/// name orders the queue (`<queuedAt, 13 digits>-<random>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub unit: String,
    pub description: String,
    pub cwd: String,
    /// The agent's metadata as its unit will carry it (`LogExtraFields`).
    pub log_extra_fields: Vec<String>,
    pub queued_at: u64,
    pub max_wait_ms: u64,
    pub reason: String,
}

/// A queued spawn as `list` and `watch` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    /// 1 for the next spawn to be admitted.
    pub position: u32,
    /// Why it waits: busy slots, earlier spawns, or the host's headroom.
    pub reason: String,
    /// When it started waiting, ms since the epoch.
    pub queued_at: u64,
    /// When it gives up: `queuedAt + maxWaitMs`.
    pub max_wait_ms: u64,
}

/// The file name of a ticket queued at `now_ms`; names sort in queue order.
pub fn ticket_name(now_ms: u64, random_hex: &str) -> String {
    format!("{now_ms:013}-{random_hex}.json")
}

/// Whether a name found in the queue directory is a ticket's (anything else is ignored).
pub fn is_ticket_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".json") else { return false };
    let Some((time, random)) = stem.split_once('-') else { return false };
    time.len() == 13
        && time.bytes().all(|b| b.is_ascii_digit())
        && (1..=32).contains(&random.len())
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why a spawn waits now, ahead of the headroom check: earlier spawns, or every slot busy.
pub fn wait_reason(ahead: usize, slots: u32) -> String {
    if ahead > 0 {
        let s = if ahead == 1 { "" } else { "s" };
        format!("waiting behind {ahead} earlier spawn{s}")
    } else {
        let s = if slots == 1 { "" } else { "s" };
        format!("all {slots} spawn slot{s} busy")
    }
}

/// The error message of a spawn that waited `waited_ms` and was not admitted (the orchestrator's
/// `spawn rejected: host-headroom-timeout — …` for headroom).
pub fn timeout_message(headroom: bool, waited_ms: u64, reason: &str) -> String {
    if headroom {
        format!(
            "spawn rejected: {HOST_HEADROOM_TIMEOUT} — insufficient host headroom after waiting {waited_ms}ms ({reason}); nothing was started"
        )
    } else {
        format!("spawn rejected: {SPAWN_SLOTS_TIMEOUT} — not admitted after waiting {waited_ms}ms ({reason}); nothing was started")
    }
}

/// The error message of a `--no-wait` spawn that would have queued.
pub fn no_wait_message(reason: &str) -> String {
    format!("spawn not admitted now ({reason}) and --no-wait was given; nothing was started")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_prefers_available() {
        let t = "MemTotal:       24000000 kB\nMemFree:         1024000 kB\nMemAvailable:   2048000 kB\n";
        assert_eq!(parse_meminfo(t), Some(2000));
        assert_eq!(parse_meminfo("MemFree:  1048576 kB\n"), Some(1024));
        assert_eq!(parse_meminfo("MemAvailableX: 5 kB\nnonsense"), None);
        assert_eq!(parse_meminfo("MemAvailable: -5 kB"), None);
    }

    #[test]
    fn loadavg_and_pressure() {
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        assert_eq!(parse_loadavg("nan 1 1"), None);
        let psi = "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=1\n";
        assert_eq!(parse_memory_pressure(psi), Some(0.75));
        assert_eq!(parse_memory_pressure("some avg10=1.50\n"), None);
    }

    #[test]
    fn gate_reasons() {
        let cfg = AdmissionConfig::default();
        let ok = Headroom { usable_mem_mb: 4096, load_per_cpu: 0.5, memory_pressure: Some(0.0) };
        assert_eq!(check(&ok, &cfg), Ok(()));
        let low = Headroom { usable_mem_mb: 100, ..ok };
        assert_eq!(
            check(&low, &cfg).unwrap_err(),
            "usable memory 100MB is below the 512MB minimum required to admit another agent"
        );
        let busy = Headroom { load_per_cpu: 4.5, ..ok };
        assert!(check(&busy, &cfg).unwrap_err().starts_with("load average 4.50 per CPU exceeds the 4 max"));
        let thrash = Headroom { memory_pressure: Some(30.0), ..ok };
        assert!(check(&thrash, &cfg).unwrap_err().starts_with("memory pressure 30.00%"));
        assert_eq!(check(&Headroom { memory_pressure: None, ..ok }, &cfg), Ok(()));
    }

    #[test]
    fn ticket_names_sort_and_are_checked() {
        let a = ticket_name(1_700_000_000_000, "ab12");
        let b = ticket_name(1_700_000_000_001, "0000");
        assert!(a < b);
        assert!(is_ticket_name(&a));
        for bad in
            ["x.json", "1700000000000-zz.json", "../1700000000000-ab.json", "1700000000000-ab.json.tmp", "170-ab.json"]
        {
            assert!(!is_ticket_name(bad), "{bad}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(wait_reason(0, 2), "all 2 spawn slots busy");
        assert_eq!(wait_reason(1, 2), "waiting behind 1 earlier spawn");
        assert!(timeout_message(true, 60000, "r").starts_with("spawn rejected: host-headroom-timeout — "));
    }
}
