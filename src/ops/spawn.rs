//! `spawn`: plan the request against this host, write its files while the idempotency lookup is
//! on the wire, start the transient unit and read its view from the start job's own signals.
//! One spawnRequestId is one agent: systemd's `UnitExists` settles races.

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::files;
use crate::io::host::{self, HostEnv};
use crate::io::systemd::StartError;
use crate::model::config::Config;
use crate::model::exec;
use crate::model::meta::AgentMeta;
use crate::model::naming;
use crate::model::plan::{self, PlanInputs};
use crate::model::record::AgentRecord;
use crate::model::request::{self, SpawnRequest};
use crate::model::state::ActiveState;
use crate::model::unit::{self, Property};
use crate::ops::admission::Admitted;
use crate::ops::{now_ms, to_record, Supervisor};
use std::time::Duration;

/// Where the per-request lock files live, below the runtime root.
pub const REQUEST_LOCK_DIR: &str = "requests";

/// The answer of a spawn: the agent, and whether this call started it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpawnOutcome {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub created: bool,
    pub agent: AgentRecord,
    /// How long the spawn waited in the admission queue, ms (0: admitted at once, or found).
    pub queued_ms: u64,
}

impl SpawnOutcome {
    pub fn new(created: bool, agent: AgentRecord) -> SpawnOutcome {
        SpawnOutcome { schema_version: Default::default(), created, agent, queued_ms: 0 }
    }
}

/// How a spawn meets the admission gate.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    /// Fail at once (exit 9) instead of queueing when no slot or headroom is free.
    pub no_wait: bool,
}

impl Supervisor {
    /// Starts an agent, or returns the live agent of the same `spawnRequestId`.
    pub async fn spawn(&self, req: &SpawnRequest) -> Result<SpawnOutcome, Error> {
        Ok(self.spawn_admitted(req, SpawnOptions::default()).await?.0)
    }

