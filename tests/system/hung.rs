//! A hung manager (`SIGSTOP`, DESIGN.md §6): every command that talks to it fails within its
//! `--timeout` with exit 6 and one line; a `watch` already running stays alive, quiet and idle,
//! and reports the exit that happened during the hang once the manager is continued.

use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

/// The `--timeout` every command gets while the manager is stopped.
const TIMEOUT: Duration = Duration::from_secs(1);
/// What a failing command may take beyond its `--timeout`: exec, the CLI's start and exit, and
/// the scheduling delay of 13 CLIs at once on a loaded 2-core machine (measured on the CI kind:
/// worst 1.02–1.08 s at a load average of 3, 1.08–1.16 s at 8). Well under a second, so a
/// second timeout in a row (the forbidden fallback from a hung private socket to the session
/// bus: 2.02–2.06 s when tried) fails.
const MARGIN: Duration = Duration::from_millis(600);
/// The harness's deadline for one command here: a command that hangs fails the test in 15 s.
const HANG_DEADLINE: Duration = Duration::from_secs(15);

/// Polls the agent units until each is settled — running (`active/running`) or ended
/// (`failed`, `inactive`): none starting, stopping or waiting to restart — for two polls in a
/// row; returns their `(unit, active, sub)`. Panics past `limit`.
fn settled_units(env: &Env, limit: Duration) -> Vec<(String, String, String)> {
    let read = || -> Vec<(String, String, String)> {
        env.systemctl(&["list-units", "--all", "--plain", "--no-legend", "agent-relay-managed-*"])
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Some((w.first()?.to_string(), w.get(2)?.to_string(), w.get(3)?.to_string()))
            })
            .collect()
    };
    let settled = |units: &[(String, String, String)]| {
        units.iter().all(|(_, a, s)| (a == "active" && s == "running") || a == "failed" || a == "inactive")
    };
    let end = Instant::now() + limit;
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = read();
        if settled(&now) && now == last {
            return now;
        }
        assert!(Instant::now() < end, "agent units did not settle within {limit:?}: {now:?}");
        last = now;
    }
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_hung_manager_fails_every_command_in_time_and_watch_rides_it_out() {
    let _serial = serial();
    let env = Env::new();
    let rid = "lives-through-hang";
    let agent = env.spawn(&env.request(json!({"spawnRequestId": rid})))["agent"].clone();
    let info = env.runner_info(agent["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info.exists()));
    // Exits by itself while the manager is stopped: systemd learns of it only after SIGCONT.
    env.spawn(&env.request(json!({
        "spawnRequestId": "dies-during-hang", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "2500", "FAKE_RUNNER_EXIT_CODE": "21"}
    })));
    let mut watch = Watch::start(&env);
    let lines = &watch.lines;

    let cpu_before = cpu_ticks(watch.child.id());
    let hang = env.hang();
    let hung_at = Instant::now();
    // With a spawnRequestId the spawn first looks for the request's unit; without, it writes its
    // files and calls StartTransientUnit, which the manager may still carry out when continued.
    let with_rid = env.request(json!({"spawnRequestId": "during-hang"})).to_string();
    let without = env.request(json!({"label": "no-request-id"})).to_string();
    let unit = agent["systemdUnit"].as_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["show", rid],
        vec!["show", unit],
        vec!["spawn"],
        vec!["spawn", "(no spawnRequestId)"],
        vec!["stop", rid],
        vec!["diagnose", rid],
        vec!["kill", rid],
        vec!["logs", rid],
        vec!["guest", "list"],
        vec!["guest", "create", rid],
        vec!["reap"],
        vec!["watch"],
    ];
    let results: Vec<(Vec<&str>, Duration, std::process::Output)> = std::thread::scope(|s| {
        let hs: Vec<_> = commands
            .iter()
            .map(|args| {
                let stdin = match args.as_slice() {
                    ["spawn"] => Some(with_rid.as_str()),
                    ["spawn", _] => Some(without.as_str()),
                    _ => None,
                };
                let env = &env;
                s.spawn(move || {
                    let secs = TIMEOUT.as_secs().to_string();
                    let mut full = vec!["--timeout", secs.as_str()];
                    full.extend(args.iter().filter(|a| !a.starts_with('(')));
                    let t = Instant::now();
                    let out = env.run_within(HANG_DEADLINE, &full, stdin);
                    (args.clone(), t.elapsed(), out)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut took = Vec::new();
    for (args, elapsed, out) in &results {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{args:?} with the manager stopped: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err:?}");
        assert!(err.contains("did not answer") && err.contains("hung"), "{args:?}: {err}");
        // The bound is per call; each verb fails on its first call to the manager, and only once:
        // a private socket that accepted and never answered is a hung manager, and the session
        // bus would not answer either (a fallback to it would take a second timeout).
        assert!(
            *elapsed <= TIMEOUT + MARGIN,
            "{args:?} took {elapsed:?} with --timeout {TIMEOUT:?} (bound: {:?}; two timeouts in a row?)",
            TIMEOUT + MARGIN
        );
        took.push(format!("{} {:.2}s", args.join(" "), elapsed.as_secs_f64()));
    }
    let worst = results.iter().map(|r| r.1).max().unwrap();
    println!("with the manager stopped (--timeout {TIMEOUT:?}, worst {worst:?}): {}", took.join(", "));

    // Keep the hang past the agent's exit, then look at the watch: alive, silent, idle.
    std::thread::sleep(Duration::from_millis(3000u64.saturating_sub(hung_at.elapsed().as_millis() as u64)));
    assert!(watch.child.try_wait().unwrap().is_none(), "watch died while the manager hung");
    let during: Vec<Value> = lines.try_iter().map(|(_, v)| v).collect();
    assert!(during.is_empty(), "watch said something while the manager was stopped: {during:?}");
    let ticks = cpu_ticks(watch.child.id()) - cpu_before;
    assert!(ticks < 50, "watch used {ticks} ticks of CPU during a {:?} hang (spinning?)", hung_at.elapsed());
    drop(hang);

    // Continued: the exit that happened during the hang is reported exactly, nothing else false.
    let end = Instant::now() + Duration::from_secs(10);
    let mut after = Vec::new();
    while let Ok((_, v)) = lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
        let done = v["type"] == "exited" && v["agent"]["spawnRequestId"] == "dies-during-hang";
        after.push(v);
        if done {
            break;
        }
    }
    let exited =
        after.last().filter(|v| v["type"] == "exited").unwrap_or_else(|| panic!("no exit after SIGCONT: {after:?}"));
    assert_eq!(exited["exit"]["exitCode"], 21, "{exited}");
    for v in &after {
        assert_ne!(v["agent"]["spawnRequestId"], rid, "false event about the live agent: {v}");
    }

    // Everything works again; the hung commands left no unit without its files. Whatever the
    // manager still had queued from them is carried out: wait until every agent unit is running
    // or ended, then each has its env file and never restarted (a unit whose file is missing
    // fails to start and, persistent, restarts in a loop).
    assert_eq!(env.json(&["show", rid, "-o", "json"], None)["state"], "alive");
    let units = settled_units(&env, Duration::from_secs(20));
    assert!(units.iter().any(|(u, _, _)| u == unit), "the live agent's unit is not loaded: {units:?}");
    for (u, active, sub) in &units {
        let file = env.env_file(u);
        assert!(file.as_ref().is_some_and(|f| f.exists()), "{u} ({active}/{sub}) lacks its env file {file:?}");
        assert_eq!(env.prop(u, "NRestarts"), "0", "{u} ({active}/{sub}) restarted");
    }
    env.json(&["spawn", "-o", "json"], Some(&env.request(json!({"spawnRequestId": "after-hang"})).to_string()));
    env.json(&["diagnose", "dies-during-hang", "-o", "json"], None);
    env.json(&["guest", "list", "-o", "json"], None);
    env.json(&["reap", "-o", "json"], None);
    let stopped = env.json(&["stop", rid, "-o", "json"], None);
    assert_eq!(stopped["stopped"], true);
}
