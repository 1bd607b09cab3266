//! A fake agent runner for tests and the demo: stands in for `<provider>-relay`. It reports what
//! it received, writes its runner-info file, serves the control URL on 127.0.0.1, and exits on
//! request (code, signal) or on SIGTERM (at once, or `FAKE_RUNNER_TERM_EXIT_AFTER_MS` later). Behaviour
//! is chosen with `FAKE_RUNNER_*` variables.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{self, SigHandler, Signal};

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: i32) {
    TERM.store(true, Ordering::SeqCst);
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let pid = std::process::id();
    say(&format!("FAKE-RUNNER START pid={pid} argv={}", serde_json::to_string(&argv).unwrap()));
    // Names only: values may be secrets, and a log is no place for them (tests read the values
    // from /proc/PID/environ instead).
    let mut keys: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    keys.sort();
    say(&format!("FAKE-RUNNER ENV-KEYS {}", keys.join(",")));
    let provider = argv.get(1).cloned().unwrap_or_default();
    let cwd = argv.iter().position(|a| a == "--cwd").and_then(|i| argv.get(i + 1)).cloned().unwrap_or_default();

    let ignore = var("FAKE_RUNNER_IGNORE_SIGTERM").is_some();
    let handler = if ignore { SigHandler::SigIgn } else { SigHandler::Handler(on_term) };
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal::signal(s, handler) }.expect("install signal handler");
    }

    if let Some(text) = var("FAKE_RUNNER_SAY") {
        // `\e` and `\a` stand for ESC and BEL: control characters cannot travel in env files.
        say(&text.replace("\\e", "\x1b").replace("\\a", "\x07"));
    }
    if let Some(path) = var("AGENT_RELAY_PROMPT_FILE") {
        let n = std::fs::read(&path).map(|b| b.len()).unwrap_or(0);
        say(&format!("FAKE-RUNNER PROMPT-BYTES {n}"));
    }
    if let Some(info) = var("AGENT_RELAY_RUNNER_INFO_FILE") {
        serve_control(&info, &provider, &cwd, pid);
    }
    if var("FAKE_RUNNER_CHILD").is_some() {
        let script = if ignore { "trap '' TERM INT HUP; sleep 3600 & wait" } else { "exec sleep 3600" };
        let child = std::process::Command::new("/bin/sh").args(["-c", script]).spawn().expect("spawn child");
        say(&format!("FAKE-RUNNER CHILD pid={}", child.id()));
        std::mem::forget(child);
    }

    let exit_after = var("FAKE_RUNNER_EXIT_AFTER_MS").and_then(|v| v.parse::<u64>().ok());
    let kill_self = var("FAKE_RUNNER_KILL_SELF");
    let deadline = exit_after.map(|ms| std::time::Instant::now() + Duration::from_millis(ms));
    // A slow shutdown: exit 0 this long after SIGTERM instead of at once.
    let term_linger = var("FAKE_RUNNER_TERM_EXIT_AFTER_MS").and_then(|v| v.parse::<u64>().ok());
    let mut term_at: Option<std::time::Instant> = None;
    loop {
        if TERM.load(Ordering::SeqCst) {
            let at = *term_at.get_or_insert_with(|| {
                say("FAKE-RUNNER TERM");
                std::time::Instant::now()
            });
            if at.elapsed() >= Duration::from_millis(term_linger.unwrap_or(0)) {
                say(&format!("FAKE-RUNNER EXIT 0 at={}", now_ms()));
                std::process::exit(0);
            }
        }
        let due = deadline.map(|d| std::time::Instant::now() >= d).unwrap_or(kill_self.is_some());
        if due {
            if let Some(sig) = &kill_self {
                let sig = sig
                    .parse::<i32>()
                    .ok()
                    .and_then(|n| Signal::try_from(n).ok())
                    .or_else(|| format!("SIG{}", sig.trim_start_matches("SIG")).parse::<Signal>().ok());
                let sig = sig.unwrap_or(Signal::SIGKILL);
                unsafe { signal::signal(sig, SigHandler::SigDfl) }.ok();
                let _ = signal::raise(sig);
            }
            let code = var("FAKE_RUNNER_EXIT_CODE").and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            say(&format!("FAKE-RUNNER EXIT {code} at={}", now_ms()));
            std::process::exit(code);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Binds 127.0.0.1:0, writes the runner-info file atomically, answers HTTP in a thread.
fn serve_control(info_path: &str, provider: &str, cwd: &str, pid: u32) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    let mut info = serde_json::json!({
        "agentId": var("AGENT_RELAY_AGENT_ID"), "runnerId": format!("fake-{pid}"), "provider": provider,
        "controlUrl": format!("http://127.0.0.1:{port}"), "pid": pid,
        "startedAt": now_ms() as u64, "registeredAt": now_ms() as u64,
    });
    // The tmux session a real runner names (tmux renders `.` and `:` of the requested name as `_`).
    if let Some(tmux) = var("FAKE_RUNNER_TMUX_SESSION") {
        info["tmuxSession"] = serde_json::Value::String(tmux);
    }
    let path = std::path::Path::new(info_path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension(format!("tmp.{pid}"));
    if std::fs::write(&tmp, info.to_string()).and_then(|_| std::fs::rename(&tmp, path)).is_err() {
        say("FAKE-RUNNER INFO-WRITE-FAILED");
    }
    // A spec larger than a spawn request's env value may be (32 KiB) comes from a file.
    let from_file = var("FAKE_RUNNER_ATTACH_SPEC_FILE").and_then(|p| std::fs::read_to_string(p).ok());
    let spec = from_file.or_else(|| var("FAKE_RUNNER_ATTACH_SPEC")).unwrap_or_else(|| {
        serde_json::json!({
            "mode": "guest", "provider": provider, "cwd": cwd,
            "command": ["/bin/sh", "-c", "echo guest-ready; exec sleep 3600"], "env": {"FAKE_GUEST": "1"},
        })
        .to_string()
    });
    let delay = var("FAKE_RUNNER_ATTACH_DELAY_MS").and_then(|v| v.parse::<u64>().ok());
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
