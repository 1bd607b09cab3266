//! The spawn request (the seed's `SpawnOptions`, camelCase JSON) and its validation.
//! Pure: parsing only checks shape and values; the filesystem checks live in `host`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::naming;

/// Largest spawn request accepted on stdin or from `--spec` (prompts can be long, not endless).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
const MAX_FIELD: usize = 512;

/// A spawn request. Unknown fields are rejected so that a typo (`lable`) is an error, not a
/// silently ignored setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpawnRequest {
    pub provider: String,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_append: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_profile: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation_run_id: Option<String>,
    /// Resource limits of this agent (over the config's `limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::model::limits::LimitsSpec>,
}

/// `taskId` arrives as a number or a string; it names the session `task-N[-label]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskId {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskId::Number(n) => write!(f, "{n}"),
            TaskId::Text(s) => f.write_str(s),
        }
    }
}

/// `persistent` agents are restarted on failure; `ephemeral` ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    #[default]
    Persistent,
    Ephemeral,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Persistent => "persistent",
            Lifecycle::Ephemeral => "ephemeral",
        }
    }
}

/// What is wrong with a request; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn bad(msg: impl Into<String>) -> InvalidRequest {
    InvalidRequest(msg.into())
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, the seed's rule for exported keys.
pub fn env_key_is_valid(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a request from JSON text. Errors read like
/// `invalid spawn request: missing field `provider` at line 1 column 12`.
pub fn parse(text: &str) -> Result<SpawnRequest, InvalidRequest> {
    if text.len() > MAX_REQUEST_BYTES {
        return Err(bad(format!("spawn request is {} bytes, at most {MAX_REQUEST_BYTES} are accepted", text.len())));
    }
    if text.trim().is_empty() {
        return Err(bad("spawn request is empty: pass a JSON object on stdin or with --spec FILE"));
    }
    let req: SpawnRequest = serde_json::from_str(text).map_err(|e| bad(format!("invalid spawn request: {e}")))?;
    validate(&req)?;
    Ok(req)
}

/// Checks values that serde cannot: names, lengths, control characters, env keys.
pub fn validate(req: &SpawnRequest) -> Result<(), InvalidRequest> {
    if req.provider.is_empty() {
        return Err(bad("provider is required (e.g. \"claude\" or \"codex\")"));
    }
    if !naming::provider_is_valid(&req.provider) {
        return Err(bad(format!("provider {:?} is not valid: use 1-32 characters of a-z, 0-9, _ and -", req.provider)));
    }
    if req.cwd.is_empty() {
        return Err(bad("cwd is required: an existing directory inside baseDir"));
    }
    let one_line: [(&str, Option<&str>); 11] = [
        ("cwd", Some(req.cwd.as_str())),
        ("label", req.label.as_deref()),
        ("agentId", req.agent_id.as_deref()),
        ("approvalMode", req.approval_mode.as_deref()),
        ("rig", req.rig.as_deref()),
        ("model", req.model.as_deref()),
        ("effort", req.effort.as_deref()),
        ("profile", req.profile.as_deref()),
        ("policyName", req.policy_name.as_deref()),
        ("spawnRequestId", req.spawn_request_id.as_deref()),
        ("workspaceMode", req.workspace_mode.as_deref()),
    ];
    let more = [
        ("automationId", req.automation_id.as_deref()),
        ("automationRunId", req.automation_run_id.as_deref()),
        ("requestedVia", req.requested_via.as_deref()),
    ];
    for (name, value) in one_line.into_iter().chain(more) {
        if let Some(v) = value {
            check_one_line(name, v)?;
        }
    }
    if let Some(TaskId::Text(t)) = &req.task_id {
        check_one_line("taskId", t)?;
    }
    if matches!(&req.spawn_request_id, Some(id) if id.trim().is_empty()) {
        return Err(bad("spawnRequestId must not be empty when given"));
    }
    if matches!(&req.agent_id, Some(id) if id.trim().is_empty()) {
        return Err(bad("agentId must not be empty when given"));
    }
    for (name, list) in [("tags", &req.tags), ("capabilities", &req.capabilities)] {
        for item in list {
            check_one_line(name, item)?;
            if item.contains(',') || item.is_empty() {
                return Err(bad(format!("{name} entries must be non-empty and contain no comma, got {item:?}")));
            }
        }
    }
    for arg in &req.provider_args {
        if arg.contains('\0') {
            return Err(bad("providerArgs must not contain NUL characters"));
        }
    }
    for (key, value) in &req.env {
        if !env_key_is_valid(key) {
            return Err(bad(format!("env key {key:?} is not a valid variable name (use [A-Za-z_][A-Za-z0-9_]*)")));
        }
        if value.contains('\0') {
            return Err(bad(format!("env value of {key} contains a NUL character")));
        }
        // systemd silently drops variables whose values hold other control characters.
        if value.chars().any(|c| c.is_control() && c != '\t' && c != '\n') {
            return Err(bad(format!(
                "env value of {key} contains control characters (only tab and newline are allowed)"
            )));
        }
    }
    for (name, text) in [("prompt", &req.prompt), ("systemPromptAppend", &req.system_prompt_append)] {
        if matches!(text, Some(t) if t.contains('\0')) {
            return Err(bad(format!("{name} must not contain NUL characters")));
        }
    }
    Ok(())
}

fn check_one_line(name: &str, value: &str) -> Result<(), InvalidRequest> {
    if value.len() > MAX_FIELD && name != "cwd" {
        return Err(bad(format!("{name} is {} bytes long, at most {MAX_FIELD}", value.len())));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(bad(format!("{name} must not contain control characters (newline, tab, NUL, escape)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_request_parses() {
        let r = parse(r#"{"provider":"claude","cwd":"/p"}"#).unwrap();
        assert_eq!(r.provider, "claude");
        assert_eq!(r.lifecycle, None);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("{", "invalid spawn request"),
            (r#"{"cwd":"/p"}"#, "missing field `provider`"),
            (r#"{"provider":"claude"}"#, "missing field `cwd`"),
            (r#"{"provider":1,"cwd":"/p"}"#, "invalid type"),
            (r#"{"provider":"claude","cwd":"/p","lable":"x"}"#, "unknown field `lable`"),
            (r#"{"provider":"","cwd":"/p"}"#, "provider is required"),
            (r#"{"provider":"a/b","cwd":"/p"}"#, "not valid"),
            (r#"{"provider":"claude","cwd":""}"#, "cwd is required"),
            (r#"{"provider":"claude","cwd":"/p","env":{"1X":"y"}}"#, "not a valid variable name"),
            (r#"{"provider":"claude","cwd":"/p","env":{"X":"a\u0000b"}}"#, "NUL"),
            (r#"{"provider":"claude","cwd":"/p","label":"a\nb"}"#, "control characters"),
            (r#"{"provider":"claude","cwd":"/p","lifecycle":"forever"}"#, "unknown variant"),
            (r#"{"provider":"claude","cwd":"/p","tags":["a,b"]}"#, "comma"),
            (r#"{"provider":"claude","cwd":"/p","spawnRequestId":" "}"#, "spawnRequestId"),
            ("[]", "invalid spawn request"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn env_keys() {
        assert!(env_key_is_valid("_A1"));
        assert!(!env_key_is_valid("A-B"));
        assert!(!env_key_is_valid(""));
    }
}
