//! Durable agents against a real private `systemd --user`: `spawn --persist` installs an enabled
//! unit file, the agent comes back after the manager is stopped and started again, `remove`
//! deletes it for good, and bad input changes nothing. Checked as an operator would check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

const PROMPT: &str = "PROMPT-durable-do-not-leak-77";
const ENV_SECRET: &str = "env-secret-durable-value";

/// Words that systemd would take apart or expand if the unit file quoted them wrongly.
fn odd_args() -> Vec<&'static str> {
    vec!["a b", "$HOME", "${PATH}", "%n", "say \"hi\"", "back\\slash", ";", "it's", "ünï", ""]
}

/// Every file (not directory) below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn persist_spawn_installs_an_enabled_unit_file_with_no_secret_in_it() {
    let env = Env::new();
    let req = env.request(json!({
        "label": "Odd \"one\" 100% $HOME", "spawnRequestId": "dur-000001", "prompt": PROMPT,
        "env": {"EXTRA_SECRET": ENV_SECRET}, "providerArgs": odd_args(),
    }));
    let out = env.persist(&req);
    assert_eq!(out["created"], true);
    let agent = &out["agent"];
    assert_eq!(agent["durable"], true);
    assert_eq!(agent["state"], "alive");
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let session = agent["sessionName"].as_str().unwrap().to_string();

    // What an operator sees: an enabled unit from a file in the user's unit directory.
    let file = env.unit_dir().join(&unit);
    assert_eq!(env.systemctl(&["is-enabled", &unit]).trim(), "enabled");
    assert_eq!(env.prop(&unit, "FragmentPath"), file.display().to_string());
    assert_eq!(env.prop(&unit, "UnitFileState"), "enabled");
    assert_eq!(env.prop(&unit, "Transient"), "no");
    assert_eq!(env.prop(&unit, "Type"), "notify");
    assert_eq!(env.prop(&unit, "Slice"), "agent_relay.slice");
    assert_eq!(mode(&file), 0o644);
    let text = std::fs::read_to_string(&file).unwrap();
    for secret in [TOKEN, ENV_SECRET, PROMPT] {
        assert!(!text.contains(secret), "{secret} in the unit file:\n{text}");
    }
    assert!(text.contains("[Install]\nWantedBy=default.target"), "{text}");

    // The secrets: 0600 files in a 0700 directory that outlives a reboot (not the runtime dir).
    let dirs = session_dirs(&env.durable_agents_dir(), &session);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(mode(&dirs[0]), 0o700);
    assert_eq!(mode(dirs[0].parent().unwrap()), 0o700);
    assert_eq!(mode(&dirs[0].join("env")), 0o600);
    assert_eq!(mode(&dirs[0].join("prompt")), 0o600);
    assert!(std::fs::read_to_string(dirs[0].join("env")).unwrap().contains(TOKEN));

    // The unit file's quoting: the runner got exactly these words, nothing expanded.
    let pid = agent["pid"].as_u64().unwrap();
    let argv = cmdline(pid);
    let tail: Vec<&str> = argv[argv.iter().position(|a| a == "--").unwrap() + 1..].iter().map(String::as_str).collect();
    assert_eq!(tail, odd_args(), "{argv:?}");
    let label_at = argv.iter().position(|a| a == "--label").unwrap();
    assert_eq!(argv[label_at + 1], "Odd \"one\" 100% $HOME");
    let environ = environ(pid);
    assert!(environ.contains(&format!("AGENT_RELAY_TOKEN={TOKEN}")));
    assert!(environ.contains("AGENT_RELAY_LABEL=Odd \"one\" 100% $HOME"));

    // list and show treat it like any agent, and say it is durable.
    let shown = env.json(&["show", "dur-000001", "-o", "json"], None);
    assert_eq!(shown["durable"], true);
    assert_eq!(shown["label"], "Odd \"one\" 100% $HOME");
    assert_eq!(shown["pid"], agent["pid"]);
    let listed = env.json(&["list", "-o", "json"], None);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["durable"], true);

    // diagnose, logs and kill take it like any agent.
    let diag = env.json(&["diagnose", "dur-000001", "-o", "json"], None);
    assert_eq!(diag["agentId"], agent["agentId"], "{diag}");
    assert!(wait_until(Duration::from_secs(5), || {
        env.json(&["logs", "dur-000001", "-o", "json"], None)["lines"].to_string().contains("FAKE-RUNNER")
    }));
    env.json(&["kill", "dur-000001", "--signal", "CONT", "-o", "json"], None);

    // Idempotent like a transient spawn.
    let again = env.persist(&req);
    assert_eq!(again["created"], false);
    assert_eq!(again["agent"]["pid"], agent["pid"]);

    // stop only stops: still enabled, still listed (inactive), file kept.
    env.json(&["stop", &unit, "-o", "json"], None);
    assert_eq!(env.systemctl(&["is-enabled", &unit]).trim(), "enabled");
    let listed = env.json(&["list", "-o", "json"], None);
    assert_eq!(listed[0]["activeState"], "inactive", "{listed}");
    assert_eq!(listed[0]["durable"], true);
    assert!(file.exists() && session_dirs(&env.durable_agents_dir(), &session).len() == 1);

    // The same request starts the stopped agent afresh, with fresh secret files replacing the
    // old ones. (Another request never maps to its unit name: tests/system/seams.rs.)
    let again = env.persist(&req);
    assert_eq!(again["created"], true);
    assert_eq!(again["agent"]["state"], "alive");
    assert_ne!(again["agent"]["pid"], agent["pid"]);
    let dirs_now = session_dirs(&env.durable_agents_dir(), &session);
    assert_eq!(dirs_now.len(), 1);
    assert_ne!(dirs_now, dirs);
}

