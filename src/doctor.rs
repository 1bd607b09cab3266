//! `doctor`: what a host needs, as data. Facts gathered by [`probe`] go through the pure
//! [`evaluate`] into findings, each with its fix; no IO outside `probe`.

mod checks;
pub mod probe;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

pub use crate::io::systemd::ManagerInfo;

/// The reaper's timer and the agents' slice, as shipped in `units/`.
pub const REAP_TIMER: &str = "agent-relay-reap.timer";
pub const SLICE: &str = crate::model::naming::AGENT_SLICE;
/// Exit code of `doctor` when a required check fails and the manager itself is fine.
pub const EXIT_REQUIRED_MISSING: u8 = 8;

/// Everything `doctor` looked at. Plain data: tests build it by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The user's name and uid (linger and runtime-dir ownership are per user).
    pub user: String,
    pub uid: u32,
    /// The config file in use (a path, or "none: defaults"), or why it could not be loaded.
    pub config: Result<String, String>,
    pub runtime_dir: RuntimeDirFact,
    pub bus: BusFact,
    pub manager: ManagerFact,
    /// `/var/lib/systemd/linger/<user>` exists.
    pub linger: bool,
    pub cgroup: CgroupFact,
    pub tmux: TmuxFact,
    /// `None` when the config could not be loaded.
    pub runner: Option<RunnerFact>,
    /// The name of PID 1 (`/proc/1/comm`, trimmed); `None` when it could not be read.
    pub pid1: Option<String>,
    /// The `.agent` files; `None` when the config could not be loaded (they are planned with it).
    pub declared: Option<DeclaredFact>,
}

