//! How an agent ended: the record our `ExecStopPost=` writes, and its classification into
//! exit code / signal / OOM / crash loop. Pure. "Unknown" is a valid answer; a guessed success
//! is not (seed #1317).

use crate::model::state::ActiveState;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bumped when the record's fields change meaning.
pub const RECORD_SCHEMA: u32 = 1;

/// One run's end, as systemd told our `ExecStopPost=` (`$SERVICE_RESULT`, `$EXIT_CODE`,
/// `$EXIT_STATUS`, `$INVOCATION_ID`), plus what the manager still knew at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    pub schema_version: u32,
    pub unit: String,
    pub session_name: String,
    pub agent_id: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub log_file: String,
    #[serde(default)]
    pub spawn_request_id: Option<String>,
    pub invocation_id: String,
    /// `success`, `exit-code`, `signal`, `core-dump`, `oom-kill`, `timeout`, `start-limit-hit`, …
    pub service_result: String,
    /// `exited`, `killed`, `dumped`, or empty when the main process never ran.
    pub exit_code: String,
    /// A number for `exited`, a signal name (`TERM`, `KILL`) otherwise.
    pub exit_status: String,
    pub recorded_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub exited_at: Option<u64>,
    #[serde(default)]
    pub main_pid: Option<u32>,
    #[serde(default)]
    pub restarts: Option<u32>,
}

impl ExitRecord {
    /// Whether this record is of the run whose `InvocationID` property is `invocation`.
    pub fn is_run(&self, invocation: &[u8]) -> bool {
        !invocation.is_empty() && self.invocation_id == invocation_hex(invocation)
    }
}

/// The kind of an ending, first-class (seed #636).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExitKind {
    /// Exited on its own with a status (0 is a clean exit).
    Exited,
    /// Killed by a signal (or dumped core).
    Signal,
    /// Killed by the kernel's or systemd-oomd's OOM killer.
    Oom,
    /// Restarted too often: systemd's start limit stopped it.
    CrashLoop,
    /// Running, or nothing recorded: no verdict.
    Unknown,
}

/// A classified ending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    pub kind: ExitKind,
    pub exit_code: Option<i32>,
    /// `SIGKILL`, `SIGTERM`, …
    pub signal: Option<String>,
    pub oom: bool,
    pub core_dumped: bool,
    pub result: String,
    /// Where the answer came from: `record` (our ExecStopPost), `unit` (live properties), `none`.
    pub source: String,
}

impl ExitInfo {
    /// An ending of `kind` with no code or signal yet.
    pub fn new(kind: ExitKind, result: &str, source: &str) -> ExitInfo {
        ExitInfo {
            kind,
            exit_code: None,
            signal: None,
            oom: false,
            core_dumped: false,
            result: result.to_string(),
            source: source.to_string(),
        }
    }

    pub fn unknown(result: &str) -> ExitInfo {
        ExitInfo::new(ExitKind::Unknown, result, "none")
    }
}

/// Signal number → `SIGNAME` for the signals that end processes.
pub fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("SIG{n}"))
}

/// `TERM`/`SIGTERM`/`15` → `SIGTERM`.
pub fn normalize_signal(s: &str) -> String {
    if let Ok(n) = s.parse::<i32>() {
        return signal_name(n);
    }
    if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    }
}

/// A persistent agent (`Restart=on-failure`) that sits in `failed` after a failure was refused its
/// restart by the start limit: a crash loop. systemd 252 keeps `Result=exit-code` (or `signal`,
/// …) then; later versions say `start-limit-hit`. A `timeout` failure is an operator's stop.
pub fn crash_looping(lifecycle: &str, active_state: &str, result: &str) -> bool {
    result == "start-limit-hit"
        || (lifecycle == "persistent"
            && ActiveState::parse(active_state) == ActiveState::Failed
            && matches!(result, "exit-code" | "signal" | "core-dump" | "oom-kill" | "watchdog"))
}

