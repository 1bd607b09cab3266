//! Hostile callers and runners: oversized requests, links planted in our directories, runner
//! files that are not files, tmux formats and separators in an attach spec, failed guests left
//! behind, guest names too long for a socket. Each is refused, bounded or made inert.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

/// Runs the CLI, killed after `limit`: `None` when it did not finish in time.
fn run_bounded(env: &Env, args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = env
        .cli()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the CLI");
    if !wait_until(limit, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    Some(child.wait_with_output().unwrap())
}

fn live_agent(env: &Env, id: &str, extra_env: Value) -> Value {
    let a = env.spawn(&env.request(json!({"spawnRequestId": id, "env": extra_env})))["agent"].clone();
    let info = env.runner_info(a["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info.exists()), "runner info not written");
    a
}

#[test]
fn oversized_requests_are_refused_before_systemd() {
    let env = Env::new();
    let big = |n: usize| "x".repeat(n);
    let many = |n: usize| (0..n).map(|i| (format!("K{i}"), json!("v"))).collect::<serde_json::Map<_, _>>();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"providerArgs": vec!["-a"; 257]}), "providerArgs"),
        (json!({"providerArgs": [big(200_000)]}), "providerArgs"),
        (json!({"providerArgs": vec![big(8000); 9]}), "providerArgs"),
        (json!({"env": many(257)}), "env"),
        (json!({"env": {"K": big(40_000)}}), "env"),
        (
            json!({"env": (0..9).map(|i| (format!("K{i}"), json!(big(30_000)))).collect::<serde_json::Map<_, _>>()}),
            "env",
        ),
        (json!({"agentProfile": {"env": many(257)}}), "env"),
        (json!({"tags": vec!["t"; 65]}), "tags"),
        (json!({"capabilities": vec!["c"; 65]}), "capabilities"),
        // The finding: 300 000 arguments (1.5 MB) froze the manager for every unit of the user.
        (json!({"providerArgs": vec!["-x"; 300_000]}), "providerArgs"),
    ];
    let before = env.our_tree();
    for (extra, want) in cases {
        let input = env.request(extra).to_string();
        let started = Instant::now();
        let out = env.run(&["spawn"], Some(&input));
        let err = String::from_utf8_lossy(&out.stderr);
        let shown = &input[..input.len().min(120)];
        assert_eq!(out.status.code(), Some(2), "{shown}: {err}");
        assert!(err.contains(want) && err.contains("at most"), "{shown}: {err:?} lacks {want:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line for {shown}: {err:?}");
        assert!(err.len() < 400, "a short line: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{shown}: took {:?}", started.elapsed());
    }
    assert!(env.agent_units().is_empty(), "a refused spawn started {:?}", env.agent_units());
    assert_eq!(env.our_tree(), before, "a refused spawn left files");
    // Real requests at the limits still start.
    let at_limit = env.request(json!({
        "spawnRequestId": "at-limit", "providerArgs": vec!["-a"; 256], "tags": vec!["t"; 64],
        "env": {"BIG": big(32 * 1024)},
    }));
    assert_eq!(env.spawn(&at_limit)["created"], true);
}

