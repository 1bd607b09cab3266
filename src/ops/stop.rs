//! `stop` and `kill`: a bounded graceful stop, then SIGKILL to the whole control group; never
//! "stopped" while a process of the agent lives. Only units of this tool are touched.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::{files, host};
use crate::model::naming;
use crate::model::record::{self, Liveness};
use crate::model::state::ActiveState;
use crate::ops::Supervisor;

/// Default and largest graceful stop timeouts (the seed's 10 s and 60 s).
pub use crate::model::unit::{DEFAULT_STOP_WINDOW as DEFAULT_STOP_TIMEOUT, MAX_STOP_WINDOW as MAX_STOP_TIMEOUT};
/// After SIGKILL to the whole control group, how long the group may take to empty.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The answer of a stop. `stopped`: this stop ended a running agent (false for one already dead,
/// as in the seed); never true while a process of the agent lives.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StopOutcome {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub agent_id: String,
    pub session_name: String,
    pub systemd_unit: String,
    pub stopped: bool,
    pub was_running: bool,
    /// SIGKILL was needed because the graceful stop did not finish in time.
    pub killed: bool,
}

impl Supervisor {
    /// Stops an agent: `StopUnit`, up to `timeout` (capped at 60 s), then SIGKILL to the whole
    /// control group. Never answers `stopped` while a process of the agent lives.
    ///
    /// An agent already dead is answered `stopped: false, wasRunning: false` (its failed state and
    /// files are cleared all the same), also when its unit is gone and only its exit record
    /// knows it.
    pub async fn stop(&self, reference: &str, timeout: Duration) -> Result<StopOutcome, Error> {
        let timeout = timeout.min(MAX_STOP_TIMEOUT);
        let agent = match self.resolve(reference).await {
            Ok(a) => a,
            Err(e @ Error::NotFound { .. }) => return self.stop_recorded(reference).ok_or(e),
            Err(e) => return Err(e),
        };
        let unit = agent.systemd_unit.clone();
        // The files to delete are named by the unit name, never by the unit's metadata.
        let Some(session) = naming::session_of_unit(&unit, &self.config.tmux_prefix).map(str::to_string) else {
            return Err(Error::NotOurs { unit, prefix: self.config.tmux_prefix.clone() });
        };
        let was_running = agent.state == Liveness::Alive || agent.active().is_up();
        let killed = self.stop_unit_bounded(&unit, timeout, agent.pid).await?;
        // A stop is deliberate: clear the failed state SIGKILL leaves, and the agent's secrets.
        self.mgr.reset_failed(&unit).await?;
        self.remove_runtime_files(&session);
        Ok(StopOutcome {
            schema_version: Default::default(),
            agent_id: agent.agent_id,
            session_name: session,
            systemd_unit: unit,
            stopped: was_running,
            was_running,
            killed,
        })
    }

    /// An agent whose unit is gone but whose exit was recorded: dead, nothing to stop.
    fn stop_recorded(&self, reference: &str) -> Option<StopOutcome> {
        let dir = crate::io::exit_store::exits_dir(&self.host.state_home);
        let rec = crate::io::exit_store::find(&dir, &self.config.tmux_prefix, reference)?;
        naming::session_of_unit(&rec.unit, &self.config.tmux_prefix)?;
        self.remove_runtime_files(&rec.session_name);
        Some(StopOutcome {
            schema_version: Default::default(),
            agent_id: rec.agent_id,
            session_name: rec.session_name,
            systemd_unit: rec.unit,
            stopped: false,
            was_running: false,
            killed: false,
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
            // Cheap reads per round, each a lookup by name in the manager (a listing by pattern
            // would match every unit it has): the cgroup's pids and the unit's state.
            let pids = self.mgr.unit_pids(unit).await?;
            let active = self.mgr.active_state(unit).await?.filter(|s| !ActiveState::parse(s).is_ended());
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

    pub(crate) fn remove_runtime_files(&self, session: &str) {
        if let Some(root) = self.host.runtime_root() {
            files::remove_session_dirs(&root.join("agents"), session, None);
        }
    }
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

/// The answer of `kill`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillOutcome {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub agent_id: String,
    pub systemd_unit: String,
    pub signal: String,
    pub whom: String,
}

impl Supervisor {
    /// Sends `signal` to the agent's main process (`main`) or its whole control group (`all`).
    pub async fn kill(
        &self,
        reference: &str,
        signal: nix::sys::signal::Signal,
        whom: &str,
    ) -> Result<KillOutcome, Error> {
        if !matches!(whom, "main" | "all") {
            return Err(Error::Argument(format!("--whom must be main or all, got {whom:?}")));
        }
        let agent = self.resolve(reference).await?;
        if naming::session_of_unit(&agent.systemd_unit, &self.config.tmux_prefix).is_none() {
            return Err(Error::NotOurs { unit: agent.systemd_unit, prefix: self.config.tmux_prefix.clone() });
        }
        if agent.state != Liveness::Alive {
            return Err(Error::NotRunning { agent_id: agent.agent_id, needs: "nothing to signal" });
        }
        self.mgr.kill_unit(&agent.systemd_unit, whom, signal as i32).await?;
        Ok(KillOutcome {
            schema_version: Default::default(),
            agent_id: agent.agent_id,
            systemd_unit: agent.systemd_unit,
            signal: signal.as_str().to_string(),
            whom: whom.to_string(),
        })
    }
}

/// `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, Error> {
    use std::str::FromStr;
    let bad = || Error::Argument(format!("unknown signal {s:?}: use a name like TERM, KILL, INT, HUP or a number"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| bad());
    }
    let name = if s.to_ascii_uppercase().starts_with("SIG") {
        s.to_ascii_uppercase()
    } else {
        format!("SIG{}", s.to_ascii_uppercase())
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| bad())
}
