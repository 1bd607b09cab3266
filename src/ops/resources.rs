//! Resources per agent: systemd's accounting where the manager has it, else the sum over the
//! unit's processes from `/proc` (see [`crate::model::resources`]).

use futures_util::StreamExt;

use crate::error::Error;
use crate::io::cgroup_procs;
use crate::model::record::AgentRecord;
use crate::model::resources::{self, Resources, NOT_SET};
use crate::ops::{now_ms, Supervisor};

/// How many agents' figures are read at once.
const READ_CONCURRENCY: usize = 32;

impl Supervisor {
    /// What a running agent uses now; `None` for an agent with no process (or gone meanwhile).
    pub async fn resources_of(&self, r: &AgentRecord) -> Result<Option<Resources>, Error> {
        if r.pid.is_none() || !r.active().is_up() {
            return Ok(None);
        }
        let unit = r.systemd_unit.as_str();
        let Some(acct) = self.manager().accounting(unit).await? else { return Ok(None) };
        let complete = [acct.memory_current, acct.cpu_usage_nsec, acct.tasks_current].iter().all(|v| *v != NOT_SET);
        let sum = if complete {
            None
        } else {
            let pids = self.manager().unit_pids(unit).await?;
            Some(cgroup_procs::sum(&pids))
        };
        let run_ms = r.started_at.map(|t| now_ms().saturating_sub(t));
        Ok(Some(resources::combine(Some(acct), sum, run_ms)))
    }

    /// `records` with their resources filled in, read concurrently (a failed read leaves null).
    pub async fn with_resources(&self, records: Vec<AgentRecord>) -> Vec<AgentRecord> {
        futures_util::stream::iter(records)
            .map(|mut r| async move {
                match self.resources_of(&r).await {
                    Ok(res) => r.resources = res,
                    Err(e) => tracing::debug!(unit = %r.systemd_unit, error = %e, "resources not read"),
                }
                r
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await
    }
}

/// The CPU time each agent's run had at the previous refresh of `top`, by unit and pid.
#[derive(Debug, Default)]
pub struct CpuSamples(std::collections::HashMap<(String, u32), (u64, std::time::Instant)>);

/// One refresh of `top`: the running agents and what each uses, most memory first.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopFrame {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// ms since the epoch.
    pub time: u64,
    /// Running agents with `resources` filled: `cpuPercent` is the rate since the previous
    /// refresh (the first: the average since each run started).
    pub agents: Vec<AgentRecord>,
}

impl Supervisor {
    /// One refresh of `top`; `prev` carries CPU times from one refresh to the next.
    pub async fn top_frame(&self, prev: &mut CpuSamples) -> Result<TopFrame, Error> {
        let running: Vec<AgentRecord> =
            self.list().await?.into_iter().filter(|a| a.pid.is_some() && a.active().is_up()).collect();
        let mut agents = self.with_resources(running).await;
        let now = std::time::Instant::now();
        let mut next = std::collections::HashMap::new();
        for a in &mut agents {
            let (Some(pid), Some(r)) = (a.pid, a.resources.as_mut()) else { continue };
            let Some(ns) = r.cpu_ns else { continue };
            let key = (a.systemd_unit.clone(), pid);
            if let Some((before, at)) = prev.0.get(&key) {
                r.cpu_percent = resources::rate(*before, ns, now.duration_since(*at).as_millis() as u64);
            }
            next.insert(key, (ns, now));
        }
        prev.0 = next;
        agents.sort_by(|a, b| {
            let mem = |x: &AgentRecord| x.resources.as_ref().and_then(|r| r.memory_bytes).unwrap_or(0);
            mem(b).cmp(&mem(a)).then_with(|| a.session_name.cmp(&b.session_name))
        });
        Ok(TopFrame { schema_version: Default::default(), time: now_ms(), agents })
    }
}
