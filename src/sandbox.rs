//! A private, throwaway `systemd --user` (DESIGN.md §6), for the `sandbox` verb and the tests.
//! Owns starting the manager in its own cgroup with private XDG directories, and tearing it all
//! down. It must not talk D-Bus and never changes this process's own environment.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why a private manager could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "{what} {path}: {source} (a private user manager needs root, or on a systemd host use the user's own manager)"
    )]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("no systemd binary found at /lib/systemd/systemd or /usr/lib/systemd/systemd; install systemd")]
    NoSystemd,
    #[error("the private systemd --user did not become ready within {after:?}: {log}")]
    NotReady { after: Duration, log: String },
    #[error("empty command: pass the command to run after --")]
    EmptyCommand,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io { what, path, source }
}

/// A running private manager; stopped by [`PrivateManager::stop`] or on drop.
pub struct PrivateManager {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    cgroups: Vec<PathBuf>,
    root: PathBuf,
}

impl PrivateManager {
    pub fn start() -> Result<PrivateManager, SandboxError> {
        PrivateManager::start_with_timeout(Duration::from_secs(10))
    }

    pub fn start_with_timeout(wait: Duration) -> Result<PrivateManager, SandboxError> {
        let exe = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(SandboxError::NoSystemd)?;
        let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        if pid1.trim() != "systemd" {
            // Marks the host "booted with systemd" for the manager (sd_booted(3)).
            let marker = Path::new("/run/systemd/system");
            std::fs::create_dir_all(marker).map_err(io("creating", marker))?;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-relay-sandbox-")
            .tempdir()
            .map_err(io("creating", Path::new("/tmp")))?;
        let root = dir.path().to_path_buf();
        for sub in ["run", "config", "data", "state", "tmux"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &root))?;

        let name = format!(
            "agent-relay-sandbox-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let cgroups: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            vec![PathBuf::from("/sys/fs/cgroup").join(&name)]
        } else {
            ["unified", "systemd"]
                .iter()
                .map(|h| PathBuf::from("/sys/fs/cgroup").join(h))
                .filter(|h| h.exists())
                .map(|h| h.join(&name))
                .collect()
        };
        let mut mgr = PrivateManager { child: None, dir: Some(dir), cgroups: Vec::new(), root: root.clone() };
        for cg in &cgroups {
            std::fs::create_dir(cg).map_err(io("creating cgroup", cg))?;
            mgr.cgroups.push(cg.clone());
        }
        let procs: Vec<CString> = cgroups
            .iter()
            .map(|c| {
                CString::new(c.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("no NUL in paths")
            })
            .collect();
        let log_path = root.join("manager.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating", &log_path))?;
        let log2 = log.try_clone().map_err(io("dup", &log_path))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("--user").stdin(Stdio::null()).stdout(log).stderr(log2);
        // A clean environment, as a login manager would have: the caller's (tokens, API keys)
        // must not leak into every unit.
        cmd.env_clear();
        for k in ["PATH", "HOME", "USER", "LOGNAME", "LANG", "SHELL"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in mgr.xdg_env() {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    let fd =
                        nix::fcntl::open(p.as_c_str(), nix::fcntl::OFlag::O_WRONLY, nix::sys::stat::Mode::empty())?;
                    nix::unistd::write(&fd, b"0")?;
                }
                Ok(())
            });
        }
        mgr.child = Some(cmd.spawn().map_err(io("starting", &exe))?);

        let ready = [root.join("run").join("bus"), root.join("run").join("systemd").join("private")];
        let end = Instant::now() + wait;
        loop {
            if ready.iter().all(|p| p.exists()) {
                return Ok(mgr);
            }
            let exited = mgr.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= end {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let log = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
                return Err(SandboxError::NotReady { after: wait, log });
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
            // Guest tmux sockets stay inside the sandbox too.
            ("TMUX_TMPDIR".into(), p("tmux")),
        ]
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.runtime_dir().join("bus").display())
    }

    /// What a client needs: the XDG directories and `DBUS_SESSION_BUS_ADDRESS`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.xdg_env();
        env.push(("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address()));
        env
    }

    /// SIGTERM the manager (it stops its units), then make sure nothing of it is left.
    pub fn stop(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for cg in std::mem::take(&mut self.cgroups) {
            kill_and_remove_cgroup(&cg);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for PrivateManager {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILLs whatever is left in a cgroup tree, then removes it, deepest first.
fn kill_and_remove_cgroup(cg: &Path) {
    let mut dirs = Vec::new();
    collect_dirs(cg, &mut dirs);
    for _ in 0..50 {
        let mut any = false;
        for d in &dirs {
            for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Ok(p) = pid.trim().parse::<i32>() {
                    any = true;
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        for _ in 0..50 {
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
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Runs `cmd` with a private manager's environment, tears the manager down, and returns the
/// command's exit code (128 + signal when it was killed). SIGINT/SIGTERM are passed on to it.
pub fn run_sandboxed(cmd: &[String]) -> Result<i32, SandboxError> {
    let (prog, args) = cmd.split_first().ok_or(SandboxError::EmptyCommand)?;
    let mgr = PrivateManager::start()?;
    let forwarded = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
    let mut set = nix::sys::signal::SigSet::empty();
    for s in forwarded {
        set.add(s);
    }
    // Block them here; the child gets a clean mask (std resets it), we forward from a thread.
    let _ = set.thread_block();
    let mut child = Command::new(prog).args(args).envs(mgr.env()).spawn().map_err(io("starting", Path::new(prog)))?;
    let child_pid = Pid::from_raw(child.id() as i32);
    std::thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            let _ = kill(child_pid, sig);
        }
    });
    let status = child.wait().map_err(io("waiting for", Path::new(prog)))?;
    mgr.stop();
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
