//! `doctor` against a real private `systemd --user`: what it finds on a fresh manager, after the
//! units are installed and the timer enabled, with no manager at all, and with a hung one.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{bin, Env};
use serde_json::{json, Value};

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
}

fn status(report: &Value, check: &str) -> String {
    finding(report, check)["status"].as_str().unwrap().to_string()
}

/// Runs `doctor -o json` with `env`'s manager; returns the exit code and the report.
fn doctor(env: &Env, extra: &[&str]) -> (Option<i32>, Value) {
    let out = env.run(&[&["doctor", "-o", "json"], extra].concat(), None);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor's stdout is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn doctor_on_a_fresh_manager_then_with_the_units_installed_and_the_timer_enabled() {
    let env = Env::new();
    let (code, report) = doctor(&env, &[]);
    assert_eq!(code, Some(0), "warnings alone exit 0: {report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(status(&report, "manager"), "ok");
    let version = finding(&report, "systemd-version")["detail"].as_str().unwrap().to_string();
    let major: u32 = version.trim_start_matches("systemd ").split(' ').next().unwrap().parse().unwrap();
    assert!(major >= 252, "{version}");
    assert_eq!(status(&report, "runtime-dir"), "ok");
    assert_eq!(status(&report, "session-bus"), "ok");
    assert_eq!(status(&report, "runner"), "ok");
    let timer = finding(&report, "reaper-timer");
    assert_eq!(timer["status"], "warn");
    assert!(timer["fix"].as_str().unwrap().contains("systemctl --user enable --now agent-relay-reap.timer"), "{timer}");
    assert_eq!(status(&report, "slice"), "warn");

    // Install the shipped units where this manager looks for a user's own units, as an operator
    // without the package would.
    let dir = env.unit_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    for name in ["agent-relay-reap.timer", "agent-relay-reap.service", "agent_relay.slice"] {
        std::fs::copy(units.join(name), dir.join(name)).unwrap();
    }
    env.systemctl(&["daemon-reload"]);
    env.systemctl(&["enable", "--now", "agent-relay-reap.timer"]);
    assert_eq!(env.prop("agent-relay-reap.timer", "UnitFileState"), "enabled");

    let (code, report) = doctor(&env, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(status(&report, "reaper-timer"), "ok", "{report:#}");
    assert_eq!(status(&report, "slice"), "ok", "{report:#}");

    // With an agent running, the operator's `systemctl --user status` of the slice carries the
    // slice's Description, and doctor reads the same.
    let agent = env.spawn(&env.request(json!({"spawnRequestId": "req-doctor-1"})));
    let status_text = env.systemctl(&["status", "agent_relay.slice"]);
    assert!(status_text.contains("agent_relay.slice - Agent Relay agents"), "{status_text}");
    assert!(status_text.contains(agent["agent"]["systemdUnit"].as_str().unwrap()), "{status_text}");
    let (_, report) = doctor(&env, &[]);
    assert!(finding(&report, "slice")["detail"].as_str().unwrap().contains("Agent Relay agents"), "{report:#}");
    env.json(&["stop", "req-doctor-1", "-o", "json"], None);
}

#[test]
fn doctor_with_no_manager_fails_on_the_manager_and_still_reports_everything_else() {
    let env = Env::new();
    let empty = tempfile::Builder::new().prefix("doctor-no-manager-").tempdir().unwrap();
    // A proper runtime directory (yours, 0700), only no manager in it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(empty.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new(bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("XDG_RUNTIME_DIR", empty.path())
        .args(["--config", env.config.to_str().unwrap(), "doctor"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let manager = text.lines().position(|l| l.starts_with("FAIL manager")).unwrap_or_else(|| panic!("{text}"));
    let fix = text.lines().nth(manager + 1).unwrap();
    assert!(fix.trim_start().starts_with("fix: ") && fix.contains("loginctl enable-linger"), "{text}");
    for check in
        ["ok   runtime-dir", "warn private-socket", "ok   tmux", "ok   config", "ok   runner", "skip reaper-timer"]
    {
        assert!(text.lines().any(|l| l.starts_with(check)), "no {check:?} line in\n{text}");
    }
    // What could not be checked without a manager says so, and is counted as such, not as warnings.
    let skip = text.lines().find(|l| l.starts_with("skip reaper-timer")).unwrap();
    assert!(skip.contains("not checked"), "{text}");
    assert!(text.lines().last().unwrap().contains("not checked"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn doctor_with_a_hung_manager_finishes_within_its_timeout_and_says_so() {
    let env = Env::new();
    // Connect once so the socket-activated bus daemon runs; then only the manager hangs.
    assert_eq!(env.json(&["list", "-o", "json"], None), json!([]));
    let hang = env.hang();
    let started = Instant::now();
    let out = env.run(&["doctor", "-o", "json", "--timeout", "1"], None);
    let took = started.elapsed();
    drop(hang);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(6), "{report:#}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(report["ok"], false);
    let manager = finding(&report, "manager");
    assert_eq!(manager["status"], "fail");
    assert!(manager["detail"].as_str().unwrap().contains("did not answer"), "{manager}");
    assert!(manager["fix"].as_str().unwrap().contains("systemctl --user status"), "{manager}");
    assert_eq!(status(&report, "runtime-dir"), "ok");
    assert_eq!(status(&report, "tmux"), "ok");
    // Awake again, it is healthy.
    let (code, _) = doctor(&env, &[]);
    assert_eq!(code, Some(0));
}

#[test]
fn doctor_fails_on_a_runtime_dir_others_can_read_and_exits_8() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let dir = env.runtime_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, report) = doctor(&env, &[]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(code, Some(8), "{report:#}");
    assert_eq!(report["ok"], false);
    let found = finding(&report, "runtime-dir");
    assert_eq!(found["status"], "fail");
    assert_eq!(found["fix"], format!("chmod 0700 {}", dir.display()));
    assert_eq!(status(&report, "manager"), "ok");
}
