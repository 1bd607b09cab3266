//! A private, throwaway `systemd --user` (DESIGN.md §6) for the tests and the `sandbox` verb.
//! Owns starting that manager in its own cgroup with private XDG directories, and tearing all of
//! it down again. It must not talk D-Bus, and never changes this process's own environment.

use std::ffi::CString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

static COUNTER: AtomicU32 = AtomicU32::new(0);
use crate::io::host::CGROUP_ROOT;

/// Why a private manager could not be started or a sandboxed command not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "cannot create cgroup {path}: {source}; a private user manager needs its own cgroup: run as root, \
         or on a systemd host use your own manager (systemctl --user) instead of the sandbox"
    )]
    CgroupPermission { path: PathBuf, source: std::io::Error },
    #[error("no systemd binary at /lib/systemd/systemd or /usr/lib/systemd/systemd: install systemd")]
    NoSystemd,
    #[error("the private systemd --user exited ({status}) before it was ready; manager.log: {log}")]
    ManagerExited { status: ExitStatus, log: String },
    #[error("the private systemd --user was not ready within {after:?} (no bus socket or private socket; is dbus-user-session installed?); manager.log: {log}")]
    NotReady { after: Duration, log: String },
    #[error("empty command: pass the command to run after --")]
    EmptyCommand,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io { what, path, source }
}

/// A running private manager; stopped by [`PrivateManager::stop`], or on drop as a fallback.
pub struct PrivateManager {
    child: Option<Child>,
    pid: u32,
    dir: Option<tempfile::TempDir>,
    cgroups: Vec<PathBuf>,
    root: PathBuf,
    runtime: PathBuf,
    exe: PathBuf,
    /// Variables the manager gets on top of its usual environment ([`PrivateManager::start_with_env`]).
    extra_env: Vec<(String, String)>,
}

impl PrivateManager {
    /// Starts a manager and waits up to 10 s for it to be ready.
    pub fn start() -> Result<PrivateManager, SandboxError> {
        PrivateManager::start_with_timeout(Duration::from_secs(10))
    }

    /// Starts a manager whose environment also holds `extra(root)` (given the private root
    /// directory, before the manager starts), on every start of it: `SYSTEMD_GENERATOR_PATH`, say.
    pub fn start_with_env(extra: impl FnOnce(&Path) -> Vec<(String, String)>) -> Result<PrivateManager, SandboxError> {
        PrivateManager::start_inner(Duration::from_secs(10), extra)
    }

    pub fn start_with_timeout(wait: Duration) -> Result<PrivateManager, SandboxError> {
        PrivateManager::start_inner(wait, |_| Vec::new())
    }

