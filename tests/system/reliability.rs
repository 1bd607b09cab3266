//! Reliability: races settled by systemd, stop and reap racing on one agent, and secrets that
//! never show where an operator or another user could read them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

#[test]
fn fifty_concurrent_spawns_of_one_request_make_one_unit() {
    let env = Env::new();
    let req = env.request(json!({"spawnRequestId": "race-50", "label": "same"})).to_string();
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..50).map(|_| s.spawn(|| env.json(&["spawn", "-o", "json"], Some(&req)))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: std::collections::BTreeSet<&str> =
        results.iter().map(|r| r["agent"]["agentId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(results.iter().filter(|r| r["created"] == true).count(), 1);
    assert_eq!(env.agent_units().len(), 1);
    assert_eq!(std::fs::read_dir(env.agents_dir()).unwrap().count(), 1, "losers left files");
}

#[test]
fn stop_and_reap_racing_on_one_agent_lose_nothing() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({"spawnRequestId": "contested", "env": {"FAKE_RUNNER_IGNORE_SIGTERM": "1"}})));
    let session = a["agent"]["sessionName"].as_str().unwrap().to_string();
    // A gone agent's leftovers for the reaps to contend over: an ephemeral agent that ended by
    // itself (a failed unit, its exit recorded, its files still there).
    let e = env.spawn(&env.request(json!({
        "spawnRequestId": "ended", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "300", "FAKE_RUNNER_EXIT_CODE": "3"}
    })));
    let ended_unit = e["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let ended_session = e["agent"]["sessionName"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || env.prop(&ended_unit, "ActiveState") == "failed"
        && std::fs::read_dir(env.exits_dir().join(&ended_session)).map(|d| d.count()).unwrap_or(0) == 1));
    assert!(wait_until(Duration::from_secs(5), || env.runner_info(&session).exists()));
    // Every file older than the reaper's grace (a fresh file is never reaped, whoever holds the
    // lock): each reap acts on what it finds, and the lock is all that keeps two from acting on
    // the same thing, or one from acting on what the stop is removing.
    let agents = env.agents_dir();
    let runners = env.runners_dir();
    let ended_dirs = session_dirs(&agents, &ended_session);
    assert_eq!(ended_dirs.len(), 1, "{ended_dirs:?}");
    assert_eq!(session_dirs(&agents, &session).len(), 1);
    for dir in [&agents, &runners] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            backdate(&e.path(), 3600);
        }
    }

    // The stop needs SIGKILL after 1 s; three reapers reap in a loop until it has returned.
    let stopping = AtomicBool::new(true);
    let (stop, reaps) = std::thread::scope(|s| {
        let stop = s.spawn(|| {
            let out = env.run(&["stop", "contested", "--timeout-stop", "1", "-o", "json"], None);
            stopping.store(false, Ordering::SeqCst);
            out
        });
        let reapers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = vec![env.run(&["reap", "-o", "json"], None)];
                    while stopping.load(Ordering::SeqCst) {
                        mine.push(env.run(&["reap", "-o", "json"], None));
                    }
                    mine
                })
            })
            .collect();
        (stop.join().unwrap(), reapers.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>())
    });
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let stopped: Value = serde_json::from_slice(&stop.stdout).unwrap();
    assert_eq!((stopped["stopped"].clone(), stopped["killed"].clone()), (json!(true), json!(true)));
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reaps {
        assert!(r.status.success(), "a reap failed: {}", String::from_utf8_lossy(&r.stderr));
        let v: Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(v["failed"], json!([]), "{v}");
        for a in v["actions"].as_array().unwrap() {
            *done.entry(format!("{} {}", a["action"].as_str().unwrap(), a["target"].as_str().unwrap())).or_default() +=
                1;
        }
    }
    println!("{} reaps raced the stop; what they did: {done:?}", reaps.len());
    // The ended agent was reaped exactly once, by one of the reaps: reset, its files removed.
    let once = |what: String| assert_eq!(done.get(&what), Some(&1), "{what}: {done:?}");
    once(format!("reset-failed-unit {ended_unit}"));
    once(format!("remove-agent-files {}", ended_dirs[0].display()));
    // Nothing was done twice.
    assert!(done.values().all(|n| *n == 1), "two reaps did the same: {done:?}");
    assert!(wait_until(Duration::from_secs(5), || env.agent_units().is_empty()), "{:?}", env.agent_units());
    assert_eq!(std::fs::read_dir(&agents).unwrap().count(), 0, "files left in {}", agents.display());
    // The exit of the stopped run is recorded and still known.
    let records = env.exits_dir().join(&session);
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0) >= 1));
    let d = env.json(&["diagnose", "contested", "-o", "json"], None);
    assert_eq!(d["exit"]["signal"], "SIGKILL", "{}", d["exit"]);
    let d = env.json(&["diagnose", "ended", "-o", "json"], None);
    assert_eq!(d["exit"]["exitCode"], 3, "{}", d["exit"]);
}

#[test]
fn the_token_and_the_prompt_never_show_where_others_look() {
    const PROMPT: &str = "PROMPT-7c1e-never-visible";
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "secretive", "label": "quiet", "prompt": PROMPT,
        "env": {"API_KEY": "KEY-9d2b-never-visible"}, "systemPromptAppend": "APPEND-5e5e-never-visible"
    })))["agent"]
        .clone();
    let unit = a["systemdUnit"].as_str().unwrap();
    let log = a["logFile"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("PROMPT-BYTES")));
    let secrets = [TOKEN, PROMPT, "KEY-9d2b-never-visible", "APPEND-5e5e-never-visible"];
    let show = env.systemctl(&["show", unit]);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let record = serde_json::to_string(&env.json(&["show", "secretive", "-o", "json"], None)).unwrap();
    let listed = serde_json::to_string(&env.json(&["list", "-o", "json"], None)).unwrap();
    let mut cmdlines = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            cmdlines.push_str(&String::from_utf8_lossy(&c));
            cmdlines.push('\n');
        }
    }
    for s in secrets {
        assert!(!show.contains(s), "{s} in systemctl show (Environment, Description, LogExtraFields)");
        assert!(!log_text.contains(s), "{s} in the agent's log");
        assert!(!record.contains(s) && !listed.contains(s), "{s} in an agent record");
        assert!(!cmdlines.contains(s), "{s} in some /proc/*/cmdline");
    }
    // Where they do live: 0600 files in 0700 directories of the runtime dir.
    let dir = std::fs::read_dir(env.agents_dir()).unwrap().next().unwrap().unwrap().path();
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&env.agents_dir()), 0o700);
}
