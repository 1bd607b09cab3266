//! Every answer's rendering in one place: [`Render`] gives each answer its human text, its JSON
//! form is its serde form, and [`emit`] writes one or the other. The text helpers are pure
//! (the clock is passed in).

use std::io::Write;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::args::Output;
use crate::error::Error;
use crate::model::record::AgentRecord;
use crate::ops::diagnose::Diagnosis;
use crate::ops::durable::{Generated, RemoveOutcome};
use crate::ops::guests::{GuestRecord, GuestStop};
use crate::ops::logs::LogTail;
use crate::ops::reap::ReapReport;
use crate::ops::stop::KillOutcome;
use crate::ops::terminal::{Capture, Resized};
use crate::ops::{now_ms, SpawnOutcome, StopOutcome};

/// An answer the CLI prints: as JSON (its serde form) or as text for people.
pub trait Render: Serialize {
    fn text(&self) -> String;
    /// `-o wide`: the text with more columns where an answer has them.
    fn wide(&self) -> String {
        self.text()
    }
}

/// Writes an answer to stdout in the chosen form. A closed pipe (`| head`) is not an error; an
/// answer that does not serialise is a bug of ours, reported as a failure (exit 1).
pub fn emit<T: Render>(output: Output, answer: &T) -> Result<(), Error> {
    let text = match output {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(answer).map_err(|e| Error::Io {
                op: "serialising the answer",
                path: "-".into(),
                source: e.into(),
            })?;
            s.push('\n');
            s
        }
        Output::Text => answer.text(),
        Output::Wide => answer.wide(),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    Ok(())
}

/// `list`: every agent. A bare array, as the orchestrator parses it; each record carries
/// `schemaVersion`.
#[derive(Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AgentList(pub Vec<AgentRecord>);

/// `list --no-headers`: in text, the table's rows without its header line (and nothing when
/// there is no agent); in JSON, the list.
#[derive(Serialize)]
#[serde(transparent)]
pub struct BareAgentList(pub AgentList);

/// `guest list`: every guest. A bare array; each record carries `schemaVersion`.
#[derive(Serialize, JsonSchema)]
#[serde(transparent)]
pub struct GuestList(pub Vec<GuestRecord>);

/// `terminal send`: how many key groups went to the terminal.
pub use crate::ops::terminal::Sent;

/// One line of `logs --follow -o json` (NDJSON, one per log line).
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine<'a> {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// With `--timestamps`: when the line was written (ms since the epoch, to within 10 ms);
    /// `null` when the log has no time for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    /// The line, sanitised unless `--raw`.
    pub line: &'a str,
}

/// A log line as text: with `--timestamps`, its time first (UTC; `-` when unknown).
pub fn log_line(time: Option<Option<u64>>, line: &str) -> String {
    match time {
        None => line.to_string(),
        Some(Some(ms)) => format!("{} {line}", crate::model::logtimes::rfc3339_ms(ms)),
        Some(None) => format!("{:<24} {line}", "-"),
    }
}

impl Render for SpawnOutcome {
    fn text(&self) -> String {
        let verb = if self.created { "spawned" } else { "already running" };
        format!("{verb}: {}\n{}", self.agent.session_name, agent_details(&self.agent))
    }
}

impl Render for Generated {
    fn text(&self) -> String {
        self.text.clone()
    }
}

impl Render for crate::ops::generate::DryRun {
    fn text(&self) -> String {
        let dir = self.output_dir.as_ref().map_or("<generator dir>".to_string(), |d| d.display().to_string());
        let mut out = String::new();
        for u in &self.units {
            out.push_str(&format!("# {dir}/{} (from {}, also {})\n", u.unit, u.source.display(), u.alias));
            out.push_str(&u.text);
            for l in &u.links {
                out.push_str(&format!("# link {dir}/{} -> {}\n", l.path, l.target));
            }
            out.push('\n');
        }
        if self.units.is_empty() && self.errors.is_empty() {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            out.push_str(&format!("# no .agent files in {}\n", dirs.join(", ")));
        }
        out
    }
}

impl Render for AgentList {
    fn text(&self) -> String {
        agent_table(&self.0, now_ms())
    }
    fn wide(&self) -> String {
        agent_rows(&self.0, now_ms(), true, true)
    }
}

impl Render for BareAgentList {
    fn text(&self) -> String {
        agent_rows(&self.0 .0, now_ms(), false, false)
    }
    fn wide(&self) -> String {
        agent_rows(&self.0 .0, now_ms(), false, true)
    }
}

