//! Unit properties → agent record, and the three-valued liveness verdict. Pure: the snapshot
//! and the `/proc` observation are read by the IO shell and passed in.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::meta::AgentMeta;
use crate::model::state::ActiveState;

/// The unit properties an agent record is made of, as read over D-Bus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSnapshot {
    pub unit: String,
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub invocation_id: Vec<u8>,
    pub main_pid: u32,
    pub n_restarts: u32,
    pub result: String,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    /// µs since the epoch; 0 when never started.
    pub exec_main_start_us: u64,
    /// µs since the epoch of the main process's exit; 0 while it runs.
    pub exec_main_exit_us: u64,
    pub exec_main_pid: u32,
    pub memory_max: u64,
    pub memory_high: u64,
    pub tasks_max: u64,
    pub cpu_quota_per_sec_usec: u64,
    pub active_enter_us: u64,
    pub working_directory: String,
    pub log_extra_fields: Vec<Vec<u8>>,
    /// Loaded from a unit file (`spawn --persist`), not transient: survives a manager restart.
    pub durable: bool,
}

impl UnitSnapshot {
    /// Its `ActiveState`, typed.
    pub fn active(&self) -> ActiveState {
        ActiveState::parse(&self.active_state)
    }
}

/// What `/proc/<pid>/stat` said about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    Zombie,
    Gone,
    /// Could not tell (e.g. EPERM): never evidence of death.
    Unreadable,
}

/// alive / dead / unknown; `queued` for a spawn still waiting for admission (no unit yet). A dead
/// verdict needs positive evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    Alive,
    Dead,
    Unknown,
    Queued,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown",
            Liveness::Queued => "queued",
        }
    }
}

/// Liveness from the unit's state and its MainPID's `/proc` state.
pub fn liveness(s: &UnitSnapshot, proc_state: ProcState) -> Liveness {
    if s.load_state == "not-found" || s.load_state.is_empty() {
        return Liveness::Unknown;
    }
    if s.active().is_ended() {
        return Liveness::Dead;
    }
    if s.main_pid > 0 {
        return match proc_state {
            ProcState::Running => Liveness::Alive,
            ProcState::Zombie | ProcState::Gone => Liveness::Dead,
            ProcState::Unreadable => Liveness::Unknown,
        };
    }
    if s.sub_state == "auto-restart" {
        // Between a crash and its restart: the runner is positively gone.
        return Liveness::Dead;
    }
    if s.active() == ActiveState::Deactivating {
        // Stopping with no main process (systemd clears MainPID when it exits): the runner is
        // gone, and what runs is the stop's own commands (ExecStopPost= recording the exit).
        return Liveness::Dead;
    }
    Liveness::Unknown
}

/// Parses the state letter of `/proc/<pid>/stat` (after the last `)`, comm may hold spaces).
pub fn parse_proc_stat_state(stat: &str) -> ProcState {
    match stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) {
        Some('Z') | Some('X') | Some('x') => ProcState::Zombie,
        Some(_) => ProcState::Running,
        None => ProcState::Unreadable,
    }
}

/// An agent as reported by `list` and `show`. Every key is always present (null when unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    /// The JSON contract's version (also on each element of `list`).
    pub schema_version: crate::model::contract::SchemaVersion,
    pub agent_id: String,
    pub provider: String,
    pub label: String,
    pub session_name: String,
    /// The runner's tmux session: what its runner info names (tmux renders `.` and `:` of a
    /// requested name as `_`), else the session name, as the seed reports it.
    pub tmux_session: String,
    pub systemd_unit: String,
    pub invocation_id: Option<String>,
    pub pid: Option<u32>,
    pub state: Liveness,
    /// The seed's `alive`: `state` is `alive`.
    pub alive: bool,
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub cwd: String,
    pub approval_mode: String,
    pub policy_name: Option<String>,
    pub spawn_request_id: Option<String>,
    pub automation_id: Option<String>,
    pub automation_run_id: Option<String>,
    pub lifecycle: String,
    pub workspace_mode: String,
    pub model: Option<String>,
    pub effort: Option<String>,
    pub profile: Option<String>,
    /// What the request said: its `rig`, `taskId`, `tags` and `capabilities`.
    pub rig: Option<String>,
    pub task_id: Option<crate::model::request::TaskId>,
    pub tags: Vec<String>,
    pub capabilities: Vec<String>,
    /// ms since the epoch of the current run's exec, else of the unit's activation.
    pub started_at: Option<u64>,
    pub restarts: u32,
    /// Restarted too often: systemd's start limit has stopped it (`Result=start-limit-hit`).
    pub crash_looping: bool,
    /// Resource limits in force on the unit, systemd's defaults included (null where none).
    pub limits: crate::model::limits::Limits,
    /// The limits the request (or the config's `limits`) asked for: null where none was asked.
    pub requested_limits: crate::model::limits::Limits,
    pub log_file: String,
    pub description: String,
    /// A durable agent (`spawn --persist`): an enabled unit file, started with the user manager.
    pub durable: bool,
    /// A spawn waiting for admission (`state: queued`): its place in the queue and why it
    /// waits; null for every agent that has a unit.
    pub queue: Option<crate::model::admission::QueueInfo>,
    /// What the running agent uses (memory, CPU, tasks, and where the figures come from): filled
    /// by `show`, `list -o wide` and `top`; null in plain `list`, `watch` and for an agent not
    /// running.
    pub resources: Option<crate::model::resources::Resources>,
}

