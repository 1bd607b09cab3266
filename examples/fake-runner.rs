//! A fake agent runner for tests and the demo: stands in for `<provider>-relay`. It reports what
//! it received, writes its runner-info file, serves the control URL on 127.0.0.1, and exits on
//! request (code, signal) or on SIGTERM (at once, or `FAKE_RUNNER_TERM_EXIT_AFTER_MS` later).
//! Behaviour is chosen with `FAKE_RUNNER_*` variables.
//!
//! It is strict so that it cannot hide a regression of the supervisor or a typo in a test: on
//! anything unexpected (an unknown or unparsable `FAKE_RUNNER_*` knob, a runner-info directory the
//! supervisor did not create 0700, a payload file it cannot read, a file it cannot write) it
//! prints `FAKE-RUNNER FATAL: <why>` on stderr (the agent's log) and exits with [`FATAL`].
//!
//! Knobs (an empty value is a mistake too):
//! - `FAKE_RUNNER_EXIT_AFTER_MS=N`: exit after N ms, with `FAKE_RUNNER_EXIT_CODE` (0-255, default
//!   0) or by the signal `FAKE_RUNNER_KILL_SELF` (a name like `SEGV` or a number);
//! - `FAKE_RUNNER_KILL_SELF=SIG` alone: die by SIG at once;
//! - `FAKE_RUNNER_IGNORE_SIGTERM=1`: ignore SIGTERM, SIGINT and SIGHUP (and so does the child);
//! - `FAKE_RUNNER_CHILD=1`: start a child process (`sleep`) and log its pid;
//! - `FAKE_RUNNER_CHILD_READ=PATH`: start a child that reads PATH (`cat`) and log its pid;
//! - `FAKE_RUNNER_SAY=TEXT`: print TEXT (`\e` and `\a` stand for ESC and BEL);
//! - `FAKE_RUNNER_TMUX_SESSION=NAME`: the tmux session named in the runner-info file;
//! - `FAKE_RUNNER_TMUX=1`: start a tmux server of its own on the socket `agent-relay-fake-<pid>`
//!   (`$TMUX_TMPDIR/tmux-<uid>/`, as a real runner's) with one 120×40 session, named
//!   `FAKE_RUNNER_TMUX_SESSION` or else `$AGENT_RELAY_TMUX_SESSION`, whose pane prints
//!   `pane-ready` and echoes what is typed (`cat`); name both in the runner info (`tmuxSession`,
//!   `tmuxSocket`); end that server when the runner exits;
//! - `FAKE_RUNNER_TMUX_RECORD=PATH` (with `FAKE_RUNNER_TMUX`): the pane's terminal is raw with no
//!   echo and every byte typed into it is appended to PATH, exactly as it arrived;
//! - `FAKE_RUNNER_TERM_EXIT_AFTER_MS=N`: on SIGTERM, exit 0 N ms later instead of at once;
//! - `FAKE_RUNNER_ATTACH_SPEC=TEXT`: the body of `/terminal/attach-spec` (any text);
//! - `FAKE_RUNNER_ATTACH_SPEC_FILE=PATH`: that body from a file (larger than an env value may be);
//! - `FAKE_RUNNER_ATTACH_DELAY_MS=N`: answer `/terminal/attach-spec` after N ms;
//! - `FAKE_RUNNER_INFO_DELAY_MS=N`: write the runner-info file N ms after the start.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{self, SigHandler, Signal};

/// The exit status of a fake runner that met something unexpected (with a `FAKE-RUNNER FATAL:`
/// line on stderr): not a status the tests ask it for by accident, since the line says why.
const FATAL: i32 = 86;

/// Every knob; any other `FAKE_RUNNER_*` variable is a mistake.
const KNOBS: [&str; 15] = [
    "FAKE_RUNNER_EXIT_AFTER_MS",
    "FAKE_RUNNER_EXIT_CODE",
    "FAKE_RUNNER_KILL_SELF",
    "FAKE_RUNNER_IGNORE_SIGTERM",
    "FAKE_RUNNER_CHILD",
    "FAKE_RUNNER_CHILD_READ",
    "FAKE_RUNNER_SAY",
    "FAKE_RUNNER_TMUX_SESSION",
    "FAKE_RUNNER_TMUX",
    "FAKE_RUNNER_TMUX_RECORD",
    "FAKE_RUNNER_ATTACH_SPEC",
    "FAKE_RUNNER_ATTACH_DELAY_MS",
    "FAKE_RUNNER_ATTACH_SPEC_FILE",
    "FAKE_RUNNER_TERM_EXIT_AFTER_MS",
    "FAKE_RUNNER_INFO_DELAY_MS",
];

