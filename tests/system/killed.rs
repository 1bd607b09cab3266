//! The controller killed mid-work: the CLI is SIGKILLed at random points of spawns and stops.
//! Afterwards every agent process belongs to a unit with complete metadata, no unit lacks its
//! files, and one `reap` removes every leftover: no secret outlives its agent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            files_containing(&p, needle, out);
        } else if std::fs::read(&p).map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())).unwrap_or(false) {
            out.push(p);
        }
    }
}

/// Runs the CLI and SIGKILLs it `delay` after start (if still running). True if it was killed.
fn run_killed(env: &Env, args: &[&str], stdin: Option<&str>, delay: Duration) -> bool {
    let mut child = env
        .cli()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the CLI");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        let _ = pipe.write_all(text.as_bytes());
    }
    drop(pipe);
    std::thread::sleep(delay);
    let killed = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    killed
}

#[test]
fn a_controller_killed_at_random_points_leaves_nothing_half_made_after_a_reap() {
    let _serial = serial();
    let started = Instant::now();
    let ops = if reliability_full() { 500 } else { 100 };
    let seed = chaos_seed();
    println!("seed {seed} (rerun with AGENT_RELAY_CHAOS_SEED={seed}), {ops} operations");
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..].copy_from_slice(&(!seed).to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::XorShift, &bytes);

    let env = Env::new();
    let mut killed = 0;
    let rids: Vec<String> = (0..30).map(|i| format!("chaos-{i}")).collect();
    for _ in 0..ops {
        let rid = &rids[rng.random_range(0..rids.len())];
        let delay = Duration::from_millis(rng.random_range(0..=60));
        let was_killed = if rng.random_range(0..10) < 7 {
            // Some agents end by themselves (a failed unit with an exit record), most stay up.
            let vars = if rng.random_range(0..4) == 0 {
                json!({"FAKE_RUNNER_EXIT_AFTER_MS": "300", "FAKE_RUNNER_EXIT_CODE": "3"})
            } else {
                json!({})
            };
            let req = env.request(json!({
                "spawnRequestId": rid, "label": rid, "lifecycle": "ephemeral", "prompt": format!("PROMPT-{rid}"),
                "env": vars,
            }));
            run_killed(&env, &["spawn", "-o", "json"], Some(&req.to_string()), delay)
        } else {
            run_killed(&env, &["stop", rid, "--timeout-stop", "1", "-o", "json"], None, delay)
        };
        killed += was_killed as usize;
    }
    println!("{killed} of {ops} CLI runs SIGKILLed mid-work");

    // Jobs the killed CLIs left with the manager finish on their own.
    let settled = wait_until(Duration::from_secs(20), || {
        env.systemctl(&["list-units", "--all", "--plain", "--no-legend", "agent-relay-managed-*"])
            .lines()
            .all(|l| !l.contains("activating") && !l.contains("deactivating"))
    });
    assert!(settled, "units still changing state: {:?}", env.agent_units());

    // Every agent process belongs to a unit whose record is complete.
    let listed = env.json(&["list", "-o", "json"], None);
    let by_unit: BTreeMap<String, Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["systemdUnit"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    let procs = slice_processes(&env);
    assert!(!procs.is_empty(), "no agent process found in agent_relay.slice: the check would prove nothing");
    for (unit, pids) in procs {
        let rec =
            by_unit.get(&unit).unwrap_or_else(|| panic!("processes {pids:?} in {unit}, which list does not show"));
        // State may move on (some agents end by themselves); the metadata may not.
        let shown = env.json(&["show", &unit, "-o", "json"], None);
        for k in ["agentId", "sessionName", "label", "provider", "cwd", "spawnRequestId", "lifecycle", "logFile"] {
            assert_eq!(shown[k], rec[k], "show and list disagree on {k} of {unit}");
        }
        let rid = rec["spawnRequestId"].as_str().unwrap_or_else(|| panic!("{unit}: no spawnRequestId: {rec}"));
        assert!(rids.iter().any(|r| r == rid), "{unit}: {rid}");
        assert_eq!(rec["label"], rid, "{rec}");
        assert_eq!(rec["provider"], "claude");
        assert_eq!(rec["lifecycle"], "ephemeral");
        assert_eq!(rec["cwd"], json!(env.projects.join("app")));
        for k in ["agentId", "sessionName", "logFile", "approvalMode", "workspaceMode"] {
            assert!(rec[k].as_str().is_some_and(|v| !v.is_empty()), "{unit}: {k} missing: {rec}");
        }
        assert!(rec["startedAt"].as_u64().is_some(), "{rec}");
    }

    // No loaded unit lacks its files: a 0600 env file in a 0700 directory.
    let units = env.agent_units();
    for unit in &units {
        let file = env.env_file(unit).unwrap_or_else(|| panic!("{unit} names no EnvironmentFile"));
        assert!(file.exists(), "{unit}: its env file {} is gone", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        assert_eq!(mode(file.parent().unwrap()), 0o700, "{}", file.display());
    }

    // What each loaded unit has before the reap: its env file, and for a running agent the
    // runner info its runner writes once up (waited for, so that the check below has something
    // to lose).
    let runner_info_of =
        |unit: &str| env.runner_info(unit.trim_start_matches("agent-relay-managed-").trim_end_matches(".service"));
    let running = |unit: &str| env.prop(unit, "ActiveState") == "active";
    assert!(
        wait_until(Duration::from_secs(15), || units.iter().all(|u| !running(u) || runner_info_of(u).exists())),
        "a running agent wrote no runner info"
    );
    let before: BTreeMap<String, (PathBuf, Option<PathBuf>, String)> = units
        .iter()
        .map(|u| {
            let info = Some(runner_info_of(u)).filter(|p| p.exists());
            (u.clone(), (env.env_file(u).unwrap(), info, env.prop(u, "ActiveState")))
        })
        .collect();
    assert!(
        before.values().any(|(_, info, _)| info.is_some()),
        "no loaded unit has runner info: the survival check would prove nothing"
    );

    // Leftovers are older than the reaper's grace period; one reap removes them.
    let agents = env.agents_dir();
    let runners = env.runners_dir();
    for dir in [&agents, &runners] {
        for e in std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
            backdate(&e.path(), 3600);
        }
    }
    let report = env.json(&["reap", "-o", "json"], None);
    assert_eq!(report["failed"], json!([]), "{report}");
    let loaded: BTreeSet<String> = env.agent_units().into_iter().collect();
    // The reap reset only failed units with a recorded exit (their files go with them); every
    // unit still loaded kept its env file and its runner info, old as they are.
    let reset: BTreeSet<String> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "reset-failed-unit")
        .map(|a| a["target"].as_str().unwrap().to_string())
        .collect();
    for (unit, (file, info, state)) in &before {
        if reset.contains(unit) {
            assert_eq!(state, "failed", "the reap reset {unit}, which was {state}");
            assert!(!loaded.contains(unit), "{unit} was reset and is still loaded");
            continue;
        }
        assert!(loaded.contains(unit), "{unit} ({state}) is gone after the reap, which did not reset it ({report})");
        assert!(file.exists(), "the reap removed the env file {} of the loaded {unit} ({state})", file.display());
        if let Some(info) = info {
            assert!(
                info.exists(),
                "the reap removed the runner info {} of the loaded {unit} ({state})",
                info.display()
            );
        }
    }
    assert!(loaded.is_subset(&before.keys().cloned().collect()), "units appeared during the reap: {loaded:?}");
    println!(
        "the reap reset {} failed units; {} loaded units kept their env files, {} of them their runner info",
        reset.len(),
        loaded.len(),
        before.iter().filter(|(u, (_, info, _))| loaded.contains(*u) && info.is_some()).count()
    );
    let own_dirs: BTreeSet<PathBuf> =
        loaded.iter().filter_map(|u| env.env_file(u)).map(|f| f.parent().unwrap().to_path_buf()).collect();
    for e in std::fs::read_dir(&agents).unwrap().flatten() {
        assert!(
            own_dirs.contains(&e.path()),
            "after a reap, {} belongs to no loaded unit ({report})",
            e.path().display()
        );
    }
    let sessions: BTreeSet<String> = loaded
        .iter()
        .map(|u| u.trim_start_matches("agent-relay-managed-").trim_end_matches(".service").to_string())
        .collect();
    for e in std::fs::read_dir(&runners).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let name = e.file_name().to_string_lossy().trim_end_matches(".json").to_string();
        assert!(sessions.contains(&name), "runner info {} outlived its agent", e.path().display());
    }
    // The token lives only in the env files of loaded units.
    let mut holders = Vec::new();
    files_containing(&env.runtime_dir().join("agent-relay-systemd"), TOKEN, &mut holders);
    files_containing(&env.home, TOKEN, &mut holders);
    holders.retain(|p| p != &env.config);
    for p in &holders {
        assert!(own_dirs.contains(p.parent().unwrap()), "the token outlived its agent in {}", p.display());
    }

    // And stopping what is left leaves nothing.
    for r in listed.as_array().unwrap() {
        env.run(&["stop", r["systemdUnit"].as_str().unwrap(), "--timeout-stop", "2"], None);
    }
    env.json(&["reap", "-o", "json"], None);
    assert_eq!(slice_processes(&env), BTreeMap::new(), "agent processes survived their stop");
    println!("took {:?}", started.elapsed());
}
