//! spawn / list / show / stop against a real private `systemd --user`, checked as an operator
//! would check them: `systemctl --user show`, `/proc/PID/cmdline`, file modes.

use std::time::{Duration, Instant};

use crate::util::*;
use agent_relay_systemd::model::naming::{unique_suffix, UniqueId};
use serde_json::{json, Value};

const PROMPT: &str = "PROMPT-TEXT-do-not-leak-41";

#[test]
fn spawn_creates_a_transient_unit_an_operator_can_inspect() {
    let env = Env::new();
    let req = env.request(json!({
        "label": "Fix Bug", "spawnRequestId": "req-000001", "prompt": PROMPT, "model": "opus",
        "systemPromptAppend": "APPEND-TEXT", "env": {"EXTRA_SECRET": "extra-secret-value"}
    }));
    let out = env.spawn(&req);
    assert_eq!(out["created"], true);
    let agent = &out["agent"];
    let unit = agent["systemdUnit"].as_str().unwrap();
    let session = format!("ar-claude-fix-bug-{}", unique_suffix(UniqueId::SpawnRequest("req-000001")));
    assert_eq!(unit, format!("agent-relay-managed-{session}.service"));
    assert_eq!(agent["state"], "alive");

    assert_eq!(env.prop(unit, "Type"), "notify");
    assert_eq!(env.prop(unit, "Slice"), "agent_relay.slice");
    assert_eq!(env.prop(unit, "KillMode"), "control-group");
    let extra = env.prop(unit, "LogExtraFields");
    assert!(extra.contains(&format!("AGENT_RELAY_AGENT_ID={}", agent["agentId"].as_str().unwrap())), "{extra}");
    let environment = env.prop(unit, "Environment");
    assert!(environment.contains("AGENT_RELAY_PROMPT_FILE="), "{environment}");
    assert!(
        !environment.contains(TOKEN) && !environment.contains("extra-secret-value"),
        "secret in Environment=: {environment}"
    );
    assert!(!environment.contains(PROMPT));
    let description = env.prop(unit, "Description");
    assert!(description.contains("Fix Bug") && description.contains("claude"), "{description}");
    let show_all = env.systemctl(&["show", unit]);
    assert!(!show_all.contains(TOKEN) && !show_all.contains(PROMPT), "secret visible in systemctl show");

    // The runner's argv holds no prompt; its environment holds the token (from the 0600 file).
    let pid = agent["pid"].as_u64().unwrap();
    assert_eq!(env.prop(unit, "MainPID"), pid.to_string());
    let cmdline = cmdline(pid).join(" ");
    assert!(
        cmdline.contains("--agent-id") && !cmdline.contains(PROMPT) && !cmdline.contains("APPEND-TEXT"),
        "{cmdline}"
    );
    let environ = environ(pid);
    assert!(environ.contains(&format!("AGENT_RELAY_TOKEN={TOKEN}")));
    assert!(environ.contains("EXTRA_SECRET=extra-secret-value"));

    // Secret and payload files: 0600 in 0700 directories.
    let prompt_file = environment.split(' ').find_map(|kv| kv.strip_prefix("AGENT_RELAY_PROMPT_FILE=")).unwrap();
    let prompt_file = std::path::Path::new(prompt_file);
    let dir = prompt_file.parent().unwrap();
    assert_eq!(std::fs::read_to_string(prompt_file).unwrap(), PROMPT);
    assert_eq!(mode(prompt_file), 0o600);
    assert_eq!(mode(&dir.join("env")), 0o600);
    assert_eq!(mode(&dir.join("system-prompt-append")), 0o600);
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(dir.parent().unwrap()), 0o700);
    assert_eq!(mode(dir.parent().unwrap().parent().unwrap()), 0o700);

    // The runner got its info-file path and wrote it; output goes to the per-agent log.
    let log = agent["logFile"].as_str().unwrap();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("PROMPT-BYTES")));
    let log_text = std::fs::read_to_string(log).unwrap();
    assert!(log_text.contains(&format!("FAKE-RUNNER PROMPT-BYTES {}", PROMPT.len())), "{log_text}");
    assert_eq!(mode(std::path::Path::new(log)), 0o600);
    let info = env.runner_info(&session);
    assert!(wait_until(Duration::from_secs(5), || info.exists()), "runner info {} not written", info.display());
}

