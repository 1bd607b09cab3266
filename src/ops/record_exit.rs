//! The exit recorder our units run as `ExecStopPost=`: reads this run's end from the unit's
//! properties (what systemd also passes as `$SERVICE_RESULT`, `$EXIT_CODE`, `$EXIT_STATUS`,
//! `$INVOCATION_ID`, which only stand in when the manager does not answer within a short bound)
//! with its start/exit time, restarts and pid, and stores it as an [`ExitRecord`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::io::host::HostEnv;
use crate::io::systemd::{self, BusOptions, Manager};
use crate::model::exit::{invocation_hex, is_invocation_id, signal_name, ExitRecord, RECORD_SCHEMA};
use crate::model::record::UnitSnapshot;

/// How long the recorder may spend asking the manager; the record is written without those
/// details when it does not answer.
pub const ENRICH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the unit's `ExecStopPost=` command line carries.
#[derive(Debug, Clone)]
pub struct RecordArgs {
    pub dir: PathBuf,
    pub unit: String,
    pub session: String,
    pub agent_id: String,
    pub provider: String,
    pub log_file: String,
    pub spawn_request_id: Option<String>,
    /// The run's prompt file, emptied after the record is written (a restart does not replay
    /// the task); only a file of this session's directory ([`plan::is_prompt_file_of`]).
    pub prompt_file: Option<PathBuf>,
}

/// Builds the record (pure). The unit's properties, read while our `ExecStopPost=` runs, are this
/// run's (`InvocationID`, `Result`, `ExecMainCode`/`ExecMainStatus`/`ExecMainPID` and its exit
/// time: what systemd puts in `$INVOCATION_ID`, `$SERVICE_RESULT`, `$EXIT_CODE`, `$EXIT_STATUS`)
/// and are trusted first: an `EnvironmentFile=` value, or the manager's own environment, can
/// stand in for those variables, and a request must not make a crash read as a success. The
/// variables count only when the manager did not answer, and then only in the shape systemd
/// gives them.
pub fn record_from(
    args: &RecordArgs,
    unit: Option<&UnitSnapshot>,
    var: &dyn Fn(&str) -> Option<String>,
    now_ms: u64,
) -> ExitRecord {
    let mut rec = ExitRecord {
        schema_version: RECORD_SCHEMA,
        unit: args.unit.clone(),
        session_name: args.session.clone(),
        agent_id: args.agent_id.clone(),
        provider: args.provider.clone(),
        log_file: args.log_file.clone(),
        spawn_request_id: args.spawn_request_id.clone(),
        invocation_id: String::new(),
        service_result: String::new(),
        exit_code: String::new(),
        exit_status: String::new(),
        recorded_at: now_ms,
        started_at: None,
        exited_at: None,
        main_pid: None,
        restarts: None,
    };
    match unit {
        Some(snap) => {
            let ms = |us: u64| (us > 0).then_some(us / 1000);
            rec.invocation_id = invocation_hex(&snap.invocation_id);
            rec.service_result = snap.result.clone();
            // systemd sets $EXIT_CODE/$EXIT_STATUS only for a main process that ran and exited.
            if snap.exec_main_pid > 0 && snap.exec_main_exit_us > 0 {
                if let Some((code, status)) = exit_words(snap.exec_main_code, snap.exec_main_status) {
                    rec.exit_code = code.into();
                    rec.exit_status = status;
                }
            }
            rec.started_at = ms(snap.exec_main_start_us);
            rec.exited_at = ms(snap.exec_main_exit_us);
            rec.main_pid = (snap.exec_main_pid > 0).then_some(snap.exec_main_pid);
            rec.restarts = Some(snap.n_restarts);
        }
        None => {
            let word = |k: &str, max: usize, ok: fn(char) -> bool| {
                var(k).filter(|v| v.len() <= max && v.chars().all(ok)).unwrap_or_default()
            };
            rec.service_result = word("SERVICE_RESULT", 32, |c| c.is_ascii_lowercase() || c == '-');
            let code = word("EXIT_CODE", 8, |c| c.is_ascii_lowercase());
            if matches!(code.as_str(), "exited" | "killed" | "dumped") {
                rec.exit_code = code;
                rec.exit_status = word("EXIT_STATUS", 16, |c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
            }
        }
    }
    if !is_invocation_id(&rec.invocation_id) {
        rec.invocation_id = var("INVOCATION_ID").filter(|v| is_invocation_id(v)).unwrap_or_default();
    }
    rec
}

/// `ExecMainCode`/`ExecMainStatus` as systemd spells them in `$EXIT_CODE`/`$EXIT_STATUS`:
/// `exited` and the status, or `killed`/`dumped` and the signal's name without `SIG`.
fn exit_words(code: i32, status: i32) -> Option<(&'static str, String)> {
    let signal = || signal_name(status).trim_start_matches("SIG").to_string();
    match code {
        1 => Some(("exited", status.to_string())),
        2 => Some(("killed", signal())),
        3 => Some(("dumped", signal())),
        _ => None,
    }
}

/// Records the exit; returns the file written.
pub async fn record_exit(args: &RecordArgs, host: &HostEnv) -> Result<PathBuf, Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let snap = match tokio::time::timeout(ENRICH_TIMEOUT, read_unit(host, &args.unit)).await {
        Ok(Ok(snap)) => Some(snap),
        Ok(Err(e)) => {
            tracing::warn!(unit = %args.unit, error = %e, "the unit could not be read; recording systemd's variables");
            None
        }
        Err(_) => {
            tracing::warn!(unit = %args.unit, "the manager did not answer; recording systemd's variables");
            None
        }
    };
    let rec = record_from(args, snap.as_ref(), &var, crate::ops::now_ms());
    let written = crate::io::exit_store::write(&args.dir, &rec);
    if let Some(prompt) = &args.prompt_file {
        consume_prompt(prompt, &args.session);
    }
    written
}

