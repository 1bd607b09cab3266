//! The operator's toolkit, third part, against a real user manager: resources per agent checked
//! against `/proc`, `list -o wide`, `top`, `status`, `list --all`.

use crate::util::*;
use std::time::Duration;

use serde_json::{json, Value};

/// `VmRSS` of a process, bytes, as the test reads it.
fn vm_rss(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// The processes in the control group of `pid` (its lines of `/proc/PID/cgroup` the same).
fn cgroup_mates(pid: u64) -> Vec<u64> {
    let of = |p: &str| std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok();
    let Some(mine) = of(&pid.to_string()) else { return vec![] };
    let mut mates: Vec<u64> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|p| of(&p.to_string()).as_deref() == Some(mine.as_str()))
        .collect();
    mates.sort();
    mates
}

/// A runner that holds 64 MiB it has written to, then sleeps (extra arguments are ignored).
fn hog(env: &Env) {
    let code = "import time\nb = bytearray(b'x' * (64 << 20))\nprint('ready', flush=True)\ntime.sleep(600)\n";
    env.use_runner(&["/usr/bin/python3", "-c", code]);
}

#[test]
fn show_reports_the_memory_a_runner_holds_as_proc_does_and_says_where_from() {
    let env = Env::new();
    hog(&env);
    let agent = env.spawn(&env.request(json!({"label": "hog", "spawnRequestId": "hog-000001"})))["agent"].clone();
    let pid = agent["pid"].as_u64().unwrap();
    // The 64 MiB are held once the runner has said so in its log: wait for it.
    let log = agent["logFile"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(20), || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ready"))));
    let shown = schema::parse_valid("agent-record", &env.run(&["show", "hog-000001", "-o", "json"], None).stdout);
    let r = &shown["resources"];
    let ours = r["memoryBytes"].as_u64().expect("memoryBytes");
    let proc_rss = vm_rss(pid);
    let source = r["source"].as_str().unwrap();
    assert!(["systemd", "proc", "mixed"].contains(&source), "{r}");
    assert!(ours >= 64 << 20, "ours {ours} < 64 MiB: {r}");
    // The unit's processes: the runner and our log writer (which is not the runner's child).
    let mates = cgroup_mates(pid);
    assert_eq!(mates.len(), 2, "{mates:?}");
    let writer = *mates.iter().find(|p| **p != pid).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{writer}/comm")).unwrap();
    assert_eq!(comm.trim(), "agent-relay-log");
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(!children.split_whitespace().any(|c| c == writer.to_string()), "the writer is the runner's child");
    if source == "proc" {
        // The sum over the unit's processes, within what they allocate meanwhile.
        let proc_rss = proc_rss + vm_rss(writer);
        let diff = ours.abs_diff(proc_rss);
        assert!(diff < 4 << 20, "ours {ours} vs /proc VmRSS {proc_rss}: {r}");
        assert_eq!(r["processes"], 2, "{r}");
    } else {
        // The cgroup's figure counts the page cache too: at least the process's.
        assert!(ours + (4 << 20) >= proc_rss, "ours {ours} vs /proc VmRSS {proc_rss}: {r}");
    }
    assert!(r["tasks"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["cpuNs"].as_u64().unwrap() > 0, "{r}");

    // list -o wide: the same figure in the MEM column; plain list leaves resources null.
    let wide = String::from_utf8(env.run(&["list", "-o", "wide"], None).stdout).unwrap();
    let header = wide.lines().next().unwrap();
    for col in ["MEM", "CPU%", "TASKS", "SRC", "RESTARTS", "DURABLE", "STARTED"] {
        assert!(header.contains(col), "{wide}");
    }
    let row = wide.lines().find(|l| l.contains("hog")).unwrap();
    assert!(row.contains('M') && row.contains(source), "{wide}");
    let plain = env.json(&["list", "-o", "json"], None);
    assert_eq!(plain[0]["resources"], Value::Null);

    // top: two refreshes as two JSON lines, the agent in each with its figures.
    let out = env.run(&["top", "--iterations", "2", "--interval", "0.3", "-o", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frames: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(frames.len(), 2);
    for f in &frames {
        schema::validate("top-frame", f);
        assert_eq!(f["agents"][0]["spawnRequestId"], "hog-000001", "{f}");
        assert!(f["agents"][0]["resources"]["memoryBytes"].as_u64().unwrap() >= 64 << 20);
    }
    // A bad interval changes nothing: exit 2.
    assert_eq!(env.run(&["top", "--interval", "0"], None).status.code(), Some(2));
}

#[test]
fn status_counts_agents_and_list_all_adds_the_exited_ones() {
    let env = Env::new();
    env.spawn(&env.request(json!({"label": "live", "spawnRequestId": "st-000001"})));
    let gone =
        env.spawn(&env.request(
            json!({"label": "gone", "spawnRequestId": "st-000002", "env": {"FAKE_RUNNER_EXIT_AFTER_MS": "50"}}),
        ));
    let gone_unit = gone["agent"]["systemdUnit"].as_str().unwrap().to_string();
    // Its runner exits 0: the transient unit is collected, only its exit record remains.
    assert!(wait_until(Duration::from_secs(10), || !env.agent_units().contains(&gone_unit)), "{:?}", env.agent_units());

    let status = schema::parse_valid("status", &env.run(&["status", "-o", "json"], None).stdout);
    assert_eq!(status["agents"], 1, "{status}");
    assert_eq!(status["alive"], 1, "{status}");
    assert_eq!(status["exited"], 1, "{status}");
    assert_eq!(status["queued"], 0, "{status}");
    assert_eq!(status["tmuxPrefix"], "ar");
    assert!(status["managerVersion"].as_str().is_some_and(|v| !v.is_empty()), "{status}");
    assert_eq!(status["spawnSlots"], 2);
    let text = String::from_utf8(env.run(&["status"], None).stdout).unwrap();
    assert!(text.contains("1 alive") && text.contains("reaper timer"), "{text}");

    let all = env.json(&["list", "--all", "-o", "json"], None);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let exited = all.iter().find(|a| a["systemdUnit"] == gone_unit.as_str()).expect("the exited agent");
    assert_eq!(exited["state"], "dead");
    assert_eq!(exited["result"], "success");
    assert_eq!(exited["spawnRequestId"], "st-000002");
    schema::validate("agent-list", &Value::Array(all.clone()));
    assert_eq!(env.json(&["list", "-o", "json"], None).as_array().unwrap().len(), 1);
    let dead = env.json(&["list", "--all", "--state", "dead", "-o", "json"], None);
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
}

#[test]
fn watch_gives_up_with_exit_5_once_the_manager_is_gone_for_good() {
    let mut env = Env::new();
    let mut child = env
        .cli()
        .args(["watch", "-o", "json", "--give-up-after", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Killed by pid whatever happens below.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _reap = Reap(pid);
    std::thread::sleep(Duration::from_millis(800));
    // The manager (and its bus) goes away for good.
    env.mgr.take().unwrap().stop();
    let began = std::time::Instant::now();
    let mut status = None;
    while began.elapsed() < Duration::from_secs(30) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("watch did not give up within 30 s");
    };
    let took = began.elapsed();
    assert_eq!(status.code(), Some(5), "exit status");
    assert!(took >= Duration::from_secs(2), "gave up after only {took:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let docs: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The last event says it gives up; then the error document (kind manager-unreachable).
    let (error, events) = docs.split_last().unwrap();
    assert_eq!(error["error"]["kind"], "manager-unreachable", "{out}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "disconnected", "{out}");
    assert!(last["detail"].as_str().unwrap().starts_with("giving up"), "{out}");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn logs_follow_ends_when_the_agent_ends_and_says_how() {
    let env = Env::new();
    let req = env.request(json!({
        "label": "fol", "spawnRequestId": "fol-000001",
        "env": {"FAKE_RUNNER_SAY": "last words", "FAKE_RUNNER_EXIT_AFTER_MS": "1500"}
    }));
    env.spawn(&req);
    let began = std::time::Instant::now();
    let out = env.run_within(Duration::from_secs(30), &["logs", "fol-000001", "--follow"], None);
    let took = began.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took >= Duration::from_millis(1000) && took < Duration::from_secs(15), "took {took:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("last words"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("has ended"), "{stderr}");
    eprintln!("logs --follow ended after {took:?}: {stderr}");
    // An agent that has ended already: the tail, then the same line, at once.
    let out = env.run_within(Duration::from_secs(10), &["logs", "fol-000001", "--follow"], None);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("has ended"));
}

#[test]
fn bash_completes_agent_and_guest_names_from_the_manager() {
    let env = Env::new();
    let agent = env.spawn(&env.request(json!({"label": "cmp", "spawnRequestId": "cmp-000001"})))["agent"].clone();
    let session = agent["sessionName"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("completion.bash");
    let out = env.run(&["completions", "bash"], None);
    std::fs::write(&script, &out.stdout).unwrap();
    // The command as an operator types it: on PATH by its own name.
    std::os::unix::fs::symlink(bin(), dir.path().join("agent-relay-systemd")).unwrap();
    let driver = r#"
source "$1"; shift
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
fn=$(complete -p agent-relay-systemd | sed -E 's/.* -F ([^ ]+) .*/\1/')
"$fn" agent-relay-systemd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let complete = |words: &[&str]| -> Vec<String> {
        let mut c = std::process::Command::new("bash");
        c.env_clear();
        for (k, v) in env.mgr().env() {
            c.env(k, v);
        }
        c.env("HOME", &env.home);
        c.env("PATH", format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default()));
        c.arg("-c").arg(driver).arg("bash").arg(&script).arg("agent-relay-systemd").arg("--config").arg(&env.config);
        let out = output_within(c.args(words), None, Duration::from_secs(20));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    };
    assert_eq!(complete(&["stop", "cmp-"]), ["cmp-000001"]);
    assert_eq!(complete(&["logs", "-n", "5", &session[..6]]), vec![session.clone()]);
    assert!(complete(&["diagnose", ""]).contains(&session));
    // Past the agent: no names (the next word is no agent).
    assert!(!complete(&["stop", "cmp-000001", ""]).contains(&session));
    // A flag's value is not a verb's agent.
    assert!(!complete(&["stop", "--timeout-stop", ""]).contains(&session));
}

#[test]
fn guest_attach_attaches_a_terminal_to_the_guests_session_and_refuses_a_pipe() {
    let env = Env::new();
    let a = env.spawn(&env.request(json!({"spawnRequestId": "att-000001"})))["agent"].clone();
    let info = env.runner_info(a["sessionName"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(5), || info.exists()));
    let name = env.json(&["guest", "create", "att-000001", "-o", "json"], None)["guest"].as_str().unwrap().to_string();
    // Not a terminal: exit 2, one line, nothing attached.
    let out = env.run(&["guest", "attach", &name], Some(""));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
    // Not a guest name: exit 2.
    assert_eq!(env.run(&["guest", "attach", "ar-claude-x"], None).status.code(), Some(2));

    let with_env = |c: &mut std::process::Command| {
        c.env_clear();
        for (k, v) in env.mgr().env() {
            c.env(k, v);
        }
        c.env("HOME", &env.home).env("PATH", std::env::var("PATH").unwrap_or_default());
    };
    let tmux = |args: &[&str]| {
        let mut c = std::process::Command::new("tmux");
        with_env(&mut c);
        c.args(["-N", "-L", &name]).args(args);
        output_within(&mut c, None, Duration::from_secs(5))
    };
    // A terminal: `script` gives the command a pty, as a person's terminal would.
    let line = format!("'{}' --config '{}' guest attach {name}", bin().display(), env.config.display());
    let mut c = std::process::Command::new("script");
    with_env(&mut c);
    c.env("TERM", "xterm").args(["-q", "-e", "-c", &line, "/dev/null"]);
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _reap = Reap(child.id());
    let attached = wait_until(Duration::from_secs(10), || {
        let out = tmux(&["list-clients", "-F", "#{client_session}"]);
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l == name)
    });
    if !attached {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no client attached to {name}");
    }
    // Detached from the server's side: the attach ends, exit 0.
    assert!(tmux(&["detach-client", "-s", &format!("={name}")]).status.success());
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if began.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("guest attach did not end after the detach");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn reap_cuts_big_logs_and_removes_the_logs_of_agents_gone_past_the_retention() {
    let env = Env::with_config(|c| {
        c["logMaxMb"] = json!(1);
        c["logRetentionDays"] = json!(1);
    });
    let agent = env.spawn(&env.request(json!({"label": "big", "spawnRequestId": "log-000001"})))["agent"].clone();
    let log = std::path::PathBuf::from(agent["logFile"].as_str().unwrap());
    let logs = log.parent().unwrap().to_path_buf();
    // The live agent's log grows past the cap (appended, as its runner appends).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for i in 0..40_000 {
            writeln!(f, "line {i:06} of a chatty runner ..........................").unwrap();
        }
    }
    assert!(std::fs::metadata(&log).unwrap().len() > 2 << 20);
    // A gone agent's log, two days old; a fresh one; another prefix's; a link named like ours.
    let old = logs.join("ar-claude-old-0123456789ab.log");
    let fresh = logs.join("ar-claude-fresh-0123456789ab.log");
    let other = logs.join("zz-claude-old-0123456789ab.log");
    let outside = env.home.join("precious.txt");
    let link = logs.join("ar-claude-link-0123456789ab.log");
    for p in [&old, &fresh, &other, &outside] {
        std::fs::write(p, "x\n").unwrap();
    }
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    for p in [&old, &other, &outside, &link] {
        backdate(p, 2 * 86_400);
    }
    let out = env.run(&["reap", "-o", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], json!([]), "{report}");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 600 << 10, "the live log is cut to its newer half: {size}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("[agent-relay-systemd reap: the log's first"), "{}", &text[..200]);
    assert!(text.trim_end().ends_with("line 039999 of a chatty runner .........................."));
    assert!(!old.exists(), "the old log of a gone agent is removed");
    assert!(fresh.exists() && other.exists(), "a fresh log and another prefix's stay");
    assert!(std::fs::symlink_metadata(&link).is_err(), "an old link named like a log goes, itself");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x\n", "a link's target is never touched");
    // The agent still writes to its log after the cut.
    assert!(env.json(&["logs", "log-000001", "-o", "json"], None)["lines"].as_array().is_some_and(|l| !l.is_empty()));
}

#[test]
fn a_durable_unit_freezes_neither_the_callers_path_nor_a_build_tree_binary() {
    let env = Env::new();
    let path = format!("/opt/caller-only-bin:{}", std::env::var("PATH").unwrap_or_default());
    let req = env.request(json!({"label": "dpath", "spawnRequestId": "dpath-000001"}));
    let out = env.run_with(
        &[("PATH", std::ffi::OsStr::new(&path))],
        &["spawn", "--persist", "-o", "json"],
        Some(&req.to_string()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unit =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["agent"]["systemdUnit"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(env.unit_dir().join(&unit)).unwrap();
    let path_line = text.lines().find(|l| l.starts_with("Environment=PATH=")).expect("a PATH");
    assert!(!path_line.contains("caller-only"), "{path_line}");
    assert!(path_line.ends_with(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), "{path_line}");
    // The exit recorder: the packaged binary when installed, else this one.
    let packaged = std::path::Path::new("/usr/bin/agent-relay-systemd").is_file();
    let stop_post = text.lines().find(|l| l.starts_with("ExecStopPost=")).expect("the exit recorder");
    assert_eq!(stop_post.contains("/usr/bin/agent-relay-systemd"), packaged, "{stop_post}");
}
