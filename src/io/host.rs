//! The host: environment facts (home, runtime dir, PATH, bus address), and the filesystem work
//! of a spawn (resolving the runner and the cwd, writing 0600 files in 0700 directories).

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::model::config::Config;
use crate::model::record::{parse_proc_stat_state, ProcState};

/// Where the kernel's control groups are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What the host lacks for a request: its runner, its working directory, tmux.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("runnerCommand program {program:?} is not an executable file (nor found on PATH); fix runnerCommand in the config or AGENT_RELAY_RUNNER_COMMAND")]
    RunnerCommand { program: String },
    #[error("no runner found for provider {provider:?}: `{program}` is not on PATH; install it or set runnerCommand in the config (or AGENT_RELAY_RUNNER_COMMAND)")]
    NoRunner { provider: String, program: String },
    #[error("{0}")]
    Cwd(String),
    #[error("tmux is not installed (not on PATH); install tmux for guest terminals")]
    NoTmux,
    #[error("agent-relay-systemd is not on PATH; guest terminals start through it (`agent-relay-systemd guest-exec`)")]
    NoSelfExe,
    #[error("no guest name fits a tmux socket path in {}/: a socket path holds at most 107 bytes (sun_path is 108 with its NUL); set a shorter TMUX_TMPDIR", dir.display())]
    SocketPathTooLong { dir: PathBuf },
    #[error("the user manager does not read unit files from {} (its search path: {search}); run with the XDG_CONFIG_HOME the manager has", dir.display())]
    UnitDirNotRead { dir: PathBuf, search: String },
}

/// Environment facts, read once from the process (or given by a test).
#[derive(Debug, Clone)]
pub struct HostEnv {
    pub home: PathBuf,
    pub runtime_dir: Option<PathBuf>,
    pub path: String,
    pub session_bus: Option<String>,
    pub hostname: String,
    /// `$XDG_STATE_HOME` or `~/.local/state`: exit records live below it.
    pub state_home: PathBuf,
    /// `$XDG_CONFIG_HOME` or `~/.config`: durable agents' unit files live below it.
    pub config_home: PathBuf,
    /// Our own binary, for the units' `ExecStopPost=` exit recorder; `None` disables records.
    pub self_exe: Option<PathBuf>,
    /// `$TMUX_TMPDIR` or `/tmp`: where guest tmux sockets live (`<dir>/tmux-<uid>/<guest>`).
    pub tmux_tmpdir: PathBuf,
    /// This process's whole environment (entries that are not UTF-8 left out): what a runner
    /// inherits, as the seed's runners inherit `process.env` (the plan filters it).
    pub inherited_env: Vec<(String, String)>,
}

