//! A drop-in for the orchestrator: the runner gets the caller's environment (filtered) under the
//! config, profile and request env; the config reads like the orchestrator's loader; records carry
//! what the request said; a request cannot forge its exit record.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

/// One value with everything an env file must carry exactly: leading and trailing blanks,
/// newlines, both quotes, `$` and `${…}`, a backtick, backslashes (one before a newline, one at
/// the end), a tab, `#`, `;`, `=` and non-ASCII (systemd.exec(5), EnvironmentFile=).
const ODD: &str = "  lead\nmulti \"dq\" 'sq' $HOME ${PATH} `cmd` back\\slash\\\nafter #hash ;semi a=b ünï\ttab end\\";

/// A process's environment as a map (values may hold newlines; entries are NUL-separated).
fn environ_map(pid: u64) -> BTreeMap<String, String> {
    environ(pid).split('\0').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Runs the CLI with `extra` added to its environment.
fn run_env(env: &Env, extra: &[(String, String)], args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let refs: Vec<(&str, &OsStr)> = extra.iter().map(|(k, v)| (k.as_str(), OsStr::new(v.as_str()))).collect();
    env.run_with(&refs, args, stdin)
}

/// `spawn -o json` with `extra` in the CLI's environment; must succeed.
fn spawn_env(env: &Env, extra: &[(String, String)], req: &Value) -> Value {
    let out = run_env(env, extra, &["spawn", "-o", "json"], Some(&req.to_string()));
    assert!(out.status.success(), "spawn failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn edit_config(env: &Env, edit: impl FnOnce(&mut Value)) {
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&env.config).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&env.config, cfg.to_string()).unwrap();
}

fn ended(env: &Env, unit: &str) -> bool {
    matches!(env.prop(unit, "ActiveState").as_str(), "failed" | "inactive")
}

