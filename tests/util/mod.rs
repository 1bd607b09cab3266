//! Test harness: a private `systemd --user` per test (DESIGN.md §6), a private HOME with a
//! config that launches our fake runner, and helpers to run the CLI and `systemctl --user`.

#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_relay_systemd::io::sandbox::PrivateManager;
use serde_json::Value;

pub const TOKEN: &str = "tok-TEST-SECRET-9f3e";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-relay-systemd"))
}

/// `target/<profile>/examples/fake-runner`, built by `cargo test` with the other examples.
pub fn fake_runner() -> PathBuf {
    let p = bin().parent().unwrap().join("examples").join("fake-runner");
    assert!(p.exists(), "{} is missing: run the tests with `cargo test` (it builds examples)", p.display());
    p
}

pub struct Env {
    pub mgr: Option<PrivateManager>,
    pub home: PathBuf,
    pub projects: PathBuf,
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config(|_| {})
    }

    /// Starts a private manager and writes a config; `edit` may change the config JSON.
    pub fn with_config(edit: impl FnOnce(&mut Value)) -> Env {
        let mgr = PrivateManager::start().unwrap_or_else(|e| {
            panic!(
                "cannot start a private systemd --user: {e}\n\
                 These tests need a real systemd user manager: run them as root on a host with \
                 systemd 252+ and dbus-user-session installed (apt-get install systemd dbus-user-session)."
            )
        });
        let home = mgr.root().join("home");
        let projects = home.join("projects");
        std::fs::create_dir_all(projects.join("app")).unwrap();
        let mut cfg = serde_json::json!({
            "hostname": "testhost",
            "relayUrl": "http://127.0.0.1:1",
            "token": TOKEN,
            "baseDir": projects,
            "runnerCommand": [fake_runner()],
        });
        edit(&mut cfg);
        let config = home.join("orchestrator.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        Env { mgr: Some(mgr), home, projects, config }
    }

    pub fn mgr(&self) -> &PrivateManager {
        self.mgr.as_ref().unwrap()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.mgr().runtime_dir().to_path_buf()
    }

    fn apply_env(&self, c: &mut Command) {
        c.env_clear();
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
        c.env("HOME", &self.home);
        for (k, v) in self.mgr().env() {
            c.env(k, v);
        }
    }

    /// The CLI with this env and config.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        self.apply_env(&mut c);
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(&[], args, stdin)
    }

    /// Runs the CLI with extra environment variables (e.g. another `XDG_RUNTIME_DIR`).
    pub fn run_with(&self, vars: &[(&str, &std::ffi::OsStr)], args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cli();
        c.envs(vars.iter().copied()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("run the CLI");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // A CLI that refuses an oversized request early closes its stdin: not our failure.
            let _ = pipe.write_all(text.as_bytes());
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// Makes the config's runner a file that cannot be executed (a missing interpreter).
    pub fn use_broken_runner(&self) {
        let broken = self.home.join("broken-runner");
        std::fs::write(&broken, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&self.config).unwrap()).unwrap();
        cfg["runnerCommand"] = serde_json::json!([broken]);
        std::fs::write(&self.config, cfg.to_string()).unwrap();
    }

    /// Runs and expects success; returns parsed stdout JSON.
    pub fn json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn spawn(&self, request: &Value) -> Value {
        self.json(&["spawn", "-o", "json"], Some(&request.to_string()))
    }

    pub fn request(&self, extra: Value) -> Value {
        let mut req = serde_json::json!({"provider": "claude", "cwd": self.projects.join("app")});
        if let (Value::Object(r), Value::Object(e)) = (&mut req, extra) {
            r.extend(e);
        }
        req
    }

    /// `systemctl --user …` against this manager, as an operator would run it.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut c = Command::new("systemctl");
        self.apply_env(&mut c);
        let out = c.arg("--user").args(args).output().expect("systemctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl --user show UNIT -p NAME --value`.
    pub fn prop(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", unit, "-p", name, "--value"]).trim_end().to_string()
    }

    /// Names of loaded agent units.
    pub fn agent_units(&self) -> Vec<String> {
        self.systemctl(&["list-units", "--all", "--plain", "--no-legend", "agent-relay-managed-*"])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Stops the private manager and starts it again on the same directories, `run/` emptied
    /// as a reboot empties it ([`PrivateManager::restart`]).
    pub fn restart_manager(&mut self) {
        self.mgr.as_mut().unwrap().restart(Duration::from_secs(10)).expect("restart the private manager");
    }

    pub fn agents_dir(&self) -> PathBuf {
        self.runtime_dir().join("agent-relay-systemd").join("agents")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(m) = self.mgr.take() {
            m.stop();
        }
    }
}

/// Processes in the agents' slice, by the unit (cgroup) they run in.
pub fn slice_processes(env: &Env) -> std::collections::BTreeMap<String, Vec<u32>> {
    let slice = env.prop("agent_relay.slice", "ControlGroup");
    let mut out: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
    if slice.is_empty() {
        return out;
    }
    let inside = format!("{slice}/");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) else { continue };
        // The unified hierarchy's line (`0::/…`) exists on both the hybrid and the cgroup2 layout.
        let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::")) else { continue };
        if let Some(rest) = path.strip_prefix(&inside) {
            let unit = rest.split('/').next().unwrap_or_default().to_string();
            out.entry(unit).or_default().push(pid);
        }
    }
    out
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

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A running `watch -o json`, its lines stamped with the time they were read.
pub struct Watch {
    pub child: Child,
    pub lines: mpsc::Receiver<(u64, Value)>,
}

impl Watch {
    pub fn start(env: &Env) -> Watch {
        let mut child = env.cli().args(["watch", "-o", "json"]).stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line).expect("every watch line is JSON");
                if tx.send((now_ms(), v)).is_err() {
                    return;
                }
            }
        });
        let w = Watch { child, lines: rx };
        w.until(Duration::from_secs(10), |v| v["type"] == "ready").expect("watch became ready");
        w
    }

    /// Events until `pred` matches (that one included), or `None` on timeout.
    pub fn until(&self, limit: Duration, mut pred: impl FnMut(&Value) -> bool) -> Option<Vec<(u64, Value)>> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((t, v)) => {
                    let done = pred(&v);
                    seen.push((t, v));
                    if done {
                        return Some(seen);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    pub fn drain(&self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok((_, v)) = self.lines.recv_timeout(quiet) {
            out.push(v);
        }
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
