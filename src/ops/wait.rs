//! `wait`: until an agent's main process has ended for good (its unit inactive or failed, or
//! collected), then how it ended, as `diagnose` says it. The unit's state is polled, each read
//! one listing call bounded by `--timeout`; the wait as a whole by the caller's bound, if any.

use std::time::Duration;

use crate::error::Error;
use crate::model::state::ActiveState;
use crate::ops::diagnose::Diagnosis;
use crate::ops::Supervisor;

/// How often the unit's state is read while it runs.
const POLL: Duration = Duration::from_millis(100);

impl Supervisor {
    /// Waits until the agent `reference` names has ended (a unit that restarts its agent is
    /// waited through the restarts, until systemd stops it), then diagnoses it. An agent already
    /// ended, or collected with exit records, answers at once. [`Error::WaitTimeout`] when `bound`
    /// passes first; the agent is left as it is.
    pub async fn wait(&self, reference: &str, bound: Option<Duration>) -> Result<Diagnosis, Error> {
        let deadline = bound.map(|b| tokio::time::Instant::now() + b);
        let session = match self.resolve(reference).await {
            Ok(agent) => {
                loop {
                    let state = self.mgr.unit_state(&agent.systemd_unit).await?;
                    if state.as_deref().is_none_or(|s| ActiveState::parse(s).is_ended()) {
                        break;
                    }
                    let now = tokio::time::Instant::now();
                    let pause = match deadline {
                        Some(d) if now >= d => {
                            return Err(Error::WaitTimeout {
                                unit: agent.systemd_unit,
                                after: bound.unwrap_or_default(),
                            })
                        }
                        Some(d) => POLL.min(d - now),
                        None => POLL,
                    };
                    tokio::time::sleep(pause).await;
                }
                agent.session_name
            }
            // Collected already: its exit records answer, or nothing knows it (exit 3).
            Err(Error::NotFound { .. }) => reference.to_string(),
            Err(e) => return Err(e),
        };
        self.diagnose(&session).await
    }
}
