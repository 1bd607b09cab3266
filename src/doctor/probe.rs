//! `doctor`'s IO: reads the facts (the manager over D-Bus, files, /proc, /sys, `tmux -V`), every
//! probe bounded, none stopping the others. Judges nothing: that is [`super::evaluate`].

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::io::host::{find_program, HostEnv};
use crate::io::systemd::{self, BusOptions, Manager};
use crate::model::config::Config;

/// Bound on `tmux -V`.
const TMUX_TIMEOUT: Duration = Duration::from_secs(3);
use crate::io::host::CGROUP_ROOT;

/// What the caller already resolved.
pub struct ProbeInputs {
    pub host: HostEnv,
    /// The loaded config, or why it could not be loaded.
    pub config: Result<Config, String>,
    /// Where the config came from, for the report.
    pub config_source: String,
    /// Bound on every call to the manager.
    pub timeout: Duration,
}

/// Gathers every fact; the manager and tmux are asked concurrently.
pub async fn gather(inputs: ProbeInputs) -> Facts {
    let ProbeInputs { host, config, config_source, timeout } = inputs;
    let uid = nix::unistd::getuid().as_raw();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string());
    let (manager, tmux) = tokio::join!(manager(&host, timeout), tmux(&host.path));
    let control_group = match &manager {
        ManagerFact::Reachable { info, .. } => Some(info.control_group.clone()),
        _ => None,
    };
    let runner = config.as_ref().ok().map(|c| runner(c, &host.path));
    let declared = config.as_ref().ok().map(|c| declared(c, &host));
    Facts {
        linger: Path::new("/var/lib/systemd/linger").join(&user).exists(),
        user,
        uid,
        config: config.map(|_| config_source),
        runtime_dir: runtime_dir(host.runtime_dir.as_deref()),
        bus: bus(&host),
        manager,
        cgroup: cgroup(Path::new(CGROUP_ROOT), control_group),
        tmux,
        runner,
        pid1: pid1(),
        declared,
    }
}

/// Where a user manager looks for generators (systemd.generator(7)), `$SYSTEMD_GENERATOR_PATH`
/// first when this process has it.
const USER_GENERATOR_DIRS: [&str; 4] = [
    "/run/systemd/user-generators",
    "/etc/systemd/user-generators",
    "/usr/local/lib/systemd/user-generators",
    "/usr/lib/systemd/user-generators",
];

/// What the generator would make of the `.agent` files, and where it is installed.
fn declared(config: &Config, host: &HostEnv) -> DeclaredFact {
    use crate::ops::generate::{declarations, Context, GENERATOR_NAME};
    let exe = host.self_exe.clone().unwrap_or_else(|| PathBuf::from("/usr/bin/agent-relay-systemd"));
    let ctx = Context { config: config.clone(), host: host.clone(), exe };
    let d = declarations(&ctx);
    let from_env = std::env::var("SYSTEMD_GENERATOR_PATH").unwrap_or_default();
    let generator = from_env
        .split(':')
        .filter(|p| !p.is_empty())
        .chain(USER_GENERATOR_DIRS)
        .map(|dir| Path::new(dir).join(GENERATOR_NAME))
        .find(|p| p.exists());
    DeclaredFact {
        dirs: crate::io::agent_dirs::dirs(host),
        valid: d.units.len(),
        invalid: d.errors.iter().map(ToString::to_string).collect(),
        generator,
    }
}

/// `/proc/1/comm`, trimmed: the name of PID 1 (bounded, never following a link).
fn pid1() -> Option<String> {
    let bytes = crate::io::nofollow::read_regular(Path::new("/proc/1/comm"), 64).ok()?;
    let name = String::from_utf8_lossy(&bytes).trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn runtime_dir(path: Option<&Path>) -> RuntimeDirFact {
    let stat = path.and_then(|p| std::fs::metadata(p).ok()).filter(|m| m.is_dir());
    RuntimeDirFact {
        path: path.map(Path::to_path_buf),
        from_env: std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| !v.is_empty()),
        stat: stat.map(|m| DirStat { owner: m.uid(), mode: m.permissions().mode() & 0o7777 }),
    }
}

