//! `diagnose` and `kill`: how an agent ended (or is doing), from its unit when systemd still
//! knows it and from our exit records when it does not; and signals to an agent.

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::model::exit::{self, ExitInfo, ExitKind, LastErrorFacts};
use crate::model::record::Liveness;
use crate::ops::Supervisor;

/// Lines of log shown by `diagnose`, as the seed.
pub const DIAGNOSE_LOG_LINES: usize = 20;

/// The seed's exit diagnostics, for a live, failed or collected agent.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub agent_id: String,
    pub provider: String,
    pub session_name: String,
    pub systemd_unit: String,
    pub unit_loaded: bool,
    pub state: Liveness,
    pub active_state: String,
    pub sub_state: String,
    pub pid: Option<u32>,
    /// The end of the current (or last) run; `unknown` while it runs.
    pub exit: ExitInfo,
    /// The end of the run before, when the unit was restarted.
    pub previous_exit: Option<ExitInfo>,
    pub crash_looping: bool,
    pub restarts: Option<u32>,
    /// ms since the epoch: when the current (or last) run's main process started, and when it
    /// exited (null while it runs).
    pub started_at: Option<u64>,
    pub exited_at: Option<u64>,
    pub runtime_ms: Option<u64>,
    pub log_file: String,
    pub log_bytes: u64,
    pub log_empty: bool,
    pub last_log_lines: Vec<String>,
    pub runner_info_present: bool,
    pub exit_records: usize,
    /// One sentence, as the seed's `lastError`; `None` while the agent is alive.
    pub last_error: Option<String>,
}

/// Which agent a diagnosis is about, and where it stands.
struct Who {
    agent_id: String,
    provider: String,
    session_name: String,
    systemd_unit: String,
    unit_loaded: bool,
    state: Liveness,
    active_state: String,
    sub_state: String,
    pid: Option<u32>,
    log_file: String,
    started_at: Option<u64>,
    exited_at: Option<u64>,
}

impl Diagnosis {
    /// A diagnosis before the log and runner info are looked at.
    fn of(
        w: Who,
        exit: ExitInfo,
        previous: Option<ExitInfo>,
        restarts: Option<u32>,
        runtime_ms: Option<u64>,
        records: usize,
    ) -> Diagnosis {
        Diagnosis {
            schema_version: Default::default(),
            agent_id: w.agent_id,
            provider: w.provider,
            session_name: w.session_name,
            systemd_unit: w.systemd_unit,
            unit_loaded: w.unit_loaded,
            state: w.state,
            active_state: w.active_state,
            sub_state: w.sub_state,
            pid: w.pid,
            crash_looping: exit.kind == ExitKind::CrashLoop,
            exit,
            previous_exit: previous,
            restarts,
            started_at: w.started_at,
            exited_at: w.exited_at,
            runtime_ms,
            log_file: w.log_file,
            log_bytes: 0,
            log_empty: true,
            last_log_lines: Vec::new(),
            runner_info_present: false,
            exit_records: records,
            last_error: None,
        }
    }
}

