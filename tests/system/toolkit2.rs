//! The operator's toolkit, second part, against a real user manager: `start` of a stopped
//! durable agent; `spawn --wait-ready` until the runner has written its runner info.

use crate::util::*;
use serde_json::json;

#[test]
fn start_brings_a_stopped_durable_agent_back_and_refuses_a_transient_one() {
    let env = Env::new();
    let first = env.persist(&env.request(json!({"label": "again", "spawnRequestId": "start-000001"})))["agent"].clone();
    let unit = first["systemdUnit"].as_str().unwrap().to_string();
    let old_pid = first["pid"].as_u64().expect("a live durable agent has a pid");
    env.json(&["stop", &unit, "-o", "json"], None);
    assert_eq!(env.json(&["show", &unit, "-o", "json"], None)["activeState"], "inactive");

    let started = env.json(&["start", "start-000001", "-o", "json"], None);
    assert_eq!(started["created"], true, "{started}");
    assert_eq!(started["agent"]["systemdUnit"], unit.as_str());
    assert_eq!(started["agent"]["activeState"], "active", "{started}");
    let new_pid = started["agent"]["pid"].as_u64().expect("a pid once started");
    assert_ne!(new_pid, old_pid);

    let again = env.json(&["start", &unit, "-o", "json"], None);
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["agent"]["pid"].as_u64(), Some(new_pid));

    // Unknown: exit 3. Transient: exit 2, one line saying what to do.
    let out = env.run(&["start", "no-such-agent"], None);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let transient =
        env.spawn(&env.request(json!({"label": "once"})))["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let out = env.run(&["start", &transient, "-o", "json"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("spawn it anew"), "{err}");
    let doc = schema::parse_valid("error", &out.stdout);
    assert_eq!(doc["error"]["kind"], "invalid", "{doc}");
}
