//! `guest create|list|stop`: the runner's attach spec (io::runner), each guest's tmux server as
//! its own transient unit, and its session through io::tmux (its terminal: ops::terminal).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::host::HostError;
use crate::io::runner::{self, RunnerError};
use crate::io::tmux::{Tmux, TMUX_TIMEOUT};
use crate::model::guest;
use crate::model::record::Liveness;
use crate::model::state::ActiveState;
use crate::ops::{now_ms, Supervisor};

/// A guest terminal, rebuilt from its unit.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestRecord {
    /// The JSON contract's version (also on each element of `guest list`).
    pub schema_version: crate::model::contract::SchemaVersion,
    pub guest: String,
    pub systemd_unit: String,
    pub agent_id: String,
    pub provider: String,
    pub mode: &'static str,
    pub running: bool,
    pub active_state: String,
    pub pid: Option<u32>,
    pub ttl_ms: Option<u64>,
    pub expires_at: Option<u64>,
}

/// The answer of `guest stop`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestStop {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub guest: String,
    pub stopped: bool,
}

impl Supervisor {
    /// Starts a guest terminal for a live agent, from its runner's attach spec.
    pub async fn guest_create(&self, reference: &str) -> Result<GuestRecord, Error> {
        let agent = self.resolve(reference).await?;
        if agent.state != Liveness::Alive {
            return Err(Error::NotRunning { agent_id: agent.agent_id, needs: "a guest needs a live agent" });
        }
        let info_path = crate::model::plan::runner_info_file(&self.host.home, &agent.session_name);
        let url = runner::control_url(&info_path)?;
        let body = match tokio::task::spawn_blocking(move || runner::fetch_attach_spec(&url)).await {
            Ok(r) => r?,
            Err(e) => return Err(RunnerError::BadSpec(format!("fetching the attach spec failed: {e}")).into()),
        };
        let (cfg, home) = (&self.config, &self.host.home);
        let within = |c: &str| crate::io::host::resolve_cwd(c, cfg, home).is_ok();
        let spec = guest::parse_attach_spec(&body, &within).map_err(RunnerError::BadSpec)?;
        let cwd = crate::io::host::resolve_cwd(&spec.cwd, cfg, home)?;
        let tmux_bin = crate::io::host::find_program("tmux", &self.host.path).ok_or(HostError::NoTmux)?;
        let launcher = self.host.self_exe.clone().ok_or(HostError::NoSelfExe)?;
        let rand8 = &uuid::Uuid::new_v4().simple().to_string()[..8];
        // The server's socket is `<socket dir>/<name>`: the name gets what the directory leaves.
        let socket_dir = self.host.tmux_socket_dir();
        let room = guest::MAX_SOCKET_PATH.saturating_sub(socket_dir.as_os_str().len() + 1);
        let name = guest::guest_name(&self.config.tmux_prefix, &spec.provider, &agent.agent_id, rand8, room)
            .ok_or(HostError::SocketPathTooLong { dir: socket_dir })?;
        let unit = guest::guest_unit(&name);
        let created = now_ms();
        let props = guest::guest_properties(&guest::GuestUnitSpec {
            name: &name,
            tmux: &tmux_bin,
            tmux_tmpdir: &self.host.tmux_tmpdir,
            agent_unit: &agent.systemd_unit,
            agent_id: &agent.agent_id,
            provider: &spec.provider,
            ttl_ms: spec.ttl_ms,
            created_ms: created,
        });
        let props = self.exact_for(props, &self.mgr.version().await?)?;
        match self.mgr.start_transient(&unit, &props, self.mgr.timeout()).await {
            Ok(job) if job.result == "done" => {}
            Ok(job) => {
                return Err(Error::SpawnFailed { unit, detail: format!("guest tmux server: start job {}", job.result) })
            }
            Err(crate::io::systemd::StartError::Exists) => {
                return Err(Error::Conflict(format!("guest unit {unit} already exists")))
            }
            Err(crate::io::systemd::StartError::Other(e)) => return Err(e),
        }
        // The pane runs our launcher, which takes directory, command and environment from a 0600
        // file: nothing of the spec reaches tmux (formats, separators) or a command line (`ps`).
        let launch = guest::GuestLaunch { cwd: cwd.display().to_string(), command: spec.command, env: spec.env };
        let file = match self.write_launch_file(&name, &launch) {
            Ok(f) => f,
            Err(e) => {
                let _ = self.mgr.stop_unit(&unit).await;
                return Err(e);
            }
        };
        let command = [launcher.display().to_string(), "guest-exec".into(), file.display().to_string()];
        // The server listens a moment after its unit started: retry, bounded.
        let deadline = tokio::time::Instant::now() + TMUX_TIMEOUT;
        let result = loop {
            match self.tmux().new_session(&name, &command).await {
                Ok(_) => break Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&file);
            let _ = self.mgr.stop_unit(&unit).await;
            return Err(Error::SpawnFailed { unit, detail: format!("tmux new-session failed: {e}") });
        }
        Ok(GuestRecord {
            schema_version: Default::default(),
            guest: name,
            systemd_unit: unit,
            agent_id: agent.agent_id,
            provider: spec.provider,
            mode: "guest",
            running: true,
            active_state: "active".into(),
            pid: None,
            ttl_ms: Some(spec.ttl_ms),
            expires_at: Some(created + spec.ttl_ms),
        })
    }