impl Render for crate::ops::restart::RestartOutcome {
    fn text(&self) -> String {
        format!(
            "restarted: {} (pid {}) replaces {} (pid {}); registered in {} ms, swap {} ms\n",
            self.agent.systemd_unit,
            self.agent.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            self.predecessor_unit,
            self.predecessor_pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            self.registered_ms,
            self.swap_ms
        )
    }
}

impl Render for crate::ops::status::Status {
    fn text(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "not loaded".into());
        format!(
            "manager       systemd {} ({})\nprefix        {}\nagents        {} loaded: {} alive, {} dead, {} unknown; {} durable, {} crash-looping\nqueued        {} spawn(s) waiting for admission{}\nexited        {} on record (list --all)\nreaper timer  {}\n",
            self.manager_version,
            self.transport,
            self.tmux_prefix,
            self.agents,
            self.alive,
            self.dead,
            self.unknown,
            self.durable,
            self.crash_looping,
            self.queued,
            self.spawn_slots.map(|n| format!(" ({n} slots)")).unwrap_or_else(|| " (admission disabled)".into()),
            self.exited,
            opt(&self.reaper_timer),
        )
    }
}

impl Render for AgentRecord {
    fn text(&self) -> String {
        agent_details(self)
    }
}

impl Render for StopOutcome {
    fn text(&self) -> String {
        stop_summary(self)
    }
}

impl Render for RemoveOutcome {
    fn text(&self) -> String {
        let mut t = stop_summary(&self.stop);
        match (&self.unit_file, self.durable) {
            (Some(f), _) => t.push_str(&format!("disabled; deleted {} and its secret files\n", f.display())),
            (None, true) => t.push_str("disabled; deleted its secret files (its unit file was already gone)\n"),
            (None, false) => {}
        }
        t
    }
}

impl Render for Diagnosis {
    fn text(&self) -> String {
        diagnosis(self)
    }
}

impl Render for LogTail {
    fn text(&self) -> String {
        let time = |i: usize| self.times.as_ref().map(|t| t.get(i).copied().flatten());
        self.lines.iter().enumerate().map(|(i, l)| log_line(time(i), l) + "\n").collect()
    }
}

impl Render for GuestRecord {
    fn text(&self) -> String {
        format!("guest {} started ({}), expires in {}\n", self.guest, self.systemd_unit, age(self.ttl_ms.unwrap_or(0)))
    }
}

impl Render for GuestList {
    fn text(&self) -> String {
        guest_table(&self.0, now_ms())
    }
}

impl Render for GuestStop {
    fn text(&self) -> String {
        format!("{} {}\n", self.guest, if self.stopped { "stopped" } else { "was not running" })
    }
}

impl Render for Capture {
    fn text(&self) -> String {
        self.content.clone()
    }
}

impl Render for Sent {
    fn text(&self) -> String {
        format!("sent {} key groups to {}\n", self.keys, self.terminal.session)
    }
}

impl Render for Resized {
    fn text(&self) -> String {
        format!("{} is {}x{}\n", self.terminal.session, self.cols, self.rows)
    }
}

impl Render for ReapReport {
    fn text(&self) -> String {
        let verb = if self.dry_run { "would" } else { "did" };
        let mut t = format!("reap {verb}: {} actions\n", self.actions.len());
        for a in &self.actions {
            t.push_str(&format!("  {}\n", serde_json::to_string(a).unwrap_or_default()));
        }
        for f in &self.failed {
            t.push_str(&format!("  failed: {f}\n"));
        }
        t
    }
}

impl Render for KillOutcome {
    fn text(&self) -> String {
        format!("sent {} to {} of {}\n", self.signal, self.whom, self.systemd_unit)
    }
}

impl Render for crate::doctor::Report {
    fn text(&self) -> String {
        crate::doctor::render_text(&self.findings)
    }
}

/// A table of agents, one line each.
pub fn agent_table(agents: &[AgentRecord], now_ms: u64) -> String {
    agent_rows(agents, now_ms, true, false)
}

const AGENT_COLUMNS: [&str; 7] = ["SESSION", "STATE", "PID", "PROVIDER", "LABEL", "UPTIME", "UNIT"];
/// `-o wide` adds these.
const WIDE_COLUMNS: [&str; 7] = ["MEM", "CPU%", "TASKS", "SRC", "RESTARTS", "DURABLE", "STARTED"];