impl HostEnv {
    /// Reads `HOME`, `XDG_RUNTIME_DIR`, `PATH`, `DBUS_SESSION_BUS_ADDRESS`, the host name and the
    /// whole environment.
    pub fn from_process() -> HostEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
                .unwrap_or_else(|| PathBuf::from("/"))
        });
        let runtime_dir = var("XDG_RUNTIME_DIR").map(PathBuf::from).or_else(|| {
            let p = PathBuf::from(format!("/run/user/{}", nix::unistd::getuid()));
            p.is_dir().then_some(p)
        });
        HostEnv {
            state_home: var("XDG_STATE_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".local").join("state")),
            config_home: var("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".config")),
            self_exe: own_binary(&var("PATH").unwrap_or_default()),
            tmux_tmpdir: var("TMUX_TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp")),
            inherited_env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            home,
            runtime_dir,
            path: var("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            session_bus: var("DBUS_SESSION_BUS_ADDRESS"),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        }
    }

    /// The directory of this user's tmux sockets.
    pub fn tmux_socket_dir(&self) -> PathBuf {
        self.tmux_tmpdir.join(format!("tmux-{}", nix::unistd::getuid()))
    }

    /// `$XDG_CONFIG_HOME/systemd/user`: the user manager's own unit directory.
    pub fn user_unit_dir(&self) -> PathBuf {
        self.config_home.join("systemd").join("user")
    }

    /// `$XDG_STATE_HOME/agent-relay-systemd/durable`: durable agents' secret and payload files
    /// (the runtime dir is a tmpfs, gone at reboot).
    pub fn durable_root(&self) -> PathBuf {
        self.state_home.join("agent-relay-systemd").join("durable")
    }

    /// `$XDG_RUNTIME_DIR/agent-relay-systemd`, where secrets and payloads live (tmpfs, per user);
    /// `None` without a runtime dir (then there is no user manager to talk to either).
    pub fn runtime_root(&self) -> Option<PathBuf> {
        self.runtime_dir.as_ref().map(|d| d.join("agent-relay-systemd"))
    }
}

/// The `agent-relay-systemd` binary: this process when it is that binary, else the one on PATH
/// (a program linking the library has another name).
fn own_binary(path: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    if me.file_name().is_some_and(|n| n == "agent-relay-systemd") {
        return Some(me);
    }
    find_program("agent-relay-systemd", path)
}

/// The runner's argv prefix, every element absolute where it names a program: the config's
/// `runnerCommand`, else `<provider>-relay` found on PATH.
pub fn resolve_launcher(config: &Config, provider: &str, path: &str) -> Result<Vec<String>, HostError> {
    match &config.runner_command {
        Some(cmd) => {
            let exe =
                find_program(&cmd[0], path).ok_or_else(|| HostError::RunnerCommand { program: cmd[0].clone() })?;
            let mut out = vec![exe.display().to_string()];
            out.extend(cmd[1..].iter().cloned());
            Ok(out)
        }
        None => {
            let name = format!("{provider}-relay");
            let exe = find_program(&name, path)
                .ok_or_else(|| HostError::NoRunner { provider: provider.to_string(), program: name.clone() })?;
            Ok(vec![exe.display().to_string()])
        }
    }
}

/// A program on PATH (or an absolute path), if executable.
pub fn find_program(name: &str, path: &str) -> Option<PathBuf> {
    let is_exec =
        |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if name.contains('/') {
        let p = PathBuf::from(name);
        return (p.is_absolute() && is_exec(&p)).then(|| std::fs::canonicalize(&p).unwrap_or(p));
    }
    path.split(':').filter(|d| d.starts_with('/')).map(|d| Path::new(d).join(name)).find(|p| is_exec(p))
}

/// Lexical `..`/`.` resolution of an absolute path (no filesystem access).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// `target` equals `base` or lies below it (both already normalised).
pub fn is_within(target: &Path, base: &Path) -> bool {
    target.starts_with(base)
}

/// The cwd, checked as the seed does: inside baseDir after resolving `..` and symlinks, and
/// an existing directory. Returns the canonical path.
pub fn resolve_cwd(cwd: &str, config: &Config, home: &Path) -> Result<PathBuf, HostError> {
    let raw = crate::model::config::expand_home(cwd, home);
    if !raw.is_absolute() {
        return Err(HostError::Cwd(format!("cwd must be an absolute path: {cwd}")));
    }
    let base = normalize(&config.base_dir);
    let lexical = normalize(&raw);
    if !is_within(&lexical, &base) {
        return Err(HostError::Cwd(format!(
            "cwd must be within base directory: {cwd} (baseDir is {})",
            base.display()
        )));
    }
    let real = std::fs::canonicalize(&lexical).map_err(|_| HostError::Cwd(format!("cwd does not exist: {cwd}")))?;
    if !real.is_dir() {
        return Err(HostError::Cwd(format!("cwd is not a directory: {cwd}")));
    }
    let real_base = std::fs::canonicalize(&base).unwrap_or(base.clone());
    if !is_within(&real, &real_base) {
        return Err(HostError::Cwd(format!(
            "cwd must be within base directory: {cwd} resolves to {} outside {}",
            real.display(),
            real_base.display()
        )));
    }
    Ok(real)
}

/// What `/proc/<pid>/stat` says.
/// A `/proc` file's text, read whole (at most 64 KiB); `None` when it cannot be read.
pub fn read_proc(path: &str) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(path).ok()?, 64 * 1024), &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

pub fn proc_state(pid: u32) -> ProcState {
    // /proc files report size 0, so read_to_string would probe in 32-byte steps (six reads for
    // one line); a buffer the line fits in takes one read, and `list` does this once per agent.
    let read = || -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(1024);
        std::io::Read::read_to_end(&mut std::fs::File::open(format!("/proc/{pid}/stat"))?, &mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(stat) => parse_proc_stat_state(&String::from_utf8_lossy(&stat)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ProcState::Gone,
        Err(_) => ProcState::Unreadable,
    }
}

/// Whether process `pid` runs and is in the control group of `unit` (`/proc/PID/cgroup`), so
/// that a pid reused by another process is never taken for the unit's own.
pub fn runs_in_unit(pid: u32, unit: &str) -> bool {
    if !matches!(proc_state(pid), ProcState::Running) {
        return false;
    }
    let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
    let own = format!("/{unit}");
    cgroups.lines().any(|l| l.ends_with(&own) || l.contains(&format!("{own}/")))
}

/// Gives the memory the allocator holds free back to the system (glibc's `malloc_trim`): a
/// long-running process (`watch`) whose allocations churn would otherwise keep its high-water
/// mark. Elsewhere, nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size and touches only the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Milliseconds since the epoch (the clock; 0 before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
