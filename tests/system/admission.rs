//! Spawn admission against a real user manager: at most `maxConcurrentSpawns` spawns starting at
//! once across CLI processes, a host-headroom gate that queues and then refuses cleanly, the
//! queue visible to `list` and `watch`, `--no-wait`, and a retry of a queued request joining it.

use crate::util::*;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Milliseconds since the epoch of a file's modification.
fn mtime_ms(p: &std::path::Path) -> u64 {
    let m = std::fs::metadata(p).unwrap().modified().unwrap();
    m.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn queued(env: &Env) -> Vec<Value> {
    let list = env.json(&["list", "-o", "json"], None);
    list.as_array().unwrap().iter().filter(|a| a["state"] == "queued").cloned().collect()
}

fn admission_files(env: &Env) -> Vec<String> {
    let q = env.runtime_dir().join("agent-relay-systemd/admission/queue");
    std::fs::read_dir(q)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn six_concurrent_spawns_never_have_more_than_two_starting_and_all_finish() {
    let env = Env::with_config(|c| {
        c["maxConcurrentSpawns"] = json!(2);
    });
    // Each runner registers (writes its runner info) 700 ms after it starts; a spawn holds its
    // slot until then (--wait-ready), as the orchestrator holds one until registration.
    let labels: Vec<String> = (0..6).map(|i| format!("slot{i}")).collect();
    let began = Instant::now();
    let seen_queued = std::sync::atomic::AtomicBool::new(false);
    let outs: Vec<Value> = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            // While they wait, `list` shows the waiting ones as queued, with place and reason.
            wait_until(Duration::from_secs(10), || {
                let q = queued(&env);
                let good = !q.is_empty()
                    && q.iter().all(|a| a["queue"]["position"].as_u64().is_some_and(|p| p >= 1))
                    && q.iter().all(|a| a["queue"]["reason"].as_str().is_some_and(|r| !r.is_empty()));
                if good {
                    seen_queued.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                good
            })
        });
        let outs = parallel(&labels, 6, |label| {
            let req = env.request(json!({"label": label, "env": {"FAKE_RUNNER_INFO_DELAY_MS": "700"}}));
            let out = env.run_within(
                Duration::from_secs(60),
                &["spawn", "--wait-ready", "-o", "json"],
                Some(&req.to_string()),
            );
            assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        });
        watcher.join().unwrap();
        outs
    });
    let took = began.elapsed();
    assert!(seen_queued.load(std::sync::atomic::Ordering::SeqCst), "list never showed a queued spawn");
    assert!(outs.iter().all(|o| o["created"] == true), "{outs:?}");
    // Three waves of two: at least 3 × 700 ms.
    assert!(took >= Duration::from_millis(2100), "six spawns through two slots took only {took:?}");
    // Each runner's start (ExecMainStartTimestamp) to its registration (runner info written):
    // never more than two of these windows overlap.
    let mut windows: Vec<(u64, u64)> = outs
        .iter()
        .map(|o| {
            let start = o["agent"]["startedAt"].as_u64().expect("startedAt");
            let info = env.runner_info(o["agent"]["sessionName"].as_str().unwrap());
            (start, mtime_ms(&info))
        })
        .collect();
    windows.sort();
    for (i, w) in windows.iter().enumerate() {
        let overlapping = windows.iter().enumerate().filter(|(j, o)| *j != i && o.0 < w.1 && w.0 < o.1).count();
        assert!(overlapping <= 1, "more than two spawns starting at once: {windows:?}");
    }
    let waited: Vec<u64> = outs.iter().map(|o| o["queuedMs"].as_u64().unwrap()).collect();
    assert!(waited.iter().filter(|w| **w >= 500).count() >= 4, "four spawns waited for a slot: {waited:?}");
    eprintln!("six spawns, two slots: {took:?} in all, queue waits (ms) {waited:?}");
    assert!(admission_files(&env).is_empty(), "no ticket left: {:?}", admission_files(&env));
}

