//! Spawn admission: a spawn starts only with a free slot (at most `maxConcurrentSpawns` starting
//! at once across every CLI process of this user) and host headroom; otherwise it queues, in
//! order, visible to `list` and `watch` as `queued`, for at most `spawnAdmissionMaxWaitMs`.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::io::admission::{self as gate, AdmissionDir, Slot};
use crate::model::admission::{self, Ticket};
use crate::model::plan::SpawnPlan;
use crate::model::record::{AgentRecord, Liveness, UnitSnapshot};
use crate::ops::{now_ms, Supervisor};

/// How often a waiting spawn looks at the queue and the slots (the headroom is read every
/// `spawnAdmissionPollMs`).
const QUEUE_TICK: Duration = Duration::from_millis(50);
/// How often a waiting spawn marks its (already written) agent directory as in use.
const AGENT_DIR_TOUCH: Duration = Duration::from_secs(10);

/// A spawn let through the gate: its slot (none when the gate is disabled) is held until this is
/// dropped, i.e. until the spawn has answered.
#[derive(Debug)]
pub struct Admitted {
    pub slot: Option<Slot>,
    pub waited: Duration,
}

impl Supervisor {
    /// Waits for a slot and headroom, in queue order; [`Error::NotAdmitted`] when the wait runs
    /// out, or at once with `no_wait`. Nothing is started either way.
    pub(crate) async fn admit(&self, plan: &SpawnPlan, no_wait: bool) -> Result<Admitted, Error> {
        let cfg = &self.config.admission;
        if cfg.disabled {
            return Ok(Admitted { slot: None, waited: Duration::ZERO });
        }
        let dir = AdmissionDir::new(&self.runtime_root()?);
        dir.prepare()?;
        let begun = Instant::now();
        let slots = cfg.max_concurrent_spawns;
        // Nobody waiting: a free slot and headroom admit at once, with no ticket written.
        let mut gate_state = admission::check(&gate::headroom(), cfg);
        let mut gate_read = Instant::now();
        let first_reason = if dir.anyone_waiting() {
            admission::wait_reason(dir.waiting_names().len(), slots)
        } else {
            match &gate_state {
                Ok(()) => match dir.try_slot(slots)? {
                    Some(slot) => return Ok(Admitted { slot: Some(slot), waited: Duration::ZERO }),
                    None => admission::wait_reason(0, slots),
                },
                Err(reason) => reason.clone(),
            }
        };
        if no_wait {
            return Err(Error::NotAdmitted { message: admission::no_wait_message(&first_reason) });
        }
        let mut ticket = Ticket {
            unit: plan.unit.clone(),
            description: plan.description.clone(),
            cwd: plan.cwd.display().to_string(),
            log_extra_fields: plan
                .meta
                .to_log_extra_fields()
                .into_iter()
                .map(|f| String::from_utf8_lossy(&f).into_owned())
                .collect(),
            queued_at: now_ms(),
            max_wait_ms: cfg.max_wait_ms,
            reason: first_reason,
        };
        let place = dir.enqueue(&ticket, ticket.queued_at)?;
        tracing::info!(unit = %plan.unit, reason = %ticket.reason, "spawn queued");
        let max_wait = Duration::from_millis(cfg.max_wait_ms);
        let poll = Duration::from_millis(cfg.poll_ms);
        let mut touched = Instant::now();
        loop {
            if touched.elapsed() >= AGENT_DIR_TOUCH {
                gate::touch(&plan.agent_dir);
                touched = Instant::now();
            }
            let ahead = dir.waiting_names().iter().take_while(|name| **name != place.name).count();
            let mut headroom_short = false;
            let reason = if ahead > 0 {
                admission::wait_reason(ahead, slots)
            } else {
                if gate_read.elapsed() >= poll {
                    gate_state = admission::check(&gate::headroom(), cfg);
                    gate_read = Instant::now();
                }
                match &gate_state {
                    Ok(()) => match dir.try_slot(slots)? {
                        Some(slot) => {
                            drop(place);
                            let waited = begun.elapsed();
                            tracing::info!(unit = %plan.unit, waited_ms = waited.as_millis() as u64, "spawn admitted");
                            return Ok(Admitted { slot: Some(slot), waited });
                        }
                        None => admission::wait_reason(0, slots),
                    },
                    Err(reason) => {
                        headroom_short = true;
                        reason.clone()
                    }
                }
            };
            if reason != ticket.reason {
                ticket.reason = reason;
                place.update(&ticket);
            }
            let waited = begun.elapsed();
            if waited >= max_wait {
                let message = admission::timeout_message(headroom_short, waited.as_millis() as u64, &ticket.reason);
                return Err(Error::NotAdmitted { message });
            }
            tokio::time::sleep(QUEUE_TICK.min(max_wait - waited)).await;
        }
    }

    /// The spawns of this prefix waiting in the queue, as records in state `queued`.
    pub(crate) fn queued(&self) -> Vec<AgentRecord> {
        queued_records(&self.config, &self.host)
    }
}

/// The spawns of `config`'s prefix waiting in this user's admission queue, in order.
pub(crate) fn queued_records(
    config: &crate::model::config::Config,
    host: &crate::io::host::HostEnv,
) -> Vec<AgentRecord> {
    let Some(root) = host.runtime_root() else { return Vec::new() };
    let prefix = &config.tmux_prefix;
    AdmissionDir::new(&root)
        .waiting()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, t))| crate::model::naming::session_of_unit(&t.unit, prefix).is_some())
        .filter_map(|(i, (_, t))| queued_record(&t, i as u32 + 1, &host.home))
        .collect()
}

/// A waiting spawn as a record: what its unit will carry, no process, `state: queued`.
fn queued_record(t: &Ticket, position: u32, home: &std::path::Path) -> Option<AgentRecord> {
    let snap = UnitSnapshot {
        unit: t.unit.clone(),
        description: t.description.clone(),
        working_directory: t.cwd.clone(),
        log_extra_fields: t.log_extra_fields.iter().map(|f| f.clone().into_bytes()).collect(),
        load_state: "not-found".into(),
        active_state: "inactive".into(),
        sub_state: "dead".into(),
        ..Default::default()
    };
    let mut r = crate::model::record::agent_record(&snap, crate::model::record::ProcState::Gone, home)?;
    r.state = Liveness::Queued;
    r.alive = false;
    r.queue = Some(admission::QueueInfo {
        position,
        reason: t.reason.clone(),
        queued_at: t.queued_at,
        max_wait_ms: t.max_wait_ms,
    });
    Some(r)
}