#[test]
fn records_come_from_units_alone() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "label": "alpha", "spawnRequestId": "req-a", "model": "opus", "effort": "high", "profile": "reviewer",
        "policyName": "nightly", "automationId": "auto-1", "automationRunId": "run-9", "approvalMode": "auto",
        "lifecycle": "ephemeral", "workspaceMode": "isolated"
    })))["agent"]
        .clone();
    let b = env.spawn(&env.request(json!({"label": "beta"})))["agent"].clone();

    // No state of ours anywhere: wipe ~/.agent-relay, our runtime dir (the agents' env and
    // payload files) and our state dir (exit records, durable files), and ask a fresh process.
    let ours = [
        env.home.join(".agent-relay"),
        env.runtime_dir().join("agent-relay-systemd"),
        env.mgr().root().join("state/agent-relay-systemd"),
    ];
    assert!(ours[..2].iter().all(|d| d.is_dir()), "the spawns made {ours:?}");
    for dir in &ours {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.unwrap_or_else(|e| panic!("remove {}: {e}", dir.display())),
        }
        assert!(!dir.exists(), "{}", dir.display());
    }
    let list = env.json(&["list", "-o", "json"], None);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let got_a = list.iter().find(|r| r["agentId"] == a["agentId"]).expect("alpha listed");
    let got_b = list.iter().find(|r| r["agentId"] == b["agentId"]).expect("beta listed");
    for key in [
        "agentId",
        "provider",
        "label",
        "sessionName",
        "systemdUnit",
        "invocationId",
        "pid",
        "state",
        "activeState",
        "subState",
        "cwd",
        "approvalMode",
        "policyName",
        "spawnRequestId",
        "automationId",
        "automationRunId",
        "lifecycle",
        "workspaceMode",
        "model",
        "effort",
        "profile",
        "startedAt",
        "restarts",
        "logFile",
    ] {
        assert!(got_a.get(key).is_some(), "field {key} missing");
        if key != "pid" {
            assert_eq!(got_a[key], a[key], "field {key} differs between spawn and list");
        }
    }
    let expect = [
        ("provider", json!("claude")),
        ("label", json!("alpha")),
        ("model", json!("opus")),
        ("effort", json!("high")),
        ("profile", json!("reviewer")),
        ("policyName", json!("nightly")),
        ("automationId", json!("auto-1")),
        ("automationRunId", json!("run-9")),
        ("approvalMode", json!("auto")),
        ("lifecycle", json!("ephemeral")),
        ("workspaceMode", json!("isolated")),
        ("spawnRequestId", json!("req-a")),
        ("state", json!("alive")),
        ("activeState", json!("active")),
        ("restarts", json!(0)),
    ];
    for (k, v) in expect {
        assert_eq!(got_a[k], v, "field {k}");
    }
    let cwd = std::fs::canonicalize(env.projects.join("app")).unwrap();
    assert_eq!(got_a["cwd"], json!(cwd));
    assert_eq!(got_a["pid"].as_u64().unwrap().to_string(), env.prop(got_a["systemdUnit"].as_str().unwrap(), "MainPID"));
    let invocation = env.prop(got_a["systemdUnit"].as_str().unwrap(), "InvocationID");
    assert_eq!(got_a["invocationId"], json!(invocation));
    let started = got_a["startedAt"].as_u64().unwrap();
    let now = now_ms();
    assert!(started <= now && now - started < 60_000, "startedAt {started} vs now {now}");
    assert_eq!(got_b["lifecycle"], "persistent");
    assert_eq!(got_b["workspaceMode"], "inherit");
    assert_eq!(got_b["approvalMode"], "guarded");
    assert_eq!(got_b["spawnRequestId"], Value::Null);

    // show resolves every kind of reference to the same agent.
    for reference in [
        a["agentId"].as_str().unwrap(),
        a["sessionName"].as_str().unwrap(),
        a["systemdUnit"].as_str().unwrap(),
        "req-a",
    ] {
        let shown = env.json(&["show", reference, "-o", "json"], None);
        assert_eq!(shown["agentId"], a["agentId"], "show {reference}");
    }
}

