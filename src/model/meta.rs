//! An agent's metadata as it is stored on its unit: `LogExtraFields=` pairs (`AGENT_RELAY_*`),
//! which also make `journalctl --user AGENT_RELAY_AGENT_ID=…` work. Pure round trip.

use serde::{Deserialize, Serialize};

/// Bumped when the set or meaning of the fields changes.
pub const SCHEMA: &str = "1";

/// Everything about an agent that systemd does not already know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMeta {
    pub agent_id: String,
    pub provider: String,
    pub session: String,
    pub label: String,
    pub approval_mode: String,
    pub lifecycle: String,
    pub workspace_mode: String,
    pub log_file: String,
    pub spawn_request_id: Option<String>,
    pub policy_name: Option<String>,
    pub automation_id: Option<String>,
    pub automation_run_id: Option<String>,
    pub model: Option<String>,
    pub effort: Option<String>,
    pub profile: Option<String>,
    /// What the request said, for the record: its `rig`, `taskId`, `tags` and `capabilities`
    /// (comma-joined: entries hold no comma), and the limits asked for (request over config),
    /// as decimal numbers in systemd's units.
    pub rig: Option<String>,
    pub task_id: Option<String>,
    pub tags: Option<String>,
    pub capabilities: Option<String>,
    pub limit_memory_max: Option<String>,
    pub limit_memory_high: Option<String>,
    pub limit_tasks_max: Option<String>,
    pub limit_cpu_quota: Option<String>,
}

macro_rules! fields {
    ($m:ident; req: $($rk:literal => $rf:ident),*; opt: $($ok:literal => $of:ident),*) => {
        /// `KEY=value` pairs, in a fixed order.
        pub fn to_fields(&self) -> Vec<(&'static str, String)> {
            let $m = self;
            let mut out = vec![("AGENT_RELAY_SCHEMA", SCHEMA.to_string())];
            $( out.push(($rk, $m.$rf.clone())); )*
            $( if let Some(v) = &$m.$of { out.push(($ok, v.clone())); } )*
            out
        }

        /// The inverse of [`AgentMeta::to_fields`]; `None` when the agent id is missing (not ours).
        pub fn from_fields<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<AgentMeta> {
            let mut $m = AgentMeta::default();
            for (k, v) in pairs {
                match k {
                    $( $rk => $m.$rf = v.to_string(), )*
                    $( $ok => $m.$of = Some(v.to_string()), )*
                    _ => {}
                }
            }
            (!$m.agent_id.is_empty()).then_some($m)
        }
    };
}

impl AgentMeta {
    fields! { m;
        req: "AGENT_RELAY_AGENT_ID" => agent_id, "AGENT_RELAY_PROVIDER" => provider,
             "AGENT_RELAY_SESSION" => session, "AGENT_RELAY_LABEL" => label,
             "AGENT_RELAY_APPROVAL" => approval_mode, "AGENT_RELAY_LIFECYCLE" => lifecycle,
             "AGENT_RELAY_WORKSPACE_MODE" => workspace_mode, "AGENT_RELAY_LOG_FILE" => log_file;
        opt: "AGENT_RELAY_SPAWN_REQUEST_ID" => spawn_request_id, "AGENT_RELAY_POLICY" => policy_name,
             "AGENT_RELAY_AUTOMATION_ID" => automation_id,
             "AGENT_RELAY_AUTOMATION_RUN_ID" => automation_run_id,
             "AGENT_RELAY_MODEL" => model, "AGENT_RELAY_EFFORT" => effort,
             "AGENT_RELAY_PROFILE" => profile, "AGENT_RELAY_RIG" => rig, "AGENT_RELAY_TASK_ID" => task_id,
             "AGENT_RELAY_REQUEST_TAGS" => tags, "AGENT_RELAY_REQUEST_CAPABILITIES" => capabilities,
             "AGENT_RELAY_LIMIT_MEMORY_MAX" => limit_memory_max,
             "AGENT_RELAY_LIMIT_MEMORY_HIGH" => limit_memory_high,
             "AGENT_RELAY_LIMIT_TASKS_MAX" => limit_tasks_max,
             "AGENT_RELAY_LIMIT_CPU_QUOTA" => limit_cpu_quota
    }

    /// The `LogExtraFields=` byte strings.
    pub fn to_log_extra_fields(&self) -> Vec<Vec<u8>> {
        self.to_fields().into_iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect()
    }

    /// Parses the `LogExtraFields` property as systemd returns it (`aay`).
    pub fn from_log_extra_fields(raw: &[Vec<u8>]) -> Option<AgentMeta> {
        let pairs: Vec<(&str, &str)> =
            raw.iter().filter_map(|b| std::str::from_utf8(b).ok()).filter_map(|s| s.split_once('=')).collect();
        AgentMeta::from_fields(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let m = AgentMeta {
            agent_id: "h-claude-x-1".into(),
            provider: "claude".into(),
            session: "ar-claude-x-1".into(),
            label: "x = y".into(),
            approval_mode: "guarded".into(),
            lifecycle: "persistent".into(),
            workspace_mode: "inherit".into(),
            log_file: "/l".into(),
            spawn_request_id: Some("r".into()),
            model: Some("opus".into()),
            rig: Some("r".into()),
            task_id: Some("7".into()),
            tags: Some("a,b".into()),
            limit_memory_max: Some("1024".into()),
            ..Default::default()
        };
        assert_eq!(AgentMeta::from_log_extra_fields(&m.to_log_extra_fields()), Some(m));
    }

    #[test]
    fn foreign_fields_are_not_an_agent() {
        assert_eq!(AgentMeta::from_log_extra_fields(&[b"FOO=bar".to_vec()]), None);
    }
}
