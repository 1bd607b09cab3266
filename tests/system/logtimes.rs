//! Logs over time against a real user manager: a marker line where each run starts, each line's
//! time (`--timestamps`), `--since`, `--follow` with times, and a times file planted as a link.

use crate::util::*;
use std::time::Duration;

use serde_json::{json, Value};

const MARKER: &str = "-- agent-relay-systemd: run started ";

/// A runner that prints `tick 0..3`, 300 ms apart, then exits 3 (a crash: a persistent agent is
/// started again by systemd 2 s later).
fn ticker(env: &Env) {
    let code =
        "import sys, time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\nsys.exit(3)\n";
    env.use_runner(&["/usr/bin/python3", "-c", code]);
}

#[test]
fn each_run_is_marked_each_line_timed_and_since_selects_by_time() {
    let env = Env::new();
    ticker(&env);
    let began = now_ms();
    let agent = env.spawn(&env.request(json!({"label": "tick", "spawnRequestId": "tick-000001"})))["agent"].clone();
    let log = agent["logFile"].as_str().unwrap().to_string();
    // Two runs: the first crashed with 3 and systemd started the second 2 s later.
    let two_runs =
        || std::fs::read_to_string(&log).is_ok_and(|t| t.matches(MARKER).count() >= 2 && t.ends_with("tick 3\n"));
    assert!(wait_until(Duration::from_secs(30), two_runs), "{:?}", std::fs::read_to_string(&log));
    let ended = now_ms();

    let shown = env.json(&["logs", "tick-000001", "--timestamps", "-n", "1000", "-o", "json"], None);
    schema::validate("logs-answer", &shown);
    let lines: Vec<&str> = shown["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let times: Vec<u64> = shown["times"].as_array().unwrap().iter().map(|t| t.as_u64().expect("a time")).collect();
    assert_eq!(lines.len(), times.len());
    let markers: Vec<usize> = (0..lines.len()).filter(|i| lines[*i].starts_with(MARKER)).collect();
    assert!(markers.len() >= 2 && markers[0] == 0, "{lines:?}");
    assert!(lines[markers[0]] != lines[markers[1]], "two runs, two markers: {lines:?}");
    // Every time within the test's own window, in order; 300 ms between ticks, 2 s between runs.
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times[0] + 50 >= began && *times.last().unwrap() <= ended + 50, "{began} {times:?} {ended}");
    let tick = |run: usize, n: usize| {
        let from = markers[run];
        times[(from..lines.len()).find(|i| lines[*i] == format!("tick {n}")).unwrap()]
    };
    let gap = tick(0, 3) - tick(0, 0);
    assert!((800..3000).contains(&gap), "tick 0 to tick 3 of the first run took {gap} ms: {times:?}");
    let between = times[markers[1]] - tick(0, 3);
    assert!((1500..10_000).contains(&between), "the restart came {between} ms after the last tick");
    eprintln!("logs --timestamps: 3 ticks in {gap} ms; the second run marked {between} ms after the first's last line");

    // --since: the second run only, from a UTC time half-way between the runs.
    let half_way = tick(0, 3) + between / 2;
    let at = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(half_way)).to_string();
    let since = env.json(&["logs", "tick-000001", "--since", &at, "-o", "json"], None);
    let since_lines: Vec<&str> = since["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(since_lines, lines[markers[1]..], "--since {at}");
    assert!(since.get("times").is_none(), "times only with --timestamps: {since}");
    // A time ago: everything (the test is younger than 10 minutes), and -n cuts it.
    let recent = env.json(&["logs", "tick-000001", "--since", "10m", "-o", "json"], None);
    assert_eq!(recent["lines"].as_array().unwrap().len(), lines.len());
    let last2 = env.json(&["logs", "tick-000001", "--since", "10 min", "-n", "2", "-o", "json"], None);
    assert_eq!(last2["lines"], json!(lines[lines.len() - 2..]));
    // Text: each line begins with its UTC time.
    let out = env.run(&["logs", "tick-000001", "--timestamps", "-n", "3"], None);
    let text = String::from_utf8(out.stdout).unwrap();
    for l in text.lines() {
        let (stamp, _) = l.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok() && stamp.ends_with('Z'), "{l}");
    }
    // A time that is none: exit 2, one line, before the manager is asked.
    for bad in ["yesterday-ish", "2026-13-40", "5 parsecs"] {
        let out = env.run(&["logs", "tick-000001", "--since", bad], None);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a time") && err.trim().lines().count() == 1, "{err}");
    }
    env.run(&["stop", "tick-000001"], None);
}

