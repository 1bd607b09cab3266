//! `reap` against a real manager: leftovers of gone agents and stray guest servers go, recorded
//! failures are reset, old exit records pruned; live agents, guests with units and fresh files stay;
//! a durable agent keeps the secrets its unit file names, however stopped it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

fn actions(report: &Value, kind: &str) -> Vec<String> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == kind)
        .map(|a| a["target"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn reap_cleans_what_is_gone_and_nothing_else() {
    let env = Env::new();
    // A live agent whose files are old: untouchable.
    let live = env.spawn(&env.request(json!({"spawnRequestId": "live-1"})))["agent"].clone();
    let live_info = env.runner_info(live["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || live_info.exists()));
    let agents = env.agents_dir();
    let live_dir = std::fs::read_dir(&agents).unwrap().next().unwrap().unwrap().path();
    backdate(&live_dir, 3600);
    backdate(&live_info, 3600);
    // Leftovers of an agent whose unit is gone (as after a crash of the controller mid-spawn).
    let gone_dir = agents.join("ar-claude-session-gone-1.0badc0de");
    std::fs::create_dir_all(&gone_dir).unwrap();
    std::fs::write(gone_dir.join("env"), "AGENT_RELAY_TOKEN=\"x\"\n").unwrap();
    backdate(&gone_dir, 3600);
    let gone_info = env.runner_info("ar-claude-session-gone-1");
    std::fs::write(&gone_info, "{}").unwrap();
    backdate(&gone_info, 3600);
    // A fresh leftover (a spawn in flight): inside the grace period.
    let fresh_dir = agents.join("ar-claude-session-fresh-1.0badc0de");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    // A failed agent whose exit is recorded: reset.
    let failed = env.spawn(&env.request(json!({
        "spawnRequestId": "failed-1", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "50", "FAKE_RUNNER_EXIT_CODE": "3"}
    })))["agent"]["systemdUnit"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(wait_until(Duration::from_secs(5), || env.prop(&failed, "ActiveState") == "failed"));
    // An old exit record.
    let exits = env.exits_dir().join("ar-claude-session-old-1");
    std::fs::create_dir_all(&exits).unwrap();
    let old_record = exits.join("0000000000001000-deadbeef.json");
    std::fs::write(&old_record, "{}").unwrap();

    let dry = env.json(&["reap", "--dry-run", "-o", "json"], None);
    assert_eq!(dry["dryRun"], true);
    assert!(gone_dir.exists() && env.prop(&failed, "ActiveState") == "failed", "dry run changed something");

    let report = env.json(&["reap", "-o", "json"], None);
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(actions(&report, "remove-agent-files"), [gone_dir.display().to_string()]);
    assert_eq!(actions(&report, "remove-runner-info"), [gone_info.display().to_string()]);
    assert_eq!(actions(&report, "reset-failed-unit"), vec![failed.as_str()]);
    assert_eq!(actions(&report, "prune-exit-record"), [old_record.display().to_string()]);
    assert!(!gone_dir.exists() && !gone_info.exists() && !old_record.exists());
    assert!(live_dir.exists() && live_info.exists() && fresh_dir.exists(), "reaped a live or fresh agent's files");
    assert_eq!(env.json(&["show", "live-1", "-o", "json"], None)["state"], "alive");
    assert!(!env.agent_units().contains(&failed), "recorded failure not reset");
    // The exit stays known after the reset: diagnose reads the record.
    assert_eq!(env.json(&["diagnose", "failed-1", "-o", "json"], None)["exit"]["exitCode"], 3);
    // Nothing left to do; two reaps at once are fine.
    let both: Vec<Value> = std::thread::scope(|s| {
        let h: Vec<_> = (0..2).map(|_| s.spawn(|| env.json(&["reap", "-o", "json"], None))).collect();
        h.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in both {
        assert_eq!(r["actions"], json!([]), "{r}");
    }
}

#[test]
fn reap_ends_stray_guest_servers_but_not_guests_with_units() {
    let env = Env::new();
    let host = env.spawn(&env.request(json!({"spawnRequestId": "host-g"})));
    let info = env.runner_info(host["agent"]["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info.exists()));
    let guest = env.json(&["guest", "create", "host-g", "-o", "json"], None)["guest"].as_str().unwrap().to_string();
    let tmux_dir = env.mgr().root().join("tmux").join(format!("tmux-{}", nix::unistd::getuid()));
    backdate(&tmux_dir.join(&guest), 3600);
    // A stray guest server no unit owns (as left by a crash), with an old socket.
    let stray = format!("ar-guest-claude-stray-{}", &uuid_like());
    let mut server = Command::new("tmux")
        .env("TMUX_TMPDIR", env.mgr().root().join("tmux"))
        .args(["-L", &stray, "-D"])
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || tmux_dir.join(&stray).exists()));
    backdate(&tmux_dir.join(&stray), 3600);
    let report = env.json(&["reap", "-o", "json"], None);
    assert_eq!(actions(&report, "end-guest-server"), vec![stray.as_str()], "{report}");
    assert!(wait_until(Duration::from_secs(5), || server.try_wait().unwrap().is_some()), "stray server still runs");
    assert!(!tmux_dir.join(&stray).exists());
    let list = env.json(&["guest", "list", "-o", "json"], None);
    assert_eq!(list[0]["guest"], json!(guest));
    assert_eq!(list[0]["running"], true, "an unexpired guest was touched");
}

/// The one secret dir of a durable agent's session.
fn secret_dir(durable: &Path, agent: &Value) -> PathBuf {
    let dirs = session_dirs(durable, agent["sessionName"].as_str().unwrap());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn reap_keeps_the_secrets_of_every_durable_agent_with_a_unit_file_and_cleans_orphans() {
    let mut env = Env::new();
    let durable = env.durable_agents_dir();
    let unit_dir = env.unit_dir();
    let persist = |rid: &str, extra: Value| {
        let mut req = env.request(extra);
        req["spawnRequestId"] = json!(rid);
        env.persist(&req)["agent"].clone()
    };
    let unit_of = |a: &Value| a["systemdUnit"].as_str().unwrap().to_string();
    let info_of = |a: &Value| env.runner_info(a["sessionName"].as_str().unwrap());

    let running = persist("dr-run", json!({}));
    assert!(wait_until(Duration::from_secs(5), || info_of(&running).exists()));
    // Stopped: still enabled, so it starts with the manager and needs its secrets then.
    let stopped = persist("dr-stop", json!({}));
    env.json(&["stop", &unit_of(&stopped), "-o", "json"], None);
    let stopped_dir = secret_dir(&durable, &stopped);
    // A stale attempt of the stopped agent, which its unit file does not name.
    let stale = durable.join(format!("{}.0ldattempt", stopped["sessionName"].as_str().unwrap()));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("env"), "AGENT_RELAY_TOKEN=\"old\"\n").unwrap();
    // Disabled and stopped by hand: not loaded, but its unit file is there.
    let disabled = persist("dr-off", json!({}));
    env.systemctl(&["disable", "--now", &unit_of(&disabled)]);
    assert!(!env.agent_units().contains(&unit_of(&disabled)));
    // Failed, its exit recorded by ExecStopPost.
    let failed = persist(
        "dr-fail",
        json!({"lifecycle": "ephemeral", "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "50", "FAKE_RUNNER_EXIT_CODE": "3"}}),
    );
    let failed_unit = unit_of(&failed);
    assert!(wait_until(Duration::from_secs(5), || env.prop(&failed_unit, "ActiveState") == "failed"));
    // Removed by hand: unit file and its link deleted, manager reloaded; the secrets left behind.
    let gone = persist("dr-gone", json!({}));
    assert!(wait_until(Duration::from_secs(5), || info_of(&gone).exists()));
    env.systemctl(&["stop", &unit_of(&gone)]);
    std::fs::remove_file(unit_dir.join(unit_of(&gone))).unwrap();
    std::fs::remove_file(unit_dir.join("default.target.wants").join(unit_of(&gone))).unwrap();
    env.systemctl(&["daemon-reload"]);
    assert!(!env.agent_units().contains(&unit_of(&gone)), "{:?}", env.agent_units());
    // A fresh orphan (a persist spawn in flight writes its secrets before its unit file).
    let fresh = durable.join("ar-claude-session-dr-fresh.0badc0de");
    std::fs::create_dir(&fresh).unwrap();

    let kept =
        [secret_dir(&durable, &running), stopped_dir, secret_dir(&durable, &disabled), secret_dir(&durable, &failed)];
    let orphan = secret_dir(&durable, &gone);
    for d in kept.iter().chain([&orphan, &stale]) {
        backdate(d, 300);
    }
    backdate(&info_of(&running), 300);
    backdate(&info_of(&gone), 300);
    let pid = running["pid"].as_u64().unwrap();

    let want = sorted(vec![orphan.display().to_string(), stale.display().to_string()]);
    let dry = env.json(&["reap", "--dry-run", "-o", "json"], None);
    assert_eq!(sorted(actions(&dry, "remove-durable-files")), want, "{dry}");
    assert!(orphan.exists() && stale.exists(), "dry run removed something");

    let report = env.json(&["reap", "-o", "json"], None);
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(sorted(actions(&report, "remove-durable-files")), want, "{report}");
    assert_eq!(actions(&report, "remove-agent-files"), Vec::<String>::new(), "{report}");
    assert_eq!(actions(&report, "remove-runner-info"), [info_of(&gone).display().to_string()], "{report}");
    assert_eq!(actions(&report, "reset-failed-unit"), vec![failed_unit.as_str()], "{report}");
    assert!(!orphan.exists() && !stale.exists() && !info_of(&gone).exists());
    for d in &kept {
        assert!(d.join("env").exists(), "reaped the secrets of a durable agent: {}", d.display());
    }
    assert!(fresh.exists(), "reaped inside the grace period");
    assert!(info_of(&running).exists());
    assert!(pid_alive(pid));
    assert_eq!(env.json(&["show", "dr-run", "-o", "json"], None)["state"], "alive");
    // The failed durable agent is reset, not removed: inactive, still enabled, its file kept.
    assert_eq!(env.prop(&failed_unit, "ActiveState"), "inactive");
    assert_eq!(env.prop(&failed_unit, "UnitFileState"), "enabled");
    assert!(unit_dir.join(&failed_unit).exists());
    assert_eq!(env.json(&["diagnose", "dr-fail", "-o", "json"], None)["exit"]["exitCode"], 3);

    // At the next start of the manager the stopped agent comes back, with its secrets.
    env.restart_manager();
    let mut back = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            back = env.json(&["show", "dr-stop", "-o", "json"], None);
            back["state"] == "alive"
        }),
        "the stopped durable agent did not come back: {back}"
    );
    let pid = back["pid"].as_u64().unwrap();
    let environ = environ(pid);
    assert!(environ.contains(&format!("AGENT_RELAY_TOKEN={TOKEN}")), "no token after the restart");
}

fn uuid_like() -> String {
    format!("{:08x}", std::process::id() ^ ((now_ms() / 1000) as u32))
}