#[test]
fn a_durable_agent_comes_back_after_the_user_manager_restarts() {
    let mut env = Env::new();
    let req = env.request(json!({"label": "survivor", "spawnRequestId": "dur-000002", "prompt": PROMPT}));
    let first = env.persist(&req)["agent"].clone();
    let old_pid = first["pid"].as_u64().unwrap();

    env.restart_manager();
    assert!(!pid_alive(old_pid), "the old runner outlived its manager");
    let mut back = Value::Null;
    let came_back = wait_until(Duration::from_secs(10), || {
        let out = env.run(&["show", "dur-000002", "-o", "json"], None);
        back = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        back["state"] == "alive"
    });
    assert!(came_back, "the durable agent did not come back: {back}");
    assert_eq!(back["agentId"], first["agentId"]);
    assert_eq!(back["durable"], true);
    let new_pid = back["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(pid_alive(new_pid));
    // Its secrets survived the emptied runtime dir.
    let environ = environ(new_pid);
    assert!(environ.contains(&format!("AGENT_RELAY_TOKEN={TOKEN}")));
    let listed = env.json(&["list", "-o", "json"], None);
    assert_eq!(listed[0]["agentId"], first["agentId"], "{listed}");
    let unit = first["systemdUnit"].as_str().unwrap();
    assert_eq!(env.prop(unit, "MainPID"), new_pid.to_string());
}

#[test]
fn remove_disables_and_deletes_and_the_agent_stays_gone_after_a_restart() {
    let mut env = Env::new();
    let req = env.request(json!({"label": "goner", "spawnRequestId": "dur-000003", "prompt": PROMPT}));
    let agent = env.persist(&req)["agent"].clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let session = agent["sessionName"].as_str().unwrap().to_string();
    let pid = agent["pid"].as_u64().unwrap();

    let out = env.json(&["remove", "dur-000003", "-o", "json"], None);
    assert_eq!(out["stopped"], true);
    assert_eq!(out["wasRunning"], true);
    assert_eq!(out["durable"], true);
    assert!(!pid_alive(pid));
    assert!(!env.unit_dir().join(&unit).exists());
    assert!(!env.unit_dir().join("default.target.wants").join(&unit).exists());
    assert!(session_dirs(&env.durable_agents_dir(), &session).is_empty());
    // The unit file is gone: systemctl cannot say it is enabled, or anything.
    let gone = env.systemctl_fails(&["is-enabled", &unit]);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("No such file or directory"), "is-enabled {unit}: {err}");

    env.restart_manager();
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
    assert_eq!(env.json(&["list", "-o", "json"], None), json!([]));
    assert_eq!(env.run(&["show", "dur-000003"], None).status.code(), Some(3));
}