    fn start_inner(
        wait: Duration,
        extra: impl FnOnce(&Path) -> Vec<(String, String)>,
    ) -> Result<PrivateManager, SandboxError> {
        let exe = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(SandboxError::NoSystemd)?;
        if std::fs::read_to_string("/proc/1/comm").unwrap_or_default().trim() != "systemd" {
            // sd_booted(3): without this marker the manager believes it runs on a non-systemd host.
            let marker = Path::new("/run/systemd/system");
            std::fs::create_dir_all(marker).map_err(io("creating", marker))?;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-relay-sandbox-")
            .tempdir()
            .map_err(io("creating a temp dir in", &std::env::temp_dir()))?;
        let root = dir.path().to_path_buf();
        // `tmux/` is the sandbox's TMUX_TMPDIR: guest tmux sockets stay inside it too.
        for sub in ["run", "config", "data", "state", "tmux"] {
            let p = root.join(sub);
            std::fs::create_dir(&p).map_err(io("creating", &p))?;
        }
        let runtime = root.join("run");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod", &runtime))?;
        // From here on, an early return drops `mgr`, which removes what was made so far.
        let mut mgr = PrivateManager {
            child: None,
            pid: 0,
            dir: Some(dir),
            cgroups: Vec::new(),
            root: root.clone(),
            runtime,
            exe,
            extra_env: Vec::new(),
        };
        mgr.extra_env = extra(&root);

        let name = format!(
            "agent-relay-sandbox-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        for cg in cgroup_dirs(Path::new(CGROUP_ROOT), &name) {
            std::fs::create_dir(&cg).map_err(|source| match source.raw_os_error() {
                Some(nix::libc::EACCES | nix::libc::EPERM | nix::libc::EROFS) => {
                    SandboxError::CgroupPermission { path: cg.clone(), source }
                }
                _ => SandboxError::Io { what: "creating cgroup", path: cg.clone(), source },
            })?;
            mgr.cgroups.push(cg);
        }
        mgr.launch(wait)?;
        Ok(mgr)
    }

    /// Stops the manager (it stops its units) and starts a new one on the same directories, as
    /// a reboot would: `run/` (XDG_RUNTIME_DIR, a tmpfs on a real host) starts empty, `config/`,
    /// `data/`, `state/` and the home inside the root are kept. Waits up to `wait` for it.
    pub fn restart(&mut self, wait: Duration) -> Result<(), SandboxError> {
        self.stop_manager();
        for cg in &self.cgroups {
            kill_cgroup_procs(cg);
        }
        let entries = std::fs::read_dir(&self.runtime).map_err(io("reading", &self.runtime))?;
        for e in entries.flatten() {
            let p = e.path();
            let gone = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            gone.map_err(io("emptying", &p))?;
        }
        self.launch(wait)
    }

    /// Starts the manager process in our cgroups and waits until its sockets exist.
    fn launch(&mut self, wait: Duration) -> Result<(), SandboxError> {
        let root = self.root.clone();
        let exe = self.exe.clone();
        // Built before fork: pre_exec may not allocate.
        let procs: Vec<CString> = self
            .cgroups
            .iter()
            .filter_map(|c| CString::new(c.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok())
            .collect();

        let log_path = root.join("manager.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating", &log_path))?;
        let log2 = log.try_clone().map_err(io("dup", &log_path))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("--user").stdin(Stdio::null()).stdout(log).stderr(log2);
        // A clean environment, as a login manager has: the caller's tokens and API keys must not
        // be inherited by every unit.
        cmd.env_clear();
        for k in ["PATH", "HOME", "USER", "LOGNAME", "LANG", "SHELL"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(self.xdg_env());
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let no_mask = SigSet::empty();
        // SAFETY: only async-signal-safe calls (sigprocmask, setsid, open, write, close) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // std passes the signal mask on, and run_sandboxed blocks SIGTERM while starting us.
                no_mask.thread_set_mask()?;
                // Own session: a Ctrl-C for the foreground group must not reach the manager (a user
                // manager treats SIGINT like SIGTERM and exits) before we tear it down in order.
                nix::unistd::setsid()?;
                for p in &procs {
                    // Writing "0" moves the writing process (cgroups(7)).
                    let fd =
                        nix::fcntl::open(p.as_c_str(), nix::fcntl::OFlag::O_WRONLY, nix::sys::stat::Mode::empty())?;
                    nix::unistd::write(&fd, b"0")?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io("starting", &exe))?;
        self.pid = child.id();
        self.child = Some(child);

        let ready = [self.runtime.join("bus"), self.runtime.join("systemd").join("private")];
        let end = Instant::now() + wait;
        loop {
            if ready.iter().all(|p| p.exists()) {
                return Ok(());
            }
            let log = || log_tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 8);
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(SandboxError::ManagerExited { status, log: log() });
            }
            if Instant::now() >= end {
                return Err(SandboxError::NotReady { after: wait, log: log() });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn xdg_env(&self) -> Vec<(String, String)> {
        let p = |s: &str| self.root.join(s).display().to_string();
        vec![
            ("XDG_RUNTIME_DIR".into(), p("run")),
            ("XDG_CONFIG_HOME".into(), p("config")),
            ("XDG_DATA_HOME".into(), p("data")),
            ("XDG_STATE_HOME".into(), p("state")),
            ("TMUX_TMPDIR".into(), p("tmux")),
        ]
    }

    /// The manager's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn runtime_dir(&self) -> &Path {
        &self.runtime
    }

    /// The private temp dir holding `run/`, `config/`, `data/`, `state/`, `tmux/`, `manager.log`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.runtime.join("bus").display())
    }

    /// What a client needs: XDG_RUNTIME_DIR, XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_STATE_HOME,
    /// TMUX_TMPDIR and DBUS_SESSION_BUS_ADDRESS.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.xdg_env();
        env.push(("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address()));
        env
    }

    /// SIGTERM the manager (it stops its units), then make sure nothing of it is left.
    pub fn stop(mut self) {
        self.teardown();
    }

    /// Idempotent and panic-free: every step takes its state out of `self` first.
    fn teardown(&mut self) {
        self.stop_manager();
        for cg in std::mem::take(&mut self.cgroups) {
            kill_and_remove_cgroup(&cg);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }

    /// SIGTERM the manager and wait (10 s, then SIGKILL) until it has exited.
    fn stop_manager(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT); // a stopped manager (tests SIGSTOP it) cannot exit
            let _ = kill(pid, Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateManager {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The cgroup directories for `name`: one on a pure cgroup2 host, both the unified and the
/// `name=systemd` hierarchy on a hybrid one.
fn cgroup_dirs(root: &Path, name: &str) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(name)];
    }
    ["unified", "systemd"].iter().map(|h| root.join(h)).filter(|h| h.is_dir()).map(|h| h.join(name)).collect()
}

/// SIGKILLs whatever is left in a cgroup tree, then removes it, deepest first.
fn kill_and_remove_cgroup(cg: &Path) {
    let dirs = kill_cgroup_procs(cg);
    remove_cgroup_dirs(dirs);
}

/// SIGKILLs every process in a cgroup tree (for up to 1 s); returns the tree's directories.
fn kill_cgroup_procs(cg: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    collect_dirs(cg, &mut dirs);
    for _ in 0..50 {
        let mut any = false;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    dirs
}

fn remove_cgroup_dirs(mut dirs: Vec<PathBuf>) {
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        for _ in 0..50 {
            // rmdir may fail with EBUSY while killed tasks finish exiting.
            if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// The last `n` lines of `text` on one line, for a one-line error.
fn log_tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs `cmd` with a private manager's environment added, waits for it, tears the manager down,
/// and returns the command's exit code (128 + signal when killed by one). SIGINT, SIGTERM and
/// SIGHUP are blocked in the calling thread meanwhile, forwarded to the command, and teardown
/// still happens; a signal during startup skips the command. Blocking works for a process
/// whose only thread calls this (the CLI); other threads would still get the default action.
pub fn run_sandboxed(cmd: &[String]) -> Result<i32, SandboxError> {
    let (prog, args) = cmd.split_first().ok_or(SandboxError::EmptyCommand)?;
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK).unwrap_or_else(|_| SigSet::empty());
    let result = run_blocked(prog, args, &set, old);
    let _ = old.thread_set_mask();
    result
}

fn run_blocked(prog: &str, args: &[String], set: &SigSet, old: SigSet) -> Result<i32, SandboxError> {
    let mgr = PrivateManager::start()?;
    if let Some(sig) = take_signal(set, Duration::ZERO) {
        mgr.stop();
        return Ok(128 + sig);
    }
    let mut cmd = Command::new(prog);
    cmd.args(args).envs(mgr.env());
    // SAFETY: pthread_sigmask is async-signal-safe. std passes our mask on to the child as is
    // (observed: SigBlk of the command), so give the command the caller's mask back.
    unsafe {
        cmd.pre_exec(move || old.thread_set_mask().map_err(Into::into));
    }
    let mut child = cmd.spawn().map_err(io("starting", Path::new(prog)))?;
    let pid = Pid::from_raw(child.id() as i32);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                return Err(SandboxError::Io { what: "waiting for", path: prog.into(), source: e });
            }
        }
        if let Some(sig) = take_signal(set, Duration::from_millis(20)) {
            let _ = Signal::try_from(sig).map(|s| kill(pid, s));
        }
    };
    mgr.stop();
    Ok(exit_code(status))
}

/// Takes one pending signal of `set` (which must be blocked), waiting at most `wait`.
fn take_signal(set: &SigSet, wait: Duration) -> Option<i32> {
    let ts = nix::libc::timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ };
    // SAFETY: valid sigset and timespec pointers; a null siginfo is allowed by sigtimedwait(2).
    let sig = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_dirs_follow_the_layout() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "").unwrap();
        assert_eq!(cgroup_dirs(v2.path(), "x"), vec![v2.path().join("x")]);
        let hybrid = tempfile::tempdir().unwrap();
        for h in ["unified", "systemd"] {
            std::fs::create_dir(hybrid.path().join(h)).unwrap();
        }
        assert_eq!(
            cgroup_dirs(hybrid.path(), "x"),
            vec![hybrid.path().join("unified/x"), hybrid.path().join("systemd/x")]
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        assert_eq!(log_tail("a\nb\n\nc\nd\n", 2), "c | d");
        assert_eq!(log_tail("only\n", 5), "only");
        assert_eq!(log_tail("", 3), "");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(Signal::SIGKILL as i32)), 137);
    }

    #[test]
    fn cgroup_removal_is_deepest_first_and_tolerates_missing_dirs() {
        let t = tempfile::tempdir().unwrap();
        let cg = t.path().join("cg");
        std::fs::create_dir_all(cg.join("app.slice/a.service")).unwrap();
        std::fs::create_dir_all(cg.join("init.scope")).unwrap();
        kill_and_remove_cgroup(&cg);
        assert!(!cg.exists());
        kill_and_remove_cgroup(&cg);
    }
}