/// Classifies a record from `ExecStopPost=`.
pub fn classify_record(r: &ExitRecord) -> ExitInfo {
    let base = |kind| ExitInfo::new(kind, &r.service_result, "record");
    let mut info = match r.exit_code.as_str() {
        "exited" => ExitInfo { exit_code: r.exit_status.parse().ok(), ..base(ExitKind::Exited) },
        "killed" => ExitInfo { signal: Some(normalize_signal(&r.exit_status)), ..base(ExitKind::Signal) },
        "dumped" => {
            ExitInfo { signal: Some(normalize_signal(&r.exit_status)), core_dumped: true, ..base(ExitKind::Signal) }
        }
        _ => base(ExitKind::Unknown),
    };
    apply_result(&mut info, &r.service_result);
    info
}

/// Classifies from live unit properties (`Result`, `ExecMainCode`, `ExecMainStatus`), only once
/// the main process has ended: the unit stopped, or no main pid with a recorded end (the unit is
/// still in `deactivating`/`stop-post` or `auto-restart`, when systemd already knows the status
/// but our ExecStopPost record may not exist yet). `code` follows siginfo's `CLD_*` (1 exited,
/// 2 killed, 3 dumped); systemd sets it to 0 whenever a new main process starts.
pub fn classify_unit(active_state: &str, result: &str, main_pid: u32, code: i32, status: i32) -> ExitInfo {
    let stopped = ActiveState::parse(active_state).is_ended();
    let main_ended = main_pid == 0 && (1..=3).contains(&code);
    if !stopped && !main_ended && result != "start-limit-hit" {
        return ExitInfo::unknown(result);
    }
    classify_codes(result, code, status)
}

/// Classifies `Result`/`ExecMainCode`/`ExecMainStatus` of a main process known to have ended.
pub fn classify_codes(result: &str, code: i32, status: i32) -> ExitInfo {
    let base = |kind| ExitInfo::new(kind, result, "unit");
    let mut info = match code {
        1 => ExitInfo { exit_code: Some(status), ..base(ExitKind::Exited) },
        2 => ExitInfo { signal: Some(signal_name(status)), ..base(ExitKind::Signal) },
        3 => ExitInfo { signal: Some(signal_name(status)), core_dumped: true, ..base(ExitKind::Signal) },
        _ => base(ExitKind::Unknown),
    };
    apply_result(&mut info, result);
    info
}

fn apply_result(info: &mut ExitInfo, result: &str) {
    match result {
        "oom-kill" => {
            info.oom = true;
            info.kind = ExitKind::Oom;
        }
        "start-limit-hit" => info.kind = ExitKind::CrashLoop,
        _ => {}
    }
}

/// Facts for the one-line `lastError`, as the seed phrases it.
#[derive(Debug, Clone, Default)]
pub struct LastErrorFacts<'a> {
    pub provider: &'a str,
    pub session: &'a str,
    pub unit: &'a str,
    pub runtime_ms: Option<u64>,
    pub active_state: &'a str,
    pub sub_state: &'a str,
    pub log_empty: bool,
    pub runner_info_present: bool,
}

/// "managed P session N exited after Ns; systemd U state=a/s result=r exit=c/s; stdout/stderr
/// log is empty; runner info was not written".
pub fn last_error(f: &LastErrorFacts<'_>, exit: &ExitInfo) -> String {
    let after = f.runtime_ms.map(|ms| format!(" after {}s", ms / 1000)).unwrap_or_default();
    let detail = match exit.kind {
        ExitKind::Exited => format!("exited/{}", exit.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())),
        ExitKind::Signal | ExitKind::Oom => {
            let how = if exit.core_dumped { "dumped" } else { "killed" };
            format!("{how}/{}", exit.signal.clone().unwrap_or_else(|| "?".into()))
        }
        ExitKind::CrashLoop => "start-limit-hit".to_string(),
        ExitKind::Unknown => "unknown".to_string(),
    };
    let verb = match exit.kind {
        ExitKind::Oom => "was killed for running out of memory",
        ExitKind::CrashLoop => "crash-looped and hit its restart limit",
        ExitKind::Signal => "was killed",
        ExitKind::Exited => "exited",
        ExitKind::Unknown => "ended (exit unknown)",
    };
    let mut s = format!(
        "managed {} session {} {verb}{after}; systemd {} state={}/{} result={} exit={detail}",
        f.provider, f.session, f.unit, f.active_state, f.sub_state, exit.result
    );
    if f.log_empty {
        s.push_str("; stdout/stderr log is empty");
    }
    if !f.runner_info_present {
        s.push_str("; runner info was not written");
    }
    s
}