#[test]
fn a_spawn_the_memory_gate_refuses_queues_visibly_then_fails_with_nothing_started() {
    let env = Env::with_config(|c| {
        // More usable memory than any machine of ours has: the gate never opens.
        c["spawnMinFreeMemMb"] = json!(1u64 << 40);
        c["spawnAdmissionMaxWaitMs"] = json!(2500);
        c["spawnAdmissionPollMs"] = json!(200);
    });
    let watch = Watch::start(&env);
    let req = env.request(json!({"label": "nomem", "spawnRequestId": "gate-000001"}));
    let began = Instant::now();
    let (out, q) = std::thread::scope(|s| {
        let h = s.spawn(|| env.run_within(Duration::from_secs(20), &["spawn", "-o", "json"], Some(&req.to_string())));
        let mut q = Vec::new();
        assert!(wait_until(Duration::from_secs(2), || {
            q = queued(&env);
            !q.is_empty()
        }));
        (h.join().unwrap(), q)
    });
    let took = began.elapsed();
    // list showed it queued: first in line, waiting for memory.
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["spawnRequestId"], "gate-000001");
    assert_eq!(q[0]["queue"]["position"], 1);
    assert!(q[0]["queue"]["reason"].as_str().unwrap().starts_with("usable memory"), "{q:?}");
    assert_eq!(q[0]["pid"], Value::Null);
    // Then it fails: exit 9, kind not-admitted, the orchestrator's marker, one line.
    assert_eq!(out.status.code(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took >= Duration::from_millis(2400) && took < Duration::from_secs(10), "took {took:?}");
    let err = schema::parse_valid("error", &out.stdout);
    assert_eq!(err["error"]["kind"], "not-admitted", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("spawn rejected: host-headroom-timeout"), "{msg}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
    // Nothing started, nothing left: no unit, no agent files, no ticket.
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
    let left: Vec<_> =
        std::fs::read_dir(env.agents_dir()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "agent files left: {left:?}");
    assert!(admission_files(&env).is_empty(), "{:?}", admission_files(&env));
    // watch said so: queued, then dequeued without a spawn.
    let events = watch.until(Duration::from_secs(5), |e| e["type"] == "dequeued").expect("a dequeued event");
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"queued") && !kinds.contains(&"spawned"), "{kinds:?}");
    let (_, last) = events.last().unwrap();
    assert_eq!(last["detail"], "left the queue");

    // --no-wait: the same refusal at once.
    let began = Instant::now();
    let out = env.run(&["spawn", "--no-wait", "-o", "json"], Some(&req.to_string()));
    assert_eq!(out.status.code(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(began.elapsed() < Duration::from_secs(2), "--no-wait waited {:?}", began.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-wait"));
    assert!(env.agent_units().is_empty());
}

#[test]
fn a_retry_of_a_queued_request_joins_it_instead_of_queueing_again() {
    let env = Env::with_config(|c| {
        c["maxConcurrentSpawns"] = json!(1);
    });
    // One spawn holds the only slot for 2.5 s (its runner registers late).
    let holder = env.request(json!({"label": "holder", "env": {"FAKE_RUNNER_INFO_DELAY_MS": "2500"}}));
    let req = env.request(json!({"label": "queued", "spawnRequestId": "join-000001"}));
    let (first, retry, q) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            env.run_within(Duration::from_secs(30), &["spawn", "--wait-ready", "-o", "json"], Some(&holder.to_string()))
        });
        assert!(wait_until(Duration::from_secs(5), || env.agent_units().len() == 1));
        let first =
            s.spawn(|| env.run_within(Duration::from_secs(30), &["spawn", "-o", "json"], Some(&req.to_string())));
        assert!(wait_until(Duration::from_secs(5), || queued(&env).len() == 1));
        let retry =
            s.spawn(|| env.run_within(Duration::from_secs(30), &["spawn", "-o", "json"], Some(&req.to_string())));
        std::thread::sleep(Duration::from_millis(500));
        // Still one queued spawn of the request: the retry waits on the request, not in the queue.
        let q = queued(&env);
        assert!(h.join().unwrap().status.success());
        (first.join().unwrap(), retry.join().unwrap(), q)
    });
    assert_eq!(q.len(), 1, "the retry queued again: {q:?}");
    assert_eq!(q[0]["spawnRequestId"], "join-000001");
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let retry: Value = serde_json::from_slice(&retry.stdout).unwrap();
    assert_eq!(first["created"], true, "{first}");
    assert_eq!(retry["created"], false, "{retry}");
    assert_eq!(first["agent"]["systemdUnit"], retry["agent"]["systemdUnit"]);
    assert!(first["queuedMs"].as_u64().unwrap() >= 1000, "{first}");
    assert_eq!(env.agent_units().len(), 2, "{:?}", env.agent_units());
}

#[test]
fn admission_settings_out_of_range_are_refused_naming_the_key() {
    let env = Env::with_config(|c| {
        c["maxConcurrentSpawns"] = json!(0);
    });
    let out = env.run(&["spawn", "-o", "json"], Some(&env.request(json!({})).to_string()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maxConcurrentSpawns"));
    let bad = std::ffi::OsStr::new("lots");
    let out = env.run_with(
        &[("AGENT_RELAY_SPAWN_MIN_FREE_MEM_MB", bad)],
        &["spawn"],
        Some(&env.request(json!({})).to_string()),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AGENT_RELAY_SPAWN_MIN_FREE_MEM_MB") && !err.contains("lots"), "{err}");
    assert!(env.agent_units().is_empty());
}