/// Declared agents: what the generator would make of the `.agent` files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredFact {
    /// The directories read, the user's first.
    pub dirs: Vec<PathBuf>,
    /// Files that make a unit.
    pub valid: usize,
    /// The files the generator skips, one line each (`path: why`).
    pub invalid: Vec<String>,
    /// Where `agent-relay-generator` is installed for user managers, if anywhere.
    pub generator: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeDirFact {
    /// `$XDG_RUNTIME_DIR`, else `/run/user/<uid>` when that exists.
    pub path: Option<PathBuf>,
    /// The path came from `$XDG_RUNTIME_DIR`.
    pub from_env: bool,
    /// `None` when it is not an existing directory.
    pub stat: Option<DirStat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStat {
    pub owner: u32,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusFact {
    /// `$DBUS_SESSION_BUS_ADDRESS`.
    pub env_address: Option<String>,
    /// `$XDG_RUNTIME_DIR/bus` (dbus-user-session's socket) exists.
    pub runtime_socket: bool,
    /// `$XDG_RUNTIME_DIR/systemd/private` exists.
    pub private_socket: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    SessionBus,
    PrivateSocket,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ManagerFact {
    Reachable {
        via: Via,
        info: ManagerInfo,
        timer: UnitFact,
        slice: UnitFact,
    },
    Unreachable {
        detail: String,
    },
    /// Something listens but does not answer within the bound.
    Hung {
        detail: String,
    },
}

/// A unit as the manager knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFact {
    /// `GetUnitFileState`; `None` when no unit file is installed.
    pub file_state: Option<String>,
    /// `ActiveState` and `Description` when the unit is loaded.
    pub active_state: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2 only.
    Unified,
    /// v1 controllers plus a v2 hierarchy at `/sys/fs/cgroup/unified`.
    Hybrid,
    Legacy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFact {
    pub layout: CgroupLayout,
    /// The manager's cgroup (its `ControlGroup`), when known.
    pub control_group: Option<String>,
    /// `cgroup.controllers` of that cgroup in the v2 hierarchy: what is delegated to it.
    pub controllers: Option<Vec<String>>,
    /// Controllers bound to a v1 hierarchy (from `/proc/cgroups`): never delegated to a user manager.
    pub v1: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmuxFact {
    Missing,
    /// Found on PATH; `version` is `tmux -V`'s answer or why there was none.
    Found {
        path: PathBuf,
        version: Result<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerFact {
    /// The config's `runnerCommand` and the program it resolves to.
    Configured { program: String, resolved: Option<PathBuf> },
    /// No `runnerCommand`: the `<provider>-relay` programs found on PATH.
    Default { found: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not checked: what it needs (the manager, the config) failed first; the fix says which.
    Skipped,
}

/// One check's verdict and, unless it is ok, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Finding {
    /// The check's name, kebab-case: `manager`, `systemd-version`, `credentials`, `runtime-dir`,
    /// `session-bus`, `private-socket`, `pid1`, `linger`, `cgroup`, `reaper-timer`, `slice`, `tmux`,
    /// `config`, `runner`, `agent-files`.
    pub check: &'static str,
    pub status: Status,
    /// What was found, one line for people.
    pub detail: String,
    /// What to do about it; null when the check is ok.
    pub fix: Option<String>,
}

/// `doctor -o json`'s document: `ok` is false when a required check failed (exit 5, 6 or 8).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub ok: bool,
    pub findings: Vec<Finding>,
}

/// Every check, in the order an operator fixes them.
pub fn evaluate(f: &Facts) -> Vec<Finding> {
    let mut out = vec![checks::manager(f), checks::systemd_version(&f.manager), checks::credentials(&f.manager)];
    out.push(checks::runtime_dir(&f.runtime_dir, f.uid));
    out.push(checks::session_bus(&f.bus, &f.manager));
    out.push(checks::private_socket(&f.bus));
    out.push(checks::pid1(f.pid1.as_deref()));
    out.push(checks::linger(f.linger, &f.user));
    out.push(checks::cgroup(&f.cgroup));
    out.push(checks::reaper_timer(&f.manager));
    out.push(checks::slice(&f.manager));
    out.push(checks::tmux(&f.tmux));
    out.push(checks::config(&f.config));
    out.push(checks::runner(f.runner.as_ref()));
    out.push(checks::agent_files(f.declared.as_ref()));
    out
}

/// 0 when nothing required is missing; the manager's own codes (5 unreachable, 6 hung) when it is
/// the problem; else [`EXIT_REQUIRED_MISSING`].
pub fn exit_code(facts: &Facts, findings: &[Finding]) -> u8 {
    match &facts.manager {
        ManagerFact::Unreachable { .. } => 5,
        ManagerFact::Hung { .. } => 6,
        ManagerFact::Reachable { .. } if findings.iter().any(|f| f.status == Status::Fail) => EXIT_REQUIRED_MISSING,
        ManagerFact::Reachable { .. } => 0,
    }
}

/// One line per finding (`ok`/`warn`/`FAIL`, check, detail), its fix indented below, a summary.
pub fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = match f.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        };
        out.push_str(&format!("{tag:<5}{:<17}{}\n", f.check, f.detail));
        if let Some(fix) = &f.fix {
            for line in fix.lines() {
                out.push_str(&format!("{:22}fix: {line}\n", ""));
            }
        }
    }
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    let (fails, warns, skipped) = (count(Status::Fail), count(Status::Warn), count(Status::Skipped));
    let not_checked = if skipped > 0 { format!(", {skipped} not checked") } else { String::new() };
    out.push_str(&if fails > 0 {
        format!("{fails} required check(s) failed, {warns} warning(s){not_checked}\n")
    } else {
        format!("everything required is in place, {warns} warning(s){not_checked}\n")
    });
    out
}

/// Controllers bound to a v1 hierarchy, from `/proc/cgroups` (`name hierarchy num enabled`;
/// hierarchy 0 means v2 or unmounted).
pub fn v1_controllers(proc_cgroups: &str) -> Vec<String> {
    proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let name = cols.next()?;
            let hierarchy: u32 = cols.next()?.parse().ok()?;
            let enabled = cols.nth(1).is_none_or(|e| e == "1");
            (hierarchy != 0 && enabled).then(|| name.to_string())
        })
        .collect()
}

/// The leading number of systemd's `Version` (`252.38-1~deb12u1`, `v255`, `255~rc1`).
pub use crate::model::exec::major_version;

/// `tmux -V`'s `tmux 3.3a` / `tmux next-3.4` as (3, 3) / (3, 4).
pub fn tmux_version(text: &str) -> Option<(u32, u32)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}
