//! `spawn --wait-ready`: the runner is ready once it has written its runner info
//! (`~/.agent-relay/runners/<session>.json`), a JSON object naming the agent's id.

use std::time::Duration;

use crate::error::Error;
use crate::io::runner::names_agent;
use crate::model::plan;
use crate::model::record::AgentRecord;
use crate::ops::Supervisor;

const POLL: Duration = Duration::from_millis(50);

impl Supervisor {
    /// Returns once the runner of `agent` has written its runner info; [`Error::ReadyTimeout`]
    /// when `bound` passes first (the agent is left running), [`Error::SpawnFailed`] when the
    /// agent ends before.
    pub async fn wait_ready(&self, agent: &AgentRecord, bound: Duration) -> Result<(), Error> {
        let path = plan::runner_info_file(&self.host.home, &agent.session_name);
        let unit = agent.systemd_unit.as_str();
        let deadline = tokio::time::Instant::now() + bound;
        let mut round = 0u64;
        loop {
            round += 1;
            if names_agent(&path, &agent.agent_id) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ReadyTimeout { unit: unit.to_string(), after: bound });
            }
            // Now and then: an agent that has ended will never be ready.
            if round % 10 == 0 {
                let live = self.record_of(unit).await?.is_some_and(|r| r.active().is_live());
                if !live && !names_agent(&path, &agent.agent_id) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_info_must_be_a_regular_json_file_naming_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        assert!(!names_agent(&p, "a1"));
        std::fs::write(&p, "{\"agentId\":").unwrap();
        assert!(!names_agent(&p, "a1"));
        std::fs::write(&p, r#"{"agentId":"a2"}"#).unwrap();
        assert!(!names_agent(&p, "a1"));
        std::fs::write(&p, r#"{"agentId":"a1","runnerId":"r"}"#).unwrap();
        assert!(names_agent(&p, "a1"));
        let link = dir.path().join("l.json");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(!names_agent(&link, "a1"));
    }
}
