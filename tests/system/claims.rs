//! Claims of the README and RELIABILITY.md that had no test, each proved against a private
//! manager by what an operator would see: `logs --follow` and the 1 MiB tail bound, `kill
//! --whom`, `terminal send -`, `AGENT_RELAY_SYSTEMD_TIMEOUT`, exit code 7, the 60 s stop cap, the
//! config variables that reach the runner, the modes of exit records, `doctor`'s tmux bound,
//! isolation between tmux prefixes, and `watch`'s stream events.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

/// The CLI against `env`'s manager with another config file (`env.cli()` names its own).
fn cli_with_config(env: &Env, config: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", &env.home);
    for (k, v) in env.mgr().env() {
        c.env(k, v);
    }
    c.arg("--config").arg(config);
    c
}

/// Runs `cmd` with `args` (bounded to 30 s); returns its exit code, stdout and stderr.
fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    cmd.args(args);
    let (out, took) = run_bounded(cmd, stdin.map(str::as_bytes), Duration::from_secs(30));
    let out = out.unwrap_or_else(|| panic!("{args:?} did not finish within {took:?}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs and expects success; returns stdout as JSON.
fn json_of(cmd: Command, args: &[&str], stdin: Option<&str>) -> Value {
    let (code, out, err) = run(cmd, args, stdin);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// Waits until the agent's log holds `needle`; returns the log's text.
fn log_holds(agent: &Value, needle: &str) -> String {
    let log = agent["logFile"].as_str().unwrap().to_string();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || read().contains(needle)), "{needle:?} not in {log}:\n{}", read());
    read()
}

/// The pid of the fake runner's child, from its log.
fn child_pid(agent: &Value) -> u64 {
    let text = log_holds(agent, "FAKE-RUNNER CHILD pid=");
    text.lines().find_map(|l| l.strip_prefix("FAKE-RUNNER CHILD pid=")).unwrap().trim().parse().unwrap()
}

#[test]
fn logs_follow_prints_appended_lines_and_starts_over_after_a_truncation() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({"spawnRequestId": "follow-1"})))["agent"].clone();
    log_holds(&agent, "FAKE-RUNNER ENV-KEYS");
    let log = PathBuf::from(agent["logFile"].as_str().unwrap());
    let mut cmd = env.cli();
    cmd.args(["logs", "follow-1", "--follow", "-n", "5"]);
    let follow = Lines::start(cmd);
    follow.until(Duration::from_secs(10), |l| l.starts_with("FAKE-RUNNER START")).expect("the tail first");

    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append(&format!("{}\nappended-1\n", "x".repeat(300)));
    follow.until(Duration::from_secs(5), |l| l == "appended-1").expect("an appended line appears");
    // A line appears once it is complete, whole.
    append("half a ");
    std::thread::sleep(Duration::from_millis(600));
    append("line\n");
    let got = follow.until(Duration::from_secs(5), |l| l.contains("line")).expect("a line written in two parts");
    assert_eq!(got.last().unwrap(), "half a line", "{got:?}");

    // Truncated (a log rotated by copytruncate): read again from its start.
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append("after-truncate\n");
    let got = follow
        .until(Duration::from_secs(5), |l| l == "after-truncate")
        .unwrap_or_else(|seen| panic!("no line after the truncation; got {seen:?}"));
    assert_eq!(got, ["after-truncate"], "{got:?}");
}

#[test]
fn logs_reads_only_the_last_mebibyte_and_drops_its_first_partial_line() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({"spawnRequestId": "tail-1"})))["agent"].clone();
    log_holds(&agent, "FAKE-RUNNER ENV-KEYS");
    // 1500 lines of 2000 bytes (3 000 000 bytes): the last MiB starts 1424 bytes into line 975.
    let line = |i: usize| format!("L{i:05} {}", "x".repeat(2000 - 8));
    let mut text = String::new();
    for i in 0..1500 {
        text.push_str(&line(i));
        text.push('\n');
    }
    assert_eq!(text.len(), 3_000_000);
    std::fs::write(agent["logFile"].as_str().unwrap(), &text).unwrap();
    let tail = env.json(&["logs", "tail-1", "-n", "1000", "-o", "json"], None);
    let lines: Vec<&str> = tail["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let first = lines.first().map(|l| &l[..l.len().min(8)]);
    assert_eq!(lines.len(), 524, "lines 976-1499 lie wholly in the last MiB; the first is {first:?}");
    assert_eq!(lines[0], line(976), "the cut line 975 is dropped");
    assert_eq!(*lines.last().unwrap(), line(1499));
    // Fewer lines asked: the last ones.
    let tail = env.json(&["logs", "tail-1", "-n", "2", "-o", "json"], None);
    assert_eq!(tail["lines"], json!([line(1498), line(1499)]));
}

