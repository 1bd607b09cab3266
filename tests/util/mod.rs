//! Fixtures shared by the two integration-test binaries (tests/offline and tests/system), each
//! defined once: the binary under test, an example config and spawn plan, polling, worker
//! threads, readers of /proc. The private managers and the CLI run against them: [`manager`].

#![allow(dead_code)]

mod claims_support;
mod parallel;
#[allow(unused_imports)] // tests/offline runs nothing in parallel
pub use parallel::parallel;
mod manager;
pub mod schema;

// tests/offline starts no manager and uses none of it.
#[allow(unused_imports)]
pub use manager::*;
// Used by the claim tests of both binaries.
#[allow(unused_imports)]
pub use claims_support::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_relay_systemd::model::config::Config;
use agent_relay_systemd::model::plan::{plan, PlanInputs, SpawnPlan};
use agent_relay_systemd::model::request::InvalidRequest;
use agent_relay_systemd::SpawnRequest;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-relay-systemd"))
}

/// `target/<profile>/examples/fake-runner`, built by `cargo test` with the other examples.
pub fn fake_runner() -> PathBuf {
    let p = bin().parent().unwrap().join("examples").join("fake-runner");
    assert!(p.exists(), "{} is missing: run the tests with `cargo test` (it builds examples)", p.display());
    p
}

/// Runs the binary with `args` in the test's own environment (no manager, no config of ours),
/// bounded by [`cli_deadline`].
pub fn run_cli(args: &[&str]) -> Output {
    output_within(Command::new(bin()).args(args), None, cli_deadline())
}

/// How long one CLI run of the harness may take before it is killed and the test fails:
/// `AGENT_RELAY_TEST_CLI_DEADLINE_S` (seconds, fractions allowed), else 120 s.
pub fn cli_deadline() -> Duration {
    std::env::var("AGENT_RELAY_TEST_CLI_DEADLINE_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(120), Duration::from_secs_f64)
}

/// Runs `c` with `stdin` (then closed) and its stdout and stderr captured, in a process group of
/// its own. A run still going after `deadline` is a hang: its group and itself are SIGKILLed (by
/// pid) and the test panics naming what ran, with what it had printed. A hung CLI fails the test
/// instead of hanging the suite.
pub fn output_within(c: &mut Command, stdin: Option<&str>, deadline: Duration) -> Output {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let what = format!("{} {args:?} (the whole command: {c:?})", c.get_program().to_string_lossy());
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id() as i32;
    // Every pipe on a thread of its own: a CLI that never reads its stdin, or fills a pipe, must
    // not block the harness past the deadline.
    let mut pipe = child.stdin.take().unwrap();
    let text = stdin.unwrap_or_default().as_bytes().to_vec();
    // A CLI that refuses an oversized request early closes its stdin: not our failure.
    let writer = std::thread::spawn(move || drop(pipe.write_all(&text)));
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    // The waiter owns the child: the pid stays ours (unreaped) until it has ended.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let ended = rx.recv_timeout(deadline).is_ok();
    if !ended {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let status = waiter.join().unwrap().unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let _ = writer.join();
    // Readers end when every holder of the pipes has: a grandchild that left the group and
    // keeps them open must not hang us either.
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| b"<pipe still held open by another process>".to_vec())
    };
    let (stdout, stderr) = (collect(out), collect(err));
    if !ended {
        panic!(
            "the CLI did not end within its deadline of {deadline:?} and was killed (set \
             AGENT_RELAY_TEST_CLI_DEADLINE_S to change the default): {what}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    Output { status, stdout, stderr }
}

/// The token of [`example_config`]: it must never reach a unit's properties.
pub const EXAMPLE_TOKEN: &str = "tok-GOLDEN-SECRET";

/// A config as a user writes it, read by the config loader (the golden unit files in tests/data/ are planned
/// with it): a token and a config `env` value, both secrets.
pub fn example_config() -> Config {
    let none = |_: &str| None;
    let inputs =
        agent_relay_systemd::model::config::ConfigInputs { home: Path::new("/home/u"), os_hostname: "box", var: &none };
    let text = serde_json::json!({
        "id": "box", "hostname": "box", "token": EXAMPLE_TOKEN, "baseDir": "/home/u/projects",
        "env": {"FROM_CONFIG": "config-secret"},
    })
    .to_string();
    agent_relay_systemd::model::config::resolve(Some(&text), Path::new("/t/orchestrator.json"), &inputs)
        .expect("a valid config")
}

/// Plans `req` with [`example_config`] on a fixed example host (user `u`, files in the durable
/// state dir, fixed time and randomness), with the `ExecStopPost=` exit recorder if `record_exit`.
pub fn plan_example(req: &SpawnRequest, record_exit: bool) -> Result<SpawnPlan, InvalidRequest> {
    let cfg = example_config();
    let launcher = vec!["/usr/bin/claude-relay".to_string()];
    let inputs = PlanInputs {
        config: &cfg,
        home: Path::new("/home/u"),
        runtime_root: Path::new("/home/u/.local/state/agent-relay-systemd/durable"),
        caller_path: "/usr/bin:/bin",
        launcher: &launcher,
        cwd: Path::new("/home/u/projects/my app"),
        now_ms: 1_700_000_000_000,
        record_exit: record_exit.then_some((
            Path::new("/usr/bin/agent-relay-systemd"),
            Path::new("/home/u/.local/state/agent-relay-systemd/exits"),
        )),
        random_hex: "0123456789abcdef0123456789abcdef",
        inherited_env: &[],
    };
    plan(req, &inputs)
}

/// Polls `f` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The seed of a randomised test: `AGENT_RELAY_CHAOS_SEED`, else the clock. Print it.
pub fn chaos_seed() -> u64 {
    std::env::var("AGENT_RELAY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64)
}

/// `AGENT_RELAY_RELIABILITY_FULL` set: the load and chaos tests run at full size.
pub fn reliability_full() -> bool {
    std::env::var_os("AGENT_RELAY_RELIABILITY_FULL").is_some()
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('Z') | Some('X')),
        Err(_) => false,
    }
}

/// A process's argv, from `/proc/PID/cmdline`.
pub fn cmdline(pid: u64) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    raw.split(|b| *b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect()
}

/// A process's environment as `/proc/PID/environ` holds it (NUL-separated `K=V`).
pub fn environ(pid: u64) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Sets a file's or directory's times `secs_ago` into the past: a real `utimensat` through
/// touch(1), so that the reaper's grace period does not make a test wait.
pub fn backdate(p: &Path, secs_ago: u64) {
    let at = format!("@{}", now_ms() / 1000 - secs_ago);
    let ok = Command::new("touch").args(["-h", "-d", &at]).arg(p).status().unwrap();
    assert!(ok.success(), "touch {}", p.display());
}

/// The directories in `dir` of an agent's session (`<session>.<attempt>`: one per attempt).
pub fn session_dirs(dir: &Path, session: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let prefix = format!("{session}.");
    rd.flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix)).collect()
}
