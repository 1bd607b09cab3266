//! `restart`: the successor's spawn request, from the predecessor's (as it was taken) or one the
//! caller gives, and the rules of the swap. Pure.

use crate::model::request::{InvalidRequest, SpawnRequest};

/// How long the successor has to register (its runner info naming its pid): the orchestrator's
/// `AGENT_RELAY_SPAWN_REGISTRATION_TIMEOUT_MS` default.
pub const DEFAULT_REGISTRATION_TIMEOUT_MS: u64 = 30_000;
/// How long the successor must stay alive after registering before the predecessor is stopped:
/// the orchestrator's liveness settle.
pub const DEFAULT_SETTLE_MS: u64 = 300;

/// The successor's request: `given` (the caller's), else the predecessor's own `taken` without
/// its prompt (unless it asked for `replayPromptOnRestart`, as a restart by systemd does). It
/// keeps the predecessor's agent id unless `given` names one, and runs under `spawn_request_id`,
/// which must not be the predecessor's: two generations of one agent live side by side during
/// the swap, and one spawnRequestId is one agent.
pub fn successor_request(
    taken: &SpawnRequest,
    given: Option<SpawnRequest>,
    agent_id: &str,
    predecessor_request_id: Option<&str>,
    spawn_request_id: String,
) -> Result<SpawnRequest, InvalidRequest> {
    let mut next = match given {
        Some(g) => g,
        None => {
            let mut t = taken.clone();
            if !t.replay_prompt_on_restart {
                t.prompt = None;
            }
            t
        }
    };
    if next.agent_id.is_none() {
        next.agent_id = Some(agent_id.to_string());
    }
    if predecessor_request_id == Some(spawn_request_id.as_str()) {
        return Err(InvalidRequest(format!(
            "the successor needs a spawnRequestId of its own: {spawn_request_id:?} is the running agent's (pass --spawn-request-id)"
        )));
    }
    next.spawn_request_id = Some(spawn_request_id);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken() -> SpawnRequest {
        SpawnRequest {
            provider: "claude".into(),
            cwd: "/w".into(),
            agent_id: Some("a-1".into()),
            prompt: Some("do it".into()),
            spawn_request_id: Some("req-1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_the_agent_drops_the_prompt_takes_a_new_request_id() {
        let next = successor_request(&taken(), None, "a-1", Some("req-1"), "req-2".into()).unwrap();
        assert_eq!(next.agent_id.as_deref(), Some("a-1"));
        assert_eq!(next.prompt, None);
        assert_eq!(next.spawn_request_id.as_deref(), Some("req-2"));
        let mut replay = taken();
        replay.replay_prompt_on_restart = true;
        let next = successor_request(&replay, None, "a-1", Some("req-1"), "req-2".into()).unwrap();
        assert_eq!(next.prompt.as_deref(), Some("do it"));
    }

    #[test]
    fn the_same_request_id_is_refused_and_a_given_request_wins() {
        assert!(successor_request(&taken(), None, "a-1", Some("req-1"), "req-1".into()).is_err());
        let given = SpawnRequest { provider: "codex".into(), cwd: "/v".into(), ..Default::default() };
        let next = successor_request(&taken(), Some(given), "a-1", Some("req-1"), "req-3".into()).unwrap();
        assert_eq!((next.provider.as_str(), next.agent_id.as_deref()), ("codex", Some("a-1")));
    }
}
