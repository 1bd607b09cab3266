//! The operator's toolkit, second part, against a real user manager: `start` of a stopped
//! durable agent; `spawn --wait-ready` until the runner has written its runner info.

use crate::util::*;
use std::time::Duration;

use serde_json::{json, Value};

#[test]
fn start_brings_a_stopped_durable_agent_back_and_refuses_a_transient_one() {
    let env = Env::new();
    let first = env.persist(&env.request(json!({"label": "again", "spawnRequestId": "start-000001"})))["agent"].clone();
    let unit = first["systemdUnit"].as_str().unwrap().to_string();
    let old_pid = first["pid"].as_u64().expect("a live durable agent has a pid");
    env.json(&["stop", &unit, "-o", "json"], None);
    assert_eq!(env.json(&["show", &unit, "-o", "json"], None)["activeState"], "inactive");

    let started = env.json(&["start", "start-000001", "-o", "json"], None);
    assert_eq!(started["created"], true, "{started}");
    assert_eq!(started["agent"]["systemdUnit"], unit.as_str());
    assert_eq!(started["agent"]["activeState"], "active", "{started}");
    let new_pid = started["agent"]["pid"].as_u64().expect("a pid once started");
    assert_ne!(new_pid, old_pid);

    let again = env.json(&["start", &unit, "-o", "json"], None);
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["agent"]["pid"].as_u64(), Some(new_pid));

    // Unknown: exit 3. Transient: exit 2, one line saying what to do.
    let out = env.run(&["start", "no-such-agent"], None);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let transient =
        env.spawn(&env.request(json!({"label": "once"})))["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let out = env.run(&["start", &transient, "-o", "json"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("spawn it anew"), "{err}");
    let doc = schema::parse_valid("error", &out.stdout);
    assert_eq!(doc["error"]["kind"], "invalid", "{doc}");
}

#[test]
fn spawn_wait_ready_returns_once_the_runner_info_is_written_and_times_out_without_it() {
    let env = Env::new();
    // The runner writes its info 1.5 s after its start: --wait-ready answers only after that.
    let req = env.request(json!({"label": "slow", "env": {"FAKE_RUNNER_INFO_DELAY_MS": "1500"}}));
    let started = std::time::Instant::now();
    let out = env.json(&["spawn", "--wait-ready", "-o", "json"], Some(&req.to_string()));
    let took = started.elapsed();
    assert_eq!(out["created"], true, "{out}");
    let info = env.runner_info(out["agent"]["sessionName"].as_str().unwrap());
    assert!(info.exists(), "spawn --wait-ready answered before the runner info was written ({took:?})");
    let doc: Value = serde_json::from_slice(&std::fs::read(&info).unwrap()).unwrap();
    assert_eq!(doc["agentId"], out["agent"]["agentId"]);
    assert!(took >= Duration::from_millis(1400), "took {took:?}");

    // A runner that never writes its info: exit 6 (kind timeout) after the bound, the agent stays.
    env.use_runner(&["/bin/sh", "-c", "exec sleep 60"]);
    let req = env.request(json!({"label": "mute", "spawnRequestId": "ready-000001"}));
    let started = std::time::Instant::now();
    let out = env.run_within(
        Duration::from_secs(10),
        &["spawn", "--wait-ready", "--ready-timeout", "1", "-o", "json"],
        Some(&req.to_string()),
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(3000), "took {took:?}");
    let err = schema::parse_valid("error", &out.stdout);
    assert_eq!(err["error"]["kind"], "timeout", "{err}");
    let shown = env.json(&["show", "ready-000001", "-o", "json"], None);
    assert_eq!(shown["activeState"], "active", "the agent stays: {shown}");
}
