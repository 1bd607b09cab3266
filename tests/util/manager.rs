//! A private `systemd --user` per test (DESIGN.md §6), a private HOME with a config that
//! launches our fake runner, and helpers to run the CLI and `systemctl --user` against it.

use std::cell::Cell;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use agent_relay_systemd::io::sandbox::PrivateManager;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{bin, fake_runner, now_ms};

pub const TOKEN: &str = "tok-TEST-SECRET-9f3e";

/// Every test holds this shared while its managers run ([`share`]); [`serial`] holds it alone.
static MANAGERS: RwLock<()> = RwLock::new(());

thread_local! {
    /// This thread holds [`MANAGERS`] alone: its own Envs need no share.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

/// Held by a test that must run alone: see [`serial`].
pub struct Serial(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

impl Drop for Serial {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
    }
}

/// For the tests that measure latency or hang a manager: call it first, keep the guard to the
/// end. While it is held no other test's manager runs (each `cargo test` binary used to run
/// alone, so such a test shared the machine with none).
pub fn serial() -> Serial {
    let guard = MANAGERS.write().unwrap_or_else(|e| e.into_inner());
    ALONE.with(|a| a.set(true));
    Serial(guard)
}

/// Held by a test while its managers run, unless its thread holds [`serial`]'s guard: an
/// [`Env`] holds one; a test starting managers by other means takes one with [`share`].
pub struct Share(#[allow(dead_code)] Option<RwLockReadGuard<'static, ()>>);

pub fn share() -> Share {
    Share((!ALONE.with(Cell::get)).then(|| MANAGERS.read().unwrap_or_else(|e| e.into_inner())))
}

pub struct Env {
    pub mgr: Option<PrivateManager>,
    pub home: PathBuf,
    pub projects: PathBuf,
    pub config: PathBuf,
    /// Released after the manager is stopped (fields drop after `Drop::drop`).
    _share: Share,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config(|_| {})
    }

    /// Starts a private manager and writes a config; `edit` may change the config JSON.
    pub fn with_config(edit: impl FnOnce(&mut Value)) -> Env {
        Env::with_manager_env(edit, |_| Vec::new())
    }

    /// [`Env::with_config`] with variables added to the manager's own environment, `extra`
    /// given the private root (the home is its `home/`, the config `home/orchestrator.json`).
    pub fn with_manager_env(edit: impl FnOnce(&mut Value), extra: impl FnOnce(&Path) -> Vec<(String, String)>) -> Env {
        let share = share();
        let mgr = PrivateManager::start_with_env(extra).unwrap_or_else(|e| {
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
            // The load of a machine running this suite is the suite's own: the load gate would
            // only slow it down. The admission tests set their own gates.
            "spawnMaxLoadPerCpu": 1000,
        });
        edit(&mut cfg);
        let config = home.join("orchestrator.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        Env { mgr: Some(mgr), home, projects, config, _share: share }
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

    /// Runs the CLI, bounded by [`super::cli_deadline`] (a hang fails the test, naming the run).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(&[], args, stdin)
    }

    /// [`Env::run`] with a deadline of its own instead of [`super::cli_deadline`].
    pub fn run_within(&self, deadline: Duration, args: &[&str], stdin: Option<&str>) -> Output {
        super::output_within(self.cli().args(args), stdin, deadline)
    }

    /// Runs the CLI with extra environment variables (e.g. another `XDG_RUNTIME_DIR`).
    pub fn run_with(&self, vars: &[(&str, &std::ffi::OsStr)], args: &[&str], stdin: Option<&str>) -> Output {
        super::output_within(self.cli().envs(vars.iter().copied()).args(args), stdin, super::cli_deadline())
    }

    /// Makes the config's runner a file that cannot be executed (a missing interpreter).
    pub fn use_broken_runner(&self) {
        let broken = self.home.join("broken-runner");
        std::fs::write(&broken, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        self.use_runner(&[broken.to_str().unwrap()]);
    }

    /// Makes the config's `runnerCommand` `argv` (the request's provider arguments follow it).
    pub fn use_runner(&self, argv: &[&str]) {
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&self.config).unwrap()).unwrap();
        cfg["runnerCommand"] = serde_json::json!(argv);
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

    /// `spawn --persist -o json`: a durable agent.
    pub fn persist(&self, request: &Value) -> Value {
        self.json(&["spawn", "--persist", "-o", "json"], Some(&request.to_string()))
    }

    /// A spawn request for the `app` project with the fields of `extra` added.
    pub fn request(&self, extra: Value) -> Value {
        let mut req = serde_json::json!({"provider": "claude", "cwd": self.projects.join("app")});
        if let (Value::Object(r), Value::Object(e)) = (&mut req, extra) {
            r.extend(e);
        }
        req
    }

    /// `systemctl --user …` against this manager, as an operator would run it: its stdout.
    /// Panics, with systemctl's stderr, unless it succeeds: a call that failed must not read as
    /// an empty answer ("nothing is there"), nor a `daemon-reload` attempt as a reload. (`show`
    /// and `list-units` succeed for units that are not loaded; a call that must fail:
    /// [`Env::systemctl_fails`].)
    pub fn systemctl(&self, args: &[&str]) -> String {
        let out = self.systemctl_output(args);
        assert!(
            out.status.success(),
            "systemctl --user {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl --user …` that must fail (a unit file that is gone, a unit not loaded):
    /// panics if it succeeds; returns its output for the caller to check why it failed.
    pub fn systemctl_fails(&self, args: &[&str]) -> Output {
        let out = self.systemctl_output(args);
        assert!(
            !out.status.success(),
            "systemctl --user {} succeeded, expected a failure: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
        out
    }

    fn systemctl_output(&self, args: &[&str]) -> Output {
        let mut c = Command::new("systemctl");
        self.apply_env(&mut c);
        c.arg("--user").args(args).output().expect("run systemctl")
    }

    /// `systemctl --user show UNIT -p NAME --value`.
    pub fn prop(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", unit, "-p", name, "--value"]).trim_end().to_string()
    }

    /// The env file a loaded unit names (`EnvironmentFiles=/path (ignore_errors=no)`).
    pub fn env_file(&self, unit: &str) -> Option<PathBuf> {
        let v = self.prop(unit, "EnvironmentFiles");
        v.split_whitespace().next().filter(|p| p.starts_with('/')).map(PathBuf::from)
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

    /// Stops the manager (`SIGSTOP`) until the returned guard is dropped.
    pub fn hang(&self) -> Hang {
        let pid = Pid::from_raw(self.mgr().pid() as i32);
        kill(pid, Signal::SIGSTOP).unwrap();
        Hang(pid)
    }

    /// Transient agents' secret and payload files, a directory per attempt.
    pub fn agents_dir(&self) -> PathBuf {
        self.runtime_dir().join("agent-relay-systemd").join("agents")
    }

    /// Durable agents' secret and payload files, a directory per attempt.
    pub fn durable_agents_dir(&self) -> PathBuf {
        self.mgr().root().join("state/agent-relay-systemd/durable/agents")
    }

    /// Where the user's own unit files go (durable agents' among them).
    pub fn unit_dir(&self) -> PathBuf {
        self.mgr().root().join("config/systemd/user")
    }

    /// The exit records, a directory per session.
    pub fn exits_dir(&self) -> PathBuf {
        self.mgr().root().join("state/agent-relay-systemd/exits")
    }

    /// The runners' info files.
    pub fn runners_dir(&self) -> PathBuf {
        self.home.join(".agent-relay/runners")
    }

    /// The info file the runner of `session` writes once it is up.
    /// Every path below HOME and our runtime directory, sorted: what a refused request must
    /// leave as it found it.
    pub fn our_tree(&self) -> Vec<String> {
        fn walk(p: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    out.push(e.path().display().to_string());
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(&e.path(), out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.home, &mut out);
        walk(&self.runtime_dir().join("agent-relay-systemd"), &mut out);
        out.sort();
        out
    }

    pub fn runner_info(&self, session: &str) -> PathBuf {
        self.runners_dir().join(format!("{session}.json"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The fake runner exits on anything unexpected (a bad knob, a runner-info directory we
        // did not make): whatever else the test checked, that is a failure. Read before the
        // manager's directory (and the home in it) goes.
        let fatal = super::fake_runner_fatal_lines(&self.home);
        if let Some(m) = self.mgr.take() {
            m.stop();
        }
        if !fatal.is_empty() && !std::thread::panicking() {
            panic!("the fake runner gave up:\n{}", fatal.join("\n"));
        }
    }
}

/// A manager stopped by [`Env::hang`]; continued (`SIGCONT`) when dropped, however the test ends.
pub struct Hang(Pid);

impl Drop for Hang {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Processes in the agents' slice, by the unit (child cgroup) they run in (processes in the
/// slice's own group under the slice's name), read from the `cgroup.procs` of the slice's
/// control group and of every group below it, in each hierarchy systemd keeps it in.
///
/// Empty means the group was read and holds no process, or the slice is gone: systemd names no
/// control group for it and no directory of it exists (the kernel removes a cgroup only once it
/// holds no process, so a slice that is gone holds none). Anything else panics: systemctl
/// failing, a control group systemd names that has no directory, a group that cannot be read.
pub fn slice_processes(env: &Env) -> std::collections::BTreeMap<String, Vec<u32>> {
    let slice = "agent_relay.slice";
    let cg = env.prop(slice, "ControlGroup");
    if cg.is_empty() {
        // Gone: no directory of it either, where the manager would make it.
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", env.mgr().pid())).expect("the manager's cgroup");
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).expect("the manager's unified cgroup line");
        let root = own.strip_suffix("/init.scope").unwrap_or_else(|| panic!("the manager is in {own}, not init.scope"));
        assert!(cgroup_dirs(root).iter().all(|d| d.is_dir()), "the manager's cgroup {root} has no directory");
        for dir in cgroup_dirs(&format!("{root}/{slice}")) {
            assert!(!dir.exists(), "systemd names no control group for {slice}, yet {} exists", dir.display());
        }
        return Default::default();
    }
    let mut out = match cgroup_tree_processes(&cg) {
        Some(procs) => procs,
        // Removed between the two looks: gone only if systemd now says so too.
        None => {
            assert_eq!(env.prop(slice, "ControlGroup"), "", "{slice}'s control group {cg} has no directory");
            return Default::default();
        }
    };
    if let Some(own) = out.remove("") {
        out.insert(slice.to_string(), own);
    }
    out
}

/// The directories of the control group `cg` (as systemd's `ControlGroup` names it): in the
/// unified hierarchy, and on a hybrid host also in the `name=systemd` one.
pub fn cgroup_dirs(cg: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let roots: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.to_path_buf()]
    } else {
        ["unified", "systemd"].iter().map(|h| root.join(h)).filter(|h| h.join("cgroup.procs").exists()).collect()
    };
    assert!(!roots.is_empty(), "no cgroup hierarchy with cgroup.procs under {}", root.display());
    roots.into_iter().map(|r| r.join(cg.trim_start_matches('/'))).collect()
}

/// The processes in control group `cg` and every group below it, by the first path component
/// below `cg` (`""`: `cg` itself), read from `cgroup.procs` in every hierarchy of
/// [`cgroup_dirs`]. `None` when `cg` has no directory (in none of them, or it went while read);
/// panics when it is missing from some, or cannot be read. A group below `cg` that vanishes while it is read held no process.
pub fn cgroup_tree_processes(cg: &str) -> Option<std::collections::BTreeMap<String, Vec<u32>>> {
    use std::io::ErrorKind::NotFound;
    let mut out: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    let tops = cgroup_dirs(cg);
    let found: Vec<bool> = tops.iter().map(|t| t.exists()).collect();
    if !found.contains(&true) {
        return None;
    }
    assert!(!found.contains(&false), "{cg} is in some hierarchies, not all: {tops:?}");
    for top in tops {
        let mut stack = vec![(top.clone(), String::new())];
        while let Some((dir, unit)) = stack.pop() {
            let is_top = dir == top;
            let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
                Ok(text) => text,
                // Removed meanwhile: a group below `cg` (its unit stopped) held no process; `cg`
                // itself is gone.
                Err(e) if e.kind() == NotFound && !dir.exists() => match is_top {
                    true => return None,
                    false => continue,
                },
                Err(e) => panic!("cannot read {}: {e}", dir.join("cgroup.procs").display()),
            };
            for pid in procs.lines().map(|l| l.trim().parse::<u32>().unwrap_or_else(|e| panic!("{l:?}: {e}"))) {
                let pids = out.entry(unit.clone()).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == NotFound && !dir.exists() => match is_top {
                    true => return None,
                    false => continue,
                },
                Err(e) => panic!("cannot list {}: {e}", dir.display()),
            };
            for e in entries {
                let e = e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let below = if is_top { e.file_name().to_string_lossy().into_owned() } else { unit.clone() };
                    stack.push((e.path(), below));
                }
            }
        }
    }
    Some(out)
}

/// A running `watch -o json`, its lines stamped with the time they were read.
pub struct Watch {
    pub child: Child,
    pub lines: mpsc::Receiver<(u64, Value)>,
}

impl Watch {
    pub fn start(env: &Env) -> Watch {
        Watch::start_with_preamble(env).0
    }

    /// Starts `watch` and returns it with every event up to and including `ready`.
    pub fn start_with_preamble(env: &Env) -> (Watch, Vec<Value>) {
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
        let preamble = w.until(Duration::from_secs(10), |v| v["type"] == "ready").expect("watch became ready");
        (w, preamble.into_iter().map(|(_, v)| v).collect())
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
