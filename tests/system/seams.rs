//! The seams the orchestrator drives us through, against a real private `systemd --user`: `stop`
//! waits exactly the caller's window and `killed` says who ended the agent; different requests
//! never share a unit; every id that spawns can be addressed, and an ambiguous reference is
//! refused; `watch` starts from a snapshot, numbers its events and carries the state after each.

use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn log_of(agent: &Value) -> String {
    std::fs::read_to_string(agent["logFile"].as_str().unwrap()).unwrap_or_default()
}

#[test]
fn stop_waits_the_callers_window_and_killed_tells_who_ended_the_agent() {
    let env = Env::new();
    let spawn =
        |rid: &str, vars: Value| env.spawn(&env.request(json!({"spawnRequestId": rid, "env": vars})))["agent"].clone();
    let deaf = json!({"FAKE_RUNNER_IGNORE_SIGTERM": "1"});
    // (agent, --timeout-stop, seconds until the answer, killed)
    let cases = [
        // Ignores SIGTERM: killed by us when the caller's 12 s are up (the unit's own 10 s must not decide).
        (spawn("stop-deaf-12", deaf.clone()), "12", 12.0, true),
        // Exits by itself 14 s after SIGTERM: inside the caller's 20 s, so nobody kills it.
        (spawn("stop-slow-20", json!({"FAKE_RUNNER_TERM_EXIT_AFTER_MS": "14000"})), "20", 14.0, false),
        // 0 and negative mean the default, 10 s (the seed's rule).
        (spawn("stop-deaf-zero", deaf.clone()), "0", 10.0, true),
        (spawn("stop-deaf-negative", deaf), "-3", 10.0, true),
    ];
    let probe = env.spawn(&env.request(json!({"spawnRequestId": "stop-probe"})))["agent"].clone();
    let answers = parallel(&cases, cases.len(), |(agent, timeout, _, _)| {
        let rid = agent["spawnRequestId"].as_str().unwrap();
        let arg = format!("--timeout-stop={timeout}");
        let start = Instant::now();
        let out = env.run(&["stop", rid, &arg, "-o", "json"], None);
        (start.elapsed().as_secs_f64(), out)
    });
    for ((agent, timeout, want_secs, want_killed), (secs, out)) in cases.iter().zip(answers) {
        let rid = agent["spawnRequestId"].as_str().unwrap();
        assert!(
            out.status.success(),
            "stop {rid} --timeout-stop={timeout}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v = stdout_json(&out);
        assert!(
            (want_secs - 0.5..want_secs + 3.0).contains(&secs),
            "stop {rid} --timeout-stop={timeout} answered after {secs:.1} s, want ≈{want_secs} s: {v}"
        );
        assert_eq!(v["killed"], json!(want_killed), "stop {rid} --timeout-stop={timeout}: {v}");
        assert_eq!((&v["stopped"], &v["wasRunning"]), (&json!(true), &json!(true)), "{v}");
        let pid = agent["pid"].as_u64().unwrap();
        assert!(!pid_alive(pid), "{rid}: runner {pid} still alive after stop");
    }
    let slow = log_of(&cases[1].0);
    assert!(slow.contains("FAKE-RUNNER EXIT 0"), "the slow runner did not end by itself: {slow}");

    // The unit's own stop timeout is out of our way: an operator's `systemctl stop` waits longer
    // than any window a caller can ask for (systemctl prints 70 s as `1min 10s`).
    let unit = probe["systemdUnit"].as_str().unwrap();
    let timeout = env.prop(unit, "TimeoutStopUSec");
    assert!(timeout.contains("min"), "TimeoutStopUSec of {unit}: {timeout}");
}

#[test]
fn stopping_a_dead_agent_says_nothing_was_stopped() {
    let env = Env::new();
    // One that failed (its unit stays, failed) and one that exited 0 (its unit is collected).
    let failed = env.spawn(&env.request(json!({
        "spawnRequestId": "dead-failed", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100", "FAKE_RUNNER_EXIT_CODE": "3"}
    })))["agent"]
        .clone();
    let done = env.spawn(&env.request(json!({
        "spawnRequestId": "dead-done", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100"}
    })))["agent"]
        .clone();
    let failed_unit = failed["systemdUnit"].as_str().unwrap();
    let done_unit = done["systemdUnit"].as_str().unwrap();
    assert!(wait_until(Duration::from_secs(10), || env.prop(failed_unit, "ActiveState") == "failed"));
    assert!(wait_until(Duration::from_secs(10), || env.prop(done_unit, "LoadState") == "not-found"));
    for rid in ["dead-failed", "dead-done"] {
        let out = env.run(&["stop", rid, "-o", "json"], None);
        assert!(out.status.success(), "stop {rid}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        let v = stdout_json(&out);
        assert_eq!(
            (&v["stopped"], &v["wasRunning"], &v["killed"]),
            (&json!(false), &json!(false), &json!(false)),
            "stop {rid}: {v}"
        );
    }
    // A stop clears what a dead agent leaves behind: the failed unit is reset.
    assert_eq!(env.prop(failed_unit, "LoadState"), "not-found", "the failed unit was not reset");
}

#[test]
fn requests_that_share_an_id_tail_or_no_label_get_units_of_their_own() {
    let env = Env::new();
    // The same last 8 characters; the same id once sanitised; none has a label.
    let ids = ["alpha-00000001", "bravo-00000001", "req.a", "req:a", "REQ-A", "req-a"];
    let mut units = Vec::new();
    for rid in ids {
        let req = env.request(json!({"spawnRequestId": rid})).to_string();
        let out = env.run(&["spawn", "-o", "json"], Some(&req));
        assert!(out.status.success(), "spawn {rid}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        let v = stdout_json(&out);
        assert_eq!(v["created"], true, "{rid}: {v}");
        units.push(v["agent"]["systemdUnit"].as_str().unwrap().to_string());
    }
    let distinct: std::collections::BTreeSet<&String> = units.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "units shared: {units:?}");
    // Labelled requests too.
    let labelled: Vec<String> = ["x-12345678", "y-12345678"]
        .iter()
        .map(|rid| {
            env.spawn(&env.request(json!({"spawnRequestId": rid, "label": "fix"})))["agent"]["systemdUnit"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_ne!(labelled[0], labelled[1]);
    // A retry of each request still maps to its one unit, and each id finds its own agent.
    for (rid, unit) in ids.iter().zip(&units) {
        let again = env.spawn(&env.request(json!({"spawnRequestId": rid})));
        assert_eq!((&again["created"], again["agent"]["systemdUnit"].as_str()), (&json!(false), Some(unit.as_str())));
        let shown = env.json(&["show", rid, "-o", "json"], None);
        assert_eq!(shown["systemdUnit"].as_str(), Some(unit.as_str()), "show {rid}: {shown}");
    }
    // An agent id spelled like another request's spawnRequestId is another id: its own unit.
    let named = env.spawn(&env.request(json!({"agentId": "alpha-00000001"})))["agent"].clone();
    assert!(!units.iter().any(|u| named["systemdUnit"] == json!(u)), "{named}");
    assert_eq!(env.agent_units().len(), ids.len() + 3);
}

#[test]
fn every_id_that_spawns_can_be_addressed_and_an_ambiguous_one_is_refused() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "team/alpha/1", "agentId": "org/agent/7", "policyName": "nightly"
    })))["agent"]
        .clone();
    let unit = a["systemdUnit"].as_str().unwrap().to_string();
    let session = a["sessionName"].as_str().unwrap().to_string();
    let bare = unit.strip_suffix(".service").unwrap().to_string();
    for reference in ["team/alpha/1", "org/agent/7", &unit, &bare, &session, "nightly"] {
        let out = env.run(&["show", reference, "-o", "json"], None);
        assert!(out.status.success(), "show {reference}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout_json(&out)["systemdUnit"].as_str(), Some(unit.as_str()), "show {reference}");
    }

    // A second agent under the same policy, a third with the same agent id: both references
    // now name two agents, and no verb picks one of them silently.
    let b =
        env.spawn(&env.request(json!({"spawnRequestId": "team/bravo/1", "policyName": "nightly"})))["agent"].clone();
    let c =
        env.spawn(&env.request(json!({"spawnRequestId": "team/charlie/1", "agentId": "org/agent/7"})))["agent"].clone();
    for (reference, other) in [("nightly", &b), ("org/agent/7", &c)] {
        for verb in ["show", "stop", "diagnose"] {
            let out = env.run(&[verb, reference, "-o", "json"], None);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{verb} {reference}: {err}");
            let v = stdout_json(&out);
            assert_eq!(v["error"]["kind"], "ambiguous", "{verb} {reference}: {v}");
            let message = v["error"]["message"].as_str().unwrap();
            for u in [&unit, other["systemdUnit"].as_str().unwrap()] {
                assert!(message.contains(u), "{verb} {reference}: {message} does not name {u}");
                assert!(v["error"]["matches"].as_array().unwrap().contains(&json!(u)), "{v}");
            }
        }
    }
    for agent in [&a, &b, &c] {
        assert!(pid_alive(agent["pid"].as_u64().unwrap()), "an ambiguous stop stopped {}", agent["systemdUnit"]);
    }
    // Addressed by an id with slashes, the agent stops.
    let stopped = env.json(&["stop", "team/alpha/1", "-o", "json"], None);
    assert_eq!((&stopped["stopped"], stopped["systemdUnit"].as_str()), (&json!(true), Some(unit.as_str())));
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|v| v["type"].as_str().unwrap()).collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|v| v["seq"].as_u64().unwrap_or(0)).collect()
}

