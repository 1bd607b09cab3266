//! `list` and `show`: agent records from unit properties alone (read concurrently), and how a
//! reference (agent id, session, unit, spawn request id, policy name) resolves to one agent.

use std::path::Path;

use futures_util::StreamExt;

use crate::error::Error;
use crate::io::host;
use crate::model::naming;
use crate::model::record::{self, AgentRecord, UnitSnapshot};
use crate::ops::Supervisor;

/// How many units' properties are read at once.
const READ_CONCURRENCY: usize = 64;

impl Supervisor {
    /// Every agent of this tmux prefix, from unit properties alone.
    pub async fn list(&self) -> Result<Vec<AgentRecord>, Error> {
        self.list_matching(&naming::agent_unit_pattern(&self.config.tmux_prefix)).await
    }

    pub(crate) async fn list_matching(&self, pattern: &str) -> Result<Vec<AgentRecord>, Error> {
        let snaps = self.snapshots_matching(pattern).await?;
        let mut out: Vec<AgentRecord> = snaps.iter().filter_map(|s| to_record(s, &self.host.home)).collect();
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
                Err(e) if e.is_unit_gone() => tracing::debug!(unit = %name, "unit vanished while listing"),
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
            return Err(Error::BadReference { reference: reference.to_string() });
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

    pub(crate) async fn snapshot(&self, unit: &str) -> Result<Option<UnitSnapshot>, Error> {
        let Some(path) = self.mgr.unit_path(unit).await? else { return Ok(None) };
        match self.mgr.snapshot(unit, &path).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_unit_gone() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn record_of(&self, unit: &str) -> Result<Option<AgentRecord>, Error> {
        Ok(self.snapshot(unit).await?.and_then(|s| to_record(&s, &self.host.home)))
    }
}

/// The agent a reference names among `all`: unit, session or agent id, else the latest of a
/// spawn request id or policy name.
fn pick<'a>(all: &'a [AgentRecord], reference: &str) -> Option<&'a AgentRecord> {
    all.iter()
        .find(|r| r.agent_id == reference || r.systemd_unit == reference || r.session_name == reference)
        .or_else(|| all.iter().rev().find(|r| r.spawn_request_id.as_deref() == Some(reference)))
        .or_else(|| all.iter().rev().find(|r| r.policy_name.as_deref() == Some(reference)))
}

/// The record of a unit, with its main process observed in /proc, its files below `home`, and
/// the tmux session its runner names in its runner-info file.
pub fn to_record(s: &UnitSnapshot, home: &Path) -> Option<AgentRecord> {
    let proc = if s.main_pid > 0 { host::proc_state(s.main_pid) } else { record::ProcState::Gone };
    let mut r = record::agent_record(s, proc, home)?;
    let info = crate::model::plan::runner_info_file(home, &r.session_name);
    if let Some(tmux) = crate::io::runner::tmux_session(&info, &r.agent_id) {
        r.tmux_session = tmux;
    }
    Some(r)
}
