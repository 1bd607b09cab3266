//! The host: environment facts (home, runtime dir, PATH, bus address), and the filesystem work
//! of a spawn (resolving the runner and the cwd, writing 0600 files in 0700 directories).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::Error;
use crate::model::config::Config;
use crate::model::plan::SpawnPlan;
use crate::model::record::{parse_proc_stat_state, ProcState};

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
}

impl HostEnv {
    /// Reads `HOME`, `XDG_RUNTIME_DIR`, `PATH`, `DBUS_SESSION_BUS_ADDRESS` and the host name.
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

    /// `$XDG_RUNTIME_DIR/agent-relay-systemd`, where secrets and payloads live (tmpfs, per user).
    pub fn runtime_root(&self) -> Result<PathBuf, Error> {
        self.runtime_dir
            .as_ref()
            .map(|d| d.join("agent-relay-systemd"))
            .ok_or_else(|| Error::ManagerUnreachable { detail: "XDG_RUNTIME_DIR is not set".into() })
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

/// Takes an exclusive `flock` on `path` (created 0600), retrying for up to `wait`; `what` names
/// the holder a time-out blames.
pub async fn lock_file(
    path: &Path,
    wait: std::time::Duration,
    what: &str,
) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("opening", path))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let f = file.try_clone().map_err(Error::io("dup", path))?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(g) => return Ok(g),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(_) => return Err(Error::Timeout { what: what.to_string(), after: wait }),
        }
    }
}

/// Creates `dir` and missing parents with mode 0700, and tightens `dir` itself to 0700.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(Error::io("creating directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(Error::io("setting mode of", dir))
}

/// Writes a new 0600 file (never following or reusing an existing one).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("creating", path))?;
    // No fsync: these live in the runtime dir (tmpfs), gone at reboot by design.
    f.write_all(contents).map_err(Error::io("writing", path))
}

/// Removes the per-attempt directories `<session>.<attempt>` in `agents_dir`, but `keep`.
pub fn remove_session_dirs(agents_dir: &Path, session: &str, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(agents_dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.rsplit_once('.').map(|(s, _)| s) == Some(session) && Some(e.path().as_path()) != keep {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Files a spawn made; removed again unless [`SpawnFiles::keep`] is called.
pub struct SpawnFiles {
    dir: Option<PathBuf>,
}

impl SpawnFiles {
    pub fn keep(mut self) {
        self.dir = None;
    }
}

impl Drop for SpawnFiles {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes the env file and payloads of a plan into its fresh agent directory, and makes sure the
/// log and runner-info directories exist (0700) and the log file is 0600.
pub fn write_spawn_files(plan: &SpawnPlan) -> Result<SpawnFiles, Error> {
    if let Some(parent) = plan.agent_dir.parent() {
        private_dir(parent)?;
        if let Some(root) = parent.parent() {
            private_dir(root)?;
        }
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&plan.agent_dir)
        .map_err(Error::io("creating directory", &plan.agent_dir))?;
    let guard = SpawnFiles { dir: Some(plan.agent_dir.clone()) };
    write_private_file(&plan.env_file, crate::model::plan::render_env_file(&plan.secret_env).as_bytes())?;
    for p in &plan.payloads {
        write_private_file(&p.path, p.contents.as_bytes())?;
    }
    for dir in [plan.log_file.parent(), plan.runner_info_file.parent()].into_iter().flatten() {
        private_dir(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&plan.log_file)
        .map_err(Error::io("creating log file", &plan.log_file))?;
    Ok(guard)
}
