//! `list`'s filters, over records: each flag may be given more than once; the values of one flag
//! are alternatives (any may match), different flags must all match. No filter keeps everything.

use crate::model::record::AgentRecord;

/// The values `--state` takes: our verdict (`alive`, `dead`, `unknown`) or systemd's `ActiveState`.
pub const STATES: &[&str] = &[
    "alive",
    "dead",
    "unknown",
    "queued",
    "active",
    "reloading",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "maintenance",
    "refreshing",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// `state` (alive/dead/unknown) or `activeState`, exactly.
    pub states: Vec<String>,
    /// `provider`, exactly.
    pub providers: Vec<String>,
    /// `label`, exactly.
    pub labels: Vec<String>,
    /// One of the record's `tags`, exactly.
    pub tags: Vec<String>,
    /// Only durable agents (`spawn --persist`).
    pub durable: bool,
}

impl ListFilter {
    /// Whether `a` passes every filter given.
    pub fn keeps(&self, a: &AgentRecord) -> bool {
        let any = |wanted: &[String], ok: &dyn Fn(&str) -> bool| wanted.is_empty() || wanted.iter().any(|w| ok(w));
        any(&self.states, &|s| s == a.state.as_str() || s == a.active_state)
            && any(&self.providers, &|p| p == a.provider)
            && any(&self.labels, &|l| l == a.label)
            && any(&self.tags, &|t| a.tags.iter().any(|x| x == t))
            && (!self.durable || a.durable)
    }

    /// The records `keeps` keeps, in their order.
    pub fn apply(&self, agents: Vec<AgentRecord>) -> Vec<AgentRecord> {
        agents.into_iter().filter(|a| self.keeps(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Liveness;

    fn rec(provider: &str, label: &str, tags: &[&str], state: Liveness, active: &str, durable: bool) -> AgentRecord {
        let mut a: AgentRecord = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2, "agentId": "x", "provider": provider, "label": label,
            "sessionName": "s", "tmuxSession": "s", "systemdUnit": "u", "invocationId": null,
            "pid": null, "state": "alive", "alive": true, "activeState": active, "subState": "running",
            "result": "success", "cwd": "/", "approvalMode": "a", "policyName": null,
            "spawnRequestId": null, "automationId": null, "automationRunId": null, "lifecycle": "l",
            "workspaceMode": "w", "model": null, "effort": null, "profile": null, "rig": null,
            "taskId": null, "tags": tags, "capabilities": [], "startedAt": null, "restarts": 0,
            "crashLooping": false, "limits": {}, "requestedLimits": {}, "logFile": "/l",
            "description": "d", "durable": durable
        }))
        .expect("a record");
        a.state = state;
        a
    }

    #[test]
    fn flags_and_together_values_or_together() {
        let a = rec("claude", "one", &["x", "y"], Liveness::Alive, "active", false);
        let b = rec("codex", "two", &["y"], Liveness::Dead, "failed", true);
        let c = rec("gemini", "three", &[], Liveness::Unknown, "inactive", false);
        let all = vec![a, b, c];
        let labels = |f: ListFilter| f.apply(all.clone()).into_iter().map(|a| a.label).collect::<Vec<_>>();
        assert_eq!(labels(ListFilter::default()), ["one", "two", "three"]);
        assert_eq!(
            labels(ListFilter { providers: vec!["codex".into(), "gemini".into()], ..Default::default() }),
            ["two", "three"]
        );
        assert_eq!(labels(ListFilter { tags: vec!["y".into()], ..Default::default() }), ["one", "two"]);
        assert_eq!(
            labels(ListFilter { tags: vec!["y".into()], providers: vec!["claude".into()], ..Default::default() }),
            ["one"]
        );
        assert_eq!(labels(ListFilter { states: vec!["dead".into()], ..Default::default() }), ["two"]);
        assert_eq!(
            labels(ListFilter { states: vec!["inactive".into(), "alive".into()], ..Default::default() }),
            ["one", "three"]
        );
        assert_eq!(labels(ListFilter { labels: vec!["three".into()], ..Default::default() }), ["three"]);
        assert_eq!(labels(ListFilter { durable: true, ..Default::default() }), ["two"]);
        assert!(labels(ListFilter { tags: vec!["z".into()], ..Default::default() }).is_empty());
    }
}