#[test]
fn watch_starts_from_a_snapshot_numbers_its_events_and_carries_the_new_state() {
    let env = Env::new();
    let before = env.spawn(&env.request(json!({"spawnRequestId": "watch-before"})))["agent"].clone();
    // A fresh watch, twice: the agent that already ran is a snapshot, never announced anew.
    for _ in 0..2 {
        let (watch, preamble) = Watch::start_with_preamble(&env);
        assert_eq!(kinds(&preamble), ["snapshot", "ready"], "{preamble:?}");
        assert_eq!(seqs(&preamble), [1, 2], "{preamble:?}");
        assert_eq!(preamble[0]["agent"]["invocationId"], before["invocationId"]);
        assert_eq!(preamble[0]["agent"]["state"], "alive");
        drop(watch);
    }

    let (watch, preamble) = Watch::start_with_preamble(&env);
    // A persistent agent that crashes once a run: it is restarted after 2 s.
    let crash = env.spawn(&env.request(json!({
        "spawnRequestId": "watch-crash", "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "500", "FAKE_RUNNER_EXIT_CODE": "3"}
    })))["agent"]
        .clone();
    let unit = crash["systemdUnit"].as_str().unwrap().to_string();
    let mut started = 0;
    let events: Vec<Value> = watch
        .until(Duration::from_secs(15), |v| {
            started += (v["type"] == "started" && v["unit"] == json!(unit)) as u32;
            started == 2
        })
        .expect("a restart of the crashing agent")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut all = preamble.clone();
    all.extend(events.iter().cloned());
    let want: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs(&all), want, "{:?}", kinds(&all));

    let about: Vec<&Value> = events.iter().filter(|v| v["unit"] == json!(unit)).collect();
    let exited = about.iter().find(|v| v["type"] == "exited").expect("an exited event");
    assert_eq!(exited["exit"]["exitCode"], 3, "{exited}");
    assert_ne!(exited["agent"]["state"], "alive", "exited carries the state before the exit: {exited}");
    assert_eq!(exited["agent"]["pid"], Value::Null, "{exited}");
    let restarted = about.iter().rev().find(|v| v["type"] == "started").unwrap();
    let agent = &restarted["agent"];
    assert_eq!(agent["state"], "alive", "{restarted}");
    assert_eq!(agent["restarts"], 1, "{restarted}");
    assert_ne!(agent["pid"], crash["pid"], "the restarted run's pid: {restarted}");
    assert_ne!(agent["invocationId"], crash["invocationId"], "the restarted run's invocation: {restarted}");
    assert!(
        agent["startedAt"].as_u64().unwrap() > crash["startedAt"].as_u64().unwrap(),
        "the restarted run's start: {restarted}"
    );
}