impl AgentRecord {
    /// Its unit's `ActiveState`, typed.
    pub fn active(&self) -> ActiveState {
        ActiveState::parse(&self.active_state)
    }
}

/// Builds the record; `None` when the unit is no agent unit or carries no (or forged) agent
/// metadata (not one of ours). The session is the unit name's and the log file is derived from
/// it below `home`: neither is read from the metadata, which is the caller's text.
pub fn agent_record(s: &UnitSnapshot, proc_state: ProcState, home: &Path) -> Option<AgentRecord> {
    let session = crate::model::naming::session_of_agent_unit(&s.unit)?;
    let m = AgentMeta::from_log_extra_fields(&s.log_extra_fields)?;
    let crash = crate::model::exit::crash_looping(&m.lifecycle, &s.active_state, &s.result);
    let started_us = if s.exec_main_start_us > 0 { s.exec_main_start_us } else { s.active_enter_us };
    let list = |v: &Option<String>| -> Vec<String> {
        v.as_deref().map(|t| t.split(',').filter(|i| !i.is_empty()).map(str::to_string).collect()).unwrap_or_default()
    };
    let number = |v: &Option<String>| v.as_deref().and_then(|t| t.parse::<u64>().ok());
    let requested_limits = crate::model::limits::Limits {
        memory_max: number(&m.limit_memory_max),
        memory_high: number(&m.limit_memory_high),
        tasks_max: number(&m.limit_tasks_max),
        cpu_quota_percent: number(&m.limit_cpu_quota).and_then(|p| u32::try_from(p).ok()),
    };
    let state = liveness(s, proc_state);
    Some(AgentRecord {
        schema_version: Default::default(),
        agent_id: m.agent_id,
        provider: m.provider,
        label: m.label,
        tmux_session: session.to_string(),
        session_name: session.to_string(),
        systemd_unit: s.unit.clone(),
        invocation_id: (!s.invocation_id.is_empty()).then(|| crate::model::exit::invocation_hex(&s.invocation_id)),
        pid: (s.main_pid > 0).then_some(s.main_pid),
        state,
        alive: state == Liveness::Alive,
        active_state: s.active_state.clone(),
        sub_state: s.sub_state.clone(),
        result: s.result.clone(),
        cwd: s.working_directory.clone(),
        approval_mode: m.approval_mode,
        policy_name: m.policy_name,
        spawn_request_id: m.spawn_request_id,
        automation_id: m.automation_id,
        automation_run_id: m.automation_run_id,
        lifecycle: m.lifecycle,
        workspace_mode: m.workspace_mode,
        model: m.model,
        effort: m.effort,
        profile: m.profile,
        tags: list(&m.tags),
        capabilities: list(&m.capabilities),
        rig: m.rig,
        task_id: m.task_id.as_deref().map(crate::model::request::TaskId::parse),
        started_at: (started_us > 0).then_some(started_us / 1000),
        restarts: s.n_restarts,
        crash_looping: crash,
        limits: crate::model::limits::from_properties(
            s.memory_max,
            s.memory_high,
            s.tasks_max,
            s.cpu_quota_per_sec_usec,
        ),
        requested_limits,
        log_file: crate::model::plan::log_file(home, session).display().to_string(),
        description: s.description.clone(),
        durable: s.durable,
        queue: None,
        resources: None,
    })
}

