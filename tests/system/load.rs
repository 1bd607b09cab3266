//! Load: hundreds of agents alive at once stay correct in `list`, `watch` and `stop`; agents
//! crash-looping do not hold up the spawns of others.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

/// Agent events of `watch` about `units`, by type, until `want` of type `kind` were seen.
fn collect(
    w: &Watch,
    units: &BTreeSet<String>,
    kind: &str,
    want: usize,
    limit: Duration,
) -> BTreeMap<String, Vec<Value>> {
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let end = Instant::now() + limit;
    while by_type.get(kind).map_or(0, Vec::len) < want {
        let Ok((_, v)) = w.lines.recv_timeout(end.saturating_duration_since(Instant::now())) else { break };
        if v["unit"].as_str().is_some_and(|u| units.contains(u)) {
            by_type.entry(v["type"].as_str().unwrap().to_string()).or_default().push(v);
        }
    }
    by_type
}

#[test]
fn three_hundred_live_agents_are_listed_watched_and_stopped_exactly() {
    let _serial = serial();
    let started = Instant::now();
    let n = 300;
    let env = Env::new();
    let watch = Watch::start(&env);
    let rids: Vec<String> = (0..n).map(|i| format!("load-{i}")).collect();
    let t = Instant::now();
    let spawned = parallel(&rids, 4, |rid| env.spawn(&env.request(json!({"spawnRequestId": rid, "label": rid}))));
    let spawn_s = t.elapsed().as_secs_f64();
    let units: BTreeSet<String> =
        spawned.iter().map(|s| s["agent"]["systemdUnit"].as_str().unwrap().to_string()).collect();
    assert_eq!(units.len(), n);

    // watch saw each one spawn, once; nothing ended.
    let seen = collect(&watch, &units, "spawned", n, Duration::from_secs(60));
    let spawned_units: BTreeSet<&str> =
        seen.get("spawned").into_iter().flatten().map(|v| v["unit"].as_str().unwrap()).collect();
    assert_eq!(seen.get("spawned").map_or(0, Vec::len), n, "spawned events: {:?}", seen.keys());
    assert_eq!(spawned_units.len(), n, "a unit reported spawned twice");
    for bad in ["exited", "stopped", "removed"] {
        assert!(!seen.contains_key(bad), "false {bad} events: {:?}", seen[bad]);
    }

    // list: exactly these, each record right and alive.
    let t = Instant::now();
    let listed = env.json(&["list", "-o", "json"], None);
    let list_ms = t.elapsed().as_millis();
    // Resolving one agent by its spawn request id reads the few units named like it, not all n
    // (it did: stopping 300 agents by request id took 126 s, one full list per stop).
    let t = Instant::now();
    assert_eq!(env.json(&["show", &rids[n / 2], "-o", "json"], None)["spawnRequestId"], json!(rids[n / 2]));
    let show_ms = t.elapsed().as_millis();
    assert!(show_ms * 2 < list_ms, "show by spawnRequestId {show_ms} ms, a full list {list_ms} ms");
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), n);
    let by_rid: BTreeMap<&str, &Value> = listed.iter().map(|r| (r["spawnRequestId"].as_str().unwrap(), r)).collect();
    for s in &spawned {
        let want = &s["agent"];
        let got = by_rid[want["spawnRequestId"].as_str().unwrap()];
        for k in ["agentId", "sessionName", "systemdUnit", "label", "provider", "cwd", "pid", "logFile"] {
            assert_eq!(got[k], want[k], "{k} of {}", want["spawnRequestId"]);
        }
        assert_eq!(got["state"], "alive", "{got}");
        assert!(pid_alive(got["pid"].as_u64().unwrap()));
    }

    // Stop them all, 8 at a time: each reported stopped, by the CLI and by watch; nothing left.
    let t = Instant::now();
    let stops = parallel(&rids, 8, |rid| env.json(&["stop", rid, "-o", "json"], None));
    let stop_s = t.elapsed().as_secs_f64();
    assert!(stops.iter().all(|s| s["stopped"] == true && s["wasRunning"] == true));
    let seen = collect(&watch, &units, "stopped", n, Duration::from_secs(60));
    let stopped: BTreeSet<&str> =
        seen.get("stopped").into_iter().flatten().map(|v| v["unit"].as_str().unwrap()).collect();
    assert_eq!(stopped.len(), n, "stopped events for {} of {n}", stopped.len());
    // The runner's own end on SIGTERM (status 0) may be reported before `stopped`, and the
    // collected unit as `removed`; nothing else.
    let mut exits = BTreeSet::new();
    for e in seen.get("exited").into_iter().flatten() {
        assert_eq!((e["exit"]["kind"].clone(), e["exit"]["exitCode"].clone()), (json!("exited"), json!(0)), "{e}");
        assert!(exits.insert(e["unit"].as_str().unwrap()), "two exits for one stop: {e}");
    }
    for bad in ["spawned", "restarting"] {
        assert!(!seen.contains_key(bad), "{bad} while stopping: {:?}", seen[bad][0]);
    }
    assert_eq!(env.json(&["list", "-o", "json"], None), json!([]));
    assert_eq!(slice_processes(&env), BTreeMap::new(), "processes left in agent_relay.slice");
    for s in &spawned {
        assert!(!pid_alive(s["agent"]["pid"].as_u64().unwrap()), "{} survived its stop", s["agent"]["pid"]);
    }
    println!(
        "{n} agents: spawn (4 at a time) {spawn_s:.1} s, list {list_ms} ms, show by request id {show_ms} ms, stop (8 at a time) {stop_s:.1} s, total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn crash_looping_agents_do_not_hold_up_other_spawns() {
    let _serial = serial();
    let (crashers, others) = if reliability_full() { (20, 100) } else { (5, 20) };
    let env = Env::new();
    let spawn_ms = |rid: String| {
        let t = Instant::now();
        let a = env.spawn(&env.request(json!({"spawnRequestId": rid})));
        assert_eq!(a["created"], true);
        assert!(pid_alive(a["agent"]["pid"].as_u64().unwrap()), "{a}");
        t.elapsed().as_millis() as u64
    };
    let mut quiet: Vec<u64> = (0..10).map(|i| spawn_ms(format!("before-{i}"))).collect();
    quiet.sort();
    for i in 0..crashers {
        env.spawn(&env.request(json!({
            "spawnRequestId": format!("crasher-{i}"), "lifecycle": "persistent",
            "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100", "FAKE_RUNNER_EXIT_CODE": "1"}
        })));
    }
    // Spawn the others one after another while the crashers restart every 2 s (about 10 s).
    let pause = Duration::from_millis(8000 / others as u64);
    let mut latencies = Vec::new();
    for i in 0..others {
        latencies.push(spawn_ms(format!("bystander-{i}")));
        std::thread::sleep(pause);
    }
    latencies.sort();
    let p = |q: f64| percentile(&latencies, q);
    println!(
        "{others} spawns beside {crashers} crash-looping agents: p50 {} ms, p99 {} ms (10 before them: p50 {} ms, max {} ms)",
        p(0.5),
        p(0.99),
        quiet[5],
        quiet[9]
    );
    assert!(p(0.99) < 2000, "spawn p99 {} ms beside crash loops", p(0.99));
    // The crashers end reported as crash-looping; the bystanders are all alive.
    let done = wait_until(Duration::from_secs(40), || {
        let l = env.json(&["list", "-o", "json"], None);
        l.as_array().unwrap().iter().filter(|r| r["crashLooping"] == true).count() == crashers
    });
    let listed = env.json(&["list", "-o", "json"], None);
    assert!(done, "not all crashers reported crash-looping: {listed}");
    for r in listed.as_array().unwrap() {
        let rid = r["spawnRequestId"].as_str().unwrap();
        if rid.starts_with("crasher-") {
            assert_eq!(r["state"], "dead", "{r}");
        } else {
            assert_eq!((r["state"].clone(), r["crashLooping"].clone()), (json!("alive"), json!(false)), "{r}");
        }
    }
}
