//! `watch` against a real manager: deaths reported fast and exactly, nothing false across
//! daemon-reloads, and a re-executed manager followed.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

fn exit_at(log: &str) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|l| l.split(" at=").nth(1)?.trim().parse().ok())
}

/// The D-Bus object path of a unit (systemd's bus label escaping).
fn unit_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// The floor `watch` is measured against: a bare D-Bus client (no code of ours) on the
/// manager's session bus, subscribed, that notes when systemd announced each unit's main
/// process ended (`ExecMainCode` set in a `PropertiesChanged` of the Service interface).
struct Floor {
    seen: mpsc::Receiver<(String, u64)>,
    first: HashMap<String, u64>,
}

impl Floor {
    fn start(env: &Env) -> Floor {
        use futures_util::StreamExt;
        use zbus::OwnedVariant;
        let addr = env.mgr().bus_address();
        let (tx, seen) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let conn = zbus::connection::Builder::address(addr.as_str()).build().await.unwrap();
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender("org.freedesktop.systemd1")
                    .interface("org.freedesktop.DBus.Properties")
                    .member("PropertiesChanged")
                    .path_namespace("/org/freedesktop/systemd1/unit")
                    .build()
                    .unwrap();
                let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None).await.unwrap();
                zbus_systemd::systemd1::ManagerProxy::new(&conn).await.unwrap().subscribe().await.unwrap();
                ready_tx.send(()).unwrap();
                while let Some(Ok(m)) = stream.next().await {
                    let at = now_ms();
                    let Some(path) = m.header().path().map(|p| p.to_string()) else { continue };
                    let body = m.body();
                    let Ok((iface, changed, _)) =
                        body.deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
                    else {
                        continue;
                    };
                    let code = changed.get("ExecMainCode").and_then(|v| i32::try_from(v).ok());
                    if iface == "org.freedesktop.systemd1.Service"
                        && code.is_some_and(|c| c != 0)
                        && tx.send((path, at)).is_err()
                    {
                        return;
                    }
                }
            });
        });
        ready.recv_timeout(Duration::from_secs(10)).expect("the floor client subscribed to the manager");
        Floor { seen, first: HashMap::new() }
    }

    /// When the floor first heard that `unit`'s main process ended.
    fn ended_at(&mut self, unit: &str, limit: Duration) -> Option<u64> {
        let path = unit_path(unit);
        let end = Instant::now() + limit;
        loop {
            if let Some(t) = self.first.get(&path) {
                return Some(*t);
            }
            let (p, t) = self.seen.recv_timeout(end.saturating_duration_since(Instant::now())).ok()?;
            self.first.entry(p).or_insert(t);
        }
    }
}

