//! Durable agents: `generate` renders an agent's unit file, `spawn --persist` writes, enables and
//! starts it over D-Bus so the agent comes back with the user manager, `remove` undoes all of it.
//! The unit file (0644, no secrets) goes to the manager's own unit directory; the secret and
//! payload files to `$XDG_STATE_HOME` (the runtime dir is a tmpfs, gone at reboot).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::files;
use crate::io::host::{HostEnv, HostError};
use crate::model::config::Config;
use crate::model::meta::AgentMeta;
use crate::model::plan::SpawnPlan;
use crate::model::record::UnitSnapshot;
use crate::model::request::SpawnRequest;
use crate::model::{naming, unit, unitfile};
use crate::ops::{plan_request, to_record, SpawnOutcome, StopOutcome, Supervisor};

/// What `generate` prints: the unit, where `spawn --persist` would write it, and its text.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Generated {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub systemd_unit: String,
    pub unit_file: PathBuf,
    pub text: String,
}

/// The answer of `remove`: the stop (its `schemaVersion` too), and what of a durable agent was
/// deleted.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoveOutcome {
    #[serde(flatten)]
    pub stop: StopOutcome,
    pub durable: bool,
    /// The deleted unit file (durable agents only).
    pub unit_file: Option<PathBuf>,
}

/// Where the packages install our binary.
const PACKAGED_BINARY: &str = "/usr/bin/agent-relay-systemd";
/// systemd's default PATH for services (`systemd-path search-binaries-default`).
const SYSTEMD_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The plan of a durable agent (files below [`HostEnv::durable_root`]) and its unit-file text.
/// A durable agent outlives the caller that made it: its unit freezes neither the caller's PATH
/// (the runner gets the user's own bin directories, then systemd's default PATH; its program is
/// resolved to an absolute path) nor the path of whichever binary of ours wrote it, when the
/// packaged one is installed (the exit recorder runs `/usr/bin/agent-relay-systemd`).
fn durable_plan(config: &Config, host: &HostEnv, req: &SpawnRequest) -> Result<(SpawnPlan, String), Error> {
    let mut lasting = host.clone();
    if Path::new(PACKAGED_BINARY).is_file() {
        lasting.self_exe = Some(PACKAGED_BINARY.into());
    }
    let mut plan = plan_request(config, &lasting, req, &host.durable_root())?;
    for (key, value) in &mut plan.environment {
        if key == "PATH" {
            *value = crate::model::plan::runner_path(&host.home, SYSTEMD_DEFAULT_PATH);
        }
    }
    let text = unitfile::render(&unit::agent_properties(&plan))?;
    Ok((plan, text))
}

/// The unit file `spawn --persist` would write for `req`, touching nothing. The secret
/// `EnvironmentFile=` is only named, never printed; the agent id (unless the request has one)
/// and the files' directory are fresh on every call, as for a spawn.
pub fn generate(config: &Config, host: &HostEnv, req: &SpawnRequest) -> Result<Generated, Error> {
    let (plan, text) = durable_plan(config, host, req)?;
    Ok(Generated {
        schema_version: Default::default(),
        unit_file: host.user_unit_dir().join(&plan.unit),
        systemd_unit: plan.unit,
        text,
    })
}

