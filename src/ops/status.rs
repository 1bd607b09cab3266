//! `list --all` (agents whose unit is gone, from their exit records) and `status`: one overview
//! of agents by state, queued spawns, the manager and the reaper timer.

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::exit_store;
use crate::model::record::{self, AgentRecord, Liveness};
use crate::ops::Supervisor;

/// The reaper's timer, as the packages install it.
pub const REAP_TIMER: &str = "agent-relay-reap.timer";

/// `status`: how things stand.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// The user manager's `Version`.
    pub manager_version: String,
    /// `private-socket` (peer to peer) or `session-bus`.
    pub transport: String,
    /// This orchestrator's tmux prefix: only its agents are counted.
    pub tmux_prefix: String,
    /// Loaded agent units.
    pub agents: u64,
    pub alive: u64,
    pub dead: u64,
    pub unknown: u64,
    pub durable: u64,
    pub crash_looping: u64,
    /// Spawns waiting for admission.
    pub queued: u64,
    /// Agents whose unit is gone but whose exit is recorded (`list --all` shows them).
    pub exited: u64,
    /// The reaper timer's `ActiveState` (`active` when it is running), null when not loaded.
    pub reaper_timer: Option<String>,
    /// Spawn slots (`maxConcurrentSpawns`), or null when admission is disabled.
    pub spawn_slots: Option<u32>,
}

impl Supervisor {
    /// Agents whose unit is gone, from the newest exit record of each session of this prefix
    /// that no loaded agent has.
    pub fn exited_agents(&self, loaded: &[AgentRecord]) -> Vec<AgentRecord> {
        let dir = exit_store::exits_dir(&self.host.state_home);
        exit_store::sessions_of(&dir, &self.config.tmux_prefix)
            .into_iter()
            .filter(|s| !loaded.iter().any(|a| &a.session_name == s))
            .filter_map(|s| exit_store::latest(&dir, &s))
            .map(|r| record::from_exit_record(&r, &self.host.home))
            .collect()
    }

    pub async fn status(&self) -> Result<Status, Error> {
        let (listed, version, timer) =
            futures_util::join!(self.list(), self.manager().version(), self.manager().unit_state(REAP_TIMER));
        let listed = listed?;
        let count = |f: &dyn Fn(&AgentRecord) -> bool| listed.iter().filter(|a| f(a)).count() as u64;
        let admission = &self.config().admission;
        Ok(Status {
            schema_version: Default::default(),
            manager_version: version?,
            transport: if self.manager().is_p2p() { "private-socket" } else { "session-bus" }.into(),
            tmux_prefix: self.config().tmux_prefix.clone(),
            agents: listed.len() as u64,
            alive: count(&|a| a.state == Liveness::Alive),
            dead: count(&|a| a.state == Liveness::Dead),
            unknown: count(&|a| a.state == Liveness::Unknown),
            durable: count(&|a| a.durable),
            crash_looping: count(&|a| a.crash_looping),
            queued: self.queued().len() as u64,
            exited: self.exited_agents(&listed).len() as u64,
            reaper_timer: timer?,
            spawn_slots: (!admission.disabled).then_some(admission.max_concurrent_spawns),
        })
    }
}
