//! Starting a transient unit and knowing how it started: `StartTransientUnit`, its job's
//! `JobRemoved`, and — for agents — the started unit's view taken from the `PropertiesChanged`
//! signals systemd sends while the job runs (it flushes a unit's pending change signals before
//! the job's `JobRemoved`), with the applied limits read while the job runs. No round trip after
//! the job, unless a signal was missed.

use std::time::Duration;

use futures_util::FutureExt;
use zbus::{OwnedObjectPath, OwnedVariant};

use super::manager::{error_name, map_err, Manager};
use super::paths::path_of_unit;
use super::signals::{JobOutcome, JobStep};
use super::variant::to_variant;
use crate::error::Error;
use crate::model::events::Change;
use crate::model::record::UnitSnapshot;
use crate::model::unit::Property;

use crate::error::dbus_name::UNIT_EXISTS;

/// Why a transient unit was not started.
#[derive(Debug)]
pub enum StartError {
    /// A unit of that name is already loaded (systemd settled a race for us).
    Exists,
    Other(Error),
}

/// What the unit's own change signals said during its start job: all five values a record
/// needs beyond the plan, when every one was seen.
fn complete(seen: &Change) -> Option<(String, String, Vec<u8>, u32, u64)> {
    Some((
        seen.active_state.clone()?,
        seen.sub_state.clone()?,
        seen.invocation_id.clone()?,
        seen.main_pid?,
        seen.exec_main_start_us?,
    ))
}

impl Manager {
    /// `StartTransientUnit` with mode `fail`, then waits for the job's `JobRemoved`.
    pub async fn start_transient(
        &self,
        unit: &str,
        props: &[Property],
        wait: Duration,
    ) -> Result<JobOutcome, StartError> {
        self.start(unit, props, wait, false).await.map(|(job, _)| job)
    }

    /// Like [`Manager::start_transient`], and when the job is `done` also what the started unit
    /// adds to what its starter already knows: state, invocation, main pid, start time and the
    /// limits as systemd applied them (defaults such as `DefaultTasksMax=` included).
    pub async fn start_transient_viewed(
        &self,
        unit: &str,
        props: &[Property],
        wait: Duration,
    ) -> Result<(JobOutcome, Option<UnitSnapshot>), StartError> {
        self.start(unit, props, wait, true).await
    }