/// Request env values with every character a shell, systemd's `EnvironmentFile=` parser or its
/// specifier expansion treats specially.
fn awkward_env() -> serde_json::Map<String, Value> {
    let values = [
        ("DQUOTE", "say \"hi\" \"\""),
        ("SQUOTE", "it's 'quoted'"),
        ("BACKSLASH", "a\\b \\\\ \\n \\t \\"),
        ("DOLLAR", "$HOME ${HOME} $$ $1 $ ${"),
        ("BACKTICK", "`id` $(id) `"),
        ("SPACES", "  lead, inner  two,  trail  "),
        ("PERCENT", "%h %n %% %i 100%"),
        ("HASH", "#not a comment # ;neither"),
        ("NEWLINES", "line1\nline2\n\nline4\n"),
        ("BACKSLASH_NEWLINE", "ends\\\nnext"),
        ("TAB", "a\tb\t"),
        ("EQUALS", "a=b==c="),
        ("ONLY_NEWLINE", "\n"),
        ("EMPTY", ""),
        ("UNICODE", "ünïcödé € \u{feff} 🦀"),
        ("EVERYTHING", " \"'\\$`%#\n\t;&|<>*?~ "),
    ];
    values.into_iter().map(|(k, v)| (format!("AWKWARD_{k}"), json!(v))).collect()
}

#[test]
fn request_env_values_reach_the_runner_exactly() {
    let env = Env::new();
    let vars = awkward_env();
    for (how, rid) in [("spawn", "awkward-transient"), ("spawn --persist", "awkward-durable")] {
        let req = env.request(json!({"spawnRequestId": rid, "env": vars}));
        let out = match how {
            "spawn" => env.spawn(&req),
            _ => env.persist(&req),
        };
        let unit = out["agent"]["systemdUnit"].as_str().unwrap().to_string();
        let pid = out["agent"]["pid"].as_u64().unwrap();
        assert_eq!(env.prop(&unit, "MainPID"), pid.to_string(), "{how}");
        // The runner's environment as the kernel holds it: NUL-separated KEY=value.
        let got: std::collections::BTreeMap<String, String> = environ(pid)
            .split('\0')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        for (k, v) in &vars {
            assert_eq!(got.get(k).map(String::as_str), v.as_str(), "{how}: {k} differs in /proc/{pid}/environ");
        }
        // Secrets: none of them is on the unit (Environment=, Description, …) or the argv.
        let show = env.systemctl(&["show", &unit]);
        let argv = cmdline(pid).join(" ");
        for v in ["say \"hi\"", "`id` $(id)", "%h %n %%", "#not a comment"] {
            assert!(!show.contains(v) && !argv.contains(v), "{how}: {v:?} visible");
        }
    }
}