#[test]
fn kill_whom_all_signals_every_process_of_the_agent_and_main_only_the_runner() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({"spawnRequestId": "whom-1", "env": {"FAKE_RUNNER_CHILD": "1"}})))
        ["agent"]
        .clone();
    let runner = agent["pid"].as_u64().unwrap();
    let child = child_pid(&agent);
    let state = |pid: u64| proc_state(pid).unwrap_or('?');
    let both =
        |want: bool| wait_until(Duration::from_secs(5), || [runner, child].iter().all(|p| (state(*p) == 'T') == want));

    let out = env.json(&["kill", "whom-1", "--signal", "STOP", "--whom", "all", "-o", "json"], None);
    assert_eq!((out["signal"].as_str(), out["whom"].as_str()), (Some("SIGSTOP"), Some("all")), "{out}");
    assert!(both(true), "--whom all: runner {} child {}", state(runner), state(child));
    env.json(&["kill", "whom-1", "--signal", "CONT", "--whom", "all", "-o", "json"], None);
    assert!(both(false), "--whom all CONT: runner {} child {}", state(runner), state(child));

    env.json(&["kill", "whom-1", "--signal", "STOP", "--whom", "main", "-o", "json"], None);
    assert!(wait_until(Duration::from_secs(5), || state(runner) == 'T'), "--whom main: runner {}", state(runner));
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(state(child), 'T', "--whom main reached the child");
    env.json(&["kill", "whom-1", "--signal", "CONT", "--whom", "all", "-o", "json"], None);
    assert!(both(false));
    assert_eq!(env.json(&["show", "whom-1", "-o", "json"], None)["state"], "alive");
}

#[test]
fn terminal_send_dash_types_what_comes_on_stdin_into_the_guest_pane() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({"spawnRequestId": "send-host"})))["agent"].clone();
    let info = env.runner_info(agent["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info.exists()), "runner info not written");
    let g = env.json(&["guest", "create", "send-host", "-o", "json"], None);
    let name = g["guest"].as_str().unwrap().to_string();
    let pane =
        || env.json(&["terminal", "capture", &name, "-o", "json"], None)["content"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || pane().contains("guest-ready")));

    let sent = json_of(env.cli(), &["terminal", "send", &name, "-", "-o", "json"], Some("from-stdin-7f3\r"));
    assert_eq!(sent["guest"], name.as_str(), "{sent}");
    assert!(
        wait_until(Duration::from_secs(5), || pane().contains("from-stdin-7f3")),
        "stdin did not reach the pane:\n{}",
        pane()
    );
    assert!(!pane().contains("from-stdin-7f3-"), "nothing but what was sent");
}

#[test]
fn the_timeout_variable_bounds_every_call_to_a_hung_manager() {
    let _serial = serial();
    let env = Env::new();
    // Connect once so the socket-activated bus daemon runs; then only the manager hangs.
    assert_eq!(env.json(&["list", "-o", "json"], None), json!([]));
    let hang = env.hang();
    let timed = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = env.cli();
        c.envs(vars.iter().copied()).args(args);
        let (out, took) = run_bounded(c, None, Duration::from_secs(30));
        (out.expect("finished"), took)
    };
    let (out, took) = timed(&[("AGENT_RELAY_SYSTEMD_TIMEOUT", "1")], &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("did not answer") && err.contains("1s"), "{err}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "list took {took:?}, bound 1 s");
    // The flag wins over the variable.
    let (out, took) = timed(&[("AGENT_RELAY_SYSTEMD_TIMEOUT", "20")], &["list", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(took < Duration::from_secs(3), "list --timeout 1 took {took:?}");
    drop(hang);
    assert_eq!(env.json(&["list", "-o", "json"], None), json!([]));
}

#[test]
fn an_agent_that_survives_sigkill_is_exit_7_and_not_stopped() {
    let env = Env::new();
    // Dropped before `env`: the stuck read ends, the unit can stop and the manager go.
    let fuse = StuckFuse::mount(&env.home.join("stuck-fs"));
    let agent = env.spawn(&env.request(json!({
        "spawnRequestId": "unkillable", "env": {"FAKE_RUNNER_CHILD_READ": fuse.stuck_path()}
    })))["agent"]
        .clone();
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let child = child_pid(&agent);
    assert!(wait_until(Duration::from_secs(10), || fuse.asked()), "the child never read the stuck file");

    let mut cmd = env.cli();
    cmd.args(["stop", "unkillable", "--timeout-stop", "1", "-o", "json"]);
    let (out, took) = run_bounded(cmd, None, Duration::from_secs(30));
    let out = out.expect("stop finished");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("still running after SIGKILL") && err.contains(&child.to_string()), "{err}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "survived", "{doc}");
    // The graceful second, SIGKILL, then the 2 s the control group had to empty.
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    // Not stopped: the process is still there, in uninterruptible sleep, in the unit's cgroup,
    // and the agent's secrets are kept for the stop that will succeed.
    assert_eq!(proc_state(child), Some('D'), "the survivor");
    let cg = std::fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap();
    assert!(cg.contains(&unit), "{cg}");
    assert!(env.env_file(&unit).is_some_and(|f| f.exists()), "the env file went with a failed stop");

    // The file system goes: the process ends, and a stop succeeds.
    drop(fuse);
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(child)), "still {:?}", proc_state(child));
    let (code, _, err) = run(env.cli(), &["stop", "unkillable", "-o", "json"], None);
    assert!(matches!(code, Some(0) | Some(3)), "{code:?}: {err}");
    assert!(wait_until(Duration::from_secs(10), || env.agent_units().is_empty()), "{:?}", env.agent_units());
}