/// The table, with or without its header line (without it, no "(no agents)" either).
fn agent_rows(agents: &[AgentRecord], now_ms: u64, headers: bool, wide: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if headers {
        let mut h = AGENT_COLUMNS.map(String::from).to_vec();
        if wide {
            h.extend(WIDE_COLUMNS.map(String::from));
        }
        rows.push(h);
    }
    for a in agents {
        rows.push(vec![
            a.session_name.clone(),
            state_text(a),
            a.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            a.provider.clone(),
            a.label.clone(),
            a.started_at
                .or(a.queue.as_ref().map(|q| q.queued_at))
                .map(|t| age(now_ms.saturating_sub(t)))
                .unwrap_or_else(|| "-".into()),
            a.systemd_unit.clone(),
        ]);
        if wide {
            let r = a.resources.as_ref();
            let dash = || "-".to_string();
            let row = rows.last_mut().expect("just pushed");
            row.extend([
                r.and_then(|r| r.memory_bytes).map(crate::model::resources::human_bytes).unwrap_or_else(dash),
                r.and_then(|r| r.cpu_percent).map(|p| format!("{p:.1}")).unwrap_or_else(dash),
                r.and_then(|r| r.tasks).map(|t| t.to_string()).unwrap_or_else(dash),
                r.map(|r| source_name(r.source).to_string()).unwrap_or_else(dash),
                a.restarts.to_string(),
                if a.durable { "yes".into() } else { "no".into() },
                a.started_at.map(clock_time).unwrap_or_else(dash),
            ]);
        }
    }
    let columns = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if agents.is_empty() && headers {
        out.push_str("(no agents)\n");
    }
    out
}

fn state_text(a: &AgentRecord) -> String {
    match &a.queue {
        Some(q) => format!("queued #{} ({})", q.position, q.reason),
        None => format!("{} ({}/{})", a.state.as_str(), a.active_state, a.sub_state),
    }
}

/// A time for people: `2026-11-30T02:40:12Z` (UTC, seconds).
pub fn clock_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn source_name(s: crate::model::resources::Source) -> &'static str {
    match s {
        crate::model::resources::Source::Systemd => "systemd",
        crate::model::resources::Source::Proc => "proc",
        crate::model::resources::Source::Mixed => "mixed",
    }
}

/// One resource figure of an agent for `show`'s text, `-` where there is none.
fn res(a: &AgentRecord, f: impl Fn(&crate::model::resources::Resources) -> Option<String>) -> String {
    a.resources.as_ref().and_then(f).unwrap_or_else(|| "-".into())
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `key: value` lines for one agent.
pub fn agent_details(a: &AgentRecord) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let lines = [
        ("agentId", a.agent_id.clone()),
        ("provider", a.provider.clone()),
        ("label", a.label.clone()),
        ("sessionName", a.session_name.clone()),
        ("tmuxSession", a.tmux_session.clone()),
        ("systemdUnit", a.systemd_unit.clone()),
        ("state", state_text(a)),
        ("result", a.result.clone()),
        ("pid", a.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
        ("invocationId", opt(&a.invocation_id)),
        ("cwd", a.cwd.clone()),
        ("approvalMode", a.approval_mode.clone()),
        ("lifecycle", a.lifecycle.clone()),
        ("workspaceMode", a.workspace_mode.clone()),
        ("policyName", opt(&a.policy_name)),
        ("spawnRequestId", opt(&a.spawn_request_id)),
        ("automationId", opt(&a.automation_id)),
        ("automationRunId", opt(&a.automation_run_id)),
        ("model", opt(&a.model)),
        ("effort", opt(&a.effort)),
        ("profile", opt(&a.profile)),
        ("rig", opt(&a.rig)),
        ("taskId", a.task_id.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "-".into())),
        ("tags", if a.tags.is_empty() { "-".into() } else { a.tags.join(",") }),
        ("capabilities", if a.capabilities.is_empty() { "-".into() } else { a.capabilities.join(",") }),
        (
            "startedAt",
            a.started_at
                .map(|t| format!("{} ({} ago)", clock_time(t), age(now_ms().saturating_sub(t))))
                .unwrap_or_else(|| "-".into()),
        ),
        ("restarts", a.restarts.to_string()),
        ("logFile", a.log_file.clone()),
        ("durable", a.durable.to_string()),
        ("memory", res(a, |r| r.memory_bytes.map(crate::model::resources::human_bytes))),
        (
            "cpu",
            res(a, |r| {
                r.cpu_ns.map(|ns| {
                    format!(
                        "{:.2}s ({}% of one CPU since start)",
                        ns as f64 / 1e9,
                        r.cpu_percent.map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into())
                    )
                })
            }),
        ),
        ("tasks", res(a, |r| r.tasks.map(|t| t.to_string()))),
        ("resourcesFrom", res(a, |r| Some(source_name(r.source).to_string()))),
    ];
    lines.iter().map(|(k, v)| format!("{k:<16}{v}\n")).collect()
}