#[test]
fn follow_gives_each_line_its_time() {
    let env = Env::new();
    let req = env.request(json!({
        "label": "ft", "spawnRequestId": "ft-000001", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_SAY": "said once", "FAKE_RUNNER_EXIT_AFTER_MS": "1200"}
    }));
    env.spawn(&req);
    let out = env.run_within(Duration::from_secs(30), &["logs", "ft-000001", "-f", "-t", "-o", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["line"] == "said once"), "{lines:?}");
    for l in &lines {
        schema::validate("log-line", l);
        assert!(l["time"].as_u64().is_some_and(|t| t.abs_diff(now_ms()) < 60_000), "{l}");
    }
}

#[test]
fn a_times_file_planted_as_a_link_between_runs_is_not_followed() {
    let env = Env::new();
    let req = env.request(json!({
        "label": "lk", "spawnRequestId": "lk-000001",
        "env": {"FAKE_RUNNER_SAY": "said once", "FAKE_RUNNER_EXIT_AFTER_MS": "1200", "FAKE_RUNNER_EXIT_CODE": "3"}
    }));
    let agent = env.spawn(&req)["agent"].clone();
    // While the first run writes, a link to someone else's file is put where the times file is:
    // the second run (systemd starts it 2 s after the first crashed) must not write through it.
    let log = std::path::PathBuf::from(agent["logFile"].as_str().unwrap());
    let times = log.with_extension("times");
    assert!(wait_until(Duration::from_secs(10), || times.exists()));
    let victim = env.home.join("victim");
    std::fs::write(&victim, "mine\n").unwrap();
    std::fs::remove_file(&times).unwrap();
    std::os::unix::fs::symlink(&victim, &times).unwrap();
    let two_runs = || std::fs::read_to_string(&log).is_ok_and(|t| t.matches("said once").count() >= 2);
    assert!(wait_until(Duration::from_secs(20), two_runs), "{:?}", std::fs::read_to_string(&log));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");
    assert!(std::fs::symlink_metadata(&times).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&log).unwrap().matches(MARKER).count(), 2, "the runs are marked all the same");
    // --since cannot choose in a log whose times it cannot read: a clear error, exit 2.
    let out = env.run(&["logs", "lk-000001", "--since", "1h"], None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no times") && err.trim().lines().count() == 1, "{err}");
    env.run(&["stop", "lk-000001"], None);
}

#[test]
fn a_unit_with_no_task_to_spare_for_the_writer_still_runs_its_runner() {
    let env = Env::new();
    env.use_runner(&["/bin/sh", "-c", "echo alone; exec sleep 60"]);
    // TasksMax=1: where the manager enforces it, our writer cannot be forked; the runner runs,
    // its output straight to the log (untimed), and the spawn succeeds all the same.
    let req = env.request(json!({"label": "solo", "spawnRequestId": "solo-000001", "limits": {"tasksMax": 1}}));
    let agent = env.spawn(&req)["agent"].clone();
    assert_eq!(agent["state"], "alive", "{agent}");
    let log = agent["logFile"].as_str().unwrap().to_string();
    let said = || std::fs::read_to_string(&log).is_ok_and(|t| t.starts_with(MARKER) && t.contains("alone\n"));
    assert!(wait_until(Duration::from_secs(10), said), "{:?}", std::fs::read_to_string(&log));
    assert_eq!(env.prop(agent["systemdUnit"].as_str().unwrap(), "TasksMax"), "1");
    env.run(&["stop", "solo-000001"], None);
}