/// Empties the run's prompt file so that a restart does not do the task again. Only a prompt
/// file of this session's own directory, only a regular file (a link is not followed).
fn consume_prompt(path: &std::path::Path, session: &str) {
    if !crate::model::plan::is_prompt_file_of(path, session) {
        tracing::warn!(path = %path.display(), "not this session's prompt file; left alone");
        return;
    }
    if let Err(e) = crate::io::files::empty_regular(path) {
        // Gone already (a removed agent) is fine; anything else is worth a line in the log.
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "the prompt file could not be emptied");
        }
    }
}

async fn read_unit(host: &HostEnv, unit: &str) -> Result<UnitSnapshot, Error> {
    let opts = BusOptions {
        session_address: host.session_bus.clone(),
        runtime_dir: host.runtime_dir.clone(),
        timeout: ENRICH_TIMEOUT,
    };
    let mgr = Manager::unsubscribed(systemd::connect(&opts).await?, ENRICH_TIMEOUT).await?;
    let path = mgr.unit_path(unit).await?.ok_or_else(|| Error::NotFound { reference: unit.to_string() })?;
    mgr.snapshot(unit, &path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RecordArgs {
        RecordArgs {
            dir: "/x".into(),
            unit: "u.service".into(),
            session: "s".into(),
            agent_id: "a".into(),
            provider: "claude".into(),
            log_file: "/l".into(),
            spawn_request_id: None,
            prompt_file: None,
        }
    }

    fn forged(k: &str) -> Option<String> {
        match k {
            "EXIT_CODE" => Some("exited".into()),
            "EXIT_STATUS" => Some("0".into()),
            "SERVICE_RESULT" => Some("success".into()),
            "INVOCATION_ID" => Some("../../x".into()),
            _ => None,
        }
    }

    #[test]
    fn the_unit_wins_over_the_environment() {
        let snap = UnitSnapshot {
            invocation_id: vec![0xab; 16],
            result: "exit-code".into(),
            exec_main_pid: 42,
            exec_main_code: 1,
            exec_main_status: 3,
            exec_main_start_us: 1_000_000,
            exec_main_exit_us: 3_000_000,
            ..Default::default()
        };
        let r = record_from(&args(), Some(&snap), &forged, 7);
        assert_eq!(
            (r.exit_code.as_str(), r.exit_status.as_str(), r.service_result.as_str()),
            ("exited", "3", "exit-code")
        );
        assert_eq!(r.invocation_id, "ab".repeat(16));
        assert_eq!((r.started_at, r.exited_at, r.main_pid), (Some(1000), Some(3000), Some(42)));
        let killed = UnitSnapshot { exec_main_code: 2, exec_main_status: 15, result: "signal".into(), ..snap.clone() };
        let r = record_from(&args(), Some(&killed), &forged, 7);
        assert_eq!((r.exit_code.as_str(), r.exit_status.as_str()), ("killed", "TERM"));
        // A main process that never ran has no exit, whatever the environment says.
        let never = UnitSnapshot { exec_main_pid: 0, exec_main_exit_us: 0, result: "resources".into(), ..snap };
        let r = record_from(&args(), Some(&never), &forged, 7);
        assert_eq!((r.exit_code.as_str(), r.exit_status.as_str(), r.service_result.as_str()), ("", "", "resources"));
    }

    #[test]
    fn without_the_unit_only_well_formed_variables_count() {
        let r = record_from(&args(), None, &forged, 7);
        assert_eq!(r.invocation_id, "", "a path is no invocation id");
        let odd = |k: &str| match k {
            "EXIT_CODE" => Some("exited".into()),
            "EXIT_STATUS" => Some("3; rm".into()),
            "SERVICE_RESULT" => Some("exit-code".into()),
            "INVOCATION_ID" => Some("0123456789abcdef0123456789abcdef".into()),
            _ => None,
        };
        let r = record_from(&args(), None, &odd, 7);
        assert_eq!((r.exit_code.as_str(), r.exit_status.as_str()), ("exited", ""));
        assert_eq!(r.invocation_id, "0123456789abcdef0123456789abcdef");
    }
}