#[test]
fn an_exec_too_large_for_linux_is_named_e2big() {
    // One config `env` value over what one variable may hold (128 KiB) is refused with the
    // config, before anything starts.
    let env = Env::with_config(|c| c["env"] = json!({"HUGE": "x".repeat(200_000)}));
    let out = env.run(&["spawn"], Some(&env.request(json!({"spawnRequestId": "e2big-1"})).to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HUGE") && err.contains("131071"), "{err}");
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
    // A request cannot get there (its limits); config `env` values that are each small enough
    // but together over what execve takes can: execve fails with E2BIG, which systemd reports as
    // 203/EXEC, as it does a missing runner.
    let many: serde_json::Map<String, Value> =
        (0..30).map(|i| (format!("BIG_{i}"), json!("x".repeat(100_000)))).collect();
    let env = Env::with_config(|c| c["env"] = Value::Object(many));
    let out = env.run(&["spawn"], Some(&env.request(json!({"spawnRequestId": "e2big"})).to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("E2BIG") && err.contains("too large") && !err.contains("runner path"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(env.agent_units().is_empty(), "{:?}", env.agent_units());
}

#[test]
fn reap_never_follows_a_planted_link() {
    let env = Env::new();
    // Somebody's files, outside every directory of ours.
    let outside = env.mgr().root().join("outside");
    let inner = outside.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let budget = outside.join("2024-budget.xlsx");
    let named_like_ours = outside.join("0000000000001000-deadbeef.json");
    let inner_file = inner.join("notes.txt");
    for f in [&budget, &named_like_ours, &inner_file] {
        std::fs::write(f, "precious").unwrap();
    }
    let exits = env.exits_dir();
    let agents = env.agents_dir();
    let durable = env.durable_agents_dir();
    let runners = env.runners_dir();
    for d in [&exits, &agents, &durable, &runners] {
        std::fs::create_dir_all(d).unwrap();
    }
    let real_session = exits.join("ar-claude-session-real-1");
    std::fs::create_dir_all(&real_session).unwrap();
    let links: Vec<(PathBuf, &Path)> = vec![
        // A session directory of exit records that is a link to somebody's directory.
        (exits.join("ar-claude-session-link-1"), &outside),
        // Exit records that are links to somebody's files.
        (real_session.join("0000000000001000-aaaa.json"), &budget),
        (real_session.join("0000000000002000-bbbb.json"), &inner),
        // Agent and durable secret directories that are links to somebody's directory.
        (agents.join("ar-claude-session-evil-1.0badc0de"), &inner),
        (durable.join("ar-claude-session-evil-2.0badc0de"), &inner),
        // A runner-info file that is a link to somebody's file.
        (runners.join("ar-claude-session-evil-3.json"), &budget),
    ];
    for (link, target) in &links {
        symlink(target, link).unwrap();
        backdate(link, 30 * 24 * 3600);
    }
    backdate(&real_session, 30 * 24 * 3600);
    let report = env.json(&["reap", "-o", "json"], None);
    for f in [&budget, &named_like_ours, &inner_file] {
        assert_eq!(
            std::fs::read_to_string(f).ok().as_deref(),
            Some("precious"),
            "{} was touched: {report}",
            f.display()
        );
    }
    assert_eq!(mode(&outside), 0o755, "the outside directory's mode was changed");
    // At most the links themselves went.
    for (link, _) in &links {
        if let Ok(m) = std::fs::symlink_metadata(link) {
            assert!(m.file_type().is_symlink(), "{} is no longer the link", link.display());
        }
    }
    // A second run is as harmless, and a dry run reads nothing through a link either.
    env.json(&["reap", "--dry-run", "-o", "json"], None);
    env.json(&["reap", "-o", "json"], None);
    for f in [&budget, &named_like_ours, &inner_file] {
        assert!(f.exists(), "{} was removed", f.display());
    }
}

#[test]
fn a_runner_info_that_is_not_a_file_fails_guest_create_fast() {
    let env = Env::new();
    let a = live_agent(&env, "zero-info", json!({}));
    let info = env.runner_info(a["sessionName"].as_str().unwrap());
    std::fs::remove_file(&info).unwrap();
    symlink("/dev/zero", &info).unwrap();
    let out = run_bounded(&env, &["guest", "create", "zero-info"], Duration::from_secs(10))
        .expect("guest create did not finish within 10 s reading /dev/zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("runner info") && err.contains(&info.display().to_string()), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // A regular file larger than any runner info: refused, not read whole.
    std::fs::remove_file(&info).unwrap();
    std::fs::write(&info, format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 20))).unwrap();
    let out = run_bounded(&env, &["guest", "create", "zero-info"], Duration::from_secs(10)).expect("finished");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("runner info"), "{err}");
    assert_eq!(env.json(&["guest", "list", "-o", "json"], None), json!([]));
}

#[test]
fn a_fifo_as_the_log_does_not_hang_logs_or_diagnose() {
    let env = Env::new();
    let a = live_agent(&env, "fifo-log", json!({}));
    let log = PathBuf::from(a["logFile"].as_str().unwrap());
    std::fs::remove_file(&log).unwrap();
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for args in [&["logs", "fifo-log", "--timeout", "3"][..], &["diagnose", "fifo-log", "--timeout", "3", "-o", "json"]]
    {
        let started = Instant::now();
        let out = run_bounded(&env, args, Duration::from_secs(8))
            .unwrap_or_else(|| panic!("{args:?} hung on a FIFO log file"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(started.elapsed() < Duration::from_secs(4), "{args:?} took {:?}", started.elapsed());
        assert_eq!(err.trim_end().lines().count().max(1), 1, "{args:?}: {err}");
        if args[0] == "logs" {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("not a regular file"), "{err}");
        } else {
            assert!(out.status.success(), "{err}");
            let d: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(d["lastLogLines"], json!([]));
        }
    }
}

/// The content of a guest's pane.
fn pane(env: &Env, name: &str) -> String {
    env.json(&["terminal", "capture", name, "-o", "json"], None)["content"].as_str().unwrap().to_string()
}

#[test]
fn tmux_formats_and_separators_in_a_spec_are_inert() {
    let env = Env::new();
    let marker = env.mgr().root().join("formatted");
    // Directories inside baseDir whose names tmux would expand as formats.
    let shell = env.projects.join(format!("#(touch {})", marker.display()));
    let walk = env.projects.join("#{l:/etc}");
    for (i, cwd) in [&shell, &walk].into_iter().enumerate() {
        std::fs::create_dir_all(cwd).unwrap();
        let spec = json!({
            "mode": "guest", "provider": "claude", "cwd": cwd,
            "command": ["/bin/sh", "-c", "printf 'pwd=%s\\nK=%s\\n' \"$(pwd)\" \"$K\"; exec cat", "arg;"],
            "env": {"K": "a;", "L": "#(touch /nonexistent)"},
        });
        let id = format!("fmt-{i}");
        live_agent(&env, &id, json!({"FAKE_RUNNER_ATTACH_SPEC": spec.to_string()}));
        let out = env.run(&["guest", "create", &id, "-o", "json"], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "an env value ending in ';' broke the guest: {err}");
        let g: Value = serde_json::from_slice(&out.stdout).unwrap();
        let name = g["guest"].as_str().unwrap().to_string();
        let want = format!("pwd={}", cwd.display());
        assert!(
            wait_until(Duration::from_secs(5), || pane(&env, &name).contains(&want)),
            "the pane is not in {}: {}",
            cwd.display(),
            pane(&env, &name)
        );
        assert!(pane(&env, &name).contains("K=a;"), "{}", pane(&env, &name));
        // A trailing ';' typed into the pane arrives.
        env.json(&["terminal", "send", &name, "echo hi;\r", "-o", "json"], None);
        env.json(&["terminal", "send", &name, ";", "-o", "json"], None);
        assert!(
            wait_until(Duration::from_secs(5), || pane(&env, &name).contains("echo hi;\n")
                || pane(&env, &name).contains("echo hi;\r")),
            "{}",
            pane(&env, &name)
        );
        assert!(
            wait_until(Duration::from_secs(5), || pane(&env, &name).trim_end().ends_with(';')),
            "{}",
            pane(&env, &name)
        );
    }
    // The env went by a file, read and removed by the pane's launcher: nothing left on disk.
    let guests = env.runtime_dir().join("agent-relay-systemd").join("guests");
    let left: Vec<_> =
        std::fs::read_dir(&guests).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "launcher files left: {left:?}");
    assert!(!marker.exists(), "a #() in the spec's cwd ran a shell command");
}

#[test]
fn reap_resets_failed_guest_units() {
    let env = Env::new();
    live_agent(&env, "guest-fails", json!({}));
    let g = env.json(&["guest", "create", "guest-fails", "-o", "json"], None);
    let unit = g["systemdUnit"].as_str().unwrap().to_string();
    let pid = env.prop(&unit, "MainPID");
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    assert!(wait_until(Duration::from_secs(5), || env.prop(&unit, "ActiveState") == "failed"));
    let list = env.json(&["guest", "list", "-o", "json"], None);
    assert_eq!(list[0]["activeState"], "failed", "{list}");
    // A launch file no pane read (its server died first): it holds the spec's env, and goes.
    let stale = env.runtime_dir().join("agent-relay-systemd/guests/ar-guest-claude-gone-0badc0de.json");
    std::fs::write(&stale, "{}").unwrap();
    backdate(&stale, 3600);
    let report = env.json(&["reap", "-o", "json"], None);
    assert!(!stale.exists(), "{report}");
    let resets: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "reset-failed-unit")
        .filter_map(|a| a["target"].as_str())
        .collect();
    assert_eq!(resets, [unit.as_str()], "{report}");
    assert_eq!(env.json(&["guest", "list", "-o", "json"], None), json!([]), "a failed guest is still listed");
    assert_eq!(env.json(&["show", "guest-fails", "-o", "json"], None)["state"], "alive", "the agent was touched");
}

#[test]
fn guest_names_fit_a_socket_path() {
    let env = Env::new();
    let app = env.projects.join("app");
    let long_provider = "p".repeat(64);
    let spec = json!({"mode": "guest", "provider": long_provider, "cwd": app,
                      "command": ["/bin/sh", "-c", "echo guest-ready; exec sleep 3600"]});
    let id = "a-rather-long-spawn-request-id-for-a-guest-0123456789";
    live_agent(&env, id, json!({"FAKE_RUNNER_ATTACH_SPEC": spec.to_string()}));
    let started = Instant::now();
    let out = env.run(&["guest", "create", id, "-o", "json"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    let name = serde_json::from_slice::<Value>(&out.stdout).unwrap()["guest"].as_str().unwrap().to_string();
    let socket = env.mgr().root().join("tmux").join(format!("tmux-{}", nix::unistd::getuid())).join(&name);
    assert!(socket.as_os_str().len() < 108, "{} is too long for a socket", socket.display());
    assert!(wait_until(Duration::from_secs(5), || pane(&env, &name).contains("guest-ready")));

    // A TMUX_TMPDIR so long that no guest name fits: a clear error, no unit.
    let deep = env.mgr().root().join("d".repeat(90));
    std::fs::create_dir_all(&deep).unwrap();
    let out = env.run_with(&[("TMUX_TMPDIR", deep.as_os_str())], &["guest", "create", id], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TMUX_TMPDIR") && err.contains("108"), "{err}");
    assert_eq!(env.json(&["guest", "list", "-o", "json"], None).as_array().unwrap().len(), 1);
}