fn bus(host: &HostEnv) -> BusFact {
    let under = |p: &str| host.runtime_dir.as_ref().is_some_and(|d| d.join(p).exists());
    BusFact {
        env_address: host.session_bus.clone(),
        runtime_socket: under("bus"),
        private_socket: under("systemd/private"),
    }
}

/// Connects as every verb does, then reads what `doctor` needs in one concurrent round.
async fn manager(host: &HostEnv, timeout: Duration) -> ManagerFact {
    let opts = BusOptions { session_address: host.session_bus.clone(), runtime_dir: host.runtime_dir.clone(), timeout };
    let read = async {
        let bus = systemd::connect(&opts).await?;
        let via = if bus.p2p { Via::PrivateSocket } else { Via::SessionBus };
        let mgr = Manager::unsubscribed(bus, timeout).await?;
        let loaded = [REAP_TIMER.to_string(), SLICE.to_string()];
        let (info, timer_file, slice_file, listed) = futures_util::try_join!(
            mgr.info(),
            mgr.unit_file_state(REAP_TIMER),
            mgr.unit_file_state(SLICE),
            mgr.list_units(&loaded)
        )?;
        let unit = |name: &str, file_state: Option<String>| {
            let l = listed.iter().find(|l| l.unit == name);
            UnitFact {
                file_state,
                active_state: l.map(|l| l.active_state.clone()),
                description: l.map(|l| l.description.clone()),
            }
        };
        Ok::<_, Error>(ManagerFact::Reachable {
            via,
            info,
            timer: unit(REAP_TIMER, timer_file),
            slice: unit(SLICE, slice_file),
        })
    };
    match read.await {
        Ok(fact) => fact,
        Err(e @ Error::Timeout { .. }) => ManagerFact::Hung { detail: e.to_string() },
        Err(Error::ManagerUnreachable { detail }) => ManagerFact::Unreachable { detail },
        Err(e) => ManagerFact::Unreachable { detail: e.to_string() },
    }
}

/// The cgroup layout, and what the v2 hierarchy delegates to the manager's cgroup.
fn cgroup(root: &Path, control_group: Option<String>) -> CgroupFact {
    let (layout, v2) = if root.join("cgroup.controllers").exists() {
        (CgroupLayout::Unified, Some(root.to_path_buf()))
    } else if root.join("unified/cgroup.controllers").exists() {
        (CgroupLayout::Hybrid, Some(root.join("unified")))
    } else {
        (CgroupLayout::Legacy, None)
    };
    let controllers = match (&v2, &control_group) {
        (Some(v2), Some(cg)) => {
            let file = v2.join(cg.trim_start_matches('/')).join("cgroup.controllers");
            std::fs::read_to_string(file).ok().map(|s| s.split_whitespace().map(str::to_string).collect())
        }
        // No v2 hierarchy at all: nothing can be delegated.
        (None, Some(_)) => Some(Vec::new()),
        (_, None) => None,
    };
    let v1 = v1_controllers(&std::fs::read_to_string("/proc/cgroups").unwrap_or_default());
    CgroupFact { layout, control_group, controllers, v1 }
}

/// `tmux -V`, bounded: a tmux that hangs must not hang `doctor`.
async fn tmux(path: &str) -> TmuxFact {
    let Some(exe) = find_program("tmux", path) else { return TmuxFact::Missing };
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("-V").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let version = match tokio::time::timeout(TMUX_TIMEOUT, cmd.output()).await {
        Err(_) => Err(format!("no answer within {TMUX_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Ok(Ok(out)) => Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
    };
    TmuxFact::Found { path: exe, version }
}

fn runner(config: &Config, path: &str) -> RunnerFact {
    match &config.runner_command {
        Some(cmd) => RunnerFact::Configured { program: cmd[0].clone(), resolved: find_program(&cmd[0], path) },
        None => RunnerFact::Default { found: relay_programs(path) },
    }
}

/// Names of `*-relay` executables on PATH (one per name, first wins as in a PATH lookup).
fn relay_programs(path: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("-relay") && name.len() > "-relay".len() && !found.contains(&name) {
                let p: PathBuf = e.path();
                if find_program(&p.display().to_string(), path).is_some() {
                    found.push(name);
                }
            }
        }
    }
    found.sort();
    found
}