#[test]
fn stop_caps_the_graceful_timeout_at_sixty_seconds() {
    let env = Env::new();
    // An operator's drop-in for every agent unit: systemd itself would wait forever for a stop,
    // so only our cap can end it.
    let dropin = env.unit_dir().join("agent-relay-managed-.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(dropin.join("no-stop-timeout.conf"), "[Service]\nTimeoutStopSec=infinity\n").unwrap();
    env.systemctl(&["daemon-reload"]);
    let agent = env
        .spawn(&env.request(json!({"spawnRequestId": "capped", "env": {"FAKE_RUNNER_IGNORE_SIGTERM": "1"}})))["agent"]
        .clone();
    let unit = agent["systemdUnit"].as_str().unwrap();
    assert_eq!(env.prop(unit, "TimeoutStopUSec"), "infinity");
    log_holds(&agent, "FAKE-RUNNER ENV-KEYS");
    let pid = agent["pid"].as_u64().unwrap();

    let mut cmd = env.cli();
    cmd.args(["stop", "capped", "--timeout-stop", "600", "-o", "json"]);
    let (out, took) = run_bounded(cmd, None, Duration::from_secs(75));
    let out = out.unwrap_or_else(|| panic!("stop --timeout-stop 600 still running after {took:?}: no 60 s cap"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((doc["stopped"].as_bool(), doc["killed"].as_bool()), (Some(true), Some(true)), "{doc}");
    // Graceful for the whole 60 s, then SIGKILL (and up to 2 s for the group to empty).
    assert!(took >= Duration::from_secs(59) && took < Duration::from_secs(66), "stop took {took:?}");
    assert!(!pid_alive(pid), "the runner survived the stop");
    println!("stop --timeout-stop 600 of a SIGTERM-ignoring agent took {took:?}");
}

/// `environ` as pairs.
fn environ_get(pid: u64, key: &str) -> Option<String> {
    environ(pid).split('\0').find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn the_token_and_inherit_variables_change_what_the_runner_gets() {
    // No token in the file: AGENT_RELAY_TOKEN is the fallback.
    let env = Env::with_config(|c| {
        c.as_object_mut().unwrap().remove("token");
        c["inheritEnvironment"] = json!(false);
    });
    let spawn = |vars: &[(&str, &str)], id: &str| {
        let mut c = env.cli();
        c.envs(vars.iter().copied());
        json_of(c, &["spawn", "-o", "json"], Some(&env.request(json!({"spawnRequestId": id})).to_string()))["agent"]
            .clone()
    };
    let pid = |a: &Value| a["pid"].as_u64().unwrap();

    let none = spawn(&[], "tok-none");
    assert_eq!(environ_get(pid(&none), "AGENT_RELAY_TOKEN"), None);
    // Inheriting is off (the file), so the token can only come through the config.
    let from_var = spawn(&[("AGENT_RELAY_TOKEN", "tok-from-var-51")], "tok-var");
    assert_eq!(environ_get(pid(&from_var), "AGENT_RELAY_TOKEN").as_deref(), Some("tok-from-var-51"));
    let unit = from_var["systemdUnit"].as_str().unwrap();
    assert!(!env.systemctl(&["show", unit]).contains("tok-from-var-51"), "the token is a unit property");
    assert!(std::fs::read_to_string(env.env_file(unit).unwrap()).unwrap().contains("tok-from-var-51"));

    // AGENT_RELAY_INHERIT_ENV overrides the file's inheritEnvironment, both ways.
    let off = spawn(&[("CALLER_ONLY_7", "x")], "inherit-file-off");
    assert_eq!(environ_get(pid(&off), "CALLER_ONLY_7"), None);
    let on = spawn(&[("CALLER_ONLY_7", "x"), ("AGENT_RELAY_INHERIT_ENV", "1")], "inherit-var-on");
    assert_eq!(environ_get(pid(&on), "CALLER_ONLY_7").as_deref(), Some("x"));
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&env.config).unwrap()).unwrap();
    cfg["inheritEnvironment"] = json!(true);
    cfg["token"] = json!("tok-from-file-52");
    std::fs::write(&env.config, cfg.to_string()).unwrap();
    let on_file = spawn(&[("CALLER_ONLY_7", "x")], "inherit-file-on");
    assert_eq!(environ_get(pid(&on_file), "CALLER_ONLY_7").as_deref(), Some("x"));
    let off_var = spawn(&[("CALLER_ONLY_7", "x"), ("AGENT_RELAY_INHERIT_ENV", "off")], "inherit-var-off");
    assert_eq!(environ_get(pid(&off_var), "CALLER_ONLY_7"), None);
    // The file's token wins over the variable.
    let file_token = spawn(&[("AGENT_RELAY_TOKEN", "tok-from-var-51"), ("AGENT_RELAY_INHERIT_ENV", "0")], "tok-file");
    assert_eq!(environ_get(pid(&file_token), "AGENT_RELAY_TOKEN").as_deref(), Some("tok-from-file-52"));
}

#[test]
fn exit_records_are_0600_files_in_0700_directories() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({
        "spawnRequestId": "recorded", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100", "FAKE_RUNNER_EXIT_CODE": "3"}
    })))["agent"]
        .clone();
    let dir = env.exits_dir().join(agent["sessionName"].as_str().unwrap());
    let records = || -> Vec<PathBuf> {
        std::fs::read_dir(&dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(10), || !records().is_empty()), "no exit record in {}", dir.display());
    assert_eq!(mode(&env.exits_dir()), 0o700, "exits/");
    assert_eq!(mode(&dir), 0o700, "exits/<session>/");
    for r in records() {
        assert_eq!(mode(&r), 0o600, "{}", r.display());
    }
    assert_eq!(env.json(&["diagnose", "recorded", "-o", "json"], None)["exit"]["exitCode"], 3);
}

