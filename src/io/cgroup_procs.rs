//! Resource use summed over a control group's processes from `/proc`, for hosts where the user
//! manager has no accounting (cgroup v1 controllers). Each file read is small and bounded; a
//! process that ends meanwhile is skipped.

use crate::io::host::read_proc as read;
use crate::model::resources::{self, ProcSum};

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
