//! Exit truth: every exit code and common signal (500 exits at once) is reported exactly by
//! `diagnose`, also after the unit has been collected and with no watcher running; crash loops
//! are named as such.

use std::time::Duration;

use crate::util::*;
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};

fn ended(env: &Env, unit: &str) -> bool {
    let state = env.prop(unit, "ActiveState");
    state == "failed" || state == "inactive"
}

#[test]
fn five_hundred_exits_are_reported_exactly_after_the_units_are_collected() {
    let env = Env::new();
    let signals = ["TERM", "KILL", "SEGV", "ABRT", "INT", "HUP", "USR1", "USR2", "QUIT", "BUS", "FPE", "ALRM", "PIPE"];
    let seed = chaos_seed();
    println!("seed {seed} (rerun with AGENT_RELAY_CHAOS_SEED={seed})");
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::XorShift, &bytes);
    // Every status and 13 signals once, the rest of the 500 drawn at random; all end within a
    // few seconds of each other, while spawns still go on, and no watcher runs.
    let mut cases: Vec<(String, Value, Value)> = Vec::new();
    let mut add = |id: String, rng: &mut TestRng, how: Result<u8, &str>| {
        let after = rng.random_range(2000..5000).to_string();
        let (vars, want) = match how {
            Ok(c) => (
                json!({"FAKE_RUNNER_EXIT_AFTER_MS": after, "FAKE_RUNNER_EXIT_CODE": c.to_string()}),
                json!({"kind": "exited", "exitCode": c}),
            ),
            Err(s) => (
                json!({"FAKE_RUNNER_EXIT_AFTER_MS": after, "FAKE_RUNNER_KILL_SELF": s}),
                json!({"kind": "signal", "signal": format!("SIG{s}")}),
            ),
        };
        cases.push((id, vars, want));
    };
    for c in 0..=255u8 {
        add(format!("code-{c}"), &mut rng, Ok(c));
    }
    for s in signals {
        add(format!("sig-{}", s.to_lowercase()), &mut rng, Err(s));
    }
    for i in 269..500 {
        let how = if rng.random_range(0..4) == 0 {
            Err(signals[rng.random_range(0..signals.len())])
        } else {
            Ok(rng.random::<u8>())
        };
        add(format!("random-{i}"), &mut rng, how);
    }
    let started = std::time::Instant::now();
    let units = parallel(&cases, 4, |(id, vars, _)| {
        let out = env.spawn(&env.request(json!({"spawnRequestId": id, "lifecycle": "ephemeral", "env": vars})));
        out["agent"]["systemdUnit"].as_str().unwrap().to_string()
    });
    let spawned_in = started.elapsed();
    // One listing per poll (not one `systemctl show` per unit): every unit failed or inactive.
    let all_ended = || {
        let listing = env.systemctl(&["list-units", "--all", "--plain", "--no-legend", "agent-relay-managed-*"]);
        let states: std::collections::BTreeMap<&str, &str> = listing
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?, w.nth(1)?))
            })
            .collect();
        units.iter().all(|u| states.get(u.as_str()).is_none_or(|s| *s == "failed" || *s == "inactive"))
    };
    assert!(wait_until(Duration::from_secs(60), all_ended), "agents did not end");
    let ended_in = started.elapsed();
    // Collect every unit: systemd forgets them; only our exit records remain.
    env.systemctl(&["reset-failed"]);
    assert!(wait_until(Duration::from_secs(5), || env.agent_units().is_empty()), "left: {:?}", env.agent_units());
    let collected_in = started.elapsed();
    let diagnoses = parallel(&cases, 4, |(id, _, _)| env.json(&["diagnose", id, "-o", "json"], None));
    println!(
        "{} exits: spawned by {:.1} s, all ended by {:.1} s, collected by {:.1} s, diagnosed by {:.1} s",
        cases.len(),
        spawned_in.as_secs_f64(),
        ended_in.as_secs_f64(),
        collected_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for ((id, _, want), d) in cases.iter().zip(&diagnoses) {
        assert_eq!(d["unitLoaded"], false, "{id}");
        assert_eq!(d["state"], "dead", "{id}");
        assert_eq!(d["exit"]["source"], "record", "{id}");
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&d["exit"][k], v, "{id}: exit.{k} in {}", d["exit"]);
        }
        let sentence = d["lastError"].as_str().unwrap();
        assert!(sentence.starts_with("managed claude session ar-claude-session-"), "{sentence}");
        assert!(d["lastLogLines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("FAKE-RUNNER START")));
    }
    // A unit systemd no longer knows and with no record is not a success: it is not found.
    let out = env.run(&["diagnose", "never-existed"], None);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn diagnose_of_a_live_failed_unit_uses_its_own_run() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "live-fail", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100", "FAKE_RUNNER_EXIT_CODE": "3"}
    })));
    let unit = a["agent"]["systemdUnit"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || ended(&env, &unit)));
    let d = env.json(&["diagnose", "live-fail", "-o", "json"], None);
    assert_eq!((d["unitLoaded"].clone(), d["exit"]["exitCode"].clone()), (json!(true), json!(3)));
    assert_eq!(d["activeState"], "failed");
    let alive = env.spawn(&env.request(json!({"spawnRequestId": "alive-1"})));
    let d = env.json(&["diagnose", "alive-1", "-o", "json"], None);
    assert_eq!(d["state"], "alive");
    assert_eq!(d["exit"]["kind"], "unknown", "a running agent has no exit yet");
    assert_eq!(d["lastError"], Value::Null);
    drop(alive);
}

