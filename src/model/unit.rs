//! The unit generator: a [`SpawnPlan`] → the transient unit's properties, as plain data the
//! D-Bus layer converts. Property names are systemd's (org.freedesktop.systemd1(5)). Pure.

use std::time::Duration;

pub use crate::model::property::{find, Property, Value};

use crate::model::exec;
use crate::model::naming::AGENT_SLICE;
use crate::model::plan::SpawnPlan;
use crate::model::request::Lifecycle;

/// The graceful window of a `stop` when the caller names none, or one of 0 or less (the seed's).
pub const DEFAULT_STOP_WINDOW: Duration = Duration::from_secs(10);
/// The largest graceful window a caller can ask `stop` for (the seed's cap).
pub const MAX_STOP_WINDOW: Duration = Duration::from_secs(60);
/// How long systemd itself waits after SIGTERM before its own SIGKILL: past the largest window
/// `stop` can be asked for, with a margin for the SIGKILL call to arrive, so that the caller's
/// window decides and `stop`'s `killed` is the truth. An operator's `systemctl --user stop`
/// waits this long for an agent that ignores SIGTERM.
pub const TIMEOUT_STOP_USEC: u64 = MAX_STOP_WINDOW.as_micros() as u64 + 10_000_000;

/// The graceful window of a stop asked for `seconds`, as the seed's `sessionStopTimeoutMs`:
/// 0 or less is the default (10 s), more than 60 s is 60 s. `None` for NaN.
pub fn stop_window(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() {
        return None;
    }
    if seconds <= 0.0 {
        return Some(DEFAULT_STOP_WINDOW);
    }
    Some(Duration::try_from_secs_f64(seconds).map_or(MAX_STOP_WINDOW, |d| d.min(MAX_STOP_WINDOW)))
}
/// Delay between a persistent agent's crash and its restart.
pub const RESTART_USEC: u64 = 2_000_000;
/// Start-rate limit: at most BURST starts per INTERVAL, then the unit stays failed.
pub const START_LIMIT_BURST: u32 = 5;
pub const START_LIMIT_INTERVAL_USEC: u64 = 60_000_000;

/// The properties of an agent's transient service.
pub fn agent_properties(plan: &SpawnPlan) -> Vec<Property> {
    use Value::*;
    let s = |v: &str| Str(v.to_string());
    let mut props = vec![
        ("Description", s(&plan.description)),
        ("Slice", s(AGENT_SLICE)),
        // The start job fails when the runner cannot be executed, instead of a unit that
        // "started" and died at once (systemd.service(5)): `exec` when systemd runs the runner
        // itself; `notify` when our log writer does, which says READY=1 once the runner's own
        // exec has succeeded (its writer process, not the main one: `NotifyAccess=all`; the
        // runner gets no notify socket). Where a command line goes through our `exec` launcher
        // (see `exec::for_manager`), only the launcher's execution is known.
        ("Type", s(if plan.log_tee_argv.is_some() { "notify" } else { "exec" })),
        // Exactly these words, nothing `$VAR`-expanded: the request's fields are on this argv.
        // `exec::for_manager` adapts it to a systemd that cannot keep it across a reload.
        ("ExecStartEx", {
            let argv = plan.exec_start();
            exec::exact(&argv[0], &argv, false)
        }),
        ("WorkingDirectory", s(&plan.cwd.display().to_string())),
        ("Environment", Strs(plan.environment.iter().map(|(k, v)| format!("{k}={v}")).collect())),
        ("EnvironmentFiles", EnvFiles(vec![(plan.env_file.display().to_string(), false)])),
        ("StandardOutputFileToAppend", s(&plan.log_file.display().to_string())),
        ("StandardErrorFileToAppend", s(&plan.log_file.display().to_string())),
        ("SyslogIdentifier", s(&plan.meta.session)),
        ("LogExtraFields", Bytes(plan.meta.to_log_extra_fields())),
        // The whole control group is the agent: its tmux and tools die with it (seed #1746).
        ("KillMode", s("control-group")),
        ("TimeoutStopUSec", U64(TIMEOUT_STOP_USEC)),
        ("StartLimitBurst", U32(START_LIMIT_BURST)),
        ("StartLimitIntervalUSec", U64(START_LIMIT_INTERVAL_USEC)),
    ];
    if plan.log_tee_argv.is_some() {
        let after_type = props.iter().position(|(n, _)| *n == "Type").map_or(props.len(), |i| i + 1);
        props.insert(after_type, ("NotifyAccess", s("all")));
    }
    props.extend(crate::model::limits::properties(&plan.limits));
    if let Some(argv) = &plan.record_exit_argv {
        // Ignore-failure: recording must never change how the unit ended.
        props.push(("ExecStopPostEx", exec::exact(&argv[0], argv, true)));
    }
    match plan.lifecycle {
        Lifecycle::Persistent => {
            props.push(("Restart", s("on-failure")));
            props.push(("RestartUSec", U64(RESTART_USEC)));
        }
        Lifecycle::Ephemeral => props.push(("Restart", s("no"))),
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_windows_follow_the_seed() {
        let s = Duration::from_secs;
        assert_eq!(stop_window(12.0), Some(s(12)));
        assert_eq!(stop_window(0.25), Some(Duration::from_millis(250)));
        assert_eq!(stop_window(0.0), Some(s(10)));
        assert_eq!(stop_window(-3.0), Some(s(10)));
        assert_eq!(stop_window(f64::NEG_INFINITY), Some(s(10)));
        assert_eq!(stop_window(600.0), Some(s(60)));
        assert_eq!(stop_window(f64::INFINITY), Some(s(60)));
        assert_eq!(stop_window(f64::NAN), None);
    }

    #[test]
    fn systemd_never_kills_before_the_largest_window() {
        assert!(TIMEOUT_STOP_USEC > MAX_STOP_WINDOW.as_micros() as u64);
    }
}