    /// [`Supervisor::spawn`] through the admission gate; the slot it held (if any) is returned,
    /// for the caller to hold while it waits for the runner to register (`--wait-ready`).
    pub async fn spawn_admitted(
        &self,
        req: &SpawnRequest,
        opts: SpawnOptions,
    ) -> Result<(SpawnOutcome, Option<Admitted>), Error> {
        let plan = plan_request(&self.config, &self.host, req, &self.runtime_root()?)?;
        // One spawnRequestId is one agent, whatever else the request says (provider, label): its
        // spawns take turns on a lock named after it, and each looks for a live agent of it under
        // any name before it starts one. systemd's `UnitExists` still settles a same-name race.
        let _turn = match &req.spawn_request_id {
            Some(rid) => Some(self.request_lock(rid).await?),
            None => None,
        };

        // The files are written while the idempotency lookup and the manager's `Version` are on
        // the wire (join polls them first, which sends them); if the lookup finds the agent, the
        // guard removes the files again.
        let lookup = async {
            match &req.spawn_request_id {
                Some(rid) => self.find_live_request(rid).await,
                None => Ok(None),
            }
        };
        let (found, version, files) =
            futures_util::join!(lookup, self.mgr.version(), async { files::write_spawn_files(&plan) });
        if let Some(agent) = found? {
            return Ok((SpawnOutcome::new(false, agent), None));
        }
        let files = files?;
        // Past the idempotency lookup: a retry of a queued request waited on its lock above and
        // found the agent, or queues itself only once the first gave up.
        let admitted = self.admit(&plan, opts.no_wait).await?;
        let queued_ms = admitted.waited.as_millis() as u64;
        let done = |mut o: SpawnOutcome| {
            o.queued_ms = queued_ms;
            Ok((o, Some(admitted)))
        };
        // A reused name starts clean: not the previous run's runner info, nor its log lines. For a
        // request, the lookup above (under its lock) found no live agent; without one, the unit
        // of this name must not be live either (its start then fails as a conflict). A name used
        // for the first time has nothing to clean: no call to the manager for it.
        if files::previous_run_left(&plan) {
            let live = match req.spawn_request_id {
                Some(_) => false,
                None => self.mgr.unit_state(&plan.unit).await?.is_some_and(|s| ActiveState::parse(&s).is_live()),
            };
            if !live {
                files::fresh_run(&plan)?;
            }
        }
        let props = self.exact_for(unit::agent_properties(&plan), &version?)?;
        for attempt in 0..3 {
            match self.mgr.start_transient_viewed(&plan.unit, &props, self.mgr.timeout()).await {
                Ok((job, Some(mut snap))) if job.result == "done" => {
                    files.keep();
                    // Everything but the run's pid, invocation, times and limits is what we set.
                    snap.description = plan.description.clone();
                    snap.working_directory = plan.cwd.display().to_string();
                    snap.log_extra_fields = plan.meta.to_log_extra_fields();
                    let agent = to_record(&snap, &self.host.home).ok_or_else(|| Error::SpawnFailed {
                        unit: plan.unit.clone(),
                        detail: "the unit carries no agent metadata".into(),
                    })?;
                    return done(SpawnOutcome::new(true, agent));
                }
                Ok((job, None)) if job.result == "done" => {
                    files.keep();
                    // Started, but its view could not be read along the way: read it as `show` does.
                    let agent = self.record_of(&plan.unit).await?.ok_or_else(|| Error::SpawnFailed {
                        unit: plan.unit.clone(),
                        detail: "the unit was gone right after it started".into(),
                    })?;
                    return done(SpawnOutcome::new(true, agent));
                }
                Ok((job, _)) => {
                    let detail = self.start_failure(&plan, &job.result).await;
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
                        return done(self.durable_of_the_request(&snap).await?);
                    }
                    if snap.active().is_ended() && attempt < 2 {
                        // A dead incarnation of this very request: clear it and start afresh.
                        self.mgr.reset_failed(&plan.unit).await?;
                        continue;
                    }
                    let agent = self.await_settled(&plan.unit).await?;
                    return done(SpawnOutcome::new(false, agent));
                }
            }
        }
        Err(Error::Conflict(format!("unit {} kept reappearing while starting; retry the spawn", plan.unit)))
    }

    /// The turn of one spawn request: an exclusive lock on
    /// `<runtime>/agent-relay-systemd/requests/<unique part>.lock`, waited for at most the call
    /// bound. Lock files are tiny, on the runtime tmpfs; `reap` removes old ones.
    async fn request_lock(&self, rid: &str) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        let dir = self.runtime_root()?.join(REQUEST_LOCK_DIR);
        files::private_dir(&dir)?;
        let path = dir.join(format!("{}.lock", naming::unique_suffix(naming::UniqueId::SpawnRequest(rid))));
        // A spawn of this request may be waiting in the admission queue: a retry waits its turn
        // behind it (and then finds its agent) rather than queueing again at the end.
        let admission = &self.config.admission;
        let queue = if admission.disabled { Duration::ZERO } else { Duration::from_millis(admission.max_wait_ms) };
        let lock =
            files::lock_file(&path, self.mgr.timeout() + queue, &format!("another spawn of spawn request {rid:?}"))
                .await?;
        // Its time says when a spawn of this request last took it (`reap` removes idle ones).
        let _ = lock.set_modified(std::time::SystemTime::now());
        Ok(lock)
    }

    /// A live agent of this spawn request, whatever its provider and label: looked up among the
    /// units whose name ends with the request's unique part.
    pub(crate) async fn find_live_request(&self, rid: &str) -> Result<Option<AgentRecord>, Error> {
        let pattern = naming::units_ending_like(&self.config.tmux_prefix, None, naming::UniqueId::SpawnRequest(rid));
        let found = self.list_matching(&pattern).await?;
        let live = found.into_iter().find(|r| r.spawn_request_id.as_deref() == Some(rid) && r.active().is_live());
        match live {
            Some(r) if r.active() == ActiveState::Activating => self.await_settled(&r.systemd_unit).await.map(Some),
            other => Ok(other),
        }
    }

    /// `props` as the manager of `version` must receive them to run every command line exactly
    /// as planned ([`exec::for_manager`]); our own binary is the `exec` launcher.
    pub(crate) fn exact_for(&self, props: Vec<Property>, version: &str) -> Result<Vec<Property>, Error> {
        let launcher = self.host.self_exe.as_ref().map(|p| p.display().to_string());
        Ok(exec::for_manager(props, Some(version), launcher.as_deref())?)
    }

    /// Waits (bounded) until a unit that another spawn is starting has left `activating/start`.
    pub(crate) async fn await_settled(&self, unit: &str) -> Result<AgentRecord, Error> {
        let deadline = tokio::time::Instant::now() + self.mgr.timeout();
        loop {
            let rec = self.record_of(unit).await?.ok_or_else(|| Error::NotFound { reference: unit.to_string() })?;
            if !(rec.active() == ActiveState::Activating && rec.sub_state == "start")
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(rec);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Explains a failed start job, then stops and clears the unit so it does not restart.
    pub(crate) async fn start_failure(&self, plan: &plan::SpawnPlan, job_result: &str) -> String {
        let unit = plan.unit.as_str();
        let snap = self.snapshot(unit).await.ok().flatten();
        let _ = self.mgr.stop_unit(unit).await;
        let _ = self.mgr.reset_failed(unit).await;
        match snap {
            // 203 is systemd's EXIT_EXEC (systemd.exec(5) "Process Exit Codes"): any failed
            // execve, E2BIG among them. The request's limits keep ours far below Linux's, so
            // only a huge config `env` or runnerCommand gets here.
            Some(s) if s.exec_main_status == 203 && plan.exec_too_large() => {
                let (largest, total) = plan.exec_size();
                format!(
                    "the runner could not be executed (status 203/EXEC): its arguments and environment are too \
                     large for execve (E2BIG: {total} bytes, the largest {largest}; Linux allows {} per string \
                     and about {} in all); shorten the config's env or runnerCommand",
                    plan::MAX_ARG_STRLEN,
                    plan::TYPICAL_ARG_MAX
                )
            }
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
        inherited_env: &host.inherited_env,
    };
    let plan = plan::plan(req, &inputs)?;
    if !plan.dropped_env.is_empty() {
        tracing::warn!(
            keys = %plan.dropped_env.join(","),
            "env keys the supervisor sets for the runner were not applied from the config, agent profile or request env"
        );
    }
    let ignored = req.ignored_fields();
    if !ignored.is_empty() {
        tracing::debug!(fields = %ignored.join(","), "spawn request fields for the orchestrator's workspace preparation ignored");
    }
    Ok(plan)
}
