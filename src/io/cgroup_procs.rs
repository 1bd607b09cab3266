//! Resource use summed over a control group's processes from `/proc`, for hosts where the user
//! manager has no accounting (cgroup v1 controllers). Each file read is small and bounded; a
//! process that ends meanwhile is skipped.

use std::io::Read;

use crate::model::resources::{self, ProcSum};

const MAX_PROC_FILE: u64 = 64 * 1024;

fn read(path: &str) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path).ok()?.take(MAX_PROC_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The sum over `pids` (the unit's processes, as the manager lists them).
pub fn sum(pids: &[u32]) -> ProcSum {
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0).unwrap_or(100) as u64;
    let mut out = ProcSum::default();
    for pid in pids {
        let Some(status) = read(&format!("/proc/{pid}/status")) else { continue };
        let (rss, threads) = resources::parse_status(&status);
        let cpu = read(&format!("/proc/{pid}/stat")).as_deref().and_then(resources::parse_stat_ticks);
        out.rss_bytes += rss.unwrap_or(0);
        out.threads += threads.unwrap_or(1);
        out.cpu_ns += cpu.unwrap_or(0) * (1_000_000_000 / ticks);
        out.processes += 1;
    }
    out
}