/// Whether `s` is an invocation id as systemd spells it: 32 lowercase hex digits.
pub fn is_invocation_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An `InvocationID` property (16 bytes) as `$INVOCATION_ID` spells it: lowercase hex.
pub fn invocation_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(result: &str, code: &str, status: &str) -> ExitRecord {
        ExitRecord {
            schema_version: 1,
            unit: "u".into(),
            session_name: "s".into(),
            agent_id: "a".into(),
            provider: "claude".into(),
            log_file: "/l".into(),
            spawn_request_id: None,
            invocation_id: "i".into(),
            service_result: result.into(),
            exit_code: code.into(),
            exit_status: status.into(),
            recorded_at: 1,
            started_at: None,
            exited_at: None,
            main_pid: None,
            restarts: None,
        }
    }

    #[test]
    fn every_exit_status_is_kept() {
        for n in 0..=255 {
            let i = classify_record(&rec(if n == 0 { "success" } else { "exit-code" }, "exited", &n.to_string()));
            assert_eq!((i.kind, i.exit_code), (ExitKind::Exited, Some(n)));
        }
    }

    #[test]
    fn signals_oom_and_crash_loops_are_named() {
        let i = classify_record(&rec("signal", "killed", "KILL"));
        assert_eq!((i.kind, i.signal.as_deref()), (ExitKind::Signal, Some("SIGKILL")));
        let i = classify_record(&rec("core-dump", "dumped", "SEGV"));
        assert!(i.core_dumped && i.signal.as_deref() == Some("SIGSEGV"));
        let i = classify_record(&rec("oom-kill", "killed", "KILL"));
        assert_eq!((i.kind, i.oom), (ExitKind::Oom, true), "OOM is not a plain signal (#636)");
        assert_eq!(classify_unit("failed", "start-limit-hit", 0, 1, 1).kind, ExitKind::CrashLoop);
        assert_eq!(classify_unit("failed", "oom-kill", 0, 2, 9).kind, ExitKind::Oom);
        assert_eq!(classify_unit("failed", "signal", 0, 2, 15).signal.as_deref(), Some("SIGTERM"));
        assert!(crash_looping("persistent", "failed", "exit-code"));
        assert!(!crash_looping("ephemeral", "failed", "exit-code"));
        assert!(!crash_looping("persistent", "failed", "timeout"), "a stop that needed SIGKILL");
        assert!(!crash_looping("persistent", "activating", "exit-code"), "restarting, not looping yet");
    }

    #[test]
    fn a_running_unit_has_no_exit_yet() {
        // Default properties of a live or unloaded unit are not an exit (#1317).
        assert_eq!(classify_unit("active", "success", 42, 0, 0).kind, ExitKind::Unknown);
        assert_eq!(classify_unit("inactive", "success", 0, 0, 0).kind, ExitKind::Unknown);
        assert_eq!(classify_unit("activating", "success", 0, 0, 0).kind, ExitKind::Unknown, "not started yet");
    }

    #[test]
    fn an_exit_seen_while_the_unit_is_still_deactivating_is_known() {
        // ExecStopPost= still running: systemd has the status, our record may not exist yet.
        let i = classify_unit("deactivating", "exit-code", 0, 1, 37);
        assert_eq!((i.kind, i.exit_code), (ExitKind::Exited, Some(37)));
        let i = classify_unit("activating", "exit-code", 0, 1, 3);
        assert_eq!(i.exit_code, Some(3), "auto-restart pending");
    }

    #[test]
    fn last_error_reads_like_the_seed() {
        let f = LastErrorFacts {
            provider: "claude",
            session: "ar-claude-x-1",
            unit: "agent-relay-managed-ar-claude-x-1.service",
            runtime_ms: Some(12_345),
            active_state: "failed",
            sub_state: "failed",
            log_empty: true,
            runner_info_present: false,
        };
        let s = last_error(&f, &classify_record(&rec("exit-code", "exited", "1")));
        assert_eq!(
            s,
            "managed claude session ar-claude-x-1 exited after 12s; systemd agent-relay-managed-ar-claude-x-1.service \
             state=failed/failed result=exit-code exit=exited/1; stdout/stderr log is empty; runner info was not written"
        );
    }
}
