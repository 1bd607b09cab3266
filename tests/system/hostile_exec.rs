//! Hostile words on the runner's command line: `$VAR`, `${VAR}`, `;`, `\`, `%`, quotes in the
//! request's fields reach the runner and the exit recorder exactly as sent — never expanded by
//! systemd (the token would be on the world-readable argv, a whole-word `$X` would split into
//! injected arguments), and unchanged after a `daemon-reload` and a restart (systemd < 254 writes
//! `$` and `;` of a transient command line into its unit file as `\$`, `\;` and reads them back
//! so). Checked as an operator would: `/proc/PID/cmdline` and the exit records.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// What the request sets in the agent's environment: a whole-word `$INJECT` that systemd expanded
/// would split into these two extra arguments.
const INJECT: &str = "--approval yolo";

/// Words systemd would expand, split or take apart if they were not passed exactly.
fn hostile_args() -> Vec<&'static str> {
    vec![
        "$INJECT",
        "${AGENT_RELAY_TOKEN}",
        "$AGENT_RELAY_TOKEN",
        "be brief; cost is $X",
        "a;b",
        " ; ",
        ";",
        "$$",
        "\\",
        "back\\slash\\;",
        "%n %i %%",
        "say \"hi\", it's",
        "two  words\tand a tab",
        "line\nbreak",
        "ünï $",
        "",
    ]
}

/// The request's fields that end up on the runner's argv (and the recorder's).
fn hostile_request(env: &Env, rid: &str, lifecycle: &str) -> Value {
    env.request(json!({
        "label": "cost is $X; ${AGENT_RELAY_TOKEN} \"q\" 100%",
        "model": "${AGENT_RELAY_TOKEN}",
        "agentId": "--unit=forged-$INJECT-${AGENT_RELAY_TOKEN};x",
        "spawnRequestId": rid,
        "lifecycle": lifecycle,
        "env": {"INJECT": INJECT, "X": "EXPANDED"},
        "providerArgs": hostile_args(),
    }))
}

/// The runner's argv the request asks for, word for word (see `runner_argv` in src/model/plan.rs).
fn expected_argv(env: &Env, req: &Value) -> Vec<String> {
    let cwd = std::fs::canonicalize(env.projects.join("app")).unwrap();
    let s = |k: &str| req[k].as_str().unwrap().to_string();
    let mut argv: Vec<String> = vec![fake_runner().display().to_string(), "claude".into(), "--headless".into()];
    for (flag, value) in [
        ("--cwd", cwd.display().to_string()),
        ("--relay-url", "http://127.0.0.1:1".into()),
        ("--approval", "guarded".into()),
        ("--model", s("model")),
        ("--label", s("label")),
        ("--agent-id", s("agentId")),
    ] {
        argv.push(flag.into());
        argv.push(value);
    }
    argv.push("--".into());
    argv.extend(req["providerArgs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
    argv
}

/// The runner's argv from `/proc/PID/cmdline`, once `pid` runs the runner: where systemd cannot
/// keep the words, `agent-relay-systemd exec` runs first and `execve`s it in the same process.
fn runner_cmdline(pid: u64) -> Vec<String> {
    let runner = fake_runner().display().to_string();
    let mut argv = Vec::new();
    wait_until(Duration::from_secs(5), || {
        argv = cmdline(pid);
        argv.first() == Some(&runner)
    });
    argv
}

/// The unit's main pid once it is a live process other than `not`.
fn main_pid(env: &Env, unit: &str, not: u64) -> Option<u64> {
    let mut pid = None;
    wait_until(Duration::from_secs(20), || {
        pid = env.prop(unit, "MainPID").parse::<u64>().ok().filter(|p| *p != 0 && *p != not && pid_alive(*p));
        pid.is_some() && env.prop(unit, "ActiveState") == "active"
    });
    pid
}

/// The exit records of a session, oldest first, as JSON.
fn records(dir: &Path, session: &str) -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(session))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| Some((p.clone(), serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?)))
        .collect()
}

/// Asserts the recorder wrote exactly what the request named, and no secret.
fn assert_record_exact(path: &Path, rec: &Value, agent: &Value, req: &Value) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.contains(TOKEN), "the token in an exit record (the recorder's argv was expanded): {text}");
    assert_eq!(rec["agentId"], req["agentId"], "{text}");
    assert_eq!(rec["spawnRequestId"], req["spawnRequestId"], "{text}");
    assert_eq!(rec["sessionName"], agent["sessionName"], "{text}");
    assert_eq!(rec["unit"], agent["systemdUnit"], "{text}");
    assert_eq!(rec["provider"], "claude", "{text}");
    assert_eq!(rec["logFile"], agent["logFile"], "{text}");
}

