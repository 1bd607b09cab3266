//! Guest terminals: a tmux server per guest as its own transient unit, bound to its agent and
//! ended by systemd at its TTL; attach specs validated; terminal capture and input.

use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

fn live_agent(env: &Env, id: &str, extra_env: Value) -> Value {
    let a = env.spawn(&env.request(json!({"spawnRequestId": id, "env": extra_env})))["agent"].clone();
    let info = env.runner_info(a["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info.exists()), "runner info not written");
    a
}

#[test]
fn a_guest_runs_the_spec_in_its_own_unit_and_ends_with_its_agent() {
    let env = Env::new();
    let agent = live_agent(&env, "host-1", json!({}));
    let g = env.json(&["guest", "create", "host-1", "-o", "json"], None);
    let name = g["guest"].as_str().unwrap().to_string();
    let unit = g["systemdUnit"].as_str().unwrap().to_string();
    assert!(name.starts_with("ar-guest-claude-"), "{name}");
    assert_eq!(env.prop(&unit, "ActiveState"), "active");
    assert_eq!(env.prop(&unit, "RuntimeMaxUSec"), "1h");
    assert_eq!(env.prop(&unit, "BindsTo"), agent["systemdUnit"].as_str().unwrap());
    let cmdline = cmdline(env.prop(&unit, "MainPID").parse().unwrap()).join(" ");
    assert!(cmdline.contains(&format!("-L {name} -D")), "the unit's main process is the tmux server: {cmdline}");
    let status = env.systemctl(&["status", &unit, "--no-pager"]);
    assert!(status.contains("left"), "systemctl status shows the time left: {status}");

    let list = env.json(&["guest", "list", "-o", "json"], None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["agentId"], agent["agentId"]);

    let cap = || env.json(&["terminal", "capture", &name, "-o", "json"], None);
    assert!(wait_until(Duration::from_secs(5), || cap()["content"].as_str().unwrap().contains("guest-ready")));
    env.json(&["terminal", "send", &name, "typed-words\r", "-o", "json"], None);
    assert!(wait_until(Duration::from_secs(5), || cap()["content"].as_str().unwrap().contains("typed-words")));
    assert_eq!(cap()["consistent"], true);
    let too_long = env.run(&["terminal", "send", &name, &"x".repeat(4097)], None);
    assert_eq!(too_long.status.code(), Some(2));

    // Bound to its agent: stopping the agent ends the guest, with no reaper.
    env.json(&["stop", "host-1", "-o", "json"], None);
    assert!(
        wait_until(Duration::from_secs(5), || env.prop(&unit, "ActiveState") != "active"),
        "guest outlived its agent"
    );
    assert_eq!(env.json(&["guest", "stop", &name, "-o", "json"], None)["stopped"], false);
}

#[test]
fn guest_stop_accepts_guest_names_only_and_says_whether_it_ran() {
    let env = Env::new();
    live_agent(&env, "host-2", json!({}));
    let g = env.json(&["guest", "create", "host-2", "-o", "json"], None);
    let name = g["guest"].as_str().unwrap();
    for not_guest in ["ar-claude-session-host-2", "agent-relay-managed-ar-claude-session-host-2.service", "../x"] {
        let out = env.run(&["guest", "stop", not_guest], None);
        assert_eq!(out.status.code(), Some(2), "{not_guest}");
    }
    assert_eq!(env.json(&["guest", "stop", name, "-o", "json"], None)["stopped"], true);
    assert_eq!(env.json(&["guest", "list", "-o", "json"], None), json!([]));
    assert_eq!(env.agent_units().len(), 1, "the agent is untouched");
}

#[test]
fn a_guest_disappears_at_its_ttl_with_no_reaper() {
    let env = Env::new();
    let spec = json!({"mode": "guest", "provider": "claude", "cwd": env.projects.join("app"),
                      "command": ["/bin/sleep", "3600"], "ttlMs": 1});
    live_agent(&env, "host-3", json!({"FAKE_RUNNER_ATTACH_SPEC": spec.to_string()}));
    let g = env.json(&["guest", "create", "host-3", "-o", "json"], None);
    assert_eq!(g["ttlMs"], 60_000, "clamped to the 60 s minimum");
    let unit = g["systemdUnit"].as_str().unwrap().to_string();
    assert_eq!(env.prop(&unit, "RuntimeMaxUSec"), "1min");
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(80), || env.prop(&unit, "ActiveState") != "active"),
        "guest still active after its TTL"
    );
    assert!(started.elapsed() > Duration::from_secs(50), "ended too early: {:?}", started.elapsed());
}

#[test]
fn bad_attach_specs_start_no_guest() {
    let env = Env::new();
    let app = env.projects.join("app");
    let cases = [
        ("not json".to_string(), "not JSON"),
        (
            json!({"mode": "guest", "provider": "claude", "cwd": "/etc", "command": ["sh"]}).to_string(),
            "within base directory",
        ),
        (
            json!({"mode": "guest", "provider": "claude", "cwd": app, "command": []}).to_string(),
            "non-empty string array",
        ),
        (
            json!({"mode": "guest", "provider": "claude", "cwd": app, "command": ["sh"], "env": {"A": 1}}).to_string(),
            "string record",
        ),
        (
            json!({"mode": "owner", "provider": "claude", "cwd": app, "command": ["sh"]}).to_string(),
            "mode must be guest",
        ),
        ("x".repeat(70_000), "larger than"),
    ];
    for (i, (spec, want)) in cases.iter().enumerate() {
        let id = format!("bad-spec-{i}");
        // Through a file: a request's env value holds at most 32 KiB.
        let file = env.home.join(format!("spec-{i}"));
        std::fs::write(&file, spec).unwrap();
        live_agent(&env, &id, json!({"FAKE_RUNNER_ATTACH_SPEC_FILE": file}));
        let out = env.run(&["guest", "create", &id], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "{err} lacks {want}");
    }
    assert_eq!(env.json(&["guest", "list", "-o", "json"], None), json!([]));

    // A control URL that is not loopback is refused before any connection is made.
    let a = live_agent(&env, "remote-url", json!({}));
    let info = env.runner_info(a["sessionName"].as_str().unwrap());
    std::fs::write(&info, json!({"controlUrl": "http://192.0.2.1:80"}).to_string()).unwrap();
    let out = env.run(&["guest", "create", "remote-url"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not http://127.0.0.1"));

    // A runner that does not answer within 5 s: a clear timeout.
    live_agent(&env, "slow-runner", json!({"FAKE_RUNNER_ATTACH_DELAY_MS": "8000"}));
    let started = Instant::now();
    let out = env.run(&["guest", "create", "slow-runner"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(7), "took {:?}", started.elapsed());
}
