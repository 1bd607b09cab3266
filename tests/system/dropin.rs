//! The orchestrator's expectations that a request's identity carries: one spawnRequestId is one
//! agent whatever else the request says, a reused name starts clean, and a restart does not do
//! the initial prompt's task again.

use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

fn log_text(agent: &Value) -> String {
    std::fs::read_to_string(agent["logFile"].as_str().unwrap()).unwrap_or_default()
}

#[test]
fn one_spawn_request_id_is_one_agent_whatever_else_the_request_says() {
    let env = Env::new();
    let first = env.spawn(&env.request(json!({"spawnRequestId": "one-1", "label": "alpha"})));
    assert_eq!(first["created"], true, "{first}");
    // The same request id with another label, another provider: the live agent, not a second.
    for other in [json!({"label": "beta"}), json!({"provider": "codex"}), json!({"label": "gamma", "model": "m"})] {
        let mut req = env.request(json!({"spawnRequestId": "one-1"}));
        req.as_object_mut().unwrap().extend(other.as_object().unwrap().clone());
        let again = env.spawn(&req);
        assert_eq!(again["created"], false, "{req}: {again}");
        assert_eq!(again["agent"]["agentId"], first["agent"]["agentId"], "{req}");
        assert_eq!(again["agent"]["systemdUnit"], first["agent"]["systemdUnit"], "{req}");
    }
    assert_eq!(env.agent_units().len(), 1, "{:?}", env.agent_units());
    // `show` of the id is that agent, never a pick among several.
    let shown = env.json(&["show", "one-1", "-o", "json"], None);
    assert_eq!(shown["agentId"], first["agent"]["agentId"]);

    // Racing spawns of one request with different labels: one agent, every answer names it.
    let labels: Vec<String> = (0..8).map(|i| format!("race-label-{i}")).collect();
    let answers =
        parallel(&labels, 8, |label| env.spawn(&env.request(json!({"spawnRequestId": "race-1", "label": label}))));
    let created = answers.iter().filter(|a| a["created"] == true).count();
    assert_eq!(created, 1, "{answers:?}");
    let ids: std::collections::BTreeSet<String> =
        answers.iter().map(|a| a["agent"]["agentId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(env.agent_units().len(), 2, "{:?}", env.agent_units());
}

#[test]
fn a_reused_name_starts_clean() {
    let env = Env::new();
    let req = env.request(json!({"spawnRequestId": "reuse-1", "env": {"FAKE_RUNNER_SAY": "OLD RUN LINE"}}));
    let old = env.spawn(&req)["agent"].clone();
    let session = old["sessionName"].as_str().unwrap().to_string();
    let info = env.runner_info(&session);
    assert!(wait_until(Duration::from_secs(5), || info.exists() && log_text(&old).contains("OLD RUN LINE")));
    env.json(&["stop", &session, "-o", "json"], None);
    assert!(info.exists(), "the stopped runner's info stays until something removes it");

    // The next run of the same name has a runner that writes neither info nor log lines.
    env.use_runner(&["/bin/sh", "-c", "exec sleep 60"]);
    let new = env.spawn(&env.request(json!({"spawnRequestId": "reuse-1"})));
    assert_eq!(new["created"], true, "{new}");
    assert_eq!(new["agent"]["sessionName"], session.as_str(), "the same name, reused");
    assert!(!info.exists(), "the previous run's runner info is reported as the new run's");
    assert_eq!(new["agent"]["tmuxSession"], session.as_str());
    // The new run's log: its own start marker, none of the previous run's lines.
    let out = env.json(&["logs", &session, "-o", "json"], None);
    let lines = out["lines"].as_array().unwrap();
    assert!(
        lines.len() == 1 && lines[0].as_str().unwrap().starts_with("-- agent-relay-systemd: run started "),
        "the previous run's lines shown as the new run's: {out}"
    );
    // The previous run stays readable beside it.
    let kept = format!("{}.1", new["agent"]["logFile"].as_str().unwrap());
    assert!(std::fs::read_to_string(&kept).unwrap().contains("OLD RUN LINE"));
    assert_eq!(mode(std::path::Path::new(new["agent"]["logFile"].as_str().unwrap())), 0o600);
}

#[test]
fn a_restart_does_not_replay_the_initial_prompt() {
    let env = Env::new();
    let prompt = "do the whole task once";
    let spawn = |rid: &str, replay: bool| {
        let mut extra = json!({"spawnRequestId": rid, "lifecycle": "persistent", "prompt": prompt});
        if replay {
            extra["replayPromptOnRestart"] = json!(true);
        }
        env.spawn(&env.request(extra))["agent"].clone()
    };
    let once = spawn("prompt-once", false);
    let replayed = spawn("prompt-replay", true);
    let want = format!("FAKE-RUNNER PROMPT-BYTES {}", prompt.len());
    for agent in [&once, &replayed] {
        assert!(wait_until(Duration::from_secs(5), || log_text(agent).contains(&want)), "{agent}");
        // A crash: systemd restarts the persistent agent (Restart=on-failure).
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent["pid"].as_u64().unwrap() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let second_start = |agent: &Value| {
        let text = log_text(agent);
        let bytes: Vec<&str> = text.lines().filter(|l| l.starts_with("FAKE-RUNNER PROMPT-BYTES")).collect();
        (bytes.len() >= 2).then(|| bytes[1].to_string())
    };
    let mut got = (None, None);
    assert!(
        wait_until(Duration::from_secs(15), || {
            got = (second_start(&once), second_start(&replayed));
            got.0.is_some() && got.1.is_some()
        }),
        "no restart seen: {got:?}"
    );
    assert_eq!(got.0.as_deref(), Some("FAKE-RUNNER PROMPT-BYTES 0"), "the restart got the prompt again");
    assert_eq!(got.1.as_deref(), Some(want.as_str()), "replayPromptOnRestart: the restart gets the prompt");
}

#[test]
fn another_requests_stopped_durable_agent_is_never_replaced() {
    let env = Env::new();
    // Two requests whose ids share their tail (the seed's names took the last 8 characters).
    let alpha = env.persist(&env.request(json!({"spawnRequestId": "alpha-00000001"})))["agent"].clone();
    env.json(&["stop", alpha["sessionName"].as_str().unwrap(), "-o", "json"], None);
    let bravo = env.persist(&env.request(json!({"spawnRequestId": "bravo-00000001"})));
    assert_eq!(bravo["created"], true, "{bravo}");
    assert_ne!(bravo["agent"]["systemdUnit"], alpha["systemdUnit"], "bravo took alpha's unit");
    // alpha's unit file is still alpha's, and `show` still finds the stopped agent.
    let unit_file = env.unit_dir().join(alpha["systemdUnit"].as_str().unwrap());
    let text = std::fs::read_to_string(&unit_file).unwrap();
    assert!(text.contains("AGENT_RELAY_SPAWN_REQUEST_ID=alpha-00000001"), "{text}");
    assert_eq!(env.json(&["show", "alpha-00000001", "-o", "json"], None)["agentId"], alpha["agentId"]);
}