static TERM: AtomicBool = AtomicBool::new(false);

/// The socket of the tmux server this runner started (`FAKE_RUNNER_TMUX`), ended at exit.
static OWN_TMUX: OnceLock<String> = OnceLock::new();

extern "C" fn on_term(_: i32) {
    TERM.store(true, Ordering::SeqCst);
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Ends the runner loudly: one line on stderr, exit status [`FATAL`].
fn fatal(why: &str) -> ! {
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "FAKE-RUNNER FATAL: {why}");
        let _ = err.flush();
    }
    exit(FATAL);
}

/// Exits with `code`, ending the tmux server this runner started first.
fn exit(code: i32) -> ! {
    if let Some(socket) = OWN_TMUX.get() {
        let _ = tmux(socket).arg("kill-server").status();
    }
    std::process::exit(code);
}

/// `tmux -L <socket>`, not inside any tmux of the caller's, with no terminal.
fn tmux(socket: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("tmux");
    cmd.args(["-L", socket]).env_remove("TMUX").stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null());
    cmd
}

/// `FAKE_RUNNER_TMUX`: starts the runner's own tmux server and session; `(session, socket)`.
fn start_own_tmux(pid: u32) -> Option<(String, String)> {
    let record = knob("FAKE_RUNNER_TMUX_RECORD");
    if !switch("FAKE_RUNNER_TMUX") {
        if record.is_some() {
            fatal("FAKE_RUNNER_TMUX_RECORD without FAKE_RUNNER_TMUX: there is no pane to record");
        }
        return None;
    }
    let session = knob("FAKE_RUNNER_TMUX_SESSION")
        .or_else(|| var("AGENT_RELAY_TMUX_SESSION"))
        .unwrap_or_else(|| fatal("FAKE_RUNNER_TMUX: no FAKE_RUNNER_TMUX_SESSION and no AGENT_RELAY_TMUX_SESSION"));
    let socket = format!("agent-relay-fake-{pid}");
    let script = match record {
        Some(_) => "stty raw -echo; echo pane-ready; exec cat >>\"$1\"",
        None => "echo pane-ready; exec cat",
    };
    let mut cmd = tmux(&socket);
    cmd.args(["new-session", "-d", "-s", &session, "-x", "120", "-y", "40", "--", "/bin/sh", "-c", script, "sh"]);
    cmd.args(record.iter());
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => fatal(&format!("tmux new-session: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => fatal(&format!("running tmux: {e}")),
    }
    let _ = OWN_TMUX.set(socket.clone());
    say(&format!("FAKE-RUNNER TMUX session={session} socket={socket}"));
    Some((session, socket))
}

/// A variable the supervisor sets (unset or empty: `None`).
fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// A knob: unset is `None`; set but empty or not UTF-8 is fatal.
fn knob(k: &str) -> Option<String> {
    match std::env::var(k) {
        Ok(v) if v.is_empty() => fatal(&format!("{k} is set but empty")),
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => fatal(&format!("{k} is not UTF-8")),
    }
}

/// A numeric knob; unparsable is fatal.
fn number<T: std::str::FromStr>(k: &str) -> Option<T> {
    knob(k).map(|v| v.parse::<T>().unwrap_or_else(|_| fatal(&format!("{k}={v:?} is not a valid number"))))
}

/// A switch: only `1` turns it on.
fn switch(k: &str) -> bool {
    match knob(k).as_deref() {
        None => false,
        Some("1") => true,
        Some(v) => fatal(&format!("{k}={v:?}: the only value is 1")),
    }
}

/// `SEGV`, `SIGSEGV` or `11`; anything else is fatal.
fn signal_knob(k: &str) -> Option<Signal> {
    knob(k).map(|v| {
        let by_number = v.parse::<i32>().ok().map(|n| Signal::try_from(n).ok());
        let sig = match by_number {
            Some(sig) => sig,
            None => format!("SIG{}", v.trim_start_matches("SIG")).parse::<Signal>().ok(),
        };
        sig.unwrap_or_else(|| fatal(&format!("{k}={v:?} is not a signal")))
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        fatal("cannot write to stdout (the agent's log)");
    }
}

fn main() {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("FAKE_RUNNER_") && !KNOBS.contains(&k.as_ref()) {
            fatal(&format!("unknown knob {k} (known: {})", KNOBS.join(", ")));
        }
    }
    let exit_after = number::<u64>("FAKE_RUNNER_EXIT_AFTER_MS");
    let exit_code = number::<u8>("FAKE_RUNNER_EXIT_CODE");
    let kill_self = signal_knob("FAKE_RUNNER_KILL_SELF");
    let ignore = switch("FAKE_RUNNER_IGNORE_SIGTERM");
    let child = switch("FAKE_RUNNER_CHILD");
    let child_read = knob("FAKE_RUNNER_CHILD_READ");
    let text = knob("FAKE_RUNNER_SAY");
    let delay = number::<u64>("FAKE_RUNNER_ATTACH_DELAY_MS");
    if exit_code.is_some() && exit_after.is_none() {
        fatal("FAKE_RUNNER_EXIT_CODE without FAKE_RUNNER_EXIT_AFTER_MS: the runner would never exit");
    }
    if exit_code.is_some() && kill_self.is_some() {
        fatal("FAKE_RUNNER_EXIT_CODE and FAKE_RUNNER_KILL_SELF: exit by a code or by a signal, not both");
    }
    if child && child_read.is_some() {
        fatal("FAKE_RUNNER_CHILD and FAKE_RUNNER_CHILD_READ: one child at a time");
    }

    let argv: Vec<String> = std::env::args().collect();
    let pid = std::process::id();
    let argv_json = serde_json::to_string(&argv).unwrap_or_else(|e| fatal(&format!("argv as JSON: {e}")));
    say(&format!("FAKE-RUNNER START pid={pid} argv={argv_json}"));
    // Names only: values may be secrets, and a log is no place for them (tests read the values
    // from /proc/PID/environ instead).
    let mut keys: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
    keys.sort();
    say(&format!("FAKE-RUNNER ENV-KEYS {}", keys.join(",")));
    let provider = argv.get(1).cloned().unwrap_or_else(|| fatal("no provider argument"));
    let cwd = argv
        .iter()
        .position(|a| a == "--cwd")
        .and_then(|i| argv.get(i + 1))
        .cloned()
        .unwrap_or_else(|| fatal("no --cwd argument"));

    let handler = if ignore { SigHandler::SigIgn } else { SigHandler::Handler(on_term) };
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { signal::signal(s, handler) } {
            fatal(&format!("installing the {s} handler: {e}"));
        }
    }

    if let Some(text) = text {
        // `\e` and `\a` stand for ESC and BEL: control characters cannot travel in env files.
        say(&text.replace("\\e", "\x1b").replace("\\a", "\x07"));
    }
    if let Some(path) = var("AGENT_RELAY_PROMPT_FILE") {
        let n =
            std::fs::read(&path).map(|b| b.len()).unwrap_or_else(|e| fatal(&format!("reading the prompt {path}: {e}")));
        say(&format!("FAKE-RUNNER PROMPT-BYTES {n}"));
    }
    let info = var("AGENT_RELAY_RUNNER_INFO_FILE").unwrap_or_else(|| fatal("AGENT_RELAY_RUNNER_INFO_FILE is not set"));
    serve_control(&info, &provider, &cwd, pid, delay);
    if child || child_read.is_some() {
        let mut cmd = std::process::Command::new("/bin/sh");
        match &child_read {
            Some(path) => cmd.args(["-c", "exec cat -- \"$1\"", "sh", path]),
            None if ignore => cmd.args(["-c", "trap '' TERM INT HUP; sleep 3600 & wait"]),
            None => cmd.args(["-c", "exec sleep 3600"]),
        };
        let c = cmd.spawn().unwrap_or_else(|e| fatal(&format!("starting the child: {e}")));
        say(&format!("FAKE-RUNNER CHILD pid={}", c.id()));
        std::mem::forget(c);
    }

    let deadline = exit_after.map(|ms| std::time::Instant::now() + Duration::from_millis(ms));
    // A slow shutdown: exit 0 this long after SIGTERM instead of at once.
    let term_linger = number::<u64>("FAKE_RUNNER_TERM_EXIT_AFTER_MS");
    let mut term_at: Option<std::time::Instant> = None;
    loop {
        if TERM.load(Ordering::SeqCst) {
            let at = *term_at.get_or_insert_with(|| {
                say("FAKE-RUNNER TERM");
                std::time::Instant::now()
            });
            if at.elapsed() >= Duration::from_millis(term_linger.unwrap_or(0)) {
                say(&format!("FAKE-RUNNER EXIT 0 at={}", now_ms()));
                exit(0);
            }
        }
        let due = match deadline {
            Some(d) => std::time::Instant::now() >= d,
            None => kill_self.is_some(),
        };
        if due {
            if let Some(sig) = kill_self {
                say(&format!("FAKE-RUNNER KILL-SELF {sig} at={}", now_ms()));
                // SAFETY: restoring the default disposition.
                let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
                let _ = signal::raise(sig);
                std::thread::sleep(Duration::from_millis(500));
                fatal(&format!("FAKE_RUNNER_KILL_SELF={sig} did not end the runner"));
            }
            let code = exit_code.unwrap_or(0);
            say(&format!("FAKE-RUNNER EXIT {code} at={}", now_ms()));
            exit(code.into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Binds 127.0.0.1:0, writes the runner-info file atomically into the directory the supervisor
/// made (0700, ours, not a symlink), answers HTTP in a thread.
fn serve_control(info_path: &str, provider: &str, cwd: &str, pid: u32, delay: Option<u64>) {
    if let Some(ms) = number::<u64>("FAKE_RUNNER_INFO_DELAY_MS") {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fatal(&format!("binding 127.0.0.1: {e}")));
    let port = listener.local_addr().unwrap_or_else(|e| fatal(&format!("local address: {e}"))).port();
    let agent_id = var("AGENT_RELAY_AGENT_ID").unwrap_or_else(|| fatal("AGENT_RELAY_AGENT_ID is not set"));
    let mut info = serde_json::json!({
        "agentId": agent_id, "runnerId": format!("fake-{pid}"), "provider": provider,
        "controlUrl": format!("http://127.0.0.1:{port}"), "pid": pid,
        "startedAt": now_ms() as u64, "registeredAt": now_ms() as u64,
    });
    // The tmux session a real runner names (tmux renders `.` and `:` of the requested name as `_`).
    if let Some((session, socket)) = start_own_tmux(pid) {
        info["tmuxSession"] = serde_json::Value::String(session);
        info["tmuxSocket"] = serde_json::Value::String(socket);
    } else if let Some(tmux) = knob("FAKE_RUNNER_TMUX_SESSION") {
        info["tmuxSession"] = serde_json::Value::String(tmux);
    }
    let path = std::path::Path::new(info_path);
    // The supervisor creates the directory before the start; a real runner would not make up
    // for a missing one, and neither do we.
    let dir = path.parent().unwrap_or_else(|| fatal(&format!("runner-info path {info_path} has no directory")));
    match std::fs::symlink_metadata(dir) {
        Err(e) => fatal(&format!("runner-info directory {}: {e} (the supervisor must create it 0700)", dir.display())),
        Ok(m) if !m.is_dir() => fatal(&format!("runner-info directory {} is not a directory", dir.display())),
        Ok(m) if m.permissions().mode() & 0o7777 != 0o700 => fatal(&format!(
            "runner-info directory {} has mode {:o}, not 0700",
            dir.display(),
            m.permissions().mode() & 0o7777
        )),
        Ok(m) if m.uid() != nix::unistd::geteuid().as_raw() => {
            fatal(&format!("runner-info directory {} is owned by uid {}", dir.display(), m.uid()))
        }
        Ok(_) => {}
    }
    let tmp = path.with_extension(format!("tmp.{pid}"));
    if let Err(e) = std::fs::write(&tmp, info.to_string()).and_then(|_| std::fs::rename(&tmp, path)) {
        fatal(&format!("writing the runner info {info_path}: {e}"));
    }
    // A spec larger than a spawn request's env value may be (32 KiB) comes from a file.
    let from_file = knob("FAKE_RUNNER_ATTACH_SPEC_FILE")
        .map(|p| std::fs::read_to_string(&p).unwrap_or_else(|e| fatal(&format!("reading {p}: {e}"))));
    let spec = from_file.or_else(|| knob("FAKE_RUNNER_ATTACH_SPEC")).unwrap_or_else(|| {
        serde_json::json!({
            "mode": "guest", "provider": provider, "cwd": cwd,
            "command": ["/bin/sh", "-c", "echo guest-ready; exec sleep 3600"], "env": {"FAKE_GUEST": "1"},
        })
        .to_string()
    });
    let spec = std::sync::Arc::new(spec);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let spec = spec.clone();
            // One thread per connection: a delayed attach-spec must not hold up /health.
            std::thread::spawn(move || {
                let target = read_target(&mut stream);
                let (status, body) = match target.as_str() {
                    "/terminal/attach-spec" => {
                        if let Some(ms) = delay {
                            std::thread::sleep(Duration::from_millis(ms));
                        }
                        ("200 OK", spec.to_string())
                    }
                    "/health" => ("200 OK", "{\"ok\":true}".to_string()),
                    _ => ("404 Not Found", "{\"error\":\"not found\"}".to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

/// Reads the request head (up to 16 KiB) and returns the target of a GET, or "" for anything else.
fn read_target(stream: &mut std::net::TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(target)) => target.to_string(),
        _ => String::new(),
    }
}