impl Supervisor {
    /// Starts a durable agent: secret files, unit file, `EnableUnitFiles`, `Reload`, `StartUnit`,
    /// and the start job awaited. A live agent of the same `spawnRequestId` is returned instead;
    /// a stopped durable agent of that request is replaced. A failed start leaves nothing behind.
    pub async fn spawn_persist(&self, req: &SpawnRequest) -> Result<SpawnOutcome, Error> {
        let (plan, text) = durable_plan(&self.config, &self.host, req)?;
        let unit_dir = self.host.user_unit_dir();
        self.check_unit_dir(&unit_dir).await?;
        let _lock = self.durable_lock().await?;
        if let Some(rid) = &req.spawn_request_id {
            match self.find_live_request(rid).await? {
                Some(agent) if agent.durable => return Ok(SpawnOutcome::new(false, agent)),
                // Returning it would answer a durable request with an agent that does not come back.
                Some(agent) => {
                    return Err(Error::Conflict(format!(
                        "spawn request {rid} already runs as transient agent {} ({}); `stop` it first to start it durable, or pass another spawnRequestId",
                        agent.agent_id, agent.systemd_unit
                    )))
                }
                None => {}
            }
        }
        if let Some(snap) = self.snapshot(&plan.unit).await? {
            let theirs = AgentMeta::from_log_extra_fields(&snap.log_extra_fields);
            let ours = theirs.as_ref().is_some_and(|m| m.spawn_request_id.is_some())
                && theirs.as_ref().map(|m| &m.spawn_request_id) == Some(&req.spawn_request_id);
            if (theirs.is_some() || snap.load_state == "loaded") && !(ours && snap.durable) {
                let who = theirs.map(|m| format!("agent {}", m.agent_id)).unwrap_or_else(|| "something else".into());
                return Err(Error::Conflict(format!(
                    "unit {} already exists ({}, {}); pass a different label or spawnRequestId, or `remove` it first",
                    plan.unit, who, snap.active_state
                )));
            }
        }

        self.refuse_another_requests_unit(&plan, req).await?;
        let files = files::write_spawn_files(&plan)?;
        // No live agent has the name (looked up above, under the durable lock): start clean.
        files::fresh_run(&plan)?;
        sync_dir_tree(&plan)?;
        let unit_file = unit_dir.join(&plan.unit);
        // Replacing a stopped durable agent: its definition comes back if this start fails.
        // Ours, but in a user-writable directory: a regular file of bounded size only.
        let previous = files::read_regular(&unit_file, 1024 * 1024).ok().and_then(|b| String::from_utf8(b).ok());
        let installed = async {
            write_unit_file(&unit_dir, &unit_file, &text)?;
            // Enable, then reload, as `systemctl enable` does: the reload makes the manager read
            // the new file and default.target's new Wants= link, which keeps the unit loaded
            // (listed) while it is stopped.
            self.mgr.enable_unit_files(std::slice::from_ref(&plan.unit)).await?;
            self.mgr.reload().await?;
            // A replaced agent that crash-looped would have its start refused by the start limit.
            self.mgr.reset_failed(&plan.unit).await?;
            self.mgr.start_unit(&plan.unit, self.mgr.timeout()).await
        }
        .await;
        let failure = match installed {
            Ok(job) if job.result == "done" => None,
            Ok(job) => {
                let detail = self.start_failure(&plan, &job.result).await;
                Some(Error::SpawnFailed { unit: plan.unit.clone(), detail })
            }
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            match previous {
                // The agent that was there stays as it was (its secrets are in its own attempt
                // directory); only this attempt's files go, with the guard.
                Some(text) => {
                    if write_unit_file(&unit_dir, &unit_file, &text).is_ok() {
                        let _ = self.mgr.reload().await;
                    }
                }
                None => {
                    self.uninstall(&plan.unit, &unit_file).await;
                    files::remove_session_dirs(&self.host.durable_root().join("agents"), &plan.meta.session, None);
                }
            }
            return Err(e);
        }
        files.keep();
        files::remove_session_dirs(&self.host.durable_root().join("agents"), &plan.meta.session, Some(&plan.agent_dir));
        // Not a hot path: read the whole unit back, as `show` would.
        let snap = self.snapshot(&plan.unit).await?.ok_or_else(|| Error::SpawnFailed {
            unit: plan.unit.clone(),
            detail: "the unit was gone right after it started".into(),
        })?;
        let agent = to_record(&snap, &self.host.home).ok_or_else(|| Error::SpawnFailed {
            unit: plan.unit.clone(),
            detail: "the unit carries no agent metadata".into(),
        })?;
        Ok(SpawnOutcome::new(true, agent))
    }