/// `diagnose` for people: the verdict, the facts, the log tail.
pub fn diagnosis(d: &Diagnosis) -> String {
    let e = &d.exit;
    let verdict = match e.kind {
        crate::model::exit::ExitKind::Exited => {
            format!("exited with status {}", e.exit_code.map(|c| c.to_string()).unwrap_or("?".into()))
        }
        crate::model::exit::ExitKind::Signal => format!(
            "killed by {}{}",
            e.signal.clone().unwrap_or_default(),
            if e.core_dumped { " (core dumped)" } else { "" }
        ),
        crate::model::exit::ExitKind::Oom => "killed by the OOM killer".to_string(),
        crate::model::exit::ExitKind::CrashLoop => "crash-looping: hit its restart limit".to_string(),
        crate::model::exit::ExitKind::Unknown if d.state == crate::model::record::Liveness::Alive => {
            "running".to_string()
        }
        crate::model::exit::ExitKind::Unknown => "exit unknown".to_string(),
    };
    let mut out = format!(
        "{} ({}): {verdict}\nstate           {} ({}/{})\nresult          {}\nrestarts        {}\nstarted/exited  {} / {}\nruntime         {}\nlog             {} ({} bytes{})\nrunner info     {}\n",
        d.session_name,
        d.systemd_unit,
        d.state.as_str(),
        d.active_state,
        d.sub_state,
        e.result,
        d.restarts.map(|r| r.to_string()).unwrap_or("-".into()),
        d.started_at.map(|t| t.to_string()).unwrap_or("-".into()),
        d.exited_at.map(|t| t.to_string()).unwrap_or("-".into()),
        d.runtime_ms.map(age).unwrap_or("-".into()),
        d.log_file,
        d.log_bytes,
        if d.log_empty { ", empty" } else { "" },
        if d.runner_info_present { "written" } else { "not written" },
    );
    if let Some(le) = &d.last_error {
        out.push_str(&format!("lastError       {le}\n"));
    }
    if !d.last_log_lines.is_empty() {
        out.push_str("last log lines:\n");
        for l in &d.last_log_lines {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

/// One `watch` event for people: time, type, session, and the exit or detail.
pub fn watch_line(ev: &crate::ops::watch::WatchEvent) -> String {
    let who = ev.agent.as_ref().map(|a| a.session_name.clone()).or_else(|| ev.unit.clone()).unwrap_or_default();
    let mut s = format!("{} {:<12} {who}", ev.time, ev.kind);
    if let Some(e) = &ev.exit {
        let what = match (e.exit_code, &e.signal) {
            (Some(c), _) => format!("status {c}"),
            (None, Some(sig)) => sig.clone(),
            _ => "unknown".into(),
        };
        s.push_str(&format!(" exit={what} result={}", e.result));
    }
    if let Some(d) = &ev.detail {
        s.push_str(&format!(" {d}"));
    }
    s.trim_end().to_string()
}

/// A table of guest terminals.
pub fn guest_table(guests: &[GuestRecord], now_ms: u64) -> String {
    if guests.is_empty() {
        return "(no guests)\n".into();
    }
    let mut out = String::new();
    for g in guests {
        let left = g.expires_at.map(|e| age(e.saturating_sub(now_ms))).unwrap_or_else(|| "-".into());
        out.push_str(&format!("{}  {}  agent={}  expires in {left}\n", g.guest, g.active_state, g.agent_id));
    }
    out
}

/// One sentence about a stop.
pub fn stop_summary(s: &StopOutcome) -> String {
    let how = match (s.was_running, s.killed) {
        (false, _) => return format!("{} ({}) was not running: nothing to stop\n", s.session_name, s.systemd_unit),
        (true, false) => "it exited within the graceful window",
        (true, true) => "it needed SIGKILL",
    };
    format!("stopped {} ({}): {how}\n", s.session_name, s.systemd_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(5_000), "5s");
        assert_eq!(age(125_000), "2m5s");
        assert_eq!(age(7_500_000), "2h5m");
        assert_eq!(age(90_000_000), "1d1h");
    }
}