#[test]
fn dollar_words_reach_the_runner_and_the_recorder_unexpanded() {
    let env = Env::new();
    let req = hostile_request(&env, "hx-expand-${AGENT_RELAY_TOKEN}-$INJECT", "ephemeral");
    let agent = env.spawn(&req)["agent"].clone();
    assert_eq!(agent["state"], "alive", "{agent}");
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let pid = agent["pid"].as_u64().unwrap();

    let argv = runner_cmdline(pid);
    assert!(!argv.iter().any(|w| w.contains(TOKEN)), "the token is on the world-readable argv: {argv:?}");
    assert_eq!(argv.iter().filter(|w| *w == "--approval").count(), 1, "an injected --approval: {argv:?}");
    assert_eq!(argv, expected_argv(&env, &req));
    // The runner still gets the variables themselves, from its environment.
    let environ = environ(pid);
    assert!(environ.contains(&format!("AGENT_RELAY_TOKEN={TOKEN}")));
    assert!(environ.contains(&format!("INJECT={INJECT}")));

    // The exit recorder (`ExecStopPost=`) names the agent and the request as given.
    let stopped = env.json(&["stop", &unit, "-o", "json"], None);
    assert_eq!(stopped["stopped"], true, "{stopped}");
    let session = agent["sessionName"].as_str().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !records(&env.exits_dir(), session).is_empty()), "no exit record");
    let all = records(&env.exits_dir(), session);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_record_exact(&all[0].0, &all[0].1, &agent, &req);
}

/// Spawns with `spawn_args`, reloads the manager, SIGKILLs the runner and checks that systemd's
/// restart runs the very same argv, the request's, and that the recorder of the killed run
/// (run from the reloaded unit) names the agent exactly.
fn argv_survives_reload_and_restart(spawn_args: &[&str], rid: &str) {
    let env = Env::new();
    let req = hostile_request(&env, rid, "persistent");
    let mut args = spawn_args.to_vec();
    args.extend(["-o", "json"]);
    let agent = env.json(&args, Some(&req.to_string()))["agent"].clone();
    assert_eq!(agent["state"], "alive", "{agent}");
    let unit = agent["systemdUnit"].as_str().unwrap().to_string();
    let session = agent["sessionName"].as_str().unwrap().to_string();
    let first_pid = agent["pid"].as_u64().unwrap();
    let before = runner_cmdline(first_pid);

    env.systemctl(&["daemon-reload"]);
    assert_eq!(env.prop(&unit, "LoadState"), "loaded", "the unit did not survive the reload");
    kill(Pid::from_raw(first_pid as i32), Signal::SIGKILL).unwrap();
    let second_pid = main_pid(&env, &unit, first_pid).unwrap_or_else(|| {
        panic!(
            "no restart after the reload: {} {}, result {}",
            env.prop(&unit, "ActiveState"),
            env.prop(&unit, "SubState"),
            env.prop(&unit, "Result")
        )
    });
    let after = runner_cmdline(second_pid);
    assert_eq!(after, before, "the restart after a reload ran another argv");
    assert_eq!(before, expected_argv(&env, &req), "the runner's argv is not the request's");
    assert!(!after.iter().any(|w| w.contains(TOKEN)), "{after:?}");

    // The killed run's record came from the recorder as the reloaded unit ran it.
    let killed = || records(&env.exits_dir(), &session).into_iter().find(|(_, r)| r["exitStatus"] == "KILL");
    assert!(wait_until(Duration::from_secs(10), || killed().is_some()), "{:?}", records(&env.exits_dir(), &session));
    let (path, rec) = killed().unwrap();
    assert_record_exact(&path, &rec, &agent, &req);
}

#[test]
fn a_persistent_agents_argv_survives_a_reload_and_a_restart() {
    argv_survives_reload_and_restart(&["spawn"], "hx-reload-${AGENT_RELAY_TOKEN};$X");
}

/// Durable agents' unit files are written by our renderer (`$` doubled, every word quoted): the
/// same words, the same exactness.
#[test]
fn a_durable_agents_argv_survives_a_reload_and_a_restart() {
    argv_survives_reload_and_restart(&["spawn", "--persist"], "hx-durable-${AGENT_RELAY_TOKEN};$X");
}