    /// Starts a stopped durable agent again (`StartUnit`, its job awaited), under the durable lock.
    /// A live one is the answer with `created: false`; a transient agent is refused (exit 2):
    /// its unit is gone once it ends, so it is spawned anew.
    pub async fn start(&self, reference: &str) -> Result<SpawnOutcome, Error> {
        let agent = self.resolve(reference).await?;
        let unit = agent.systemd_unit.clone();
        if !(agent.durable || self.host.user_unit_dir().join(&unit).exists()) {
            return Err(Error::Argument(format!(
                "{} ({unit}) is a transient agent: only durable agents can be started again; spawn it anew",
                agent.agent_id
            )));
        }
        let _lock = self.durable_lock().await?;
        // Looked at again under the lock: another `start` may have started it meanwhile.
        if let Some(now) = self.record_of(&unit).await? {
            if now.active().is_live() {
                return Ok(SpawnOutcome::new(false, self.await_settled(&unit).await?));
            }
        }
        // A durable agent that crash-looped would have its start refused by the start limit.
        self.mgr.reset_failed(&unit).await?;
        let job = self.mgr.start_unit(&unit, self.mgr.timeout()).await?;
        if job.result != "done" {
            return Err(Error::SpawnFailed {
                unit: unit.clone(),
                detail: format!("its start job ended `{}`; see `agent-relay-systemd diagnose {unit}`", job.result),
            });
        }
        let agent = self.await_settled(&unit).await?;
        Ok(SpawnOutcome::new(true, agent))
    }

    /// Stops an agent (as `stop`) and, when it is durable, disables it and deletes its unit
    /// file and its secret files, so it does not come back. For a transient agent, a stop.
    pub async fn remove(&self, reference: &str, timeout: Duration) -> Result<RemoveOutcome, Error> {
        let agent = self.resolve(reference).await?;
        let unit = agent.systemd_unit.clone();
        if let Some(declared) = self.declaration_of(&unit) {
            return self.remove_declared(&agent, declared, timeout).await;
        }
        let unit_file = self.host.user_unit_dir().join(&unit);
        let durable = agent.durable || unit_file.exists();
        // Held from before the stop: a `spawn --persist` of the same request must not start the
        // agent again between the stop and the deletion of its files.
        let _lock = match durable {
            true => Some(self.durable_lock().await?),
            false => None,
        };
        let stop = match self.stop(&unit, timeout).await {
            Ok(s) => s,
            // Loaded only for the lookup and collected since: nothing runs.
            Err(Error::NotFound { .. }) => StopOutcome {
                schema_version: Default::default(),
                agent_id: agent.agent_id.clone(),
                session_name: agent.session_name.clone(),
                systemd_unit: unit.clone(),
                stopped: false,
                was_running: false,
                killed: false,
            },
            Err(e) => return Err(e),
        };
        let mut removed_file = None;
        if durable {
            self.mgr.disable_unit_files(std::slice::from_ref(&unit)).await?;
            match std::fs::remove_file(&unit_file) {
                Ok(()) => removed_file = Some(unit_file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { op: "removing unit file", path: unit_file, source: e }),
            }
            self.mgr.reload().await?;
            self.mgr.reset_failed(&unit).await?;
            files::remove_session_dirs(&self.host.durable_root().join("agents"), &agent.session_name, None);
        }
        Ok(RemoveOutcome { stop, durable, unit_file: removed_file })
    }

    /// The `.agent` file that declares `unit`, if a valid one does, and whether it is the user's.
    fn declaration_of(&self, unit: &str) -> Option<(crate::ops::generate::DeclaredUnit, bool)> {
        let exe = self.host.self_exe.as_ref().and_then(|e| std::fs::canonicalize(e).ok())?;
        let ctx = crate::ops::generate::Context { config: self.config.clone(), host: self.host.clone(), exe };
        crate::ops::generate::declaration_of(&ctx, unit)
    }