#[test]
fn concurrent_spawns_of_one_request_make_one_unit() {
    let env = Env::new();
    let req = env.request(json!({"spawnRequestId": "race-0001"})).to_string();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| env.json(&["spawn", "-o", "json"], Some(&req)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: std::collections::BTreeSet<_> =
        results.iter().map(|r| r["agent"]["agentId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "all spawns return one agent: {ids:?}");
    assert_eq!(results.iter().filter(|r| r["created"] == true).count(), 1, "exactly one spawn created it");
    assert_eq!(env.agent_units().len(), 1, "units: {:?}", env.agent_units());
    // The losers left no files behind: one attempt directory.
    assert_eq!(std::fs::read_dir(env.agents_dir()).unwrap().count(), 1);
}

#[test]
fn a_different_request_mapping_to_an_existing_unit_is_a_conflict() {
    let env = Env::new();
    // Without a spawnRequestId the unit is named after the agent id: a second request with the
    // same agentId maps to the first one's unit. (Different spawnRequestIds never share a unit:
    // tests/system/seams.rs.)
    env.spawn(&env.request(json!({"label": "same", "agentId": "dup-agent"})));
    let out = env.run(&["spawn"], Some(&env.request(json!({"label": "same", "agentId": "dup-agent"})).to_string()));
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists") && err.contains("dup-agent"), "{err}");
    assert_eq!(env.agent_units().len(), 1);
    assert_eq!(std::fs::read_dir(env.agents_dir()).unwrap().count(), 1, "the refused spawn left no files");
}

#[test]
fn stop_kills_an_agent_that_ignores_sigterm_within_timeout_plus_two_seconds() {
    let env = Env::new();
    // No agent yet: the slice has no control group and no directory.
    assert_eq!(env.prop("agent_relay.slice", "ControlGroup"), "");
    assert_eq!(slice_processes(&env), Default::default());
    let agent = env.spawn(&env.request(json!({
        "spawnRequestId": "stubborn-1",
        "env": {"FAKE_RUNNER_IGNORE_SIGTERM": "1", "FAKE_RUNNER_CHILD": "1"}
    })))["agent"]
        .clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let pid = agent["pid"].as_u64().unwrap();
    let log = agent["logFile"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("FAKE-RUNNER CHILD")));
    let cgroup_pids = cgroup_pids(&env, &unit);
    assert!(cgroup_pids.len() >= 2, "runner and its child: {cgroup_pids:?}");
    // The slice's process tree, read the way the "no process left" checks read it, sees them.
    let in_slice = slice_processes(&env);
    let mut seen: Vec<u64> = in_slice.get(&unit).into_iter().flatten().map(|p| u64::from(*p)).collect();
    seen.sort();
    let mut want = cgroup_pids.clone();
    want.sort();
    assert_eq!((in_slice.len(), seen), (1, want), "{in_slice:?}");

    let started = Instant::now();
    let out = env.json(&["stop", "stubborn-1", "--timeout-stop", "2", "-o", "json"], None);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4) + Duration::from_millis(500), "stop took {took:?}");
    assert_eq!(out["stopped"], true);
    assert_eq!(out["wasRunning"], true);
    assert_eq!(out["killed"], true);
    for p in cgroup_pids.iter().chain([&pid]) {
        assert!(!pid_alive(*p), "pid {p} survived the stop");
    }
    assert!(env.agent_units().is_empty(), "unit left: {:?}", env.agent_units());
    assert_eq!(slice_processes(&env), Default::default(), "processes left in agent_relay.slice");
    assert_eq!(std::fs::read_dir(env.agents_dir()).unwrap().count(), 0, "secrets removed after stop");

    // Stopping again: the agent is dead (its exit record says so), so nothing is stopped, as
    // the seed answers; a reference nothing knows is not found.
    let again = env.json(&["stop", "stubborn-1", "-o", "json"], None);
    assert_eq!((&again["stopped"], &again["wasRunning"]), (&json!(false), &json!(false)), "{again}");
    assert_eq!(env.run(&["stop", "never-spawned"], None).status.code(), Some(3));
}

#[test]
fn stop_of_a_cooperative_agent_is_graceful() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({"label": "calm"})))["agent"].clone();
    let log = agent["logFile"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("FAKE-RUNNER START")));
    let out = env.json(&["stop", agent["agentId"].as_str().unwrap(), "-o", "json"], None);
    assert_eq!(
        (out["stopped"].clone(), out["wasRunning"].clone(), out["killed"].clone()),
        (json!(true), json!(true), json!(false))
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("FAKE-RUNNER TERM"));
}