impl Supervisor {
    /// Exit diagnostics; works after the unit has been collected, from the exit records.
    pub async fn diagnose(&self, reference: &str) -> Result<Diagnosis, Error> {
        let dir = crate::io::exit_store::exits_dir(&self.host.state_home);
        let live = match self.resolve(reference).await {
            Ok(agent) => Some(agent),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut d = match live {
            Some(agent) => {
                let snap = self.snapshot(&agent.systemd_unit).await?.unwrap_or_default();
                let records = crate::io::exit_store::read_session(&dir, &agent.session_name);
                let stopped = snap.active().is_ended();
                let this_run = records.iter().rev().find(|r| r.is_run(&snap.invocation_id));
                // classify_unit also knows an ended main process while the unit still deactivates
                // (ExecStopPost runs) or waits to restart.
                let exit = match (stopped, this_run) {
                    (true, Some(r)) => exit::classify_record(r),
                    _ => exit::classify_unit(
                        &snap.active_state,
                        &snap.result,
                        snap.main_pid,
                        snap.exec_main_code,
                        snap.exec_main_status,
                    ),
                };
                let mut exit = exit;
                if agent.crash_looping {
                    exit.kind = ExitKind::CrashLoop;
                }
                let previous = records.iter().rev().find(|r| !r.is_run(&snap.invocation_id)).map(exit::classify_record);
                let end = if snap.exec_main_exit_us > snap.exec_main_start_us { snap.exec_main_exit_us } else { 0 };
                let runtime_ms = match (snap.exec_main_start_us, end) {
                    (s, e) if s > 0 && e > 0 => Some((e - s) / 1000),
                    (s, _) if s > 0 && !stopped => Some(crate::ops::now_ms().saturating_sub(s / 1000)),
                    _ => None,
                };
                let who = Who {
                    agent_id: agent.agent_id,
                    provider: agent.provider,
                    session_name: agent.session_name,
                    systemd_unit: agent.systemd_unit,
                    unit_loaded: true,
                    state: agent.state,
                    active_state: agent.active_state,
                    sub_state: agent.sub_state,
                    pid: agent.pid,
                    log_file: agent.log_file,
                    started_at: (snap.exec_main_start_us > 0).then_some(snap.exec_main_start_us / 1000),
                    exited_at: (end > 0).then_some(end / 1000),
                };
                Diagnosis::of(who, exit, previous, Some(agent.restarts), runtime_ms, records.len())
            }
            None => {
                let rec = crate::io::exit_store::find(&dir, &self.config.tmux_prefix, reference)
                    .ok_or_else(|| Error::NotFound { reference: reference.to_string() })?;
                let records = crate::io::exit_store::read_session(&dir, &rec.session_name);
                let exit = exit::classify_record(&rec);
                let runtime_ms = match (rec.started_at, rec.exited_at) {
                    (Some(s), Some(e)) if e >= s => Some(e - s),
                    _ => None,
                };
                let who = Who {
                    agent_id: rec.agent_id.clone(),
                    provider: rec.provider.clone(),
                    session_name: rec.session_name.clone(),
                    systemd_unit: rec.unit.clone(),
                    unit_loaded: false,
                    // The recorder ran when the main process had ended: positive evidence.
                    state: Liveness::Dead,
                    active_state: "gone".into(),
                    sub_state: "collected".into(),
                    pid: None,
                    // Not the record's own `logFile`: the runner can write to the records.
                    log_file: crate::model::plan::log_file(&self.host.home, &rec.session_name).display().to_string(),
                    started_at: rec.started_at,
                    exited_at: rec.exited_at,
                };
                let previous = records.iter().rev().nth(1).map(exit::classify_record);
                Diagnosis::of(who, exit, previous, rec.restarts, runtime_ms, records.len())
            }
        };
        if let Ok((lines, bytes)) =
            crate::io::log_file::tail_file(std::path::Path::new(&d.log_file), DIAGNOSE_LOG_LINES, false)
        {
            d.log_bytes = bytes;
            d.log_empty = bytes == 0;
            d.last_log_lines = lines;
        }
        // Present means a runner wrote it: a regular file (a link or FIFO put there is not read).
        let info = crate::model::plan::runner_info_file(&self.host.home, &d.session_name);
        d.runner_info_present = std::fs::symlink_metadata(info).is_ok_and(|m| m.is_file());
        if d.state != Liveness::Alive {
            let facts = LastErrorFacts {
                provider: &d.provider,
                session: &d.session_name,
                unit: &d.systemd_unit,
                runtime_ms: d.runtime_ms,
                active_state: &d.active_state,
                sub_state: &d.sub_state,
                log_empty: d.log_empty,
                runner_info_present: d.runner_info_present,
            };
            d.last_error = Some(exit::last_error(&facts, &d.exit));
        }
        Ok(d)
    }
}
