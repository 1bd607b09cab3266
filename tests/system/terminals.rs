//! The agent's own terminal: the tmux session its runner names in its runner info (the fake
//! runner's `FAKE_RUNNER_TMUX`), captured, typed into and resized as a guest's; the
//! orchestrator's input rules and bounds; `running` apart from `agentAlive`; and a runner that
//! names another terminal, a socket outside our directory or target syntax, refused.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::schema::validate;
use crate::util::*;

/// A live agent whose runner runs a tmux session of its own (`FAKE_RUNNER_TMUX`, with `env`
/// added), once its pane is up; its record and runner info.
fn agent_with_tmux(env: &Env, id: &str, extra: Value) -> (Value, Value) {
    let mut vars = json!({"FAKE_RUNNER_TMUX": "1"});
    vars.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let agent = env.spawn(&env.request(json!({"spawnRequestId": id, "env": vars})))["agent"].clone();
    let info = pane_up(env, &agent, id);
    (agent, info)
}

/// Once the runner of `agent` has named its tmux session and the pane shows `pane-ready`: the
/// runner info.
fn pane_up(env: &Env, agent: &Value, reference: &str) -> Value {
    let info_path = env.runner_info(agent["sessionName"].as_str().unwrap());
    let read = || serde_json::from_slice::<Value>(&std::fs::read(&info_path).ok()?).ok();
    assert!(
        wait_until(Duration::from_secs(10), || read().is_some_and(|i| i["tmuxSocket"].is_string())),
        "no runner info naming a tmux socket"
    );
    let capture = || env.json(&["terminal", "capture", reference, "-o", "json"], None);
    assert!(
        wait_until(Duration::from_secs(10), || capture()["content"].as_str().unwrap().contains("pane-ready")),
        "the pane never showed pane-ready: {}",
        capture()
    );
    read().unwrap()
}

/// `$TMUX_TMPDIR` of the test's manager.
fn tmux_tmpdir(env: &Env) -> PathBuf {
    env.mgr().root().join("tmux")
}

/// The directory of the user's tmux sockets, as tmux and we derive it.
fn socket_dir(env: &Env) -> PathBuf {
    tmux_tmpdir(env).join(format!("tmux-{}", nix::unistd::getuid()))
}

/// `tmux -L socket ARGS…` as an operator runs it against the test's tmux directory (bounded).
fn tmux_output(env: &Env, socket: &str, args: &[&str]) -> Output {
    let mut c = Command::new("tmux");
    c.env("TMUX_TMPDIR", tmux_tmpdir(env)).env_remove("TMUX").args(["-L", socket]).args(args);
    output_within(&mut c, None, Duration::from_secs(10))
}