    async fn start(
        &self,
        unit: &str,
        props: &[Property],
        wait: Duration,
        follow: bool,
    ) -> Result<(JobOutcome, Option<UnitSnapshot>), StartError> {
        let path = OwnedObjectPath::try_from(path_of_unit(unit))
            .map_err(|e| StartError::Other(map_err(unit, self.timeout, e)))?;
        // Both streams exist before the call, so no signal of this start is missed.
        let mut jobs = self.job_removed_stream().await.map_err(StartError::Other)?;
        let mut changes = match follow {
            true => Some(self.unit_changes(&path).await.map_err(StartError::Other)?),
            false => None,
        };
        let props: Vec<(String, OwnedVariant)> =
            props.iter().map(|(name, value)| (name.to_string(), to_variant(value))).collect();
        let call = self.proxy.start_transient_unit(unit.to_string(), "fail".to_string(), props, Vec::new());
        let job = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                return Err(StartError::Other(Error::Timeout {
                    what: format!("StartTransientUnit {unit}"),
                    after: self.timeout,
                }))
            }
            Ok(Err(e)) if error_name(&e).as_deref() == Some(UNIT_EXISTS) => return Err(StartError::Exists),
            Ok(Err(e)) => {
                return Err(StartError::Other(map_err(&format!("StartTransientUnit {unit}"), self.timeout, e)))
            }
            Ok(Ok(job)) => job,
        };
        let mut seen = Change::default();
        let ended = async {
            loop {
                let next_change = async {
                    match changes.as_mut() {
                        Some(c) => c.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    Some(change) = next_change => seen.merge(change),
                    step = jobs.step(&job) => match step {
                        JobStep::Ended => return None,
                        JobStep::Removed(outcome) => return Some(outcome),
                        JobStep::Other => {}
                    },
                }
            }
        };
        // The unit exists once the call returned: its limits are read while the job runs.
        let limits = async {
            match follow {
                true => Some(self.bounded(&format!("reading limits of {unit}"), read_limits(self, &path)).await),
                false => None,
            }
        };
        let (ended, limits) = tokio::join!(tokio::time::timeout(wait, ended), limits);
        let outcome = match ended {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                return Err(StartError::Other(Error::ManagerUnreachable {
                    detail: "the manager's signal stream ended".into(),
                }))
            }
            Err(_) => {
                return Err(StartError::Other(Error::Timeout {
                    what: format!("the job of {unit} to finish"),
                    after: wait,
                }))
            }
        };
        let (Some(mut changes), Some(limits)) = (changes.take(), limits) else { return Ok((outcome, None)) };
        if outcome.result != "done" {
            return Ok((outcome, None));
        }
        // Signals sent before JobRemoved are already queued: take them without waiting.
        while let Some(Some(change)) = changes.next().now_or_never() {
            seen.merge(change);
        }
        drop(changes);
        // The unit has started: a failed read from here on is no failed start (the caller then
        // reads the unit as `show` does), or the caller would undo a running agent's files.
        let (memory_max, memory_high, tasks_max, cpu_quota_per_sec_usec) = match limits {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(%unit, error = %e, "reading the started unit's limits failed");
                return Ok((outcome, None));
            }
        };
        let (active_state, sub_state, invocation_id, main_pid, exec_main_start_us) = match complete(&seen) {
            Some(all) => all,
            None => {
                tracing::debug!(%unit, ?seen, "start signals incomplete; reading the properties");
                match self.bounded(&format!("reading properties of {unit}"), read_run(self, &path)).await {
                    Ok(run) => run,
                    Err(e) => {
                        tracing::debug!(%unit, error = %e, "reading the started unit failed");
                        return Ok((outcome, None));
                    }
                }
            }
        };
        Ok((
            outcome,
            Some(UnitSnapshot {
                memory_max,
                memory_high,
                tasks_max,
                cpu_quota_per_sec_usec,
                unit: unit.to_string(),
                load_state: "loaded".into(),
                active_state,
                sub_state,
                invocation_id,
                main_pid,
                exec_main_start_us,
                result: "success".into(),
                ..Default::default()
            }),
        ))
    }
}

async fn read_limits(mgr: &Manager, path: &OwnedObjectPath) -> zbus::Result<(u64, u64, u64, u64)> {
    let s = mgr.service_proxy(path).build().await?;
    futures_util::try_join!(s.memory_max(), s.memory_high(), s.tasks_max(), s.cpu_quota_per_sec_u_sec())
}

/// The run's values by property reads, for when a change signal was missed.
async fn read_run(mgr: &Manager, path: &OwnedObjectPath) -> zbus::Result<(String, String, Vec<u8>, u32, u64)> {
    let (u, s) = futures_util::try_join!(mgr.unit_proxy(path).build(), mgr.service_proxy(path).build())?;
    futures_util::try_join!(
        u.active_state(),
        u.sub_state(),
        u.invocation_id(),
        s.main_pid(),
        s.exec_main_start_timestamp()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::systemd::signals::change_of_properties;
    use std::collections::HashMap;
    use zbus::Variant as Value;

    fn changed(pairs: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedVariant> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), OwnedVariant::try_from(v).unwrap())).collect()
    }

    #[test]
    fn later_signals_win_and_absent_keys_keep_what_was_seen() {
        let mut seen = Change::default();
        seen.merge(change_of_properties(&changed(vec![
            ("ActiveState", Value::from("activating")),
            ("SubState", Value::from("start")),
            ("InvocationID", Value::from(vec![1u8, 2, 3])),
        ])));
        assert_eq!(complete(&seen), None);
        seen.merge(change_of_properties(&changed(vec![
            ("MainPID", Value::from(42u32)),
            ("ExecMainStartTimestamp", Value::from(7u64)),
        ])));
        seen.merge(change_of_properties(&changed(vec![
            ("ActiveState", Value::from("active")),
            ("SubState", Value::from("running")),
        ])));
        assert_eq!(complete(&seen), Some(("active".into(), "running".into(), vec![1, 2, 3], 42, 7)));
    }
}
