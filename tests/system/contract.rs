//! The JSON contract against the real binary and a real user manager: every verb's `-o json`
//! output (answers, `watch` and `logs --follow` lines, error documents) is valid against its
//! committed schema (schema/, made strict: a printed field the schema does not name fails), and
//! carries `schemaVersion`.

use std::io::BufRead;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::schema::{parse_valid, validate};
use crate::util::*;

const VERSION: u64 = agent_relay_systemd::model::contract::SCHEMA_VERSION as u64;

/// Runs `args` (with `-o json`), expects exit `code`, validates stdout as `schema`.
fn answer(env: &Env, schema: &str, args: &[&str], stdin: Option<&str>, code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out: Output = env.run(&all, stdin);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let v = parse_valid(schema, &out.stdout);
    let versioned = if v.is_array() { v.as_array().unwrap().iter().collect() } else { vec![&v] };
    for doc in versioned {
        assert_eq!(doc["schemaVersion"], VERSION, "{args:?}: {doc}");
    }
    v
}

#[test]
fn every_verb_prints_what_its_schema_says() {
    let env = Env::new();
    let (watch, preamble) = Watch::start_with_preamble(&env);
    let mut events: Vec<Value> = preamble;
    let ready = events.last().unwrap().clone();
    assert_eq!((ready["type"].as_str(), ready["agents"].as_u64()), (Some("ready"), Some(0)), "{ready}");

    // spawn, list, show, logs (and --follow), diagnose and kill of a live agent.
    let req = env.request(json!({"spawnRequestId": "contract-live", "policyName": "contract"}));
    let spawned = answer(&env, "spawn-answer", &["spawn"], Some(&req.to_string()), 0);
    assert_eq!(spawned["created"], true);
    let session = spawned["agent"]["sessionName"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || env.runner_info(&session).exists()), "runner info not written");
    let list = answer(&env, "agent-list", &["list"], None, 0);
    for a in list.as_array().unwrap() {
        validate("agent-record", a);
    }
    answer(&env, "agent-record", &["show", "contract-live"], None, 0);
    assert!(wait_until(Duration::from_secs(5), || {
        let logs = answer(&env, "logs-answer", &["logs", "contract-live"], None, 0);
        !logs["lines"].as_array().unwrap().is_empty()
    }));
    let mut follow = env
        .cli()
        .args(["logs", "contract-live", "--follow", "-n", "2", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(follow.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let line = parse_valid("log-line", first.as_bytes());
    assert_eq!(line["schemaVersion"], VERSION);
    let d = answer(&env, "diagnosis", &["diagnose", "contract-live"], None, 0);
    assert_eq!(d["exit"]["kind"], "unknown", "a running agent has no exit yet: {d}");
    answer(&env, "kill-answer", &["kill", "contract-live", "--signal", "CONT", "--whom", "main"], None, 0);

    // Guests and their terminal.
    let g = answer(&env, "guest-record", &["guest", "create", "contract-live"], None, 0);
    let guest = g["guest"].as_str().unwrap().to_string();
    answer(&env, "guest-list", &["guest", "list"], None, 0);
    answer(&env, "capture", &["terminal", "capture", &guest], None, 0);
    answer(&env, "send-answer", &["terminal", "send", &guest, "x"], None, 0);
    assert_eq!(answer(&env, "guest-stop", &["guest", "stop", &guest], None, 0)["stopped"], true);

    // An agent that exits with status 3: `exited` in the stream, and `diagnose` agrees.
    let req = env.request(json!({"spawnRequestId": "contract-exit", "lifecycle": "ephemeral",
        "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "200", "FAKE_RUNNER_EXIT_CODE": "3"}}));
    let unit = answer(&env, "spawn-answer", &["spawn"], Some(&req.to_string()), 0)["agent"]["systemdUnit"].clone();
    let seen =
        watch.until(Duration::from_secs(10), |v| v["type"] == "exited" && v["unit"] == unit).expect("an exited event");
    events.extend(seen.into_iter().map(|(_, v)| v));
    let exited = events.last().unwrap();
    assert_eq!((exited["exit"]["kind"].as_str(), exited["exit"]["exitCode"].as_i64()), (Some("exited"), Some(3)));
    let d = answer(&env, "diagnosis", &["diagnose", "contract-exit"], None, 0);
    assert_eq!((d["exit"]["kind"].as_str(), d["exit"]["exitCode"].as_i64()), (Some("exited"), Some(3)), "{d}");

    // stop, a durable agent's generate / spawn --persist / remove.
    let stop = answer(&env, "stop-answer", &["stop", "contract-live", "--timeout-stop", "5"], None, 0);
    assert_eq!(stop["stopped"], true);
    let req = env.request(json!({"spawnRequestId": "contract-durable"}));
    answer(&env, "generate-answer", &["generate"], Some(&req.to_string()), 0);
    answer(&env, "spawn-answer", &["spawn", "--persist"], Some(&req.to_string()), 0);
    let removed = answer(&env, "remove-answer", &["remove", "contract-durable", "--timeout-stop", "5"], None, 0);
    assert_eq!(removed["durable"], true);

    // reap: the failed unit of the exited agent is reset.
    answer(&env, "reap-summary", &["reap", "--dry-run"], None, 0);
    let reaped = answer(&env, "reap-summary", &["reap"], None, 0);
    assert!(reaped["actions"].as_array().unwrap().iter().any(|a| a["action"] == "reset-failed-unit"), "{reaped}");

    // doctor: a finding fails in a bare private manager (no reaper timer installed), so exit 8,
    // and the report is printed all the same.
    let out = env.run(&["doctor", "-o", "json"], None);
    let report = parse_valid("doctor-report", &out.stdout);
    assert_eq!(report["ok"], out.status.success(), "{report}");

    // Errors: not found (exit 3), ambiguous (exit 4, with `matches`), a bad request (exit 2).
    let e = answer(&env, "error", &["show", "nobody"], None, 3);
    assert_eq!(e["error"]["kind"], "not-found");
    let req = env.request(json!({"spawnRequestId": "contract-2", "policyName": "twice"}));
    answer(&env, "spawn-answer", &["spawn"], Some(&req.to_string()), 0);
    let req = env.request(json!({"spawnRequestId": "contract-3", "policyName": "twice"}));
    answer(&env, "spawn-answer", &["spawn"], Some(&req.to_string()), 0);
    let e = answer(&env, "error", &["show", "twice"], None, 4);
    assert_eq!(
        (e["error"]["kind"].as_str(), e["error"]["matches"].as_array().map(Vec::len)),
        (Some("ambiguous"), Some(2))
    );
    let e = answer(&env, "error", &["spawn"], Some(r#"{"provider":"claude"}"#), 2);
    assert_eq!(e["error"]["kind"], "invalid");

    // Every `watch` line so far, and those of the stops and spawns above.
    events.extend(watch.drain(Duration::from_millis(500)));
    for (i, ev) in events.iter().enumerate() {
        validate("watch-event", ev);
        assert_eq!(ev["schemaVersion"], VERSION, "{ev}");
        assert_eq!(ev["seq"], i as u64 + 1, "numbered without gaps: {ev}");
    }
    for kind in ["ready", "spawned", "started", "exited", "stopped"] {
        assert!(events.iter().any(|e| e["type"] == kind), "no {kind} event among {events:#?}");
    }

    // A second watch starts from a snapshot of the agents there are now.
    let agents = answer(&env, "agent-list", &["list"], None, 0).as_array().unwrap().len() as u64;
    let (_again, preamble) = Watch::start_with_preamble(&env);
    for ev in &preamble {
        validate("watch-event", ev);
    }
    let snapshots = preamble.iter().filter(|e| e["type"] == "snapshot").count() as u64;
    assert_eq!((snapshots, preamble.last().unwrap()["agents"].as_u64()), (agents, Some(agents)), "{preamble:#?}");
}
