//! Bad input: each case exits non-zero with one line that says what was wrong, starts no unit
//! and leaves no file behind. No manager at all: offline/bad_input.rs; a hung one: hung.rs.

use crate::util::*;
use serde_json::json;

#[test]
fn bad_spawn_requests_change_nothing() {
    let env = Env::new();
    let app = env.projects.join("app");
    let outside = env.home.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.projects.join("escape")).unwrap();
    let p = |s: &str| env.projects.join(s).display().to_string();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid spawn request"),
        ("".into(), "empty"),
        (r#"{"provider":"claude","cwd":42}"#.into(), "invalid type"),
        (json!({"cwd": app}).to_string(), "missing field `provider`"),
        (json!({"provider": "claude"}).to_string(), "missing field `cwd`"),
        (json!({"provider": "claude", "cwd": p("app/../../outside")}).to_string(), "cwd must be within base directory"),
        (json!({"provider": "claude", "cwd": "/etc"}).to_string(), "cwd must be within base directory"),
        (json!({"provider": "claude", "cwd": p("escape")}).to_string(), "cwd must be within base directory"),
        (json!({"provider": "claude", "cwd": p("missing")}).to_string(), "cwd does not exist"),
        (json!({"provider": "claude", "cwd": "relative/dir"}).to_string(), "absolute"),
        (json!({"provider": "claude", "cwd": app, "env": {"BAD-KEY": "x"}}).to_string(), "not a valid variable name"),
        (json!({"provider": "claude", "cwd": app, "env": {"K": "a\u{0}b"}}).to_string(), "NUL"),
        (json!({"provider": "claude", "cwd": app, "label": "x\ny"}).to_string(), "control characters"),
        (json!({"provider": "Claude!", "cwd": app}).to_string(), "provider"),
        (json!({"provider": "claude", "cwd": app, "lable": "typo"}).to_string(), "unknown field"),
    ];
    let before = env.our_tree();
    for (input, want) in cases {
        let out = env.run(&["spawn"], Some(&input));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {err}");
        assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line for {input:?}: {err:?}");
        assert!(out.stdout.is_empty(), "no output on stdout in text mode");
    }
    assert!(env.agent_units().is_empty(), "a refused spawn started {:?}", env.agent_units());
    assert_eq!(env.our_tree(), before, "a refused spawn left files");
}

