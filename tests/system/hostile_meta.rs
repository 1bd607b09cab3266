//! Hostile callers: metadata that tries to forge other `LogExtraFields=` across a
//! `daemon-reload` (systemd 252 writes a transient unit's fields unquoted and splits them at
//! spaces when it reads them back), and symlinks planted at our directory names.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;
use agent_relay_systemd::model::naming;
use serde_json::{json, Value};

/// Characters systemd's unit-file parser treats specially, and some it does not.
const ODD: &str = "100%C3 %% %n \\x41 \"q\" 'x' é ~41 a=b";

fn record_of<'a>(list: &'a Value, unit: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|r| r["systemdUnit"] == unit).unwrap_or_else(|| panic!("{unit} not listed"))
}

#[test]
fn forged_metadata_fields_do_not_survive_a_reload() {
    let env = Env::new();
    let victim = env.spawn(&env.request(json!({"label": "victim", "spawnRequestId": "req-victim01"})))["agent"].clone();
    let v_unit = victim["systemdUnit"].as_str().unwrap().to_string();
    let v_session = victim["sessionName"].as_str().unwrap().to_string();
    let v_id = victim["agentId"].as_str().unwrap().to_string();
    let v_pid = victim["pid"].as_u64().unwrap();
    let v_env = env.env_file(&v_unit).expect("the victim's env file");
    assert!(wait_until(Duration::from_secs(5), || env.runner_info(&v_session).exists()));

    let forge = format!(
        " AGENT_RELAY_SESSION={v_session} AGENT_RELAY_LOG_FILE=/etc/passwd AGENT_RELAY_AGENT_ID={v_id} \
         AGENT_RELAY_SPAWN_REQUEST_ID=req-victim01 AGENT_RELAY_POLICY=victims"
    );
    let label = format!("p{forge} {ODD}");
    let profile = format!("x{forge}");
    let model = format!("m AGENT_RELAY_LABEL=victim AGENT_RELAY_LOG_FILE=/etc/passwd {ODD}");
    let attacker = env.spawn(&env.request(json!({
        "label": label, "profile": profile, "model": model, "effort": format!("e{forge}"),
        "automationId": format!("a{forge}"), "automationRunId": format!("r{forge}"), "policyName": format!("n{forge}"),
    })))["agent"]
        .clone();
    let a_unit = attacker["systemdUnit"].as_str().unwrap().to_string();
    let a_session = attacker["sessionName"].as_str().unwrap().to_string();
    let a_id = attacker["agentId"].as_str().unwrap().to_string();
    assert_eq!(attacker["label"], label.as_str(), "before the reload");

    env.systemctl(&["daemon-reload"]);

    let list = env.json(&["list", "-o", "json"], None);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    let a = record_of(&list, &a_unit);
    assert_eq!(a["agentId"], a_id.as_str(), "the attacker lists as itself: {a:#}");
    assert_eq!(a["sessionName"], a_session.as_str(), "{a:#}");
    assert_eq!(a["label"], label.as_str(), "the label round-trips exactly: {a:#}");
    assert_eq!(a["profile"], profile.as_str(), "{a:#}");
    assert_eq!(a["model"], model.as_str(), "{a:#}");
    assert_eq!(a["policyName"], format!("n{forge}").as_str(), "{a:#}");
    assert_eq!(a["spawnRequestId"], Value::Null, "{a:#}");
    let a_log = env.home.join(".agent-relay/logs").join(format!("{a_session}.log"));
    assert_eq!(a["logFile"], a_log.display().to_string().as_str(), "{a:#}");
    let v = record_of(&list, &v_unit);
    assert_eq!(v["agentId"], v_id.as_str(), "{v:#}");
    assert_eq!(v["label"], "victim", "{v:#}");

    // An operator's journal query by id still reads plainly.
    let fields = env.prop(&a_unit, "LogExtraFields");
    assert!(fields.contains(&format!("AGENT_RELAY_AGENT_ID={a_id}")), "{fields}");

    // Every reference to the victim is the victim.
    for reference in [v_id.as_str(), v_session.as_str(), "req-victim01", v_unit.as_str()] {
        let shown = env.json(&["show", reference, "-o", "json"], None);
        assert_eq!(shown["systemdUnit"], v_unit.as_str(), "show {reference}: {shown:#}");
    }
    assert_eq!(env.json(&["show", &a_id, "-o", "json"], None)["systemdUnit"], a_unit.as_str());

    // `logs` of the attacker reads the attacker's log, not /etc/passwd.
    let logs = env.json(&["logs", &a_unit, "-o", "json"], None);
    assert_eq!(logs["logFile"], a_log.display().to_string().as_str(), "{logs:#}");
    assert!(!logs.to_string().contains("root:x:0:0"), "{logs:#}");
    let diag = env.json(&["diagnose", &a_unit, "-o", "json"], None);
    assert_eq!(diag["logFile"], a_log.display().to_string().as_str(), "{diag:#}");
    assert_eq!(diag["sessionName"], a_session.as_str(), "{diag:#}");

    // Stopping the attacker touches none of the victim's files, and not the victim.
    let stopped = env.json(&["stop", &a_unit, "-o", "json"], None);
    assert_eq!(stopped["sessionName"], a_session.as_str(), "{stopped:#}");
    assert!(v_env.exists(), "the victim's env file {} was deleted", v_env.display());
    assert!(env.runner_info(&v_session).exists(), "the victim's runner info was deleted");
    assert_eq!(env.prop(&v_unit, "ActiveState"), "active");
    assert!(pid_alive(v_pid), "the victim's runner died");
    let shown = env.json(&["show", &v_id, "-o", "json"], None);
    assert_eq!(shown["state"], "alive", "{shown:#}");

    // The attacker is collected: `logs` and `diagnose` come from its exit record, which the
    // runner (same user) could rewrite; neither reads a path from it.
    let records = env.exits_dir().join(&a_session);
    let record = std::fs::read_dir(&records).unwrap().flatten().next().expect("an exit record").path();
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    forged["logFile"] = json!("/etc/passwd");
    std::fs::write(&record, forged.to_string()).unwrap();
    let logs = env.json(&["logs", &a_session, "-o", "json"], None);
    assert_eq!(logs["logFile"], a_log.display().to_string().as_str(), "{logs:#}");
    assert!(!logs.to_string().contains("root:x:0:0"), "{logs:#}");
    let diag = env.json(&["diagnose", &a_session, "-o", "json"], None);
    assert_eq!(diag["logFile"], a_log.display().to_string().as_str(), "{diag:#}");
}

