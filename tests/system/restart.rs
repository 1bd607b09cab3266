//! `restart` against a real user manager: the successor registers and settles before the
//! predecessor stops; a successor that fails leaves the predecessor running with the same pid;
//! after the answer there is exactly one generation. Transient and durable agents.

use crate::util::*;
use std::time::Duration;

use serde_json::{json, Value};

/// Units of live agents (state alive) with this agent id.
fn generations(env: &Env, agent_id: &str) -> Vec<Value> {
    let list = env.json(&["list", "-o", "json"], None);
    list.as_array().unwrap().iter().filter(|a| a["agentId"] == agent_id && a["state"] == "alive").cloned().collect()
}

#[test]
fn a_good_restart_leaves_exactly_one_generation_the_new_one() {
    let env = Env::new();
    let old = env.json(
        &["spawn", "--wait-ready", "-o", "json"],
        Some(
            &env.request(json!({"label": "swap", "spawnRequestId": "swap-000001", "prompt": "first task"})).to_string(),
        ),
    )["agent"]
        .clone();
    let agent_id = old["agentId"].as_str().unwrap().to_string();
    let old_pid = old["pid"].as_u64().unwrap();
    let watch = Watch::start(&env);

    let out = env.run(&["restart", "swap-000001", "--spawn-request-id", "swap-000002", "-o", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer = schema::parse_valid("restart-answer", &out.stdout);
    let new = &answer["agent"];
    assert_eq!(new["agentId"], agent_id.as_str(), "the successor is the same agent: {answer}");
    assert_eq!(new["spawnRequestId"], "swap-000002");
    assert_ne!(new["systemdUnit"], old["systemdUnit"]);
    assert_eq!(answer["predecessorUnit"], old["systemdUnit"]);
    assert_eq!(answer["predecessorPid"].as_u64(), Some(old_pid));
    let new_pid = new["pid"].as_u64().unwrap();
    assert!(pid_alive(new_pid) && !pid_alive(old_pid), "old {old_pid} new {new_pid}");
    // Exactly one generation, the new one; the agent id names it alone.
    let gens = generations(&env, &agent_id);
    assert_eq!(gens.len(), 1, "{gens:?}");
    assert_eq!(gens[0]["systemdUnit"], new["systemdUnit"]);
    assert_eq!(env.json(&["show", &agent_id, "-o", "json"], None)["systemdUnit"], new["systemdUnit"]);
    // The successor ran without the first prompt (no replayPromptOnRestart).
    let argv = cmdline(new_pid).join(" ");
    assert!(!argv.contains("first task"), "{argv}");
    // watch saw the swap: the successor spawned and started before the predecessor stopped.
    let new_unit = new["systemdUnit"].as_str().unwrap().to_string();
    let old_unit = old["systemdUnit"].as_str().unwrap().to_string();
    let events = watch
        .until(Duration::from_secs(5), |e| {
            e["unit"] == old_unit.as_str() && matches!(e["type"].as_str(), Some("stopped" | "removed"))
        })
        .expect("the predecessor's stop in watch");
    let at = |unit: &str, kind: &str| events.iter().position(|(_, e)| e["unit"] == unit && e["type"] == kind);
    let started = at(&new_unit, "started").expect("successor started");
    let stopped = events
        .iter()
        .position(|(_, e)| e["unit"] == old_unit.as_str() && matches!(e["type"].as_str(), Some("stopped" | "removed")))
        .unwrap();
    assert!(started < stopped, "{events:?}");
    eprintln!("restart: registered in {} ms, swap {} ms", answer["registeredMs"], answer["swapMs"]);
}

#[test]
fn a_successor_that_exits_at_once_leaves_the_predecessor_running_with_its_pid() {
    let env = Env::new();
    let old = env.spawn(&env.request(json!({"label": "keep", "spawnRequestId": "keep-000001"})))["agent"].clone();
    let agent_id = old["agentId"].as_str().unwrap().to_string();
    let old_pid = old["pid"].as_u64().unwrap();
    // The successor's request: its runner exits 60 ms after it starts.
    let bad = env
        .request(json!({"label": "keep2", "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "60", "FAKE_RUNNER_EXIT_CODE": "3"}}));
    let out = env.run(&["restart", "keep-000001", "--spec", "-", "-o", "json"], Some(&bad.to_string()));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = schema::parse_valid("error", &out.stdout);
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("restart aborted") && msg.contains("keeps running"), "{msg}");
    assert!(msg.contains(&format!("pid {old_pid}")), "{msg}");
    // The predecessor: same unit, same pid, alive; the only generation.
    assert!(pid_alive(old_pid));
    let gens = generations(&env, &agent_id);
    assert_eq!(gens.len(), 1, "{gens:?}");
    assert_eq!(gens[0]["systemdUnit"], old["systemdUnit"]);
    assert_eq!(gens[0]["pid"].as_u64(), Some(old_pid));
    assert_eq!(env.agent_units().len(), 1, "the failed successor is gone: {:?}", env.agent_units());

    // A successor under the predecessor's own spawnRequestId is refused before anything starts.
    let out = env.run(&["restart", "keep-000001", "--spawn-request-id", "keep-000001"], None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spawnRequestId of its own"));
    // A stopped agent cannot be restarted: exit 2, not_running.
    env.json(&["stop", "keep-000001", "-o", "json"], None);
    let out = env.run(&["restart", old["systemdUnit"].as_str().unwrap()], None);
    assert!(matches!(out.status.code(), Some(2 | 3)), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
}

#[test]
fn a_durable_agent_restarts_into_a_durable_successor() {
    let env = Env::new();
    let old = env.persist(&env.request(json!({"label": "dur", "spawnRequestId": "dur-000001"})))["agent"].clone();
    let old_unit = old["systemdUnit"].as_str().unwrap().to_string();
    let agent_id = old["agentId"].as_str().unwrap().to_string();
    let out = env.run(&["restart", "dur-000001", "--spawn-request-id", "dur-000002", "-o", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_unit = answer["agent"]["systemdUnit"].as_str().unwrap().to_string();
    assert_eq!(answer["agent"]["durable"], true, "{answer}");
    assert!(env.unit_dir().join(&new_unit).exists(), "the successor's unit file");
    assert!(!env.unit_dir().join(&old_unit).exists(), "the predecessor's unit file is removed");
    let gens = generations(&env, &agent_id);
    assert_eq!(gens.len(), 1, "{gens:?}");
    assert_eq!(gens[0]["systemdUnit"], new_unit.as_str());
}