#[test]
fn json_mode_errors_are_json_on_stdout_and_one_line_on_stderr() {
    let env = Env::new();
    let out = env.run(&["show", "nobody", "-o", "json"], None);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not-found");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn no_runner_found_is_a_clear_error() {
    let env = Env::with_config(|c| {
        c.as_object_mut().unwrap().remove("runnerCommand");
    });
    let out = env.run(&["spawn"], Some(&env.request(json!({"provider": "nosuchprovider"})).to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nosuchprovider-relay") && err.contains("runnerCommand"), "{err}");
    assert!(env.agent_units().is_empty());
}

#[test]
fn unknown_or_foreign_agents_are_refused() {
    let env = Env::new();
    // The foreign unit the verbs are pointed at, running (it is socket-activated): a stop or a
    // restart of it would change its state or its invocation id.
    env.systemctl(&["start", "dbus.service"]);
    let foreign =
        || env.systemctl(&["show", "-p", "ActiveState", "-p", "SubState", "-p", "InvocationID", "dbus.service"]);
    let before = foreign();
    assert!(before.contains("ActiveState=active\n") && !before.contains("InvocationID=\n"), "{before}");
    for verb in ["show", "stop", "kill", "remove"] {
        let out = env.run(&[verb, "no-such-agent"], None);
        assert_eq!(out.status.code(), Some(3), "{verb}: {}", String::from_utf8_lossy(&out.stderr));
        let out = env.run(&[verb, "dbus.service"], None);
        assert_eq!(out.status.code(), Some(4), "{verb} of a unit not ours: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not managed by agent-relay-systemd"));
        // The foreign unit is untouched: the same run of it, still active.
        assert_eq!(foreign(), before, "{verb} dbus.service touched it");
    }
}

#[test]
fn malformed_config_names_the_file() {
    let env = Env::new();
    std::fs::write(&env.config, "{\"apiPort\": \"not a number\"}").unwrap();
    let out = env.run(&["list"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&env.config.display().to_string()), "{err}");
}

#[test]
fn more_bad_spawn_requests_and_arguments_change_nothing() {
    let env = Env::new();
    env.spawn(&env.request(json!({"spawnRequestId": "standing"})));
    let app = env.projects.join("app");
    let spawn = |extra: serde_json::Value| env.request(extra).to_string();
    let requests: Vec<(String, &str)> = vec![
        ("[]".into(), "invalid spawn request"),
        ("null".into(), "invalid spawn request"),
        ("{\"provider\": \"claude\", \"cwd\": ".into(), "invalid spawn request"),
        (json!({"provider": "", "cwd": app}).to_string(), "provider is required"),
        (json!({"provider": "claude", "cwd": ""}).to_string(), "cwd is required"),
        (json!({"provider": "a".repeat(40), "cwd": app}).to_string(), "provider"),
        (spawn(json!({"spawnRequestId": "  "})), "spawnRequestId must not be empty"),
        (spawn(json!({"agentId": ""})), "agentId must not be empty"),
        (spawn(json!({"spawnRequestId": "a\u{1b}[31m"})), "control characters"),
        (spawn(json!({"model": "m\tx"})), "control characters"),
        (spawn(json!({"label": "x".repeat(5000)})), "bytes long"),
        (spawn(json!({"tags": ["a,b"]})), "no comma"),
        (spawn(json!({"capabilities": [""]})), "non-empty"),
        (spawn(json!({"providerArgs": ["--x\u{0}"]})), "NUL"),
        (spawn(json!({"env": {"1ABC": "x"}})), "not a valid variable name"),
        (spawn(json!({"env": {"K": "a\u{7}b"}})), "control"),
        (spawn(json!({"lifecycle": "forever"})), "unknown variant"),
        (spawn(json!({"tags": "not-a-list"})), "invalid type"),
        (spawn(json!({"env": ["K=V"]})), "invalid type"),
        (spawn(json!({"prompt": 42})), "invalid type"),
        (
            format!("{{\"provider\":\"claude\",\"cwd\":\"{}\",\"prompt\":\"{}\"}}", app.display(), "p".repeat(9 << 20)),
            "bytes",
        ),
    ];
    // Other verbs: bad arguments and references are refused before anything is touched.
    let args: Vec<(Vec<&str>, &str)> = vec![
        (vec!["list", "--timeout", "0"], "--timeout"),
        (vec!["list", "--timeout=-1"], "--timeout"),
        (vec!["list", "--timeout", "soon"], "invalid value"),
        (vec!["stop", "standing", "--timeout-stop=nan"], "--timeout-stop"),
        (vec!["logs", "standing", "-n", "5000"], "--lines"),
        (vec!["kill", "standing", "--signal", "BOGUS"], "unknown signal"),
        (vec!["kill", "standing", "--whom", "nobody"], "invalid value"),
        (vec!["show", ""], "not an agent reference"),
        (vec!["show", "a\nb"], "not an agent reference"),
        (vec!["diagnose", "x\u{1}y"], "not an agent reference"),
        (vec!["watch", "--queue", "0"], "queue"),
        (vec!["guest", "stop", "standing"], "guest"),
        (vec!["no-such-verb"], "unrecognized subcommand"),
    ];
    let before = env.our_tree();
    let units = env.agent_units();
    let mut n = 0;
    for (input, want) in &requests {
        let out = env.run(&["spawn"], Some(input));
        let err = String::from_utf8_lossy(&out.stderr);
        let shown: String = input.chars().take(80).collect();
        assert_eq!(out.status.code(), Some(2), "{shown}: {err}");
        assert!(err.contains(want), "{shown}: {err:?} lacks {want:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line for {shown}: {err:?}");
        n += 1;
    }
    for (a, want) in &args {
        let out = env.run(a, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.to_lowercase().contains(&want.to_lowercase()), "{a:?}: {err:?} lacks {want:?}");
        n += 1;
    }
    println!("{n} more bad inputs refused");
    assert_eq!(env.agent_units(), units, "a refused input changed the units");
    assert_eq!(env.our_tree(), before, "a refused input left files");
    assert_eq!(env.json(&["show", "standing", "-o", "json"], None)["state"], "alive");
}