#[test]
fn the_runner_inherits_the_callers_environment_under_config_profile_and_request_env() {
    let env = Env::with_config(|c| {
        c["env"] = json!({
            "LAYER_CFG": "config", "LAYER_PROF": "config", "LAYER_ALL": "config",
            "AGENT_RELAY_LABEL": "config-spoof"
        });
    });
    let fake_invocation = "0123456789abcdef0123456789abcdef";
    let caller = vars(&[
        ("PROVIDER_API_KEY", "sk-inherited-5e1f"),
        ("HTTPS_PROXY", "http://proxy.example:3128"),
        ("SSH_AUTH_SOCK", "/tmp/ssh-agent.sock"),
        ("LAYER_CFG", "inherited"),
        ("LAYER_ALL", "inherited"),
        ("ODD_INHERITED", ODD),
        // systemd's per-process variables of the caller's own run: never the runner's.
        ("INVOCATION_ID", fake_invocation),
        ("NOTIFY_SOCKET", "/run/caller/notify"),
        ("LISTEN_FDS", "3"),
        ("LISTEN_PID", "1"),
        ("LISTEN_FDNAMES", "caller"),
        ("JOURNAL_STREAM", "8:1234"),
        ("WATCHDOG_USEC", "1000000"),
        ("TRIGGER_UNIT", "caller.timer"),
        ("MONITOR_SERVICE_RESULT", "success"),
        ("EXIT_CODE", "exited"),
        ("CREDENTIALS_DIRECTORY", "/run/caller/creds"),
        // Supervisor-owned, including the ones set only sometimes: ours or none.
        ("AGENT_RELAY_AGENT_ID", "inherited-spoof"),
        ("AGENT_RELAY_PROMPT", "inherited prompt"),
        ("AGENT_RELAY_PROMPT_FILE", "/etc/passwd"),
        ("AGENT_RELAY_AGENT_PROFILE_JSON", "{}"),
        ("AGENT_RELAY_POLICY", "inherited-policy"),
        ("AGENT_RELAY_SPAWN_REQUEST_ID", "inherited-rid"),
        ("AGENT_RELAY_TASK_ID", "99"),
        ("AGENT_RELAY_LOG", "warn"),
    ]);
    let req = env.request(json!({
        "spawnRequestId": "inherit-1", "label": "inherit", "prompt": "the prompt",
        "agentProfile": {"env": {"LAYER_PROF": "profile", "LAYER_ALL": "profile"}},
        "env": {"LAYER_ALL": "request", "ODD_REQUEST": ODD, "AGENT_RELAY_TAGS": "request-spoof"}
    }));
    let out = run_env(&env, &caller, &["spawn", "-o", "json"], Some(&req.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "spawn failed: {}\n{stderr}", out.status);
    // The caller is told which of its settings were not applied.
    assert!(stderr.contains("AGENT_RELAY_TAGS") && stderr.contains("AGENT_RELAY_LABEL"), "{stderr}");
    let agent = serde_json::from_slice::<Value>(&out.stdout).unwrap()["agent"].clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let e = environ_map(agent["pid"].as_u64().unwrap());
    let get = |k: &str| e.get(k).map(String::as_str);

    // What the runner lost before: provider keys, proxies, the SSH agent.
    assert_eq!(get("PROVIDER_API_KEY"), Some("sk-inherited-5e1f"));
    assert_eq!(get("HTTPS_PROXY"), Some("http://proxy.example:3128"));
    assert_eq!(get("SSH_AUTH_SOCK"), Some("/tmp/ssh-agent.sock"));
    // inherited < config env < profile < request env < supervisor-owned.
    assert_eq!(get("LAYER_CFG"), Some("config"));
    assert_eq!(get("LAYER_PROF"), Some("profile"));
    assert_eq!(get("LAYER_ALL"), Some("request"));
    assert_eq!(get("ODD_INHERITED"), Some(ODD), "inherited value not exact");
    assert_eq!(get("ODD_REQUEST"), Some(ODD), "request value not exact");
    // Per-process variables are the runner's own (set by systemd) or absent.
    assert_eq!(get("INVOCATION_ID"), Some(env.prop(&unit, "InvocationID").as_str()));
    for k in [
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "JOURNAL_STREAM",
        "WATCHDOG_USEC",
        "TRIGGER_UNIT",
        "MONITOR_SERVICE_RESULT",
        "EXIT_CODE",
        "CREDENTIALS_DIRECTORY",
    ] {
        assert_eq!(get(k), None, "{k} leaked from the caller");
    }
    assert_eq!(get("AGENT_RELAY_AGENT_ID"), agent["agentId"].as_str());
    assert_eq!(get("AGENT_RELAY_LABEL"), Some("inherit"));
    assert_eq!(get("AGENT_RELAY_TAGS"), Some("headless,dashboard-spawned,testhost"));
    assert_eq!(get("AGENT_RELAY_SPAWN_REQUEST_ID"), Some("inherit-1"));
    let prompt_file = get("AGENT_RELAY_PROMPT_FILE").unwrap();
    assert!(prompt_file.starts_with(env.agents_dir().to_str().unwrap()), "{prompt_file}");
    for k in ["AGENT_RELAY_PROMPT", "AGENT_RELAY_AGENT_PROFILE_JSON", "AGENT_RELAY_POLICY", "AGENT_RELAY_TASK_ID"] {
        assert_eq!(get(k), None, "{k} came from the caller");
    }
    assert!(get("PATH").unwrap().starts_with(&format!("{}/.local/bin:", env.home.display())));
    assert_eq!(get("AGENT_RELAY_TOKEN"), Some(TOKEN));

    // The inherited environment is in the 0600 env file, never a unit property.
    let show = env.systemctl(&["show", &unit]);
    for secret in ["sk-inherited-5e1f", "proxy.example", TOKEN] {
        assert!(!show.contains(secret), "{secret} visible in systemctl show");
    }
    let file = env.env_file(&unit).unwrap();
    assert_eq!(mode(&file), 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains("sk-inherited-5e1f"));
}

#[test]
fn inheritance_is_switched_off_by_the_config_or_the_environment() {
    let env = Env::with_config(|c| {
        c["inheritEnvironment"] = json!(false);
        c["env"] = json!({"FROM_CONFIG": "c"});
    });
    let caller = vars(&[("PROVIDER_API_KEY", "sk-off-1")]);
    let off = spawn_env(&env, &caller, &env.request(json!({"spawnRequestId": "off-file"})));
    let e = environ_map(off["agent"]["pid"].as_u64().unwrap());
    assert_eq!(e.get("PROVIDER_API_KEY"), None, "inheritEnvironment: false");
    assert_eq!(e.get("FROM_CONFIG").map(String::as_str), Some("c"));

    // The variable overrides the file, both ways.
    let mut on = caller.clone();
    on.push(("AGENT_RELAY_INHERIT_ENV".into(), "1".into()));
    let a = spawn_env(&env, &on, &env.request(json!({"spawnRequestId": "on-var"})));
    assert_eq!(environ_map(a["agent"]["pid"].as_u64().unwrap()).get("PROVIDER_API_KEY").unwrap(), "sk-off-1");
    edit_config(&env, |c| c["inheritEnvironment"] = json!(true));
    let mut off_var = caller.clone();
    off_var.push(("AGENT_RELAY_INHERIT_ENV".into(), "0".into()));
    let b = spawn_env(&env, &off_var, &env.request(json!({"spawnRequestId": "off-var"})));
    assert_eq!(environ_map(b["agent"]["pid"].as_u64().unwrap()).get("PROVIDER_API_KEY"), None);

    let mut bad = caller.clone();
    bad.push(("AGENT_RELAY_INHERIT_ENV".into(), "maybe".into()));
    let out = run_env(&env, &bad, &["spawn"], Some(&env.request(json!({"spawnRequestId": "bad"})).to_string()));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENT_RELAY_INHERIT_ENV"));
}

#[test]
fn a_request_cannot_forge_its_exit_record() {
    let env = Env::new();
    let forged = json!({"EXIT_CODE": "exited", "EXIT_STATUS": "0", "SERVICE_RESULT": "success"});
    let exits = json!({"FAKE_RUNNER_EXIT_AFTER_MS": "300", "FAKE_RUNNER_EXIT_CODE": "3"});
    let mut with_forged = exits.clone();
    with_forged.as_object_mut().unwrap().extend(forged.as_object().unwrap().clone());
    let refused = [
        env.request(json!({"spawnRequestId": "forge-1", "lifecycle": "ephemeral", "env": with_forged})),
        env.request(json!({"spawnRequestId": "forge-2", "env": {"INVOCATION_ID": "../../escape"}})),
        env.request(json!({"spawnRequestId": "forge-3", "agentProfile": {"env": {"SERVICE_RESULT": "success"}}})),
    ];
    for req in &refused {
        let out = env.run(&["spawn"], Some(&req.to_string()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{req}: {err}");
        assert!(err.contains("reserved"), "{err}");
    }
    assert!(env.agent_units().is_empty(), "a refused spawn started {:?}", env.agent_units());

    // The same names reaching the unit another way (the caller's own environment) change nothing.
    let caller = vars(&[
        ("EXIT_CODE", "exited"),
        ("EXIT_STATUS", "0"),
        ("SERVICE_RESULT", "success"),
        ("INVOCATION_ID", "../../../../tmp/forged"),
    ]);
    let a = spawn_env(
        &env,
        &caller,
        &env.request(json!({"spawnRequestId": "forge-4", "lifecycle": "ephemeral", "env": exits})),
    );
    let unit = a["agent"]["systemdUnit"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || ended(&env, &unit)));
    let invocation = env.prop(&unit, "InvocationID");
    env.systemctl(&["reset-failed", &unit]);
    assert!(wait_until(Duration::from_secs(5), || env.agent_units().is_empty()));
    let d = env.json(&["diagnose", "forge-4", "-o", "json"], None);
    assert_eq!(d["exit"]["source"], "record", "{d}");
    assert_eq!(d["exit"]["exitCode"], 3, "{d}");
    assert_eq!(d["exit"]["result"], "exit-code", "{d}");
    let session = a["agent"]["sessionName"].as_str().unwrap();
    let records: Vec<PathBuf> =
        std::fs::read_dir(env.exits_dir().join(session)).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let rec: Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(rec["invocationId"], json!(invocation));

    // Config env may not set them either.
    edit_config(&env, |c| c["env"] = json!({"EXIT_STATUS": "0"}));
    let out = env.run(&["spawn"], Some(&env.request(json!({"spawnRequestId": "forge-5"})).to_string()));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("EXIT_STATUS"));
}

#[test]
fn the_exit_recorder_trusts_the_unit_not_its_environment() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "recorder-1", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "200", "FAKE_RUNNER_EXIT_CODE": "3"}
    })));
    let agent = &a["agent"];
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let session = agent["sessionName"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || env.prop(&unit, "ActiveState") == "failed"));
    // The recorder run by hand, as a forged environment would run it, against the failed unit.
    let dir = env.home.join("forged-exits");
    let forged = vars(&[
        ("EXIT_CODE", "exited"),
        ("EXIT_STATUS", "0"),
        ("SERVICE_RESULT", "success"),
        ("INVOCATION_ID", "../../../../tmp/forged"),
    ]);
    let args = [
        "record-exit",
        "--dir",
        dir.to_str().unwrap(),
        "--unit",
        &unit,
        "--session",
        &session,
        "--agent-id",
        agent["agentId"].as_str().unwrap(),
        "--provider",
        "claude",
        "--log-file",
        agent["logFile"].as_str().unwrap(),
    ];
    let out = run_env(&env, &forged, &args, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: Vec<PathBuf> = std::fs::read_dir(dir.join(&session)).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let rec: Value = serde_json::from_slice(&std::fs::read(&written[0]).unwrap()).unwrap();
    assert_eq!(rec["exitCode"], "exited", "{rec}");
    assert_eq!(rec["exitStatus"], "3", "{rec}");
    assert_eq!(rec["serviceResult"], "exit-code", "{rec}");
    assert_eq!(rec["invocationId"], json!(env.prop(&unit, "InvocationID")), "{rec}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the session's directory");
}

