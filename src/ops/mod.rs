//! The operations, one file each, composed from the pure model and the IO shell; this file owns
//! the connected [`Supervisor`] they all hang off. systemd is the only state: nothing here is
//! cached between calls.

pub mod diagnose;
pub mod durable;
pub mod guests;
pub mod reap;
pub mod record_exit;
pub mod watch;

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::error::Error;
use crate::io::host::{self, HostEnv};
use crate::io::systemd::{self, BusOptions, Manager, StartError};
use crate::model::config::Config;
use crate::model::meta::AgentMeta;
use crate::model::naming;
use crate::model::plan::{self, PlanInputs};
use crate::model::record::{self, AgentRecord, Liveness, UnitSnapshot};
use crate::model::request::{self, SpawnRequest};
use crate::model::unit;

/// Default and largest graceful stop timeouts (the seed's 10 s and 60 s).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGKILL to the whole control group, how long the group may take to empty.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How many units' properties are read at once.
const READ_CONCURRENCY: usize = 64;

/// The answer of a spawn: the agent, and whether this call started it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnOutcome {
    pub created: bool,
    pub agent: AgentRecord,
}

/// The answer of a stop. `stopped` is only ever true when nothing of the agent runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopOutcome {
    pub agent_id: String,
    pub session_name: String,
    pub systemd_unit: String,
    pub stopped: bool,
    pub was_running: bool,
    /// SIGKILL was needed because the graceful stop did not finish in time.
    pub killed: bool,
}

/// A connected supervisor.
pub struct Supervisor {
    pub(crate) config: Config,
    pub(crate) host: HostEnv,
    pub(crate) mgr: Manager,
}

impl Supervisor {
    /// Connects to the user manager (private socket, else session bus); `timeout` bounds every call.
    pub async fn connect(config: Config, host: HostEnv, timeout: Duration) -> Result<Supervisor, Error> {
        let opts =
            BusOptions { session_address: host.session_bus.clone(), runtime_dir: host.runtime_dir.clone(), timeout };
        let bus = systemd::connect(&opts).await?;
        let mgr = Manager::new(bus, timeout).await?;
        Ok(Supervisor { config, host, mgr })
    }

