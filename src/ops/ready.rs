//! `spawn --wait-ready`: the runner is ready once it has written its runner info
//! (`~/.agent-relay/runners/<session>.json`), a JSON object naming the agent's id.

use std::path::Path;
use std::time::Duration;

use crate::error::Error;
use crate::io::nofollow;
use crate::model::plan;
use crate::model::record::AgentRecord;
use crate::ops::Supervisor;

/// More than any runner info a runner writes; a larger file is not taken as one.
const MAX_RUNNER_INFO: u64 = 64 * 1024;
const POLL: Duration = Duration::from_millis(50);

/// Whether `path` is a regular file (no symlink followed), of bounded size, holding a JSON object
/// whose `agentId` is `agent_id`.
pub fn runner_info_names(path: &Path, agent_id: &str) -> bool {
    let Ok(bytes) = nofollow::read_regular(path, MAX_RUNNER_INFO) else { return false };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.get("agentId").and_then(|a| a.as_str()) == Some(agent_id))
}

impl Supervisor {
    /// Returns once the runner of `agent` has written its runner info; [`Error::ReadyTimeout`]
    /// when `bound` passes first (the agent is left running), [`Error::SpawnFailed`] when the
    /// agent ends before.
    pub async fn wait_ready(&self, agent: &AgentRecord, bound: Duration) -> Result<(), Error> {
        let path = plan::runner_info_file(&self.host.home, &agent.session_name);
        let unit = agent.systemd_unit.as_str();
        let deadline = tokio::time::Instant::now() + bound;
        for round in 0u64.. {
            if runner_info_names(&path, &agent.agent_id) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ReadyTimeout { unit: unit.to_string(), after: bound });
            }
            // Now and then: an agent that has ended will never be ready.
            if round % 10 == 9 {
                let live = self.record_of(unit).await?.is_some_and(|r| r.active().is_live());
                if !live && !runner_info_names(&path, &agent.agent_id) {
                    return Err(Error::SpawnFailed {
                        unit: unit.to_string(),
                        detail: format!(
                            "it ended before its runner wrote its runner info; see `agent-relay-systemd diagnose {unit}`"
                        ),
                    });
                }
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        }
        unreachable!("the rounds do not end")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_info_must_be_a_regular_json_file_naming_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        assert!(!runner_info_names(&p, "a1"));
        std::fs::write(&p, "{\"agentId\":").unwrap();
        assert!(!runner_info_names(&p, "a1"));
        std::fs::write(&p, r#"{"agentId":"a2"}"#).unwrap();
        assert!(!runner_info_names(&p, "a1"));
        std::fs::write(&p, r#"{"agentId":"a1","runnerId":"r"}"#).unwrap();
        assert!(runner_info_names(&p, "a1"));
        let link = dir.path().join("l.json");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(!runner_info_names(&link, "a1"));
    }
}