#[test]
fn a_crash_looping_persistent_agent_is_restarted_then_reported_as_crash_looping() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "looper", "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "50", "FAKE_RUNNER_EXIT_CODE": "9"}
    })));
    let unit = a["agent"]["systemdUnit"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || env.prop(&unit, "NRestarts") != "0"), "not restarted");
    // Restarts every 2 s until the start limit (5 in 60 s) refuses one; the unit then stays failed.
    assert!(
        wait_until(Duration::from_secs(30), || env.prop(&unit, "ActiveState") == "failed"),
        "never hit the start limit: {} {}",
        env.prop(&unit, "ActiveState"),
        env.prop(&unit, "NRestarts")
    );
    let rec = env.json(&["show", "looper", "-o", "json"], None);
    assert_eq!(rec["crashLooping"], true);
    assert!(rec["restarts"].as_u64().unwrap() >= 4, "{rec}");
    let d = env.json(&["diagnose", "looper", "-o", "json"], None);
    assert_eq!(d["exit"]["kind"], "crash-loop", "{}", d["exit"]);
    assert_eq!(d["crashLooping"], true);
    assert!(d["lastError"].as_str().unwrap().contains("crash-looped"));
    assert!(d["exitRecords"].as_u64().unwrap() >= 5, "one record per run, none overwritten: {}", d["exitRecords"]);
    assert_eq!(d["previousExit"]["exitCode"], 9);
}

#[test]
fn kill_signals_the_agent_and_logs_are_sanitised() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "kill-me", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_SAY": "\\e[31mred\\e[0m and \\e]0;title\\aplain"}
    })));
    let log = a["agent"]["logFile"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log).unwrap_or_default().contains("plain")));
    let lines = env.json(&["logs", "kill-me", "-n", "3", "-o", "json"], None);
    let lines: Vec<&str> = lines["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(lines.contains(&"red and plain"), "{lines:?}");
    let raw = env.json(&["logs", "kill-me", "--raw", "-o", "json"], None);
    assert!(raw["lines"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains('\u{1b}')));
    let bad = env.run(&["logs", "kill-me", "-n", "0"], None);
    assert_eq!(bad.status.code(), Some(2));

    let out = env.json(&["kill", "kill-me", "--signal", "KILL", "--whom", "main", "-o", "json"], None);
    assert_eq!(out["signal"], "SIGKILL");
    let unit = a["agent"]["systemdUnit"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || ended(&env, &unit)));
    let d = env.json(&["diagnose", "kill-me", "-o", "json"], None);
    assert_eq!((d["exit"]["kind"].clone(), d["exit"]["signal"].clone()), (json!("signal"), json!("SIGKILL")));
    let again = env.run(&["kill", "kill-me"], None);
    assert_eq!(again.status.code(), Some(2), "nothing to signal");
}
