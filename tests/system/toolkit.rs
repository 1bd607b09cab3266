//! The operator's toolkit against a real user manager: `list`'s filters and `--no-headers`;
//! `wait` until an agent has ended, bounded by `--timeout-wait`.

use std::time::Duration;

use crate::util::*;
use serde_json::{json, Value};

fn labels(list: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        list.as_array().expect("a list").iter().map(|a| a["label"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

#[test]
fn list_filters_by_state_provider_label_tag_and_durability() {
    let env = Env::new();
    // alpha: claude, live, tags review+x; beta: codex, exits 3 (dead, failed), tag review;
    // gamma: gemini, live and durable, no tag.
    env.spawn(&env.request(json!({"provider": "claude", "label": "alpha", "tags": ["review", "x"]})));
    env.spawn(&env.request(json!({
        "provider": "codex", "label": "beta", "tags": ["review"], "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "200", "FAKE_RUNNER_EXIT_CODE": "3"},
    })));
    env.persist(&env.request(json!({"provider": "gemini", "label": "gamma"})));
    let list = |args: &[&str]| env.json(&[&["list", "-o", "json"], args].concat(), None);
    assert!(
        wait_until(Duration::from_secs(15), || labels(&list(&["--state", "dead"])) == ["beta"]),
        "beta never listed dead: {}",
        list(&[])
    );

    assert_eq!(labels(&list(&[])), ["alpha", "beta", "gamma"]);
    assert_eq!(labels(&list(&["--provider", "codex"])), ["beta"]);
    assert_eq!(labels(&list(&["--provider", "codex", "--provider", "gemini"])), ["beta", "gamma"]);
    assert_eq!(labels(&list(&["--label", "gamma"])), ["gamma"]);
    assert_eq!(labels(&list(&["--tag", "review"])), ["alpha", "beta"]);
    assert_eq!(labels(&list(&["--tag", "review", "--provider", "claude"])), ["alpha"]);
    assert_eq!(labels(&list(&["--tag", "x", "--provider", "codex"])), Vec::<String>::new());
    assert_eq!(labels(&list(&["--durable"])), ["gamma"]);
    assert_eq!(labels(&list(&["--state", "alive"])), ["alpha", "gamma"]);
    // systemd's ActiveState too, and values of one flag are alternatives.
    assert_eq!(labels(&list(&["--state", "failed"])), ["beta"]);
    assert_eq!(labels(&list(&["--state", "active"])), ["alpha", "gamma"]);
    assert_eq!(labels(&list(&["--state", "failed", "--state", "active"])), ["alpha", "beta", "gamma"]);
    // Each filtered record is the whole record, as `list` gives it.
    let beta = &list(&["--label", "beta"])[0];
    assert_eq!((beta["provider"].as_str(), beta["activeState"].as_str()), (Some("codex"), Some("failed")));

    // --no-headers: one line an agent, no header, nothing at all when none matches.
    let text = |args: &[&str]| {
        let out = env.run(&[&["list"], args].concat(), None);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let with = text(&["--tag", "review"]);
    assert!(with.starts_with("SESSION"), "{with}");
    assert_eq!(with.lines().count(), 3, "{with}");
    let bare = text(&["--tag", "review", "--no-headers"]);
    assert_eq!(bare.lines().count(), 2, "{bare}");
    assert!(bare.lines().all(|l| l.contains("alpha") || l.contains("beta")), "{bare}");
    assert!(!bare.contains("SESSION"), "{bare}");
    assert_eq!(text(&["--provider", "nobody", "--no-headers"]), "");
    assert!(text(&["--provider", "nobody"]).contains("(no agents)"));

    // A state no agent can be in is refused before the manager is asked.
    let out = env.run(&["list", "--state", "sleeping"], None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("alive"));
}

#[test]
fn wait_answers_the_exit_once_the_agent_has_ended() {
    let env = Env::new();
    let req = env.request(json!({
        "spawnRequestId": "req-wait-3", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "1000", "FAKE_RUNNER_EXIT_CODE": "3"},
    }));
    let unit = env.spawn(&req)["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let out =
        env.run_within(Duration::from_secs(10), &["wait", "req-wait-3", "--timeout-wait", "10", "-o", "json"], None);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // A diagnosis, valid against schema/diagnosis.json.
    let d = schema::parse_valid("diagnosis", &out.stdout);
    assert_eq!(d["exit"]["kind"], "exited", "{d}");
    assert_eq!(d["exit"]["exitCode"], 3, "{d}");
    assert_eq!(d["systemdUnit"], unit.as_str());
    assert_eq!(d["state"], "dead", "{d}");
    assert!(took < Duration::from_millis(2500), "wait took {took:?}");
    // It had really ended: systemd says so too.
    assert_eq!(env.prop(&unit, "ActiveState"), "failed");
    // Already ended: answers at once, the same exit.
    let again = env.json(&["wait", &unit, "-o", "json"], None);
    assert_eq!(again["exit"]["exitCode"], 3, "{again}");
}

#[test]
fn wait_gives_up_with_exit_6_when_its_bound_passes_first() {
    let env = Env::new();
    let unit = env.spawn(&env.request(json!({"spawnRequestId": "req-wait-long"})))["agent"]["systemdUnit"]
        .as_str()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let out =
        env.run_within(Duration::from_secs(10), &["wait", "req-wait-long", "--timeout-wait", "1", "-o", "json"], None);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "took {took:?}");
    let err = schema::parse_valid("error", &out.stdout);
    assert_eq!(err["error"]["kind"], "timeout", "{err}");
    assert_eq!(err["error"]["exitCode"], 6, "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or_default().contains(&unit), "{err}");
    // The agent is left running.
    assert_eq!(env.prop(&unit, "ActiveState"), "active");
    // Nothing known: exit 3; a bad bound: exit 2 before the manager is asked.
    assert_eq!(env.run(&["wait", "req-nobody"], None).status.code(), Some(3));
    assert_eq!(env.run(&["wait", "req-wait-long", "--timeout-wait", "0"], None).status.code(), Some(2));
}