#[test]
fn watch_reports_each_death_fast_and_exactly() {
    let _serial = serial();
    let n: usize = std::env::var("AGENT_RELAY_TEST_EXITS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let env = Env::new();
    let watch = Watch::start(&env);
    let mut floor = Floor::start(&env);
    let mut latencies = Vec::new();
    let mut floor_latencies = Vec::new();
    for i in 0..n {
        let code = (i * 37) % 256;
        let a = env.spawn(&env.request(json!({
            "spawnRequestId": format!("lat-{i}"), "lifecycle": "ephemeral",
            "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "150", "FAKE_RUNNER_EXIT_CODE": code.to_string()}
        })));
        let unit = a["agent"]["systemdUnit"].as_str().unwrap().to_string();
        let log = a["agent"]["logFile"].as_str().unwrap().to_string();
        let events = watch
            .until(Duration::from_secs(10), |v| v["type"] == "exited" && v["unit"] == json!(unit))
            .unwrap_or_else(|| panic!("no exited event for {unit}"));
        let (seen_at, ev) = events.last().unwrap();
        assert_eq!(ev["exit"]["exitCode"], json!(code), "{ev}");
        assert_eq!(ev["schemaVersion"], 2);
        assert_eq!(ev["agent"]["agentId"], a["agent"]["agentId"]);
        let died_at = exit_at(&log).expect("the runner logged its exit time");
        latencies.push(seen_at.saturating_sub(died_at));
        let floor_at =
            floor.ended_at(&unit, Duration::from_secs(10)).unwrap_or_else(|| panic!("the floor missed {unit}"));
        floor_latencies.push(floor_at.saturating_sub(died_at));
    }
    latencies.sort();
    floor_latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let (f50, f99) = (percentile(&floor_latencies, 0.5), percentile(&floor_latencies, 0.99));
    let report = json!({"exits": n, "p50Ms": p50, "p99Ms": p99, "maxMs": latencies.last(),
        "floorP50Ms": f50, "floorP99Ms": f99, "floorMaxMs": floor_latencies.last()});
    println!("exit detection latency (death → watch line; floor: death → systemd's signal at a bare client): {report}");
    let _ = std::fs::write(bin().parent().unwrap().join("watch-latency.json"), report.to_string());
    // Measured from the runner's last instant to our reading the event line, against the floor
    // measured on the same deaths in the same run: what systemd's own signal takes to reach a
    // bare subscriber. `watch` reacts to that same signal (one re-read of the unit before an
    // exit is reported), so it stays within a small multiple of the floor however loaded the
    // machine is; polling (every 500 ms: ~250 ms at the median) does not. The 50 ms p99 target
    // itself is the benchmark's to measure on a quiet machine (benches/supervisor.rs).
    let (b50, b99) = (3 * f50 + P50_SLACK_MS, 3 * f99 + P99_SLACK_MS);
    assert!(p50 <= b50, "watch p50 {p50} ms over {n} exits, floor p50 {f50} ms (bound {b50} ms): is watch polling?");
    assert!(p99 <= b99, "watch p99 {p99} ms over {n} exits, floor p99 {f99} ms (bound {b99} ms): is watch polling?");
}

/// Absolute slack over 3× the floor's median and p99 (a debug build's re-read of the unit and
/// its JSON line, and scheduling on a loaded machine).
const P50_SLACK_MS: u64 = 30;
const P99_SLACK_MS: u64 = 100;

#[test]
fn twenty_daemon_reloads_report_nothing_false() {
    let _serial = serial();
    let env = Env::new();
    for i in 0..3 {
        env.spawn(&env.request(json!({"spawnRequestId": format!("steady-{i}")})));
    }
    let watch = Watch::start(&env);
    for _ in 0..20 {
        env.systemctl(&["daemon-reload"]);
    }
    let events = watch.drain(Duration::from_millis(1500));
    let false_ones: Vec<&Value> = events
        .iter()
        .filter(|v| ["exited", "stopped", "removed", "spawned"].contains(&v["type"].as_str().unwrap()))
        .collect();
    assert!(false_ones.is_empty(), "false events across reloads: {false_ones:?}");
    // Still watching: a real exit after the reloads is reported.
    env.spawn(&env.request(json!({
        "spawnRequestId": "after-reload", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100", "FAKE_RUNNER_EXIT_CODE": "4"}
    })));
    let got = watch.until(Duration::from_secs(10), |v| v["type"] == "exited").expect("exit after reloads");
    assert_eq!(got.last().unwrap().1["exit"]["exitCode"], 4);
}

#[test]
fn daemon_reloads_during_concurrent_spawns_report_nothing_false() {
    let _serial = serial();
    let n = if reliability_full() { 200 } else { 40 };
    let env = Env::new();
    let watch = Watch::start(&env);
    let spawning = std::sync::atomic::AtomicBool::new(true);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let retries = std::sync::atomic::AtomicUsize::new(0);
    let (reloads, spawned) = std::thread::scope(|s| {
        let reloader = s.spawn(|| {
            let mut count = 0;
            while spawning.load(std::sync::atomic::Ordering::SeqCst) {
                env.systemctl(&["daemon-reload"]);
                count += 1;
                // With hundreds of units, reloads back to back leave the manager one queued
                // message per reload, and every client's reads time out: give it a breath.
                if n > 100 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            count
        });
        let spawners: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            return mine;
                        }
                        // Back-to-back reloads can starve systemd's job queue past --timeout: a
                        // spawn then fails with exit 6, and its retry must find the same agent.
                        let req = env.request(json!({"spawnRequestId": format!("amid-reloads-{i}")})).to_string();
                        for attempt in 1.. {
                            let out = env.run(&["spawn", "-o", "json"], Some(&req));
                            let err = String::from_utf8_lossy(&out.stderr);
                            if out.status.code() == Some(6) && attempt < 5 {
                                assert_eq!(err.trim_end().lines().count(), 1, "{err}");
                                retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                continue;
                            }
                            assert!(out.status.success(), "spawn {i}, attempt {attempt}: {err}");
                            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                            mine.push(v["agent"]["systemdUnit"].as_str().unwrap().to_string());
                            break;
                        }
                    }
                })
            })
            .collect();
        let units: Vec<String> = spawners.into_iter().flat_map(|h| h.join().unwrap()).collect();
        // A few reloads more with everyone up.
        std::thread::sleep(Duration::from_millis(500));
        spawning.store(false, std::sync::atomic::Ordering::SeqCst);
        (reloader.join().unwrap(), units)
    });
    let retries = retries.into_inner();
    println!("{reloads} daemon-reloads during {n} concurrent spawns ({retries} spawns timed out and were retried)");
    assert!(reloads >= 5, "only {reloads} reloads overlapped the spawns");
    // The watcher may still be catching up (a reconcile after each reload): wait for every
    // `spawned`, then for quiet.
    let mut pending: std::collections::BTreeSet<&String> = spawned.iter().collect();
    let mut events: Vec<Value> = watch
        .until(Duration::from_secs(60), |v| {
            v["unit"].as_str().is_some_and(|u| pending.remove(&u.to_string())) && pending.is_empty()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    events.extend(watch.drain(Duration::from_millis(1500)));
    let mut spawned_events = std::collections::BTreeMap::new();
    for v in &events {
        let kind = v["type"].as_str().unwrap();
        assert!(!["exited", "stopped", "removed", "restarting"].contains(&kind), "false {kind} amid reloads: {v}");
        // It once stalled here for a whole --timeout, then disconnected: signals filled the
        // queue of the connection whose reply the watcher was awaiting.
        assert_ne!(kind, "disconnected", "watch lost the manager amid reloads: {v}");
        if kind == "spawned" {
            *spawned_events.entry(v["unit"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    for u in &spawned {
        let about: Vec<&Value> = events.iter().filter(|v| v["unit"] == json!(u) || v["unit"].is_null()).collect();
        assert_eq!(
            spawned_events.get(u),
            Some(&1),
            "{u}: spawned events {:?}; events about it: {about:?}",
            spawned_events.get(u)
        );
    }
    let listed = env.json(&["list", "-o", "json"], None);
    let alive: Vec<&Value> = listed.as_array().unwrap().iter().filter(|r| r["state"] == "alive").collect();
    assert_eq!((listed.as_array().unwrap().len(), alive.len()), (n, n), "after the reloads: {listed}");
    for u in &spawned {
        let file = env.env_file(u);
        assert!(file.as_ref().is_some_and(|f| f.exists()), "{u} lacks its env file {file:?}");
    }
}

#[test]
fn watch_follows_a_reexecuted_manager_and_reports_an_exit_across_it() {
    let _serial = serial();
    let env = Env::new();
    let watch = Watch::start(&env);
    env.spawn(&env.request(json!({
        "spawnRequestId": "across-reexec", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "1500", "FAKE_RUNNER_EXIT_CODE": "37"}
    })));
    env.systemctl(&["daemon-reexec"]);
    let got = watch
        .until(Duration::from_secs(15), |v| v["type"] == "exited" && v["agent"]["spawnRequestId"] == "across-reexec")
        .expect("the exit across a reexec is reported");
    assert_eq!(got.last().unwrap().1["exit"]["exitCode"], 37, "{:?}", got.last());
    let d = env.json(&["diagnose", "across-reexec", "-o", "json"], None);
    assert_eq!(d["exit"]["exitCode"], 37, "{d}");
}

#[test]
fn a_slow_reader_loses_events_visibly_and_never_stalls_the_watcher() {
    let _serial = serial();
    let env = Env::new();
    let mut child = env.cli().args(["watch", "-o", "json", "--queue", "4"]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    // Nobody reads stdout for a while: the pipe and the queue fill up.
    for i in 0..40 {
        env.spawn(&env.request(json!({
            "spawnRequestId": format!("burst-{i}"), "lifecycle": "ephemeral", "label": "x".repeat(200),
            "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "10"}
        })));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_kib = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap()))
            .unwrap()
    };
    let rss = rss_kib(pid);
    assert!(rss < 32 * 1024, "watch RSS {rss} KiB with a stalled reader");
    // Now read: the stream says it lagged, and it is still live.
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str::<Value>(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    env.spawn(&env.request(json!({
        "spawnRequestId": "after-lag", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "300", "FAKE_RUNNER_EXIT_CODE": "6"}
    })));
    let mut lagged = false;
    let mut live = false;
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && !(lagged && live) {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            lagged |= v["type"] == "lagged";
            live |= v["type"] == "exited" && v["agent"]["spawnRequestId"] == "after-lag" && v["exit"]["exitCode"] == 6;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lagged, "no lagged event after events were dropped");
    assert!(live, "the watcher stalled behind a slow reader");
}