/// Pids in the unit's control group, read from cgroupfs as an operator would (panics unless the
/// group was read).
fn cgroup_pids(env: &Env, unit: &str) -> Vec<u64> {
    let cg = env.prop(unit, "ControlGroup");
    assert!(!cg.is_empty(), "{unit} has no control group");
    let procs = cgroup_tree_processes(&cg).unwrap_or_else(|| panic!("{unit}'s control group {cg} has no directory"));
    procs.into_values().flatten().map(u64::from).collect()
}

#[test]
fn a_runner_that_cannot_be_executed_fails_the_spawn_cleanly() {
    let env = Env::new();
    env.use_broken_runner();
    let out = env.run(&["spawn"], Some(&env.request(json!({"label": "broken"})).to_string()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be executed"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
    assert_eq!(std::fs::read_dir(env.agents_dir()).unwrap().count(), 0);
}

#[test]
fn works_over_the_private_socket_when_there_is_no_bus() {
    let env = Env::new();
    let run = |args: &[&str], stdin: Option<String>| {
        let bus = std::ffi::OsStr::new("unix:path=/nonexistent/bus");
        let out = env.run_with(&[("DBUS_SESSION_BUS_ADDRESS", bus)], args, stdin.as_deref());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let spawned = run(&["spawn", "-o", "json"], Some(env.request(json!({"spawnRequestId": "p2p-1"})).to_string()));
    assert_eq!(spawned["agent"]["state"], "alive");
    assert_eq!(run(&["list", "-o", "json"], None).as_array().unwrap().len(), 1);
    assert_eq!(run(&["stop", "p2p-1", "-o", "json"], None)["stopped"], true);
}

#[test]
fn works_over_the_session_bus_when_there_is_no_private_socket() {
    let env = Env::new();
    // A runtime directory without systemd's private socket: only the session bus is left.
    let runtime = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: Option<String>| {
        let vars = [
            ("XDG_RUNTIME_DIR", runtime.path().as_os_str()),
            ("AGENT_RELAY_LOG", std::ffi::OsStr::new("agent_relay_systemd=debug")),
        ];
        let out = env.run_with(&vars, args, stdin.as_deref());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(err.contains("through the session bus"), "{args:?}: {err}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let spawned = run(&["spawn", "-o", "json"], Some(env.request(json!({"spawnRequestId": "bus-1"})).to_string()));
    let agent = &spawned["agent"];
    assert_eq!(agent["state"], "alive");
    // The record the spawn built from the start's signals matches what systemd says.
    let unit = agent["systemdUnit"].as_str().unwrap();
    assert_eq!(agent["pid"].as_u64().unwrap().to_string(), env.prop(unit, "MainPID"));
    assert_eq!(run(&["list", "-o", "json"], None).as_array().unwrap().len(), 1);
    assert_eq!(run(&["stop", "bus-1", "-o", "json"], None)["stopped"], true);
}

#[test]
fn resource_limits_are_set_on_the_unit_and_shown_in_the_record() {
    // On these hosts the user manager cannot enforce memory limits (cgroup v1 controllers are not
    // delegated), so this checks that the properties are set and read back, as an operator sees.
    let env = Env::with_config(|c| c["limits"] = json!({"tasksMax": 128, "memoryMax": "4G"}));
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "limited", "limits": {"memoryMax": "1G", "memoryHigh": "768M", "cpuQuota": 150}
    })))["agent"]
        .clone();
    let unit = a["systemdUnit"].as_str().unwrap();
    assert_eq!(env.prop(unit, "MemoryMax"), (1u64 << 30).to_string());
    assert_eq!(env.prop(unit, "MemoryHigh"), (768u64 << 20).to_string());
    assert_eq!(env.prop(unit, "TasksMax"), "128");
    assert_eq!(env.prop(unit, "CPUQuotaPerSecUSec"), "1.500000s");
    assert_eq!(
        a["limits"],
        json!({"memoryMax": 1u64 << 30, "memoryHigh": 768u64 << 20, "tasksMax": 128, "cpuQuotaPercent": 150})
    );
    let bad = env.run(&["spawn"], Some(&env.request(json!({"limits": {"memoryMax": "lots"}})).to_string()));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("limits.memoryMax"));
}