fn tmux(env: &Env, socket: &str, args: &[&str]) -> String {
    let out = tmux_output(env, socket, args);
    assert!(out.status.success(), "tmux -L {socket} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A process of the test's own, SIGKILLed by pid when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Runs a verb that must fail with `code`; its stderr, which must be one line.
fn fails(env: &Env, args: &[&str], stdin: Option<&str>, code: i32) -> String {
    let out = env.run(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
    err
}

#[test]
fn an_agents_own_tmux_session_is_captured_typed_into_and_resized() {
    let env = Env::new();
    let (agent, info) = agent_with_tmux(&env, "own-1", json!({}));
    let (session, socket) = (str_of(&info, "tmuxSession"), str_of(&info, "tmuxSocket"));
    assert_eq!(session, str_of(&agent, "sessionName"), "the runner names the session it was given");
    assert!(socket_dir(&env).join(socket).exists(), "the runner's socket is in our socket directory");

    let c = env.json(&["terminal", "capture", "own-1", "-o", "json"], None);
    validate("capture", &c);
    assert_eq!((c["kind"].as_str(), c["session"].as_str()), (Some("agent"), Some(session)), "{c}");
    assert_eq!(c["systemdUnit"], agent["systemdUnit"]);
    assert!(c.get("guest").is_none(), "an agent's terminal is no guest: {c}");
    assert_eq!((c["running"].as_bool(), c["agentAlive"].as_bool()), (Some(true), Some(true)));
    assert_eq!((c["cols"].as_u64(), c["rows"].as_u64()), (Some(120), Some(40)));
    assert_eq!(c["consistent"], true);
    assert!(c["capturedAt"].as_u64().unwrap() > 1_600_000_000_000);
    let target = format!("={session}:");
    let cursor = tmux(&env, socket, &["display-message", "-p", "-t", &target, "#{cursor_x} #{cursor_y}"]);
    assert_eq!(format!("{} {}", c["cursorX"], c["cursorY"]), cursor, "the cursor is tmux's own");

    // Every reference to the agent names its terminal.
    for r in [str_of(&agent, "systemdUnit"), session, str_of(&agent, "agentId")] {
        assert_eq!(env.json(&["terminal", "capture", r, "-o", "json"], None)["session"], session, "{r}");
    }
    // The text form is the pane itself.
    let text = env.run(&["terminal", "capture", "own-1"], None);
    assert!(String::from_utf8_lossy(&text.stdout).contains("pane-ready"));

    let sent = env.json(&["terminal", "send", "own-1", "typed-into-agent\r", "-o", "json"], None);
    validate("send-answer", &sent);
    assert_eq!((sent["kind"].as_str(), sent["session"].as_str()), (Some("agent"), Some(session)), "{sent}");
    assert_eq!((sent["keys"].as_u64(), sent["dropped"].as_u64()), (Some(2), Some(0)), "{sent}");
    let pane =
        || env.json(&["terminal", "capture", "own-1", "-o", "json"], None)["content"].as_str().unwrap().to_string();
    // The terminal echoes the line and `cat` prints it again: twice.
    assert!(
        wait_until(Duration::from_secs(5), || pane().matches("typed-into-agent").count() == 2),
        "the input did not reach the agent's pane: {}",
        pane()
    );

    let r = env.json(&["terminal", "resize", "own-1", "--cols", "100", "--rows", "30", "-o", "json"], None);
    validate("resize-answer", &r);
    assert_eq!((r["cols"].as_u64(), r["rows"].as_u64(), r["kind"].as_str()), (Some(100), Some(30), Some("agent")));
    assert_eq!(tmux(&env, socket, &["display-message", "-p", "-t", &target, "#{pane_width} #{pane_height}"]), "100 30");
    let c = env.json(&["terminal", "capture", "own-1", "-o", "json"], None);
    assert_eq!((c["cols"].as_u64(), c["rows"].as_u64()), (Some(100), Some(30)));
}

#[test]
fn resize_takes_the_orchestrators_bounds_and_out_of_them_is_exit_2_changing_nothing() {
    let env = Env::new();
    let (_, info) = agent_with_tmux(&env, "size-1", json!({}));
    let (session, socket) = (str_of(&info, "tmuxSession"), str_of(&info, "tmuxSocket"));
    let target = format!("={session}:");
    let size = || tmux(&env, socket, &["display-message", "-p", "-t", &target, "#{pane_width} #{pane_height}"]);
    assert_eq!(size(), "120 40");
    for (cols, rows) in [("9", "30"), ("501", "30"), ("100", "4"), ("100", "201"), ("0", "0"), ("500", "201")] {
        let err = fails(&env, &["terminal", "resize", "size-1", "--cols", cols, "--rows", rows], None, 2);
        assert!(err.contains("cols must be 10-500, rows must be 5-200"), "{err}");
        let out = env.run(&["terminal", "resize", "size-1", "--cols", cols, "--rows", rows, "-o", "json"], None);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        validate("error", &doc);
        assert_eq!((doc["error"]["kind"].as_str(), doc["error"]["exitCode"].as_u64()), (Some("invalid"), Some(2)));
    }
    // Not numbers at all: the command line is refused.
    for (cols, rows) in [("abc", "30"), ("-1", "30"), ("100", "65536"), ("1e2", "30")] {
        let out = env.run(&["terminal", "resize", "size-1", "--cols", cols, "--rows", rows], None);
        assert_eq!(out.status.code(), Some(2), "{cols}x{rows}");
    }
    assert_eq!(size(), "120 40", "a refused resize changed the size");
    for (cols, rows) in [(10, 5), (500, 200), (80, 24)] {
        let (c, r) = (cols.to_string(), rows.to_string());
        let a = env.json(&["terminal", "resize", "size-1", "--cols", &c, "--rows", &r, "-o", "json"], None);
        assert_eq!((a["cols"].as_u64(), a["rows"].as_u64()), (Some(cols), Some(rows)), "{a}");
        assert_eq!(size(), format!("{cols} {rows}"));
    }

    // A guest's terminal resizes the same way.
    let g = env.json(&["guest", "create", "size-1", "-o", "json"], None);
    let guest = str_of(&g, "guest");
    let a = env.json(&["terminal", "resize", guest, "--cols", "90", "--rows", "20", "-o", "json"], None);
    validate("resize-answer", &a);
    assert_eq!(
        (a["kind"].as_str(), a["guest"].as_str(), a["session"].as_str()),
        (Some("guest"), Some(guest), Some(guest))
    );
    assert_eq!((a["cols"].as_u64(), a["rows"].as_u64()), (Some(90), Some(20)));
    let c = env.json(&["terminal", "capture", guest, "-o", "json"], None);
    assert_eq!((c["cols"].as_u64(), c["rows"].as_u64(), c["kind"].as_str()), (Some(90), Some(20), Some("guest")));
    assert_eq!(c["agentAlive"], true, "a live guest's unit runs: {c}");
    fails(&env, &["terminal", "resize", guest, "--cols", "9", "--rows", "20"], None, 2);
    // A guest name no unit has: no such guest.
    for args in [
        &["terminal", "capture", "ar-guest-nobody-12345678"][..],
        &["terminal", "send", "ar-guest-nobody-12345678", "x"],
    ] {
        fails(&env, args, None, 3);
    }
}

#[test]
fn input_is_typed_as_the_orchestrator_types_it() {
    let env = Env::new();
    let record = env.home.join("typed.bin");
    agent_with_tmux(&env, "keys-1", json!({"FAKE_RUNNER_TMUX_RECORD": record}));
    let typed = || std::fs::read(&record).unwrap_or_default();
    let mut want: Vec<u8> = Vec::new();
    // Each send must add exactly `adds` to what the pane's program read.
    let mut send = |input: &str, adds: &[u8], keys: u64, dropped: u64| {
        let a = env.json(&["terminal", "send", "keys-1", "-", "-o", "json"], Some(input));
        assert_eq!((a["keys"].as_u64(), a["dropped"].as_u64()), (Some(keys), Some(dropped)), "{input:?}: {a}");
        want.extend_from_slice(adds);
        assert!(
            wait_until(Duration::from_secs(5), || typed() == want),
            "{input:?}: the pane read {:?}, not {:?}",
            String::from_utf8_lossy(&typed()),
            String::from_utf8_lossy(&want)
        );
    };
    // `\r` and `\n` are each Enter (a terminal's Enter is CR); CRLF is one Enter.
    send("a\rb\nc\r\nd", b"a\rb\rc\rd", 7, 0);
    send("\r\n\r\n", b"\r\r", 2, 0);
    send("\n\r", b"\r\r", 2, 0);
    // Other C0 controls are dropped, not refused; so are C1 controls.
    send("\x00\x01x\x07\x1b[Dy\x1f\x0b\x0c\u{9b}z", b"x\x1b[Dyz", 3, 7);
    send("\x02", b"", 0, 1);
    // Tab, C-c, DEL and BS (BSpace), a lone ESC: typed as those keys.
    send("\t\x03\x7f\x08\x1b", b"\t\x03\x7f\x7f\x1b", 5, 0);
    // Formats and separators are text.
    send("#(touch /tmp/no) #{pane_pid};", b"#(touch /tmp/no) #{pane_pid};", 1, 0);

    // At most 4096 UTF-16 code units; a character beyond the BMP counts 2.
    let fill = |n: usize| "x".repeat(n);
    send(&fill(4096), fill(4096).as_bytes(), 1, 0);
    let emoji = format!("{}😀", fill(4094));
    send(&emoji, emoji.as_bytes(), 1, 0);
    // The largest text there is (12 KiB of UTF-8), and the most keys there are, all arrive.
    let euros = "€".repeat(4096);
    send(&euros, euros.as_bytes(), 1, 0);
    send(&"a\r".repeat(2048), "a\r".repeat(2048).as_bytes(), 4096, 0);
    let refused = [fill(4097), format!("{}😀", fill(4095)), "é".repeat(4097), "\x01".repeat(4097)];
    for input in &refused {
        let err = fails(&env, &["terminal", "send", "keys-1", "-"], Some(input), 2);
        assert!(err.contains("exceeds 4096 characters"), "{err}");
    }
    let err = fails(&env, &["terminal", "send", "keys-1", &fill(4097)], None, 2);
    assert!(err.contains("exceeds 4096 characters"), "{err}");
    // More bytes than 4096 units can ever take: refused without reading them all.
    fails(&env, &["terminal", "send", "keys-1", "-"], Some(&fill(100_000)), 2);
    // Nothing of the refused inputs arrived: the next byte follows the last accepted input.
    send("|", b"|", 1, 0);
}

#[test]
fn running_and_agent_alive_are_told_apart() {
    let env = Env::new();
    let (agent, info) = agent_with_tmux(&env, "gone-1", json!({}));
    let socket = str_of(&info, "tmuxSocket");
    // The pane goes, the agent stays.
    tmux(&env, socket, &["kill-server"]);
    let c = env.json(&["terminal", "capture", "gone-1", "-o", "json"], None);
    validate("capture", &c);
    assert_eq!((c["running"].as_bool(), c["agentAlive"].as_bool()), (Some(false), Some(true)), "{c}");
    assert_eq!((c["content"].as_str(), c["cols"].is_null(), c["rows"].is_null()), (Some(""), true, true), "{c}");
    assert_eq!(c["consistent"], false);
    assert_eq!(env.json(&["show", "gone-1", "-o", "json"], None)["state"], "alive");
    for args in
        [&["terminal", "send", "gone-1", "x"][..], &["terminal", "resize", "gone-1", "--cols", "80", "--rows", "24"]]
    {
        let err = fails(&env, args, None, 2);
        assert!(err.contains("is not running"), "{err}");
        let mut json_args = args.to_vec();
        json_args.extend(["-o", "json"]);
        let doc: Value = serde_json::from_slice(&env.run(&json_args, None).stdout).unwrap();
        assert_eq!(doc["error"]["kind"], "not-running", "{doc}");
    }
    assert_eq!(env.json(&["show", str_of(&agent, "systemdUnit"), "-o", "json"], None)["state"], "alive");

    // The agent goes (a durable one stays known when stopped): neither is there.
    let req = env.request(json!({"spawnRequestId": "gone-2", "env": {"FAKE_RUNNER_TMUX": "1"}}));
    let durable = env.persist(&req)["agent"].clone();
    pane_up(&env, &durable, "gone-2");
    let capture = || env.json(&["terminal", "capture", "gone-2", "-o", "json"], None);
    assert_eq!((capture()["running"].as_bool(), capture()["agentAlive"].as_bool()), (Some(true), Some(true)));
    env.json(&["stop", "gone-2", "-o", "json"], None);
    let c = capture();
    assert_eq!((c["running"].as_bool(), c["agentAlive"].as_bool()), (Some(false), Some(false)), "{c}");
    assert_eq!(c["systemdUnit"], durable["systemdUnit"]);
}

#[test]
fn a_runner_cannot_point_a_terminal_at_another_session_or_socket() {
    let env = Env::new();
    let (agent, good) = agent_with_tmux(&env, "evil-1", json!({}));
    let info = env.runner_info(str_of(&agent, "sessionName"));
    let (session, socket) = (str_of(&good, "tmuxSession").to_string(), str_of(&good, "tmuxSocket").to_string());
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        std::fs::write(&info, v.to_string()).unwrap();
    };
    // Every verb refuses, exit 2, one line saying why.
    let refused = |want: &str| {
        for args in [
            &["terminal", "capture", "evil-1"][..],
            &["terminal", "send", "evil-1", "pwned\r"],
            &["terminal", "resize", "evil-1", "--cols", "80", "--rows", "24"],
        ] {
            let err = fails(&env, args, None, 2);
            assert!(err.contains(want), "{args:?}: {err} lacks {want}");
        }
    };
    let marker = env.mgr().root().join("formatted");
    let format = format!("#(touch {})", marker.display());
    for bad in ["x:1", "evil.0", "-t", "=x", "!", "%1", "@1", "{last}", "a*", &format, "a b", ""] {
        with(&|v| v["tmuxSession"] = json!(bad));
        refused("tmux session name");
    }
    assert!(!marker.exists(), "a format in a session name ran");
    with(&|v| v["tmuxSession"] = json!(7));
    refused("tmuxSession is not a string");
    with(&|v| v["agentId"] = json!("someone-else"));
    refused("does not name agent");
    with(&|v| {
        v.as_object_mut().unwrap().remove("tmuxSession");
    });
    refused("names no tmux session");
    let dir = socket_dir(&env);
    let outside = env.mgr().root().join("elsewhere");
    for bad in [
        "../x".to_string(),
        "a/b".into(),
        ".x".into(),
        "-L".into(),
        outside.join(&socket).display().to_string(),
        format!("{}/../{}/{socket}", dir.display(), dir.file_name().unwrap().to_string_lossy()),
    ] {
        with(&|v| v["tmuxSocket"] = json!(bad));
        refused("tmux socket");
    }
    // In our directory, but a link to the real socket, or a plain file: not followed, not a socket.
    std::os::unix::fs::symlink(dir.join(&socket), dir.join("agent-relay-link")).unwrap();
    std::fs::write(dir.join("agent-relay-file"), "").unwrap();
    for name in ["agent-relay-link", "agent-relay-file"] {
        with(&|v| v["tmuxSocket"] = json!(name));
        refused("is not a socket");
    }

    // A real tmux server of the user's, outside the agent's control group, with the very session
    // name: on a socket of its own, and on tmux's default socket (no tmuxSocket named).
    for foreign in ["agent-relay-foreign", "default"] {
        tmux(
            &env,
            foreign,
            &["new-session", "-d", "-s", &session, "--", "/bin/sh", "-c", "echo foreign-pane; exec cat"],
        );
        // Ended by pid however the test ends (its socket directory goes with the manager's).
        let _server = KillOnDrop(tmux(&env, foreign, &["display-message", "-p", "#{pid}"]).parse().unwrap());
        with(&|v| {
            if foreign == "default" {
                v.as_object_mut().unwrap().remove("tmuxSocket");
            } else {
                v["tmuxSocket"] = json!(foreign);
            }
        });
        refused("does not run in");
        let target = format!("={session}:");
        let content = tmux(&env, foreign, &["capture-pane", "-p", "-t", &target]);
        assert!(content.contains("foreign-pane") && !content.contains("pwned"), "{foreign}: {content}");
        tmux(&env, foreign, &["kill-server"]);
    }

    // Another agent's terminal, named by this agent's runner: not this agent's.
    let (_, other) = agent_with_tmux(&env, "victim-1", json!({}));
    with(&|v| {
        v["tmuxSession"] = other["tmuxSession"].clone();
        v["tmuxSocket"] = other["tmuxSocket"].clone();
    });
    refused("does not run in");
    let victim = env.json(&["terminal", "capture", "victim-1", "-o", "json"], None);
    assert!(!victim["content"].as_str().unwrap().contains("pwned"), "{victim}");

    // What the runner named is its terminal again: the checks above can pass.
    std::fs::write(&info, good.to_string()).unwrap();
    let c = env.json(&["terminal", "capture", "evil-1", "-o", "json"], None);
    assert_eq!((c["running"].as_bool(), c["session"].as_str()), (Some(true), Some(session.as_str())), "{c}");
}

#[test]
fn a_wedged_tmux_server_fails_within_the_bound() {
    let env = Env::new();
    let (_, info) = agent_with_tmux(&env, "wedged-1", json!({}));
    let socket = str_of(&info, "tmuxSocket");
    let pid: i32 = tmux(&env, socket, &["display-message", "-p", "#{pid}"]).parse().unwrap();
    struct Cont(i32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
        }
    }
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let cont = Cont(pid);
    for args in [&["terminal", "capture", "wedged-1"][..], &["terminal", "send", "wedged-1", "x"]] {
        let started = Instant::now();
        let err = fails(&env, args, None, 6);
        assert!(err.contains("did not answer within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(12), "{args:?} took {:?}", started.elapsed());
    }
    drop(cont);
    let c = env.json(&["terminal", "capture", "wedged-1", "-o", "json"], None);
    assert_eq!(c["running"], true, "{c}");
}
