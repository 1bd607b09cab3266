//! `reap` against a real manager: leftovers of gone agents and stray guest servers go, recorded
//! failures are reset, old exit records pruned; live agents, guests with units and fresh files stay.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn age(path: &Path, secs_ago: u64) {
    let ok = Command::new("touch").args(["-h", "-d", &format!("@{}", now_s() - secs_ago)]).arg(path).status().unwrap();
    assert!(ok.success());
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

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
    let live_info = env.home.join(format!(".agent-relay/runners/{}.json", live["sessionName"].as_str().unwrap()));
    assert!(wait_until(Duration::from_secs(5), || live_info.exists()));
    let agents = env.agents_dir();
    let live_dir = std::fs::read_dir(&agents).unwrap().next().unwrap().unwrap().path();
    age(&live_dir, 3600);
    age(&live_info, 3600);
    // Leftovers of an agent whose unit is gone (as after a crash of the controller mid-spawn).
    let gone_dir = agents.join("ar-claude-session-gone-1.0badc0de");
    std::fs::create_dir_all(&gone_dir).unwrap();
    std::fs::write(gone_dir.join("env"), "AGENT_RELAY_TOKEN=\"x\"\n").unwrap();
    age(&gone_dir, 3600);
    let gone_info = env.home.join(".agent-relay/runners/ar-claude-session-gone-1.json");
    std::fs::write(&gone_info, "{}").unwrap();
    age(&gone_info, 3600);
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
    let exits = env.mgr().root().join("state/agent-relay-systemd/exits/ar-claude-session-old-1");
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
    env.spawn(&env.request(json!({"spawnRequestId": "host-g"})));
    let info = env.home.join(".agent-relay/runners/ar-claude-session-host-g.json");
    assert!(wait_until(Duration::from_secs(5), || info.exists()));
    let guest = env.json(&["guest", "create", "host-g", "-o", "json"], None)["guest"].as_str().unwrap().to_string();
    let tmux_dir = env.mgr().root().join("tmux").join(format!("tmux-{}", nix::unistd::getuid()));
    age(&tmux_dir.join(&guest), 3600);
    // A stray guest server no unit owns (as left by a crash), with an old socket.
    let stray = format!("ar-guest-claude-stray-{}", &uuid_like());
    let mut server = Command::new("tmux")
        .env("TMUX_TMPDIR", env.mgr().root().join("tmux"))
        .args(["-L", &stray, "-D"])
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || tmux_dir.join(&stray).exists()));
    age(&tmux_dir.join(&stray), 3600);
    let report = env.json(&["reap", "-o", "json"], None);
    assert_eq!(actions(&report, "end-guest-server"), vec![stray.as_str()], "{report}");
    assert!(wait_until(Duration::from_secs(5), || server.try_wait().unwrap().is_some()), "stray server still runs");
    assert!(!tmux_dir.join(&stray).exists());
    let list = env.json(&["guest", "list", "-o", "json"], None);
    assert_eq!(list[0]["guest"], json!(guest));
    assert_eq!(list[0]["running"], true, "an unexpired guest was touched");
}

fn uuid_like() -> String {
    format!("{:08x}", std::process::id() ^ (now_s() as u32))
}