/// An agent whose unit is gone, as its last exit record describes it (`list --all`): dead,
/// `activeState: inactive`, `result` the run's; what the record does not keep is empty or null.
pub fn from_exit_record(r: &crate::model::exit::ExitRecord, home: &Path) -> AgentRecord {
    AgentRecord {
        schema_version: Default::default(),
        agent_id: r.agent_id.clone(),
        provider: r.provider.clone(),
        label: String::new(),
        session_name: r.session_name.clone(),
        tmux_session: r.session_name.clone(),
        systemd_unit: r.unit.clone(),
        invocation_id: Some(r.invocation_id.clone()).filter(|i| !i.is_empty()),
        pid: None,
        state: Liveness::Dead,
        alive: false,
        active_state: "inactive".into(),
        sub_state: "dead".into(),
        result: r.service_result.clone(),
        cwd: String::new(),
        approval_mode: String::new(),
        policy_name: None,
        spawn_request_id: r.spawn_request_id.clone(),
        automation_id: None,
        automation_run_id: None,
        lifecycle: String::new(),
        workspace_mode: String::new(),
        model: None,
        effort: None,
        profile: None,
        rig: None,
        task_id: None,
        tags: Vec::new(),
        capabilities: Vec::new(),
        started_at: r.started_at,
        restarts: r.restarts.unwrap_or(0),
        crash_looping: r.service_result == "start-limit-hit",
        limits: Default::default(),
        requested_limits: Default::default(),
        log_file: crate::model::plan::log_file(home, &r.session_name).display().to_string(),
        description: String::new(),
        durable: false,
        queue: None,
        resources: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(active: &str, sub: &str, pid: u32) -> UnitSnapshot {
        UnitSnapshot {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            main_pid: pid,
            ..Default::default()
        }
    }

    #[test]
    fn deactivating_with_no_main_process_is_dead() {
        let s = snap("deactivating", "stop-post", 0);
        assert_eq!(liveness(&s, ProcState::Gone), Liveness::Dead);
        assert_eq!(liveness(&snap("deactivating", "stop-sigterm", 42), ProcState::Running), Liveness::Alive);
        assert_eq!(liveness(&snap("activating", "start-pre", 0), ProcState::Gone), Liveness::Unknown);
    }

    #[test]
    fn liveness_needs_evidence_for_death() {
        use Liveness::*;
        assert_eq!(liveness(&snap("active", "running", 10), ProcState::Running), Alive);
        assert_eq!(liveness(&snap("active", "running", 10), ProcState::Zombie), Dead);
        assert_eq!(liveness(&snap("active", "running", 10), ProcState::Unreadable), Unknown);
        assert_eq!(liveness(&snap("active", "running", 0), ProcState::Gone), Unknown);
        assert_eq!(liveness(&snap("failed", "failed", 0), ProcState::Gone), Dead);
        assert_eq!(liveness(&snap("activating", "auto-restart", 0), ProcState::Gone), Dead);
        let mut gone = snap("inactive", "dead", 0);
        gone.load_state = "not-found".into();
        assert_eq!(liveness(&gone, ProcState::Gone), Unknown, "not-found is never a verdict (#1317)");
    }

    #[test]
    fn proc_stat_state() {
        assert_eq!(parse_proc_stat_state("12 (a b) c) S 1 2"), ProcState::Running);
        assert_eq!(parse_proc_stat_state("12 (x) Z 1"), ProcState::Zombie);
        assert_eq!(parse_proc_stat_state("garbage"), ProcState::Unreadable);
    }

    #[test]
    fn what_the_request_said_comes_back_from_the_metadata() {
        let meta = AgentMeta {
            agent_id: "a".into(),
            session: "ar-claude-x-1".into(),
            rig: Some("r".into()),
            task_id: Some("7".into()),
            tags: Some("t1,t2".into()),
            limit_cpu_quota: Some("150".into()),
            ..Default::default()
        };
        let mut s = snap("active", "running", 1);
        s.unit = "agent-relay-managed-ar-claude-x-1.service".into();
        s.log_extra_fields = meta.to_log_extra_fields();
        let r = agent_record(&s, ProcState::Running, Path::new("/h")).unwrap();
        assert_eq!((r.rig.as_deref(), r.task_id), (Some("r"), Some(crate::model::request::TaskId::Number(7))));
        assert_eq!((r.tags, r.capabilities), (vec!["t1".to_string(), "t2".to_string()], Vec::<String>::new()));
        assert_eq!(r.requested_limits.cpu_quota_percent, Some(150));
        assert_eq!((r.requested_limits.memory_max, r.requested_limits.tasks_max), (None, None));
        assert!(r.alive);
        assert_eq!(r.tmux_session, "ar-claude-x-1", "the session name until the runner names its own");
    }

    #[test]
    fn foreign_units_are_not_agents() {
        assert_eq!(agent_record(&snap("active", "running", 1), ProcState::Running, Path::new("/h")), None);
        // Metadata on a unit that is not named as an agent's is not an agent either.
        let meta = AgentMeta { agent_id: "a".into(), ..Default::default() };
        let s = UnitSnapshot {
            unit: "other.service".into(),
            log_extra_fields: meta.to_log_extra_fields(),
            ..snap("active", "running", 1)
        };
        assert_eq!(agent_record(&s, ProcState::Running, Path::new("/h")), None);
    }

    #[test]
    fn session_and_log_file_come_from_the_unit_name() {
        let meta = AgentMeta {
            agent_id: "a".into(),
            session: "ar-claude-victim-1".into(),
            log_file: "/etc/passwd".into(),
            ..Default::default()
        };
        let s = UnitSnapshot {
            unit: "agent-relay-managed-ar-claude-p-2.service".into(),
            log_extra_fields: meta.to_log_extra_fields(),
            ..snap("active", "running", 1)
        };
        let r = agent_record(&s, ProcState::Running, Path::new("/h")).unwrap();
        assert_eq!(r.session_name, "ar-claude-p-2");
        assert_eq!(r.log_file, "/h/.agent-relay/logs/ar-claude-p-2.log");
    }
}