/// A directory elsewhere, mode 0755 with a file in it, that a symlink at one of our directory
/// names points to.
fn elsewhere(env: &Env, name: &str) -> PathBuf {
    let dir = env.home.join(format!("elsewhere-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep"), "x").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn untouched(dir: &Path) {
    assert_eq!(mode(dir), 0o755, "the mode of {} changed through a symlink", dir.display());
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("keep")], "written through a symlink into {}", dir.display());
}

fn plant(link: &Path, target: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn symlinks_planted_at_our_directory_names_are_not_followed() {
    let env = Env::new();
    // logs/ and runners/: the spawn refuses, one line, exit 1, and leaves no unit.
    for name in ["logs", "runners"] {
        let target = elsewhere(&env, name);
        let link = env.home.join(".agent-relay").join(name);
        plant(&link, &target);
        let out = env.run(&["spawn"], Some(&env.request(json!({"label": name})).to_string()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "spawn with {name} a symlink: {err}");
        assert!(err.contains("symlink") && err.contains(&link.display().to_string()), "{err}");
        untouched(&target);
        assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
        std::fs::remove_file(&link).unwrap();
    }

    // exits/<session>: the recorder refuses to write through it; the agent still runs and stops.
    let target = elsewhere(&env, "exits");
    let unique = naming::unique_suffix(naming::UniqueId::SpawnRequest("req-sym00001"));
    let session = format!("ar-claude-sym-{unique}");
    let session = session.as_str();
    plant(&env.exits_dir().join(session), &target);
    let agent = env.spawn(&env.request(json!({"label": "sym", "spawnRequestId": "req-sym00001"})))["agent"].clone();
    assert_eq!(agent["sessionName"], session);
    env.json(&["stop", session, "-o", "json"], None);
    untouched(&target);
    // The recorder ran and said why it wrote nothing (its output goes to the agent's log).
    let log = env.home.join(".agent-relay/logs").join(format!("{session}.log"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("refusing directory {}: it is a symlink", env.exits_dir().join(session).display())),
        "{text}"
    );
    // exits/ itself a symlink: the same.
    std::fs::remove_file(env.exits_dir().join(session)).unwrap();
    std::fs::remove_dir(env.exits_dir()).unwrap();
    let target = elsewhere(&env, "exits-root");
    plant(&env.exits_dir(), &target);
    env.spawn(&env.request(json!({"label": "sym", "spawnRequestId": "req-sym00001"})));
    env.json(&["stop", session, "-o", "json"], None);
    untouched(&target);
    // With the links gone, everything works as before.
    std::fs::remove_file(env.exits_dir()).unwrap();
    env.spawn(&env.request(json!({"label": "sym", "spawnRequestId": "req-sym00001"})));
    env.json(&["stop", session, "-o", "json"], None);
    assert_eq!(mode(&env.exits_dir().join(session)), 0o700);
    assert_eq!(std::fs::read_dir(env.exits_dir().join(session)).unwrap().count(), 1);
}