    /// Another connection for calls only: no subscription, no signal streams to fill up.
    pub(crate) async fn connect_for_calls(&self) -> Result<Supervisor, Error> {
        let opts = BusOptions {
            session_address: self.host.session_bus.clone(),
            runtime_dir: self.host.runtime_dir.clone(),
            timeout: self.mgr.timeout(),
        };
        let mgr = Manager::unsubscribed(systemd::connect(&opts).await?, self.mgr.timeout()).await?;
        Ok(Supervisor { config: self.config.clone(), host: self.host.clone(), mgr })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn manager(&self) -> &Manager {
        &self.mgr
    }

    /// Starts an agent, or returns the live agent of the same `spawnRequestId`.
    pub async fn spawn(&self, req: &SpawnRequest) -> Result<SpawnOutcome, Error> {
        let plan = plan_request(&self.config, &self.host, req, &self.host.runtime_root()?)?;

        // The files are written while the idempotency lookup is on the wire (join polls the
        // lookup first, which sends it); if it finds the agent, the guard removes them again.
        let lookup = async {
            match &req.spawn_request_id {
                Some(rid) => self.find_live_request(rid, &req.provider).await,
                None => Ok(None),
            }
        };
        let (found, files) = futures_util::join!(lookup, async { host::write_spawn_files(&plan) });
        if let Some(agent) = found? {
            return Ok(SpawnOutcome { created: false, agent });
        }
        let files = files?;
        let props = unit::agent_properties(&plan);
        for attempt in 0..3 {
            match self.mgr.start_transient_viewed(&plan.unit, &props, self.mgr.timeout()).await {
                Ok((job, Some(mut snap))) if job.result == "done" => {
                    files.keep();
                    // Everything but the run's pid, invocation, times and limits is what we set.
                    snap.description = plan.description.clone();
                    snap.working_directory = plan.cwd.display().to_string();
                    snap.log_extra_fields = plan.meta.to_log_extra_fields();
                    let agent = to_record(&snap).ok_or_else(|| Error::SpawnFailed {
                        unit: plan.unit.clone(),
                        detail: "the unit carries no agent metadata".into(),
                    })?;
                    return Ok(SpawnOutcome { created: true, agent });
                }
                Ok((job, None)) if job.result == "done" => {
                    files.keep();
                    // Started, but its view could not be read along the way: read it as `show` does.
                    let agent = self.record_of(&plan.unit).await?.ok_or_else(|| Error::SpawnFailed {
                        unit: plan.unit.clone(),
                        detail: "the unit was gone right after it started".into(),
                    })?;
                    return Ok(SpawnOutcome { created: true, agent });
                }
                Ok((job, _)) => {
                    let detail = self.start_failure(&plan.unit, &job.result).await;
                    return Err(Error::SpawnFailed { unit: plan.unit.clone(), detail });
                }
                Err(StartError::Other(e @ Error::Timeout { .. })) => {
                    // Unanswered is not refused: the manager may still start the unit when it
                    // catches up, and without its env file it would fail, restart and fail again.
                    // Keep the files; a retry of the request finds the unit, and `reap` removes
                    // the files if no unit comes of it.
                    files.keep();
                    return Err(e);
                }
                Err(StartError::Other(e)) => return Err(e),
                Err(StartError::Exists) => {
                    let snap = match self.snapshot(&plan.unit).await? {
                        Some(s) => s,
                        // A durable agent's unit file takes the name even while its unit is not loaded.
                        None => match self.unloaded_durable_snapshot(&plan.unit).await? {
                            Some(s) => s,
                            None => continue,
                        },
                    };
                    let theirs = AgentMeta::from_log_extra_fields(&snap.log_extra_fields);
                    let same = match (&theirs, &req.spawn_request_id) {
                        (Some(m), Some(rid)) => m.spawn_request_id.as_deref() == Some(rid.as_str()),
                        _ => false,
                    };
                    if !same {
                        let who = theirs.map(|m| {
                            format!(
                                "agent {} (spawn request {})",
                                m.agent_id,
                                m.spawn_request_id.unwrap_or_else(|| "none".into())
                            )
                        });
                        return Err(Error::Conflict(format!(
                            "unit {} already exists for {}; pass a different label or spawnRequestId",
                            plan.unit,
                            who.unwrap_or_else(|| "something else".into())
                        )));
                    }
                    if snap.durable {
                        return self.durable_of_the_request(&snap).await;
                    }
                    if matches!(snap.active_state.as_str(), "inactive" | "failed") && attempt < 2 {
                        // A dead incarnation of this very request: clear it and start afresh.
                        self.mgr.reset_failed(&plan.unit).await?;
                        continue;
                    }
                    let agent = self.await_settled(&plan.unit).await?;
                    return Ok(SpawnOutcome { created: false, agent });
                }
            }
        }
        Err(Error::Conflict(format!("unit {} kept reappearing while starting; retry the spawn", plan.unit)))
    }

    /// Every agent of this tmux prefix, from unit properties alone.
    pub async fn list(&self) -> Result<Vec<AgentRecord>, Error> {
        self.list_matching(&naming::agent_unit_pattern(&self.config.tmux_prefix)).await
    }

    async fn list_matching(&self, pattern: &str) -> Result<Vec<AgentRecord>, Error> {
        let snaps = self.snapshots_matching(pattern).await?;
        let mut out: Vec<AgentRecord> = snaps.iter().filter_map(to_record).collect();
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.session_name.cmp(&b.session_name)));
        Ok(out)
    }

    /// Properties of every agent unit of this tmux prefix, read concurrently.
    pub(crate) async fn snapshots(&self) -> Result<Vec<UnitSnapshot>, Error> {
        self.snapshots_matching(&naming::agent_unit_pattern(&self.config.tmux_prefix)).await
    }

    /// Properties of every unit matching `pattern`, read concurrently (units gone meanwhile skipped).
    pub(crate) async fn snapshots_matching(&self, pattern: &str) -> Result<Vec<UnitSnapshot>, Error> {
        let units = self.mgr.list_units(&[pattern.to_string()]).await?;
        let reads = futures_util::stream::iter(units)
            .map(|l| async move { (self.mgr.snapshot_listed(&l).await, l.unit) })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(reads.len());
        for (snap, name) in reads {
            match snap {
                Ok(s) => out.push(s),
                // A unit collected between the listing and the read is simply gone.
                Err(Error::Systemd { .. }) => tracing::debug!(unit = %name, "unit vanished while listing"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One agent by agent id, session name, unit name or spawn request id.
    pub async fn show(&self, reference: &str) -> Result<AgentRecord, Error> {
        self.resolve(reference).await
    }

    /// An agent by reference among loaded units, else among durable unit files not loaded.
    pub(crate) async fn resolve(&self, reference: &str) -> Result<AgentRecord, Error> {
        match self.resolve_loaded(reference).await {
            Err(Error::NotFound { .. }) => {
                let unloaded = self.unloaded_durable_agents().await?;
                pick(&unloaded, reference).cloned().ok_or_else(|| Error::NotFound { reference: reference.to_string() })
            }
            other => other,
        }
    }

    async fn resolve_loaded(&self, reference: &str) -> Result<AgentRecord, Error> {
        let prefix = &self.config.tmux_prefix;
        let not_found = || Error::NotFound { reference: reference.to_string() };
        if reference.is_empty() || reference.chars().any(|c| c.is_control() || c == '/') {
            return Err(Error::Invalid(format!("{reference:?} is not an agent reference: pass an agent id, session name, unit name or spawn request id")));
        }
        if reference.ends_with(".service") {
            if naming::session_of_unit(reference, prefix).is_none() {
                return Err(Error::NotOurs {
                    unit: reference.to_string(),
                    prefix: format!("{}{prefix}-", naming::AGENT_UNIT_PREFIX),
                });
            }
            return self.record_of(reference).await?.ok_or_else(not_found);
        }
        if reference.starts_with(&format!("{prefix}-")) {
            if let Some(r) = self.record_of(&naming::agent_unit_name(reference)).await? {
                return Ok(r);
            }
        }
        // A unit name ends with the last 8 characters of its spawn request id (else of its agent
        // id): look among those first, so that resolving each of n agents is not a list of all n.
        let narrowed = naming::units_ending_like(prefix, None, reference);
        let near = self.list_matching(&narrowed).await?;
        let found = near
            .iter()
            .find(|r| r.agent_id == reference)
            .or_else(|| near.iter().rev().find(|r| r.spawn_request_id.as_deref() == Some(reference)));
        if let Some(r) = found {
            return Ok(r.clone());
        }
        // Agent ids of agents spawned with a request id, and policy names: only a full list knows.
        let all = self.list().await?;
        pick(&all, reference).cloned().ok_or_else(not_found)
    }

    /// Stops an agent: `StopUnit`, up to `timeout` (capped at 60 s), then SIGKILL to the whole
    /// control group. Never answers `stopped` while a process of the agent lives.
    pub async fn stop(&self, reference: &str, timeout: Duration) -> Result<StopOutcome, Error> {
        let timeout = timeout.min(MAX_STOP_TIMEOUT);
        let agent = self.resolve(reference).await?;
        let unit = agent.systemd_unit.clone();
        if naming::session_of_unit(&unit, &self.config.tmux_prefix).is_none() {
            return Err(Error::NotOurs { unit, prefix: self.config.tmux_prefix.clone() });
        }
        let was_running = agent.state == Liveness::Alive
            || matches!(agent.active_state.as_str(), "active" | "activating" | "deactivating" | "reloading");
        let killed = self.stop_unit_bounded(&unit, timeout, agent.pid).await?;
        // A stop is deliberate: clear the failed state SIGKILL leaves, and the agent's secrets.
        self.mgr.reset_failed(&unit).await?;
        self.remove_runtime_files(&agent.session_name);
        Ok(StopOutcome {
            agent_id: agent.agent_id,
            session_name: agent.session_name,
            systemd_unit: unit,
            stopped: true,
            was_running,
            killed,
        })
    }

    /// `StopUnit`, wait up to `timeout`, then SIGKILL to the whole control group; returns once
    /// the unit is inactive, its cgroup empty and `main_pid` gone (whether SIGKILL was needed), or
    /// fails with [`Error::Survived`]. Shared by agents and guests.
    pub(crate) async fn stop_unit_bounded(
        &self,
        unit: &str,
        timeout: Duration,
        main_pid: Option<u32>,
    ) -> Result<bool, Error> {
        let mut killed = false;
        {
            let mut jobs = self.mgr.job_removed_stream().await?;
            if let Some(job) = self.mgr.stop_unit(unit).await? {
                match self.mgr.wait_job(&mut jobs, &job, unit, timeout).await {
                    Ok(_) => {}
                    Err(Error::Timeout { .. }) => {
                        self.mgr.kill_unit(unit, "all", libc_sigkill()).await?;
                        killed = true;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let deadline = tokio::time::Instant::now() + if killed { KILL_GRACE } else { KILL_GRACE / 2 };
        loop {
            // Two cheap reads per round: the cgroup's pids and the unit's state from the listing.
            let pids = self.mgr.unit_pids(unit).await?;
            let active = self.mgr.unit_state(unit).await?.filter(|s| !matches!(s.as_str(), "inactive" | "failed"));
            let main_alive = main_pid.is_some_and(|p| host::proc_state(p) == record::ProcState::Running);
            if pids.is_empty() && active.is_none() && !main_alive {
                return Ok(killed);
            }
            if tokio::time::Instant::now() >= deadline {
                if !killed {
                    self.mgr.kill_unit(unit, "all", libc_sigkill()).await?;
                    killed = true;
                    continue;
                }
                let mut pids = pids;
                pids.extend(main_pid.filter(|_| main_alive));
                return Err(Error::Survived { unit: unit.to_string(), pids });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn remove_runtime_files(&self, session: &str) {
        if let Ok(root) = self.host.runtime_root() {
            host::remove_session_dirs(&root.join("agents"), session, None);
        }
    }

    pub(crate) async fn snapshot(&self, unit: &str) -> Result<Option<UnitSnapshot>, Error> {
        let Some(path) = self.mgr.unit_path(unit).await? else { return Ok(None) };
        match self.mgr.snapshot(unit, &path).await {
            Ok(s) => Ok(Some(s)),
            Err(Error::Systemd { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn record_of(&self, unit: &str) -> Result<Option<AgentRecord>, Error> {
        Ok(self.snapshot(unit).await?.and_then(|s| to_record(&s)))
    }

    /// A live agent of this spawn request, looked up among units whose name ends like it.
    pub(crate) async fn find_live_request(&self, rid: &str, provider: &str) -> Result<Option<AgentRecord>, Error> {
        let pattern = naming::units_ending_like(&self.config.tmux_prefix, Some(provider), rid);
        let found = self.list_matching(&pattern).await?;
        let live = found.into_iter().find(|r| {
            r.spawn_request_id.as_deref() == Some(rid)
                && matches!(r.active_state.as_str(), "active" | "activating" | "reloading")
        });
        match live {
            Some(r) if r.active_state == "activating" => self.await_settled(&r.systemd_unit).await.map(Some),
            other => Ok(other),
        }
    }

    /// Waits (bounded) until a unit that another spawn is starting has left `activating/start`.
    pub(crate) async fn await_settled(&self, unit: &str) -> Result<AgentRecord, Error> {
        let deadline = tokio::time::Instant::now() + self.mgr.timeout();
        loop {
            let rec = self.record_of(unit).await?.ok_or_else(|| Error::NotFound { reference: unit.to_string() })?;
            if !(rec.active_state == "activating" && rec.sub_state == "start")
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(rec);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Explains a failed start job, then stops and clears the unit so it does not restart.
    pub(crate) async fn start_failure(&self, unit: &str, job_result: &str) -> String {
        let snap = self.snapshot(unit).await.ok().flatten();
        let _ = self.mgr.stop_unit(unit).await;
        let _ = self.mgr.reset_failed(unit).await;
        match snap {
            // 203 is systemd's EXIT_EXEC (systemd.exec(5) "Process Exit Codes").
            Some(s) if s.exec_main_status == 203 => {
                "the runner could not be executed (status 203/EXEC); check the runner path and that it is executable"
                    .into()
            }
            Some(s) if s.exec_main_status == 200 => {
                "the working directory could not be entered (status 200/CHDIR)".into()
            }
            Some(s) => format!(
                "start job {job_result}; unit result={} exit status={} ({}/{})",
                s.result, s.exec_main_status, s.active_state, s.sub_state
            ),
            None => format!("start job {job_result}; the unit is gone"),
        }
    }
}

/// Validates a request and plans it against this host; the agent's secret and payload files
/// go below `files_root` (the runtime dir for transient agents, the state dir for durable ones).
pub fn plan_request(
    config: &Config,
    host: &HostEnv,
    req: &SpawnRequest,
    files_root: &std::path::Path,
) -> Result<plan::SpawnPlan, Error> {
    request::validate(req)?;
    let cwd = host::resolve_cwd(&req.cwd, config, &host.home)?;
    let launcher = host::resolve_launcher(config, &req.provider, &host.path)?;
    let random = uuid::Uuid::new_v4().simple().to_string();
    let exits_dir = crate::io::exit_store::exits_dir(&host.state_home);
    let inputs = PlanInputs {
        config,
        home: &host.home,
        runtime_root: files_root,
        caller_path: &host.path,
        launcher: &launcher,
        cwd: &cwd,
        now_ms: now_ms(),
        record_exit: host.self_exe.as_deref().map(|exe| (exe, exits_dir.as_path())),
        random_hex: &random,
    };
    Ok(plan::plan(req, &inputs)?)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The agent a reference names among `all`: unit, session or agent id, else the latest of a
/// spawn request id or policy name.
fn pick<'a>(all: &'a [AgentRecord], reference: &str) -> Option<&'a AgentRecord> {
    all.iter()
        .find(|r| r.agent_id == reference || r.systemd_unit == reference || r.session_name == reference)
        .or_else(|| all.iter().rev().find(|r| r.spawn_request_id.as_deref() == Some(reference)))
        .or_else(|| all.iter().rev().find(|r| r.policy_name.as_deref() == Some(reference)))
}

pub(crate) fn to_record(s: &UnitSnapshot) -> Option<AgentRecord> {
    let proc = if s.main_pid > 0 { host::proc_state(s.main_pid) } else { record::ProcState::Gone };
    record::agent_record(s, proc)
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}