#[test]
fn doctor_finishes_within_its_bound_when_tmux_hangs() {
    let env = Env::new();
    let bin_dir = env.home.join("hung-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let tmux = bin_dir.join("tmux");
    std::fs::write(&tmux, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&tmux, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = env.cli();
    cmd.env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()));
    cmd.args(["doctor", "-o", "json"]);
    let (out, took) = run_bounded(cmd, None, Duration::from_secs(20));
    let out = out.unwrap_or_else(|| panic!("doctor still running after {took:?} with a hung tmux"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // tmux is not required: a warning, exit 0; the probe waited its 3 s, not more.
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(5), "doctor took {took:?}");
    let found = report["findings"].as_array().unwrap().iter().find(|f| f["check"] == "tmux").unwrap();
    assert_eq!(found["status"], "warn", "{found}");
    let detail = found["detail"].as_str().unwrap();
    assert!(detail.contains(tmux.to_str().unwrap()) && detail.contains("no answer"), "{detail}");
}

#[test]
fn agents_of_one_tmux_prefix_are_invisible_to_another() {
    let env = Env::new(); // prefix `ar`
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&env.config).unwrap()).unwrap();
    cfg["tmuxPrefix"] = json!("teamb");
    let b_config = env.home.join("team-b.json");
    std::fs::write(&b_config, cfg.to_string()).unwrap();
    let b = || cli_with_config(&env, &b_config);

    let a = env.spawn(&env.request(json!({"spawnRequestId": "iso-a"})))["agent"].clone();
    let a_unit = a["systemdUnit"].as_str().unwrap().to_string();
    let a_session = a["sessionName"].as_str().unwrap().to_string();
    let a_shared = env.spawn(&env.request(json!({"spawnRequestId": "iso-shared"})))["agent"].clone();
    // An agent of A that ended: a failed unit, its exit recorded.
    let a_ended = env.spawn(&env.request(json!({
        "spawnRequestId": "iso-ended", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "100", "FAKE_RUNNER_EXIT_CODE": "3"}
    })))["agent"]
        .clone();
    let ended_unit = a_ended["systemdUnit"].as_str().unwrap().to_string();
    let ended_records = env.exits_dir().join(a_ended["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(10), || env.prop(&ended_unit, "ActiveState") == "failed"));
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_dir(&ended_records).is_ok_and(|mut d| d.next().is_some()))
    );

    // The same spawn request under B is an agent of its own.
    let b_req = env.request(json!({"spawnRequestId": "iso-shared"})).to_string();
    let b_shared = json_of(b(), &["spawn", "-o", "json"], Some(&b_req));
    assert_eq!(b_shared["created"], true, "{b_shared}");
    assert_ne!(b_shared["agent"]["systemdUnit"], a_shared["systemdUnit"]);
    // (Its generated agent id is A's: it is made of the host, provider, label and spawn request
    // id, and B finds it among its own units only.)
    assert_eq!(b_shared["agent"]["agentId"], a_shared["agentId"]);
    assert!(b_shared["agent"]["sessionName"].as_str().unwrap().starts_with("teamb-"), "{b_shared}");

    // list: each prefix its own.
    let b_list = json_of(b(), &["list", "-o", "json"], None);
    let units = |l: &Value| -> Vec<String> {
        l.as_array().unwrap().iter().map(|r| r["systemdUnit"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(units(&b_list), [b_shared["agent"]["systemdUnit"].as_str().unwrap()], "{b_list}");
    let a_list = env.json(&["list", "-o", "json"], None);
    assert_eq!(units(&a_list).len(), 3, "{a_list}");
    assert!(!units(&a_list).iter().any(|u| u.contains("teamb")), "{a_list}");

    // show / stop / kill / diagnose / logs of A's references under B: not found, or not ours.
    let a_refs = [a["agentId"].as_str().unwrap(), &a_session, "iso-a", &a_unit, a_ended["agentId"].as_str().unwrap()];
    for verb in [&["show"][..], &["stop"], &["kill", "--signal", "CONT"], &["diagnose"], &["logs"]] {
        for r in a_refs {
            let mut args = vec![verb[0], r];
            args.extend(&verb[1..]);
            let (code, out, err) = run(b(), &args, None);
            let want = if r.ends_with(".service") { 4 } else { 3 };
            assert_eq!(code, Some(want), "B {args:?} of A's agent: {out}{err}");
        }
    }
    let shown = json_of(b(), &["show", "iso-shared", "-o", "json"], None);
    assert_eq!(shown["agentId"], b_shared["agent"]["agentId"], "B's request id is B's agent");

    // reap under B: A's files are old enough to go were they B's, and A's ended agent is failed
    // with its exit recorded, its record past B's retention.
    for d in session_dirs(&env.agents_dir(), &a_session) {
        backdate(&d, 3600);
    }
    backdate(&env.runner_info(&a_session), 3600);
    for r in std::fs::read_dir(&ended_records).unwrap().flatten() {
        // The record's time is in its name (`<ms, 16 digits>-<invocation>.json`): ten days ago.
        let name = r.file_name().to_string_lossy().into_owned();
        let (ms, rest) = name.split_once('-').unwrap();
        let older = format!("{:016}-{rest}", ms.parse::<u64>().unwrap() - 10 * 86_400_000);
        std::fs::rename(r.path(), ended_records.join(older)).unwrap();
    }
    let report = json_of(b(), &["reap", "--retention-days", "1", "-o", "json"], None);
    assert_eq!(report["actions"], json!([]), "B's reap touched A: {report}");
    assert!(session_dirs(&env.agents_dir(), &a_session).len() == 1 && env.runner_info(&a_session).exists());
    assert_eq!(env.prop(&ended_unit, "ActiveState"), "failed", "B reset A's unit");
    assert_eq!(std::fs::read_dir(&ended_records).unwrap().count(), 1, "B pruned A's exit record");
    for r in [&a, &a_shared] {
        assert_eq!(env.json(&["show", r["agentId"].as_str().unwrap(), "-o", "json"], None)["state"], "alive");
    }
    // A's own reap, with the same retention, does all of it.
    let report = env.json(&["reap", "--retention-days", "1", "-o", "json"], None);
    let actions = report["actions"].to_string();
    assert!(actions.contains(&ended_unit) && actions.contains(a_ended["sessionName"].as_str().unwrap()), "{report}");
}

/// A running `watch -o json`, every line kept.
struct Stream {
    lines: Lines,
    seen: Vec<Value>,
}

impl Stream {
    fn start(env: &Env) -> Stream {
        let mut cmd = env.cli();
        cmd.args(["watch", "-o", "json"]);
        let mut s = Stream { lines: Lines::start(cmd), seen: Vec::new() };
        s.until(Duration::from_secs(10), |v| v["type"] == "ready");
        s
    }

    /// Events until `pred`; fails the test with what came when it does not come in time.
    fn until(&mut self, limit: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let got = self.lines.until(limit, |l| pred(&serde_json::from_str(l).expect("every watch line is JSON")));
        let (lines, ok) = match got {
            Ok(l) => (l, true),
            Err(l) => (l, false),
        };
        self.seen.extend(lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        assert!(ok, "the event did not come within {limit:?}; the stream so far:\n{:#?}", self.types());
        self.seen.last().unwrap().clone()
    }

    fn types(&self) -> Vec<String> {
        self.seen.iter().map(|v| format!("{} {}", v["type"], v["agent"]["spawnRequestId"])).collect()
    }
}

fn about(v: &Value, kind: &str, request: &str) -> bool {
    v["type"] == kind && v["agent"]["spawnRequestId"] == request
}

#[test]
fn watch_reports_snapshot_started_restarting_and_a_reexec_as_reconnected() {
    let _serial = serial();
    let env = Env::new();
    let standing = env.spawn(&env.request(json!({"spawnRequestId": "standing"})))["agent"].clone();
    let mut watch = Stream::start(&env);
    // At start: the agents that are there, as snapshots (not as just spawned), then ready.
    let start: Vec<String> = watch.types();
    assert_eq!(start, ["\"snapshot\" \"standing\"", "\"ready\" null"], "{start:?}");

    // A persistent agent that exits 1: started, exited, restarting, started again.
    env.spawn(&env.request(json!({
        "spawnRequestId": "crasher", "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "300", "FAKE_RUNNER_EXIT_CODE": "1"}
    })));
    watch.until(Duration::from_secs(10), |v| about(v, "started", "crasher"));
    let exited = watch.until(Duration::from_secs(10), |v| about(v, "exited", "crasher"));
    assert_eq!(exited["exit"]["exitCode"], 1, "{exited}");
    watch.until(Duration::from_secs(10), |v| about(v, "restarting", "crasher"));
    watch.until(Duration::from_secs(10), |v| about(v, "started", "crasher"));

    // The manager re-executes: the stream says so, and the standing agent lives on untouched.
    env.systemctl(&["daemon-reexec"]);
    watch.until(Duration::from_secs(15), |v| v["type"] == "reconnected");
    let shown = env.json(&["show", "standing", "-o", "json"], None);
    assert_eq!((shown["state"].clone(), shown["pid"].clone()), (json!("alive"), standing["pid"].clone()), "{shown}");
    let rest = watch.lines.lines.try_iter().collect::<Vec<_>>();
    watch.seen.extend(rest.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    for v in &watch.seen {
        let false_news = ["exited", "stopped", "removed", "restarting"].iter().any(|k| about(v, k, "standing"));
        assert!(!false_news, "false {v}; stream: {:?}", watch.types());
    }
}

#[test]
fn watch_says_disconnected_when_the_manager_goes_and_reconnected_when_it_is_back() {
    let mut env = Env::new();
    let mut watch = Stream::start(&env);
    env.restart_manager();
    let gone = watch.until(Duration::from_secs(15), |v| v["type"] == "disconnected");
    assert!(gone["detail"].as_str().is_some_and(|d| !d.is_empty()), "{gone}");
    watch.until(Duration::from_secs(15), |v| v["type"] == "reconnected");
    // Live again: a new agent is reported.
    env.spawn(&env.request(json!({"spawnRequestId": "after-restart"})));
    watch.until(Duration::from_secs(10), |v| about(v, "spawned", "after-restart"));
    let disconnects = watch.seen.iter().filter(|v| v["type"] == "disconnected").count();
    assert_eq!(disconnects, 1, "one event per outage: {:?}", watch.types());
}