    pub(crate) fn tmux(&self) -> Tmux {
        Tmux::new(&self.host.tmux_tmpdir)
    }

    /// `<runtime>/agent-relay-systemd/guests/<name>.json`, 0600 in a 0700 directory, made anew.
    fn write_launch_file(&self, name: &str, launch: &guest::GuestLaunch) -> Result<PathBuf, Error> {
        let dir = self.runtime_root()?.join("guests");
        crate::io::files::private_dir(&dir)?;
        let file = dir.join(format!("{name}.json"));
        let body = serde_json::to_vec(launch).expect("a launch serializes");
        crate::io::files::write_private_file(&file, &body)?;
        Ok(file)
    }

    /// Guests of this prefix, from their units.
    pub async fn guest_list(&self) -> Result<Vec<GuestRecord>, Error> {
        let pattern = guest::guest_unit_pattern(&self.config.tmux_prefix);
        // Read concurrently, as agents are (one round trip per guest was serial before).
        let snaps = self.snapshots_matching(&pattern).await?;
        let mut out: Vec<GuestRecord> =
            snaps.iter().filter_map(|s| guest_record(s, &self.config.tmux_prefix)).collect();
        out.sort_by(|a, b| a.guest.cmp(&b.guest));
        Ok(out)
    }

    /// Stops a guest (guest names only); answers whether it was running.
    pub async fn guest_stop(&self, name: &str) -> Result<GuestStop, Error> {
        self.guest_checked(name)?;
        let unit = guest::guest_unit(name);
        let running = self.mgr.unit_state(&unit).await?.is_some_and(|s| ActiveState::parse(&s) == ActiveState::Active);
        self.stop_unit_bounded(&unit, TMUX_TIMEOUT, None).await?;
        self.mgr.reset_failed(&unit).await?;
        Ok(GuestStop { schema_version: Default::default(), guest: name.to_string(), stopped: running })
    }

    fn guest_checked(&self, name: &str) -> Result<(), Error> {
        if guest::is_guest_name(name, &self.config.tmux_prefix) {
            Ok(())
        } else {
            Err(Error::NotAGuest { name: name.to_string(), prefix: self.config.tmux_prefix.clone() })
        }
    }
}

/// Largest launch file read (an attach spec is at most 64 KiB).
const MAX_LAUNCH_BYTES: u64 = 1024 * 1024;

/// `guest-exec FILE`, the pane's launcher: reads and removes the launch file `guest create`
/// wrote (a regular file of ours, 0600), enters its directory and replaces itself with its
/// command, its variables added to the pane's environment. Returns only on failure.
pub fn guest_exec(file: &Path) -> Error {
    let launch = match read_launch_file(file) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let _ = std::fs::remove_file(file);
    let Some((program, args)) = launch.command.split_first() else {
        return Error::Argument(format!("launch file {} holds no command", file.display()));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).envs(&launch.env).env("PWD", &launch.cwd).current_dir(&launch.cwd);
    let source = std::os::unix::process::CommandExt::exec(&mut cmd);
    Error::Io { op: "running the guest command", path: PathBuf::from(program), source }
}

fn read_launch_file(file: &Path) -> Result<guest::GuestLaunch, Error> {
    let meta = std::fs::symlink_metadata(file).map_err(Error::io("reading", file))?;
    let mine = meta.uid() == nix::unistd::getuid().as_raw() && meta.mode() & 0o077 == 0;
    if !mine {
        return Err(Error::Argument(format!("{} is not a launch file of ours (0600, our own)", file.display())));
    }
    let bytes = crate::io::files::read_regular(file, MAX_LAUNCH_BYTES).map_err(Error::io("reading", file))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| Error::Argument(format!("{} is not a launch file of ours", file.display())))
}

fn guest_record(snap: &crate::model::record::UnitSnapshot, prefix: &str) -> Option<GuestRecord> {
    let name = guest::guest_of_unit(&snap.unit, prefix)?;
    // Values are encoded (meta::encode_value); one of our keys twice is a forgery: no record.
    let mut fields: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for (k, v) in snap.log_extra_fields.iter().filter_map(|b| std::str::from_utf8(b).ok()?.split_once('=')) {
        if k.starts_with("AGENT_RELAY_") && fields.insert(k, v.to_string()).is_some() {
            return None;
        }
    }
    let text = |k: &str| fields.get(k).and_then(|v| crate::model::meta::decode_value(v)).unwrap_or_default();
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    Some(GuestRecord {
        schema_version: Default::default(),
        guest: name.to_string(),
        systemd_unit: snap.unit.clone(),
        agent_id: text("AGENT_RELAY_AGENT_ID"),
        provider: text("AGENT_RELAY_PROVIDER"),
        mode: "guest",
        running: snap.active() == ActiveState::Active && snap.main_pid > 0,
        active_state: snap.active_state.clone(),
        pid: (snap.main_pid > 0).then_some(snap.main_pid),
        ttl_ms: num("AGENT_RELAY_GUEST_TTL_MS"),
        expires_at: num("AGENT_RELAY_GUEST_EXPIRES_AT"),
    })
}
