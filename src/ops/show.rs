//! `list` and `show`: agent records from unit properties alone (read concurrently), and how a
//! reference (unit, session, agent id, spawn request id, policy name) resolves to one agent, or
//! to an error naming every agent it could mean.

use std::path::Path;

use futures_util::StreamExt;

use crate::error::Error;
use crate::io::host;
use crate::io::systemd::manager::Listed;
use crate::model::meta::AgentMeta;
use crate::model::record::{self, AgentRecord, UnitSnapshot};
use crate::model::{naming, plan};
use crate::ops::Supervisor;

/// How many units' properties are read at once.
const READ_CONCURRENCY: usize = 64;

impl Supervisor {
    /// Every agent of this tmux prefix, from unit properties alone.
    pub async fn list(&self) -> Result<Vec<AgentRecord>, Error> {
        self.list_matching(&naming::agent_unit_pattern(&self.config.tmux_prefix)).await
    }

    /// [`Supervisor::list`], then the spawns waiting for admission (`state: queued`), in queue order.
    pub async fn list_with_queued(&self) -> Result<Vec<AgentRecord>, Error> {
        let mut out = self.list().await?;
        out.extend(self.queued());
        Ok(out)
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
        self.snapshots_where(pattern, |_, _| true).await
    }

    /// Properties of the units matching `pattern` that `keep` chooses by name and description.
    async fn snapshots_where(
        &self,
        pattern: &str,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<UnitSnapshot>, Error> {
        self.snapshots_of(self.mgr.listing(&[pattern.to_string()]).await?.rows(keep)?).await
    }

    /// Properties of listed units, read concurrently (units gone meanwhile skipped).
    async fn snapshots_of(&self, units: Vec<Listed>) -> Result<Vec<UnitSnapshot>, Error> {
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

    /// One agent by reference: see [`Supervisor::resolve`].
    pub async fn show(&self, reference: &str) -> Result<AgentRecord, Error> {
        self.resolve(reference).await
    }

    /// The one agent a reference names. Tried in turn, the first kind that matches deciding:
    /// 1. a unit name, with or without `.service`, or a session name: one unit at most;
    /// 2. an agent id or a spawn request id (any text a spawn accepted, `/` included);
    /// 3. a policy name.
    ///
    /// Loaded units first, then durable agents whose unit is not loaded. Two agents or more of
    /// the deciding kind are [`Error::Ambiguous`], listing their units: nothing is picked.
    ///
    /// What it costs: a unit name, one unit's reads. An id that names its unit (a spawn request
    /// id; an agent id of a request without one; an agent id we generated, whose tail is the start
    /// of its unit's unique part): a listing by those unit names, which the manager matches by
    /// name and answers with those units alone, and their reads; the agents found there decide
    /// (another agent given the same id by another request, as a `restart`'s successor is, is
    /// then not looked for). Any other id: one listing of every agent unit (the manager's only
    /// index that holds every agent id: the description) and the reads of the few units it names.
    /// A policy name, or nothing found: every row of that same listing, one read
    /// (`LogExtraFields`) of every agent, and our unit directories (durable agents not loaded).
    pub(crate) async fn resolve(&self, reference: &str) -> Result<AgentRecord, Error> {
        if reference.is_empty() || reference.chars().any(char::is_control) {
            return Err(Error::BadReference { reference: reference.to_string() });
        }
        let prefix = &self.config.tmux_prefix;
        let unit = naming::unit_named_by(reference, prefix);
        if let Some(unit) = &unit {
            if let Some(r) = self.record_of(unit).await? {
                return Ok(r);
            }
        }
        // An id that names its unit (a spawn request id; an agent id spawned without one, or one
        // we generated): the manager matches unit names and the few units named are read.
        let named = self.mgr.list_units(&naming::units_named_by(reference, prefix)).await?;
        let read: Vec<String> = named.iter().map(|l| l.unit.clone()).collect();
        if let Some(r) = only(reference, self.having_id(named, reference).await?)? {
            return Ok(r);
        }
        // Every agent's description ends with its agent id: the listing alone narrows what is
        // read (not again the units just read by name).
        let listing = self.mgr.listing(&[naming::agent_unit_pattern(prefix)]).await?;
        let near = listing.rows(|unit, description| {
            plan::description_may_name(description, reference) && !read.iter().any(|u| u == unit)
        })?;
        if let Some(r) = only(reference, self.having_id(near, reference).await?)? {
            return Ok(r);
        }
        let unloaded = self.unloaded_durable_agents().await?;
        if let Some(r) = unloaded.iter().find(|r| unit.as_deref() == Some(r.systemd_unit.as_str())) {
            return Ok(r.clone());
        }
        if let Some(r) = only(reference, unloaded.iter().filter(|r| is_id_of(r, reference)).cloned().collect())? {
            return Ok(r);
        }
        // Policy names: only an agent's metadata knows.
        let mut by_policy = self.records_of_policy(reference, listing.rows(|_, _| true)?).await?;
        by_policy.extend(unloaded.into_iter().filter(|r| r.policy_name.as_deref() == Some(reference)));
        if let Some(r) = only(reference, by_policy)? {
            return Ok(r);
        }
        if unit.is_none() && naming::looks_like_unit(reference) {
            return Err(Error::NotOurs {
                unit: reference.to_string(),
                prefix: format!("{}{prefix}-", naming::AGENT_UNIT_PREFIX),
            });
        }
        Err(Error::NotFound { reference: reference.to_string() })
    }

    /// The records of the listed agents that have `reference` as agent id or spawn request id.
    async fn having_id(&self, units: Vec<Listed>, reference: &str) -> Result<Vec<AgentRecord>, Error> {
        let snaps = self.snapshots_of(units).await?;
        Ok(snaps.iter().filter_map(|s| to_record(s, &self.host.home)).filter(|r| is_id_of(r, reference)).collect())
    }

    /// The records of the listed agents whose policy name is `policy`: their metadata alone is
    /// read (one read each, all in flight), then the matching units in full.
    async fn records_of_policy(&self, policy: &str, units: Vec<Listed>) -> Result<Vec<AgentRecord>, Error> {
        let reads = futures_util::stream::iter(units)
            .map(|l| async move { (self.mgr.log_extra_fields(&l.unit, &l.path).await, l) })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut matching = Vec::new();
        for (fields, l) in reads {
            match fields {
                Ok(f)
                    if AgentMeta::from_log_extra_fields(&f).and_then(|m| m.policy_name).as_deref() == Some(policy) =>
                {
                    matching.push(l)
                }
                Ok(_) => {}
                Err(e) if e.is_unit_gone() => tracing::debug!(unit = %l.unit, "unit vanished while listing"),
                Err(e) => return Err(e),
            }
        }
        let snaps = self.snapshots_of(matching).await?;
        Ok(snaps
            .iter()
            .filter_map(|s| to_record(s, &self.host.home))
            .filter(|r| r.policy_name.as_deref() == Some(policy))
            .collect())
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

fn is_id_of(r: &AgentRecord, reference: &str) -> bool {
    r.agent_id == reference || r.spawn_request_id.as_deref() == Some(reference)
}

/// The one agent of `matches`; `None` for none; [`Error::Ambiguous`] for more.
fn only(reference: &str, mut matches: Vec<AgentRecord>) -> Result<Option<AgentRecord>, Error> {
    matches.sort_by(|a, b| a.systemd_unit.cmp(&b.systemd_unit));
    matches.dedup_by(|a, b| a.systemd_unit == b.systemd_unit);
    match matches.len() {
        0 | 1 => Ok(matches.pop()),
        _ => Err(Error::Ambiguous {
            reference: reference.to_string(),
            matches: matches.into_iter().map(|r| r.systemd_unit).collect(),
        }),
    }
}

/// The record of a unit, with its main process observed in /proc, its files below `home`, and
/// the tmux session its runner names in its runner-info file.
pub fn to_record(s: &UnitSnapshot, home: &Path) -> Option<AgentRecord> {
    let proc = if s.main_pid > 0 { host::proc_state(s.main_pid) } else { record::ProcState::Gone };
    let mut r = record::agent_record(s, proc, home)?;
    let info = plan::runner_info_file(home, &r.session_name);
    if let Some(tmux) = crate::io::runner::tmux_session(&info, &r.agent_id) {
        r.tmux_session = tmux;
    }
    Some(r)
}