#[test]
fn the_config_reads_like_the_orchestrators_and_the_runner_gets_its_newer_keys() {
    let env = Env::with_config(|c| {
        let c = c.as_object_mut().unwrap();
        c.remove("hostname");
        c.insert("tmuxPrefix".into(), json!("Team_A"));
    });
    let caller = vars(&[
        // Fallbacks for keys the file lacks ...
        ("AGENT_RELAY_ORCHESTRATOR_HOSTNAME", "orch-host"),
        ("AGENT_RELAY_ORCHESTRATOR_API_PORT", "4999"),
        ("AGENT_RELAY_ORCHESTRATOR_ID", "orch-id-7"),
        ("AGENT_RELAY_SHARED_CALLMUX_PORT", "4870"),
        // ... and no override of keys it has.
        ("AGENT_RELAY_URL", "http://127.0.0.1:9/ignored"),
        ("AGENT_RELAY_ORCHESTRATOR_BASE_DIR", "/nonexistent"),
    ]);
    let events = json!([{"type": "message", "body": "hello \"world\" $x"}]);
    let req = env.request(json!({
        "label": "task-7: fix lint", "taskId": 7, "spawnRequestId": "task-req-1",
        "relayInjectionEvents": events,
        // Sent by the orchestrator today for its own workspace preparation: accepted.
        "workspaceSymlinks": ["node_modules"],
        "resumeWorkspace": {"branch": "b", "mode": "attach"},
        "acquisition": {"mode": "project-root", "projectId": "p", "rootPath": "/r", "cwd": "/r", "remoteUrl": "u", "sync": "ff-only"}
    }));
    let a = spawn_env(&env, &caller, &req)["agent"].clone();
    let session = a["sessionName"].as_str().unwrap();
    assert!(session.starts_with("Team_A-claude-task-7-"), "{session}");
    assert!(!session.contains("task-7-task-7"), "{session}");
    assert_eq!(a["label"], "task-7: fix lint");
    assert!(a["agentId"].as_str().unwrap().starts_with("orch-host-claude-"), "{a}");
    let pid = a["pid"].as_u64().unwrap();
    let e = environ_map(pid);
    let get = |k: &str| e.get(k).map(String::as_str);
    assert_eq!(get("AGENT_RELAY_TASK_ID"), Some("7"));
    assert_eq!(get("AGENT_RELAY_LABEL"), Some("task-7: fix lint"));
    assert_eq!(get("AGENT_RELAY_ORCHESTRATOR_ID"), Some("orch-id-7"));
    assert_eq!(get("AGENT_RELAY_ORCHESTRATOR_URL"), Some("http://127.0.0.1:4999"));
    assert_eq!(get("AGENT_RELAY_ARTIFACT_URL"), Some("http://127.0.0.1:4999/api/artifacts"));
    assert_eq!(get("AGENT_RELAY_URL"), Some("http://127.0.0.1:1"), "the file wins over AGENT_RELAY_URL");
    assert_eq!(get("AGENT_RELAY_TAGS"), Some("headless,dashboard-spawned,orch-host"));
    assert_eq!(get("AGENT_RELAY_SHARED_MCP_URL"), Some("http://127.0.0.1:4870/mcp"));
    let state_file = format!("{}/.agent-relay/orchestrator-sessions.json", env.home.display());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(state_file.as_bytes());
    let owner: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    assert_eq!(get("AGENT_RELAY_TMUX_OWNER"), Some(owner.as_str()));
    assert_eq!(get("AGENT_RELAY_INJECTION_EVENTS_JSON"), None, "payloads are files");
    let events_file = Path::new(get("AGENT_RELAY_INJECTION_EVENTS_JSON_FILE").expect("injection events file"));
    assert_eq!(mode(events_file), 0o600);
    assert_eq!(serde_json::from_slice::<Value>(&std::fs::read(events_file).unwrap()).unwrap(), events);
    let argv = cmdline(pid);
    let label_at = argv.iter().position(|a| a == "--label").unwrap();
    assert_eq!(argv[label_at + 1], "task-7: fix lint");
    assert!(!env.prop(a["systemdUnit"].as_str().unwrap(), "Environment").contains("hello"));

    let b =
        spawn_env(&env, &caller, &env.request(json!({"label": "lint", "taskId": 8, "spawnRequestId": "task-req-2"})));
    assert!(b["agent"]["sessionName"].as_str().unwrap().starts_with("Team_A-claude-task-8-lint-"), "{b}");
    let c = spawn_env(&env, &caller, &env.request(json!({"taskId": 9, "spawnRequestId": "task-req-3"})));
    assert!(c["agent"]["sessionName"].as_str().unwrap().starts_with("Team_A-claude-task-9-"), "{c}");
    let listed = env.json(&["list", "-o", "json"], None);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    // A field nobody sends is still refused, naming the valid ones.
    let out = env.run(&["spawn"], Some(&env.request(json!({"spawnRequestId": "x", "bogusField": 1})).to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bogusField") && err.contains("relayInjectionEvents"), "{err}");
}

#[test]
fn records_carry_what_the_request_said() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({
        "spawnRequestId": "rec-a", "label": "x", "tags": ["t1", "t2"], "capabilities": ["c1", "c2"],
        "rig": "rig-9", "taskId": 5, "limits": {"memoryMax": "1G", "cpuQuota": 150},
        "env": {"FAKE_RUNNER_TMUX_SESSION": "runner_named_tmux"}
    })))["agent"]
        .clone();
    let b = env.spawn(&env.request(json!({"spawnRequestId": "rec-b"})))["agent"].clone();
    let want_a = [
        ("tags", json!(["t1", "t2"])),
        ("capabilities", json!(["c1", "c2"])),
        ("rig", json!("rig-9")),
        ("taskId", json!(5)),
        (
            "requestedLimits",
            json!({"memoryMax": 1u64 << 30, "memoryHigh": null, "tasksMax": null, "cpuQuotaPercent": 150}),
        ),
        ("alive", json!(true)),
    ];
    let want_b = [
        ("tags", json!([])),
        ("capabilities", json!([])),
        ("rig", Value::Null),
        ("taskId", Value::Null),
        ("requestedLimits", json!({"memoryMax": null, "memoryHigh": null, "tasksMax": null, "cpuQuotaPercent": null})),
        ("alive", json!(true)),
    ];
    for (k, v) in &want_a {
        assert_eq!(&a[*k], v, "spawn answer: {k}");
    }
    for (k, v) in &want_b {
        assert_eq!(&b[*k], v, "spawn answer: {k}");
    }
    // The runner names its tmux session in its runner info; the record says so.
    let info_a = env.runner_info(a["sessionName"].as_str().unwrap());
    let info_b = env.runner_info(b["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info_a.exists() && info_b.exists()));
    let list = env.json(&["list", "-o", "json"], None);
    let find = |id: &Value| list.as_array().unwrap().iter().find(|r| r["agentId"] == *id).unwrap().clone();
    let (la, lb) = (find(&a["agentId"]), find(&b["agentId"]));
    for (k, v) in &want_a {
        assert_eq!(&la[*k], v, "list: {k}");
    }
    for (k, v) in &want_b {
        assert_eq!(&lb[*k], v, "list: {k}");
    }
    assert_eq!(la["tmuxSession"], "runner_named_tmux");
    assert_eq!(lb["tmuxSession"], lb["sessionName"], "no tmuxSession in its runner info");

    // Runner info is the runner's to write: a symlink, a huge file or a FIFO is not read.
    let elsewhere = env.home.join("elsewhere.json");
    std::fs::write(&elsewhere, json!({"agentId": b["agentId"], "tmuxSession": "via-symlink"}).to_string()).unwrap();
    std::fs::remove_file(&info_b).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &info_b).unwrap();
    let huge = json!({"agentId": a["agentId"], "tmuxSession": "huge", "pad": "x".repeat(70 * 1024)});
    std::fs::write(&info_a, huge.to_string()).unwrap();
    let shown = env.json(&["show", "rec-b", "-o", "json"], None);
    assert_eq!(shown["tmuxSession"], shown["sessionName"], "symlinked runner info was followed");
    let shown = env.json(&["show", "rec-a", "-o", "json"], None);
    assert_eq!(shown["tmuxSession"], shown["sessionName"], "a runner info over 64 KiB was read");
    std::fs::remove_file(&info_a).unwrap();
    nix::unistd::mkfifo(&info_a, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = env.cli().args(["show", "rec-a", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "a FIFO as runner info: {}", String::from_utf8_lossy(&out.stderr));

    // Records rebuild from the unit alone.
    std::fs::remove_dir_all(env.home.join(".agent-relay")).unwrap();
    let again = env.json(&["show", "rec-a", "-o", "json"], None);
    for (k, v) in &want_a {
        assert_eq!(&again[*k], v, "rebuilt: {k}");
    }

    // diagnose says when the run started and ended, also once the unit is collected.
    let c = env.spawn(&env.request(json!({
        "spawnRequestId": "rec-c", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "300", "FAKE_RUNNER_EXIT_CODE": "1"}
    })));
    let unit = c["agent"]["systemdUnit"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || ended(&env, &unit)));
    let stopped = env.json(&["show", "rec-c", "-o", "json"], None);
    assert_eq!(stopped["alive"], false);
    for loaded in [true, false] {
        if !loaded {
            env.systemctl(&["reset-failed", &unit]);
            assert!(wait_until(Duration::from_secs(5), || !env.agent_units().contains(&unit)));
        }
        let d = env.json(&["diagnose", "rec-c", "-o", "json"], None);
        assert_eq!(d["unitLoaded"], loaded);
        let (s, e) = (d["startedAt"].as_u64(), d["exitedAt"].as_u64());
        assert!(matches!((s, e), (Some(s), Some(e)) if e >= s + 250 && e <= now_ms()), "{d}");
    }
}