#[test]
fn remove_of_a_transient_agent_is_a_stop_and_a_disabled_durable_one_is_still_found() {
    let env = Env::new();
    let t = env.spawn(&env.request(json!({"label": "plain", "spawnRequestId": "dur-000004"})));
    let out = env.json(&["remove", "dur-000004", "-o", "json"], None);
    assert_eq!(out["durable"], false);
    assert_eq!(out["unitFile"], Value::Null);
    assert!(!pid_alive(t["agent"]["pid"].as_u64().unwrap()));

    // Disabled by hand and stopped: no longer loaded, but show and remove find it by its file.
    let agent = env.persist(&env.request(json!({"label": "hand", "spawnRequestId": "dur-000005"})))["agent"].clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    env.systemctl(&["disable", "--now", &unit]);
    let shown = env.json(&["show", "dur-000005", "-o", "json"], None);
    assert_eq!(shown["durable"], true);
    assert_eq!(shown["state"], "dead");
    let out = env.json(&["remove", &unit, "-o", "json"], None);
    assert_eq!(out["durable"], true);
    assert!(!env.unit_dir().join(&unit).exists());
}

#[test]
fn bad_input_to_generate_or_persist_changes_nothing() {
    let env = Env::new();
    let app = env.projects.join("app");
    let cases = [
        ("not json".to_string(), "invalid spawn request"),
        (json!({"provider": "claude", "cwd": "/etc"}).to_string(), "cwd must be within base directory"),
        (json!({"provider": "claude", "cwd": app, "label": "x\ny"}).to_string(), "control characters"),
    ];
    for (input, want) in &cases {
        for args in [&["generate"][..], &["spawn", "--persist"][..]] {
            let out = env.run(args, Some(input));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {input:?}: {err}");
            assert!(err.contains(want), "{args:?} {input:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(out.stdout.is_empty());
        }
    }
    // A good request: generate prints the unit and still creates nothing.
    let out = env.run(&["generate"], Some(&env.request(json!({"spawnRequestId": "dur-000006"})).to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ExecStart=") && text.contains("EnvironmentFile="), "{text}");
    assert!(!text.contains(TOKEN));
    assert!(!env.unit_dir().exists(), "generate wrote a unit file");
    assert!(!env.mgr().root().join("state/agent-relay-systemd/durable").exists(), "generate wrote files");
    assert!(env.agent_units().is_empty());
}

#[test]
fn a_durable_runner_that_cannot_be_executed_leaves_nothing_behind() {
    let env = Env::new();
    env.use_broken_runner();
    let out = env.run(&["spawn", "--persist"], Some(&env.request(json!({"label": "broken"})).to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("could not be executed"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // No unit file, no enablement link, no secret file.
    assert_eq!(files_under(&env.unit_dir()), Vec::<PathBuf>::new());
    assert_eq!(files_under(&env.durable_agents_dir()), Vec::<PathBuf>::new());
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
}

#[test]
fn concurrent_persist_spawns_of_one_request_make_one_durable_agent() {
    let env = Env::new();
    let req = env.request(json!({"spawnRequestId": "dur-000007"})).to_string();
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..3).map(|_| s.spawn(|| env.run(&["spawn", "--persist", "-o", "json"], Some(&req)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut created = 0;
    let mut pids = Vec::new();
    for out in &outs {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        created += v["created"].as_bool().unwrap() as u32;
        pids.push(v["agent"]["pid"].clone());
    }
    assert_eq!(created, 1, "{pids:?}");
    assert!(pids.windows(2).all(|w| w[0] == w[1]), "{pids:?}");
    assert_eq!(env.agent_units().len(), 1);
    assert_eq!(files_under(&env.durable_agents_dir()).iter().filter(|p| p.ends_with("env")).count(), 1);
}

#[test]
fn a_durable_unit_reads_back_like_the_transient_unit_of_the_same_request() {
    // The same request both ways; systemd's own view of the two units must agree.
    let env = Env::new();
    let base = json!({"label": "twin", "limits": {"memoryMax": "1G", "tasksMax": 64, "cpuQuota": 150}});
    let mut t_req = env.request(base.clone());
    t_req["spawnRequestId"] = json!("twin-0001");
    let mut d_req = env.request(base);
    d_req["spawnRequestId"] = json!("twin-0002");
    let t = env.spawn(&t_req)["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let d = env.persist(&d_req)["agent"]["systemdUnit"].as_str().unwrap().to_string();
    for p in [
        "Type",
        "Slice",
        "KillMode",
        "TimeoutStopUSec",
        "Restart",
        "RestartUSec",
        "StartLimitBurst",
        "StartLimitIntervalUSec",
        "MemoryMax",
        "TasksMax",
        "CPUQuotaPerSecUSec",
        "WorkingDirectory",
        "StandardOutput",
        "StandardError",
    ] {
        assert_eq!(env.prop(&t, p), env.prop(&d, p), "{p} differs between {t} and {d}");
    }
    assert_eq!(env.prop(&d, "MemoryMax"), "1073741824");
    assert_eq!(env.prop(&d, "CPUQuotaPerSecUSec"), "1.500000s");
    assert_eq!(env.prop(&d, "Restart"), "on-failure");
    assert_eq!(env.prop(&d, "StandardOutput"), "append");
    let strip = |s: String| s.replace("twin-0001", "ID").replace("twin-0002", "ID");
    let counts =
        |u: &str| (env.prop(u, "Environment").split(' ').count(), env.prop(u, "LogExtraFields").lines().count());
    assert_eq!(counts(&t), counts(&d));
    let exec = |u: &str| strip(env.prop(u, "ExecStart")).split(" ; ").take(2).collect::<Vec<_>>().join(" ; ");
    let (te, de) = (exec(&t), exec(&d));
    // Only the agent ids (random) differ in argv.
    let id = |s: &str| s.split_whitespace().skip_while(|w| *w != "--agent-id").nth(1).unwrap_or("").to_string();
    // And the log writer's times file, named by each one's session.
    let times = |s: &str| s.split_whitespace().find(|w| w.starts_with("--times=")).unwrap_or("").to_string();
    let same = |s: &str| s.replace(&id(s), "AID").replace(&times(s), "--times=T");
    assert!(!times(&te).is_empty() && te.contains(" log-tee "), "{te}");
    assert_eq!(same(&te), same(&de));
}

/// Runs and expects the conflict exit (4) with one line holding every `want`.
fn conflict(env: &Env, args: &[&str], req: &Value, want: &[&str]) {
    let out = env.run(args, Some(&req.to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn a_transient_spawn_of_a_durable_request_returns_it_when_live_and_says_what_to_do_when_stopped() {
    let env = Env::new();
    let req = env.request(json!({"label": "mixed", "spawnRequestId": "mix-000001"}));
    let agent = env.persist(&req)["agent"].clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let session = agent["sessionName"].as_str().unwrap().to_string();

    let again = env.spawn(&req);
    assert_eq!(again["created"], false);
    assert_eq!(again["agent"]["durable"], true);
    assert_eq!(again["agent"]["pid"], agent["pid"]);

    // Stopped, then stopped and disabled by hand (not loaded): the answer names the way out.
    env.json(&["stop", &unit, "-o", "json"], None);
    conflict(&env, &["spawn"], &req, &["mix-000001", &unit, "inactive", "spawn --persist", "remove"]);
    env.systemctl(&["disable", "--now", &unit]);
    assert!(!env.agent_units().contains(&unit));
    conflict(&env, &["spawn"], &req, &["mix-000001", &unit, "spawn --persist", "remove"]);
    // Nothing of the refused transient spawn stays, and the durable agent is as it was.
    assert!(session_dirs(&env.agents_dir(), &session).is_empty(), "{:?}", session_dirs(&env.agents_dir(), &session));
    assert!(env.unit_dir().join(&unit).exists());
    assert_eq!(env.prop(&unit, "Transient"), "no");
    assert_eq!(session_dirs(&env.durable_agents_dir(), &session).len(), 1);

    // The advice works: --persist starts it again.
    let back = env.persist(&req);
    assert_eq!(back["created"], true);
    assert_eq!(back["agent"]["state"], "alive");
    assert_eq!(env.systemctl(&["is-enabled", &unit]).trim(), "enabled");
}

#[test]
fn a_persist_spawn_of_a_live_transient_request_is_a_conflict_until_it_is_stopped() {
    let env = Env::new();
    let req = env.request(json!({"label": "mixed", "spawnRequestId": "mix-000002"}));
    let agent = env.spawn(&req)["agent"].clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let session = agent["sessionName"].as_str().unwrap().to_string();

    conflict(&env, &["spawn", "--persist"], &req, &["mix-000002", "transient", &unit, "stop"]);
    assert!(!env.unit_dir().join(&unit).exists(), "a unit file was written");
    assert!(session_dirs(&env.durable_agents_dir(), &session).is_empty());
    assert_eq!(env.json(&["show", "mix-000002", "-o", "json"], None)["pid"], agent["pid"]);
    assert_eq!(env.prop(&unit, "Transient"), "yes");

    env.json(&["stop", &unit, "-o", "json"], None);
    let durable = env.persist(&req);
    assert_eq!(durable["created"], true);
    assert_eq!(durable["agent"]["durable"], true);
    assert_eq!(env.prop(&unit, "Transient"), "no");
}

#[test]
fn a_failed_restart_of_a_stopped_durable_agent_keeps_the_agent_it_was_replacing() {
    let env = Env::new();
    let req = env.request(json!({"spawnRequestId": "keep-1", "label": "keep"}));
    let first = env.persist(&req);
    let unit = first["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let session = first["agent"]["sessionName"].as_str().unwrap().to_string();
    env.json(&["stop", "keep-1", "-o", "json"], None);
    let before = std::fs::read_to_string(env.unit_dir().join(&unit)).unwrap();
    let dirs_before = session_dirs(&env.durable_agents_dir(), &session);
    assert_eq!(dirs_before.len(), 1, "{dirs_before:?}");

    // The same request again, with a runner that cannot start: the spawn fails...
    env.use_broken_runner();
    let out = env.run(&["spawn", "--persist"], Some(&req.to_string()));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // ...and the stopped agent it was replacing is still defined, enabled, with its secrets.
    assert_eq!(std::fs::read_to_string(env.unit_dir().join(&unit)).unwrap(), before);
    assert_eq!(session_dirs(&env.durable_agents_dir(), &session), dirs_before, "only the failed attempt's files go");
    assert_eq!(env.systemctl(&["is-enabled", &unit]).trim(), "enabled");
    env.systemctl(&["start", &unit]);
    assert_eq!(env.prop(&unit, "ActiveState"), "active");
    let pid: u64 = env.prop(&unit, "MainPID").parse().unwrap();
    assert!(pid > 0 && pid_alive(pid));
}