    /// `remove` of a declared agent: its `.agent` file goes (the user's own only: an
    /// administrator's is masked by the user, not deleted), the manager reloads (the generator
    /// then writes no unit for it), the agent is stopped and its files go.
    async fn remove_declared(
        &self,
        agent: &crate::model::record::AgentRecord,
        (declared, user): (crate::ops::generate::DeclaredUnit, bool),
        timeout: Duration,
    ) -> Result<RemoveOutcome, Error> {
        let source = declared.source;
        if !user {
            return Err(Error::Argument(format!(
                "{} ({}) is declared by {}, an administrator's file; to remove it for yourself, mask it: \
                 `ln -s /dev/null {}/{}.agent && systemctl --user daemon-reload`, then stop it",
                agent.agent_id,
                agent.systemd_unit,
                source.display(),
                crate::io::agent_dirs::user_dir(&self.host).display(),
                declared.name
            )));
        }
        let _lock = self.durable_lock().await?;
        let stop = match self.stop(&agent.systemd_unit, timeout).await {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => StopOutcome {
                schema_version: Default::default(),
                agent_id: agent.agent_id.clone(),
                session_name: agent.session_name.clone(),
                systemd_unit: agent.systemd_unit.clone(),
                stopped: false,
                was_running: false,
                killed: false,
            },
            Err(e) => return Err(e),
        };
        match std::fs::remove_file(&source) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { op: "removing the declaration", path: source, source: e }),
        }
        self.mgr.reload().await?;
        self.mgr.reset_failed(&agent.systemd_unit).await?;
        files::remove_session_dirs(&self.host.durable_root().join("agents"), &agent.session_name, None);
        Ok(RemoveOutcome { stop, durable: true, unit_file: Some(source) })
    }

    /// A transient spawn found the durable agent of its own spawn request at its unit name. A live
    /// one is the answer, as for any repeated spawn; a stopped one only `spawn --persist` may
    /// start again (with its unit file and secrets), so that is a conflict saying so.
    pub(crate) async fn durable_of_the_request(&self, snap: &UnitSnapshot) -> Result<SpawnOutcome, Error> {
        if snap.active().is_live() {
            let agent = self.await_settled(&snap.unit).await?;
            return Ok(SpawnOutcome::new(false, agent));
        }
        let agent = to_record(snap, &self.host.home);
        Err(Error::Conflict(format!(
            "durable agent {} of spawn request {} ({}) is {}; start it again with `spawn --persist` and the same request, or `remove` it first",
            agent.as_ref().map_or("?", |a| a.agent_id.as_str()),
            agent.as_ref().and_then(|a| a.spawn_request_id.as_deref()).unwrap_or("?"),
            snap.unit,
            snap.active_state
        )))
    }

    /// The unit of a durable agent whose unit file exists but which is not loaded, loaded from
    /// its file (`LoadUnit`); `None` when there is no such file.
    /// A stopped durable agent of another request keeps its unit (name): replacing its unit file
    /// silently would lose that agent, so it is a conflict (exit 4); `remove` it first.
    async fn refuse_another_requests_unit(&self, plan: &SpawnPlan, req: &SpawnRequest) -> Result<(), Error> {
        let snap = match self.snapshot(&plan.unit).await? {
            Some(s) => Some(s),
            None => self.unloaded_durable_snapshot(&plan.unit).await?,
        };
        let Some(theirs) = snap.and_then(|s| AgentMeta::from_log_extra_fields(&s.log_extra_fields)) else {
            return Ok(());
        };
        let same = match (&req.spawn_request_id, &theirs.spawn_request_id) {
            (Some(ours), Some(theirs)) => ours == theirs,
            (None, None) => theirs.agent_id == plan.meta.agent_id,
            _ => false,
        };
        if same {
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "unit {} belongs to agent {} (spawn request {}); `remove` it first, or pass another spawnRequestId",
            plan.unit,
            theirs.agent_id,
            theirs.spawn_request_id.as_deref().unwrap_or("none")
        )))
    }

    pub(crate) async fn unloaded_durable_snapshot(&self, unit: &str) -> Result<Option<UnitSnapshot>, Error> {
        let generated = self.generator_dir().is_some_and(|d| d.join(unit).exists());
        if !(self.host.user_unit_dir().join(unit).exists() || generated) {
            return Ok(None);
        }
        // Reading through the unit's object path loads it again should the manager have
        // collected it since `LoadUnit` (it loads units named by a path on demand).
        let object = self.mgr.load_unit(unit).await?;
        match self.mgr.snapshot(unit, &object).await {
            Ok(mut s) => {
                s.durable = true;
                Ok(Some(s))
            }
            // Gone again, or a unit file systemd cannot make a unit of: either way not an agent.
            Err(Error::Systemd { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records of durable agents whose unit file is in our unit directory (or the generator's,
    /// for declared agents) but whose unit is not loaded (disabled by hand, or half removed), so
    /// that `show` and `remove` still find them. Those two directories are read, not the
    /// manager's list of unit files: that list holds every unit file of its search path, each
    /// transient agent's among them, and making it costs the manager a second with 2000 agents.
    /// A file whose unit is loaded is skipped (`GetUnit`).
    pub(crate) async fn unloaded_durable_agents(&self) -> Result<Vec<crate::model::record::AgentRecord>, Error> {
        let head = format!("{}{}-", naming::AGENT_UNIT_PREFIX, self.config.tmux_prefix);
        let mut names: Vec<String> = Vec::new();
        for dir in std::iter::once(self.host.user_unit_dir()).chain(self.generator_dir()) {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { op: "reading the unit directory", path: dir, source: e }),
            };
            // The names the manager's `agent-relay-managed-<prefix>-*.service` would match, and
            // would take for unit names.
            names.extend(
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&head) && n.ends_with(".service") && is_unit_name(n)),
            );
        }
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            if self.mgr.unit_path(&name).await?.is_some() {
                continue;
            }
            // One odd unit file must not make every lookup fail: it is skipped, as in spawn.
            if let Some(snap) = self.unloaded_durable_snapshot(&name).await? {
                out.extend(to_record(&snap, &self.host.home));
            }
        }
        Ok(out)
    }

    /// Where the user manager's generators write (`$XDG_RUNTIME_DIR/systemd/generator`): the
    /// units of declared agents (`.agent` files).
    fn generator_dir(&self) -> Option<PathBuf> {
        self.host.runtime_dir.as_ref().map(|d| d.join("systemd").join("generator"))
    }

    /// The unit directory must be one the manager reads, or the unit file would never load.
    async fn check_unit_dir(&self, dir: &Path) -> Result<(), Error> {
        let search = self.mgr.unit_search_path().await?;
        if search.iter().any(|p| Path::new(p) == dir) {
            return Ok(());
        }
        Err(HostError::UnitDirNotRead { dir: dir.to_path_buf(), search: search.join(":") }.into())
    }

    /// Best-effort undo of a durable spawn that did not start: nothing of it stays.
    async fn uninstall(&self, unit: &str, unit_file: &Path) {
        let _ = self.mgr.stop_unit(unit).await;
        let _ = self.mgr.disable_unit_files(&[unit.to_string()]).await;
        let _ = std::fs::remove_file(unit_file);
        let _ = self.mgr.reload().await;
        let _ = self.mgr.reset_failed(unit).await;
    }

    /// Serialises durable spawns and removals of this user (unit files and reloads).
    pub(crate) async fn durable_lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        let root = self.host.durable_root();
        files::private_dir(&root)?;
        files::lock_file(&root.join(".lock"), files::LOCK_WAIT, "another durable spawn or remove").await
    }
}

/// A file name the manager takes for a unit name (systemd.unit(5): at most 255 characters
/// of `[A-Za-z0-9:_.\\@-]`), so that `LoadUnit` of it is no invalid-argument error.
fn is_unit_name(name: &str) -> bool {
    name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// Writes the unit file atomically (temp file, fsync, rename), mode 0644: it holds no secret.
fn write_unit_file(dir: &Path, path: &Path, text: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("unit")));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(Error::io("creating", &tmp))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing", dir))
}

/// The secret files must outlive a crash right after the spawn: fsync them, their directory
/// and its entry.
fn sync_dir_tree(plan: &SpawnPlan) -> Result<(), Error> {
    let files = std::iter::once(plan.env_file.as_path()).chain(plan.payloads.iter().map(|p| p.path.as_path()));
    for p in files.chain([plan.agent_dir.as_path()]).chain(plan.agent_dir.parent()) {
        std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(Error::io("syncing", p))?;
    }
    Ok(())
}
